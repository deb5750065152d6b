//! `edge run` (also `--dry-run` on a simulated door), `edge audit verify` and
//! `edge admin hash-pin`: the door terminal's commands.

use anyhow::{Context, Result};
use clap::Subcommand;
use edge::audit::AuditLog;
use edge::daemon::{DoorObserver, EventStamp};
use edge::door::simulated::RelayTap;
use edge::door::DoorEvent;
use edge::gallery::LiveGallery;
use edge::pipeline::Pipeline;
use edge::recognizer::PipelineRecognizer;
use edge::service::{DoorService, FeedObserver, ModelInfo};
use edge::GalleryStore;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; names the first broken line (exit 1) or prints the head.
    Verify { file: std::path::PathBuf },
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Hash an admin PIN read from stdin, for `[enroll] admin_pin_hash` in edge.toml.
    HashPin,
    /// Set the admin API's PIN or passphrase (read from stdin; at least 6 digits or 8
    /// characters): its argon2id hash goes to `[admin] pin_file`, mode 0600.
    SetPin {
        /// The door's edge.toml (its [admin] section names the PIN file).
        #[arg(long, default_value = "/etc/maskgate/edge.toml")]
        config: PathBuf,
    },
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
    let mut pin = String::new();
    std::io::stdin()
        .read_line(&mut pin)
        .context("reading the PIN from stdin")?;
    let pin = pin.trim_end_matches(['\r', '\n']);
    match cmd {
        AdminCommand::HashPin => {
            let hash = edge::door::enroll_guide::hash_admin_pin(pin)?;
            outln!("{hash}");
        }
        AdminCommand::SetPin { config } => {
            let terminal = edge::terminal::TerminalConfig::load(&config)
                .map_err(|e| named_config_error(&config, e))?;
            let admin = terminal.admin.with_context(|| {
                format!(
                    "{}: no [admin] section, so the door serves no admin API to set a PIN for",
                    config.display()
                )
            })?;
            let file = edge::service::auth::PinFile::new(&admin.pin_file);
            file.set(pin)?;
            hand_to_service_user(file.path(), &terminal.audit.path)?;
            outln!(
                "admin PIN set in {} (argon2id hash, mode 0600)",
                file.path().display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run as root (the usual way, /etc being root's), give the PIN file to the service's user:
/// the owner of the audit log's directory, which is the service's state directory.
fn hand_to_service_user(pin_file: &Path, audit_log: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if rustix::process::geteuid().as_raw() != 0 {
        return Ok(());
    }
    let Some(state_dir) = audit_log.parent() else {
        return Ok(());
    };
    let Ok(meta) = std::fs::metadata(state_dir) else {
        return Ok(());
    };
    if meta.uid() != 0 {
        std::os::unix::fs::chown(pin_file, Some(meta.uid()), Some(meta.gid()))
            .with_context(|| format!("{}: handing it to the service's user", pin_file.display()))?;
    }
    Ok(())
}

/// How `edge run` was asked to run.
pub struct RunOptions {
    /// Simulate the door ([`edge::door::simulated`]) and print a report.
    pub dry_run: bool,
    /// Run a bundle older than the one last run.
    pub allow_downgrade: bool,
    pub json: bool,
}

/// `edge run`: load everything first (a bad config or bundle, a wrong gallery key, a rolled
/// back gallery or bundle stops start-up, with an audit entry saying why), then hand the
/// camera, the pipeline and the door to the daemon until SIGTERM/SIGINT or the end of a replayed
/// source. With `dry_run` the door is simulated ([`edge::door::simulated`]) and a report of
/// the door's events and relay transitions is printed.
pub fn run(config: &Path, opts: RunOptions) -> Result<ExitCode> {
    let RunOptions {
        dry_run,
        allow_downgrade,
        json,
    } = opts;
    let terminal =
        edge::terminal::TerminalConfig::load(config).map_err(|e| named_config_error(config, e))?;
    let door = match start(config, &terminal, allow_downgrade) {
        Ok(r) => r,
        Err(failure) => {
            audit_startup_failure(&terminal, &failure);
            return Err(failure.error);
        }
    };
    if dry_run {
        return simulate_door(&terminal, door, json);
    }
    let report = run_door(&terminal, door)?;
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

/// Why start-up failed: what was being done (for the audit entry) and the error.
struct StartFailure {
    stage: &'static str,
    error: anyhow::Error,
}

/// A door ready to run: its recogniser and, with `[admin]`, its service and listening API.
pub struct ReadyDoor {
    recognizer: PipelineRecognizer,
    service: Option<(Arc<DoorService>, edge::service::ServerHandle)>,
    audit: AuditLog,
}

impl ReadyDoor {
    fn controls(&self) -> edge::control::DoorControls {
        self.service
            .as_ref()
            .map(|(s, _)| s.controls.clone())
            .unwrap_or_default()
    }
}

/// Models, bundle version, gallery, audit log and admin API: everything `edge run` opens
/// before the door starts.
fn start(
    config: &Path,
    terminal: &edge::terminal::TerminalConfig,
    allow_downgrade: bool,
) -> std::result::Result<ReadyDoor, StartFailure> {
    let fail = |stage: &'static str| move |error: anyhow::Error| StartFailure { stage, error };
    let cfg = edge::Config::load(config).map_err(|e| fail("config")(e.into()))?;
    let pipeline = Pipeline::load(&cfg)
        .context("loading models")
        .map_err(fail("models"))?;
    let r = pipeline.recognizer();
    if let (Some(version), edge::config::RecognizerConfig::Bundle { path, .. }) =
        (r.bundle_version(), &cfg.recognizer)
    {
        edge::state::StateFile::new(terminal.audit.state_path())
            .check_and_record_bundle(path, version, allow_downgrade)
            .map_err(|e| fail("bundle_version")(e.into()))?;
    }
    let thresholds = r.thresholds();
    tracing::info!(
        model = r.model_id(),
        unmasked = thresholds.unmasked,
        masked = thresholds.masked,
        "thresholds in force"
    );
    let model = ModelInfo {
        model_id: r.model_id().to_string(),
        bundle_version: r.bundle_version(),
        thresholds: json!(thresholds),
    };
    let store = GalleryStore::from_config(&cfg.gallery).map_err(|e| fail("gallery")(e.into()))?;
    // The door holds the gallery's writer lock while it runs: every change goes through it.
    let gallery = LiveGallery::open(store, r.model_id(), r.embedding_dim(), None)
        .map_err(|e| fail("gallery")(e.into()))?;
    let gallery = Arc::new(gallery);
    tracing::info!(
        people = gallery.snapshot().gallery.people.len(),
        generation = gallery.generation(),
        "gallery loaded"
    );
    let pipeline = Arc::new(pipeline);
    let audit = AuditLog::open(&terminal.audit.path).map_err(|e| fail("audit")(e.into()))?;
    let service = match &terminal.admin {
        None => {
            tracing::warn!("no [admin] section: the door runs without its admin API");
            None
        }
        Some(admin) => {
            let peers = edge::service::peer::PeerPolicy::new(
                &admin.allowed_groups,
                Path::new("/etc/group"),
            )
            .map_err(|e| fail("admin_api")(e.into()))?;
            let mut service = DoorService::new(
                admin,
                Arc::clone(&gallery),
                Arc::clone(&pipeline),
                audit.clone(),
                model,
                peers,
            );
            service.enroll = terminal.enroll.clone();
            let service = Arc::new(service);
            let server = edge::service::serve(Arc::clone(&service), admin)
                .map_err(|e| fail("admin_api")(e.into()))?;
            Some((service, server))
        }
    };
    Ok(ReadyDoor {
        recognizer: PipelineRecognizer::live(pipeline, gallery),
        service,
        audit,
    })
}

/// The audit entry for a start-up that failed (when the audit log itself can be opened).
fn audit_startup_failure(terminal: &edge::terminal::TerminalConfig, failure: &StartFailure) {
    let reason = startup_reason(failure);
    let entry = json!({
        "event": "startup_failed",
        "stage": failure.stage,
        "reason": reason,
        "error": format!("{:#}", failure.error),
    });
    let written = AuditLog::open(&terminal.audit.path).and_then(|mut log| log.append(&entry));
    if let Err(e) = written {
        tracing::warn!(error = %e, "could not write the start-up failure to the audit log");
    }
}

/// A short machine-readable cause: what an operator filters the audit log for.
fn startup_reason(failure: &StartFailure) -> &'static str {
    use edge::embed::RecognizerError;
    use edge::gallery::StoreError;
    use edge::model::ModelError;
    use edge::state::StateError;
    use edge::PipelineError;
    for cause in failure.error.chain() {
        if let Some(e) = cause.downcast_ref::<StateError>() {
            return match e {
                StateError::GalleryRollback { .. } => "gallery_rollback",
                StateError::BundleDowngrade { .. } => "bundle_downgrade",
                _ => "state_file",
            };
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return match e {
                e if e.is_rollback() => "gallery_rollback",
                e if e.is_wrong_key() => "gallery_key",
                StoreError::Key(_) | StoreError::KeyMissing { .. } => "gallery_key",
                _ => "gallery",
            };
        }
        if let Some(e) = cause.downcast_ref::<PipelineError>() {
            return match e {
                PipelineError::Recognizer(RecognizerError::Bundle {
                    source: shared::BundleError::Io { source, .. },
                    ..
                }) if source.kind() == std::io::ErrorKind::NotFound => "missing_model",
                PipelineError::Recognizer(RecognizerError::Bundle { .. }) => "bad_bundle",
                PipelineError::Model(ModelError::Load { message, .. })
                | PipelineError::Recognizer(RecognizerError::Model(ModelError::Load {
                    message,
                    ..
                })) if message.contains("No such file") || message.contains("not found") => {
                    "missing_model"
                }
                _ => "model",
            };
        }
    }
    failure.stage
}

/// A config error, naming the file once (a read error names it already).
pub fn named_config_error(config: &Path, e: edge::terminal::TerminalConfigError) -> anyhow::Error {
    match e {
        e @ edge::terminal::TerminalConfigError::Io { .. } => e.into(),
        e => anyhow::Error::new(e).context(config.display().to_string()),
    }
}

/// Run the door until it stops, its events passed to the API's feed (when it has one) and
/// then to `observer`.
fn run_with_feed<R, C, B>(
    terminal: &edge::terminal::TerminalConfig,
    ready: ReadyDoor,
    door: edge::door::DoorController<R, C, B>,
    shutdown: &edge::daemon::Shutdown,
    observer: &mut dyn DoorObserver,
) -> (
    AuditLog,
    Result<edge::daemon::DaemonReport, edge::daemon::DaemonError>,
)
where
    R: embedded_hal::digital::OutputPin,
    C: embedded_hal::digital::InputPin,
    B: embedded_hal::digital::InputPin,
{
    let controls = ready.controls();
    let ReadyDoor {
        recognizer,
        service,
        mut audit,
    } = ready;
    let feed = service.as_ref().map(|(s, _)| Arc::clone(&s.events));
    let mut fed;
    let observer: &mut dyn DoorObserver = match &feed {
        Some(feed) => {
            fed = FeedObserver {
                feed,
                next: observer,
            };
            &mut fed
        }
        None => observer,
    };
    let (_pins, result) = edge::daemon::run_configured_controlled(
        terminal, recognizer, door, &mut audit, shutdown, observer, &controls,
    );
    // The API stops (and its socket goes) with the door.
    drop(service);
    (audit, result)
}

#[cfg(feature = "gpio")]
fn run_door(
    cfg: &edge::terminal::TerminalConfig,
    ready: ReadyDoor,
) -> Result<edge::daemon::DaemonReport> {
    let shutdown =
        edge::daemon::Shutdown::on_signals().context("installing the SIGTERM/SIGINT handlers")?;
    let door = edge::door::gpio::door_controller(&cfg.door)?;
    let (_audit, result) = run_with_feed(cfg, ready, door, &shutdown, &mut ());
    Ok(result?)
}

#[cfg(not(feature = "gpio"))]
fn run_door(
    _cfg: &edge::terminal::TerminalConfig,
    _ready: ReadyDoor,
) -> Result<edge::daemon::DaemonReport> {
    anyhow::bail!("this edge binary was built without the `gpio` feature, so it cannot drive a door (build with --features device, or try `edge run --dry-run` with a simulated door)")
}

/// The door events and relay transitions of a dry run, in order, as JSON objects.
struct Journal {
    tap: RelayTap,
    entries: Vec<Value>,
    last: EventStamp,
}

impl Journal {
    fn stamped(stamp: EventStamp, mut entry: Value) -> Value {
        if let Value::Object(map) = &mut entry {
            map.insert("at_ms".into(), json!(stamp.at.as_millis() as u64));
            map.insert("frame".into(), json!(stamp.frame));
        }
        entry
    }

    /// Relay transitions not yet listed happened just before `stamp`'s event.
    fn drain_relay(&mut self, stamp: EventStamp) {
        for t in self.tap.take() {
            let mut entry = json!({"event": "relay"});
            if let (Value::Object(map), Ok(Value::Object(t))) =
                (&mut entry, serde_json::to_value(t))
            {
                map.extend(t);
            }
            self.entries.push(Self::stamped(stamp, entry));
        }
    }
}

impl DoorObserver for Journal {
    fn on_event(&mut self, stamp: EventStamp, event: &DoorEvent) {
        self.drain_relay(stamp);
        let entry = serde_json::to_value(event)
            .unwrap_or_else(|e| json!({"event": event.kind(), "error": e.to_string()}));
        self.entries.push(Self::stamped(stamp, entry));
        self.last = stamp;
    }
}

/// `edge run --dry-run`: the whole door loop on a simulated relay; prints what the door did.
fn simulate_door(
    terminal: &edge::terminal::TerminalConfig,
    ready: ReadyDoor,
    json: bool,
) -> Result<ExitCode> {
    let shutdown =
        edge::daemon::Shutdown::on_signals().context("installing the SIGTERM/SIGINT handlers")?;
    let (door, tap) = edge::door::simulated::door_controller(&terminal.door);
    let mut journal = Journal {
        tap,
        entries: Vec::new(),
        last: EventStamp {
            at: std::time::Duration::ZERO,
            frame: None,
        },
    };
    let (audit, result) = run_with_feed(terminal, ready, door, &shutdown, &mut journal);
    let last = journal.last;
    journal.drain_relay(last);
    let mode = if terminal.camera.is_lockstep_replay() {
        "replay"
    } else {
        "live"
    };
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            for line in journal.entries.iter().map(human_line) {
                eprintln!("{line}");
            }
            return Err(anyhow::Error::new(e).context("dry run stopped"));
        }
    };
    let energised = journal
        .entries
        .iter()
        .filter(|e| e["event"] == "relay" && e["energised"] == true)
        .count();
    if json {
        let doc = json!({
            "dry_run": true,
            "mode": mode,
            "stop_reason": report.stop_reason,
            "frames": {
                "captured": report.frames_captured,
                "decided": report.frames_decided,
                "dropped": report.frames_dropped,
                "stale": report.frames_stale,
                "bad": report.bad_frames,
                "recognize_errors": report.recognize_errors,
            },
            "counts": {
                "unlocked": report.count("unlocked"),
                "denied": report.count("denied"),
                "refused": report.count("refused"),
                "relocked": report.count("relocked"),
                "relay_energised": energised,
            },
            "events": journal.entries,
            "audit": {
                "path": audit.path().display().to_string(),
                "entries": audit.entries(),
                "head": audit.head(),
            },
        });
        outln!("{doc:#}");
    } else {
        for line in journal.entries.iter().map(human_line) {
            outln!("{line}");
        }
        outln!(
            "dry run ({mode}, stopped: {}): {} frames, {} decided, {} unlocks, {} denials, {} refusals; relay energised {energised} time(s); audit log {} ({} entries, head {})",
            report.stop_reason,
            report.frames_captured,
            report.frames_decided,
            report.count("unlocked"),
            report.count("denied"),
            report.count("refused"),
            audit.path().display(),
            audit.entries(),
            audit.head()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One journal entry as a line: time, frame, what happened.
fn human_line(e: &Value) -> String {
    let at = e["at_ms"].as_u64().unwrap_or(0) as f64 / 1e3;
    let frame = e["frame"]
        .as_u64()
        .map_or(String::new(), |f| format!("frame {f}"));
    let name = |p: &Value| p["name"].as_str().unwrap_or("?").to_string();
    let score = e["score"].as_f64().unwrap_or(f64::NAN);
    let what = match e["event"].as_str().unwrap_or("?") {
        "relay" => format!(
            "relay {} ({})",
            e["level"].as_str().unwrap_or("?"),
            if e["energised"] == true {
                "energised: lock released"
            } else {
                "de-energised: locked"
            }
        ),
        "unlocked" => format!(
            "UNLOCKED for {} (score {score:.3}{}, {} frames)",
            name(&e["person"]),
            e["condition"]
                .as_str()
                .map_or(String::new(), |c| format!(", {c}")),
            e["frames"]
        ),
        "denied" => format!(
            "DENIED unknown face (closest {}, score {score:.3}){}",
            if e["best"].is_null() {
                "nobody".to_string()
            } else {
                name(&e["best"])
            },
            e["lockout_for_ms"]
                .as_u64()
                .map_or(String::new(), |ms| format!("; lockout for {ms} ms"))
        ),
        "refused" => format!(
            "REFUSED {} (score {score:.3}): {}",
            name(&e["person"]),
            e["reason"].as_str().unwrap_or("?")
        ),
        other => other.to_string(),
    };
    format!("{at:>9.3} s  {frame:<10} {what}")
}
