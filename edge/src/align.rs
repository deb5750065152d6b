//! Alignment, deliberately thin: the similarity fit and warp live in `shared`, the one
//! implementation the trainer also uses, so a crop here is the crop the model was trained on.

use image::RgbImage;
use shared::preprocess::PreprocessError;
use shared::{Landmarks5, PreprocessSpec};

/// Warp the face with `landmarks` (image pixels, template order) onto `spec`'s template.
pub fn aligned_crop(
    spec: &PreprocessSpec,
    image: &RgbImage,
    landmarks: &Landmarks5,
) -> Result<RgbImage, PreprocessError> {
    spec.align(image, landmarks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use shared::ARCFACE_TEMPLATE_112;

    #[test]
    fn a_scaled_and_shifted_face_lands_on_the_template() {
        // Paint a marker at each template point scaled x2 and shifted by (30, 40) in a big image;
        // after alignment each marker must sit on its template point.
        let mut img = RgbImage::new(400, 400);
        let lm: Landmarks5 = ARCFACE_TEMPLATE_112.map(|p| [p[0] * 2.0 + 30.0, p[1] * 2.0 + 40.0]);
        for p in lm {
            for dy in -2i32..=2 {
                for dx in -2i32..=2 {
                    img.put_pixel(
                        (p[0] as i32 + dx) as u32,
                        (p[1] as i32 + dy) as u32,
                        Rgb([255, 255, 255]),
                    );
                }
            }
        }
        let crop = aligned_crop(&PreprocessSpec::arcface_112(), &img, &lm).unwrap();
        assert_eq!(crop.dimensions(), (112, 112));
        for p in ARCFACE_TEMPLATE_112 {
            assert!(
                crop.get_pixel(p[0].round() as u32, p[1].round() as u32).0[0] > 200,
                "marker at {p:?}"
            );
        }
        assert_eq!(crop.get_pixel(5, 5).0, [0, 0, 0]);
        assert!(aligned_crop(&PreprocessSpec::arcface_112(), &img, &[[1.0, 1.0]; 5]).is_err());
    }
}
