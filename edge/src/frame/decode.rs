//! Camera wire formats to RGB: MJPEG (a JPEG per frame) and YUYV 4:2:2.
//!
//! Done here rather than in nokhwa so the build needs no C JPEG library (cross builds stay
//! simple) and so the conversions are tested without a camera.

use image::RgbImage;

/// Decode one MJPEG frame.
pub fn mjpeg_to_rgb(data: &[u8]) -> Result<RgbImage, String> {
    let img = image::load_from_memory_with_format(data, image::ImageFormat::Jpeg)
        .map_err(|e| e.to_string())?;
    Ok(img.into_rgb8())
}

/// Convert a packed YUYV (Y0 U Y1 V) frame, BT.601 limited range, as V4L2 webcams send it.
pub fn yuyv_to_rgb(width: u32, height: u32, data: &[u8]) -> Result<RgbImage, String> {
    if width % 2 != 0 {
        return Err(format!("YUYV width must be even, got {width}"));
    }
    let need = width as usize * height as usize * 2;
    if data.len() < need {
        return Err(format!(
            "YUYV buffer has {} bytes, {width}x{height} needs {need}",
            data.len()
        ));
    }
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for quad in data[..need].chunks_exact(4) {
        let (y0, u, y1, v) = (quad[0], quad[1], quad[2], quad[3]);
        out.extend_from_slice(&yuv_to_rgb(y0, u, v));
        out.extend_from_slice(&yuv_to_rgb(y1, u, v));
    }
    RgbImage::from_raw(width, height, out).ok_or_else(|| "YUYV size mismatch".to_string())
}

/// BT.601 limited range, 16.16 fixed point.
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (i32::from(y) - 16) * 76284; // 1.164
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let clamp = |x: i32| ((x + 32768) >> 16).clamp(0, 255) as u8;
    [
        clamp(c + 104595 * e),            // 1.596
        clamp(c - 25625 * d - 53281 * e), // 0.391, 0.813
        clamp(c + 132252 * d),            // 2.018
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_known_colours() {
        // black, white, mid grey, and pure red (Y=81 U=90 V=240 in BT.601).
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(yuv_to_rgb(126, 128, 128), [128, 128, 128]);
        let [r, g, b] = yuv_to_rgb(81, 90, 240);
        assert!(r >= 250 && g <= 3 && b <= 3, "{r} {g} {b}");
    }

    #[test]
    fn yuyv_frame_layout_and_short_buffers() {
        // 2x1: a black and a white pixel sharing neutral chroma.
        let img = yuyv_to_rgb(2, 1, &[16, 128, 235, 128]).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [255, 255, 255]);
        let err = yuyv_to_rgb(4, 2, &[0; 10]).unwrap_err();
        assert!(err.contains("needs 16"), "{err}");
        assert!(yuyv_to_rgb(3, 1, &[0; 6]).is_err());
    }

    #[test]
    fn mjpeg_round_trip_and_garbage() {
        let mut src = RgbImage::new(32, 16);
        for (x, _, p) in src.enumerate_pixels_mut() {
            p.0 = [if x < 16 { 200 } else { 20 }, 100, 50];
        }
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&src)
            .unwrap();
        let img = mjpeg_to_rgb(&jpeg).unwrap();
        assert_eq!(img.dimensions(), (32, 16));
        let p = img.get_pixel(4, 8).0;
        assert!((i32::from(p[0]) - 200).abs() < 8, "{p:?}");
        assert!(mjpeg_to_rgb(b"not a jpeg").is_err());
    }
}
