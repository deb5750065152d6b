//! `trainer keygen` / `trainer bundle`: an exported model, its threshold config, the
//! preprocessing and where it came from, signed with ed25519 into a `shared::Bundle`.

use super::ExportError;
use prost::Message;
use shared::bundle::{keys, ModelOutputs, MANIFEST_FORMAT};
use shared::{Bundle, Manifest, ModelVariant, PreprocessSpec, Provenance, ThresholdConfig};
use std::path::{Path, PathBuf};
use tract_onnx::pb;

/// Creates a signing key at `out` (mode 0600) and its public key at `out.pub`; refuses to
/// overwrite either. Returns the public key path.
pub fn keygen(out: &Path) -> Result<PathBuf, ExportError> {
    Ok(keys::write_pair(out, &keys::generate())?)
}

/// Inputs of one bundle.
#[derive(Debug, Clone)]
pub struct BundleRequest {
    pub onnx: PathBuf,
    pub thresholds: PathBuf,
    pub key: PathBuf,
    pub out: PathBuf,
    pub variant: ModelVariant,
    pub dataset: String,
    /// The trainer config the model was trained with (its sha256 goes in the provenance).
    pub trainer_config: Option<PathBuf>,
    /// Release number written to the manifest (`bundle_version`); edges refuse to go back to
    /// an older one. 0 means unversioned (the field is left out of the manifest).
    pub bundle_version: u64,
}

/// Graph facts read back from an ONNX file.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphInfo {
    pub input_name: String,
    pub embedding_dim: u32,
    pub mask_prob: Option<String>,
}

/// Reads input name, embedding width and the optional `mask_prob` output from ONNX bytes.
pub fn graph_info(bytes: &[u8], origin: &Path) -> Result<GraphInfo, ExportError> {
    let bad = |m: String| ExportError::Invalid(format!("{}: {m}", origin.display()));
    let model =
        pb::ModelProto::decode(bytes).map_err(|e| bad(format!("not an ONNX model: {e}")))?;
    let graph = model
        .graph
        .ok_or_else(|| bad("ONNX model has no graph".into()))?;
    let initializers: std::collections::HashSet<_> =
        graph.initializer.iter().map(|t| t.name.clone()).collect();
    let input = graph
        .input
        .iter()
        .find(|i| !initializers.contains(&i.name))
        .ok_or_else(|| bad("graph has no input".into()))?;
    let dim_of = |v: &pb::ValueInfoProto| -> Option<u32> {
        let Some(pb::type_proto::Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
            return None;
        };
        match t.shape.as_ref()?.dim.get(1)?.value.as_ref()? {
            pb::tensor_shape_proto::dimension::Value::DimValue(d) => u32::try_from(*d).ok(),
            _ => None,
        }
    };
    let emb = graph
        .output
        .iter()
        .find(|o| o.name == super::graph::EMBEDDING_NAME)
        .ok_or_else(|| bad("graph has no `embedding` output".into()))?;
    let embedding_dim =
        dim_of(emb).ok_or_else(|| bad("`embedding` output has no fixed width".into()))?;
    let mask_prob = graph
        .output
        .iter()
        .find(|o| o.name == super::graph::MASK_PROB_NAME)
        .map(|o| o.name.clone());
    Ok(GraphInfo {
        input_name: input.name.clone(),
        embedding_dim,
        mask_prob,
    })
}

/// `git rev-parse HEAD` of the working directory, or "unknown".
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn read(path: &Path) -> Result<Vec<u8>, ExportError> {
    std::fs::read(path).map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds, signs and atomically writes the bundle; returns its manifest.
pub fn make_bundle(req: &BundleRequest) -> Result<Manifest, ExportError> {
    let model = read(&req.onnx)?;
    let info = graph_info(&model, &req.onnx)?;
    let thresholds = ThresholdConfig::load(&req.thresholds)
        .map_err(|e| ExportError::Invalid(format!("{}: {e}", req.thresholds.display())))?;
    let key = keys::read_signing_key(&req.key)?;
    let model_sha256 = shared::sha256_hex(&model);
    if thresholds.model_id != model_sha256 {
        return Err(ExportError::Invalid(format!(
            "{}: thresholds are for model {}, but {} has sha256 {model_sha256}; calibrate \
             thresholds on this model file",
            req.thresholds.display(),
            thresholds.model_id,
            req.onnx.display()
        )));
    }
    let trainer_config_sha256 = match &req.trainer_config {
        Some(p) => shared::sha256_hex(&read(p)?),
        None => "unknown".into(),
    };
    let created_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        model_sha256,
        variant: req.variant,
        embedding_dim: info.embedding_dim,
        input_name: info.input_name,
        outputs: ModelOutputs {
            embedding: super::graph::EMBEDDING_NAME.into(),
            mask_prob: info.mask_prob,
        },
        created_unix,
        bundle_version: req.bundle_version,
        provenance: Provenance {
            trainer_config_sha256,
            dataset: req.dataset.clone(),
            git_commit: git_commit(),
            trainer_version: env!("CARGO_PKG_VERSION").into(),
        },
        preprocess: PreprocessSpec::arcface_112(),
        thresholds,
    };
    let bundle = Bundle::create(manifest, model, &key)?;
    bundle.write(&req.out)?;
    Ok(bundle.manifest)
}
