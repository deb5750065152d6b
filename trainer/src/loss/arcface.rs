//! ArcFace (arXiv:1801.07698): target logit s*cos(theta_y + m).
//!
//! Where theta_y + m > pi the classic fallback cos_y - m*sin(m) keeps the target logit monotone.
//! Two gradient modes: `Exact` differentiates cos(theta + m) (the 2022 published training logs);
//! `StraightThrough` shows the margin in the forward pass but back-propagates as if the logit
//! were s*cos_y (current arcface_torch, which edits the logits in place under `no_grad`).

use super::{
    additive_angular, check_scale_margin, head_output, margin_logits, ClassCentres, HeadOutput,
    LossError, MarginHead, COS_EPS,
};
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// How the margin enters the gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArcGradient {
    /// Autograd through cos(theta + m).
    #[default]
    Exact,
    /// Forward with the margin, gradient of s*cos_y.
    StraightThrough,
}

/// ArcFace settings (defaults: s=64, m=0.5, exact gradient).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArcFaceCfg {
    pub s: f64,
    pub m: f64,
    pub gradient: ArcGradient,
    /// Cosines are clamped to [-1+eps, 1-eps].
    pub eps: f64,
}

impl Default for ArcFaceCfg {
    fn default() -> Self {
        Self {
            s: 64.0,
            m: 0.5,
            gradient: ArcGradient::Exact,
            eps: COS_EPS,
        }
    }
}

/// The ArcFace head: class centres and the additive angular margin.
#[derive(Debug)]
pub struct ArcFace {
    centres: ClassCentres,
    cfg: ArcFaceCfg,
}

impl ArcFace {
    pub fn new(p: &nn::Path, cfg: &ArcFaceCfg, classes: i64, dim: i64) -> Result<Self, LossError> {
        check_scale_margin(cfg.s, cfg.m, cfg.eps)?;
        Ok(Self {
            centres: ClassCentres::new(p, classes, dim)?,
            cfg: cfg.clone(),
        })
    }
}

impl MarginHead for ArcFace {
    fn forward(&mut self, embeddings: &Tensor, labels: &Tensor) -> Result<HeadOutput, LossError> {
        let (cos, cos_y) = self
            .centres
            .clamped_cosines(embeddings, labels, self.cfg.eps)?;
        let m = Tensor::full_like(&cos_y, self.cfg.m);
        let target = additive_angular(&cos_y, &m);
        let target = match self.cfg.gradient {
            ArcGradient::Exact => target,
            ArcGradient::StraightThrough => &cos_y + (target - &cos_y).detach(),
        };
        Ok(head_output(
            margin_logits(&cos, labels, &target, self.cfg.s),
            labels,
        ))
    }

    fn centres(&self) -> &ClassCentres {
        &self.centres
    }
}
