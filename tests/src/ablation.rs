//! The ablation of issue #9: one data set, one teacher, one budget and seed per row, the
//! student's parts switched on one at a time. Rows are `--set` overrides of the demo recipe, so
//! each row is reproducible with a plain `trainer train` line (printed in the log).

use crate::demo::{parse_eval, Demo, DemoConfig, EvalRow, STUDENT_RECIPE, TEACHER_RECIPE};
use crate::tools::Tools;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;

/// One row: a name and the overrides that make it from the demo student recipe.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: &'static str,
    pub overrides: Vec<String>,
}

/// The rows of the issue, in order. HG raises lambda from 100 to 3000 at 60 % of the budget
/// (the reference switched at epoch 20 of 26, i.e. 77 %; earlier here as the run is short).
pub fn variants(steps: u64) -> Vec<Variant> {
    let off = |keys: &[&str]| {
        keys.iter()
            .map(|k| format!("{k}.enabled=false"))
            .collect::<Vec<_>>()
    };
    let mut v = Vec::new();
    let mut none = off(&["kd", "transformer", "uss", "mask_head"]);
    none.push("data.masked_training=false".into());
    v.push(Variant {
        name: "no mask augmentation",
        overrides: none,
    });
    v.push(Variant {
        name: "mask augmentation only (lambda = 0)",
        overrides: off(&["kd", "transformer", "uss"]),
    });
    v.push(Variant {
        name: "MaskInv LG",
        overrides: off(&["transformer", "uss"]),
    });
    let mut hg = off(&["transformer", "uss"]);
    hg.push("kd.lambda_high=3000.0".into());
    hg.push(format!("kd.trigger={{ at_step = {} }}", steps * 6 / 10));
    v.push(Variant {
        name: "MaskInv HG",
        overrides: hg,
    });
    v.push(Variant {
        name: "MaskInv LG + transformer aux",
        overrides: off(&["uss"]),
    });
    v.push(Variant {
        name: "MaskInv LG + transformer aux + USS",
        overrides: vec![],
    });
    v
}

/// One measured row.
#[derive(Debug, Clone, Serialize)]
pub struct AblationRow {
    pub variant: String,
    pub seed: u64,
    pub masked_probe: EvalRow,
    pub unmasked: EvalRow,
    pub threshold_unmasked: f64,
    pub threshold_masked: f64,
}

/// Data and teacher once, then every variant x seed (`jobs` trainings at a time, one libtorch
/// thread each). Returns the rows in variant order.
pub fn run(
    tools: &Tools,
    root: &Path,
    cfg: &DemoConfig,
    seeds: &[u64],
    jobs: usize,
) -> Result<Vec<AblationRow>> {
    let mut base = Demo::new(cfg.clone(), tools, root)?.with_progress();
    base.prepare_data()?;
    base.train("teacher", TEACHER_RECIPE, cfg.teacher_steps, &[])?;
    let teacher = base.layout.checkpoint("teacher");
    let vars = variants(cfg.student_steps);
    let mut tasks = Vec::new();
    for (i, v) in vars.iter().enumerate() {
        for &seed in seeds {
            tasks.push((i, v.clone(), seed));
        }
    }
    let bar = indicatif::ProgressBar::new(tasks.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "[{elapsed_precise}] {bar:30} {pos}/{len} trainings",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let queue = std::sync::Mutex::new(tasks.into_iter());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                let next = || queue.lock().ok().and_then(|mut q| q.next());
                while let Some((i, v, seed)) = next() {
                    let r = run_one(tools, root, cfg, &teacher, i, &v, seed);
                    bar.inc(1);
                    if let Ok(mut out) = results.lock() {
                        out.push((i, seed, r));
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, seed, _)| (*i, *seed));
    results.into_iter().map(|(_, _, r)| r).collect()
}

fn run_one(
    tools: &Tools,
    root: &Path,
    cfg: &DemoConfig,
    teacher: &Path,
    index: usize,
    v: &Variant,
    seed: u64,
) -> Result<AblationRow> {
    let name = format!("ablation_{index}_seed{seed}");
    let mut demo = Demo::new(
        DemoConfig {
            seed,
            ..cfg.clone()
        },
        tools,
        &root.join(&name),
    )?;
    // Share the data and teacher of the base run.
    demo.layout.data_root = Some(root.join("data"));
    let mut overrides = vec![format!(
        "kd.teacher_checkpoint={}",
        crate::demo::toml_str(teacher)
    )];
    overrides.extend(v.overrides.iter().cloned());
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    demo.train("student", STUDENT_RECIPE, cfg.student_steps, &refs)
        .with_context(|| format!("ablation row {:?} seed {seed}", v.name))?;
    let rows = demo.evaluate("student")?;
    let json = demo.layout.root.join("eval/student.json");
    let pick = |c: &str| {
        rows.iter()
            .find(|r| r.condition == c)
            .cloned()
            .with_context(|| format!("{}: no {c} row", json.display()))
    };
    let masked_probe = pick("masked_probe")?;
    let unmasked = pick("unmasked")?;
    Ok(AblationRow {
        variant: v.name.to_string(),
        seed,
        threshold_unmasked: unmasked.threshold_at_1e3,
        threshold_masked: masked_probe.threshold_at_1e3,
        masked_probe,
        unmasked,
    })
}

/// Mean and (sample) standard deviation.
fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = if x.len() > 1 {
        x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, v.sqrt())
}

/// The ablation table: one line per variant, mean ± std over seeds.
pub fn table(rows: &[AblationRow]) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(t, "| variant | seeds | masked-probe TAR@FAR=1e-3 | masked-probe accuracy | unmasked accuracy | threshold @1e-3 (unmasked / masked probe) |");
    let _ = writeln!(t, "|---|---|---|---|---|---|");
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.variant.as_str()) {
            names.push(&r.variant);
        }
    }
    let f = |x: (f64, f64), scale: f64| format!("{:.1} ± {:.1}", x.0 * scale, x.1 * scale);
    for name in names {
        let rs: Vec<&AblationRow> = rows.iter().filter(|r| r.variant == name).collect();
        let col = |g: &dyn Fn(&AblationRow) -> f64| {
            mean_std(&rs.iter().map(|r| g(r)).collect::<Vec<_>>())
        };
        let _ = writeln!(
            t,
            "| {name} | {} | {}% | {}% | {}% | {:.3} / {:.3} |",
            rs.len(),
            f(col(&|r| r.masked_probe.tar_at_1e3), 100.0),
            f(col(&|r| r.masked_probe.accuracy), 100.0),
            f(col(&|r| r.unmasked.accuracy), 100.0),
            col(&|r| r.threshold_unmasked).0,
            col(&|r| r.threshold_masked).0,
        );
    }
    t
}

/// Parse a finished row back from its eval JSON (for re-rendering without retraining).
pub fn reload(root: &Path, index: usize, variant: &str, seed: u64) -> Result<AblationRow> {
    let json = root.join(format!("ablation_{index}_seed{seed}/eval/student.json"));
    let rows = parse_eval("student", &json)?;
    let pick = |c: &str| {
        rows.iter()
            .find(|r| r.condition == c)
            .cloned()
            .context("missing row")
    };
    let (masked_probe, unmasked) = (pick("masked_probe")?, pick("unmasked")?);
    Ok(AblationRow {
        variant: variant.into(),
        seed,
        threshold_unmasked: unmasked.threshold_at_1e3,
        threshold_masked: masked_probe.threshold_at_1e3,
        masked_probe,
        unmasked,
    })
}
