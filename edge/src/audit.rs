//! Append-only audit log: one JSON line per door event, chained by sha256.
//!
//! Each line is `{"seq":N,"ts_ms":T,"prev":"<hash of line N-1>","data":{...},"hash":"<h>"}` where
//! `h = sha256(prev_hash || body)` and `body` is the line's exact bytes without the `,"hash":..`
//! member (so verification needs no JSON canonicalisation). Editing a line breaks its hash;
//! deleting or reordering lines breaks the next line's `prev`/`seq`. Cutting off the tail cannot
//! be seen from the file alone: compare `entries`/`head` with the daemon's status lines.
//!
//! Every append is fsynced before the door acts on the next frame. A line torn by power loss
//! (no final newline) is dropped on open and the drop itself is logged.
//!
//! [`AuditLog`] is a handle: clones share one open file and one chain, so the door loop and
//! the admin API write to the same log and each line is appended whole, in one order.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The log file; its directory is created if missing.
    #[serde(default = "default_audit_path")]
    pub path: PathBuf,
    /// The edge's state file (newest gallery generation and bundle version seen, see
    /// [`crate::state`]); `state.toml` in the audit log's directory when absent.
    #[serde(default)]
    pub state: Option<PathBuf>,
}

impl AuditConfig {
    /// Where the state file is: `state`, else `state.toml` beside the audit log.
    pub fn state_path(&self) -> PathBuf {
        match &self.state {
            Some(p) => p.clone(),
            None => self
                .path
                .parent()
                .map(|d| d.join("state.toml"))
                .unwrap_or_else(|| PathBuf::from("state.toml")),
        }
    }
}

fn default_audit_path() -> PathBuf {
    PathBuf::from("/var/lib/maskgate/audit.jsonl")
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: default_audit_path(),
            state: None,
        }
    }
}

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_KEY: &str = ",\"hash\":\"";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("audit log {} line {line}: {problem}", path.display())]
    Broken {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("audit log {path}: cannot encode event: {error}")]
    Encode {
        path: PathBuf,
        error: serde_json::Error,
    },
}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub entries: u64,
    /// Hash of the last line ([`GENESIS`] for an empty log).
    pub head: String,
}

/// The open log, positioned at its end; cheap to clone (clones append to the same chain).
#[derive(Clone)]
pub struct AuditLog {
    path: Arc<PathBuf>,
    chain: Arc<Mutex<Chain>>,
}

/// The file and where the chain stands; one writer at a time.
struct Chain {
    file: File,
    next_seq: u64,
    head: String,
}

#[derive(Serialize)]
#[serde(tag = "event", rename = "torn_tail_dropped")]
struct TornTail {
    dropped_bytes: usize,
    dropped_sha256: String,
}

impl AuditLog {
    /// Open (or create) the log, verifying the whole chain first: a tampered log is refused.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let io_err = |error| AuditError::Io {
            path: path.to_path_buf(),
            error,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(e)),
        };
        let torn = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(last_nl) if last_nl + 1 < bytes.len() => Some(bytes.split_off(last_nl + 1)),
            None if !bytes.is_empty() => Some(std::mem::take(&mut bytes)),
            _ => None,
        };
        let summary = verify_bytes(path, &bytes)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err)?;
        if torn.is_some() {
            file.set_len(bytes.len() as u64).map_err(io_err)?;
        }
        let mut log = Self {
            path: Arc::new(path.to_path_buf()),
            chain: Arc::new(Mutex::new(Chain {
                file,
                next_seq: summary.entries + 1,
                head: summary.head,
            })),
        };
        if let Some(tail) = torn {
            tracing::warn!(
                "{}: dropped a torn last line ({} bytes)",
                path.display(),
                tail.len()
            );
            log.append(&TornTail {
                dropped_bytes: tail.len(),
                dropped_sha256: shared::sha256_hex(&tail),
            })?;
        }
        Ok(log)
    }

    /// Append one event (any serde object) with the current time, and fsync.
    pub fn append<E: Serialize>(&mut self, event: &E) -> Result<(), AuditError> {
        self.write_at(now_ms(), event)
    }

    /// Append with an explicit unix time in milliseconds, and fsync.
    pub fn append_at<E: Serialize>(&mut self, ts_ms: u64, event: &E) -> Result<(), AuditError> {
        self.write_at(ts_ms, event)
    }

    /// [`Self::append`] through a shared reference (the admin API's clones).
    pub fn write<E: Serialize>(&self, event: &E) -> Result<(), AuditError> {
        self.write_at(now_ms(), event)
    }

    fn write_at<E: Serialize>(&self, ts_ms: u64, event: &E) -> Result<(), AuditError> {
        let data = serde_json::to_string(event).map_err(|error| AuditError::Encode {
            path: self.path.to_path_buf(),
            error,
        })?;
        let mut chain = self.chain();
        let body = format!(
            "{{\"seq\":{},\"ts_ms\":{},\"prev\":\"{}\",\"data\":{}}}",
            chain.next_seq, ts_ms, chain.head, data
        );
        let hash = chain_hash(&chain.head, &body);
        let line = format!("{}{HASH_KEY}{hash}\"}}\n", &body[..body.len() - 1]);
        let io_err = |error| AuditError::Io {
            path: self.path.to_path_buf(),
            error,
        };
        chain.file.write_all(line.as_bytes()).map_err(io_err)?;
        chain.file.sync_data().map_err(io_err)?;
        chain.next_seq += 1;
        chain.head = hash;
        Ok(())
    }

    /// The chain, even if a writer panicked mid-append (the file then ends in a torn line,
    /// which the next open drops and records).
    fn chain(&self) -> MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines written so far (including those found on open).
    pub fn entries(&self) -> u64 {
        self.chain().next_seq - 1
    }

    /// Hash of the last line.
    pub fn head(&self) -> String {
        self.chain().head.clone()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn chain_hash(prev: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// Verify a log file; the error names the first broken line.
pub fn verify_file(path: &Path) -> Result<ChainSummary, AuditError> {
    let bytes = fs::read(path).map_err(|error| AuditError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    verify_bytes(path, &bytes)
}

fn verify_bytes(path: &Path, bytes: &[u8]) -> Result<ChainSummary, AuditError> {
    let mut head = GENESIS.to_string();
    let mut entries = 0u64;
    for (i, raw) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let broken = |problem: String| AuditError::Broken {
            path: path.to_path_buf(),
            line: line_no,
            problem,
        };
        let raw = raw
            .strip_suffix(b"\n")
            .ok_or_else(|| broken("no final newline (torn write?)".into()))?;
        let line = std::str::from_utf8(raw).map_err(|_| broken("not UTF-8".into()))?;
        let (body, stated) = split_hash(line)
            .ok_or_else(|| broken("missing or malformed \"hash\" member".into()))?;
        if chain_hash(&head, &body) != stated {
            let v: Option<serde_json::Value> = serde_json::from_str(&body).ok();
            let prev = v
                .as_ref()
                .and_then(|v| v.get("prev")?.as_str().map(str::to_string));
            return Err(broken(if prev.as_deref() == Some(head.as_str()) {
                "hash does not match the content (line edited)".into()
            } else if line_no == 1 {
                "\"prev\" does not chain to the start of the log (lines deleted or reordered)"
                    .into()
            } else {
                format!(
                    "\"prev\" does not chain to line {} (a line was deleted, reordered or edited)",
                    line_no - 1
                )
            }));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| broken(format!("not JSON: {e}")))?;
        let seq = v.get("seq").and_then(|s| s.as_u64());
        if seq != Some(entries + 1) {
            return Err(broken(format!("seq is {seq:?}, expected {}", entries + 1)));
        }
        head = stated.to_string();
        entries += 1;
    }
    Ok(ChainSummary { entries, head })
}

/// Split `{...,"hash":"<64 hex>"}` into the body `{...}` and the hash.
fn split_hash(line: &str) -> Option<(String, &str)> {
    let rest = line.strip_suffix("\"}")?;
    let at = rest.rfind(HASH_KEY)?;
    let hash = &rest[at + HASH_KEY.len()..];
    if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Some((format!("{}}}", &rest[..at]), hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::door::DoorEvent;

    fn write_log(dir: &Path, n: usize) -> PathBuf {
        let path = dir.join("audit.jsonl");
        let mut log = AuditLog::open(&path).unwrap();
        for i in 0..n {
            log.append_at(
                1_000 + i as u64,
                &DoorEvent::Fault {
                    what: format!("event {i}"),
                },
            )
            .unwrap();
        }
        path
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn rewrite(path: &Path, lines: &[String]) {
        fs::write(
            path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    fn broken_line(path: &Path) -> (usize, String) {
        match verify_file(path) {
            Err(AuditError::Broken { line, problem, .. }) => (line, problem),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn a_written_log_verifies_and_reopens_where_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 5);
        let summary = verify_file(&path).unwrap();
        assert_eq!(summary.entries, 5);
        let mut log = AuditLog::open(&path).unwrap();
        assert_eq!(log.entries(), 5);
        assert_eq!(log.head(), summary.head);
        log.append(&DoorEvent::Relocked).unwrap();
        assert_eq!(verify_file(&path).unwrap().entries, 6);
        let first: serde_json::Value = serde_json::from_str(&lines(&path)[0]).unwrap();
        assert_eq!(first["prev"], GENESIS);
        assert_eq!(first["data"]["event"], "fault");
    }

    #[test]
    fn an_empty_log_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.jsonl");
        fs::write(&path, "").unwrap();
        assert_eq!(
            verify_file(&path).unwrap(),
            ChainSummary {
                entries: 0,
                head: GENESIS.into()
            }
        );
    }

    #[test]
    fn an_edited_line_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 6);
        let mut l = lines(&path);
        l[3] = l[3].replace("event 3", "event X");
        rewrite(&path, &l);
        let (line, problem) = broken_line(&path);
        assert_eq!(line, 4);
        assert!(problem.contains("edited"), "{problem}");
    }

    #[test]
    fn an_edited_line_with_a_recomputed_hash_breaks_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 6);
        let mut l = lines(&path);
        let (body, _) = split_hash(&l[2]).unwrap();
        let prev = split_hash(&l[1]).unwrap().1.to_string();
        let forged = body.replace("event 2", "event Y");
        l[2] = format!(
            "{}{HASH_KEY}{}\"}}",
            &forged[..forged.len() - 1],
            chain_hash(&prev, &forged)
        );
        rewrite(&path, &l);
        let (line, problem) = broken_line(&path);
        assert_eq!(line, 4, "{problem}");
    }

    #[test]
    fn a_deleted_line_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 6);
        let mut l = lines(&path);
        l.remove(2);
        rewrite(&path, &l);
        let (line, problem) = broken_line(&path);
        assert_eq!(line, 3);
        assert!(problem.contains("deleted"), "{problem}");
        // Deleting the first line is found at line 1.
        let path = write_log(&dir.path().join("b"), 3);
        let mut l = lines(&path);
        l.remove(0);
        rewrite(&path, &l);
        assert_eq!(broken_line(&path).0, 1);
    }

    #[test]
    fn reordered_lines_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 6);
        let mut l = lines(&path);
        l.swap(3, 4);
        rewrite(&path, &l);
        assert_eq!(broken_line(&path).0, 4);
    }

    #[test]
    fn garbage_and_missing_hash_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 2);
        let mut l = lines(&path);
        l.push("not json at all".into());
        rewrite(&path, &l);
        let (line, problem) = broken_line(&path);
        assert_eq!(line, 3);
        assert!(problem.contains("hash"), "{problem}");
    }

    #[test]
    fn a_tampered_log_is_refused_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 3);
        let mut l = lines(&path);
        l[0] = l[0].replace("event 0", "event Z");
        rewrite(&path, &l);
        let err = AuditLog::open(&path).err().expect("tampered").to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn a_torn_tail_is_dropped_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 3);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"seq\":4,\"ts_ms\":12");
        fs::write(&path, &bytes).unwrap();
        assert_eq!(broken_line(&path).0, 4);
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.entries(), 4);
        let summary = verify_file(&path).unwrap();
        assert_eq!(summary.entries, 4);
        assert!(lines(&path)[3].contains("torn_tail_dropped"));
    }
}
