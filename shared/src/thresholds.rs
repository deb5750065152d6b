//! Calibrated decision thresholds: which cosine score means "same person" for one model.
//!
//! Thresholds belong to one model file (its sha256) and to one probe condition: a masked probe
//! against an unmasked enrollment scores lower than two unmasked faces, so it gets its own
//! operating point. Each operating point records the evidence behind it (measured FAR/TAR and how
//! many pairs were measured), so an installer can see what "FAR 1e-4" rests on. The file is TOML,
//! meant to be read and, carefully, edited by people; it is validated strictly on load.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// Probe condition an operating point was calibrated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Unmasked probe against an unmasked enrollment.
    Unmasked,
    /// Masked probe against an unmasked enrollment (the realistic door case).
    Masked,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Condition::Unmasked => "unmasked",
            Condition::Masked => "masked",
        })
    }
}

/// Similarity metric the thresholds are on. Only cosine exists; naming it prevents the classic
/// "threshold was for squared L2" mistake (d = 2 - 2cos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Cosine,
}

/// The unified threshold learned by the USS loss: a training-time prior, not a deployed value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UssThreshold {
    /// t = b / s, on the cosine scale.
    pub threshold: f32,
    pub scale: f32,
}

/// One calibrated point: accept when cosine >= `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatingPoint {
    pub condition: Condition,
    /// FAR the calibration aimed for (its one-sided 95% upper bound stays below this).
    pub target_far: f64,
    pub threshold: f32,
    pub measured_far: f64,
    pub measured_tar: f64,
    pub genuine_pairs: u64,
    pub impostor_pairs: u64,
}

/// All thresholds of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// sha256 (hex) of the ONNX file these thresholds were calibrated for.
    pub model_id: String,
    pub metric: Metric,
    /// The operating point used per condition is the one with this target FAR.
    pub selected_far: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uss: Option<UssThreshold>,
    #[serde(rename = "operating_point")]
    pub operating_points: Vec<OperatingPoint>,
}

/// What is wrong with a threshold file.
#[derive(Debug, thiserror::Error)]
pub enum ThresholdError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid threshold config: {message}")]
    Parse { path: String, message: String },
    #[error("model_id must be 64 lower-case hex characters (a sha256), got {0:?}")]
    ModelId(String),
    #[error("operating point {index}: {field} = {value} is out of range {range}")]
    Range {
        index: usize,
        field: &'static str,
        value: f64,
        range: &'static str,
    },
    #[error("operating points {first} and {second} are both for {condition} at target FAR {far}")]
    Duplicate {
        first: usize,
        second: usize,
        condition: Condition,
        far: f64,
    },
    #[error("no operating point for the unmasked condition")]
    NoUnmasked,
    #[error("selected_far = {far} has no operating point for {condition}")]
    SelectedMissing { far: f64, condition: Condition },
    #[error("uss threshold {0} is out of range [-1, 1] or its scale is not positive")]
    Uss(f32),
    #[error("thresholds are for model {found}, but the model is {expected}")]
    WrongModel { expected: String, found: String },
    #[error("cannot serialise: {0}")]
    Serialize(String),
}

impl ThresholdConfig {
    /// Parse and validate TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ThresholdError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ThresholdError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self, ThresholdError> {
        let text = std::fs::read_to_string(path).map_err(|source| ThresholdError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    pub fn to_toml(&self) -> Result<String, ThresholdError> {
        toml::to_string_pretty(self).map_err(|e| ThresholdError::Serialize(e.to_string()))
    }

    pub fn validate(&self) -> Result<(), ThresholdError> {
        let hex_ok = self.model_id.len() == 64
            && self
                .model_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(ThresholdError::ModelId(self.model_id.clone()));
        }
        let range = |index, field, value: f64, lo: f64, hi: f64, open_lo: bool, range| {
            let ok =
                value.is_finite() && value <= hi && if open_lo { value > lo } else { value >= lo };
            if ok {
                Ok(())
            } else {
                Err(ThresholdError::Range {
                    index,
                    field,
                    value,
                    range,
                })
            }
        };
        for (i, op) in self.operating_points.iter().enumerate() {
            range(i, "target_far", op.target_far, 0.0, 1.0, true, "(0, 1]")?;
            range(
                i,
                "threshold",
                op.threshold as f64,
                -1.0,
                1.0,
                false,
                "[-1, 1]",
            )?;
            range(
                i,
                "measured_far",
                op.measured_far,
                0.0,
                1.0,
                false,
                "[0, 1]",
            )?;
            range(
                i,
                "measured_tar",
                op.measured_tar,
                0.0,
                1.0,
                false,
                "[0, 1]",
            )?;
            if op.impostor_pairs == 0 {
                return Err(ThresholdError::Range {
                    index: i,
                    field: "impostor_pairs",
                    value: 0.0,
                    range: ">= 1",
                });
            }
            if op.genuine_pairs == 0 {
                return Err(ThresholdError::Range {
                    index: i,
                    field: "genuine_pairs",
                    value: 0.0,
                    range: ">= 1",
                });
            }
            for (j, other) in self.operating_points.iter().enumerate().take(i) {
                if other.condition == op.condition && other.target_far == op.target_far {
                    return Err(ThresholdError::Duplicate {
                        first: j,
                        second: i,
                        condition: op.condition,
                        far: op.target_far,
                    });
                }
            }
        }
        if !self
            .operating_points
            .iter()
            .any(|o| o.condition == Condition::Unmasked)
        {
            return Err(ThresholdError::NoUnmasked);
        }
        for condition in [Condition::Unmasked, Condition::Masked] {
            let has_any = self
                .operating_points
                .iter()
                .any(|o| o.condition == condition);
            if has_any && self.point(condition, self.selected_far).is_none() {
                return Err(ThresholdError::SelectedMissing {
                    far: self.selected_far,
                    condition,
                });
            }
        }
        if let Some(u) = &self.uss {
            if !(u.threshold.is_finite() && (-1.0..=1.0).contains(&u.threshold) && u.scale > 0.0) {
                return Err(ThresholdError::Uss(u.threshold));
            }
        }
        Ok(())
    }

    fn point(&self, condition: Condition, far: f64) -> Option<&OperatingPoint> {
        self.operating_points
            .iter()
            .find(|o| o.condition == condition && o.target_far == far)
    }

    /// The selected operating point for `condition`; a masked probe falls back to the unmasked
    /// point when no masked calibration exists.
    pub fn selected(&self, condition: Condition) -> Result<&OperatingPoint, ThresholdError> {
        self.point(condition, self.selected_far)
            .or_else(|| self.point(Condition::Unmasked, self.selected_far))
            .ok_or(ThresholdError::SelectedMissing {
                far: self.selected_far,
                condition,
            })
    }

    /// The accept threshold (cosine) for `condition`.
    pub fn threshold(&self, condition: Condition) -> Result<f32, ThresholdError> {
        Ok(self.selected(condition)?.threshold)
    }

    /// Error unless these thresholds were calibrated for the model with sha256 `model_sha256`.
    pub fn check_model(&self, model_sha256: &str) -> Result<(), ThresholdError> {
        if self.model_id != model_sha256 {
            return Err(ThresholdError::WrongModel {
                expected: model_sha256.to_string(),
                found: self.model_id.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> ThresholdConfig {
        let op = |condition, target_far, threshold| OperatingPoint {
            condition,
            target_far,
            threshold,
            measured_far: target_far / 2.0,
            measured_tar: 0.97,
            genuine_pairs: 3000,
            impostor_pairs: 300_000,
        };
        ThresholdConfig {
            model_id: "ab".repeat(32),
            metric: Metric::Cosine,
            selected_far: 1e-4,
            uss: Some(UssThreshold {
                threshold: 0.49,
                scale: 64.0,
            }),
            operating_points: vec![
                op(Condition::Unmasked, 1e-3, 0.30),
                op(Condition::Unmasked, 1e-4, 0.38),
                op(Condition::Masked, 1e-4, 0.33),
            ],
        }
    }

    #[test]
    fn toml_round_trip_and_selection() {
        let cfg = sample();
        let text = cfg.to_toml().unwrap();
        assert!(
            text.contains("[[operating_point]]"),
            "human-readable tables:\n{text}"
        );
        let back = ThresholdConfig::from_toml(&text, "t.toml").unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.threshold(Condition::Unmasked).unwrap(), 0.38);
        assert_eq!(back.threshold(Condition::Masked).unwrap(), 0.33);
    }

    #[test]
    fn masked_falls_back_to_unmasked() {
        let mut cfg = sample();
        cfg.operating_points
            .retain(|o| o.condition == Condition::Unmasked);
        cfg.validate().unwrap();
        assert_eq!(cfg.threshold(Condition::Masked).unwrap(), 0.38);
    }

    #[test]
    fn invalid_configs_are_rejected_with_a_reason() {
        let text = sample().to_toml().unwrap();
        let unknown = text.replace(
            "metric = \"cosine\"",
            "metric = \"cosine\"\nthreshhold = 0.3",
        );
        let e = ThresholdConfig::from_toml(&unknown, "edge.toml").unwrap_err();
        assert!(
            e.to_string().contains("edge.toml") && e.to_string().contains("threshhold"),
            "{e}"
        );

        let l2 = text.replace("metric = \"cosine\"", "metric = \"l2\"");
        assert!(matches!(
            ThresholdConfig::from_toml(&l2, "x"),
            Err(ThresholdError::Parse { .. })
        ));

        let mut c = sample();
        c.operating_points[1].threshold = 1.5;
        assert!(matches!(
            c.validate(),
            Err(ThresholdError::Range {
                index: 1,
                field: "threshold",
                ..
            })
        ));
        let mut c = sample();
        c.operating_points[2].condition = Condition::Unmasked;
        assert!(matches!(
            c.validate(),
            Err(ThresholdError::Duplicate {
                first: 1,
                second: 2,
                ..
            })
        ));
        let mut c = sample();
        c.selected_far = 1e-5;
        assert!(matches!(
            c.validate(),
            Err(ThresholdError::SelectedMissing { .. })
        ));
        let mut c = sample();
        c.model_id = "xyz".into();
        assert!(matches!(c.validate(), Err(ThresholdError::ModelId(_))));
        let mut c = sample();
        c.operating_points
            .retain(|o| o.condition == Condition::Masked);
        assert!(matches!(c.validate(), Err(ThresholdError::NoUnmasked)));
        let mut c = sample();
        c.operating_points[0].impostor_pairs = 0;
        assert!(c.validate().is_err());
        assert!(matches!(
            sample().check_model(&"cd".repeat(32)),
            Err(ThresholdError::WrongModel { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_valid_config_round_trips(
            t in -1.0f32..=1.0, far_exp in 1i32..7, tar in 0.0f64..=1.0, gen in 1u64..1_000_000, imp in 1u64..u32::MAX as u64
        ) {
            let far = 10f64.powi(-far_exp);
            let mut cfg = sample();
            cfg.selected_far = far;
            cfg.operating_points = vec![OperatingPoint {
                condition: Condition::Unmasked, target_far: far, threshold: t,
                measured_far: far, measured_tar: tar, genuine_pairs: gen, impostor_pairs: imp,
            }];
            let back = ThresholdConfig::from_toml(&cfg.to_toml().unwrap(), "p").unwrap();
            prop_assert_eq!(back, cfg);
        }
    }
}
