//! The recognition pipeline as the door daemon's [`FaceRecognizer`].
//!
//! The daemon only needs "who is in this frame, and may they enter"; this adapter answers that
//! from [`Pipeline::process_with`]: faces the quality gate rejected are not reported (a blurred
//! or turned-away face is neither a known nor an unknown person), and a match counts as
//! accepted only when its score clears the operating threshold AND the person's validity
//! window is open. Each frame is searched against the gallery snapshot in force when its
//! recognition starts ([`LiveGallery`]), so an admin's change applies from the next frame on.

use crate::daemon::{FaceRecognizer, RecognizeError};
use crate::door::{Observation, PersonRef};
use crate::frame::Frame;
use crate::gallery::{GallerySnapshot, LiveGallery};
use crate::pipeline::{Identification, Pipeline};
use shared::{Gallery, PersonId};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the recogniser gets the gallery of each frame.
enum GallerySource {
    /// One gallery for the whole run.
    Fixed(Arc<GallerySnapshot>),
    /// The door service's gallery, changed by admins while the door runs.
    Live(Arc<LiveGallery>),
}

impl GallerySource {
    fn snapshot(&self) -> Arc<GallerySnapshot> {
        match self {
            Self::Fixed(s) => Arc::clone(s),
            Self::Live(l) => l.snapshot(),
        }
    }
}

/// [`Pipeline`] + the gallery it searches, for `edge run`.
pub struct PipelineRecognizer {
    pipeline: Arc<Pipeline>,
    gallery: GallerySource,
    now_unix: fn() -> u64,
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl PipelineRecognizer {
    /// Search `gallery`, unchanged for the whole run, with `pipeline`.
    pub fn new(pipeline: Pipeline, gallery: Gallery) -> Self {
        Self {
            pipeline: Arc::new(pipeline),
            gallery: GallerySource::Fixed(Arc::new(GallerySnapshot::new(gallery))),
            now_unix: system_now,
        }
    }

    /// Search whatever `gallery` holds when each frame's recognition starts.
    pub fn live(pipeline: Arc<Pipeline>, gallery: Arc<LiveGallery>) -> Self {
        Self {
            pipeline,
            gallery: GallerySource::Live(gallery),
            now_unix: system_now,
        }
    }

    /// Use another clock for validity windows (tests).
    pub fn with_clock(mut self, now_unix: fn() -> u64) -> Self {
        self.now_unix = now_unix;
        self
    }

    fn observe(gallery: &Gallery, mut id: Identification, now: u64) -> Observation {
        id.check_validity(gallery, now);
        let condition = Some(id.condition);
        let (Some(pid), Some(name), Some(score)) = (id.person_id, id.name, id.score) else {
            return Observation::unknown(None, 0.0);
        };
        let Ok(person_id) = pid.parse::<PersonId>() else {
            return Observation::unknown(None, score);
        };
        let person = PersonRef {
            id: person_id,
            name,
        };
        let observation = if id.accepted {
            Observation::known(person, score)
        } else {
            Observation::unknown(Some(person), score)
        };
        observation.with_condition(condition)
    }
}

impl FaceRecognizer for PipelineRecognizer {
    fn recognize(&mut self, frame: &Frame) -> Result<Vec<Observation>, RecognizeError> {
        let snapshot = self.gallery.snapshot();
        let results = self
            .pipeline
            .process_with(&frame.image, &snapshot.matcher)
            .map_err(|e| RecognizeError(e.to_string()))?;
        let now = (self.now_unix)();
        Ok(results
            .into_iter()
            .filter_map(|r| {
                let bbox = r.face.bbox;
                r.identification
                    .map(|id| Self::observe(&snapshot.gallery, id, now).at(bbox))
            })
            .collect())
    }
}
