//! AdaFace (arXiv:2204.00964): a margin that adapts to image quality, using the embedding norm as
//! the quality proxy.
//!
//! n = clip(|e|, 0.001, 100) (detached); EMA of the batch mean and unbiased std of n (momentum
//! t_alpha, updated BEFORE use in the same step, as the reference code does);
//! z = clip(h*(n - mu)/(sigma + eps), -1, 1); target only:
//! theta' = clip(theta_y - m*z, eps, pi - eps), target = cos(theta') - (m + m*z).
//! z = -1 is the ArcFace form, z = 0 CosFace, z = +1 emphasises hard (high-quality) samples.
//! The EMA statistics are non-trainable VarStore variables (`batch_mean`, `batch_std`), so a
//! checkpoint saves and restores them.

use super::{
    check_scale_margin, head_output, margin_logits, ClassCentres, HeadOutput, LossError,
    MarginHead, COS_EPS,
};
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// AdaFace settings (defaults of the paper's code).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaFaceCfg {
    pub s: f64,
    pub m: f64,
    /// Concentration h of z.
    pub h: f64,
    /// EMA momentum of the norm statistics.
    pub t_alpha: f64,
    pub eps: f64,
}

impl Default for AdaFaceCfg {
    fn default() -> Self {
        Self {
            s: 64.0,
            m: 0.4,
            h: 0.333,
            t_alpha: 0.01,
            eps: COS_EPS,
        }
    }
}

/// Initial EMA statistics of the embedding norm (reference code).
const INIT_MEAN: f64 = 20.0;
const INIT_STD: f64 = 100.0;

/// The AdaFace head: class centres plus the EMA norm statistics.
#[derive(Debug)]
pub struct AdaFace {
    centres: ClassCentres,
    batch_mean: Tensor,
    batch_std: Tensor,
    cfg: AdaFaceCfg,
}

impl AdaFace {
    pub fn new(p: &nn::Path, cfg: &AdaFaceCfg, classes: i64, dim: i64) -> Result<Self, LossError> {
        check_scale_margin(cfg.s, cfg.m, cfg.eps)?;
        if !(0.0..=1.0).contains(&cfg.t_alpha) || cfg.h.is_nan() || cfg.h < 0.0 {
            return Err(LossError::BadConfig(format!(
                "AdaFace needs 0 <= t_alpha <= 1 and h >= 0, got {cfg:?}"
            )));
        }
        let batch_mean = p.ones_no_train("batch_mean", &[1]);
        let batch_std = p.ones_no_train("batch_std", &[1]);
        tch::no_grad(|| {
            let _ = batch_mean.shallow_clone().fill_(INIT_MEAN);
            let _ = batch_std.shallow_clone().fill_(INIT_STD);
        });
        Ok(Self {
            centres: ClassCentres::new(p, classes, dim)?,
            batch_mean,
            batch_std,
            cfg: cfg.clone(),
        })
    }

    /// Current EMA (mean, std) of the embedding norm.
    pub fn norm_stats(&self) -> (f64, f64) {
        (
            self.batch_mean.double_value(&[0]),
            self.batch_std.double_value(&[0]),
        )
    }

    /// Overwrites the EMA statistics (for tests and ablations; checkpoints restore them anyway).
    pub fn set_norm_stats(&mut self, mean: f64, std: f64) {
        tch::no_grad(|| {
            let _ = self.batch_mean.shallow_clone().fill_(mean);
            let _ = self.batch_std.shallow_clone().fill_(std);
        });
    }

    /// EMA update from this batch's norms. A batch of one has no unbiased std: only the mean moves.
    fn update_stats(&self, norms: &Tensor) {
        let a = self.cfg.t_alpha;
        tch::no_grad(|| {
            let mean = norms.mean(norms.kind()).to_kind(self.batch_mean.kind());
            let new_mean = &self.batch_mean * (1.0 - a) + mean * a;
            self.batch_mean.shallow_clone().copy_(&new_mean);
            if norms.numel() > 1 {
                let std = norms.std(true).to_kind(self.batch_std.kind());
                let new_std = &self.batch_std * (1.0 - a) + std * a;
                self.batch_std.shallow_clone().copy_(&new_std);
            }
        });
    }
}

impl MarginHead for AdaFace {
    fn forward(&mut self, embeddings: &Tensor, labels: &Tensor) -> Result<HeadOutput, LossError> {
        let eps = self.cfg.eps;
        let (cos, cos_y) = self.centres.clamped_cosines(embeddings, labels, eps)?;
        let norms = embeddings
            .detach()
            .norm_scalaropt_dim(2, [-1], false)
            .clamp(0.001, 100.0);
        self.update_stats(&norms);
        let (mu, sigma) = (self.batch_mean.detach(), self.batch_std.detach());
        let z = ((norms - mu) / (sigma + 1e-3) * self.cfg.h)
            .clamp(-1.0, 1.0)
            .to_kind(cos.kind());
        let m = self.cfg.m;
        let theta = (cos_y.acos() - &z * m).clamp(eps, std::f64::consts::PI - eps);
        let target = theta.cos() - (z * m + m);
        Ok(head_output(
            margin_logits(&cos, labels, &target, self.cfg.s),
            labels,
        ))
    }

    fn centres(&self) -> &ClassCentres {
        &self.centres
    }
}
