//! The maskgate binaries the end-to-end jobs drive, and running them with a log per step.
//!
//! The demo goes through the same command lines a user types (`trainer ...`, `edge ...`), so a
//! green demo proves the documented interface, not an in-process shortcut.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Paths of the `trainer` and `edge` executables (and the Python with onnxruntime, if any).
#[derive(Debug, Clone)]
pub struct Tools {
    pub trainer: PathBuf,
    pub edge: PathBuf,
    pub python: Option<PathBuf>,
}

impl Tools {
    /// `MASKGATE_TRAINER` / `MASKGATE_EDGE` when set, else the executables beside this one
    /// (`target/<profile>/`), also when this one is a test in `target/<profile>/deps/`.
    pub fn locate() -> Result<Self> {
        let exe = std::env::current_exe().context("locating the running executable")?;
        let mut dirs = Vec::new();
        if let Some(dir) = exe.parent() {
            dirs.push(dir.to_path_buf());
            if let Some(up) = dir.parent() {
                dirs.push(up.to_path_buf());
            }
        }
        let find = |name: &str, var: &str| -> Result<PathBuf> {
            if let Some(p) = std::env::var_os(var) {
                let p = PathBuf::from(p);
                if !p.is_file() {
                    bail!("{var}={} is not a file", p.display());
                }
                return Ok(p);
            }
            dirs.iter()
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .with_context(|| {
                    format!(
                        "no `{name}` executable beside {} (build it: cargo build -p {name}, or set {var})",
                        exe.display()
                    )
                })
        };
        let python = std::env::var_os("MASKGATE_PYTHON")
            .map(PathBuf::from)
            .or_else(|| {
                let venv = crate::workspace_root().join(".venv/bin/python");
                venv.is_file().then_some(venv)
            });
        Ok(Self {
            trainer: find("trainer", "MASKGATE_TRAINER")?,
            edge: find("edge", "MASKGATE_EDGE")?,
            python,
        })
    }
}

/// Run `cmd`, appending the command line and everything it prints to `log`; returns stdout.
/// A failure names the command and ends with the tail of its output.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<String> {
    let line = command_line(cmd);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {line}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    writeln!(f, "$ {line}\n{stdout}{stderr}")
        .with_context(|| format!("writing {}", log.display()))?;
    if !output.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{line} failed ({}); full output in {}:\n{}",
            output.status,
            log.display(),
            tail.join("\n")
        );
    }
    Ok(stdout)
}

/// The command as a copy-pasteable line (program and arguments).
pub fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.contains(' ') {
                format!("'{s}'")
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
