//! `trainer train`: run a recipe (TOML + `--set` overrides), with resume.

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use trainer::train::{TrainConfig, Trainer};

#[derive(Args)]
pub struct TrainArgs {
    /// Recipe file (see trainer/configs/).
    #[arg(long)]
    config: PathBuf,
    /// Override a config key, e.g. `--set run.steps=500 --set uss.enabled=true`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Shorthands for common overrides.
    #[arg(long)]
    backbone: Option<String>,
    #[arg(long)]
    device: Option<String>,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Continue from a checkpoint written by an earlier run of the same recipe.
    #[arg(long)]
    resume: Option<PathBuf>,
}

pub fn train(a: TrainArgs) -> Result<()> {
    let mut overrides = a.overrides.clone();
    let quote = |s: &str| format!("{s:?}");
    if let Some(b) = &a.backbone {
        overrides.push(format!("backbone={}", quote(b)));
    }
    if let Some(d) = &a.device {
        overrides.push(format!("run.device={}", quote(d)));
    }
    if let Some(s) = a.steps {
        overrides.push(format!("run.steps={s}"));
    }
    if let Some(s) = a.seed {
        overrides.push(format!("run.seed={s}"));
    }
    if let Some(o) = &a.out_dir {
        overrides.push(format!("run.out_dir={}", quote(&o.display().to_string())));
    }
    let cfg = TrainConfig::load(&a.config, &overrides)?;
    let out = cfg.run.out_dir.clone();
    let mut trainer = Trainer::new(cfg).context("cannot set up the run")?;
    if let Some(r) = &a.resume {
        trainer.resume(r)?;
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ETA {eta} {msg}",
    ) {
        bar.set_style(style);
    }
    let reports = trainer.run(&bar)?;
    bar.finish();
    if !reports.is_empty() {
        println!("{}", trainer::eval::markdown(&reports));
    }
    if let Some(t) = trainer.uss_threshold() {
        println!("USS unified threshold t = {t:.4}");
    }
    println!(
        "checkpoint: {}",
        out.join(trainer::train::CHECKPOINT_FILE).display()
    );
    Ok(())
}
