//! `trainer data bench`: throughput of each loader stage on this machine, next to the rate that
//! mbf training on one H100 needs.

use super::augment::AugmentConfig;
use super::loader::{Loader, LoaderConfig};
use super::mask::Masker;
use super::{decode_face, DataError, EncodedFace, FaceSource};
use rayon::prelude::*;
use shared::PreprocessSpec;
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
    /// Wall-clock rate: what this machine delivered, contention included.
    pub images_per_s: f64,
    /// Images per second of process CPU time: the rate of one uncontended core.
    pub images_per_cpu_s: f64,
}

/// The table `trainer data bench` prints.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub source: String,
    pub rows: Vec<BenchRow>,
    pub required: f64,
    pub cores: usize,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "loader throughput on {} ({} cores visible)",
            self.source, self.cores
        )?;
        writeln!(
            f,
            "{:<46} {:>7} {:>12} {:>14}",
            "stage", "threads", "images/s", "per CPU-second"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<46} {:>7} {:>12.0} {:>14.0}",
                r.stage, r.threads, r.images_per_s, r.images_per_cpu_s
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "needed for mbf on one H100: ~{:.0} images/s (mbf {MBF_FWD_GMAC} GMAC fwd, x3 for fwd+bwd, 2 FLOP/MAC, {:.0}% of\n  the {H100_BF16_TFLOPS} TFLOP/s BF16 peak since depthwise convs are memory-bound; a cached teacher adds no work)",
            self.required,
            MBF_H100_UTILISATION * 100.0
        )?;
        if let Some(r) = self
            .rows
            .iter()
            .rev()
            .find(|r| r.stage.starts_with("loader"))
        {
            let per_core = r.images_per_cpu_s;
            writeln!(
                f,
                "reached: {:.0} images/s on {} threads here; {per_core:.0} per core-second, so {} cores give ~{:.0} ({:.2}x the need);\n  ~{:.0} cores would feed one H100",
                r.images_per_s,
                r.threads,
                self.cores,
                per_core * self.cores as f64,
                per_core * self.cores as f64 / self.required,
                (self.required / per_core.max(1e-9)).ceil()
            )?;
        }
        Ok(())
    }
}

/// CPU time consumed by this process so far, in seconds (all threads).
fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass, which outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc == 0 {
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    } else {
        f64::NAN
    }
}

/// Run `work` (which processes `n` images) and measure wall and CPU rates.
fn measure(
    stage: &str,
    threads: usize,
    n: usize,
    work: impl FnOnce() -> Result<usize, DataError>,
) -> Result<BenchRow, DataError> {
    let (t, c) = (Instant::now(), process_cpu_seconds());
    let done = work()?.max(n.min(1));
    let (wall, cpu) = (
        t.elapsed().as_secs_f64().max(1e-9),
        (process_cpu_seconds() - c).max(1e-9),
    );
    Ok(BenchRow {
        stage: stage.to_string(),
        threads,
        images_per_s: done as f64 / wall,
        images_per_cpu_s: done as f64 / cpu,
    })
}

/// Benchmark `source` (at most `max_images` of it) with batch size `batch`, masks at the
/// masker's pMask and the given augmentations.
pub fn run(
    source: Arc<dyn FaceSource>,
    name: &str,
    max_images: usize,
    batch: usize,
    augment: AugmentConfig,
    masker: Masker,
) -> Result<BenchReport, DataError> {
    let n = source.len().min(max_images).max(1);
    let cores = rayon::current_num_threads();
    let mut rows = Vec::new();
    let encoded: Vec<EncodedFace> = (0..n).map(|i| source.read(i)).collect::<Result<_, _>>()?;
    rows.push(measure("read (from file)", 1, n, || {
        (0..n)
            .try_for_each(|i| source.read(i).map(|_| ()))
            .map(|_| n)
    })?);
    let decode = |e: &EncodedFace| decode_face(&e.bytes, &e.origin).map(|_| ());
    rows.push(measure("decode", 1, n, || {
        encoded.iter().try_for_each(decode).map(|_| n)
    })?);
    rows.push(measure("decode", cores, n, || {
        encoded.par_iter().try_for_each(decode).map(|_| n)
    })?);

    let decoded: Vec<image::RgbImage> = encoded
        .iter()
        .map(|e| decode_face(&e.bytes, &e.origin))
        .collect::<Result<_, _>>()?;
    // The loader's own per-sample step, on decoded images: mask, augment, normalise both views.
    let cfg = LoaderConfig {
        augment: augment.clone(),
        workers: 1,
        ..LoaderConfig::default()
    };
    let sampler = Loader::new(source.clone(), cfg, Some(masker.clone()))?;
    let len = PreprocessSpec::arcface_112().input_len();
    let augment_one = |i: usize, img: &image::RgbImage| -> Result<(), DataError> {
        let (mut s, mut t) = (vec![0f32; len], vec![0f32; len]);
        sampler.augment_into(img, 0, i, &mut s, Some(&mut t))?;
        std::hint::black_box((s, t));
        Ok(())
    };
    let label = format!(
        "augment+mask(p={})+normalise, both views",
        masker.cfg.p_mask
    );
    rows.push(measure(&label, 1, n, || {
        decoded
            .iter()
            .enumerate()
            .try_for_each(|(i, m)| augment_one(i, m))
            .map(|_| n)
    })?);
    rows.push(measure(&label, cores, n, || {
        decoded
            .par_iter()
            .enumerate()
            .try_for_each(|(i, m)| augment_one(i, m))
            .map(|_| n)
    })?);

    for workers in [1, cores] {
        let b = batch.min(n);
        let cfg = LoaderConfig {
            batch_size: b,
            workers,
            augment: augment.clone(),
            ..LoaderConfig::default()
        };
        let loader = Loader::new(source.clone(), cfg, Some(masker.clone()))?;
        rows.push(measure(
            &format!("loader: read+decode+augment+batch (b={b})"),
            workers,
            n,
            || {
                let mut count = 0usize;
                for batch in loader.epoch(0) {
                    count += batch?.len();
                    if count >= n {
                        break;
                    }
                }
                Ok(count)
            },
        )?);
    }
    Ok(BenchReport {
        source: name.to_string(),
        rows,
        required: mbf_h100_required_rate(),
        cores,
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
