//! The recognition pipeline as the door daemon's [`FaceRecognizer`].
//!
//! The daemon only needs "who is in this frame, and may they enter"; this adapter answers that
//! from [`Pipeline::process`]: faces the quality gate rejected are not reported (a blurred or
//! turned-away face is neither a known nor an unknown person), and a match counts as accepted
//! only when its score clears the operating threshold AND the person's validity window is open.

use crate::daemon::{FaceRecognizer, RecognizeError};
use crate::door::{Observation, PersonRef};
use crate::frame::Frame;
use crate::pipeline::{Identification, Pipeline};
use shared::{Gallery, PersonId};
use std::time::{SystemTime, UNIX_EPOCH};

/// [`Pipeline`] + the gallery it searches, for `edge run`.
pub struct PipelineRecognizer {
    pipeline: Pipeline,
    gallery: Gallery,
    now_unix: fn() -> u64,
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl PipelineRecognizer {
    /// Search `gallery` with `pipeline` (the gallery is installed into the pipeline here).
    pub fn new(mut pipeline: Pipeline, gallery: Gallery) -> Self {
        pipeline.set_gallery(&gallery);
        Self {
            pipeline,
            gallery,
            now_unix: system_now,
        }
    }

    /// Use another clock for validity windows (tests).
    pub fn with_clock(mut self, now_unix: fn() -> u64) -> Self {
        self.now_unix = now_unix;
        self
    }

    fn observe(&self, mut id: Identification, now: u64) -> Observation {
        id.check_validity(&self.gallery, now);
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
        let results = self
            .pipeline
            .process(&frame.image)
            .map_err(|e| RecognizeError(e.to_string()))?;
        let now = (self.now_unix)();
        Ok(results
            .into_iter()
            .filter_map(|r| r.identification)
            .map(|id| self.observe(id, now))
            .collect())
    }
}
