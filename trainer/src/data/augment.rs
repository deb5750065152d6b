//! Training augmentations: horizontal flip, and optionally AdaFace-style crop, low resolution,
//! blur and photometric jitter.
//!
//! Randomness is drawn once into an [`AugmentPlan`], which is then applied without any
//! randomness. The loader applies one plan to both views of a sample (the student's masked
//! image and the teacher's unmasked one), so they differ only by the mask (METHODS §5).
//! Flip is carried as a flag and applied by `shared::PreprocessSpec::input_from_aligned`, the
//! one preprocessing function.

use image::imageops::{self, FilterType};
use image::RgbImage;
use rand::Rng;

/// Which augmentations are on and how strong. The default is flip only: the MaskInv recipe,
/// under which a teacher's embedding depends only on (image, flip) and can be cached.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AugmentConfig {
    /// Mirror with probability 1/2.
    pub flip: bool,
    /// Keep only a random rectangle (area fraction in [crop_min_area, 1], aspect 3/4..4/3) and
    /// black out the rest, as AdaFace's crop augmentation does.
    pub crop_prob: f32,
    pub crop_min_area: f32,
    /// Downscale by a factor in [low_res_min_scale, 1] and back up.
    pub low_res_prob: f32,
    pub low_res_min_scale: f32,
    /// Gaussian blur with sigma in [0.5, blur_max_sigma].
    pub blur_prob: f32,
    pub blur_max_sigma: f32,
    /// Brightness, contrast and saturation factors in [1 - s, 1 + s].
    pub jitter_prob: f32,
    pub jitter_strength: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            flip: true,
            crop_prob: 0.0,
            crop_min_area: 0.2,
            low_res_prob: 0.0,
            low_res_min_scale: 0.2,
            blur_prob: 0.0,
            blur_max_sigma: 1.5,
            jitter_prob: 0.0,
            jitter_strength: 0.5,
        }
    }
}

impl AugmentConfig {
    /// AdaFace's settings (crop, low-res and photometric each with probability 0.2).
    pub fn adaface() -> Self {
        Self {
            crop_prob: 0.2,
            low_res_prob: 0.2,
            jitter_prob: 0.2,
            ..Self::default()
        }
    }

    /// Draw the random choices for one sample.
    pub fn draw(&self, rng: &mut impl Rng, size: u32) -> AugmentPlan {
        let flip = self.flip && rng.gen_bool(0.5);
        let hit = |rng: &mut dyn rand::RngCore, p: f32| p > 0.0 && rng.gen::<f32>() < p;
        let crop = hit(rng, self.crop_prob).then(|| {
            let s = size as f32;
            let area = rng.gen_range(self.crop_min_area.clamp(0.01, 1.0)..=1.0) * s * s;
            let ratio = rng.gen_range((0.75f32).ln()..=(4.0f32 / 3.0).ln()).exp();
            let w = ((area * ratio).sqrt().round() as u32).clamp(1, size);
            let h = ((area / ratio).sqrt().round() as u32).clamp(1, size);
            [
                rng.gen_range(0..=size - w),
                rng.gen_range(0..=size - h),
                w,
                h,
            ]
        });
        let low_res = hit(rng, self.low_res_prob)
            .then(|| rng.gen_range(self.low_res_min_scale.clamp(0.05, 1.0)..=1.0));
        let blur =
            hit(rng, self.blur_prob).then(|| rng.gen_range(0.5..=self.blur_max_sigma.max(0.5)));
        let jitter = hit(rng, self.jitter_prob).then(|| {
            let s = self.jitter_strength.clamp(0.0, 1.0);
            [0; 3].map(|_: u8| rng.gen_range(1.0 - s..=1.0 + s))
        });
        AugmentPlan {
            flip,
            crop,
            low_res,
            blur,
            jitter,
        }
    }
}

/// The concrete augmentation of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AugmentPlan {
    pub flip: bool,
    /// x, y, width, height of the kept rectangle.
    pub crop: Option<[u32; 4]>,
    pub low_res: Option<f32>,
    pub blur: Option<f32>,
    /// brightness, contrast, saturation factors.
    pub jitter: Option<[f32; 3]>,
}

impl AugmentPlan {
    /// True when only the flag `flip` may differ from the identity.
    pub fn is_flip_only(&self) -> bool {
        self.crop.is_none()
            && self.low_res.is_none()
            && self.blur.is_none()
            && self.jitter.is_none()
    }

    /// Apply everything but the flip (see the module doc) in place.
    pub fn apply(&self, img: &mut RgbImage) {
        let (w, h) = img.dimensions();
        if let Some([x0, y0, cw, ch]) = self.crop {
            for (x, y, px) in img.enumerate_pixels_mut() {
                if x < x0 || y < y0 || x >= x0 + cw || y >= y0 + ch {
                    px.0 = [0, 0, 0];
                }
            }
        }
        if let Some(scale) = self.low_res {
            let (sw, sh) = (
                ((w as f32 * scale).round() as u32).max(2),
                ((h as f32 * scale).round() as u32).max(2),
            );
            let small = imageops::resize(img, sw, sh, FilterType::Triangle);
            *img = imageops::resize(&small, w, h, FilterType::Triangle);
        }
        if let Some(sigma) = self.blur {
            *img = imageops::blur(img, sigma);
        }
        if let Some([b, c, s]) = self.jitter {
            let n = (w * h) as f32;
            let mean_grey = img.pixels().map(|p| grey(p.0)).sum::<f32>() / n.max(1.0);
            for px in img.pixels_mut() {
                let mut v = px.0.map(|c| c as f32 * b);
                let g = grey([v[0], v[1], v[2]].map(|x| x.clamp(0.0, 255.0) as u8));
                for ch in &mut v {
                    *ch = g + (*ch - g) * s;
                    *ch = mean_grey * b + (*ch - mean_grey * b) * c;
                }
                px.0 = v.map(|x| x.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
}

fn grey(p: [u8; 3]) -> f32 {
    0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn face() -> RgbImage {
        RgbImage::from_fn(112, 112, |x, y| {
            image::Rgb([
                (x * 2) as u8,
                (y * 2) as u8,
                (((x / 2 + y / 2) % 2) * 200) as u8,
            ])
        })
    }

    #[test]
    fn default_is_flip_only_and_flips_half_the_time() {
        let cfg = AugmentConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let plans: Vec<AugmentPlan> = (0..400).map(|_| cfg.draw(&mut rng, 112)).collect();
        assert!(plans.iter().all(AugmentPlan::is_flip_only));
        let flips = plans.iter().filter(|p| p.flip).count();
        assert!((150..250).contains(&flips), "{flips} flips of 400");
        let mut img = face();
        plans[0].apply(&mut img);
        assert_eq!(
            img,
            face(),
            "flip-only plans leave pixels to the preprocessing step"
        );
    }

    #[test]
    fn crop_blacks_out_outside_the_rectangle() {
        let plan = AugmentPlan {
            crop: Some([10, 20, 30, 40]),
            ..Default::default()
        };
        let mut img = face();
        plan.apply(&mut img);
        assert_eq!(img.get_pixel(5, 25).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(15, 70).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(15, 25), face().get_pixel(15, 25));
    }

    #[test]
    fn low_res_blur_and_jitter_change_the_image_but_keep_its_size() {
        for plan in [
            AugmentPlan {
                low_res: Some(0.25),
                ..Default::default()
            },
            AugmentPlan {
                blur: Some(1.5),
                ..Default::default()
            },
            AugmentPlan {
                jitter: Some([1.3, 0.7, 0.5]),
                ..Default::default()
            },
        ] {
            let mut img = face();
            plan.apply(&mut img);
            assert_eq!(img.dimensions(), (112, 112));
            let diff: u64 = img
                .as_raw()
                .iter()
                .zip(face().as_raw())
                .map(|(a, b)| a.abs_diff(*b) as u64)
                .sum();
            assert!(diff > 10_000, "{plan:?} changed too little: {diff}");
        }
        let cfg = AugmentConfig::adaface();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let n = (0..1000)
            .filter(|_| cfg.draw(&mut rng, 112).crop.is_some())
            .count();
        assert!(
            (140..260).contains(&n),
            "crop drawn {n} times of 1000 at p=0.2"
        );
    }
}
