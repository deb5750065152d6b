//! Many writers, one gallery: the writer lock, key creation, rollback protection and file
//! ownership, with real files and real crypto.
//!
//! - threads doing enroll/remove/rename through `GalleryStore::edit` (what every CLI write uses)
//!   in random interleavings, and processes running `edge gallery rename|remove` at once: every
//!   writer either succeeds and its change is in the final gallery, or gets the lock-held error
//!   and its change is absent;
//! - processes racing to create the gallery key: all galleries they wrote open with the key
//!   on disk;
//! - an older gallery copied back over the current one is refused, naming both generations.

mod common;

use edge::config::{GalleryConfig, KeySource};
use edge::gallery::{self, GalleryKey, GalleryStore, StoreError};
use rand::{Rng, SeedableRng};
use shared::{Embedding, Gallery, Template};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const DIM: usize = 8;
const MODEL: &str = "abababababababababababababababababababababababababababababababab";

fn template(seed: u64) -> Template {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    Template {
        embedding: Embedding::normalize(&v).unwrap(),
        quality: 0.9,
        masked: Some(false),
        created_unix: 1,
    }
}

fn config(dir: &Path) -> GalleryConfig {
    GalleryConfig {
        path: dir.join("gallery.bin"),
        key: KeySource::File(dir.join("gallery.key")),
        state: Some(dir.join("state.toml")),
    }
}

/// A gallery of `people` named p0.. written through a store of `cfg`.
fn seed_gallery(cfg: &GalleryConfig, people: usize) -> Gallery {
    let store = GalleryStore::from_config(cfg).unwrap();
    let mut g = Gallery::new(MODEL.into(), DIM as u32);
    for i in 0..people {
        gallery::add_person(&mut g, &format!("p{i}"), vec![template(i as u64)], 1).unwrap();
    }
    store.replace(&mut g).unwrap();
    g
}

fn names(g: &Gallery) -> Vec<String> {
    let mut n: Vec<String> = g.people.iter().map(|p| p.display_name.clone()).collect();
    n.sort();
    n
}

#[derive(Debug, Clone)]
enum Op {
    Enroll(String),
    Remove(String),
    Rename(String, String),
}

/// What each op does to the set of names, when acknowledged.
fn apply_expected(names: &mut Vec<String>, op: &Op) {
    match op {
        Op::Enroll(n) => names.push(n.clone()),
        Op::Remove(n) => names.retain(|x| x != n),
        Op::Rename(a, b) => {
            for x in names.iter_mut().filter(|x| *x == a) {
                *x = b.clone();
            }
        }
    }
}

#[test]
fn concurrent_threads_lose_no_acknowledged_change() {
    for round in 0..4u64 {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        const N: usize = 24;
        seed_gallery(&cfg, N);
        // Each writer touches only its own person, so acknowledged changes commute and the
        // final gallery is fully determined by which writers got the lock.
        let ops: Vec<Op> = (0..N)
            .map(|i| match (i + round as usize) % 3 {
                0 => Op::Enroll(format!("new{i}")),
                1 => Op::Remove(format!("p{i}")),
                _ => Op::Rename(format!("p{i}"), format!("renamed{i}")),
            })
            .collect();
        let barrier = Arc::new(Barrier::new(N));
        // Odd rounds wait for the lock: then every writer must succeed.
        let wait = (round % 2 == 1).then(|| Duration::from_secs(60));
        let handles: Vec<_> = ops
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, op)| {
                let (cfg, barrier) = (cfg.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(round * 1000 + i as u64);
                    let store = GalleryStore::from_config(&cfg).unwrap();
                    barrier.wait();
                    std::thread::sleep(Duration::from_micros(rng.gen_range(0..3000)));
                    let new = matches!(op, Op::Enroll(_)).then_some((MODEL, DIM));
                    store.edit(wait, new, |g| -> Result<(), StoreError> {
                        // Hold the lock a little, as a real enroll does while it writes.
                        std::thread::sleep(Duration::from_micros(rng.gen_range(0..2000)));
                        match &op {
                            Op::Enroll(n) => {
                                gallery::add_person(g, n, vec![template(900 + i as u64)], 2)
                                    .map(drop)
                            }
                            Op::Remove(n) => gallery::remove(g, n).map(drop),
                            Op::Rename(a, b) => gallery::rename(g, a, b, 2).map(drop),
                        }
                        .unwrap();
                        Ok(())
                    })
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut expected: Vec<String> = (0..N).map(|i| format!("p{i}")).collect();
        let mut acknowledged = 0;
        for (op, r) in ops.iter().zip(&results) {
            match r {
                Ok(()) => {
                    acknowledged += 1;
                    apply_expected(&mut expected, op);
                }
                Err(StoreError::Lock(e)) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("gallery.bin.lock") && msg.contains("another process"),
                        "{msg}"
                    );
                    assert!(wait.is_none(), "a waiting writer must get the lock: {msg}");
                }
                Err(e) => panic!("round {round}: {op:?}: unexpected error {e}"),
            }
        }
        expected.sort();
        let store = GalleryStore::from_config(&cfg).unwrap();
        let g = store.load().unwrap().unwrap();
        assert_eq!(names(&g), expected, "round {round}: {results:?}");
        assert_eq!(
            g.generation,
            1 + acknowledged,
            "one generation per acknowledged write"
        );
        if wait.is_some() {
            assert_eq!(acknowledged, N as u64);
        }
        g.validate().unwrap();
    }
}

/// An `edge.toml` for the gallery commands (they load no model).
fn write_cli_config(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
[model.onnx]
path = "unused.onnx"
input = "data"
output = "fc1"
layout = "nchw"
color = "rgb"
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
threshold_unmasked = 0.4

[detector]
path = "unused-detector.onnx"

[gallery]
path = "{g}"
key_file = "{k}"

[audit]
path = "{a}"
"#,
        g = dir.join("gallery.bin").display(),
        k = dir.join("gallery.key").display(),
        a = dir.join("audit.jsonl").display(),
    );
    let p = dir.join("edge.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn concurrent_cli_processes_lose_no_acknowledged_change() {
    for wait in [None, Some("60")] {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = write_cli_config(dir.path());
        let cfg = edge::Config::load(&cfg_path).unwrap();
        assert_eq!(cfg.gallery.state, Some(dir.path().join("state.toml")));
        const N: usize = 12;
        seed_gallery(&cfg.gallery, N);
        let ops: Vec<Op> = (0..N)
            .map(|i| {
                if i % 2 == 0 {
                    Op::Rename(format!("p{i}"), format!("renamed{i}"))
                } else {
                    Op::Remove(format!("p{i}"))
                }
            })
            .collect();
        let children: Vec<_> = ops
            .iter()
            .map(|op| {
                let mut c = common::edge_command();
                c.arg("--config").arg(&cfg_path);
                if let Some(w) = wait {
                    c.args(["--wait", w]);
                }
                match op {
                    Op::Rename(a, b) => c.args(["gallery", "rename", a, b]),
                    Op::Remove(a) => c.args(["gallery", "remove", a]),
                    Op::Enroll(_) => unreachable!(),
                };
                c.stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut expected: Vec<String> = (0..N).map(|i| format!("p{i}")).collect();
        let mut acknowledged = 0u64;
        for (op, child) in ops.iter().zip(children) {
            let o = child.wait_with_output().unwrap();
            let (out, err) = common::output_text(&o);
            match o.status.code() {
                Some(0) => {
                    acknowledged += 1;
                    apply_expected(&mut expected, op);
                }
                Some(2) if wait.is_none() => assert!(
                    err.contains("gallery.bin.lock") && err.contains("another process"),
                    "{op:?}: {out} {err}"
                ),
                code => panic!("{op:?}: exit {code:?}: {out} {err}"),
            }
        }
        expected.sort();
        let g = GalleryStore::from_config(&cfg.gallery)
            .unwrap()
            .load()
            .unwrap()
            .unwrap();
        assert_eq!(names(&g), expected, "wait {wait:?}");
        assert_eq!(g.generation, 1 + acknowledged);
        if wait.is_some() {
            assert_eq!(
                acknowledged, N as u64,
                "with --wait every writer gets its turn"
            );
        }
    }
}

#[test]
fn the_cli_names_the_lock_when_it_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_cli_config(dir.path());
    let cfg = edge::Config::load(&cfg_path).unwrap();
    seed_gallery(&cfg.gallery, 2);
    let _held = edge::gallery::WriterLock::acquire(&cfg.gallery.path, None).unwrap();
    let t = std::time::Instant::now();
    let o = common::edge_command()
        .arg("--config")
        .arg(&cfg_path)
        .args(["--wait", "1", "gallery", "remove", "p0"])
        .output()
        .unwrap();
    let (_, err) = common::output_text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("gallery.bin.lock")
            && err.contains("held by another process")
            && err.contains("still held after"),
        "{err}"
    );
    assert!(t.elapsed() >= Duration::from_secs(1), "it waited");
    let o = common::edge_command()
        .arg("--config")
        .arg(&cfg_path)
        .args(["gallery", "list"])
        .output()
        .unwrap();
    assert!(o.status.success(), "readers need no lock");
}

const KEY_RACE_DIR: &str = "MASKGATE_KEY_RACE_DIR";
const KEY_RACE_INDEX: &str = "MASKGATE_KEY_RACE_INDEX";

/// The config of key racer `i`: one key file shared by all, a gallery of its own.
fn racer_config(dir: &Path, i: usize) -> GalleryConfig {
    GalleryConfig {
        path: dir.join(format!("gallery{i}.bin")),
        key: KeySource::File(dir.join("gallery.key")),
        state: None,
    }
}

/// One key racer: get the key (creating it if missing) and write a gallery with it.
fn race_once(dir: &Path, i: usize) {
    let store = GalleryStore::from_config(&racer_config(dir, i)).unwrap();
    let mut g = Gallery::new(MODEL.into(), DIM as u32);
    gallery::add_person(&mut g, &format!("racer{i}"), vec![template(i as u64)], 1).unwrap();
    store.replace(&mut g).unwrap();
}

#[test]
#[ignore = "helper process of key_creation_race_keeps_one_key"]
fn key_race_child() {
    let (Ok(dir), Ok(i)) = (std::env::var(KEY_RACE_DIR), std::env::var(KEY_RACE_INDEX)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    // Start together: spin until the parent's go file appears.
    while !dir.join("go").exists() {
        std::hint::spin_loop();
    }
    race_once(&dir, i.parse().unwrap());
}

#[test]
fn key_creation_race_keeps_one_key() {
    // Threads of one process.
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        const N: usize = 16;
        let barrier = Arc::new(Barrier::new(N));
        let hs: Vec<_> = (0..N)
            .map(|i| {
                let (d, b) = (dir.path().to_path_buf(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    race_once(&d, i);
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        all_open_with_the_key_on_disk(dir.path(), N);
    }
    // Processes.
    let exe = std::env::current_exe().unwrap();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        const N: usize = 8;
        let children: Vec<_> = (0..N)
            .map(|i| {
                common::command_for(&exe)
                    .args(["key_race_child", "--exact", "--ignored", "--nocapture"])
                    .env(KEY_RACE_DIR, dir.path())
                    .env(KEY_RACE_INDEX, i.to_string())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(dir.path().join("go"), b"").unwrap();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        all_open_with_the_key_on_disk(dir.path(), N);
    }
}

fn all_open_with_the_key_on_disk(dir: &Path, n: usize) {
    let key = GalleryKey::read_file(&dir.join("gallery.key")).unwrap();
    for i in 0..n {
        let g = GalleryStore::new(dir.join(format!("gallery{i}.bin")), key.clone())
            .load()
            .unwrap_or_else(|e| {
                panic!("racer {i}'s gallery does not open with the key on disk: {e}")
            })
            .unwrap();
        assert_eq!(g.people[0].display_name, format!("racer{i}"));
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn an_older_gallery_copied_back_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    seed_gallery(&cfg, 3);
    let store = GalleryStore::from_config(&cfg).unwrap();
    let old = std::fs::read(&cfg.path).unwrap();
    store
        .edit(None, None, |g| -> Result<(), StoreError> {
            gallery::remove(g, "p1").unwrap();
            Ok(())
        })
        .unwrap();
    store
        .edit(None, None, |g| -> Result<(), StoreError> {
            gallery::rename(g, "p2", "q2", 3).unwrap();
            Ok(())
        })
        .unwrap();
    assert_eq!(store.load().unwrap().unwrap().generation, 3);
    // The removed person comes back with the old file: refused.
    std::fs::write(&cfg.path, &old).unwrap();
    let e = store.load().unwrap_err();
    assert!(e.is_rollback());
    let msg = e.to_string();
    assert!(
        msg.contains("gallery.bin")
            && msg.contains("generation 1")
            && msg.contains("generation 3")
            && msg.contains("state.toml"),
        "{msg}"
    );
    // Writers refuse it too, and write nothing.
    let e = store
        .edit(None, None, |_| -> Result<(), StoreError> { Ok(()) })
        .unwrap_err();
    assert!(e.is_rollback(), "{e}");
    assert_eq!(std::fs::read(&cfg.path).unwrap(), old);
    // Without the state file the same file loads (the record is what protects).
    let key = GalleryKey::read_file(&dir.path().join("gallery.key")).unwrap();
    assert_eq!(
        GalleryStore::new(&cfg.path, key)
            .load()
            .unwrap()
            .unwrap()
            .generation,
        1
    );
}

#[test]
fn a_new_gallery_at_a_known_path_continues_the_generations() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    seed_gallery(&cfg, 1);
    let store = GalleryStore::from_config(&cfg).unwrap();
    for _ in 0..3 {
        store
            .edit(None, None, |_| -> Result<(), StoreError> { Ok(()) })
            .unwrap();
    }
    // Deleting the gallery and enrolling anew starts above the recorded generation, so the
    // new gallery is not refused, and the deleted one cannot be put back either.
    let old = std::fs::read(&cfg.path).unwrap();
    std::fs::remove_file(&cfg.path).unwrap();
    store
        .edit(None, Some((MODEL, DIM)), |g| -> Result<(), StoreError> {
            gallery::add_person(g, "fresh", vec![template(7)], 9).unwrap();
            Ok(())
        })
        .unwrap();
    assert_eq!(store.load().unwrap().unwrap().generation, 5);
    std::fs::write(&cfg.path, &old).unwrap();
    assert!(store.load().unwrap_err().is_rollback());
}

#[cfg(unix)]
#[test]
fn a_rewrite_keeps_the_gallery_owner_and_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    seed_gallery(&cfg, 2);
    assert_eq!(
        std::fs::metadata(&cfg.path).unwrap().mode() & 0o7777,
        0o600,
        "a new gallery is private"
    );
    // The packaging gives the gallery to the service user; `sudo edge enroll` must keep that.
    std::fs::set_permissions(&cfg.path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let me = std::fs::metadata(&cfg.path).unwrap().uid();
    let root = me == 0;
    if root {
        std::os::unix::fs::chown(&cfg.path, Some(4321), Some(4322)).unwrap();
    } else {
        eprintln!("not root: checking the mode only");
    }
    let store = GalleryStore::from_config(&cfg).unwrap();
    store
        .edit(None, None, |g| -> Result<(), StoreError> {
            gallery::rename(g, "p0", "q0", 2).unwrap();
            Ok(())
        })
        .unwrap();
    let m = std::fs::metadata(&cfg.path).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    if root {
        assert_eq!((m.uid(), m.gid()), (4321, 4322));
    }
    assert_eq!(names(&store.load().unwrap().unwrap()), vec!["p1", "q0"]);
}
