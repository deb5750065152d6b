//! Latency of one ONNX model in tract and in onnxruntime, side by side: the same file, the same
//! input values, batch 1, one thread each (tract runs single-threaded; onnxruntime is pinned to
//! one intra-op and one inter-op thread, sequential), warm-up runs first, then median and p90.
//!
//! tract goes through `edge::model::load_plan` / `run_plan`, the exact path the edge binary
//! uses; onnxruntime through `scripts/bench/ort_latency.py`.

use super::table::Timing;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// One model to time.
#[derive(Debug, Clone)]
pub struct ModelCase {
    pub path: PathBuf,
    /// Input shape to run at; None: the model's own (fixed) shape.
    pub shape: Option<Vec<usize>>,
    /// Input values span lo..hi (the model's own pixel range: -1..1 for maskgate models,
    /// 0..255 for SFace and YuNet).
    pub lo: f32,
    pub hi: f32,
}

/// What onnxruntime reported about a model (and its timings).
#[derive(Debug, Clone, Deserialize)]
pub struct OrtRun {
    pub input: String,
    pub shape: Vec<usize>,
    pub outputs: Vec<String>,
    pub onnxruntime: String,
    pub ms: Vec<f64>,
}

/// Both runtimes on one model; a runtime that cannot run it keeps its reason.
#[derive(Debug, Clone)]
pub struct SideBySide {
    pub ort: Result<Timing, String>,
    pub tract: Result<Timing, String>,
    pub ort_version: Option<String>,
    /// The model's input and outputs as onnxruntime read them (None when it could not).
    pub io: Option<ModelIo>,
}

impl SideBySide {
    pub fn ort_median(&self) -> Option<f64> {
        self.ort.as_ref().ok().map(|t| t.median)
    }
    pub fn tract_median(&self) -> Option<f64> {
        self.tract.as_ref().ok().map(|t| t.median)
    }
}

/// The input values both runtimes get: x[i] = lo + (hi - lo) * ((37 i + 11) mod 256) / 255
/// (ort_latency.py computes the same).
pub fn input_pattern(n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let k = ((37 * i as u64 + 11) % 256) as f64 / 255.0;
            (f64::from(lo) + f64::from(hi - lo) * k) as f32
        })
        .collect()
}

/// The Python with onnxruntime and the scripts directory.
#[derive(Debug, Clone)]
pub struct PythonTools {
    pub python: PathBuf,
    pub scripts: PathBuf,
}

impl PythonTools {
    pub fn script(&self, name: &str) -> PathBuf {
        self.scripts.join(name)
    }

    /// Runs `script args...` and returns its stdout; failures carry its last stderr lines.
    pub fn run(&self, script: &str, args: &[String]) -> Result<String> {
        let path = self.script(script);
        if !path.is_file() {
            bail!("bench helper {} is missing", path.display());
        }
        let out = Command::new(&self.python)
            .arg(&path)
            .args(args)
            .output()
            .with_context(|| format!("starting {} {}", self.python.display(), path.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            bail!(
                "{} {script} failed ({}): {}",
                self.python.display(),
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// onnxruntime timings of `case` (and the model's input/output names).
    pub fn ort(&self, case: &ModelCase, runs: usize, warmup: usize) -> Result<OrtRun> {
        let mut args = vec![
            "--model".to_string(),
            case.path.display().to_string(),
            format!("--lo={}", case.lo),
            format!("--hi={}", case.hi),
            format!("--runs={runs}"),
            format!("--warmup={warmup}"),
        ];
        if let Some(shape) = &case.shape {
            let s: Vec<String> = shape.iter().map(usize::to_string).collect();
            args.push(format!("--shape={}", s.join(",")));
        }
        let out = self.run("ort_latency.py", &args)?;
        let line = out.lines().last().unwrap_or_default();
        serde_json::from_str(line).with_context(|| {
            format!(
                "ort_latency.py printed {line:?} for {}",
                case.path.display()
            )
        })
    }
}

/// The names and shape tract needs to build a plan (as onnxruntime read them).
#[derive(Debug, Clone)]
pub struct ModelIo {
    pub input: String,
    pub shape: Vec<usize>,
    pub outputs: Vec<String>,
}

/// tract timings of `case` (every output computed), per run in ms.
pub fn tract_samples(
    case: &ModelCase,
    io: &ModelIo,
    runs: usize,
    warmup: usize,
) -> Result<Vec<f64>> {
    let bytes = edge::model::read_model("benchmarked", &case.path)?;
    let names: Vec<&str> = io.outputs.iter().map(String::as_str).collect();
    let plan = edge::model::load_plan(
        "benchmarked",
        &case.path,
        &bytes,
        &io.input,
        &io.shape,
        &names,
    )?;
    let x = input_pattern(io.shape.iter().product(), case.lo, case.hi);
    for _ in 0..warmup {
        edge::model::run_plan("benchmarked", &plan, &io.shape, &x)?;
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        edge::model::run_plan("benchmarked", &plan, &io.shape, &x)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ms)
}

/// onnxruntime first (it also names the model's input and outputs), then tract.
pub fn side_by_side(py: &PythonTools, case: &ModelCase, runs: usize, warmup: usize) -> SideBySide {
    let ort = py.ort(case, runs, warmup);
    let (io, ort_version) = match &ort {
        Ok(r) => (
            Some(ModelIo {
                input: r.input.clone(),
                shape: r.shape.clone(),
                outputs: r.outputs.clone(),
            }),
            Some(r.onnxruntime.clone()),
        ),
        Err(_) => (None, None),
    };
    let tract = match &io {
        Some(io) => tract_samples(case, io, runs, warmup).map_err(|e| short(&e)),
        None => Err("no input/output names (onnxruntime could not read the model)".into()),
    };
    let stats = |r: Result<Vec<f64>, String>| {
        r.and_then(|s| Timing::from_samples(&s).ok_or_else(|| "no timings".to_string()))
    };
    SideBySide {
        ort: stats(ort.map(|r| r.ms).map_err(|e| short(&e))),
        tract: stats(tract),
        ort_version,
        io,
    }
}

/// An error as one short line for a table cell.
pub fn short(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    let s = s.lines().next().unwrap_or_default();
    if s.chars().count() > 160 {
        format!("{}...", s.chars().take(160).collect::<String>())
    } else {
        s.to_string()
    }
}
