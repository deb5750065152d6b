//! maskgate's single source of truth: everything the trainer writes and the edge reads.
//!
//! Face-recognition deployments usually fail at the seams (a different alignment template, BGR
//! instead of RGB, a threshold on the wrong scale). Both sides therefore take these definitions
//! from here and nowhere else:
//! - [`preprocess`]: the input contract ([`PreprocessSpec`]) and the one function that turns an
//!   RGB image plus five landmarks into the network input.
//! - [`align`]: similarity-transform estimation (Umeyama) and the bilinear warp.
//! - [`thresholds`]: calibrated operating points ([`ThresholdConfig`]), human-editable TOML.
//! - [`template`]: unit embeddings, person records and the gallery, in a versioned envelope.
//! - [`bundle`]: the ed25519-signed manifest and the bundle file the device trusts.
//! - [`atomic`]: crash-safe file replacement for everything valuable.

pub mod align;
pub mod atomic;
pub mod bundle;
pub mod envelope;
pub mod preprocess;
pub mod template;
pub mod thresholds;

pub use align::{estimate_similarity, warp_bilinear, AlignError, Similarity};
pub use atomic::atomic_write;
pub use bundle::{Bundle, BundleError, Manifest, ModelVariant, Provenance};
pub use envelope::EnvelopeError;
pub use preprocess::{ColorOrder, Landmarks5, Layout, PreprocessSpec, ARCFACE_TEMPLATE_112};
pub use template::{Embedding, Gallery, PersonId, PersonRecord, Template};
pub use thresholds::{Condition, OperatingPoint, ThresholdConfig, ThresholdError};

/// Lower-case hex sha256 of `bytes`: the identity of a model file everywhere in maskgate.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
