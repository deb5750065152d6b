//! The `trainer` binary as a user runs it.

use std::process::Command;

fn trainer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("run trainer")
}

#[test]
fn models_prints_every_backbone_with_size_and_cost() {
    let out = trainer(&["models"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["tiny", "mbf", "r18", "r34", "r50", "r100"] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} missing:\n{text}"
        );
    }
    let r50: Vec<f64> = text
        .lines()
        .find(|l| l.starts_with("r50"))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .map(|v| v.parse().unwrap())
                .collect()
        })
        .unwrap();
    assert!(
        (r50[0] - 43.59).abs() < 0.05 && (r50[1] - 6.31).abs() < 0.05,
        "r50 row {r50:?}"
    );
}

#[test]
fn check_works_as_flag_and_subcommand() {
    for args in [&["--check"][..], &["check"][..]] {
        let out = trainer(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("sum check = 6"));
    }
}

#[test]
fn bench_times_the_tiny_preset_and_rejects_unknown_backbones() {
    let out = trainer(&["bench", "--steps", "1", "--batch", "4", "--threads", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("tiny")));
    let out = trainer(&["bench", "--backbones", "r200", "--steps", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown backbone \"r200\""));
}

#[test]
fn no_command_is_a_usage_error() {
    assert_eq!(trainer(&[]).status.code(), Some(2));
}
