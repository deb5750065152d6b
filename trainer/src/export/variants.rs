//! Deployment variants of one trained model and their measured cost/accuracy trade-off.
//!
//! - `f32`: the reference export.
//! - `f16`: f16 weight initializers + Cast (half the file, f32 compute).
//! - `int8-weights`: per-channel symmetric int8 weights + DequantizeLinear (quarter file).
//! - `int8`: static post-training quantisation in QDQ form: int8 weights as above and every
//!   quantised conv's input fake-quantised with a per-tensor scale calibrated on N images
//!   (max-abs). The first conv and the final FC (with the folded BNs) stay float.
//!
//! Every variant is compared to f32 on an eval pair set: embedding cosine, verification accuracy
//! and TAR@FAR; a variant whose drop exceeds the [`AccuracyBudget`] is refused.

use super::graph::{EmitOptions, WeightFormat};
use super::tract_run::TractModel;
use super::{ExportError, LoadedModel};
use crate::data::verification::PairSet;
use shared::{ModelVariant, PreprocessSpec};
use std::time::Instant;

/// One deployment variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    F32,
    F16,
    Int8WeightOnly,
    Int8Static,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::F32,
        Variant::F16,
        Variant::Int8WeightOnly,
        Variant::Int8Static,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::F32 => "f32",
            Variant::F16 => "f16",
            Variant::Int8WeightOnly => "int8-weights",
            Variant::Int8Static => "int8",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ExportError> {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                ExportError::Invalid(format!(
                    "unknown variant {s:?}; known: f32, f16, int8-weights, int8"
                ))
            })
    }

    /// The manifest's name for this variant.
    pub fn model_variant(self) -> ModelVariant {
        match self {
            Variant::F32 => ModelVariant::F32,
            Variant::F16 => ModelVariant::F16,
            Variant::Int8WeightOnly => ModelVariant::Int8WeightOnly,
            Variant::Int8Static => ModelVariant::Int8,
        }
    }
}

/// Preprocessed images (NCHW f32, concatenated) of a verification pair set.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub images: Vec<f32>,
    pub issame: Vec<bool>,
    pub input_size: usize,
}

impl EvalSet {
    /// Decodes and preprocesses the first `max_pairs` pairs (both images of each pair).
    pub fn from_pairs(
        pairs: &PairSet,
        spec: &PreprocessSpec,
        max_pairs: usize,
    ) -> Result<Self, ExportError> {
        let n = pairs.len().min(max_pairs);
        let mut images = Vec::with_capacity(n * 2 * spec.input_len());
        for k in 0..n {
            let (a, b) = pairs
                .pair(k)
                .ok_or_else(|| ExportError::Invalid(format!("pair {k} is missing its images")))?;
            for bytes in [a, b] {
                let img = image::load_from_memory(bytes)
                    .map_err(|e| ExportError::Invalid(format!("pair {k}: image: {e}")))?
                    .to_rgb8();
                let x = spec
                    .input_from_aligned(&img, false)
                    .map_err(|e| ExportError::Invalid(format!("pair {k}: {e}")))?;
                images.extend(x);
            }
        }
        Ok(Self {
            images,
            issame: pairs.issame[..n].to_vec(),
            input_size: spec.width as usize,
        })
    }

    pub fn image_count(&self) -> usize {
        self.issame.len() * 2
    }

    fn image_len(&self) -> usize {
        3 * self.input_size * self.input_size
    }
}

/// Embeddings (un-normalised, one Vec per image) of every image of `set` computed by the ONNX
/// file `bytes` in tract, `batch` images at a time.
pub fn embed(bytes: &[u8], set: &EvalSet, batch: usize) -> Result<Vec<Vec<f32>>, ExportError> {
    let model = TractModel::load(bytes, batch, set.input_size)?;
    let per = set.image_len();
    let mut out = Vec::with_capacity(set.image_count());
    let mut buf = vec![0.0f32; batch * per];
    for chunk in set.images.chunks(batch * per) {
        let real = chunk.len() / per;
        buf[..chunk.len()].copy_from_slice(chunk);
        buf[chunk.len()..].fill(0.0);
        let emb = &model.run(&buf)?[0];
        let d = emb.len() / batch;
        out.extend(emb.chunks(d).take(real).map(|c| c.to_vec()));
    }
    Ok(out)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-12)
}

/// Verification figures of one model on one pair set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verification {
    /// Best-threshold accuracy over all pairs.
    pub accuracy: f64,
    /// True accept rate at the threshold where the impostor accept rate is <= `far`.
    pub tar: f64,
    pub far: f64,
}

/// Cosine-score verification of pairs (embeddings of images 2k and 2k+1).
pub fn verification(embeddings: &[Vec<f32>], issame: &[bool], far: f64) -> Verification {
    let scores: Vec<(f64, bool)> = issame
        .iter()
        .enumerate()
        .map(|(k, &same)| (cosine(&embeddings[2 * k], &embeddings[2 * k + 1]), same))
        .collect();
    let mut sorted = scores.clone();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let genuine = scores.iter().filter(|s| s.1).count().max(1) as f64;
    let impostor = scores.iter().filter(|s| !s.1).count().max(1) as f64;
    // Sweep thresholds from high to low: accept the top i scores.
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut best_acc = (impostor / (genuine + impostor)).max(0.0);
    let mut tar = 0.0;
    let total = scores.len().max(1) as f64;
    for (i, (_, same)) in sorted.iter().enumerate() {
        if *same {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let tie = sorted.get(i + 1).is_some_and(|n| n.0 == sorted[i].0);
        if tie {
            continue;
        }
        let acc = (tp + (impostor - fp)) / total;
        best_acc = best_acc.max(acc);
        if fp / impostor <= far {
            tar = tp / genuine;
        }
    }
    Verification {
        accuracy: best_acc,
        tar,
        far,
    }
}

/// Per-tensor symmetric activation scales (max |x| / 127) of every quantisable conv input,
/// from `n` calibration images run through the f32 graph in tract.
pub fn calibrate(model: &LoadedModel, set: &EvalSet, n: usize) -> Result<Vec<f32>, ExportError> {
    let opts = EmitOptions {
        expose_probes: true,
        ..Default::default()
    };
    let (bytes, probes) = model.emit(&opts)?;
    let batch = 8;
    let tract = TractModel::load(&bytes, batch, set.input_size)?;
    let first_probe = 1 + usize::from(model.mask_head.is_some());
    let per = set.image_len();
    let n = n.min(set.image_count()).max(1);
    let mut max = vec![0.0f32; probes.len()];
    let mut buf = vec![0.0f32; batch * per];
    for chunk in set.images[..n * per].chunks(batch * per) {
        let real = chunk.len() / per;
        buf[..chunk.len()].copy_from_slice(chunk);
        // Pad the last batch by repeating its first image so padding adds no new range.
        for i in real..batch {
            buf.copy_within(0..per, i * per);
        }
        let outs = tract.run(&buf)?;
        for (m, o) in max.iter_mut().zip(&outs[first_probe..]) {
            *m = o.iter().fold(*m, |acc, v| acc.max(v.abs()));
        }
    }
    Ok(max
        .into_iter()
        .map(|m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect())
}

/// Emits `variant` of `model`; static int8 needs the scales from [`calibrate`].
pub fn build(
    model: &LoadedModel,
    variant: Variant,
    activation_scales: Option<&[f32]>,
) -> Result<Vec<u8>, ExportError> {
    let opts = match variant {
        Variant::F32 => EmitOptions::default(),
        Variant::F16 => EmitOptions {
            weights: Some(WeightFormat::F16),
            ..Default::default()
        },
        Variant::Int8WeightOnly => EmitOptions {
            weights: Some(WeightFormat::Int8),
            ..Default::default()
        },
        Variant::Int8Static => EmitOptions {
            weights: Some(WeightFormat::Int8),
            activation_scales: Some(
                activation_scales
                    .ok_or_else(|| {
                        ExportError::Invalid(
                            "static int8 needs calibrated activation scales".into(),
                        )
                    })?
                    .to_vec(),
            ),
            ..Default::default()
        },
    };
    Ok(model.emit(&opts)?.0)
}

/// Largest drops a variant may show against f32 before it is refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccuracyBudget {
    /// Verification accuracy (fraction, e.g. 0.005 = half a point).
    pub max_accuracy_drop: f64,
    /// TAR at the configured FAR.
    pub max_tar_drop: f64,
    /// Lowest acceptable mean cosine between the variant's and f32's embeddings.
    pub min_mean_cosine: f64,
}

impl Default for AccuracyBudget {
    fn default() -> Self {
        Self {
            max_accuracy_drop: 0.005,
            max_tar_drop: 0.01,
            min_mean_cosine: 0.99,
        }
    }
}

/// One row of the variants table.
#[derive(Debug, Clone)]
pub struct VariantReport {
    pub variant: Variant,
    pub bytes: Vec<u8>,
    pub cosine_mean: f64,
    pub cosine_min: f64,
    pub verification: Verification,
    pub accuracy_delta: f64,
    pub tar_delta: f64,
    /// Median tract latency of one image (batch 1), milliseconds.
    pub tract_ms: f64,
}

impl VariantReport {
    /// Refuses the variant when it lost more than `budget` allows.
    pub fn check(&self, budget: &AccuracyBudget) -> Result<(), ExportError> {
        let name = self.variant.name().to_string();
        if self.cosine_mean.is_nan() || self.cosine_mean < budget.min_mean_cosine {
            return Err(ExportError::OverBudget {
                variant: name,
                metric: "mean embedding cosine to f32",
                drop: 1.0 - self.cosine_mean,
                budget: 1.0 - budget.min_mean_cosine,
            });
        }
        if -self.accuracy_delta > budget.max_accuracy_drop {
            return Err(ExportError::OverBudget {
                variant: name,
                metric: "verification accuracy",
                drop: -self.accuracy_delta,
                budget: budget.max_accuracy_drop,
            });
        }
        if -self.tar_delta > budget.max_tar_drop {
            return Err(ExportError::OverBudget {
                variant: name,
                metric: "TAR@FAR",
                drop: -self.tar_delta,
                budget: budget.max_tar_drop,
            });
        }
        Ok(())
    }
}

/// Median wall time of `runs` single-image runs in tract (after 3 warm-up runs), ms.
pub fn tract_latency_ms(bytes: &[u8], input_size: usize, runs: usize) -> Result<f64, ExportError> {
    let model = TractModel::load(bytes, 1, input_size)?;
    let input = super::probe_input(1, input_size as i64, 3);
    for _ in 0..3 {
        model.run(&input)?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        model.run(&input)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Builds and measures `variants` against f32 on `eval`.
pub fn measure(
    model: &LoadedModel,
    eval: &EvalSet,
    calibration_images: usize,
    variants: &[Variant],
    far: f64,
    latency_runs: usize,
) -> Result<Vec<VariantReport>, ExportError> {
    let f32_bytes = build(model, Variant::F32, None)?;
    let reference = embed(&f32_bytes, eval, 16)?;
    let base = verification(&reference, &eval.issame, far);
    let scales = if variants.contains(&Variant::Int8Static) {
        Some(calibrate(model, eval, calibration_images)?)
    } else {
        None
    };
    let mut rows = Vec::new();
    for &variant in variants {
        let bytes = build(model, variant, scales.as_deref())?;
        let embs = if variant == Variant::F32 {
            reference.clone()
        } else {
            embed(&bytes, eval, 16)?
        };
        let cos: Vec<f64> = embs
            .iter()
            .zip(&reference)
            .map(|(a, b)| cosine(a, b))
            .collect();
        let v = verification(&embs, &eval.issame, far);
        let tract_ms = tract_latency_ms(&bytes, eval.input_size, latency_runs)?;
        rows.push(VariantReport {
            variant,
            cosine_mean: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
            cosine_min: cos.iter().copied().fold(f64::INFINITY, f64::min),
            accuracy_delta: v.accuracy - base.accuracy,
            tar_delta: v.tar - base.tar,
            verification: v,
            bytes,
            tract_ms,
        });
    }
    Ok(rows)
}
