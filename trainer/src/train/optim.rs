//! SGD with momentum and AdamW written over named variables, so every buffer is visible and
//! checkpointed (tch's `nn::Optimizer` hides them, which makes exact resume impossible).
//!
//! Weight decay applies only to tensors with two or more dimensions: conv and linear weights and
//! class centres. BatchNorm/PReLU parameters, biases and the USS scalar b are 1-D and exempt.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// Which update rule, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerCfg {
    Sgd {
        momentum: f64,
        weight_decay: f64,
    },
    Adamw {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

impl Default for OptimizerCfg {
    fn default() -> Self {
        OptimizerCfg::Sgd {
            momentum: 0.9,
            weight_decay: 5e-4,
        }
    }
}

struct Param {
    name: String,
    var: Tensor,
    decay: bool,
    /// SGD: [momentum]; AdamW: [m, v].
    state: Vec<Tensor>,
}

/// The optimiser over a fixed, name-sorted list of trainable variables.
pub struct Optimizer {
    cfg: OptimizerCfg,
    params: Vec<Param>,
    /// Applied steps (AdamW bias correction).
    steps: u64,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("cfg", &self.cfg)
            .field("params", &self.params.len())
            .field("steps", &self.steps)
            .finish()
    }
}

impl Optimizer {
    /// `named`: (unique name, variable) of every trainable tensor.
    pub fn new(cfg: &OptimizerCfg, mut named: Vec<(String, Tensor)>) -> Self {
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = match cfg {
            OptimizerCfg::Sgd { .. } => 1,
            OptimizerCfg::Adamw { .. } => 2,
        };
        let params = named
            .into_iter()
            .map(|(name, var)| Param {
                decay: var.dim() >= 2,
                state: (0..slots).map(|_| var.zeros_like().detach()).collect(),
                name,
                var,
            })
            .collect();
        Self {
            cfg: cfg.clone(),
            params,
            steps: 0,
        }
    }

    /// Names of the decayed and exempt parameters (for logs and tests).
    pub fn decay_groups(&self) -> (Vec<&str>, Vec<&str>) {
        let (d, n): (Vec<_>, Vec<_>) = self.params.iter().partition(|p| p.decay);
        (
            d.iter().map(|p| p.name.as_str()).collect(),
            n.iter().map(|p| p.name.as_str()).collect(),
        )
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.var.zero_grad();
        }
    }

    /// Multiplies every gradient by `factor` (loss-scale removal, accumulation averaging).
    pub fn scale_grads(&mut self, factor: f64) {
        tch::no_grad(|| {
            for p in &self.params {
                let mut g = p.var.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(factor);
                }
            }
        });
    }

    /// Global L2 norm of the gradients (NaN/inf when any gradient is).
    pub fn grad_norm(&self) -> f64 {
        let sq: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.var.grad())
            .filter(|g| g.defined())
            .map(|g| g.to_kind(Kind::Float).square().sum(Kind::Float))
            .collect();
        if sq.is_empty() {
            return 0.0;
        }
        Tensor::stack(&sq, 0)
            .sum(Kind::Float)
            .sqrt()
            .double_value(&[])
    }

    /// Scales gradients so their global norm is at most `max_norm`; returns the norm before.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let norm = self.grad_norm();
        if norm.is_finite() && norm > max_norm {
            self.scale_grads(max_norm / (norm + 1e-6));
        }
        norm
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let t = self.steps as f64;
        tch::no_grad(|| {
            for p in &mut self.params {
                let g = p.var.grad();
                if !g.defined() {
                    continue;
                }
                let mut var = p.var.shallow_clone();
                match self.cfg {
                    OptimizerCfg::Sgd {
                        momentum,
                        weight_decay,
                    } => {
                        let d = if p.decay && weight_decay != 0.0 {
                            &g + &var * weight_decay
                        } else {
                            g.shallow_clone()
                        };
                        let buf = &mut p.state[0];
                        let _ = buf.g_mul_scalar_(momentum).g_add_(&d);
                        let _ = var.g_sub_(&(&*buf * lr));
                    }
                    OptimizerCfg::Adamw {
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                    } => {
                        if p.decay && weight_decay != 0.0 {
                            let _ = var.g_mul_scalar_(1.0 - lr * weight_decay);
                        }
                        let (m, v) = p.state.split_at_mut(1);
                        let _ = m[0].g_mul_scalar_(beta1).g_add_(&(&g * (1.0 - beta1)));
                        let _ = v[0]
                            .g_mul_scalar_(beta2)
                            .g_add_(&(g.square() * (1.0 - beta2)));
                        let m_hat = &m[0] / (1.0 - beta1.powf(t));
                        let v_hat = &v[0] / (1.0 - beta2.powf(t));
                        let _ = var.g_sub_(&(m_hat / (v_hat.sqrt() + eps) * lr));
                    }
                }
            }
        });
    }

    /// Buffers as (name, tensor), for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(
            "optim/steps".to_string(),
            Tensor::from_slice(&[self.steps as i64]),
        )];
        for p in &self.params {
            for (i, s) in p.state.iter().enumerate() {
                out.push((format!("optim/{}/{i}", p.name), s.shallow_clone()));
            }
        }
        out
    }

    /// Restores buffers saved by [`Optimizer::state_tensors`]; names a missing or misshapen one.
    pub fn load_state(&mut self, file: &HashMap<String, Tensor>) -> Result<(), String> {
        let steps = file
            .get("optim/steps")
            .ok_or("missing optim/steps")?
            .int64_value(&[0]);
        self.steps = steps.max(0) as u64;
        for p in &mut self.params {
            for (i, s) in p.state.iter_mut().enumerate() {
                let key = format!("optim/{}/{i}", p.name);
                let src = file.get(&key).ok_or_else(|| format!("missing {key}"))?;
                if src.size() != s.size() {
                    return Err(format!(
                        "{key} has shape {:?}, expected {:?}",
                        src.size(),
                        s.size()
                    ));
                }
                tch::no_grad(|| s.copy_(src));
            }
        }
        Ok(())
    }
}

/// Learning-rate schedule over optimiser steps: linear warm-up then polynomial or step decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleCfg {
    pub lr: f64,
    pub warmup_steps: u64,
    pub decay: Decay,
}

/// The decay after warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decay {
    /// lr * (1 - progress)^power over the steps after warm-up (arcface_torch: power 2).
    Poly { power: f64 },
    /// lr * gamma^(number of milestones passed).
    Step { milestones: Vec<u64>, gamma: f64 },
}

impl Default for ScheduleCfg {
    fn default() -> Self {
        Self {
            lr: 0.1,
            warmup_steps: 0,
            decay: Decay::Poly { power: 2.0 },
        }
    }
}

impl ScheduleCfg {
    /// Learning rate of optimiser step `step` (0-based) of `total`.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match &self.decay {
            Decay::Poly { power } => {
                let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
                let done = (step - self.warmup_steps) as f64 / span;
                self.lr * (1.0 - done).max(0.0).powf(*power)
            }
            Decay::Step { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| step >= m).count();
                self.lr * gamma.powi(passed as i32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = ScheduleCfg {
            lr: 0.1,
            warmup_steps: 10,
            decay: Decay::Poly { power: 2.0 },
        };
        assert!((s.lr_at(0, 110) - 0.01).abs() < 1e-12);
        assert!((s.lr_at(9, 110) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(10, 110) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(60, 110) - 0.025).abs() < 1e-12);
        let st = ScheduleCfg {
            lr: 1.0,
            warmup_steps: 0,
            decay: Decay::Step {
                milestones: vec![5, 8],
                gamma: 0.1,
            },
        };
        assert_eq!(st.lr_at(4, 10), 1.0);
        assert!((st.lr_at(5, 10) - 0.1).abs() < 1e-12);
        assert!((st.lr_at(9, 10) - 0.01).abs() < 1e-12);
    }

    #[test]
    fn sgd_matches_the_pytorch_update_and_skips_decay_on_1d() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[2, 1], nn::Init::Const(1.0));
        let b = vs.root().var("b", &[1], nn::Init::Const(1.0));
        let cfg = OptimizerCfg::Sgd {
            momentum: 0.9,
            weight_decay: 0.1,
        };
        let mut opt = Optimizer::new(
            &cfg,
            vec![
                ("w".into(), w.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
        );
        assert_eq!(opt.decay_groups(), (vec!["w"], vec!["b"]));
        for _ in 0..2 {
            opt.zero_grad();
            (w.sum(Kind::Float) * 2.0 + b.sum(Kind::Float) * 3.0).backward();
            opt.step(0.5);
        }
        // w: g=2, d=2+0.1w. step1: buf=2.1, w=1-1.05=-0.05; step2: d=2-0.005=1.995,
        // buf=0.9*2.1+1.995=3.885, w=-0.05-1.9425=-1.9925.
        assert!((w.double_value(&[0, 0]) + 1.9925).abs() < 1e-6);
        // b: g=3, no decay. buf 3 then 5.7; b = 1 - 1.5 - 2.85 = -3.35.
        assert!((b.double_value(&[0]) + 3.35).abs() < 1e-6);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[1, 1], nn::Init::Const(1.0));
        let cfg = OptimizerCfg::Adamw {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut opt = Optimizer::new(&cfg, vec![("w".into(), w.shallow_clone())]);
        (w.sum(Kind::Float) * 5.0).backward();
        opt.step(0.01);
        assert!((w.double_value(&[0, 0]) - 0.99).abs() < 1e-6);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[2], nn::Init::Const(1.0));
        let mut opt = Optimizer::new(
            &OptimizerCfg::default(),
            vec![("w".into(), w.shallow_clone())],
        );
        (w.select(0, 0) * 3.0 + w.select(0, 1) * 4.0).backward();
        assert!((opt.clip_grad_norm(1.0) - 5.0).abs() < 1e-6);
        assert!((opt.grad_norm() - 1.0).abs() < 1e-4);
    }
}
