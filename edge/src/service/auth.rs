//! Admin authentication: the PIN file, sessions, and the throttle on wrong PINs.
//!
//! The PIN (or passphrase) is stored only as an argon2id hash in `[admin] pin_file` (0600,
//! never in the group-readable edge.toml). `POST /api/v1/session` trades a correct PIN for a
//! random bearer token; the service keeps only the token's sha256. Wrong PINs are throttled:
//! each failure in the window doubles the wait before the next attempt may be made, and
//! `max_failures` in the window lock the API out for `lockout_s`. A short PIN cannot be guessed
//! through the door's own API faster than that.

use crate::door::enroll_guide::{hash_admin_pin, verify_admin_pin, PinError};
use rand::RngCore;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a PIN could not be set or checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("a PIN must be at least 6 digits, or a passphrase at least 8 characters (at most 64)")]
    WeakPin,
    #[error("admin PIN file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("admin PIN file {path} does not exist: set a PIN with `edge admin set-pin --config <edge.toml>`")]
    NoPin { path: String },
    #[error("admin PIN file {path}: {problem}")]
    BadFile { path: String, problem: String },
}

/// Is `pin` long enough: 6+ digits, or 8+ characters of anything.
pub fn pin_is_acceptable(pin: &str) -> bool {
    let n = pin.chars().count();
    let digits = pin.chars().all(|c| c.is_ascii_digit());
    n <= 64 && ((digits && n >= 6) || n >= 8)
}

/// `[admin] pin_file`: one argon2id PHC string.
#[derive(Debug, Clone)]
pub struct PinFile {
    path: PathBuf,
}

impl PinFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn label(&self) -> String {
        self.path.display().to_string()
    }

    /// Hash `pin` and replace the file atomically (mode 0600, its owner kept).
    pub fn set(&self, pin: &str) -> Result<(), AuthError> {
        if !pin_is_acceptable(pin) {
            return Err(AuthError::WeakPin);
        }
        let hash = hash_admin_pin(pin).map_err(|e| self.bad(e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| AuthError::Io {
                path: self.label(),
                source,
            })?;
        }
        shared::atomic::atomic_write_keeping_owner(
            &self.path,
            format!("{hash}\n").as_bytes(),
            0o600,
        )
        .map_err(|source| AuthError::Io {
            path: self.label(),
            source,
        })
    }

    /// Does `pin` match the stored hash? Read on every attempt, so `set-pin` applies at once.
    pub fn verify(&self, pin: &str) -> Result<bool, AuthError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AuthError::NoPin { path: self.label() })
            }
            Err(source) => {
                return Err(AuthError::Io {
                    path: self.label(),
                    source,
                })
            }
        };
        let hash = text.trim();
        if !hash.starts_with("$argon2id$") {
            return Err(AuthError::BadFile {
                path: self.label(),
                problem: "not an argon2id hash (write it with `edge admin set-pin`)".into(),
            });
        }
        verify_admin_pin(hash, pin).map_err(|e| self.bad(e))
    }

    fn bad(&self, e: PinError) -> AuthError {
        AuthError::BadFile {
            path: self.label(),
            problem: e.to_string(),
        }
    }
}

/// `[admin]`'s throttle settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottlePolicy {
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
}

/// Whether a PIN attempt may be made now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gate {
    Open,
    /// Wait this long (growing delay after a failure).
    Wait(Duration),
    /// Locked out after too many failures; this long to go.
    LockedOut(Duration),
}

/// Failures in the window and the lockout, if one runs.
#[derive(Debug)]
pub struct Throttle {
    policy: ThrottlePolicy,
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

impl Throttle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            failures: VecDeque::new(),
            locked_until: None,
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.policy.window)
        {
            self.failures.pop_front();
        }
        if self.locked_until.is_some_and(|t| now >= t) {
            self.locked_until = None;
            self.failures.clear();
        }
    }

    /// May an attempt be made at `now`?
    pub fn gate(&mut self, now: Instant) -> Gate {
        self.forget_old(now);
        if let Some(until) = self.locked_until {
            return Gate::LockedOut(until - now);
        }
        match self.failures.back() {
            Some(last) => {
                let ready = *last + self.delay_after(self.failures.len() as u32);
                if now < ready {
                    Gate::Wait(ready - now)
                } else {
                    Gate::Open
                }
            }
            None => Gate::Open,
        }
    }

    /// The wait after the `n`th failure in the window: 1 s, 2 s, 4 s, ... (at most 60 s).
    fn delay_after(&self, n: u32) -> Duration {
        Duration::from_secs(1u64 << n.saturating_sub(1).min(6)).min(Duration::from_secs(60))
    }

    /// Record a wrong PIN at `now`; returns how many failures are in the window and the
    /// lockout this one started, if any.
    pub fn failed(&mut self, now: Instant) -> (u32, Option<Duration>) {
        self.forget_old(now);
        self.failures.push_back(now);
        let n = self.failures.len() as u32;
        if n >= self.policy.max_failures {
            self.locked_until = Some(now + self.policy.lockout);
            return (n, Some(self.policy.lockout));
        }
        (n, None)
    }

    pub fn succeeded(&mut self) {
        self.failures.clear();
    }
}

/// A logged-in admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Short, non-secret name for audit lines (the first 12 hex digits of the token's hash).
    pub id: String,
    /// The Unix user that opened it.
    pub uid: Option<u32>,
    pub expires: Instant,
}

/// Open sessions, by the sha256 of their token.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    open: HashMap<String, Session>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            open: HashMap::new(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session for `uid`; returns the bearer token (shown once) and the session.
    pub fn open(&mut self, uid: Option<u32>, now: Instant) -> (String, Session) {
        self.open.retain(|_, s| s.expires > now);
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let key = shared::sha256_hex(token.as_bytes());
        let session = Session {
            id: key[..12].to_string(),
            uid,
            expires: now + self.ttl,
        };
        self.open.insert(key, session.clone());
        (token, session)
    }

    /// The session `token` belongs to, if it is open at `now`.
    pub fn check(&mut self, token: &str, now: Instant) -> Option<Session> {
        let key = shared::sha256_hex(token.as_bytes());
        match self.open.get(&key) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                self.open.remove(&key);
                None
            }
            None => None,
        }
    }

    /// End the session of `token`; true when it was open.
    pub fn close(&mut self, token: &str) -> bool {
        self.open
            .remove(&shared::sha256_hex(token.as_bytes()))
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            max_failures: 4,
            window: Duration::from_secs(300),
            lockout: Duration::from_secs(600),
        }
    }

    #[test]
    fn short_pins_are_refused() {
        assert!(!pin_is_acceptable("12345"));
        assert!(pin_is_acceptable("123456"));
        assert!(!pin_is_acceptable("abc1234"));
        assert!(pin_is_acceptable("abcd1234"));
        assert!(!pin_is_acceptable(&"9".repeat(65)));
    }

    #[test]
    fn the_pin_file_holds_a_hash_not_the_pin_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = PinFile::new(dir.path().join("etc/admin.pin"));
        assert!(matches!(
            file.verify("123456"),
            Err(AuthError::NoPin { .. })
        ));
        assert!(matches!(file.set("1234"), Err(AuthError::WeakPin)));
        file.set("246810").unwrap();
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(text.starts_with("$argon2id$") && !text.contains("246810"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(file.verify("246810").unwrap());
        assert!(!file.verify("246811").unwrap());
        std::fs::write(file.path(), "plain\n").unwrap();
        let err = file.verify("246810").unwrap_err().to_string();
        assert!(
            err.contains("admin.pin") && err.contains("argon2id"),
            "{err}"
        );
    }

    #[test]
    fn each_failure_doubles_the_wait_and_too_many_lock_out() {
        let mut t = Throttle::new(policy());
        let t0 = Instant::now();
        assert_eq!(t.gate(t0), Gate::Open);
        assert_eq!(t.failed(t0), (1, None));
        assert_eq!(t.gate(t0), Gate::Wait(Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(t.gate(t1), Gate::Open);
        assert_eq!(t.failed(t1), (2, None));
        assert_eq!(t.gate(t1), Gate::Wait(Duration::from_secs(2)));
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(t.failed(t2), (3, None));
        assert_eq!(
            t.gate(t2 + Duration::from_secs(1)),
            Gate::Wait(Duration::from_secs(3))
        );
        let t3 = t2 + Duration::from_secs(4);
        assert_eq!(t.failed(t3), (4, Some(Duration::from_secs(600))));
        assert_eq!(
            t.gate(t3 + Duration::from_secs(100)),
            Gate::LockedOut(Duration::from_secs(500))
        );
        // After the lockout the count starts again.
        let t4 = t3 + Duration::from_secs(600);
        assert_eq!(t.gate(t4), Gate::Open);
        assert_eq!(t.failed(t4), (1, None));
    }

    #[test]
    fn failures_leave_the_window_and_success_forgets_them() {
        let mut t = Throttle::new(policy());
        let t0 = Instant::now();
        t.failed(t0);
        t.failed(t0 + Duration::from_secs(1));
        let later = t0 + Duration::from_secs(302);
        assert_eq!(t.failed(later), (1, None), "the first two left the window");
        t.succeeded();
        assert_eq!(t.gate(later), Gate::Open);
    }

    #[test]
    fn sessions_expire_and_close() {
        let mut s = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let (token, session) = s.open(Some(1000), t0);
        assert_eq!(token.len(), 64);
        assert_eq!(s.check(&token, t0 + Duration::from_secs(59)), Some(session));
        assert_eq!(s.check("not-a-token", t0), None);
        assert_eq!(s.check(&token, t0 + Duration::from_secs(60)), None);
        let (token, _) = s.open(None, t0);
        assert!(s.close(&token));
        assert_eq!(s.check(&token, t0), None);
    }
}
