//! Command-line interface: parse, run one subcommand, print human text or JSON.
//!
//! Exit codes: 0 success (identify of one photo: someone accepted; verify: same person), 1 a
//! clean negative answer (nobody accepted / different people), 2 an error.
//! `identify` over several images or a directory answers per image (results, or the error for
//! that image) and exits 0 when it ran, whoever was accepted; 2 only when it could not run at
//! all (config, models, gallery, or not a single image to read).

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use edge::config::Config;
use edge::gallery::{self, GalleryStore};
use edge::pipeline::{load_image, Pipeline};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// `println!` that returns the write error instead of panicking, so `edge ... | head` ends
/// quietly when the reader goes away (see `is_broken_pipe`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// `print!` counterpart of `outln!`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod door;
mod enroll;
mod remote;

/// True when the error is stdout's reader having gone away: not a failure of the command.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// maskgate door terminal: enroll people and recognise them, masked or not.
#[derive(Parser)]
#[command(name = "edge", version, about)]
pub struct Cli {
    /// Print the build information and exit.
    #[arg(long)]
    pub check: bool,
    /// Configuration file (see edge.example.toml).
    #[arg(long, global = true, default_value = "edge.toml")]
    pub config: PathBuf,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log model loading and other progress to stderr.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// Commands that write the gallery (enroll, gallery remove/rename) hold its lock
    /// (`<gallery>.lock`) from load to save; when another process holds it they fail at once,
    /// or with --wait retry for up to SECONDS first.
    #[arg(long, global = true, value_name = "SECONDS")]
    pub wait: Option<u64>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Enroll a person from one or more photos (each must show the person as its largest face),
    /// or with --camera from live frames of the [camera] source, guided until K good frames.
    Enroll {
        #[arg(long)]
        name: String,
        /// Add the photos to an already enrolled person of this name.
        #[arg(long)]
        update: bool,
        /// Capture from the [camera] of the config instead of photos.
        #[arg(long, conflicts_with = "images")]
        camera: bool,
        /// With --camera: good, diverse frames to keep (default: [enroll] frames, 5).
        #[arg(long, requires = "camera")]
        frames: Option<usize>,
        /// With --camera: the admin PIN comes on stdin (it is read whenever [enroll]
        /// admin_pin_hash is set; this flag only says so).
        #[arg(long, requires = "camera")]
        pin_stdin: bool,
        #[arg(required_unless_present = "camera")]
        images: Vec<PathBuf>,
    },
    /// Identify every face in photos against the gallery. Several photos (or directories: every
    /// .png/.jpg under them) are answered one result per image, models loaded once.
    Identify {
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Are the largest faces of two photos the same person?
    Verify { first: PathBuf, second: PathBuf },
    /// Inspect and manage the enrolled people.
    Gallery {
        #[command(subcommand)]
        action: GalleryAction,
    },
    /// Time model loading, detection, embedding, 1:N search per gallery size and the whole
    /// frame-to-door-decision path; prints the machine and a table.
    Bench {
        /// Photo to time detection and embedding on.
        image: PathBuf,
        /// Synthetic gallery sizes (people, comma-separated) for the search timing.
        #[arg(long, value_delimiter = ',', default_values_t = [1_000usize, 10_000, 100_000])]
        templates: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Run the door terminal: capture, recognise, decide, drive the relay (until SIGTERM/SIGINT,
    /// or the end of a directory/recording [camera] source).
    Run {
        /// Simulate the door: no GPIO, the relay is in memory; print the door's events and relay
        /// transitions at the end (with --json, as one document). The audit log is written.
        #[arg(long)]
        dry_run: bool,
        /// Run a bundle whose bundle_version is older than the one this edge last ran (the
        /// state file beside the audit log records it); refused without this flag.
        #[arg(long)]
        allow_downgrade: bool,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: door::AuditCommand,
    },
    /// Administration helpers.
    Admin {
        #[command(subcommand)]
        command: door::AdminCommand,
    },
}

#[derive(Subcommand)]
pub enum GalleryAction {
    /// List enrolled people (names, ids, template counts).
    List,
    /// Remove a person, by name or id.
    Remove { who: String },
    /// Rename a person, by name or id.
    Rename { who: String, new_name: String },
    /// Export names, ids and counts as JSON (templates only with --with-templates).
    Export {
        #[arg(long)]
        with_templates: bool,
        /// Write to this file (atomically) instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    if cli.check {
        outln!("edge {} ready (tract-onnx)", env!("CARGO_PKG_VERSION"));
        return Ok(ExitCode::SUCCESS);
    }
    let Some(command) = cli.command else {
        bail!("no command given (try --help)");
    };
    // Commands that need no recognition config.
    let command = match command {
        Command::Audit { command } => return door::audit(command),
        Command::Admin { command } => return door::admin(command),
        Command::Run {
            dry_run,
            allow_downgrade,
        } => {
            return door::run(
                &cli.config,
                door::RunOptions {
                    dry_run,
                    allow_downgrade,
                    json: cli.json,
                },
            )
        }
        other => other,
    };
    let cfg = load_config(&cli.config)?;
    let out = Output {
        json: cli.json,
        wait: cli.wait.map(std::time::Duration::from_secs),
    };
    // A running door service holds the gallery and the camera: go through it.
    if let Some(socket) = remote::service_for(&cli.config, &command)? {
        return remote::run(&socket, &out, command);
    }
    match command {
        Command::Enroll {
            name,
            update,
            camera: true,
            frames,
            ..
        } => enroll::enroll_camera(
            &cfg,
            &out,
            enroll::CameraEnroll {
                config_path: &cli.config,
                name: &name,
                update,
                frames,
            },
        ),
        Command::Enroll {
            name,
            update,
            images,
            ..
        } => enroll(&cfg, &out, &name, update, &images),
        Command::Identify { images } => match images.as_slice() {
            [one] if !one.is_dir() => identify(&cfg, &out, one),
            many => identify_many(&cfg, &out, many),
        },
        Command::Verify { first, second } => verify(&cfg, &out, &first, &second),
        Command::Gallery { action } => gallery_cmd(&cfg, &out, action),
        Command::Bench {
            image,
            templates,
            runs,
        } => bench(&cfg, &image, &templates, runs),
        Command::Run { .. } | Command::Audit { .. } | Command::Admin { .. } => {
            bail!("internal: door command reached the recognition dispatcher")
        }
    }
}

fn load_config(path: &Path) -> Result<Config> {
    if !path.exists() {
        bail!(
            "config {} not found: pass --config FILE (see edge/edge.example.toml)",
            path.display()
        );
    }
    Ok(Config::load(path)?)
}

/// Human text or JSON, chosen once; and how long a gallery writer waits for the lock.
struct Output {
    json: bool,
    wait: Option<std::time::Duration>,
}

impl Output {
    fn emit(&self, value: serde_json::Value, human: impl FnOnce() -> String) -> Result<()> {
        if self.json {
            outln!("{value:#}");
        } else {
            outln!("{}", human());
        }
        Ok(())
    }
}

fn load_pipeline(cfg: &Config) -> Result<Pipeline> {
    let started = Instant::now();
    let pipeline = Pipeline::load(cfg).context("loading models")?;
    tracing::info!(ms = started.elapsed().as_millis() as u64, "models ready");
    Ok(pipeline)
}

fn load_pipeline_and_gallery(cfg: &Config) -> Result<(Pipeline, GalleryStore, shared::Gallery)> {
    let mut pipeline = load_pipeline(cfg)?;
    let store = GalleryStore::from_config(&cfg.gallery)?;
    let r = pipeline.recognizer();
    let gallery = store.load_for_model(r.model_id(), r.embedding_dim())?;
    pipeline.set_gallery(&gallery);
    Ok((pipeline, store, gallery))
}

fn enroll(
    cfg: &Config,
    out: &Output,
    name: &str,
    update: bool,
    paths: &[PathBuf],
) -> Result<ExitCode> {
    // Decode every image first: a bad file stops the command before anything is computed or written.
    let images = paths
        .iter()
        .map(|p| Ok((p.display().to_string(), load_image(p)?)))
        .collect::<Result<Vec<_>>>()?;
    let pipeline = load_pipeline(cfg)?;
    let store = GalleryStore::from_config(&cfg.gallery)?;
    let now = now_unix();
    let (templates, report) = pipeline.enrollment_templates(&images, now)?;
    if templates.is_empty() {
        let why: Vec<String> = report
            .iter()
            .map(|r| format!("{}: {}", r.image, r.skipped.as_deref().unwrap_or("?")))
            .collect();
        bail!(
            "nothing enrolled for {name:?}: no image gave a usable face ({})",
            why.join("; ")
        );
    }
    let used = templates.len();
    let r = pipeline.recognizer();
    // Load, add and save under the gallery lock: no other writer's change can be lost.
    let id = store.edit(
        out.wait,
        Some((r.model_id(), r.embedding_dim())),
        |g| -> Result<_> { Ok(enroll_into(g, name, update, templates, now)?) },
    )?;
    out.emit(
        json!({"id": id.to_string(), "name": name, "templates_added": used, "images": report}),
        || {
            let mut s = format!(
                "enrolled {name} ({id}) from {used} of {} image(s)",
                report.len()
            );
            for r in report.iter().filter(|r| r.skipped.is_some()) {
                s += &format!(
                    "\n  skipped {}: {}",
                    r.image,
                    r.skipped.as_deref().unwrap_or("")
                );
            }
            s
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Add `templates` to the gallery: a new person `name`, or with `update` that person's.
fn enroll_into(
    g: &mut shared::Gallery,
    name: &str,
    update: bool,
    templates: Vec<shared::Template>,
    now: u64,
) -> Result<shared::PersonId, gallery::GalleryOpError> {
    if update {
        let i = gallery::find(g, name)?;
        gallery::add_templates(g, i, templates, now)?;
        Ok(g.people[i].id)
    } else {
        gallery::add_person(g, name, templates, now)
    }
}

fn identify(cfg: &Config, out: &Output, path: &Path) -> Result<ExitCode> {
    let image = load_image(path)?;
    let (pipeline, _, gallery) = load_pipeline_and_gallery(cfg)?;
    let faces = identify_faces(&pipeline, &gallery, &image, now_unix())
        .with_context(|| format!("{}", path.display()))?;
    if faces.is_empty() {
        bail!("{}: no face found", path.display());
    }
    let any_accepted = faces
        .iter()
        .any(|f| f.identification.as_ref().is_some_and(|i| i.accepted));
    out.emit(
        json!({"image": path.display().to_string(), "faces": faces}),
        || {
            let mut lines = Vec::new();
            for (k, f) in faces.iter().enumerate() {
                let b = f.face.bbox;
                let at = format!(
                    "face {} at ({:.0}, {:.0}) {:.0}x{:.0}",
                    k + 1,
                    b.x,
                    b.y,
                    b.w,
                    b.h
                );
                lines.push(format!("{at}: {}", face_verdict(f)));
            }
            lines.join("\n")
        },
    )?;
    Ok(if any_accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Every face of `image`, identified, with closed validity windows withdrawing acceptance.
fn identify_faces(
    pipeline: &Pipeline,
    gallery: &shared::Gallery,
    image: &image::RgbImage,
    now: u64,
) -> Result<Vec<edge::FaceResult>> {
    let mut faces = pipeline.process(image)?;
    for id in faces.iter_mut().filter_map(|f| f.identification.as_mut()) {
        id.check_validity(gallery, now);
    }
    Ok(faces)
}

/// What became of one face, for people.
fn face_verdict(f: &edge::FaceResult) -> String {
    match &f.identification {
        None => format!("rejected: {}", f.quality.reasons()),
        Some(i) => match (&i.name, i.score) {
            (Some(n), Some(s)) if i.accepted => format!(
                "{n} (score {s:.3} >= {:.3}, {}, margin {})",
                i.threshold,
                i.condition,
                i.margin.map_or("n/a".into(), |m| format!("{m:.3}"))
            ),
            (Some(n), Some(s)) if i.outside_validity => format!(
                "{n} is outside their validity window: not accepted (score {s:.3}, {})",
                i.condition
            ),
            (Some(n), Some(s)) => format!(
                "unknown (closest {n}, score {s:.3} < {:.3}, {})",
                i.threshold, i.condition
            ),
            _ => "unknown (gallery is empty)".to_string(),
        },
    }
}

/// The images named on the command line, each directory expanded to the .png/.jpg files under
/// it (sub-directories too, as face databases keep one folder per person), in path order.
fn expand_images(args: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for a in args {
        if a.is_dir() {
            let mut found = Vec::new();
            images_under(a, &mut found)?;
            if found.is_empty() {
                bail!("{}: no .png/.jpg images in this directory", a.display());
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(a.clone());
        }
    }
    Ok(out)
}

fn images_under(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if p.is_dir() {
            images_under(&p, found)?;
        } else if p.is_file() && edge::photo::has_photo_extension(&p) {
            found.push(p);
        }
    }
    Ok(())
}

/// `edge identify A B DIR ...`: models and gallery loaded once, one result per image; a bad
/// image is reported in its result and the rest go on.
fn identify_many(cfg: &Config, out: &Output, args: &[PathBuf]) -> Result<ExitCode> {
    let paths = expand_images(args)?;
    let (pipeline, _, gallery) = load_pipeline_and_gallery(cfg)?;
    let now = now_unix();
    let mut results = Vec::with_capacity(paths.len());
    for path in &paths {
        let name = path.display().to_string();
        let faces = load_image(path)
            .map_err(anyhow::Error::from)
            .and_then(|img| identify_faces(&pipeline, &gallery, &img, now));
        let (result, line) = match faces {
            Ok(faces) if faces.is_empty() => (
                json!({"image": name, "faces": [], "best": null, "mask_prob": null, "error": "no face found"}),
                format!("{name}: no face found"),
            ),
            Ok(faces) => {
                let best = best_face(&faces);
                let more = if faces.len() > 1 {
                    format!(" ({} faces)", faces.len())
                } else {
                    String::new()
                };
                let line = format!("{name}: {}{more}", best.map_or(String::new(), face_verdict));
                let result = json!({
                    "image": name,
                    "best": best.and_then(|f| f.identification.as_ref()),
                    "mask_prob": best.and_then(|f| f.mask_prob),
                    "faces": faces,
                    "error": null,
                });
                (result, line)
            }
            Err(e) => (
                json!({"image": name, "faces": [], "best": null, "mask_prob": null, "error": format!("{e:#}")}),
                format!("{name}: error: {e:#}"),
            ),
        };
        if !out.json {
            outln!("{line}");
        }
        results.push(result);
    }
    if out.json {
        outln!("{:#}", Value::Array(results));
    }
    Ok(ExitCode::SUCCESS)
}

/// The face that answers for an image: an accepted match before any other, then the highest
/// score; faces the gate rejected only when there is nothing else.
fn best_face(faces: &[edge::FaceResult]) -> Option<&edge::FaceResult> {
    let rank = |f: &edge::FaceResult| {
        f.identification
            .as_ref()
            .map(|i| (i.accepted, i.score.unwrap_or(f32::NEG_INFINITY)))
    };
    faces
        .iter()
        .filter_map(|f| rank(f).map(|r| (f, r)))
        .max_by(|(_, a), (_, b)| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|(f, _)| f)
        .or_else(|| faces.first())
}

fn verify(cfg: &Config, out: &Output, a: &Path, b: &Path) -> Result<ExitCode> {
    let (ia, ib) = (load_image(a)?, load_image(b)?);
    let pipeline = Pipeline::load(cfg).context("loading models")?;
    let (na, nb) = (a.display().to_string(), b.display().to_string());
    let v = pipeline.verify((&ia, &na), (&ib, &nb))?;
    out.emit(serde_json::to_value(&v)?, || {
        format!(
            "{} (score {:.3} {} {:.3}, {})",
            if v.same_person {
                "same person"
            } else {
                "different people"
            },
            v.score,
            if v.same_person { ">=" } else { "<" },
            v.threshold,
            v.condition
        )
    })?;
    Ok(if v.same_person {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn gallery_cmd(cfg: &Config, out: &Output, action: GalleryAction) -> Result<ExitCode> {
    if !cfg.gallery.path.exists() {
        // Nothing enrolled yet: answer without creating a key as a side effect.
        return match action {
            GalleryAction::List => {
                out.emit(json!({"people": []}), || "no one enrolled".into())?;
                Ok(ExitCode::SUCCESS)
            }
            _ => bail!(
                "gallery {} does not exist yet: enroll someone first",
                cfg.gallery.path.display()
            ),
        };
    }
    let store = GalleryStore::from_config(&cfg.gallery)?;
    let missing = || {
        anyhow::anyhow!(
            "gallery {} does not exist yet: enroll someone first",
            store.path().display()
        )
    };
    match action {
        GalleryAction::List => {
            let people = store
                .load()?
                .as_ref()
                .map(gallery::summaries)
                .unwrap_or_default();
            out.emit(json!({"people": people}), || {
                if people.is_empty() {
                    return "no one enrolled".into();
                }
                people
                    .iter()
                    .map(|p| format!("{}  {}  ({} templates)", p.id, p.name, p.templates))
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        }
        GalleryAction::Remove { who } => {
            let rec = store.edit(out.wait, None, |g| -> Result<_> {
                Ok(gallery::remove(g, &who)?)
            })?;
            out.emit(
                json!({"removed": rec.id.to_string(), "name": rec.display_name}),
                || format!("removed {} ({})", rec.display_name, rec.id),
            )?;
        }
        GalleryAction::Rename { who, new_name } => {
            let id = store.edit(out.wait, None, |g| -> Result<_> {
                Ok(gallery::rename(g, &who, &new_name, now_unix())?)
            })?;
            out.emit(
                json!({"renamed": id.to_string(), "name": new_name.trim()}),
                || format!("renamed {id} to {}", new_name.trim()),
            )?;
        }
        GalleryAction::Export {
            with_templates,
            output,
        } => {
            let g = store.load()?.ok_or_else(missing)?;
            let text = format!("{:#}\n", gallery::export(&g, with_templates));
            match output {
                Some(p) => {
                    let mode = if with_templates { Some(0o600) } else { None };
                    shared::atomic::atomic_write_mode(&p, text.as_bytes(), mode)
                        .with_context(|| format!("writing {}", p.display()))?;
                    eprintln!("exported {} people to {}", g.people.len(), p.display());
                }
                None => out!("{text}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(cfg: &Config, path: &Path, sizes: &[usize], runs: usize) -> Result<ExitCode> {
    use edge::daemon::FaceRecognizer;
    use edge::detect::Detector;
    use edge::door::{AccessPolicy, DoorEvent, PolicyConfig};
    use edge::embed::Recognizer;
    use edge::frame::Frame;
    use edge::recognizer::PipelineRecognizer;
    use std::time::Duration;
    let runs = runs.max(1);
    let image = load_image(path)?;
    let t = Instant::now();
    let recognizer = Recognizer::load(&cfg.recognizer, cfg.flip_fusion, cfg.condition)?;
    let rec_load = t.elapsed();
    let t = Instant::now();
    let detector = Detector::from_kind(&cfg.detector, recognizer.spec())?;
    let det_load = t.elapsed();
    let t = Instant::now();
    let mut faces = Vec::new();
    for _ in 0..runs {
        faces = detector
            .detect(&image)
            .with_context(|| format!("{}", path.display()))?;
    }
    let det = t.elapsed() / runs as u32;
    let detector_name = detector.describe();
    let Some(face) = faces.first() else {
        bail!("{}: no face found", path.display())
    };
    let t = Instant::now();
    let crop = recognizer.align(&image, &face.landmarks)?;
    for _ in 1..runs {
        recognizer.align(&image, &face.landmarks)?;
    }
    let align = t.elapsed() / runs as u32;
    let t = Instant::now();
    let mut probe = None;
    for _ in 0..runs {
        probe = Some(recognizer.embed_aligned(&crop)?);
    }
    let embed = t.elapsed() / runs as u32;
    let probe = probe.context("no embedding")?;
    let (model_id, dim) = (
        recognizer.model_id().to_string(),
        recognizer.embedding_dim(),
    );
    let mut searches = Vec::with_capacity(sizes.len());
    for &n in sizes {
        let g = synthetic_gallery(&model_id, dim, n);
        let matcher = edge::Matcher::new(&g);
        let t = Instant::now();
        for _ in 0..runs {
            matcher.search(&probe.embedding)?;
        }
        searches.push((matcher.len(), matcher.rows(), t.elapsed() / runs as u32));
    }

    // End to end: frame -> pipeline -> recogniser adapter -> door policy, the photo's person
    // enrolled among 1k others, as `edge run` decides.
    let mut g = synthetic_gallery(&model_id, dim, 1_000);
    let enrolled = shared::Template {
        embedding: probe.embedding.clone(),
        quality: 1.0,
        masked: None,
        created_unix: 0,
    };
    gallery::add_person(&mut g, "bench person", vec![enrolled], now_unix())?;
    let people = g.people.len();
    let pipeline = Pipeline::new(detector, recognizer, edge::QualityGate::new(&cfg.quality));
    let mut adapter = PipelineRecognizer::new(pipeline, g);
    let policy_cfg = PolicyConfig::default();
    let agree = policy_cfg.agree_frames;
    let mut policy = AccessPolicy::new(policy_cfg);
    let mut decision = "no decision";
    let mut per_frame = Duration::ZERO;
    let e2e_frames = runs.max(agree as usize);
    for seq in 0..e2e_frames {
        let frame = Frame {
            image: image.clone(),
            captured_at: Duration::from_millis(seq as u64 * 66),
            seq: seq as u64,
        };
        let t = Instant::now();
        let observations = adapter
            .recognize(&frame)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let events = policy.observe(frame.captured_at, &observations);
        per_frame += t.elapsed();
        for event in events {
            match event {
                DoorEvent::Unlocked { .. } => decision = "unlocked",
                DoorEvent::Denied { .. } => decision = "denied",
                DoorEvent::Refused { .. } => decision = "refused",
                _ => {}
            }
        }
    }
    let per_frame = per_frame / e2e_frames as u32;

    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    outln!("machine: {}", edge::machine::description());
    outln!("date: {}", edge::machine::utc_minute(now_unix()));
    outln!("runs: {runs}");
    outln!();
    outln!("| stage | ms |");
    outln!("|---|---|");
    outln!(
        "| load detector ({}) | {:.1} |",
        detector_name,
        ms(det_load)
    );
    outln!("| load recogniser | {:.1} |", ms(rec_load));
    outln!(
        "| detect ({}x{} image, {} faces) | {:.2} |",
        image.width(),
        image.height(),
        faces.len(),
        ms(det)
    );
    outln!("| align | {:.3} |", ms(align));
    outln!(
        "| embed (flip fusion {}) | {:.2} |",
        cfg.flip_fusion,
        ms(embed)
    );
    for (n, rows, d) in searches {
        outln!(
            "| 1:N search ({n} people, {rows} rows, dim {dim}) | {:.3} |",
            ms(d)
        );
    }
    outln!(
        "| end-to-end decision per frame ({people} people; {decision} after {agree} agreeing frames) | {:.2} |",
        ms(per_frame)
    );
    outln!(
        "| end-to-end time to unlock ({agree} frames, excluding capture) | {:.2} |",
        ms(per_frame) * f64::from(agree)
    );
    Ok(ExitCode::SUCCESS)
}

/// `n` random one-template people (each row is then mean + template: 2 rows per person).
fn synthetic_gallery(model_id: &str, dim: usize, n: usize) -> shared::Gallery {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut g = shared::Gallery::new(model_id.to_string(), dim as u32);
    for i in 0..n {
        let v: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let Ok(embedding) = shared::Embedding::normalize(&v) else {
            continue;
        };
        let t = shared::Template {
            embedding,
            quality: 1.0,
            masked: None,
            created_unix: 0,
        };
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(i as u64).to_le_bytes());
        if let Ok(p) = shared::PersonRecord::new(shared::PersonId(id), format!("p{i}"), vec![t], 0)
        {
            g.people.push(p);
        }
    }
    g
}
