//! The `edge` binary as a user runs it: real models from the team kit, a temp gallery.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

fn edge(args: &[&str]) -> Output {
    common::edge_command().args(args).output().unwrap()
}

use common::output_text as text;

#[test]
fn check_and_config_errors() {
    let o = edge(&["--check"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("ready"));

    let o = edge(&["--config", "/nonexistent/edge.toml", "gallery", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("/nonexistent/edge.toml"),
        "{:?}",
        text(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("edge.toml");
    std::fs::write(&cfg, "[model]\nflip_fusion = maybe\n").unwrap();
    let o = edge(&["--config", cfg.to_str().unwrap(), "gallery", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("edge.toml"), "{:?}", text(&o));

    // The shipped example parses (its model paths do not exist here, so gallery-only commands run).
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("edge.example.toml");
    let text_cfg = std::fs::read_to_string(example).unwrap();
    std::fs::write(&cfg, text_cfg).unwrap();
    let o = edge(&["--config", cfg.to_str().unwrap(), "gallery", "list"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("no one enrolled"));
    let o = edge(&[
        "--config",
        cfg.to_str().unwrap(),
        "identify",
        "/nonexistent.jpg",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("/nonexistent.jpg"), "{:?}", text(&o));
}

struct Kit {
    photos: PathBuf,
    cfg: PathBuf,
    gallery: PathBuf,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

fn kit() -> Option<Kit> {
    let yunet = common::kit("models/yunet_2023mar.fp32.onnx")?;
    let sface = common::kit("models/sface_2021dec.fp32.onnx")?;
    let photos = common::kit("faces/real-small")?;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("edge.toml");
    std::fs::write(&cfg, common::sface_config(&yunet, &sface, dir.path(), 320)).unwrap();
    Some(Kit {
        photos,
        cfg,
        gallery: dir.path().join("gallery.bin"),
        key: dir.path().join("gallery.key"),
        _dir: dir,
    })
}

impl Kit {
    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--config", self.cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        edge(&all)
    }
    fn photo(&self, rel: &str) -> String {
        self.photos.join(rel).display().to_string()
    }
}

#[test]
fn enroll_identify_verify_and_manage_the_gallery() {
    let Some(k) = kit() else { return };
    let o = k.run(&[
        "--json",
        "enroll",
        "--name",
        "obama",
        &k.photo("obama/obama.jpg"),
        &k.photo("obama/obama-480p.jpg"),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(v["templates_added"], 2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&k.key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&k.gallery).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let o = k.run(&["enroll", "--name", "biden", &k.photo("biden/biden.jpg")]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("enrolled biden"), "{:?}", text(&o));

    let o = k.run(&["--json", "identify", &k.photo("obama/obama2.jpg")]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    let id = &v["faces"][0]["identification"];
    assert_eq!(id["name"], "obama");
    assert_eq!(id["accepted"], true);
    assert!(id["margin"].as_f64().unwrap() > 0.2, "{id}");

    let o = k.run(&[
        "verify",
        &k.photo("biden/biden.jpg"),
        &k.photo("biden/biden2.jpg"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(text(&o).0.starts_with("same person"), "{:?}", text(&o));

    // Gallery management needs no models.
    let o = k.run(&["gallery", "rename", "obama", "Barack Obama"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = k.run(&["--json", "gallery", "list"]);
    let v: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    let names: Vec<&str> = v["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Barack Obama", "biden"]);
    assert_eq!(v["people"][0]["templates"], 2);
    let o = k.run(&["gallery", "export"]);
    let (out, _) = text(&o);
    assert!(
        out.contains("Barack Obama")
            && !out.contains("template_embeddings")
            && !out.contains("\"mean\""),
        "{out}"
    );
    let o = k.run(&["gallery", "export", "--with-templates"]);
    assert!(text(&o).0.contains("template_embeddings"));

    // Failures leave the gallery byte-identical.
    let before = std::fs::read(&k.gallery).unwrap();
    let dir = k.cfg.parent().unwrap();
    let corrupt = dir.join("corrupt.jpg");
    let bytes = std::fs::read(k.photo("rose_leslie/img1.jpg")).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    let o = k.run(&[
        "enroll",
        "--name",
        "rose",
        &k.photo("rose_leslie/img2.jpg"),
        corrupt.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("corrupt.jpg"), "{:?}", text(&o));
    let blank = dir.join("blank.png");
    image::RgbImage::from_pixel(200, 150, image::Rgb([40, 90, 160]))
        .save(&blank)
        .unwrap();
    let o = k.run(&["identify", blank.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("no face"), "{:?}", text(&o));
    let o = k.run(&["enroll", "--name", "nobody", blank.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("no face"), "{:?}", text(&o));
    let o = k.run(&["gallery", "remove", "nobody"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(&k.gallery).unwrap(), before);

    let mut tampered = before.clone();
    let at = tampered.len() - 20;
    tampered[at] ^= 0x04;
    std::fs::write(&k.gallery, &tampered).unwrap();
    let o = k.run(&["gallery", "remove", "biden"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("gallery.bin") && text(&o).1.contains("modified"),
        "{:?}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(&k.gallery).unwrap(),
        tampered,
        "a refused gallery is not rewritten"
    );
    std::fs::write(&k.gallery, &before).unwrap();

    let real_key = std::fs::read(&k.key).unwrap();
    std::fs::remove_file(&k.key).unwrap();
    edge::GalleryKey::create_file(&k.key).unwrap();
    let o = k.run(&["gallery", "rename", "biden", "Joe"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("wrong key"), "{:?}", text(&o));
    assert_eq!(std::fs::read(&k.gallery).unwrap(), before);
    std::fs::remove_file(&k.key).unwrap();
    shared::atomic::atomic_write_mode(&k.key, &real_key, Some(0o600)).unwrap();

    let o = k.run(&["gallery", "remove", "biden"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = k.run(&["gallery", "list"]);
    assert!(!text(&o).0.contains("biden") && text(&o).0.contains("Barack Obama"));
}

#[test]
fn bench_prints_the_machine_and_every_row() {
    let Some(k) = kit() else { return };
    let photo = k.photos.join("obama/obama1.jpg");
    let o = edge(&[
        "--config",
        k.cfg.to_str().unwrap(),
        "bench",
        photo.to_str().unwrap(),
        "--runs",
        "1",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let machine = out.lines().find(|l| l.starts_with("machine: ")).unwrap();
    assert!(
        machine.contains(" cores, ") && machine.contains(std::env::consts::ARCH),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("date: ") && l.ends_with(" UTC")),
        "{out}"
    );
    for row in [
        "| detect (",
        "| align |",
        "| embed (",
        "| 1:N search (1000 people,",
        "| 1:N search (10000 people,",
        "| 1:N search (100000 people,",
        "| end-to-end decision per frame (1001 people; unlocked after ",
        "| end-to-end time to unlock (",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(row)),
            "no row {row:?} in\n{out}"
        );
    }
    // Every table row carries a number.
    for line in out
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| stage"))
    {
        let cell = line.trim_end_matches(" |").rsplit("| ").next().unwrap();
        assert!(cell.parse::<f64>().is_ok(), "{line}");
    }
}
