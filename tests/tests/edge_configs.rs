//! The edge.toml files the demo and the bench write are read by the edge as meant: the
//! recogniser contract, aligned-crop input, the gallery beside the config, a lockstep replay of
//! `frames/` and the audit log. A typo in a template would otherwise surface only in a long run.

use edge::config::{Config, DetectorKind, RecognizerConfig};
use edge::terminal::TerminalConfig;
use maskgate_e2e::bench::models::Recogniser;
use maskgate_e2e::demo::door_config_toml;
use std::path::{Path, PathBuf};

fn recogniser(maskgate: bool, outputs: &[&str]) -> Recogniser {
    Recogniser {
        family: "test".into(),
        variant: "f32".into(),
        path: PathBuf::from("/models/student.onnx"),
        quality: None,
        maskgate,
        trained: true,
        timing: None,
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        input: "input.1".into(),
    }
}

fn contract(text: &str) -> edge::config::OnnxContract {
    let cfg = Config::from_toml(text, "edge.toml", Path::new("/site")).unwrap();
    match cfg.recognizer {
        RecognizerConfig::Onnx(c) => c,
        other => panic!("expected an ONNX recogniser, got {other:?}"),
    }
}

#[test]
fn door_config_reads_as_the_aligned_door_terminal_with_the_given_recogniser() {
    let model = recogniser(true, &["embedding", "mask_prob"])
        .onnx_section(0.42)
        .unwrap();
    let text = door_config_toml("a test", &model, "gallery_big.bin");

    let c = contract(&text);
    assert_eq!(c.path, Path::new("/models/student.onnx"));
    assert_eq!(
        (c.input.as_str(), c.output.as_str()),
        ("input.1", "embedding")
    );
    assert_eq!(c.mask_prob_output.as_deref(), Some("mask_prob"));
    assert_eq!(c.preprocess.mean, [127.5; 3]);
    assert_eq!(c.preprocess.std, [127.5; 3]);
    assert_eq!(c.threshold_unmasked, 0.42);

    let cfg = Config::from_toml(&text, "edge.toml", Path::new("/site")).unwrap();
    assert!(matches!(cfg.detector, DetectorKind::AlignedCrops));
    assert_eq!(cfg.gallery.path, Path::new("/site/gallery_big.bin"));

    let door = TerminalConfig::from_toml(&text).unwrap();
    assert!(door.camera.is_lockstep_replay());
    assert_eq!(door.camera.path.as_deref(), Some(Path::new("frames")));
}

#[test]
fn third_party_recognisers_keep_their_own_preprocessing_and_need_an_embedding_output() {
    let c = contract(&format!(
        "[model]\n{}[detector]\naligned = true\n[gallery]\npath = \"g.bin\"\nkey_file = \"g.key\"\n",
        recogniser(false, &["fc1"]).onnx_section(0.363).unwrap()
    ));
    assert_eq!((c.preprocess.mean, c.preprocess.std), ([0.0; 3], [1.0; 3]));
    assert_eq!(c.mask_prob_output, None);
    let e = recogniser(false, &["mask_prob"])
        .onnx_section(0.3)
        .unwrap_err();
    assert!(format!("{e:#}").contains("no embedding output"), "{e:#}");
}
