//! Five-point face alignment: a least-squares similarity transform (Umeyama 1991) and the
//! bilinear warp that applies it.
//!
//! The transform maps source (image) points onto destination (template) points:
//! `dst = [a -b; b a] * src + [tx; ty]`, i.e. scale * rotation + translation. Umeyama's SVD
//! solution guards against reflections, which a plain least-squares affine fit would return for
//! mirrored landmark orders and which would flip the face.

use image::{Rgb, RgbImage};

/// A 2-D similarity transform `p -> [a -b; b a] p + t` (a = s cos θ, b = s sin θ).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

/// Why no transform could be estimated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AlignError {
    #[error("need the same number of source and destination points (got {src} and {dst})")]
    CountMismatch { src: usize, dst: usize },
    #[error("need at least 2 points, got {0}")]
    TooFewPoints(usize),
    #[error("landmark coordinates are not finite")]
    NonFinite,
    #[error("landmarks are degenerate (all at one point): no scale or rotation can be recovered")]
    Degenerate,
}

impl Similarity {
    pub fn scale(&self) -> f64 {
        self.a.hypot(self.b)
    }
    pub fn rotation_rad(&self) -> f64 {
        self.b.atan2(self.a)
    }
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [
            self.a * p[0] - self.b * p[1] + self.tx,
            self.b * p[0] + self.a * p[1] + self.ty,
        ]
    }
    /// The inverse transform (destination -> source); used by the warp to sample the source.
    pub fn inverse(&self) -> Similarity {
        let d = self.a * self.a + self.b * self.b;
        let (ia, ib) = (self.a / d, -self.b / d);
        Similarity {
            a: ia,
            b: ib,
            tx: -(ia * self.tx - ib * self.ty),
            ty: -(ib * self.tx + ia * self.ty),
        }
    }
}

/// Umeyama least-squares similarity from `src` to `dst` (reflections excluded).
pub fn estimate_similarity(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Result<Similarity, AlignError> {
    if src.len() != dst.len() {
        return Err(AlignError::CountMismatch {
            src: src.len(),
            dst: dst.len(),
        });
    }
    let n = src.len();
    if n < 2 {
        return Err(AlignError::TooFewPoints(n));
    }
    if src
        .iter()
        .chain(dst)
        .any(|p| !p[0].is_finite() || !p[1].is_finite())
    {
        return Err(AlignError::NonFinite);
    }
    let nf = n as f64;
    let mean = |pts: &[[f32; 2]]| {
        let (sx, sy) = pts
            .iter()
            .fold((0.0, 0.0), |(x, y), p| (x + p[0] as f64, y + p[1] as f64));
        [sx / nf, sy / nf]
    };
    let (ms, md) = (mean(src), mean(dst));
    // Covariance Σ = (1/n) Σ (d - μd)(s - μs)^T and source variance.
    let (mut c00, mut c01, mut c10, mut c11, mut var_s) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(dst) {
        let (sx, sy) = (s[0] as f64 - ms[0], s[1] as f64 - ms[1]);
        let (dx, dy) = (d[0] as f64 - md[0], d[1] as f64 - md[1]);
        c00 += dx * sx;
        c01 += dx * sy;
        c10 += dy * sx;
        c11 += dy * sy;
        var_s += sx * sx + sy * sy;
    }
    let (c00, c01, c10, c11, var_s) = (c00 / nf, c01 / nf, c10 / nf, c11 / nf, var_s / nf);
    let spread_d: f64 = dst
        .iter()
        .map(|d| (d[0] as f64 - md[0]).powi(2) + (d[1] as f64 - md[1]).powi(2))
        .sum::<f64>()
        / nf;
    if var_s < 1e-12 || spread_d < 1e-12 {
        return Err(AlignError::Degenerate);
    }
    // For 2x2, the rotation maximising tr(R^T Σ) with det R = +1 has closed form: R = rot(θ) with
    // θ = atan2(c10 - c01, c00 + c11); the optimal trace is |(c00 + c11, c10 - c01)|, which
    // equals the sum of singular values with the sign fix Umeyama's S matrix applies.
    let (p, q) = (c00 + c11, c10 - c01);
    let trace = p.hypot(q);
    if trace < 1e-12 {
        return Err(AlignError::Degenerate);
    }
    let (cos, sin) = (p / trace, q / trace);
    let scale = trace / var_s;
    let (a, b) = (scale * cos, scale * sin);
    let tx = md[0] - (a * ms[0] - b * ms[1]);
    let ty = md[1] - (b * ms[0] + a * ms[1]);
    Ok(Similarity { a, b, tx, ty })
}

/// Warp `src` into a `width` x `height` image: output pixel (x, y) samples the source at
/// `to_src(x, y)` bilinearly; samples outside the source are black (border 0), as in training.
pub fn warp_bilinear(src: &RgbImage, to_src: &Similarity, width: u32, height: u32) -> RgbImage {
    let (sw, sh) = (src.width() as i64, src.height() as i64);
    let raw = src.as_raw();
    let px = |x: i64, y: i64, c: usize| -> f64 {
        if x < 0 || y < 0 || x >= sw || y >= sh {
            0.0
        } else {
            raw[((y * sw + x) * 3) as usize + c] as f64
        }
    };
    RgbImage::from_fn(width, height, |x, y| {
        let [fx, fy] = to_src.apply([x as f64, y as f64]);
        let (x0, y0) = (fx.floor(), fy.floor());
        let (wx, wy) = (fx - x0, fy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let mut out = [0u8; 3];
        for (c, o) in out.iter_mut().enumerate() {
            let v = px(x0, y0, c) * (1.0 - wx) * (1.0 - wy)
                + px(x0 + 1, y0, c) * wx * (1.0 - wy)
                + px(x0, y0 + 1, c) * (1.0 - wx) * wy
                + px(x0 + 1, y0 + 1, c) * wx * wy;
            *o = v.round().clamp(0.0, 255.0) as u8;
        }
        Rgb(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::ARCFACE_TEMPLATE_112;
    use proptest::prelude::*;

    fn transform_points(t: &Similarity, pts: &[[f32; 2]]) -> Vec<[f32; 2]> {
        pts.iter()
            .map(|p| {
                let q = t.apply([p[0] as f64, p[1] as f64]);
                [q[0] as f32, q[1] as f32]
            })
            .collect()
    }

    #[test]
    fn recovers_a_known_transform() {
        // Template -> image by a known similarity; estimating image -> template must invert it.
        let truth = Similarity {
            a: 2.1 * 0.3f64.cos(),
            b: 2.1 * 0.3f64.sin(),
            tx: 40.5,
            ty: -12.25,
        };
        let src = transform_points(&truth, &ARCFACE_TEMPLATE_112);
        let est = estimate_similarity(&src, &ARCFACE_TEMPLATE_112).unwrap();
        let inv = truth.inverse();
        for (e, t) in [
            (est.a, inv.a),
            (est.b, inv.b),
            (est.tx, inv.tx),
            (est.ty, inv.ty),
        ] {
            assert!((e - t).abs() < 1e-4, "estimated {est:?}, expected {inv:?}");
        }
        for (s, d) in src.iter().zip(ARCFACE_TEMPLATE_112.iter()) {
            let p = est.apply([s[0] as f64, s[1] as f64]);
            assert!((p[0] - d[0] as f64).abs() < 0.01 && (p[1] - d[1] as f64).abs() < 0.01);
        }
    }

    /// Root-mean-square distance between `t(src)` and `dst`.
    fn rms_residual(t: &Similarity, src: &[[f32; 2]], dst: &[[f32; 2]]) -> f64 {
        let sum: f64 = transform_points(t, src)
            .iter()
            .zip(dst)
            .map(|(p, d)| ((p[0] - d[0]) as f64).powi(2) + ((p[1] - d[1]) as f64).powi(2))
            .sum();
        (sum / src.len() as f64).sqrt()
    }

    /// Twice the signed area of the triangle `p0 p1 p2`: its sign is the triangle's orientation.
    fn orientation(p: &[[f32; 2]]) -> f64 {
        let (u, v) = (
            [(p[1][0] - p[0][0]) as f64, (p[1][1] - p[0][1]) as f64],
            [(p[2][0] - p[0][0]) as f64, (p[2][1] - p[0][1]) as f64],
        );
        u[0] * v[1] - u[1] * v[0]
    }

    #[test]
    fn mirrored_points_get_the_best_rotation_not_a_reflection() {
        let template = &ARCFACE_TEMPLATE_112;
        let mirrored: Vec<[f32; 2]> = template.iter().map(|p| [112.0 - p[0], p[1]]).collect();
        // The reflection x -> 112 - x maps the mirrored points exactly onto the template; a
        // transform that can flip would fit them with residual 0.
        let est = estimate_similarity(&mirrored, template).unwrap();
        let mapped = transform_points(&est, &mirrored);
        // Orientation is kept: the mapped eye-eye-nose triangle turns the way the mirrored
        // input does, the opposite of the template's.
        assert!(
            orientation(&mirrored) * orientation(&mapped) > 0.0,
            "{est:?}"
        );
        assert!(
            orientation(template) * orientation(&mapped) < 0.0,
            "{est:?}"
        );
        // Without a flip the best fit shrinks the face towards the template's centre (left and
        // right swap): scale 0.225, rotation -0.011 rad, residual 22.65 px against the
        // template's own spread of 23.25 px.
        assert!((est.scale() - 0.2253).abs() < 1e-3, "{est:?}");
        assert!((est.rotation_rad() + 0.0112).abs() < 1e-3, "{est:?}");
        let residual = rms_residual(&est, &mirrored, template);
        assert!((residual - 22.649).abs() < 0.01, "residual {residual}");
        // It is the least-squares optimum among all proper similarities: no rotation angle
        // (each with its best scale >= 0 and translation) fits better.
        let centre = |pts: &[[f32; 2]]| {
            let n = pts.len() as f64;
            let s = pts
                .iter()
                .fold([0.0, 0.0], |s, p| [s[0] + p[0] as f64, s[1] + p[1] as f64]);
            [s[0] / n, s[1] / n]
        };
        let (ms, md) = (centre(&mirrored), centre(template));
        let best_on_grid = (0..3600)
            .map(|k| {
                let theta = k as f64 * std::f64::consts::TAU / 3600.0;
                let (cos, sin) = (theta.cos(), theta.sin());
                let unit = Similarity {
                    a: cos,
                    b: sin,
                    tx: 0.0,
                    ty: 0.0,
                };
                let (mut num, mut den) = (0.0, 0.0);
                for (p, d) in mirrored.iter().zip(template) {
                    let r = unit.apply([p[0] as f64 - ms[0], p[1] as f64 - ms[1]]);
                    num += r[0] * (d[0] as f64 - md[0]) + r[1] * (d[1] as f64 - md[1]);
                    den += r[0] * r[0] + r[1] * r[1];
                }
                let scale = (num / den).max(0.0);
                let (a, b) = (scale * cos, scale * sin);
                let t = Similarity {
                    a,
                    b,
                    tx: md[0] - (a * ms[0] - b * ms[1]),
                    ty: md[1] - (b * ms[0] + a * ms[1]),
                };
                rms_residual(&t, &mirrored, template)
            })
            .fold(f64::INFINITY, f64::min);
        assert!(
            residual <= best_on_grid + 1e-6,
            "estimate {residual} px, a rotation on the grid fits with {best_on_grid} px"
        );
        // The same points unmirrored are fitted exactly.
        let same = estimate_similarity(template, template).unwrap();
        assert!(rms_residual(&same, template, template) < 1e-4, "{same:?}");
    }

    #[test]
    fn refuses_degenerate_input() {
        let same = [[10.0f32, 10.0]; 5];
        assert_eq!(
            estimate_similarity(&same, &ARCFACE_TEMPLATE_112),
            Err(AlignError::Degenerate)
        );
        assert_eq!(
            estimate_similarity(&same[..1], &same[..1]),
            Err(AlignError::TooFewPoints(1))
        );
        assert_eq!(
            estimate_similarity(&same[..3], &ARCFACE_TEMPLATE_112),
            Err(AlignError::CountMismatch { src: 3, dst: 5 })
        );
        let mut nan = ARCFACE_TEMPLATE_112;
        nan[2][0] = f32::NAN;
        assert_eq!(
            estimate_similarity(&nan, &ARCFACE_TEMPLATE_112),
            Err(AlignError::NonFinite)
        );
    }

    #[test]
    fn warp_is_right_at_known_pixels() {
        let src = RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 10) as u8, (y * 10) as u8, 200]));
        // Pure translation by half a pixel: output (x, y) samples source (x + 0.5, y + 1).
        let t = Similarity {
            a: 1.0,
            b: 0.0,
            tx: 0.5,
            ty: 1.0,
        };
        let out = warp_bilinear(&src, &t, 8, 8);
        assert_eq!(out.get_pixel(2, 3).0, [25, 40, 200]);
        // Beyond the right edge the bilinear mix meets the black border.
        assert_eq!(out.get_pixel(7, 0).0, [35, 5, 100]);
        assert_eq!(out.get_pixel(0, 7).0, [0, 0, 0]);
        // Scale 2: output (1, 1) samples source (2, 2) exactly.
        let s = Similarity {
            a: 2.0,
            b: 0.0,
            tx: 0.0,
            ty: 0.0,
        };
        assert_eq!(
            warp_bilinear(&src, &s, 4, 4).get_pixel(1, 1).0,
            [20, 20, 200]
        );
    }

    proptest! {
        #[test]
        fn any_reasonable_similarity_is_recovered(
            scale in 0.2f64..8.0, angle in -3.0f64..3.0, tx in -500.0f64..500.0, ty in -500.0f64..500.0
        ) {
            let truth = Similarity { a: scale * angle.cos(), b: scale * angle.sin(), tx, ty };
            let src = transform_points(&truth, &ARCFACE_TEMPLATE_112);
            let est = estimate_similarity(&src, &ARCFACE_TEMPLATE_112).unwrap();
            for (s, d) in src.iter().zip(ARCFACE_TEMPLATE_112.iter()) {
                let p = est.apply([s[0] as f64, s[1] as f64]);
                prop_assert!((p[0] - d[0] as f64).abs() < 0.01 && (p[1] - d[1] as f64).abs() < 0.01);
            }
        }
    }
}
