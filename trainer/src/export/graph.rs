//! Rebuilds a backbone's inference graph from its architecture and VarStore weights as ONNX:
//! BatchNorms folded into the preceding convolutions, iResNet's BN2d-before-flatten and the final
//! BatchNorm1d folded into the fully connected layer, training-only parts (transformer branch,
//! margin heads, dropout) left out.
//!
//! The same walk emits every variant: the numeric form of the weights ([`WeightFormat`]), the
//! activation fake-quantisation of static int8 ([`EmitOptions::activation_scales`]) and the ONNX
//! encodings of PReLU / the FC / flatten ([`GraphForms`]) are options, so all variants compute
//! the same function up to rounding.

use super::onnx::{Attr, Elem, GraphBuilder};
use super::ExportError;
use crate::model::{Arch, IResNetCfg, MobileFaceNetCfg};
use std::collections::HashMap;
use tract_onnx::pb;

/// BN epsilon of every BatchNorm in the backbones (PyTorch and tch default).
const BN_EPS: f32 = 1e-5;
/// Graph input name (shared METHODS.md).
pub const INPUT_NAME: &str = "data";
/// Embedding output name.
pub const EMBEDDING_NAME: &str = "embedding";
/// Optional mask-probability output name.
pub const MASK_PROB_NAME: &str = "mask_prob";

/// Named f32 tensors (shape, row-major values) of one backbone.
#[derive(Debug, Clone, Default)]
pub struct Weights {
    pub tensors: HashMap<String, (Vec<i64>, Vec<f32>)>,
}

impl Weights {
    /// Copies every variable of a VarStore to the CPU as f32.
    pub fn from_var_store(vs: &tch::nn::VarStore) -> Result<Self, ExportError> {
        let mut tensors = HashMap::new();
        for (k, t) in vs.variables() {
            let t = t
                .detach()
                .to_device(tch::Device::Cpu)
                .to_kind(tch::Kind::Float)
                .contiguous();
            let data = Vec::<f32>::try_from(t.flatten(0, -1))
                .map_err(|e| ExportError::Weights(format!("{k}: {e}")))?;
            tensors.insert(k, (t.size(), data));
        }
        Ok(Self { tensors })
    }

    fn get(&self, key: &str) -> Result<&(Vec<i64>, Vec<f32>), ExportError> {
        self.tensors
            .get(key)
            .ok_or_else(|| ExportError::Weights(format!("missing tensor {key:?}")))
    }

    /// Per-channel scale and shift of an inference-mode BatchNorm under `key`.
    fn bn(&self, key: &str) -> Result<(Vec<f32>, Vec<f32>), ExportError> {
        let g = &self.get(&format!("{key}.weight"))?.1;
        let b = &self.get(&format!("{key}.bias"))?.1;
        let m = &self.get(&format!("{key}.running_mean"))?.1;
        let v = &self.get(&format!("{key}.running_var"))?.1;
        let scale: Vec<f32> = g
            .iter()
            .zip(v)
            .map(|(g, v)| g / (v + BN_EPS).sqrt())
            .collect();
        let shift = b
            .iter()
            .zip(m)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        Ok((scale, shift))
    }
}

/// Numeric form of the stored weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    /// f16 initializers followed by Cast to f32 (half the file; same f32 compute).
    F16,
    /// Per-output-channel symmetric int8 weights followed by DequantizeLinear; the first conv and
    /// the final FC stay f32.
    Int8,
}

/// How PReLU is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreluForm {
    /// `PRelu(x, slope)`.
    PRelu,
    /// `Relu(x) - slope * Relu(-x)`.
    ReluNeg,
    /// `Max(x, 0) + slope * Min(x, 0)`.
    MaxMin,
}

/// How the final fully connected layer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FcForm {
    Gemm,
    MatMulAdd,
}

/// How the (N,C,H,W) -> (N,C*H*W) step is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlattenForm {
    Flatten,
    Reshape,
}

/// ONNX encodings of the ops the backbones use; every combination computes the same function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphForms {
    pub prelu: PreluForm,
    pub fc: FcForm,
    pub flatten: FlattenForm,
}

impl Default for GraphForms {
    /// The forms chosen for tract by `trainer export-forms` (see docs/EXPORT.md): PReLU as
    /// Max/Min runs about 2.4x faster than the PRelu op on mbf; the FC and flatten forms are
    /// within noise.
    fn default() -> Self {
        Self {
            prelu: PreluForm::MaxMin,
            fc: FcForm::Gemm,
            flatten: FlattenForm::Flatten,
        }
    }
}

/// Optional mask head exactly as the trainer saves it (store `mask_head`, see
/// `train::MaskHead`): `sigmoid(fc2(relu(fc1(e / max(|e|, 1e-12)))))` on the unit embedding;
/// fc1 (H,D)+(H), fc2 (1,H)+(1). Exported as the `mask_prob` (N,1) output.
#[derive(Debug, Clone)]
pub struct MaskHead {
    pub fc1_weight: Vec<f32>,
    pub fc1_bias: Vec<f32>,
    pub fc2_weight: Vec<f32>,
    pub fc2_bias: f32,
}

impl MaskHead {
    /// Hidden width H.
    pub fn hidden(&self) -> usize {
        self.fc1_bias.len()
    }
}

/// Everything that selects one emitted variant.
#[derive(Debug, Clone, Default)]
pub struct EmitOptions {
    pub weights: Option<WeightFormat>,
    pub forms: GraphForms,
    /// Static int8: symmetric per-tensor scale of every quantised conv's input, by probe index
    /// (the order of [`Emitted::probes`]).
    pub activation_scales: Option<Vec<f32>>,
    /// Expose the quantisable activations as extra graph outputs (for calibration).
    pub expose_probes: bool,
}

/// An emitted graph.
#[derive(Debug)]
pub struct Emitted {
    pub model: pb::ModelProto,
    /// Names of the activations feeding the quantisable convs, in emission order.
    pub probes: Vec<String>,
}

struct Emitter<'a> {
    b: GraphBuilder,
    w: &'a Weights,
    opts: &'a EmitOptions,
    probes: Vec<String>,
}

impl Emitter<'_> {
    fn weight_init(
        &mut self,
        hint: &str,
        dims: &[i64],
        data: &[f32],
        quantisable: bool,
    ) -> Result<String, ExportError> {
        match self.opts.weights.unwrap_or(WeightFormat::F32) {
            WeightFormat::F32 => Ok(self.b.f32s(hint, dims, data)),
            WeightFormat::F16 => {
                let h = self.b.f16s(hint, dims, data);
                Ok(self
                    .b
                    .node("Cast", &[&h], &[("to", Attr::Int(Elem::F32 as i64))]))
            }
            WeightFormat::Int8 if !quantisable => Ok(self.b.f32s(hint, dims, data)),
            WeightFormat::Int8 => {
                let (q, scales) = quantise_per_channel(dims, data);
                let q = self.b.i8s(hint, dims, &q);
                let s = self.b.f32s("wscale", &[dims[0]], &scales);
                let z = self.b.i8s("wzero", &[dims[0]], &vec![0; dims[0] as usize]);
                Ok(self
                    .b
                    .node("DequantizeLinear", &[&q, &s, &z], &[("axis", Attr::Int(0))]))
            }
        }
    }

    /// Static int8: fake-quantises `x` with its calibrated scale (QuantizeLinear ->
    /// DequantizeLinear), and records the probe.
    fn activation(&mut self, x: &str) -> Result<String, ExportError> {
        let index = self.probes.len();
        self.probes.push(x.to_string());
        let Some(scales) = &self.opts.activation_scales else {
            return Ok(x.to_string());
        };
        let scale = *scales.get(index).ok_or_else(|| {
            ExportError::Weights(format!("no calibrated scale for activation {index}"))
        })?;
        let s = self.b.f32s("ascale", &[], &[scale]);
        let z = self.b.i8s("azero", &[], &[0]);
        let q = self.b.node("QuantizeLinear", &[x, &s, &z], &[]);
        Ok(self.b.node("DequantizeLinear", &[&q, &s, &z], &[]))
    }

    /// Conv (no bias in the model) with the following BN folded in. The arguments mirror the
    /// conv's geometry one to one, so they stay separate.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        x: &str,
        conv: &str,
        bn: &str,
        stride: i64,
        pad: i64,
        in_c: i64,
        quantisable: bool,
    ) -> Result<(String, i64), ExportError> {
        let (dims, data) = self.w.get(&format!("{conv}.weight"))?.clone();
        let (scale, shift) = self.w.bn(bn)?;
        let out_c = dims[0];
        if dims.len() != 4 || scale.len() != out_c as usize || in_c % dims[1] != 0 {
            return Err(ExportError::Weights(format!(
                "{conv}.weight has shape {dims:?}, not a conv over {in_c} channels followed by \
                 {bn} ({} channels)",
                scale.len()
            )));
        }
        let per_out = data.len() / out_c as usize;
        let folded: Vec<f32> = data
            .iter()
            .enumerate()
            .map(|(i, v)| v * scale[i / per_out])
            .collect();
        let x = if quantisable {
            self.activation(x)?
        } else {
            x.to_string()
        };
        let wname = self.weight_init(&format!("{conv}.weight"), &dims, &folded, quantisable)?;
        let bname = self.b.f32s(&format!("{conv}.bias"), &[out_c], &shift);
        let k = dims[2];
        let y = self.b.node(
            "Conv",
            &[&x, &wname, &bname],
            &[
                ("kernel_shape", Attr::Ints(vec![k, dims[3]])),
                ("strides", Attr::Ints(vec![stride, stride])),
                ("pads", Attr::Ints(vec![pad; 4])),
                ("dilations", Attr::Ints(vec![1, 1])),
                ("group", Attr::Int(in_c / dims[1])),
            ],
        );
        Ok((y, out_c))
    }

    /// A BatchNorm that no conv precedes (iResNet's pre-activation `bn1`), as BatchNormalization.
    fn batch_norm(&mut self, x: &str, key: &str) -> Result<String, ExportError> {
        let (scale, shift) = self.w.bn(key)?;
        let c = scale.len() as i64;
        let s = self.b.f32s(&format!("{key}.scale"), &[c], &scale);
        let t = self.b.f32s(&format!("{key}.shift"), &[c], &shift);
        let m = self
            .b
            .f32s(&format!("{key}.mean"), &[c], &vec![0.0; c as usize]);
        let v = self
            .b
            .f32s(&format!("{key}.var"), &[c], &vec![1.0; c as usize]);
        Ok(self.b.node(
            "BatchNormalization",
            &[x, &s, &t, &m, &v],
            &[("epsilon", Attr::Float(0.0))],
        ))
    }

    fn prelu(&mut self, x: &str, key: &str) -> Result<String, ExportError> {
        let (_, slope) = self.w.get(&format!("{key}.weight"))?.clone();
        let c = slope.len() as i64;
        match self.opts.forms.prelu {
            PreluForm::PRelu => {
                let s = self.b.f32s(&format!("{key}.slope"), &[c, 1, 1], &slope);
                Ok(self.b.node("PRelu", &[x, &s], &[]))
            }
            PreluForm::ReluNeg => {
                let s = self.b.f32s(&format!("{key}.slope"), &[c, 1, 1], &slope);
                let pos = self.b.node("Relu", &[x], &[]);
                let neg = self.b.node("Neg", &[x], &[]);
                let neg = self.b.node("Relu", &[&neg], &[]);
                let neg = self.b.node("Mul", &[&neg, &s], &[]);
                Ok(self.b.node("Sub", &[&pos, &neg], &[]))
            }
            PreluForm::MaxMin => {
                let s = self.b.f32s(&format!("{key}.slope"), &[c, 1, 1], &slope);
                let zero = self.b.f32s("zero", &[], &[0.0]);
                let pos = self.b.node("Max", &[x, &zero], &[]);
                let neg = self.b.node("Min", &[x, &zero], &[]);
                let neg = self.b.node("Mul", &[&neg, &s], &[]);
                Ok(self.b.node("Add", &[&pos, &neg], &[]))
            }
        }
    }

    fn flatten(&mut self, x: &str) -> String {
        match self.opts.forms.flatten {
            FlattenForm::Flatten => self.b.node("Flatten", &[x], &[("axis", Attr::Int(1))]),
            FlattenForm::Reshape => {
                let shape = self.b.i64s("flat_shape", &[2], &[0, -1]);
                self.b.node("Reshape", &[x, &shape], &[])
            }
        }
    }

    /// y = x @ w^T + b with w (D,K); kept f32 in int8 variants (the final layer).
    fn fc(&mut self, x: &str, w: &[f32], b: &[f32], d: i64, k: i64) -> Result<String, ExportError> {
        let bname = self.b.f32s("fc.bias", &[d], b);
        match self.opts.forms.fc {
            FcForm::Gemm => {
                let wname = self.weight_init("fc.weight", &[d, k], w, false)?;
                Ok(self
                    .b
                    .node("Gemm", &[x, &wname, &bname], &[("transB", Attr::Int(1))]))
            }
            FcForm::MatMulAdd => {
                let wt = transpose(w, d as usize, k as usize);
                let wname = self.weight_init("fc.weight_t", &[k, d], &wt, false)?;
                let y = self.b.node("MatMul", &[x, &wname], &[]);
                Ok(self.b.node("Add", &[&y, &bname], &[]))
            }
        }
    }

    fn iresnet(
        &mut self,
        arch: &IResNetCfg,
        input_size: i64,
    ) -> Result<(String, i64), ExportError> {
        let (x, mut c) = self.conv_bn(INPUT_NAME, "conv1", "bn1", 1, 1, 3, false)?;
        let mut x = self.prelu(&x, "prelu")?;
        let mut hw = input_size;
        for (s, &blocks) in arch.blocks.iter().enumerate() {
            for b in 0..blocks {
                let p = format!("layer{}.{b}", s + 1);
                let stride = if b == 0 { 2 } else { 1 };
                let out = self.batch_norm(&x, &format!("{p}.bn1"))?;
                let (out, out_c) = self.conv_bn(
                    &out,
                    &format!("{p}.conv1"),
                    &format!("{p}.bn2"),
                    1,
                    1,
                    c,
                    true,
                )?;
                let out = self.prelu(&out, &format!("{p}.prelu"))?;
                let (out, _) = self.conv_bn(
                    &out,
                    &format!("{p}.conv2"),
                    &format!("{p}.bn3"),
                    stride,
                    1,
                    out_c,
                    true,
                )?;
                let identity = if self
                    .w
                    .tensors
                    .contains_key(&format!("{p}.downsample.0.weight"))
                {
                    self.conv_bn(
                        &x,
                        &format!("{p}.downsample.0"),
                        &format!("{p}.downsample.1"),
                        stride,
                        0,
                        c,
                        true,
                    )?
                    .0
                } else {
                    x.clone()
                };
                x = self.b.node("Add", &[&out, &identity], &[]);
                c = out_c;
                hw = (hw + 2 - 3) / stride + 1;
            }
        }
        // bn2 (per channel of the C x hw x hw map) and `features` (BN1d) fold into fc.
        let (s2, t2) = self.w.bn("bn2")?;
        let (fdims, fw) = self.w.get("fc.weight")?.clone();
        let fb = self.w.get("fc.bias")?.1.clone();
        let (d, k) = (fdims[0], fdims[1]);
        let area = (hw * hw) as usize;
        if k != c * hw * hw {
            return Err(ExportError::Weights(format!(
                "fc.weight has {k} inputs, the feature map has {c}x{hw}x{hw}"
            )));
        }
        let (sf, tf) = self.w.bn("features")?;
        let mut w = vec![0.0f32; fw.len()];
        let mut b = vec![0.0f32; d as usize];
        for row in 0..d as usize {
            let mut acc = fb[row] as f64;
            for col in 0..k as usize {
                let ch = col / area;
                let v = fw[row * k as usize + col];
                acc += (v * t2[ch]) as f64;
                w[row * k as usize + col] = v * s2[ch] * sf[row];
            }
            b[row] = acc as f32 * sf[row] + tf[row];
        }
        let flat = self.flatten(&x);
        Ok((self.fc(&flat, &w, &b, d, k)?, d))
    }

    fn mobilefacenet(
        &mut self,
        arch: &MobileFaceNetCfg,
        _input_size: i64,
    ) -> Result<(String, i64), ExportError> {
        let (x, c) = self.conv_block(INPUT_NAME, "layers.0", 2, 1, 3, false)?;
        let (mut x, mut c) = if arch.blocks[0] == 1 {
            self.conv_block(&x, "layers.1", 1, 1, c, true)?
        } else {
            self.residual(&x, "layers.1", c, arch.blocks[0])?
        };
        let mut idx = 2;
        for blocks in &arch.blocks[1..] {
            (x, c) = self.depthwise(&x, &format!("layers.{idx}"), c, 2, false)?;
            (x, c) = self.residual(&x, &format!("layers.{}", idx + 1), c, *blocks)?;
            idx += 2;
        }
        let (x, c) = self.conv_block(&x, "conv_sep", 1, 0, c, true)?;
        let (x, c) = self.conv_bn(
            &x,
            "features.layers.0.layers.0",
            "features.layers.0.layers.1",
            1,
            0,
            c,
            true,
        )?;
        let (ldims, lw) = self.w.get("features.layers.2.weight")?.clone();
        let (d, k) = (ldims[0], ldims[1]);
        if k != c {
            return Err(ExportError::Weights(format!(
                "features.layers.2.weight has {k} inputs, the GDC conv gives {c}"
            )));
        }
        let (sf, tf) = self.w.bn("features.layers.3")?;
        let w: Vec<f32> = lw
            .iter()
            .enumerate()
            .map(|(i, v)| v * sf[i / k as usize])
            .collect();
        let flat = self.flatten(&x);
        Ok((self.fc(&flat, &w, &tf, d, k)?, d))
    }

    /// MobileFaceNet Conv -> BN -> PReLU under `p.layers.{0,1,2}`.
    fn conv_block(
        &mut self,
        x: &str,
        p: &str,
        stride: i64,
        pad: i64,
        in_c: i64,
        quantisable: bool,
    ) -> Result<(String, i64), ExportError> {
        let (y, c) = self.conv_bn(
            x,
            &format!("{p}.layers.0"),
            &format!("{p}.layers.1"),
            stride,
            pad,
            in_c,
            quantisable,
        )?;
        Ok((self.prelu(&y, &format!("{p}.layers.2"))?, c))
    }

    fn depthwise(
        &mut self,
        x: &str,
        p: &str,
        in_c: i64,
        stride: i64,
        residual: bool,
    ) -> Result<(String, i64), ExportError> {
        let (y, e) = self.conv_block(x, &format!("{p}.layers.0"), 1, 0, in_c, true)?;
        let (y, e) = self.conv_block(&y, &format!("{p}.layers.1"), stride, 1, e, true)?;
        let (y, out_c) = self.conv_bn(
            &y,
            &format!("{p}.layers.2.layers.0"),
            &format!("{p}.layers.2.layers.1"),
            1,
            0,
            e,
            true,
        )?;
        if residual {
            Ok((self.b.node("Add", &[&y, x], &[]), out_c))
        } else {
            Ok((y, out_c))
        }
    }

    fn residual(
        &mut self,
        x: &str,
        p: &str,
        c: i64,
        blocks: usize,
    ) -> Result<(String, i64), ExportError> {
        let mut x = x.to_string();
        for i in 0..blocks {
            x = self
                .depthwise(&x, &format!("{p}.layers.{i}"), c, 1, true)?
                .0;
        }
        Ok((x, c))
    }
}

/// Emits the inference graph of `arch` with weights `w` (and the optional mask head).
pub fn emit(
    arch: &Arch,
    input_size: i64,
    w: &Weights,
    mask_head: Option<&MaskHead>,
    opts: &EmitOptions,
) -> Result<Emitted, ExportError> {
    let mut e = Emitter {
        b: GraphBuilder::default(),
        w,
        opts,
        probes: Vec::new(),
    };
    let (x, d) = match arch {
        Arch::IResNet(a) => e.iresnet(a, input_size)?,
        Arch::MobileFaceNet(a) => e.mobilefacenet(a, input_size)?,
    };
    e.b.node_named("Identity", &[&x], &[], EMBEDDING_NAME);
    let mut outputs = vec![(EMBEDDING_NAME, d)];
    if let Some(head) = mask_head {
        let h = head.hidden() as i64;
        if head.fc1_weight.len() != (h * d) as usize || head.fc2_weight.len() != h as usize {
            return Err(ExportError::Weights(format!(
                "mask head shapes do not fit: fc1 {} values for {h}x{d}, fc2 {} values for 1x{h}",
                head.fc1_weight.len(),
                head.fc2_weight.len()
            )));
        }
        let norm = e.b.node(
            "ReduceL2",
            &[EMBEDDING_NAME],
            &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))],
        );
        let eps = e.b.f32s("mask_head.eps", &[1], &[1e-12]);
        let denom = e.b.node("Max", &[&norm, &eps], &[]);
        let unit = e.b.node("Div", &[EMBEDDING_NAME, &denom], &[]);
        let w1 = e.b.f32s("mask_head.fc1.weight", &[h, d], &head.fc1_weight);
        let b1 = e.b.f32s("mask_head.fc1.bias", &[h], &head.fc1_bias);
        let z1 =
            e.b.node("Gemm", &[&unit, &w1, &b1], &[("transB", Attr::Int(1))]);
        let a1 = e.b.node("Relu", &[&z1], &[]);
        let w2 = e.b.f32s("mask_head.fc2.weight", &[1, h], &head.fc2_weight);
        let b2 = e.b.f32s("mask_head.fc2.bias", &[1], &[head.fc2_bias]);
        let logit =
            e.b.node("Gemm", &[&a1, &w2, &b2], &[("transB", Attr::Int(1))]);
        e.b.node_named("Sigmoid", &[&logit], &[], MASK_PROB_NAME);
        outputs.push((MASK_PROB_NAME, 1));
    }
    let probes = e.probes.clone();
    let extra = if opts.expose_probes {
        probes.clone()
    } else {
        Vec::new()
    };
    let model = e.b.finish(
        (INPUT_NAME, [3, input_size, input_size]),
        &outputs,
        &extra,
        "maskgate face embedding model (trainer export)",
    );
    Ok(Emitted { model, probes })
}

/// Symmetric per-output-channel int8: scale = max|w| / 127 per channel.
fn quantise_per_channel(dims: &[i64], data: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let out_c = dims[0] as usize;
    let per = data.len() / out_c.max(1);
    let mut scales = Vec::with_capacity(out_c);
    let mut q = Vec::with_capacity(data.len());
    for ch in data.chunks(per.max(1)) {
        let max = ch.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = if max > 0.0 { max / 127.0 } else { 1.0 };
        scales.push(s);
        q.extend(
            ch.iter()
                .map(|v| (v / s).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scales)
}

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}
