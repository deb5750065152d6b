//! The edge as the end-to-end demo drives it, on aligned face crops (`[detector] aligned =
//! true`): enroll and identify many crops in one process, then a dry run of the door on a
//! directory of frames. The crops are made here from the kit's real photos with the YuNet path
//! and the shared alignment, the way a face database exports them.

mod common;

use edge::pipeline::load_image;
use std::path::{Path, PathBuf};
use std::process::Output;

fn edge(cfg: &Path, args: &[&str]) -> Output {
    common::edge_command()
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap()
}

use common::output_text as text;

/// The kit config with `[detector] aligned = true` instead of the YuNet file.
fn aligned_config(yunet_config: &str) -> String {
    let start = yunet_config.find("[detector]").unwrap();
    let end = yunet_config.find("[gallery]").unwrap();
    format!(
        "{}[detector]\naligned = true\n\n{}",
        &yunet_config[..start],
        &yunet_config[end..]
    )
}

struct Demo {
    dir: tempfile::TempDir,
    /// `[detector] aligned = true` config (its gallery in `dir`).
    cfg: PathBuf,
    crops: PathBuf,
}

impl Demo {
    fn crop(&self, name: &str) -> String {
        self.crops.join(format!("{name}.png")).display().to_string()
    }
}

/// Aligned 112x112 crops of kit photos, written as PNG, and an aligned-mode config.
fn demo() -> Option<Demo> {
    let yunet = common::kit("models/yunet_2023mar.fp32.onnx")?;
    let sface = common::kit("models/sface_2021dec.fp32.onnx")?;
    let photos = common::kit("faces/real-small")?;
    let dir = tempfile::tempdir().unwrap();
    let yunet_text = common::sface_config(&yunet, &sface, dir.path(), 320);
    let yunet_cfg = edge::Config::from_toml(&yunet_text, "yunet.toml", dir.path()).unwrap();
    let pipeline = edge::Pipeline::load(&yunet_cfg).unwrap();
    let crops = dir.path().join("crops");
    std::fs::create_dir(&crops).unwrap();
    for (name, photo) in [
        ("obama_a", "obama/obama.jpg"),
        ("obama_b", "obama/obama-480p.jpg"),
        ("obama_probe", "obama/obama2.jpg"),
        ("biden_a", "biden/biden.jpg"),
        ("biden_probe", "biden/biden2.jpg"),
        ("stranger", "rose_leslie/img1.jpg"),
    ] {
        let image = load_image(&photos.join(photo)).unwrap();
        let faces = pipeline.detect(&image).unwrap();
        let crop = pipeline
            .recognizer()
            .align(&image, &faces[0].landmarks)
            .unwrap();
        assert_eq!(crop.dimensions(), (112, 112));
        crop.save(crops.join(format!("{name}.png"))).unwrap();
    }
    let cfg = dir.path().join("aligned.toml");
    std::fs::write(&cfg, aligned_config(&yunet_text)).unwrap();
    Some(Demo { dir, cfg, crops })
}

#[test]
fn aligned_crops_enroll_identify_in_one_batch_and_verify() {
    let Some(d) = demo() else { return };
    for (name, crops) in [
        ("obama", vec![d.crop("obama_a"), d.crop("obama_b")]),
        ("biden", vec![d.crop("biden_a")]),
    ] {
        let mut args = vec!["--json", "enroll", "--name", name];
        args.extend(crops.iter().map(String::as_str));
        let o = edge(&d.cfg, &args);
        assert!(o.status.success(), "{:?}", text(&o));
        let v: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
        assert_eq!(v["templates_added"], crops.len(), "{v}");
    }

    // A corrupt file and a picture that is not an aligned crop, among good crops.
    let corrupt = d.dir.path().join("corrupt.png");
    let bytes = std::fs::read(d.crop("stranger")).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() / 3]).unwrap();
    let wide = d.dir.path().join("wide.png");
    image::RgbImage::from_pixel(160, 120, image::Rgb([90, 90, 90]))
        .save(&wide)
        .unwrap();
    let probes = [
        d.crop("obama_probe"),
        d.crop("biden_probe"),
        d.crop("stranger"),
        corrupt.display().to_string(),
        wide.display().to_string(),
    ];
    let mut args = vec!["--json", "identify"];
    args.extend(probes.iter().map(String::as_str));
    let o = edge(&d.cfg, &args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "bad images are reported, not fatal: {:?}",
        text(&o)
    );
    let v: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    let results = v.as_array().expect("a list of per-image results");
    assert_eq!(results.len(), probes.len(), "{v:#}");
    for (r, p) in results.iter().zip(&probes) {
        assert_eq!(r["image"], p.as_str());
    }
    for (k, who) in [(0, "obama"), (1, "biden")] {
        let best = &results[k]["best"];
        assert_eq!(best["name"], who, "{:#}", results[k]);
        assert_eq!(best["accepted"], true, "{:#}", results[k]);
        assert_eq!(best["condition"], "unmasked");
        assert!(best["score"].as_f64().unwrap() >= best["threshold"].as_f64().unwrap());
        assert!(results[k]["error"].is_null());
        // One face per aligned crop, on the template, with the gate's measures.
        let faces = results[k]["faces"].as_array().unwrap();
        assert_eq!(faces.len(), 1);
        assert_eq!(faces[0]["face"]["score"], 1.0);
        let eyes = faces[0]["quality"]["measures"]["eye_distance_px"]
            .as_f64()
            .unwrap();
        assert!((eyes - 35.24).abs() < 0.01, "template eye distance: {eyes}");
    }
    assert_eq!(results[2]["best"]["accepted"], false, "{:#}", results[2]);
    assert!(results[2]["error"].is_null());
    let err = results[3]["error"].as_str().unwrap();
    assert!(err.contains("corrupt.png"), "{err}");
    let err = results[4]["error"].as_str().unwrap();
    assert!(err.contains("160x120") && err.contains("112x112"), "{err}");

    // Human output: one line per image, same order; a directory is read in name order.
    let o = edge(&d.cfg, &["identify", d.crops.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let out = text(&o).0;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(
        lines[0].contains("biden_a.png: biden (score"),
        "{}",
        lines[0]
    );
    assert!(lines[5].contains("stranger.png: unknown"), "{}", lines[5]);

    // A face database: one folder per person, walked recursively.
    let db = d.dir.path().join("db");
    for (who, crop) in [("obama", "obama_probe"), ("biden", "biden_probe")] {
        std::fs::create_dir_all(db.join(who)).unwrap();
        std::fs::copy(d.crop(crop), db.join(who).join("1.png")).unwrap();
    }
    let o = edge(&d.cfg, &["--json", "identify", db.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["best"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["biden", "obama"]);
    let empty = d.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = edge(
        &d.cfg,
        &["identify", empty.to_str().unwrap(), &d.crop("stranger")],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "a named directory without images is a usage error"
    );
    assert!(text(&o).1.contains("no .png/.jpg"), "{:?}", text(&o));

    // One image: the single-photo contract (exit 0 accepted / 1 nobody / 2 error).
    let o = edge(&d.cfg, &["identify", &d.crop("stranger")]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let o = edge(&d.cfg, &["identify", wide.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("wide.png") && text(&o).1.contains("160x120"),
        "{:?}",
        text(&o)
    );
    let o = edge(
        &d.cfg,
        &["verify", &d.crop("obama_a"), &d.crop("obama_probe")],
    );
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let o = edge(
        &d.cfg,
        &["verify", &d.crop("obama_a"), wide.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("wide.png"), "{:?}", text(&o));

    // Enrollment skips a crop of the wrong shape with its reason, keeps the rest.
    let o = edge(
        &d.cfg,
        &[
            "enroll",
            "--name",
            "biden",
            "--update",
            &d.crop("biden_probe"),
            wide.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o).0.contains("skipped") && text(&o).0.contains("160x120"),
        "{:?}",
        text(&o)
    );

    // The bench times the same path; live enrollment needs a real detector and says so.
    let o = edge(
        &d.cfg,
        &[
            "bench",
            &d.crop("obama_probe"),
            "--runs",
            "1",
            "--templates",
            "100",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let out = text(&o).0;
    assert!(
        out.contains("| load detector (aligned crops 112x112) |"),
        "{out}"
    );
    assert!(
        out.contains("| end-to-end decision per frame (1001 people; unlocked after"),
        "{out}"
    );
    let o = edge(&d.cfg, &["enroll", "--camera", "--name", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("needs a face detector"),
        "{:?}",
        text(&o)
    );

    // An expired validity window: the best match is still named, but not accepted.
    let cfg = edge::Config::load(&d.cfg).unwrap();
    let store = edge::GalleryStore::from_config(&cfg.gallery).unwrap();
    let mut g = store.load().unwrap().unwrap();
    let obama = g
        .people
        .iter_mut()
        .find(|p| p.display_name == "obama")
        .unwrap();
    obama.valid_until_unix = Some(1_000);
    store.replace(&mut g).unwrap();
    let o = edge(
        &d.cfg,
        &[
            "--json",
            "identify",
            &d.crop("obama_probe"),
            &d.crop("biden_probe"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(v[0]["best"]["name"], "obama");
    assert_eq!(v[0]["best"]["accepted"], false, "{v:#}");
    assert_eq!(v[0]["best"]["outside_validity"], true);
    assert_eq!(v[1]["best"]["accepted"], true);
}

#[test]
fn dry_run_on_a_directory_unlocks_for_a_member_and_denies_a_stranger() {
    let Some(d) = demo() else { return };
    let o = edge(
        &d.cfg,
        &[
            "enroll",
            "--name",
            "obama",
            &d.crop("obama_a"),
            &d.crop("obama_b"),
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));

    // Relative paths are taken from the config's directory, whatever the working directory.
    // 10 fps: obama for 4 frames (unlock on the 3rd), then a stranger for 5 (denied on the 7th
    // frame), the relock 500 ms after the unlock falls on frame 7.
    let frames = d.dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for k in 0..9 {
        let src = if k < 4 { "obama_probe" } else { "stranger" };
        std::fs::copy(d.crop(src), frames.join(format!("f{k:03}.png"))).unwrap();
    }
    let audit = d.dir.path().join("audit.jsonl");
    let mut text_cfg = std::fs::read_to_string(&d.cfg).unwrap();
    text_cfg += r#"
[camera]
source = "dir"
path = "frames"
fps = 10

[door.relay]
chip = "/dev/gpiochip-not-used-in-a-dry-run"
line = 17
active = "high"
unlock_ms = 500
"#;
    std::fs::write(&d.cfg, text_cfg).unwrap();

    let o = edge(&d.cfg, &["--json", "run", "--dry-run"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["mode"], "replay");
    assert_eq!(v["stop_reason"], "end of stream", "{v:#}");
    assert_eq!(v["frames"]["captured"], 9);
    assert_eq!(v["frames"]["decided"], 9, "lockstep: no frame dropped");
    assert_eq!(v["counts"]["unlocked"], 1, "{v:#}");
    assert_eq!(v["counts"]["denied"], 1, "{v:#}");
    assert_eq!(v["counts"]["relay_energised"], 1);
    let events = v["events"].as_array().unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["relay", "started", "relay", "unlocked", "denied", "relay", "relocked", "stopped"],
        "{v:#}"
    );
    let (energise, unlocked) = (&events[2], &events[3]);
    assert_eq!(energise["energised"], true);
    assert_eq!(energise["level"], "high");
    assert_eq!(energise["frame"], 2);
    assert_eq!(unlocked["frame"], 2);
    assert_eq!(unlocked["at_ms"], 200);
    assert_eq!(unlocked["person"]["name"], "obama");
    assert_eq!(unlocked["condition"], "unmasked");
    assert!(unlocked["score"].as_f64().unwrap() > 0.363);
    assert_eq!(events[4]["frame"], 6);
    assert_eq!(events[5]["energised"], false);
    assert_eq!(events[6]["at_ms"], 700);

    // The audit log holds the same decisions and its chain verifies.
    assert_eq!(v["audit"]["entries"], 5, "{v:#}");
    let o = edge(&d.cfg, &["audit", "verify", audit.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("ok, 5 entries"), "{:?}", text(&o));

    // The human report: a line per event and the summary; a second run appends to the chain.
    let o = edge(&d.cfg, &["run", "--dry-run"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let out = text(&o).0;
    assert!(out.contains("UNLOCKED for obama"), "{out}");
    assert!(out.contains("DENIED unknown face"), "{out}");
    assert!(
        out.lines().last().unwrap().contains("1 unlocks, 1 denials"),
        "{out}"
    );
    let o = edge(&d.cfg, &["audit", "verify", audit.to_str().unwrap()]);
    assert!(text(&o).0.contains("ok, 10 entries"), "{:?}", text(&o));

    // The same frames as a recording with its own timestamps (20 ms apart): decided on that
    // clock, so the 500 ms relock never comes before the end, where the door is locked anyway.
    let index: String = (0..9)
        .map(|k| format!("{} f{k:03}.png\n", k * 20))
        .collect();
    std::fs::write(frames.join("timestamps.txt"), index).unwrap();
    let text_cfg = std::fs::read_to_string(&d.cfg)
        .unwrap()
        .replace("source = \"dir\"", "source = \"recorded\"");
    std::fs::write(&d.cfg, text_cfg).unwrap();
    let o = edge(&d.cfg, &["--json", "run", "--dry-run"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(v["stop_reason"], "end of stream", "{v:#}");
    assert_eq!(v["frames"]["decided"], 9);
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["relay", "started", "relay", "unlocked", "denied", "relay", "stopped"],
        "{v:#}"
    );
    assert_eq!(v["events"][3]["at_ms"], 40);
    assert_eq!(v["events"][5]["at_ms"], 160, "locked at the stop: {v:#}");
}

#[test]
fn half_filled_aligned_detector_sections_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::sface_config(
        Path::new("/models/yunet.onnx"),
        Path::new("/models/sface.onnx"),
        dir.path(),
        320,
    );
    let cfg = dir.path().join("edge.toml");
    let cases = [
        (
            base.replace("[detector]", "[detector]\naligned = true"),
            vec!["edge.toml", "aligned = true", "path, input_size"],
        ),
        (
            base.replace("[detector]", "[detector]\naligned = \"yes\""),
            vec!["edge.toml", "aligned"],
        ),
        (
            aligned_config(&base).replace("aligned = true", "max_faces = 1"),
            vec!["edge.toml", "needs `path`"],
        ),
    ];
    for (text_cfg, expect) in cases {
        std::fs::write(&cfg, &text_cfg).unwrap();
        let o = edge(&cfg, &["identify", "/nonexistent/face.png"]);
        assert_eq!(o.status.code(), Some(2), "{text_cfg}");
        let err = text(&o).1;
        for e in expect {
            assert!(err.contains(e), "{e:?} not in {err}");
        }
    }
}
