//! The optional mask head: a small MLP on the (detached) student embedding that predicts whether
//! the input face was masked, so the edge can pick the masked-probe threshold. It reads the
//! embedding detached so it never bends the recognition features; its variables live in their own
//! `mask_head` store (`fc1`, `fc2`), exported later as the `mask_prob` output.

use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Kind, Tensor};

/// Mask head settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskHeadCfg {
    pub enabled: bool,
    pub hidden: i64,
    /// Weight of its binary cross-entropy in the total loss.
    pub lambda: f64,
}

impl Default for MaskHeadCfg {
    fn default() -> Self {
        Self {
            enabled: false,
            hidden: 64,
            lambda: 1.0,
        }
    }
}

/// Linear(D, hidden) -> ReLU -> Linear(hidden, 1) on the unit embedding.
#[derive(Debug)]
pub struct MaskHead {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl MaskHead {
    pub fn new(p: &nn::Path, dim: i64, cfg: &MaskHeadCfg) -> Self {
        Self {
            fc1: nn::linear(p / "fc1", dim, cfg.hidden.max(1), Default::default()),
            fc2: nn::linear(p / "fc2", cfg.hidden.max(1), 1, Default::default()),
        }
    }

    /// (B,) logits of "masked" from (B,D) embeddings.
    pub fn forward(&self, embeddings: &Tensor) -> Tensor {
        let unit = crate::loss::l2_normalize(&embeddings.detach().to_kind(Kind::Float));
        self.fc2
            .forward(&self.fc1.forward(&unit).relu())
            .squeeze_dim(1)
    }

    /// Mean binary cross-entropy against `masked` (B,) bool; also returns the batch accuracy.
    pub fn loss(&self, embeddings: &Tensor, masked: &Tensor) -> (Tensor, Tensor) {
        let logits = self.forward(embeddings);
        let target = masked.to_kind(Kind::Float);
        let loss = logits.binary_cross_entropy_with_logits::<Tensor>(
            &target,
            None,
            None,
            tch::Reduction::Mean,
        );
        let acc = logits
            .gt(0.0)
            .eq_tensor(&masked.to_kind(Kind::Bool))
            .to_kind(Kind::Float)
            .mean(Kind::Float);
        (loss, acc)
    }
}
