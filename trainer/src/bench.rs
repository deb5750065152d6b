//! Speed of one training step (forward, ArcFace loss, backward, SGD) per backbone on random
//! data, so the CPU cost of a preset is measured rather than guessed. Timing lives here, never in
//! tests.

use crate::loss::{ArcFace, ArcFaceCfg, LossError, MarginHead};
use crate::model::{build_backbone, BackboneCfg, ModelError};
use std::time::Instant;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};

/// Timing of `steps` training steps of one backbone.
#[derive(Debug, Clone)]
pub struct StepTiming {
    pub name: String,
    pub batch: i64,
    /// Mean wall-clock milliseconds per step, after one warm-up step.
    pub ms_per_step: f64,
    /// Loss after the last step (finite when training works).
    pub last_loss: f64,
}

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Loss(#[from] LossError),
    #[error("bench needs batch >= 2 and steps >= 1, got batch {batch}, steps {steps}")]
    BadArgs { batch: i64, steps: usize },
    #[error("optimizer: {0}")]
    Optimizer(#[from] tch::TchError),
}

/// Times `steps` SGD steps of backbone `name` with an ArcFace head over `classes` classes.
pub fn time_train_steps(
    name: &str,
    cfg: &BackboneCfg,
    batch: i64,
    steps: usize,
    classes: i64,
    device: Device,
) -> Result<StepTiming, BenchError> {
    if batch < 2 || steps < 1 {
        return Err(BenchError::BadArgs { batch, steps });
    }
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let net = build_backbone(name, &(vs.root() / "backbone"), cfg)?;
    let mut head = ArcFace::new(
        &(vs.root() / "head"),
        &ArcFaceCfg::default(),
        classes,
        cfg.embedding_dim,
    )?;
    let mut opt = nn::Sgd {
        momentum: 0.9,
        wd: 5e-4,
        ..Default::default()
    }
    .build(&vs, 0.1)?;
    let x = Tensor::randn(
        [batch, 3, cfg.input_size, cfg.input_size],
        (Kind::Float, device),
    );
    let y = Tensor::randint(classes, [batch], (Kind::Int64, device));
    let mut step = || -> Result<f64, BenchError> {
        let loss = head.forward(&net.forward_t(&x, true).embedding, &y)?.loss;
        opt.backward_step(&loss);
        Ok(loss.double_value(&[]))
    };
    step()?;
    let start = Instant::now();
    let mut last_loss = f64::NAN;
    for _ in 0..steps {
        last_loss = step()?;
    }
    let ms_per_step = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
    Ok(StepTiming {
        name: name.to_string(),
        batch,
        ms_per_step,
        last_loss,
    })
}
