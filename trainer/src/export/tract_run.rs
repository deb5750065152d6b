//! Running an exported file with tract, the edge runtime: load once, run many.

use super::graph::INPUT_NAME;
use super::ExportError;
use tract_onnx::prelude::*;

/// An ONNX model optimised by tract for one batch size.
#[derive(Debug)]
pub struct TractModel {
    plan: Arc<TypedRunnableModel>,
    batch: usize,
    input_size: usize,
}

impl TractModel {
    /// Parses `bytes` and optimises for `batch` images of `input_size`^2.
    pub fn load(bytes: &[u8], batch: usize, input_size: usize) -> Result<Self, ExportError> {
        let err = |e: TractError| ExportError::Tract(format!("{e:#}"));
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(err)?
            .with_input_fact(0, f32::fact([batch, 3, input_size, input_size]).into())
            .map_err(err)?;
        let plan = model
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        Ok(Self {
            plan,
            batch,
            input_size,
        })
    }

    /// Runs one batch (`batch*3*S*S` values, NCHW) and returns every output flattened.
    pub fn run(&self, input: &[f32]) -> Result<Vec<Vec<f32>>, ExportError> {
        let s = self.input_size;
        let t = Tensor::from_shape(&[self.batch, 3, s, s], input)
            .map_err(|e| ExportError::Tract(format!("input {INPUT_NAME}: {e:#}")))?;
        let out = self
            .plan
            .run(tvec!(t.into()))
            .map_err(|e| ExportError::Tract(format!("{e:#}")))?;
        out.iter()
            .map(|o| {
                o.try_as_plain_ram()
                    .and_then(|v| v.as_slice::<f32>().map(|s| s.to_vec()))
                    .map_err(|e| ExportError::Tract(format!("{e:#}")))
            })
            .collect()
    }

    pub fn batch(&self) -> usize {
        self.batch
    }
}
