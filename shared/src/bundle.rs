//! The signed model bundle: what the trainer ships and the only thing an edge device will load.
//!
//! A bundle is a plain tar file (inspectable with `tar tvf`) holding exactly three entries:
//! `manifest.toml` (the [`Manifest`]), `manifest.sig` (signer's ed25519 public key and signature
//! over the exact bytes of `manifest.toml`) and `model.onnx`. Signing the stored bytes rather than a
//! re-serialisation makes the signed text canonical by construction. Verification is ordered so
//! the error says which check failed: archive, signer trusted, signature, manifest, model hash,
//! thresholds for this model, preprocessing valid.

use crate::preprocess::{PreprocessSpec, SpecError};
use crate::thresholds::{ThresholdConfig, ThresholdError};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

pub const MANIFEST_FORMAT: u32 = 1;
const MANIFEST_ENTRY: &str = "manifest.toml";
const SIGNATURE_ENTRY: &str = "manifest.sig";
const MODEL_ENTRY: &str = "model.onnx";
/// Upper bound on any entry, so a hostile archive cannot exhaust memory on a small device.
const MAX_ENTRY_BYTES: u64 = 1 << 30;

/// Numeric form of the exported weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelVariant {
    F32,
    F16,
    Int8,
    Int8WeightOnly,
}

/// Where a model came from, so a device's behaviour can be traced to a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// sha256 of the trainer config file (as resolved, overrides included).
    pub trainer_config_sha256: String,
    pub dataset: String,
    pub git_commit: String,
    pub trainer_version: String,
}

/// Names of the model's graph outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOutputs {
    pub embedding: String,
    /// Probability that the input is masked, when the model has a mask head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_prob: Option<String>,
}

/// Everything the edge needs to know to run the model exactly as it was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub model_sha256: String,
    pub variant: ModelVariant,
    pub embedding_dim: u32,
    pub input_name: String,
    pub outputs: ModelOutputs,
    pub created_unix: u64,
    /// Release number of this bundle, increasing with every release (`trainer bundle
    /// --version N`). An edge refuses a bundle older than the one it last ran unless started
    /// with `--allow-downgrade`. Absent in older manifests, which read as 0; 0 is not written,
    /// so an unversioned bundle's manifest is byte-for-byte what it was before the field.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bundle_version: u64,
    pub provenance: Provenance,
    pub preprocess: PreprocessSpec,
    pub thresholds: ThresholdConfig,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Which verification step failed, with enough detail to act on.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a readable bundle archive: {0}")]
    Archive(String),
    #[error("bundle has no {0} entry")]
    MissingEntry(&'static str),
    #[error("bundle has an unexpected or repeated entry {0:?}")]
    UnexpectedEntry(String),
    #[error("manifest.sig is malformed: {0}")]
    SignatureFile(String),
    #[error("bundle is signed by key {0}, which is not among the trusted keys")]
    UntrustedSigner(String),
    #[error("signature check failed: manifest.toml was modified after signing (signer {0})")]
    BadSignature(String),
    #[error("manifest.toml does not parse: {0}")]
    Manifest(String),
    #[error("manifest format {found} is not supported (this build reads {supported})")]
    ManifestFormat { found: u32, supported: u32 },
    #[error("model.onnx does not match the manifest: sha256 is {found}, manifest says {expected}")]
    ModelHash { expected: String, found: String },
    #[error("thresholds in the manifest: {0}")]
    Thresholds(#[from] ThresholdError),
    #[error("preprocessing in the manifest: {0}")]
    Preprocess(#[from] SpecError),
    #[error("no trusted keys configured: refusing to load any bundle")]
    NoTrustedKeys,
    #[error("key file {path}: {message}")]
    Key { path: String, message: String },
}

/// The detached signature stored beside the manifest.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    algorithm: String,
    public_key: String,
    signature: String,
}

/// A bundle whose signature, model hash and contents have been checked (or which was just made).
#[derive(Debug, Clone)]
pub struct Bundle {
    pub manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signer: VerifyingKey,
    signature: Signature,
    pub model: Vec<u8>,
}

impl Manifest {
    /// The exact bytes that get signed.
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>, BundleError> {
        toml::to_string_pretty(self)
            .map(String::into_bytes)
            .map_err(|e| BundleError::Manifest(e.to_string()))
    }

    fn check_against_model(&self, model: &[u8]) -> Result<(), BundleError> {
        if self.format != MANIFEST_FORMAT {
            return Err(BundleError::ManifestFormat {
                found: self.format,
                supported: MANIFEST_FORMAT,
            });
        }
        let found = crate::sha256_hex(model);
        if found != self.model_sha256 {
            return Err(BundleError::ModelHash {
                expected: self.model_sha256.clone(),
                found,
            });
        }
        self.thresholds.validate()?;
        self.thresholds.check_model(&self.model_sha256)?;
        self.preprocess.validate()?;
        Ok(())
    }
}

/// Short fingerprint of a public key for messages (first 16 hex chars).
pub fn key_fingerprint(key: &VerifyingKey) -> String {
    hex::encode(&key.as_bytes()[..8])
}

impl Bundle {
    /// Sign `manifest` for `model`; fails when the manifest does not describe this model.
    pub fn create(
        manifest: Manifest,
        model: Vec<u8>,
        key: &SigningKey,
    ) -> Result<Self, BundleError> {
        manifest.check_against_model(&model)?;
        let manifest_bytes = manifest.to_canonical_bytes()?;
        let signature = key.sign(&manifest_bytes);
        Ok(Self {
            manifest,
            manifest_bytes,
            signer: key.verifying_key(),
            signature,
            model,
        })
    }

    pub fn signer(&self) -> &VerifyingKey {
        &self.signer
    }

    /// The bundle as tar bytes (deterministic: fixed order, zero mtime).
    pub fn to_bytes(&self) -> Result<Vec<u8>, BundleError> {
        let sig = SignatureFile {
            algorithm: "ed25519".into(),
            public_key: hex::encode(self.signer.as_bytes()),
            signature: hex::encode(self.signature.to_bytes()),
        };
        let sig_text =
            toml::to_string(&sig).map_err(|e| BundleError::SignatureFile(e.to_string()))?;
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in [
            (MANIFEST_ENTRY, self.manifest_bytes.as_slice()),
            (SIGNATURE_ENTRY, sig_text.as_bytes()),
            (MODEL_ENTRY, self.model.as_slice()),
        ] {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, name, data)
                .map_err(|e| BundleError::Archive(e.to_string()))?;
        }
        builder
            .into_inner()
            .map_err(|e| BundleError::Archive(e.to_string()))
    }

    /// Write atomically to `path`.
    pub fn write(&self, path: &Path) -> Result<(), BundleError> {
        let bytes = self.to_bytes()?;
        crate::atomic::atomic_write(path, &bytes).map_err(|source| BundleError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Parse and verify bundle bytes against the trusted signer keys.
    pub fn verify(bytes: &[u8], trusted: &[VerifyingKey]) -> Result<Self, BundleError> {
        if trusted.is_empty() {
            return Err(BundleError::NoTrustedKeys);
        }
        let (mut manifest_bytes, mut sig_bytes, mut model) = (None, None, None);
        let mut archive = tar::Archive::new(bytes);
        let entries = archive
            .entries()
            .map_err(|e| BundleError::Archive(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| BundleError::Archive(e.to_string()))?;
            let name = entry
                .path()
                .map_err(|e| BundleError::Archive(e.to_string()))?
                .to_string_lossy()
                .into_owned();
            let slot = match name.as_str() {
                MANIFEST_ENTRY => &mut manifest_bytes,
                SIGNATURE_ENTRY => &mut sig_bytes,
                MODEL_ENTRY => &mut model,
                _ => return Err(BundleError::UnexpectedEntry(name)),
            };
            if slot.is_some() {
                return Err(BundleError::UnexpectedEntry(name));
            }
            if entry.size() > MAX_ENTRY_BYTES {
                return Err(BundleError::Archive(format!("{name} is larger than 1 GiB")));
            }
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| BundleError::Archive(format!("{name}: {e}")))?;
            *slot = Some(data);
        }
        let manifest_bytes = manifest_bytes.ok_or(BundleError::MissingEntry(MANIFEST_ENTRY))?;
        let sig_bytes = sig_bytes.ok_or(BundleError::MissingEntry(SIGNATURE_ENTRY))?;
        let model = model.ok_or(BundleError::MissingEntry(MODEL_ENTRY))?;

        let sig_text = std::str::from_utf8(&sig_bytes)
            .map_err(|e| BundleError::SignatureFile(e.to_string()))?;
        let sig: SignatureFile =
            toml::from_str(sig_text).map_err(|e| BundleError::SignatureFile(e.to_string()))?;
        if sig.algorithm != "ed25519" {
            return Err(BundleError::SignatureFile(format!(
                "unsupported algorithm {:?}",
                sig.algorithm
            )));
        }
        let signer = parse_public_key(&sig.public_key).map_err(BundleError::SignatureFile)?;
        let signature = hex::decode(&sig.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| Signature::from_bytes(&b))
            .ok_or_else(|| {
                BundleError::SignatureFile("signature is not 64 hex-encoded bytes".into())
            })?;
        if !trusted.iter().any(|k| k == &signer) {
            return Err(BundleError::UntrustedSigner(key_fingerprint(&signer)));
        }
        signer
            .verify(&manifest_bytes, &signature)
            .map_err(|_| BundleError::BadSignature(key_fingerprint(&signer)))?;

        let text = std::str::from_utf8(&manifest_bytes)
            .map_err(|e| BundleError::Manifest(e.to_string()))?;
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| BundleError::Manifest(e.to_string()))?;
        manifest.check_against_model(&model)?;
        Ok(Self {
            manifest,
            manifest_bytes,
            signer,
            signature,
            model,
        })
    }

    /// Read and verify a bundle file; errors name the file.
    pub fn open(path: &Path, trusted: &[VerifyingKey]) -> Result<Self, BundleError> {
        let bytes = std::fs::read(path).map_err(|source| BundleError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::verify(&bytes, trusted)
    }
}

fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .map_err(|e| format!("public key is not hex: {e}"))?
        .try_into()
        .map_err(|_| "public key must be 32 bytes (64 hex characters)".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an ed25519 public key: {e}"))
}

/// Key files: one line of hex. The secret key file is written with mode 0600.
pub mod keys {
    use super::*;

    fn key_err(path: &Path, message: impl Into<String>) -> BundleError {
        BundleError::Key {
            path: path.display().to_string(),
            message: message.into(),
        }
    }

    /// Create a new signing key from the OS RNG.
    pub fn generate() -> SigningKey {
        SigningKey::generate(&mut rand::rngs::OsRng)
    }

    /// Write the secret key (0600) and its public key (`<path>.pub`); refuses to overwrite.
    pub fn write_pair(
        secret_path: &Path,
        key: &SigningKey,
    ) -> Result<std::path::PathBuf, BundleError> {
        let pub_path = secret_path.with_extension("pub");
        for p in [secret_path, pub_path.as_path()] {
            if p.exists() {
                return Err(key_err(p, "already exists; refusing to overwrite a key"));
            }
        }
        crate::atomic::atomic_write_mode(
            secret_path,
            format!("{}\n", hex::encode(key.to_bytes())).as_bytes(),
            Some(0o600),
        )
        .map_err(|e| key_err(secret_path, e.to_string()))?;
        crate::atomic::atomic_write(
            &pub_path,
            format!("{}\n", hex::encode(key.verifying_key().as_bytes())).as_bytes(),
        )
        .map_err(|e| key_err(&pub_path, e.to_string()))?;
        Ok(pub_path)
    }

    pub fn read_signing_key(path: &Path) -> Result<SigningKey, BundleError> {
        let text = std::fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?;
        let bytes: [u8; 32] = hex::decode(text.trim())
            .map_err(|e| key_err(path, format!("not hex: {e}")))?
            .try_into()
            .map_err(|_| key_err(path, "a secret key is 32 bytes (64 hex characters)"))?;
        Ok(SigningKey::from_bytes(&bytes))
    }

    pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, BundleError> {
        let text = std::fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?;
        parse_public_key(&text).map_err(|m| key_err(path, m))
    }

    /// Parse a public key given inline (e.g. in edge.toml).
    pub fn parse_verifying_key(hex_text: &str) -> Result<VerifyingKey, String> {
        parse_public_key(hex_text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thresholds::{Condition, Metric, OperatingPoint};

    fn model_bytes() -> Vec<u8> {
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect()
    }

    fn manifest_for(model: &[u8]) -> Manifest {
        let sha = crate::sha256_hex(model);
        Manifest {
            format: MANIFEST_FORMAT,
            model_sha256: sha.clone(),
            variant: ModelVariant::Int8,
            embedding_dim: 128,
            input_name: "data".into(),
            outputs: ModelOutputs {
                embedding: "embedding".into(),
                mask_prob: Some("mask_prob".into()),
            },
            created_unix: 1_764_000_000,
            provenance: Provenance {
                trainer_config_sha256: "0".repeat(64),
                dataset: "synthetic".into(),
                git_commit: "deadbeef".into(),
                trainer_version: "0.1.0".into(),
            },
            preprocess: PreprocessSpec::arcface_112(),
            bundle_version: 0,
            thresholds: ThresholdConfig {
                model_id: sha,
                metric: Metric::Cosine,
                selected_far: 1e-3,
                uss: None,
                operating_points: vec![OperatingPoint {
                    condition: Condition::Unmasked,
                    target_far: 1e-3,
                    threshold: 0.4,
                    measured_far: 5e-4,
                    measured_tar: 0.99,
                    genuine_pairs: 100,
                    impostor_pairs: 10_000,
                }],
            },
        }
    }

    fn signed() -> (SigningKey, Vec<u8>) {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let model = model_bytes();
        let b = Bundle::create(manifest_for(&model), model, &key).unwrap();
        (key, b.to_bytes().unwrap())
    }

    #[test]
    fn round_trip_verifies() {
        let (key, bytes) = signed();
        let b = Bundle::verify(&bytes, &[key.verifying_key()]).unwrap();
        assert_eq!(b.manifest, manifest_for(&model_bytes()));
        assert_eq!(b.model, model_bytes());
        // Deterministic bytes: signing the same content twice gives the same file.
        assert_eq!(b.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn bundle_version_is_signed_and_optional() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let model = model_bytes();
        let m = manifest_for(&model);
        let text = String::from_utf8(m.to_canonical_bytes().unwrap()).unwrap();
        assert!(!text.contains("bundle_version"), "0 is not written: {text}");
        let parsed: Manifest = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed.bundle_version, 0,
            "older manifests read as version 0"
        );
        let mut m7 = m.clone();
        m7.bundle_version = 7;
        let bytes = Bundle::create(m7, model, &key).unwrap().to_bytes().unwrap();
        let b = Bundle::verify(&bytes, &[key.verifying_key()]).unwrap();
        assert_eq!(b.manifest.bundle_version, 7);
        let needle = b"bundle_version = 7";
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        let mut edited = bytes.clone();
        edited[at + needle.len() - 1] = b'9';
        let err = Bundle::verify(&fix_tar_checksums(edited), &[key.verifying_key()]).unwrap_err();
        assert!(matches!(err, BundleError::BadSignature(_)), "{err}");
    }

    #[test]
    fn a_flipped_byte_anywhere_fails_verification() {
        let (key, bytes) = signed();
        let trusted = [key.verifying_key()];
        // Every byte of every entry's content and of the tar headers; padding blocks are
        // legitimately ignored by tar readers, so only the meaningful region is checked.
        let meaningful = meaningful_ranges(&bytes);
        let mut checked = 0;
        for i in meaningful {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                Bundle::verify(&b, &trusted).is_err(),
                "flip at byte {i} was accepted"
            );
            checked += 1;
        }
        assert!(checked > 4096 + 512);
    }

    /// Byte offsets of tar headers (except the unused tail of the name field and other
    /// fields tar readers ignore) and entry contents.
    fn meaningful_ranges(bytes: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut off = 0;
        while off + 512 <= bytes.len() {
            let header = &bytes[off..off + 512];
            if header.iter().all(|b| *b == 0) {
                break;
            }
            let size_field = std::str::from_utf8(&header[124..135]).unwrap();
            let size =
                usize::from_str_radix(size_field.trim_matches(char::from(0)).trim(), 8).unwrap();
            let name_len = header[..100].iter().position(|b| *b == 0).unwrap_or(100);
            out.extend(off..off + name_len); // the entry name
            out.extend(off + 124..off + 136); // size
            out.extend(off + 148..off + 154); // checksum digits (the terminator is ignored by readers)
            out.extend(off + 512..off + 512 + size); // content
            off += 512 + size.div_ceil(512) * 512;
        }
        out
    }

    #[test]
    fn each_failure_names_its_check() {
        let (key, bytes) = signed();
        let trusted = [key.verifying_key()];
        let model = model_bytes();

        let other = SigningKey::from_bytes(&[9u8; 32]);
        let by_other = Bundle::create(manifest_for(&model), model.clone(), &other)
            .unwrap()
            .to_bytes()
            .unwrap();
        assert!(matches!(
            Bundle::verify(&by_other, &trusted),
            Err(BundleError::UntrustedSigner(_))
        ));

        // An edited manifest (threshold lowered) keeps a valid archive but breaks the signature.
        let needle = b"threshold = 0.4";
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        let mut edited = bytes.clone();
        edited[at + needle.len() - 1] = b'1';
        let err = Bundle::verify(&fix_tar_checksums(edited), &trusted).unwrap_err();
        assert!(matches!(err, BundleError::BadSignature(_)), "{err}");

        // A swapped model: the signature is fine but the hash is not.
        let mut b = Bundle::create(manifest_for(&model), model.clone(), &key).unwrap();
        b.model[100] ^= 1;
        let err = Bundle::verify(&b.to_bytes().unwrap(), &trusted).unwrap_err();
        assert!(matches!(err, BundleError::ModelHash { .. }), "{err}");

        // Thresholds calibrated for another model are refused at creation and at load.
        let mut m = manifest_for(&model);
        m.thresholds.model_id = "cd".repeat(32);
        let err = Bundle::create(m.clone(), model.clone(), &key).unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::Thresholds(ThresholdError::WrongModel { .. })
            ),
            "{err}"
        );

        assert!(matches!(
            Bundle::verify(&bytes, &[]),
            Err(BundleError::NoTrustedKeys)
        ));
        assert!(Bundle::verify(&bytes[..700], &trusted).is_err());
        assert!(Bundle::verify(b"garbage", &trusted).is_err());
    }

    /// Recompute tar header checksums so a content edit reaches the signature check.
    fn fix_tar_checksums(mut bytes: Vec<u8>) -> Vec<u8> {
        let mut off = 0;
        while off + 512 <= bytes.len() && bytes[off..off + 512].iter().any(|b| *b != 0) {
            let size_field = std::str::from_utf8(&bytes[off + 124..off + 135])
                .unwrap()
                .to_string();
            let size = usize::from_str_radix(size_field.trim(), 8).unwrap();
            bytes[off + 148..off + 156].copy_from_slice(b"        ");
            let sum: u32 = bytes[off..off + 512].iter().map(|b| *b as u32).sum();
            let field = format!("{sum:06o}\0 ");
            bytes[off + 148..off + 156].copy_from_slice(field.as_bytes());
            off += 512 + size.div_ceil(512) * 512;
        }
        bytes
    }

    #[test]
    fn key_files_round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("signing.key");
        let key = keys::generate();
        let pub_path = keys::write_pair(&secret, &key).unwrap();
        assert_eq!(
            keys::read_signing_key(&secret).unwrap().to_bytes(),
            key.to_bytes()
        );
        assert_eq!(
            keys::read_verifying_key(&pub_path).unwrap(),
            key.verifying_key()
        );
        assert!(
            keys::write_pair(&secret, &key).is_err(),
            "must not overwrite"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::write(&pub_path, "zz").unwrap();
        let err = keys::read_verifying_key(&pub_path).unwrap_err();
        assert!(err.to_string().contains("signing.pub"), "{err}");
    }
}
