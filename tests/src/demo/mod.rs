//! The main job (`make demo`): synthetic faces -> teacher -> MaskInv student -> evaluation ->
//! export + quantization -> calibration -> signed bundle -> edge enrollment, identification and
//! door decisions through a simulated relay. Every step is a `trainer`/`edge` command line.

mod edge_config;
mod layout;
mod results;

pub use edge_config::{door_config_toml, toml_str};
pub use layout::Layout;
use results::operating_point_rows;
pub use results::{
    parse_eval, DoorStats, DoorVisit, EvalRow, OperatingPointRow, ProbeAnswer, ProbeStats,
};

use crate::tools::{run_logged, Tools};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The demo's budget. [`DemoConfig::full`] is the README's main job (about 10 minutes on two
/// cores); [`DemoConfig::smoke`] is the same path at a size CI runs in a test.
#[derive(Debug, Clone, Serialize)]
pub struct DemoConfig {
    pub seed: u64,
    pub identities: u32,
    pub images_per_id: u32,
    pub val_identities: u32,
    pub val_pairs: u32,
    pub door_people: u32,
    pub door_strangers: u32,
    pub enroll_images: u32,
    pub probes: u32,
    pub teacher_steps: u64,
    pub student_steps: u64,
    /// libtorch threads per training. Training is deterministic for one thread count on one
    /// CPU; another count (or CPU) sums in another order and ends at another model.
    pub train_threads: u32,
    /// The quantized variant shipped in the bundle (f32 when it misses its accuracy budget).
    pub variant: String,
    /// The door's operating point (FAR per comparison; a gallery of N people multiplies a
    /// stranger's chances by about N). Certifying FAR f takes about 3/f impostor pairs
    /// (Clopper-Pearson, zero false accepts); with fewer, calibration keeps the threshold above
    /// every impostor score it saw, which is stricter than asked.
    pub selected_far: f64,
}

impl DemoConfig {
    pub fn full() -> Self {
        Self {
            seed: 0,
            identities: 64,
            images_per_id: 16,
            val_identities: 50,
            val_pairs: 2000,
            door_people: 20,
            door_strangers: 10,
            enroll_images: 3,
            probes: 2,
            teacher_steps: 250,
            student_steps: 250,
            train_threads: 1,
            variant: "f16".into(),
            selected_far: 1e-3,
        }
    }

    pub fn smoke() -> Self {
        Self {
            seed: 1,
            identities: 16,
            images_per_id: 6,
            val_identities: 10,
            val_pairs: 200,
            door_people: 3,
            door_strangers: 2,
            enroll_images: 2,
            probes: 1,
            teacher_steps: 30,
            student_steps: 30,
            train_threads: 1,
            variant: "f16".into(),
            selected_far: 1e-2,
        }
    }
}

/// The shipped recipes; the driver points their paths at the run directory with `--set`.
pub const TEACHER_RECIPE: &str = include_str!("../../../trainer/configs/demo_teacher.toml");
pub const STUDENT_RECIPE: &str = include_str!("../../../trainer/configs/demo_student.toml");

/// Everything the report shows.
#[derive(Debug, Clone, Serialize)]
pub struct DemoResults {
    pub config: DemoConfig,
    pub steps: Vec<(String, f64)>,
    pub eval: Vec<EvalRow>,
    pub quantize_table: String,
    pub shipped_variant: String,
    pub shipped_model: PathBuf,
    pub thresholds: shared::ThresholdConfig,
    pub bundle: PathBuf,
    pub enrolled: usize,
    pub unmasked: ProbeStats,
    pub masked: ProbeStats,
    pub strangers: ProbeStats,
    /// Every probe's answer, in the order `edge identify` gave them.
    pub answers: Vec<ProbeAnswer>,
    /// Every calibrated operating point applied to the same identify scores.
    pub operating_points: Vec<OperatingPointRow>,
    pub door: DoorStats,
    pub roc_png: PathBuf,
}

/// Runs the steps, timing each and writing `demo.log`.
pub struct Demo<'a> {
    pub cfg: DemoConfig,
    pub tools: &'a Tools,
    pub layout: Layout,
    steps: Vec<(String, f64)>,
    progress: Option<indicatif::ProgressBar>,
}

impl<'a> Demo<'a> {
    pub fn new(cfg: DemoConfig, tools: &'a Tools, root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        // Absolute: edge.toml names files by path, and the edge reads relative paths from the
        // config's own directory.
        let root =
            std::fs::canonicalize(root).with_context(|| format!("resolving {}", root.display()))?;
        let layout = Layout {
            root,
            data_root: None,
        };
        let _ = std::fs::remove_file(layout.log());
        Ok(Self {
            cfg,
            tools,
            layout,
            steps: Vec::new(),
            progress: None,
        })
    }

    /// Show one spinner line per step (the CLI); tests stay quiet.
    pub fn with_progress(mut self) -> Self {
        let bar = indicatif::ProgressBar::new(STEPS as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "[{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        self.progress = Some(bar);
        self
    }

    fn step<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if let Some(b) = &self.progress {
            b.set_message(name.to_string());
        }
        tracing::info!(step = name, "demo step");
        let t = Instant::now();
        let out = f(self).with_context(|| format!("demo step `{name}`"))?;
        self.steps
            .push((name.to_string(), t.elapsed().as_secs_f64()));
        if let Some(b) = &self.progress {
            b.inc(1);
        }
        Ok(out)
    }

    fn trainer(&self) -> Command {
        Command::new(&self.tools.trainer)
    }

    fn edge(&self) -> Command {
        self.edge_at(&self.layout.edge())
    }

    /// The edge with the terminal whose edge.toml lives in `dir`.
    fn edge_at(&self, dir: &Path) -> Command {
        let mut c = Command::new(&self.tools.edge);
        c.arg("--config").arg(dir.join("edge.toml"));
        c
    }

    fn run(&self, cmd: &mut Command) -> Result<String> {
        run_logged(cmd, &self.layout.log())
    }

    /// The whole job.
    pub fn run_all(mut self) -> Result<DemoResults> {
        self.step("synthesise faces", |d| d.prepare_data())?;
        self.step("train teacher (unmasked)", |d| {
            d.train("teacher", TEACHER_RECIPE, d.cfg.teacher_steps, &[])
        })?;
        let teacher = self.layout.checkpoint("teacher");
        let kd = format!("kd.teacher_checkpoint={}", toml_str(&teacher));
        // Training uses one core; the teacher's evaluation takes the other meanwhile.
        let (mut teacher_eval, mut cmd) = (None, self.eval_command("teacher")?);
        let log = self.layout.log();
        std::thread::scope(|s| -> Result<()> {
            let eval = s.spawn(|| run_logged(&mut cmd, &log));
            let trained = self.step("train student (MaskInv + transformer aux + USS)", |d| {
                d.train(
                    "student",
                    STUDENT_RECIPE,
                    d.cfg.student_steps,
                    &[kd.as_str()],
                )
            });
            let evaluated = eval
                .join()
                .map_err(|_| anyhow::anyhow!("the teacher evaluation thread panicked"))?;
            trained?;
            evaluated.context("demo step `evaluate teacher`")?;
            teacher_eval = Some(parse_eval("teacher", &self.eval_json("teacher"))?);
            Ok(())
        })?;
        let mut eval = teacher_eval.unwrap_or_default();
        eval.extend(self.step("evaluate student", |d| d.evaluate("student"))?);
        let (quantize_table, variant, model) = self.step("export + quantize", |d| d.export())?;
        let thresholds = self.step("calibrate thresholds", |d| d.calibrate(&model))?;
        let bundle = self.step("sign bundle", |d| d.bundle(&model, &variant))?;
        self.step("edge config", |d| d.edge_config(&bundle))?;
        let enrolled = self.step("edge enroll", |d| d.enroll())?;
        let (unmasked, masked, strangers, answers, operating_points) =
            self.step("edge identify", |d| d.identify(&thresholds))?;
        let door = self.step("door dry run", |d| d.door())?;
        if let Some(b) = &self.progress {
            b.finish_and_clear();
        }
        Ok(DemoResults {
            config: self.cfg.clone(),
            steps: self.steps.clone(),
            eval,
            quantize_table,
            shipped_variant: variant,
            shipped_model: model,
            thresholds,
            bundle,
            enrolled,
            unmasked,
            masked,
            strangers,
            answers,
            operating_points,
            door,
            roc_png: self.layout.root.join("eval/student_roc.png"),
        })
    }

    /// `trainer synth`: training set, verification pairs and the door people.
    pub fn prepare_data(&mut self) -> Result<()> {
        let c = &self.cfg;
        let mut cmd = self.trainer();
        cmd.arg("synth").arg("--out").arg(self.layout.data());
        for (k, v) in [
            ("--identities", c.identities.to_string()),
            ("--images-per-id", c.images_per_id.to_string()),
            ("--val-identities", c.val_identities.to_string()),
            ("--val-pairs", c.val_pairs.to_string()),
            ("--seed", c.seed.to_string()),
            ("--door-people", c.door_people.to_string()),
            ("--door-strangers", c.door_strangers.to_string()),
            ("--door-enroll-images", c.enroll_images.to_string()),
            ("--door-probes", c.probes.to_string()),
        ] {
            cmd.arg(k).arg(v);
        }
        self.run(&mut cmd)?;
        Ok(())
    }

    /// `trainer train` on a shipped recipe, pointed at this run's data, with extra overrides.
    pub fn train(&mut self, name: &str, recipe: &str, steps: u64, extra: &[&str]) -> Result<()> {
        let configs = self.layout.root.join("configs");
        std::fs::create_dir_all(&configs)?;
        let config = configs.join(format!("{name}.toml"));
        shared::atomic_write(&config, recipe.as_bytes())
            .with_context(|| format!("writing {}", config.display()))?;
        let mut cmd = self.trainer();
        cmd.arg("train").arg("--config").arg(&config);
        let sets = [
            format!(
                "data.train_rec={}",
                toml_str(&self.layout.data().join("train.rec"))
            ),
            format!("data.val_bins=[{}]", toml_str(&self.layout.val_bin())),
            format!("run.out_dir={}", toml_str(&self.layout.runs(name))),
            format!("run.steps={steps}"),
            format!("run.seed={}", self.cfg.seed),
            format!("run.threads={}", self.cfg.train_threads),
            // The explicit `trainer eval` step evaluates; no second evaluation inside training.
            format!("run.eval_every={}", steps + 1),
            format!("run.checkpoint_every={steps}"),
            format!("run.log_every={}", (steps / 10).max(1)),
        ];
        for s in sets.iter().map(String::as_str).chain(extra.iter().copied()) {
            cmd.arg("--set").arg(s);
        }
        self.run(&mut cmd)?;
        let ckpt = self.layout.checkpoint(name);
        if !ckpt.is_file() {
            bail!("training finished without writing {}", ckpt.display());
        }
        Ok(())
    }

    /// `trainer eval` on the synthetic pairs (unmasked, masked probe, masked both).
    pub fn evaluate(&mut self, name: &str) -> Result<Vec<EvalRow>> {
        let mut cmd = self.eval_command(name)?;
        self.run(&mut cmd)?;
        parse_eval(name, &self.eval_json(name))
    }

    fn eval_command(&self, name: &str) -> Result<Command> {
        let dir = self.layout.root.join("eval");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cmd = self.trainer();
        cmd.arg("eval")
            .arg("--checkpoint")
            .arg(self.layout.checkpoint(name))
            .arg("--bin")
            .arg(self.layout.val_bin())
            .arg("--out")
            .arg(dir.join(name));
        Ok(cmd)
    }

    fn eval_json(&self, name: &str) -> PathBuf {
        self.layout.root.join("eval").join(format!("{name}.json"))
    }

    /// f32 ONNX (checked against tch in tract) and the quantized variants measured against it.
    fn export(&mut self) -> Result<(String, String, PathBuf)> {
        let model = self.layout.model();
        std::fs::create_dir_all(&model)?;
        let ckpt = self.layout.checkpoint("student");
        let f32_path = model.join("student-f32.onnx");
        let mut cmd = self.trainer();
        cmd.arg("export")
            .arg("--checkpoint")
            .arg(&ckpt)
            .args(["--backbone", "tiny", "--embedding-dim", "128", "--out"])
            .arg(&f32_path);
        self.run(&mut cmd)?;
        let mut cmd = self.trainer();
        cmd.arg("quantize")
            .arg("--checkpoint")
            .arg(&ckpt)
            .args(["--backbone", "tiny", "--embedding-dim", "128", "--eval"])
            .arg(self.layout.val_bin())
            .args(["--variants", &format!("f32,{}", self.cfg.variant)])
            .arg("--out-dir")
            .arg(&model);
        if let Some(py) = &self.tools.python {
            cmd.arg("--python").arg(py);
        }
        let table = self.run(&mut cmd)?;
        let quantized = model.join(format!("tiny-{}.onnx", self.cfg.variant));
        if quantized.is_file() {
            Ok((table, self.cfg.variant.clone(), quantized))
        } else {
            tracing::warn!(variant = %self.cfg.variant, "quantized variant missed its budget; shipping f32");
            Ok((table, "f32".into(), f32_path))
        }
    }

    fn calibrate(&mut self, model: &Path) -> Result<shared::ThresholdConfig> {
        let out = self.layout.model().join("thresholds.toml");
        let mut cmd = self.trainer();
        cmd.arg("calibrate")
            .arg("--checkpoint")
            .arg(self.layout.checkpoint("student"))
            .arg("--bin")
            .arg(self.layout.val_bin())
            .arg("--onnx")
            .arg(model)
            .args(["--far", &calibration_fars(self.cfg.selected_far)])
            .args(["--selected-far", &format!("{:e}", self.cfg.selected_far)])
            .arg("--out")
            .arg(&out);
        self.run(&mut cmd)?;
        Ok(shared::ThresholdConfig::load(&out)?)
    }

    fn bundle(&mut self, model: &Path, variant: &str) -> Result<PathBuf> {
        let keys = self.layout.root.join("keys");
        std::fs::create_dir_all(&keys)?;
        let key = keys.join("demo.key");
        if !key.is_file() {
            let mut cmd = self.trainer();
            cmd.arg("keygen").arg("--out").arg(&key);
            self.run(&mut cmd)?;
        }
        let bundle = self.layout.root.join("student.mgb");
        let mut cmd = self.trainer();
        cmd.arg("bundle")
            .arg("--onnx")
            .arg(model)
            .arg("--thresholds")
            .arg(self.layout.model().join("thresholds.toml"))
            .arg("--key")
            .arg(&key)
            .arg("--out")
            .arg(&bundle)
            .args(["--variant", variant, "--dataset", "maskgate-synth"])
            .arg("--trainer-config")
            .arg(self.layout.root.join("configs/student.toml"));
        self.run(&mut cmd)?;
        Ok(bundle)
    }
}

impl Demo<'_> {
    /// `edge.toml` for the door: the signed bundle and its public key, aligned-crop input,
    /// an encrypted gallery, frames from a directory, a simulated relay (dry run) and an audit log.
    fn edge_config(&mut self, bundle: &Path) -> Result<()> {
        let dir = self.layout.edge();
        std::fs::create_dir_all(&dir)?;
        for stale in ["gallery.bin", "gallery.key", "audit.jsonl"] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        let pubkey = self.layout.root.join("keys/demo.pub");
        let model = format!(
            "[model.bundle]\npath = {}\ntrusted_key_files = [{}]\n",
            toml_str(bundle),
            toml_str(&pubkey)
        );
        let text = door_config_toml("the maskgate demo", &model, "gallery.bin");
        let path = dir.join("edge.toml");
        shared::atomic_write(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Person directories of the synthetic door people, sorted.
    fn door_dirs(&self, prefix: &str) -> Result<Vec<PathBuf>> {
        let door = self.layout.door();
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&door)
            .with_context(|| format!("listing {}", door.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
            })
            .collect();
        dirs.sort();
        Ok(dirs)
    }

    /// `edge enroll --name person_NNN enroll_*.png` for every door person.
    fn enroll(&mut self) -> Result<usize> {
        let people = self.door_dirs("person_")?;
        for dir in &people {
            let name = file_name(dir);
            let mut images: Vec<PathBuf> = (0..self.cfg.enroll_images)
                .map(|k| dir.join(format!("enroll_{k}.png")))
                .collect();
            images.retain(|p| p.is_file());
            let mut cmd = self.edge();
            cmd.args(["enroll", "--name", &name]).args(&images);
            self.run(&mut cmd)?;
        }
        let mut cmd = self.edge();
        cmd.args(["--json", "gallery", "list"]);
        let listing: Value = serde_json::from_str(&self.run(&mut cmd)?)
            .context("parsing `edge --json gallery list`")?;
        let n = listing["people"].as_array().map_or(0, Vec::len);
        if n != people.len() {
            bail!("enrolled {} people but the gallery lists {n}", people.len());
        }
        Ok(n)
    }

    /// `edge --json identify` on every probe (one process); tallies per condition.
    fn identify(
        &mut self,
        thresholds: &shared::ThresholdConfig,
    ) -> Result<(
        ProbeStats,
        ProbeStats,
        ProbeStats,
        Vec<ProbeAnswer>,
        Vec<OperatingPointRow>,
    )> {
        let mut probes = Vec::new();
        for dir in self
            .door_dirs("person_")?
            .into_iter()
            .chain(self.door_dirs("stranger_")?)
        {
            for k in 0..self.cfg.probes {
                probes.push(dir.join(format!("probe_{k}.png")));
                probes.push(dir.join(format!("probe_{k}_masked.png")));
            }
        }
        let mut cmd = self.edge();
        cmd.args(["--json", "identify"]).args(&probes);
        let out = self.run(&mut cmd)?;
        let results: Value =
            serde_json::from_str(&out).context("parsing `edge --json identify` output")?;
        let results = results
            .as_array()
            .context("`edge --json identify` did not print a list")?;
        let (mut unmasked, mut masked, mut strangers) = (
            ProbeStats::default(),
            ProbeStats::default(),
            ProbeStats::default(),
        );
        let mut answers = Vec::new();
        for r in results {
            let image = PathBuf::from(r["image"].as_str().unwrap_or_default());
            let owner = image.parent().map(file_name).unwrap_or_default();
            let is_masked = file_name(&image).ends_with("_masked.png");
            let stats = if owner.starts_with("stranger_") {
                &mut strangers
            } else if is_masked {
                &mut masked
            } else {
                &mut unmasked
            };
            stats.probes += 1;
            if !r["error"].is_null() {
                stats.errors += 1;
                continue;
            }
            if let Some(p) = r["mask_prob"].as_f64() {
                if (p >= 0.5) == is_masked {
                    stats.mask_detected_right += 1;
                }
            }
            let best = &r["best"];
            answers.push(ProbeAnswer {
                image: image.clone(),
                owner: owner.clone(),
                stranger: owner.starts_with("stranger_"),
                masked: is_masked,
                best_name: best["name"].as_str().map(str::to_string),
                score: best["score"].as_f64().map(|v| v as f32),
                condition: if best["condition"] == "masked" {
                    shared::Condition::Masked
                } else {
                    shared::Condition::Unmasked
                },
                accepted: best["accepted"] == true,
            });
            if best["accepted"] == true {
                if best["name"].as_str() == Some(owner.as_str()) {
                    stats.correct += 1;
                } else {
                    stats.false_accepts += 1;
                }
            } else {
                stats.rejected += 1;
            }
        }
        if unmasked.probes + masked.probes + strangers.probes != probes.len() {
            bail!(
                "`edge identify` answered for {} of {} probes",
                results.len(),
                probes.len()
            );
        }
        let rows = operating_point_rows(thresholds, &answers);
        Ok((unmasked, masked, strangers, answers, rows))
    }

    /// Visitors walk up one after another (enrolled people masked and unmasked, then
    /// strangers) and the door decides on a simulated relay.
    fn door(&mut self) -> Result<DoorStats> {
        let mut visitors: Vec<(String, PathBuf)> = Vec::new();
        for (i, dir) in self.door_dirs("person_")?.into_iter().enumerate() {
            let probe = if i % 2 == 0 {
                "probe_0_masked.png"
            } else {
                "probe_0.png"
            };
            visitors.push((file_name(&dir), dir.join(probe)));
        }
        for dir in self.door_dirs("stranger_")? {
            visitors.push((file_name(&dir), dir.join("probe_0_masked.png")));
        }
        self.door_run(&self.layout.edge(), &visitors)
    }

    /// A second terminal beside the demo's (`<root>/edge-control`, same bundle, its own
    /// gallery, frames and audit log) on which every door person is enrolled from ONE photo and
    /// then shows the door that same photo. Its embedding equals the stored template, so the
    /// score is 1 whatever the model learned: the door must let each of them in, as themselves.
    /// This is the check that the chain enroll -> gallery -> match -> relay opens the door on
    /// any machine, which a barely trained model's verdicts on real probes cannot be.
    pub fn control_door(&mut self) -> Result<DoorStats> {
        let dir = self.layout.root.join("edge-control");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let bundle = self.layout.root.join("student.mgb");
        let pubkey = self.layout.root.join("keys/demo.pub");
        let model = format!(
            "[model.bundle]\npath = {}\ntrusted_key_files = [{}]\n",
            toml_str(&bundle),
            toml_str(&pubkey)
        );
        let text = door_config_toml("the maskgate demo (control door)", &model, "gallery.bin");
        let config = dir.join("edge.toml");
        shared::atomic_write(&config, text.as_bytes())
            .with_context(|| format!("writing {}", config.display()))?;
        let mut visitors = Vec::new();
        for person in self.door_dirs("person_")? {
            let photo = person.join("enroll_0.png");
            let name = file_name(&person);
            let mut cmd = self.edge_at(&dir);
            cmd.args(["enroll", "--name", &name]).arg(&photo);
            self.run(&mut cmd)?;
            visitors.push((name, photo));
        }
        self.door_run(&dir, &visitors)
    }

    /// `edge run --dry-run` on the terminal in `edge_dir` while `visitors` walk up one after
    /// another, with empty frames between them. Each door event is matched to the visitor in
    /// front of the camera at its frame.
    fn door_run(&mut self, edge_dir: &Path, visitors: &[(String, PathBuf)]) -> Result<DoorStats> {
        const VISITOR_FRAMES: usize = 4;
        const GAP_FRAMES: usize = 5;
        let frames = edge_dir.join("frames");
        let _ = std::fs::remove_dir_all(&frames);
        std::fs::create_dir_all(&frames)?;
        let blank = image::RgbImage::from_pixel(112, 112, image::Rgb([128, 128, 128]));
        let mut blank_png = Vec::new();
        blank
            .write_to(
                &mut std::io::Cursor::new(&mut blank_png),
                image::ImageFormat::Png,
            )
            .context("encoding a blank frame")?;
        // frame index -> visitor index
        let mut owner_of_frame = Vec::new();
        for (v, (_, probe)) in visitors.iter().enumerate() {
            let bytes =
                std::fs::read(probe).with_context(|| format!("reading {}", probe.display()))?;
            for _ in 0..VISITOR_FRAMES {
                let path = frames.join(format!("{:05}.png", owner_of_frame.len()));
                std::fs::write(&path, &bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
                owner_of_frame.push(Some(v));
            }
            for _ in 0..GAP_FRAMES {
                let path = frames.join(format!("{:05}.png", owner_of_frame.len()));
                std::fs::write(&path, &blank_png)
                    .with_context(|| format!("writing {}", path.display()))?;
                owner_of_frame.push(None);
            }
        }
        let mut cmd = self.edge_at(edge_dir);
        cmd.args(["--json", "run", "--dry-run"]);
        let doc: Value = serde_json::from_str(&self.run(&mut cmd)?)
            .context("parsing `edge --json run --dry-run` output")?;
        let mut stats = DoorStats {
            visitors_strangers: visitors
                .iter()
                .filter(|(n, _)| n.starts_with("stranger_"))
                .count(),
            visits: visitors
                .iter()
                .map(|(visitor, image)| DoorVisit {
                    visitor: visitor.clone(),
                    image: image.clone(),
                    unlocked_as: Vec::new(),
                })
                .collect(),
            ..Default::default()
        };
        stats.visitors_enrolled = visitors.len() - stats.visitors_strangers;
        let mut let_in = vec![false; visitors.len()];
        for e in doc["events"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let visitor = e["frame"]
                .as_u64()
                .and_then(|f| owner_of_frame.get(f as usize).copied().flatten());
            match (e["event"].as_str(), visitor) {
                (Some("unlocked"), Some(v)) => {
                    let who = e["person"]["name"].as_str().unwrap_or_default();
                    stats.visits[v].unlocked_as.push(who.to_string());
                    let visitor_name = &visitors[v].0;
                    if visitor_name.starts_with("stranger_") {
                        stats.strangers_let_in += 1;
                    } else if who == visitor_name && !let_in[v] {
                        stats.unlocked_right_person += 1;
                        let_in[v] = true;
                    } else if who != visitor_name {
                        stats.unlocked_wrong_person += 1;
                    }
                }
                (Some("unlocked"), None) => stats.unlocked_wrong_person += 1,
                (Some("denied"), _) => stats.denials += 1,
                (Some("relay"), _) if e["energised"] == true => stats.relay_pulses += 1,
                _ => {}
            }
        }
        let audit = edge_dir.join("audit.jsonl");
        let mut cmd = Command::new(&self.tools.edge);
        cmd.args(["audit", "verify"]).arg(&audit);
        stats.audit = self.run(&mut cmd)?.trim().to_string();
        Ok(stats)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Steps [`Demo::run_all`] counts on its progress bar.
const STEPS: usize = 13;

/// The FAR list handed to `trainer calibrate`: the door's operating point plus FAR 1e-2 for the
/// report, each once (the trainer refuses two points for the same condition and FAR).
fn calibration_fars(selected: f64) -> String {
    let mut fars = vec![selected, 1e-2];
    fars.dedup();
    fars.iter()
        .map(|f| format!("{f:e}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::calibration_fars;

    #[test]
    fn calibration_asks_for_each_operating_point_once() {
        assert_eq!(calibration_fars(1e-3), "1e-3,1e-2");
        assert_eq!(calibration_fars(1e-2), "1e-2");
    }
}
