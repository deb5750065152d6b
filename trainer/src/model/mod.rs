//! Face-recognition backbones and the training-only transformer branch.
//!
//! Every backbone maps an aligned (B,3,112,112) batch to a [`BackboneOutput`]: the un-normalised
//! embedding that is exported and the final conv feature map that only the transformer branch
//! ([`transformer::TransformerAux`]) reads. Backbones are built by short name through
//! [`build_backbone`]; their variable names equal the insightface arcface_torch state-dict keys.

mod layers;

pub mod iresnet;
pub mod mobilefacenet;
pub mod transformer;

pub use iresnet::{IResNet, IResNetCfg};
pub use mobilefacenet::{MobileFaceNet, MobileFaceNetCfg};
pub use transformer::{TransformerAux, TransformerAuxCfg};

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// Settings every backbone shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackboneCfg {
    /// Embedding dimension D (insightface default 512).
    pub embedding_dim: i64,
    /// Side of the square input; 112 gives the 7x7 final map the reference models expect.
    pub input_size: i64,
    /// Dropout before the final Linear (iResNet only; arcface_torch default 0).
    pub dropout: f64,
}

impl Default for BackboneCfg {
    fn default() -> Self {
        Self {
            embedding_dim: 512,
            input_size: 112,
            dropout: 0.0,
        }
    }
}

/// What a backbone returns for one batch.
#[derive(Debug)]
pub struct BackboneOutput {
    /// (B,D), not L2-normalised: the margin heads read its norm (AdaFace) and normalise it.
    pub embedding: Tensor,
    /// (B,C,h,w) final conv map before the output BN/flatten/FC (7x7 at 112x112).
    pub feature_map: Tensor,
}

/// A face backbone: load once, run many times.
pub trait Backbone: std::fmt::Debug + Send {
    /// The body: input -> final conv feature map (B,C,h,w); `train` selects batch statistics.
    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor;
    /// The output head: feature map -> un-normalised embedding (output BN, flatten, FC, BN).
    /// Mixed-precision training runs it outside autocast so the final FC and BN stay fp32.
    fn embed_t(&self, feature_map: &Tensor, train: bool) -> Tensor;
    /// Runs the batch; `train` selects batch statistics and dropout.
    fn forward_t(&self, xs: &Tensor, train: bool) -> BackboneOutput {
        let feature_map = self.features_t(xs, train);
        let embedding = self.embed_t(&feature_map, train);
        BackboneOutput {
            embedding,
            feature_map,
        }
    }
    /// Embedding dimension D.
    fn embedding_dim(&self) -> i64;
    /// Channels C of the feature map.
    fn feature_channels(&self) -> i64;
    /// Side of the (square) feature map.
    fn feature_hw(&self) -> i64;
    /// Multiply-adds of one forward pass of one image at the configured input size, counted
    /// analytically per conv and linear layer (BN, PReLU and additions are not counted).
    fn macs(&self) -> u64;
    /// Side of the square input the backbone was built for.
    fn input_size(&self) -> i64;

    /// Checks that `xs` is a float (B,3,S,S) batch of the configured size, so a bad batch is an
    /// error instead of a libtorch panic inside `forward_t`.
    fn check_input(&self, xs: &Tensor) -> Result<(), ModelError> {
        let s = self.input_size();
        let size = xs.size();
        let ok = size.len() == 4 && size[0] >= 1 && size[1..] == [3, s, s];
        if !ok
            || !matches!(
                xs.kind(),
                tch::Kind::Float | tch::Kind::Double | tch::Kind::Half | tch::Kind::BFloat16
            )
        {
            return Err(ModelError::BadInput(format!(
                "expected a float (B,3,{s},{s}) batch, got {:?} {size:?}",
                xs.kind()
            )));
        }
        Ok(())
    }
}

/// Errors building a backbone.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown backbone {name:?}; known: {}", BACKBONES.join(", "))]
    UnknownBackbone { name: String },
    #[error("bad backbone config: {0}")]
    BadConfig(String),
    #[error("bad backbone input: {0}")]
    BadInput(String),
}

/// Short names accepted by [`build_backbone`], smallest first.
pub const BACKBONES: &[&str] = &["tiny", "mbf", "r18", "r34", "r50", "r100"];

/// Builds backbone `name` with its variables under `p` (pass the VarStore root for keys that
/// match arcface_torch checkpoints).
pub fn build_backbone(
    name: &str,
    p: &nn::Path,
    cfg: &BackboneCfg,
) -> Result<Box<dyn Backbone>, ModelError> {
    if cfg.embedding_dim < 1 {
        return Err(ModelError::BadConfig(format!(
            "embedding_dim must be >= 1, got {}",
            cfg.embedding_dim
        )));
    }
    // Four stride-2 stages must leave a non-empty map.
    if cfg.input_size < 16 {
        return Err(ModelError::BadConfig(format!(
            "input_size must be >= 16, got {}",
            cfg.input_size
        )));
    }
    if !(0.0..1.0).contains(&cfg.dropout) {
        return Err(ModelError::BadConfig(format!(
            "dropout must be in [0,1), got {}",
            cfg.dropout
        )));
    }
    Ok(match arch(name)? {
        Arch::IResNet(a) => Box::new(IResNet::new(p, &a, cfg)),
        Arch::MobileFaceNet(a) => Box::new(MobileFaceNet::new(p, &a, cfg)),
    })
}

/// The architecture behind a registered name: what an exporter needs to rebuild the graph from
/// the VarStore keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Arch {
    IResNet(IResNetCfg),
    MobileFaceNet(MobileFaceNetCfg),
}

/// Looks up a registered backbone name.
pub fn arch(name: &str) -> Result<Arch, ModelError> {
    Ok(match name {
        "tiny" => Arch::IResNet(IResNetCfg::tiny()),
        "r18" => Arch::IResNet(IResNetCfg::r18()),
        "r34" => Arch::IResNet(IResNetCfg::r34()),
        "r50" => Arch::IResNet(IResNetCfg::r50()),
        "r100" => Arch::IResNet(IResNetCfg::r100()),
        "mbf" => Arch::MobileFaceNet(MobileFaceNetCfg::mbf()),
        _ => {
            return Err(ModelError::UnknownBackbone {
                name: name.to_string(),
            })
        }
    })
}

/// Size and cost of one backbone, as `trainer models` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackboneSummary {
    pub name: String,
    /// Learnable parameters plus the fixed BN1d gamma, as PyTorch's `parameters()` counts them
    /// (BN running statistics excluded).
    pub params: u64,
    /// Multiply-adds of one 112x112 image (see [`Backbone::macs`]).
    pub macs: u64,
}

/// Builds `name` on the CPU in a throw-away VarStore and measures it.
pub fn summarize(name: &str, cfg: &BackboneCfg) -> Result<BackboneSummary, ModelError> {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let net = build_backbone(name, &vs.root(), cfg)?;
    Ok(BackboneSummary {
        name: name.to_string(),
        params: parameter_count(&vs),
        macs: net.macs(),
    })
}

/// Parameters in `vs`, not counting BN running statistics.
pub fn parameter_count(vs: &nn::VarStore) -> u64 {
    vs.variables()
        .iter()
        .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
        .map(|(_, t)| t.numel() as u64)
        .sum()
}

#[cfg(test)]
mod tests;
