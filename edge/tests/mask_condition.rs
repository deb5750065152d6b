//! A recogniser with a mask-probability output gets the masked threshold for masked probes.
//! Uses a tiny hand-built ONNX model (tests/data/make_tiny_mask_model.py): bright crops read as
//! masked, dark crops as unmasked.

mod common;

use edge::config::{ConditionChoice, OnnxContract, QualityConfig, RecognizerConfig};
use edge::embed::Recognizer;
use edge::{Detector, Pipeline, QualityGate};
use image::{Rgb, RgbImage};
use shared::{Condition, Gallery, PersonId, PersonRecord, PreprocessSpec, Template};
use std::path::Path;

fn contract(forced: ConditionChoice) -> Recognizer {
    let cfg = RecognizerConfig::Onnx(OnnxContract {
        path: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_mask_model.onnx"),
        input: "data".into(),
        output: "embedding".into(),
        mask_prob_output: Some("mask_prob".into()),
        preprocess: PreprocessSpec::arcface_112(),
        threshold_unmasked: 0.9,
        threshold_masked: Some(0.5),
    });
    Recognizer::load(&cfg, true, forced).unwrap()
}

#[test]
fn mask_probability_picks_the_condition_and_its_threshold() {
    let rec = contract(ConditionChoice::Auto);
    assert_eq!(rec.embedding_dim(), 4);
    let bright = RgbImage::from_pixel(112, 112, Rgb([250, 250, 250]));
    let dark = RgbImage::from_pixel(112, 112, Rgb([5, 5, 5]));
    let masked = rec.embed_aligned(&bright).unwrap();
    let unmasked = rec.embed_aligned(&dark).unwrap();
    assert_eq!(masked.condition, Condition::Masked);
    assert!(masked.mask_prob.unwrap() > 0.99, "{:?}", masked.mask_prob);
    assert_eq!(unmasked.condition, Condition::Unmasked);
    assert!(unmasked.mask_prob.unwrap() < 0.01);
    // A configured condition overrides the model's estimate.
    let forced = contract(ConditionChoice::Unmasked)
        .embed_aligned(&bright)
        .unwrap();
    assert_eq!(forced.condition, Condition::Unmasked);

    let Some(yunet) = common::kit("models/yunet_2023mar.fp32.onnx") else {
        return;
    };
    let det = edge::config::DetectorConfig {
        path: yunet,
        input_size: 320,
        score_threshold: 0.6,
        nms_iou: 0.3,
        max_faces: 4,
    };
    let mut p = Pipeline::new(
        Detector::load(&det).unwrap(),
        rec,
        QualityGate::new(&QualityConfig::default()),
    );
    // Enroll a template at cosine ~0.84 from the bright (masked) probe: accepted only under the
    // masked threshold (0.5), not the unmasked one (0.9).
    let mut g = Gallery::new(p.recognizer().model_id().into(), 4);
    let enrolled = shared::Embedding::normalize(&[1.1, 1.2, 1.3, 1.0]).unwrap();
    let t = Template {
        embedding: enrolled.clone(),
        quality: 1.0,
        masked: Some(false),
        created_unix: 0,
    };
    g.people
        .push(PersonRecord::new(PersonId([1; 16]), "Ada".into(), vec![t], 0).unwrap());
    p.set_gallery(&g);
    let cos = masked.embedding.cosine(&enrolled).unwrap();
    assert!(
        cos > 0.5 && cos < 0.9,
        "fixture geometry changed: cos {cos}"
    );
    let as_masked = p.identify(&masked).unwrap();
    assert_eq!(
        (as_masked.condition, as_masked.threshold, as_masked.accepted),
        (Condition::Masked, 0.5, true)
    );
    let as_unmasked = p
        .identify(&edge::FaceEmbedding {
            condition: Condition::Unmasked,
            ..masked
        })
        .unwrap();
    assert_eq!((as_unmasked.threshold, as_unmasked.accepted), (0.9, false));
    assert_eq!(
        as_unmasked.name.as_deref(),
        Some("Ada"),
        "still the closest person, just not accepted"
    );
}
