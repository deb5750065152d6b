//! trainer -> export -> bundle -> edge, end to end on the CI budget (`DemoConfig::smoke`):
//! the same driver as `make demo`, with assertions on what each side produced.

use maskgate_e2e::ablation;
use maskgate_e2e::demo::{Demo, DemoConfig};
use maskgate_e2e::tools::Tools;
use std::path::Path;
use std::process::Command;

/// The built `trainer` and `edge`, or a skip outside CI (a failure under CI=true).
fn tools() -> Option<Tools> {
    match Tools::locate() {
        Ok(t) => Some(t),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true and the binaries are missing: {e:#}")
        }
        Err(e) => {
            eprintln!("skipping: {e:#}");
            None
        }
    }
}

/// `edge identify` with `config`; returns (exit code, stderr).
fn edge_identify(tools: &Tools, config: &Path, image: &Path) -> (Option<i32>, String) {
    let out = Command::new(&tools.edge)
        .arg("--config")
        .arg(config)
        .arg("identify")
        .arg(image)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn trainer_export_bundle_edge_end_to_end() {
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("demo");
    let cfg = DemoConfig::smoke();
    let r = Demo::new(cfg.clone(), &tools, &root)
        .unwrap()
        .run_all()
        .unwrap();

    // The trainer learned something on both conditions (chance is 50 %).
    for cond in ["unmasked", "masked_probe"] {
        let row = r
            .eval
            .iter()
            .find(|e| e.model == "student" && e.condition == cond)
            .unwrap_or_else(|| panic!("no student {cond} row in {:?}", r.eval));
        assert!(
            row.accuracy > 0.55,
            "student {cond} accuracy {}",
            row.accuracy
        );
        assert_eq!(row.pairs, u64::from(cfg.val_pairs));
    }

    // The bundle verifies with the demo's public key, carries the shipped model byte for byte,
    // and its thresholds belong to that model.
    let public = shared::bundle::keys::read_verifying_key(&root.join("keys/demo.pub")).unwrap();
    let bundle = shared::Bundle::open(&r.bundle, &[public]).unwrap();
    let shipped = std::fs::read(&r.shipped_model).unwrap();
    assert_eq!(bundle.model, shipped);
    assert_eq!(
        r.shipped_variant, cfg.variant,
        "f16 stays within its budget"
    );
    assert_eq!(r.thresholds.model_id, bundle.manifest.model_sha256);
    assert_eq!(bundle.manifest.thresholds, r.thresholds);
    let (unmasked, masked) = (
        r.thresholds.threshold(shared::Condition::Unmasked).unwrap(),
        r.thresholds.threshold(shared::Condition::Masked).unwrap(),
    );
    assert!(unmasked > 0.0 && unmasked < 1.0 && masked > 0.0 && masked < 1.0);

    // The edge enrolled every door person and never let a stranger in, by photo or at the door.
    assert_eq!(r.enrolled, cfg.door_people as usize);
    assert_eq!(r.unmasked.probes, (cfg.door_people * cfg.probes) as usize);
    assert_eq!(r.masked.probes, (cfg.door_people * cfg.probes) as usize);
    assert_eq!(
        r.strangers.probes,
        (cfg.door_strangers * cfg.probes * 2) as usize
    );
    assert_eq!(r.unmasked.errors + r.masked.errors + r.strangers.errors, 0);
    assert_eq!(r.strangers.false_accepts, 0, "{:?}", r.strangers);
    // The edge decided with the bundle's calibrated thresholds: judging its reported scores
    // against the selected operating point gives exactly its own accept decisions.
    let selected = r
        .operating_points
        .iter()
        .find(|p| p.target_far == r.thresholds.selected_far)
        .expect("the selected operating point is calibrated");
    assert_eq!(selected.unmasked_identified, r.unmasked.correct);
    assert_eq!(selected.masked_identified, r.masked.correct);
    assert_eq!(selected.strangers_accepted, r.strangers.false_accepts);
    assert_eq!(
        selected.wrong_person,
        r.unmasked.false_accepts + r.masked.false_accepts
    );
    let d = &r.door;
    assert_eq!(d.visitors_enrolled, cfg.door_people as usize);
    assert_eq!(d.strangers_let_in, 0);
    assert_eq!(d.unlocked_wrong_person, 0);
    assert!(
        d.denials >= d.visitors_strangers,
        "every stranger is denied: {d:?}"
    );
    assert_eq!(
        d.relay_pulses, d.unlocked_right_person,
        "one relay pulse per unlock: {d:?}"
    );
    assert!(
        d.audit.contains(": ok,"),
        "audit chain verifies: {}",
        d.audit
    );

    // The report and its plot were written.
    assert!(std::fs::read(&r.roc_png).unwrap().starts_with(b"\x89PNG"));

    // A tampered bundle and an untrusted key both stop the edge with a clear error.
    let config = root.join("edge/edge.toml");
    let probe = root.join("data/door/person_000/probe_0.png");
    let (code, _) = edge_identify(&tools, &config, &probe);
    assert_eq!(code, Some(0), "the untouched setup runs");
    let mut bytes = std::fs::read(&r.bundle).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&r.bundle, &bytes).unwrap();
    let (code, err) = edge_identify(&tools, &config, &probe);
    assert_eq!(code, Some(2), "tampered bundle refused: {err}");
    assert!(err.contains("student.mgb"), "error names the bundle: {err}");
    bytes[mid] ^= 0x40;
    std::fs::write(&r.bundle, &bytes).unwrap();
    let other = shared::bundle::keys::generate().verifying_key();
    let text = std::fs::read_to_string(&config).unwrap();
    let untrusting = root.join("edge/untrusting.toml");
    std::fs::write(
        &untrusting,
        text.replace(
            "trusted_key_files = [",
            &format!(
                "trusted_keys = [\"{}\"]\ntrusted_key_files = [",
                hex(&other.to_bytes())
            ),
        )
        .replace(
            &format!("{}", root.join("keys/demo.pub").display()),
            "/nonexistent/none.pub",
        ),
    )
    .unwrap();
    let (code, err) = edge_identify(&tools, &untrusting, &probe);
    assert_eq!(code, Some(2), "untrusted signer refused: {err}");
}

#[test]
fn every_ablation_row_trains_and_evaluates() {
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = DemoConfig {
        teacher_steps: 4,
        student_steps: 4,
        ..DemoConfig::smoke()
    };
    let rows = ablation::run(&tools, dir.path(), &cfg, &[0], 2).unwrap();
    let names: Vec<&str> = ablation::variants(4).iter().map(|v| v.name).collect();
    assert_eq!(
        rows.iter().map(|r| r.variant.as_str()).collect::<Vec<_>>(),
        names
    );
    for r in &rows {
        assert!(r.unmasked.accuracy.is_finite() && r.masked_probe.accuracy.is_finite());
    }
    let table = ablation::table(&rows);
    assert_eq!(table.lines().count(), 2 + names.len(), "{table}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
