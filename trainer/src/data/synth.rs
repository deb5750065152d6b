//! The built-in synthetic identities: procedurally rendered, already-aligned 112x112 faces.
//!
//! Each identity has stable traits drawn from `(seed, identity)`: face shape, skin tone and
//! texture (moles, noise pattern), hair colour and style, eye spacing/size/iris colour, brows,
//! nose, mouth. Each image adds nuisance drawn from `(seed, identity, image)`: lighting, a small
//! pose (in-plane similarity warp plus a pseudo-yaw of the inner features), expression (smile,
//! open mouth, raised brows, squint), an age-like texture (forehead lines, crow's feet,
//! nasolabial folds, eye bags, sagging jaw and mouth corners, greying), noise and blur.
//! Everything is a function of the seed: the same call gives the same bytes on any machine and
//! with any number of threads. Features sit where the ArcFace template puts them
//! (`shared::ARCFACE_TEMPLATE_112`), so the faces are "aligned" exactly like real crops.
//!
//! [`generate`] writes the same files a real user has: `train.rec`/`train.idx` (insightface
//! convention), `synth_val.bin` (unmasked pairs of held-out identities) and
//! `synth_val_masked.bin` (the same pairs, first image of each pair masked with a fixed seed; see
//! [`super::verification`]), plus `synth.toml` recording the configuration.

use super::mask::{MaskConfig, MaskMode, Masker};
use super::verification::PairSet;
use super::{encode_jpeg, recordio, DataError, FACE_SIZE};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use shared::{Landmarks5, ARCFACE_TEMPLATE_112 as T};
use std::path::{Path, PathBuf};

/// How hard the synthetic task is. All knobs scale continuously; 0 switches a nuisance off.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Difficulty {
    /// How far identity traits spread around the average face (1 = default, smaller = more alike).
    pub identity_spread: f32,
    /// Extra factor on the spread of the traits a mask leaves visible (eye geometry, brows,
    /// hairline): below 1, people differ mostly below the eyes, so masked probes are harder.
    pub upper_face_spread: f32,
    /// Maximum in-plane rotation (degrees), scale change (fraction) and shift (pixels).
    pub pose_deg: f32,
    pub scale_jitter: f32,
    pub shift_px: f32,
    /// Maximum pseudo-yaw: inner features move sideways by up to this many pixels.
    pub yaw_px: f32,
    /// 0..1: strength of directional light, brightness and colour-temperature changes.
    pub lighting: f32,
    /// 0..1: strength of smile, open mouth, brow raise and squint.
    pub expression: f32,
    /// Age-like texture strength is drawn in [0, age_max] per image.
    pub age_max: f32,
    /// Standard deviation of pixel noise, in 0..255 units.
    pub noise_sigma: f32,
    pub blur_prob: f32,
    pub blur_max_sigma: f32,
}

impl Default for Difficulty {
    fn default() -> Self {
        Self {
            identity_spread: 1.0,
            upper_face_spread: 0.7,
            pose_deg: 6.0,
            scale_jitter: 0.05,
            shift_px: 2.0,
            yaw_px: 2.5,
            lighting: 0.7,
            expression: 0.7,
            age_max: 0.8,
            noise_sigma: 4.0,
            blur_prob: 0.3,
            blur_max_sigma: 1.0,
        }
    }
}

impl Difficulty {
    /// Few nuisances: for smoke tests that must learn quickly.
    pub fn easy() -> Self {
        Self {
            upper_face_spread: 1.0,
            pose_deg: 2.0,
            scale_jitter: 0.02,
            shift_px: 1.0,
            yaw_px: 1.0,
            lighting: 0.3,
            expression: 0.3,
            age_max: 0.3,
            noise_sigma: 2.0,
            blur_prob: 0.1,
            ..Self::default()
        }
    }
    /// Similar identities and strong nuisance.
    pub fn hard() -> Self {
        Self {
            identity_spread: 0.7,
            upper_face_spread: 0.5,
            pose_deg: 10.0,
            scale_jitter: 0.08,
            shift_px: 3.0,
            yaw_px: 4.0,
            lighting: 1.0,
            expression: 1.0,
            age_max: 1.0,
            noise_sigma: 7.0,
            blur_prob: 0.5,
            blur_max_sigma: 1.4,
        }
    }
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "easy" => Some(Self::easy()),
            "default" | "medium" => Some(Self::default()),
            "hard" => Some(Self::hard()),
            _ => None,
        }
    }
}

/// What `trainer synth` generates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SynthConfig {
    pub identities: u32,
    pub images_per_id: u32,
    pub seed: u64,
    /// Held-out identities for the verification pairs (disjoint from the training ones).
    pub val_identities: u32,
    /// Verification pairs (half same, half different, in 10 contiguous folds).
    pub val_pairs: u32,
    pub jpeg_quality: u8,
    pub difficulty: Difficulty,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            identities: 200,
            images_per_id: 20,
            seed: 0,
            val_identities: 100,
            val_pairs: 1000,
            jpeg_quality: 95,
            difficulty: Difficulty::default(),
        }
    }
}

impl SynthConfig {
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |m: &str| Err(DataError::Config(m.to_string()));
        if self.identities == 0 || self.images_per_id == 0 {
            return bad("identities and images-per-id must be at least 1");
        }
        if self.val_pairs > 0 && (self.val_identities < 2 || self.val_pairs % 20 != 0) {
            return bad("verification needs at least 2 identities and a pair count that is a multiple of 20 (10 folds of same/different halves)");
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return bad("jpeg quality must be in 1..=100");
        }
        Ok(())
    }
}

/// splitmix64: decorrelates seeds so that neighbouring identities get unrelated streams.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator seeded by a tuple of integers.
pub fn rng_for(parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(parts.iter().fold(0x5EED_u64, |acc, &p| mix(acc ^ mix(p))))
}

/// Stable traits of one synthetic person.
#[derive(Debug, Clone)]
pub struct Identity {
    face_rx: f32,
    face_ry: f32,
    face_cy: f32,
    jaw: f32,
    skin: [f32; 3],
    hair: [f32; 3],
    hairline: f32,
    hair_curve: f32,
    hair_part: f32,
    long_hair: bool,
    greying: f32,
    eye_dx: f32,
    eye_dy: f32,
    eye_w: f32,
    eye_h: f32,
    iris: [f32; 3],
    brow_gap: f32,
    brow_thick: f32,
    brow_arch: f32,
    brow_tilt: f32,
    nose_dy: f32,
    nose_w: f32,
    mouth_dy: f32,
    mouth_w: f32,
    lip_upper: f32,
    lip_lower: f32,
    lip: [f32; 3],
    moles: Vec<[f32; 3]>,
    texture_seed: u32,
    wrinkle_phase: f32,
}

fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

impl Identity {
    /// Traits of identity `id` under `seed`, spread around the average face as `d` says.
    pub fn new(seed: u64, id: u64, d: &Difficulty) -> Self {
        let mut r = rng_for(&[seed, id, 0x1D]);
        let s = d.identity_spread.max(0.0);
        let up = s * d.upper_face_spread.max(0.0);
        let dev = |r: &mut ChaCha8Rng, range: f32| r.gen_range(-1.0f32..=1.0) * range * s;
        let dev_up = |r: &mut ChaCha8Rng, range: f32| r.gen_range(-1.0f32..=1.0) * range * up;
        const SKINS: [[f32; 3]; 4] = [
            [245.0, 215.0, 190.0],
            [225.0, 180.0, 140.0],
            [175.0, 125.0, 90.0],
            [105.0, 70.0, 50.0],
        ];
        let tone = (0.5 + dev(&mut r, 0.5)).clamp(0.0, 0.999) * 3.0;
        let skin = lerp3(SKINS[tone as usize], SKINS[tone as usize + 1], tone.fract());
        const HAIRS: [[f32; 3]; 5] = [
            [25.0, 20.0, 18.0],
            [70.0, 45.0, 30.0],
            [130.0, 90.0, 55.0],
            [200.0, 165.0, 110.0],
            [140.0, 60.0, 35.0],
        ];
        let hair = HAIRS[r.gen_range(0..HAIRS.len())]
            .map(|c| (c * (1.0 + dev(&mut r, 0.15))).clamp(0.0, 255.0));
        let iris_pal: [[f32; 3]; 4] = [
            [70.0, 45.0, 25.0],
            [110.0, 80.0, 40.0],
            [70.0, 110.0, 150.0],
            [90.0, 120.0, 80.0],
        ];
        let iris = iris_pal[r.gen_range(0..iris_pal.len())];
        let lip = lerp3(skin, [170.0, 80.0, 85.0], 0.45 + dev(&mut r, 0.15));
        let n_moles = r.gen_range(0..4);
        let moles = (0..n_moles)
            .map(|_| {
                [
                    56.0 + r.gen_range(-30.0..30.0),
                    r.gen_range(30.0..105.0),
                    r.gen_range(0.8..1.8),
                ]
            })
            .collect();
        Self {
            face_rx: 39.0 + dev(&mut r, 4.0),
            face_ry: 52.0 + dev(&mut r, 4.0),
            face_cy: 64.0 + dev(&mut r, 2.0),
            jaw: 0.3 + dev(&mut r, 0.2),
            skin,
            hair,
            hairline: 24.0 + dev_up(&mut r, 7.0),
            hair_curve: 6.0 + dev_up(&mut r, 5.0),
            hair_part: dev_up(&mut r, 12.0),
            long_hair: r.gen_bool(0.4),
            greying: r.gen_range(0.0..1.0),
            eye_dx: dev_up(&mut r, 2.5),
            eye_dy: dev_up(&mut r, 1.5),
            eye_w: 7.0 + dev_up(&mut r, 1.3),
            eye_h: 3.3 + dev_up(&mut r, 0.8),
            iris,
            brow_gap: 8.0 + dev_up(&mut r, 2.0),
            brow_thick: 2.6 + dev_up(&mut r, 1.0),
            brow_arch: 2.0 + dev_up(&mut r, 1.5),
            brow_tilt: dev_up(&mut r, 1.5),
            nose_dy: dev(&mut r, 2.5),
            nose_w: 6.5 + dev(&mut r, 1.5),
            mouth_dy: dev(&mut r, 2.0),
            mouth_w: 15.0 + dev(&mut r, 2.5),
            lip_upper: 2.6 + dev(&mut r, 0.9),
            lip_lower: 3.4 + dev(&mut r, 1.0),
            lip,
            moles,
            texture_seed: r.gen(),
            wrinkle_phase: r.gen_range(0.0..std::f32::consts::TAU),
        }
    }
}

/// Per-image nuisance, drawn from the image's own stream.
#[derive(Debug, Clone)]
struct Nuisance {
    angle: f32,
    scale: f32,
    shift: [f32; 2],
    yaw: f32,
    light_dir: [f32; 2],
    light_strength: f32,
    brightness: f32,
    temperature: f32,
    smile: f32,
    mouth_open: f32,
    brow_raise: f32,
    squint: f32,
    gaze: [f32; 2],
    age: f32,
    background: [f32; 3],
    noise_sigma: f32,
    blur_sigma: Option<f32>,
}

impl Nuisance {
    fn draw(r: &mut ChaCha8Rng, d: &Difficulty) -> Self {
        let u = |r: &mut ChaCha8Rng| r.gen_range(-1.0f32..=1.0);
        let light_angle = r.gen_range(0.0..std::f32::consts::TAU);
        Self {
            angle: u(r) * d.pose_deg.to_radians(),
            scale: 1.0 + u(r) * d.scale_jitter,
            shift: [u(r) * d.shift_px, u(r) * d.shift_px],
            yaw: u(r) * d.yaw_px,
            light_dir: [light_angle.cos(), light_angle.sin()],
            light_strength: r.gen_range(0.0..=1.0) * d.lighting,
            brightness: 1.0 + u(r) * 0.25 * d.lighting,
            temperature: u(r) * 0.08 * d.lighting,
            smile: u(r) * d.expression,
            mouth_open: (r.gen_range(-1.0f32..=1.0)).max(0.0) * d.expression,
            brow_raise: u(r) * d.expression,
            squint: r.gen_range(0.0..=1.0) * 0.5 * d.expression,
            gaze: [u(r) * 1.0, u(r) * 0.5],
            age: r.gen_range(0.0..=1.0) * d.age_max,
            background: [
                r.gen_range(40.0..220.0),
                r.gen_range(40.0..220.0),
                r.gen_range(40.0..220.0),
            ],
            noise_sigma: d.noise_sigma,
            blur_sigma: (d.blur_prob > 0.0 && r.gen::<f32>() < d.blur_prob)
                .then(|| r.gen_range(0.3..=d.blur_max_sigma.max(0.3))),
        }
    }
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

fn hash(ix: i32, iy: i32, seed: u32) -> f32 {
    let mut h = (ix as u32).wrapping_mul(0x27D4_EB2D)
        ^ (iy as u32).wrapping_mul(0x1656_67B1)
        ^ seed.wrapping_mul(0x9E37_79B9);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    h = h.wrapping_mul(0x297A_2D39);
    h ^= h >> 15;
    h as f32 / u32::MAX as f32
}

/// Smooth value noise in [0, 1) with the given cell size.
fn value_noise(x: f32, y: f32, cell: f32, seed: u32) -> f32 {
    let (gx, gy) = (x / cell, y / cell);
    let (ix, iy) = (gx.floor() as i32, gy.floor() as i32);
    let (fx, fy) = (
        smoothstep(0.0, 1.0, gx.fract().abs()),
        smoothstep(0.0, 1.0, gy.fract().abs()),
    );
    let (fx, fy) = (
        if gx < 0.0 { 1.0 - fx } else { fx },
        if gy < 0.0 { 1.0 - fy } else { fy },
    );
    let a = hash(ix, iy, seed) + (hash(ix + 1, iy, seed) - hash(ix, iy, seed)) * fx;
    let b = hash(ix, iy + 1, seed) + (hash(ix + 1, iy + 1, seed) - hash(ix, iy + 1, seed)) * fx;
    a + (b - a) * fy
}

fn mix_in(c: &mut [f32; 3], colour: [f32; 3], alpha: f32) {
    if alpha > 0.0 {
        let a = alpha.min(1.0);
        for k in 0..3 {
            c[k] += (colour[k] - c[k]) * a;
        }
    }
}

fn darken(c: &mut [f32; 3], amount: f32) {
    if amount > 0.0 {
        let f = 1.0 - amount.min(1.0);
        for v in c.iter_mut() {
            *v *= f;
        }
    }
}

/// Coverage of a band of half-width `hw` around a curve at signed distance `d`.
fn band(d: f32, hw: f32) -> f32 {
    (hw + 0.5 - d.abs()).clamp(0.0, 1.0)
}

/// Everything needed to shade one image, in canonical (template) coordinates.
struct Scene<'a> {
    id: &'a Identity,
    n: &'a Nuisance,
    eyes: [[f32; 2]; 2],
    nose: [f32; 2],
    mouth: [f32; 2],
    mouth_w: f32,
    eye_h: f32,
    brow_y: f32,
    hair: [f32; 3],
    sag: f32,
}

impl<'a> Scene<'a> {
    fn new(id: &'a Identity, n: &'a Nuisance) -> Self {
        let yaw = n.yaw;
        let eyes = [
            [
                T[0][0] - id.eye_dx + yaw,
                (T[0][1] + T[1][1]) / 2.0 + id.eye_dy,
            ],
            [
                T[1][0] + id.eye_dx + yaw,
                (T[0][1] + T[1][1]) / 2.0 + id.eye_dy,
            ],
        ];
        let sag = n.age * 0.8;
        let nose = [T[2][0] + 1.3 * yaw, T[2][1] + id.nose_dy];
        let mouth = [
            (T[3][0] + T[4][0]) / 2.0 + 1.1 * yaw,
            (T[3][1] + T[4][1]) / 2.0 + id.mouth_dy + n.mouth_open * 1.5 + sag,
        ];
        let mouth_w = id.mouth_w * (1.0 + 0.12 * n.smile.max(0.0));
        let hair = lerp3(
            id.hair,
            [175.0, 175.0, 178.0],
            (n.age * id.greying).clamp(0.0, 1.0),
        );
        Self {
            id,
            n,
            eyes,
            nose,
            mouth,
            mouth_w,
            eye_h: id.eye_h * (1.0 - n.squint),
            brow_y: eyes[0][1] - id.brow_gap - 1.5 * n.brow_raise,
            hair,
            sag,
        }
    }

    /// The five landmarks of this face in canonical coordinates.
    fn landmarks(&self) -> Landmarks5 {
        let lift = 2.0 * self.n.smile - 1.5 * self.sag;
        [
            self.eyes[0],
            self.eyes[1],
            self.nose,
            [self.mouth[0] - self.mouth_w, self.mouth[1] - lift],
            [self.mouth[0] + self.mouth_w, self.mouth[1] - lift],
        ]
    }

    /// Signed distance (pixels, positive inside) to the face outline, and the outline's
    /// normalised coordinates for shading.
    fn face(&self, x: f32, y: f32) -> (f32, f32, f32) {
        let id = self.id;
        let dy = y - id.face_cy;
        let v = dy / id.face_ry;
        let lower = smoothstep(0.0, 1.0, v);
        let rx = id.face_rx * (1.0 - id.jaw * 0.35 * lower) * (1.0 + 0.07 * self.sag * lower);
        let u = (x - 56.0 - 0.4 * self.n.yaw) / rx;
        let r = (u * u + v * v).sqrt();
        ((1.0 - r) * rx.min(id.face_ry), u, v)
    }

    fn shade(&self, x: f32, y: f32) -> [f32; 3] {
        let (id, n) = (self.id, self.n);
        let bgv = 0.85 + 0.15 * (y / 112.0);
        let mut c = n.background.map(|b| b * bgv);
        let (fd, u, v) = self.face(x, y);
        // Head (hair volume) behind the face, and long hair down the sides.
        let head = {
            let (hu, hv) = (
                (x - 56.0) / (id.face_rx + 5.0),
                (y - id.face_cy + 4.0) / (id.face_ry + 6.0),
            );
            1.0 - (hu * hu + hv * hv).sqrt()
        };
        let long_sides =
            id.long_hair && y > 40.0 && y < 112.0 && (x - 56.0).abs() < id.face_rx + 7.0;
        let hair_tex = 0.85 + 0.3 * value_noise(x * 3.0, y * 0.6, 2.0, id.texture_seed ^ 7);
        let hair_col = self.hair.map(|h| h * hair_tex);
        if head > 0.0 && y < id.face_cy || long_sides {
            mix_in(&mut c, hair_col, 1.0);
        }
        // Neck.
        if y > id.face_cy + id.face_ry * 0.6 && (x - 56.0 - 0.3 * n.yaw).abs() < id.face_rx * 0.55 {
            mix_in(&mut c, id.skin.map(|s| s * 0.78), 1.0);
        }
        let face_a = (fd + 0.5).clamp(0.0, 1.0);
        if face_a > 0.0 {
            let mut skin = id.skin;
            let tex = value_noise(x, y, 3.0, id.texture_seed) - 0.5;
            skin = skin.map(|s| s * (1.0 + 0.06 * tex));
            let nz = (1.0 - u * u - v * v).max(0.0).sqrt();
            let lit = 0.82
                + 0.18 * nz
                + n.light_strength * 0.35 * (u * n.light_dir[0] + v * n.light_dir[1]);
            skin = skin.map(|s| s * lit);
            let mut f = skin;
            self.features(&mut f, x, y);
            mix_in(&mut c, f, face_a);
        }
        // Hair over the forehead: above a curved hairline with a side part.
        let hx = (x - 56.0 - id.hair_part) / id.face_rx;
        let hairline = id.hairline + id.hair_curve * hx * hx
            - 3.0 * (hx * 2.0).clamp(-1.0, 1.0) * (id.hair_part / 12.0);
        if head > 0.0 && y < hairline {
            mix_in(&mut c, hair_col, (hairline - y + 0.5).clamp(0.0, 1.0));
        }
        // Colour temperature and overall brightness.
        let t = n.temperature;
        [
            c[0] * (1.0 + t) * n.brightness,
            c[1] * n.brightness,
            c[2] * (1.0 - t) * n.brightness,
        ]
    }

    /// Eyes, brows, nose, mouth and age texture on top of the skin colour `c`.
    fn features(&self, c: &mut [f32; 3], x: f32, y: f32) {
        let (id, n) = (self.id, self.n);
        let age = n.age;
        for mole in &id.moles {
            let d = (x - mole[0]).hypot(y - mole[1]);
            mix_in(
                c,
                [90.0, 60.0, 45.0],
                (mole[2] + 0.5 - d).clamp(0.0, 1.0) * 0.8,
            );
        }
        // Forehead lines.
        if age > 0.05 && y < self.brow_y - 3.0 && y > id.hairline && (x - 56.0).abs() < 24.0 {
            for k in 0..3 {
                let yk = self.brow_y - 6.0 - 4.0 * k as f32
                    + 1.2 * ((x * 0.18) + id.wrinkle_phase + k as f32).sin();
                darken(c, band(y - yk, 0.35) * age * 0.22);
            }
        }
        for (side, eye) in self.eyes.iter().enumerate() {
            let s = if side == 0 { -1.0 } else { 1.0 };
            let (dx, dy) = (x - eye[0], y - eye[1]);
            // Brow: an arched band above the eye, thinning outwards.
            let t = dx / (id.eye_w * 1.35);
            if t.abs() <= 1.05 {
                let yb = self.brow_y - id.brow_arch * (1.0 - t * t)
                    + id.brow_tilt * t * s
                    + (eye[1] - self.eyes[0][1]);
                let hw = id.brow_thick * 0.5 * (1.0 - 0.35 * (t * s).max(0.0));
                let a = band(y - yb, hw) * (1.05 - t.abs()).clamp(0.0, 1.0) * 4.0;
                mix_in(c, self.hair.map(|h| h * 0.8), a.min(0.95));
            }
            // Eye: an almond of half-size eye_w x eye_h with iris, pupil and lid line.
            let lx = dx / id.eye_w;
            if lx.abs() < 1.15 && dy.abs() < self.eye_h + 3.0 {
                let half = self.eye_h * (1.0 - lx * lx).max(0.0);
                let inside = (half - dy.abs() + 0.5).clamp(0.0, 1.0);
                if inside > 0.0 {
                    let mut e = [235.0, 228.0, 222.0];
                    let ir = (dx - n.gaze[0]).hypot(dy - n.gaze[1]);
                    mix_in(&mut e, id.iris, (3.3 - ir + 0.5).clamp(0.0, 1.0));
                    mix_in(&mut e, [15.0, 12.0, 12.0], (1.3 - ir + 0.5).clamp(0.0, 1.0));
                    mix_in(c, e, inside);
                }
                // Upper lid line and, with age, a bag under the eye.
                mix_in(
                    c,
                    [40.0, 28.0, 25.0],
                    band(dy + half + 0.4, 0.6) * (1.0 - lx * lx).max(0.0).sqrt(),
                );
                if age > 0.05 && dy > 0.0 {
                    darken(
                        c,
                        band(dy - half - 2.5 - 0.5 * self.sag, 1.2)
                            * age
                            * 0.18
                            * (1.0 - lx * lx).max(0.0),
                    );
                }
            }
            // Crow's feet at the outer corner.
            let (ox, oy) = (x - (eye[0] + s * (id.eye_w + 2.0)), y - eye[1]);
            if age > 0.05 && ox * s > 0.0 && ox.abs() < 5.0 && oy.abs() < 4.0 {
                for k in [-1.0f32, 0.0, 1.0] {
                    darken(
                        c,
                        band(oy - k * 0.6 * ox.abs() - k * 1.2, 0.25) * age * 0.25,
                    );
                }
            }
        }
        // Nose: bridge shading on the side away from the light, wings, nostrils, tip highlight.
        let nx = x - self.nose[0];
        let bridge_t = (y - (self.eyes[0][1] + 4.0)) / (self.nose[1] - self.eyes[0][1] - 4.0);
        if (0.0..=1.1).contains(&bridge_t) {
            let side = if n.light_dir[0] > 0.0 { -1.0 } else { 1.0 };
            let w = id.nose_w * (0.35 + 0.5 * bridge_t);
            darken(
                c,
                band(nx - side * w, 0.8) * (0.08 + 0.1 * n.light_strength) * bridge_t.min(1.0),
            );
        }
        for s in [-1.0f32, 1.0] {
            let (wx, wy) = (
                x - (self.nose[0] + s * id.nose_w * 0.55),
                y - (self.nose[1] + 1.6),
            );
            let d = (wx / 2.0).hypot(wy / 1.2);
            mix_in(c, [60.0, 35.0, 30.0], (1.0 - d).clamp(0.0, 1.0) * 2.0);
            let wing = (wx / (id.nose_w * 0.5)).hypot(wy / 3.5);
            darken(
                c,
                band((wing - 1.0) * 3.0, 0.4) * 0.15 * (wy < 1.0) as u8 as f32,
            );
            // Nasolabial fold from the wing to the mouth corner, deeper with age.
            if age > 0.05 {
                let (x0, y0) = (self.nose[0] + s * (id.nose_w + 1.5), self.nose[1]);
                let (x1, y1) = (
                    self.mouth[0] + s * (self.mouth_w + 3.0),
                    self.mouth[1] + 3.0,
                );
                let t = (y - y0) / (y1 - y0);
                if (0.0..=1.0).contains(&t) {
                    let xf = x0 + (x1 - x0) * t + s * 2.0 * (t * (1.0 - t));
                    darken(c, band(x - xf, 0.45) * age * 0.28);
                }
            }
        }
        let tip = ((x - self.nose[0]) / 3.0).hypot((y - self.nose[1] + 2.0) / 3.0);
        mix_in(
            c,
            c.map(|v| (v * 1.12).min(255.0)),
            (1.0 - tip).clamp(0.0, 1.0) * 0.6,
        );
        // Mouth: two lips around a lip line that curves with the smile and sags with age.
        let t = (x - self.mouth[0]) / self.mouth_w;
        if t.abs() < 1.1 {
            let bend = 3.0 * n.smile - 2.0 * self.sag;
            let y0 = self.mouth[1] - bend * t * t;
            let open = 4.0 * n.mouth_open;
            let shape = (1.0 - t * t).max(0.0).sqrt();
            let up = y0 - open / 2.0;
            let low = y0 + open / 2.0;
            let upper = (y > up - id.lip_upper * shape - 0.5 && y < up) as u8 as f32;
            let lower = (y > low && y < low + id.lip_lower * shape + 0.5) as u8 as f32;
            let edge = ((1.0 - t.abs()) * 6.0).clamp(0.0, 1.0);
            mix_in(c, self.id.lip, upper.max(lower) * edge);
            if open > 0.3 && y >= up && y <= low {
                mix_in(c, [55.0, 25.0, 28.0], edge);
            }
            mix_in(
                c,
                self.id.lip.map(|l| l * 0.55),
                band(y - y0, 0.4) * edge * (open <= 0.3) as u8 as f32,
            );
        }
    }
}

/// Render image `image` of identity `identity` (training and verification identities live in
/// separate identity spaces; see [`generate`]). Returns the face and its five landmarks.
pub fn render_face(seed: u64, identity: u64, image: u64, d: &Difficulty) -> (RgbImage, Landmarks5) {
    let (img, lm, _) = render_face_with_age(seed, identity, image, d);
    (img, lm)
}

/// [`render_face`], also returning the image's age-texture strength (0..`age_max`).
pub fn render_face_with_age(
    seed: u64,
    identity: u64,
    image: u64,
    d: &Difficulty,
) -> (RgbImage, Landmarks5, f32) {
    let id = Identity::new(seed, identity, d);
    render_with(&id, &mut rng_for(&[seed, identity, image, 0x1A]), d)
}

fn render_with(id: &Identity, r: &mut ChaCha8Rng, d: &Difficulty) -> (RgbImage, Landmarks5, f32) {
    let n = Nuisance::draw(r, d);
    let scene = Scene::new(id, &n);
    // The pose maps canonical -> image about the crop centre; sample through its inverse.
    let (ca, sa) = (n.angle.cos() * n.scale, n.angle.sin() * n.scale);
    let to_img = shared::Similarity {
        a: ca as f64,
        b: sa as f64,
        tx: (56.0 - (ca * 56.0 - sa * 56.0) + n.shift[0]) as f64,
        ty: (56.0 - (sa * 56.0 + ca * 56.0) + n.shift[1]) as f64,
    };
    let to_canon = to_img.inverse();
    let size = FACE_SIZE as usize;
    let mut px = vec![0f32; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            let [cx, cy] = to_canon.apply([x as f64, y as f64]);
            let c = scene.shade(cx as f32, cy as f32);
            px[(y * size + x) * 3..(y * size + x) * 3 + 3].copy_from_slice(&c);
        }
    }
    if n.noise_sigma > 0.0 {
        for v in px.iter_mut() {
            // Irwin-Hall(4) approximation of a unit normal: cheap and deterministic.
            let g: f32 = (0..4).map(|_| r.gen::<f32>()).sum::<f32>() - 2.0;
            *v += g * 1.732 * n.noise_sigma;
        }
    }
    let mut img = RgbImage::from_fn(FACE_SIZE, FACE_SIZE, |x, y| {
        let i = (y as usize * size + x as usize) * 3;
        Rgb([0, 1, 2].map(|c| px[i + c].round().clamp(0.0, 255.0) as u8))
    });
    if let Some(sigma) = n.blur_sigma {
        img = image::imageops::blur(&img, sigma);
    }
    let lm = scene.landmarks().map(|p| {
        let q = to_img.apply([p[0] as f64, p[1] as f64]);
        [q[0] as f32, q[1] as f32]
    });
    (img, lm, n.age)
}

/// Identity numbers of verification identities start here, far from the training ones.
const VAL_IDENTITY_BASE: u64 = 1 << 40;

/// The files [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct SynthOutput {
    pub rec: PathBuf,
    pub idx: PathBuf,
    pub val_bin: Option<PathBuf>,
    pub val_masked_bin: Option<PathBuf>,
    pub config: PathBuf,
}

/// Render the training set and verification pairs into `out_dir`; `progress` counts images.
pub fn generate(
    cfg: &SynthConfig,
    out_dir: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<SynthOutput, DataError> {
    cfg.validate()?;
    std::fs::create_dir_all(out_dir).map_err(|e| DataError::io(out_dir, e))?;
    progress
        .set_length(cfg.identities as u64 * cfg.images_per_id as u64 + 2 * cfg.val_pairs as u64);
    let d = &cfg.difficulty;
    let rec_path = out_dir.join("train.rec");
    // Rendered in parallel blocks and streamed into the pack: memory stays bounded.
    let per_id = cfg.images_per_id as usize;
    let faces = super::in_blocks(cfg.identities as usize * per_id, 512, |j| {
        let (i, k) = ((j / per_id) as u64, (j % per_id) as u64);
        let id = Identity::new(cfg.seed, i, d);
        let (img, _, age) = render_with(&id, &mut rng_for(&[cfg.seed, i, k, 0x1A]), d);
        let bytes = encode_jpeg(
            &img,
            cfg.jpeg_quality,
            &format!("synthetic identity {i} image {k}"),
        )?;
        progress.inc(1);
        Ok((i as u32, age, bytes))
    });
    let (rec, idx) = recordio::write_insightface(&rec_path, faces)?;

    let (mut val_bin, mut val_masked_bin) = (None, None);
    if cfg.val_pairs > 0 {
        let (plain, masked) = verification_pairs(cfg, progress)?;
        let p = out_dir.join("synth_val.bin");
        plain.write(&p)?;
        val_bin = Some(p);
        let p = out_dir.join("synth_val_masked.bin");
        masked.write(&p)?;
        val_masked_bin = Some(p);
    }
    let config = out_dir.join("synth.toml");
    let text = toml::to_string_pretty(cfg)
        .map_err(|e| DataError::Config(format!("cannot serialise config: {e}")))?;
    let header = "# maskgate synthetic dataset. synth_val_masked.bin: the first image of every pair is masked.\n";
    shared::atomic_write(&config, format!("{header}{text}").as_bytes())
        .map_err(|e| DataError::io(&config, e))?;
    progress.finish();
    Ok(SynthOutput {
        rec,
        idx,
        val_bin,
        val_masked_bin,
        config,
    })
}

/// Pairs of held-out identities in 10 contiguous folds, each half "same" then half "different",
/// and the same pairs with the first image masked (procedural mask, evaluation mode, fixed seed).
pub fn verification_pairs(
    cfg: &SynthConfig,
    progress: &indicatif::ProgressBar,
) -> Result<(PairSet, PairSet), DataError> {
    let d = &cfg.difficulty;
    let fold = (cfg.val_pairs / 10) as u64;
    let masker = Masker::procedural(MaskConfig::default());
    type EncodedPair = (Vec<u8>, Vec<u8>);
    let pairs: Vec<Result<[EncodedPair; 2], DataError>> = (0..cfg.val_pairs as u64)
        .into_par_iter()
        .map(|k| {
            let mut r = rng_for(&[cfg.seed, k, 0x9A1]);
            let same = k % fold < fold / 2;
            let n_ids = cfg.val_identities as u64;
            let a = r.gen_range(0..n_ids);
            let b = if same {
                a
            } else {
                (a + r.gen_range(1..n_ids)) % n_ids
            };
            // Image numbers are unique per pair, so "same" pairs are two different photos.
            let (img_a, _) = render_face(cfg.seed, VAL_IDENTITY_BASE + a, 2 * k, d);
            let (img_b, _) = render_face(cfg.seed, VAL_IDENTITY_BASE + b, 2 * k + 1, d);
            let mut masked_a = img_a.clone();
            masker.apply(
                &mut masked_a,
                &T, // from the template, as on real aligned crops
                &mut rng_for(&[cfg.seed, k, 0x3A5C]),
                MaskMode::Eval,
            );
            let origin = format!("verification pair {k}");
            let ea = encode_jpeg(&img_a, cfg.jpeg_quality, &origin)?;
            let eb = encode_jpeg(&img_b, cfg.jpeg_quality, &origin)?;
            let ema = encode_jpeg(&masked_a, cfg.jpeg_quality, &origin)?;
            progress.inc(2);
            Ok([(ea, eb.clone()), (ema, eb)])
        })
        .collect();
    let mut plain = PairSet::default();
    let mut masked = PairSet::default();
    for (k, p) in pairs.into_iter().enumerate() {
        let [(a, b), (ma, mb)] = p?;
        let same = k as u64 % fold < fold / 2;
        plain.images.extend([a, b]);
        plain.issame.push(same);
        masked.images.extend([ma, mb]);
        masked.issame.push(same);
    }
    Ok((plain, masked))
}

/// Identity numbers of the door-demo people start here (disjoint from training and verification).
const DOOR_IDENTITY_BASE: u64 = 1 << 41;

/// People for an end-to-end door run: who is enrolled, who is not, and their photos.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DoorPeopleConfig {
    /// People to enroll (`person_NNN/enroll_K.png`, unmasked).
    pub enrolled: u32,
    /// People never enrolled (`stranger_NNN/`), whose probes must be refused.
    pub strangers: u32,
    pub enroll_images: u32,
    /// Probe photos per person, each written unmasked (`probe_K.png`) and masked
    /// (`probe_K_masked.png`, evaluation-mode procedural mask).
    pub probes: u32,
}

/// Render [`DoorPeopleConfig`] into `out_dir` as lossless PNG aligned crops, the way an aligned
/// face export would hand them to `edge enroll` / `edge identify`. Returns the files written.
pub fn door_people(
    seed: u64,
    d: &Difficulty,
    people: &DoorPeopleConfig,
    out_dir: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<PathBuf>, DataError> {
    if people.enrolled == 0 || people.enroll_images == 0 || people.probes == 0 {
        return Err(DataError::Config(
            "door people need at least one enrolled person, enroll image and probe".into(),
        ));
    }
    let masker = Masker::procedural(MaskConfig::default());
    let total = people.enrolled + people.strangers;
    progress.set_length(total as u64 * (people.enroll_images + 2 * people.probes) as u64);
    let written: Vec<Result<Vec<PathBuf>, DataError>> = (0..total)
        .into_par_iter()
        .map(|p| {
            let enrolled = p < people.enrolled;
            let dir = if enrolled {
                out_dir.join(format!("person_{p:03}"))
            } else {
                out_dir.join(format!("stranger_{:03}", p - people.enrolled))
            };
            std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
            let identity = DOOR_IDENTITY_BASE + p as u64;
            let mut files = Vec::new();
            let mut save = |img: &RgbImage, name: String| -> Result<(), DataError> {
                let path = dir.join(name);
                let mut png = Vec::new();
                img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                    .map_err(|e| DataError::Config(format!("encoding {}: {e}", path.display())))?;
                shared::atomic_write(&path, &png).map_err(|e| DataError::io(&path, e))?;
                files.push(path);
                progress.inc(1);
                Ok(())
            };
            if enrolled {
                for k in 0..people.enroll_images {
                    let (img, _) = render_face(seed, identity, k as u64, d);
                    save(&img, format!("enroll_{k}.png"))?;
                }
            }
            for k in 0..people.probes {
                // Probe image numbers follow the enrollment ones: never the same photo.
                let (img, _) = render_face(seed, identity, (people.enroll_images + k) as u64, d);
                save(&img, format!("probe_{k}.png"))?;
                let mut masked = img.clone();
                masker.apply(
                    &mut masked,
                    &T,
                    &mut rng_for(&[seed, identity, k as u64, 0xD00A]),
                    MaskMode::Eval,
                );
                save(&masked, format!("probe_{k}_masked.png"))?;
            }
            Ok(files)
        })
        .collect();
    let mut all = Vec::new();
    for w in written {
        all.extend(w?);
    }
    progress.finish();
    Ok(all)
}

/// A training-free difficulty check: cosine similarity of mean-centred 28x28 grey thumbnails,
/// scored like the verification protocol (10 contiguous folds, threshold chosen on the other 9).
/// Returns (mean accuracy, mean cosine of same pairs, mean cosine of different pairs).
pub fn pixel_proxy_accuracy(pairs: &PairSet) -> Result<(f32, f32, f32), DataError> {
    let feats: Vec<Vec<f32>> = pairs.decode_all()?.iter().map(thumbnail).collect();
    let cos: Vec<f32> = (0..pairs.len())
        .map(|k| {
            feats[2 * k]
                .iter()
                .zip(&feats[2 * k + 1])
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect();
    let mean = |same: bool| {
        let v: Vec<f32> = cos
            .iter()
            .zip(&pairs.issame)
            .filter(|(_, &s)| s == same)
            .map(|(c, _)| *c)
            .collect();
        v.iter().sum::<f32>() / v.len().max(1) as f32
    };
    let n = cos.len();
    let folds = 10.min(n.max(1));
    let acc_at = |range: &mut dyn Iterator<Item = usize>, t: f32| {
        let (mut ok, mut total) = (0, 0);
        for i in range {
            ok += ((cos[i] > t) == pairs.issame[i]) as usize;
            total += 1;
        }
        ok as f32 / total.max(1) as f32
    };
    let mut accs = Vec::new();
    for f in 0..folds {
        let (lo, hi) = (f * n / folds, (f + 1) * n / folds);
        let best_t = (-100..=100)
            .map(|t| t as f32 / 100.0)
            .max_by(|&a, &b| {
                let acc = |t| acc_at(&mut (0..n).filter(|i| *i < lo || *i >= hi), t);
                acc(a).total_cmp(&acc(b))
            })
            .unwrap_or(0.0);
        accs.push(acc_at(&mut (lo..hi), best_t));
    }
    Ok((
        accs.iter().sum::<f32>() / accs.len().max(1) as f32,
        mean(true),
        mean(false),
    ))
}

fn thumbnail(img: &RgbImage) -> Vec<f32> {
    let mut v = vec![0f32; 28 * 28];
    for (x, y, p) in img.enumerate_pixels() {
        v[(y as usize / 4) * 28 + x as usize / 4] +=
            0.299 * p.0[0] as f32 + 0.587 * p.0[1] as f32 + 0.114 * p.0[2] as f32;
    }
    let m = v.iter().sum::<f32>() / v.len() as f32;
    v.iter_mut().for_each(|x| *x -= m);
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_is_deterministic_and_identities_differ() {
        let d = Difficulty::default();
        let (a, la) = render_face(1, 5, 0, &d);
        let (b, lb) = render_face(1, 5, 0, &d);
        assert_eq!(a, b);
        assert_eq!(la, lb);
        assert_ne!(a, render_face(1, 5, 1, &d).0, "images of one identity vary");
        assert_ne!(a, render_face(2, 5, 0, &d).0, "the seed matters");
        // Landmarks stay near the template: the faces are aligned.
        for (p, t) in la.iter().zip(T.iter()) {
            assert!((p[0] - t[0]).hypot(p[1] - t[1]) < 9.0, "{la:?}");
        }
    }

    #[test]
    fn small_dataset_is_deterministic_and_readable() {
        use crate::data::FaceSource;
        let cfg = SynthConfig {
            identities: 3,
            images_per_id: 2,
            val_identities: 4,
            val_pairs: 20,
            ..Default::default()
        };
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        for d in &dirs {
            generate(&cfg, d.path(), &indicatif::ProgressBar::hidden()).unwrap();
        }
        for f in [
            "train.rec",
            "train.idx",
            "synth_val.bin",
            "synth_val_masked.bin",
        ] {
            let a = std::fs::read(dirs[0].path().join(f)).unwrap();
            assert_eq!(
                a,
                std::fs::read(dirs[1].path().join(f)).unwrap(),
                "{f} differs between runs"
            );
        }
        let ds = crate::data::RecordDataset::open(&dirs[0].path().join("train.rec")).unwrap();
        assert_eq!((ds.len(), ds.num_classes()), (6, 3));
        let face = ds.read(5).unwrap();
        let labels = ds.header(5).unwrap().labels;
        assert_eq!(labels[0], 2.0);
        assert!(
            (0.0..=cfg.difficulty.age_max).contains(&labels[1]),
            "age label {labels:?}"
        );
        let ages: Vec<f32> = (0..6).map(|i| ds.header(i).unwrap().labels[1]).collect();
        assert!(
            ages.windows(2).any(|w| w[0] != w[1]),
            "age varies per image: {ages:?}"
        );
        assert_eq!(face.label, 2);
        crate::data::decode_face(&face.bytes, &face.origin).unwrap();
        let plain = PairSet::read(&dirs[0].path().join("synth_val.bin")).unwrap();
        let masked = PairSet::read(&dirs[0].path().join("synth_val_masked.bin")).unwrap();
        assert_eq!(plain.len(), 20);
        assert_eq!(plain.issame, masked.issame);
        assert_eq!(plain.issame.iter().filter(|s| **s).count(), 10);
        assert_ne!(plain.images[0], masked.images[0], "probe is masked");
        assert_eq!(plain.images[1], masked.images[1], "reference is not");
    }
}

#[cfg(test)]
mod door_people_tests {
    use super::*;

    #[test]
    fn door_people_are_written_as_decodable_crops_with_masked_probes() {
        let dir = tempfile::tempdir().unwrap();
        let people = DoorPeopleConfig {
            enrolled: 2,
            strangers: 1,
            enroll_images: 2,
            probes: 1,
        };
        let bar = indicatif::ProgressBar::hidden();
        let files = door_people(3, &Difficulty::default(), &people, dir.path(), &bar).unwrap();
        // 2 people x (2 enroll + 2 probes) + 1 stranger x 2 probes.
        assert_eq!(files.len(), 10);
        let read = |p: &str| image::open(dir.path().join(p)).unwrap().to_rgb8();
        let enroll = read("person_000/enroll_0.png");
        assert_eq!(enroll.dimensions(), (FACE_SIZE, FACE_SIZE));
        assert!(!dir.path().join("stranger_000/enroll_0.png").exists());
        let probe = read("person_001/probe_0.png");
        let masked = read("person_001/probe_0_masked.png");
        assert_ne!(probe, read("person_000/probe_0.png"), "people differ");
        // The mask covers the lower face and leaves the eyes alone.
        let changed = |y0: u32, y1: u32| {
            (y0..y1)
                .flat_map(|y| (0..FACE_SIZE).map(move |x| (x, y)))
                .filter(|&(x, y)| probe.get_pixel(x, y) != masked.get_pixel(x, y))
                .count()
        };
        assert!(changed(85, 100) > 500, "mouth region masked");
        assert_eq!(changed(35, 52), 0, "eye region untouched");
    }

    #[test]
    fn door_people_need_someone_to_enroll() {
        let dir = tempfile::tempdir().unwrap();
        let people = DoorPeopleConfig {
            enrolled: 0,
            strangers: 1,
            enroll_images: 1,
            probes: 1,
        };
        let bar = indicatif::ProgressBar::hidden();
        assert!(door_people(0, &Difficulty::default(), &people, dir.path(), &bar).is_err());
    }
}

#[cfg(test)]
mod difficulty_tests {
    use super::*;

    /// The default difficulty, judged by the training-free pixel proxy on 200 pairs of 40 held-out
    /// identities: unmasked pairs are separable but far from perfect, masked probes clearly
    /// worse. (Full 1000-pair figures are printed by `trainer synth --proxy`.)
    #[test]
    fn default_difficulty_is_hard_but_learnable_and_masks_hurt() {
        let cfg = SynthConfig {
            identities: 1,
            images_per_id: 1,
            val_identities: 40,
            val_pairs: 200,
            seed: 3,
            ..Default::default()
        };
        let (plain, masked) = verification_pairs(&cfg, &indicatif::ProgressBar::hidden()).unwrap();
        let (acc, same, diff) = pixel_proxy_accuracy(&plain).unwrap();
        let (macc, msame, mdiff) = pixel_proxy_accuracy(&masked).unwrap();
        eprintln!("proxy unmasked {acc:.3} (cos {same:.3}/{diff:.3}), masked probe {macc:.3} (cos {msame:.3}/{mdiff:.3})");
        assert!(
            same > diff + 0.2,
            "same-identity pairs must look more alike: {same} vs {diff}"
        );
        assert!((0.62..0.95).contains(&acc), "unmasked proxy accuracy {acc}");
        assert!(
            macc < acc - 0.03,
            "masking the probe must cost accuracy: {macc} vs {acc}"
        );
        assert!(
            macc > 0.5,
            "masked probes still carry identity (eyes, brows, hair): {macc}"
        );
    }

    #[test]
    fn easier_settings_are_easier() {
        let base = SynthConfig {
            identities: 1,
            images_per_id: 1,
            val_identities: 40,
            val_pairs: 200,
            seed: 3,
            ..Default::default()
        };
        let easy = SynthConfig {
            difficulty: Difficulty::easy(),
            ..base.clone()
        };
        let hard = SynthConfig {
            difficulty: Difficulty::hard(),
            ..base
        };
        let bar = indicatif::ProgressBar::hidden();
        let acc = |c: &SynthConfig| {
            pixel_proxy_accuracy(&verification_pairs(c, &bar).unwrap().0)
                .unwrap()
                .0
        };
        let (e, h) = (acc(&easy), acc(&hard));
        eprintln!("proxy easy {e:.3} hard {h:.3}");
        assert!(e > h + 0.05, "easy {e} vs hard {h}");
    }
}
