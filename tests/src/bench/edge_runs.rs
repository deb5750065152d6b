//! Sections 2 and 3: `edge bench` (detect, align, embed, 1:N search, the whole frame-to-decision
//! path, as the edge binary runs them) for every recogniser variant on a real kit photo, next to
//! the models alone in tract and in onnxruntime; and the 1:N search at growing gallery sizes.

use super::latency::{side_by_side, ModelCase, SideBySide};
use super::models::Recogniser;
use super::parse::{edge_bench, EdgeBench};
use super::table::{ms, ratio, Section, Table};
use super::Bench;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The YuNet input side the edge uses by default (edge.example.toml).
pub const DETECTOR_INPUT: usize = 320;

/// The kit photo every stage is timed on (one frontal face, 853x480).
pub const PHOTO: &str = "faces/real-small/obama/obama-480p.jpg";

/// An edge.toml for `r` behind YuNet (flip fusion off: one recogniser run per face), with its
/// own gallery in `dir`.
pub fn write_config(dir: &Path, r: &Recogniser, yunet: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let threshold = if r.maskgate { 0.3 } else { 0.363 };
    let model = r.onnx_section(threshold)?;
    let text = format!(
        r#"# Written by maskgate-bench: {label} behind YuNet, for `edge bench`.
[model]
flip_fusion = false
condition = "auto"

{model}
[detector]
path = {yunet}
input_size = {DETECTOR_INPUT}
score_threshold = 0.6
nms_iou = 0.3
max_faces = 32

[gallery]
path = "gallery.bin"
key_file = "gallery.key"

# The audit log and the state file (rollback protection) stay beside this config.
[audit]
path = "audit.jsonl"
"#,
        label = r.label(),
        yunet = crate::demo::toml_str(yunet),
    );
    let path = dir.join("edge.toml");
    shared::atomic_write(&path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `edge --config <config> bench <photo> --runs N --templates ...`, parsed.
pub fn run_edge_bench(
    bench: &Bench,
    config: &Path,
    photo: &Path,
    templates: &[usize],
) -> Result<EdgeBench> {
    let sizes: Vec<String> = templates.iter().map(usize::to_string).collect();
    let mut cmd = Command::new(&bench.tools.edge);
    cmd.arg("--config")
        .arg(config)
        .arg("bench")
        .arg(photo)
        .arg(format!("--runs={}", bench.budget.runs))
        .arg(format!("--templates={}", sizes.join(",")));
    let out = bench.run(&mut cmd)?;
    edge_bench(&out)
        .with_context(|| format!("reading the output of edge bench with {}", config.display()))
}

/// What section 3 needs from section 2.
pub struct StageResults {
    /// The config of the first maskgate f32 recogniser (for the scaling run).
    pub f32_config: Option<PathBuf>,
    pub photo: PathBuf,
}

/// Section 2.
pub fn stages(bench: &mut Bench, recognisers: &[Recogniser]) -> Result<(Section, StageResults)> {
    let photo = bench.kit(PHOTO)?;
    let yunet_kit = bench.kit("models/yunet_2023mar.fp32.onnx")?;
    // The released YuNet has a fixed 640x640 input, which onnxruntime enforces; this copy only
    // makes height and width symbolic so both runtimes run it at the edge's size.
    let yunet = bench.opts.work.join("models/yunet_free_size.onnx");
    std::fs::create_dir_all(bench.opts.work.join("models"))?;
    bench.py.run(
        "free_input_size.py",
        &[yunet_kit.display().to_string(), yunet.display().to_string()],
    )?;
    bench.progress("time YuNet");
    let det = side_by_side(
        &bench.py,
        &ModelCase {
            path: yunet.clone(),
            shape: Some(vec![1, 3, DETECTOR_INPUT, DETECTOR_INPUT]),
            lo: 0.0,
            hi: 255.0,
        },
        bench.budget.runs,
        bench.budget.warmup,
    );
    let mut table = Table::new(&[
        "recogniser",
        "detect (ms)",
        "align",
        "embed",
        "1:N, 1k people",
        "decision per frame",
        "models only, tract",
        "models only, onnxruntime",
        "tract / onnxruntime (models)",
    ]);
    let mut f32_config = None;
    // The edge stages for the student variants and SFace (mbf is covered by section 1).
    let chosen: Vec<&Recogniser> = recognisers
        .iter()
        .filter(|r| !r.family.starts_with("mbf") && !r.input.is_empty())
        .collect();
    for r in chosen {
        bench.progress(&format!("edge bench {}", r.label()));
        let dir = bench.opts.work.join("edge").join(format!(
            "{}-{}",
            if r.maskgate { "student" } else { "sface" },
            r.variant
        ));
        let config = write_config(&dir, r, &yunet)?;
        if r.maskgate && r.variant == "f32" {
            f32_config = Some(config.clone());
        }
        let e = run_edge_bench(bench, &config, &photo, &[1_000])?;
        let search = e.searches.first().map_or(f64::NAN, |s| s.ms);
        let sum = |f: fn(&SideBySide) -> Option<f64>| -> Option<f64> {
            Some(f(&det)? + f(r.timing.as_ref()?)?)
        };
        let tract_models = sum(SideBySide::tract_median);
        let ort_models = sum(SideBySide::ort_median);
        table.push(vec![
            r.label(),
            ms(e.detect),
            ms(e.align),
            ms(e.embed),
            ms(search),
            format!("{} ({})", ms(e.per_frame), e.decision),
            tract_models.map_or("n/a".into(), ms),
            ort_models.map_or("n/a".into(), ms),
            ratio(tract_models, ort_models),
        ])?;
    }
    let det_cell = |x: &Result<super::table::Timing, String>| match x {
        Ok(t) => format!("{} ms (p90 {})", ms(t.median), ms(t.p90)),
        Err(e) => format!("n/a ({e})"),
    };
    let section = Section {
        title: "Edge stages and end to end: tract (edge) vs onnxruntime (models)".into(),
        about: format!(
            "`edge bench` on the kit photo `{PHOTO}` (853x480, one face) with YuNet at \
             {DETECTOR_INPUT}x{DETECTOR_INPUT} and each recogniser, flip fusion off: the columns \
             from `detect` to `decision per frame` are the edge binary's own stage times in \
             milliseconds (mean of {} \
             runs; detect includes resizing and decoding, embed includes preprocessing; the \
             decision per frame is frame -> detect -> quality -> align -> embed -> 1:N over \
             1,001 people -> door policy). The `models only` columns add the median of YuNet \
             and of the recogniser alone, batch 1, one thread, in tract and in onnxruntime on \
             the same files (as in section 1), so the last column compares the runtimes and the \
             gap between `decision per frame` and `models only, tract` is the edge's own \
             pre- and post-processing.",
            bench.budget.runs
        ),
        table,
        notes: vec![
            format!(
                "YuNet alone at {DETECTOR_INPUT}x{DETECTOR_INPUT}: tract {}, onnxruntime {}; \
                 both ran `{}`, the kit's yunet_2023mar.fp32.onnx with its input height and \
                 width made symbolic by scripts/bench/free_input_size.py (weights unchanged).",
                det_cell(&det.tract),
                det_cell(&det.ort),
                super::shown(&yunet)
            ),
            "The student's thresholds here are placeholders (no calibration): the decision column shows the path runs to a decision, not accuracy.".into(),
        ],
    };
    Ok((section, StageResults { f32_config, photo }))
}

/// Section 3.
pub fn scaling(bench: &mut Bench, stage: &StageResults) -> Result<Section> {
    let config = stage
        .f32_config
        .clone()
        .context("no maskgate f32 recogniser config to run the 1:N scaling with")?;
    bench.progress("1:N scaling");
    let sizes = bench.budget.templates.clone();
    let e = run_edge_bench(bench, &config, &stage.photo, &sizes)?;
    let mut table = Table::new(&[
        "people",
        "template rows",
        "dim",
        "ms per search",
        "ns per row",
        "searches per second",
    ]);
    for s in &e.searches {
        table.push(vec![
            format!("{}", s.people),
            format!("{}", s.rows),
            format!("{}", s.dim),
            ms(s.ms),
            format!("{:.2}", s.ms * 1e6 / s.rows.max(1) as f64),
            format!("{:.0}", 1e3 / s.ms),
        ])?;
    }
    Ok(Section {
        title: "1:N search scaling".into(),
        about: format!(
            "`edge bench --templates {}` with the student f32 config: one probe against a \
             synthetic gallery of random unit embeddings (dim 128), exhaustive cosine search as \
             the edge does it (each person is two rows: their mean and one template), mean of {} \
             searches. The edge keeps every row in one contiguous matrix and splits searches \
             over 8,192 rows across all cores with rayon (two here), so time should grow \
             linearly with rows once parallel; `ns per row` shows whether it does.",
            sizes
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
            bench.budget.runs
        ),
        table,
        notes: Vec::new(),
    })
}
