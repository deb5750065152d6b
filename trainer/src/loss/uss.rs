//! USS: the unified-threshold sample-to-sample loss of UniTSFace (NeurIPS 2023).
//!
//! A class memory bank F (C x D, non-trainable) holds the latest detached unit feature of each
//! class. With one learnable scalar b = s*t:
//! L_i = log(1 + exp(-s*(cos(e_i, F[y_i]) - m) + b)) + sum_{j != y_i} log(1 + exp(s*cos(e_i, F[j]) - b)),
//! both exponents clamped to [-s, s]; averaged over the batch. t = b/s is the unified threshold
//! that separates positive from negative pairs.
//!
//! Design choices where the paper is silent: bank rows not yet written (`bank_filled` = 0) take
//! part in neither term, and a sample whose class row is empty has no positive term. b is set to
//! the batch mean of logsumexp_{j != y}(s*cos_ij) at its first use and whenever it is <= 0.
//! Within one batch, the last sample of a class wins the bank row.

use super::{l2_normalize, validate_batch, LossError};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// USS settings (paper: s=64, m=0.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UssCfg {
    pub s: f64,
    pub m: f64,
}

impl Default for UssCfg {
    fn default() -> Self {
        Self { s: 64.0, m: 0.1 }
    }
}

/// The USS loss with its bank and threshold. Sum it with a sample-to-class head's loss; during
/// warm-up ([`Uss::set_warmup`]) it only fills the bank and returns 0.
#[derive(Debug)]
pub struct Uss {
    bank: Tensor,
    bank_filled: Tensor,
    b: Tensor,
    cfg: UssCfg,
    warmup: bool,
}

impl Uss {
    /// Variables `bank` (C,D), `bank_filled` (C) and the trainable `b` (1) under `p`.
    pub fn new(p: &nn::Path, cfg: &UssCfg, classes: i64, dim: i64) -> Result<Self, LossError> {
        if classes < 2 || dim < 1 || !(cfg.s > 0.0 && cfg.s.is_finite()) || !cfg.m.is_finite() {
            return Err(LossError::BadConfig(format!(
                "USS needs >= 2 classes, dim >= 1, s > 0; got {classes} x {dim}, {cfg:?}"
            )));
        }
        Ok(Self {
            bank: p.zeros_no_train("bank", &[classes, dim]),
            bank_filled: p.zeros_no_train("bank_filled", &[classes]),
            b: p.zeros("b", &[1]),
            cfg: cfg.clone(),
            warmup: false,
        })
    }

    /// Warm-up: fill the bank only (the first epoch trains the sample-to-class loss alone).
    pub fn set_warmup(&mut self, warmup: bool) {
        self.warmup = warmup;
    }

    pub fn is_warmup(&self) -> bool {
        self.warmup
    }

    /// The learnable b (= s*t).
    pub fn b(&self) -> f64 {
        self.b.double_value(&[0])
    }

    /// The unified threshold t = b/s on the cosine scale.
    pub fn threshold(&self) -> f64 {
        self.b() / self.cfg.s
    }

    /// Loss of this batch (0 during warm-up); then writes the batch into the bank.
    pub fn forward(&mut self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor, LossError> {
        let (classes, dim) = self.bank.size2().unwrap_or((0, 0));
        validate_batch(embeddings, labels, dim, classes)?;
        let unit = l2_normalize(&embeddings.to_kind(Kind::Float));
        let loss = if self.warmup {
            Tensor::zeros([], (Kind::Float, unit.device()))
        } else {
            self.loss(&unit, labels)
        };
        tch::no_grad(|| {
            let _ = self
                .bank
                .shallow_clone()
                .index_copy_(0, labels, &unit.detach());
            let ones = Tensor::ones(labels.size(), (Kind::Float, unit.device()));
            let _ = self
                .bank_filled
                .shallow_clone()
                .index_copy_(0, labels, &ones);
        });
        Ok(loss)
    }

    fn loss(&mut self, unit: &Tensor, labels: &Tensor) -> Tensor {
        let (s, m) = (self.cfg.s, self.cfg.m);
        // A snapshot: the bank is rewritten in place after the loss, before backward.
        let bank = self.bank.detach().copy();
        let filled = self.bank_filled.detach().gt(0.5);
        let cos = unit.matmul(&bank.tr());
        let target = Tensor::zeros_like(&cos)
            .scatter_value(1, &labels.unsqueeze(1), 1.0)
            .gt(0.5);
        let negative = target.logical_not().logical_and(&filled.unsqueeze(0));
        let has_positive = filled.index_select(0, labels).to_kind(Kind::Float);
        let scaled = &cos * s;
        tch::no_grad(|| {
            if self.b() <= 0.0 {
                let lse = scaled
                    .masked_fill(&negative.logical_not(), f64::NEG_INFINITY)
                    .logsumexp([1], false);
                let finite = lse.isfinite();
                if finite.any().int64_value(&[]) != 0 {
                    let init = lse.masked_select(&finite).mean(Kind::Float);
                    self.b.shallow_clone().copy_(&init.reshape([1]));
                }
            }
        });
        let b = &self.b;
        let cos_y = cos.gather(1, &labels.unsqueeze(1), false).squeeze_dim(1);
        let pos = ((cos_y - m) * (-s) + b).clamp(-s, s).exp().log1p() * has_positive;
        let neg = (&scaled - b).clamp(-s, s).exp().log1p() * negative.to_kind(Kind::Float);
        (pos + neg.sum_dim_intlist(1, false, Kind::Float)).mean(Kind::Float)
    }
}
