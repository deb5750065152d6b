//! Dynamic loss scaling for fp16 training: multiply the loss by `scale` before backward so small
//! gradients survive fp16; if any gradient is inf/NaN skip the step and halve the scale, after
//! `growth_interval` good steps in a row double it.

use serde::{Deserialize, Serialize};

/// Settings and state of the scaler (state is checkpointed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub enabled: bool,
    pub scale: f64,
    pub growth_interval: u64,
    pub good_steps: u64,
    /// Steps skipped for non-finite gradients so far.
    pub skipped: u64,
}

impl LossScaler {
    /// PyTorch GradScaler defaults: 2^16, grow every 2000 good steps.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            scale: 65536.0,
            growth_interval: 2000,
            good_steps: 0,
            skipped: 0,
        }
    }

    /// The factor to multiply the loss by (1 when disabled).
    pub fn loss_factor(&self) -> f64 {
        if self.enabled {
            self.scale
        } else {
            1.0
        }
    }

    /// Records whether this step's gradients were all finite; returns whether to apply the step.
    /// A disabled scaler still refuses a non-finite step (it would poison the weights).
    pub fn update(&mut self, grads_finite: bool) -> bool {
        if !grads_finite {
            self.skipped += 1;
            self.good_steps = 0;
            if self.enabled {
                self.scale = (self.scale * 0.5).max(1.0);
            }
            return false;
        }
        if self.enabled {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale = (self.scale * 2.0).min(f64::from(f32::MAX) / 2.0);
                self.good_steps = 0;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infs_skip_and_halve_good_steps_grow() {
        let mut s = LossScaler::new(true);
        s.growth_interval = 3;
        assert!(!s.update(false));
        assert_eq!(s.scale, 32768.0);
        assert!(!s.update(false));
        assert_eq!(s.scale, 16384.0);
        assert!(s.update(true) && s.update(true));
        assert_eq!(s.scale, 16384.0);
        assert!(s.update(true));
        assert_eq!(s.scale, 32768.0);
        assert_eq!(s.good_steps, 0);
        // An inf resets the run of good steps.
        s.update(true);
        s.update(true);
        s.update(false);
        s.update(true);
        s.update(true);
        assert_eq!(s.scale, 16384.0);
        assert_eq!(s.skipped, 3);
    }

    #[test]
    fn scale_never_drops_below_one_and_disabled_is_identity() {
        let mut s = LossScaler::new(true);
        for _ in 0..40 {
            s.update(false);
        }
        assert_eq!(s.scale, 1.0);
        let mut d = LossScaler::new(false);
        assert_eq!(d.loss_factor(), 1.0);
        assert!(!d.update(false));
        assert!(d.update(true));
        assert_eq!(d.loss_factor(), 1.0);
    }
}
