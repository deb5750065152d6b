//! Transformer auxiliary branch (arXiv:2412.02198, METHODS section 4): a small pre-LN encoder over
//! the backbone's final conv map, trained with its own margin head as an extra loss.
//!
//! No reference code exists; the defaults are the project's design. The branch exists only in
//! training: nothing here is exported, and the backbone never depends on it.

use super::layers::batch_norm1d;
use super::ModelError;
use crate::loss::{LossError, MarginHead};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Kind, Tensor};

/// Shape and weight of the auxiliary branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransformerAuxCfg {
    pub d_model: i64,
    pub layers: usize,
    pub heads: i64,
    /// Hidden width of the MLP as a multiple of `d_model`.
    pub mlp_ratio: i64,
    pub dropout: f64,
    /// lambda_tr: weight of this branch's margin loss in the total.
    pub lambda: f64,
}

impl Default for TransformerAuxCfg {
    fn default() -> Self {
        Self {
            d_model: 256,
            layers: 2,
            heads: 8,
            mlp_ratio: 2,
            dropout: 0.1,
            lambda: 0.5,
        }
    }
}

/// x + Attn(LN(x)); x + MLP(LN(x)).
#[derive(Debug)]
struct EncoderBlock {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    heads: i64,
    dropout: f64,
}

impl EncoderBlock {
    fn new(p: nn::Path, cfg: &TransformerAuxCfg) -> Self {
        let d = cfg.d_model;
        let mlp = &p / "mlp";
        Self {
            norm1: nn::layer_norm(&p / "norm1", vec![d], Default::default()),
            qkv: nn::linear(&p / "qkv", d, 3 * d, Default::default()),
            proj: nn::linear(&p / "proj", d, d, Default::default()),
            norm2: nn::layer_norm(&p / "norm2", vec![d], Default::default()),
            fc1: nn::linear(&mlp / "fc1", d, d * cfg.mlp_ratio, Default::default()),
            fc2: nn::linear(&mlp / "fc2", d * cfg.mlp_ratio, d, Default::default()),
            heads: cfg.heads,
            dropout: cfg.dropout,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let (b, l, d) = xs.size3().unwrap_or((0, 0, 0));
        let hd = d / self.heads;
        // (B,L,3d) -> (3,B,H,L,hd)
        let qkv = self
            .norm1
            .forward(xs)
            .apply(&self.qkv)
            .reshape([b, l, 3, self.heads, hd])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let p = if train { self.dropout } else { 0.0 };
        let attn =
            Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, p, false, None, false);
        let attn = attn
            .transpose(1, 2)
            .reshape([b, l, d])
            .apply(&self.proj)
            .dropout(self.dropout, train);
        let xs = xs + attn;
        let h = self
            .norm2
            .forward(&xs)
            .apply(&self.fc1)
            .gelu("none")
            .dropout(self.dropout, train);
        let h = h.apply(&self.fc2).dropout(self.dropout, train);
        xs + h
    }
}

/// Tokens from the (B,C,h,w) map -> linear to d_model -> CLS + learnable positions -> pre-LN
/// encoder -> final LN on CLS -> Linear -> BatchNorm1d -> D-dim embedding -> its own margin head.
#[derive(Debug)]
pub struct TransformerAux {
    tokens: nn::Linear,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<EncoderBlock>,
    norm: nn::LayerNorm,
    fc: nn::Linear,
    features: nn::BatchNorm,
    head: Box<dyn MarginHead>,
    cfg: TransformerAuxCfg,
    feature_channels: i64,
    tokens_len: i64,
}

impl TransformerAux {
    /// `feature_channels`/`feature_hw` come from the backbone ([`super::Backbone`]); `head` is the
    /// branch's own margin head (same type as the main loss, its own class centres and VarStore
    /// path).
    pub fn new(
        p: &nn::Path,
        cfg: &TransformerAuxCfg,
        feature_channels: i64,
        feature_hw: i64,
        embedding_dim: i64,
        head: Box<dyn MarginHead>,
    ) -> Result<Self, ModelError> {
        if cfg.d_model < 1 || cfg.heads < 1 || cfg.d_model % cfg.heads != 0 {
            return Err(ModelError::BadConfig(format!(
                "transformer d_model {} must be a positive multiple of heads {}",
                cfg.d_model, cfg.heads
            )));
        }
        if cfg.mlp_ratio < 1
            || !(0.0..1.0).contains(&cfg.dropout)
            || cfg.lambda.is_nan()
            || cfg.lambda < 0.0
        {
            return Err(ModelError::BadConfig(format!(
                "transformer needs mlp_ratio >= 1, dropout in [0,1), lambda >= 0; got {cfg:?}"
            )));
        }
        if head.embedding_dim() != embedding_dim {
            return Err(ModelError::BadConfig(format!(
                "transformer head takes {}-d embeddings, branch makes {}-d",
                head.embedding_dim(),
                embedding_dim
            )));
        }
        let d = cfg.d_model;
        let tokens_len = feature_hw * feature_hw;
        let blocks_p = p / "blocks";
        Ok(Self {
            tokens: nn::linear(p / "tokens", feature_channels, d, Default::default()),
            cls_token: p.var(
                "cls_token",
                &[1, 1, d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            ),
            pos_embed: p.var(
                "pos_embed",
                &[1, tokens_len + 1, d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            ),
            blocks: (0..cfg.layers)
                .map(|i| EncoderBlock::new(&blocks_p / i, cfg))
                .collect(),
            norm: nn::layer_norm(p / "norm", vec![d], Default::default()),
            fc: nn::linear(p / "fc", d, embedding_dim, Default::default()),
            features: batch_norm1d(p / "features", embedding_dim),
            head,
            cfg: cfg.clone(),
            feature_channels,
            tokens_len,
        })
    }

    /// The branch's (B,D) embedding, not normalised.
    pub fn embed(&self, feature_map: &Tensor, train: bool) -> Result<Tensor, LossError> {
        let size = feature_map.size();
        let ok = size.len() == 4
            && size[1] == self.feature_channels
            && size[2] * size[3] == self.tokens_len;
        if !ok || feature_map.kind() != Kind::Float {
            return Err(LossError::Shape(format!(
                "transformer branch expects a float (B,{},h,w) map with h*w={}, got {:?} {:?}",
                self.feature_channels,
                self.tokens_len,
                feature_map.kind(),
                size
            )));
        }
        let b = size[0];
        let x = feature_map
            .flatten(2, -1)
            .transpose(1, 2)
            .apply(&self.tokens);
        let x = Tensor::cat(
            &[self.cls_token.expand([b, 1, self.cfg.d_model], false), x],
            1,
        ) + &self.pos_embed;
        let mut x = x.dropout(self.cfg.dropout, train);
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        let cls = self.norm.forward(&x.select(1, 0));
        Ok(cls.apply(&self.fc).apply_t(&self.features, train))
    }

    /// lambda_tr times the branch head's loss on `labels`.
    pub fn loss(
        &mut self,
        feature_map: &Tensor,
        labels: &Tensor,
        train: bool,
    ) -> Result<Tensor, LossError> {
        let emb = self.embed(feature_map, train)?;
        Ok(self.head.forward(&emb, labels)?.loss * self.cfg.lambda)
    }

    pub fn cfg(&self) -> &TransformerAuxCfg {
        &self.cfg
    }
}
