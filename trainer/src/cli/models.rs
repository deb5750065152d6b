//! `trainer models` and `trainer bench`: backbone sizes and training-step timing.

use anyhow::{Context, Result};
use clap::Args;
use trainer::model::{self, BackboneCfg};

#[derive(Args)]
pub struct BenchArgs {
    /// Backbones to time (default: tiny).
    #[arg(long, value_delimiter = ',', default_value = "tiny")]
    backbones: Vec<String>,
    #[arg(long, default_value_t = 32)]
    batch: i64,
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, default_value_t = 512)]
    embedding_dim: i64,
    /// Run on the first CUDA device when there is one.
    #[arg(long)]
    cuda: bool,
    /// libtorch intra-op threads (0: libtorch's default). 1 is fastest on a busy 2-core box.
    #[arg(long, default_value_t = 0)]
    threads: i32,
}

/// Parameter count and multiply-adds of every registered backbone.
pub fn models(embedding_dim: i64) -> Result<()> {
    let cfg = BackboneCfg {
        embedding_dim,
        ..BackboneCfg::default()
    };
    println!("{:<6} {:>12} {:>10}", "name", "params (M)", "GMACs");
    for name in model::BACKBONES {
        let s = model::summarize(name, &cfg).with_context(|| format!("building {name}"))?;
        println!(
            "{:<6} {:>12.3} {:>10.3}",
            s.name,
            s.params as f64 / 1e6,
            s.macs as f64 / 1e9
        );
    }
    println!("(MACs: multiply-adds of one 112x112 image, counted analytically per conv and linear layer; BN, PReLU and additions excluded)");
    Ok(())
}

/// Time forward + ArcFace + backward + SGD steps on random data.
pub fn bench(a: BenchArgs) -> Result<()> {
    if a.threads > 0 {
        tch::set_num_threads(a.threads);
    }
    let device = if a.cuda {
        tch::Device::cuda_if_available()
    } else {
        tch::Device::Cpu
    };
    let cfg = BackboneCfg {
        embedding_dim: a.embedding_dim,
        ..BackboneCfg::default()
    };
    println!(
        "device {device:?}, torch threads {}",
        tch::get_num_threads()
    );
    println!(
        "{:<6} {:>6} {:>10} {:>16} {:>10}",
        "name", "batch", "ms/step", "300 steps (s)", "loss"
    );
    for name in &a.backbones {
        let t = trainer::bench::time_train_steps(name, &cfg, a.batch, a.steps, 1000, device)
            .with_context(|| format!("timing {name}"))?;
        println!(
            "{:<6} {:>6} {:>10.1} {:>16.1} {:>10.3}",
            t.name,
            t.batch,
            t.ms_per_step,
            t.ms_per_step * 0.3,
            t.last_loss
        );
    }
    Ok(())
}
