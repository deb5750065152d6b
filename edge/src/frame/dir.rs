//! Frames from the photos of a directory (any [`crate::photo`] format), in file-name order,
//! `interval` apart.

use super::{Frame, FrameError, FrameSource};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Sleeps so frames come out no earlier than their timestamps (replays at recorded pace).
#[derive(Debug)]
pub(crate) struct Pacer {
    start: Option<Instant>,
}

impl Pacer {
    pub(crate) fn new(realtime: bool) -> Self {
        Self {
            start: realtime.then(Instant::now),
        }
    }

    pub(crate) fn wait_until(&mut self, at: Duration) {
        if let Some(start) = self.start {
            let due = start + at;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
}

/// The images of one directory, each a frame.
#[derive(Debug)]
pub struct ImageDirSource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    next: usize,
    interval: Duration,
    pacer: Pacer,
}

impl ImageDirSource {
    /// List the directory now; a missing or image-less directory is a fatal error.
    pub fn open(dir: &Path, interval: Duration) -> Result<Self, FrameError> {
        let fatal = |reason: String| FrameError::Fatal {
            source_name: format!("dir {}", dir.display()),
            reason,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| fatal(format!("cannot list: {e}")))?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| fatal(format!("cannot list: {e}")))?
                .path();
            if path.is_file() && crate::photo::has_photo_extension(&path) {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(fatal("no .png/.jpg images".into()));
        }
        files.sort();
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            next: 0,
            interval,
            pacer: Pacer::new(false),
        })
    }

    /// Hand frames out at `interval` in real time instead of as fast as asked.
    pub fn realtime(mut self, on: bool) -> Self {
        self.pacer = Pacer::new(on);
        self
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl FrameSource for ImageDirSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(path) = self.files.get(self.next) else {
            return Ok(None);
        };
        let seq = self.next as u64;
        self.next += 1;
        let captured_at = self.interval * seq as u32;
        self.pacer.wait_until(captured_at);
        let image = crate::photo::load(path).map_err(|e| FrameError::BadFrame {
            source_name: self.describe(),
            what: path.display().to_string(),
            reason: e.message,
        })?;
        Ok(Some(Frame {
            image,
            captured_at,
            seq,
        }))
    }

    fn describe(&self) -> String {
        format!("dir {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    #[test]
    fn reads_images_in_name_order_and_skips_a_corrupt_one() {
        let dir = tempfile::tempdir().unwrap();
        for (name, shade) in [("b.png", 20u8), ("a.png", 10), ("d.jpg", 40)] {
            RgbImage::from_pixel(8, 8, image::Rgb([shade, 0, 0]))
                .save(dir.path().join(name))
                .unwrap();
        }
        std::fs::write(dir.path().join("c.png"), b"not a png").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        let mut src = ImageDirSource::open(dir.path(), Duration::from_millis(100)).unwrap();
        assert_eq!(src.len(), 4);
        let a = src.next_frame().unwrap().unwrap();
        assert_eq!(
            (a.seq, a.captured_at, a.image.get_pixel(0, 0).0[0]),
            (0, Duration::ZERO, 10)
        );
        let b = src.next_frame().unwrap().unwrap();
        assert_eq!(
            (b.seq, b.captured_at, b.image.get_pixel(0, 0).0[0]),
            (1, Duration::from_millis(100), 20)
        );
        let err = src.next_frame().unwrap_err();
        assert!(
            !err.is_fatal() && err.to_string().contains("c.png"),
            "{err}"
        );
        let d = src.next_frame().unwrap().unwrap();
        assert_eq!(d.seq, 3);
        assert!(src.next_frame().unwrap().is_none());
    }

    #[test]
    fn missing_or_empty_directories_are_fatal_and_named() {
        let err = ImageDirSource::open(Path::new("/nonexistent/maskgate-frames"), Duration::ZERO)
            .unwrap_err();
        assert!(
            err.is_fatal() && err.to_string().contains("/nonexistent/maskgate-frames"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = ImageDirSource::open(dir.path(), Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("no .png/.jpg"), "{err}");
    }
}
