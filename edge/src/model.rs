//! Loading ONNX files into optimised tract plans, once, with concrete shapes (batch 1).
//!
//! A plan is immutable and cheap to run many times; building it (parsing, typing, optimising)
//! is the slow part and happens at startup, with its duration logged. A graph that tract cannot
//! run (for example an operator it does not implement) fails here, with tract's message naming
//! the node and operator, instead of failing on the first frame.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tract_onnx::prelude::*;

/// An optimised, runnable plan with named outputs in a fixed order.
pub type Plan = Arc<TypedRunnableModel>;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{what} model {path}: {message}")]
    Load {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("{what} model: inference failed: {message}")]
    Run { what: &'static str, message: String },
    #[error("{what} model: output {name:?} has {got} values, expected {expected}")]
    OutputSize {
        what: &'static str,
        name: String,
        got: usize,
        expected: usize,
    },
}

/// Flatten tract's error chain into one line (it names the failing node and operator).
pub(crate) fn chain(e: &TractError) -> String {
    format!("{e:#}")
}

/// Build a plan from ONNX bytes: `input` gets the concrete `shape`, `outputs` are selected by
/// name (in that order). `what` ("detector", "recogniser") and `path` only label errors.
pub fn load_plan(
    what: &'static str,
    path: &Path,
    bytes: &[u8],
    input: &str,
    shape: &[usize],
    outputs: &[&str],
) -> Result<Plan, ModelError> {
    let started = Instant::now();
    let err = |message: String| ModelError::Load {
        what,
        path: path.display().to_string(),
        message,
    };
    let build = || -> TractResult<Plan> {
        let mut model = tract_onnx::onnx()
            .with_ignore_output_shapes(true)
            .model_for_read(&mut std::io::Cursor::new(bytes))?;
        model.set_input_names([input])?;
        model.set_input_fact(0, f32::fact(shape.to_vec()).into())?;
        model.select_outputs_by_name(outputs.iter().copied())?;
        model.into_optimized()?.into_runnable()
    };
    let plan = build().map_err(|e| err(chain(&e)))?;
    tracing::info!(
        model = what,
        path = %path.display(),
        ms = started.elapsed().as_millis() as u64,
        "loaded and optimised"
    );
    Ok(plan)
}

/// Read a model file with an error naming it.
pub fn read_model(what: &'static str, path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|e| ModelError::Load {
        what,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Run a plan on one f32 input and return each output flattened.
pub fn run_plan(
    what: &'static str,
    plan: &Plan,
    shape: &[usize],
    input: &[f32],
) -> Result<Vec<Vec<f32>>, ModelError> {
    let run = || -> TractResult<Vec<Vec<f32>>> {
        let tensor = Tensor::from_shape(shape, input)?;
        let outputs = plan.run(tvec!(tensor.into_tvalue()))?;
        outputs
            .iter()
            .map(|t| {
                let t = t.cast_to::<f32>()?;
                Ok(t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
            })
            .collect()
    };
    run().map_err(|e| ModelError::Run {
        what,
        message: chain(&e),
    })
}
