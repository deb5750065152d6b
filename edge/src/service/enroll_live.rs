//! `POST /api/v1/people/{id}/enroll-live`: enroll from the door's own camera while it runs.
//!
//! The door keeps deciding; the enrollment borrows its camera's frames through the
//! [`crate::control::FrameTap`] (one enrollment at a time) and answers with server-sent events:
//! `ready`, one `guidance` per frame judged (the advice `edge enroll --camera` prints), then
//! `enrolled` (saved, in force and audited) or `failed` with the reason. An admin who hangs up
//! ends the enrollment; nothing is saved then.

use super::api::{person_json, record_change, Admin, ApiError, Shared};
use crate::control::TapReceiver;
use crate::enrollment::{EnrollError, LiveEnrollment};
use crate::gallery::{self, GalleryOpError, StoreError};
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;
use tokio::sync::mpsc;

/// Frames the enrollment may fall behind the camera before it misses some.
const TAP_DEPTH: usize = 2;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LiveRequest {
    /// Good frames to keep (default: `[enroll] frames`).
    frames: Option<usize>,
    /// When nobody by this name or id is enrolled, enroll a new person of that name.
    #[serde(default)]
    create: bool,
}

/// Whose templates the camera's frames become.
#[derive(Clone)]
enum Target {
    Existing(shared::PersonId),
    New(String),
}

pub(super) async fn enroll_live(
    State(s): State<Shared>,
    admin: Admin,
    UrlPath(who): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let request: LiveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LiveRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(format!("bad JSON body: {e}")))?
    };
    let mut cfg = s.enroll.clone();
    if let Some(k) = request.frames {
        cfg.frames = k;
        cfg.max_frames = cfg.max_frames.max(k);
        cfg.validate().map_err(|e| bad(format!("frames: {e}")))?;
    }
    if s.pipeline.detector().input_size().is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this door runs on pre-aligned crops ([detector] aligned = true): live enrollment needs a face detector; enroll photos with POST /api/v1/people",
        ));
    }
    if !s.controls.stats.running.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the door is not running: there is no camera stream to enroll from",
        ));
    }
    // A wrong or taken name stops before anyone stands in front of the camera.
    let target = match gallery::find(&s.gallery.snapshot().gallery, &who) {
        Ok(i) => Target::Existing(s.gallery.snapshot().gallery.people[i].id),
        Err(GalleryOpError::NotFound(_)) if request.create => Target::New(who.trim().to_string()),
        Err(e @ GalleryOpError::NotFound(_)) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{e}; send {{\"create\": true}} to enroll a new person of that name"),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let tap = s
        .controls
        .tap
        .open(TAP_DEPTH)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
    let (events, rx) = mpsc::channel::<Event>(16);
    let ready =
        json!({"person": who, "new": matches!(target, Target::New(_)), "wanted": cfg.frames});
    let _ = events.try_send(event("ready", &ready));
    let service = std::sync::Arc::clone(&s);
    tokio::task::spawn_blocking(move || {
        let outcome = capture(&service, &tap, cfg, &events)
            .and_then(|templates| save(&service, &admin, target, templates));
        drop(tap);
        let last = match outcome {
            Ok(done) => event("enrolled", &done),
            Err(Ended::Failed(e)) => {
                tracing::warn!("live enrollment failed: {e}");
                event("failed", &json!({ "error": e }))
            }
            Err(Ended::HungUp) => return,
        };
        let _ = events.blocking_send(last);
    });
    let mut stop = s.stop.subscribe();
    let until_stop = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(Ok::<_, Infallible>)
        .take_until(until_stop);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn event(kind: &str, data: &Value) -> Event {
    Event::default()
        .event(kind)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().comment("unencodable event"))
}

/// How an enrollment ended without saving.
enum Ended {
    Failed(String),
    /// The admin closed the stream: nobody to tell.
    HungUp,
}

/// Judge the camera's frames until the guide has its frames; each step goes to the admin.
fn capture(
    s: &Shared,
    tap: &TapReceiver,
    cfg: crate::door::enroll_guide::EnrollConfig,
    events: &mpsc::Sender<Event>,
) -> Result<Vec<shared::Template>, Ended> {
    let failed = |e: EnrollError| Ended::Failed(e.to_string());
    let mut enrollment = LiveEnrollment::new(&s.pipeline, cfg, super::unix_now);
    while !enrollment.is_done() {
        enrollment.check_limits().map_err(failed)?;
        if events.is_closed() {
            return Err(Ended::HungUp);
        }
        let frame = match tap.frames.recv_timeout(Duration::from_millis(250)) {
            Ok(frame) => frame,
            Err(RecvTimeoutError::Timeout) => {
                if !s.controls.stats.running.load(Ordering::SeqCst) {
                    return Err(failed(enrollment.gave_up("the door stopped".into())));
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(failed(enrollment.gave_up("the camera stopped".into())))
            }
        };
        let step = enrollment.offer(&frame).map_err(failed)?;
        let data = serde_json::to_value(step).unwrap_or(Value::Null);
        if events.blocking_send(event("guidance", &data)).is_err() {
            return Err(Ended::HungUp);
        }
    }
    Ok(enrollment.into_templates())
}

/// Add the templates to the live gallery (saved and in force) and audit it.
fn save(
    s: &Shared,
    admin: &Admin,
    target: Target,
    templates: Vec<shared::Template>,
) -> Result<Value, Ended> {
    let count = templates.len();
    let now = super::unix_now();
    let edited = s.gallery.edit(|g| -> Result<_, SaveError> {
        let id = match &target {
            Target::Existing(id) => {
                let i = gallery::find(g, &id.to_string())?;
                gallery::add_templates(g, i, templates, now)?;
                *id
            }
            Target::New(name) => gallery::add_person(g, name, templates, now)?,
        };
        Ok((id, person_json(g, id)))
    });
    let ((id, person), generation) = edited.map_err(|e| Ended::Failed(e.to_string()))?;
    record_change(
        s,
        json!({
            "event": "admin", "action": "enroll_live", "by": admin.who(),
            "person": {"id": id.to_string(), "name": person["name"]},
            "templates": count, "generation": generation,
        }),
    )
    .map_err(|e| Ended::Failed(e.message().to_string()))?;
    Ok(json!({"person": person, "templates_added": count, "generation": generation}))
}

/// A live enrollment's gallery change that did not happen.
#[derive(Debug, thiserror::Error)]
enum SaveError {
    #[error("nothing was enrolled: {0}")]
    Op(#[from] GalleryOpError),
    #[error("nothing was enrolled: {0}")]
    Store(#[from] StoreError),
}
