//! The pipeline as the door daemon's recogniser, on real photos (YuNet + SFace from the kit).

mod common;

use edge::daemon::FaceRecognizer;
use edge::frame::Frame;
use edge::pipeline::{load_image, Pipeline};
use edge::recognizer::PipelineRecognizer;
use edge::Config;
use std::path::Path;
use std::time::Duration;

fn frame(path: &Path) -> Frame {
    Frame {
        image: load_image(path).unwrap(),
        captured_at: Duration::ZERO,
        seq: 0,
    }
}

#[test]
fn known_face_is_accepted_stranger_is_not_and_expired_access_is_refused() {
    let (Some(yunet), Some(sface), Some(biden), Some(biden2), Some(obama)) = (
        common::kit("models/yunet_2023mar.fp32.onnx"),
        common::kit("models/sface_2021dec.fp32.onnx"),
        common::kit("faces/real-small/biden/biden.jpg"),
        common::kit("faces/real-small/biden/biden2.jpg"),
        common::kit("faces/real-small/obama/obama.jpg"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = common::sface_config(&yunet, &sface, dir.path(), 320);
    let cfg = Config::from_toml(&text, "test edge.toml", Path::new("")).unwrap();
    let pipeline = Pipeline::load(&cfg).unwrap();
    let r = pipeline.recognizer();
    let mut gallery = shared::Gallery::new(r.model_id().to_string(), r.embedding_dim() as u32);
    let (templates, _) = pipeline
        .enrollment_templates(&[("biden.jpg".into(), load_image(&biden).unwrap())], 1_000)
        .unwrap();
    edge::gallery::add_person(&mut gallery, "Joe", templates, 1_000).unwrap();

    let mut rec = PipelineRecognizer::new(Pipeline::load(&cfg).unwrap(), gallery.clone());
    let seen = rec.recognize(&frame(&biden2)).unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].accepted, "{seen:?}");
    assert_eq!(seen[0].person.as_ref().unwrap().name, "Joe");

    let stranger = rec.recognize(&frame(&obama)).unwrap();
    assert_eq!(stranger.len(), 1);
    assert!(
        !stranger[0].accepted,
        "a stranger must not be accepted: {stranger:?}"
    );

    // Same face, but the person's access window closed before "now".
    gallery.people[0].valid_until_unix = Some(2_000);
    let mut expired =
        PipelineRecognizer::new(Pipeline::load(&cfg).unwrap(), gallery).with_clock(|| 5_000);
    let seen = expired.recognize(&frame(&biden2)).unwrap();
    assert!(
        !seen[0].accepted,
        "expired access must be refused: {seen:?}"
    );
}
