//! Section 5: training-step throughput on the CPU, `trainer bench` (libtorch through tch) next
//! to a PyTorch-eager loop of the same architecture (`scripts/bench/torch_train_step.py`), same
//! batch, same thread count, one after the other in the same run.

use super::parse::{trainer_bench, trainer_models};
use super::table::{ratio, Section, Table};
use super::Bench;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::process::Command;

/// The backbones compared (the two the PyTorch reference re-implements).
pub const BACKBONES: [&str; 2] = ["tiny", "mbf"];
/// The embedding dimension of both sides (`trainer bench`'s default).
pub const EMBEDDING_DIM: usize = 512;

/// What the PyTorch reference printed.
#[derive(Debug, Clone, Deserialize)]
pub struct TorchStep {
    pub params: u64,
    pub threads: usize,
    pub ms_per_step: f64,
    pub images_per_s: f64,
    pub torch: String,
}

/// Section 5.
pub fn run(bench: &mut Bench) -> Result<Section> {
    let mut cmd = Command::new(&bench.tools.trainer);
    cmd.arg("models")
        .arg(format!("--embedding-dim={EMBEDDING_DIM}"));
    let models = trainer_models(&bench.run(&mut cmd)?);
    let batch = bench.budget.batch;
    let steps = bench.budget.train_steps;
    let mut table = Table::new(&[
        "backbone",
        "parameters: trainer / PyTorch",
        "threads",
        "batch",
        "maskgate trainer (img/s)",
        "PyTorch eager (img/s)",
        "trainer / PyTorch",
    ]);
    let mut mismatch = Vec::new();
    for name in BACKBONES {
        for threads in [1usize, 2] {
            bench.progress(&format!("train steps {name}, {threads} thread(s)"));
            let mut cmd = Command::new(&bench.tools.trainer);
            cmd.arg("bench")
                .arg(format!("--backbones={name}"))
                .arg(format!("--batch={batch}"))
                .arg(format!("--steps={steps}"))
                .arg(format!("--threads={threads}"))
                .arg(format!("--embedding-dim={EMBEDDING_DIM}"));
            let ours = trainer_bench(&bench.run(&mut cmd)?)?;
            let ours = ours.first().context("trainer bench printed no row")?;
            let args = [
                format!("--backbone={name}"),
                format!("--batch={batch}"),
                format!("--steps={steps}"),
                format!("--threads={threads}"),
                format!("--embedding-dim={EMBEDDING_DIM}"),
            ];
            let out = bench.py.run("torch_train_step.py", &args)?;
            let line = out.lines().last().unwrap_or_default();
            let torch: TorchStep = serde_json::from_str(line)
                .with_context(|| format!("torch_train_step.py printed {line:?}"))?;
            bench.versions.torch = Some(torch.torch.clone());
            let ours_m = models.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
            let torch_m = torch.params as f64 / 1e6;
            if ours_m.is_some_and(|m| (m - torch_m).abs() > 0.0005) || ours_m.is_none() {
                mismatch.push(format!(
                    "{name}: trainer {ours_m:?} M, PyTorch {torch_m:.3} M"
                ));
            }
            let ours_ips = batch as f64 * 1e3 / ours.ms_per_step;
            table.push(vec![
                name.to_string(),
                format!(
                    "{} M / {:.3} M",
                    ours_m.map_or("?".into(), |m| format!("{m:.3}")),
                    torch_m
                ),
                format!("{} / {}", ours.threads, torch.threads),
                format!("{batch}"),
                format!("{ours_ips:.1}"),
                format!("{:.1}", torch.images_per_s),
                ratio(Some(ours_ips), Some(torch.images_per_s)),
            ])?;
        }
    }
    anyhow::ensure!(
        mismatch.is_empty(),
        "the PyTorch reference is not the same model as the trainer's: {}",
        mismatch.join("; ")
    );
    Ok(Section {
        title: "Training-step throughput on the CPU: trainer (libtorch) vs PyTorch eager".into(),
        about: format!(
            "Images per second through one training step (forward, ArcFace loss over 1,000 \
             classes with s=64 m=0.5, backward, SGD with momentum 0.9 and weight decay 5e-4) on \
             random 112x112 input, batch {batch}, embedding dim {EMBEDDING_DIM}, one warm-up \
             step then the mean of {steps} steps: `trainer bench` against \
             `scripts/bench/torch_train_step.py`, which writes the same architectures out in \
             PyTorch from trainer/src/model (the parameter counts, checked by the bench, \
             match `trainer models`). Threads are libtorch intra-op threads on both sides \
             (`--threads` / `torch.set_num_threads`). Above 1 in the last column the trainer \
             is faster."
        ),
        table,
        notes: vec![
            "With 2 threads on 2 cores any other load stalls libtorch's thread pool (both sides): when the preamble says the machine was busy, trust the 1-thread rows.".into(),
            "GPU: no GPU was available to this run. The trainer's CUDA path (`trainer bench --cuda`, `trainer train` on a CUDA device) exists but is unmeasured here.".into(),
        ],
    })
}
