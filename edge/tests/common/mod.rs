//! Shared helpers of the edge integration tests: the team kit (../shared) and configs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A file of the team kit beside the repository. Under `CI=true` a missing file fails the
/// test; elsewhere the caller skips with a message.
pub fn kit(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(rel);
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

/// edge.toml text for YuNet + SFace from the kit, with the gallery in `dir`.
pub fn sface_config(yunet: &Path, sface: &Path, dir: &Path, input_size: u32) -> String {
    format!(
        r#"
[model]
flip_fusion = false
[model.onnx]
path = "{sface}"
input = "data"
output = "fc1"
layout = "nchw"
color = "rgb"
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
threshold_unmasked = 0.363

[detector]
path = "{yunet}"
input_size = {input_size}

[gallery]
path = "{gallery}"
key_file = "{key}"
"#,
        sface = sface.display(),
        yunet = yunet.display(),
        gallery = dir.join("gallery.bin").display(),
        key = dir.join("gallery.key").display(),
    )
}
