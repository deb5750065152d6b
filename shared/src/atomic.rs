//! Crash-safe replacement of a file: readers see the old or the new content, never a mix.
//!
//! A temp file in the same directory (same filesystem, so `rename` is atomic) is written and
//! fsynced, renamed over the target, and the directory is fsynced so the rename itself survives
//! power loss.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Replace `path` with `bytes` atomically. `mode` (Unix permission bits, e.g. 0o600 for keys)
/// is applied to the temp file before any byte is written, so a secret is never world-readable.
pub fn atomic_write_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    replace_with(path, bytes, mode.unwrap_or(0o644), |_| Ok(()))
}

/// Replace `path` with `bytes` atomically, keeping the owner, group and permission bits of the
/// file it replaces, so `sudo edge enroll` leaves a gallery the service user can still read.
/// A new file gets `new_mode` and the writer's owner. The temp file is created 0600 and given
/// the old file's owner and mode (fchown, fchmod) before any byte is written; if the owner
/// cannot be kept (not root and not the owner) the old file stays and the error says so.
pub fn atomic_write_keeping_owner(path: &Path, bytes: &[u8], new_mode: u32) -> io::Result<()> {
    let old = match fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some(old) = old else {
        return replace_with(path, bytes, new_mode, |_| Ok(()));
    };
    replace_with(path, bytes, 0o600, |f| keep_owner_and_mode(f, &old, path))
}

#[cfg(unix)]
fn keep_owner_and_mode(tmp: &File, old: &fs::Metadata, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let new = tmp.metadata()?;
    if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
        std::os::unix::fs::fchown(tmp, Some(old.uid()), Some(old.gid())).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot give the new {} the owner {}:{} of the file it replaces ({e}); run as that user or as root",
                    path.display(),
                    old.uid(),
                    old.gid()
                ),
            )
        })?;
    }
    // After fchown: changing the owner may clear set-id bits, so the mode goes last.
    tmp.set_permissions(fs::Permissions::from_mode(old.mode() & 0o7777))
}

#[cfg(not(unix))]
fn keep_owner_and_mode(_tmp: &File, _old: &fs::Metadata, _path: &Path) -> io::Result<()> {
    Ok(())
}

/// Write `bytes` to a new temp file beside `path` (created with `mode`, then `prepare`d),
/// fsync, rename over `path`, fsync the directory. The temp file is removed on any error.
fn replace_with(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    prepare: impl FnOnce(&File) -> io::Result<()>,
) -> io::Result<()> {
    publish_via_temp(path, "tmp", bytes, mode, prepare, |tmp, path| {
        fs::rename(tmp, path)
    })
}

/// Create `path` with `bytes` only if it does not exist: never replaces an existing file, and
/// a reader never sees it half-written. The bytes go to a temp file (`create_new`, `mode`,
/// fsynced) which is then hard-linked to `path`; `link(2)` fails with `AlreadyExists` when
/// `path` exists, atomically, so of two racing creators exactly one wins.
pub fn create_new_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    publish_via_temp(
        path,
        "new",
        bytes,
        mode,
        |_| Ok(()),
        |tmp, path| fs::hard_link(tmp, path),
    )
}

/// The one write path of this module: a `create_new` temp file `.<name>.<tag>.<pid>.<n>` beside
/// `path` (mode `mode`, then `prepare`d), the bytes, fsync, `publish` (rename or link) onto
/// `path`, fsync the directory. The temp name is removed afterwards in every case (after a
/// rename it no longer exists; after a link it is the second name of the new file).
fn publish_via_temp(
    path: &Path,
    tag: &str,
    bytes: &[u8],
    mode: u32,
    prepare: impl FnOnce(&File) -> io::Result<()>,
    publish: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.{tag}.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        unique_suffix()
    ));
    let result = (|| {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp)?;
        prepare(&f)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        publish(&tmp, path)?;
        sync_dir(&dir)
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// [`atomic_write_mode`] with default permissions.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    atomic_write_mode(path, bytes, None)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    // Directories cannot be opened for fsync on every platform; on Unix this is required for
    // the rename to be durable.
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    let _ = dir;
    Ok(())
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (nanos << 16) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gallery.bin");
        atomic_write(&p, b"old").unwrap();
        atomic_write(&p, b"new content").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new content");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temp file left behind: {names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn mode_is_applied() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        atomic_write_mode(&p, b"secret", Some(0o600)).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_rewrite_keeps_owner_group_and_mode() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gallery.bin");
        atomic_write_keeping_owner(&p, b"first", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().mode() & 0o7777,
            0o600,
            "a new file"
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        // As root (CI), give the file to another user and group, as the packaging does.
        let root = euid() == 0;
        if root {
            std::os::unix::fs::chown(&p, Some(4242), Some(4343)).unwrap();
        }
        atomic_write_keeping_owner(&p, b"second", 0o600).unwrap();
        let m = fs::metadata(&p).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(m.mode() & 0o7777, 0o640, "mode kept");
        if root {
            assert_eq!((m.uid(), m.gid()), (4242, 4343), "owner and group kept");
        } else {
            eprintln!("not root: owner check skipped, mode checked");
        }
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left");
    }

    /// The effective uid, from the owner of a file this process just created (no libc).
    #[cfg(unix)]
    fn euid() -> u32 {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("me");
        fs::write(&p, b"").unwrap();
        fs::metadata(&p).unwrap().uid()
    }

    #[test]
    fn create_new_never_replaces_and_one_racer_wins() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        create_new_atomic(&p, b"one", 0o600).unwrap();
        let e = create_new_atomic(&p, b"two", 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        let p = std::sync::Arc::new(dir.path().join("raced"));
        let winners: usize = (0..16)
            .map(|i| {
                let p = p.clone();
                std::thread::spawn(move || {
                    create_new_atomic(&p, format!("{i}").as_bytes(), 0o600).is_ok() as usize
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(winners, 1);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "no temp files left: {names:?}");
    }

    #[test]
    fn missing_directory_is_an_error_not_a_panic() {
        let err = atomic_write(Path::new("/nonexistent-dir-maskgate/x"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
