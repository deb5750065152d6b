//! `maskgate-demo`: the main job end to end (`make demo`) and the ablation (`make ablation`).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use maskgate_e2e::demo::{Demo, DemoConfig};
use maskgate_e2e::tools::Tools;
use maskgate_e2e::{ablation, machine_description, report, utc_date};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "maskgate-demo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Synthetic data -> teacher -> MaskInv student -> eval -> calibrate -> export -> signed
    /// bundle -> edge enrollment, identification and a door dry run; prints one table and
    /// writes <out>/report.md with the ROC plot (the default command).
    Run {
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
        /// The CI-sized budget (a minute) instead of the full one (about ten).
        #[arg(long)]
        smoke: bool,
        /// Another seed (data, initialisation, masks) than the budget's own.
        #[arg(long)]
        seed: Option<u64>,
        /// libtorch threads per training (1 by default; another count trains another model).
        #[arg(long)]
        threads: Option<u32>,
    },
    /// Train every ablation row on the same data, teacher, budget and seeds; writes
    /// <out>/ablation.md.
    Ablation {
        #[arg(long, default_value = "out/ablation")]
        out: PathBuf,
        /// Seeds per row (comma separated).
        #[arg(long, value_delimiter = ',', default_value = "0,1")]
        seeds: Vec<u64>,
        /// Student steps per row (the teacher gets the demo's budget).
        #[arg(long)]
        steps: Option<u64>,
        /// Verification pairs (a multiple of 20; >= 2000 so FAR 1e-3 is measured, not extrapolated).
        #[arg(long, default_value_t = 4000)]
        val_pairs: u32,
        /// Trainings at a time (each uses one libtorch thread).
        #[arg(long, default_value_t = 2)]
        jobs: usize,
    },
}

fn main() -> ExitCode {
    maskgate_e2e::init_logging();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run {
        out: PathBuf::from("out/demo"),
        smoke: false,
        seed: None,
        threads: None,
    });
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maskgate-demo: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<()> {
    let tools = Tools::locate()?;
    match command {
        Command::Run {
            out,
            smoke,
            seed,
            threads,
        } => {
            let mut cfg = if smoke {
                DemoConfig::smoke()
            } else {
                DemoConfig::full()
            };
            if let Some(seed) = seed {
                cfg.seed = seed;
            }
            if let Some(threads) = threads {
                cfg.train_threads = threads;
            }
            eprintln!(
                "maskgate demo: everything goes to {} (log: demo.log)",
                out.display()
            );
            let results = Demo::new(cfg, &tools, &out)?.with_progress().run_all()?;
            let command = format!(
                "maskgate-demo run --out {}{}",
                out.display(),
                if smoke { " --smoke" } else { "" }
            );
            let md = report::markdown(&results, &machine_description(), &utc_date(), &command);
            let path = out.join("report.md");
            shared::atomic_write(&path, md.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            let json = out.join("results.json");
            shared::atomic_write(&json, serde_json::to_string_pretty(&results)?.as_bytes())
                .with_context(|| format!("writing {}", json.display()))?;
            let total: f64 = results.steps.iter().map(|(_, s)| s).sum();
            println!("{}", report::results_table(&results));
            println!(
                "{total:.0} s on {}. Report: {} (ROC: {})",
                machine_description(),
                path.display(),
                results.roc_png.display()
            );
        }
        Command::Ablation {
            out,
            seeds,
            steps,
            val_pairs,
            jobs,
        } => {
            let mut cfg = DemoConfig::full();
            cfg.val_pairs = val_pairs;
            if let Some(s) = steps {
                cfg.student_steps = s;
            }
            let t = std::time::Instant::now();
            let rows = ablation::run(&tools, &out, &cfg, &seeds, jobs)?;
            let table = ablation::table(&rows);
            let seeds_s: Vec<String> = seeds.iter().map(u64::to_string).collect();
            let md = format!(
                "# maskgate ablation\n\nMachine: {}. Date: {}. Wall time {:.0} s with {jobs} \
                 trainings at a time.\nReproduce: `maskgate-demo ablation --out {} --seeds {} \
                 --val-pairs {val_pairs}{}`.\n\nEvery row: the tiny backbone, ArcFace, {} student \
                 steps at batch 32, the same synthetic data ({} identities x {} images) and the \
                 same frozen teacher ({} steps, unmasked). Evaluation: {val_pairs} pairs of {} \
                 held-out identities, probe masked with the fixed evaluation masks; mean ± std \
                 over seeds.\n\n{table}",
                machine_description(),
                utc_date(),
                t.elapsed().as_secs_f64(),
                out.display(),
                seeds_s.join(","),
                steps.map_or(String::new(), |s| format!(" --steps {s}")),
                cfg.student_steps,
                cfg.identities,
                cfg.images_per_id,
                cfg.teacher_steps,
                cfg.val_identities,
            );
            let path = out.join("ablation.md");
            shared::atomic_write(&path, md.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            println!("{table}\nwritten to {}", path.display());
        }
    }
    Ok(())
}
