//! `trainer eval` and `trainer calibrate`: verification protocol reports and calibrated
//! thresholds for a trained checkpoint.

use anyhow::{bail, Context, Result};
use clap::Args;
use sha2::{Digest, Sha256};
use shared::thresholds::{Condition, Metric, OperatingPoint, ThresholdConfig, UssThreshold};
use std::path::{Path, PathBuf};
use trainer::data::mask::{MaskConfig, Masker};
use trainer::data::PairSet;
use trainer::eval::{self, PairCondition, SetReport};
use trainer::train::{self, device};

#[derive(Args)]
pub struct EvalArgs {
    /// Trainer checkpoint (its stored config names the backbone).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Verification .bin files.
    #[arg(long = "bin", required = true)]
    bins: Vec<PathBuf>,
    /// Skip the masked-probe and masked-both conditions.
    #[arg(long)]
    no_masked: bool,
    /// MaskTheFace-style template directory (default: procedural masks).
    #[arg(long)]
    masks: Option<PathBuf>,
    /// Seed of the evaluation masks (keep it fixed to compare models).
    #[arg(long, default_value_t = 7)]
    mask_seed: u64,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Writes <out>.md, <out>.json and <out>_roc.png.
    #[arg(long, default_value = "eval")]
    out: PathBuf,
}

fn masker(dir: &Option<PathBuf>) -> Result<Masker> {
    let cfg = MaskConfig::default();
    Ok(match dir {
        Some(d) => Masker::from_dir(d, cfg)?,
        None => Masker::procedural(cfg),
    })
}

fn evaluate(
    checkpoint: &Path,
    bins: &[PathBuf],
    masker: Option<&Masker>,
    mask_seed: u64,
    device_name: &str,
    batch: usize,
) -> Result<(Vec<SetReport>, Option<UssThreshold>)> {
    let device = device::select_device(device_name, 1)?;
    let cfg = train::checkpoint_config(checkpoint)?;
    let (_vs, backbone) = train::load_backbone(&cfg.backbone, &cfg.model, checkpoint, device)?;
    let uss = uss_threshold(checkpoint, &cfg)?;
    let mut reports = Vec::new();
    for bin in bins {
        let set = PairSet::read(bin)?;
        let name = bin
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        reports.extend(eval::evaluate_set(
            backbone.as_ref(),
            &name,
            &set,
            masker,
            mask_seed,
            batch,
            device,
        )?);
    }
    Ok((reports, uss))
}

fn uss_threshold(checkpoint: &Path, cfg: &train::TrainConfig) -> Result<Option<UssThreshold>> {
    if !cfg.uss.enabled {
        return Ok(None);
    }
    let file = trainer::checkpoint::read_named(checkpoint)?;
    let b = file
        .get("uss/b")
        .with_context(|| format!("{}: USS enabled but no uss/b", checkpoint.display()))?
        .double_value(&[0]);
    let s = cfg.uss.cfg().s;
    Ok(Some(UssThreshold {
        threshold: (b / s) as f32,
        scale: s as f32,
    }))
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let m = if a.no_masked {
        None
    } else {
        Some(masker(&a.masks)?)
    };
    let (reports, _) = evaluate(
        &a.checkpoint,
        &a.bins,
        m.as_ref(),
        a.mask_seed,
        &a.device,
        a.batch,
    )?;
    let md = eval::markdown(&reports);
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let stem = a.out.display().to_string();
    let write = |suffix: &str, bytes: &[u8]| -> Result<()> {
        let p = PathBuf::from(format!("{stem}{suffix}"));
        shared::atomic_write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))
    };
    write(".md", md.as_bytes())?;
    write(".json", serde_json::to_string_pretty(&reports)?.as_bytes())?;
    let png = PathBuf::from(format!("{stem}_roc.png"));
    eval::plot::roc_png(&png, &reports).map_err(anyhow::Error::msg)?;
    println!("{md}");
    println!("wrote {stem}.md, {stem}.json, {}", png.display());
    Ok(())
}

#[derive(Args)]
pub struct CalibrateArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Calibration pair sets (.bin); genuine and impostor scores are pooled over them.
    #[arg(long = "bin", required = true)]
    bins: Vec<PathBuf>,
    /// Target FARs.
    #[arg(long, value_delimiter = ',', default_value = "1e-3,1e-4")]
    far: Vec<f64>,
    /// The operating point the edge uses.
    #[arg(long, default_value_t = 1e-3)]
    selected_far: f64,
    /// The ONNX file the thresholds are for (model_id = its sha256)...
    #[arg(long, conflicts_with = "model_id")]
    onnx: Option<PathBuf>,
    /// ...or that sha256 directly.
    #[arg(long)]
    model_id: Option<String>,
    #[arg(long)]
    masks: Option<PathBuf>,
    #[arg(long, default_value_t = 7)]
    mask_seed: u64,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Output thresholds TOML.
    #[arg(long, default_value = "thresholds.toml")]
    out: PathBuf,
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

pub fn calibrate(a: CalibrateArgs) -> Result<()> {
    let model_id = match (&a.onnx, &a.model_id) {
        (Some(p), _) => sha256_file(p)?,
        (None, Some(id)) => id.clone(),
        (None, None) => {
            bail!("give --onnx FILE or --model-id SHA256: thresholds belong to one model")
        }
    };
    let m = masker(&a.masks)?;
    let (reports, uss) = evaluate(
        &a.checkpoint,
        &a.bins,
        Some(&m),
        a.mask_seed,
        &a.device,
        a.batch,
    )?;
    let mut points = Vec::new();
    for (cond, pc) in [
        (Condition::Unmasked, PairCondition::Unmasked),
        (Condition::Masked, PairCondition::MaskedProbe),
    ] {
        let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
        for r in reports.iter().filter(|r| r.condition == pc) {
            for (c, s) in r.cosines.iter().zip(&r.issame) {
                if *s {
                    genuine.push(*c)
                } else {
                    impostor.push(*c)
                }
            }
        }
        let cal = trainer::calibrate::calibrate(&genuine, &impostor, &a.far)
            .with_context(|| format!("calibrating the {cond} condition"))?;
        for c in cal {
            if !c.verified {
                eprintln!(
                    "WARNING: {cond}: target FAR {:e} is NOT verifiable with {} impostor pairs \
                     (need >= {}); the threshold {:.4} rejects every impostor seen but proves nothing",
                    c.target_far,
                    c.impostors,
                    trainer::calibrate::impostors_needed(c.target_far),
                    c.threshold
                );
            }
            println!(
                "{cond:<9} FAR<{:e}: threshold {:.4}  measured FAR {:.2e} (95% upper {:.2e})  TAR {:.4}  [{} gen / {} imp]",
                c.target_far, c.threshold, c.measured_far, c.far_upper_bound, c.measured_tar, c.genuines, c.impostors
            );
            points.push(OperatingPoint {
                condition: cond,
                target_far: c.target_far,
                threshold: c.threshold.clamp(-1.0, 1.0),
                measured_far: c.measured_far,
                measured_tar: c.measured_tar,
                genuine_pairs: c.genuines,
                impostor_pairs: c.impostors,
            });
        }
    }
    let cfg = ThresholdConfig {
        model_id,
        metric: Metric::Cosine,
        selected_far: a.selected_far,
        uss,
        operating_points: points,
    };
    cfg.validate()?;
    shared::atomic_write(&a.out, cfg.to_toml()?.as_bytes())
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    Ok(())
}
