//! `edge.toml`: what the terminal runs (recogniser, detector, gallery, quality gate).
//!
//! Raw TOML is parsed into [`RawConfig`] (strict: unknown keys are errors, so a typo never
//! silently falls back to a default), then checked into [`Config`], which is all the rest of the
//! crate sees. Relative paths are resolved against the directory of the config file, so a
//! config can travel with its models. See `edge/edge.example.toml` for a documented example.

use serde::Deserialize;
use shared::{ColorOrder, Condition, Landmarks5, Layout, PreprocessSpec, ARCFACE_TEMPLATE_112};
use std::path::{Path, PathBuf};

/// What is wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid edge config: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The whole file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub model: RawModel,
    pub detector: RawDetector,
    pub gallery: RawGallery,
    #[serde(default)]
    pub quality: QualityConfig,
    /// The door terminal's sections, validated by [`crate::terminal::TerminalConfig`]; named
    /// here so a single edge.toml holds both and every other unknown key stays an error.
    #[serde(default)]
    pub camera: Option<toml::Value>,
    #[serde(default)]
    pub door: Option<toml::Value>,
    #[serde(default)]
    pub audit: Option<toml::Value>,
    #[serde(default)]
    pub daemon: Option<toml::Value>,
    /// `[enroll]`, validated by [`crate::terminal::EnrollSections`].
    #[serde(default)]
    pub enroll: Option<toml::Value>,
    /// `[admin]`, validated by [`crate::terminal::TerminalConfig`].
    #[serde(default)]
    pub admin: Option<toml::Value>,
}

/// `[model]`: exactly one of `[model.bundle]` or `[model.onnx]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// Embed the face and its mirror image and add them (test-time fusion).
    #[serde(default = "default_true")]
    pub flip_fusion: bool,
    /// `auto` (from the model's mask probability, else unmasked), `masked` or `unmasked`.
    #[serde(default)]
    pub condition: ConditionChoice,
    pub bundle: Option<RawBundle>,
    pub onnx: Option<RawOnnx>,
}

/// A signed maskgate bundle and the keys allowed to sign it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBundle {
    pub path: PathBuf,
    /// Trusted ed25519 public keys, 64 hex characters each.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Files holding one trusted public key each (as written by the trainer's key tool).
    #[serde(default)]
    pub trusted_key_files: Vec<PathBuf>,
}

/// A third-party ONNX recogniser described by its contract.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnnx {
    pub path: PathBuf,
    pub input: String,
    pub output: String,
    /// Optional second output: probability that the face is masked.
    pub mask_prob_output: Option<String>,
    #[serde(default = "default_112")]
    pub width: u32,
    #[serde(default = "default_112")]
    pub height: u32,
    pub layout: Layout,
    pub color: ColorOrder,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Landmark template in crop pixels; the ArcFace 112x112 template when absent.
    pub template: Option<Landmarks5>,
    /// Accept when cosine >= this, for unmasked probes.
    pub threshold_unmasked: f32,
    /// Threshold for masked probes (the unmasked one when absent).
    pub threshold_masked: Option<f32>,
}

/// `[detector]`: a YuNet-family ONNX file, or `aligned = true` for input that is already one
/// aligned face crop per image (then no other key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetector {
    /// Every image is one face already aligned to the recogniser's template (face-database
    /// imports, capture cameras that emit aligned crops): nothing is detected.
    #[serde(default)]
    pub aligned: bool,
    pub path: Option<PathBuf>,
    /// Square network input side in pixels (multiple of 32): 320 is fast, 640 finds small faces.
    pub input_size: Option<u32>,
    pub score_threshold: Option<f32>,
    pub nms_iou: Option<f32>,
    pub max_faces: Option<usize>,
}

/// `[gallery]`: the encrypted gallery file and where its key comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGallery {
    pub path: PathBuf,
    /// Key file (32 bytes, hex); created with mode 0600 on first use when the gallery is new.
    pub key_file: Option<PathBuf>,
    /// Name of an environment variable holding the key as 64 hex characters (device-provided).
    pub key_env: Option<String>,
}

/// `[quality]`: the gate every face passes before enrollment or matching.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Minimum inter-ocular distance in image pixels.
    pub min_eye_distance_px: f32,
    /// Minimum variance of the Laplacian of the aligned grey crop (sharpness).
    pub min_sharpness: f32,
    /// Maximum eye-line roll in degrees.
    pub max_roll_deg: f32,
    /// Maximum |nose offset from the eye midline| / eye distance (a yaw proxy; 0 is frontal).
    pub max_yaw_ratio: f32,
    /// Minimum detector score.
    pub min_detector_score: f32,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            min_eye_distance_px: 20.0,
            min_sharpness: 15.0,
            max_roll_deg: 30.0,
            max_yaw_ratio: 0.4,
            min_detector_score: 0.7,
        }
    }
}

/// How the probe condition (and so the threshold) is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConditionChoice {
    #[default]
    Auto,
    Masked,
    Unmasked,
}

impl ConditionChoice {
    /// The forced condition, if any.
    pub fn forced(self) -> Option<Condition> {
        match self {
            ConditionChoice::Auto => None,
            ConditionChoice::Masked => Some(Condition::Masked),
            ConditionChoice::Unmasked => Some(Condition::Unmasked),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_112() -> u32 {
    112
}
fn default_input_size() -> u32 {
    320
}
fn default_score_threshold() -> f32 {
    0.6
}
fn default_nms_iou() -> f32 {
    0.3
}
fn default_max_faces() -> usize {
    32
}

/// A checked configuration: paths absolute, exactly one recogniser, values in range.
#[derive(Debug, Clone)]
pub struct Config {
    pub recognizer: RecognizerConfig,
    pub flip_fusion: bool,
    pub condition: ConditionChoice,
    pub detector: DetectorKind,
    pub gallery: GalleryConfig,
    pub quality: QualityConfig,
}

/// Where the recogniser comes from.
#[derive(Debug, Clone)]
pub enum RecognizerConfig {
    Bundle {
        path: PathBuf,
        trusted_keys: Vec<ed25519_dalek::VerifyingKey>,
    },
    Onnx(OnnxContract),
}

/// A checked ONNX recogniser contract.
#[derive(Debug, Clone)]
pub struct OnnxContract {
    pub path: PathBuf,
    pub input: String,
    pub output: String,
    pub mask_prob_output: Option<String>,
    pub preprocess: PreprocessSpec,
    pub threshold_unmasked: f32,
    pub threshold_masked: Option<f32>,
}

/// How faces are found in an image.
#[derive(Debug, Clone)]
pub enum DetectorKind {
    /// A YuNet-family detector.
    Yunet(DetectorConfig),
    /// Each image is one face crop aligned to the recogniser's template ([`crate::crop`]).
    AlignedCrops,
}

impl DetectorKind {
    /// The YuNet settings, when a YuNet detector is configured.
    pub fn yunet(&self) -> Option<&DetectorConfig> {
        match self {
            DetectorKind::Yunet(d) => Some(d),
            DetectorKind::AlignedCrops => None,
        }
    }
}

/// YuNet detector settings.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    pub path: PathBuf,
    pub input_size: u32,
    pub score_threshold: f32,
    pub nms_iou: f32,
    pub max_faces: usize,
}

/// Where the gallery key comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    File(PathBuf),
    Env(String),
}

/// Gallery settings.
#[derive(Debug, Clone)]
pub struct GalleryConfig {
    pub path: PathBuf,
    pub key: KeySource,
    /// The state file that records the newest generation of this gallery (rollback
    /// protection): `[audit] state`, else `state.toml` beside the `[audit]` log. `None`
    /// (only when built in code) turns the check off.
    pub state: Option<PathBuf>,
}

impl Config {
    /// Read, parse and check `path`; every error names the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_toml(&text, &path.display().to_string(), &base)
    }

    /// Parse TOML text; `origin` names it in errors, relative paths are joined to `base`.
    pub fn from_toml(text: &str, origin: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        Self::check(raw, origin, base)
    }

    fn check(raw: RawConfig, origin: &str, base: &Path) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError::Invalid {
            path: origin.to_string(),
            message,
        };
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let recognizer = match (raw.model.bundle, raw.model.onnx) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "[model] has both a bundle and an onnx section; keep one".into(),
                ))
            }
            (None, None) => {
                return Err(bad(
                    "[model] needs a [model.bundle] or a [model.onnx] section".into(),
                ))
            }
            (Some(b), None) => {
                let mut keys = Vec::new();
                for (i, k) in b.trusted_keys.iter().enumerate() {
                    keys.push(
                        shared::bundle::keys::parse_verifying_key(k)
                            .map_err(|m| bad(format!("model.bundle.trusted_keys[{i}]: {m}")))?,
                    );
                }
                for f in &b.trusted_key_files {
                    let f = abs(f);
                    keys.push(
                        shared::bundle::keys::read_verifying_key(&f)
                            .map_err(|e| bad(e.to_string()))?,
                    );
                }
                if keys.is_empty() {
                    return Err(bad("model.bundle: no trusted_keys or trusted_key_files; a bundle is never loaded unchecked".into()));
                }
                RecognizerConfig::Bundle {
                    path: abs(&b.path),
                    trusted_keys: keys,
                }
            }
            (None, Some(o)) => {
                let preprocess = PreprocessSpec {
                    width: o.width,
                    height: o.height,
                    color: o.color,
                    layout: o.layout,
                    mean: o.mean,
                    std: o.std,
                    template: o.template.unwrap_or(ARCFACE_TEMPLATE_112),
                };
                preprocess
                    .validate()
                    .map_err(|e| bad(format!("model.onnx: {e}")))?;
                for (name, t) in [
                    ("threshold_unmasked", Some(o.threshold_unmasked)),
                    ("threshold_masked", o.threshold_masked),
                ] {
                    if let Some(t) = t {
                        if !(t.is_finite() && (-1.0..=1.0).contains(&t)) {
                            return Err(bad(format!(
                                "model.onnx.{name} = {t} is not a cosine in [-1, 1]"
                            )));
                        }
                    }
                }
                RecognizerConfig::Onnx(OnnxContract {
                    path: abs(&o.path),
                    input: o.input,
                    output: o.output,
                    mask_prob_output: o.mask_prob_output,
                    preprocess,
                    threshold_unmasked: o.threshold_unmasked,
                    threshold_masked: o.threshold_masked,
                })
            }
        };
        let detector = check_detector(raw.detector, &abs).map_err(bad)?;
        let key = match (raw.gallery.key_file, raw.gallery.key_env) {
            (Some(f), None) => KeySource::File(abs(&f)),
            (None, Some(v)) => KeySource::Env(v),
            _ => {
                return Err(bad(
                    "[gallery] needs exactly one of key_file or key_env".into()
                ))
            }
        };
        let q = &raw.quality;
        let finite = [
            q.min_eye_distance_px,
            q.min_sharpness,
            q.max_roll_deg,
            q.max_yaw_ratio,
            q.min_detector_score,
        ];
        if finite.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(bad(
                "[quality] values must be finite and non-negative".into()
            ));
        }
        // `[audit]` belongs to the door's sections, but the state file it names guards every
        // gallery write, so the CLI reads it too (strictly, like the door does).
        let audit: crate::audit::AuditConfig = match raw.audit {
            Some(v) => v.try_into().map_err(|e| bad(format!("[audit]: {e}")))?,
            None => crate::audit::AuditConfig::default(),
        };
        let state = abs(&crate::audit::AuditConfig {
            path: abs(&audit.path),
            state: audit.state.map(|p| abs(&p)),
        }
        .state_path());
        Ok(Self {
            recognizer,
            flip_fusion: raw.model.flip_fusion,
            condition: raw.model.condition,
            detector,
            gallery: GalleryConfig {
                path: abs(&raw.gallery.path),
                key,
                state: Some(state),
            },
            quality: raw.quality,
        })
    }
}

/// `[detector]` as written -> what runs; a half-filled section is an error naming the keys.
fn check_detector(d: RawDetector, abs: &dyn Fn(&Path) -> PathBuf) -> Result<DetectorKind, String> {
    if d.aligned {
        let extra: Vec<&str> = [
            ("path", d.path.is_some()),
            ("input_size", d.input_size.is_some()),
            ("score_threshold", d.score_threshold.is_some()),
            ("nms_iou", d.nms_iou.is_some()),
            ("max_faces", d.max_faces.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if !extra.is_empty() {
            return Err(format!(
                "[detector] aligned = true means no detector runs, so it takes no other key (found {}); remove them, or remove `aligned` to use the YuNet file",
                extra.join(", ")
            ));
        }
        return Ok(DetectorKind::AlignedCrops);
    }
    let Some(path) = d.path else {
        return Err(
            "[detector] needs `path` (a YuNet ONNX file), or `aligned = true` when every image is an aligned face crop"
                .into(),
        );
    };
    let input_size = d.input_size.unwrap_or_else(default_input_size);
    if !(32..=2048).contains(&input_size) || input_size % 32 != 0 {
        return Err(format!(
            "detector.input_size = {input_size} must be a multiple of 32 in 32..=2048"
        ));
    }
    let score_threshold = d.score_threshold.unwrap_or_else(default_score_threshold);
    let nms_iou = d.nms_iou.unwrap_or_else(default_nms_iou);
    if !(0.0..=1.0).contains(&score_threshold) || !(0.0..=1.0).contains(&nms_iou) {
        return Err("detector.score_threshold and detector.nms_iou must be in [0, 1]".into());
    }
    let max_faces = d.max_faces.unwrap_or_else(default_max_faces);
    if max_faces == 0 {
        return Err("detector.max_faces must be at least 1".into());
    }
    Ok(DetectorKind::Yunet(DetectorConfig {
        path: abs(&path),
        input_size,
        score_threshold,
        nms_iou,
        max_faces,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SFACE: &str = r#"
[model]
flip_fusion = false
[model.onnx]
path = "models/sface.onnx"
input = "data"
output = "fc1"
layout = "nchw"
color = "rgb"
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
threshold_unmasked = 0.363

[detector]
path = "/abs/yunet.onnx"

[gallery]
path = "gallery.bin"
key_file = "gallery.key"
"#;

    #[test]
    fn example_parses_and_resolves_paths() {
        let cfg = Config::from_toml(SFACE, "edge.toml", Path::new("/etc/maskgate")).unwrap();
        let RecognizerConfig::Onnx(o) = &cfg.recognizer else {
            panic!("onnx expected")
        };
        assert_eq!(o.path, Path::new("/etc/maskgate/models/sface.onnx"));
        assert_eq!(o.preprocess.template, ARCFACE_TEMPLATE_112);
        let yunet = cfg.detector.yunet().expect("a YuNet detector");
        assert_eq!(yunet.path, Path::new("/abs/yunet.onnx"));
        assert_eq!(yunet.input_size, 320);
        assert_eq!(
            cfg.gallery.key,
            KeySource::File("/etc/maskgate/gallery.key".into())
        );
        assert_eq!(cfg.quality, QualityConfig::default());
        assert!(!cfg.flip_fusion);
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../edge.example.toml");
        Config::from_toml(text, "edge.example.toml", Path::new("/x")).unwrap();
    }

    #[test]
    fn mistakes_are_named() {
        let typo = SFACE.replace("threshold_unmasked", "treshold_unmasked");
        let e = Config::from_toml(&typo, "edge.toml", Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("edge.toml") && e.contains("treshold_unmasked"),
            "{e}"
        );

        let both = SFACE.replace(
            "key_file = \"gallery.key\"",
            "key_file = \"k\"\nkey_env = \"K\"",
        );
        let e = Config::from_toml(&both, "edge.toml", Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one of key_file or key_env"), "{e}");

        let size = SFACE.replace(
            "path = \"/abs/yunet.onnx\"",
            "path = \"y\"\ninput_size = 300",
        );
        let e = Config::from_toml(&size, "edge.toml", Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("multiple of 32"), "{e}");

        let thr = SFACE.replace("0.363", "3.63");
        let e = Config::from_toml(&thr, "edge.toml", Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("threshold_unmasked"), "{e}");

        let no_keys = "[model.bundle]\npath = \"m.mgb\"\n".to_string()
            + &SFACE[SFACE.find("[detector]").unwrap()..];
        let e = Config::from_toml(&no_keys, "edge.toml", Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("trusted"), "{e}");

        let bad_key = no_keys.replace(
            "path = \"m.mgb\"",
            "path = \"m.mgb\"\ntrusted_keys = [\"abcd\"]",
        );
        let e = Config::from_toml(&bad_key, "edge.toml", Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("trusted_keys[0]"), "{e}");
    }

    #[test]
    fn aligned_crops_need_no_detector_file() {
        let aligned = SFACE.replace("path = \"/abs/yunet.onnx\"", "aligned = true");
        let cfg = Config::from_toml(&aligned, "edge.toml", Path::new("")).unwrap();
        assert!(matches!(cfg.detector, DetectorKind::AlignedCrops));
        assert!(cfg.detector.yunet().is_none());
        // `aligned = false` is the YuNet detector, as before.
        let explicit = SFACE.replace("[detector]", "[detector]\naligned = false");
        let cfg = Config::from_toml(&explicit, "edge.toml", Path::new("")).unwrap();
        assert!(cfg.detector.yunet().is_some());
    }

    #[test]
    fn half_filled_detector_sections_are_named() {
        let both = SFACE.replace("[detector]", "[detector]\naligned = true\ninput_size = 320");
        let e = Config::from_toml(&both, "edge.toml", Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("edge.toml")
                && e.contains("aligned = true")
                && e.contains("path, input_size"),
            "{e}"
        );
        for section in [
            "[detector]\n",
            "[detector]\naligned = false\nmax_faces = 4\n",
        ] {
            let empty = SFACE.replace("[detector]\npath = \"/abs/yunet.onnx\"\n", section);
            let e = Config::from_toml(&empty, "edge.toml", Path::new(""))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("needs `path`") && e.contains("aligned = true"),
                "{section}: {e}"
            );
        }
        let typo = SFACE.replace("[detector]", "[detector]\nalinged = true");
        let e = Config::from_toml(&typo, "edge.toml", Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("alinged"), "{e}");
    }
}
