//! Synthetic face masks (METHODS §6): a mask is placed on an aligned face by fitting a
//! homography from six mask anchor points to six face points derived from the five landmarks.
//!
//! Two sources: a procedural polygon mask (the default; no files) and MaskTheFace-style RGBA
//! templates (a directory with `masks.cfg`: per mask a `template:` PNG and anchors `mask_a`..
//! `mask_f` = top-left, top-middle (nose bridge), top-right, bottom-left, bottom-middle (chin),
//! bottom-right). In training the face points get a small random shift and the mask a random
//! shape, colour and tint; in evaluation there is no shift and no tint, and the choice of template
//! comes from the caller's fixed-seed generator, so evaluation masks are reproducible.

use super::DataError;
use image::{RgbImage, RgbaImage};
use rand::Rng;
use shared::Landmarks5;
use std::path::{Path, PathBuf};

/// Training draws random placement, shape and tint; evaluation is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskMode {
    Train,
    Eval,
}

/// Knobs of the mask augmentation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MaskConfig {
    /// Probability that a training sample is masked (pMask, METHODS §5).
    pub p_mask: f32,
    /// Maximum random shift of each face anchor in training, in pixels of the 112x112 crop.
    pub shift_px: f32,
    /// Random RGB tint (each channel in [0, 150)) in training.
    pub tint: bool,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            p_mask: 0.5,
            shift_px: 3.0,
            tint: true,
        }
    }
}

/// The six face points a mask is fitted to, from five landmarks: in a frame with its origin at
/// the eye midpoint, x along the eye line and one unit = the eye distance.
pub fn face_anchors(lm: &Landmarks5) -> [[f32; 2]; 6] {
    let (le, re) = (lm[0], lm[1]);
    let mid = [(le[0] + re[0]) / 2.0, (le[1] + re[1]) / 2.0];
    let ux = [re[0] - le[0], re[1] - le[1]];
    let uy = [-ux[1], ux[0]];
    // (x, y) in eye-distance units; y grows towards the chin. With the ArcFace template the top
    // edge sits ~8 px below the eye centres and the chin point ~2 px above the crop's bottom.
    const FRAME: [[f32; 2]; 6] = [
        [-1.05, 0.36],
        [0.0, 0.22],
        [1.05, 0.36],
        [-0.85, 1.3],
        [0.0, 1.62],
        [0.85, 1.3],
    ];
    FRAME.map(|[x, y]| {
        [
            mid[0] + x * ux[0] + y * uy[0],
            mid[1] + x * ux[1] + y * uy[1],
        ]
    })
}

/// A plane projective transform `p -> H p` (row-major 3x3, `h[8]` = 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography(pub [f64; 9]);

impl Homography {
    /// Least-squares fit (DLT with Hartley normalisation) from `src` to `dst`, 4+ points.
    pub fn fit(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<Self> {
        if src.len() != dst.len() || src.len() < 4 {
            return None;
        }
        let (ts, ns) = normalise(src)?;
        let (td, nd) = normalise(dst)?;
        // Unknowns h0..h7 (h8 = 1): two rows per point, solved via the normal equations.
        let mut ata = [[0f64; 8]; 8];
        let mut atb = [0f64; 8];
        for (s, d) in ns.iter().zip(&nd) {
            let (x, y, u, v) = (s[0], s[1], d[0], d[1]);
            for (row, rhs) in [
                ([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y], u),
                ([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y], v),
            ] {
                for i in 0..8 {
                    atb[i] += row[i] * rhs;
                    for j in 0..8 {
                        ata[i][j] += row[i] * row[j];
                    }
                }
            }
        }
        let h = solve8(ata, atb)?;
        let hn = Homography([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 1.0]);
        // Undo the normalisations: H = Td^-1 * Hn * Ts.
        let full = td.inverse()?.compose(&hn).compose(&ts);
        let s = full.0[8];
        (s.abs() > 1e-12).then(|| Homography(full.0.map(|v| v / s)))
    }

    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        let h = &self.0;
        let w = h[6] * p[0] + h[7] * p[1] + h[8];
        [
            (h[0] * p[0] + h[1] * p[1] + h[2]) / w,
            (h[3] * p[0] + h[4] * p[1] + h[5]) / w,
        ]
    }

    /// `self` after `other` (`self * other`).
    fn compose(&self, other: &Homography) -> Homography {
        let (a, b) = (&self.0, &other.0);
        let mut out = [0f64; 9];
        for r in 0..3 {
            for c in 0..3 {
                out[r * 3 + c] = (0..3).map(|k| a[r * 3 + k] * b[k * 3 + c]).sum();
            }
        }
        Homography(out)
    }

    pub fn inverse(&self) -> Option<Homography> {
        let m = &self.0;
        let det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
            + m[2] * (m[3] * m[7] - m[4] * m[6]);
        if det.abs() < 1e-15 {
            return None;
        }
        let inv = [
            m[4] * m[8] - m[5] * m[7],
            m[2] * m[7] - m[1] * m[8],
            m[1] * m[5] - m[2] * m[4],
            m[5] * m[6] - m[3] * m[8],
            m[0] * m[8] - m[2] * m[6],
            m[2] * m[3] - m[0] * m[5],
            m[3] * m[7] - m[4] * m[6],
            m[1] * m[6] - m[0] * m[7],
            m[0] * m[4] - m[1] * m[3],
        ];
        Some(Homography(inv.map(|v| v / det)))
    }
}

/// Similarity that centres points at the origin with mean distance sqrt(2), and the moved points.
fn normalise(pts: &[[f32; 2]]) -> Option<(Homography, Vec<[f64; 2]>)> {
    let n = pts.len() as f64;
    let cx = pts.iter().map(|p| p[0] as f64).sum::<f64>() / n;
    let cy = pts.iter().map(|p| p[1] as f64).sum::<f64>() / n;
    let mean_d = pts
        .iter()
        .map(|p| (p[0] as f64 - cx).hypot(p[1] as f64 - cy))
        .sum::<f64>()
        / n;
    if mean_d.is_nan() || mean_d <= 1e-9 {
        return None;
    }
    let s = std::f64::consts::SQRT_2 / mean_d;
    let t = Homography([s, 0.0, -s * cx, 0.0, s, -s * cy, 0.0, 0.0, 1.0]);
    Some((
        t,
        pts.iter()
            .map(|p| t.apply([p[0] as f64, p[1] as f64]))
            .collect(),
    ))
}

/// Gaussian elimination with partial pivoting.
fn solve8(mut a: [[f64; 8]; 8], mut b: [f64; 8]) -> Option<[f64; 8]> {
    for col in 0..8 {
        let piv = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        let (pivot_row, pivot_b) = (a[col], b[col]);
        for r in col + 1..8 {
            let f = a[r][col] / pivot_row[col];
            for (v, p) in a[r][col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= f * p;
            }
            b[r] -= f * pivot_b;
        }
    }
    let mut x = [0f64; 8];
    for r in (0..8).rev() {
        let s: f64 = (r + 1..8).map(|c| a[r][c] * x[c]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

/// One MaskTheFace-style template, downscaled at load so that sampling it on a 112x112 face
/// needs no further filtering.
#[derive(Debug, Clone)]
pub struct MaskTemplate {
    pub name: String,
    rgba: RgbaImage,
    anchors: [[f32; 2]; 6],
}

/// Width (in template pixels, after downscaling) between anchors a and c: about 1.4x the mask's
/// width on a 112x112 face, so bilinear sampling neither aliases nor blurs.
const TEMPLATE_SPAN_PX: f32 = 96.0;

impl MaskTemplate {
    pub fn new(name: &str, rgba: RgbaImage, anchors: [[f32; 2]; 6]) -> Result<Self, String> {
        let span = (anchors[2][0] - anchors[0][0]).hypot(anchors[2][1] - anchors[0][1]);
        if span.is_nan() || span <= 1.0 {
            return Err(format!("mask {name}: anchors a and c coincide"));
        }
        let scale = (TEMPLATE_SPAN_PX / span).min(1.0);
        let (ow, oh) = (rgba.width(), rgba.height());
        let (w, h) = (
            ((ow as f32 * scale).round() as u32).max(1),
            ((oh as f32 * scale).round() as u32).max(1),
        );
        let rgba = if scale < 1.0 {
            image::imageops::resize(&rgba, w, h, image::imageops::FilterType::Triangle)
        } else {
            rgba
        };
        let (sx, sy) = (w as f32 / ow.max(1) as f32, h as f32 / oh.max(1) as f32);
        let anchors = anchors.map(|[x, y]| [x * sx, y * sy]);
        Ok(Self {
            name: name.to_string(),
            rgba,
            anchors,
        })
    }
}

/// Read a MaskTheFace-style directory: `dir/masks.cfg` or `dir/masks/masks.cfg`. Masks whose name
/// ends in `_left`/`_right` (for turned heads) are skipped unless `include_profiles`; sections
/// without a template (`[empty]`, `[inpaint]`) are ignored.
pub fn load_templates(dir: &Path, include_profiles: bool) -> Result<Vec<MaskTemplate>, DataError> {
    let cfg_path = [dir.join("masks.cfg"), dir.join("masks").join("masks.cfg")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::format(dir, "no masks.cfg here or in masks/"))?;
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| DataError::io(&cfg_path, e))?;
    let cfg_dir = cfg_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut out = Vec::new();
    for (name, fields) in parse_cfg(&text) {
        let Some(template) = fields
            .iter()
            .find(|(k, _)| k == "template")
            .map(|(_, v)| v.clone())
        else {
            continue;
        };
        if !include_profiles && (name.ends_with("_left") || name.ends_with("_right")) {
            continue;
        }
        let mut anchors = [[0f32; 2]; 6];
        for (i, key) in ["mask_a", "mask_b", "mask_c", "mask_d", "mask_e", "mask_f"]
            .iter()
            .enumerate()
        {
            let v = fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| {
                    DataError::format(&cfg_path, format!("[{name}] has a template but no {key}"))
                })?;
            let xy: Vec<f32> = v.split(',').filter_map(|s| s.trim().parse().ok()).collect();
            if xy.len() != 2 {
                return Err(DataError::format(
                    &cfg_path,
                    format!("[{name}] {key} = {v:?} is not 'x, y'"),
                ));
            }
            anchors[i] = [xy[0], xy[1]];
        }
        let png = resolve_template(&cfg_dir, &template).ok_or_else(|| {
            DataError::format(&cfg_path, format!("[{name}] template {template} not found"))
        })?;
        let rgba = image::open(&png)
            .map_err(|cause| DataError::Decode {
                origin: png.display().to_string(),
                cause,
            })?
            .into_rgba8();
        out.push(
            MaskTemplate::new(&name, rgba, anchors).map_err(|d| DataError::format(&cfg_path, d))?,
        );
    }
    if out.is_empty() {
        return Err(DataError::format(&cfg_path, "no usable mask templates"));
    }
    Ok(out)
}

/// Template paths in MaskTheFace's cfg are relative to its repository root (the cfg's parent).
fn resolve_template(cfg_dir: &Path, rel: &str) -> Option<PathBuf> {
    let name = Path::new(rel).file_name()?;
    [
        cfg_dir.parent().map(|p| p.join(rel)),
        Some(cfg_dir.join(rel)),
        Some(cfg_dir.join("templates").join(name)),
        Some(cfg_dir.join(name)),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
}

/// INI-like sections: `[name]` then `key: value` / `key = value`; `;`/`#` start comments.
fn parse_cfg(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((name.trim().to_string(), Vec::new()));
        } else if let (Some((k, v)), Some(last)) = (line.split_once([':', '=']), out.last_mut()) {
            last.1.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Where masks come from.
#[derive(Debug, Clone)]
pub enum MaskSource {
    Procedural,
    Templates(Vec<MaskTemplate>),
}

/// Puts synthetic masks on aligned faces.
#[derive(Debug, Clone)]
pub struct Masker {
    pub source: MaskSource,
    pub cfg: MaskConfig,
}

/// A rendered mask: straight (not premultiplied) colour and coverage per pixel.
struct Layer {
    rgb: Vec<[f32; 3]>,
    alpha: Vec<f32>,
}

const PROCEDURAL_COLOURS: [[f32; 3]; 6] = [
    [150.0, 190.0, 220.0],
    [235.0, 235.0, 235.0],
    [40.0, 40.0, 45.0],
    [120.0, 170.0, 150.0],
    [200.0, 160.0, 170.0],
    [90.0, 100.0, 140.0],
];

impl Masker {
    pub fn procedural(cfg: MaskConfig) -> Self {
        Self {
            source: MaskSource::Procedural,
            cfg,
        }
    }
    /// Template masks from a MaskTheFace-style directory.
    pub fn from_dir(dir: &Path, cfg: MaskConfig) -> Result<Self, DataError> {
        Ok(Self {
            source: MaskSource::Templates(load_templates(dir, false)?),
            cfg,
        })
    }

    /// Mask `img` (a face with landmarks `lm`), drawing placement and look from `rng`.
    pub fn apply(&self, img: &mut RgbImage, lm: &Landmarks5, rng: &mut impl Rng, mode: MaskMode) {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let layer = self.render(w, h, lm, rng, mode);
        for (i, px) in img.pixels_mut().enumerate() {
            let a = layer.alpha[i];
            if a > 0.0 {
                for c in 0..3 {
                    px.0[c] = (px.0[c] as f32 * (1.0 - a) + layer.rgb[i][c] * a)
                        .round()
                        .clamp(0.0, 255.0) as u8;
                }
            }
        }
    }

    /// The coverage (0..1 per pixel, row-major) the mask would have; for tests and statistics.
    pub fn coverage(
        &self,
        width: u32,
        height: u32,
        lm: &Landmarks5,
        rng: &mut impl Rng,
        mode: MaskMode,
    ) -> Vec<f32> {
        self.render(width as usize, height as usize, lm, rng, mode)
            .alpha
    }

    fn render(
        &self,
        w: usize,
        h: usize,
        lm: &Landmarks5,
        rng: &mut impl Rng,
        mode: MaskMode,
    ) -> Layer {
        let mut dst = face_anchors(lm);
        let eye_dist = (lm[1][0] - lm[0][0]).hypot(lm[1][1] - lm[0][1]);
        let train = mode == MaskMode::Train;
        if train && self.cfg.shift_px > 0.0 {
            let s = self.cfg.shift_px * eye_dist / 35.24;
            for (i, p) in dst.iter_mut().enumerate() {
                p[0] += rng.gen_range(-s..=s);
                // Top points only move down (a higher mask would reach the eyes).
                p[1] += if i < 3 {
                    rng.gen_range(0.0..=s)
                } else {
                    rng.gen_range(-s..=s)
                };
            }
        }
        let tint =
            (train && self.cfg.tint).then(|| [0; 3].map(|_: u8| rng.gen_range(0.0f32..150.0)));
        let mut layer = match &self.source {
            MaskSource::Procedural => procedural_layer(w, h, &dst, rng, train),
            MaskSource::Templates(ts) => {
                let t = &ts[rng.gen_range(0..ts.len())];
                template_layer(w, h, t, &dst)
            }
        };
        if let Some(tint) = tint {
            // Darken and shift towards the tint: a coloured mask that keeps its texture.
            for px in &mut layer.rgb {
                for c in 0..3 {
                    px[c] = (px[c] * 0.6 + tint[c]).min(255.0);
                }
            }
        }
        layer
    }
}

fn template_layer(w: usize, h: usize, t: &MaskTemplate, dst: &[[f32; 2]; 6]) -> Layer {
    let mut layer = Layer {
        rgb: vec![[0.0; 3]; w * h],
        alpha: vec![0.0; w * h],
    };
    let Some(to_template) = Homography::fit(dst, &t.anchors) else {
        return layer;
    };
    let (tw, th) = (t.rgba.width() as i64, t.rgba.height() as i64);
    let raw = t.rgba.as_raw();
    let (x0, y0, x1, y1) = bbox(dst, w, h, 6.0);
    for y in y0..y1 {
        for x in x0..x1 {
            let [u, v] = to_template.apply([x as f64, y as f64]);
            if !(u > -1.0 && v > -1.0 && u < tw as f64 && v < th as f64) {
                continue;
            }
            let (fu, fv) = (u.floor(), v.floor());
            let (wu, wv) = ((u - fu) as f32, (v - fv) as f32);
            let mut acc = [0f32; 4];
            for (dx, dy, wt) in [
                (0, 0, (1.0 - wu) * (1.0 - wv)),
                (1, 0, wu * (1.0 - wv)),
                (0, 1, (1.0 - wu) * wv),
                (1, 1, wu * wv),
            ] {
                let (sx, sy) = (fu as i64 + dx, fv as i64 + dy);
                if sx < 0 || sy < 0 || sx >= tw || sy >= th {
                    continue;
                }
                let i = ((sy * tw + sx) * 4) as usize;
                let a = raw[i + 3] as f32 / 255.0 * wt;
                for c in 0..3 {
                    acc[c] += raw[i + c] as f32 * a;
                }
                acc[3] += a;
            }
            if acc[3] > 1e-4 {
                let i = y * w + x;
                layer.alpha[i] = acc[3].min(1.0);
                layer.rgb[i] = [acc[0] / acc[3], acc[1] / acc[3], acc[2] / acc[3]];
            }
        }
    }
    layer
}

fn bbox(pts: &[[f32; 2]], w: usize, h: usize, margin: f32) -> (usize, usize, usize, usize) {
    let minx = pts.iter().map(|p| p[0]).fold(f32::INFINITY, f32::min) - margin;
    let maxx = pts.iter().map(|p| p[0]).fold(f32::NEG_INFINITY, f32::max) + margin;
    let miny = pts.iter().map(|p| p[1]).fold(f32::INFINITY, f32::min) - margin;
    let maxy = pts.iter().map(|p| p[1]).fold(f32::NEG_INFINITY, f32::max) + margin;
    let c = |v: f32, hi: usize| (v.max(0.0) as usize).min(hi);
    (c(minx, w), c(miny, h), c(maxx.ceil(), w), c(maxy.ceil(), h))
}

/// A point on the quadratic Bézier from `p0` to `p2` that passes through `mid` at t = 1/2.
fn through(p0: [f32; 2], mid: [f32; 2], p2: [f32; 2], t: f32) -> [f32; 2] {
    let c = [
        2.0 * mid[0] - (p0[0] + p2[0]) / 2.0,
        2.0 * mid[1] - (p0[1] + p2[1]) / 2.0,
    ];
    let u = 1.0 - t;
    [
        u * u * p0[0] + 2.0 * u * t * c[0] + t * t * p2[0],
        u * u * p0[1] + 2.0 * u * t * c[1] + t * t * p2[1],
    ]
}

/// A surgical-style polygon through the six anchors: curved top edge over the nose bridge,
/// rounded chin, horizontal pleats and soft vertical shading.
fn procedural_layer(
    w: usize,
    h: usize,
    a: &[[f32; 2]; 6],
    rng: &mut impl Rng,
    train: bool,
) -> Layer {
    const STEPS: usize = 12;
    let mut poly: Vec<[f32; 2]> = (0..=STEPS)
        .map(|k| through(a[0], a[1], a[2], k as f32 / STEPS as f32))
        .collect();
    poly.extend((0..=STEPS).map(|k| through(a[5], a[4], a[3], k as f32 / STEPS as f32)));
    let colour = if train {
        PROCEDURAL_COLOURS[rng.gen_range(0..PROCEDURAL_COLOURS.len())]
    } else {
        PROCEDURAL_COLOURS[0]
    };
    let pleats = if train { rng.gen_range(2..=4) } else { 3 };
    let (top, bottom) = (a[1][1], a[4][1]);
    let mut layer = Layer {
        rgb: vec![[0.0; 3]; w * h],
        alpha: vec![0.0; w * h],
    };
    let (x0, y0, x1, y1) = bbox(&poly, w, h, 1.0);
    let mut row = vec![0f32; w];
    let mut crossings: Vec<f32> = Vec::with_capacity(poly.len());
    for y in y0..y1 {
        polygon_row_coverage(&poly, y as f32, &mut crossings, &mut row[..]);
        let rel = ((y as f32 - top) / (bottom - top)).clamp(0.0, 1.0);
        let pleat = ((rel * pleats as f32 * std::f32::consts::PI * 2.0).sin() * 0.5 + 0.5).powi(8);
        let shade = (1.0 - 0.18 * rel) * (1.0 - 0.22 * pleat);
        let rgb = colour.map(|c| c * shade);
        for (x, &alpha) in row.iter().enumerate().take(x1).skip(x0) {
            if alpha > 0.0 {
                let i = y * w + x;
                layer.alpha[i] = alpha.min(1.0);
                layer.rgb[i] = rgb;
            }
        }
    }
    layer
}

/// Anti-aliased coverage of pixel row `y` (pixel centres at integer coordinates) by the
/// polygon, written into `out`: four sub-scanlines, each adding the exact horizontal overlap of
/// every pixel with the polygon's inside intervals (even-odd rule).
fn polygon_row_coverage(poly: &[[f32; 2]], y: f32, crossings: &mut Vec<f32>, out: &mut [f32]) {
    const SUB: usize = 4;
    out.iter_mut().for_each(|v| *v = 0.0);
    for s in 0..SUB {
        let yy = y - 0.5 + (s as f32 + 0.5) / SUB as f32;
        crossings.clear();
        for i in 0..poly.len() {
            let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
            if (a[1] > yy) != (b[1] > yy) {
                crossings.push(a[0] + (b[0] - a[0]) * (yy - a[1]) / (b[1] - a[1]));
            }
        }
        crossings.sort_by(f32::total_cmp);
        for pair in crossings.chunks_exact(2) {
            // Pixel x covers [x - 0.5, x + 0.5).
            let (l, r) = (
                (pair[0] + 0.5).max(0.0),
                (pair[1] + 0.5).min(out.len() as f32),
            );
            if r <= l {
                continue;
            }
            let (first, last) = (l.floor() as usize, (r.ceil() as usize).min(out.len()));
            for (x, v) in out.iter_mut().enumerate().take(last).skip(first) {
                let overlap = (r.min(x as f32 + 1.0) - l.max(x as f32)).max(0.0);
                *v += overlap / SUB as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use shared::ARCFACE_TEMPLATE_112 as T;

    /// Mean coverage in a box of half-size `r` around `c`.
    fn mean_cover(cov: &[f32], c: [f32; 2], rx: i32, ry: i32) -> f32 {
        let mut s = 0.0;
        let mut n = 0.0;
        for y in (c[1] as i32 - ry)..=(c[1] as i32 + ry) {
            for x in (c[0] as i32 - rx)..=(c[0] as i32 + rx) {
                s += cov[(y * 112 + x) as usize];
                n += 1.0;
            }
        }
        s / n
    }

    fn check_covers_nose_and_mouth_not_eyes(masker: &Masker) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut worst = 0f32;
        for mode in [
            MaskMode::Eval,
            MaskMode::Train,
            MaskMode::Train,
            MaskMode::Train,
            MaskMode::Train,
        ] {
            for _ in 0..8 {
                let cov = masker.coverage(112, 112, &T, &mut rng, mode);
                let nose = mean_cover(&cov, T[2], 5, 4);
                let mouth = mean_cover(
                    &cov,
                    [(T[3][0] + T[4][0]) / 2.0, (T[3][1] + T[4][1]) / 2.0],
                    16,
                    3,
                );
                let eyes = mean_cover(&cov, T[0], 6, 3).max(mean_cover(&cov, T[1], 6, 3));
                assert!(nose > 0.95, "{mode:?}: nose coverage {nose}");
                assert!(mouth > 0.95, "{mode:?}: mouth coverage {mouth}");
                assert!(eyes < 0.02, "{mode:?}: eye coverage {eyes}");
                worst = worst.max(eyes);
            }
        }
        eprintln!("worst eye coverage {worst}");
    }

    #[test]
    fn procedural_masks_cover_nose_and_mouth_not_eyes() {
        check_covers_nose_and_mouth_not_eyes(&Masker::procedural(MaskConfig::default()));
    }

    #[test]
    fn template_masks_cover_nose_and_mouth_not_eyes() {
        let Some(dir) = crate::data::kit_file("masks/maskthe_face") else {
            return;
        };
        let masker = Masker::from_dir(&dir, MaskConfig::default()).unwrap();
        let MaskSource::Templates(ts) = &masker.source else {
            unreachable!()
        };
        assert!(
            ts.len() >= 5,
            "frontal templates: {:?}",
            ts.iter().map(|t| &t.name).collect::<Vec<_>>()
        );
        for t in ts {
            let one = Masker {
                source: MaskSource::Templates(vec![t.clone()]),
                cfg: MaskConfig::default(),
            };
            eprintln!("checking template {}", t.name);
            check_covers_nose_and_mouth_not_eyes(&one);
        }
    }

    #[test]
    fn masks_are_deterministic_by_seed_and_eval_is_fixed() {
        let m = Masker::procedural(MaskConfig::default());
        let face = RgbImage::from_pixel(112, 112, image::Rgb([200, 150, 120]));
        let run = |seed, mode| {
            let mut img = face.clone();
            m.apply(&mut img, &T, &mut ChaCha8Rng::seed_from_u64(seed), mode);
            img
        };
        assert_eq!(run(3, MaskMode::Train), run(3, MaskMode::Train));
        assert_ne!(run(3, MaskMode::Train), run(4, MaskMode::Train));
        assert_eq!(run(3, MaskMode::Eval), run(4, MaskMode::Eval));
        assert_ne!(run(3, MaskMode::Eval), face);
    }

    #[test]
    fn homography_recovers_a_projective_map() {
        let truth = Homography([1.2, 0.1, 5.0, -0.05, 0.9, 3.0, 0.001, -0.002, 1.0]);
        let src: Vec<[f32; 2]> = vec![
            [0.0, 0.0],
            [100.0, 5.0],
            [90.0, 80.0],
            [10.0, 70.0],
            [50.0, 40.0],
            [30.0, 90.0],
        ];
        let dst: Vec<[f32; 2]> = src
            .iter()
            .map(|p| {
                let q = truth.apply([p[0] as f64, p[1] as f64]);
                [q[0] as f32, q[1] as f32]
            })
            .collect();
        let est = Homography::fit(&src, &dst).unwrap();
        for (s, d) in src.iter().zip(&dst) {
            let q = est.apply([s[0] as f64, s[1] as f64]);
            assert!(
                (q[0] - d[0] as f64).abs() < 1e-2 && (q[1] - d[1] as f64).abs() < 1e-2,
                "{q:?} vs {d:?}"
            );
        }
        let inv = est.inverse().unwrap();
        let back = inv.apply(est.apply([12.0, 34.0]));
        assert!((back[0] - 12.0).abs() < 1e-6 && (back[1] - 34.0).abs() < 1e-6);
        assert!(Homography::fit(&src[..3], &dst[..3]).is_none());
    }

    #[test]
    fn a_bad_mask_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Masker::from_dir(dir.path(), MaskConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no masks.cfg"), "{err}");
        std::fs::write(
            dir.path().join("masks.cfg"),
            "[m]\ntemplate: m.png\nmask_a: 1, 2\n",
        )
        .unwrap();
        let err = Masker::from_dir(dir.path(), MaskConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("[m] has a template but no mask_b"), "{err}");
    }
}
