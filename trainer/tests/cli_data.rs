//! The data subcommands, run as a user runs them.

use std::path::Path;
use std::process::{Command, Output};
use trainer::data::{FaceSource, PairSet, RecordDataset};

fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = trainer(args);
    assert!(
        out.status.success(),
        "trainer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A team-kit file (`../shared`); under `CI=true` a missing one fails the test.
fn kit_file(rel: &str) -> Option<std::path::PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(rel);
    if path.exists() {
        return Some(path);
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "team kit file {} is missing",
        path.display()
    );
    eprintln!("skipping: team kit file {} is missing", path.display());
    None
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn check_still_works() {
    assert!(ok(&["--check"]).contains("libtorch sum check = 6"));
}

#[test]
fn synth_then_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    let args = [
        "synth",
        "--out",
        p(&out),
        "--identities",
        "3",
        "--images-per-id",
        "2",
        "--val-identities",
        "4",
        "--val-pairs",
        "20",
        "--seed",
        "5",
    ];
    ok(&args);
    let text = ok(&["data", "inspect", p(&out.join("train.rec"))]);
    assert!(
        text.contains("6 images, 3 classes, key-0 meta record: yes"),
        "{text}"
    );
    let text = ok(&["data", "inspect", p(&out.join("synth_val_masked.bin"))]);
    assert!(text.contains("20 pairs (10 same, 10 different)"), "{text}");
    assert!(std::fs::read_to_string(out.join("synth.toml"))
        .unwrap()
        .contains("seed = 5"));
    // Masked-probe variant of a pair file, with template masks from the team kit.
    if let Some(masks) = kit_file("masks/maskthe_face") {
        let plain = out.join("synth_val.bin");
        let masked = out.join("probe_masked.bin");
        ok(&[
            "data",
            "mask-pairs",
            p(&plain),
            "--out",
            p(&masked),
            "--masks",
            p(&masks),
            "--seed",
            "1",
        ]);
        let (a, b) = (
            PairSet::read(&plain).unwrap(),
            PairSet::read(&masked).unwrap(),
        );
        assert_eq!(a.issame, b.issame);
        for k in 0..a.len() {
            assert_ne!(
                a.pair(k).unwrap().0,
                b.pair(k).unwrap().0,
                "probe {k} is masked"
            );
            assert_eq!(
                a.pair(k).unwrap().1,
                b.pair(k).unwrap().1,
                "reference {k} is not"
            );
        }
    }
    // Difficulty knobs from a TOML file: the synth.toml just written round-trips, and a
    // partial table takes defaults for the rest.
    let knobs = dir.path().join("knobs.toml");
    std::fs::write(&knobs, "noise_sigma = 0.0\nage_max = 0.0\n").unwrap();
    let out2 = dir.path().join("synth2");
    ok(&[
        "synth",
        "--out",
        p(&out2),
        "--identities",
        "2",
        "--images-per-id",
        "1",
        "--val-pairs",
        "0",
        "--difficulty",
        p(&knobs),
    ]);
    let written = std::fs::read_to_string(out2.join("synth.toml")).unwrap();
    assert!(
        written.contains("noise_sigma = 0.0") && written.contains("pose_deg = 6.0"),
        "{written}"
    );
    ok(&[
        "synth",
        "--out",
        p(&dir.path().join("synth3")),
        "--identities",
        "2",
        "--images-per-id",
        "1",
        "--val-pairs",
        "0",
        "--difficulty",
        p(&out2.join("synth.toml")),
    ]);
    std::fs::write(&knobs, "noise_sigma = \"loud\"\n").unwrap();
    let bad = trainer(&["synth", "--out", p(&out2), "--difficulty", p(&knobs)]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("knobs.toml"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let bad = trainer(&["synth", "--out", p(&out), "--difficulty", "brutal"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown difficulty \"brutal\""));
}

#[test]
fn pack_an_image_folder_into_rec_and_bin() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("faces");
    for (id, person) in ["ann", "bo", "cy"].iter().enumerate() {
        std::fs::create_dir_all(folder.join(person)).unwrap();
        for k in 0..3u8 {
            let img = image::RgbImage::from_pixel(112, 112, image::Rgb([id as u8 * 80, k * 50, 7]));
            img.save(folder.join(person).join(format!("{k}.png")))
                .unwrap();
        }
    }
    let (rec, bin) = (dir.path().join("out.rec"), dir.path().join("out.bin"));
    ok(&[
        "pack",
        p(&folder),
        "--rec",
        p(&rec),
        "--bin",
        p(&bin),
        "--pairs",
        "20",
    ]);
    let ds = RecordDataset::open(&rec).unwrap();
    assert_eq!((ds.len(), ds.num_classes()), (9, 3));
    for i in 0..9 {
        let face = ds.read(i).unwrap();
        assert_eq!(face.label as usize, i / 3);
        let file = folder
            .join(["ann", "bo", "cy"][i / 3])
            .join(format!("{}.png", i % 3));
        assert_eq!(
            face.bytes,
            std::fs::read(file).unwrap(),
            "bytes are stored unchanged"
        );
    }
    let pairs = PairSet::read(&bin).unwrap();
    assert_eq!(pairs.len(), 20);
    for k in 0..20 {
        let (a, b) = pairs.pair(k).unwrap();
        let label = |bytes: &[u8]| {
            trainer::data::decode_face(bytes, "pair")
                .unwrap()
                .get_pixel(0, 0)
                .0[0]
        };
        assert_eq!(label(a) == label(b), pairs.issame[k], "pair {k}");
        assert_ne!(a, b, "a pair never repeats one photo");
    }

    // A broken image is reported with its path, and nothing is written.
    std::fs::write(folder.join("bo").join("broken.jpg"), b"not a jpeg").unwrap();
    let rec2 = dir.path().join("again.rec");
    let out = trainer(&["pack", p(&folder), "--rec", p(&rec2)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.jpg") && err.contains("not a decodable image"),
        "{err}"
    );
    assert!(!rec2.exists());
}

#[test]
fn bench_prints_the_table_and_the_h100_need() {
    let text = ok(&["data", "bench", "--images", "40", "--batch", "8"]);
    for needle in [
        "decode",
        "augment+mask",
        "loader: read+decode+augment+batch",
        "needed for mbf on one H100",
        "reached:",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}
