//! The input contract of a recogniser and the one function that produces its input.
//!
//! Trainer and edge both call [`PreprocessSpec::input_from_landmarks`] (or
//! [`PreprocessSpec::input_from_aligned`] for already-aligned crops), so a model never sees
//! pixels prepared differently from training. The spec travels inside every bundle.

use crate::align::{estimate_similarity, warp_bilinear, AlignError};
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// ArcFace 112x112 alignment template (x, y), image-left first: left eye, right eye, nose,
/// left mouth corner, right mouth corner. (The old 112x96 template is these with x - 8.)
pub const ARCFACE_TEMPLATE_112: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// Five facial landmarks in image pixels, in template order (image-left eye first).
pub type Landmarks5 = [[f32; 2]; 5];

/// Channel order the network expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorOrder {
    Rgb,
    Bgr,
}

/// Tensor layout of the network input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// How a face becomes a network input: alignment template, size, colour order, layout and
/// per-channel normalisation `value = (pixel - mean) / std` on 0..255 pixel values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSpec {
    pub width: u32,
    pub height: u32,
    pub color: ColorOrder,
    pub layout: Layout,
    /// Per channel, in the order of `color`.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Landmark template in output pixels, image-left first.
    pub template: Landmarks5,
}

/// A spec that cannot describe a valid input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("input size {0}x{1} is out of range (8..=1024)")]
    Size(u32, u32),
    #[error("std must be finite and non-zero, got {0:?}")]
    Std([f32; 3]),
    #[error("mean must be finite, got {0:?}")]
    Mean([f32; 3]),
    #[error("template points must be finite and inside the {0}x{1} crop")]
    Template(u32, u32),
}

/// Why a face could not be turned into an input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PreprocessError {
    #[error("alignment failed: {0}")]
    Align(#[from] AlignError),
    #[error("aligned crop is {got_w}x{got_h}, the model expects {want_w}x{want_h}")]
    CropSize {
        got_w: u32,
        got_h: u32,
        want_w: u32,
        want_h: u32,
    },
}

impl PreprocessSpec {
    /// maskgate's own models (and insightface's): RGB, (pixel/255 - 0.5)/0.5, NCHW, 112x112.
    pub fn arcface_112() -> Self {
        Self {
            width: 112,
            height: 112,
            color: ColorOrder::Rgb,
            layout: Layout::Nchw,
            mean: [127.5; 3],
            std: [127.5; 3],
            template: ARCFACE_TEMPLATE_112,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if !(8..=1024).contains(&self.width) || !(8..=1024).contains(&self.height) {
            return Err(SpecError::Size(self.width, self.height));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err(SpecError::Std(self.std));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(SpecError::Mean(self.mean));
        }
        let inside = |p: &[f32; 2]| {
            p[0].is_finite()
                && p[1].is_finite()
                && p[0] >= 0.0
                && p[1] >= 0.0
                && p[0] < self.width as f32
                && p[1] < self.height as f32
        };
        if !self.template.iter().all(inside) {
            return Err(SpecError::Template(self.width, self.height));
        }
        Ok(())
    }

    /// Number of f32 values in one input (3 * width * height).
    pub fn input_len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }

    /// Align `image` by its five landmarks to the template and return the crop.
    pub fn align(
        &self,
        image: &RgbImage,
        landmarks: &Landmarks5,
    ) -> Result<RgbImage, PreprocessError> {
        let to_template = estimate_similarity(landmarks, &self.template)?;
        Ok(warp_bilinear(
            image,
            &to_template.inverse(),
            self.width,
            self.height,
        ))
    }

    /// Image + landmarks -> normalised network input for one face (see [`Self::input_from_aligned`]).
    pub fn input_from_landmarks(
        &self,
        image: &RgbImage,
        landmarks: &Landmarks5,
    ) -> Result<Vec<f32>, PreprocessError> {
        let crop = self.align(image, landmarks)?;
        self.input_from_aligned(&crop, false)
    }

    /// An aligned RGB crop -> normalised values in this spec's layout and colour order;
    /// `flip` mirrors horizontally (test-time fusion embeds both).
    pub fn input_from_aligned(
        &self,
        crop: &RgbImage,
        flip: bool,
    ) -> Result<Vec<f32>, PreprocessError> {
        if crop.width() != self.width || crop.height() != self.height {
            return Err(PreprocessError::CropSize {
                got_w: crop.width(),
                got_h: crop.height(),
                want_w: self.width,
                want_h: self.height,
            });
        }
        let (w, h) = (self.width as usize, self.height as usize);
        let order: [usize; 3] = match self.color {
            ColorOrder::Rgb => [0, 1, 2],
            ColorOrder::Bgr => [2, 1, 0],
        };
        let mut out = vec![0f32; 3 * w * h];
        for (x, y, px) in crop.enumerate_pixels() {
            let sx = if flip { w - 1 - x as usize } else { x as usize };
            let y = y as usize;
            for (c, &channel) in order.iter().enumerate() {
                let v = (px.0[channel] as f32 - self.mean[c]) / self.std[c];
                let idx = match self.layout {
                    Layout::Nchw => c * w * h + y * w + sx,
                    Layout::Nhwc => (y * w + sx) * 3 + c,
                };
                out[idx] = v;
            }
        }
        Ok(out)
    }
}

impl Default for PreprocessSpec {
    fn default() -> Self {
        Self::arcface_112()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn arcface_values_and_layouts() {
        let spec = PreprocessSpec::arcface_112();
        spec.validate().unwrap();
        let mut crop = RgbImage::new(112, 112);
        crop.put_pixel(0, 0, Rgb([255, 0, 127]));
        crop.put_pixel(111, 0, Rgb([0, 255, 0]));
        let v = spec.input_from_aligned(&crop, false).unwrap();
        let plane = 112 * 112;
        assert_eq!(v.len(), 3 * plane);
        assert_eq!(
            (v[0], v[plane], v[2 * plane]),
            (1.0, -1.0, (127.0 - 127.5) / 127.5)
        );
        let flipped = spec.input_from_aligned(&crop, true).unwrap();
        assert_eq!(flipped[111], 1.0, "flip moves pixel (0,0) to (111,0)");
        assert_eq!(flipped[plane], 1.0, "and pixel (111,0) to (0,0)");

        let bgr = PreprocessSpec {
            color: ColorOrder::Bgr,
            layout: Layout::Nhwc,
            mean: [0.0; 3],
            std: [1.0; 3],
            ..spec
        };
        let v = bgr.input_from_aligned(&crop, false).unwrap();
        assert_eq!(&v[..3], &[127.0, 0.0, 255.0]);
    }

    #[test]
    fn aligning_template_landmarks_is_identity() {
        let spec = PreprocessSpec::arcface_112();
        let img = RgbImage::from_fn(112, 112, |x, y| Rgb([x as u8, y as u8, 9]));
        let crop = spec.align(&img, &ARCFACE_TEMPLATE_112).unwrap();
        assert_eq!(crop.get_pixel(50, 60).0, [50, 60, 9]);
    }

    #[test]
    fn bad_specs_and_crops_are_rejected() {
        let mut s = PreprocessSpec::arcface_112();
        s.std[1] = 0.0;
        assert!(matches!(s.validate(), Err(SpecError::Std(_))));
        let s = PreprocessSpec {
            width: 4,
            ..PreprocessSpec::arcface_112()
        };
        assert!(matches!(s.validate(), Err(SpecError::Size(4, 112))));
        let err = PreprocessSpec::arcface_112()
            .input_from_aligned(&RgbImage::new(100, 112), false)
            .unwrap_err();
        assert!(matches!(err, PreprocessError::CropSize { got_w: 100, .. }));
    }
}
