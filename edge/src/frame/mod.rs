//! Where frames come from: one trait over the V4L2 camera, an image directory and recordings.
//!
//! - [`camera`] (feature `camera`): a V4L2 device through nokhwa, MJPEG or YUYV.
//! - [`dir`]: the images of a directory, in name order.
//! - [`recorded`]: a recording (images + a timestamps file) for tests and incident replays.
//! - [`decode`]: MJPEG/YUYV to RGB, kept apart so it is tested without a camera.

#[cfg(feature = "camera")]
pub mod camera;
pub mod decode;
pub mod dir;
pub mod recorded;

use image::RgbImage;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// One captured picture.
#[derive(Debug, Clone)]
pub struct Frame {
    pub image: RgbImage,
    /// Capture time, monotonic, since the source was opened.
    pub captured_at: Duration,
    /// Position in the source's stream (0, 1, ...), counting skipped frames too.
    pub seq: u64,
}

/// Why no frame came back. [`FrameError::is_fatal`] tells the daemon whether to skip or stop.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Nothing this time (timeout, dropped buffer): try again.
    #[error("{source_name}: no frame yet: {reason}")]
    NotReady { source_name: String, reason: String },
    /// A frame arrived but cannot be used (corrupt JPEG, short YUYV buffer): skip it.
    #[error("{source_name}: bad frame {what}: {reason}")]
    BadFrame {
        source_name: String,
        what: String,
        reason: String,
    },
    /// The device or files are gone or unusable: stop.
    #[error("{source_name}: {reason}")]
    Fatal { source_name: String, reason: String },
}

impl FrameError {
    pub fn is_fatal(&self) -> bool {
        matches!(self, FrameError::Fatal { .. })
    }
}

/// Something that produces frames, one at a time. `Ok(None)` means the stream ended (a
/// directory or recording played to its end); a camera never ends.
///
/// Not `Send`: a camera handle may be tied to its thread, so the daemon opens the source on the
/// capture thread itself (see [`crate::daemon::run`]).
pub trait FrameSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError>;
    /// For logs: "v4l2 /dev/video0 640x480 MJPEG@15", "dir /data/frames".
    fn describe(&self) -> String;
}

impl<S: FrameSource + ?Sized> FrameSource for Box<S> {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        (**self).next_frame()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Which source `[camera]` opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    V4l2,
    Dir,
    Recorded,
}

/// The camera's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
}

/// `[camera]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    #[serde(default = "default_kind")]
    pub source: SourceKind,
    /// V4L2 device node.
    #[serde(default = "default_device")]
    pub device: PathBuf,
    #[serde(default = "default_format")]
    pub format: PixelFormat,
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// The directory of a `dir` or `recorded` source.
    pub path: Option<PathBuf>,
    /// Replay a `dir`/`recorded` source at its own pace (`fps`, or the recorded timestamps)
    /// instead of as fast as frames are asked for.
    #[serde(default)]
    pub realtime: bool,
}

fn default_kind() -> SourceKind {
    SourceKind::V4l2
}
fn default_device() -> PathBuf {
    PathBuf::from("/dev/video0")
}
fn default_format() -> PixelFormat {
    PixelFormat::Mjpeg
}
fn default_width() -> u32 {
    640
}
fn default_height() -> u32 {
    480
}
fn default_fps() -> u32 {
    15
}

impl CameraConfig {
    pub fn validate(&self) -> Result<(), crate::door::config::ConfigError> {
        use crate::door::config::ConfigError;
        if !(16..=4096).contains(&self.width) {
            return Err(ConfigError::new(
                "camera",
                "width",
                "must be between 16 and 4096",
            ));
        }
        if !(16..=4096).contains(&self.height) {
            return Err(ConfigError::new(
                "camera",
                "height",
                "must be between 16 and 4096",
            ));
        }
        if !(1..=120).contains(&self.fps) {
            return Err(ConfigError::new(
                "camera",
                "fps",
                "must be between 1 and 120",
            ));
        }
        if matches!(self.source, SourceKind::Dir | SourceKind::Recorded) && self.path.is_none() {
            return Err(ConfigError::new(
                "camera",
                "path",
                "is required for a dir or recorded source",
            ));
        }
        Ok(())
    }

    /// A directory or recording replayed as fast as it is read: every frame is decided in
    /// order on the recording's clock ([`crate::replay`]) instead of live.
    pub fn is_lockstep_replay(&self) -> bool {
        matches!(self.source, SourceKind::Dir | SourceKind::Recorded) && !self.realtime
    }

    /// Time between frames at the configured rate.
    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.fps.max(1)))
    }
}

/// Open the source `[camera]` describes.
pub fn open_source(cfg: &CameraConfig) -> Result<Box<dyn FrameSource>, FrameError> {
    let missing_path = || FrameError::Fatal {
        source_name: "camera".into(),
        reason: "[camera] path is required for this source".into(),
    };
    match cfg.source {
        SourceKind::Dir => {
            let path = cfg.path.as_ref().ok_or_else(missing_path)?;
            let src = dir::ImageDirSource::open(path, cfg.frame_interval())?;
            Ok(Box::new(src.realtime(cfg.realtime)))
        }
        SourceKind::Recorded => {
            let path = cfg.path.as_ref().ok_or_else(missing_path)?;
            Ok(Box::new(
                recorded::RecordedSource::open(path)?.realtime(cfg.realtime),
            ))
        }
        SourceKind::V4l2 => open_camera(cfg),
    }
}

#[cfg(feature = "camera")]
fn open_camera(cfg: &CameraConfig) -> Result<Box<dyn FrameSource>, FrameError> {
    Ok(Box::new(camera::CameraSource::open(cfg)?))
}

#[cfg(not(feature = "camera"))]
fn open_camera(cfg: &CameraConfig) -> Result<Box<dyn FrameSource>, FrameError> {
    Err(FrameError::Fatal {
        source_name: format!("v4l2 {}", cfg.device.display()),
        reason:
            "this edge binary was built without the `camera` feature (build with --features device)"
                .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_section_defaults_and_validation() {
        let cfg: CameraConfig = toml::from_str("format = \"yuyv\"\nfps = 30\n").unwrap();
        assert_eq!(cfg.source, SourceKind::V4l2);
        assert_eq!(cfg.device, PathBuf::from("/dev/video0"));
        assert_eq!(
            (cfg.width, cfg.height, cfg.format),
            (640, 480, PixelFormat::Yuyv)
        );
        cfg.validate().unwrap();
        let bad: CameraConfig = toml::from_str("source = \"dir\"").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("path"));
        let bad: CameraConfig = toml::from_str("fps = 0").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("fps"));
        assert!(toml::from_str::<CameraConfig>("fromat = \"mjpeg\"").is_err());
        assert!(toml::from_str::<CameraConfig>("format = \"h264\"").is_err());
    }

    #[cfg(not(feature = "camera"))]
    #[test]
    fn v4l2_without_the_feature_says_how_to_get_it() {
        let cfg: CameraConfig = toml::from_str("").unwrap();
        let err = open_source(&cfg)
            .err()
            .expect("no camera support")
            .to_string();
        assert!(err.contains("`camera` feature"), "{err}");
    }
}
