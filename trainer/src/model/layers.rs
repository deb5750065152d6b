//! Building blocks shared by the backbones: convolutions that know their own cost, PReLU, and
//! batch norms initialised like PyTorch's (gamma 1, beta 0), so a fresh model matches the
//! reference code and a converted checkpoint finds every key where it expects it.

use tch::{nn, Tensor};

/// Shape of one 2-D convolution: what it needs to be built and to count its multiply-adds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvSpec {
    pub in_c: i64,
    pub out_c: i64,
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
    pub groups: i64,
}

impl ConvSpec {
    pub fn new(in_c: i64, out_c: i64, kernel: i64, stride: i64, padding: i64) -> Self {
        Self {
            in_c,
            out_c,
            kernel,
            stride,
            padding,
            groups: 1,
        }
    }

    pub fn groups(mut self, groups: i64) -> Self {
        self.groups = groups;
        self
    }

    /// Output side length for a square input of side `in_hw`.
    pub fn out_hw(&self, in_hw: i64) -> i64 {
        (in_hw + 2 * self.padding - self.kernel) / self.stride + 1
    }
}

/// A bias-free convolution (every conv in iResNet and MobileFaceNet is followed by a BN) that
/// remembers its output size and multiply-add count at the configured input size.
#[derive(Debug)]
pub(crate) struct Conv {
    conv: nn::Conv2D,
    pub out_hw: i64,
    pub macs: u64,
}

impl Conv {
    pub fn new(p: nn::Path, spec: ConvSpec, in_hw: i64) -> Self {
        let cfg = nn::ConvConfig {
            stride: spec.stride,
            padding: spec.padding,
            groups: spec.groups,
            bias: false,
            ..Default::default()
        };
        let conv = nn::conv2d(p, spec.in_c, spec.out_c, spec.kernel, cfg);
        let out_hw = spec.out_hw(in_hw);
        let macs =
            (out_hw * out_hw * spec.out_c * (spec.in_c / spec.groups) * spec.kernel * spec.kernel)
                as u64;
        Self { conv, out_hw, macs }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        xs.apply(&self.conv)
    }
}

/// BatchNorm2d with PyTorch's initialisation (gamma 1, beta 0; tch defaults gamma to U(0,1)).
pub(crate) fn batch_norm2d(p: nn::Path, channels: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, channels, bn_config())
}

/// BatchNorm1d with PyTorch's initialisation.
pub(crate) fn batch_norm1d(p: nn::Path, channels: i64) -> nn::BatchNorm {
    nn::batch_norm1d(p, channels, bn_config())
}

fn bn_config() -> nn::BatchNormConfig {
    nn::BatchNormConfig {
        ws_init: nn::Init::Const(1.0),
        ..Default::default()
    }
}

/// Channel-wise PReLU; the slope lives under `<path>.weight` like `torch.nn.PReLU`.
#[derive(Debug)]
pub(crate) struct PRelu {
    weight: Tensor,
}

impl PRelu {
    pub fn new(p: nn::Path, channels: i64) -> Self {
        Self {
            weight: p.var("weight", &[channels], nn::Init::Const(0.25)),
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        xs.prelu(&self.weight)
    }
}

/// The iResNet output BatchNorm1d ("features") whose gamma is fixed to 1 and never trained, as in
/// arcface_torch (`features.weight.requires_grad = False`). The key is still saved, so a
/// converted checkpoint loads unchanged.
#[derive(Debug)]
pub(crate) struct FixedGammaBatchNorm1d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

impl FixedGammaBatchNorm1d {
    pub fn new(p: nn::Path, channels: i64) -> Self {
        Self {
            weight: p.ones_no_train("weight", &[channels]),
            bias: p.zeros("bias", &[channels]),
            running_mean: p.zeros_no_train("running_mean", &[channels]),
            running_var: p.ones_no_train("running_var", &[channels]),
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            0.1,
            1e-5,
            false,
        )
    }
}
