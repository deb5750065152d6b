//! The gallery file on disk: encrypted, replaced atomically, bound to one model, written by one
//! process at a time, never rolled back.
//!
//! Every save writes a complete new file next to the old one and renames it over
//! (`shared::atomic::atomic_write_keeping_owner`: a new gallery is 0600, a rewrite keeps the
//! owner, group and mode of the file it replaces), so a crash or power loss leaves either the
//! old or the new gallery, never a mix. A failed load never touches the file.
//!
//! Writers hold the [`WriterLock`] (`<gallery>.lock`) from load to save: [`GalleryStore::save`]
//! takes the lock as a parameter, so a write without it does not compile. Each save increases
//! the gallery's generation by one and records it in the [`StateFile`]; a load refuses a
//! gallery older than the generation recorded there.

use super::crypto::{self, CryptoError, GalleryKey, KeyError};
use super::lock::{LockError, WriterLock};
use crate::config::{GalleryConfig, KeySource};
use crate::state::{StateError, StateFile};
use shared::{EnvelopeError, Gallery};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the gallery could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("gallery {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("gallery {path}: {source}")]
    Crypto { path: String, source: CryptoError },
    #[error("gallery {path}: decrypted but not a valid gallery: {source}")]
    Format { path: String, source: EnvelopeError },
    #[error("gallery {path} was enrolled with model {gallery_model}, but the loaded model is {model}: re-enroll, or load that model")]
    WrongModel {
        path: String,
        gallery_model: String,
        model: String,
    },
    #[error("gallery {path}: templates have dimension {gallery_dim}, the model gives {model_dim}")]
    WrongDimension {
        path: String,
        gallery_dim: u32,
        model_dim: usize,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("gallery {gallery} exists but its key file {key} is missing: refusing to create a new key that could not open it")]
    KeyMissing { gallery: String, key: String },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("gallery {path} does not exist yet: enroll someone first")]
    Missing { path: String },
    #[error("internal: the lock held is {held}'s, not gallery {path}'s")]
    WrongLock { path: String, held: String },
}

impl StoreError {
    /// True when the gallery was refused as older than the generation recorded.
    pub fn is_rollback(&self) -> bool {
        matches!(self, StoreError::State(StateError::GalleryRollback { .. }))
    }

    /// True when the key does not open the gallery (or the file was modified).
    pub fn is_wrong_key(&self) -> bool {
        matches!(
            self,
            StoreError::Crypto {
                source: CryptoError::Decrypt,
                ..
            }
        )
    }
}

/// The encrypted gallery file, its key and (when configured) the state file guarding it.
#[derive(Debug)]
pub struct GalleryStore {
    path: PathBuf,
    key: GalleryKey,
    state: Option<StateFile>,
}

impl GalleryStore {
    /// A store for `path` with a known key, without rollback protection.
    pub fn new(path: impl Into<PathBuf>, key: GalleryKey) -> Self {
        Self {
            path: path.into(),
            key,
            state: None,
        }
    }

    /// Check loads against, and record saves in, the state file `state`.
    pub fn with_state(mut self, state: StateFile) -> Self {
        self.state = Some(state);
        self
    }

    /// Get the key as configured. A missing key file is created (0600) only when the gallery
    /// does not exist yet; otherwise that would lock the existing gallery away. Creation never
    /// replaces a key: of two processes creating it at once, one writes it and the other
    /// reads it.
    pub fn from_config(cfg: &GalleryConfig) -> Result<Self, StoreError> {
        let key = match &cfg.key {
            KeySource::Env(var) => GalleryKey::from_env(var)?,
            KeySource::File(p) => match GalleryKey::read_file(p) {
                Err(e) if e.is_not_found() => {
                    if cfg.path.exists() && !p.exists() {
                        return Err(StoreError::KeyMissing {
                            gallery: cfg.path.display().to_string(),
                            key: p.display().to_string(),
                        });
                    }
                    GalleryKey::create_or_read_file(p)?
                }
                other => other?,
            },
        };
        let store = Self::new(&cfg.path, key);
        Ok(match &cfg.state {
            Some(s) => store.with_state(StateFile::new(s)),
            None => store,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn state(&self) -> Option<&StateFile> {
        self.state.as_ref()
    }

    fn label(&self) -> String {
        self.path.display().to_string()
    }

    /// Take the writer lock (`<gallery>.lock`); with `wait` retry up to that long.
    pub fn lock(&self, wait: Option<Duration>) -> Result<WriterLock, StoreError> {
        Ok(WriterLock::acquire(&self.path, wait)?)
    }

    /// Read and decrypt; `Ok(None)` when the file does not exist. A gallery older than the
    /// generation recorded in the state file is refused.
    pub fn load(&self) -> Result<Option<Gallery>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.label(),
                    source,
                })
            }
        };
        let plain = crypto::open(&self.key, &bytes).map_err(|source| StoreError::Crypto {
            path: self.label(),
            source,
        })?;
        let gallery = Gallery::decode(&plain).map_err(|source| StoreError::Format {
            path: self.label(),
            source,
        })?;
        if let Some(state) = &self.state {
            state.check_gallery(&self.path, gallery.generation)?;
        }
        Ok(Some(gallery))
    }

    /// Load the gallery for the model `model_id` (dimension `dim`); a new empty one when the
    /// file does not exist (nothing is written until [`Self::save`]).
    pub fn load_for_model(&self, model_id: &str, dim: usize) -> Result<Gallery, StoreError> {
        let Some(g) = self.load()? else {
            return Ok(Gallery::new(model_id.to_string(), dim as u32));
        };
        if g.model_id != model_id {
            return Err(StoreError::WrongModel {
                path: self.label(),
                gallery_model: g.model_id,
                model: model_id.into(),
            });
        }
        if g.embedding_dim as usize != dim {
            return Err(StoreError::WrongDimension {
                path: self.label(),
                gallery_dim: g.embedding_dim,
                model_dim: dim,
            });
        }
        Ok(g)
    }

    /// Record the loaded gallery's generation as seen (what `edge run` does at start-up), so
    /// a copy older than the running one is refused from now on.
    pub fn record_seen(&self, gallery: &Gallery) -> Result<(), StoreError> {
        if let Some(state) = &self.state {
            state.record_gallery(&self.path, gallery.generation)?;
        }
        Ok(())
    }

    /// Increase the generation, encrypt with a fresh nonce, replace the file atomically and
    /// record the new generation in the state file. `lock` must be this gallery's lock, held
    /// since the gallery was loaded. The new generation is one more than the gallery's (or
    /// than the recorded one, for a gallery built from scratch), so it never goes back.
    pub fn save(&self, lock: &WriterLock, gallery: &mut Gallery) -> Result<(), StoreError> {
        if lock.guards() != self.path {
            return Err(StoreError::WrongLock {
                path: self.label(),
                held: lock.guards().display().to_string(),
            });
        }
        let recorded = match &self.state {
            Some(s) => s.gallery_generation(&self.path)?,
            None => 0,
        };
        let generation = gallery.generation.max(recorded) + 1;
        let mut next = gallery.clone();
        next.generation = generation;
        let plain = next.encode().map_err(|source| StoreError::Format {
            path: self.label(),
            source,
        })?;
        let sealed = crypto::seal(&self.key, &plain).map_err(|source| StoreError::Crypto {
            path: self.label(),
            source,
        })?;
        shared::atomic::atomic_write_keeping_owner(&self.path, &sealed, 0o600).map_err(
            |source| StoreError::Io {
                path: self.label(),
                source,
            },
        )?;
        gallery.generation = generation;
        // After the gallery: a crash in between leaves a record older than the file, which
        // loads; the other order could refuse the newest gallery.
        if let Some(state) = &self.state {
            state.record_gallery(&self.path, generation)?;
        }
        self.remove_stale_temp_files();
        Ok(())
    }

    /// Load, change and save under the writer lock (`wait`: see [`WriterLock::acquire`]), so
    /// `change` always sees the newest gallery and no other writer's change is lost. A missing
    /// file is a new, empty gallery for `new` = (model id, dimension), else
    /// [`StoreError::Missing`]; with `new` the model is also checked as in
    /// [`Self::load_for_model`]. When `change` fails nothing is written.
    pub fn edit<T, E: From<StoreError>>(
        &self,
        wait: Option<Duration>,
        new: Option<(&str, usize)>,
        change: impl FnOnce(&mut Gallery) -> Result<T, E>,
    ) -> Result<T, E> {
        let lock = self.lock(wait)?;
        let mut g = match new {
            Some((model_id, dim)) => self.load_for_model(model_id, dim)?,
            None => self
                .load()?
                .ok_or_else(|| StoreError::Missing { path: self.label() })?,
        };
        let out = change(&mut g)?;
        self.save(&lock, &mut g)?;
        Ok(out)
    }

    /// [`Self::save`] for tools that write a whole gallery: takes the lock (failing at once
    /// when another writer holds it) just for this write.
    pub fn replace(&self, gallery: &mut Gallery) -> Result<(), StoreError> {
        let lock = self.lock(None)?;
        self.save(&lock, gallery)
    }

    /// A writer killed between creating its temp file and renaming it leaves the temp file
    /// behind (the gallery itself is intact); remove such leftovers of our own file. Runs
    /// under the writer lock, so no live writer's temp file is touched.
    fn remove_stale_temp_files(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let prefix = format!(".{}.tmp.", name.to_string_lossy());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                if let Err(err) = std::fs::remove_file(e.path()) {
                    tracing::warn!(path = %e.path().display(), %err, "could not remove a stale temp file");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{Embedding, PersonId, PersonRecord, Template};

    fn gallery(n: usize) -> Gallery {
        let mut g = Gallery::new("ab".repeat(32), 4);
        for i in 0..n {
            let e = Embedding::normalize(&[1.0, i as f32, 0.5, -1.0]).unwrap();
            let t = Template {
                embedding: e,
                quality: 0.9,
                masked: None,
                created_unix: 1,
            };
            g.people.push(
                PersonRecord::new(
                    PersonId([i as u8; 16]),
                    format!("secret-name-{i}"),
                    vec![t],
                    1,
                )
                .unwrap(),
            );
        }
        g
    }

    #[test]
    fn save_load_and_every_failure_leaves_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gallery.bin");
        let store = GalleryStore::new(&path, GalleryKey::from_bytes([1; 32]));
        assert_eq!(store.load().unwrap(), None);
        let mut g2 = gallery(2);
        store.replace(&mut g2).unwrap();
        assert_eq!(g2.generation, 1, "the first write is generation 1");
        assert_eq!(store.load().unwrap(), Some(g2));
        let on_disk = std::fs::read(&path).unwrap();
        assert!(
            !on_disk.windows(11).any(|w| w == b"secret-name"),
            "names must not be readable at rest"
        );

        let wrong = GalleryStore::new(&path, GalleryKey::from_bytes([2; 32]));
        let e = wrong.load().unwrap_err().to_string();
        assert!(e.contains("gallery.bin") && e.contains("wrong key"), "{e}");

        let e = store
            .load_for_model(&"cd".repeat(32), 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("re-enroll"), "{e}");
        assert!(matches!(
            store.load_for_model(&"ab".repeat(32), 8),
            Err(StoreError::WrongDimension { .. })
        ));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            on_disk,
            "failed loads never write"
        );

        let mut tampered = on_disk.clone();
        let at = tampered.len() / 2;
        tampered[at] ^= 1;
        std::fs::write(&path, &tampered).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("gallery.bin") && e.contains("modified"), "{e}");
        std::fs::write(&path, &on_disk[..40]).unwrap();
        assert!(matches!(
            store.load(),
            Err(StoreError::Crypto {
                source: CryptoError::Truncated(40) | CryptoError::Decrypt,
                ..
            })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn gallery_file_is_private_and_temp_leftovers_are_cleaned() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.bin");
        std::fs::write(dir.path().join(".g.bin.tmp.1.2"), b"half").unwrap();
        std::fs::write(dir.path().join("other.txt"), b"keep").unwrap();
        GalleryStore::new(&path, GalleryKey::from_bytes([1; 32]))
            .replace(&mut gallery(1))
            .unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["g.bin", "g.bin.lock", "other.txt"]);
    }

    #[test]
    fn key_file_is_created_only_for_a_new_gallery() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = GalleryConfig {
            path: dir.path().join("g.bin"),
            key: KeySource::File(dir.path().join("g.key")),
            state: None,
        };
        let store = GalleryStore::from_config(&cfg).unwrap();
        let mut g1 = gallery(1);
        store.replace(&mut g1).unwrap();
        assert_eq!(
            GalleryStore::from_config(&cfg).unwrap().load().unwrap(),
            Some(g1)
        );
        std::fs::remove_file(dir.path().join("g.key")).unwrap();
        let e = GalleryStore::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("g.key") && e.contains("missing"), "{e}");
        assert!(!dir.path().join("g.key").exists());
    }
}
