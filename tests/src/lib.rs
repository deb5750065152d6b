//! maskgate's end-to-end jobs and their test helpers: the demo (`make demo`), the ablation, and
//! locating the team kit and the built binaries.

pub mod ablation;
pub mod bench;
pub mod demo;
pub mod report;
pub mod tools;

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

/// Logs to stderr at `warn` unless `RUST_LOG` says otherwise: stdout carries the tables.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The machine and the date figures are recorded with (one definition, in the edge library).
pub use edge::machine::{description as machine_description, utc_today as utc_date};
