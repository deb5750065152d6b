//! The gallery writer lock: one process at a time may load, change and save the gallery.
//!
//! An exclusive advisory `flock(2)` on `<gallery path>.lock`, held for the whole
//! load-modify-save, so two writers (two `edge enroll`s, an enroll and a `gallery remove`, later
//! the door service) can never both load generation N and both save N+1, losing one change.
//! The lock file itself holds nothing and stays; the kernel drops the lock when the holder
//! exits, crashes included, so a stale lock file never blocks anyone.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a waiting writer retries.
const RETRY: Duration = Duration::from_millis(25);

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("gallery lock {lock} is held by another process (another `edge enroll` or `edge gallery` command, or the door service, is writing the gallery){}; nothing was changed: try again when it has finished, or pass --wait SECONDS", waited_text(.waited))]
    Held {
        lock: String,
        waited: Option<Duration>,
    },
    #[error("gallery lock {lock}: {source}")]
    Io { lock: String, source: io::Error },
}

fn waited_text(waited: &Option<Duration>) -> String {
    match waited {
        Some(d) if !d.is_zero() => format!(" and was still held after {:.1} s", d.as_secs_f64()),
        _ => String::new(),
    }
}

/// A held writer lock; dropping it releases the lock.
#[derive(Debug)]
pub struct WriterLock {
    /// The open lock file: the flock lives as long as this descriptor.
    _file: File,
    path: PathBuf,
    gallery: PathBuf,
}

impl WriterLock {
    /// `<gallery>.lock`.
    pub fn path_for(gallery: &Path) -> PathBuf {
        let mut name = gallery.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Take the lock of `gallery`. `wait` = `None` or zero fails at once when another process
    /// holds it; otherwise retries until the time is up.
    pub fn acquire(gallery: &Path, wait: Option<Duration>) -> Result<Self, LockError> {
        let path = Self::path_for(gallery);
        let io_err = |source| LockError::Io {
            lock: path.display().to_string(),
            source,
        };
        let file = open_lock_file(&path).map_err(io_err)?;
        let started = Instant::now();
        loop {
            match try_lock_exclusive(&file) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return Err(io_err(e)),
            }
            let waited = started.elapsed();
            match wait {
                Some(limit) if waited < limit => {
                    std::thread::sleep(RETRY.min(limit - waited));
                }
                _ => {
                    return Err(LockError::Held {
                        lock: path.display().to_string(),
                        waited: wait.map(|_| waited),
                    })
                }
            }
        }
        Ok(Self {
            _file: file,
            path,
            gallery: gallery.to_path_buf(),
        })
    }

    /// Block until the lock is free (for short critical sections such as the state file).
    pub fn acquire_blocking(target: &Path) -> Result<Self, LockError> {
        let path = Self::path_for(target);
        let io_err = |source| LockError::Io {
            lock: path.display().to_string(),
            source,
        };
        let file = open_lock_file(&path).map_err(io_err)?;
        lock_exclusive(&file).map_err(io_err)?;
        Ok(Self {
            _file: file,
            path,
            gallery: target.to_path_buf(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file this lock guards.
    pub fn guards(&self) -> &Path {
        &self.gallery
    }
}

/// Open the lock file, creating it (0644: a lock file made by `sudo edge ...` must still be
/// openable by the service user, and flock needs only a read-only descriptor).
fn open_lock_file(path: &Path) -> io::Result<File> {
    match File::open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut opts = OpenOptions::new();
            opts.read(true).write(true).create(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o644);
            }
            opts.open(path)
        }
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(unix)]
fn lock_exclusive(file: &File) -> io::Result<()> {
    use rustix::fs::{flock, FlockOperation};
    loop {
        match flock(file, FlockOperation::LockExclusive) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other.map_err(Into::into),
        }
    }
}

#[cfg(not(unix))]
fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(not(unix))]
fn lock_exclusive(file: &File) -> io::Result<()> {
    file.lock()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_fails_fast_and_names_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("gallery.bin");
        let held = WriterLock::acquire(&g, None).unwrap();
        assert_eq!(held.path(), dir.path().join("gallery.bin.lock"));
        let t = Instant::now();
        let e = WriterLock::acquire(&g, None).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1), "fails fast");
        let msg = e.to_string();
        assert!(
            msg.contains("gallery.bin.lock") && msg.contains("another process"),
            "{msg}"
        );
        let e = WriterLock::acquire(&g, Some(Duration::from_millis(120))).unwrap_err();
        assert!(e.to_string().contains("still held after"), "{e}");
        drop(held);
        WriterLock::acquire(&g, None).unwrap();
    }

    #[test]
    fn a_waiting_writer_gets_the_lock_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("gallery.bin");
        let held = WriterLock::acquire(&g, None).unwrap();
        let g2 = g.clone();
        let waiter =
            std::thread::spawn(move || WriterLock::acquire(&g2, Some(Duration::from_secs(10))));
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        waiter.join().unwrap().unwrap();
    }
}
