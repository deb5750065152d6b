//! ImageFolder: `root/<identity>/<image>`, one sub-directory per person, aligned 112x112 faces.
//!
//! Identities are the sub-directories in byte order of their names (label 0 first), images the
//! files with an image extension in name order, so the labels of a folder never depend on the
//! order the filesystem lists it in.

use super::{DataError, EncodedFace, FaceSource};
use std::path::{Path, PathBuf};

const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];

/// An ImageFolder dataset.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    /// Identity names, index = label.
    pub classes: Vec<String>,
    items: Vec<(PathBuf, u32)>,
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        out.push(entry.map_err(|e| DataError::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

impl ImageFolder {
    /// Scan `root`. Identities without images are skipped (with a warning); a folder without any
    /// image is an error.
    pub fn open(root: &Path) -> Result<Self, DataError> {
        let mut classes = Vec::new();
        let mut items = Vec::new();
        for dir in sorted_entries(root)? {
            if !dir.is_dir() {
                continue;
            }
            let label = classes.len() as u32;
            let before = items.len();
            for file in sorted_entries(&dir)? {
                let is_image = file
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
                if is_image && file.is_file() {
                    items.push((file, label));
                }
            }
            if items.len() == before {
                tracing::warn!(dir = %dir.display(), "identity folder has no images; skipped");
                continue;
            }
            classes.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
        if items.is_empty() {
            return Err(DataError::format(
                root,
                "no images found: expected one sub-directory per identity holding .jpg/.png faces",
            ));
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            items,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Path and label of image `index`.
    pub fn item(&self, index: usize) -> Option<(&Path, u32)> {
        self.items.get(index).map(|(p, l)| (p.as_path(), *l))
    }
}

impl FaceSource for ImageFolder {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn num_classes(&self) -> usize {
        self.classes.len()
    }
    fn read(&self, index: usize) -> Result<EncodedFace, DataError> {
        let (path, label) = self.items.get(index).ok_or_else(|| {
            DataError::Config(format!(
                "index {index} out of range for {} ({} images)",
                self.root.display(),
                self.items.len()
            ))
        })?;
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        Ok(EncodedFace {
            label: *label,
            bytes,
            origin: path.display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_sorted_identity_names() {
        let dir = tempfile::tempdir().unwrap();
        for (id, files) in [
            ("bob", vec!["2.png", "1.jpg", "notes.txt"]),
            ("alice", vec!["a.PNG"]),
            ("empty", vec![]),
        ] {
            std::fs::create_dir(dir.path().join(id)).unwrap();
            for f in files {
                std::fs::write(dir.path().join(id).join(f), f).unwrap();
            }
        }
        let ds = ImageFolder::open(dir.path()).unwrap();
        assert_eq!(ds.classes, vec!["alice", "bob"]);
        assert_eq!((ds.len(), ds.num_classes()), (3, 2));
        let got: Vec<(String, u32)> = (0..3)
            .map(|i| {
                let f = ds.read(i).unwrap();
                (String::from_utf8(f.bytes).unwrap(), f.label)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a.PNG".into(), 0),
                ("1.jpg".into(), 1),
                ("2.png".into(), 1)
            ]
        );
        let err = ImageFolder::open(&dir.path().join("empty"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no images found"), "{err}");
    }
}
