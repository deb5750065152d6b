//! Frame -> faces -> aligned crops -> quality verdicts -> embeddings -> matches.
//!
//! [`Pipeline`] owns the loaded models (built once) and the prepared gallery; everything a door
//! daemon or the CLI needs is a method here. One line per arrow in [`Pipeline::process`].

use crate::config::Config;
use crate::detect::{DetectError, DetectedFace, Detector};
use crate::embed::{DecisionThresholds, FaceEmbedding, Recognizer, RecognizerError};
use crate::matcher::Matcher;
use crate::model::ModelError;
use crate::quality::{QualityGate, QualityVerdict};
use image::RgbImage;
use serde::Serialize;
use shared::preprocess::PreprocessError;
use shared::template::EmbeddingError;
use shared::{Condition, Gallery, PersonId, Template};
use std::path::Path;

/// Why an image could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Recognizer(#[from] RecognizerError),
    #[error("image {path}: {message}")]
    Image { path: String, message: String },
    #[error("{0}: no face found")]
    NoFace(String),
    #[error("{what}: face rejected by the quality gate: {reasons}")]
    Rejected { what: String, reasons: String },
    #[error("alignment: {0}")]
    Align(#[from] PreprocessError),
    #[error("matching: {0}")]
    Embedding(#[from] EmbeddingError),
}

/// The decision for one probe face against the gallery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identification {
    /// Best-matching person (None when the gallery is empty).
    pub person_id: Option<String>,
    pub name: Option<String>,
    pub score: Option<f32>,
    /// Best score minus the runner-up's (None with fewer than two people).
    pub margin: Option<f32>,
    pub condition: Condition,
    pub threshold: f32,
    /// score >= threshold for the condition (and the person's validity window open, when
    /// checked with [`Identification::check_validity`]).
    pub accepted: bool,
    /// The best match is a person whose validity window (valid_from/valid_until) is closed.
    pub outside_validity: bool,
}

impl Identification {
    /// Withdraw acceptance when the matched person may not enter at `now_unix`, as the door
    /// does: a match with an expired (or not yet started) validity window is not accepted.
    pub fn check_validity(&mut self, gallery: &Gallery, now_unix: u64) {
        let Some(id) = self.person_id.as_deref() else {
            return;
        };
        let valid = id.parse::<PersonId>().is_ok_and(|pid| {
            gallery
                .people
                .iter()
                .find(|p| p.id == pid)
                .is_some_and(|p| p.is_valid_at(now_unix))
        });
        if !valid {
            self.outside_validity = true;
            self.accepted = false;
        }
    }
}

/// Everything known about one face in a frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaceResult {
    pub face: DetectedFace,
    pub quality: QualityVerdict,
    pub mask_prob: Option<f32>,
    /// None when the face was rejected by the quality gate (it is then not embedded).
    pub identification: Option<Identification>,
}

/// The outcome of a 1:1 comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    pub score: f32,
    pub condition: Condition,
    pub threshold: f32,
    pub same_person: bool,
}

/// One image of an enrollment and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnrollImage {
    pub image: String,
    pub faces_found: usize,
    /// Quality verdict of the largest face, when there was one.
    pub quality: Option<QualityVerdict>,
    /// Why the image gave no template (None when it did).
    pub skipped: Option<String>,
}

/// Loaded models, the quality gate and the prepared gallery.
pub struct Pipeline {
    detector: Detector,
    recognizer: Recognizer,
    gate: QualityGate,
    matcher: Matcher,
}

impl Pipeline {
    /// Load both models (once) as configured; the gallery starts empty ([`Self::set_gallery`]).
    pub fn load(cfg: &Config) -> Result<Self, PipelineError> {
        let recognizer = Recognizer::load(&cfg.recognizer, cfg.flip_fusion, cfg.condition)?;
        let detector = Detector::from_kind(&cfg.detector, recognizer.spec())?;
        Ok(Self::new(
            detector,
            recognizer,
            QualityGate::new(&cfg.quality),
        ))
    }

    pub fn new(detector: Detector, recognizer: Recognizer, gate: QualityGate) -> Self {
        let dim = recognizer.embedding_dim() as u32;
        let empty = Gallery::new(recognizer.model_id().to_string(), dim);
        Self {
            detector,
            recognizer,
            gate,
            matcher: Matcher::new(&empty),
        }
    }

    /// Prepare `gallery` for matching (call again after every change).
    pub fn set_gallery(&mut self, gallery: &Gallery) {
        self.matcher = Matcher::new(gallery);
    }

    pub fn recognizer(&self) -> &Recognizer {
        &self.recognizer
    }
    pub fn detector(&self) -> &Detector {
        &self.detector
    }
    pub fn thresholds(&self) -> DecisionThresholds {
        self.recognizer.thresholds()
    }

    /// Faces in `image`, largest first.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<DetectedFace>, PipelineError> {
        Ok(self.detector.detect(image)?)
    }

    /// Align and assess one face; embed it only when it passes the gate.
    pub fn analyse(
        &self,
        image: &RgbImage,
        face: &DetectedFace,
    ) -> Result<(QualityVerdict, Option<FaceEmbedding>), PipelineError> {
        let aligned = self.recognizer.align(image, &face.landmarks)?;
        let verdict = self.gate.assess(face, &aligned);
        let embedding = if verdict.passed() {
            Some(self.recognizer.embed_aligned(&aligned)?)
        } else {
            None
        };
        Ok((verdict, embedding))
    }

    /// The whole chain for every face in a frame, largest face first.
    pub fn process(&self, image: &RgbImage) -> Result<Vec<FaceResult>, PipelineError> {
        self.process_with(image, &self.matcher)
    }

    /// [`Self::process`] against `matcher` instead of the prepared gallery (the door's live
    /// gallery snapshot).
    pub fn process_with(
        &self,
        image: &RgbImage,
        matcher: &Matcher,
    ) -> Result<Vec<FaceResult>, PipelineError> {
        let faces = self.detect(image)?;
        let mut out = Vec::with_capacity(faces.len());
        for face in faces {
            let (quality, embedding) = self.analyse(image, &face)?;
            let identification = match &embedding {
                Some(e) => Some(self.identify_with(e, matcher)?),
                None => None,
            };
            out.push(FaceResult {
                face,
                quality,
                mask_prob: embedding.and_then(|e| e.mask_prob),
                identification,
            });
        }
        Ok(out)
    }

    /// 1:N against the prepared gallery.
    pub fn identify(&self, probe: &FaceEmbedding) -> Result<Identification, PipelineError> {
        self.identify_with(probe, &self.matcher)
    }

    /// 1:N against `matcher`.
    pub fn identify_with(
        &self,
        probe: &FaceEmbedding,
        matcher: &Matcher,
    ) -> Result<Identification, PipelineError> {
        let threshold = self.thresholds().for_condition(probe.condition);
        let found = matcher.search(&probe.embedding)?;
        Ok(match found {
            Some(r) => Identification {
                margin: r.margin(),
                accepted: r.best.score >= threshold,
                outside_validity: false,
                person_id: Some(r.best.id),
                name: Some(r.best.name),
                score: Some(r.best.score),
                condition: probe.condition,
                threshold,
            },
            None => Identification {
                person_id: None,
                name: None,
                score: None,
                margin: None,
                condition: probe.condition,
                threshold,
                accepted: false,
                outside_validity: false,
            },
        })
    }

    /// The largest face of `image`, gated and embedded; `what` names the image in errors.
    pub fn embed_largest(
        &self,
        image: &RgbImage,
        what: &str,
    ) -> Result<(DetectedFace, QualityVerdict, FaceEmbedding), PipelineError> {
        let faces = self.detect(image).map_err(|e| name_crop_error(e, what))?;
        let face = faces
            .into_iter()
            .next()
            .ok_or_else(|| PipelineError::NoFace(what.to_string()))?;
        let (verdict, embedding) = self.analyse(image, &face)?;
        match embedding {
            Some(e) => Ok((face, verdict, e)),
            None => Err(PipelineError::Rejected {
                what: what.to_string(),
                reasons: verdict.reasons(),
            }),
        }
    }

    /// 1:1: are the largest faces of `a` and `b` the same person? A masked side uses the
    /// masked threshold.
    pub fn verify(
        &self,
        a: (&RgbImage, &str),
        b: (&RgbImage, &str),
    ) -> Result<Verification, PipelineError> {
        let (_, _, ea) = self.embed_largest(a.0, a.1)?;
        let (_, _, eb) = self.embed_largest(b.0, b.1)?;
        let score = ea.embedding.cosine(&eb.embedding)?;
        let condition = if ea.condition == Condition::Masked || eb.condition == Condition::Masked {
            Condition::Masked
        } else {
            Condition::Unmasked
        };
        let threshold = self.thresholds().for_condition(condition);
        Ok(Verification {
            score,
            condition,
            threshold,
            same_person: score >= threshold,
        })
    }

    /// Templates for an enrollment: the largest face of each image, if it passes the gate.
    /// Images without a usable face are reported, not fatal.
    pub fn enrollment_templates(
        &self,
        images: &[(String, RgbImage)],
        now_unix: u64,
    ) -> Result<(Vec<Template>, Vec<EnrollImage>), PipelineError> {
        let mut templates = Vec::new();
        let mut report = Vec::new();
        for (name, image) in images {
            let faces = match self.detect(image) {
                Err(PipelineError::Detect(DetectError::CropSize(e))) => {
                    report.push(EnrollImage {
                        image: name.clone(),
                        faces_found: 0,
                        quality: None,
                        skipped: Some(e.to_string()),
                    });
                    continue;
                }
                other => other?,
            };
            let mut item = EnrollImage {
                image: name.clone(),
                faces_found: faces.len(),
                quality: None,
                skipped: None,
            };
            match faces.first() {
                None => item.skipped = Some("no face found".into()),
                Some(face) => {
                    if faces.len() > 1 {
                        tracing::warn!(image = %name, faces = faces.len(), "several faces: enrolling the largest");
                    }
                    let (verdict, embedding) = self.analyse(image, face)?;
                    match embedding {
                        Some(e) => templates.push(Template {
                            embedding: e.embedding,
                            quality: verdict.score,
                            masked: e.mask_prob.map(|_| e.condition == Condition::Masked),
                            created_unix: now_unix,
                        }),
                        None => item.skipped = Some(format!("quality: {}", verdict.reasons())),
                    }
                    item.quality = Some(verdict);
                }
            }
            report.push(item);
        }
        Ok((templates, report))
    }
}

/// An aligned-crop size error names the image it is about; other errors pass unchanged.
fn name_crop_error(e: PipelineError, what: &str) -> PipelineError {
    match e {
        PipelineError::Detect(DetectError::CropSize(c)) => PipelineError::Image {
            path: what.to_string(),
            message: c.to_string(),
        },
        other => other,
    }
}

/// Decode a photo file ([`crate::photo`]: format from its content, upright); errors name it.
pub fn load_image(path: &Path) -> Result<RgbImage, PipelineError> {
    crate::photo::load(path).map_err(PipelineError::from)
}

/// [`load_image`] for bytes that came from elsewhere (an upload); `what` names them in errors.
pub fn decode_image(bytes: &[u8], what: &str) -> Result<RgbImage, PipelineError> {
    crate::photo::decode(bytes, what).map_err(PipelineError::from)
}

impl From<crate::photo::PhotoError> for PipelineError {
    fn from(e: crate::photo::PhotoError) -> Self {
        PipelineError::Image {
            path: e.what,
            message: e.message,
        }
    }
}
