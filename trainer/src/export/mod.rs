//! Export: a trained backbone as a standard ONNX file written from Rust, checked against tch
//! before it is kept; quantised variants measured against an accuracy budget; signed bundles.
//!
//! - [`onnx`]: a small graph builder over `tract_onnx::pb` + prost.
//! - [`graph`]: the backbone walk with BatchNorm folding, weight formats and op encodings.
//! - [`tract_run`]: running a file in tract (the edge runtime).
//! - [`variants`]: f16 / weight-only int8 / static int8 (QDQ) variants, calibration, measurement.
//! - [`bundle`]: keygen and the signed `shared::Bundle` with provenance.
//!
//! Checkpoint interface: the backbone's variables under their arcface_torch names, either
//! un-prefixed (`checkpoint::save_var_store`) or as store `backbone` of a multi-store file
//! (`checkpoint::save_stores`). An optional mask head is store `mask_head` exactly as the training
//! loop saves it (`fc1`, `fc2`; see [`graph::MaskHead`]), exported as `mask_prob`. Other stores (margin heads, transformer branch, USS) are ignored.

pub mod bundle;
pub mod graph;
pub mod onnx;
pub mod tract_run;
pub mod variants;

use crate::checkpoint::{self, CheckpointError};
use crate::model::{self, Arch, Backbone, BackboneCfg, ModelError};
use graph::{EmitOptions, MaskHead, Weights};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::Tensor;

/// Errors of export, quantisation and bundling; each says what failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("model weights: {0}")]
    Weights(String),
    #[error("tract: {0}")]
    Tract(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(
        "exported graph disagrees with the trained model: max relative difference {found:.3e} \
         on output {output} exceeds the tolerance {tolerance:.1e}"
    )]
    Parity {
        output: &'static str,
        found: f64,
        tolerance: f64,
    },
    #[error(
        "variant {variant} refused: {metric} dropped by {drop:.4} (budget {budget:.4}); \
         raise the budget or ship another variant"
    )]
    OverBudget {
        variant: String,
        metric: &'static str,
        drop: f64,
        budget: f64,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Bundle(#[from] shared::bundle::BundleError),
    #[error("{0}")]
    Invalid(String),
}

/// Relative tolerance of the tract-vs-tch check: max |a-b| / max |b| over the batch.
pub const PARITY_TOLERANCE: f64 = 1e-4;

/// A trained backbone in tch plus what the exporter needs to rebuild it.
#[derive(Debug)]
pub struct LoadedModel {
    pub name: String,
    pub arch: Arch,
    pub cfg: BackboneCfg,
    pub vs: VarStore,
    pub net: Box<dyn Backbone>,
    pub mask_head: Option<MaskHead>,
}

impl LoadedModel {
    /// A model with fresh (random) weights, for tests and benches where accuracy is irrelevant.
    pub fn random(name: &str, cfg: &BackboneCfg) -> Result<Self, ExportError> {
        let vs = VarStore::new(tch::Device::Cpu);
        let net = model::build_backbone(name, &vs.root(), cfg)?;
        Ok(Self {
            name: name.to_string(),
            arch: model::arch(name)?,
            cfg: cfg.clone(),
            vs,
            net,
            mask_head: None,
        })
    }

    /// Loads `name` from a checkpoint (see the module docs for the accepted layouts).
    pub fn from_checkpoint(
        path: &Path,
        name: &str,
        cfg: &BackboneCfg,
    ) -> Result<Self, ExportError> {
        let mut m = Self::random(name, cfg)?;
        let keys = checkpoint_keys(path)?;
        if keys.iter().any(|k| k.starts_with("backbone/")) {
            checkpoint::load_stores(path, &mut [("backbone", &mut m.vs)])?;
        } else {
            checkpoint::load_var_store(&mut m.vs, path)?;
        }
        if keys.iter().any(|k| k == "mask_head/fc1.weight") {
            m.mask_head = Some(read_mask_head(path)?);
        }
        Ok(m)
    }

    /// Randomises every BatchNorm's running statistics and affine terms and the PReLU slopes
    /// (seeded), so that tests exercise the folding with non-trivial values.
    pub fn perturb_for_tests(&mut self, seed: u64) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        tch::no_grad(|| {
            let mut vars: Vec<_> = self.vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut t) in vars {
                let n = t.numel();
                let vals: Vec<f32> = if k.ends_with("running_var") {
                    (0..n).map(|_| rng.gen_range(0.5..2.0)).collect()
                } else if k.ends_with("running_mean") || k.ends_with(".bias") {
                    (0..n).map(|_| rng.gen_range(-0.2..0.2)).collect()
                } else if t.dim() == 1 {
                    (0..n).map(|_| rng.gen_range(0.5..1.5)).collect()
                } else {
                    continue;
                };
                let src = Tensor::from_slice(&vals).reshape(t.size());
                t.copy_(&src);
            }
        });
    }

    /// The tch reference: (embedding, optional mask_prob) of an NCHW batch, inference mode.
    pub fn reference(&self, input: &[f32], batch: usize) -> Result<Vec<Vec<f32>>, ExportError> {
        let s = self.cfg.input_size;
        let xs = Tensor::from_slice(input).reshape([batch as i64, 3, s, s]);
        self.net.check_input(&xs)?;
        let emb = tch::no_grad(|| self.net.forward_t(&xs, false).embedding);
        let mut out = vec![Vec::<f32>::try_from(emb.flatten(0, -1))?];
        if let Some(h) = &self.mask_head {
            let hidden = h.hidden() as i64;
            let w1 = Tensor::from_slice(&h.fc1_weight).reshape([hidden, -1]);
            let b1 = Tensor::from_slice(&h.fc1_bias);
            let w2 = Tensor::from_slice(&h.fc2_weight).reshape([1, hidden]);
            let unit = crate::loss::l2_normalize(&emb);
            let z = (unit.matmul(&w1.tr()) + b1).relu();
            let p = (z.matmul(&w2.tr()) + h.fc2_bias as f64).sigmoid();
            out.push(Vec::<f32>::try_from(p.flatten(0, -1))?);
        }
        Ok(out)
    }

    /// Emits the ONNX bytes of this model with `opts`.
    pub fn emit(&self, opts: &EmitOptions) -> Result<(Vec<u8>, Vec<String>), ExportError> {
        let w = Weights::from_var_store(&self.vs)?;
        let e = graph::emit(
            &self.arch,
            self.cfg.input_size,
            &w,
            self.mask_head.as_ref(),
            opts,
        )?;
        Ok((onnx::encode(&e.model), e.probes))
    }
}

/// The trainer's mask head (`mask_head/fc1.*`, `mask_head/fc2.*`) from a checkpoint.
fn read_mask_head(path: &Path) -> Result<MaskHead, ExportError> {
    let tensors = Tensor::read_safetensors(path).map_err(|e| {
        ExportError::Weights(format!(
            "{}: not a readable safetensors checkpoint: {e}",
            path.display()
        ))
    })?;
    let get = |name: &str| -> Result<Vec<f32>, ExportError> {
        let key = format!("mask_head/{name}");
        let t = tensors
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                ExportError::Weights(format!("{}: mask head has no {key}", path.display()))
            })?;
        Ok(Vec::<f32>::try_from(
            t.to_kind(tch::Kind::Float).flatten(0, -1),
        )?)
    };
    let fc2_bias = get("fc2.bias")?;
    Ok(MaskHead {
        fc1_weight: get("fc1.weight")?,
        fc1_bias: get("fc1.bias")?,
        fc2_weight: get("fc2.weight")?,
        fc2_bias: *fc2_bias.first().ok_or_else(|| {
            ExportError::Weights(format!("{}: mask_head/fc2.bias is empty", path.display()))
        })?,
    })
}

fn checkpoint_keys(path: &Path) -> Result<Vec<String>, ExportError> {
    if !path.is_file() {
        return Err(ExportError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint file not found"),
        });
    }
    let t = Tensor::read_safetensors(path).map_err(|e| {
        ExportError::Weights(format!(
            "{}: not a readable safetensors checkpoint: {e}",
            path.display()
        ))
    })?;
    Ok(t.into_iter().map(|(k, _)| k).collect())
}

/// Deterministic pseudo-random NCHW input in [-1,1] (the preprocessed range).
pub fn probe_input(batch: usize, input_size: i64, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = batch * 3 * (input_size * input_size) as usize;
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Result of the tract-vs-tch check.
#[derive(Debug, Clone)]
pub struct Parity {
    /// max |tract - tch| / max |tch| for the embedding.
    pub embedding_rel: f64,
    /// max |tract - tch| of `mask_prob` (absolute: it is a probability).
    pub mask_prob_rel: Option<f64>,
}

/// Relative max difference of two equally long outputs.
pub fn relative_max_diff(found: &[f32], reference: &[f32]) -> f64 {
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    let diff = found
        .iter()
        .zip(reference)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs() as f64));
    if found.len() != reference.len() {
        return f64::INFINITY;
    }
    diff / scale.max(1e-12)
}

/// Loads `bytes` in tract and compares with tch on `batch` seeded inputs.
pub fn check_parity(
    model: &LoadedModel,
    bytes: &[u8],
    batch: usize,
    tolerance: f64,
) -> Result<Parity, ExportError> {
    let input = probe_input(batch, model.cfg.input_size, 7);
    let reference = model.reference(&input, batch)?;
    let tract = tract_run::TractModel::load(bytes, batch, model.cfg.input_size as usize)?;
    let found = tract.run(&input)?;
    if found.len() != reference.len() {
        return Err(ExportError::Invalid(format!(
            "exported graph has {} outputs, expected {}",
            found.len(),
            reference.len()
        )));
    }
    let embedding_rel = relative_max_diff(&found[0], &reference[0]);
    if embedding_rel.is_nan() || embedding_rel > tolerance {
        return Err(ExportError::Parity {
            output: graph::EMBEDDING_NAME,
            found: embedding_rel,
            tolerance,
        });
    }
    let mask_prob_rel = match (found.get(1), reference.get(1)) {
        (Some(f), Some(r)) => {
            // Probabilities live in [0,1] and saturate: compare absolutely, not relative to a
            // maximum that may be ~0.
            let rel = if f.len() == r.len() {
                f.iter()
                    .zip(r)
                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs() as f64))
            } else {
                f64::INFINITY
            };
            if rel.is_nan() || rel > tolerance {
                return Err(ExportError::Parity {
                    output: graph::MASK_PROB_NAME,
                    found: rel,
                    tolerance,
                });
            }
            Some(rel)
        }
        _ => None,
    };
    Ok(Parity {
        embedding_rel,
        mask_prob_rel,
    })
}

/// What [`export_f32`] wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub bytes: usize,
    pub sha256: String,
    pub parity: Parity,
}

/// Emits the f32 graph, checks it against tch and only then writes it atomically to `out`.
pub fn export_f32(model: &LoadedModel, out: &Path) -> Result<ExportReport, ExportError> {
    let (bytes, _) = model.emit(&EmitOptions::default())?;
    let parity = check_parity(model, &bytes, 2, PARITY_TOLERANCE)?;
    shared::atomic_write(out, &bytes).map_err(|source| ExportError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(ExportReport {
        bytes: bytes.len(),
        sha256: shared::sha256_hex(&bytes),
        parity,
    })
}
