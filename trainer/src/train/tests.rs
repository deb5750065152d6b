//! Training-loop tests on the built-in synthetic faces (tiny backbone, CPU, 1 thread).

use super::*;
use crate::data::synth::{self, SynthConfig};
use std::sync::OnceLock;

/// Synthetic train set + verification pairs, rendered once per test binary.
fn synth_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("maskgate-train-test-{}", std::process::id()));
        let cfg = SynthConfig {
            identities: 16,
            images_per_id: 12,
            seed: 11,
            val_identities: 16,
            val_pairs: 200,
            ..SynthConfig::default()
        };
        synth::generate(&cfg, &dir, &indicatif::ProgressBar::hidden()).unwrap();
        dir
    })
}

fn config(out: &Path, steps: u64) -> TrainConfig {
    let dir = synth_dir();
    let text = format!(
        r#"
backbone = "tiny"
[model]
embedding_dim = 64
[head]
type = "arcface"
s = 32.0
m = 0.3
[data]
train_rec = "{rec}"
val_bins = ["{val}"]
eval_masked = false
masked_training = false
[data.loader]
batch_size = 16
workers = 1
[schedule]
lr = 0.1
warmup_steps = 3
[run]
steps = {steps}
seed = 5
out_dir = "{out}"
checkpoint_every = 0
log_every = 1
"#,
        rec = dir.join("train.rec").display(),
        val = dir.join("synth_val.bin").display(),
        out = out.display(),
    );
    TrainConfig::from_toml(&text, "test", &[]).unwrap()
}

fn weights(t: &Trainer) -> Vec<(String, Vec<f32>)> {
    t.named_variables()
        .into_iter()
        .map(|(k, v)| {
            let flat = v.to_kind(Kind::Float).flatten(0, -1);
            (k, Vec::<f32>::try_from(&flat).unwrap())
        })
        .collect()
}

#[test]
fn resume_continues_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), 4);
    cfg.uss.enabled = true;
    cfg.uss.warmup_steps = 1;
    cfg.mask_head.enabled = true;
    cfg.data.masked_training = true;
    cfg.data.val_bins.clear();
    cfg.head = toml::from_str("type = \"adaface\"").unwrap();
    let mut full = Trainer::new(cfg.clone()).unwrap();
    for _ in 0..4 {
        full.step().unwrap();
    }
    let mut first = Trainer::new(cfg.clone()).unwrap();
    first.step().unwrap();
    first.step().unwrap();
    let ckpt = tmp.path().join("mid.safetensors");
    first.save(&ckpt).unwrap();
    drop(first);
    // A fresh process-like start: different init seed, then resume.
    tch::manual_seed(999);
    let mut resumed = Trainer::new(cfg).unwrap();
    resumed.resume(&ckpt).unwrap();
    assert_eq!(resumed.state().step, 2);
    resumed.step().unwrap();
    resumed.step().unwrap();
    let (a, b) = (weights(&full), weights(&resumed));
    assert_eq!(a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(va == vb, "{ka} differs after resume");
    }
    assert!(a.iter().any(|(k, _)| k.starts_with("mask_head/")));
    assert!(a.iter().any(|(k, _)| k == "uss/b"));
}

#[test]
fn resume_rejects_a_checkpoint_of_another_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 1);
    let t = Trainer::new(cfg.clone()).unwrap();
    let ckpt = tmp.path().join("a.safetensors");
    t.save(&ckpt).unwrap();
    let mut other = cfg;
    other.model.embedding_dim = 32;
    let mut t2 = Trainer::new(other).unwrap();
    let e = t2.resume(&ckpt).unwrap_err().to_string();
    assert!(e.contains("a.safetensors") && e.contains("shape"), "{e}");
    let e = t2
        .resume(&tmp.path().join("missing.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
}

#[test]
fn short_cpu_run_beats_chance_on_synthetic_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 60);
    let mut t = Trainer::new(cfg).unwrap();
    let before = t.evaluate().unwrap()[0].accuracy.mean;
    let after = t.run(&indicatif::ProgressBar::hidden()).unwrap();
    let acc = after[0].accuracy.mean;
    eprintln!("synthetic verification accuracy: before {before:.3}, after {acc:.3}");
    assert!(
        acc > 0.75,
        "accuracy {acc} after training (before {before})"
    );
    assert!(acc > before + 0.05);
    // Checkpoint + metrics written; the checkpoint knows its config.
    let ckpt = tmp.path().join(CHECKPOINT_FILE);
    assert_eq!(checkpoint_config(&ckpt).unwrap().backbone, "tiny");
    let log = std::fs::read_to_string(tmp.path().join(METRICS_FILE)).unwrap();
    assert!(log.lines().count() >= 61);
    assert!(log.contains("\"eval\""));
}
