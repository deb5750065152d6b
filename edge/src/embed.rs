//! The recogniser: aligned face crop -> unit embedding (+ mask probability when the model has one).
//!
//! Two sources, one code path: a signed maskgate bundle (the manifest says input, outputs,
//! preprocessing and thresholds) or any ONNX recogniser described by a contract in `edge.toml`
//! (SFace plugs in this way). Either way the input is produced by `shared::PreprocessSpec`, the
//! function the trainer uses, so alignment, colour order and normalisation cannot drift.

use crate::config::{ConditionChoice, RecognizerConfig};
use crate::model::{load_plan, read_model, run_plan, ModelError, Plan};
use image::RgbImage;
use serde::Serialize;
use shared::preprocess::PreprocessError;
use shared::template::EmbeddingError;
use shared::{Bundle, BundleError, Condition, Embedding, Landmarks5, PreprocessSpec};
use std::path::Path;

/// Probability at or above which a probe counts as masked.
const MASKED_AT: f32 = 0.5;

/// Why the recogniser could not be loaded or could not embed a face.
#[derive(Debug, thiserror::Error)]
pub enum RecognizerError {
    #[error("bundle {path}: {source}")]
    Bundle { path: String, source: BundleError },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("preprocessing: {0}")]
    Preprocess(#[from] PreprocessError),
    #[error("recogniser output is not a usable embedding: {0}")]
    Embedding(#[from] EmbeddingError),
    #[error("recogniser {path}: {message}")]
    Contract { path: String, message: String },
}

/// Accept thresholds (cosine) per probe condition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DecisionThresholds {
    pub unmasked: f32,
    pub masked: f32,
}

impl DecisionThresholds {
    pub fn for_condition(&self, c: Condition) -> f32 {
        match c {
            Condition::Unmasked => self.unmasked,
            Condition::Masked => self.masked,
        }
    }
}

/// One face's embedding and the condition it is judged under.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceEmbedding {
    pub embedding: Embedding,
    pub mask_prob: Option<f32>,
    pub condition: Condition,
}

/// A loaded recogniser (plan built once) and its contract.
pub struct Recognizer {
    plan: Plan,
    spec: PreprocessSpec,
    has_mask_prob: bool,
    flip_fusion: bool,
    forced: Option<Condition>,
    model_id: String,
    embedding_dim: usize,
    thresholds: DecisionThresholds,
    /// The manifest's `bundle_version` when loaded from a bundle.
    bundle_version: Option<u64>,
}

impl Recognizer {
    /// Load from config: verify the bundle (signature first) or read the ONNX contract.
    pub fn load(
        cfg: &RecognizerConfig,
        flip_fusion: bool,
        condition: ConditionChoice,
    ) -> Result<Self, RecognizerError> {
        match cfg {
            RecognizerConfig::Bundle { path, trusted_keys } => {
                let bundle =
                    Bundle::open(path, trusted_keys).map_err(|source| RecognizerError::Bundle {
                        path: path.display().to_string(),
                        source,
                    })?;
                Self::from_bundle(&bundle, path, flip_fusion, condition)
            }
            RecognizerConfig::Onnx(c) => {
                let bytes = read_model("recogniser", &c.path)?;
                let thresholds = DecisionThresholds {
                    unmasked: c.threshold_unmasked,
                    masked: c.threshold_masked.unwrap_or(c.threshold_unmasked),
                };
                Self::build(
                    &c.path,
                    &bytes,
                    &c.input,
                    &c.output,
                    c.mask_prob_output.as_deref(),
                    c.preprocess.clone(),
                    thresholds,
                    None,
                    flip_fusion,
                    condition,
                )
            }
        }
    }

    /// Use an already verified bundle; `path` labels messages.
    pub fn from_bundle(
        bundle: &Bundle,
        path: &Path,
        flip_fusion: bool,
        condition: ConditionChoice,
    ) -> Result<Self, RecognizerError> {
        let m = &bundle.manifest;
        let bundle_err = |source: BundleError| RecognizerError::Bundle {
            path: path.display().to_string(),
            source,
        };
        let t = &m.thresholds;
        let thresholds = DecisionThresholds {
            unmasked: t
                .threshold(Condition::Unmasked)
                .map_err(|e| bundle_err(e.into()))?,
            masked: t
                .threshold(Condition::Masked)
                .map_err(|e| bundle_err(e.into()))?,
        };
        let mut rec = Self::build(
            path,
            &bundle.model,
            &m.input_name,
            &m.outputs.embedding,
            m.outputs.mask_prob.as_deref(),
            m.preprocess.clone(),
            thresholds,
            Some(m.embedding_dim as usize),
            flip_fusion,
            condition,
        )?;
        rec.bundle_version = Some(m.bundle_version);
        Ok(rec)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        path: &Path,
        bytes: &[u8],
        input: &str,
        output: &str,
        mask_prob: Option<&str>,
        spec: PreprocessSpec,
        thresholds: DecisionThresholds,
        expected_dim: Option<usize>,
        flip_fusion: bool,
        condition: ConditionChoice,
    ) -> Result<Self, RecognizerError> {
        let shape = input_shape(&spec);
        let mut outputs = vec![output];
        outputs.extend(mask_prob);
        let plan = load_plan("recogniser", path, bytes, input, &shape, &outputs)?;
        let mut rec = Self {
            plan,
            spec,
            has_mask_prob: mask_prob.is_some(),
            flip_fusion,
            forced: condition.forced(),
            model_id: shared::sha256_hex(bytes),
            embedding_dim: 0,
            thresholds,
            bundle_version: None,
        };
        // One run on a grey crop: proves the plan runs and tells the embedding dimension.
        let grey =
            RgbImage::from_pixel(rec.spec.width, rec.spec.height, image::Rgb([128, 128, 128]));
        let (raw, _) = rec.run(&grey, false)?;
        if let Some(d) = expected_dim {
            if raw.len() != d {
                return Err(RecognizerError::Contract {
                    path: path.display().to_string(),
                    message: format!("embedding has {} values, the manifest says {d}", raw.len()),
                });
            }
        }
        rec.embedding_dim = raw.len();
        Ok(rec)
    }

    /// `bundle_version` of the bundle this recogniser came from; `None` for an ONNX contract.
    pub fn bundle_version(&self) -> Option<u64> {
        self.bundle_version
    }

    /// sha256 of the model file: galleries are bound to it.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }
    pub fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }
    pub fn spec(&self) -> &PreprocessSpec {
        &self.spec
    }
    pub fn thresholds(&self) -> DecisionThresholds {
        self.thresholds
    }

    /// Align a face by its landmarks to this model's template and crop size.
    pub fn align(
        &self,
        image: &RgbImage,
        landmarks: &Landmarks5,
    ) -> Result<RgbImage, PreprocessError> {
        crate::align::aligned_crop(&self.spec, image, landmarks)
    }

    /// Embed an aligned crop (flip-fused when configured) and decide its condition.
    pub fn embed_aligned(&self, crop: &RgbImage) -> Result<FaceEmbedding, RecognizerError> {
        let (mut raw, mut mask) = self.run(crop, false)?;
        if self.flip_fusion {
            let (flipped, mask_f) = self.run(crop, true)?;
            raw.iter_mut().zip(&flipped).for_each(|(a, b)| *a += b);
            mask = mask.zip(mask_f).map(|(a, b)| (a + b) / 2.0);
        }
        let embedding = Embedding::normalize(&raw)?;
        let condition = self.forced.unwrap_or(match mask {
            Some(p) if p >= MASKED_AT => Condition::Masked,
            _ => Condition::Unmasked,
        });
        Ok(FaceEmbedding {
            embedding,
            mask_prob: mask,
            condition,
        })
    }

    fn run(&self, crop: &RgbImage, flip: bool) -> Result<(Vec<f32>, Option<f32>), RecognizerError> {
        let input = self.spec.input_from_aligned(crop, flip)?;
        let mut out =
            run_plan("recogniser", &self.plan, &input_shape(&self.spec), &input)?.into_iter();
        let raw = out.next().unwrap_or_default();
        let mask = if self.has_mask_prob {
            let v = out.next().unwrap_or_default();
            match v.as_slice() {
                [p] if p.is_finite() => Some(p.clamp(0.0, 1.0)),
                _ => {
                    return Err(ModelError::OutputSize {
                        what: "recogniser",
                        name: "mask_prob".into(),
                        got: v.len(),
                        expected: 1,
                    }
                    .into())
                }
            }
        } else {
            None
        };
        Ok((raw, mask))
    }
}

fn input_shape(spec: &PreprocessSpec) -> [usize; 4] {
    let (w, h) = (spec.width as usize, spec.height as usize);
    match spec.layout {
        shared::Layout::Nchw => [1, 3, h, w],
        shared::Layout::Nhwc => [1, h, w, 3],
    }
}
