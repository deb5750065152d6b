//! iResNet backbone (ArcFace, arXiv:1801.07698; "improved residual networks", arXiv:2004.04989)
//! as in insightface `recognition/arcface_torch/backbones/iresnet.py`.
//!
//! In: (B,3,112,112) f32 from `shared::preprocess`. Out: the (B,D) embedding, not L2-normalised,
//! and the (B,512,7,7) output of `layer4` (before `bn2`) for the transformer branch.
//! Variable names equal the arcface_torch state-dict keys (`conv1`, `bn1`, `prelu`,
//! `layer1.0.bn1`, `layer1.0.downsample.0`, `bn2`, `fc`, `features`, ...), so a converted
//! checkpoint loads unrenamed (trainer/docs/CONVERT.md).

use super::layers::{batch_norm2d, Conv, ConvSpec, FixedGammaBatchNorm1d, PRelu};
use super::{Backbone, BackboneCfg};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::ModuleT, Tensor};

/// Depth and width of an iResNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IResNetCfg {
    /// Residual blocks in each of the four stages.
    pub blocks: [usize; 4],
    /// Channels of each stage (insightface: 64/128/256/512).
    pub widths: [i64; 4],
    /// Channels of the stem conv (insightface: 64).
    pub stem: i64,
}

impl IResNetCfg {
    /// = insightface `iresnet18`.
    pub fn r18() -> Self {
        Self {
            blocks: [2, 2, 2, 2],
            ..Self::standard()
        }
    }
    /// = insightface `iresnet34`.
    pub fn r34() -> Self {
        Self {
            blocks: [3, 4, 6, 3],
            ..Self::standard()
        }
    }
    /// = insightface `iresnet50`.
    pub fn r50() -> Self {
        Self {
            blocks: [3, 4, 14, 3],
            ..Self::standard()
        }
    }
    /// = insightface `iresnet100`.
    pub fn r100() -> Self {
        Self {
            blocks: [3, 13, 30, 3],
            ..Self::standard()
        }
    }
    /// maskgate's CPU preset: the iResNet layout at 112x112 with one block per stage and 1/8 of
    /// the channels (about 0.03 GMACs), for tests and the demo. Not an insightface model.
    pub fn tiny() -> Self {
        Self {
            blocks: [1, 1, 1, 1],
            widths: [8, 16, 32, 64],
            stem: 8,
        }
    }
    fn standard() -> Self {
        Self {
            blocks: [2, 2, 2, 2],
            widths: [64, 128, 256, 512],
            stem: 64,
        }
    }
}

/// BN -> 3x3 conv -> BN -> PReLU -> 3x3 conv (stride here) -> BN, plus identity or a strided 1x1
/// projection; no activation after the add.
#[derive(Debug)]
struct IBasicBlock {
    bn1: nn::BatchNorm,
    conv1: Conv,
    bn2: nn::BatchNorm,
    prelu: PRelu,
    conv2: Conv,
    bn3: nn::BatchNorm,
    downsample: Option<(Conv, nn::BatchNorm)>,
}

impl IBasicBlock {
    fn new(p: nn::Path, in_c: i64, out_c: i64, stride: i64, in_hw: i64) -> Self {
        let conv1 = Conv::new(&p / "conv1", ConvSpec::new(in_c, out_c, 3, 1, 1), in_hw);
        let conv2 = Conv::new(
            &p / "conv2",
            ConvSpec::new(out_c, out_c, 3, stride, 1),
            conv1.out_hw,
        );
        let downsample = (stride != 1 || in_c != out_c).then(|| {
            let d = &p / "downsample";
            (
                Conv::new(&d / "0", ConvSpec::new(in_c, out_c, 1, stride, 0), in_hw),
                batch_norm2d(&d / "1", out_c),
            )
        });
        Self {
            bn1: batch_norm2d(&p / "bn1", in_c),
            conv1,
            bn2: batch_norm2d(&p / "bn2", out_c),
            prelu: PRelu::new(&p / "prelu", out_c),
            conv2,
            bn3: batch_norm2d(&p / "bn3", out_c),
            downsample,
        }
    }

    fn out_hw(&self) -> i64 {
        self.conv2.out_hw
    }

    fn macs(&self) -> u64 {
        self.conv1.macs + self.conv2.macs + self.downsample.as_ref().map_or(0, |(c, _)| c.macs)
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs.apply_t(&self.bn1, train);
        let out = self.conv1.forward(&out).apply_t(&self.bn2, train);
        let out = self.prelu.forward(&out);
        let out = self.conv2.forward(&out).apply_t(&self.bn3, train);
        let identity = match &self.downsample {
            Some((conv, bn)) => conv.forward(xs).apply_t(bn, train),
            None => xs.shallow_clone(),
        };
        out + identity
    }
}

/// The iResNet: stem, four stages each starting with stride 2, then BN2d -> flatten -> dropout ->
/// Linear -> BatchNorm1d (gamma fixed to 1).
#[derive(Debug)]
pub struct IResNet {
    conv1: Conv,
    bn1: nn::BatchNorm,
    prelu: PRelu,
    stages: Vec<Vec<IBasicBlock>>,
    bn2: nn::BatchNorm,
    dropout: f64,
    fc: nn::Linear,
    features: FixedGammaBatchNorm1d,
    embedding_dim: i64,
    feature_channels: i64,
    feature_hw: i64,
    macs: u64,
    input_size: i64,
}

impl IResNet {
    /// Builds the variables under `p` (use the VarStore root for checkpoint-compatible keys).
    pub fn new(p: &nn::Path, arch: &IResNetCfg, cfg: &BackboneCfg) -> Self {
        let conv1 = Conv::new(
            p / "conv1",
            ConvSpec::new(3, arch.stem, 3, 1, 1),
            cfg.input_size,
        );
        let mut hw = conv1.out_hw;
        let mut macs = conv1.macs;
        let mut in_c = arch.stem;
        let mut stages = Vec::with_capacity(4);
        for (s, (&blocks, &width)) in arch.blocks.iter().zip(&arch.widths).enumerate() {
            let sp = p / format!("layer{}", s + 1);
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let stride = if b == 0 { 2 } else { 1 };
                let block = IBasicBlock::new(&sp / b, in_c, width, stride, hw);
                hw = block.out_hw();
                macs += block.macs();
                in_c = width;
                stage.push(block);
            }
            stages.push(stage);
        }
        let flat = in_c * hw * hw;
        macs += (flat * cfg.embedding_dim) as u64;
        Self {
            conv1,
            bn1: batch_norm2d(p / "bn1", arch.stem),
            prelu: PRelu::new(p / "prelu", arch.stem),
            stages,
            bn2: batch_norm2d(p / "bn2", in_c),
            dropout: cfg.dropout,
            fc: nn::linear(p / "fc", flat, cfg.embedding_dim, Default::default()),
            features: FixedGammaBatchNorm1d::new(p / "features", cfg.embedding_dim),
            embedding_dim: cfg.embedding_dim,
            feature_channels: in_c,
            feature_hw: hw,
            macs,
            input_size: cfg.input_size,
        }
    }
}

impl Backbone for IResNet {
    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x = self.conv1.forward(xs).apply_t(&self.bn1, train);
        let mut x = self.prelu.forward(&x);
        for block in self.stages.iter().flatten() {
            x = block.forward_t(&x, train);
        }
        x
    }

    fn embed_t(&self, feature_map: &Tensor, train: bool) -> Tensor {
        let x = feature_map
            .apply_t(&self.bn2, train)
            .flatten(1, -1)
            .dropout(self.dropout, train);
        self.features.forward_t(&x.apply(&self.fc), train)
    }

    fn embedding_dim(&self) -> i64 {
        self.embedding_dim
    }

    fn feature_channels(&self) -> i64 {
        self.feature_channels
    }

    fn feature_hw(&self) -> i64 {
        self.feature_hw
    }

    fn macs(&self) -> u64 {
        self.macs
    }

    fn input_size(&self) -> i64 {
        self.input_size
    }
}

impl ModuleT for IResNet {
    /// The embedding alone, for code that wants a plain tch module.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        Backbone::forward_t(self, xs, train).embedding
    }
}
