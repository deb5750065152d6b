//! `trainer data bench`: throughput of each loader stage on this machine, next to the rate that
//! mbf training on one H100 needs.

use super::augment::AugmentConfig;
use super::loader::{Loader, LoaderConfig};
use super::mask::{MaskMode, Masker};
use super::synth::rng_for;
use super::{decode_face, DataError, EncodedFace, FaceSource};
use rand::Rng;
use rayon::prelude::*;
use shared::{PreprocessSpec, ARCFACE_TEMPLATE_112};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// mbf forward cost (METHODS §7), in multiply-accumulates per 112x112 image.
pub const MBF_FWD_GMAC: f64 = 0.45;
/// Dense BF16 tensor-core peak of an H100 SXM, TFLOP/s.
pub const H100_BF16_TFLOPS: f64 = 989.0;
/// Fraction of that peak a depthwise-heavy 0.45-GMAC net reaches in training: its depthwise
/// convolutions and BatchNorms are memory-bound; a few percent is what such nets get.
pub const MBF_H100_UTILISATION: f64 = 0.05;

/// Images per second the loader must deliver so that mbf training on one H100 is not starved:
/// `util * peak / (3 * 2 * GMAC)` (forward + backward = 3 forwards, 2 FLOPs per MAC).
pub fn mbf_h100_required_rate() -> f64 {
    MBF_H100_UTILISATION * H100_BF16_TFLOPS * 1e12 / (3.0 * 2.0 * MBF_FWD_GMAC * 1e9)
}

#[derive(Debug, Clone)]
pub struct BenchRow {
    pub stage: String,
    pub threads: usize,
    pub images_per_s: f64,
}

/// The table `trainer data bench` prints.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub source: String,
    pub rows: Vec<BenchRow>,
    pub required: f64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "loader throughput on {} ({} cores visible)",
            self.source,
            rayon::current_num_threads()
        )?;
        writeln!(
            f,
            "{:<44} {:>7} {:>12} {:>14}",
            "stage", "threads", "images/s", "per thread"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<44} {:>7} {:>12.0} {:>14.0}",
                r.stage,
                r.threads,
                r.images_per_s,
                r.images_per_s / r.threads as f64
            )?;
        }
        let full = self
            .rows
            .iter()
            .rev()
            .find(|r| r.stage.starts_with("loader"))
            .map(|r| (r.images_per_s, r.threads));
        writeln!(f)?;
        writeln!(
            f,
            "needed for mbf on one H100: ~{:.0} images/s  (mbf {MBF_FWD_GMAC} GMAC fwd, x3 for fwd+bwd, 2 FLOP/MAC,\n  {:.0}% of the {H100_BF16_TFLOPS} TFLOP/s BF16 peak: depthwise convs are memory-bound; a cached teacher adds nothing)",
            self.required,
            MBF_H100_UTILISATION * 100.0
        )?;
        if let Some((rate, threads)) = full {
            let per_thread = rate / threads as f64;
            writeln!(
                f,
                "reached: {rate:.0} images/s on {threads} threads ({per_thread:.0} per thread): {:.1}x the need; about {:.0} such cores would feed the GPU",
                rate / self.required,
                (self.required / per_thread).ceil()
            )?;
        }
        Ok(())
    }
}

/// Benchmark `source` (at most `max_images` of it) with batch size `batch`, procedural masks at
/// pMask 0.5 and the given augmentations.
pub fn run(
    source: Arc<dyn FaceSource>,
    name: &str,
    max_images: usize,
    batch: usize,
    augment: AugmentConfig,
    masker: Masker,
) -> Result<BenchReport, DataError> {
    let n = source.len().min(max_images).max(1);
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    let encoded: Vec<EncodedFace> = (0..n).map(|i| source.read(i)).collect::<Result<_, _>>()?;

    let time = |f: &dyn Fn() -> Result<(), DataError>| -> Result<f64, DataError> {
        let t = Instant::now();
        f()?;
        Ok(n as f64 / t.elapsed().as_secs_f64().max(1e-9))
    };
    let read = || (0..n).try_for_each(|i| source.read(i).map(|_| ()));
    rows.push(BenchRow {
        stage: "read (from file)".into(),
        threads: 1,
        images_per_s: time(&read)?,
    });
    let decode1 = || {
        encoded
            .iter()
            .try_for_each(|e| decode_face(&e.bytes, &e.origin).map(|_| ()))
    };
    let decode_n = || {
        encoded
            .par_iter()
            .try_for_each(|e| decode_face(&e.bytes, &e.origin).map(|_| ()))
    };
    rows.push(BenchRow {
        stage: "decode".into(),
        threads: 1,
        images_per_s: time(&decode1)?,
    });
    rows.push(BenchRow {
        stage: "decode".into(),
        threads,
        images_per_s: time(&decode_n)?,
    });

    let decoded: Vec<image::RgbImage> = encoded
        .iter()
        .map(|e| decode_face(&e.bytes, &e.origin))
        .collect::<Result<_, _>>()?;
    let spec = PreprocessSpec::arcface_112();
    let augment_one = |i: usize, img: &image::RgbImage| -> Result<(), DataError> {
        let mut rng = rng_for(&[1, i as u64]);
        let plan = augment.draw(&mut rng, img.width());
        let mut s = img.clone();
        let masked = rng.gen::<f32>() < masker.cfg.p_mask;
        if masked {
            masker.apply(&mut s, &ARCFACE_TEMPLATE_112, &mut rng, MaskMode::Train);
        }
        plan.apply(&mut s);
        let a = spec
            .input_from_aligned(&s, plan.flip)
            .map_err(|e| DataError::Config(e.to_string()))?;
        if masked {
            let mut t = img.clone();
            plan.apply(&mut t);
            spec.input_from_aligned(&t, plan.flip)
                .map_err(|e| DataError::Config(e.to_string()))?;
        }
        std::hint::black_box(a);
        Ok(())
    };
    let aug1 = || {
        decoded
            .iter()
            .enumerate()
            .try_for_each(|(i, img)| augment_one(i, img))
    };
    let aug_n = || {
        decoded
            .par_iter()
            .enumerate()
            .try_for_each(|(i, img)| augment_one(i, img))
    };
    let label = "augment+mask(p=0.5)+normalise, both views";
    rows.push(BenchRow {
        stage: label.into(),
        threads: 1,
        images_per_s: time(&aug1)?,
    });
    rows.push(BenchRow {
        stage: label.into(),
        threads,
        images_per_s: time(&aug_n)?,
    });

    for workers in [1, threads] {
        let cfg = LoaderConfig {
            batch_size: batch.min(n),
            workers,
            augment: augment.clone(),
            ..LoaderConfig::default()
        };
        let loader = Loader::new(source.clone(), cfg, Some(masker.clone()))?;
        let t = Instant::now();
        let mut count = 0usize;
        for b in loader.epoch(0) {
            count += b?.len();
            if count >= n {
                break;
            }
        }
        let rate = count as f64 / t.elapsed().as_secs_f64().max(1e-9);
        rows.push(BenchRow {
            stage: format!("loader: read+decode+augment+batch (b={})", batch.min(n)),
            threads: workers,
            images_per_s: rate,
        });
    }
    Ok(BenchReport {
        source: name.to_string(),
        rows,
        required: mbf_h100_required_rate(),
    })
}

/// A small in-memory dataset of synthetic faces, for benchmarking without files.
pub struct InMemory {
    pub faces: Vec<EncodedFace>,
    pub classes: usize,
}

impl FaceSource for InMemory {
    fn len(&self) -> usize {
        self.faces.len()
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn read(&self, index: usize) -> Result<EncodedFace, DataError> {
        self.faces
            .get(index)
            .cloned()
            .ok_or_else(|| DataError::Config(format!("index {index} out of range")))
    }
}
