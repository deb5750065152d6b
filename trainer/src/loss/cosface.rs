//! CosFace / large-margin cosine loss (arXiv:1801.09414): target logit s*(cos_y - m).

use super::{
    check_scale_margin, head_output, margin_logits, ClassCentres, HeadOutput, LossError,
    MarginHead, COS_EPS,
};
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// CosFace settings (defaults: s=64, m=0.4 as arcface_torch and the USS warm-up use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CosFaceCfg {
    pub s: f64,
    pub m: f64,
    pub eps: f64,
}

impl Default for CosFaceCfg {
    fn default() -> Self {
        Self {
            s: 64.0,
            m: 0.4,
            eps: COS_EPS,
        }
    }
}

/// The CosFace head: class centres and the additive cosine margin.
#[derive(Debug)]
pub struct CosFace {
    centres: ClassCentres,
    cfg: CosFaceCfg,
}

impl CosFace {
    pub fn new(p: &nn::Path, cfg: &CosFaceCfg, classes: i64, dim: i64) -> Result<Self, LossError> {
        check_scale_margin(cfg.s, cfg.m, cfg.eps)?;
        Ok(Self {
            centres: ClassCentres::new(p, classes, dim)?,
            cfg: cfg.clone(),
        })
    }
}

impl MarginHead for CosFace {
    fn forward(&mut self, embeddings: &Tensor, labels: &Tensor) -> Result<HeadOutput, LossError> {
        let (cos, cos_y) = self
            .centres
            .clamped_cosines(embeddings, labels, self.cfg.eps)?;
        let target = cos_y - self.cfg.m;
        Ok(head_output(
            margin_logits(&cos, labels, &target, self.cfg.s),
            labels,
        ))
    }

    fn centres(&self) -> &ClassCentres {
        &self.centres
    }
}
