//! Helpers for maskgate's end-to-end tests: locating the team kit and the built binaries.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A file of the team kit beside the repository (`../shared`). Under `CI=true` a missing file is
/// a failure, never a skip; elsewhere the caller may skip with a message.
pub fn kit_file(rel: &str) -> Option<PathBuf> {
    let p = workspace_root().join("..").join("shared").join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "team kit file {} is missing (CI=true: tests must not skip)",
            p.display()
        );
    }
    eprintln!("skipping: team kit file {} is missing", p.display());
    None
}
