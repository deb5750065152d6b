//! Threshold calibration with a statistical guarantee: for each target FAR, the lowest cosine
//! threshold whose one-sided 95% Clopper-Pearson upper bound on the false-accept rate stays below
//! the target. "FAR 1e-4" then means "we measured enough impostors to be 95% sure it is below
//! 1e-4", not just "the point estimate happened to be small".

use crate::eval::protocol::threshold_above;
use serde::Serialize;

/// Confidence of the one-sided upper bound.
pub const CONFIDENCE: f64 = 0.95;

/// Errors of calibration inputs.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CalibrateError {
    #[error("no {0} scores to calibrate on")]
    Empty(&'static str),
    #[error("{kind} score {index} is not finite")]
    NotFinite { kind: &'static str, index: usize },
    #[error("target FAR {0} must be in (0, 1)")]
    Target(f64),
}

/// One calibrated threshold (accept when cosine >= `threshold`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibrated {
    pub target_far: f64,
    pub threshold: f32,
    /// False accepts at the threshold, of `impostors`.
    pub false_accepts: u64,
    pub impostors: u64,
    pub measured_far: f64,
    /// One-sided 95% Clopper-Pearson upper bound on the FAR at the threshold.
    pub far_upper_bound: f64,
    pub measured_tar: f64,
    pub genuines: u64,
    /// False when even zero false accepts cannot prove the target with this many impostors;
    /// the threshold is then the strictest possible (above every impostor) and NOT a guarantee.
    pub verified: bool,
}

/// Impostor pairs needed so that zero false accepts proves `target` at 95%: n with
/// 1 - 0.05^(1/n) < target (about 3/target).
pub fn impostors_needed(target: f64) -> u64 {
    ((1.0 - CONFIDENCE).ln() / (1.0 - target).ln()).floor() as u64 + 1
}

/// Calibrates one condition for each target FAR.
pub fn calibrate(
    genuine: &[f32],
    impostor: &[f32],
    targets: &[f64],
) -> Result<Vec<Calibrated>, CalibrateError> {
    for (kind, v) in [("genuine", genuine), ("impostor", impostor)] {
        if v.is_empty() {
            return Err(CalibrateError::Empty(kind));
        }
        if let Some(index) = v.iter().position(|s| !s.is_finite()) {
            return Err(CalibrateError::NotFinite { kind, index });
        }
    }
    let mut imp = impostor.to_vec();
    imp.sort_by(|a, b| b.total_cmp(a));
    let n = imp.len() as u64;
    targets
        .iter()
        .map(|&target| {
            if !(target > 0.0 && target < 1.0) {
                return Err(CalibrateError::Target(target));
            }
            // The bound grows with k: find the largest k whose bound is below the target.
            let mut k = 0u64;
            let verified = clopper_pearson_upper(0, n, CONFIDENCE) < target;
            if verified {
                let (mut lo, mut hi) = (0u64, n); // bound(lo) < target <= bound(hi) (bound(n) = 1)
                while hi - lo > 1 {
                    let mid = (lo + hi) / 2;
                    if clopper_pearson_upper(mid, n, CONFIDENCE) < target {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                k = lo;
            }
            let threshold = threshold_above(&imp, k as usize).max(-1.0);
            let false_accepts = imp.iter().filter(|&&s| s >= threshold).count() as u64;
            let accepted = genuine.iter().filter(|&&s| s >= threshold).count();
            Ok(Calibrated {
                target_far: target,
                threshold,
                false_accepts,
                impostors: n,
                measured_far: false_accepts as f64 / n as f64,
                far_upper_bound: clopper_pearson_upper(false_accepts, n, CONFIDENCE),
                measured_tar: accepted as f64 / genuine.len() as f64,
                genuines: genuine.len() as u64,
                verified,
            })
        })
        .collect()
}

/// One-sided Clopper-Pearson upper bound on a rate with `k` events in `n` trials:
/// the `confidence` quantile of Beta(k+1, n-k); 1 when k = n.
pub fn clopper_pearson_upper(k: u64, n: u64, confidence: f64) -> f64 {
    if n == 0 || k >= n {
        return 1.0;
    }
    if k == 0 {
        return 1.0 - (1.0 - confidence).powf(1.0 / n as f64);
    }
    beta_quantile(confidence, (k + 1) as f64, (n - k) as f64)
}

/// x with I_x(a, b) = p, by bisection (I is increasing in x).
pub fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if regularized_incomplete_beta(mid, a, b) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-15 {
            break;
        }
    }
    hi
}

/// I_x(a, b) by the continued fraction (modified Lentz), using the symmetry
/// I_x(a,b) = 1 - I_{1-x}(b,a) where the fraction converges slowly.
pub fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        for num in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + num * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + num / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        // The last factor applied is d*c of the odd step; converged when it is ~1.
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Gamma(x) for x > 0 (Lanczos, g = 7, 9 terms; ~1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut f = 1.0f64;
        for n in 1..20 {
            f *= n as f64;
            assert!((ln_gamma(n as f64 + 1.0) - f.ln()).abs() < 1e-10, "n={n}");
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn incomplete_beta_matches_binomial_sums() {
        // For integer a, b: I_x(a, n-a+1) = P(Binomial(n, x) >= a).
        let n = 30u64;
        for a in [1u64, 3, 10, 29] {
            for x in [0.01, 0.2, 0.5, 0.9] {
                let mut tail = 0.0;
                for j in a..=n {
                    let ln_c = ln_gamma(n as f64 + 1.0)
                        - ln_gamma(j as f64 + 1.0)
                        - ln_gamma((n - j) as f64 + 1.0);
                    tail +=
                        (ln_c + j as f64 * f64::ln(x) + (n - j) as f64 * f64::ln(1.0 - x)).exp();
                }
                let got = regularized_incomplete_beta(x, a as f64, (n - a + 1) as f64);
                assert!((got - tail).abs() < 1e-10, "a={a} x={x}: {got} vs {tail}");
            }
        }
    }

    #[test]
    fn clopper_pearson_known_values() {
        // Zero events: the "rule of three" closed form.
        assert!(
            (clopper_pearson_upper(0, 3000, 0.95) - (1.0 - 0.05f64.powf(1.0 / 3000.0))).abs()
                < 1e-15
        );
        // k=1, n=10: one-sided 95% upper bound, the root of P(X <= 1 | p) = 0.05.
        let u = clopper_pearson_upper(1, 10, 0.95);
        let p_le1 = (1.0 - u).powi(10) + 10.0 * u * (1.0 - u).powi(9);
        assert!((p_le1 - 0.05).abs() < 1e-9, "u={u}");
        assert!((u - 0.3942).abs() < 1e-3);
        assert_eq!(clopper_pearson_upper(5, 5, 0.95), 1.0);
    }

    #[test]
    fn impostors_needed_is_about_three_over_far() {
        let n = impostors_needed(1e-3);
        assert!((2990..=3000).contains(&n), "{n}");
        assert!(clopper_pearson_upper(0, n, 0.95) < 1e-3);
        assert!(clopper_pearson_upper(0, n - 1, 0.95) >= 1e-3);
    }

    /// Constructed distributions: 200k impostors uniform on [-0.5, 0.5], genuine uniform on
    /// [0.2, 1.0]. The chosen threshold must keep the upper bound below the target, and one
    /// impostor more would break it (lowest such threshold).
    #[test]
    fn calibration_hits_the_requested_far_bound() {
        let n = 200_000usize;
        let impostor: Vec<f32> = (0..n).map(|i| -0.5 + (i as f32 + 0.5) / n as f32).collect();
        let genuine: Vec<f32> = (0..1000).map(|i| 0.2 + 0.8 * i as f32 / 1000.0).collect();
        let out = calibrate(&genuine, &impostor, &[1e-3, 1e-4]).unwrap();
        for c in &out {
            assert!(c.verified);
            assert!(c.far_upper_bound < c.target_far, "{c:?}");
            assert!(clopper_pearson_upper(c.false_accepts + 1, n as u64, 0.95) >= c.target_far);
            assert!(c.measured_far < c.target_far);
            // Uniform impostors: the threshold sits near the 1-FAR quantile, a little above.
            let q = 0.5 - c.target_far as f32;
            assert!(
                c.threshold > q && c.threshold < q + 3.0 * c.target_far as f32,
                "{c:?}"
            );
            // Recount independently.
            let fa = impostor.iter().filter(|&&s| s >= c.threshold).count() as u64;
            assert_eq!(fa, c.false_accepts);
        }
        assert!(out[1].threshold > out[0].threshold);
        assert!(out[0].measured_tar > out[1].measured_tar - 1e-12);
    }

    #[test]
    fn too_few_impostors_are_flagged_unverifiable() {
        let impostor: Vec<f32> = (0..500).map(|i| i as f32 / 1000.0).collect();
        let out = calibrate(&[0.9, 0.95], &impostor, &[1e-2, 1e-3]).unwrap();
        assert!(out[0].verified);
        assert!(!out[1].verified);
        assert_eq!(out[1].false_accepts, 0);
        assert!(out[1].threshold > 0.499);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(
            calibrate(&[], &[0.1], &[1e-3]),
            Err(CalibrateError::Empty("genuine"))
        );
        assert!(matches!(
            calibrate(&[0.5], &[f32::NAN], &[1e-3]),
            Err(CalibrateError::NotFinite {
                kind: "impostor",
                index: 0
            })
        ));
        assert_eq!(
            calibrate(&[0.5], &[0.1], &[0.0]),
            Err(CalibrateError::Target(0.0))
        );
    }
}
