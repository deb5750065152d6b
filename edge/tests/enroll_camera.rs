//! `edge enroll --camera` as a user runs it: a directory "camera" of the kit's photos, the kit's
//! YuNet + SFace, a temp gallery.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Output, Stdio};

struct Door {
    cfg: PathBuf,
    cam: PathBuf,
    gallery: PathBuf,
    dir: tempfile::TempDir,
}

/// A config whose `[camera]` is a directory, with `enroll` (keys of `[enroll]`) added.
///
/// `[enroll] timeout_secs` is wall-clock time: a few frames of YuNet + SFace under qemu on a
/// loaded 2-core machine have taken longer than the default 60 s. These tests are about the
/// guidance and the frame budget, so the time limit is set far out of the way.
fn door(enroll: &str) -> Option<Door> {
    let yunet = common::kit("models/yunet_2023mar.fp32.onnx")?;
    let sface = common::kit("models/sface_2021dec.fp32.onnx")?;
    let dir = tempfile::tempdir().unwrap();
    let cam = dir.path().join("cam");
    std::fs::create_dir(&cam).unwrap();
    let mut text = common::sface_config(&yunet, &sface, dir.path(), 320);
    text += &format!(
        "\n[camera]\nsource = \"dir\"\npath = \"{}\"\n[enroll]\ntimeout_secs = 3600\n{enroll}\n",
        cam.display()
    );
    let cfg = dir.path().join("edge.toml");
    std::fs::write(&cfg, text).unwrap();
    Some(Door {
        cfg,
        gallery: dir.path().join("gallery.bin"),
        cam,
        dir,
    })
}

/// The person holds still: every photo arrives twice in a row, like consecutive video frames.
fn fill_camera(d: &Door, person: &str, photos: &[&str]) -> Option<()> {
    for p in photos {
        let src = common::kit(&format!("faces/real-small/{person}/{p}.jpg"))?;
        for copy in ["a", "b"] {
            std::fs::copy(&src, d.cam.join(format!("{p}_{copy}.jpg"))).unwrap();
        }
    }
    Some(())
}

fn edge(d: &Door, args: &[&str], stdin: &str) -> Output {
    let mut child = common::edge_command()
        .arg("--config")
        .arg(&d.cfg)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

use common::output_text as text;

const OBAMA: &[&str] = &["obama", "obama1", "obama2"];

#[test]
fn camera_enrollment_is_guided_and_then_identifies() {
    let Some(d) = door("") else { return };
    let Some(()) = fill_camera(&d, "obama", OBAMA) else {
        return;
    };
    let o = edge(
        &d,
        &["enroll", "--camera", "--name", "Obama", "--frames", "2"],
        "",
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("enrolled Obama") && out.contains("2 camera frame"),
        "{out}"
    );
    // Guidance for the person went to stderr, including the kept frames.
    assert!(err.contains("[1/2] good"), "{err}");
    assert!(err.contains("hold still"), "{err}");

    let o = edge(&d, &["--json", "gallery", "list"], "");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["people"][0]["name"], "Obama");
    assert_eq!(v["people"][0]["templates"], 2);

    // A photo that was not among the camera frames. real_photos.rs requires this one to pass
    // the quality gate (the kit's smallest face, 54 px between the eyes against a 20 px gate).
    let probe = common::kit("faces/real-small/obama/obama_small.jpg").unwrap();
    let o = edge(&d, &["--json", "identify", probe.to_str().unwrap()], "");
    assert!(o.status.success(), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = &v["faces"][0]["identification"];
    assert_eq!(
        (&id["name"], &id["accepted"]),
        (&"Obama".into(), &true.into()),
        "{v}"
    );

    // The same name again is refused before capturing.
    let o = edge(
        &d,
        &["enroll", "--camera", "--name", "Obama", "--frames", "2"],
        "",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("already enrolled"), "{:?}", text(&o));
}

#[test]
fn json_events_report_each_frame() {
    let Some(d) = door("frames = 1\n") else {
        return;
    };
    let Some(()) = fill_camera(&d, "obama", &["obama1"]) else {
        return;
    };
    let o = edge(&d, &["--json", "enroll", "--camera", "--name", "Obama"], "");
    assert!(o.status.success(), "{:?}", text(&o));
    let events: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&o.stdout)
        .into_iter()
        .map(|v| v.unwrap())
        .collect();
    assert!(events.len() >= 2, "{events:?}");
    assert!(events.iter().any(|e| e["event"] == "guidance"));
    let last = events.last().unwrap();
    assert_eq!(last["event"], "enrolled");
    assert_eq!(last["templates_added"], 1);
}

#[test]
fn wrong_admin_pin_enrolls_nobody() {
    let hash = edge::door::enroll_guide::hash_admin_pin("4711").unwrap();
    let Some(d) = door(&format!("admin_pin_hash = \"{hash}\"\n")) else {
        return;
    };
    let Some(()) = fill_camera(&d, "obama", OBAMA) else {
        return;
    };
    let args = [
        "enroll",
        "--camera",
        "--pin-stdin",
        "--name",
        "Mallory",
        "--frames",
        "2",
    ];
    let o = edge(&d, &args, "1234\n");
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("wrong admin PIN"), "{:?}", text(&o));
    assert!(
        !d.gallery.exists(),
        "a refused enrollment wrote the gallery"
    );
    let o = edge(&d, &args, "");
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("admin PIN"), "{:?}", text(&o));
    assert!(!d.gallery.exists());

    // The right PIN enrolls; a wrong one afterwards leaves the gallery byte for byte as it was.
    let o = edge(&d, &args, "4711\n");
    assert!(o.status.success(), "{:?}", text(&o));
    let before = std::fs::read(&d.gallery).unwrap();
    let args2 = ["enroll", "--camera", "--name", "Eve", "--frames", "2"];
    let o = edge(&d, &args2, "0000\n");
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(&d.gallery).unwrap(), before);
}

#[test]
fn a_camera_without_usable_faces_gives_up_clearly() {
    let Some(d) = door("") else { return };
    // Flat grey frames: no face anywhere.
    for i in 0..4 {
        image::RgbImage::from_pixel(320, 240, image::Rgb([120, 120, 120]))
            .save(d.cam.join(format!("{i}.png")))
            .unwrap();
    }
    let o = edge(&d, &["enroll", "--camera", "--name", "Nobody"], "");
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o).1;
    assert!(err.contains("gave up") && err.contains("0 of 5"), "{err}");
    assert!(err.contains("step in front of the camera"), "{err}");
    assert!(!d.gallery.exists());

    // A frame budget below the stream's length stops it early.
    let budget = d.dir.path().join("budget.toml");
    let text_cfg = std::fs::read_to_string(&d.cfg)
        .unwrap()
        .replace("[enroll]\n", "[enroll]\nframes = 2\nmax_frames = 2\n");
    std::fs::write(&budget, text_cfg).unwrap();
    let o = common::edge_command()
        .arg("--config")
        .arg(&budget)
        .args(["enroll", "--camera", "--name", "Nobody"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("within 2 frames"), "{:?}", text(&o));
}
