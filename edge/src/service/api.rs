//! The admin API: HTTP/JSON on the service's Unix socket (axum on tokio).
//!
//! Routes (docs/API.md has curl examples):
//! `GET /api/v1/status`; `POST|DELETE /api/v1/session`; `GET|POST /api/v1/people`;
//! `PATCH|DELETE /api/v1/people/{id}`; `POST /api/v1/people/{id}/photos`; `POST /api/v1/people/{id}/enroll-live` (SSE); `GET /api/v1/events[?limit=N][&follow=1]`;
//! `POST /api/v1/door/unlock`. Everything but status needs a session (bearer token). Every
//! error is JSON, `{"error": "..."}`, with a message that names the problem. A change answers
//! only after it is saved and in force: the first frame decided after a `DELETE` returns is
//! judged without that person.

use super::auth::{AuthError, Gate, Session};
use super::events::EventRecord;
use super::peer::PeerCred;
use super::{unix_now, DoorService};
use crate::control::{CommandError, DoorCommand, LiveStats};
use crate::gallery::{self, GalleryOpError, StoreError};
use crate::pipeline::{decode_image, EnrollImage};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::rejection::JsonRejection;
use axum::extract::{
    DefaultBodyLimit, FromRequestParts, Multipart, Path as UrlPath, Query, Request, State,
};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixListener;

/// The largest request body (an enrollment's photos).
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;
/// At most this many photos per enrollment.
pub const MAX_PHOTOS: usize = 20;
/// How long a remote unlock waits for the door loop.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) type Shared = Arc<DoorService>;

/// An error as the API answers it: a status and a message naming the problem.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after_s: None,
        }
    }

    fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after_s = Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
        self
    }

    /// What went wrong, as the client reads it.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(s) = self.retry_after_s {
            body["retry_after_s"] = json!(s);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

impl From<GalleryOpError> for ApiError {
    fn from(e: GalleryOpError) -> Self {
        let status = match &e {
            GalleryOpError::NotFound(_) => StatusCode::NOT_FOUND,
            GalleryOpError::Ambiguous { .. } | GalleryOpError::NameTaken(_) => StatusCode::CONFLICT,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal(format!("nothing was changed: {e}"))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self::new(e.status(), format!("bad JSON body: {}", e.body_text()))
    }
}

/// A caller with an open session.
pub struct Admin {
    pub session: Session,
}

impl Admin {
    /// How audit lines name this admin.
    pub(super) fn who(&self) -> Value {
        json!({ "session": self.session.id, "uid": self.session.uid })
    }

    fn by(&self) -> String {
        match self.session.uid {
            Some(uid) => format!("session {} (uid {uid})", self.session.id),
            None => format!("session {}", self.session.id),
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let Some(token) = bearer(parts) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this call needs a session: POST /api/v1/session with {\"pin\": ...}, then send `Authorization: Bearer <token>`",
            ));
        };
        let mut auth = state.auth.lock().unwrap_or_else(|p| p.into_inner());
        match auth.sessions.check(token, Instant::now()) {
            Some(session) => Ok(Admin { session }),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the session token is unknown or has expired: open a new session",
            )),
        }
    }
}

impl Connected<axum::serve::IncomingStream<'_, UnixListener>> for PeerCred {
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => PeerCred {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            // Unknown credentials match nobody (not even root): refused by `check_peer`.
            Err(_) => PeerCred {
                uid: u32::MAX,
                gid: u32::MAX,
                pid: None,
            },
        }
    }
}

/// Who is calling, as the transport tells it: a local user (Unix socket, uid from the kernel) or
/// a network address (TLS).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: Option<u32>,
    pub remote: Option<std::net::SocketAddr>,
}

impl Caller {
    /// How audit lines name the caller.
    fn audit(&self) -> Value {
        json!({ "uid": self.uid, "remote": self.remote.map(|r| r.to_string()) })
    }
}

/// Refuse peers outside `[admin] allowed_groups` before any handler runs.
async fn check_peer(State(s): State<Shared>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<PeerCred>>()
        .map(|c| c.0);
    match peer {
        Some(p) if p.uid != u32::MAX && s.peers.allows(&p) => {
            request.extensions_mut().insert(Caller {
                uid: Some(p.uid),
                remote: None,
            });
            next.run(request).await
        }
        Some(p) => ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "uid {} (gid {}) may not use the admin API: add the user to a group in [admin] allowed_groups",
                p.uid, p.gid
            ),
        )
        .into_response(),
        None => ApiError::new(StatusCode::FORBIDDEN, "the peer's credentials are unknown")
            .into_response(),
    }
}

/// Name a TLS caller by its address; only the PIN session stands between it and the API.
async fn tcp_caller(mut request: Request, next: Next) -> Response {
    let remote = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    request
        .extensions_mut()
        .insert(Caller { uid: None, remote });
    next.run(request).await
}

/// The API on the Unix socket: peers checked by uid/gid.
pub fn unix_router(service: Shared) -> Router {
    routes()
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&service),
            check_peer,
        ))
        .with_state(service)
}

/// The API on TLS (`[admin] listen`).
pub fn tls_router(service: Shared) -> Router {
    routes()
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .layer(middleware::from_fn(tcp_caller))
        .with_state(service)
}

fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/status", get(status))
        .route(
            "/api/v1/session",
            post(open_session).delete(close_session),
        )
        .route("/api/v1/people", get(list_people).post(enroll_people))
        .route(
            "/api/v1/people/{id}",
            patch(update_person).delete(remove_person),
        )
        .route("/api/v1/people/{id}/photos", post(add_photos))
        .route(
            "/api/v1/people/{id}/enroll-live",
            post(super::enroll_live::enroll_live),
        )
        .route("/api/v1/events", get(events))
        .route("/api/v1/door/unlock", post(unlock))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint (see docs/API.md: /api/v1/status, /session, /people, /events, /door/unlock)",
            )
        })
}

async fn status(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    admin: Result<Admin, ApiError>,
) -> Result<Json<Value>, ApiError> {
    // Local users in allowed_groups may look without a session; the network may not.
    if caller.remote.is_some() {
        admin?;
    }
    let snapshot = s.gallery.snapshot();
    let stats = &s.controls.stats;
    let uptime = s.started.elapsed();
    Ok(Json(json!({
        "model_id": s.model.model_id,
        "bundle_version": s.model.bundle_version,
        "thresholds": s.model.thresholds,
        "gallery": {
            "people": snapshot.gallery.people.len(),
            "generation": snapshot.generation(),
            "path": s.gallery.store().path().display().to_string(),
        },
        "door": {
            "running": stats.running.load(Ordering::SeqCst),
            "unlocked": stats.door_unlocked.load(Ordering::SeqCst),
            "relay_ok": stats.relay_ok.load(Ordering::SeqCst),
        },
        "camera": { "ok": stats.camera_ok.load(Ordering::SeqCst) },
        "frames": {
            "captured": LiveStats::get(&stats.frames_captured),
            "decided": LiveStats::get(&stats.frames_decided),
            "dropped": LiveStats::get(&stats.frames_dropped),
            "stale": LiveStats::get(&stats.frames_stale),
            "superseded": LiveStats::get(&stats.frames_superseded),
            "bad": LiveStats::get(&stats.bad_frames),
            "recognize_errors": LiveStats::get(&stats.recognize_errors),
            "per_second": f64::from_bits(s.fps_bits.load(Ordering::Relaxed)),
        },
        "uptime_s": uptime.as_secs(),
        "started_unix": s.started_unix,
        "audit": { "path": s.audit.path().display().to_string(), "entries": s.audit.entries() },
        "last_event": s.events.last(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    pin: String,
}

async fn open_session(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<Login>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(login) = body?;
    // One attempt at a time, so parallel guesses cannot slip past the throttle together.
    let _one = s.login.lock().await;
    {
        let mut auth = s.auth.lock().unwrap_or_else(|p| p.into_inner());
        match auth.throttle.gate(Instant::now()) {
            Gate::Open => {}
            Gate::Wait(w) => {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "too soon after a wrong PIN: wait {:.0} s",
                        w.as_secs_f64().ceil()
                    ),
                )
                .retry_after(w))
            }
            Gate::LockedOut(w) => {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "locked out after repeated wrong PINs: try again in {:.0} s",
                        w.as_secs_f64().ceil()
                    ),
                )
                .retry_after(w))
            }
        }
    }
    let pin_file = s.pin.clone();
    let verdict = tokio::task::spawn_blocking(move || pin_file.verify(&login.pin))
        .await
        .map_err(ApiError::internal)?;
    let correct = match verdict {
        Ok(c) => c,
        Err(e @ AuthError::NoPin { .. }) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
            ))
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let now = Instant::now();
    if !correct {
        let (failures, lockout, wait) = {
            let mut auth = s.auth.lock().unwrap_or_else(|p| p.into_inner());
            let (failures, lockout) = auth.throttle.failed(now);
            let wait = match auth.throttle.gate(now) {
                Gate::Wait(w) | Gate::LockedOut(w) => w,
                Gate::Open => Duration::ZERO,
            };
            (failures, lockout, wait)
        };
        s.record(json!({
            "event": "admin_session_failed",
            "uid": caller.uid,
            "remote": caller.audit()["remote"],
            "failures_in_window": failures,
            "lockout_s": lockout.map(|d| d.as_secs()),
        }))
        .map_err(ApiError::internal)?;
        let message = match lockout {
            Some(d) => format!(
                "wrong PIN; {failures} failures: the API is locked out for {} s",
                d.as_secs()
            ),
            None => format!(
                "wrong PIN ({failures} in a row); wait {} s before the next attempt",
                wait.as_secs()
            ),
        };
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, message).retry_after(wait));
    }
    let (token, session, ttl) = {
        let mut auth = s.auth.lock().unwrap_or_else(|p| p.into_inner());
        auth.throttle.succeeded();
        let (token, session) = auth.sessions.open(caller.uid, now);
        (token, session, auth.sessions.ttl())
    };
    s.record(
        json!({"event": "admin_session_opened", "session": session.id,
                    "uid": caller.uid, "remote": caller.audit()["remote"]}),
    )
    .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "session": session.id, "expires_in_s": ttl.as_secs()})),
    ))
}

async fn close_session(
    State(s): State<Shared>,
    admin: Admin,
    parts: axum::http::HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = parts
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_string();
    s.auth
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .sessions
        .close(&token);
    s.record(json!({"event": "admin_session_closed", "session": admin.session.id}))
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_people(State(s): State<Shared>, _admin: Admin) -> Json<Value> {
    let snapshot = s.gallery.snapshot();
    Json(json!({
        "generation": snapshot.generation(),
        "people": gallery::summaries(&snapshot.gallery),
    }))
}

/// A gallery change: refused by the gallery's rules, or not saved.
enum ChangeError {
    Op(GalleryOpError),
    Store(StoreError),
}

impl From<GalleryOpError> for ChangeError {
    fn from(e: GalleryOpError) -> Self {
        Self::Op(e)
    }
}

impl From<StoreError> for ChangeError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Op(e) => e.into(),
            ChangeError::Store(e) => e.into(),
        }
    }
}

/// Apply `change` to the live gallery off the async threads (the save fsyncs); returns its
/// result and the new generation.
async fn change_gallery<T: Send + 'static>(
    s: &Shared,
    change: impl FnOnce(&mut shared::Gallery) -> Result<T, ChangeError> + Send + 'static,
) -> Result<(T, u64), ApiError> {
    let live = Arc::clone(&s.gallery);
    tokio::task::spawn_blocking(move || live.edit(change))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// Record an admin's change; the change is already saved, so a failure here says so.
pub(super) fn record_change(s: &Shared, entry: Value) -> Result<(), ApiError> {
    s.record(entry).map_err(|e| {
        tracing::error!("admin change saved but not audited: {e}");
        ApiError::internal(format!(
            "the change was saved and is in force, but the audit log could not be written: {e}"
        ))
    })
}

pub(super) fn person_json(g: &shared::Gallery, id: shared::PersonId) -> Value {
    gallery::summaries(g)
        .into_iter()
        .find(|p| p.id == id.to_string())
        .map(|p| json!(p))
        .unwrap_or(Value::Null)
}

fn parse_unix(field: &str, text: &str) -> Result<Option<u64>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{field}: {text:?} is not a unix time in seconds"),
        )
    })
}

/// An enrollment form: `name`, one or more `photo` files, and optionally `valid_from_unix` /
/// `valid_until_unix`.
#[derive(Default)]
struct EnrollForm {
    name: Option<String>,
    valid_from: Option<u64>,
    valid_until: Option<u64>,
    photos: Vec<(String, Vec<u8>)>,
}

impl EnrollForm {
    async fn read(mut form: Multipart) -> Result<Self, ApiError> {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
        let mut out = Self::default();
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| bad(format!("bad multipart body: {e}")))?
        {
            let field_name = field.name().unwrap_or_default().to_string();
            match field_name.as_str() {
                "photo" => {
                    if out.photos.len() == MAX_PHOTOS {
                        return Err(bad(format!("at most {MAX_PHOTOS} photos per enrollment")));
                    }
                    let file = field
                        .file_name()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("photo {}", out.photos.len() + 1));
                    let bytes = field
                        .bytes()
                        .await
                        .map_err(|e| bad(format!("{file}: {e}")))?;
                    out.photos.push((file, bytes.to_vec()));
                }
                "name" | "valid_from_unix" | "valid_until_unix" => {
                    let text = field
                        .text()
                        .await
                        .map_err(|e| bad(format!("{field_name}: {e}")))?;
                    match field_name.as_str() {
                        "name" => out.name = Some(text),
                        "valid_from_unix" => out.valid_from = parse_unix(&field_name, &text)?,
                        _ => out.valid_until = parse_unix(&field_name, &text)?,
                    }
                }
                other => {
                    return Err(bad(format!(
                        "unknown form field {other:?} (expected name, photo, valid_from_unix, valid_until_unix)"
                    )))
                }
            }
        }
        if out.photos.is_empty() {
            return Err(bad("the form has no `photo` file".into()));
        }
        Ok(out)
    }

    /// The photos' templates, computed off the async threads; an error when none gave a face.
    async fn templates(
        self,
        s: &Shared,
        now: u64,
    ) -> Result<(Vec<shared::Template>, Vec<EnrollImage>), ApiError> {
        let pipeline = Arc::clone(&s.pipeline);
        let photos = self.photos;
        let (templates, report) = tokio::task::spawn_blocking(move || {
            let mut images = Vec::with_capacity(photos.len());
            for (file, bytes) in &photos {
                images.push((file.clone(), decode_image(bytes, file)?));
            }
            pipeline.enrollment_templates(&images, now)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        if templates.is_empty() {
            let why: Vec<String> = report
                .iter()
                .map(|r| format!("{}: {}", r.image, r.skipped.as_deref().unwrap_or("?")))
                .collect();
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "no photo gave a usable face ({}); nothing was enrolled",
                    why.join("; ")
                ),
            ));
        }
        Ok((templates, report))
    }
}

/// `POST /api/v1/people`, multipart ([`EnrollForm`]): a new person.
async fn enroll_people(
    State(s): State<Shared>,
    admin: Admin,
    form: Multipart,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let form = EnrollForm::read(form).await?;
    let name = form
        .name
        .clone()
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "the form has no `name` field"))?;
    let (valid_from, valid_until) = (form.valid_from, form.valid_until);
    let now = unix_now();
    let (templates, report) = form.templates(&s, now).await?;
    let count = templates.len();
    let ((id, person), generation) = change_gallery(&s, move |g| {
        let id = gallery::add_person(g, &name, templates, now)?;
        if valid_from.is_some() || valid_until.is_some() {
            gallery::set_validity(g, &id.to_string(), valid_from, valid_until, now)?;
        }
        Ok((id, person_json(g, id)))
    })
    .await?;
    record_change(
        &s,
        json!({
            "event": "admin", "action": "enroll", "by": admin.who(),
            "person": {"id": id.to_string(), "name": person["name"]},
            "templates": count, "generation": generation,
        }),
    )?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"person": person, "images": report, "generation": generation})),
    ))
}

/// `POST /api/v1/people/{id}/photos`, multipart `photo` files: more templates for an enrolled
/// person (as `edge enroll --update`).
async fn add_photos(
    State(s): State<Shared>,
    admin: Admin,
    UrlPath(who): UrlPath<String>,
    form: Multipart,
) -> Result<Json<Value>, ApiError> {
    let form = EnrollForm::read(form).await?;
    if form.name.is_some() || form.valid_from.is_some() || form.valid_until.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "this form takes only `photo` files (rename or change validity with PATCH /api/v1/people/{id})",
        ));
    }
    // A wrong name stops before the models run.
    gallery::find(&s.gallery.snapshot().gallery, &who)?;
    let now = unix_now();
    let (templates, report) = form.templates(&s, now).await?;
    let count = templates.len();
    let ((id, person), generation) = change_gallery(&s, move |g| {
        let i = gallery::find(g, &who)?;
        gallery::add_templates(g, i, templates, now)?;
        let id = g.people[i].id;
        Ok((id, person_json(g, id)))
    })
    .await?;
    record_change(
        &s,
        json!({
            "event": "admin", "action": "add_photos", "by": admin.who(),
            "person": {"id": id.to_string(), "name": person["name"]},
            "templates": count, "generation": generation,
        }),
    )?;
    Ok(Json(
        json!({"person": person, "images": report, "templates_added": count, "generation": generation}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonUpdate {
    name: Option<String>,
    /// Absent: unchanged; null: open; a number: unix seconds.
    #[serde(default)]
    valid_from_unix: Option<Value>,
    #[serde(default)]
    valid_until_unix: Option<Value>,
}

/// The new value of one side of a validity window, from a PATCH field.
fn window_side(field: &str, v: &Option<Value>, old: Option<u64>) -> Result<Option<u64>, ApiError> {
    match v {
        None => Ok(old),
        Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{field}: {other} is not a unix time in seconds (or null)"),
        )),
    }
}

async fn update_person(
    State(s): State<Shared>,
    admin: Admin,
    UrlPath(who): UrlPath<String>,
    body: Result<Json<PersonUpdate>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(update) = body?;
    // Check the fields before touching the gallery.
    window_side("valid_from_unix", &update.valid_from_unix, None)?;
    window_side("valid_until_unix", &update.valid_until_unix, None)?;
    let now = unix_now();
    let ((id, person), generation) = change_gallery(&s, move |g| {
        let i = gallery::find(g, &who)?;
        let id = g.people[i].id;
        if let Some(name) = &update.name {
            gallery::rename(g, &id.to_string(), name, now)?;
        }
        if update.valid_from_unix.is_some() || update.valid_until_unix.is_some() {
            let p = &g.people[i];
            let from = window_side("", &update.valid_from_unix, p.valid_from_unix)
                .map_err(|e| GalleryOpError::Invalid(e.message))?;
            let until = window_side("", &update.valid_until_unix, p.valid_until_unix)
                .map_err(|e| GalleryOpError::Invalid(e.message))?;
            gallery::set_validity(g, &id.to_string(), from, until, now)?;
        }
        Ok((id, person_json(g, id)))
    })
    .await?;
    record_change(
        &s,
        json!({
            "event": "admin", "action": "update", "by": admin.who(),
            "person": {"id": id.to_string(), "name": person["name"]},
            "valid_from_unix": person.get("valid_from_unix"),
            "valid_until_unix": person.get("valid_until_unix"),
            "generation": generation,
        }),
    )?;
    Ok(Json(json!({"person": person, "generation": generation})))
}

async fn remove_person(
    State(s): State<Shared>,
    admin: Admin,
    UrlPath(who): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (removed, generation) = change_gallery(&s, move |g| {
        let rec = gallery::remove(g, &who)?;
        Ok((rec.id.to_string(), rec.display_name))
    })
    .await?;
    let person = json!({"id": removed.0, "name": removed.1});
    record_change(
        &s,
        json!({
            "event": "admin", "action": "remove", "by": admin.who(),
            "person": person, "generation": generation,
        }),
    )?;
    Ok(Json(json!({"removed": person, "generation": generation})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    limit: Option<usize>,
    follow: Option<String>,
}

fn sse_event(r: &EventRecord) -> Event {
    Event::default()
        .event(r.source)
        .id(r.seq.to_string())
        .json_data(r)
        .unwrap_or_else(|_| Event::default().comment("unencodable event"))
}

async fn events(
    State(s): State<Shared>,
    _admin: Admin,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = q.limit.unwrap_or(100).min(super::events::RECENT);
    let follow = match q.follow.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("follow={other:?}: expected 1 or 0"),
            ))
        }
    };
    if !follow {
        return Ok(Json(json!({"events": s.events.recent(limit)})).into_response());
    }
    let (recent, live) = s.events.recent_and_follow(limit);
    let backlog = futures_util::stream::iter(recent.into_iter().map(|r| sse_event(&r)));
    let live = tokio_stream::wrappers::BroadcastStream::new(live).map(|item| match item {
        Ok(r) => sse_event(&r),
        Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
            Event::default().event("lagged").data(n.to_string())
        }
    });
    let mut stop = s.stop.subscribe();
    let until_stop = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let stream = backlog
        .chain(live)
        .map(Ok::<_, Infallible>)
        .take_until(until_stop);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn unlock(State(s): State<Shared>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let by = admin.by();
    let controls = s.controls.clone();
    let answer = tokio::task::spawn_blocking(move || {
        controls.commands.submit(
            DoorCommand::Unlock { by },
            &controls.stats.running,
            COMMAND_TIMEOUT,
        )
    })
    .await
    .map_err(ApiError::internal)?;
    match answer {
        Ok(()) => Ok(Json(json!({"unlocked": true, "by": admin.who()}))),
        Err(e @ CommandError::NotRunning) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("admin socket {path}: another edge service is already answering there")]
    InUse { path: String },
    #[error("admin socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("[admin] {what} {path}: {problem}")]
    Tls {
        what: &'static str,
        path: String,
        problem: String,
    },
    #[error("[admin] listen {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The running API; dropping it stops the server and removes the socket.
pub struct ServerHandle {
    socket: PathBuf,
    tls_addr: Option<std::net::SocketAddr>,
    service: Shared,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Where the TLS API listens (the bound port when `listen` asked for port 0).
    pub fn tls_addr(&self) -> Option<std::net::SocketAddr> {
        self.tls_addr
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.service.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Bind the Unix socket `unix` (mode 0660; a stale socket file nobody answers on is replaced).
fn bind_unix(
    service: &Shared,
    socket: &Path,
) -> Result<std::os::unix::net::UnixListener, ServeError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let label = socket.display().to_string();
    let io_err = |source| ServeError::Io {
        path: label.clone(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if !meta.file_type().is_socket() {
            return Err(io_err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket; refusing to replace it",
            )));
        }
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(ServeError::InUse { path: label });
        }
        std::fs::remove_file(socket).map_err(io_err)?;
    }
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(socket).map_err(io_err)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
    if let Some(gid) = service.peers.socket_group() {
        if let Err(e) = std::os::unix::fs::chown(socket, None, Some(gid)) {
            tracing::warn!(
                "admin socket {}: cannot give it group {gid} ({e}); only root and the service's user can connect",
                socket.display()
            );
        }
    }
    listener.set_nonblocking(true).map_err(io_err)?;
    Ok(listener)
}

/// The TLS side of `cfg`: its certificate and key read (each error names its file) and its
/// address bound, so a bad file or a taken port stops the start, not the first caller.
fn bind_tls(
    cfg: &super::AdminConfig,
) -> Result<Option<(std::net::TcpListener, axum_server::tls_rustls::RustlsConfig)>, ServeError> {
    let Some(addr) = cfg.tls_addr() else {
        return Ok(None);
    };
    let read = |what: &'static str, path: &Option<PathBuf>| {
        let path = path.clone().unwrap_or_default();
        std::fs::read(&path).map_err(|e| ServeError::Tls {
            what,
            path: path.display().to_string(),
            problem: e.to_string(),
        })
    };
    let (cert, key) = (read("cert", &cfg.cert)?, read("key", &cfg.key)?);
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| tls_problem("cert", &cfg.cert, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(tls_problem(
            "cert",
            &cfg.cert,
            "no CERTIFICATE in it".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| tls_problem("key", &cfg.key, format!("no PEM private key in it: {e}")))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| {
            tls_problem(
                "key",
                &cfg.key,
                format!("does not fit the certificate: {e}"),
            )
        })?;
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| ServeError::Listen { addr, source })?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    Ok(Some((listener, tls)))
}

fn tls_problem(what: &'static str, path: &Option<PathBuf>, problem: String) -> ServeError {
    ServeError::Tls {
        what,
        path: path.clone().unwrap_or_default().display().to_string(),
        problem,
    }
}

/// Serve the API on `cfg.socket` and, with `cfg.listen`, on TLS, on its own thread until the
/// handle is dropped.
pub fn serve(service: Shared, cfg: &super::AdminConfig) -> Result<ServerHandle, ServeError> {
    let socket = cfg.socket.as_path();
    let io_err = |source| ServeError::Io {
        path: socket.display().to_string(),
        source,
    };
    let tls = bind_tls(cfg)?;
    let listener = bind_unix(&service, socket)?;
    let tls_addr = match &tls {
        Some((l, _)) => Some(l.local_addr().map_err(|source| ServeError::Listen {
            addr: cfg.tls_addr().unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
            source,
        })?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("admin-api")
        .enable_all()
        .build()
        .map_err(io_err)?;
    let stop_rx = service.stop.subscribe();
    let handle_service = Arc::clone(&service);
    let unix_app = unix_router(Arc::clone(&service));
    let tls_app = tls_router(Arc::clone(&service));
    let listener = {
        let _enter = runtime.enter();
        UnixListener::from_std(listener).map_err(io_err)?
    };
    let thread = std::thread::Builder::new()
        .name("admin-api".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(sample_fps(Arc::clone(&service), stop_rx.clone()));
                let tls_server = tls.map(|(listener, config)| {
                    let handle = axum_server::Handle::new();
                    let mut stop = stop_rx.clone();
                    let on_stop = handle.clone();
                    tokio::spawn(async move {
                        let _ = stop.wait_for(|s| *s).await;
                        on_stop.graceful_shutdown(Some(Duration::from_secs(2)));
                    });
                    tokio::spawn(async move {
                        let served = axum_server::from_tcp_rustls(listener, config).map(|server| {
                            server.handle(handle).serve(
                                tls_app
                                    .into_make_service_with_connect_info::<std::net::SocketAddr>(),
                            )
                        });
                        match served {
                            Ok(server) => {
                                if let Err(e) = server.await {
                                    tracing::error!("admin API (TLS) stopped: {e}");
                                }
                            }
                            Err(e) => tracing::error!("admin API (TLS) could not start: {e}"),
                        }
                    })
                });
                let mut stop = stop_rx;
                let server = axum::serve(
                    listener,
                    unix_app.into_make_service_with_connect_info::<PeerCred>(),
                )
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                });
                if let Err(e) = server.await {
                    tracing::error!("admin API stopped: {e}");
                }
                if let Some(tls) = tls_server {
                    let _ = tls.await;
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(2));
        })
        .map_err(io_err)?;
    tracing::info!("admin API on {}", socket.display());
    if let Some(addr) = tls_addr {
        tracing::info!("admin API on https://{addr} (TLS)");
    }
    Ok(ServerHandle {
        socket: socket.to_path_buf(),
        tls_addr,
        service: handle_service,
        thread: Some(thread),
    })
}

/// Frames per second over the last second, for status.
async fn sample_fps(s: Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut last = (
        Instant::now(),
        LiveStats::get(&s.controls.stats.frames_captured),
    );
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = (
            Instant::now(),
            LiveStats::get(&s.controls.stats.frames_captured),
        );
        let secs = now.0.duration_since(last.0).as_secs_f64();
        if secs > 0.0 {
            let fps = (now.1 - last.1) as f64 / secs;
            s.fps_bits.store(fps.to_bits(), Ordering::Relaxed);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_cfg(dir: &Path) -> super::super::AdminConfig {
        super::super::AdminConfig {
            listen: Some("127.0.0.1:0".into()),
            cert: Some(dir.join("cert.pem")),
            key: Some(dir.join("key.pem")),
            ..Default::default()
        }
    }

    #[test]
    fn tls_files_that_cannot_be_used_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tls_cfg(dir.path());
        let e = bind_tls(&cfg).err().unwrap().to_string();
        assert!(e.contains("cert") && e.contains("cert.pem"), "{e}");
        std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
        std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
        let e = bind_tls(&cfg).err().unwrap().to_string();
        assert!(
            e.contains("cert.pem") && e.contains("no CERTIFICATE"),
            "{e}"
        );
    }
}
