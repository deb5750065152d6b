//! MaskInv template-level knowledge distillation (Huber et al., arXiv:2112.05646).
//!
//! A frozen teacher embeds the UNMASKED image; the student embeds the same image masked with
//! probability pMask. The KD term is lambda * MSE(ê_S, ê_T), averaged over the batch AND the
//! dimensions, i.e. lambda * (2 - 2cos)/D per sample. (The released code masks the image in place,
//! so its teacher also sees the mask: the data pipeline must keep an unmasked copy.)
//! LG keeps lambda constant (100); HG raises it (to 3000) once the margin loss has stabilised,
//! at a fixed step or on a plateau ([`KdSchedule`]). lambda = 0 with mask augmentation is the
//! "ElasticFace-Arc-Aug" baseline.

use super::{l2_normalize, LossError};
use crate::model::Backbone;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use tch::{nn, Kind, Tensor};

/// The distillation term, with a learned projection when student and teacher dimensions differ.
#[derive(Debug)]
pub struct MaskInvKd {
    projection: Option<nn::Linear>,
    student_dim: i64,
    teacher_dim: i64,
}

impl MaskInvKd {
    /// A bias-free Linear `projection` (student_dim -> teacher_dim) is created under `p` only when
    /// the dimensions differ.
    pub fn new(p: &nn::Path, student_dim: i64, teacher_dim: i64) -> Result<Self, LossError> {
        if student_dim < 1 || teacher_dim < 1 {
            return Err(LossError::BadConfig(format!(
                "KD dims must be >= 1, got {student_dim} -> {teacher_dim}"
            )));
        }
        let projection = (student_dim != teacher_dim).then(|| {
            nn::linear(
                p / "projection",
                student_dim,
                teacher_dim,
                nn::LinearConfig {
                    bias: false,
                    ..Default::default()
                },
            )
        });
        Ok(Self {
            projection,
            student_dim,
            teacher_dim,
        })
    }

    /// MSE of the unit student and teacher embeddings, mean over batch and dimensions (without
    /// lambda). The teacher side is detached.
    pub fn distance(&self, student: &Tensor, teacher: &Tensor) -> Result<Tensor, LossError> {
        let (s, t) = (student.size(), teacher.size());
        if s.len() != 2 || s[1] != self.student_dim || t != [s[0], self.teacher_dim] || s[0] == 0 {
            return Err(LossError::Shape(format!(
                "KD expects student (B,{}) and teacher (B,{}), got {s:?} and {t:?}",
                self.student_dim, self.teacher_dim
            )));
        }
        let student = match &self.projection {
            Some(p) => student.apply(p),
            None => student.shallow_clone(),
        };
        let diff = l2_normalize(&student) - l2_normalize(&teacher.detach().to_kind(student.kind()));
        Ok(diff.square().mean(Kind::Float))
    }

    /// lambda * [`MaskInvKd::distance`].
    pub fn loss(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        lambda: f64,
    ) -> Result<Tensor, LossError> {
        Ok(self.distance(student, teacher)? * lambda)
    }
}

/// A frozen tch teacher: eval mode, no gradients, its own VarStore frozen.
#[derive(Debug)]
pub struct FrozenTeacher {
    backbone: Box<dyn Backbone>,
    _vs: nn::VarStore,
}

impl FrozenTeacher {
    /// Takes the teacher's VarStore (already loaded with its weights) and freezes it.
    pub fn new(mut vs: nn::VarStore, backbone: Box<dyn Backbone>) -> Self {
        vs.freeze();
        Self { backbone, _vs: vs }
    }

    /// Teacher embeddings of the unmasked images.
    pub fn embed(&self, unmasked: &Tensor) -> Tensor {
        tch::no_grad(|| self.backbone.forward_t(unmasked, false).embedding.detach())
    }

    pub fn embedding_dim(&self) -> i64 {
        self.backbone.embedding_dim()
    }
}

/// Where teacher embeddings come from.
#[derive(Debug)]
pub enum Teacher {
    /// A tch model run on the unmasked batch.
    Frozen(FrozenTeacher),
    /// Embeddings computed beforehand (e.g. by an ONNX teacher through tract), one row per
    /// (sample, flip) id: (N, D).
    Cached(Tensor),
}

impl Teacher {
    /// Teacher embeddings for a batch: `unmasked` images for a frozen model, or rows `ids`
    /// (int64, (B,)) of the cache.
    pub fn embeddings(&self, unmasked: &Tensor, ids: &Tensor) -> Result<Tensor, LossError> {
        match self {
            Teacher::Frozen(t) => Ok(t.embed(unmasked)),
            Teacher::Cached(table) => {
                let n = table.size().first().copied().unwrap_or(0);
                if ids.kind() != Kind::Int64 || ids.dim() != 1 || ids.numel() == 0 {
                    return Err(LossError::Shape(format!(
                        "cache ids must be non-empty int64 (B,), got {:?} {:?}",
                        ids.kind(),
                        ids.size()
                    )));
                }
                let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
                if lo < 0 || hi >= n {
                    return Err(LossError::Shape(format!(
                        "cache id out of range: [{lo}, {hi}] for {n} cached embeddings"
                    )));
                }
                Ok(table
                    .index_select(0, &ids.to_device(table.device()))
                    .detach())
            }
        }
    }

    pub fn embedding_dim(&self) -> i64 {
        match self {
            Teacher::Frozen(t) => t.embedding_dim(),
            Teacher::Cached(table) => table.size().get(1).copied().unwrap_or(0),
        }
    }
}

/// When HG raises lambda.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HgTrigger {
    /// Never: low guidance (LG).
    Never,
    /// At this optimiser step (the reference switched at epoch 20 of 26).
    AtStep(u64),
    /// When the mean margin loss over the last `window` steps improved on the `window` before by
    /// less than `rel_tol` (relative).
    Plateau { window: usize, rel_tol: f64 },
}

/// The KD weight over training: `low` until the trigger fires, then `high` for good.
/// Serialisable so a checkpoint resumes the plateau history exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KdSchedule {
    low: f64,
    high: f64,
    trigger: HgTrigger,
    switched_at: Option<u64>,
    history: VecDeque<f64>,
}

impl KdSchedule {
    /// LG: constant lambda (paper: 100).
    pub fn low_guidance(lambda: f64) -> Self {
        Self::new(lambda, lambda, HgTrigger::Never)
    }

    /// HG: `low` (paper: 100) then `high` (paper: 3000) once `trigger` fires.
    pub fn high_guidance(low: f64, high: f64, trigger: HgTrigger) -> Self {
        Self::new(low, high, trigger)
    }

    fn new(low: f64, high: f64, trigger: HgTrigger) -> Self {
        Self {
            low,
            high,
            trigger,
            switched_at: None,
            history: VecDeque::new(),
        }
    }

    /// Current lambda.
    pub fn lambda(&self) -> f64 {
        if self.switched_at.is_some() {
            self.high
        } else {
            self.low
        }
    }

    /// The step at which lambda was raised, if it has been.
    pub fn switched_at(&self) -> Option<u64> {
        self.switched_at
    }

    /// Records the margin loss of `step` and returns the lambda to use for that step.
    pub fn observe(&mut self, step: u64, margin_loss: f64) -> f64 {
        if self.switched_at.is_none() {
            let fire = match &self.trigger {
                HgTrigger::Never => false,
                HgTrigger::AtStep(at) => step >= *at,
                HgTrigger::Plateau { window, rel_tol } => {
                    let window = (*window).max(1);
                    if margin_loss.is_finite() {
                        self.history.push_back(margin_loss);
                    }
                    while self.history.len() > 2 * window {
                        self.history.pop_front();
                    }
                    self.history.len() == 2 * window && {
                        let older: f64 =
                            self.history.iter().take(window).sum::<f64>() / window as f64;
                        let recent: f64 =
                            self.history.iter().skip(window).sum::<f64>() / window as f64;
                        (older - recent) < rel_tol * older.abs()
                    }
                }
            };
            if fire {
                self.switched_at = Some(step);
                tracing::info!(step, lambda = self.high, "MaskInv HG: KD weight raised");
            }
        }
        self.lambda()
    }
}
