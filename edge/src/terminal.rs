//! The door terminal's own sections of `edge.toml`: `[camera]`, `[door]`, `[audit]`, `[daemon]`,
//! `[admin]` and `[enroll]`.
//!
//! Read from the whole file so they can sit beside the pipeline's sections; each section
//! rejects unknown keys and is range-checked. Relative file paths (`[camera] path`,
//! `[audit] path`) are resolved against the config file's directory by [`TerminalConfig::load`],
//! as the pipeline's paths are, so a config works from any working directory.

use crate::audit::AuditConfig;
use crate::daemon::DaemonConfig;
use crate::door::config::ConfigError;
use crate::door::enroll_guide::EnrollConfig;
use crate::door::DoorConfig;
use crate::frame::CameraConfig;
use crate::service::AdminConfig;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// `edge.toml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TerminalConfigError {
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    #[error("[{section}]: {error}")]
    Section {
        section: &'static str,
        error: toml::de::Error,
    },
    #[error("missing section [{0}]")]
    Missing(&'static str),
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Everything `edge run` needs besides the recogniser.
#[derive(Debug, Clone)]
pub struct TerminalConfig {
    pub camera: CameraConfig,
    pub door: DoorConfig,
    pub audit: AuditConfig,
    pub daemon: DaemonConfig,
    /// The admin API; `None` (no `[admin]` section): the door runs without one.
    pub admin: Option<AdminConfig>,
    /// How the API's live enrollment guides and when it gives up.
    pub enroll: EnrollConfig,
}

impl TerminalConfig {
    /// Parse the four sections out of a whole `edge.toml`; other sections are left alone.
    pub fn from_toml(text: &str) -> Result<Self, TerminalConfigError> {
        let table: toml::Table = text.parse()?;
        let cfg = Self {
            camera: section(&table, "camera")?.unwrap_or(toml::from_str("")?),
            door: section(&table, "door")?.ok_or(TerminalConfigError::Missing("door"))?,
            audit: section(&table, "audit")?.unwrap_or_default(),
            daemon: section(&table, "daemon")?.unwrap_or_default(),
            admin: section(&table, "admin")?,
            enroll: section(&table, "enroll")?.unwrap_or_default(),
        };
        cfg.camera.validate()?;
        cfg.door.validate()?;
        cfg.enroll.validate()?;
        cfg.daemon.validate()?;
        if let Some(admin) = &cfg.admin {
            admin.validate()?;
        }
        Ok(cfg)
    }

    /// Read and check `path`; relative paths in it are taken from its directory.
    pub fn load(path: &Path) -> Result<Self, TerminalConfigError> {
        let (text, base) = read_config(path)?;
        let mut cfg = Self::from_toml(&text)?;
        cfg.camera.path = cfg.camera.path.map(|p| base.join(p));
        cfg.audit.path = base.join(&cfg.audit.path);
        cfg.audit.state = cfg.audit.state.map(|p| base.join(p));
        if let Some(admin) = &mut cfg.admin {
            admin.resolve(base);
        }
        Ok(cfg)
    }
}

/// What `edge enroll --camera` needs: `[camera]` and `[enroll]` (no `[door]` required).
#[derive(Debug, Clone)]
pub struct EnrollSections {
    pub camera: CameraConfig,
    pub enroll: EnrollConfig,
}

impl EnrollSections {
    pub fn from_toml(text: &str) -> Result<Self, TerminalConfigError> {
        let table: toml::Table = text.parse()?;
        let cfg = Self {
            camera: section(&table, "camera")?.unwrap_or(toml::from_str("")?),
            enroll: section(&table, "enroll")?.unwrap_or_default(),
        };
        cfg.camera.validate()?;
        cfg.enroll.validate()?;
        Ok(cfg)
    }

    /// Read and check `path`; a relative `[camera] path` is taken from its directory.
    pub fn load(path: &Path) -> Result<Self, TerminalConfigError> {
        let (text, base) = read_config(path)?;
        let mut cfg = Self::from_toml(&text)?;
        cfg.camera.path = cfg.camera.path.map(|p| base.join(p));
        Ok(cfg)
    }
}

/// `[admin]` alone (`None` without it), for the CLI to find a running door service.
pub fn admin_section(path: &Path) -> Result<Option<AdminConfig>, TerminalConfigError> {
    let (text, base) = read_config(path)?;
    let table: toml::Table = text.parse()?;
    let mut admin: Option<AdminConfig> = section(&table, "admin")?;
    if let Some(a) = &mut admin {
        a.validate()?;
        a.resolve(base);
    }
    Ok(admin)
}

/// The text of the config at `path` and the directory its relative paths are taken from.
fn read_config(path: &Path) -> Result<(String, &Path), TerminalConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| TerminalConfigError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    Ok((text, path.parent().unwrap_or(Path::new(""))))
}

fn section<T: DeserializeOwned>(
    table: &toml::Table,
    name: &'static str,
) -> Result<Option<T>, TerminalConfigError> {
    match table.get(name) {
        None => Ok(None),
        Some(v) => v
            .clone()
            .try_into()
            .map(Some)
            .map_err(|error| TerminalConfigError::Section {
                section: name,
                error,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example shipped in the deployment package must parse.
    const PACKAGED: &str = include_str!("../../packaging/edge.toml");

    #[test]
    fn the_packaged_config_parses() {
        let cfg = TerminalConfig::from_toml(PACKAGED).unwrap();
        assert_eq!(cfg.door.relay.line, 17);
        assert_eq!(
            cfg.audit.path,
            std::path::PathBuf::from("/var/lib/maskgate/audit.jsonl")
        );
    }

    #[test]
    fn errors_name_the_section_and_key() {
        let err = TerminalConfig::from_toml("[camera]\nfps = 15\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[door]"), "{err}");
        let text = PACKAGED.replace("[daemon]", "[daemon]\nspeed = 3");
        let err = TerminalConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("[daemon]") && err.contains("speed"), "{err}");
        let text = PACKAGED.replace("fps = 15", "fps = 500");
        let err = TerminalConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("fps"), "{err}");
        assert!(TerminalConfig::from_toml("[door\n").is_err());
    }

    #[test]
    fn enroll_sections_parse_and_check() {
        let s = EnrollSections::from_toml("[camera]\nsource = \"dir\"\npath = \"/x\"\n").unwrap();
        assert_eq!(s.enroll, EnrollConfig::default());
        let s =
            EnrollSections::from_toml("[enroll]\nframes = 3\nadmin_pin_hash = \"h\"\n").unwrap();
        assert_eq!(s.enroll.frames, 3);
        assert_eq!(s.enroll.admin_pin_hash.as_deref(), Some("h"));
        let err = EnrollSections::from_toml("[enroll]\npin = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[enroll]") && err.contains("pin"), "{err}");
        let err = EnrollSections::from_toml("[enroll]\nframes = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("frames"), "{err}");
    }

    #[test]
    fn other_sections_are_ignored() {
        let text = format!("[pipeline]\nanything = 1\n{PACKAGED}");
        TerminalConfig::from_toml(&text).unwrap();
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        let text = PACKAGED
            .replace("/var/lib/maskgate/audit.jsonl", "audit.jsonl")
            .replacen("[camera]", "[camera]\npath = \"frames\"", 1);
        std::fs::write(&path, text).unwrap();
        let cfg = TerminalConfig::load(&path).unwrap();
        assert_eq!(cfg.audit.path, dir.path().join("audit.jsonl"));
        assert_eq!(cfg.camera.path, Some(dir.path().join("frames")));
        let enroll = EnrollSections::load(&path).unwrap();
        assert_eq!(enroll.camera.path, Some(dir.path().join("frames")));
        // Absolute paths stay as written; a missing file is named.
        std::fs::write(&path, PACKAGED).unwrap();
        let cfg = TerminalConfig::load(&path).unwrap();
        assert_eq!(
            cfg.audit.path,
            PathBuf::from("/var/lib/maskgate/audit.jsonl")
        );
        let err = TerminalConfig::load(&dir.path().join("nope.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.toml"), "{err}");
    }
}
