//! `trainer`: the workstation binary. Glue only; the work lives in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use trainer::model::{self, BackboneCfg};

/// maskgate trainer.
#[derive(Parser)]
#[command(name = "trainer", version, about)]
struct Cli {
    /// Print libtorch information and exit (same as the `check` subcommand).
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check that libtorch loads and computes.
    Check,
    /// Print parameter count and multiply-adds of every registered backbone at 112x112.
    Models {
        /// Embedding dimension D.
        #[arg(long, default_value_t = 512)]
        embedding_dim: i64,
    },
    /// Time training steps (forward, ArcFace, backward, SGD) on random 112x112 data.
    Bench {
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
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = match (cli.check, cli.command) {
        (true, _) => Command::Check,
        (false, Some(c)) => c,
        (false, None) => {
            eprintln!("trainer: no command given; try `trainer --help`");
            return ExitCode::from(2);
        }
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trainer: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check => {
            let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
            println!(
                "trainer {} ready: libtorch sum check = {}, cuda = {}",
                env!("CARGO_PKG_VERSION"),
                t.sum(tch::Kind::Float).double_value(&[]),
                tch::Cuda::is_available()
            );
        }
        Command::Models { embedding_dim } => {
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
        }
        Command::Bench {
            backbones,
            batch,
            steps,
            embedding_dim,
            cuda,
            threads,
        } => {
            if threads > 0 {
                tch::set_num_threads(threads);
            }
            let device = if cuda {
                tch::Device::cuda_if_available()
            } else {
                tch::Device::Cpu
            };
            let cfg = BackboneCfg {
                embedding_dim,
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
            for name in &backbones {
                let t = trainer::bench::time_train_steps(name, &cfg, batch, steps, 1000, device)
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
        }
    }
    Ok(())
}
