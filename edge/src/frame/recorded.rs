//! Recorded frames: images plus their capture times, for tests and incident replays.
//!
//! On disk a recording is a directory holding `timestamps.txt` and the images it names. Each
//! non-empty line that is not a `#` comment reads `<milliseconds> <image file>`, times
//! non-decreasing, files relative to the directory:
//! ```text
//! # maskgate recording
//! 0    f0000.png
//! 66   f0001.jpg
//! ```
//! The file is checked whole on open (a bad line is fatal and named); an image that fails to
//! decode while playing is a bad frame, skipped like a camera glitch.

use super::dir::Pacer;
use super::{Frame, FrameError, FrameSource};
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the index file inside a recording directory.
pub const TIMESTAMPS_FILE: &str = "timestamps.txt";

#[derive(Debug)]
enum Picture {
    File(PathBuf),
    Image(RgbImage),
}

/// A recording, played once from start to end.
#[derive(Debug)]
pub struct RecordedSource {
    name: String,
    frames: Vec<(Duration, Picture)>,
    next: usize,
    pacer: Pacer,
}

impl RecordedSource {
    /// Read `dir/timestamps.txt` and check that every named image exists.
    pub fn open(dir: &Path) -> Result<Self, FrameError> {
        let name = format!("recording {}", dir.display());
        let index = dir.join(TIMESTAMPS_FILE);
        let fatal = |reason: String| FrameError::Fatal {
            source_name: name.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&index)
            .map_err(|e| fatal(format!("{}: {e}", index.display())))?;
        let mut frames = Vec::new();
        let mut last = Duration::ZERO;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| {
                fatal(format!(
                    "{} line {}: {why}: {line:?}",
                    index.display(),
                    i + 1
                ))
            };
            let (ms, file) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected `<ms> <file>`"))?;
            let ms: u64 = ms
                .parse()
                .map_err(|_| bad("time is not a whole number of milliseconds"))?;
            let at = Duration::from_millis(ms);
            if at < last {
                return Err(bad("time goes backwards"));
            }
            last = at;
            let path = dir.join(file.trim());
            if !path.is_file() {
                return Err(bad("no such image file"));
            }
            frames.push((at, Picture::File(path)));
        }
        if frames.is_empty() {
            return Err(fatal(format!("{} lists no frames", index.display())));
        }
        Ok(Self {
            name,
            frames,
            next: 0,
            pacer: Pacer::new(false),
        })
    }

    /// A recording held in memory (times must be non-decreasing; they are sorted if not).
    pub fn from_images(name: &str, mut frames: Vec<(Duration, RgbImage)>) -> Self {
        frames.sort_by_key(|(t, _)| *t);
        let frames = frames
            .into_iter()
            .map(|(t, img)| (t, Picture::Image(img)))
            .collect();
        Self {
            name: format!("recording {name}"),
            frames,
            next: 0,
            pacer: Pacer::new(false),
        }
    }

    /// Play at the recorded pace instead of as fast as asked.
    pub fn realtime(mut self, on: bool) -> Self {
        self.pacer = Pacer::new(on);
        self
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

impl FrameSource for RecordedSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some((at, picture)) = self.frames.get(self.next) else {
            return Ok(None);
        };
        let (at, seq) = (*at, self.next as u64);
        self.next += 1;
        self.pacer.wait_until(at);
        let image = match picture {
            Picture::Image(img) => img.clone(),
            Picture::File(path) => crate::photo::load(path).map_err(|e| FrameError::BadFrame {
                source_name: self.name.clone(),
                what: path.display().to_string(),
                reason: e.message,
            })?,
        };
        Ok(Some(Frame {
            image,
            captured_at: at,
            seq,
        }))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(lines: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]))
            .save(dir.path().join("f0.png"))
            .unwrap();
        RgbImage::from_pixel(4, 4, image::Rgb([4, 5, 6]))
            .save(dir.path().join("f1.png"))
            .unwrap();
        std::fs::write(dir.path().join("broken.jpg"), b"\xff\xd8 truncated").unwrap();
        std::fs::write(dir.path().join(TIMESTAMPS_FILE), lines).unwrap();
        dir
    }

    #[test]
    fn plays_frames_with_their_times() {
        let dir = recording("# test\n0 f0.png\n\n250 broken.jpg\n400  f1.png\n");
        let mut src = RecordedSource::open(dir.path()).unwrap();
        assert_eq!(src.len(), 3);
        let f0 = src.next_frame().unwrap().unwrap();
        assert_eq!(
            (f0.captured_at, f0.image.get_pixel(0, 0).0),
            (Duration::ZERO, [1, 2, 3])
        );
        let err = src.next_frame().unwrap_err();
        assert!(
            !err.is_fatal() && err.to_string().contains("broken.jpg"),
            "{err}"
        );
        let f1 = src.next_frame().unwrap().unwrap();
        assert_eq!((f1.seq, f1.captured_at), (2, Duration::from_millis(400)));
        assert!(src.next_frame().unwrap().is_none());
    }

    #[test]
    fn bad_index_lines_are_fatal_and_named() {
        for (lines, expect) in [
            ("0 f0.png\nabc f1.png\n", "line 2"),
            ("100 f0.png\n50 f1.png\n", "backwards"),
            ("0 f0.png\n10 missing.png\n", "no such image"),
            ("0\n", "expected"),
            ("# nothing\n", "lists no frames"),
        ] {
            let dir = recording(lines);
            let err = RecordedSource::open(dir.path()).unwrap_err();
            assert!(
                err.is_fatal() && err.to_string().contains(expect),
                "{lines:?}: {err}"
            );
        }
        let err = RecordedSource::open(Path::new("/nonexistent/rec")).unwrap_err();
        assert!(err.to_string().contains("timestamps.txt"), "{err}");
    }
}
