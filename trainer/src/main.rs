//! `trainer`: the workstation binary. Glue only; the work lives in the library.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

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
    Bench(cli::models::BenchArgs),
    /// Render the built-in synthetic identities: train.rec/.idx and verification .bin files.
    Synth(cli::data::SynthArgs),
    /// Pack an ImageFolder of aligned 112x112 faces into a .rec/.idx and/or a verification .bin.
    Pack(cli::data::PackArgs),
    /// Train a recipe: `trainer train --config trainer/configs/cpu_small.toml [--set k=v] [--resume ckpt]`.
    Train(cli::train::TrainArgs),
    /// Verification protocol (10-fold accuracy, TAR@FAR) on .bin sets, unmasked and masked;
    /// markdown/JSON table and ROC plot.
    Eval(cli::eval::EvalArgs),
    /// Calibrated thresholds (Clopper-Pearson 95% bound on FAR) per condition -> thresholds TOML.
    Calibrate(cli::eval::CalibrateArgs),
    /// Dataset tools.
    #[command(subcommand)]
    Data(cli::data::DataCommand),
    /// Write a checkpoint's backbone as ONNX (BN folded), checked against tch in tract.
    Export(cli::export::ExportArgs),
    /// Build f16 / int8-weights / int8 (QDQ) variants and measure them against f32.
    Quantize(cli::export::QuantizeArgs),
    /// Time the equivalent ONNX encodings of PReLU, the FC and flatten in tract.
    ExportForms(cli::export::FormsArgs),
    /// Create an ed25519 signing key pair for bundles.
    Keygen(cli::export::KeygenArgs),
    /// Sign model + thresholds + preprocessing + provenance into a bundle.
    Bundle(cli::export::BundleArgs),
}

fn check() -> anyhow::Result<()> {
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    println!(
        "trainer {} ready: libtorch sum check = {}, cuda = {}",
        env!("CARGO_PKG_VERSION"),
        t.sum(tch::Kind::Float).double_value(&[]),
        tch::Cuda::is_available()
    );
    Ok(())
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check => check(),
        Command::Models { embedding_dim } => cli::models::models(embedding_dim),
        Command::Bench(a) => cli::models::bench(a),
        Command::Synth(a) => cli::data::synth(a),
        Command::Pack(a) => cli::data::pack(a),
        Command::Data(c) => cli::data::run(c),
        Command::Train(a) => cli::train::train(a),
        Command::Eval(a) => cli::eval::eval(a),
        Command::Calibrate(a) => cli::eval::calibrate(a),
        Command::Export(a) => cli::export::export(a),
        Command::Quantize(a) => cli::export::quantize(a),
        Command::ExportForms(a) => cli::export::forms(a),
        Command::Keygen(a) => cli::export::keygen(a),
        Command::Bundle(a) => cli::export::bundle(a),
    }
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
