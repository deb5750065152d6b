//! `trainer train`, `eval` and `calibrate` end to end on a small synthetic set, as a user runs them.

use std::path::Path;
use std::process::{Command, Output};

fn trainer(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run trainer")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn train_resume_eval_calibrate() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(&trainer(
        d,
        &[
            "synth",
            "--out",
            "data",
            "--identities",
            "8",
            "--images-per-id",
            "6",
            "--val-identities",
            "8",
            "--val-pairs",
            "100",
        ],
    ));
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/cpu_small.toml");
    let config = config.to_str().unwrap();
    let common = [
        "--config",
        config,
        "--out-dir",
        "run",
        "--set",
        "data.train_rec=\"data/train.rec\"",
        "--set",
        "data.val_bins=[\"data/synth_val.bin\"]",
        "--set",
        "data.eval_masked=false",
        "--set",
        "data.loader.batch_size=8",
        "--set",
        "run.checkpoint_every=2",
        "--set",
        "run.eval_every=0",
    ];
    let mut first: Vec<&str> = vec!["train"];
    first.extend(common);
    first.extend(["--steps", "3"]);
    let text = ok(&trainer(d, &first));
    assert!(text.contains("| synth_val | unmasked | 100 |"), "{text}");
    let ckpt = d.join("run/checkpoint.safetensors");
    assert!(ckpt.is_file());
    let metrics = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    assert!(metrics.lines().filter(|l| l.contains("\"lr\"")).count() >= 1);

    let mut more: Vec<&str> = vec!["train"];
    more.extend(common);
    more.extend(["--steps", "5", "--resume", "run/checkpoint.safetensors"]);
    ok(&trainer(d, &more));
    let metrics = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("\"step\":4"),
        "resumed run continues at step 3..4"
    );

    let text = ok(&trainer(
        d,
        &[
            "eval",
            "--checkpoint",
            "run/checkpoint.safetensors",
            "--bin",
            "data/synth_val.bin",
            "--no-masked",
            "--out",
            "report/e",
        ],
    ));
    assert!(text.contains("accuracy (10-fold)"));
    for f in ["report/e.md", "report/e.json", "report/e_roc.png"] {
        assert!(d.join(f).is_file(), "{f}");
    }

    let id = "ab".repeat(32);
    let out = trainer(
        d,
        &[
            "calibrate",
            "--checkpoint",
            "run/checkpoint.safetensors",
            "--bin",
            "data/synth_val.bin",
            "--far",
            "0.1,1e-3",
            "--selected-far",
            "0.1",
            "--model-id",
            &id,
            "--out",
            "thr.toml",
        ],
    );
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NOT verifiable"),
        "50 impostors cannot prove 1e-3: {stderr}"
    );
    let cfg = shared::ThresholdConfig::load(&d.join("thr.toml")).unwrap();
    assert_eq!(cfg.model_id, id);
    assert_eq!(cfg.operating_points.len(), 4);
}

#[test]
fn bad_invocations_fail_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = trainer(tmp.path(), &["train", "--config", "missing.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    let out = trainer(
        tmp.path(),
        &["eval", "--checkpoint", "nope.safetensors", "--bin", "x.bin"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.safetensors"));
    let out = trainer(
        tmp.path(),
        &[
            "calibrate",
            "--checkpoint",
            "c.safetensors",
            "--bin",
            "x.bin",
        ],
    );
    // Refused before anything is read or written: the thresholds would belong to no model.
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("give --onnx FILE or --model-id SHA256"),
        "{stderr}"
    );
    assert!(!stderr.contains("c.safetensors"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(!tmp.path().join("thresholds.toml").exists());
}
