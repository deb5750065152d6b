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

/// edge.toml text for YuNet + SFace from the kit, with the gallery, the audit log and the
/// state file in `dir`.
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

[audit]
path = "{audit}"
"#,
        sface = sface.display(),
        yunet = yunet.display(),
        gallery = dir.join("gallery.bin").display(),
        key = dir.join("gallery.key").display(),
        audit = dir.join("audit.jsonl").display(),
    )
}

/// A command running `exe`. In cross test runs the binary is for the target: `EDGE_TEST_RUNNER`
/// (set by `make test-aarch64`, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`) runs it. Without
/// it, under qemu-user without binfmt_misc the kernel cannot exec a foreign binary directly
/// (ENOEXEC) and the child goes through the same emulator. (With binfmt_misc but no `-L`, the
/// exec "works" and then fails to find the target's dynamic loader: hence the runner first.)
/// The built `edge` binary, through `EDGE_TEST_RUNNER` in cross test runs.
pub fn edge_command() -> std::process::Command {
    command_for(Path::new(env!("CARGO_BIN_EXE_edge")))
}

/// stdout and stderr of a finished command, as text.
pub fn output_text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub fn command_for(exe: &Path) -> std::process::Command {
    let runner = std::env::var("EDGE_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    if let Some(program) = words.next() {
        let mut c = std::process::Command::new(program);
        c.args(words).arg(exe);
        return c;
    }
    const ENOEXEC: i32 = 8;
    let direct = std::process::Command::new(exe)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match direct {
        Err(e) if e.raw_os_error() == Some(ENOEXEC) => {
            let arch = std::env::consts::ARCH;
            let mut c = std::process::Command::new(format!("qemu-{arch}"));
            c.arg("-L").arg(format!("/usr/{arch}-linux-gnu")).arg(exe);
            c
        }
        _ => std::process::Command::new(exe),
    }
}
