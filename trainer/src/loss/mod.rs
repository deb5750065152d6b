//! Losses: sample-to-class margin heads (METHODS section 2), the USS sample-to-sample loss
//! (section 3) and MaskInv template-level distillation (section 5).
//!
//! A margin head owns its class centres (`weight`, C x D, N(0, 0.01), normalised at use) and any
//! state (AdaFace's EMA statistics), all in its VarStore so checkpoints carry them. It turns
//! un-normalised embeddings and labels into the softmax cross-entropy loss and the logits that
//! loss was computed from.

pub mod adaface;
pub mod arcface;
pub mod cosface;
pub mod elasticface;
pub mod kd;
pub mod uss;

pub use adaface::{AdaFace, AdaFaceCfg};
pub use arcface::{ArcFace, ArcFaceCfg, ArcGradient};
pub use cosface::{CosFace, CosFaceCfg};
pub use elasticface::{ElasticFace, ElasticFaceCfg, ElasticKind};
pub use kd::{FrozenTeacher, HgTrigger, KdSchedule, MaskInvKd, Teacher};
pub use uss::{Uss, UssCfg};

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// What a margin head returns for one batch.
#[derive(Debug)]
pub struct HeadOutput {
    /// Scalar mean softmax cross-entropy.
    pub loss: Tensor,
    /// (B,C): s*cos_j with the margin applied on the target column.
    pub logits: Tensor,
}

/// A sample-to-class margin head: (embeddings, labels) -> (loss, logits).
pub trait MarginHead: std::fmt::Debug + Send {
    /// `embeddings` (B,D) float, un-normalised; `labels` (B,) int64 in [0, C). May update state
    /// (AdaFace EMA) and draw random margins (ElasticFace), hence `&mut self`.
    fn forward(&mut self, embeddings: &Tensor, labels: &Tensor) -> Result<HeadOutput, LossError>;
    /// The head's class centres.
    fn centres(&self) -> &ClassCentres;
    fn num_classes(&self) -> i64 {
        self.centres().classes()
    }
    fn embedding_dim(&self) -> i64 {
        self.centres().dim()
    }
}

/// Errors of the loss modules: bad shapes or labels given by the caller.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    #[error("bad loss input: {0}")]
    Shape(String),
    #[error("label {label} out of range for {classes} classes")]
    Label { label: i64, classes: i64 },
    #[error("bad loss config: {0}")]
    BadConfig(String),
}

/// Default clamp of cosines away from +-1: arccos has infinite slope there.
pub const COS_EPS: f64 = 1e-3;

/// The class-centre matrix of a head: `<path>.weight`, C x D (arcface_torch's PartialFC layout).
#[derive(Debug)]
pub struct ClassCentres {
    weight: Tensor,
    classes: i64,
    dim: i64,
}

impl ClassCentres {
    pub fn new(p: &nn::Path, classes: i64, dim: i64) -> Result<Self, LossError> {
        if classes < 2 || dim < 1 {
            return Err(LossError::BadConfig(format!(
                "a head needs >= 2 classes and dim >= 1, got {classes} x {dim}"
            )));
        }
        let weight = p.var(
            "weight",
            &[classes, dim],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
        );
        Ok(Self {
            weight,
            classes,
            dim,
        })
    }

    /// (B,C) cosines between the normalised embeddings and the normalised centres.
    pub fn cosine(&self, embeddings: &Tensor) -> Tensor {
        l2_normalize(embeddings).matmul(&l2_normalize(&self.weight).tr())
    }

    /// Validates the batch, then returns the (B,C) cosines clamped to [-1+eps, 1-eps] and their
    /// (B,) target column.
    pub fn clamped_cosines(
        &self,
        embeddings: &Tensor,
        labels: &Tensor,
        eps: f64,
    ) -> Result<(Tensor, Tensor), LossError> {
        self.validate(embeddings, labels)?;
        let cos = self.cosine(embeddings).clamp(-1.0 + eps, 1.0 - eps);
        let cos_y = cos.gather(1, &labels.unsqueeze(1), false).squeeze_dim(1);
        Ok((cos, cos_y))
    }

    /// Checks `embeddings` (B,D) float and `labels` (B,) int64 in range.
    pub fn validate(&self, embeddings: &Tensor, labels: &Tensor) -> Result<(), LossError> {
        if embeddings.device() != self.weight.device() {
            return Err(LossError::Shape(format!(
                "embeddings on {:?}, class centres on {:?}",
                embeddings.device(),
                self.weight.device()
            )));
        }
        validate_batch(embeddings, labels, self.dim, self.classes)
    }

    pub fn classes(&self) -> i64 {
        self.classes
    }

    pub fn dim(&self) -> i64 {
        self.dim
    }
}

/// Rows divided by their L2 norm (norm floored at 1e-12 like `F.normalize`).
pub fn l2_normalize(xs: &Tensor) -> Tensor {
    xs / xs.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
}

pub(crate) fn validate_batch(
    embeddings: &Tensor,
    labels: &Tensor,
    dim: i64,
    classes: i64,
) -> Result<(), LossError> {
    let e = embeddings.size();
    if e.len() != 2
        || e[1] != dim
        || e[0] == 0
        || !matches!(embeddings.kind(), Kind::Float | Kind::Double)
    {
        return Err(LossError::Shape(format!(
            "embeddings must be float (B,{dim}) with B >= 1, got {:?} {e:?}",
            embeddings.kind()
        )));
    }
    if labels.device() != embeddings.device() {
        return Err(LossError::Shape(format!(
            "labels on {:?}, embeddings on {:?}",
            labels.device(),
            embeddings.device()
        )));
    }
    let l = labels.size();
    if l != [e[0]] || labels.kind() != Kind::Int64 {
        return Err(LossError::Shape(format!(
            "labels must be int64 ({},), got {:?} {l:?}",
            e[0],
            labels.kind()
        )));
    }
    // One device sync for both bounds.
    let bounds = Tensor::stack(&[labels.min(), labels.max()], 0).to_device(tch::Device::Cpu);
    let (lo, hi) = (bounds.int64_value(&[0]), bounds.int64_value(&[1]));
    for label in [lo, hi] {
        if !(0..classes).contains(&label) {
            return Err(LossError::Label { label, classes });
        }
    }
    Ok(())
}

/// s * cos with column `labels[i]` of row i replaced by `target[i]` (already a cosine-like value).
pub(crate) fn margin_logits(cos: &Tensor, labels: &Tensor, target: &Tensor, s: f64) -> Tensor {
    cos.scatter(1, &labels.unsqueeze(1), &target.unsqueeze(1)) * s
}

/// Softmax cross-entropy (mean over the batch) of `logits`.
pub(crate) fn head_output(logits: Tensor, labels: &Tensor) -> HeadOutput {
    let loss = logits.cross_entropy_for_logits(labels);
    HeadOutput { loss, logits }
}

/// cos(theta + m) for per-sample margins `m` (B,), with the classic fallback
/// cos - m*sin(m) where theta + m > pi (there cos(theta+m) would start to increase again).
pub(crate) fn additive_angular(cos_y: &Tensor, m: &Tensor) -> Tensor {
    let theta = cos_y.acos();
    let arc = (&theta + m).cos();
    let fallback = cos_y - m * m.sin();
    arc.where_self(&(&theta + m).le(std::f64::consts::PI), &fallback)
}

/// The kind of sample-to-class head and its settings, for configs (`type = "arcface"` ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HeadCfg {
    Arcface(ArcFaceCfg),
    Cosface(CosFaceCfg),
    Elasticface(ElasticFaceCfg),
    Adaface(AdaFaceCfg),
}

impl Default for HeadCfg {
    fn default() -> Self {
        HeadCfg::Arcface(ArcFaceCfg::default())
    }
}

/// Builds the head described by `cfg` with its variables under `p`.
pub fn build_head(
    cfg: &HeadCfg,
    p: &nn::Path,
    classes: i64,
    dim: i64,
) -> Result<Box<dyn MarginHead>, LossError> {
    Ok(match cfg {
        HeadCfg::Arcface(c) => Box::new(ArcFace::new(p, c, classes, dim)?),
        HeadCfg::Cosface(c) => Box::new(CosFace::new(p, c, classes, dim)?),
        HeadCfg::Elasticface(c) => Box::new(ElasticFace::new(p, c, classes, dim)?),
        HeadCfg::Adaface(c) => Box::new(AdaFace::new(p, c, classes, dim)?),
    })
}

pub(crate) fn check_scale_margin(s: f64, m: f64, eps: f64) -> Result<(), LossError> {
    let scale_ok = s > 0.0 && s.is_finite();
    let eps_ok = eps > 0.0 && eps < 0.5;
    if !scale_ok || !m.is_finite() || !eps_ok {
        return Err(LossError::BadConfig(format!(
            "need s > 0, finite m, 0 < eps < 0.5; got s={s} m={m} eps={eps}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
