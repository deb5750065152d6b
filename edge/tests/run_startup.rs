//! `edge run` start-up guards, as a user runs it: a bundle older than the one last run is
//! refused unless `--allow-downgrade`; a rolled-back gallery, a wrong gallery key and a broken
//! bundle stop start-up; each failure is written to the audit log before the edge exits.

mod common;

use edge::config::{GalleryConfig, KeySource};
use edge::gallery::{self, GalleryStore, StoreError};
use shared::bundle::{ModelOutputs, MANIFEST_FORMAT};
use shared::thresholds::{Metric, OperatingPoint};
use shared::{
    Bundle, Condition, Embedding, Manifest, ModelVariant, PreprocessSpec, Provenance,
    ThresholdConfig,
};
use std::path::PathBuf;
use std::process::Output;

struct Door {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    model: Vec<u8>,
    signer: ed25519_dalek::SigningKey,
}

impl Door {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sign the kit's SFace as a bundle of `version` at `model.mgb`.
    fn ship(&self, version: u64) {
        let sha = shared::sha256_hex(&self.model);
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            model_sha256: sha.clone(),
            variant: ModelVariant::F32,
            embedding_dim: 128,
            input_name: "data".into(),
            outputs: ModelOutputs {
                embedding: "fc1".into(),
                mask_prob: None,
            },
            created_unix: 0,
            bundle_version: version,
            provenance: Provenance {
                trainer_config_sha256: "0".repeat(64),
                dataset: "OpenCV zoo SFace (third party)".into(),
                git_commit: "none".into(),
                trainer_version: "test".into(),
            },
            preprocess: PreprocessSpec {
                mean: [0.0; 3],
                std: [1.0; 3],
                ..PreprocessSpec::arcface_112()
            },
            thresholds: ThresholdConfig {
                model_id: sha,
                metric: Metric::Cosine,
                selected_far: 1e-3,
                uss: None,
                operating_points: vec![OperatingPoint {
                    condition: Condition::Unmasked,
                    target_far: 1e-3,
                    threshold: 0.363,
                    measured_far: 1e-3,
                    measured_tar: 0.99,
                    genuine_pairs: 140,
                    impostor_pairs: 140,
                }],
            },
        };
        Bundle::create(manifest, self.model.clone(), &self.signer)
            .unwrap()
            .write(&self.path("model.mgb"))
            .unwrap();
    }

    fn run(&self, extra: &[&str]) -> Output {
        common::edge_command()
            .arg("--config")
            .arg(&self.cfg)
            .args(["run", "--dry-run"])
            .args(extra)
            .output()
            .unwrap()
    }

    fn gallery_config(&self) -> GalleryConfig {
        GalleryConfig {
            path: self.path("gallery.bin"),
            key: KeySource::File(self.path("gallery.key")),
            state: Some(self.path("state.toml")),
        }
    }

    /// The last audit entry's `data`.
    fn last_audit(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path("audit.jsonl")).unwrap();
        let line = text.lines().last().unwrap();
        serde_json::from_str::<serde_json::Value>(line).unwrap()["data"].clone()
    }
}

fn door() -> Option<Door> {
    let sface = common::kit("models/sface_2021dec.fp32.onnx")?;
    let yunet = common::kit("models/yunet_2023mar.fp32.onnx")?;
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    image::RgbImage::from_pixel(160, 120, image::Rgb([90, 90, 90]))
        .save(frames.join("f000.png"))
        .unwrap();
    let signer = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let text = format!(
        r#"
[model]
flip_fusion = false
[model.bundle]
path = "model.mgb"
trusted_keys = ["{key}"]

[detector]
path = "{yunet}"

[gallery]
path = "gallery.bin"
key_file = "gallery.key"

[camera]
source = "dir"
path = "frames"
fps = 10

[door.relay]
chip = "/dev/gpiochip-not-used-in-a-dry-run"
line = 17
active = "high"

[audit]
path = "audit.jsonl"
"#,
        key = hex::encode(signer.verifying_key().as_bytes()),
        yunet = yunet.display(),
    );
    let cfg = dir.path().join("edge.toml");
    std::fs::write(&cfg, text).unwrap();
    Some(Door {
        model: std::fs::read(&sface).unwrap(),
        cfg,
        dir,
        signer,
    })
}

#[test]
fn bundle_downgrade_is_refused_unless_allowed() {
    let Some(d) = door() else { return };
    d.ship(2);
    let o = d.run(&[]);
    let (out, err) = common::output_text(&o);
    assert!(o.status.success(), "{out} {err}");
    let state = std::fs::read_to_string(d.path("state.toml")).unwrap();
    assert!(state.contains("bundle_version = 2"), "{state}");

    d.ship(1);
    let o = d.run(&[]);
    let (_, err) = common::output_text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("model.mgb")
            && err.contains("bundle_version 1")
            && err.contains("version 2")
            && err.contains("--allow-downgrade"),
        "{err}"
    );
    let entry = d.last_audit();
    assert_eq!(entry["event"], "startup_failed", "{entry}");
    assert_eq!(entry["reason"], "bundle_downgrade", "{entry}");
    assert!(edge::audit::verify_file(&d.path("audit.jsonl")).is_ok());

    let o = d.run(&["--allow-downgrade"]);
    assert!(o.status.success(), "{:?}", common::output_text(&o));
    // The downgrade is now the version last run: a plain start runs it again.
    let o = d.run(&[]);
    assert!(o.status.success(), "{:?}", common::output_text(&o));
    d.ship(3);
    assert!(d.run(&[]).status.success());
}

#[test]
fn start_up_failures_are_audited() {
    let Some(d) = door() else { return };
    d.ship(1);
    // A gallery bound to the bundle's model, written three times.
    let cfg = d.gallery_config();
    let store = GalleryStore::from_config(&cfg).unwrap();
    let model_id = shared::sha256_hex(&d.model);
    let v: Vec<f32> = (0..128).map(|i| (i as f32 * 0.37).sin()).collect();
    let t = shared::Template {
        embedding: Embedding::normalize(&v).unwrap(),
        quality: 1.0,
        masked: None,
        created_unix: 0,
    };
    store
        .edit(
            None,
            Some((&model_id, 128)),
            |g| -> Result<(), StoreError> {
                gallery::add_person(g, "ada", vec![t.clone()], 1).unwrap();
                Ok(())
            },
        )
        .unwrap();
    let old = std::fs::read(&cfg.path).unwrap();
    for name in ["bo", "cy"] {
        store
            .edit(None, None, |g| -> Result<(), StoreError> {
                gallery::add_person(g, name, vec![t.clone()], 1).unwrap();
                Ok(())
            })
            .unwrap();
    }
    assert!(d.run(&[]).status.success());

    // Rolled back: the older file is refused, both generations named.
    let current = std::fs::read(&cfg.path).unwrap();
    std::fs::write(&cfg.path, &old).unwrap();
    let o = d.run(&[]);
    let (_, err) = common::output_text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("gallery.bin") && err.contains("generation 1") && err.contains("generation 3"),
        "{err}"
    );
    assert_eq!(d.last_audit()["reason"], "gallery_rollback");
    std::fs::write(&cfg.path, &current).unwrap();

    // A wrong gallery key.
    let key = d.path("gallery.key");
    let right_key = std::fs::read(&key).unwrap();
    shared::atomic::atomic_write_mode(
        &key,
        format!("{}\n", "cd".repeat(32)).as_bytes(),
        Some(0o600),
    )
    .unwrap();
    let o = d.run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        d.last_audit()["reason"],
        "gallery_key",
        "{}",
        d.last_audit()
    );
    shared::atomic::atomic_write_mode(&key, &right_key, Some(0o600)).unwrap();

    // A bundle modified after signing.
    let mut bytes = std::fs::read(d.path("model.mgb")).unwrap();
    let n = bytes.len();
    bytes[n - 2048] ^= 1;
    std::fs::write(d.path("model.mgb"), &bytes).unwrap();
    let o = d.run(&[]);
    assert_eq!(o.status.code(), Some(2));
    let entry = d.last_audit();
    assert_eq!(entry["reason"], "bad_bundle", "{entry}");
    assert!(
        entry["error"].as_str().unwrap().contains("model.mgb"),
        "{entry}"
    );

    // A missing model.
    std::fs::remove_file(d.path("model.mgb")).unwrap();
    let o = d.run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(d.last_audit()["reason"], "missing_model");
    assert!(edge::audit::verify_file(&d.path("audit.jsonl")).is_ok());
}
