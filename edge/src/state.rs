//! The edge's own state file: the newest gallery generation and bundle version it has seen.
//!
//! Rollback protection. Each gallery write increases the gallery's generation
//! ([`shared::Gallery::generation`]); each release bundle carries a `bundle_version`. Both are
//! recorded here (`state.toml` beside the audit log, or `[audit] state` in edge.toml), so an
//! older gallery file copied back over the current one, or an older signed bundle put back in
//! place of a newer one, is refused instead of silently bringing back removed people or a
//! withdrawn model. The file is small TOML, replaced atomically, and every read-modify-write
//! holds `<state>.lock`.
//!
//! ```toml
//! bundle_version = 3
//! [galleries]
//! "/var/lib/maskgate/gallery.bin" = 17
//! ```

use crate::gallery::lock::{LockError, WriterLock};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the state file records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeState {
    /// `bundle_version` of the bundle `edge run` last started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_version: Option<u64>,
    /// Highest generation seen, per gallery file (absolute path as configured).
    #[serde(default)]
    pub galleries: BTreeMap<String, u64>,
}

/// Why the state file could not be used, or what it refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {message} (it is written by edge; restore it or remove it to start the record again)")]
    Parse { path: String, message: String },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("gallery {gallery} has generation {found}, older than generation {recorded} recorded in {state}: refusing a rolled-back gallery (was an older copy put back?). Restore the newest gallery; if the older one is wanted on purpose, remove its line from {state}")]
    GalleryRollback {
        gallery: String,
        state: String,
        found: u64,
        recorded: u64,
    },
    #[error("bundle {bundle} has bundle_version {found}, older than version {recorded} that this edge last ran ({state}): refusing a downgrade; start with --allow-downgrade to run it anyway")]
    BundleDowngrade {
        bundle: String,
        state: String,
        found: u64,
        recorded: u64,
    },
}

/// The state file at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn label(&self) -> String {
        self.path.display().to_string()
    }

    /// The recorded state; an empty one when the file does not exist yet.
    pub fn read(&self) -> Result<EdgeState, StateError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(EdgeState::default()),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.label(),
                    source,
                })
            }
        };
        toml::from_str(&text).map_err(|e| StateError::Parse {
            path: self.label(),
            message: e.to_string(),
        })
    }

    /// Read, change and write back atomically under `<state>.lock`; the directory is created
    /// if missing. Nothing is written when `change` leaves the state as it was.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut EdgeState) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let io = |source| StateError::Io {
            path: self.label(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let _lock = WriterLock::acquire_blocking(&self.path)?;
        let before = self.read()?;
        let mut state = before.clone();
        let out = change(&mut state)?;
        if state != before {
            let text = toml::to_string(&state).map_err(|e| StateError::Parse {
                path: self.label(),
                message: e.to_string(),
            })?;
            let text = format!(
                "# maskgate edge state (rollback protection), written by edge: do not edit\n{text}"
            );
            shared::atomic::atomic_write_keeping_owner(&self.path, text.as_bytes(), 0o644)
                .map_err(io)?;
        }
        Ok(out)
    }

    /// The highest generation recorded for `gallery` (0 when none).
    pub fn gallery_generation(&self, gallery: &Path) -> Result<u64, StateError> {
        Ok(self
            .read()?
            .galleries
            .get(&key(gallery))
            .copied()
            .unwrap_or(0))
    }

    /// Refuse a gallery whose generation is older than the one recorded.
    pub fn check_gallery(&self, gallery: &Path, found: u64) -> Result<(), StateError> {
        let recorded = self.gallery_generation(gallery)?;
        if found < recorded {
            return Err(StateError::GalleryRollback {
                gallery: gallery.display().to_string(),
                state: self.label(),
                found,
                recorded,
            });
        }
        Ok(())
    }

    /// Record that `gallery` reached `generation` (never lowers the record).
    pub fn record_gallery(&self, gallery: &Path, generation: u64) -> Result<(), StateError> {
        self.update(|s| {
            let g = s.galleries.entry(key(gallery)).or_insert(0);
            *g = (*g).max(generation);
            Ok(())
        })
    }

    /// Check `found` against the bundle version last run and record it. An older one is
    /// refused unless `allow_downgrade`; then it is recorded as the one last run.
    pub fn check_and_record_bundle(
        &self,
        bundle: &Path,
        found: u64,
        allow_downgrade: bool,
    ) -> Result<(), StateError> {
        let state = self.label();
        self.update(|s| {
            if let Some(recorded) = s.bundle_version {
                if found < recorded {
                    if !allow_downgrade {
                        return Err(StateError::BundleDowngrade {
                            bundle: bundle.display().to_string(),
                            state,
                            found,
                            recorded,
                        });
                    }
                    tracing::warn!(
                        bundle = %bundle.display(),
                        found,
                        recorded,
                        "running an older bundle (--allow-downgrade)"
                    );
                }
            }
            s.bundle_version = Some(found);
            Ok(())
        })
    }
}

fn key(gallery: &Path) -> String {
    gallery.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_only_go_up_and_rollbacks_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateFile::new(dir.path().join("sub/state.toml"));
        let g = dir.path().join("gallery.bin");
        assert_eq!(st.gallery_generation(&g).unwrap(), 0);
        st.check_gallery(&g, 0).unwrap();
        st.record_gallery(&g, 5).unwrap();
        st.record_gallery(&g, 3).unwrap();
        assert_eq!(st.gallery_generation(&g).unwrap(), 5);
        st.check_gallery(&g, 5).unwrap();
        let e = st.check_gallery(&g, 4).unwrap_err().to_string();
        assert!(
            e.contains("gallery.bin")
                && e.contains("generation 4")
                && e.contains("generation 5")
                && e.contains("state.toml"),
            "{e}"
        );
        let other = dir.path().join("other.bin");
        st.check_gallery(&other, 0).unwrap();
    }

    #[test]
    fn bundle_downgrade_needs_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateFile::new(dir.path().join("state.toml"));
        let b = Path::new("/opt/m.mgb");
        st.check_and_record_bundle(b, 3, false).unwrap();
        st.check_and_record_bundle(b, 4, false).unwrap();
        let e = st
            .check_and_record_bundle(b, 2, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.mgb")
                && e.contains("version 2")
                && e.contains("version 4")
                && e.contains("--allow-downgrade"),
            "{e}"
        );
        assert_eq!(st.read().unwrap().bundle_version, Some(4));
        st.check_and_record_bundle(b, 2, true).unwrap();
        assert_eq!(st.read().unwrap().bundle_version, Some(2));
    }

    #[test]
    fn a_broken_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.toml");
        std::fs::write(&p, "galleries = 7\n").unwrap();
        let e = StateFile::new(&p).read().unwrap_err().to_string();
        assert!(e.contains("state.toml") && e.contains("not valid"), "{e}");
    }
}
