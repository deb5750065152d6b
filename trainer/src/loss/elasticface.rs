//! ElasticFace (arXiv:2109.09416): ArcFace / CosFace with a per-sample margin m_i ~ N(m, sigma)
//! redrawn every step.
//!
//! The "+" variants rank-match the draws: the LARGEST sampled margin goes to the sample with the
//! LOWEST target cosine (the hardest sample gets the strongest push), as the paper describes.
//! The released code (`ElasticArcFacePlus`/`ElasticCosFacePlus`) sorts the cosines and the
//! margins and then indexes the sorted margins with the sort permutation (`margin[idx]`) instead
//! of scattering them through it (`out[idx] = margin`); that applies the permutation the wrong
//! way round, so its assignment is not rank-matched. This module implements the paper's intent
//! ([`rank_match`]). The Arc form uses the same theta + m > pi fallback as [`super::ArcFace`].

use super::{
    additive_angular, check_scale_margin, head_output, margin_logits, ClassCentres, HeadOutput,
    LossError, MarginHead, COS_EPS,
};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// Which margin the sampled m_i is used in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElasticKind {
    /// cos(theta_y + m_i).
    Arc,
    /// cos_y - m_i.
    Cos,
}

/// ElasticFace settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElasticFaceCfg {
    pub kind: ElasticKind,
    pub s: f64,
    /// Mean margin.
    pub m: f64,
    /// Standard deviation of the per-sample margin.
    pub sigma: f64,
    /// Rank-match margins to target cosines (the "+" variants).
    pub plus: bool,
    pub eps: f64,
}

impl Default for ElasticFaceCfg {
    fn default() -> Self {
        Self::arc()
    }
}

impl ElasticFaceCfg {
    /// ElasticFace-Arc: m=0.5, sigma=0.05.
    pub fn arc() -> Self {
        Self {
            kind: ElasticKind::Arc,
            s: 64.0,
            m: 0.5,
            sigma: 0.05,
            plus: false,
            eps: COS_EPS,
        }
    }
    /// ElasticFace-Arc+: sigma=0.0175, rank-matched.
    pub fn arc_plus() -> Self {
        Self {
            sigma: 0.0175,
            plus: true,
            ..Self::arc()
        }
    }
    /// ElasticFace-Cos: m=0.35, sigma=0.05.
    pub fn cos() -> Self {
        Self {
            kind: ElasticKind::Cos,
            s: 64.0,
            m: 0.35,
            sigma: 0.05,
            plus: false,
            eps: COS_EPS,
        }
    }
    /// ElasticFace-Cos+: sigma=0.02, rank-matched.
    pub fn cos_plus() -> Self {
        Self {
            sigma: 0.02,
            plus: true,
            ..Self::cos()
        }
    }
}

/// The ElasticFace head. Margins come from libtorch's generator (`tch::manual_seed` makes runs
/// reproducible).
#[derive(Debug)]
pub struct ElasticFace {
    centres: ClassCentres,
    cfg: ElasticFaceCfg,
}

impl ElasticFace {
    pub fn new(
        p: &nn::Path,
        cfg: &ElasticFaceCfg,
        classes: i64,
        dim: i64,
    ) -> Result<Self, LossError> {
        check_scale_margin(cfg.s, cfg.m, cfg.eps)?;
        if !(cfg.sigma >= 0.0 && cfg.sigma.is_finite()) {
            return Err(LossError::BadConfig(format!(
                "ElasticFace sigma must be >= 0, got {}",
                cfg.sigma
            )));
        }
        Ok(Self {
            centres: ClassCentres::new(p, classes, dim)?,
            cfg: cfg.clone(),
        })
    }
}

/// Reassigns `margins` (B,) so that the sample with the k-th lowest `target_cos` gets the k-th
/// largest margin.
pub fn rank_match(margins: &Tensor, target_cos: &Tensor) -> Tensor {
    let (_, by_cos_ascending) = target_cos.detach().sort(0, false);
    let (largest_first, _) = margins.sort(0, true);
    // out[by_cos_ascending[k]] = largest_first[k]: scatter through the permutation (its inverse
    // applied to the sorted margins), which the released code gets wrong.
    margins
        .zeros_like()
        .index_copy(0, &by_cos_ascending, &largest_first)
}

impl MarginHead for ElasticFace {
    fn forward(&mut self, embeddings: &Tensor, labels: &Tensor) -> Result<HeadOutput, LossError> {
        let (cos, cos_y) = self
            .centres
            .clamped_cosines(embeddings, labels, self.cfg.eps)?;
        let draws = Tensor::randn(cos_y.size(), (Kind::Float, cos_y.device()))
            .to_kind(cos_y.kind())
            * self.cfg.sigma
            + self.cfg.m;
        let margins = if self.cfg.plus {
            rank_match(&draws, &cos_y)
        } else {
            draws
        };
        let target = match self.cfg.kind {
            ElasticKind::Arc => additive_angular(&cos_y, &margins),
            ElasticKind::Cos => &cos_y - &margins,
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
