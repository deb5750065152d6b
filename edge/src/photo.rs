//! Photos as people hand them in: the format read from the content (a WebP named `.jpg` is
//! common), the camera's EXIF orientation applied, a truncated JPEG refused.
//!
//! Every command and API that reads a photo (enroll, identify, verify, uploads) and the image
//! directory frame sources decode through here, so a photo reads the same everywhere.

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// The formats a photo may come in.
pub const FORMATS: &str = "JPEG, PNG, WebP, BMP or TIFF";

/// Whether a directory entry is taken for a photo (by its name; the content decides the format).
pub fn has_photo_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        matches!(
            e.to_ascii_lowercase().as_str(),
            "png" | "jpg" | "jpeg" | "webp" | "bmp" | "tif" | "tiff"
        )
    })
}

/// A photo that could not be read; `what` names the file or upload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct PhotoError {
    pub what: String,
    pub message: String,
}

/// Read and decode the photo at `path`.
pub fn load(path: &Path) -> Result<RgbImage, PhotoError> {
    let what = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| PhotoError {
        what: what.clone(),
        message: format!("cannot read: {e}"),
    })?;
    decode(&bytes, &what)
}

/// Decode a photo's bytes as RGB, upright; `what` names them in errors.
///
/// JPEG decoders fill a truncated file's missing rows with grey instead of failing, which would
/// enroll half a face; a JPEG must therefore end with its end-of-image marker (allowing a short
/// trailer, which some cameras append).
pub fn decode(bytes: &[u8], what: &str) -> Result<RgbImage, PhotoError> {
    const JPEG_TRAILER_MAX: usize = 8 * 1024;
    let err = |message: String| PhotoError {
        what: what.to_string(),
        message,
    };
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| {
            matches!(
                f,
                ImageFormat::Jpeg
                    | ImageFormat::Png
                    | ImageFormat::WebP
                    | ImageFormat::Bmp
                    | ImageFormat::Tiff
            )
        })
        .ok_or_else(|| err(format!("not a known image format ({FORMATS} expected)")))?;
    if format == ImageFormat::Jpeg {
        let tail = &bytes[bytes.len().saturating_sub(JPEG_TRAILER_MAX)..];
        if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
            return Err(err("truncated JPEG (no end-of-image marker)".into()));
        }
    }
    let decoding = |e: image::ImageError| err(format!("cannot decode {format:?}: {e}"));
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .map_err(decoding)?;
    // A phone stores the sensor's rows and says how to turn them; unturned, a portrait photo
    // is a face lying on its side, which the detector does not find.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(decoding)?;
    img.apply_orientation(orientation);
    Ok(img.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgb};

    /// 6x4 pixels, red top-left corner: where it ends up shows how the photo was turned.
    fn marked() -> RgbImage {
        RgbImage::from_fn(6, 4, |x, y| {
            if x == 0 && y == 0 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        })
    }

    fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn lossless_formats_decode_to_the_same_pixels() {
        let img = marked();
        for format in [
            ImageFormat::Png,
            ImageFormat::WebP,
            ImageFormat::Bmp,
            ImageFormat::Tiff,
        ] {
            let bytes = encode(&img, format);
            let back = decode(&bytes, "photo.jpg").unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(back, img, "{format:?}");
        }
    }

    /// A baseline JPEG with an APP1 EXIF segment saying "rotate 90 degrees clockwise" (6).
    fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 100)
            .write_image(
                img,
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        // TIFF header (little endian), one IFD entry: Orientation (0x0112), SHORT, count 1.
        let mut tiff = b"II*\0\x08\0\0\0\x01\0".to_vec();
        tiff.extend_from_slice(&0x0112u16.to_le_bytes());
        tiff.extend_from_slice(&3u16.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // value padding, no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        let img = marked();
        let upright = decode(&jpeg_with_orientation(&img, 1), "a.jpg").unwrap();
        assert_eq!(upright.dimensions(), (6, 4));
        assert!(upright.get_pixel(0, 0).0[0] > 200, "marker stays top-left");
        // 6: the stored rows must be turned 90 degrees clockwise; top-left goes top-right.
        let turned = decode(&jpeg_with_orientation(&img, 6), "b.jpg").unwrap();
        assert_eq!(turned.dimensions(), (4, 6));
        assert!(turned.get_pixel(3, 0).0[0] > 200, "marker moved top-right");
        assert!(turned.get_pixel(0, 0).0[0] < 100);
    }

    #[test]
    fn unknown_truncated_and_corrupt_photos_name_the_file_and_the_problem() {
        let e = decode(b"GIF89a not a photo", "cat.gif").unwrap_err();
        assert_eq!(e.what, "cat.gif");
        assert!(e.message.contains(FORMATS), "{e}");
        let jpeg = encode(&marked(), ImageFormat::Jpeg);
        let e = decode(&jpeg[..jpeg.len() / 2], "half.jpg").unwrap_err();
        assert!(e.to_string().starts_with("half.jpg: truncated JPEG"), "{e}");
        let mut webp = encode(&marked(), ImageFormat::WebP);
        webp.truncate(webp.len() - 10);
        let e = decode(&webp, "cut.webp").unwrap_err();
        assert!(
            e.to_string().starts_with("cut.webp: cannot decode WebP"),
            "{e}"
        );
    }
}
