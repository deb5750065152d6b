//! Dataset files written by an independent implementation (a Python standard-library script)
//! are read correctly, and ours are readable by Python.

use std::path::{Path, PathBuf};
use std::process::Command;
use trainer::data::{decode_face, FaceSource, PairSet, RecordDataset};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/independent_writer.py")
}

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("python3 must be installed to run this test");
    assert!(
        out.status.success(),
        "python3 {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Expected (label, index) per line tag.
fn expected(dir: &Path, tag: &str) -> Vec<(u32, u32)> {
    std::fs::read_to_string(dir.join("expected.txt"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(tag))
        .map(|l| {
            let v: Vec<u32> = l.split(' ').skip(2).map(|s| s.parse().unwrap()).collect();
            (v[0], v[1])
        })
        .collect()
}

/// The Python writer encodes (x, y, label, index) into the pixels.
fn check_pixels(bytes: &[u8], label: u32, index: u32) {
    let img = decode_face(bytes, "python image").unwrap();
    for (x, y) in [(0u32, 0u32), (37, 91), (111, 111)] {
        assert_eq!(
            img.get_pixel(x, y).0,
            [
                (x * 2 % 256) as u8,
                (y * 2 % 256) as u8,
                ((label * 40 + index * 7) % 256) as u8
            ]
        );
    }
}

#[test]
fn reads_python_written_recordio_in_both_key0_conventions() {
    let dir = tempfile::tempdir().unwrap();
    python(&[script().to_str().unwrap(), dir.path().to_str().unwrap()]);

    let meta = RecordDataset::open(&dir.path().join("meta.rec")).unwrap();
    assert!(meta.has_meta);
    assert_eq!((meta.len(), meta.num_classes()), (6, 3));
    let want = expected(dir.path(), "meta");
    assert_eq!(want.len(), 6);
    for (i, (label, index)) in want.into_iter().enumerate() {
        let face = meta.read(i).unwrap();
        assert_eq!(face.label, label, "image {i}");
        // Image 1 contains the magic at an aligned offset: only a correct re-join decodes it.
        check_pixels(&face.bytes, label, index);
    }

    let shuffled = RecordDataset::open(&dir.path().join("shuffled.rec")).unwrap();
    assert!(
        !shuffled.has_meta,
        "key 0 with flag 0 is an image, not a meta record"
    );
    assert_eq!((shuffled.len(), shuffled.num_classes()), (4, 3));
    for (i, (label, index)) in expected(dir.path(), "shuffled").into_iter().enumerate() {
        let face = shuffled.read(i).unwrap();
        assert_eq!(face.label, label);
        check_pixels(&face.bytes, label, index);
    }
}

#[test]
fn reads_python_written_bins_and_python_reads_ours() {
    let dir = tempfile::tempdir().unwrap();
    python(&[script().to_str().unwrap(), dir.path().to_str().unwrap()]);
    let pairs = expected(dir.path(), "pair");
    for name in ["pairs_p2.bin", "pairs_p4.bin", "py2.bin"] {
        let set = PairSet::read(&dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(set.issame, vec![true, false, true], "{name}");
        assert_eq!(set.images.len(), 6);
        for (img, (label, index)) in set.images.iter().zip(&pairs) {
            check_pixels(img, *label, *index);
        }
        // Our writer's output loads in Python's pickle, images as bytes.
        let ours = dir.path().join(format!("ours_{name}"));
        set.write(&ours).unwrap();
        assert_eq!(
            python(&[script().to_str().unwrap(), "--read", ours.to_str().unwrap()]).trim(),
            "3 2 6"
        );
    }
}

#[test]
fn corrupt_files_give_errors_naming_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    python(&[script().to_str().unwrap(), dir.path().to_str().unwrap()]);
    // A .bin cut short.
    let bin = dir.path().join("pairs_p4.bin");
    let bytes = std::fs::read(&bin).unwrap();
    std::fs::write(&bin, &bytes[..bytes.len() / 2]).unwrap();
    let err = PairSet::read(&bin).unwrap_err().to_string();
    assert!(
        err.contains("pairs_p4.bin") && err.contains("truncated"),
        "{err}"
    );
    // A pickle of something else (a dict uses opcodes a .bin never has).
    let other = dir.path().join("dict.bin");
    std::fs::write(&other, [0x80, 2, b'}', b'q', 0, b'.']).unwrap();
    let err = PairSet::read(&other).unwrap_err().to_string();
    assert!(
        err.contains("dict.bin") && err.contains("unsupported pickle opcode 0x7d ('}') at byte 2"),
        "{err}"
    );
    // A .rec whose image bytes are corrupted still reads, but decoding names the record.
    let rec = dir.path().join("shuffled.rec");
    let mut bytes = std::fs::read(&rec).unwrap();
    let png_at = 8 + 24 + 1; // first record: physical header, logical header, inside the signature
    bytes[png_at] = b'X';
    std::fs::write(&rec, &bytes).unwrap();
    let ds = RecordDataset::open(&rec).unwrap();
    let face = ds.read(0).unwrap();
    let err = decode_face(&face.bytes, &face.origin)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shuffled.rec key 5") && err.contains("not a decodable image"),
        "{err}"
    );
    // A missing .idx.
    std::fs::remove_file(dir.path().join("meta.idx")).unwrap();
    let err = RecordDataset::open(&dir.path().join("meta.rec"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("meta.idx"), "{err}");
}
