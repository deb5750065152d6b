//! The quality gate: faces too small, blurred, turned or uncertain are not enrolled or matched.
//!
//! A poor enrollment template lowers every later score of that person, and a poor probe is the
//! main source of false rejects; both are cheaper to refuse with a reason ("move closer", "hold
//! still") than to match. Measures come from the landmarks (size, roll, a yaw proxy), the
//! detector (score) and the aligned crop (variance of the Laplacian, a standard sharpness
//! measure: blur removes the high frequencies the Laplacian responds to).

use crate::config::QualityConfig;
use crate::detect::DetectedFace;
use image::RgbImage;
use serde::Serialize;
use std::fmt;

/// What was measured on one face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QualityMeasures {
    pub eye_distance_px: f32,
    pub sharpness: f32,
    pub roll_deg: f32,
    pub yaw_ratio: f32,
    pub detector_score: f32,
}

/// Why a face was refused, with the measured value and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    TooSmall { eye_distance_px: f32, min: f32 },
    Blurry { sharpness: f32, min: f32 },
    Tilted { roll_deg: f32, max: f32 },
    TurnedAway { yaw_ratio: f32, max: f32 },
    Uncertain { score: f32, min: f32 },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::TooSmall {
                eye_distance_px,
                min,
            } => {
                write!(f, "face too small (eyes {eye_distance_px:.0} px apart, need {min:.0}): move closer")
            }
            Rejection::Blurry { sharpness, min } => {
                write!(
                    f,
                    "image too blurred (sharpness {sharpness:.1}, need {min:.1}): hold still"
                )
            }
            Rejection::Tilted { roll_deg, max } => {
                write!(
                    f,
                    "head tilted {roll_deg:.0} degrees (at most {max:.0}): keep the head upright"
                )
            }
            Rejection::TurnedAway { yaw_ratio, max } => {
                write!(f, "face turned away (yaw ratio {yaw_ratio:.2}, at most {max:.2}): look at the camera")
            }
            Rejection::Uncertain { score, min } => {
                write!(
                    f,
                    "detector unsure this is a face (score {score:.2}, need {min:.2})"
                )
            }
        }
    }
}

/// The gate's decision on one face.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityVerdict {
    pub measures: QualityMeasures,
    /// Empty when the face passed.
    pub rejections: Vec<Rejection>,
    /// Summary in [0, 1] stored with enrollment templates (higher is better).
    pub score: f32,
}

impl QualityVerdict {
    pub fn passed(&self) -> bool {
        self.rejections.is_empty()
    }

    /// The reasons as one human sentence.
    pub fn reasons(&self) -> String {
        self.rejections
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Configured limits; stateless.
#[derive(Debug, Clone)]
pub struct QualityGate {
    cfg: QualityConfig,
}

impl QualityGate {
    pub fn new(cfg: &QualityConfig) -> Self {
        Self { cfg: cfg.clone() }
    }

    /// Measure `face` (landmarks in image pixels) and its aligned crop, and decide.
    pub fn assess(&self, face: &DetectedFace, aligned: &RgbImage) -> QualityVerdict {
        let m = measure(face, aligned);
        let c = &self.cfg;
        let mut rejections = Vec::new();
        if m.eye_distance_px < c.min_eye_distance_px {
            rejections.push(Rejection::TooSmall {
                eye_distance_px: m.eye_distance_px,
                min: c.min_eye_distance_px,
            });
        }
        if m.sharpness < c.min_sharpness {
            rejections.push(Rejection::Blurry {
                sharpness: m.sharpness,
                min: c.min_sharpness,
            });
        }
        if m.roll_deg.abs() > c.max_roll_deg {
            rejections.push(Rejection::Tilted {
                roll_deg: m.roll_deg,
                max: c.max_roll_deg,
            });
        }
        if m.yaw_ratio.abs() > c.max_yaw_ratio {
            rejections.push(Rejection::TurnedAway {
                yaw_ratio: m.yaw_ratio,
                max: c.max_yaw_ratio,
            });
        }
        if m.detector_score < c.min_detector_score {
            rejections.push(Rejection::Uncertain {
                score: m.detector_score,
                min: c.min_detector_score,
            });
        }
        let unit = |v: f32| {
            if v.is_finite() {
                v.clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let sharp = unit(m.sharpness / (2.0 * c.min_sharpness.max(1e-3)));
        let frontal = unit(1.0 - m.yaw_ratio.abs() / (2.0 * c.max_yaw_ratio.max(1e-3)));
        let score = unit(m.detector_score) * sharp * frontal;
        QualityVerdict {
            measures: m,
            rejections,
            score,
        }
    }
}

/// Landmark geometry and crop sharpness of one face.
pub fn measure(face: &DetectedFace, aligned: &RgbImage) -> QualityMeasures {
    let [le, re, nose, _, _] = face.landmarks;
    let (dx, dy) = (re[0] - le[0], re[1] - le[1]);
    let eye_distance_px = dx.hypot(dy);
    let roll_deg = dy.atan2(dx).to_degrees();
    // Nose offset from the eye midpoint, along the eye line, in eye distances.
    let mid = [(le[0] + re[0]) / 2.0, (le[1] + re[1]) / 2.0];
    let yaw_ratio = if eye_distance_px > 0.0 {
        ((nose[0] - mid[0]) * dx + (nose[1] - mid[1]) * dy) / (eye_distance_px * eye_distance_px)
    } else {
        f32::INFINITY
    };
    QualityMeasures {
        eye_distance_px,
        sharpness: laplacian_variance(aligned),
        roll_deg,
        yaw_ratio,
        detector_score: face.score,
    }
}

/// Variance of the 4-neighbour Laplacian of the grey image (interior pixels).
pub fn laplacian_variance(img: &RgbImage) -> f32 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let grey: Vec<f64> = img
        .pixels()
        .map(|p| 0.299 * p.0[0] as f64 + 0.587 * p.0[1] as f64 + 0.114 * p.0[2] as f64)
        .collect();
    let (mut sum, mut sum2, mut n) = (0.0, 0.0, 0.0);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let i = y * w + x;
            let l = grey[i - 1] + grey[i + 1] + grey[i - w] + grey[i + w] - 4.0 * grey[i];
            sum += l;
            sum2 += l * l;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sum2 / n - mean * mean).max(0.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::BBox;
    use image::{imageops, Rgb};
    use shared::ARCFACE_TEMPLATE_112;

    fn checkerboard() -> RgbImage {
        RgbImage::from_fn(112, 112, |x, y| {
            if (x / 4 + y / 4) % 2 == 0 {
                Rgb([230, 230, 230])
            } else {
                Rgb([20, 20, 20])
            }
        })
    }

    fn face_at(scale: f32, angle_deg: f32, score: f32) -> DetectedFace {
        let (s, c) = angle_deg.to_radians().sin_cos();
        let mut landmarks = ARCFACE_TEMPLATE_112;
        for p in landmarks.iter_mut() {
            let (x, y) = (p[0] * scale, p[1] * scale);
            *p = [c * x - s * y + 100.0, s * x + c * y + 100.0];
        }
        DetectedFace {
            bbox: BBox {
                x: 0.0,
                y: 0.0,
                w: 112.0 * scale,
                h: 112.0 * scale,
            },
            landmarks,
            score,
        }
    }

    #[test]
    fn blur_lowers_sharpness() {
        let sharp = checkerboard();
        let blurred = imageops::blur(&sharp, 3.0);
        let flat = RgbImage::from_pixel(112, 112, Rgb([128, 128, 128]));
        assert!(laplacian_variance(&sharp) > 10.0 * laplacian_variance(&blurred));
        assert_eq!(laplacian_variance(&flat), 0.0);
        assert_eq!(laplacian_variance(&RgbImage::new(2, 2)), 0.0);
    }

    #[test]
    fn geometry_of_a_frontal_and_a_rolled_face() {
        let m = measure(&face_at(2.0, 0.0, 0.9), &checkerboard());
        assert!((m.eye_distance_px - 2.0 * 35.24).abs() < 0.1, "{m:?}");
        assert!(m.roll_deg.abs() < 0.5 && m.yaw_ratio.abs() < 0.05, "{m:?}");
        let m = measure(&face_at(2.0, 40.0, 0.9), &checkerboard());
        assert!((m.roll_deg - 39.7).abs() < 0.5, "{m:?}");
        assert!(m.yaw_ratio.abs() < 0.05, "roll alone is not yaw: {m:?}");
    }

    #[test]
    fn each_limit_gives_its_reason() {
        let gate = QualityGate::new(&QualityConfig::default());
        let ok = gate.assess(&face_at(1.0, 0.0, 0.95), &checkerboard());
        assert!(ok.passed(), "{}", ok.reasons());
        assert!(ok.score > 0.5);

        let small = gate.assess(&face_at(0.3, 0.0, 0.95), &checkerboard());
        assert!(
            matches!(small.rejections[..], [Rejection::TooSmall { .. }]),
            "{:?}",
            small.rejections
        );
        assert!(small.reasons().contains("too small"));

        let blurred = gate.assess(
            &face_at(1.0, 0.0, 0.95),
            &RgbImage::from_pixel(112, 112, Rgb([9, 9, 9])),
        );
        assert!(matches!(blurred.rejections[..], [Rejection::Blurry { .. }]));

        let tilted = gate.assess(&face_at(1.0, 45.0, 0.95), &checkerboard());
        assert!(matches!(tilted.rejections[..], [Rejection::Tilted { .. }]));

        let mut turned = face_at(1.0, 0.0, 0.95);
        turned.landmarks[2][0] += 20.0;
        let v = gate.assess(&turned, &checkerboard());
        assert!(
            matches!(v.rejections[..], [Rejection::TurnedAway { .. }]),
            "{:?}",
            v.rejections
        );

        let unsure = gate.assess(&face_at(1.0, 0.0, 0.5), &checkerboard());
        assert!(matches!(
            unsure.rejections[..],
            [Rejection::Uncertain { .. }]
        ));
        assert!(unsure.score < ok.score);
    }
}
