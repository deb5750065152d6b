//! Evaluation: embed verification pairs with a backbone and score them by the insightface
//! protocol ([`protocol`]) under three conditions (unmasked, masked probe vs unmasked reference,
//! masked vs masked), with TAR@FAR, a markdown/JSON table and an ROC plot ([`plot`]).

pub mod plot;
pub mod protocol;

use crate::data::mask::Masker;
use crate::data::{decode_face, pack, DataError, PairSet};
use crate::model::Backbone;
use protocol::{FoldAccuracy, ProtocolError, RocPoint, TarAtFar};
use serde::Serialize;
use shared::PreprocessSpec;
use tch::{Device, Kind, Tensor};

/// FAR targets reported next to the accuracy.
pub const REPORT_FARS: [f64; 2] = [1e-3, 1e-4];

/// Errors of an evaluation run, naming the set.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{set}: {source}")]
    Data { set: String, source: DataError },
    #[error("{set}: image {index}: {message}")]
    Preprocess {
        set: String,
        index: usize,
        message: String,
    },
    #[error("{set}: {source}")]
    Protocol { set: String, source: ProtocolError },
    #[error("{set}: bad model input: {message}")]
    Model { set: String, message: String },
}

/// Probe condition of an evaluated set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairCondition {
    Unmasked,
    /// First image of each pair masked: masked probe vs unmasked reference.
    MaskedProbe,
    MaskedBoth,
}

impl PairCondition {
    pub fn label(self) -> &'static str {
        match self {
            PairCondition::Unmasked => "unmasked",
            PairCondition::MaskedProbe => "masked-probe",
            PairCondition::MaskedBoth => "masked-both",
        }
    }
}

/// Scores and results of one (set, condition).
#[derive(Debug, Clone, Serialize)]
pub struct SetReport {
    pub set: String,
    pub condition: PairCondition,
    pub pairs: usize,
    pub accuracy: FoldAccuracy,
    pub tar_at_far: Vec<TarAtFar>,
    /// Cosine similarity of each pair (= 1 - d/2 for unit vectors).
    #[serde(skip)]
    pub cosines: Vec<f32>,
    #[serde(skip)]
    pub issame: Vec<bool>,
    #[serde(skip)]
    pub roc: Vec<RocPoint>,
}

/// Flip-fused unit embeddings of every image of `set` (embedding(x) + embedding(flip x),
/// normalised), in eval mode, `batch` images at a time. Returns (2N, D) on the CPU.
pub fn embed_images(
    backbone: &dyn Backbone,
    set: &PairSet,
    name: &str,
    batch: usize,
    device: Device,
) -> Result<Tensor, EvalError> {
    let spec = PreprocessSpec::arcface_112();
    let len = spec.input_len();
    let side = spec.width as i64;
    let mut out = Vec::new();
    for (c, chunk) in set.images.chunks(batch.max(1)).enumerate() {
        let mut plain = Vec::with_capacity(len * chunk.len());
        let mut flipped = Vec::with_capacity(len * chunk.len());
        for (j, bytes) in chunk.iter().enumerate() {
            let index = c * batch.max(1) + j;
            let origin = format!("{name} image {index}");
            let img = decode_face(bytes, &origin).map_err(|source| EvalError::Data {
                set: name.to_string(),
                source,
            })?;
            for (flip, buf) in [(false, &mut plain), (true, &mut flipped)] {
                let v = spec
                    .input_from_aligned(&img, flip)
                    .map_err(|e| EvalError::Preprocess {
                        set: name.to_string(),
                        index,
                        message: e.to_string(),
                    })?;
                buf.extend_from_slice(&v);
            }
        }
        let n = chunk.len() as i64;
        let to = |v: &[f32]| {
            Tensor::from_slice(v)
                .view([n, 3, side, side])
                .to_device(device)
        };
        let (a, b) = (to(&plain), to(&flipped));
        backbone.check_input(&a).map_err(|e| EvalError::Model {
            set: name.to_string(),
            message: e.to_string(),
        })?;
        let emb = tch::no_grad(|| {
            let e =
                backbone.forward_t(&a, false).embedding + backbone.forward_t(&b, false).embedding;
            crate::loss::l2_normalize(&e.to_kind(Kind::Float)).to_device(Device::Cpu)
        });
        out.push(emb);
    }
    Ok(Tensor::cat(&out, 0))
}

/// Cosine of pair k = (row 2k, row 2k+1) of unit embeddings.
pub fn pair_cosines(unit: &Tensor) -> Vec<f32> {
    let n = unit.size()[0] / 2;
    let a = unit.slice(0, 0, 2 * n, 2);
    let b = unit.slice(0, 1, 2 * n, 2);
    let cos = (a * b).sum_dim_intlist(1, false, Kind::Float);
    Vec::<f32>::try_from(&cos).unwrap_or_default()
}

/// The protocol on cosines: accuracy on d = 2 - 2cos, TAR@FAR and the ROC on cos.
pub fn score(
    set: &str,
    condition: PairCondition,
    cosines: Vec<f32>,
    issame: Vec<bool>,
) -> Result<SetReport, EvalError> {
    let perr = |source| EvalError::Protocol {
        set: set.to_string(),
        source,
    };
    let dist: Vec<f32> = cosines.iter().map(|c| (2.0 - 2.0 * c).max(0.0)).collect();
    let accuracy = protocol::kfold_accuracy(&dist, &issame, 10).map_err(perr)?;
    let tar_at_far = protocol::tar_at_far(&cosines, &issame, &REPORT_FARS).map_err(perr)?;
    let roc = protocol::roc(&cosines, &issame).map_err(perr)?;
    Ok(SetReport {
        set: set.to_string(),
        condition,
        pairs: issame.len(),
        accuracy,
        tar_at_far,
        cosines,
        issame,
        roc,
    })
}

/// Evaluates `set` under the unmasked condition and, with a `masker`, the two masked ones
/// (masks seeded by `mask_seed`, the same for every model, so numbers compare).
pub fn evaluate_set(
    backbone: &dyn Backbone,
    name: &str,
    set: &PairSet,
    masker: Option<&Masker>,
    mask_seed: u64,
    batch: usize,
    device: Device,
) -> Result<Vec<SetReport>, EvalError> {
    let mut reports = Vec::new();
    let unit = embed_images(backbone, set, name, batch, device)?;
    reports.push(score(
        name,
        PairCondition::Unmasked,
        pair_cosines(&unit),
        set.issame.clone(),
    )?);
    if let Some(masker) = masker {
        for (both, cond) in [
            (false, PairCondition::MaskedProbe),
            (true, PairCondition::MaskedBoth),
        ] {
            let masked = pack::mask_pairs(set, masker, mask_seed, both).map_err(|source| {
                EvalError::Data {
                    set: name.to_string(),
                    source,
                }
            })?;
            let label = format!("{name}/{}", cond.label());
            let unit = embed_images(backbone, &masked, &label, batch, device)?;
            reports.push(score(name, cond, pair_cosines(&unit), set.issame.clone())?);
        }
    }
    Ok(reports)
}

/// A markdown table of the reports.
pub fn markdown(reports: &[SetReport]) -> String {
    let mut s = String::from(
        "| set | condition | pairs | accuracy (10-fold) | TAR@FAR=1e-3 | TAR@FAR=1e-4 |\n|---|---|---|---|---|---|\n",
    );
    let mut thin = false;
    for r in reports {
        let impostors = r.issame.iter().filter(|s| !**s).count() as f64;
        let tar = |i: usize| {
            r.tar_at_far
                .get(i)
                .map(|t| {
                    // Fewer than 1/FAR impostors: the figure is TAR at zero false accepts.
                    let short = impostors * t.target_far < 1.0;
                    format!("{:.4}{}", t.tar, if short { " †" } else { "" })
                })
                .unwrap_or_default()
        };
        thin |= REPORT_FARS.iter().any(|f| impostors * f < 1.0);
        s.push_str(&format!(
            "| {} | {} | {} | {:.2}% ± {:.2}% | {} | {} |\n",
            r.set,
            r.condition.label(),
            r.pairs,
            100.0 * r.accuracy.mean,
            100.0 * r.accuracy.std,
            tar(0),
            tar(1)
        ));
    }
    if thin {
        s.push_str(
            "\n† fewer than 1/FAR impostor pairs: TAR at zero false accepts, not at that FAR.\n",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_cosines_pairs_consecutive_rows() {
        let unit = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]).view([4, 2]);
        assert_eq!(pair_cosines(&unit), vec![1.0, 0.0]);
    }

    #[test]
    fn markdown_lists_every_report() {
        let cos: Vec<f32> = (0..40)
            .map(|i| if i % 2 == 0 { 0.8 } else { 0.1 })
            .collect();
        let same: Vec<bool> = (0..40).map(|i| i % 2 == 0).collect();
        let r = score("toy", PairCondition::MaskedProbe, cos, same).unwrap();
        assert_eq!(r.accuracy.mean, 1.0);
        let md = markdown(&[r]);
        assert!(
            md.contains("| toy | masked-probe | 40 | 100.00% ± 0.00% |"),
            "{md}"
        );
    }
}
