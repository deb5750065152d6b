//! `edge`: the door-terminal binary. Glue only; the work lives in the library.

use clap::Parser;
use std::process::ExitCode;

/// maskgate door terminal.
#[derive(Parser)]
#[command(name = "edge", version, about)]
struct Cli {
    /// Print the build information and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.check {
        println!("edge {} ready (tract-onnx)", env!("CARGO_PKG_VERSION"));
    }
    ExitCode::SUCCESS
}
