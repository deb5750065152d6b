//! Encryption at rest for the gallery: XChaCha20-Poly1305 with a fresh random nonce per write.
//!
//! File layout: `b"MGGALENC"` | format version u16 LE | 24-byte nonce | ciphertext+tag. The
//! whole header is authenticated as associated data, so a changed version or nonce fails like a
//! changed ciphertext. The 192-bit nonce makes random nonces safe for any number of writes.
//! Inside is the plaintext `shared::Gallery` envelope (postcard + CRC + its own version).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::fmt;
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"MGGALENC";
/// Outer file format version (the inner gallery envelope has its own).
pub const FORMAT_VERSION: u16 = 1;
pub const NONCE_LEN: usize = 24;
pub const HEADER_LEN: usize = MAGIC.len() + 2 + NONCE_LEN;
const TAG_LEN: usize = 16;
pub const KEY_LEN: usize = 32;

/// Why encrypted bytes could not be opened.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CryptoError {
    #[error("not an encrypted maskgate gallery (bad magic)")]
    BadMagic,
    #[error("truncated: {0} bytes is shorter than the smallest encrypted gallery")]
    Truncated(usize),
    #[error(
        "encrypted gallery format version {0} is not supported (this build reads {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u16),
    #[error("cannot decrypt: wrong key, or the file was modified")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
}

/// Why a key could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("gallery key {origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("gallery key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl KeyError {
    /// True when the key file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A 256-bit gallery key. Debug output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct GalleryKey([u8; KEY_LEN]);

impl fmt::Debug for GalleryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GalleryKey(..)")
    }
}

impl Drop for GalleryKey {
    fn drop(&mut self) {
        // Do not leave the key in freed memory.
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl GalleryKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A new key from the OS random number generator.
    pub fn generate() -> Self {
        let mut k = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Self(k)
    }

    /// Parse 64 hex characters (surrounding whitespace ignored); `origin` labels errors.
    pub fn from_hex(text: &str, origin: &str) -> Result<Self, KeyError> {
        let invalid = |message: String| KeyError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let bytes = hex::decode(text.trim()).map_err(|e| invalid(format!("not hex: {e}")))?;
        let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            invalid(format!(
                "a gallery key is {KEY_LEN} bytes ({} hex characters)",
                2 * KEY_LEN
            ))
        })?;
        Ok(Self(arr))
    }

    /// Read a key file: 64 hex characters, or exactly 32 raw bytes. Refused when other users
    /// may read it.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = std::fs::read(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(KeyError::Invalid {
                    origin: path.display().to_string(),
                    message: format!(
                        "permissions {:o} let other users read it; chmod 600 it",
                        mode & 0o777
                    ),
                });
            }
        }
        if let Ok(arr) = <[u8; KEY_LEN]>::try_from(bytes.as_slice()) {
            return Ok(Self(arr));
        }
        let text = String::from_utf8(bytes).map_err(|_| KeyError::Invalid {
            origin: path.display().to_string(),
            message: "neither 32 raw bytes nor hex text".into(),
        })?;
        Self::from_hex(&text, &path.display().to_string())
    }

    /// Create a new key file (mode 0600, hex); refuses to replace an existing one. The file
    /// appears complete or not at all, and of two processes creating it at once exactly one
    /// succeeds (`shared::atomic::create_new_atomic`: a `create_new` temp file, then `link`).
    pub fn create_file(path: &Path) -> Result<Self, KeyError> {
        let key = Self::generate();
        shared::atomic::create_new_atomic(
            path,
            format!("{}\n", hex::encode(key.0)).as_bytes(),
            0o600,
        )
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Invalid {
                    origin: path.display().to_string(),
                    message: "already exists; refusing to overwrite a gallery key".into(),
                }
            } else {
                KeyError::Io {
                    path: path.display().to_string(),
                    source,
                }
            }
        })?;
        tracing::info!(path = %path.display(), "created a new gallery key (mode 0600)");
        Ok(key)
    }

    /// Create the key file, or, when another process created it first, read theirs: a key
    /// is never replaced, so every gallery written with it stays readable.
    pub fn create_or_read_file(path: &Path) -> Result<Self, KeyError> {
        let key = Self::generate();
        match shared::atomic::create_new_atomic(
            path,
            format!("{}\n", hex::encode(key.0)).as_bytes(),
            0o600,
        ) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created a new gallery key (mode 0600)");
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::read_file(path),
            Err(source) => Err(KeyError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Read the key from environment variable `var` (64 hex characters).
    pub fn from_env(var: &str) -> Result<Self, KeyError> {
        let origin = format!("from environment variable {var}");
        let text = std::env::var(var).map_err(|e| KeyError::Invalid {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        Self::from_hex(&text, &origin)
    }
}

/// Encrypt `plaintext` under `key` with a fresh random nonce; returns the whole file.
pub fn seal(key: &GalleryKey, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    seal_with_nonce(key, plaintext, nonce)
}

fn seal_with_nonce(
    key: &GalleryKey,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&nonce);
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &out,
            },
        )
        .map_err(|_| CryptoError::Encrypt)?;
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Check the header and decrypt; any change to header or ciphertext is [`CryptoError::Decrypt`].
pub fn open(key: &GalleryKey, bytes: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(if bytes.len() < MAGIC.len() {
            CryptoError::Truncated(bytes.len())
        } else {
            CryptoError::BadMagic
        });
    }
    if bytes.len() < HEADER_LEN + TAG_LEN {
        return Err(CryptoError::Truncated(bytes.len()));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(CryptoError::UnsupportedVersion(version));
    }
    let (header, ct) = bytes.split_at(HEADER_LEN);
    let nonce = XNonce::from_slice(&header[MAGIC.len() + 2..]);
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    cipher
        .decrypt(
            nonce,
            Payload {
                msg: ct,
                aad: header,
            },
        )
        .map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_fresh_nonces() {
        let key = GalleryKey::generate();
        let a = seal(&key, b"people").unwrap();
        let b = seal(&key, b"people").unwrap();
        assert_ne!(a, b, "a new nonce per write");
        assert_eq!(open(&key, &a).unwrap(), b"people");
        assert_eq!(a.len(), HEADER_LEN + 6 + TAG_LEN);
    }

    #[test]
    fn any_change_or_wrong_key_fails() {
        let key = GalleryKey::from_bytes([3; 32]);
        let sealed = seal_with_nonce(&key, b"0123456789", [7; NONCE_LEN]).unwrap();
        for i in MAGIC.len() + 2..sealed.len() {
            let mut b = sealed.clone();
            b[i] ^= 0x80;
            assert_eq!(open(&key, &b), Err(CryptoError::Decrypt), "flip at {i}");
        }
        let mut v = sealed.clone();
        v[8] = 2;
        assert_eq!(open(&key, &v), Err(CryptoError::UnsupportedVersion(2)));
        assert_eq!(open(&key, &sealed[..3]), Err(CryptoError::Truncated(3)));
        assert_eq!(
            open(&key, &sealed[..HEADER_LEN + 4]),
            Err(CryptoError::Truncated(HEADER_LEN + 4))
        );
        assert_eq!(
            open(&key, &sealed[..sealed.len() - 1]),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            open(&key, b"PK\x03\x04 zip file, not a gallery"),
            Err(CryptoError::BadMagic)
        );
        assert_eq!(
            open(&GalleryKey::from_bytes([4; 32]), &sealed),
            Err(CryptoError::Decrypt)
        );
    }

    #[test]
    fn device_key_from_the_environment() {
        let var = "MASKGATE_EDGE_TEST_GALLERY_KEY";
        std::env::set_var(var, format!(" {} \n", "ab".repeat(32)));
        assert_eq!(
            GalleryKey::from_env(var).unwrap(),
            GalleryKey::from_bytes([0xab; 32])
        );
        std::env::set_var(var, "abcd");
        let e = GalleryKey::from_env(var).unwrap_err().to_string();
        assert!(e.contains(var) && e.contains("64 hex"), "{e}");
        std::env::remove_var(var);
        assert!(GalleryKey::from_env(var)
            .unwrap_err()
            .to_string()
            .contains(var));
    }

    #[test]
    fn key_files_are_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gallery.key");
        let key = GalleryKey::create_file(&p).unwrap();
        assert_eq!(GalleryKey::read_file(&p).unwrap(), key);
        assert!(
            GalleryKey::create_file(&p).is_err(),
            "never overwrite a key"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = GalleryKey::read_file(&p).unwrap_err().to_string();
            assert!(e.contains("gallery.key") && e.contains("chmod 600"), "{e}");
        }
        let raw = dir.path().join("raw.key");
        shared::atomic::atomic_write_mode(&raw, &[9u8; 32], Some(0o600)).unwrap();
        assert_eq!(
            GalleryKey::read_file(&raw).unwrap(),
            GalleryKey::from_bytes([9; 32])
        );
        let short = dir.path().join("short.key");
        shared::atomic::atomic_write_mode(&short, b"abcd\n", Some(0o600)).unwrap();
        let e = GalleryKey::read_file(&short).unwrap_err().to_string();
        assert!(e.contains("short.key") && e.contains("32 bytes"), "{e}");
        assert!(format!("{key:?}") == "GalleryKey(..)");
    }
}
