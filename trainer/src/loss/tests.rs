//! Head, USS and KD tests: every loss against closed forms computed here in plain f64, plus the
//! invariants of METHODS sections 2, 3 and 5.

use super::*;
use tch::{nn::OptimizerConfig, Device, Kind, Tensor};

const S: f64 = 64.0;
const EPS: f64 = 1e-3;

/// Non-unit centres (normalised at use) and embeddings of varying norm. Sample 2 sits almost
/// opposite its class centre, so theta + 0.5 > pi there (the ArcFace fallback).
const W: [[f64; 2]; 3] = [[2.0, 0.0], [0.0, 0.5], [-1.0, 0.2]];
const E: [[f64; 2]; 4] = [[2.86, 0.887], [-0.5, 2.0], [-3.0, 0.4], [-1.5, -1.0]];
const Y: [i64; 4] = [0, 1, 0, 2];

fn tensor2(rows: &[[f64; 2]]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    Tensor::from_slice(&flat).reshape([rows.len() as i64, 2])
}

fn labels(y: &[i64]) -> Tensor {
    Tensor::from_slice(y)
}

fn set(vs: &nn::VarStore, key: &str, value: &Tensor) {
    let var = vs
        .variables()
        .remove(key)
        .unwrap_or_else(|| panic!("no var {key}"));
    tch::no_grad(|| var.shallow_clone().copy_(value));
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (norm(a) * norm(b))
}

/// Clamped cosines of every sample to every centre.
fn cos_table(w: &[[f64; 2]], e: &[[f64; 2]]) -> Vec<Vec<f64>> {
    e.iter()
        .map(|ei| {
            w.iter()
                .map(|wj| cosine(ei, wj).clamp(-1.0 + EPS, 1.0 - EPS))
                .collect()
        })
        .collect()
}

/// Mean softmax cross-entropy with logits s*cos_j and s*target(i, cos_y) on the label.
fn expected_ce(cos: &[Vec<f64>], y: &[i64], s: f64, target: impl Fn(usize, f64) -> f64) -> f64 {
    let mut total = 0.0;
    for (i, row) in cos.iter().enumerate() {
        let yi = y[i] as usize;
        let logits: Vec<f64> = row
            .iter()
            .enumerate()
            .map(|(j, &c)| if j == yi { s * target(i, c) } else { s * c })
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        total += lse - logits[yi];
    }
    total / cos.len() as f64
}

fn arc_target(c: f64, m: f64) -> f64 {
    let theta = c.acos();
    if theta + m <= std::f64::consts::PI {
        (theta + m).cos()
    } else {
        c - m * m.sin()
    }
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

/// A head built by `build` in a fresh store with centres `W`.
fn head_with_centres(cfg: &HeadCfg) -> (nn::VarStore, Box<dyn MarginHead>) {
    let vs = nn::VarStore::new(Device::Cpu);
    let head = build_head(cfg, &vs.root(), 3, 2).unwrap();
    set(&vs, "weight", &tensor2(&W));
    (vs, head)
}

fn loss_of(cfg: &HeadCfg, e: &[[f64; 2]], y: &[i64]) -> (f64, Tensor) {
    let (_vs, mut head) = head_with_centres(cfg);
    let out = head.forward(&tensor2(e), &labels(y)).unwrap();
    (out.loss.double_value(&[]), out.logits)
}

#[test]
fn fixture_exercises_the_arcface_fallback() {
    let c = cosine(&E[2], &W[0]);
    assert!(
        c.acos() + 0.5 > std::f64::consts::PI,
        "sample 2 must have theta + m > pi (cos {c})"
    );
}

#[test]
fn arcface_matches_closed_form_in_both_gradient_modes() {
    let cos = cos_table(&W, &E);
    let expected = expected_ce(&cos, &Y, S, |_, c| arc_target(c, 0.5));
    for gradient in [ArcGradient::Exact, ArcGradient::StraightThrough] {
        let cfg = HeadCfg::Arcface(ArcFaceCfg {
            gradient,
            ..Default::default()
        });
        let (got, logits) = loss_of(&cfg, &E, &Y);
        assert!(
            close(got, expected, 1e-4),
            "{gradient:?}: {got} vs {expected}"
        );
        // The fallback sample's target logit is s*(cos - m sin m).
        let want = S * (cos[2][0] - 0.5 * 0.5f64.sin());
        assert!(close(logits.double_value(&[2, 0]), want, 1e-4));
    }
}

#[test]
fn cosface_matches_closed_form() {
    let cos = cos_table(&W, &E);
    let expected = expected_ce(&cos, &Y, S, |_, c| c - 0.35);
    let (got, _) = loss_of(
        &HeadCfg::Cosface(CosFaceCfg {
            m: 0.35,
            ..Default::default()
        }),
        &E,
        &Y,
    );
    assert!(close(got, expected, 1e-4), "{got} vs {expected}");
}

#[test]
fn adaface_matches_closed_form_with_ema_updated_before_use() {
    let cfg = AdaFaceCfg::default();
    let norms: Vec<f64> = E.iter().map(|e| norm(e).clamp(0.001, 100.0)).collect();
    let n = norms.len() as f64;
    let mean = norms.iter().sum::<f64>() / n;
    let std = (norms.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let mu = 0.99 * 20.0 + 0.01 * mean;
    let sigma = 0.99 * 100.0 + 0.01 * std;
    let z: Vec<f64> = norms
        .iter()
        .map(|x| (cfg.h * (x - mu) / (sigma + 1e-3)).clamp(-1.0, 1.0))
        .collect();
    let cos = cos_table(&W, &E);
    let m = cfg.m;
    let expected = expected_ce(&cos, &Y, S, |i, c| {
        let theta = (c.acos() - m * z[i]).clamp(EPS, std::f64::consts::PI - EPS);
        theta.cos() - (m * z[i] + m)
    });
    let vs = nn::VarStore::new(Device::Cpu);
    let mut head = AdaFace::new(&vs.root(), &cfg, 3, 2).unwrap();
    set(&vs, "weight", &tensor2(&W));
    let got = head
        .forward(&tensor2(&E), &labels(&Y))
        .unwrap()
        .loss
        .double_value(&[]);
    assert!(close(got, expected, 1e-4), "{got} vs {expected}");
    let (got_mu, got_sigma) = head.norm_stats();
    assert!(
        close(got_mu, mu, 1e-6) && close(got_sigma, sigma, 1e-6),
        "EMA ({got_mu}, {got_sigma}) vs ({mu}, {sigma})"
    );
}

#[test]
fn adaface_z0_is_cosface_and_z_minus1_is_arcface() {
    // Samples whose theta + m stays below pi (AdaFace clips where ArcFace falls back).
    let e = [E[0], E[1], E[3]];
    let y = [0, 1, 2];
    let (cosface, _) = loss_of(
        &HeadCfg::Cosface(CosFaceCfg {
            m: 0.4,
            ..Default::default()
        }),
        &e,
        &y,
    );
    let (arcface, _) = loss_of(
        &HeadCfg::Arcface(ArcFaceCfg {
            m: 0.4,
            ..Default::default()
        }),
        &e,
        &y,
    );
    // h = 0 forces z = 0.
    let (z0, _) = loss_of(
        &HeadCfg::Adaface(AdaFaceCfg {
            h: 0.0,
            ..Default::default()
        }),
        &e,
        &y,
    );
    assert!(close(z0, cosface, 1e-5), "z=0: {z0} vs CosFace {cosface}");
    // Norms far below the EMA mean force z = -1.
    let vs = nn::VarStore::new(Device::Cpu);
    let mut head = AdaFace::new(&vs.root(), &AdaFaceCfg::default(), 3, 2).unwrap();
    set(&vs, "weight", &tensor2(&W));
    head.set_norm_stats(1000.0, 1.0);
    let zm1 = head
        .forward(&tensor2(&e), &labels(&y))
        .unwrap()
        .loss
        .double_value(&[]);
    assert!(
        close(zm1, arcface, 1e-5),
        "z=-1: {zm1} vs ArcFace {arcface}"
    );
}

#[test]
fn elasticface_with_zero_sigma_equals_arcface_and_cosface() {
    for plus in [false, true] {
        let arc = ElasticFaceCfg {
            sigma: 0.0,
            plus,
            ..ElasticFaceCfg::arc()
        };
        let (got, _) = loss_of(&HeadCfg::Elasticface(arc), &E, &Y);
        let (want, _) = loss_of(&HeadCfg::Arcface(ArcFaceCfg::default()), &E, &Y);
        assert!(close(got, want, 1e-6), "Arc plus={plus}: {got} vs {want}");
        let cos = ElasticFaceCfg {
            sigma: 0.0,
            plus,
            ..ElasticFaceCfg::cos()
        };
        let (got, _) = loss_of(&HeadCfg::Elasticface(cos), &E, &Y);
        let (want, _) = loss_of(
            &HeadCfg::Cosface(CosFaceCfg {
                m: 0.35,
                ..Default::default()
            }),
            &E,
            &Y,
        );
        assert!(close(got, want, 1e-6), "Cos plus={plus}: {got} vs {want}");
    }
}

/// Margins the Cos form applied, recovered from the target logits: m_i = cos_y - logit_y/s.
fn applied_cos_margins(cfg: ElasticFaceCfg, e: &Tensor, y: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut head = ElasticFace::new(&vs.root(), &cfg, 3, 2).unwrap();
    set(&vs, "weight", &tensor2(&W));
    let logits = head.forward(e, y).unwrap().logits;
    let cos = ClassCentres {
        weight: tensor2(&W),
        classes: 3,
        dim: 2,
    }
    .cosine(e)
    .clamp(-1.0 + EPS, 1.0 - EPS);
    let cos_y = Vec::<f64>::try_from(
        cos.gather(1, &y.unsqueeze(1), false)
            .squeeze_dim(1)
            .to_kind(Kind::Double),
    )
    .unwrap();
    let logit_y = Vec::<f64>::try_from(
        logits
            .gather(1, &y.unsqueeze(1), false)
            .squeeze_dim(1)
            .to_kind(Kind::Double),
    )
    .unwrap();
    let m = cos_y
        .iter()
        .zip(&logit_y)
        .map(|(c, l)| c - l / cfg.s)
        .collect();
    (cos_y, m)
}

#[test]
fn elasticface_plus_gives_the_largest_margin_to_the_lowest_target_cosine() {
    tch::manual_seed(7);
    // Eight samples of class 0 at spread angles: distinct target cosines, in an order whose
    // sort permutation is not its own inverse (else the released code's mistake is invisible).
    let order = [2.0, 5.0, 0.0, 7.0, 3.0, 6.0, 1.0, 4.0];
    let e: Vec<[f64; 2]> = order
        .iter()
        .map(|k: &f64| [(0.3 * k).cos(), (0.3 * k).sin()])
        .collect();
    let y = labels(&[0; 8]);
    let (cos, m) = applied_cos_margins(
        ElasticFaceCfg {
            sigma: 0.05,
            ..ElasticFaceCfg::cos_plus()
        },
        &tensor2(&e),
        &y,
    );
    let lowest = (0..8).min_by(|&a, &b| cos[a].total_cmp(&cos[b])).unwrap();
    let largest = (0..8).max_by(|&a, &b| m[a].total_cmp(&m[b])).unwrap();
    assert_eq!(lowest, largest, "cos {cos:?} margins {m:?}");
    for a in 0..8 {
        for b in 0..8 {
            if cos[a] < cos[b] {
                assert!(m[a] >= m[b] - 1e-5, "cos {cos:?} margins {m:?}");
            }
        }
    }
}

#[test]
fn rank_match_scatters_through_the_permutation() {
    // The released code would return margins_sorted[argsort(cos)] = [0.3, 0.2, 0.1, 0.4] here.
    let cos = Tensor::from_slice(&[0.5f32, 0.1, 0.9, 0.3]);
    let margins = Tensor::from_slice(&[0.4f32, 0.1, 0.3, 0.2]);
    let got = Vec::<f32>::try_from(elasticface::rank_match(&margins, &cos)).unwrap();
    assert_eq!(got, vec![0.2, 0.4, 0.1, 0.3]);
}

#[test]
fn elasticface_draws_have_the_configured_mean_and_sigma() {
    tch::manual_seed(11);
    let n = 4096;
    let e: Vec<[f64; 2]> = (0..n).map(|k| [1.0, 0.001 * (k % 500) as f64]).collect();
    let (_, m) = applied_cos_margins(ElasticFaceCfg::cos(), &tensor2(&e), &labels(&vec![0; n]));
    let mean = m.iter().sum::<f64>() / n as f64;
    let std = (m.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt();
    assert!(
        (mean - 0.35).abs() < 0.005 && (std - 0.05).abs() < 0.005,
        "mean {mean} std {std}"
    );
}

/// f64 loss of one sample as a function of its embedding, for finite differences.
fn single_loss(e: [f64; 2], y: usize, target: impl Fn(f64) -> f64) -> f64 {
    let cos = cos_table(&W, &[e]);
    expected_ce(&cos, &[y as i64], S, |_, c| target(c))
}

#[test]
fn arcface_gradients_match_finite_differences_exact_and_straight_through() {
    let e0 = E[0];
    let c0 = cosine(&e0, &W[0]);
    let delta = arc_target(c0, 0.5) - c0;
    for gradient in [ArcGradient::Exact, ArcGradient::StraightThrough] {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut head = ArcFace::new(
            &vs.root(),
            &ArcFaceCfg {
                gradient,
                ..Default::default()
            },
            3,
            2,
        )
        .unwrap();
        set(&vs, "weight", &tensor2(&W));
        let e = tensor2(&[e0]).set_requires_grad(true);
        head.forward(&e, &labels(&[0])).unwrap().loss.backward();
        let got = Vec::<f64>::try_from(e.grad().to_kind(Kind::Double).reshape([2])).unwrap();
        let h = 1e-6;
        for d in 0..2 {
            let (mut up, mut down) = (e0, e0);
            up[d] += h;
            down[d] -= h;
            let f = |x: [f64; 2]| match gradient {
                ArcGradient::Exact => single_loss(x, 0, |c| arc_target(c, 0.5)),
                // The margin is a constant shift as far as the gradient is concerned.
                ArcGradient::StraightThrough => single_loss(x, 0, |c| c + delta),
            };
            let want = (f(up) - f(down)) / (2.0 * h);
            assert!(
                close(got[d], want, 2e-3),
                "{gradient:?} d{d}: {} vs {want}",
                got[d]
            );
        }
    }
}

#[test]
fn gradients_stay_finite_at_cos_plus_minus_one() {
    let cfgs = [
        HeadCfg::Arcface(ArcFaceCfg::default()),
        HeadCfg::Arcface(ArcFaceCfg {
            gradient: ArcGradient::StraightThrough,
            ..Default::default()
        }),
        HeadCfg::Cosface(CosFaceCfg::default()),
        HeadCfg::Elasticface(ElasticFaceCfg::arc_plus()),
        HeadCfg::Elasticface(ElasticFaceCfg::cos()),
        HeadCfg::Adaface(AdaFaceCfg::default()),
    ];
    for cfg in &cfgs {
        let (vs, mut head) = head_with_centres(cfg);
        // Exactly on the target centre, exactly opposite it.
        let e = tensor2(&[[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0]]).set_requires_grad(true);
        let out = head.forward(&e, &labels(&[0, 0, 1])).unwrap();
        out.loss.backward();
        assert!(out.loss.double_value(&[]).is_finite(), "{cfg:?}");
        assert_eq!(
            e.grad().isfinite().all().int64_value(&[]),
            1,
            "{cfg:?}: embedding grad {:?}",
            e.grad()
        );
        for (k, v) in vs.variables() {
            if v.requires_grad() {
                assert_eq!(
                    v.grad().isfinite().all().int64_value(&[]),
                    1,
                    "{cfg:?}: grad of {k}"
                );
            }
        }
    }
}

#[test]
fn heads_reject_bad_labels_and_shapes() {
    let (_vs, mut head) = head_with_centres(&HeadCfg::default());
    let e = tensor2(&E);
    assert!(matches!(
        head.forward(&e, &labels(&[0, 1, 2, 3])),
        Err(LossError::Label {
            label: 3,
            classes: 3
        })
    ));
    assert!(matches!(
        head.forward(&e, &labels(&[0, 1, -1, 0])),
        Err(LossError::Label { label: -1, .. })
    ));
    assert!(matches!(
        head.forward(&e, &labels(&[0, 1])),
        Err(LossError::Shape(_))
    ));
    assert!(matches!(
        head.forward(&e, &Tensor::from_slice(&[0i32, 1, 0, 2])),
        Err(LossError::Shape(_))
    ));
    assert!(matches!(
        head.forward(
            &Tensor::zeros([4, 3], (Kind::Float, Device::Cpu)),
            &labels(&Y)
        ),
        Err(LossError::Shape(_))
    ));
    let vs = nn::VarStore::new(Device::Cpu);
    assert!(matches!(
        ArcFace::new(
            &vs.root(),
            &ArcFaceCfg {
                s: -1.0,
                ..Default::default()
            },
            3,
            2
        ),
        Err(LossError::BadConfig(_))
    ));
}

#[test]
fn head_config_parses_from_toml() {
    let cfg: HeadCfg = toml::from_str(
        "type = \"elasticface\"\nkind = \"cos\"\nplus = true\nsigma = 0.02\nm = 0.35",
    )
    .unwrap();
    assert_eq!(cfg, HeadCfg::Elasticface(ElasticFaceCfg::cos_plus()));
    assert!(
        toml::from_str::<HeadCfg>("type = \"arcface\"\nmargin = 0.5").is_err(),
        "unknown fields are rejected"
    );
}

// ---- USS ----

fn unit_rows(rows: &[[f64; 3]]) -> Vec<Vec<f64>> {
    rows.iter()
        .map(|r| r.iter().map(|x| x / norm(r)).collect())
        .collect()
}

fn tensor3(rows: &[[f64; 3]]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    Tensor::from_slice(&flat).reshape([rows.len() as i64, 3])
}

fn softplus_clamped(x: f64, s: f64) -> f64 {
    x.clamp(-s, s).exp().ln_1p()
}

#[test]
fn uss_initial_b_is_the_mean_logsumexp_and_loss_matches_closed_form() {
    let s = 64.0;
    let m = 0.1;
    let vs = nn::VarStore::new(Device::Cpu);
    let mut uss = Uss::new(&vs.root(), &UssCfg { s, m }, 4, 3).unwrap();
    let first = [
        [1.0, 0.2, 0.0],
        [0.1, 1.0, 0.3],
        [0.0, -0.4, 1.0],
        [-1.0, 0.5, 0.5],
    ];
    uss.set_warmup(true);
    let warm = uss
        .forward(&tensor3(&first), &labels(&[0, 1, 2, 3]))
        .unwrap();
    assert_eq!(warm.double_value(&[]), 0.0, "warm-up trains s2c only");
    assert_eq!(
        uss.b(),
        0.0,
        "b is initialised at its first use, not in warm-up"
    );
    uss.set_warmup(false);
    let bank = unit_rows(&first);
    let batch = [[0.9, 0.3, 0.1], [0.2, 0.1, 1.2], [-0.8, 0.7, 0.2]];
    let y = [0usize, 2, 3];
    let cos: Vec<Vec<f64>> = batch
        .iter()
        .map(|e| bank.iter().map(|f| cosine(e, f)).collect())
        .collect();
    let lse: Vec<f64> = cos
        .iter()
        .zip(&y)
        .map(|(row, &yi)| {
            row.iter()
                .enumerate()
                .filter(|&(j, _)| j != yi)
                .map(|(_, c)| (s * c).exp())
                .sum::<f64>()
                .ln()
        })
        .collect();
    let b0 = lse.iter().sum::<f64>() / lse.len() as f64;
    let expected = cos
        .iter()
        .zip(&y)
        .map(|(row, &yi)| {
            let pos = softplus_clamped(-s * (row[yi] - m) + b0, s);
            let neg: f64 = row
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != yi)
                .map(|(_, c)| softplus_clamped(s * c - b0, s))
                .sum();
            pos + neg
        })
        .sum::<f64>()
        / y.len() as f64;
    let got = uss
        .forward(&tensor3(&batch), &labels(&[0, 2, 3]))
        .unwrap()
        .double_value(&[]);
    assert!(
        close(uss.b(), b0, 1e-5),
        "b {} vs mean logsumexp {b0}",
        uss.b()
    );
    assert!(close(uss.threshold(), b0 / s, 1e-5));
    assert!(close(got, expected, 1e-4), "loss {got} vs {expected}");
}

#[test]
fn uss_writes_the_bank_and_ignores_empty_rows() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut uss = Uss::new(&vs.root(), &UssCfg::default(), 5, 3).unwrap();
    uss.set_warmup(true);
    let _warm = uss
        .forward(
            &tensor3(&[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]),
            &labels(&[1, 3]),
        )
        .unwrap();
    let bank = vs.variables()["bank"].shallow_clone();
    assert_eq!(
        Vec::<f32>::try_from(bank.get(1)).unwrap(),
        vec![1.0, 0.0, 0.0]
    );
    assert_eq!(
        Vec::<f32>::try_from(bank.get(3)).unwrap(),
        vec![0.0, 1.0, 0.0]
    );
    assert_eq!(
        Vec::<f32>::try_from(vs.variables()["bank_filled"].shallow_clone()).unwrap(),
        vec![0.0, 1.0, 0.0, 1.0, 0.0]
    );
    uss.set_warmup(false);
    // Sample of class 0 (row empty: no positive), one filled negative (class 1 or 3 besides).
    let e = [[0.6, 0.8, 0.0]];
    let got = uss
        .forward(&tensor3(&e), &labels(&[0]))
        .unwrap()
        .double_value(&[]);
    let s = 64.0;
    let lse = ((s * 0.6f64).exp() + (s * 0.8f64).exp()).ln();
    let expected = softplus_clamped(s * 0.6 - lse, s) + softplus_clamped(s * 0.8 - lse, s);
    assert!(close(uss.b(), lse, 1e-5), "b {} vs {lse}", uss.b());
    assert!(close(got, expected, 1e-4), "{got} vs {expected}");
}

// ---- KD ----

#[test]
fn kd_term_is_lambda_times_two_minus_two_cos_over_d() {
    let vs = nn::VarStore::new(Device::Cpu);
    let kd = MaskInvKd::new(&vs.root(), 4, 4).unwrap();
    assert!(vs.variables().is_empty(), "no projection when dims match");
    let st = [
        [1.0, 2.0, -0.5, 0.3],
        [0.2, -1.0, 0.4, 2.0],
        [3.0, 0.1, 0.1, -0.2],
    ];
    let te = [
        [0.8, 2.5, 0.0, 0.1],
        [0.0, -0.8, 1.0, 1.5],
        [-1.0, 0.5, 0.3, 0.0],
    ];
    let t = |rows: &[[f64; 4]]| {
        Tensor::from_slice(&rows.iter().flatten().map(|&v| v as f32).collect::<Vec<_>>())
            .reshape([3, 4])
    };
    let lambda = 100.0;
    let expected = st
        .iter()
        .zip(&te)
        .map(|(a, b)| lambda * (2.0 - 2.0 * cosine(a, b)) / 4.0)
        .sum::<f64>()
        / 3.0;
    let got = kd.loss(&t(&st), &t(&te), lambda).unwrap().double_value(&[]);
    assert!(close(got, expected, 1e-5), "{got} vs {expected}");
    assert!(matches!(
        kd.loss(
            &t(&st),
            &Tensor::zeros([3, 5], (Kind::Float, Device::Cpu)),
            1.0
        ),
        Err(LossError::Shape(_))
    ));
}

#[test]
fn kd_projection_learns_when_dims_differ_and_teacher_gets_no_gradient() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let kd = MaskInvKd::new(&vs.root(), 6, 4).unwrap();
    assert_eq!(vs.variables()["projection.weight"].size(), vec![4, 6]);
    let student = Tensor::randn([8, 6], (Kind::Float, Device::Cpu));
    let teacher = Tensor::randn([8, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let mut opt = nn::Sgd::default().build(&vs, 0.5).unwrap();
    let first = kd.distance(&student, &teacher).unwrap().double_value(&[]);
    for _ in 0..50 {
        opt.backward_step(&kd.loss(&student, &teacher, 10.0).unwrap());
    }
    let last = kd.distance(&student, &teacher).unwrap().double_value(&[]);
    assert!(
        last < 0.7 * first,
        "projection did not learn: {first} -> {last}"
    );
    assert!(
        !teacher.grad().defined() || teacher.grad().abs().sum(Kind::Float).double_value(&[]) == 0.0
    );
}

#[test]
fn cached_teacher_returns_rows_and_rejects_bad_ids() {
    let table = Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([4, 3]);
    let teacher = Teacher::Cached(table);
    let images = Tensor::zeros([2, 3, 112, 112], (Kind::Float, Device::Cpu));
    let got = teacher.embeddings(&images, &labels(&[3, 1])).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(got.flatten(0, -1)).unwrap(),
        vec![9.0, 10.0, 11.0, 3.0, 4.0, 5.0]
    );
    assert!(teacher.embeddings(&images, &labels(&[4])).is_err());
    assert!(teacher.embeddings(&images, &labels(&[-1])).is_err());
    assert_eq!(teacher.embedding_dim(), 3);
}

#[test]
fn frozen_teacher_runs_in_eval_without_gradients() {
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = crate::model::BackboneCfg {
        embedding_dim: 16,
        ..Default::default()
    };
    let net = crate::model::build_backbone("tiny", &vs.root(), &cfg).unwrap();
    let teacher = Teacher::Frozen(FrozenTeacher::new(vs, net));
    let x = Tensor::randn([2, 3, 112, 112], (Kind::Float, Device::Cpu));
    let a = teacher.embeddings(&x, &labels(&[0, 1])).unwrap();
    let b = teacher.embeddings(&x, &labels(&[0, 1])).unwrap();
    assert!(!a.requires_grad());
    assert_eq!(a.size(), vec![2, 16]);
    assert!(
        a.equal(&b),
        "eval mode is deterministic (running stats, no dropout)"
    );
}

#[test]
fn hg_schedule_switches_at_step_or_plateau_and_lg_never() {
    let mut lg = KdSchedule::low_guidance(100.0);
    assert!((0..1000).all(|s| lg.observe(s, 1.0) == 100.0));
    let mut at = KdSchedule::high_guidance(100.0, 3000.0, HgTrigger::AtStep(20));
    let lambdas: Vec<f64> = (0..25).map(|s| at.observe(s, 10.0 - s as f64)).collect();
    assert_eq!(lambdas[19], 100.0);
    assert_eq!(lambdas[20], 3000.0);
    assert_eq!(at.switched_at(), Some(20));
    let mut plateau = KdSchedule::high_guidance(
        100.0,
        3000.0,
        HgTrigger::Plateau {
            window: 5,
            rel_tol: 0.01,
        },
    );
    // Falling fast: no switch.
    for s in 0..20 {
        assert_eq!(plateau.observe(s, 20.0 - s as f64 * 0.5), 100.0, "step {s}");
    }
    // Flat: switches once both windows are flat, then stays high.
    let mut switched = None;
    for s in 20..40 {
        if plateau.observe(s, 10.0) == 3000.0 && switched.is_none() {
            switched = Some(s);
        }
    }
    assert!(
        switched.is_some_and(|s| s <= 30),
        "switched at {switched:?}"
    );
    assert_eq!(plateau.observe(41, 50.0), 3000.0, "HG never goes back");
}

// ---- a few SGD steps lower each loss ----

/// Three separable clusters in 6-d, four samples each, mapped to 4-d embeddings by a Linear.
fn toy_problem() -> (Tensor, Tensor) {
    tch::manual_seed(1);
    let centres = Tensor::randn([3, 6], (Kind::Float, Device::Cpu)) * 2.0;
    let y = labels(&[0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
    let x = centres.index_select(0, &y) + Tensor::randn([12, 6], (Kind::Float, Device::Cpu)) * 0.1;
    (x, y)
}

fn descend(
    steps: usize,
    lr: f64,
    vs: &nn::VarStore,
    mut loss: impl FnMut() -> Tensor,
) -> (f64, f64) {
    let mut opt = nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    }
    .build(vs, lr)
    .unwrap();
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..steps {
        let l = loss();
        last = l.double_value(&[]);
        first.get_or_insert(last);
        opt.backward_step(&l);
    }
    (first.unwrap_or(f64::NAN), last)
}

#[test]
fn sgd_steps_lower_every_head_loss() {
    let cfgs = [
        HeadCfg::Arcface(ArcFaceCfg::default()),
        HeadCfg::Arcface(ArcFaceCfg {
            gradient: ArcGradient::StraightThrough,
            ..Default::default()
        }),
        HeadCfg::Cosface(CosFaceCfg::default()),
        HeadCfg::Elasticface(ElasticFaceCfg::arc()),
        HeadCfg::Elasticface(ElasticFaceCfg::arc_plus()),
        HeadCfg::Elasticface(ElasticFaceCfg::cos()),
        HeadCfg::Elasticface(ElasticFaceCfg::cos_plus()),
        HeadCfg::Adaface(AdaFaceCfg::default()),
    ];
    let (x, y) = toy_problem();
    for cfg in &cfgs {
        let vs = nn::VarStore::new(Device::Cpu);
        let embed = nn::linear(vs.root() / "embed", 6, 4, Default::default());
        let mut head = build_head(cfg, &(vs.root() / "head"), 3, 4).unwrap();
        let (first, last) = descend(40, 0.01, &vs, || {
            head.forward(&x.apply(&embed), &y).unwrap().loss
        });
        assert!(last < 0.5 * first, "{cfg:?}: {first} -> {last}");
    }
}

#[test]
fn sgd_steps_lower_the_uss_loss_and_learn_b() {
    let (x, y) = toy_problem();
    let vs = nn::VarStore::new(Device::Cpu);
    let embed = nn::linear(vs.root() / "embed", 6, 4, Default::default());
    let mut uss = Uss::new(&(vs.root() / "uss"), &UssCfg::default(), 3, 4).unwrap();
    uss.set_warmup(true);
    let _warm = uss.forward(&x.apply(&embed), &y).unwrap();
    uss.set_warmup(false);
    let (first, last) = descend(40, 0.002, &vs, || {
        uss.forward(&x.apply(&embed), &y).unwrap()
    });
    assert!(last < 0.5 * first, "USS: {first} -> {last}");
    assert!(uss.b() > 0.0 && uss.threshold().is_finite());
}
