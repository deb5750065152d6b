//! The running door's gallery: one immutable snapshot behind a pointer, replaced whole by
//! each admin change.
//!
//! The door service holds the gallery's writer lock for its whole life, so the file on disk and
//! the snapshot in memory cannot drift apart: every change goes through [`LiveGallery::edit`],
//! which applies it to a copy, saves the copy atomically (generation + 1), and only then swaps
//! the new snapshot in. The recognise thread takes the current snapshot once per frame (an
//! atomic pointer load) and never waits for an admin; the matcher it searches is built by the
//! admin call, before the swap.

use super::{GalleryStore, StoreError, WriterLock};
use crate::matcher::Matcher;
use arc_swap::ArcSwap;
use shared::Gallery;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A gallery and the matcher prepared from it; never changed once built.
pub struct GallerySnapshot {
    pub gallery: Gallery,
    pub matcher: Matcher,
}

impl GallerySnapshot {
    pub fn new(gallery: Gallery) -> Self {
        let matcher = Matcher::new(&gallery);
        Self { gallery, matcher }
    }

    pub fn generation(&self) -> u64 {
        self.gallery.generation
    }
}

/// The gallery a running door searches and its admins change.
pub struct LiveGallery {
    store: GalleryStore,
    lock: WriterLock,
    current: ArcSwap<GallerySnapshot>,
    /// The generation of `current`, stored after each swap (see [`Self::generation_watch`]).
    generation: Arc<AtomicU64>,
    /// One admin change at a time: each starts from the snapshot the previous one saved.
    writer: Mutex<()>,
}

impl LiveGallery {
    /// Take the writer lock (`wait`: see [`WriterLock::acquire`]) and keep it; load the
    /// gallery for the model `model_id` of dimension `dim` (a new empty one when the file does
    /// not exist yet) and record its generation as seen.
    pub fn open(
        store: GalleryStore,
        model_id: &str,
        dim: usize,
        wait: Option<Duration>,
    ) -> Result<Self, StoreError> {
        let lock = store.lock(wait)?;
        let gallery = store.load_for_model(model_id, dim)?;
        store.record_seen(&gallery)?;
        let generation = Arc::new(AtomicU64::new(gallery.generation));
        Ok(Self {
            store,
            lock,
            current: ArcSwap::from_pointee(GallerySnapshot::new(gallery)),
            generation,
            writer: Mutex::new(()),
        })
    }

    /// The gallery in force now.
    pub fn snapshot(&self) -> Arc<GallerySnapshot> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The generation in force, updated after each swap: a reader that sees generation N here
    /// and then takes a snapshot gets N or newer.
    pub fn generation_watch(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.generation)
    }

    pub fn store(&self) -> &GalleryStore {
        &self.store
    }

    /// Apply `change` to a copy of the current gallery, save it (atomically, generation + 1)
    /// and put it in force; returns `change`'s result and the new generation. When `change`
    /// or the save fails, nothing changes, on disk or in memory.
    pub fn edit<T, E: From<StoreError>>(
        &self,
        change: impl FnOnce(&mut Gallery) -> Result<T, E>,
    ) -> Result<(T, u64), E> {
        let _one_writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.current.load().gallery.clone();
        let out = change(&mut next)?;
        self.store.save(&self.lock, &mut next)?;
        let generation = next.generation;
        self.current.store(Arc::new(GallerySnapshot::new(next)));
        self.generation.store(generation, Ordering::SeqCst);
        Ok((out, generation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::{add_person, remove, GalleryKey, GalleryOpError};
    use shared::{Embedding, Template};

    fn template(seed: f32) -> Template {
        let v: Vec<f32> = (0..8).map(|i| ((i as f32) * seed).sin() + 0.1).collect();
        Template {
            embedding: Embedding::normalize(&v).unwrap(),
            quality: 1.0,
            masked: None,
            created_unix: 0,
        }
    }

    fn store(dir: &std::path::Path) -> GalleryStore {
        GalleryStore::new(dir.join("gallery.bin"), GalleryKey::from_bytes([7; 32]))
    }

    #[derive(Debug, thiserror::Error)]
    enum E {
        #[error(transparent)]
        Store(#[from] StoreError),
        #[error(transparent)]
        Op(#[from] GalleryOpError),
    }

    #[test]
    fn an_edit_is_saved_and_in_force_before_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let live = LiveGallery::open(store(dir.path()), "m", 8, None).unwrap();
        let before = live.snapshot();
        assert_eq!(live.generation(), 0);
        let (id, generation) = live
            .edit(|g| add_person(g, "ada", vec![template(1.0)], 1).map_err(E::from))
            .unwrap();
        assert_eq!(generation, 1);
        assert_eq!(live.generation(), 1);
        assert_eq!(live.snapshot().matcher.len(), 1);
        assert_eq!(before.matcher.len(), 0, "a taken snapshot never changes");
        // On disk too: another store (as after a restart) reads the same.
        let reread = store(dir.path()).load().unwrap().unwrap();
        assert_eq!(reread.generation, 1);
        assert_eq!(reread.people[0].id, id);
        let (_, generation) = live.edit(|g| remove(g, "ada").map_err(E::from)).unwrap();
        assert_eq!(generation, 2);
        assert!(live.snapshot().gallery.people.is_empty());
    }

    #[test]
    fn a_failed_change_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let live = LiveGallery::open(store(dir.path()), "m", 8, None).unwrap();
        let err = live
            .edit(|g| remove(g, "nobody").map_err(E::from))
            .unwrap_err();
        assert!(matches!(err, E::Op(GalleryOpError::NotFound(_))));
        assert_eq!(live.generation(), 0);
        assert!(!dir.path().join("gallery.bin").exists());
    }

    #[test]
    fn the_running_door_holds_the_writer_lock_for_its_life() {
        let dir = tempfile::tempdir().unwrap();
        let live = LiveGallery::open(store(dir.path()), "m", 8, None).unwrap();
        let other = store(dir.path()).lock(None).unwrap_err();
        assert!(matches!(other, StoreError::Lock(_)), "{other}");
        drop(live);
        store(dir.path()).lock(None).unwrap();
    }
}
