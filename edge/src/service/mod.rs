//! The door service: `edge run` as the one process that owns the camera, relay, gallery and
//! audit log, with admins acting through its API.
//!
//! [`DoorService`] is the one place that owns the door's state: the [`LiveGallery`] (writer lock
//! held for life), the audit log handle, the door's [`DoorControls`], the [`EventFeed`] and the
//! admin sessions. The door loop ([`crate::daemon`]) runs on its own threads and only reads the
//! gallery snapshot; [`api`] is the HTTP face ([`serve`]: the Unix socket, and TLS on `listen`), `enroll_live` enrolls from the
//! door's camera, [`client`] is the CLI's side of it, [`auth`] the PIN, sessions and
//! throttle, [`peer`] the socket peer check, [`events`] the recent-events window.

pub mod api;
pub mod auth;
pub mod client;
mod enroll_live;
pub mod events;
pub mod peer;

use crate::audit::AuditLog;
use crate::control::DoorControls;
use crate::door::enroll_guide::EnrollConfig;
use crate::gallery::LiveGallery;
use crate::pipeline::Pipeline;
use auth::{PinFile, Sessions, Throttle, ThrottlePolicy};
use events::EventFeed;
use peer::PeerPolicy;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use events::FeedObserver;

/// `[admin]`: the admin API. Without this section `edge run` serves no API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The Unix socket the API listens on (created mode 0660; its directory must exist or be
    /// creatable, as systemd's RuntimeDirectory=maskgate makes /run/maskgate).
    pub socket: PathBuf,
    /// Groups (names or ids) whose members may use the socket, besides root and the service's
    /// own user.
    pub allowed_groups: Vec<String>,
    /// The argon2id hash of the admin PIN (`edge admin set-pin`), mode 0600.
    pub pin_file: PathBuf,
    /// How long a session lasts.
    pub session_ttl_s: u64,
    /// Wrong PINs within `failure_window_s` that lock the API out for `lockout_s`.
    pub max_failures: u32,
    pub failure_window_s: u64,
    pub lockout_s: u64,
    /// Also serve the API on TCP with TLS at this "ADDR:PORT" (e.g. "0.0.0.0:8443"). Over the
    /// network every call, status included, needs a session.
    pub listen: Option<String>,
    /// PEM certificate chain and private key for `listen`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/maskgate/admin.sock"),
            allowed_groups: Vec::new(),
            pin_file: PathBuf::from("/etc/maskgate/admin.pin"),
            session_ttl_s: 900,
            max_failures: 5,
            failure_window_s: 300,
            lockout_s: 300,
            listen: None,
            cert: None,
            key: None,
        }
    }
}

impl AdminConfig {
    pub fn validate(&self) -> Result<(), crate::door::config::ConfigError> {
        use crate::door::config::ConfigError;
        if !(60..=86_400).contains(&self.session_ttl_s) {
            return Err(ConfigError::new(
                "admin",
                "session_ttl_s",
                "must be between 60 and 86400",
            ));
        }
        if !(1..=100).contains(&self.max_failures) {
            return Err(ConfigError::new(
                "admin",
                "max_failures",
                "must be between 1 and 100",
            ));
        }
        if self.failure_window_s == 0 || self.lockout_s == 0 {
            return Err(ConfigError::new(
                "admin",
                "failure_window_s/lockout_s",
                "must be more than 0",
            ));
        }
        if let Some(listen) = &self.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::new(
                    "admin",
                    "listen",
                    "must be ADDR:PORT, e.g. \"0.0.0.0:8443\" or \"[::]:8443\"",
                ));
            }
            if self.cert.is_none() || self.key.is_none() {
                return Err(ConfigError::new(
                    "admin",
                    "cert/key",
                    "listen serves TLS only: give the PEM certificate (cert) and private key (key)",
                ));
            }
        }
        Ok(())
    }

    /// The TLS address, when `listen` is set (checked by [`Self::validate`]).
    pub fn tls_addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.as_ref().and_then(|l| l.parse().ok())
    }

    /// Relative paths taken from `base` (the config file's directory).
    pub fn resolve(&mut self, base: &Path) {
        self.socket = base.join(&self.socket);
        self.pin_file = base.join(&self.pin_file);
        self.cert = self.cert.as_ref().map(|p| base.join(p));
        self.key = self.key.as_ref().map(|p| base.join(p));
    }

    pub fn throttle(&self) -> ThrottlePolicy {
        ThrottlePolicy {
            max_failures: self.max_failures,
            window: std::time::Duration::from_secs(self.failure_window_s),
            lockout: std::time::Duration::from_secs(self.lockout_s),
        }
    }
}

/// What the service tells `GET /api/v1/status` about the model it runs.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub model_id: String,
    pub bundle_version: Option<u64>,
    /// The thresholds in force, as JSON (condition -> threshold, with their FAR).
    pub thresholds: serde_json::Value,
}

/// Sessions and the wrong-PIN throttle, changed together.
pub struct AuthState {
    pub sessions: Sessions,
    pub throttle: Throttle,
}

/// Everything the admin API acts on; shared by its handlers.
pub struct DoorService {
    pub gallery: Arc<LiveGallery>,
    /// The loaded models, for enrolling from uploaded photos.
    pub pipeline: Arc<Pipeline>,
    pub audit: AuditLog,
    pub controls: DoorControls,
    pub events: Arc<EventFeed>,
    pub pin: PinFile,
    pub auth: Mutex<AuthState>,
    pub peers: PeerPolicy,
    pub model: ModelInfo,
    pub started: Instant,
    pub started_unix: u64,
    /// One PIN attempt at a time (so parallel guesses cannot pass the throttle together).
    pub login: tokio::sync::Mutex<()>,
    /// Frames per second over the last second (f64 bits).
    pub fps_bits: AtomicU64,
    /// Raised when the API stops: ends followers' event streams.
    pub stop: tokio::sync::watch::Sender<bool>,
    /// `[enroll]`: frames wanted and limits of a live enrollment.
    pub enroll: EnrollConfig,
}

impl DoorService {
    /// A service for `gallery`, with `controls` shared with the door loop that will run.
    pub fn new(
        cfg: &AdminConfig,
        gallery: Arc<LiveGallery>,
        pipeline: Arc<Pipeline>,
        audit: AuditLog,
        model: ModelInfo,
        peers: PeerPolicy,
    ) -> Self {
        let controls = DoorControls {
            generation: Some(gallery.generation_watch()),
            ..DoorControls::default()
        };
        Self {
            gallery,
            pipeline,
            audit,
            controls,
            events: Arc::new(EventFeed::new()),
            pin: PinFile::new(&cfg.pin_file),
            auth: Mutex::new(AuthState {
                sessions: Sessions::new(std::time::Duration::from_secs(cfg.session_ttl_s)),
                throttle: Throttle::new(cfg.throttle()),
            }),
            peers,
            model,
            started: Instant::now(),
            started_unix: unix_now(),
            login: tokio::sync::Mutex::new(()),
            fps_bits: AtomicU64::new(0),
            stop: tokio::sync::watch::channel(false).0,
            enroll: EnrollConfig::default(),
        }
    }

    /// Write an admin event to the audit log, then to the recent-events feed.
    pub fn record(&self, data: serde_json::Value) -> Result<(), crate::audit::AuditError> {
        self.audit.write(&data)?;
        self.events.push("admin", data);
        Ok(())
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub use api::{serve, ServeError, ServerHandle};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_needs_an_address_and_its_certificate_and_key() {
        let cfg = |text: &str| -> AdminConfig { toml::from_str(text).unwrap() };
        assert!(cfg("").validate().is_ok());
        let e = cfg("listen = \"0.0.0.0:8443\"").validate().unwrap_err();
        assert!(
            e.to_string().contains("cert") && e.to_string().contains("key"),
            "{e}"
        );
        let e = cfg("listen = \"door:8443\"\ncert = \"c\"\nkey = \"k\"")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let ok = cfg("listen = \"[::]:8443\"\ncert = \"c.pem\"\nkey = \"k.pem\"");
        assert!(ok.validate().is_ok());
        let mut resolved = ok.clone();
        resolved.resolve(Path::new("/etc/maskgate"));
        assert_eq!(resolved.cert, Some(PathBuf::from("/etc/maskgate/c.pem")));
        assert_eq!(resolved.tls_addr().map(|a| a.port()), Some(8443));
    }
}
