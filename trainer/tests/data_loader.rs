//! The loader is deterministic for a seed whatever the thread count, shards cleanly, and gives
//! the teacher the same augmented image without the mask.

use std::sync::Arc;
use trainer::data::mask::{MaskConfig, Masker};
use trainer::data::recordio::{write_insightface, RecordHeader, RecordWriter};
use trainer::data::synth::{generate, SynthConfig};
use trainer::data::{Batch, FaceSource, Loader, LoaderConfig, RecordDataset};

fn dataset(dir: &std::path::Path) -> Arc<dyn FaceSource> {
    let cfg = SynthConfig {
        identities: 4,
        images_per_id: 5,
        val_pairs: 0,
        seed: 11,
        ..Default::default()
    };
    generate(&cfg, dir, &indicatif::ProgressBar::hidden()).unwrap();
    // A directory written by `trainer synth` opens as its train.rec.
    trainer::data::open_source(dir).unwrap()
}

fn all_batches(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).map(|b| b.unwrap()).collect()
}

fn cfg(workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size: 6,
        seed: 3,
        workers,
        prefetch: 2,
        ..LoaderConfig::default()
    }
}

#[test]
fn batches_are_deterministic_across_thread_counts_and_epochs_differ() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let masker = || Some(Masker::procedural(MaskConfig::default()));
    let one = Loader::new(ds.clone(), cfg(1), masker()).unwrap();
    let three = Loader::new(ds.clone(), cfg(3), masker()).unwrap();
    assert_eq!(one.batches_per_epoch(), 3);
    let e0 = all_batches(&one, 0);
    assert_eq!(e0.len(), 3, "20 images, batch 6, drop_last");
    assert_eq!(e0, all_batches(&three, 0));
    assert_eq!(e0, all_batches(&one, 0), "re-running an epoch repeats it");
    // Recycled buffers are fully overwritten: recycling changes nothing.
    let recycled: Vec<Batch> = three
        .epoch(0)
        .map(|b| {
            let b = b.unwrap();
            three.recycle(b.clone());
            b
        })
        .collect();
    assert_eq!(e0, recycled);
    let e1 = all_batches(&one, 1);
    assert_ne!(e0[0].indices, e1[0].indices, "each epoch is shuffled anew");
    let other_seed = Loader::new(ds.clone(), LoaderConfig { seed: 4, ..cfg(1) }, masker()).unwrap();
    assert_ne!(e0[0].indices, all_batches(&other_seed, 0)[0].indices);

    // A sample is prepared identically whichever batch it lands in.
    let b = &e0[0];
    let alone = one.load_batch(0, &b.indices[2..3]).unwrap();
    let n = 3 * 112 * 112;
    assert_eq!(alone.student[..], b.student[2 * n..3 * n]);
    assert_eq!(
        (alone.flipped[0], alone.masked[0]),
        (b.flipped[2], b.masked[2])
    );

    // Labels follow the dataset (5 images per identity, in order).
    for batch in &e0 {
        for (i, l) in batch.indices.iter().zip(&batch.labels) {
            assert_eq!(*l, (*i / 5) as i64);
        }
    }
    let t = e0[0].to_tensors(tch::Device::Cpu);
    assert_eq!(t.student.size(), vec![6, 3, 112, 112]);
    assert_eq!(t.labels.size(), vec![6]);
}

#[test]
fn teacher_sees_the_same_image_without_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let loader = Loader::new(
        ds,
        LoaderConfig {
            drop_last: false,
            ..cfg(2)
        },
        Some(Masker::procedural(MaskConfig::default())),
    )
    .unwrap();
    let batches = all_batches(&loader, 0);
    let n = 3 * 112 * 112;
    let (mut masked, mut plain) = (0, 0);
    for b in &batches {
        let teacher = b.teacher.as_ref().unwrap();
        for i in 0..b.len() {
            let (s, t) = (&b.student[i * n..(i + 1) * n], &teacher[i * n..(i + 1) * n]);
            if b.masked[i] {
                masked += 1;
                // Differences only where a mask can be: below the eyes (row >= 56 of each plane).
                let diff_rows: Vec<usize> = (0..n)
                    .filter(|&k| s[k] != t[k])
                    .map(|k| (k % (112 * 112)) / 112)
                    .collect();
                assert!(
                    diff_rows.len() > 1000,
                    "masked sample {} barely differs",
                    b.indices[i]
                );
                assert!(
                    diff_rows.iter().all(|&r| r >= 56),
                    "mask reached row {:?}",
                    diff_rows.iter().min()
                );
            } else {
                plain += 1;
                assert_eq!(s, t);
            }
        }
    }
    assert_eq!(masked + plain, 20, "drop_last = false keeps every sample");
    assert!(
        masked >= 4 && plain >= 4,
        "pMask 0.5 gave {masked} masked of 20"
    );
}

#[test]
fn ranks_get_disjoint_equal_shards() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let shard = |rank, world| {
        Loader::new(
            ds.clone(),
            LoaderConfig {
                rank,
                world_size: world,
                ..cfg(1)
            },
            None,
        )
        .unwrap()
        .epoch_indices(2)
    };
    let (a, b, c) = (shard(0, 3), shard(1, 3), shard(2, 3));
    assert_eq!((a.len(), b.len(), c.len()), (6, 6, 6));
    let mut all: Vec<usize> = a.iter().chain(&b).chain(&c).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 18, "no sample is seen by two ranks");
    assert!(Loader::new(
        ds.clone(),
        LoaderConfig {
            rank: 3,
            world_size: 3,
            ..cfg(1)
        },
        None
    )
    .is_err());
}

#[test]
fn a_non_image_record_stops_the_epoch_with_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("bad.rec");
    let good = trainer::data::encode_jpeg(&image::RgbImage::new(112, 112), 90, "black").unwrap();
    write_insightface(
        &rec,
        vec![
            (0, good.clone()),
            (0, b"this is not an image".to_vec()),
            (1, good),
        ]
        .into_iter()
        .map(|(label, bytes)| Ok((label, 0.0, bytes))),
    )
    .unwrap();
    let ds: Arc<dyn FaceSource> = Arc::new(RecordDataset::open(&rec).unwrap());
    let loader = Loader::new(
        ds,
        LoaderConfig {
            batch_size: 3,
            shuffle: false,
            ..cfg(1)
        },
        None,
    )
    .unwrap();
    let results: Vec<_> = loader.epoch(0).collect();
    assert_eq!(results.len(), 1);
    let err = results[0].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("bad.rec key 2") && err.contains("not a decodable image"),
        "{err}"
    );

    // A face of the wrong size is refused too.
    let rec2 = dir.path().join("small.rec");
    let mut w = RecordWriter::create(&rec2).unwrap();
    let small = trainer::data::encode_jpeg(&image::RgbImage::new(64, 64), 90, "small").unwrap();
    w.write(0, &RecordHeader::scalar(0.0, 0), &small).unwrap();
    w.finish().unwrap();
    let ds = RecordDataset::open(&rec2).unwrap();
    let face = ds.read(0).unwrap();
    let err = trainer::data::decode_face(&face.bytes, &face.origin)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected an aligned 112x112 face, got 64x64"),
        "{err}"
    );
}
