//! The `[door]` section of `edge.toml`: wiring of the relay and inputs, and the access policy.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// A config value out of range, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("[{section}] {key}: {problem}")]
pub struct ConfigError {
    pub section: &'static str,
    pub key: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(
        section: &'static str,
        key: &'static str,
        problem: impl Into<String>,
    ) -> Self {
        Self {
            section,
            key,
            problem: problem.into(),
        }
    }
}

/// Which pin level energises the relay (or means "pressed"/"open" for an input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActiveLevel {
    High,
    Low,
}

/// `[door]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorConfig {
    pub relay: RelayConfig,
    /// Door contact (reed switch): active = door open.
    pub contact: Option<InputConfig>,
    /// Request-to-exit button: active = pressed.
    pub exit_button: Option<InputConfig>,
    #[serde(default)]
    pub policy: PolicyConfig,
}

/// `[door.relay]`: the lock relay on a GPIO line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// GPIO character device, e.g. `/dev/gpiochip0`.
    pub chip: PathBuf,
    /// Line offset on that chip.
    pub line: u32,
    pub active: ActiveLevel,
    /// How long the lock stays released after an unlock.
    #[serde(default = "default_unlock_ms")]
    pub unlock_ms: u64,
}

fn default_unlock_ms() -> u64 {
    3000
}

/// `[door.contact]` / `[door.exit_button]`: an input line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    pub chip: PathBuf,
    pub line: u32,
    pub active: ActiveLevel,
}

/// `[door.policy]`: when faces open the door. Times are in milliseconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Frames that must agree on the same person before unlocking.
    pub agree_frames: u32,
    /// ... all within this window.
    pub agree_window_ms: u64,
    /// A face unseen this long has left: its track ends, and a new approach may start.
    pub leave_ms: u64,
    /// No second unlock this soon after an unlock.
    pub cooldown_ms: u64,
    /// A stranger who stays in view is denied again (and counted toward lockout) this often.
    pub deny_repeat_ms: u64,
    /// Lock out face unlocking after this many unknown-face events ...
    pub lockout_after_unknowns: u32,
    /// ... within this window ...
    pub unknown_window_ms: u64,
    /// ... for this long.
    pub lockout_ms: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            agree_frames: 3,
            agree_window_ms: 1500,
            leave_ms: 2000,
            cooldown_ms: 4000,
            deny_repeat_ms: 5000,
            lockout_after_unknowns: 3,
            unknown_window_ms: 60_000,
            lockout_ms: 120_000,
        }
    }
}

impl PolicyConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = |key, p: &str| Err(ConfigError::new("door.policy", key, p));
        if !(1..=100).contains(&self.agree_frames) {
            return e("agree_frames", "must be between 1 and 100");
        }
        if self.agree_window_ms == 0 {
            return e("agree_window_ms", "must be positive");
        }
        if self.leave_ms == 0 {
            return e("leave_ms", "must be positive");
        }
        if self.deny_repeat_ms == 0 {
            return e("deny_repeat_ms", "must be positive");
        }
        if self.lockout_after_unknowns == 0 {
            return e("lockout_after_unknowns", "must be at least 1");
        }
        if self.unknown_window_ms == 0 {
            return e("unknown_window_ms", "must be positive");
        }
        Ok(())
    }

    pub fn agree_window(&self) -> Duration {
        Duration::from_millis(self.agree_window_ms)
    }
}

impl DoorConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(100..=60_000).contains(&self.relay.unlock_ms) {
            return Err(ConfigError::new(
                "door.relay",
                "unlock_ms",
                "must be between 100 and 60000",
            ));
        }
        let lines = [
            Some(("door.relay", &self.relay.chip, self.relay.line)),
            self.contact
                .as_ref()
                .map(|c| ("door.contact", &c.chip, c.line)),
            self.exit_button
                .as_ref()
                .map(|c| ("door.exit_button", &c.chip, c.line)),
        ];
        let lines: Vec<_> = lines.into_iter().flatten().collect();
        for (i, a) in lines.iter().enumerate() {
            for b in &lines[i + 1..] {
                if a.1 == b.1 && a.2 == b.2 {
                    return Err(ConfigError::new(
                        "door",
                        "line",
                        format!(
                            "[{}] and [{}] both use {} line {}",
                            a.0,
                            b.0,
                            a.1.display(),
                            a.2
                        ),
                    ));
                }
            }
        }
        self.policy.validate()
    }

    pub fn unlock_duration(&self) -> Duration {
        Duration::from_millis(self.relay.unlock_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [relay]
        chip = "/dev/gpiochip0"
        line = 17
        active = "low"
        [exit_button]
        chip = "/dev/gpiochip0"
        line = 27
        active = "low"
        [policy]
        agree_frames = 4
    "#;

    #[test]
    fn parses_with_defaults_and_validates() {
        let cfg: DoorConfig = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(cfg.relay.active, ActiveLevel::Low);
        assert_eq!(cfg.relay.unlock_ms, 3000);
        assert_eq!(cfg.policy.agree_frames, 4);
        assert_eq!(cfg.policy.cooldown_ms, PolicyConfig::default().cooldown_ms);
        assert!(cfg.contact.is_none());
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<DoorConfig>(&EXAMPLE.replace("agree_frames", "agree_frame"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("agree_frame"), "{err}");
    }

    #[test]
    fn shared_lines_and_bad_ranges_are_named() {
        let mut cfg: DoorConfig = toml::from_str(EXAMPLE).unwrap();
        cfg.exit_button.as_mut().unwrap().line = 17;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("line 17"), "{err}");
        let mut cfg: DoorConfig = toml::from_str(EXAMPLE).unwrap();
        cfg.policy.agree_frames = 0;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("agree_frames"));
        cfg.policy.agree_frames = 3;
        cfg.relay.unlock_ms = 5;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("unlock_ms"));
    }
}
