//! `edge`: the door-terminal binary. Glue only; the work lives in the library.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// maskgate door terminal.
#[derive(Parser)]
#[command(name = "edge", version, about)]
struct Cli {
    /// Print the build information and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the door terminal: capture, recognise, decide, drive the relay (until SIGTERM/SIGINT).
    Run {
        #[arg(long, default_value = "/etc/maskgate/edge.toml")]
        config: PathBuf,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Administration helpers.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; names the first broken line (exit 1) or prints the head.
    Verify { file: PathBuf },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Hash an admin PIN read from stdin, for `admin_pin_hash` in edge.toml.
    HashPin,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if cli.check {
        println!("edge {} ready (tract-onnx)", env!("CARGO_PKG_VERSION"));
    }
    let result = match cli.command {
        None => Ok(ExitCode::SUCCESS),
        Some(Command::Run { config }) => cmd_run(&config),
        Some(Command::Audit {
            command: AuditCommand::Verify { file },
        }) => cmd_audit_verify(&file),
        Some(Command::Admin {
            command: AdminCommand::HashPin,
        }) => cmd_hash_pin(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edge: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn cmd_audit_verify(file: &Path) -> anyhow::Result<ExitCode> {
    match edge::audit::verify_file(file) {
        Ok(summary) => {
            println!(
                "{}: ok, {} entries, head {}",
                file.display(),
                summary.entries,
                summary.head
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ edge::audit::AuditError::Broken { .. }) => {
            println!("{e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

fn cmd_hash_pin() -> anyhow::Result<ExitCode> {
    let mut pin = String::new();
    std::io::stdin()
        .read_line(&mut pin)
        .context("reading the PIN from stdin")?;
    let hash = edge::door::enroll_guide::hash_admin_pin(pin.trim_end_matches(['\r', '\n']))?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}

fn cmd_run(config: &Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let cfg = edge::terminal::TerminalConfig::from_toml(&text)
        .with_context(|| format!("{}", config.display()))?;
    let recognizer = build_recognizer(config, &text)?;
    let report = run_door(&cfg, recognizer)?;
    eprintln!(
        "edge: stopped ({}): {} frames, {} decided, {} unlocks, {} denials",
        report.stop_reason,
        report.frames_captured,
        report.frames_decided,
        report.count("unlocked"),
        report.count("denied")
    );
    Ok(ExitCode::SUCCESS)
}

/// The face recogniser for `edge run`. MERGE: build the edge pipeline here (models and gallery
/// from the bundle named in `config`) and return it as a `FaceRecognizer`.
fn build_recognizer(
    config: &Path,
    _text: &str,
) -> anyhow::Result<Box<dyn edge::daemon::FaceRecognizer>> {
    bail!(
        "{}: this edge binary has no face recognition pipeline built in yet (issue 7); \
         `edge run` needs it to recognise faces",
        config.display()
    )
}

#[cfg(feature = "gpio")]
fn run_door(
    cfg: &edge::terminal::TerminalConfig,
    recognizer: Box<dyn edge::daemon::FaceRecognizer>,
) -> anyhow::Result<edge::daemon::DaemonReport> {
    let shutdown =
        edge::daemon::Shutdown::on_signals().context("installing the SIGTERM/SIGINT handlers")?;
    let mut audit = edge::audit::AuditLog::open(&cfg.audit.path)?;
    let door = edge::door::gpio::door_controller(&cfg.door)?;
    let camera = cfg.camera.clone();
    let (_pins, result) = edge::daemon::run(
        &cfg.daemon,
        move || edge::frame::open_source(&camera),
        recognizer,
        door,
        &mut audit,
        &shutdown,
    );
    Ok(result?)
}

#[cfg(not(feature = "gpio"))]
fn run_door(
    _cfg: &edge::terminal::TerminalConfig,
    _recognizer: Box<dyn edge::daemon::FaceRecognizer>,
) -> anyhow::Result<edge::daemon::DaemonReport> {
    bail!("this edge binary was built without the `gpio` feature, so it cannot drive a door (build with --features device)")
}
