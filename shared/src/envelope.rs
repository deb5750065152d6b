//! The binary envelope around every postcard-encoded maskgate record.
//!
//! Layout (little-endian): `b"MGAT"` | kind u8 | version u16 | payload length u32 | payload |
//! CRC-32 (ISO-HDLC) of everything before it. The kind stops a template being read as a gallery;
//! the version lets a newer reader migrate older files; the CRC catches corruption before
//! postcard sees the bytes (postcard alone would happily decode many flipped bytes).

use serde::{de::DeserializeOwned, Serialize};
use std::cell::RefCell;

const MAGIC: &[u8; 4] = b"MGAT";
const HEADER_LEN: usize = 4 + 1 + 2 + 4;
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// What a record is; stored in the envelope so files cannot be confused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Template = 1,
    PersonRecord = 2,
    Gallery = 3,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Template => "template",
            Kind::PersonRecord => "person record",
            Kind::Gallery => "gallery",
        }
    }
}

/// Why an envelope could not be read. Every variant is a clean error, never a panic.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvelopeError {
    #[error("truncated: need at least {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("not a maskgate file (bad magic)")]
    BadMagic,
    #[error("expected a {expected} record, found kind {found}")]
    WrongKind { expected: &'static str, found: u8 },
    #[error("{kind} format version {found} is not supported (this build reads up to {supported})")]
    UnsupportedVersion {
        kind: &'static str,
        found: u16,
        supported: u16,
    },
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x} (file corrupted)")]
    Checksum { stored: u32, computed: u32 },
    #[error("{len} trailing bytes after the record")]
    TrailingBytes { len: usize },
    #[error("payload does not decode: {0}")]
    Decode(String),
    #[error("payload does not encode: {0}")]
    Encode(String),
    #[error("invalid content: {0}")]
    Invalid(String),
}

/// Encode `value` as a `kind` record of format `version`.
pub fn seal<T: Serialize>(kind: Kind, version: u16, value: &T) -> Result<Vec<u8>, EnvelopeError> {
    let payload = postcard::to_allocvec(value).map_err(|e| EnvelopeError::Encode(e.to_string()))?;
    let len = u32::try_from(payload.len())
        .map_err(|_| EnvelopeError::Encode("payload larger than 4 GiB".into()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + 4);
    out.extend_from_slice(MAGIC);
    out.push(kind as u8);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = CRC.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Check magic, kind, CRC and length; return the format version and the raw payload.
pub fn open(kind: Kind, supported: u16, bytes: &[u8]) -> Result<(u16, &[u8]), EnvelopeError> {
    if bytes.len() < 4 {
        return Err(EnvelopeError::Truncated {
            needed: HEADER_LEN + 4,
            have: bytes.len(),
        });
    }
    if &bytes[..4] != MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    if bytes.len() < HEADER_LEN + 4 {
        return Err(EnvelopeError::Truncated {
            needed: HEADER_LEN + 4,
            have: bytes.len(),
        });
    }
    let len = u32::from_le_bytes([bytes[7], bytes[8], bytes[9], bytes[10]]) as usize;
    let total = HEADER_LEN
        .checked_add(len)
        .and_then(|n| n.checked_add(4))
        .ok_or(EnvelopeError::Truncated {
            needed: usize::MAX,
            have: bytes.len(),
        })?;
    if bytes.len() < total {
        return Err(EnvelopeError::Truncated {
            needed: total,
            have: bytes.len(),
        });
    }
    if bytes.len() > total {
        return Err(EnvelopeError::TrailingBytes {
            len: bytes.len() - total,
        });
    }
    let body = &bytes[..total - 4];
    let stored = u32::from_le_bytes([
        bytes[total - 4],
        bytes[total - 3],
        bytes[total - 2],
        bytes[total - 1],
    ]);
    let computed = CRC.checksum(body);
    if stored != computed {
        return Err(EnvelopeError::Checksum { stored, computed });
    }
    if bytes[4] != kind as u8 {
        return Err(EnvelopeError::WrongKind {
            expected: kind.name(),
            found: bytes[4],
        });
    }
    let version = u16::from_le_bytes([bytes[5], bytes[6]]);
    if version == 0 || version > supported {
        return Err(EnvelopeError::UnsupportedVersion {
            kind: kind.name(),
            found: version,
            supported,
        });
    }
    Ok((version, &body[HEADER_LEN..]))
}

thread_local! {
    /// The message of the last validation error raised through [`invalid`] on this thread.
    /// postcard's `de::Error::custom` drops its message (postcard 1.x `Error::SerdeDeCustom`
    /// carries none), so without this a refused record would only say "Serde Deserialization
    /// Error" instead of why it was refused.
    static INVALID: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A `Deserialize` impl's validation error whose message survives postcard: use this instead
/// of `E::custom` in the records' validating impls.
pub(crate) fn invalid<E: serde::de::Error>(msg: impl std::fmt::Display) -> E {
    let text = msg.to_string();
    INVALID.with(|slot| *slot.borrow_mut() = Some(text.clone()));
    E::custom(text)
}

/// Decode a whole postcard payload; leftover bytes are an error.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, EnvelopeError> {
    INVALID.with(|slot| slot.borrow_mut().take());
    let (value, rest) = postcard::take_from_bytes::<T>(payload).map_err(|e| {
        let kept = INVALID.with(|slot| slot.borrow_mut().take());
        EnvelopeError::Decode(match (e, kept) {
            (postcard::Error::SerdeDeCustom, Some(why)) => why,
            (e, _) => e.to_string(),
        })
    })?;
    if !rest.is_empty() {
        return Err(EnvelopeError::TrailingBytes { len: rest.len() });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_each_failure_is_typed() {
        let v: Vec<u32> = vec![1, 2, 3];
        let bytes = seal(Kind::Template, 1, &v).unwrap();
        let (ver, payload) = open(Kind::Template, 1, &bytes).unwrap();
        assert_eq!(ver, 1);
        assert_eq!(decode::<Vec<u32>>(payload).unwrap(), v);

        assert!(matches!(
            open(Kind::Gallery, 1, &bytes),
            Err(EnvelopeError::WrongKind { .. })
        ));
        assert!(matches!(
            open(Kind::Template, 1, &bytes[..bytes.len() - 1]),
            Err(EnvelopeError::Truncated { .. })
        ));
        let newer = seal(Kind::Template, 7, &v).unwrap();
        assert_eq!(
            open(Kind::Template, 1, &newer),
            Err(EnvelopeError::UnsupportedVersion {
                kind: "template",
                found: 7,
                supported: 1
            })
        );
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(open(Kind::Template, 1, &bad), Err(EnvelopeError::BadMagic));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            open(Kind::Template, 1, &longer),
            Err(EnvelopeError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let bytes = seal(Kind::Gallery, 1, &("alice".to_string(), 42u64)).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                open(Kind::Gallery, 1, &b).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }
}
