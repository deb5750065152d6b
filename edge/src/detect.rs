//! Face detection with the YuNet family (OpenCV zoo, 2023mar): letterbox, run, decode, NMS.
//! ([`Detector`] also stands in for input that needs no detection: see [`crate::crop`].)
//!
//! The contract (`../shared/models/README.md`): input `input` [1,3,S,S] BGR 0..255; for strides
//! 8/16/32, outputs `cls_s`, `obj_s` [1,N,1], `bbox_s` [1,N,4], `kps_s` [1,N,10] over an
//! (S/s)x(S/s) grid. The graph reshapes with -1, so any S that is a multiple of 32 works: small
//! S is fast, large S finds small faces.
//!
//! Landmarks: YuNet lists right eye, left eye, nose, right mouth corner, left mouth corner, where
//! "right" is the subject's right, which is the image-left side. That is exactly the order of
//! [`shared::ARCFACE_TEMPLATE_112`] (image-left eye first, image-left mouth corner fourth), so no
//! reordering is needed; the real-photo tests check the image-left/right order on frontal faces.

use crate::config::{DetectorConfig, DetectorKind};
use crate::crop::{AlignedCrops, CropSizeError};
use crate::model::{load_plan, read_model, run_plan, ModelError, Plan};
use image::{imageops, RgbImage};
use serde::Serialize;
use shared::{Landmarks5, PreprocessSpec};

/// Feature-map strides of YuNet's three heads.
const STRIDES: [usize; 3] = [8, 16, 32];
const OUTPUT_NAMES: [&str; 12] = [
    "cls_8", "cls_16", "cls_32", "obj_8", "obj_16", "obj_32", "bbox_8", "bbox_16", "bbox_32",
    "kps_8", "kps_16", "kps_32",
];

/// An axis-aligned box in image pixels (top-left corner and size).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl BBox {
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    /// Intersection over union; 0 for empty boxes.
    pub fn iou(&self, other: &BBox) -> f32 {
        let ix = (self.x + self.w).min(other.x + other.w) - self.x.max(other.x);
        let iy = (self.y + self.h).min(other.y + other.h) - self.y.max(other.y);
        let inter = ix.max(0.0) * iy.max(0.0);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

/// One detected face: box, five landmarks in template order, detector confidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectedFace {
    pub bbox: BBox,
    pub landmarks: Landmarks5,
    pub score: f32,
}

impl DetectedFace {
    fn scaled(&self, k: f32) -> Self {
        let mut landmarks = self.landmarks;
        for p in landmarks.iter_mut() {
            p[0] *= k;
            p[1] *= k;
        }
        let b = self.bbox;
        Self {
            bbox: BBox {
                x: b.x * k,
                y: b.y * k,
                w: b.w * k,
                h: b.h * k,
            },
            landmarks,
            score: self.score,
        }
    }
}

/// Why faces could not be found in an image.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    CropSize(#[from] CropSizeError),
}

/// Finds the faces of an image: a YuNet network, or (`[detector] aligned = true`) the identity
/// "detector" for images that are already one aligned face crop each.
pub struct Detector {
    finder: Finder,
}

enum Finder {
    Yunet(Yunet),
    Aligned(AlignedCrops),
}

/// A loaded YuNet plan and its decoding settings.
struct Yunet {
    plan: Plan,
    size: usize,
    score_threshold: f32,
    nms_iou: f32,
    max_faces: usize,
}

impl Detector {
    /// Load and optimise a YuNet detector for its configured input size.
    pub fn load(cfg: &DetectorConfig) -> Result<Self, ModelError> {
        let bytes = read_model("detector", &cfg.path)?;
        let size = cfg.input_size as usize;
        let plan = load_plan(
            "detector",
            &cfg.path,
            &bytes,
            "input",
            &[1, 3, size, size],
            &OUTPUT_NAMES,
        )?;
        Ok(Self {
            finder: Finder::Yunet(Yunet {
                plan,
                size,
                score_threshold: cfg.score_threshold,
                nms_iou: cfg.nms_iou,
                max_faces: cfg.max_faces,
            }),
        })
    }

    /// The detector `[detector]` asks for; aligned crops are sized and landmarked by `spec`,
    /// the recogniser's preprocessing.
    pub fn from_kind(kind: &DetectorKind, spec: &PreprocessSpec) -> Result<Self, ModelError> {
        match kind {
            DetectorKind::Yunet(cfg) => Self::load(cfg),
            DetectorKind::AlignedCrops => Ok(Self::aligned(AlignedCrops::new(spec))),
        }
    }

    /// Every image is one aligned face crop.
    pub fn aligned(crops: AlignedCrops) -> Self {
        Self {
            finder: Finder::Aligned(crops),
        }
    }

    /// YuNet's network input side in pixels (None for aligned crops).
    pub fn input_size(&self) -> Option<u32> {
        match &self.finder {
            Finder::Yunet(y) => Some(y.size as u32),
            Finder::Aligned(_) => None,
        }
    }

    /// For logs and the bench table: "YuNet input 320", "aligned crops 112x112".
    pub fn describe(&self) -> String {
        match &self.finder {
            Finder::Yunet(y) => format!("YuNet input {}", y.size),
            Finder::Aligned(a) => format!("aligned crops {}x{}", a.width(), a.height()),
        }
    }

    /// Faces in `image`, largest first, in image coordinates.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<DetectedFace>, DetectError> {
        match &self.finder {
            Finder::Yunet(y) => Ok(y.detect(image)?),
            Finder::Aligned(a) => Ok(vec![a.face(image)?]),
        }
    }
}

impl Yunet {
    fn detect(&self, image: &RgbImage) -> Result<Vec<DetectedFace>, ModelError> {
        if image.width() == 0 || image.height() == 0 {
            return Ok(Vec::new());
        }
        let (input, scale) = letterbox_bgr(image, self.size);
        let outputs = run_plan(
            "detector",
            &self.plan,
            &[1, 3, self.size, self.size],
            &input,
        )?;
        let faces = decode(&outputs, self.size, self.score_threshold)?;
        let mut faces = nms(faces, self.nms_iou);
        faces.sort_by(|a, b| b.bbox.area().total_cmp(&a.bbox.area()));
        faces.truncate(self.max_faces);
        Ok(faces.iter().map(|f| f.scaled(1.0 / scale)).collect())
    }
}

/// Resize `image` to fit an `size`x`size` square (aspect kept, top-left, black padding) and lay
/// it out as NCHW BGR 0..255. Returns the values and the scale applied (network / image).
pub fn letterbox_bgr(image: &RgbImage, size: usize) -> (Vec<f32>, f32) {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let scale = (size as f32 / w).min(size as f32 / h);
    let nw = ((w * scale).round() as u32).clamp(1, size as u32);
    let nh = ((h * scale).round() as u32).clamp(1, size as u32);
    let resized = if nw == image.width() && nh == image.height() {
        image.clone()
    } else {
        imageops::resize(image, nw, nh, imageops::FilterType::Triangle)
    };
    let plane = size * size;
    let mut out = vec![0f32; 3 * plane];
    for (x, y, px) in resized.enumerate_pixels() {
        let i = y as usize * size + x as usize;
        out[i] = px.0[2] as f32;
        out[plane + i] = px.0[1] as f32;
        out[2 * plane + i] = px.0[0] as f32;
    }
    (out, scale)
}

/// Decode the twelve YuNet outputs (in [`OUTPUT_NAMES`] order) for input side `size`.
pub fn decode(
    outputs: &[Vec<f32>],
    size: usize,
    score_threshold: f32,
) -> Result<Vec<DetectedFace>, ModelError> {
    if outputs.len() != 12 {
        return Err(ModelError::Run {
            what: "detector",
            message: format!("expected 12 outputs, got {}", outputs.len()),
        });
    }
    let mut faces = Vec::new();
    for (head, stride) in STRIDES.iter().enumerate() {
        let cols = size / stride;
        let n = cols * cols;
        let (cls, obj, bbox, kps) = (
            &outputs[head],
            &outputs[3 + head],
            &outputs[6 + head],
            &outputs[9 + head],
        );
        for (name, v, per) in [
            ("cls", cls, 1),
            ("obj", obj, 1),
            ("bbox", bbox, 4),
            ("kps", kps, 10),
        ] {
            if v.len() != n * per {
                return Err(ModelError::OutputSize {
                    what: "detector",
                    name: format!("{name}_{stride}"),
                    got: v.len(),
                    expected: n * per,
                });
            }
        }
        let s = *stride as f32;
        for i in 0..n {
            let score = (cls[i].clamp(0.0, 1.0) * obj[i].clamp(0.0, 1.0)).sqrt();
            if score < score_threshold || !score.is_finite() {
                continue;
            }
            let (r, c) = ((i / cols) as f32, (i % cols) as f32);
            let b = &bbox[4 * i..4 * i + 4];
            let (cx, cy) = ((c + b[0]) * s, (r + b[1]) * s);
            let (w, h) = (b[2].exp() * s, b[3].exp() * s);
            let k = &kps[10 * i..10 * i + 10];
            let mut landmarks = [[0f32; 2]; 5];
            for (n, p) in landmarks.iter_mut().enumerate() {
                *p = [(k[2 * n] + c) * s, (k[2 * n + 1] + r) * s];
            }
            if !(w.is_finite() && h.is_finite())
                || landmarks.iter().flatten().any(|v| !v.is_finite())
            {
                continue;
            }
            faces.push(DetectedFace {
                bbox: BBox {
                    x: cx - w / 2.0,
                    y: cy - h / 2.0,
                    w,
                    h,
                },
                landmarks,
                score,
            });
        }
    }
    Ok(faces)
}

/// Greedy non-maximum suppression: keep the best-scoring box, drop those overlapping it by
/// more than `iou`, repeat.
pub fn nms(mut faces: Vec<DetectedFace>, iou: f32) -> Vec<DetectedFace> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<DetectedFace> = Vec::new();
    for f in faces {
        if kept.iter().all(|k| k.bbox.iou(&f.bbox) <= iou) {
            kept.push(f);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, y: f32, w: f32, score: f32) -> DetectedFace {
        DetectedFace {
            bbox: BBox { x, y, w, h: w },
            landmarks: [[0.0; 2]; 5],
            score,
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = BBox {
            x: 0.0,
            y: 0.0,
            w: 10.0,
            h: 10.0,
        };
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(
            a.iou(&BBox {
                x: 5.0,
                y: 0.0,
                w: 10.0,
                h: 10.0
            }),
            50.0 / 150.0
        );
        assert_eq!(
            a.iou(&BBox {
                x: 20.0,
                y: 0.0,
                w: 10.0,
                h: 10.0
            }),
            0.0
        );
        assert_eq!(
            a.iou(&BBox {
                x: 0.0,
                y: 0.0,
                w: 0.0,
                h: 0.0
            }),
            0.0
        );
    }

    #[test]
    fn nms_keeps_the_best_of_each_cluster() {
        let kept = nms(
            vec![
                face(0.0, 0.0, 10.0, 0.7),
                face(1.0, 0.0, 10.0, 0.9),
                face(50.0, 50.0, 10.0, 0.8),
            ],
            0.3,
        );
        let scores: Vec<f32> = kept.iter().map(|f| f.score).collect();
        assert_eq!(scores, vec![0.9, 0.8]);
        // Overlap below the IoU limit survives: 2 px shift of a 10 px box is IoU 0.67, 8 px is 0.11.
        assert_eq!(
            nms(
                vec![face(0.0, 0.0, 10.0, 0.9), face(8.0, 0.0, 10.0, 0.8)],
                0.3
            )
            .len(),
            2
        );
    }

    /// Twelve outputs for input side 64 with one confident cell in the stride-16 head.
    fn synthetic_outputs() -> Vec<Vec<f32>> {
        let size = 64;
        let mut out = Vec::new();
        for per in [1, 1, 4, 10] {
            for s in STRIDES {
                let n = (size / s) * (size / s);
                out.push(vec![0.0; n * per]);
            }
        }
        // stride 16: 4x4 grid; cell row 2, col 1 -> index 9.
        let i = 9;
        out[1][i] = 0.81; // cls_16
        out[4][i] = 1.0; // obj_16
        out[7][4 * i..4 * i + 4].copy_from_slice(&[0.5, 0.25, 0.0, (2.0f32).ln()]);
        let kps: Vec<f32> = (0..10).map(|k| k as f32 * 0.1).collect();
        out[10][10 * i..10 * i + 10].copy_from_slice(&kps);
        out
    }

    #[test]
    fn decode_follows_the_contract() {
        let faces = decode(&synthetic_outputs(), 64, 0.5).unwrap();
        assert_eq!(faces.len(), 1);
        let f = &faces[0];
        assert!((f.score - 0.9).abs() < 1e-6, "sqrt(0.81 * 1)");
        // centre ((1 + 0.5) * 16, (2 + 0.25) * 16) = (24, 36); size (16, 32).
        assert_eq!(
            f.bbox,
            BBox {
                x: 16.0,
                y: 20.0,
                w: 16.0,
                h: 32.0
            }
        );
        // landmark 0 = ((0.0 + 1) * 16, (0.1 + 2) * 16); landmark 4 = ((0.8 + 1) * 16, (0.9 + 2) * 16).
        assert!((f.landmarks[0][0] - 16.0).abs() < 1e-5 && (f.landmarks[0][1] - 33.6).abs() < 1e-4);
        assert!((f.landmarks[4][0] - 28.8).abs() < 1e-4 && (f.landmarks[4][1] - 46.4).abs() < 1e-4);
        assert!(decode(&synthetic_outputs(), 64, 0.95).unwrap().is_empty());
    }

    #[test]
    fn decode_refuses_wrong_shapes() {
        let mut out = synthetic_outputs();
        out[7].pop();
        let e = decode(&out, 64, 0.5).unwrap_err().to_string();
        assert!(e.contains("bbox_16"), "{e}");
        assert!(decode(&out[..11], 64, 0.5).is_err());
    }

    #[test]
    fn letterbox_keeps_aspect_and_swaps_to_bgr() {
        let img = RgbImage::from_pixel(200, 100, image::Rgb([10, 20, 30]));
        let (v, scale) = letterbox_bgr(&img, 64);
        assert_eq!(scale, 0.32);
        let plane = 64 * 64;
        assert_eq!((v[0], v[plane], v[2 * plane]), (30.0, 20.0, 10.0));
        // Rows below 32 are padding.
        assert_eq!(v[40 * 64 + 5], 0.0);
        assert_eq!(v[31 * 64 + 63], 30.0);
    }
}
