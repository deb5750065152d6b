//! The door commands as an operator runs them: `edge audit verify`, `edge run` config errors.

mod common;

use edge::audit::AuditLog;
use edge::door::DoorEvent;
use std::path::Path;
use std::process::Output;

fn edge(args: &[&str]) -> Output {
    common::edge_command().args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn log_with(path: &Path, n: usize) {
    let mut log = AuditLog::open(path).unwrap();
    for i in 0..n {
        log.append(&DoorEvent::Fault {
            what: format!("e{i}"),
        })
        .unwrap();
    }
}

#[test]
fn audit_verify_reports_ok_and_the_first_broken_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    log_with(&path, 4);
    let p = path.to_str().unwrap();
    let out = edge(&["audit", "verify", p]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ok, 4 entries"), "{}", text(&out));

    let content = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"e2\"", "\"e9\"");
    std::fs::write(&path, content).unwrap();
    let out = edge(&["audit", "verify", p]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("line 3"), "{}", text(&out));

    let out = edge(&["audit", "verify", "/nonexistent/audit.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("/nonexistent/audit.jsonl"),
        "{}",
        text(&out)
    );
}

#[test]
fn run_names_a_missing_or_broken_config() {
    let out = edge(&["run", "--config", "/nonexistent/edge.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("/nonexistent/edge.toml"),
        "{}",
        text(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("edge.toml");
    let packaged = include_str!("../../packaging/edge.toml");
    std::fs::write(&cfg, packaged.replace("line = 17", "lien = 17")).unwrap();
    let out = edge(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("lien"), "{}", text(&out));
}

#[test]
fn version_is_printed() {
    let out = edge(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("edge "));
}
