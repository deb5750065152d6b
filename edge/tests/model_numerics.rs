//! The real models' numbers on this machine against a reference computed once on x86-64.
//!
//! What a port to ARM can get wrong is arithmetic: tract picks other kernels per CPU (NEON on
//! aarch64, AVX2/FMA on x86-64), and an image decoder or resampler can round differently. This
//! test runs YuNet and SFace from the team kit on three real photos (JPEG and PNG, one and two
//! faces) and compares every detection (box, landmarks, score) and every embedding with the
//! committed reference `data/golden/yunet_sface.json`. It is the check `make test` runs under
//! qemu-aarch64; `real_photos.rs` checks behaviour (gate, identification) on the host.
//!
//! The tolerances are far above float rounding between kernels (aarch64 under qemu against the
//! x86-64 reference, 2026-12-02: every cosine >= 0.9999999, landmarks within 0.001 px, scores
//! within 1e-5) and far below what a wrong kernel, layout or colour order gives (cosine < 0.9,
//! pixels off by tens). `MASKGATE_WRITE_GOLDEN=1` rewrites the reference, on x86-64 only, after a
//! deliberate change of models, preprocessing or tract version.

mod common;

use edge::config::Config;
use edge::pipeline::{load_image, Pipeline};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const PHOTOS: [&str; 3] = [
    "faces/real-small/obama/obama.jpg",
    "faces/real-small/multi/two_people.jpg",
    "faces/real-small/lin_manuel_miranda/lin-manuel-miranda.png",
];
const MAX_PIXELS: f32 = 1.0;
const MAX_SCORE_DIFF: f32 = 0.01;
const MIN_COSINE: f32 = 0.999;

#[derive(Debug, Serialize, Deserialize)]
struct Reference {
    /// How the file was made, for the reader.
    made_by: String,
    photos: Vec<PhotoFaces>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PhotoFaces {
    photo: String,
    faces: Vec<Face>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Face {
    /// x, y, w, h in image pixels.
    bbox: [f32; 4],
    landmarks: [[f32; 2]; 5],
    score: f32,
    /// SFace's unit embedding of the aligned crop.
    embedding: Vec<f32>,
}

fn reference_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden/yunet_sface.json")
}

fn measure(p: &Pipeline, kit_photo: &Path, rel: &str) -> PhotoFaces {
    let img = load_image(kit_photo).unwrap();
    let faces = p
        .detect(&img)
        .unwrap()
        .into_iter()
        .map(|f| {
            let crop = p.recognizer().align(&img, &f.landmarks).unwrap();
            let e = p.recognizer().embed_aligned(&crop).unwrap();
            Face {
                bbox: [f.bbox.x, f.bbox.y, f.bbox.w, f.bbox.h],
                landmarks: f.landmarks,
                score: f.score,
                embedding: e.embedding.as_slice().to_vec(),
            }
        })
        .collect();
    PhotoFaces {
        photo: rel.to_string(),
        faces,
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Every difference beyond tolerance, as readable lines (empty when all agree).
fn differences(got: &PhotoFaces, want: &PhotoFaces) -> Vec<String> {
    let mut out = Vec::new();
    if got.faces.len() != want.faces.len() {
        out.push(format!(
            "{}: {} faces detected, reference {}",
            want.photo,
            got.faces.len(),
            want.faces.len()
        ));
        return out;
    }
    for (i, w) in want.faces.iter().enumerate() {
        // Detections pair up by position, not list order (equal scores may swap places).
        let g = got
            .faces
            .iter()
            .min_by(|a, b| {
                let d = |f: &Face| (f.bbox[0] - w.bbox[0]).abs() + (f.bbox[1] - w.bbox[1]).abs();
                d(a).total_cmp(&d(b))
            })
            .unwrap();
        let pixels = g
            .bbox
            .iter()
            .zip(&w.bbox)
            .chain(g.landmarks.iter().flatten().zip(w.landmarks.iter().flatten()))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        if pixels > MAX_PIXELS {
            out.push(format!(
                "{} face {i}: box/landmarks differ by {pixels:.2} px (max {MAX_PIXELS})",
                want.photo
            ));
        }
        if (g.score - w.score).abs() > MAX_SCORE_DIFF {
            out.push(format!(
                "{} face {i}: detector score {:.4}, reference {:.4}",
                want.photo, g.score, w.score
            ));
        }
        let c = cosine(&g.embedding, &w.embedding);
        if g.embedding.len() != w.embedding.len() || c < MIN_COSINE {
            out.push(format!(
                "{} face {i}: embedding cosine to the reference {c:.6} (min {MIN_COSINE}), dim {} vs {}",
                want.photo,
                g.embedding.len(),
                w.embedding.len()
            ));
        }
    }
    out
}

#[test]
fn detections_and_embeddings_match_the_x86_64_reference() {
    let (Some(yunet), Some(sface)) = (
        common::kit("models/yunet_2023mar.fp32.onnx"),
        common::kit("models/sface_2021dec.fp32.onnx"),
    ) else {
        return;
    };
    let photos: Vec<(PathBuf, &str)> = PHOTOS
        .iter()
        .filter_map(|rel| common::kit(rel).map(|p| (p, *rel)))
        .collect();
    if photos.len() < PHOTOS.len() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = common::sface_config(&yunet, &sface, dir.path(), 320);
    let cfg = Config::from_toml(&text, "test edge.toml", Path::new("")).unwrap();
    let p = Pipeline::load(&cfg).unwrap();
    let got: Vec<PhotoFaces> = photos
        .par_iter()
        .map(|(path, rel)| measure(&p, path, rel))
        .collect();

    if std::env::var("MASKGATE_WRITE_GOLDEN").as_deref() == Ok("1") {
        assert_eq!(
            std::env::consts::ARCH,
            "x86_64",
            "the reference is made on x86-64, the architecture the others are compared with"
        );
        let reference = Reference {
            made_by: "MASKGATE_WRITE_GOLDEN=1 cargo test -p edge --test model_numerics (x86-64)"
                .into(),
            photos: got,
        };
        let path = reference_path();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&reference).unwrap()).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }

    let text = std::fs::read_to_string(reference_path()).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (make it with MASKGATE_WRITE_GOLDEN=1 on x86-64)",
            reference_path().display()
        )
    });
    let want: Reference = serde_json::from_str(&text).unwrap();
    assert_eq!(want.photos.len(), PHOTOS.len(), "reference covers every photo");
    assert!(
        want.photos.iter().map(|p| p.faces.len()).sum::<usize>() >= 4,
        "the reference holds the photos' faces (one, two, one)"
    );
    let mut problems = Vec::new();
    for (g, w) in got.iter().zip(&want.photos) {
        assert_eq!(g.photo, w.photo);
        problems.extend(differences(g, w));
        for (a, b) in g.faces.iter().zip(&w.faces) {
            let px = a.landmarks.iter().flatten().zip(b.landmarks.iter().flatten());
            eprintln!(
                "{} on {}: cosine {:.7}, landmarks within {:.3} px, score {:+.5}",
                w.photo,
                std::env::consts::ARCH,
                cosine(&a.embedding, &b.embedding),
                px.map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max),
                a.score - b.score
            );
        }
    }
    assert!(
        problems.is_empty(),
        "{} on {} disagrees with the x86-64 reference:\n{}",
        "YuNet + SFace through tract",
        std::env::consts::ARCH,
        problems.join("\n")
    );
}

/// The comparison itself: a face moved by two pixels, a changed score or a different
/// embedding is reported; rounding-sized changes are not.
#[test]
fn the_comparison_catches_what_a_wrong_kernel_gives() {
    let e: Vec<f32> = (0..128).map(|i| ((i * 37 % 11) as f32 - 5.0) / 10.0).collect();
    let face = |dx: f32, score: f32, emb: Vec<f32>| Face {
        bbox: [10.0 + dx, 20.0, 50.0, 60.0],
        landmarks: [[30.0, 40.0]; 5],
        score,
        embedding: emb,
    };
    let one = |f: Face| PhotoFaces {
        photo: "p.jpg".into(),
        faces: vec![f],
    };
    let want = one(face(0.0, 0.9, e.clone()));
    let rounded: Vec<f32> = e.iter().map(|x| x + 1e-5).collect();
    assert!(differences(&one(face(0.05, 0.9001, rounded)), &want).is_empty());
    assert_eq!(differences(&one(face(2.0, 0.9, e.clone())), &want).len(), 1);
    assert_eq!(differences(&one(face(0.0, 0.8, e.clone())), &want).len(), 1);
    let mut swapped = e.clone();
    swapped.reverse();
    assert_eq!(differences(&one(face(0.0, 0.9, swapped)), &want).len(), 1);
    let none = PhotoFaces {
        photo: "p.jpg".into(),
        faces: vec![],
    };
    assert_eq!(differences(&none, &want).len(), 1);
}
