//! The insightface verification protocol (METHODS §9) on precomputed pair distances.
//!
//! Pure numbers in, numbers out: the embedding side lives in [`super::embed`], so this part is
//! tested against results computed independently from known scores.

use serde::Serialize;

/// Thresholds the protocol scans: 0, 0.01, ..., 3.99 on the squared L2 distance of unit vectors.
pub fn protocol_thresholds() -> Vec<f64> {
    (0..400).map(|i| i as f64 * 0.01).collect()
}

/// Errors of the protocol: inputs that cannot be evaluated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtocolError {
    #[error("{distances} distances but {labels} same/different labels")]
    Length { distances: usize, labels: usize },
    #[error("{pairs} pairs cannot be split into {folds} folds")]
    TooFew { pairs: usize, folds: usize },
    #[error("distance of pair {0} is not finite")]
    NotFinite(usize),
    #[error("need both genuine and impostor pairs for TAR@FAR (got {genuine} and {impostor})")]
    OneClass { genuine: usize, impostor: usize },
}

/// Result of the k-fold accuracy protocol.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoldAccuracy {
    /// Mean held-out accuracy over the folds.
    pub mean: f64,
    /// Population standard deviation (numpy's default) of the fold accuracies.
    pub std: f64,
    /// Held-out accuracy of each fold.
    pub folds: Vec<f64>,
    /// Threshold chosen on the other folds, per fold.
    pub thresholds: Vec<f64>,
}

/// The contiguous fold boundaries of sklearn's `KFold(n_splits=k, shuffle=False)`: the first
/// `n % k` folds are one longer.
pub fn fold_ranges(n: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let (base, extra) = (n / k, n % k);
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

fn accuracy(dist: &[f32], same: &[bool], idx: impl Iterator<Item = usize> + Clone, t: f64) -> f64 {
    let (mut right, mut n) = (0usize, 0usize);
    for i in idx {
        n += 1;
        if ((dist[i] as f64) < t) == same[i] {
            right += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        right as f64 / n as f64
    }
}

/// k-fold accuracy: per fold, the threshold maximising accuracy on the other folds (first of
/// equal maxima, as `np.argmax`) scores the held-out fold; "same" when `d < threshold`.
pub fn kfold_accuracy(
    dist: &[f32],
    same: &[bool],
    folds: usize,
) -> Result<FoldAccuracy, ProtocolError> {
    check(dist, same)?;
    if folds < 2 || dist.len() < folds {
        return Err(ProtocolError::TooFew {
            pairs: dist.len(),
            folds,
        });
    }
    let thresholds = protocol_thresholds();
    let ranges = fold_ranges(dist.len(), folds);
    let (mut accs, mut chosen) = (Vec::new(), Vec::new());
    for test in &ranges {
        let train = (0..dist.len()).filter(|i| !test.contains(i));
        let mut best = (f64::NEG_INFINITY, 0.0);
        for &t in &thresholds {
            let a = accuracy(dist, same, train.clone(), t);
            if a > best.0 {
                best = (a, t);
            }
        }
        chosen.push(best.1);
        accs.push(accuracy(dist, same, test.clone(), best.1));
    }
    let mean = accs.iter().sum::<f64>() / accs.len() as f64;
    let var = accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len() as f64;
    Ok(FoldAccuracy {
        mean,
        std: var.sqrt(),
        folds: accs,
        thresholds: chosen,
    })
}

fn check(dist: &[f32], same: &[bool]) -> Result<(), ProtocolError> {
    if dist.len() != same.len() {
        return Err(ProtocolError::Length {
            distances: dist.len(),
            labels: same.len(),
        });
    }
    if let Some(i) = dist.iter().position(|d| !d.is_finite()) {
        return Err(ProtocolError::NotFinite(i));
    }
    Ok(())
}

/// TAR at a target FAR on similarity scores (higher = more alike), accepting `score >= t`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TarAtFar {
    pub target_far: f64,
    /// The lowest threshold whose measured FAR is <= target.
    pub threshold: f64,
    pub far: f64,
    pub tar: f64,
}

/// For each target, the lowest accepting threshold with measured FAR <= target and its TAR.
/// With `n` impostors a target below `1/n` can only be met with zero false accepts.
pub fn tar_at_far(
    scores: &[f32],
    same: &[bool],
    targets: &[f64],
) -> Result<Vec<TarAtFar>, ProtocolError> {
    check(scores, same)?;
    let mut impostor: Vec<f32> = scores
        .iter()
        .zip(same)
        .filter(|(_, s)| !**s)
        .map(|(d, _)| *d)
        .collect();
    let genuine: Vec<f32> = scores
        .iter()
        .zip(same)
        .filter(|(_, s)| **s)
        .map(|(d, _)| *d)
        .collect();
    if impostor.is_empty() || genuine.is_empty() {
        return Err(ProtocolError::OneClass {
            genuine: genuine.len(),
            impostor: impostor.len(),
        });
    }
    impostor.sort_by(|a, b| b.total_cmp(a));
    Ok(targets
        .iter()
        .map(|&target| {
            let k = max_false_accepts(&impostor, target);
            let threshold = threshold_above(&impostor, k);
            let count = |v: &[f32]| v.iter().filter(|&&s| s >= threshold).count();
            TarAtFar {
                target_far: target,
                threshold: threshold as f64,
                far: count(&impostor) as f64 / impostor.len() as f64,
                tar: count(&genuine) as f64 / genuine.len() as f64,
            }
        })
        .collect())
}

fn max_false_accepts(sorted_desc: &[f32], target: f64) -> usize {
    ((target * sorted_desc.len() as f64).floor() as usize).min(sorted_desc.len())
}

/// The lowest threshold accepting at most `k` of the impostors sorted high to low: just above the
/// (k+1)-th highest score (ties there are rejected too).
pub fn threshold_above(sorted_desc: &[f32], k: usize) -> f32 {
    match sorted_desc.get(k) {
        Some(&s) => next_up(s),
        None => f32::NEG_INFINITY,
    }
}

/// The smallest f32 greater than `x` (finite x).
pub fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let bits = x.to_bits();
    f32::from_bits(if x > 0.0 { bits + 1 } else { bits - 1 })
}

/// One ROC point: FAR and TAR when accepting `score >= threshold`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RocPoint {
    pub threshold: f32,
    pub far: f64,
    pub tar: f64,
}

/// The ROC curve at every distinct score (from strict to lax).
pub fn roc(scores: &[f32], same: &[bool]) -> Result<Vec<RocPoint>, ProtocolError> {
    check(scores, same)?;
    let n_gen = same.iter().filter(|s| **s).count();
    let n_imp = same.len() - n_gen;
    if n_gen == 0 || n_imp == 0 {
        return Err(ProtocolError::OneClass {
            genuine: n_gen,
            impostor: n_imp,
        });
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut out = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        if same[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_tie = order.get(pos + 1).is_none_or(|&j| scores[j] != scores[i]);
        if last_of_tie {
            out.push(RocPoint {
                threshold: scores[i],
                far: fp as f64 / n_imp as f64,
                tar: tp as f64 / n_gen as f64,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_match_sklearn_kfold_sizes() {
        let r = fold_ranges(23, 10);
        let lens: Vec<usize> = r.iter().map(|r| r.len()).collect();
        assert_eq!(lens, vec![3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(r[0].start, 0);
        assert_eq!(r[9].end, 23);
    }

    /// Independent reference: a brute-force re-statement of the protocol with integer
    /// thresholds (t = i/100) and explicit train/test masks.
    fn reference(dist: &[f32], same: &[bool]) -> (f64, f64) {
        let n = dist.len();
        let mut accs = vec![];
        for f in 0..10 {
            let (lo, hi) = (f * n / 10, (f + 1) * n / 10); // n divisible by 10 in the test
            let acc_at = |i_t: usize, test: bool| {
                let t = i_t as f64 * 0.01; // as np.arange(0, 4, 0.01)
                let mut c = 0;
                let mut m = 0;
                for j in 0..n {
                    if (lo..hi).contains(&j) == test {
                        m += 1;
                        c += usize::from(((dist[j] as f64) < t) == same[j]);
                    }
                }
                c as f64 / m as f64
            };
            let mut best_t = 0;
            for i_t in 0..400 {
                if acc_at(i_t, false) > acc_at(best_t, false) {
                    best_t = i_t;
                }
            }
            accs.push(acc_at(best_t, true));
        }
        let mean = accs.iter().sum::<f64>() / 10.0;
        let std = (accs.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / 10.0).sqrt();
        (mean, std)
    }

    #[test]
    fn tenfold_reproduces_independent_computation() {
        // Known scores: genuine distances around 0.8, impostors around 1.6, overlapping,
        // generated by a fixed LCG so the expected figure is not hand-tuned.
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        let n = 600;
        let mut dist = vec![];
        let mut same = vec![];
        for i in 0..n {
            let s = (i / 3) % 2 == 0;
            let centre = if s { 0.8 } else { 1.6 };
            dist.push((centre + (next() - 0.5) * 1.4) as f32);
            same.push(s);
        }
        let got = kfold_accuracy(&dist, &same, 10).unwrap();
        let (mean, std) = reference(&dist, &same);
        assert!((got.mean - mean).abs() < 1e-12, "{} vs {mean}", got.mean);
        assert!((got.std - std).abs() < 1e-12);
        assert!(
            got.mean > 0.6 && got.mean < 1.0,
            "overlap must make it imperfect"
        );
        assert_eq!(got.folds.len(), 10);
    }

    #[test]
    fn separable_scores_give_perfect_accuracy_and_a_threshold_between() {
        // Every fold holds one genuine (0.1) and one impostor (1.9) pair.
        let dist: Vec<f32> = (0..20)
            .map(|i| if i % 2 == 0 { 0.1 } else { 1.9 })
            .collect();
        let same: Vec<bool> = (0..20).map(|i| i % 2 == 0).collect();
        let a = kfold_accuracy(&dist, &same, 10).unwrap();
        assert_eq!(a.mean, 1.0);
        assert_eq!(a.std, 0.0);
        // np.argmax: the first (smallest) threshold that separates them.
        assert!(a.thresholds.iter().all(|&t| (t - 0.11).abs() < 1e-9));
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(matches!(
            kfold_accuracy(&[0.1, 0.2], &[true], 10),
            Err(ProtocolError::Length { .. })
        ));
        assert!(matches!(
            kfold_accuracy(&[0.1; 5], &[true; 5], 10),
            Err(ProtocolError::TooFew { .. })
        ));
        assert!(matches!(
            kfold_accuracy(&[f32::NAN; 20], &[true; 20], 10),
            Err(ProtocolError::NotFinite(0))
        ));
        assert!(tar_at_far(&[0.5; 4], &[true; 4], &[1e-3]).is_err());
    }

    #[test]
    fn tar_at_far_counts_at_most_target_impostors() {
        // 1000 impostors with scores i/1000, 100 genuine at 0.9985..
        let mut scores: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let mut same = vec![false; 1000];
        for i in 0..100 {
            scores.push(0.9955 + i as f32 * 1e-5);
            same.push(true);
        }
        let r = tar_at_far(&scores, &same, &[1e-3, 5e-3]).unwrap();
        assert_eq!(r[0].far, 0.001); // one impostor (0.999) accepted
        assert!(r[0].threshold > 0.998 && r[0].threshold <= 0.999);
        assert_eq!(r[0].tar, 0.0);
        assert_eq!(r[1].far, 0.005);
        assert_eq!(r[1].tar, 1.0);
    }

    #[test]
    fn roc_ends_at_full_acceptance() {
        let r = roc(&[0.9, 0.8, 0.8, 0.1], &[true, false, true, false]).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((r[1].far, r[1].tar), (0.5, 1.0));
        assert_eq!((r[2].far, r[2].tar), (1.0, 1.0));
    }
}
