//! `edge enroll --camera`: enrollment at the door from live frames, guided, PIN-authorised.

use super::{load_pipeline, now_unix, Output};
use anyhow::{bail, Context, Result};
use edge::config::Config;
use edge::door::enroll_guide::{verify_admin_pin, Guidance};
use edge::enrollment::LiveEnrollment;
use edge::frame::FrameSource;
use edge::gallery;
use edge::terminal::EnrollSections;
use serde_json::json;
use shared::Template;
use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

pub struct CameraEnroll<'a> {
    pub config_path: &'a Path,
    pub name: &'a str,
    pub update: bool,
    /// K from the command line, over `[enroll] frames`.
    pub frames: Option<usize>,
}

pub fn enroll_camera(cfg: &Config, out: &Output, req: CameraEnroll) -> Result<ExitCode> {
    let path = req.config_path;
    if cfg.detector.yunet().is_none() {
        // The guidance (come closer, centre, hold still) measures a face inside a larger frame.
        bail!(
            "{}: enroll --camera needs a face detector, and [detector] aligned = true has none; enroll aligned crops as photos instead (edge enroll --name NAME crop1.png crop2.png)",
            path.display()
        );
    }
    let sections =
        EnrollSections::load(path).map_err(|e| super::door::named_config_error(path, e))?;
    let mut enroll = sections.enroll;
    if let Some(k) = req.frames {
        enroll.frames = k;
        enroll.max_frames = enroll.max_frames.max(k);
        enroll.validate().context("--frames")?;
    }
    if let Some(hash) = &enroll.admin_pin_hash {
        check_pin(hash, path)?;
    }
    let pipeline = load_pipeline(cfg)?;
    let store = edge::GalleryStore::from_config(&cfg.gallery)?;
    let r = pipeline.recognizer();
    // The gallery lock is held from before the capture to after the save: the person at the
    // camera is checked against, and added to, the gallery as it is when it is written.
    let (id, used) = store.edit(
        out.wait,
        Some((r.model_id(), r.embedding_dim())),
        |g| -> Result<_> {
            // A wrong name or a taken one stops before anyone stands in front of the camera.
            if req.update {
                gallery::find(g, req.name)?;
            } else if gallery::find(g, req.name).is_ok() {
                bail!(
                    "{:?} is already enrolled: add --update to add frames to that person",
                    req.name
                );
            }
            let mut source = edge::frame::open_source(&sections.camera)
                .with_context(|| format!("opening the [camera] of {}", path.display()))?;
            let templates = capture(&pipeline, &mut source, &enroll, out)?;
            let used = templates.len();
            let id = super::enroll_into(g, req.name, req.update, templates, now_unix())?;
            Ok((id, used))
        },
    )?;
    let name = req.name;
    out.emit(
        json!({"event": "enrolled", "id": id.to_string(), "name": name, "templates_added": used}),
        || format!("enrolled {name} ({id}) from {used} camera frame(s)"),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Read one line from stdin and check it against the configured hash.
fn check_pin(hash: &str, config: &Path) -> Result<()> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("admin PIN: ");
    }
    let mut pin = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut pin)
        .context("reading the admin PIN from stdin")?;
    let pin = pin.trim_end_matches(['\r', '\n']);
    if pin.is_empty() {
        bail!(
            "{}: [enroll] admin_pin_hash is set: give the admin PIN on stdin (--pin-stdin)",
            config.display()
        );
    }
    let ok = verify_admin_pin(hash, pin).with_context(|| format!("{}", config.display()))?;
    if !ok {
        tracing::warn!("enrollment refused: wrong admin PIN");
        bail!("wrong admin PIN: nobody was enrolled");
    }
    Ok(())
}

/// Feed frames to the guide until it has K good, diverse frames; their templates.
fn capture(
    pipeline: &edge::pipeline::Pipeline,
    source: &mut dyn FrameSource,
    cfg: &edge::door::enroll_guide::EnrollConfig,
    out: &Output,
) -> Result<Vec<Template>> {
    let mut enrollment = LiveEnrollment::new(pipeline, cfg.clone(), now_unix);
    let mut last: Option<Guidance> = None;
    let mut seen = 0usize;
    while !enrollment.is_done() {
        enrollment.check_limits()?;
        let frame = match source.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(enrollment
                    .gave_up(format!("{} ended after {seen} frames", source.describe()))
                    .into())
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "skipping frame");
                continue;
            }
        };
        seen += 1;
        let step = enrollment.offer(&frame)?;
        if out.json {
            outln!(
                "{}",
                json!({"event": "guidance", "frame": step.frame, "advice": step.advice.message(),
                       "kept": step.kept, "wanted": step.wanted})
            );
        } else if last != Some(step.advice) || matches!(step.advice, Guidance::Good) {
            eprintln!("[{}/{}] {}", step.kept, step.wanted, step.advice.message());
        }
        last = Some(step.advice);
    }
    Ok(enrollment.into_templates())
}
