//! `trainer`: the workstation binary. Glue only; the work lives in the library.

use clap::Parser;
use std::process::ExitCode;

/// maskgate trainer.
#[derive(Parser)]
#[command(name = "trainer", version, about)]
struct Cli {
    /// Print libtorch information and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.check {
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        println!("trainer {} ready: libtorch sum check = {}", env!("CARGO_PKG_VERSION"), t.sum(tch::Kind::Float).double_value(&[]));
    }
    ExitCode::SUCCESS
}
