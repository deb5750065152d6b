//! A V4L2 camera through nokhwa (feature `camera`): MJPEG or YUYV at the configured size/rate.
//!
//! nokhwa only moves buffers; decoding is ours ([`super::decode`]). Capture errors are skipped
//! as "not ready" unless they persist or the device node disappears, then they are fatal.

use super::decode::{mjpeg_to_rgb, yuyv_to_rgb};
use super::{CameraConfig, Frame, FrameError, FrameSource, PixelFormat};
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
};
use nokhwa::Camera;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Consecutive capture failures after which the camera counts as gone.
const MAX_CONSECUTIVE_FAILURES: u32 = 50;

/// An open, streaming V4L2 camera.
pub struct CameraSource {
    camera: Camera,
    device: PathBuf,
    label: String,
    opened: Instant,
    seq: u64,
    failures: u32,
}

/// `/dev/video2` (or a udev link to it) -> 2.
fn video_index(device: &Path) -> Result<u32, String> {
    let real = device.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            "device does not exist (is the camera plugged in? see `ls /dev/video*`)".to_string()
        }
        _ => e.to_string(),
    })?;
    real.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("video"))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{} is not a /dev/videoN node", real.display()))
}

fn explain(err: &nokhwa::NokhwaError) -> String {
    let text = err.to_string();
    if text.contains("busy") || text.contains("os error 16") {
        format!("device is busy (another process is using it; see `fuser -v DEVICE`): {text}")
    } else if text.contains("Permission denied") || text.contains("os error 13") {
        format!("permission denied (is the service user in the `video` group?): {text}")
    } else {
        text
    }
}

impl CameraSource {
    /// Open `cfg.device` with exactly the configured format, size and rate, and start streaming.
    pub fn open(cfg: &CameraConfig) -> Result<Self, FrameError> {
        let device = cfg.device.clone();
        let fatal = |reason: String| FrameError::Fatal {
            source_name: format!("camera {}", device.display()),
            reason,
        };
        let index = video_index(&device).map_err(fatal)?;
        let fourcc = match cfg.format {
            PixelFormat::Mjpeg => FrameFormat::MJPEG,
            PixelFormat::Yuyv => FrameFormat::YUYV,
        };
        let wanted = CameraFormat::new(Resolution::new(cfg.width, cfg.height), fourcc, cfg.fps);
        let request = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Exact(wanted));
        let mut camera = Camera::new(CameraIndex::Index(index), request)
            .map_err(|e| fatal(format!("cannot open {wanted}: {}", explain(&e))))?;
        camera
            .open_stream()
            .map_err(|e| fatal(format!("cannot start streaming: {}", explain(&e))))?;
        let got = camera.camera_format();
        if got.format() != fourcc {
            return Err(fatal(format!("asked for {wanted}, the driver gave {got}")));
        }
        let label = format!("v4l2 {} {got}", device.display());
        tracing::info!("camera open: {label}");
        Ok(Self {
            camera,
            device,
            label,
            opened: Instant::now(),
            seq: 0,
            failures: 0,
        })
    }

    fn capture_failed(&mut self, reason: String) -> FrameError {
        self.failures += 1;
        let source_name = self.describe();
        if !self.device.exists() {
            return FrameError::Fatal {
                source_name,
                reason: format!("device disappeared: {reason}"),
            };
        }
        if self.failures >= MAX_CONSECUTIVE_FAILURES {
            return FrameError::Fatal {
                source_name,
                reason: format!("{} capture failures in a row: {reason}", self.failures),
            };
        }
        FrameError::NotReady {
            source_name,
            reason,
        }
    }
}

impl FrameSource for CameraSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let buffer = match self.camera.frame() {
            Ok(b) => b,
            Err(e) => return Err(self.capture_failed(explain(&e))),
        };
        self.failures = 0;
        let captured_at = self.opened.elapsed();
        let seq = self.seq;
        self.seq += 1;
        let res = buffer.resolution();
        let decoded = match buffer.source_frame_format() {
            FrameFormat::MJPEG => mjpeg_to_rgb(buffer.buffer()),
            FrameFormat::YUYV => yuyv_to_rgb(res.width(), res.height(), buffer.buffer()),
            other => Err(format!("unexpected pixel format {other}")),
        };
        let image = decoded.map_err(|reason| FrameError::BadFrame {
            source_name: self.describe(),
            what: format!("#{seq}"),
            reason,
        })?;
        Ok(Some(Frame {
            image,
            captured_at,
            seq,
        }))
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_is_a_clear_fatal_error() {
        let cfg: CameraConfig = toml::from_str("device = \"/dev/video-maskgate-absent\"").unwrap();
        let err = CameraSource::open(&cfg).err().expect("no such device");
        assert!(err.is_fatal());
        let text = err.to_string();
        assert!(
            text.contains("/dev/video-maskgate-absent") && text.contains("does not exist"),
            "{text}"
        );
    }

    #[test]
    fn device_nodes_map_to_indices() {
        assert!(video_index(Path::new("/dev/null"))
            .unwrap_err()
            .contains("not a /dev/videoN"));
    }
}
