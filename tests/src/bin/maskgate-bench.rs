//! `maskgate-bench` (`make bench`): measure the edge and the trainer next to onnxruntime and
//! PyTorch on this machine and write docs/BENCHMARKS.md.

use anyhow::{Context, Result};
use clap::Parser;
use maskgate_e2e::bench::latency::PythonTools;
use maskgate_e2e::bench::{Bench, BenchOptions, Budget};
use maskgate_e2e::tools::Tools;
use maskgate_e2e::workspace_root;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "maskgate-bench",
    version,
    about = "Measure the edge and the trainer next to onnxruntime and PyTorch eager on this machine; write docs/BENCHMARKS.md"
)]
struct Cli {
    /// Few repetitions of every step: a smoke check whose figures are noise.
    #[arg(long)]
    quick: bool,
    /// The report to write (atomically); default docs/BENCHMARKS.md, or
    /// <work>/BENCHMARKS.quick.md with --quick so a smoke run never replaces the real figures.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A finished `make demo` run whose student is benchmarked (random weights without one).
    #[arg(long, default_value = "out/demo")]
    demo: PathBuf,
    /// Scratch directory for models, configs, frames and bench.log.
    #[arg(long, default_value = "out/bench")]
    work: PathBuf,
    /// The team kit (YuNet, SFace, photos); default: ../shared beside the workspace.
    #[arg(long)]
    kit: Option<PathBuf>,
    /// Python with onnxruntime, onnx, numpy and full PyTorch; default: <workspace>/.venv-bench.
    #[arg(long)]
    python: Option<PathBuf>,
    /// A remark for the report's preamble (for example why the machine was busy).
    #[arg(long)]
    note: Option<String>,
}

fn main() -> ExitCode {
    maskgate_e2e::init_logging();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maskgate-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let root = workspace_root();
    let out = cli.out.clone().unwrap_or_else(|| {
        if cli.quick {
            cli.work.join("BENCHMARKS.quick.md")
        } else {
            PathBuf::from("docs/BENCHMARKS.md")
        }
    });
    let tools = Tools::locate()?;
    let py = PythonTools {
        python: cli
            .python
            .clone()
            .unwrap_or_else(|| root.join(".venv-bench/bin/python")),
        scripts: root.join("scripts/bench"),
    };
    let mut command = String::from("maskgate-bench");
    if cli.quick {
        command.push_str(" --quick");
    }
    command.push_str(&format!(" --out {}", out.display()));
    let opts = BenchOptions {
        demo: cli.demo,
        work: cli.work,
        kit: cli.kit.unwrap_or_else(|| root.join("..").join("shared")),
        command,
        note: cli.note,
    };
    let budget = if cli.quick {
        Budget::quick()
    } else {
        Budget::full()
    };
    let started = std::time::Instant::now();
    let doc = Bench::new(opts, budget, tools, py)?
        .with_progress()
        .run_all()?;
    let md = doc.markdown();
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    shared::atomic_write(&out, md.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    for s in &doc.sections {
        println!("## {}\n\n{}", s.title, s.table.markdown());
    }
    println!(
        "{:.0} s on {}. Report: {}",
        started.elapsed().as_secs_f64(),
        doc.machine,
        out.display()
    );
    Ok(())
}
