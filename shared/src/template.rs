//! Biometric templates and the gallery: what enrollment stores and matching reads.
//!
//! Records are postcard in the versioned, checksummed [`crate::envelope`]. The gallery as a whole
//! is what the edge encrypts at rest; this module only defines the plaintext format.

use crate::envelope::{self, EnvelopeError, Kind};
use serde::{Deserialize, Serialize};

/// Current format versions; readers accept these and older.
pub const TEMPLATE_VERSION: u16 = 1;
pub const PERSON_VERSION: u16 = 1;
/// Gallery version 2 added [`Gallery::generation`]; version 1 files load as generation 0.
pub const GALLERY_VERSION: u16 = 2;

/// Tolerance on |e| = 1 when reading an embedding back.
const UNIT_TOLERANCE: f32 = 1e-3;

/// A unit-norm embedding; its dimension is its length. Constructed only through
/// [`Embedding::normalize`] or validated decoding, so cosine is a plain dot product.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Embedding(Vec<f32>);

/// Why a vector is not a usable embedding.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EmbeddingError {
    #[error("embedding is empty")]
    Empty,
    #[error("embedding has non-finite values")]
    NonFinite,
    #[error("embedding has zero norm")]
    ZeroNorm,
    #[error("embedding norm is {0}, expected 1")]
    NotUnit(f32),
    #[error("embedding dimension {got} does not match {expected}")]
    Dimension { expected: usize, got: usize },
}

impl Embedding {
    /// L2-normalise a raw network output.
    pub fn normalize(raw: &[f32]) -> Result<Self, EmbeddingError> {
        if raw.is_empty() {
            return Err(EmbeddingError::Empty);
        }
        if raw.iter().any(|v| !v.is_finite()) {
            return Err(EmbeddingError::NonFinite);
        }
        let norm = raw.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        if norm < 1e-12 {
            return Err(EmbeddingError::ZeroNorm);
        }
        Ok(Self(
            raw.iter().map(|v| (*v as f64 / norm) as f32).collect(),
        ))
    }

    /// Accept a vector that must already be unit norm (e.g. read from disk).
    pub fn from_unit(values: Vec<f32>) -> Result<Self, EmbeddingError> {
        if values.is_empty() {
            return Err(EmbeddingError::Empty);
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(EmbeddingError::NonFinite);
        }
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        if (norm - 1.0).abs() > UNIT_TOLERANCE {
            return Err(EmbeddingError::NotUnit(norm));
        }
        Ok(Self(values))
    }

    /// The mean direction of several embeddings (normalised sum): the person's centre template.
    pub fn mean<'a>(
        items: impl IntoIterator<Item = &'a Embedding>,
    ) -> Result<Self, EmbeddingError> {
        let mut acc: Vec<f32> = Vec::new();
        for e in items {
            if acc.is_empty() {
                acc = vec![0.0; e.dim()];
            } else if acc.len() != e.dim() {
                return Err(EmbeddingError::Dimension {
                    expected: acc.len(),
                    got: e.dim(),
                });
            }
            acc.iter_mut().zip(&e.0).for_each(|(a, v)| *a += v);
        }
        Self::normalize(&acc)
    }

    pub fn dim(&self) -> usize {
        self.0.len()
    }
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }
    /// Cosine similarity; both sides are unit norm. Panics never: a dimension mismatch errors.
    pub fn cosine(&self, other: &Embedding) -> Result<f32, EmbeddingError> {
        if self.dim() != other.dim() {
            return Err(EmbeddingError::Dimension {
                expected: self.dim(),
                got: other.dim(),
            });
        }
        Ok(self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum())
    }
}

impl<'de> Deserialize<'de> for Embedding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<f32>::deserialize(d)?;
        Embedding::from_unit(v).map_err(envelope::invalid)
    }
}

/// A stable person identifier: 16 random bytes, shown as hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PersonId(pub [u8; 16]);

impl std::fmt::Display for PersonId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for PersonId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = hex::decode(s).map_err(|e| format!("person id {s:?}: {e}"))?;
        let arr: [u8; 16] = bytes
            .try_into()
            .map_err(|_| format!("person id {s:?}: need 32 hex characters"))?;
        Ok(PersonId(arr))
    }
}

/// One enrolled image's embedding with what is known about its capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub embedding: Embedding,
    /// Quality score in [0, 1] from the edge's quality gate.
    pub quality: f32,
    /// Whether the enrollment image was masked (if known).
    pub masked: Option<bool>,
    pub created_unix: u64,
}

/// An enrolled person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonRecord {
    pub id: PersonId,
    pub display_name: String,
    pub templates: Vec<Template>,
    /// Normalised mean of `templates`, what 1:N search compares against first.
    pub mean: Embedding,
    pub created_unix: u64,
    pub updated_unix: u64,
    /// Access is valid only inside this window (unix seconds), when set.
    pub valid_from_unix: Option<u64>,
    pub valid_until_unix: Option<u64>,
}

impl PersonRecord {
    /// Build a record from its templates, computing the mean.
    pub fn new(
        id: PersonId,
        display_name: String,
        templates: Vec<Template>,
        now_unix: u64,
    ) -> Result<Self, EnvelopeError> {
        let mean = Embedding::mean(templates.iter().map(|t| &t.embedding))
            .map_err(|e| EnvelopeError::Invalid(format!("person {display_name:?}: {e}")))?;
        let rec = Self {
            id,
            display_name,
            templates,
            mean,
            created_unix: now_unix,
            updated_unix: now_unix,
            valid_from_unix: None,
            valid_until_unix: None,
        };
        rec.validate()?;
        Ok(rec)
    }

    /// Whether access is allowed at `now_unix` by the validity window.
    pub fn is_valid_at(&self, now_unix: u64) -> bool {
        self.valid_from_unix.is_none_or(|f| now_unix >= f)
            && self.valid_until_unix.is_none_or(|u| now_unix < u)
    }

    pub fn validate(&self) -> Result<(), EnvelopeError> {
        let bad = |m: String| Err(EnvelopeError::Invalid(format!("person {}: {m}", self.id)));
        if self.display_name.trim().is_empty() {
            return bad("empty display name".into());
        }
        if self.templates.is_empty() {
            return bad("no templates".into());
        }
        if let Some(t) = self
            .templates
            .iter()
            .find(|t| t.embedding.dim() != self.mean.dim())
        {
            return bad(format!(
                "template dimension {} differs from mean {}",
                t.embedding.dim(),
                self.mean.dim()
            ));
        }
        if let (Some(f), Some(u)) = (self.valid_from_unix, self.valid_until_unix) {
            if f >= u {
                return bad(format!("validity window is empty ({f} >= {u})"));
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        envelope::seal(Kind::PersonRecord, PERSON_VERSION, self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let (_, payload) = envelope::open(Kind::PersonRecord, PERSON_VERSION, bytes)?;
        let rec: Self = envelope::decode(payload)?;
        rec.validate()?;
        Ok(rec)
    }
}

impl Template {
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        envelope::seal(Kind::Template, TEMPLATE_VERSION, self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let (_, payload) = envelope::open(Kind::Template, TEMPLATE_VERSION, bytes)?;
        envelope::decode(payload)
    }
}

/// Everyone enrolled on one device, for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gallery {
    /// sha256 of the model whose embeddings these are: templates of another model are useless.
    pub model_id: String,
    pub embedding_dim: u32,
    pub people: Vec<PersonRecord>,
    /// How many times this gallery has been written: every save increases it by one, so an
    /// older copy put back over the file is recognisable (rollback protection on the edge).
    pub generation: u64,
}

/// Gallery format version 1, before the generation counter.
#[derive(Deserialize)]
struct GalleryV1 {
    model_id: String,
    embedding_dim: u32,
    people: Vec<PersonRecord>,
}

impl Gallery {
    pub fn new(model_id: String, embedding_dim: u32) -> Self {
        Self {
            model_id,
            embedding_dim,
            people: Vec::new(),
            generation: 0,
        }
    }

    pub fn validate(&self) -> Result<(), EnvelopeError> {
        for (i, p) in self.people.iter().enumerate() {
            p.validate()?;
            if p.mean.dim() != self.embedding_dim as usize {
                return Err(EnvelopeError::Invalid(format!(
                    "person {}: dimension {} but the gallery is {}",
                    p.id,
                    p.mean.dim(),
                    self.embedding_dim
                )));
            }
            if self.people[..i].iter().any(|q| q.id == p.id) {
                return Err(EnvelopeError::Invalid(format!(
                    "person id {} appears twice",
                    p.id
                )));
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        self.validate()?;
        envelope::seal(Kind::Gallery, GALLERY_VERSION, self)
    }

    /// Decode and validate; a version 1 gallery (no generation) loads as generation 0.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let (version, payload) = envelope::open(Kind::Gallery, GALLERY_VERSION, bytes)?;
        let g: Self = if version == 1 {
            let v1: GalleryV1 = envelope::decode(payload)?;
            Self {
                model_id: v1.model_id,
                embedding_dim: v1.embedding_dim,
                people: v1.people,
                generation: 0,
            }
        } else {
            envelope::decode(payload)?
        };
        g.validate()?;
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn emb_strategy(dim: usize) -> impl Strategy<Value = Embedding> {
        prop::collection::vec(-1.0f32..1.0, dim)
            .prop_filter("non-zero", |v| v.iter().any(|x| x.abs() > 1e-3))
            .prop_map(|v| Embedding::normalize(&v).unwrap())
    }

    fn template_strategy(dim: usize) -> impl Strategy<Value = Template> {
        (
            emb_strategy(dim),
            0.0f32..=1.0,
            prop::option::of(any::<bool>()),
            any::<u64>(),
        )
            .prop_map(|(embedding, quality, masked, created_unix)| Template {
                embedding,
                quality,
                masked,
                created_unix,
            })
    }

    fn person_strategy(dim: usize) -> impl Strategy<Value = PersonRecord> {
        (
            any::<[u8; 16]>(),
            "[a-zA-Z][a-zA-Z ]{0,20}",
            prop::collection::vec(template_strategy(dim), 1..4),
            any::<u32>(),
        )
            .prop_map(|(id, name, templates, now)| {
                PersonRecord::new(PersonId(id), name, templates, now as u64).unwrap()
            })
    }

    proptest! {
        #[test]
        fn template_round_trips(t in template_strategy(16)) {
            prop_assert_eq!(Template::decode(&t.encode().unwrap()).unwrap(), t);
        }

        #[test]
        fn person_round_trips(p in person_strategy(8)) {
            prop_assert_eq!(PersonRecord::decode(&p.encode().unwrap()).unwrap(), p);
        }

        #[test]
        fn gallery_round_trips(people in prop::collection::vec(person_strategy(8), 0..5)) {
            let mut g = Gallery::new("ab".repeat(32), 8);
            for p in people { if !g.people.iter().any(|q| q.id == p.id) { g.people.push(p); } }
            prop_assert_eq!(Gallery::decode(&g.encode().unwrap()).unwrap(), g);
        }

        #[test]
        fn truncation_never_panics(p in person_strategy(4), cut in 0usize..200) {
            let bytes = p.encode().unwrap();
            let cut = cut.min(bytes.len().saturating_sub(1));
            prop_assert!(PersonRecord::decode(&bytes[..cut]).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = Gallery::decode(&bytes);
            let _ = Template::decode(&bytes);
        }
    }

    #[test]
    fn non_unit_embeddings_are_refused_on_read() {
        assert_eq!(
            Embedding::from_unit(vec![0.5, 0.5]),
            Err(EmbeddingError::NotUnit(0.70710677))
        );
        assert_eq!(
            Embedding::normalize(&[0.0, 0.0]),
            Err(EmbeddingError::ZeroNorm)
        );
        assert_eq!(
            Embedding::normalize(&[f32::NAN]),
            Err(EmbeddingError::NonFinite)
        );
        // A hand-built envelope whose payload carries a non-unit vector must not decode.
        let bad = Template {
            embedding: Embedding(vec![3.0, 4.0]),
            quality: 1.0,
            masked: None,
            created_unix: 0,
        };
        let err = Template::decode(&bad.encode().unwrap()).unwrap_err();
        assert_eq!(
            err,
            EnvelopeError::Decode("embedding norm is 5, expected 1".into())
        );
        assert_eq!(
            err.to_string(),
            "payload does not decode: embedding norm is 5, expected 1"
        );
        // Nested in a gallery, the same vector is refused with the same reason.
        let t = Template {
            embedding: Embedding::normalize(&[3.0, 4.0]).unwrap(),
            ..bad.clone()
        };
        let mut g = Gallery::new("ab".repeat(32), 2);
        g.people
            .push(PersonRecord::new(PersonId([3; 16]), "Cy".into(), vec![t], 0).unwrap());
        g.people[0].templates[0] = bad;
        let bytes = envelope::seal(Kind::Gallery, GALLERY_VERSION, &g).unwrap();
        assert_eq!(
            Gallery::decode(&bytes).unwrap_err(),
            EnvelopeError::Decode("embedding norm is 5, expected 1".into())
        );
        // A reason left over from an earlier refusal never leaks into an unrelated error.
        let _: postcard::Error = envelope::invalid("stale reason");
        let short = envelope::seal(Kind::Gallery, GALLERY_VERSION, &"ab".to_string()).unwrap();
        let err = Gallery::decode(&short).unwrap_err();
        assert!(
            matches!(&err, EnvelopeError::Decode(m) if !m.contains("stale") && m.contains("end of buffer")),
            "{err}"
        );
    }

    #[test]
    fn gallery_refuses_mixed_dimensions_and_duplicates() {
        let e4 = Embedding::normalize(&[1.0, 0.0, 0.0, 0.0]).unwrap();
        let t = Template {
            embedding: e4,
            quality: 1.0,
            masked: Some(false),
            created_unix: 1,
        };
        let p = PersonRecord::new(PersonId([1; 16]), "Ada".into(), vec![t], 1).unwrap();
        let mut g = Gallery::new("ab".repeat(32), 8);
        g.people.push(p.clone());
        assert!(matches!(g.encode(), Err(EnvelopeError::Invalid(_))));
        g.embedding_dim = 4;
        g.people.push(p);
        assert!(matches!(g.encode(), Err(EnvelopeError::Invalid(m)) if m.contains("twice")));
    }

    #[test]
    fn version_1_galleries_load_as_generation_0() {
        #[derive(Serialize)]
        struct V1<'a> {
            model_id: &'a str,
            embedding_dim: u32,
            people: &'a [PersonRecord],
        }
        let t = Template {
            embedding: Embedding::normalize(&[1.0, 2.0]).unwrap(),
            quality: 0.9,
            masked: None,
            created_unix: 0,
        };
        let p = PersonRecord::new(PersonId([3; 16]), "Cy".into(), vec![t], 7).unwrap();
        let model = "ab".repeat(32);
        let old = envelope::seal(
            Kind::Gallery,
            1,
            &V1 {
                model_id: &model,
                embedding_dim: 2,
                people: std::slice::from_ref(&p),
            },
        )
        .unwrap();
        let g = Gallery::decode(&old).unwrap();
        assert_eq!(g.generation, 0);
        assert_eq!(
            (g.model_id.as_str(), g.people.as_slice()),
            (model.as_str(), &[p][..])
        );
        let mut newer = g.clone();
        newer.generation = 41;
        let bytes = newer.encode().unwrap();
        assert_eq!(bytes[5..7], GALLERY_VERSION.to_le_bytes());
        assert_eq!(Gallery::decode(&bytes).unwrap().generation, 41);
    }

    #[test]
    fn validity_window() {
        let e = Embedding::normalize(&[1.0, 2.0]).unwrap();
        let t = Template {
            embedding: e,
            quality: 0.9,
            masked: None,
            created_unix: 0,
        };
        let mut p = PersonRecord::new(PersonId([2; 16]), "Bo".into(), vec![t], 0).unwrap();
        p.valid_from_unix = Some(100);
        p.valid_until_unix = Some(200);
        assert!(!p.is_valid_at(99) && p.is_valid_at(100) && !p.is_valid_at(200));
        p.valid_until_unix = Some(50);
        assert!(p.validate().is_err());
    }
}
