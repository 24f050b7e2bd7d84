//! The daemon's state file: which processes it governs, keyed by identity
//! (pid, start time), so a restarted daemon re-adopts exactly those and
//! never a process that merely reuses a pid.
//!
//! Written atomically: a temporary file in the same directory, fsync,
//! rename over the old file, fsync of the directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::process::ProcessId;

/// The file format; bump [`STATE_VERSION`] on an incompatible change.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    pub jobs: Vec<StateJob>,
}

/// One governed process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateJob {
    pub job_id: String,
    pub pid: u32,
    /// `/proc/<pid>/stat` field 22, clock ticks since boot.
    pub start_time: u64,
    pub command: String,
    /// When the daemon attached it, milliseconds since the Unix epoch.
    pub attached_unix_ms: u64,
}

impl StateJob {
    pub fn id(&self) -> ProcessId {
        ProcessId {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    pub fn attached(&self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_millis(self.attached_unix_ms)
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading the state file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the state file {} is not valid: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("writing the state file {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

impl StateFile {
    /// Read the state; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<StateFile, StateError> {
        let raw = match std::fs::read(path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StateFile::default()),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let state: StateFile = serde_json::from_slice(&raw).map_err(|e| StateError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(StateError::Invalid {
                path: path.to_owned(),
                message: format!("version {} (this ffrtmp reads version {STATE_VERSION})", state.version),
            });
        }
        Ok(state)
    }

    /// Replace the file atomically and durably.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut tmp = tempfile_in(dir, path).map_err(err)?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        let written = tmp
            .1
            .write_all(&json)
            .and_then(|()| tmp.1.write_all(b"\n"))
            .and_then(|()| tmp.1.sync_all());
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp.0, path)) {
            let _ = std::fs::remove_file(&tmp.0);
            return Err(err(e));
        }
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)
    }
}

/// A new, exclusive temporary file next to `path`.
fn tempfile_in(dir: &Path, path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    Ok((tmp, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(pid: u32) -> StateJob {
        StateJob {
            job_id: format!("auto-ffmpeg-{pid}"),
            pid,
            start_time: 1234,
            command: "ffmpeg".into(),
            attached_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/watch-state.json");
        assert_eq!(StateFile::load(&path).unwrap(), StateFile::default());
        let state = StateFile {
            version: STATE_VERSION,
            jobs: vec![job(10), job(11)],
        };
        state.save(&path).unwrap();
        assert_eq!(StateFile::load(&path).unwrap(), state);
        let smaller = StateFile {
            version: STATE_VERSION,
            jobs: vec![job(12)],
        };
        smaller.save(&path).unwrap();
        assert_eq!(StateFile::load(&path).unwrap(), smaller);
        // No temporary file is left next to it.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn invalid_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = StateFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("s.json") && e.contains("not valid"), "{e}");
        std::fs::write(&path, r#"{"version": 99, "jobs": []}"#).unwrap();
        let e = StateFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
    }
}
