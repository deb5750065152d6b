//! 1:N search and 1:1 comparison of unit embeddings.
//!
//! All templates of all people (each person's mean and per-image templates) sit in one flat,
//! row-major f32 matrix, contiguous per person, so a search is a pass of dot products over
//! memory in order; large galleries are split across cores with rayon. A person's score is the
//! best cosine over their rows; the result carries the runner-up so callers can see the margin.

use rayon::prelude::*;
use serde::Serialize;
use shared::template::EmbeddingError;
use shared::{Embedding, Gallery, PersonId};
use std::ops::Range;

/// Below this many rows a single thread is faster than spreading the work.
const PARALLEL_ROWS: usize = 8192;

/// The best candidate of a search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Index into the gallery's `people`.
    pub index: usize,
    pub id: String,
    pub name: String,
    pub score: f32,
}

/// Top-1 and the runner-up's score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResult {
    pub best: Candidate,
    /// Score of the best other person (None with a one-person gallery).
    pub second_score: Option<f32>,
}

impl SearchResult {
    /// How far the best is ahead of the runner-up.
    pub fn margin(&self) -> Option<f32> {
        self.second_score.map(|s| self.best.score - s)
    }
}

/// A gallery prepared for search.
#[derive(Debug, Clone)]
pub struct Matcher {
    dim: usize,
    rows: Vec<f32>,
    people: Vec<(PersonId, String, Range<usize>)>,
}

impl Matcher {
    /// Lay out every person's mean and templates as rows.
    pub fn new(g: &Gallery) -> Self {
        let dim = g.embedding_dim as usize;
        let mut rows = Vec::new();
        let mut people = Vec::with_capacity(g.people.len());
        for p in &g.people {
            let start = rows.len() / dim.max(1);
            rows.extend_from_slice(p.mean.as_slice());
            for t in &p.templates {
                rows.extend_from_slice(t.embedding.as_slice());
            }
            people.push((p.id, p.display_name.clone(), start..rows.len() / dim.max(1)));
        }
        Self { dim, rows, people }
    }

    pub fn len(&self) -> usize {
        self.people.len()
    }
    pub fn is_empty(&self) -> bool {
        self.people.is_empty()
    }
    /// Number of stored rows (means + templates).
    pub fn rows(&self) -> usize {
        self.rows.len() / self.dim.max(1)
    }

    /// 1:N: best person and runner-up; None for an empty gallery.
    pub fn search(&self, probe: &Embedding) -> Result<Option<SearchResult>, EmbeddingError> {
        if probe.dim() != self.dim {
            return Err(EmbeddingError::Dimension {
                expected: self.dim,
                got: probe.dim(),
            });
        }
        let q = probe.as_slice();
        let person_score = |r: &Range<usize>| -> f32 {
            self.rows[r.start * self.dim..r.end * self.dim]
                .chunks_exact(self.dim)
                .map(|row| dot(row, q))
                .fold(f32::NEG_INFINITY, f32::max)
        };
        let scores: Vec<f32> = if self.rows() >= PARALLEL_ROWS {
            self.people
                .par_iter()
                .with_min_len(256)
                .map(|(_, _, r)| person_score(r))
                .collect()
        } else {
            self.people
                .iter()
                .map(|(_, _, r)| person_score(r))
                .collect()
        };
        let (mut best, mut second): (Option<usize>, Option<f32>) = (None, None);
        for (i, s) in scores.iter().enumerate() {
            match best {
                Some(b) if *s <= scores[b] => second = Some(second.map_or(*s, |x| x.max(*s))),
                Some(b) => {
                    second = Some(second.map_or(scores[b], |x| x.max(scores[b])));
                    best = Some(i);
                }
                None => best = Some(i),
            }
        }
        Ok(best.map(|i| {
            let (id, name, _) = &self.people[i];
            SearchResult {
                best: Candidate {
                    index: i,
                    id: id.to_string(),
                    name: name.clone(),
                    score: scores[i],
                },
                second_score: second,
            }
        }))
    }
}

/// Plain dot product; with unit vectors this is the cosine. Four accumulators let the compiler
/// vectorise it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{PersonRecord, Template};

    fn e(v: &[f32]) -> Embedding {
        Embedding::normalize(v).unwrap()
    }

    fn person(id: u8, name: &str, templates: &[&[f32]]) -> PersonRecord {
        let ts = templates
            .iter()
            .map(|v| Template {
                embedding: e(v),
                quality: 1.0,
                masked: None,
                created_unix: 0,
            })
            .collect();
        PersonRecord::new(PersonId([id; 16]), name.into(), ts, 0).unwrap()
    }

    #[test]
    fn best_score_over_templates_and_margin() {
        let mut g = Gallery::new("ab".repeat(32), 3);
        g.people
            .push(person(1, "Ada", &[&[1.0, 0.0, 0.0], &[0.0, 1.0, 0.0]]));
        g.people.push(person(2, "Bo", &[&[0.0, 0.0, 1.0]]));
        let m = Matcher::new(&g);
        assert_eq!((m.len(), m.rows()), (2, 5));
        // Closest to Ada's second template exactly.
        let r = m.search(&e(&[0.0, 1.0, 0.0])).unwrap().unwrap();
        assert_eq!((r.best.name.as_str(), r.best.index), ("Ada", 0));
        assert!((r.best.score - 1.0).abs() < 1e-6);
        assert!((r.second_score.unwrap() - 0.0).abs() < 1e-6);
        assert!((r.margin().unwrap() - 1.0).abs() < 1e-6);
        let r = m.search(&e(&[0.1, 0.0, 1.0])).unwrap().unwrap();
        assert_eq!(r.best.name, "Bo");
        assert!(
            m.search(&e(&[1.0, 0.0])).is_err(),
            "dimension mismatch is an error"
        );
        assert_eq!(
            Matcher::new(&Gallery::new("ab".repeat(32), 3))
                .search(&e(&[1.0, 0.0, 0.0]))
                .unwrap(),
            None
        );
        let one = Gallery {
            people: vec![g.people[1].clone()],
            ..g.clone()
        };
        assert_eq!(
            Matcher::new(&one)
                .search(&e(&[0.0, 0.0, 1.0]))
                .unwrap()
                .unwrap()
                .margin(),
            None
        );
    }

    #[test]
    fn parallel_search_agrees_with_brute_force() {
        // Enough rows to take the parallel path; deterministic pseudo-random vectors.
        let dim = 16;
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut g = Gallery::new("ab".repeat(32), dim as u32);
        for i in 0..3000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            let v1: Vec<f32> = (0..dim).map(|_| next()).collect();
            let v2: Vec<f32> = (0..dim).map(|_| next()).collect();
            g.people.push(person(0, &format!("p{i}"), &[&v1, &v2]));
            g.people.last_mut().unwrap().id = PersonId(id);
        }
        let m = Matcher::new(&g);
        assert!(m.rows() >= PARALLEL_ROWS);
        let probe = e(&(0..dim).map(|_| next()).collect::<Vec<_>>());
        let r = m.search(&probe).unwrap().unwrap();
        let mut brute: Vec<f32> = g
            .people
            .iter()
            .map(|p| {
                std::iter::once(&p.mean)
                    .chain(p.templates.iter().map(|t| &t.embedding))
                    .map(|x| x.cosine(&probe).unwrap())
                    .fold(f32::MIN, f32::max)
            })
            .collect();
        let best = brute
            .iter()
            .cloned()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert_eq!(r.best.index, best.0);
        assert!((r.best.score - best.1).abs() < 1e-5);
        brute.sort_by(|a, b| b.total_cmp(a));
        assert!((r.second_score.unwrap() - brute[1]).abs() < 1e-5);
    }

    #[test]
    fn dot_handles_tails() {
        assert_eq!(
            dot(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 1.0, 1.0, 1.0, 2.0]),
            20.0
        );
        assert_eq!(dot(&[], &[]), 0.0);
    }
}
