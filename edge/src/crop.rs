//! Pre-aligned face crops: input that needs no detector (`[detector] aligned = true`).
//!
//! Face databases and some capture cameras hand out crops already aligned to the ArcFace
//! template. Running YuNet on them would fail (the face fills the picture) and realigning would
//! only lose detail, so each image is taken as one face whose landmarks ARE the template: the
//! alignment warp is then the identity, the detector score is 1.0, and the quality gate still
//! measures sharpness (the eye distance is the template's). An image of another size is accepted
//! when it has the crop's aspect ratio (the template is scaled to it and the warp resizes);
//! anything else is refused with both sizes named, since guessing a crop would embed the wrong
//! pixels.

use crate::detect::{BBox, DetectedFace};
use image::RgbImage;
use shared::{Landmarks5, PreprocessSpec};

/// An image that cannot be an aligned crop for this recogniser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image is {got_width}x{got_height}, but [detector] aligned = true takes crops aligned to the recogniser's {width}x{height} template (or a scaled copy with that aspect ratio)")]
pub struct CropSizeError {
    pub got_width: u32,
    pub got_height: u32,
    pub width: u32,
    pub height: u32,
}

/// The recogniser's crop size and template: what an aligned input image must match.
#[derive(Debug, Clone)]
pub struct AlignedCrops {
    width: u32,
    height: u32,
    template: Landmarks5,
}

impl AlignedCrops {
    /// Crops for the recogniser whose preprocessing is `spec`.
    pub fn new(spec: &PreprocessSpec) -> Self {
        Self {
            width: spec.width,
            height: spec.height,
            template: spec.template,
        }
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The one face of `image`: the whole picture, landmarks on the (scaled) template.
    pub fn face(&self, image: &RgbImage) -> Result<DetectedFace, CropSizeError> {
        let (w, h) = image.dimensions();
        let same_aspect =
            u64::from(w) * u64::from(self.height) == u64::from(h) * u64::from(self.width);
        if w == 0 || h == 0 || !same_aspect {
            return Err(CropSizeError {
                got_width: w,
                got_height: h,
                width: self.width,
                height: self.height,
            });
        }
        let k = w as f32 / self.width as f32;
        Ok(DetectedFace {
            bbox: BBox {
                x: 0.0,
                y: 0.0,
                w: w as f32,
                h: h as f32,
            },
            landmarks: self.template.map(|p| [p[0] * k, p[1] * k]),
            score: 1.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::ARCFACE_TEMPLATE_112;

    #[test]
    fn a_crop_of_the_input_size_is_one_face_on_the_template() {
        let crops = AlignedCrops::new(&PreprocessSpec::arcface_112());
        let face = crops.face(&RgbImage::new(112, 112)).unwrap();
        assert_eq!(face.landmarks, ARCFACE_TEMPLATE_112);
        assert_eq!(face.score, 1.0);
        assert_eq!((face.bbox.w, face.bbox.h), (112.0, 112.0));
    }

    #[test]
    fn a_scaled_crop_scales_the_template_and_aligns_back() {
        let spec = PreprocessSpec::arcface_112();
        let crops = AlignedCrops::new(&spec);
        // A 224x224 crop: a bright square around the left eye must land on the 112 template.
        let mut big = RgbImage::new(224, 224);
        let [lx, ly] = ARCFACE_TEMPLATE_112[0].map(|v| v * 2.0);
        for y in (ly as u32 - 4)..(ly as u32 + 4) {
            for x in (lx as u32 - 4)..(lx as u32 + 4) {
                big.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        let face = crops.face(&big).unwrap();
        assert!((face.landmarks[1][0] - 2.0 * ARCFACE_TEMPLATE_112[1][0]).abs() < 1e-4);
        let aligned = spec.align(&big, &face.landmarks).unwrap();
        assert_eq!(aligned.dimensions(), (112, 112));
        let [ex, ey] = ARCFACE_TEMPLATE_112[0];
        assert!(aligned.get_pixel(ex as u32, ey as u32).0[0] > 200);
        assert_eq!(aligned.get_pixel(100, 10).0, [0, 0, 0]);
    }

    #[test]
    fn another_shape_is_refused_with_both_sizes() {
        let crops = AlignedCrops::new(&PreprocessSpec::arcface_112());
        let err = crops.face(&RgbImage::new(640, 480)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("640x480") && msg.contains("112x112"), "{msg}");
        assert!(crops.face(&RgbImage::new(0, 0)).is_err());
    }
}
