//! Section 1: the recogniser files the edge can ship (f32 and the quantized variants of the
//! demo student and of the mbf backbone, plus the kit's SFace), each timed in tract and in
//! onnxruntime side by side.

use super::latency::{side_by_side, ModelCase, SideBySide};
use super::parse::{quantize_table, QuantizeRow};
use super::table::{ms, ratio, Section, Table};
use super::Bench;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The quantized variants `trainer quantize` builds, in its order.
pub const VARIANTS: [&str; 4] = ["f32", "f16", "int8-weights", "int8"];

/// One recogniser file and what is known about it.
#[derive(Debug, Clone)]
pub struct Recogniser {
    /// "demo student (tiny, D=128, trained)".
    pub family: String,
    pub variant: String,
    pub path: PathBuf,
    /// The quantize row (accuracy against f32); None for third-party files.
    pub quality: Option<QuantizeRow>,
    /// True for maskgate models (inputs -1..1, ArcFace preprocessing); false for SFace (0..255).
    pub maskgate: bool,
    /// Whether accuracy figures mean anything (false for random weights).
    pub trained: bool,
    pub timing: Option<SideBySide>,
    /// Input and output names as onnxruntime read them.
    pub outputs: Vec<String>,
    pub input: String,
}

impl Recogniser {
    pub fn label(&self) -> String {
        format!("{} {}", self.family, self.variant)
    }

    /// The `[model.onnx]` table of an edge.toml for this file: its input and outputs as
    /// onnxruntime named them, the preprocessing of its family, and `threshold`.
    pub fn onnx_section(&self, threshold: f32) -> Result<String> {
        let (mean, std) = if self.maskgate {
            (127.5, 127.5)
        } else {
            (0.0, 1.0)
        };
        let output = self
            .outputs
            .iter()
            .find(|o| !o.contains("mask"))
            .with_context(|| {
                format!(
                    "{}: no embedding output among {:?}",
                    self.path.display(),
                    self.outputs
                )
            })?;
        let mask_prob = self
            .outputs
            .iter()
            .find(|o| o.contains("mask"))
            .map(|o| format!("mask_prob_output = {}\n", toml::Value::String(o.clone())))
            .unwrap_or_default();
        Ok(format!(
            r#"[model.onnx]
path = {path}
input = {input}
output = {output}
{mask_prob}width = 112
height = 112
layout = "nchw"
color = "rgb"
mean = [{mean:?}, {mean:?}, {mean:?}]
std = [{std:?}, {std:?}, {std:?}]
threshold_unmasked = {threshold:?}
"#,
            path = crate::demo::toml_str(&self.path),
            input = toml::Value::String(self.input.clone()),
            output = toml::Value::String(output.clone()),
        ))
    }
}

/// `trainer quantize` into `out_dir`, with budgets wide open so every variant is written (the
/// accuracy columns show the cost instead); returns the parsed table.
fn quantize(
    bench: &Bench,
    model_args: &[String],
    eval: &Path,
    out_dir: &Path,
    variants: &[&str],
    max_pairs: usize,
) -> Result<Vec<QuantizeRow>> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut cmd = Command::new(&bench.tools.trainer);
    cmd.arg("quantize")
        .args(model_args)
        .arg("--eval")
        .arg(eval)
        .arg("--variants")
        .arg(variants.join(","))
        .arg("--out-dir")
        .arg(out_dir)
        .arg(format!("--max-pairs={max_pairs}"))
        .arg(format!("--calibration={}", bench.budget.calibration))
        .args([
            "--latency-runs=3",
            "--max-accuracy-drop=1",
            "--max-tar-drop=1",
            "--min-cosine=-1",
        ]);
    let out = bench.run(&mut cmd)?;
    quantize_table(&out)
}

/// Builds the variants and times every file.
pub fn run(bench: &mut Bench) -> Result<(Section, Vec<Recogniser>)> {
    let mut recognisers = Vec::new();
    let eval_small = bench.synth_dir().join("synth_val.bin");

    // The demo student when the demo ran, else the same architecture with random weights.
    let ckpt = bench.opts.demo.join("runs/student/checkpoint.safetensors");
    let demo_val = bench.opts.demo.join("data/synth_val.bin");
    let (family, trained, mut args, eval) = if ckpt.is_file() {
        let eval = if demo_val.is_file() {
            demo_val
        } else {
            eval_small.clone()
        };
        (
            "demo student (tiny, D=128)".to_string(),
            true,
            vec!["--checkpoint".to_string(), ckpt.display().to_string()],
            eval,
        )
    } else {
        (
            "tiny, D=128, random weights (no demo run)".to_string(),
            false,
            vec!["--random-weights".to_string()],
            eval_small.clone(),
        )
    };
    args.extend(["--backbone", "tiny", "--embedding-dim", "128"].map(String::from));
    bench.progress("quantize the student");
    let dir = bench.opts.work.join("models/student");
    let rows = quantize(
        bench,
        &args,
        &eval,
        &dir,
        &VARIANTS,
        bench.budget.quantize_pairs,
    )?;
    for row in rows {
        recognisers.push(Recogniser {
            family: family.clone(),
            variant: row.variant.clone(),
            path: dir.join(format!("tiny-{}.onnx", row.variant)),
            quality: Some(row),
            maskgate: true,
            trained,
            timing: None,
            outputs: Vec::new(),
            input: String::new(),
        });
    }

    bench.progress("quantize mbf (random weights)");
    let dir = bench.opts.work.join("models/mbf");
    let args: Vec<String> = [
        "--random-weights",
        "--backbone",
        "mbf",
        "--embedding-dim",
        "512",
    ]
    .map(String::from)
    .to_vec();
    let rows = quantize(
        bench,
        &args,
        &eval_small,
        &dir,
        &bench.budget.mbf_variants.clone(),
        bench.budget.quantize_pairs.min(100),
    )?;
    for row in rows {
        recognisers.push(Recogniser {
            family: "mbf (MobileFaceNet, D=512, random weights)".into(),
            variant: row.variant.clone(),
            path: dir.join(format!("mbf-{}.onnx", row.variant)),
            quality: Some(row),
            maskgate: true,
            trained: false,
            timing: None,
            outputs: Vec::new(),
            input: String::new(),
        });
    }

    let sface = bench.kit("models/sface_2021dec.fp32.onnx")?;
    recognisers.push(Recogniser {
        family: "SFace (OpenCV zoo, kit)".into(),
        variant: "f32".into(),
        path: sface,
        quality: None,
        maskgate: false,
        trained: true,
        timing: None,
        outputs: Vec::new(),
        input: String::new(),
    });

    let mut table = Table::new(&[
        "model",
        "variant",
        "file (MB)",
        "cosine to f32",
        "accuracy change",
        "tract median (ms)",
        "tract p90",
        "onnxruntime median (ms)",
        "onnxruntime p90",
        "tract / onnxruntime",
    ]);
    for r in &mut recognisers {
        bench.progress(&format!("time {}", r.label()));
        let (lo, hi) = if r.maskgate {
            (-1.0, 1.0)
        } else {
            (0.0, 255.0)
        };
        let case = ModelCase {
            path: r.path.clone(),
            // maskgate exports have a symbolic batch; every recogniser here takes 112x112.
            shape: Some(vec![1, 3, 112, 112]),
            lo,
            hi,
        };
        let t = side_by_side(&bench.py, &case, bench.budget.runs, bench.budget.warmup);
        if let Some(io) = &t.io {
            r.input = io.input.clone();
            r.outputs = io.outputs.clone();
        }
        if let Some(v) = &t.ort_version {
            bench.versions.onnxruntime = Some(v.clone());
        }
        let size = std::fs::metadata(&r.path).map_or(f64::NAN, |m| m.len() as f64 / 1e6);
        let (cos, dacc) = match (&r.quality, r.trained) {
            (Some(q), true) => (
                format!("{:.4}", q.cos_mean),
                format!("{:+.4}", q.accuracy_delta),
            ),
            (Some(q), false) => (format!("{:.4}", q.cos_mean), "n/a (random weights)".into()),
            (None, _) => ("-".into(), "-".into()),
        };
        let cell = |x: &Result<super::table::Timing, String>, p90: bool| match x {
            Ok(t) => ms(if p90 { t.p90 } else { t.median }),
            Err(e) => format!("n/a: {e}"),
        };
        table.push(vec![
            r.family.clone(),
            r.variant.clone(),
            format!("{size:.2}"),
            cos,
            dacc,
            cell(&t.tract, false),
            cell(&t.tract, true),
            cell(&t.ort, false),
            cell(&t.ort, true),
            ratio(t.tract_median(), t.ort_median()),
        ])?;
        r.timing = Some(t);
    }
    let section = Section {
        title: "Recogniser model latency: tract vs onnxruntime".into(),
        about: format!(
            "One forward pass of each recogniser file, batch 1, on a fixed input pattern: tract \
             (through the edge's own loader, `edge::model::load_plan`) and onnxruntime (Python, \
             `scripts/bench/ort_latency.py`) run the SAME .onnx file with ONE thread each \
             (onnxruntime: intra_op_num_threads = 1, inter_op_num_threads = 1, sequential), \
             {} warm-up runs, then the median and 90th percentile of {} runs. The last column is \
             how many times longer tract takes (below 1 means tract is faster). Variants come \
             from `trainer quantize`: f16 (half-size weights, f32 compute), int8-weights \
             (per-channel int8 weights + DequantizeLinear) and int8 (static QDQ: int8 weights \
             and calibrated int8 conv inputs); `cosine to f32` is the mean cosine between a variant's and the f32 \
             model's embeddings on verification images, `accuracy change` the change of \
             verification accuracy (only meaningful for trained weights).",
            bench.budget.warmup, bench.budget.runs
        ),
        table,
        notes: vec![
            format!(
                "Accuracy columns from `trainer quantize` on {} (up to {} pairs).",
                super::shown(&eval),
                bench.budget.quantize_pairs
            ),
            "mbf has random weights (no trained mbf is shipped): its rows measure speed only.".into(),
            "The kit's block-quantised SFace (sface_2021dec.int8bq.onnx) is left out: it declares 29 weight tensors as required graph inputs, so neither runtime can run it from one image input.".into(),
        ],
    };
    Ok((section, recognisers))
}
