//! `trainer pack`: turn an ImageFolder of aligned faces into the files insightface tools read —
//! a `.rec`/`.idx` training pack and a verification `.bin` of sampled pairs.

use super::folder::ImageFolder;
use super::synth::rng_for;
use super::verification::PairSet;
use super::{decode_face, recordio, DataError, FaceSource};
use rand::Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Pack `folder` into `rec` (+ `.idx` beside it) in the insightface convention (meta record at
/// key 0, identity ranges). Every image must decode as an aligned 112x112 face; its encoded
/// bytes are stored unchanged (no re-encoding loss). Images are checked in parallel and streamed.
pub fn pack_rec(
    folder: &ImageFolder,
    rec: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<(PathBuf, PathBuf), DataError> {
    progress.set_length(folder.len() as u64);
    let faces = super::in_blocks(folder.len(), 1024, |i| {
        let face = folder.read(i)?;
        decode_face(&face.bytes, &face.origin)?;
        progress.inc(1);
        Ok((face.label, 0.0, face.bytes))
    });
    let written = recordio::write_insightface(rec, faces)?;
    progress.finish();
    Ok(written)
}

/// Sample `pairs` verification pairs from `folder` (10 contiguous folds, each half same-person
/// then half different-person pairs, deterministic by `seed`) and write them to `bin`.
pub fn pack_bin(
    folder: &ImageFolder,
    bin: &Path,
    pairs: usize,
    seed: u64,
    progress: &indicatif::ProgressBar,
) -> Result<PairSet, DataError> {
    if pairs == 0 || pairs % 20 != 0 {
        return Err(DataError::Config(format!("pair count {pairs} must be a positive multiple of 20 (10 folds, same/different halves)")));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); folder.num_classes()];
    for i in 0..folder.len() {
        if let Some((_, label)) = folder.item(i) {
            by_class[label as usize].push(i);
        }
    }
    let multi: Vec<usize> = (0..by_class.len())
        .filter(|&c| by_class[c].len() >= 2)
        .collect();
    if multi.is_empty() || by_class.len() < 2 {
        return Err(DataError::format(
            folder.root(),
            "need at least two identities and one identity with two or more images to form pairs",
        ));
    }
    let fold = pairs / 10;
    let mut chosen: Vec<(usize, usize, bool)> = Vec::with_capacity(pairs);
    for k in 0..pairs {
        let mut r = rng_for(&[seed, k as u64, 0xB1A]);
        let same = k % fold < fold / 2;
        let (a, b) = if same {
            let imgs = &by_class[multi[r.gen_range(0..multi.len())]];
            let a = r.gen_range(0..imgs.len());
            let b = (a + r.gen_range(1..imgs.len())) % imgs.len();
            (imgs[a], imgs[b])
        } else {
            let ca = r.gen_range(0..by_class.len());
            let cb = (ca + r.gen_range(1..by_class.len())) % by_class.len();
            (
                by_class[ca][r.gen_range(0..by_class[ca].len())],
                by_class[cb][r.gen_range(0..by_class[cb].len())],
            )
        };
        chosen.push((a, b, same));
    }
    progress.set_length(2 * pairs as u64);
    let images: Vec<Vec<u8>> = chosen
        .par_iter()
        .flat_map_iter(|&(a, b, _)| [a, b])
        .map(|i| {
            let face = folder.read(i)?;
            decode_face(&face.bytes, &face.origin)?;
            progress.inc(1);
            Ok(face.bytes)
        })
        .collect::<Result<_, DataError>>()?;
    progress.finish();
    let set = PairSet {
        images,
        issame: chosen.iter().map(|c| c.2).collect(),
    };
    set.write(bin)?;
    Ok(set)
}

/// The masked-probe variant of a verification set (METHODS §6): the first image of every pair is
/// masked, or both with `both` (masked-vs-masked). Masks are placed from the ArcFace template in
/// evaluation mode with a generator seeded by `(seed, pair)`, so the file is reproducible.
/// Masked images are re-encoded as JPEG (quality 95).
pub fn mask_pairs(
    set: &PairSet,
    masker: &super::mask::Masker,
    seed: u64,
    both: bool,
) -> Result<PairSet, DataError> {
    let images = set
        .images
        .par_iter()
        .enumerate()
        .map(|(i, bytes)| {
            if i % 2 == 1 && !both {
                return Ok(bytes.clone());
            }
            let origin = format!("pair {} image {}", i / 2, i % 2);
            let mut img = decode_face(bytes, &origin)?;
            let mut rng = rng_for(&[seed, i as u64, 0x3A5C]);
            masker.apply(
                &mut img,
                &shared::ARCFACE_TEMPLATE_112,
                &mut rng,
                super::mask::MaskMode::Eval,
            );
            super::encode_jpeg(&img, 95, &origin)
        })
        .collect::<Result<_, DataError>>()?;
    Ok(PairSet {
        images,
        issame: set.issame.clone(),
    })
}
