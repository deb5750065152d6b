//! Enrollment at the door: guidance for the person in front of the camera, the choice of K good
//! and diverse frames, and the admin PIN that authorises it. Pure functions over what the
//! pipeline measured (box, landmarks, quality, embedding); `edge enroll --camera` drives them.

use shared::Landmarks5;

/// One face the pipeline found in a live frame.
#[derive(Debug, Clone)]
pub struct FaceSample {
    /// Face box `[x, y, w, h]` in pixels.
    pub bbox: [f32; 4],
    /// Eyes, nose, mouth corners (the ArcFace order), in pixels.
    pub landmarks: Landmarks5,
    /// The quality gate's score in [0, 1] and whether it passed.
    pub quality: f32,
    pub quality_ok: bool,
    /// Unit embedding of the aligned face.
    pub embedding: Vec<f32>,
}

/// What the status line tells the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guidance {
    StepInFront,
    OnePersonOnly,
    ComeCloser,
    StepBack,
    MoveToCentre,
    LookStraight,
    HoldStill,
    /// The frame was kept.
    Good,
    /// Good, but too like a frame already kept: turn the head slightly.
    TurnSlightly,
    Done,
}

impl Guidance {
    pub fn message(self) -> &'static str {
        match self {
            Guidance::StepInFront => "step in front of the camera",
            Guidance::OnePersonOnly => "one person at a time, please",
            Guidance::ComeCloser => "come closer",
            Guidance::StepBack => "step back a little",
            Guidance::MoveToCentre => "move to the centre of the picture",
            Guidance::LookStraight => "look straight at the camera",
            Guidance::HoldStill => "hold still",
            Guidance::Good => "good, keep still",
            Guidance::TurnSlightly => "good; now turn your head slightly",
            Guidance::Done => "done, thank you",
        }
    }
}

/// Limits of an acceptable enrollment frame.
#[derive(Debug, Clone, PartialEq)]
pub struct GuideConfig {
    /// Frames to keep.
    pub frames: usize,
    /// Face width as a fraction of the frame width.
    pub min_face_frac: f32,
    pub max_face_frac: f32,
    /// Face centre at most this far from the frame centre (fraction of the frame size).
    pub max_off_centre: f32,
    /// |nose offset from the eye midpoint| / eye distance (0 = frontal).
    pub max_yaw_ratio: f32,
    /// Face centre movement since the previous frame, as a fraction of the face width.
    pub max_motion: f32,
    /// A kept frame's cosine to every other kept frame stays below this.
    pub max_similarity: f32,
}

impl Default for GuideConfig {
    fn default() -> Self {
        Self {
            frames: 5,
            min_face_frac: 0.18,
            max_face_frac: 0.7,
            max_off_centre: 0.25,
            max_yaw_ratio: 0.3,
            max_motion: 0.08,
            max_similarity: 0.97,
        }
    }
}

/// `[enroll]` of edge.toml: how `edge enroll --camera` captures, and who may start it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollConfig {
    /// Good, diverse frames to keep (K).
    pub frames: usize,
    /// Give up after this many captured frames.
    pub max_frames: usize,
    /// Give up after this many seconds.
    pub timeout_secs: u64,
    /// argon2 PHC hash of the admin PIN (`edge admin hash-pin`); when set, enrollment asks for
    /// the PIN first so a passer-by cannot enroll themselves.
    pub admin_pin_hash: Option<String>,
}

impl Default for EnrollConfig {
    fn default() -> Self {
        Self {
            frames: 5,
            max_frames: 300,
            timeout_secs: 60,
            admin_pin_hash: None,
        }
    }
}

impl EnrollConfig {
    pub fn validate(&self) -> Result<(), crate::door::config::ConfigError> {
        use crate::door::config::ConfigError;
        if !(1..=50).contains(&self.frames) {
            return Err(ConfigError::new(
                "enroll",
                "frames",
                "must be between 1 and 50",
            ));
        }
        if self.max_frames < self.frames {
            return Err(ConfigError::new(
                "enroll",
                "max_frames",
                "must be at least `frames`",
            ));
        }
        if self.timeout_secs == 0 {
            return Err(ConfigError::new(
                "enroll",
                "timeout_secs",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// Collects frames while guiding; feed it every live frame.
#[derive(Debug)]
pub struct EnrollGuide {
    cfg: GuideConfig,
    frame_size: (u32, u32),
    previous_centre: Option<[f32; 2]>,
    kept: Vec<FaceSample>,
}

impl EnrollGuide {
    pub fn new(cfg: GuideConfig, frame_width: u32, frame_height: u32) -> Self {
        Self {
            cfg,
            frame_size: (frame_width, frame_height),
            previous_centre: None,
            kept: Vec::new(),
        }
    }

    /// Judge one frame's faces; keeps the face when it is good and new.
    pub fn offer(&mut self, faces: &[FaceSample]) -> Guidance {
        if self.is_done() {
            return Guidance::Done;
        }
        let face = match faces {
            [] => {
                self.previous_centre = None;
                return Guidance::StepInFront;
            }
            [f] => f,
            _ => return Guidance::OnePersonOnly,
        };
        let (fw, fh) = (self.frame_size.0 as f32, self.frame_size.1 as f32);
        let [x, y, w, h] = face.bbox;
        let centre = [x + w / 2.0, y + h / 2.0];
        let moved = self
            .previous_centre
            .map(|p| ((p[0] - centre[0]).powi(2) + (p[1] - centre[1]).powi(2)).sqrt() / w.max(1.0));
        self.previous_centre = Some(centre);

        if w / fw < self.cfg.min_face_frac {
            return Guidance::ComeCloser;
        }
        if w / fw > self.cfg.max_face_frac {
            return Guidance::StepBack;
        }
        if (centre[0] / fw - 0.5).abs() > self.cfg.max_off_centre
            || (centre[1] / fh - 0.5).abs() > self.cfg.max_off_centre
        {
            return Guidance::MoveToCentre;
        }
        if yaw_ratio(&face.landmarks).abs() > self.cfg.max_yaw_ratio {
            return Guidance::LookStraight;
        }
        if moved.is_none_or(|m| m > self.cfg.max_motion) || !face.quality_ok {
            return Guidance::HoldStill;
        }
        let too_similar = self
            .kept
            .iter()
            .any(|k| cosine(&k.embedding, &face.embedding) >= self.cfg.max_similarity);
        if too_similar {
            return Guidance::TurnSlightly;
        }
        self.kept.push(face.clone());
        if self.is_done() {
            Guidance::Done
        } else {
            Guidance::Good
        }
    }

    /// A source whose pictures change size (an image directory) re-measures against the new size.
    pub fn set_frame_size(&mut self, frame_width: u32, frame_height: u32) {
        if self.frame_size != (frame_width, frame_height) {
            self.frame_size = (frame_width, frame_height);
            self.previous_centre = None;
        }
    }

    pub fn is_done(&self) -> bool {
        self.kept.len() >= self.cfg.frames
    }

    /// The frames kept so far.
    pub fn kept(&self) -> &[FaceSample] {
        &self.kept
    }

    pub fn into_kept(self) -> Vec<FaceSample> {
        self.kept
    }
}

/// Horizontal nose offset from the eye midpoint over the eye distance: 0 frontal, ~±0.5 at a
/// strong head turn.
pub fn yaw_ratio(lm: &Landmarks5) -> f32 {
    let (le, re, nose) = (lm[0], lm[1], lm[2]);
    let eye_dist = ((re[0] - le[0]).powi(2) + (re[1] - le[1]).powi(2))
        .sqrt()
        .max(1e-3);
    (nose[0] - (le[0] + re[0]) / 2.0) / eye_dist
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na * nb)
}

/// The admin PIN could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("admin_pin_hash in the config is not an argon2 PHC string: {0}")]
    BadHash(String),
    #[error("admin PIN must be 4 to 64 characters")]
    BadPin,
}

/// Hash a PIN for `admin_pin_hash` (argon2id, random salt).
pub fn hash_admin_pin(pin: &str) -> Result<String, PinError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    if !(4..=64).contains(&pin.chars().count()) {
        return Err(PinError::BadPin);
    }
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| PinError::BadHash(e.to_string()))?;
    let hash = argon2::Argon2::default()
        .hash_password(pin.as_bytes(), &salt)
        .map_err(|e| PinError::BadHash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `pin` matches the configured hash (constant-time compare inside argon2).
pub fn verify_admin_pin(phc_hash: &str, pin: &str) -> Result<bool, PinError> {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(phc_hash).map_err(|e| PinError::BadHash(e.to_string()))?;
    Ok(argon2::Argon2::default()
        .verify_password(pin.as_bytes(), &parsed)
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frontal face of width `w` centred at (cx, cy), nose shifted by `yaw` eye distances.
    fn face(cx: f32, cy: f32, w: f32, yaw: f32, emb: [f32; 3]) -> FaceSample {
        let eye = w * 0.35;
        let lm = [
            [cx - eye / 2.0, cy - w * 0.1],
            [cx + eye / 2.0, cy - w * 0.1],
            [cx + yaw * eye, cy + w * 0.05],
            [cx - eye / 2.5, cy + w * 0.2],
            [cx + eye / 2.5, cy + w * 0.2],
        ];
        FaceSample {
            bbox: [cx - w / 2.0, cy - w / 2.0, w, w],
            landmarks: lm,
            quality: 0.9,
            quality_ok: true,
            embedding: emb.to_vec(),
        }
    }

    #[test]
    fn guides_towards_a_good_frame() {
        let mut g = EnrollGuide::new(
            GuideConfig {
                frames: 2,
                ..GuideConfig::default()
            },
            640,
            480,
        );
        let e = [1.0, 0.0, 0.0];
        assert_eq!(g.offer(&[]), Guidance::StepInFront);
        assert_eq!(
            g.offer(&[face(320.0, 240.0, 60.0, 0.0, e)]),
            Guidance::ComeCloser
        );
        assert_eq!(
            g.offer(&[face(320.0, 240.0, 600.0, 0.0, e)]),
            Guidance::StepBack
        );
        assert_eq!(
            g.offer(&[face(80.0, 240.0, 200.0, 0.0, e)]),
            Guidance::MoveToCentre
        );
        assert_eq!(
            g.offer(&[face(320.0, 240.0, 200.0, 0.5, e)]),
            Guidance::LookStraight
        );
        // Jumped from the last position: hold still first.
        assert_eq!(
            g.offer(&[face(360.0, 240.0, 200.0, 0.0, e)]),
            Guidance::HoldStill
        );
        assert_eq!(
            g.offer(&[face(360.0, 240.0, 200.0, 0.0, e)]),
            Guidance::Good
        );
        assert_eq!(g.kept().len(), 1);
        // The same picture again is not diverse.
        assert_eq!(
            g.offer(&[face(361.0, 240.0, 200.0, 0.05, e)]),
            Guidance::TurnSlightly
        );
        let mut blurry = face(361.0, 240.0, 200.0, 0.0, [0.0, 1.0, 0.0]);
        blurry.quality_ok = false;
        assert_eq!(g.offer(&[blurry]), Guidance::HoldStill);
        let two = [
            face(200.0, 240.0, 150.0, 0.0, e),
            face(420.0, 240.0, 150.0, 0.0, e),
        ];
        assert_eq!(g.offer(&two), Guidance::OnePersonOnly);
        assert_eq!(
            g.offer(&[face(361.0, 241.0, 200.0, 0.1, [0.8, 0.6, 0.0])]),
            Guidance::Done
        );
        assert!(g.is_done());
        assert_eq!(g.into_kept().len(), 2);
    }

    #[test]
    fn yaw_ratio_sign_and_scale() {
        let f = face(0.0, 0.0, 100.0, 0.0, [1.0, 0.0, 0.0]);
        assert!(yaw_ratio(&f.landmarks).abs() < 1e-6);
        let f = face(0.0, 0.0, 100.0, 0.4, [1.0, 0.0, 0.0]);
        assert!((yaw_ratio(&f.landmarks) - 0.4).abs() < 1e-4);
    }

    #[test]
    fn admin_pin_round_trip() {
        let hash = hash_admin_pin("4711").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_admin_pin(&hash, "4711").unwrap());
        assert!(!verify_admin_pin(&hash, "4712").unwrap());
        assert!(matches!(
            verify_admin_pin("plaintext-pin", "4711"),
            Err(PinError::BadHash(_))
        ));
        assert!(matches!(hash_admin_pin("12"), Err(PinError::BadPin)));
    }
}
