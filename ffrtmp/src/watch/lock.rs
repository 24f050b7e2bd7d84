//! One daemon per cgroup root: two `ffrtmp watch` on the same root would
//! fight over every target. The first holds an exclusive `flock` on a file
//! named after the root's directory, in `/run/ffrtmp/`; the second finds it
//! taken and refuses, naming the holder's pid (written in the file). The
//! kernel drops the lock when its holder dies, `kill -9` included, so a
//! crashed daemon never blocks the next.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where the lock files live (a tmpfs on systemd hosts: gone at reboot).
pub const LOCK_DIR: &str = "/run/ffrtmp";

/// Why the root could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another ffrtmp watch (pid {pid}) already governs the cgroup root {}: two daemons on one root fight over every target; stop it first, or give this one another --cgroup-root (lock: {})",
        root.display(),
        lock.display()
    )]
    Held { root: PathBuf, pid: String, lock: PathBuf },
    #[error("locking the cgroup root with {}: {source}", lock.display())]
    Io {
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The lock on one cgroup root, held while this value lives.
#[derive(Debug)]
pub struct RootLock {
    _file: File,
    pub path: PathBuf,
}

/// The lock file for the root whose directory (in the first hierarchy) is
/// `root_dir`: its path with `%` and `/` escaped, so every root has its own.
pub fn lock_path(dir: &Path, root_dir: &Path) -> PathBuf {
    let name: String = root_dir
        .to_string_lossy()
        .chars()
        .flat_map(|c| match c {
            '%' => "%25".chars().collect::<Vec<_>>(),
            '/' => "%2F".chars().collect(),
            c => vec![c],
        })
        .collect();
    // A file name has at most 255 bytes; cgroup paths are far shorter.
    let name: String = name.chars().take(240).collect();
    dir.join(format!("watch.{name}.lock"))
}

/// Take the lock for `root_dir` in `dir` (normally [`LOCK_DIR`]).
pub fn lock_root(dir: &Path, root_dir: &Path) -> Result<RootLock, LockError> {
    let path = lock_path(dir, root_dir);
    let io = |source| LockError::Io {
        lock: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let pid = holder.trim();
            return Err(LockError::Held {
                root: root_dir.to_path_buf(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.to_string()
                },
                lock: path,
            });
        }
        Err(e) => return Err(io(e.into())),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(RootLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_root_and_the_second_names_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new("/sys/fs/cgroup/ffrtmp");
        let first = lock_root(dir.path(), root).unwrap();
        assert_eq!(
            std::fs::read_to_string(&first.path).unwrap(),
            format!("{}\n", std::process::id())
        );
        // flock locks belong to the open file: a second open is refused.
        match lock_root(dir.path(), root) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("{other:?}"),
        }
        // Another root has its own lock.
        lock_root(dir.path(), Path::new("/sys/fs/cgroup/ffrtmp/x")).unwrap();
        drop(first);
        lock_root(dir.path(), root).expect("free once the holder is gone");
    }

    #[test]
    fn lock_names_escape_the_path() {
        assert_eq!(
            lock_path(Path::new("/run/ffrtmp"), Path::new("/sys/fs/cgroup/a%b/c")),
            Path::new("/run/ffrtmp/watch.%2Fsys%2Ffs%2Fcgroup%2Fa%25b%2Fc.lock")
        );
    }
}
