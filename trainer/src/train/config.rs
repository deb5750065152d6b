//! The training configuration: one TOML file, every section optional with defaults, overridable
//! from the command line with `--set section.key=value` (value parsed as TOML, else a string).

use super::mask_head::MaskHeadCfg;
use super::optim::{OptimizerCfg, ScheduleCfg};
use crate::data::mask::MaskConfig;
use crate::data::LoaderConfig;
use crate::loss::{HeadCfg, HgTrigger, UssCfg};
use crate::model::{BackboneCfg, TransformerAuxCfg};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Errors reading or overriding a config, naming the file or the override.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("--set {0:?}: expected key=value with a dotted key such as optim.type=adamw")]
    Override(String),
    #[error("{0}")]
    Invalid(String),
}

/// Everything a run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Backbone name (tiny, mbf, r18, r34, r50, r100).
    pub backbone: String,
    pub model: BackboneCfg,
    pub head: HeadCfg,
    pub uss: UssSection,
    pub transformer: TransformerSection,
    pub kd: KdSection,
    pub mask_head: MaskHeadCfg,
    pub data: DataSection,
    pub optim: OptimizerCfg,
    pub schedule: ScheduleCfg,
    pub run: RunSection,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            backbone: "r50".into(),
            model: BackboneCfg::default(),
            head: HeadCfg::default(),
            uss: UssSection::default(),
            transformer: TransformerSection::default(),
            kd: KdSection::default(),
            mask_head: MaskHeadCfg::default(),
            data: DataSection::default(),
            optim: OptimizerCfg::default(),
            schedule: ScheduleCfg::default(),
            run: RunSection::default(),
        }
    }
}

/// USS on/off and its warm-up (steps that only fill the bank).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct UssSection {
    pub enabled: bool,
    pub warmup_steps: u64,
    pub s: Option<f64>,
    pub m: Option<f64>,
}

impl UssSection {
    pub fn cfg(&self) -> UssCfg {
        let d = UssCfg::default();
        UssCfg {
            s: self.s.unwrap_or(d.s),
            m: self.m.unwrap_or(d.m),
        }
    }
}

/// The transformer auxiliary branch on/off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TransformerSection {
    pub enabled: bool,
    pub branch: TransformerAuxCfg,
}

/// MaskInv distillation from a frozen tch teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KdSection {
    pub enabled: bool,
    /// Teacher backbone name and its trainer checkpoint (`backbone/` keys) or plain safetensors.
    pub teacher_backbone: String,
    pub teacher_checkpoint: Option<PathBuf>,
    pub teacher_embedding_dim: i64,
    /// Or an ONNX recogniser run once through tract, its embeddings cached on disk
    /// ([`super::onnx_teacher`]); used instead of `teacher_checkpoint` when set.
    pub teacher_onnx: Option<super::onnx_teacher::OnnxTeacherCfg>,
    /// LG lambda (paper 100); HG raises it to `lambda_high` when `trigger` fires.
    pub lambda_low: f64,
    pub lambda_high: f64,
    pub trigger: HgTrigger,
}

impl Default for KdSection {
    fn default() -> Self {
        Self {
            enabled: false,
            teacher_backbone: "r50".into(),
            teacher_checkpoint: None,
            teacher_embedding_dim: 512,
            teacher_onnx: None,
            lambda_low: 100.0,
            lambda_high: 100.0,
            trigger: HgTrigger::Never,
        }
    }
}

/// Data sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// insightface RecordIO training set (`.rec`, `.idx` next to it).
    pub train_rec: Option<PathBuf>,
    /// Or an ImageFolder of aligned faces.
    pub train_folder: Option<PathBuf>,
    /// Mask templates (PNG + anchors); procedural masks when absent.
    pub masks_dir: Option<PathBuf>,
    pub mask: MaskConfig,
    /// Masking on at all (pMask comes from `mask.p_mask`).
    pub masked_training: bool,
    pub loader: LoaderConfig,
    /// Verification .bin sets evaluated every `run.eval_every` steps and at the end.
    pub val_bins: Vec<PathBuf>,
    /// Also evaluate masked-probe and masked-both variants (seeded masks).
    pub eval_masked: bool,
    pub eval_mask_seed: u64,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            train_rec: None,
            train_folder: None,
            masks_dir: None,
            mask: MaskConfig::default(),
            masked_training: true,
            loader: LoaderConfig::default(),
            val_bins: Vec::new(),
            eval_masked: true,
            eval_mask_seed: 7,
        }
    }
}

/// Run control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// Optimiser steps in total.
    pub steps: u64,
    /// Micro-batches accumulated per optimiser step.
    pub accumulate: u64,
    pub seed: u64,
    /// cpu, cuda, cuda:N.
    pub device: String,
    /// libtorch CPU threads (1 is fastest on a small shared machine).
    pub threads: i32,
    /// fp16 autocast with dynamic loss scaling (CUDA only).
    pub fp16: bool,
    pub clip_grad_norm: Option<f64>,
    pub out_dir: PathBuf,
    pub checkpoint_every: u64,
    pub eval_every: u64,
    pub log_every: u64,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            steps: 1000,
            accumulate: 1,
            seed: 0,
            device: "cpu".into(),
            threads: 1,
            fp16: false,
            clip_grad_norm: Some(5.0),
            out_dir: PathBuf::from("runs/default"),
            checkpoint_every: 500,
            eval_every: 0,
            log_every: 10,
        }
    }
}

impl TrainConfig {
    /// Reads `path` and applies `overrides` (`a.b=value`) before validating.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut value: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let cfg: Self = toml::Value::Table(value)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: if overrides.is_empty() {
                    origin.to_string()
                } else {
                    format!("{origin} with --set {}", overrides.join(" "))
                },
                message: e.to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        crate::model::arch(&self.backbone).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.run.steps == 0 || self.run.accumulate == 0 {
            return bad("run.steps and run.accumulate must be >= 1".into());
        }
        if !(self.schedule.lr > 0.0 && self.schedule.lr.is_finite()) {
            return bad(format!("schedule.lr must be > 0, got {}", self.schedule.lr));
        }
        if self.data.train_rec.is_some() == self.data.train_folder.is_some() {
            return bad("set exactly one of data.train_rec and data.train_folder".into());
        }
        if self.kd.enabled && self.kd.teacher_checkpoint.is_none() && self.kd.teacher_onnx.is_none()
        {
            return bad("kd.enabled needs kd.teacher_checkpoint or [kd.teacher_onnx]".into());
        }
        let a = &self.data.loader.augment;
        let flip_only = a.crop_prob == 0.0
            && a.low_res_prob == 0.0
            && a.blur_prob == 0.0
            && a.jitter_prob == 0.0;
        if self.kd.enabled && self.kd.teacher_onnx.is_some() && !flip_only {
            return bad("kd.teacher_onnx caches embeddings of un-augmented images: use flip-only \
                 augmentation (crop/low_res/blur/jitter probabilities 0) or a kd.teacher_checkpoint"
                .into());
        }
        if let Some(c) = self.run.clip_grad_norm {
            if !(c > 0.0) {
                return bad(format!("run.clip_grad_norm must be > 0, got {c}"));
            }
        }
        Ok(())
    }
}

/// `a.b.c=value`: value parsed as a TOML value (number, bool, array, inline table), else taken as
/// a string.
pub fn apply_override(root: &mut toml::Table, o: &str) -> Result<(), ConfigError> {
    let (key, raw) = o
        .split_once('=')
        .ok_or_else(|| ConfigError::Override(o.to_string()))?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::Override(o.to_string()));
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let mut table = root;
    for p in &parts[..parts.len() - 1] {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::Override(o.to_string()))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_and_create_keys() {
        let text =
            "backbone = \"tiny\"\n[data]\ntrain_rec = \"a.rec\"\n[head]\ntype = \"arcface\"\n";
        let cfg = TrainConfig::from_toml(
            text,
            "t.toml",
            &[
                "run.steps=7".into(),
                "optim={type=\"adamw\", beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.05}".into(),
                "backbone=mbf".into(),
                "uss.enabled=true".into(),
            ],
        )
        .unwrap();
        assert_eq!(cfg.run.steps, 7);
        assert_eq!(cfg.backbone, "mbf");
        assert!(cfg.uss.enabled);
        assert!(matches!(cfg.optim, OptimizerCfg::Adamw { .. }));
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let e = TrainConfig::from_toml("backbone = \"r9\"\n[data]\ntrain_rec=\"a\"", "x.toml", &[])
            .unwrap_err();
        assert!(e.to_string().contains("r9"), "{e}");
        let e = TrainConfig::from_toml("[run]\nstepz = 3", "x.toml", &[]).unwrap_err();
        assert!(
            e.to_string().contains("x.toml") && e.to_string().contains("stepz"),
            "{e}"
        );
        let e = TrainConfig::from_toml("[data]\ntrain_rec=\"a\"", "x.toml", &["oops".into()])
            .unwrap_err();
        assert!(matches!(e, ConfigError::Override(_)));
        let onnx_with_crops = "[data]\ntrain_rec=\"a\"\n[kd]\nenabled=true\n\
            [kd.teacher_onnx]\nmodel=\"t.onnx\"\n[data.loader.augment]\ncrop_prob=0.2";
        let e = TrainConfig::from_toml(onnx_with_crops, "x.toml", &[]).unwrap_err();
        assert!(e.to_string().contains("flip-only"), "{e}");
    }

    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                TrainConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 5);
    }
}
