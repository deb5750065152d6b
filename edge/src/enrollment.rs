//! Live enrollment: camera frames through the [`EnrollGuide`] to templates.
//!
//! One stepper for both ways of enrolling at the door: `edge enroll --camera` (its own camera)
//! and the running service's `enroll-live` (frames lent by the door's camera). The caller feeds
//! frames and shows each [`Step`]'s advice to the person; the limits of `[enroll]` (frames
//! seen, seconds) end a session that gets nowhere.

use crate::door::enroll_guide::{EnrollConfig, EnrollGuide, FaceSample, Guidance, GuideConfig};
use crate::frame::Frame;
use crate::pipeline::{Pipeline, PipelineError};
use serde::Serialize;
use shared::{Condition, Template};
use std::time::{Duration, Instant};

/// Why a live enrollment ended without its templates.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(
        "enrollment gave up: {why}; kept {kept} of {wanted} good frames (last advice: {last})"
    )]
    GaveUp {
        why: String,
        kept: usize,
        wanted: usize,
        last: &'static str,
    },
}

/// What one frame did for the enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Step {
    pub frame: u64,
    #[serde(serialize_with = "advice_text")]
    pub advice: Guidance,
    pub kept: usize,
    pub wanted: usize,
}

fn advice_text<S: serde::Serializer>(g: &Guidance, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(g.message())
}

/// One person's enrollment in progress.
pub struct LiveEnrollment<'a> {
    pipeline: &'a Pipeline,
    cfg: EnrollConfig,
    guide: Option<EnrollGuide>,
    templates: Vec<Template>,
    seen: usize,
    started: Instant,
    last: Option<Guidance>,
    now_unix: fn() -> u64,
}

impl<'a> LiveEnrollment<'a> {
    /// `cfg.frames` good, diverse frames wanted, within `cfg.max_frames` frames and
    /// `cfg.timeout_secs` from now; templates are stamped with `now_unix()`.
    pub fn new(pipeline: &'a Pipeline, cfg: EnrollConfig, now_unix: fn() -> u64) -> Self {
        Self {
            pipeline,
            cfg,
            guide: None,
            templates: Vec::new(),
            seen: 0,
            started: Instant::now(),
            last: None,
            now_unix,
        }
    }

    pub fn wanted(&self) -> usize {
        self.cfg.frames
    }

    pub fn is_done(&self) -> bool {
        self.templates.len() >= self.cfg.frames
    }

    /// The error that ends the session when a limit of `[enroll]` is reached.
    pub fn check_limits(&self) -> Result<(), EnrollError> {
        if self.seen >= self.cfg.max_frames {
            return Err(self.gave_up(format!("no success within {} frames", self.cfg.max_frames)));
        }
        if self.started.elapsed() > Duration::from_secs(self.cfg.timeout_secs) {
            return Err(self.gave_up(format!("no success within {} s", self.cfg.timeout_secs)));
        }
        Ok(())
    }

    /// The session ended for `why` (the camera stopped, the admin left).
    pub fn gave_up(&self, why: String) -> EnrollError {
        EnrollError::GaveUp {
            why,
            kept: self.templates.len(),
            wanted: self.cfg.frames,
            last: self.last.map_or("none", Guidance::message),
        }
    }

    /// Judge one frame: detect, embed the largest face, let the guide keep it or advise.
    pub fn offer(&mut self, frame: &Frame) -> Result<Step, EnrollError> {
        self.seen += 1;
        let image = &frame.image;
        let guide_cfg = GuideConfig {
            frames: self.cfg.frames,
            ..GuideConfig::default()
        };
        let guide = self
            .guide
            .get_or_insert_with(|| EnrollGuide::new(guide_cfg, image.width(), image.height()));
        guide.set_frame_size(image.width(), image.height());
        let faces = self.pipeline.detect(image)?;
        let mut samples = Vec::with_capacity(faces.len());
        let mut largest = None;
        for (k, face) in faces.iter().enumerate() {
            let b = face.bbox;
            let mut sample = FaceSample {
                bbox: [b.x, b.y, b.w, b.h],
                landmarks: face.landmarks,
                quality: 0.0,
                quality_ok: false,
                embedding: Vec::new(),
            };
            // Only the largest face is worth embedding; others only make the guide ask for one
            // person at a time.
            if k == 0 {
                let (verdict, embedding) = self.pipeline.analyse(image, face)?;
                sample.quality = verdict.score;
                sample.quality_ok = verdict.passed();
                if let Some(e) = &embedding {
                    sample.embedding = e.embedding.as_slice().to_vec();
                }
                largest = embedding.map(|e| Template {
                    masked: e.mask_prob.map(|_| e.condition == Condition::Masked),
                    embedding: e.embedding,
                    quality: verdict.score,
                    created_unix: (self.now_unix)(),
                });
            }
            samples.push(sample);
        }
        let advice = guide.offer(&samples);
        if matches!(advice, Guidance::Good | Guidance::Done) {
            if let Some(t) = largest {
                self.templates.push(t);
            }
        }
        self.last = Some(advice);
        Ok(Step {
            frame: frame.seq,
            advice,
            kept: self.templates.len(),
            wanted: self.cfg.frames,
        })
    }

    pub fn into_templates(self) -> Vec<Template> {
        self.templates
    }
}
