//! Enrolled people: in-memory operations on `shared::Gallery`, and its encrypted file.
//!
//! The operations here are pure (no I/O), so the CLI and a daemon share them and tests need no
//! files: load with [`GalleryStore`], change, save.

pub mod crypto;
pub mod live;
pub mod lock;
pub mod store;

pub use crypto::{CryptoError, GalleryKey, KeyError};
pub use live::{GallerySnapshot, LiveGallery};
pub use lock::{LockError, WriterLock};
pub use store::{GalleryStore, StoreError};

use rand::RngCore;
use serde::Serialize;
use shared::{Gallery, PersonId, PersonRecord, Template};

/// Why a gallery operation was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GalleryOpError {
    #[error("no enrolled person matches {0:?} (give a name or a 32-character id)")]
    NotFound(String),
    #[error("{name:?} matches {count} people; use the id instead (edge gallery list)")]
    Ambiguous { name: String, count: usize },
    #[error("{0:?} is already enrolled; add images to that person or choose another name")]
    NameTaken(String),
    #[error("a name must not be empty")]
    EmptyName,
    #[error("nothing to enroll: no usable templates")]
    NoTemplates,
    #[error("{0}")]
    Invalid(String),
}

/// What `gallery list` shows: no biometric data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonSummary {
    pub id: String,
    pub name: String,
    pub templates: usize,
    pub created_unix: u64,
    pub updated_unix: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from_unix: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until_unix: Option<u64>,
}

/// The index of the person named by `who`: an exact id, else a unique display name.
pub fn find(g: &Gallery, who: &str) -> Result<usize, GalleryOpError> {
    if let Ok(id) = who.parse::<PersonId>() {
        if let Some(i) = g.people.iter().position(|p| p.id == id) {
            return Ok(i);
        }
    }
    let hits: Vec<usize> = g
        .people
        .iter()
        .enumerate()
        .filter(|(_, p)| p.display_name == who)
        .map(|(i, _)| i)
        .collect();
    match hits.as_slice() {
        [i] => Ok(*i),
        [] => Err(GalleryOpError::NotFound(who.to_string())),
        _ => Err(GalleryOpError::Ambiguous {
            name: who.to_string(),
            count: hits.len(),
        }),
    }
}

/// Enroll a new person; returns the new id. Names are unique, so a door log is unambiguous.
pub fn add_person(
    g: &mut Gallery,
    name: &str,
    templates: Vec<Template>,
    now_unix: u64,
) -> Result<PersonId, GalleryOpError> {
    let name = checked_name(g, name, None)?;
    if templates.is_empty() {
        return Err(GalleryOpError::NoTemplates);
    }
    let mut id = PersonId([0; 16]);
    while id.0 == [0; 16] || g.people.iter().any(|p| p.id == id) {
        rand::rngs::OsRng.fill_bytes(&mut id.0);
    }
    let rec = PersonRecord::new(id, name, templates, now_unix)
        .map_err(|e| GalleryOpError::Invalid(e.to_string()))?;
    check_dim(g, &rec)?;
    g.people.push(rec);
    Ok(id)
}

/// Add templates to person `index` and recompute the mean.
pub fn add_templates(
    g: &mut Gallery,
    index: usize,
    templates: Vec<Template>,
    now_unix: u64,
) -> Result<(), GalleryOpError> {
    if templates.is_empty() {
        return Err(GalleryOpError::NoTemplates);
    }
    let old = g
        .people
        .get(index)
        .ok_or_else(|| GalleryOpError::NotFound(format!("#{index}")))?;
    let mut all = old.templates.clone();
    all.extend(templates);
    let mut rec = PersonRecord::new(old.id, old.display_name.clone(), all, now_unix)
        .map_err(|e| GalleryOpError::Invalid(e.to_string()))?;
    check_dim(g, &rec)?;
    rec.created_unix = old.created_unix;
    rec.valid_from_unix = old.valid_from_unix;
    rec.valid_until_unix = old.valid_until_unix;
    g.people[index] = rec;
    Ok(())
}

/// Remove the person named by `who`; returns the record.
pub fn remove(g: &mut Gallery, who: &str) -> Result<PersonRecord, GalleryOpError> {
    let i = find(g, who)?;
    Ok(g.people.remove(i))
}

/// Rename the person named by `who`.
pub fn rename(
    g: &mut Gallery,
    who: &str,
    new_name: &str,
    now_unix: u64,
) -> Result<PersonId, GalleryOpError> {
    let i = find(g, who)?;
    let name = checked_name(g, new_name, Some(i))?;
    let p = &mut g.people[i];
    p.display_name = name;
    p.updated_unix = now_unix;
    Ok(p.id)
}

/// Set the validity window of the person named by `who` (`None`: open on that side).
pub fn set_validity(
    g: &mut Gallery,
    who: &str,
    valid_from_unix: Option<u64>,
    valid_until_unix: Option<u64>,
    now_unix: u64,
) -> Result<PersonId, GalleryOpError> {
    if let (Some(from), Some(until)) = (valid_from_unix, valid_until_unix) {
        if from >= until {
            return Err(GalleryOpError::Invalid(format!(
                "valid_from ({from}) must be before valid_until ({until})"
            )));
        }
    }
    let i = find(g, who)?;
    let p = &mut g.people[i];
    p.valid_from_unix = valid_from_unix;
    p.valid_until_unix = valid_until_unix;
    p.updated_unix = now_unix;
    Ok(p.id)
}

/// One line per person, in enrollment order.
pub fn summaries(g: &Gallery) -> Vec<PersonSummary> {
    g.people
        .iter()
        .map(|p| PersonSummary {
            id: p.id.to_string(),
            name: p.display_name.clone(),
            templates: p.templates.len(),
            created_unix: p.created_unix,
            updated_unix: p.updated_unix,
            valid_from_unix: p.valid_from_unix,
            valid_until_unix: p.valid_until_unix,
        })
        .collect()
}

/// A JSON export: names, ids and counts; the templates themselves only when asked.
pub fn export(g: &Gallery, with_templates: bool) -> serde_json::Value {
    let people: Vec<serde_json::Value> = g
        .people
        .iter()
        .zip(summaries(g))
        .map(|(p, s)| {
            let mut v = serde_json::to_value(&s).unwrap_or(serde_json::Value::Null);
            if with_templates {
                v["mean"] = serde_json::json!(p.mean.as_slice());
                v["template_embeddings"] =
                    p.templates.iter().map(|t| serde_json::json!({"embedding": t.embedding.as_slice(), "quality": t.quality, "masked": t.masked})).collect();
            }
            v
        })
        .collect();
    serde_json::json!({
        "model_id": g.model_id,
        "embedding_dim": g.embedding_dim,
        "people": people,
    })
}

fn checked_name(g: &Gallery, name: &str, except: Option<usize>) -> Result<String, GalleryOpError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(GalleryOpError::EmptyName);
    }
    if g.people
        .iter()
        .enumerate()
        .any(|(i, p)| Some(i) != except && p.display_name == name)
    {
        return Err(GalleryOpError::NameTaken(name.to_string()));
    }
    Ok(name.to_string())
}

fn check_dim(g: &Gallery, rec: &PersonRecord) -> Result<(), GalleryOpError> {
    if rec.mean.dim() != g.embedding_dim as usize {
        return Err(GalleryOpError::Invalid(format!(
            "templates have dimension {}, the gallery holds {}",
            rec.mean.dim(),
            g.embedding_dim
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::Embedding;

    fn t(v: &[f32]) -> Template {
        Template {
            embedding: Embedding::normalize(v).unwrap(),
            quality: 0.8,
            masked: Some(false),
            created_unix: 5,
        }
    }

    #[test]
    fn enroll_list_rename_remove() {
        let mut g = Gallery::new("ab".repeat(32), 3);
        let ada = add_person(
            &mut g,
            " Ada ",
            vec![t(&[1.0, 0.0, 0.0]), t(&[0.0, 1.0, 0.0])],
            10,
        )
        .unwrap();
        let bo = add_person(&mut g, "Bo", vec![t(&[0.0, 0.0, 1.0])], 11).unwrap();
        assert_ne!(ada, bo);
        let rec = &g.people[0];
        assert_eq!(rec.display_name, "Ada");
        let m = rec.mean.as_slice();
        assert!(
            (m[0] - m[1]).abs() < 1e-6 && (m[0] - 0.70710677).abs() < 1e-5,
            "mean of the two: {m:?}"
        );

        assert_eq!(
            add_person(&mut g, "Bo", vec![t(&[1.0, 1.0, 1.0])], 12),
            Err(GalleryOpError::NameTaken("Bo".into()))
        );
        assert_eq!(
            add_person(&mut g, "  ", vec![t(&[1.0, 1.0, 1.0])], 12),
            Err(GalleryOpError::EmptyName)
        );
        assert_eq!(
            add_person(&mut g, "Cy", vec![], 12),
            Err(GalleryOpError::NoTemplates)
        );
        assert!(matches!(
            add_person(&mut g, "Cy", vec![t(&[1.0, 1.0])], 12),
            Err(GalleryOpError::Invalid(_))
        ));

        add_templates(&mut g, 1, vec![t(&[0.0, 1.0, 1.0])], 20).unwrap();
        assert_eq!(g.people[1].templates.len(), 2);
        assert_eq!(
            (g.people[1].created_unix, g.people[1].updated_unix),
            (11, 20)
        );

        assert_eq!(
            rename(&mut g, "Ada", "Bo", 30),
            Err(GalleryOpError::NameTaken("Bo".into()))
        );
        assert_eq!(rename(&mut g, &ada.to_string(), "Ada L.", 30), Ok(ada));
        let list = summaries(&g);
        assert_eq!(
            list.iter()
                .map(|s| (s.name.as_str(), s.templates))
                .collect::<Vec<_>>(),
            vec![("Ada L.", 2), ("Bo", 2)]
        );

        assert_eq!(
            remove(&mut g, "nobody"),
            Err(GalleryOpError::NotFound("nobody".into()))
        );
        assert_eq!(remove(&mut g, "Bo").unwrap().id, bo);
        assert_eq!(g.people.len(), 1);
        g.validate().unwrap();
    }

    #[test]
    fn duplicate_names_from_old_files_are_ambiguous() {
        let mut g = Gallery::new("ab".repeat(32), 2);
        add_person(&mut g, "Ann", vec![t(&[1.0, 0.0])], 1).unwrap();
        let mut twin = g.people[0].clone();
        twin.id = PersonId([9; 16]);
        g.people.push(twin);
        assert_eq!(
            find(&g, "Ann"),
            Err(GalleryOpError::Ambiguous {
                name: "Ann".into(),
                count: 2
            })
        );
        assert_eq!(find(&g, &PersonId([9; 16]).to_string()), Ok(1));
    }

    #[test]
    fn export_hides_templates_unless_asked() {
        let mut g = Gallery::new("ab".repeat(32), 2);
        add_person(&mut g, "Ann", vec![t(&[1.0, 0.0])], 1).unwrap();
        let plain = export(&g, false).to_string();
        assert!(
            plain.contains("\"Ann\"")
                && plain.contains("\"templates\":1")
                && !plain.contains("embedding\""),
            "{plain}"
        );
        let full = export(&g, true);
        assert_eq!(full["people"][0]["mean"][0], 1.0);
        assert_eq!(
            full["people"][0]["template_embeddings"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
