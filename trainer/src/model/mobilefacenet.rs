//! MobileFaceNet (arXiv:1804.07573) as insightface arcface_torch's `mbf`
//! (`backbones/mobilefacenet.py`: scale 2, blocks (1,4,6,2), GDC head).
//!
//! In: (B,3,112,112). Out: the (B,D) embedding, not L2-normalised, and the (B,512,7,7) output of
//! `conv_sep` (before the GDC head) for the transformer branch. Keys follow the reference
//! `nn.Sequential` nesting: `layers.0.layers.0.weight` (conv), `layers.0.layers.1.*` (BN),
//! `layers.0.layers.2.weight` (PReLU), `layers.2.layers.1.layers.0.weight` (the depthwise conv
//! of a DepthWise unit), `conv_sep.*`, `features.layers.{0,2,3}.*` (GDC).

use super::layers::{batch_norm1d, batch_norm2d, Conv, ConvSpec, PRelu};
use super::{Backbone, BackboneCfg};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::ModuleT, Tensor};

/// Depth and width of a MobileFaceNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MobileFaceNetCfg {
    /// Units in the four stages (the first stage is a single grouped conv when it is 1).
    pub blocks: [usize; 4],
    /// Width multiplier of 64 channels (insightface `mbf`: 2).
    pub scale: i64,
}

impl MobileFaceNetCfg {
    /// = insightface `get_mbf` (about 0.45 GMACs at 112x112).
    pub fn mbf() -> Self {
        Self {
            blocks: [1, 4, 6, 2],
            scale: 2,
        }
    }
}

/// Conv -> BN -> PReLU, keys `layers.{0,1,2}`.
#[derive(Debug)]
struct ConvBlock {
    conv: Conv,
    bn: nn::BatchNorm,
    prelu: PRelu,
}

impl ConvBlock {
    fn new(p: nn::Path, spec: ConvSpec, in_hw: i64) -> Self {
        let l = &p / "layers";
        Self {
            conv: Conv::new(&l / "0", spec, in_hw),
            bn: batch_norm2d(&l / "1", spec.out_c),
            prelu: PRelu::new(&l / "2", spec.out_c),
        }
    }
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.prelu
            .forward(&self.conv.forward(xs).apply_t(&self.bn, train))
    }
}

/// Conv -> BN without activation, keys `layers.{0,1}`.
#[derive(Debug)]
struct LinearBlock {
    conv: Conv,
    bn: nn::BatchNorm,
}

impl LinearBlock {
    fn new(p: nn::Path, spec: ConvSpec, in_hw: i64) -> Self {
        let l = &p / "layers";
        Self {
            conv: Conv::new(&l / "0", spec, in_hw),
            bn: batch_norm2d(&l / "1", spec.out_c),
        }
    }
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.conv.forward(xs).apply_t(&self.bn, train)
    }
}

/// Inverted bottleneck: 1x1 expand (ConvBlock), kxk depthwise (ConvBlock), 1x1 linear projection.
#[derive(Debug)]
struct DepthWise {
    expand: ConvBlock,
    depthwise: ConvBlock,
    project: LinearBlock,
    residual: bool,
}

impl DepthWise {
    fn new(
        p: nn::Path,
        in_c: i64,
        out_c: i64,
        stride: i64,
        expansion: i64,
        residual: bool,
        in_hw: i64,
    ) -> Self {
        let l = &p / "layers";
        let expand = ConvBlock::new(&l / "0", ConvSpec::new(in_c, expansion, 1, 1, 0), in_hw);
        let depthwise = ConvBlock::new(
            &l / "1",
            ConvSpec::new(expansion, expansion, 3, stride, 1).groups(expansion),
            in_hw,
        );
        let out_hw = depthwise.conv.out_hw;
        let project = LinearBlock::new(&l / "2", ConvSpec::new(expansion, out_c, 1, 1, 0), out_hw);
        Self {
            expand,
            depthwise,
            project,
            residual,
        }
    }
    fn out_hw(&self) -> i64 {
        self.project.conv.out_hw
    }
    fn macs(&self) -> u64 {
        self.expand.conv.macs + self.depthwise.conv.macs + self.project.conv.macs
    }
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = self.expand.forward_t(xs, train);
        let out = self.depthwise.forward_t(&out, train);
        let out = self.project.forward_t(&out, train);
        if self.residual {
            out + xs
        } else {
            out
        }
    }
}

/// One entry of the reference `self.layers` ModuleList.
#[derive(Debug)]
enum Stage {
    Conv(Box<ConvBlock>),
    Unit(Box<DepthWise>),
    /// `Residual`: a `layers` Sequential of residual DepthWise units.
    Residual(Vec<DepthWise>),
}

impl Stage {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Stage::Conv(c) => c.forward_t(xs, train),
            Stage::Unit(u) => u.forward_t(xs, train),
            Stage::Residual(units) => {
                let mut x = xs.shallow_clone();
                for u in units {
                    x = u.forward_t(&x, train);
                }
                x
            }
        }
    }
}

/// The MobileFaceNet: stem and stages, 1x1 `conv_sep` to 512, then the GDC head (7x7 depthwise
/// linear conv + BN, flatten, bias-free Linear, BatchNorm1d).
#[derive(Debug)]
pub struct MobileFaceNet {
    stages: Vec<Stage>,
    conv_sep: ConvBlock,
    gdc_conv: LinearBlock,
    gdc_linear: nn::Linear,
    gdc_bn: nn::BatchNorm,
    embedding_dim: i64,
    feature_hw: i64,
    macs: u64,
    input_size: i64,
}

/// Channels of `conv_sep` and of the GDC head (fixed in the reference code).
const SEP_CHANNELS: i64 = 512;

impl MobileFaceNet {
    /// Builds the variables under `p` (use the VarStore root for checkpoint-compatible keys).
    pub fn new(p: &nn::Path, arch: &MobileFaceNetCfg, cfg: &BackboneCfg) -> Self {
        let l = p / "layers";
        let c1 = 64 * arch.scale;
        let c2 = 128 * arch.scale;
        let mut stages = Vec::new();
        let mut macs = 0u64;
        let stem = ConvBlock::new(&l / 0, ConvSpec::new(3, c1, 3, 2, 1), cfg.input_size);
        let mut hw = stem.conv.out_hw;
        macs += stem.conv.macs;
        stages.push(Stage::Conv(Box::new(stem)));
        if arch.blocks[0] == 1 {
            let c = ConvBlock::new(&l / 1, ConvSpec::new(c1, c1, 3, 1, 1).groups(64), hw);
            macs += c.conv.macs;
            stages.push(Stage::Conv(Box::new(c)));
        } else {
            stages.push(Stage::Residual(residual_units(
                &(&l / 1),
                c1,
                arch.blocks[0],
                128,
                hw,
                &mut macs,
            )));
        }
        // (in, out, expansion of the strided unit, expansion of the residual units, blocks)
        let plan = [
            (c1, c1, 128, 128, arch.blocks[1]),
            (c1, c2, 256, 256, arch.blocks[2]),
            (c2, c2, 512, 256, arch.blocks[3]),
        ];
        for (in_c, out_c, exp_down, exp_res, blocks) in plan {
            let unit = DepthWise::new(&l / stages.len(), in_c, out_c, 2, exp_down, false, hw);
            hw = unit.out_hw();
            macs += unit.macs();
            stages.push(Stage::Unit(Box::new(unit)));
            let units = residual_units(&(&l / stages.len()), out_c, blocks, exp_res, hw, &mut macs);
            stages.push(Stage::Residual(units));
        }
        let conv_sep = ConvBlock::new(p / "conv_sep", ConvSpec::new(c2, SEP_CHANNELS, 1, 1, 0), hw);
        macs += conv_sep.conv.macs;
        let g = p / "features" / "layers";
        let gdc_conv = LinearBlock::new(
            &g / 0,
            ConvSpec::new(SEP_CHANNELS, SEP_CHANNELS, hw, 1, 0).groups(SEP_CHANNELS),
            hw,
        );
        macs += gdc_conv.conv.macs + (SEP_CHANNELS * cfg.embedding_dim) as u64;
        let gdc_linear = nn::linear(
            &g / 2,
            SEP_CHANNELS,
            cfg.embedding_dim,
            nn::LinearConfig {
                bias: false,
                ..Default::default()
            },
        );
        let gdc_bn = batch_norm1d(&g / 3, cfg.embedding_dim);
        Self {
            stages,
            conv_sep,
            gdc_conv,
            gdc_linear,
            gdc_bn,
            embedding_dim: cfg.embedding_dim,
            feature_hw: hw,
            macs,
            input_size: cfg.input_size,
        }
    }
}

fn residual_units(
    p: &nn::Path,
    c: i64,
    blocks: usize,
    expansion: i64,
    hw: i64,
    macs: &mut u64,
) -> Vec<DepthWise> {
    let l = p / "layers";
    (0..blocks)
        .map(|i| {
            let u = DepthWise::new(&l / i, c, c, 1, expansion, true, hw);
            *macs += u.macs();
            u
        })
        .collect()
}

impl Backbone for MobileFaceNet {
    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        for stage in &self.stages {
            x = stage.forward_t(&x, train);
        }
        self.conv_sep.forward_t(&x, train)
    }

    fn embed_t(&self, feature_map: &Tensor, train: bool) -> Tensor {
        let x = self.gdc_conv.forward_t(feature_map, train).flatten(1, -1);
        x.apply(&self.gdc_linear).apply_t(&self.gdc_bn, train)
    }

    fn embedding_dim(&self) -> i64 {
        self.embedding_dim
    }

    fn feature_channels(&self) -> i64 {
        SEP_CHANNELS
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

impl ModuleT for MobileFaceNet {
    /// The embedding alone, for code that wants a plain tch module.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        Backbone::forward_t(self, xs, train).embedding
    }
}
