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
    }
    Ok(())
}
