//! `edge run`, `edge audit verify` and `edge admin hash-pin`: the door terminal's commands.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use edge::pipeline::Pipeline;
use edge::recognizer::PipelineRecognizer;
use edge::GalleryStore;
use std::path::Path;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; names the first broken line (exit 1) or prints the head.
    Verify { file: std::path::PathBuf },
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Hash an admin PIN read from stdin, for `admin_pin_hash` in edge.toml.
    HashPin,
}

pub fn audit(cmd: AuditCommand) -> Result<ExitCode> {
    let AuditCommand::Verify { file } = cmd;
    match edge::audit::verify_file(&file) {
        Ok(summary) => {
            outln!(
                "{}: ok, {} entries, head {}",
                file.display(),
                summary.entries,
                summary.head
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ edge::audit::AuditError::Broken { .. }) => {
            outln!("{e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn admin(cmd: AdminCommand) -> Result<ExitCode> {
    let AdminCommand::HashPin = cmd;
    let mut pin = String::new();
    std::io::stdin()
        .read_line(&mut pin)
        .context("reading the PIN from stdin")?;
    let hash = edge::door::enroll_guide::hash_admin_pin(pin.trim_end_matches(['\r', '\n']))?;
    outln!("{hash}");
    Ok(ExitCode::SUCCESS)
}

/// `edge run`: load everything first (a bad config or bundle stops start-up), then hand the
/// camera, the pipeline and the door to the daemon until SIGTERM/SIGINT.
pub fn run(config: &Path) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let terminal = edge::terminal::TerminalConfig::from_toml(&text)
        .with_context(|| format!("{}", config.display()))?;
    let cfg = edge::Config::load(config)?;
    let pipeline = Pipeline::load(&cfg).context("loading models")?;
    let store = GalleryStore::from_config(&cfg.gallery)?;
    let r = pipeline.recognizer();
    let gallery = store.load_for_model(r.model_id(), r.embedding_dim())?;
    tracing::info!(people = gallery.people.len(), "gallery loaded");
    let recognizer = PipelineRecognizer::new(pipeline, gallery);
    let report = run_door(&terminal, Box::new(recognizer))?;
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

#[cfg(feature = "gpio")]
fn run_door(
    cfg: &edge::terminal::TerminalConfig,
    recognizer: Box<dyn edge::daemon::FaceRecognizer>,
) -> Result<edge::daemon::DaemonReport> {
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
) -> Result<edge::daemon::DaemonReport> {
    bail!("this edge binary was built without the `gpio` feature, so it cannot drive a door (build with --features device)")
}
