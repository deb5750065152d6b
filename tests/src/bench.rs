//! `maskgate-bench` (`make bench`): measures the edge and the trainer on this machine next to
//! the runtimes a user would otherwise reach for (onnxruntime, PyTorch eager) and writes
//! docs/BENCHMARKS.md. Every comparison runs both sides in the same run, on the same files,
//! with the same thread count; every table is headed by the machine and the date.
//!
//! One module per concern: [`table`] (statistics and markdown, pure), [`parse`] (the tools'
//! printed tables), [`latency`] (one model in tract and in onnxruntime), then one module per
//! section: [`models`], [`edge_runs`], [`door`], [`training`].

pub mod door;
pub mod edge_runs;
pub mod latency;
pub mod models;
pub mod parse;
pub mod table;
pub mod training;

use crate::tools::{run_logged, Tools};
use anyhow::{bail, Context, Result};
use latency::PythonTools;
use std::path::{Path, PathBuf};
use std::process::Command;
use table::{Document, Section};

/// The team-kit files the report needs: the real detector, recogniser and photo.
pub const KIT_FILES: [&str; 3] = [
    "models/yunet_2023mar.fp32.onnx",
    "models/sface_2021dec.fp32.onnx",
    edge_runs::PHOTO,
];

/// How much to measure. [`Budget::full`] writes the committed report; [`Budget::quick`] runs
/// every code path with few repetitions, as a smoke check (its figures are noise).
#[derive(Debug, Clone)]
pub struct Budget {
    /// Timed runs per model (after `warmup` untimed ones).
    pub runs: usize,
    pub warmup: usize,
    /// Verification pairs `trainer quantize` measures accuracy on, and its calibration images.
    pub quantize_pairs: usize,
    pub calibration: usize,
    pub mbf_variants: Vec<&'static str>,
    /// Gallery sizes of the 1:N scaling.
    pub templates: Vec<usize>,
    /// People in the padded gallery of the memory section.
    pub big_gallery: usize,
    /// Training steps timed (after one warm-up step) and their batch.
    pub train_steps: usize,
    pub batch: usize,
}

impl Budget {
    pub fn full() -> Self {
        Self {
            runs: 50,
            warmup: 5,
            quantize_pairs: 400,
            calibration: 64,
            mbf_variants: models::VARIANTS.to_vec(),
            templates: vec![1_000, 10_000, 100_000, 1_000_000],
            big_gallery: 10_000,
            train_steps: 10,
            batch: 32,
        }
    }

    pub fn quick() -> Self {
        Self {
            runs: 5,
            warmup: 1,
            quantize_pairs: 40,
            calibration: 8,
            mbf_variants: vec!["f32", "int8"],
            templates: vec![1_000, 10_000],
            big_gallery: 10_000,
            train_steps: 1,
            batch: 8,
        }
    }
}

/// Where things are.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// A finished `make demo` run (its student is benchmarked; random weights without it).
    pub demo: PathBuf,
    /// Scratch space for models, configs, frames and the log (out/bench).
    pub work: PathBuf,
    /// The team kit (../shared): YuNet, SFace and the photos.
    pub kit: PathBuf,
    /// The command line recorded in the report.
    pub command: String,
    /// A remark for the report's preamble (for example: the machine was busy).
    pub note: Option<String>,
}

/// Versions of the reference runtimes, as they reported themselves.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    pub onnxruntime: Option<String>,
    pub torch: Option<String>,
}

/// The state every section shares.
pub struct Bench {
    pub opts: BenchOptions,
    pub budget: Budget,
    pub tools: Tools,
    pub py: PythonTools,
    pub versions: Versions,
    spinner: Option<indicatif::ProgressBar>,
}

impl Bench {
    pub fn new(
        mut opts: BenchOptions,
        budget: Budget,
        tools: Tools,
        py: PythonTools,
    ) -> Result<Self> {
        std::fs::create_dir_all(&opts.work)
            .with_context(|| format!("creating {}", opts.work.display()))?;
        // The configs written here are read relative to their own directory: absolute paths.
        for p in [&mut opts.work, &mut opts.demo, &mut opts.kit] {
            *p = std::path::absolute(&*p).with_context(|| format!("resolving {}", p.display()))?;
        }
        let _ = std::fs::remove_file(opts.work.join("bench.log"));
        for (what, p) in [("Python", &py.python), ("bench scripts", &py.scripts)] {
            if !p.exists() {
                bail!(
                    "{what} {} is missing (scripts/bench/ensure_venv.sh creates .venv-bench; `make bench` runs it)",
                    p.display()
                );
            }
        }
        Ok(Self {
            opts,
            budget,
            tools,
            py,
            versions: Versions::default(),
            spinner: None,
        })
    }

    /// Show what is being measured on a spinner line (the CLI); tests stay quiet.
    pub fn with_progress(mut self) -> Self {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_style(
            indicatif::ProgressStyle::with_template("[{elapsed_precise}] {spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        s.enable_steady_tick(std::time::Duration::from_millis(200));
        self.spinner = Some(s);
        self
    }

    pub fn progress(&self, msg: &str) {
        tracing::info!(step = msg, "bench");
        if let Some(s) = &self.spinner {
            s.set_message(msg.to_string());
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.opts.work.join("bench.log")
    }

    /// Runs a tool, its output appended to the log; returns its stdout.
    pub fn run(&self, cmd: &mut Command) -> Result<String> {
        run_logged(cmd, &self.log_path())
    }

    pub fn log(&self, text: &str) -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        writeln!(f, "{text}").with_context(|| format!("writing {}", self.log_path().display()))
    }

    /// A file of the team kit, or an error naming it.
    pub fn kit(&self, rel: &str) -> Result<PathBuf> {
        let p = self.opts.kit.join(rel);
        if !p.is_file() {
            bail!(
                "team kit file {} is missing (the bench times the kit's models and photos)",
                p.display()
            );
        }
        Ok(p)
    }

    /// The bench's own small synthetic set: verification pairs for the quantizer and the
    /// door people.
    pub fn synth_dir(&self) -> PathBuf {
        self.opts.work.join("synth")
    }

    fn synthesise(&self) -> Result<()> {
        self.progress("synthesise faces");
        let mut cmd = Command::new(&self.tools.trainer);
        cmd.arg("synth").arg("--out").arg(self.synth_dir());
        for a in [
            "--identities=2",
            "--images-per-id=2",
            "--val-identities=20",
            "--val-pairs=200",
            "--door-people=20",
            "--door-strangers=5",
            "--door-enroll-images=2",
            "--door-probes=1",
            "--seed=0",
        ] {
            cmd.arg(a);
        }
        self.run(&mut cmd)?;
        Ok(())
    }

    /// Every section, in order, into one document.
    pub fn run_all(mut self) -> Result<Document> {
        // Fail before minutes of work, not in the middle.
        for rel in KIT_FILES {
            self.kit(rel)?;
        }
        if !Path::new(door::GNU_TIME).is_file() {
            bail!(
                "{} is missing: the memory section needs GNU time (apt-get install time)",
                door::GNU_TIME
            );
        }
        let load_start = load_average();
        self.synthesise()?;
        let mut sections: Vec<Section> = Vec::new();
        let (s1, recognisers) = models::run(&mut self).context("section 1 (model latency)")?;
        sections.push(s1);
        let (s2, stage) =
            edge_runs::stages(&mut self, &recognisers).context("section 2 (edge stages)")?;
        sections.push(s2);
        let mut budget_note = None;
        if self.budget.templates.contains(&1_000_000) && available_memory_gib() < 6.0 {
            self.budget.templates.retain(|&n| n < 1_000_000);
            budget_note = Some(format!(
                "The 1,000,000-people gallery was skipped: only {:.1} GiB of memory was available (it needs about 3).",
                available_memory_gib()
            ));
        }
        let mut s3 = edge_runs::scaling(&mut self, &stage).context("section 3 (1:N scaling)")?;
        s3.notes.extend(budget_note);
        sections.push(s3);
        sections.push(door::run(&mut self, &recognisers).context("section 4 (door memory)")?);
        sections.push(training::run(&mut self).context("section 5 (training throughput)")?);
        let load_end = load_average();
        if let Some(s) = &self.spinner {
            s.finish_and_clear();
        }
        let preamble = self.preamble(load_start, load_end);
        Ok(Document {
            machine: crate::machine_description(),
            date: crate::utc_date(),
            command: self.opts.command.clone(),
            preamble,
            sections,
        })
    }

    fn preamble(&self, load_start: Option<f64>, load_end: Option<f64>) -> Vec<String> {
        let profile = |p: &Path| {
            if p.components().any(|c| c.as_os_str() == "release") {
                "release profile".to_string()
            } else {
                "the workspace dev profile (every dependency, tract and the libtorch bindings \
                 included, at opt-level 3; maskgate's own crates at opt-level 1)"
                    .to_string()
            }
        };
        let v = |o: &Option<String>| o.clone().unwrap_or_else(|| "?".into());
        let mut p = vec![format!(
            "Runtimes: tract-onnx {} (the edge), libtorch {} through tch (the trainer), \
             onnxruntime {} and PyTorch {} (references, in `.venv-bench`). `edge` ({}) and \
             `trainer` ({}) were built with {}; set MASKGATE_EDGE / MASKGATE_TRAINER to bench \
             other builds.",
            lock_version("tract-onnx").unwrap_or_else(|| "?".into()),
            lock_version("torch-sys").map_or("?".into(), |t| format!("(torch-sys {t})")),
            v(&self.versions.onnxruntime),
            v(&self.versions.torch),
            self.tools.edge.display(),
            self.tools.trainer.display(),
            profile(&self.tools.edge),
        )];
        p.push(
            "Regenerate with `make bench` (runs `scripts/bench/ensure_venv.sh`, which creates \
             `.venv-bench` with full PyTorch 2.11, onnxruntime, onnx and numpy when it is \
             missing, about 5 GB; then `maskgate-bench --out docs/BENCHMARKS.md`). \
             `maskgate-bench --quick` runs every step with few repetitions as a smoke check. \
             Commands and their output go to out/bench/bench.log."
                .into(),
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if let (Some(a), Some(b)) = (load_start, load_end) {
            // Only the load before the run is someone else's; the end includes our own work.
            let busy = a > 0.5 * cores;
            p.push(format!(
                "Load average (1 min) before the run {a:.2} on {cores:.0} cores{} At the end \
                 {b:.2}, which includes this run's own work.",
                if busy {
                    ": the machine was NOT idle, so absolute figures are pessimistic; ratios \
                     are fairer, both sides having shared the same load."
                } else {
                    ": the machine was otherwise idle."
                }
            ));
        }
        if let Some(n) = &self.opts.note {
            p.push(n.clone());
        }
        p
    }
}

/// `p` relative to the workspace root when it lies inside it (the report names no home
/// directories), else as it is.
pub fn shown(p: &Path) -> String {
    let root = crate::workspace_root();
    let root = std::path::absolute(&root).unwrap_or(root);
    p.strip_prefix(&root)
        .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
}

/// The 1-minute load average, from /proc/loadavg.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// MemAvailable in GiB (0 when unknown).
fn available_memory_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1048576.0)
}

/// The version of `package` in the workspace's Cargo.lock.
fn lock_version(package: &str) -> Option<String> {
    let lock = std::fs::read_to_string(crate::workspace_root().join("Cargo.lock")).ok()?;
    let needle = format!("name = \"{package}\"\nversion = \"");
    let start = lock.find(&needle)? + needle.len();
    let end = lock[start..].find('"')? + start;
    Some(lock[start..end].to_string())
}
