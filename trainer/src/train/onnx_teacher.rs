//! An ONNX recogniser as the MaskInv teacher: run once through tract over every training image
//! and its mirror, the embeddings cached on disk, so training needs neither the teacher's
//! framework nor its compute. Row `2*index + flipped` of the cache is the teacher embedding of
//! dataset image `index` (unmasked, un-augmented except for the flip).
//!
//! The cache remembers what it was computed from (sha256 of the ONNX file, the dataset size and
//! the input normalisation) and is rebuilt when any of them changes.

use crate::checkpoint;
use crate::data::{decode_face, FaceSource};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::PreprocessSpec;
use std::path::PathBuf;
use tch::Tensor;
use tract_onnx::prelude::*;

/// How the teacher wants its input (per-channel `(pixel - mean) / std` on 0..255 RGB).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnnxTeacherCfg {
    pub model: PathBuf,
    /// Where the embeddings are cached (a .safetensors file).
    pub cache: PathBuf,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for OnnxTeacherCfg {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            cache: PathBuf::from("teacher_cache.safetensors"),
            mean: [127.5; 3],
            std: [127.5; 3],
        }
    }
}

/// Errors building or reading the cache, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum OnnxTeacherError {
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("{0}")]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
}

fn fingerprint(cfg: &OnnxTeacherCfg, onnx: &[u8], images: usize) -> String {
    let mut h = Sha256::new();
    h.update(onnx);
    h.update((images as u64).to_le_bytes());
    for v in cfg.mean.iter().chain(&cfg.std) {
        h.update(v.to_le_bytes());
    }
    format!("{:x}", h.finalize())
}

/// The (2N, D) teacher table for `source`: read from `cfg.cache` when it matches, else computed
/// with tract (one image at a time: ONNX exports often fix the batch to 1) and cached atomically.
pub fn teacher_table(
    cfg: &OnnxTeacherCfg,
    source: &dyn FaceSource,
    progress: &indicatif::ProgressBar,
) -> Result<Tensor, OnnxTeacherError> {
    let model_err = |message: String| OnnxTeacherError::Model {
        path: cfg.model.clone(),
        message,
    };
    let onnx = std::fs::read(&cfg.model).map_err(|e| model_err(format!("cannot read: {e}")))?;
    let print = fingerprint(cfg, &onnx, source.len());
    if cfg.cache.is_file() {
        let file = checkpoint::read_named(&cfg.cache)?;
        let stored = file
            .get("fingerprint")
            .and_then(|t| Vec::<u8>::try_from(t).ok());
        if let (Some(table), Some(stored)) = (file.get("embeddings"), stored) {
            if stored == print.as_bytes() {
                tracing::info!(cache = %cfg.cache.display(), "teacher embeddings from cache");
                return Ok(table.shallow_clone());
            }
        }
        tracing::warn!(cache = %cfg.cache.display(), "teacher cache is stale: recomputing");
    }
    let plan = (|| -> TractResult<_> {
        let mut model = tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(&onnx))?;
        model.set_input_fact(0, f32::fact([1usize, 3, 112, 112]).into())?;
        model.into_optimized()?.into_runnable()
    })()
    .map_err(|e| model_err(format!("not a usable 1x3x112x112 recogniser: {e:#}")))?;
    let spec = PreprocessSpec {
        mean: cfg.mean,
        std: cfg.std,
        ..PreprocessSpec::arcface_112()
    };
    progress.set_length(2 * source.len() as u64);
    let mut rows: Vec<f32> = Vec::new();
    let mut dim = 0usize;
    for index in 0..source.len() {
        let face = source.read(index)?;
        let img = decode_face(&face.bytes, &face.origin)?;
        for flip in [false, true] {
            let input = spec
                .input_from_aligned(&img, flip)
                .map_err(|e| model_err(format!("{}: {e}", face.origin)))?;
            let out = (|| -> TractResult<Vec<f32>> {
                let t = tract_onnx::prelude::Tensor::from_shape(&[1, 3, 112, 112], &input)?;
                let outputs = plan.run(tvec!(t.into_tvalue()))?;
                let first = outputs[0].cast_to::<f32>()?;
                Ok(first.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
            })()
            .map_err(|e| model_err(format!("running on {}: {e:#}", face.origin)))?;
            if dim == 0 {
                dim = out.len();
            }
            if out.len() != dim || dim == 0 {
                return Err(model_err(format!(
                    "output size {} differs from the first image's {dim}",
                    out.len()
                )));
            }
            rows.extend_from_slice(&out);
            progress.inc(1);
        }
    }
    let table = Tensor::from_slice(&rows).view([2 * source.len() as i64, dim as i64]);
    checkpoint::save_named(
        &cfg.cache,
        &[
            ("embeddings".into(), table.shallow_clone()),
            ("fingerprint".into(), Tensor::from_slice(print.as_bytes())),
        ],
    )?;
    Ok(table)
}
