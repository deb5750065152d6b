//! What a demo run measured: evaluation rows parsed from `trainer eval`, what the edge made of
//! the probes, the door's outcomes, and the report's operating-point table.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One verification row of `trainer eval`'s JSON.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    pub model: String,
    pub condition: String,
    pub pairs: u64,
    pub accuracy: f64,
    pub accuracy_std: f64,
    pub tar_at_1e3: f64,
    /// The score threshold at which that TAR was measured.
    pub threshold_at_1e3: f64,
    /// Fewer than 1000 impostor pairs: the TAR is at zero false accepts instead.
    pub tar_resolution_limited: bool,
}

/// What the edge made of the probes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbeStats {
    pub probes: usize,
    /// Accepted as the right person.
    pub correct: usize,
    /// Accepted as someone else (enrolled) / any accept (strangers).
    pub false_accepts: usize,
    /// Not accepted (below threshold, or no face/quality rejection).
    pub rejected: usize,
    pub errors: usize,
    /// Probes whose mask probability (the model's mask head) was on the right side of 0.5.
    pub mask_detected_right: usize,
}

impl ProbeStats {
    pub fn rate(&self, n: usize) -> f64 {
        if self.probes == 0 {
            0.0
        } else {
            n as f64 / self.probes as f64
        }
    }
}

/// The same probes judged at one calibrated operating point (from the scores `edge identify`
/// reported): what a stricter or looser threshold would have let through.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OperatingPointRow {
    pub target_far: f64,
    pub threshold_unmasked: f32,
    pub threshold_masked: f32,
    pub unmasked_identified: usize,
    pub masked_identified: usize,
    pub wrong_person: usize,
    pub strangers_accepted: usize,
}

/// One probe's best match as `edge identify` reported it.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeAnswer {
    pub image: PathBuf,
    pub owner: String,
    pub stranger: bool,
    pub masked: bool,
    pub best_name: Option<String>,
    pub score: Option<f32>,
    pub condition: shared::Condition,
    /// The edge accepted `best_name` (its score passed the threshold in force).
    pub accepted: bool,
}

impl ProbeAnswer {
    /// Who the edge let this image in as, if anyone.
    pub fn accepted_as(&self) -> Option<&str> {
        self.best_name.as_deref().filter(|_| self.accepted)
    }
}

/// One visitor of a door dry run: the image they showed and who the door unlocked for while
/// they stood in front of it.
#[derive(Debug, Clone, Serialize)]
pub struct DoorVisit {
    pub visitor: String,
    pub image: PathBuf,
    pub unlocked_as: Vec<String>,
}

/// Door outcomes of the dry run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DoorStats {
    pub visitors_enrolled: usize,
    pub visitors_strangers: usize,
    pub unlocked_right_person: usize,
    pub unlocked_wrong_person: usize,
    pub strangers_let_in: usize,
    pub denials: usize,
    pub relay_pulses: usize,
    pub audit: String,
    pub visits: Vec<DoorVisit>,
}

/// Apply every calibrated target FAR to the identify answers.
pub(super) fn operating_point_rows(
    thresholds: &shared::ThresholdConfig,
    answers: &[ProbeAnswer],
) -> Vec<OperatingPointRow> {
    let mut fars: Vec<f64> = thresholds
        .operating_points
        .iter()
        .map(|p| p.target_far)
        .collect();
    fars.sort_by(|a, b| b.total_cmp(a));
    fars.dedup();
    fars.into_iter()
        .filter_map(|far| {
            let at = |c: shared::Condition| {
                thresholds
                    .operating_points
                    .iter()
                    .find(|p| p.condition == c && p.target_far == far)
                    .map(|p| p.threshold)
            };
            let (tu, tm) = (
                at(shared::Condition::Unmasked)?,
                at(shared::Condition::Masked)?,
            );
            let mut row = OperatingPointRow {
                target_far: far,
                threshold_unmasked: tu,
                threshold_masked: tm,
                ..Default::default()
            };
            for a in answers {
                let t = match a.condition {
                    shared::Condition::Masked => tm,
                    shared::Condition::Unmasked => tu,
                };
                if !a.score.is_some_and(|s| s >= t) {
                    continue;
                }
                if a.stranger {
                    row.strangers_accepted += 1;
                } else if a.best_name.as_deref() != Some(a.owner.as_str()) {
                    row.wrong_person += 1;
                } else if a.masked {
                    row.masked_identified += 1;
                } else {
                    row.unmasked_identified += 1;
                }
            }
            Some(row)
        })
        .collect()
}

/// Rows of a `trainer eval --out X` JSON file (X.json).
pub fn parse_eval(model: &str, json: &Path) -> Result<Vec<EvalRow>> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))?;
    let rows = v
        .get("eval")
        .or(Some(&v))
        .and_then(Value::as_array)
        .with_context(|| format!("{}: no list of evaluation rows", json.display()))?;
    rows.iter()
        .map(|r| {
            let num = |p: &[&str]| -> Result<f64> {
                let mut x = r;
                for k in p {
                    x = x.get(k).with_context(|| {
                        format!("{}: row without {}", json.display(), p.join("."))
                    })?;
                }
                x.as_f64()
                    .with_context(|| format!("{}: {} is not a number", json.display(), p.join(".")))
            };
            let pairs = num(&["pairs"])? as u64;
            let at_1e3 = r.get("tar_at_far").and_then(Value::as_array).and_then(|l| {
                l.iter()
                    .find(|t| t.get("target_far").and_then(Value::as_f64) == Some(1e-3))
            });
            let field = |k: &str| {
                at_1e3
                    .and_then(|t| t.get(k))
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::NAN)
            };
            Ok(EvalRow {
                model: model.to_string(),
                condition: r
                    .get("condition")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                pairs,
                accuracy: num(&["accuracy", "mean"])?,
                accuracy_std: num(&["accuracy", "std"])?,
                tar_at_1e3: field("tar"),
                threshold_at_1e3: field("threshold"),
                tar_resolution_limited: pairs / 2 < 1000,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::thresholds::Metric;
    use shared::{Condition, OperatingPoint, ThresholdConfig};

    fn point(condition: Condition, target_far: f64, threshold: f32) -> OperatingPoint {
        OperatingPoint {
            condition,
            target_far,
            threshold,
            measured_far: 0.0,
            measured_tar: 0.0,
            genuine_pairs: 0,
            impostor_pairs: 0,
        }
    }

    fn answer(owner: &str, best: &str, score: f32, masked: bool, stranger: bool) -> ProbeAnswer {
        ProbeAnswer {
            image: PathBuf::from(format!("{owner}/probe.png")),
            owner: owner.into(),
            stranger,
            masked,
            best_name: Some(best.into()),
            score: Some(score),
            condition: if masked {
                Condition::Masked
            } else {
                Condition::Unmasked
            },
            accepted: false,
        }
    }

    #[test]
    fn each_operating_point_judges_the_same_scores_with_its_own_thresholds() {
        let thresholds = ThresholdConfig {
            model_id: "m".into(),
            metric: Metric::Cosine,
            selected_far: 1e-3,
            uss: None,
            operating_points: vec![
                point(Condition::Unmasked, 1e-3, 0.8),
                point(Condition::Masked, 1e-3, 0.7),
                point(Condition::Unmasked, 1e-2, 0.5),
                point(Condition::Masked, 1e-2, 0.4),
            ],
        };
        let answers = [
            answer("a", "a", 0.85, false, false), // identified at both points
            answer("b", "b", 0.6, false, false),  // only at the looser point
            answer("c", "c", 0.75, true, false),  // masked: 0.7 applies, not 0.8
            answer("d", "e", 0.9, false, false),  // wrong person at both points
            answer("x", "a", 0.45, true, true),   // stranger let in at 1e-2 only
        ];
        let rows = operating_point_rows(&thresholds, &answers);
        assert_eq!(rows.len(), 2);
        // Loosest point first.
        let (loose, strict) = (&rows[0], &rows[1]);
        assert_eq!(loose.target_far, 1e-2);
        assert_eq!(
            (
                loose.unmasked_identified,
                loose.masked_identified,
                loose.wrong_person,
                loose.strangers_accepted
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(strict.target_far, 1e-3);
        assert_eq!(
            (strict.threshold_unmasked, strict.threshold_masked),
            (0.8, 0.7)
        );
        assert_eq!(
            (
                strict.unmasked_identified,
                strict.masked_identified,
                strict.wrong_person,
                strict.strangers_accepted
            ),
            (1, 1, 1, 0)
        );
    }
}
