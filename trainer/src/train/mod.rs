//! The training loop: backbone + margin head, optionally USS, the transformer auxiliary branch,
//! MaskInv distillation and a mask head; own optimiser and schedule; checkpoints that resume
//! exactly; JSONL metrics and periodic evaluation.
//!
//! Exact resume: the loader is a pure function of (seed, epoch, index), libtorch's generator is
//! re-seeded from (seed, step) before every step, and every piece of state (all stores, optimiser
//! buffers, loss scaler, KD schedule, step) is in the checkpoint. A resumed run therefore repeats
//! the uninterrupted one bit for bit on the CPU.

pub mod config;
pub mod device;
pub mod mask_head;
pub mod onnx_teacher;
pub mod optim;
pub mod scaler;

pub use config::{ConfigError, TrainConfig};
pub use mask_head::{MaskHead, MaskHeadCfg};
pub use optim::{Optimizer, OptimizerCfg, ScheduleCfg};
pub use scaler::LossScaler;

use crate::checkpoint::{self, CheckpointError};
use crate::data::mask::Masker;
use crate::data::{DataError, FaceSource, ImageFolder, Loader, PairSet, RecordDataset};
use crate::eval::{self, EvalError, SetReport};
use crate::loss::{
    build_head, FrozenTeacher, KdSchedule, LossError, MarginHead, MaskInvKd, Teacher, Uss,
};
use crate::model::{build_backbone, Backbone, ModelError, TransformerAux};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// File name of the rolling checkpoint inside `run.out_dir`.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// File name of the metrics log inside `run.out_dir`.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// What can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Loss(#[from] LossError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error("{path}: {message}")]
    Resume { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    OnnxTeacher(#[from] onnx_teacher::OnnxTeacherError),
    #[error("training diverged at step {step}: loss is {loss}")]
    Diverged { step: u64, loss: f64 },
}

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps done.
    pub step: u64,
    pub scaler: LossScaler,
    pub kd_schedule: Option<KdSchedule>,
}

/// Scalars of one optimiser step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepStats {
    pub step: u64,
    pub loss: f64,
    pub margin_loss: f64,
    pub uss_loss: f64,
    pub aux_loss: f64,
    pub kd_loss: f64,
    pub kd_lambda: f64,
    pub mask_loss: f64,
    pub mask_acc: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub loss_scale: f64,
    pub skipped: bool,
    pub images: usize,
}

/// A training run: models, optimiser, data and state. Build with [`Trainer::new`], optionally
/// [`Trainer::resume`], then [`Trainer::step`] or [`Trainer::run`].
pub struct Trainer {
    cfg: TrainConfig,
    device: Device,
    stores: Vec<(&'static str, VarStore)>,
    backbone: Box<dyn Backbone>,
    head: Box<dyn MarginHead>,
    uss: Option<Uss>,
    aux: Option<TransformerAux>,
    kd: Option<(MaskInvKd, Teacher)>,
    mask_head: Option<MaskHead>,
    optimizer: Optimizer,
    state: TrainState,
    loader: Loader,
    epoch_order: Option<(u64, Vec<usize>)>,
    prefetch: Option<(
        u64,
        std::thread::JoinHandle<Result<crate::data::Batch, DataError>>,
    )>,
    val_sets: Vec<(String, PairSet)>,
    eval_masker: Option<Masker>,
}

fn mix_seed(seed: u64, step: u64) -> i64 {
    // splitmix64 of (seed, step): decorrelated per-step libtorch seeds.
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

fn open_source(cfg: &TrainConfig) -> Result<Arc<dyn FaceSource>, DataError> {
    Ok(match (&cfg.data.train_rec, &cfg.data.train_folder) {
        (Some(rec), _) => Arc::new(RecordDataset::open(rec)?),
        (None, Some(dir)) => Arc::new(ImageFolder::open(dir)?),
        (None, None) => return Err(DataError::Config("no training data configured".into())),
    })
}

fn masker(cfg: &TrainConfig) -> Result<Masker, DataError> {
    match &cfg.data.masks_dir {
        Some(dir) => Masker::from_dir(dir, cfg.data.mask.clone()),
        None => Ok(Masker::procedural(cfg.data.mask.clone())),
    }
}

impl Trainer {
    /// Builds models, data and optimiser from `cfg` (weights freshly initialised from `run.seed`).
    pub fn new(cfg: TrainConfig) -> Result<Self, TrainError> {
        cfg.validate()?;
        let device = device::select_device(&cfg.run.device, cfg.run.threads)?;
        if cfg.run.fp16 && device == Device::Cpu {
            return Err(ConfigError::Invalid("run.fp16 needs run.device = cuda".into()).into());
        }
        tch::manual_seed(cfg.run.seed as i64);
        let source = open_source(&cfg)?;
        let classes = source.num_classes() as i64;
        let loader_source = source.clone();
        let mut loader_cfg = cfg.data.loader.clone();
        loader_cfg.seed = cfg.run.seed;
        // Only a frozen tch teacher needs the unmasked view; a cached one is looked up by index.
        loader_cfg.teacher_view = cfg.kd.enabled && cfg.kd.teacher_onnx.is_none();
        let train_masker = if cfg.data.masked_training {
            Some(masker(&cfg)?)
        } else {
            None
        };
        let loader = Loader::new(loader_source, loader_cfg, train_masker)?;

        let mut stores = Vec::new();
        let backbone_vs = VarStore::new(device);
        let backbone = build_backbone(&cfg.backbone, &backbone_vs.root(), &cfg.model)?;
        let dim = backbone.embedding_dim();
        stores.push(("backbone", backbone_vs));
        let head_vs = VarStore::new(device);
        let head = build_head(&cfg.head, &head_vs.root(), classes, dim)?;
        stores.push(("head", head_vs));
        let uss = if cfg.uss.enabled {
            let vs = VarStore::new(device);
            let u = Uss::new(&vs.root(), &cfg.uss.cfg(), classes, dim)?;
            stores.push(("uss", vs));
            Some(u)
        } else {
            None
        };
        let aux = if cfg.transformer.enabled {
            let vs = VarStore::new(device);
            let aux_head = build_head(&cfg.head, &(vs.root() / "head"), classes, dim)?;
            let a = TransformerAux::new(
                &(vs.root() / "branch"),
                &cfg.transformer.branch,
                backbone.feature_channels(),
                backbone.feature_hw(),
                dim,
                aux_head,
            )?;
            stores.push(("aux", vs));
            Some(a)
        } else {
            None
        };
        let kd = if cfg.kd.enabled {
            let teacher = match &cfg.kd.teacher_onnx {
                Some(o) => {
                    let bar = indicatif::ProgressBar::hidden();
                    let table = onnx_teacher::teacher_table(o, source.as_ref(), &bar)?;
                    Teacher::Cached(table.to_device(device))
                }
                None => load_teacher(&cfg, device)?,
            };
            let vs = VarStore::new(device);
            let k = MaskInvKd::new(&vs.root(), dim, teacher.embedding_dim())?;
            stores.push(("kd", vs));
            Some((k, teacher))
        } else {
            None
        };
        let mask_head = if cfg.mask_head.enabled {
            let vs = VarStore::new(device);
            let m = MaskHead::new(&vs.root(), dim, &cfg.mask_head);
            stores.push(("mask_head", vs));
            Some(m)
        } else {
            None
        };
        let named: Vec<(String, Tensor)> = stores
            .iter()
            .flat_map(|(s, vs)| {
                vs.variables()
                    .into_iter()
                    .filter(|(_, t)| t.requires_grad())
                    .map(move |(k, t)| (format!("{s}/{k}"), t))
            })
            .collect();
        let optimizer = Optimizer::new(&cfg.optim, named);
        let kd_schedule = cfg.kd.enabled.then(|| {
            KdSchedule::high_guidance(
                cfg.kd.lambda_low,
                cfg.kd.lambda_high,
                cfg.kd.trigger.clone(),
            )
        });
        let mut val_sets = Vec::new();
        for path in &cfg.data.val_bins {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string());
            val_sets.push((name, PairSet::read(path)?));
        }
        let eval_masker = if cfg.data.eval_masked && !val_sets.is_empty() {
            Some(masker(&cfg)?)
        } else {
            None
        };
        Ok(Self {
            state: TrainState {
                step: 0,
                scaler: LossScaler::new(cfg.run.fp16),
                kd_schedule,
            },
            cfg,
            device,
            stores,
            backbone,
            head,
            uss,
            aux,
            kd,
            mask_head,
            optimizer,
            loader,
            epoch_order: None,
            prefetch: None,
            val_sets,
            eval_masker,
        })
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    pub fn state(&self) -> &TrainState {
        &self.state
    }

    pub fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    /// The USS unified threshold t, when USS is trained.
    pub fn uss_threshold(&self) -> Option<f64> {
        self.uss.as_ref().map(|u| u.threshold())
    }

    /// Every variable of every store, keyed `<store>/<name>`.
    pub fn named_variables(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .stores
            .iter()
            .flat_map(|(s, vs)| {
                vs.variables()
                    .into_iter()
                    .map(move |(k, t)| (format!("{s}/{k}"), t))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The dataset indices and epoch of micro-batch `micro` (a pure function of the seed).
    fn micro_indices(&mut self, micro: u64) -> (u64, Vec<usize>) {
        let per_epoch = self.loader.batches_per_epoch().max(1) as u64;
        let (epoch, pos) = (micro / per_epoch, (micro % per_epoch) as usize);
        if self.epoch_order.as_ref().map(|(e, _)| *e) != Some(epoch) {
            self.epoch_order = Some((epoch, self.loader.epoch_indices(epoch)));
        }
        let order = self
            .epoch_order
            .as_ref()
            .map(|(_, o)| o.as_slice())
            .unwrap_or(&[]);
        let b = self.loader.config().batch_size;
        let chunk = &order[(pos * b).min(order.len())..((pos + 1) * b).min(order.len())];
        (epoch, chunk.to_vec())
    }

    /// Micro-batch `micro`, then starts preparing `micro + 1` on a background thread so decoding
    /// and augmentation overlap the forward/backward pass. Batches are deterministic, so
    /// prefetching changes nothing but time.
    fn batch(&mut self, micro: u64) -> Result<crate::data::Batch, TrainError> {
        let ready = match self.prefetch.take() {
            Some((m, handle)) if m == micro => handle.join().ok(),
            _ => None,
        };
        let batch = match ready {
            Some(b) => b?,
            None => {
                let (epoch, chunk) = self.micro_indices(micro);
                self.loader.load_batch(epoch, &chunk)?
            }
        };
        let (epoch, chunk) = self.micro_indices(micro + 1);
        let loader = self.loader.clone();
        self.prefetch = Some((
            micro + 1,
            std::thread::spawn(move || loader.load_batch(epoch, &chunk)),
        ));
        Ok(batch)
    }

    /// One optimiser step (`run.accumulate` micro-batches).
    pub fn step(&mut self) -> Result<StepStats, TrainError> {
        let step = self.state.step;
        let run = self.cfg.run.clone();
        tch::manual_seed(mix_seed(run.seed, step));
        let lr = self.cfg.schedule.lr_at(step, run.steps);
        if let Some(u) = self.uss.as_mut() {
            u.set_warmup(step < self.cfg.uss.warmup_steps);
        }
        self.optimizer.zero_grad();
        let mut stats = StepStats {
            step,
            lr,
            loss_scale: self.state.scaler.loss_factor(),
            ..Default::default()
        };
        let factor = self.state.scaler.loss_factor() / run.accumulate as f64;
        for micro in 0..run.accumulate {
            let batch = self.batch(step * run.accumulate + micro)?;
            stats.images += batch.len();
            let t = batch.to_tensors(self.device);
            // Row of a cached teacher embedding: 2 * dataset index + flipped.
            let ids: Vec<i64> = batch
                .indices
                .iter()
                .zip(&batch.flipped)
                .map(|(&i, &f)| 2 * i as i64 + i64::from(f))
                .collect();
            let ids = Tensor::from_slice(&ids).to_device(self.device);
            // The tensors own copies now: hand the buffers back for the next batches.
            self.loader.recycle(batch);
            let total = self.losses(&t, &ids, step, &mut stats, run.accumulate as f64)?;
            (total * factor).backward();
        }
        if self.state.scaler.enabled {
            self.optimizer.scale_grads(1.0 / self.state.scaler.scale);
        }
        stats.grad_norm = match run.clip_grad_norm {
            Some(c) => self.optimizer.clip_grad_norm(c),
            None => self.optimizer.grad_norm(),
        };
        let apply = self.state.scaler.update(stats.grad_norm.is_finite());
        if apply {
            self.optimizer.step(lr);
        } else {
            stats.skipped = true;
            tracing::warn!(
                step,
                scale = self.state.scaler.scale,
                "non-finite gradients: step skipped"
            );
            if !self.state.scaler.enabled && !stats.loss.is_finite() {
                return Err(TrainError::Diverged {
                    step,
                    loss: stats.loss,
                });
            }
        }
        self.state.step += 1;
        Ok(stats)
    }

    /// The total loss of one micro-batch; accumulates scalars into `stats` (divided by `n`).
    fn losses(
        &mut self,
        t: &crate::data::loader::BatchTensors,
        ids: &Tensor,
        step: u64,
        stats: &mut StepStats,
        n: f64,
    ) -> Result<Tensor, TrainError> {
        self.backbone.check_input(&t.student)?;
        // Only the conv body runs under autocast: the output BN/FC/BN, heads and losses stay
        // fp32 (the usual source of NaN losses under fp16).
        let feature_map = tch::autocast(self.cfg.run.fp16, || {
            self.backbone.features_t(&t.student, true)
        })
        .to_kind(Kind::Float);
        let out = crate::model::BackboneOutput {
            embedding: self.backbone.embed_t(&feature_map, true),
            feature_map,
        };
        let emb = out.embedding.shallow_clone();
        let margin = self.head.forward(&emb, &t.labels)?.loss;
        let margin_value = margin.double_value(&[]);
        stats.margin_loss += margin_value / n;
        let mut total = margin;
        if let Some(u) = self.uss.as_mut() {
            let l = u.forward(&emb, &t.labels)?;
            stats.uss_loss += l.double_value(&[]) / n;
            total = total + l;
        }
        if let Some(a) = self.aux.as_mut() {
            let l = a.loss(&out.feature_map.to_kind(Kind::Float), &t.labels, true)?;
            stats.aux_loss += l.double_value(&[]) / n;
            total = total + l;
        }
        if let (Some((kd, teacher)), Some(sched)) =
            (self.kd.as_ref(), self.state.kd_schedule.as_mut())
        {
            let lambda = sched.observe(step, margin_value);
            let unmasked = t.teacher.as_ref().unwrap_or(&t.student);
            let target = teacher.embeddings(unmasked, ids)?;
            let l = kd.loss(&emb, &target.to_kind(Kind::Float), lambda)?;
            stats.kd_lambda = lambda;
            stats.kd_loss += l.double_value(&[]) / n;
            total = total + l;
        }
        if let Some(m) = self.mask_head.as_ref() {
            let (l, acc) = m.loss(&emb, &t.masked);
            let l = l * self.cfg.mask_head.lambda;
            stats.mask_loss += l.double_value(&[]) / n;
            stats.mask_acc += acc.double_value(&[]) / n;
            total = total + l;
        }
        stats.loss += total.double_value(&[]) / n;
        Ok(total)
    }

    /// Evaluates the configured verification sets with the current backbone.
    pub fn evaluate(&self) -> Result<Vec<SetReport>, TrainError> {
        let mut all = Vec::new();
        for (name, set) in &self.val_sets {
            all.extend(eval::evaluate_set(
                self.backbone.as_ref(),
                name,
                set,
                self.eval_masker.as_ref(),
                self.cfg.data.eval_mask_seed,
                64,
                self.device,
            )?);
        }
        Ok(all)
    }

    /// Writes the whole run state atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let mut named = self.named_variables();
        named.extend(self.optimizer.state_tensors());
        let state = serde_json::to_vec(&self.state).map_err(|e| TrainError::Resume {
            path: path.to_path_buf(),
            message: format!("cannot serialise state: {e}"),
        })?;
        let config = toml::to_string(&self.cfg).map_err(|e| TrainError::Resume {
            path: path.to_path_buf(),
            message: format!("cannot serialise config: {e}"),
        })?;
        named.push(("meta/state".into(), Tensor::from_slice(&state)));
        named.push(("meta/config".into(), Tensor::from_slice(config.as_bytes())));
        checkpoint::save_named(path, &named)?;
        Ok(())
    }

    /// Restores everything saved by [`Trainer::save`]; the model shapes must match.
    pub fn resume(&mut self, path: &Path) -> Result<(), TrainError> {
        let file = checkpoint::read_named(path)?;
        for (name, vs) in self.stores.iter_mut() {
            checkpoint::load_store_from(vs, &file, &format!("{name}/"), path)?;
        }
        let err = |message: String| TrainError::Resume {
            path: path.to_path_buf(),
            message,
        };
        self.optimizer.load_state(&file).map_err(err)?;
        let state =
            meta_bytes(&file, "meta/state").ok_or_else(|| err("missing meta/state".into()))?;
        self.state =
            serde_json::from_slice(&state).map_err(|e| err(format!("bad meta/state: {e}")))?;
        self.epoch_order = None;
        self.prefetch = None;
        tracing::info!(step = self.state.step, path = %path.display(), "resumed");
        Ok(())
    }

    /// Runs to `run.steps`: progress, JSONL metrics, checkpoints every `checkpoint_every` steps
    /// and at the end, evaluation every `eval_every` steps and at the end. Returns the last
    /// evaluation.
    pub fn run(&mut self, progress: &indicatif::ProgressBar) -> Result<Vec<SetReport>, TrainError> {
        let out = self.cfg.run.out_dir.clone();
        std::fs::create_dir_all(&out).map_err(|source| TrainError::Io {
            path: out.clone(),
            source,
        })?;
        let ckpt = out.join(CHECKPOINT_FILE);
        let metrics_path = out.join(METRICS_FILE);
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|source| TrainError::Io {
                path: metrics_path.clone(),
                source,
            })?;
        let mut log = |value: serde_json::Value| -> Result<(), TrainError> {
            writeln!(metrics, "{value}").map_err(|source| TrainError::Io {
                path: metrics_path.clone(),
                source,
            })
        };
        let total = self.cfg.run.steps;
        progress.set_length(total);
        progress.set_position(self.state.step);
        let run = self.cfg.run.clone();
        let mut last_eval = Vec::new();
        while self.state.step < total {
            let started = std::time::Instant::now();
            let s = self.step()?;
            let img_s = s.images as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress.set_message(format!(
                "loss {:.3} lr {:.2e} {:.1} img/s",
                s.loss, s.lr, img_s
            ));
            progress.inc(1);
            let done = self.state.step;
            if run.log_every > 0 && (done % run.log_every == 0 || done == total) {
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                v["img_per_s"] = img_s.into();
                log(v)?;
            }
            if run.checkpoint_every > 0 && done % run.checkpoint_every == 0 && done < total {
                self.save(&ckpt)?;
            }
            let eval_now = done == total || (run.eval_every > 0 && done % run.eval_every == 0);
            if eval_now && !self.val_sets.is_empty() {
                last_eval = self.evaluate()?;
                for r in &last_eval {
                    tracing::info!(step = done, set = %r.set, condition = r.condition.label(),
                        accuracy = r.accuracy.mean, "eval");
                }
                log(serde_json::json!({ "step": done, "eval": last_eval }))?;
            }
        }
        self.save(&ckpt)?;
        Ok(last_eval)
    }
}

fn meta_bytes(file: &HashMap<String, Tensor>, key: &str) -> Option<Vec<u8>> {
    file.get(key).and_then(|t| Vec::<u8>::try_from(t).ok())
}

/// The config stored in a trainer checkpoint (to rebuild its backbone for eval/export).
pub fn checkpoint_config(path: &Path) -> Result<TrainConfig, TrainError> {
    let file = checkpoint::read_named(path)?;
    let bytes = meta_bytes(&file, "meta/config").ok_or_else(|| TrainError::Resume {
        path: path.to_path_buf(),
        message: "not a trainer checkpoint (no meta/config)".into(),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| TrainError::Resume {
        path: path.to_path_buf(),
        message: "meta/config is not UTF-8".into(),
    })?;
    let cfg: TrainConfig = toml::from_str(&text).map_err(|e| TrainError::Resume {
        path: path.to_path_buf(),
        message: format!("bad meta/config: {e}"),
    })?;
    Ok(cfg)
}

/// Builds the backbone named `name` and loads it from a trainer checkpoint (`backbone/` keys) or
/// a plain safetensors state dict (arcface_torch key names).
pub fn load_backbone(
    name: &str,
    cfg: &crate::model::BackboneCfg,
    path: &Path,
    device: Device,
) -> Result<(VarStore, Box<dyn Backbone>), TrainError> {
    let mut vs = VarStore::new(device);
    let backbone = build_backbone(name, &vs.root(), cfg)?;
    let file = checkpoint::read_named(path)?;
    let prefixed = file.keys().any(|k| k.starts_with("backbone/"));
    let prefix = if prefixed { "backbone/" } else { "" };
    checkpoint::load_store_from(&mut vs, &file, prefix, path)?;
    Ok((vs, backbone))
}

fn load_teacher(cfg: &TrainConfig, device: Device) -> Result<Teacher, TrainError> {
    let path = cfg
        .kd
        .teacher_checkpoint
        .as_ref()
        .ok_or_else(|| ConfigError::Invalid("kd.enabled needs kd.teacher_checkpoint".into()))?;
    let bcfg = crate::model::BackboneCfg {
        embedding_dim: cfg.kd.teacher_embedding_dim,
        ..cfg.model.clone()
    };
    let (vs, backbone) = load_backbone(&cfg.kd.teacher_backbone, &bcfg, path, device)?;
    Ok(Teacher::Frozen(FrozenTeacher::new(vs, backbone)))
}

#[cfg(test)]
mod tests;
