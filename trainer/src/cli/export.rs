//! `trainer export`, `trainer quantize`, `trainer export-forms`, `trainer keygen`,
//! `trainer bundle`.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use trainer::data::verification::PairSet;
use trainer::export::graph::{EmitOptions, FcForm, FlattenForm, GraphForms, PreluForm};
use trainer::export::variants::{self, AccuracyBudget, EvalSet, Variant};
use trainer::export::{self, bundle, LoadedModel};
use trainer::model::BackboneCfg;

/// Which trained model to read.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Checkpoint (.safetensors) with the backbone (plain keys or store `backbone`).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Backbone name (tiny, mbf, r18, r34, r50, r100).
    #[arg(long)]
    backbone: String,
    #[arg(long, default_value_t = 512)]
    embedding_dim: i64,
    /// Use random weights instead of a checkpoint (graph and latency work only).
    #[arg(long, conflicts_with = "checkpoint")]
    random_weights: bool,
}

impl ModelArgs {
    fn load(&self) -> Result<LoadedModel> {
        let cfg = BackboneCfg {
            embedding_dim: self.embedding_dim,
            ..Default::default()
        };
        match (&self.checkpoint, self.random_weights) {
            (Some(p), _) => LoadedModel::from_checkpoint(p, &self.backbone, &cfg)
                .with_context(|| format!("loading {} from {}", self.backbone, p.display())),
            (None, true) => Ok(LoadedModel::random(&self.backbone, &cfg)?),
            (None, false) => anyhow::bail!("give --checkpoint FILE (or --random-weights)"),
        }
    }
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output ONNX file (written only after the tract-vs-tch check passes).
    #[arg(long)]
    out: PathBuf,
}

pub fn export(a: ExportArgs) -> Result<()> {
    tch::set_num_threads(1);
    let model = a.model.load()?;
    let r = export::export_f32(&model, &a.out)
        .with_context(|| format!("exporting {} to {}", a.model.backbone, a.out.display()))?;
    println!(
        "wrote {} ({} bytes, sha256 {}); tract vs tch max relative difference {:.2e}{}",
        a.out.display(),
        r.bytes,
        r.sha256,
        r.parity.embedding_rel,
        r.parity
            .mask_prob_rel
            .map(|m| format!(", mask_prob {m:.2e}"))
            .unwrap_or_default()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Verification .bin to measure on (and to calibrate on, first --calibration images).
    #[arg(long)]
    eval: PathBuf,
    /// Pairs of --eval to use.
    #[arg(long, default_value_t = 400)]
    max_pairs: usize,
    /// Images used to calibrate the static int8 activation scales.
    #[arg(long, default_value_t = 64)]
    calibration: usize,
    /// Variants to build and measure (comma separated: f32,f16,int8-weights,int8).
    #[arg(
        long,
        default_value = "f32,f16,int8-weights,int8",
        value_delimiter = ','
    )]
    variants: Vec<String>,
    /// FAR of the TAR@FAR column.
    #[arg(long, default_value_t = 0.01)]
    far: f64,
    /// Largest verification-accuracy drop allowed (fraction).
    #[arg(long, default_value_t = 0.005)]
    max_accuracy_drop: f64,
    /// Largest TAR@FAR drop allowed (fraction).
    #[arg(long, default_value_t = 0.01)]
    max_tar_drop: f64,
    /// Lowest mean cosine to f32 allowed.
    #[arg(long, default_value_t = 0.99)]
    min_cosine: f64,
    /// Write the accepted variants here as `<backbone>-<variant>.onnx`.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Python with onnxruntime for the reference latency column (skipped when absent).
    #[arg(long)]
    python: Option<PathBuf>,
    #[arg(long, default_value_t = 30)]
    latency_runs: usize,
}

pub fn quantize(a: QuantizeArgs) -> Result<()> {
    tch::set_num_threads(1);
    let model = a.model.load()?;
    let variants: Vec<Variant> = a
        .variants
        .iter()
        .map(|v| Variant::parse(v))
        .collect::<Result<_, _>>()?;
    let pairs = PairSet::read(&a.eval)?;
    let set = EvalSet::from_pairs(&pairs, &shared::PreprocessSpec::arcface_112(), a.max_pairs)
        .with_context(|| format!("reading {}", a.eval.display()))?;
    let rows = variants::measure(
        &model,
        &set,
        a.calibration,
        &variants,
        a.far,
        a.latency_runs,
    )?;
    let budget = AccuracyBudget {
        max_accuracy_drop: a.max_accuracy_drop,
        max_tar_drop: a.max_tar_drop,
        min_mean_cosine: a.min_cosine,
    };
    println!(
        "{} on {} ({} pairs), calibration {} images, 1 thread",
        a.model.backbone,
        a.eval.display(),
        set.issame.len(),
        a.calibration
    );
    println!(
        "| variant | bytes | cos mean | cos min | acc | d acc | TAR@FAR={} | d TAR | tract ms | ort ms | budget |",
        a.far
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut refused = Vec::new();
    for r in &rows {
        let ort = match &a.python {
            Some(py) => ort_latency(py, &r.bytes, a.latency_runs)
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|e| format!("n/a ({e:#})")),
            None => "-".into(),
        };
        let verdict = match r.check(&budget) {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                refused.push(e.to_string());
                "REFUSED".to_string()
            }
        };
        println!(
            "| {} | {} | {:.5} | {:.5} | {:.4} | {:+.4} | {:.4} | {:+.4} | {:.2} | {} | {} |",
            r.variant.name(),
            r.bytes.len(),
            r.cosine_mean,
            r.cosine_min,
            r.verification.accuracy,
            r.accuracy_delta,
            r.verification.tar,
            r.tar_delta,
            r.tract_ms,
            ort,
            verdict
        );
        if let (Some(dir), true) = (&a.out_dir, r.check(&budget).is_ok()) {
            let path = dir.join(format!("{}-{}.onnx", a.model.backbone, r.variant.name()));
            shared::atomic_write(&path, &r.bytes)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    for e in &refused {
        eprintln!("trainer: {e}");
    }
    if !refused.is_empty() {
        anyhow::bail!(
            "{} variant(s) refused by the accuracy budget",
            refused.len()
        );
    }
    Ok(())
}

/// Median onnxruntime latency (1 thread, batch 1) of `bytes`, via the given Python.
fn ort_latency(python: &PathBuf, bytes: &[u8], runs: usize) -> Result<f64> {
    let dir = tempdir()?;
    let path = dir.join("model.onnx");
    std::fs::write(&path, bytes)?;
    let script = r#"
import sys, time, numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32)
for _ in range(3): s.run(None, {"data": x})
t = []
for _ in range(int(sys.argv[2])):
    a = time.perf_counter(); s.run(None, {"data": x}); t.append((time.perf_counter() - a) * 1e3)
print(sorted(t)[len(t) // 2])
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(&path)
        .arg(runs.to_string())
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        out.status.success(),
        "onnxruntime failed: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("maskgate-ort-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[derive(Args, Debug)]
pub struct FormsArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value_t = 30)]
    runs: usize,
}

/// Times every PReLU / FC / flatten encoding in tract (batch 1, 1 thread) and prints a table.
pub fn forms(a: FormsArgs) -> Result<()> {
    tch::set_num_threads(1);
    let model = a.model.load()?;
    let base = GraphForms {
        prelu: PreluForm::PRelu,
        fc: FcForm::Gemm,
        flatten: FlattenForm::Flatten,
    };
    let mut candidates = vec![("plain (PRelu, Gemm, Flatten)", base)];
    for (name, prelu) in [
        ("PReLU as Relu/Neg/Mul/Sub", PreluForm::ReluNeg),
        ("PReLU as Max/Min/Mul/Add", PreluForm::MaxMin),
    ] {
        candidates.push((name, GraphForms { prelu, ..base }));
    }
    candidates.push((
        "FC as MatMul+Add",
        GraphForms {
            fc: FcForm::MatMulAdd,
            ..base
        },
    ));
    candidates.push((
        "Flatten as Reshape",
        GraphForms {
            flatten: FlattenForm::Reshape,
            ..base
        },
    ));
    println!(
        "{} graph forms in tract, batch 1, median of {} runs",
        a.model.backbone, a.runs
    );
    candidates.push(("chosen default", GraphForms::default()));
    println!("| form | tract ms | vs plain | parity |");
    println!("|---|---|---|---|");
    let mut base_ms = None;
    for (name, forms) in candidates {
        let (bytes, _) = model.emit(&EmitOptions {
            forms,
            ..Default::default()
        })?;
        let parity = export::check_parity(&model, &bytes, 1, export::PARITY_TOLERANCE)?;
        let ms = variants::tract_latency_ms(&bytes, model.cfg.input_size as usize, a.runs)?;
        let b = *base_ms.get_or_insert(ms);
        println!(
            "| {name} | {ms:.2} | {:.2}x | {:.1e} |",
            ms / b,
            parity.embedding_rel
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Secret key file (mode 0600); the public key goes beside it with the extension `.pub` (demo.key -> demo.pub).
    #[arg(long)]
    out: PathBuf,
}

pub fn keygen(a: KeygenArgs) -> Result<()> {
    let public = bundle::keygen(&a.out)?;
    println!("wrote {} and {}", a.out.display(), public.display());
    Ok(())
}

#[derive(Args, Debug)]
pub struct BundleArgs {
    #[arg(long)]
    onnx: PathBuf,
    /// Threshold config TOML calibrated on this model file (its model_id is the file's sha256).
    #[arg(long)]
    thresholds: PathBuf,
    /// Secret key from `trainer keygen`.
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// f32, f16, int8-weights or int8.
    #[arg(long, default_value = "f32")]
    variant: String,
    /// Dataset name recorded in the provenance.
    #[arg(long, default_value = "unknown")]
    dataset: String,
    /// Trainer config file the model was trained with (hashed into the provenance).
    #[arg(long)]
    trainer_config: Option<PathBuf>,
    /// Release number of this bundle (manifest `bundle_version`): give each release a higher
    /// one; an edge refuses a bundle older than the one it last ran unless started with
    /// --allow-downgrade. 0 (the default) leaves the bundle unversioned.
    #[arg(long = "version", value_name = "N", default_value_t = 0)]
    bundle_version: u64,
}

pub fn bundle(a: BundleArgs) -> Result<()> {
    let req = bundle::BundleRequest {
        onnx: a.onnx,
        thresholds: a.thresholds,
        key: a.key,
        out: a.out.clone(),
        variant: Variant::parse(&a.variant)?.model_variant(),
        dataset: a.dataset,
        trainer_config: a.trainer_config,
        bundle_version: a.bundle_version,
    };
    let m = bundle::make_bundle(&req)?;
    println!(
        "wrote {} (version {}, model {}, {:?}, D={}, git {})",
        a.out.display(),
        m.bundle_version,
        m.model_sha256,
        m.variant,
        m.embedding_dim,
        m.provenance.git_commit
    );
    Ok(())
}
