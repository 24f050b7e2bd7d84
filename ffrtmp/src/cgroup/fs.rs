//! Cgroup file I/O: every error carries the path (and the value written).
//!
//! Cgroup control files are never created by us: a missing file means the
//! controller is not available there, and the write helper opens without
//! `O_CREAT` so that shows up as `ENOENT` instead of a stray regular file
//! (which is what `fs::write` would do on a fake tree or a wrong path).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// One failed cgroup file operation, with what was being done to what.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("writing {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("removing {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FsError {
    /// The OS error behind this failure.
    pub fn io(&self) -> &io::Error {
        match self {
            FsError::Write { source, .. }
            | FsError::Read { source, .. }
            | FsError::Create { source, .. }
            | FsError::Remove { source, .. } => source,
        }
    }
}

/// Write `value` with a single `write(2)` to an existing file.
///
/// One call matters: `cgroup.procs` takes one pid per write and a trailing
/// separate "\n" write fails with EINVAL.
pub fn write_file(path: &Path, value: &str) -> Result<(), FsError> {
    let wrap = |source| FsError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    };
    let mut file = OpenOptions::new().write(true).open(path).map_err(wrap)?;
    let written = file.write(value.as_bytes()).map_err(wrap)?;
    if written != value.len() {
        return Err(wrap(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write ({written} of {} bytes)", value.len()),
        )));
    }
    Ok(())
}

pub fn read_file(path: &Path) -> Result<String, FsError> {
    read_pseudo(path).map_err(|source| FsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Read a file that may legitimately be absent (an optional kernel feature).
pub fn read_optional(path: &Path) -> Result<Option<String>, FsError> {
    match read_pseudo(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FsError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The whole of a kernel pseudo file (cgroupfs, procfs) as text. These
/// report a size of 0, so `fs::read_to_string` asks for the size (`statx`)
/// and then reads in growing steps from 32 bytes: six system calls for a
/// 150-byte `/proc/<pid>/cgroup`. Reads of 4 KiB take one read and the end
/// of file: these files are read on the way to every adoption's move.
pub fn read_pseudo(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut content = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => content.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(content).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Value of `key` in a flat-keyed file such as `cpu.stat` or `memory.events`.
pub fn keyed_value(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok()).flatten()
    })
}

/// `mkdir` one level. Returns `true` if we created it, `false` if it existed.
pub fn create_dir(path: &Path) -> Result<bool, FsError> {
    match fs::create_dir(path) {
        Ok(()) => {
            #[cfg(test)]
            fake_kernel::on_mkdir(path);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(FsError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Remove a cgroup directory. Cgroups are removed with `rmdir` even though
/// they contain (kernel-provided) files.
pub fn remove_dir(path: &Path) -> Result<(), FsError> {
    fs::remove_dir(path).map_err(|source| FsError::Remove {
        path: path.to_owned(),
        source,
    })
}

/// Unit tests run against fake cgroup trees in a temp dir, where `mkdir`
/// does not create the control files the kernel would: a test installs a
/// hook that does.
#[cfg(test)]
pub mod fake_kernel {
    use std::cell::RefCell;
    use std::path::Path;

    type Hook = Box<dyn Fn(&Path)>;
    thread_local! {
        static ON_MKDIR: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Call `hook` with each directory `create_dir` makes on this thread.
    pub fn set_mkdir_hook(hook: impl Fn(&Path) + 'static) {
        ON_MKDIR.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
    }

    pub(super) fn on_mkdir(path: &Path) {
        ON_MKDIR.with(|h| {
            if let Some(hook) = h.borrow().as_ref() {
                hook(path)
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_never_creates_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpu.max");
        let err = write_file(&path, "max 100000").unwrap_err();
        assert_eq!(err.io().kind(), io::ErrorKind::NotFound);
        assert!(!path.exists());
        assert!(err.to_string().contains("writing \"max 100000\" to"));
    }

    #[test]
    fn pseudo_files_are_read_whole_past_one_chunk_and_refused_when_not_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let big: String = (0..3000).map(|i| format!("line {i}\n")).collect();
        assert!(big.len() > 3 * 4096);
        let path = dir.path().join("memory.stat");
        std::fs::write(&path, &big).unwrap();
        assert_eq!(read_pseudo(&path).unwrap(), big);
        std::fs::write(&path, b"\xff\xfe").unwrap();
        assert_eq!(read_pseudo(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            read_pseudo(&dir.path().join("none")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // A real kernel file (size 0) is read whole too.
        let cgroup = read_pseudo(Path::new("/proc/self/cgroup")).unwrap();
        assert_eq!(cgroup, std::fs::read_to_string("/proc/self/cgroup").unwrap());
    }

    #[test]
    fn keyed_values() {
        let stat = "usage_usec 1234\nnr_throttled 7\nthrottled_usec 99\n";
        assert_eq!(keyed_value(stat, "nr_throttled"), Some(7));
        assert_eq!(keyed_value(stat, "usage_usec"), Some(1234));
        assert_eq!(keyed_value(stat, "nr_periods"), None);
    }
}
