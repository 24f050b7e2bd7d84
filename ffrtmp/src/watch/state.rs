//! The daemon's state file: which processes it governs, keyed by identity
//! (pid, start time), so a restarted daemon re-adopts exactly those and
//! never a process that merely reuses a pid.
//!
//! Written atomically: a new, exclusively created temporary file in the
//! same directory, fsync, rename over the old file, fsync of the directory
//! ([`crate::fsutil::replace`]).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::process::ProcessId;

/// The file format; bump [`STATE_VERSION`] on an incompatible change.
pub const STATE_VERSION: u32 = 1;
/// Only root reads which processes the daemon governs.
const STATE_MODE: u32 = 0o600;

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
    /// Another user could plant or replace the file the root daemon trusts
    /// at start.
    #[error(
        "refusing the state file {}: {reason}; keep it in a directory only root can write (the default /var/lib/ffrtmp)",
        path.display()
    )]
    Insecure { path: PathBuf, reason: String },
}

impl StateFile {
    /// The state file's place must be the daemon's alone: its directory
    /// (when it exists) owned by root or us and writable by no one else —
    /// sticky or not, since anyone who can create a file there can plant
    /// one before the daemon does — and no symlink in the file's place.
    pub fn check_location(path: &Path) -> Result<(), StateError> {
        use std::os::unix::fs::MetadataExt;
        let insecure = |reason: String| StateError::Insecure {
            path: path.to_owned(),
            reason,
        };
        let euid = rustix::process::geteuid().as_raw();
        let dir = fsutil::parent_dir(path);
        if let Ok(m) = std::fs::metadata(dir) {
            let (uid, gid, mode) = (m.uid(), m.gid(), m.mode() & 0o7777);
            if uid != 0 && uid != euid {
                return Err(insecure(format!(
                    "its directory {} is owned by uid {uid} (mode {mode:04o})",
                    dir.display()
                )));
            }
            if mode & 0o002 != 0 || (mode & 0o020 != 0 && gid != 0) {
                return Err(insecure(format!(
                    "its directory {} is writable by others (mode {mode:04o})",
                    dir.display()
                )));
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Err(insecure("it is a symlink".into())),
            _ => Ok(()),
        }
    }

    /// Read the state; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<StateFile, StateError> {
        Self::check_location(path)?;
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

    /// Replace the file atomically and durably, mode 0600 (it names the
    /// processes governed): see [`crate::fsutil::replace`].
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(fsutil::parent_dir(path)).map_err(err)?;
        Self::check_location(path)?;
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        json.push(b'\n');
        fsutil::replace(path, &json, STATE_MODE).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_others_could_plant_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watch-state.json");
        assert!(StateFile::check_location(&path).is_ok());
        for mode in [0o777, 0o1777, 0o773] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let err = StateFile::check_location(&path).unwrap_err().to_string();
            assert!(
                err.contains(&format!("writable by others (mode {mode:04o})")),
                "{mode:o}: {err}"
            );
            assert!(
                StateFile::default().save(&path).is_err(),
                "saved into a {mode:o} directory"
            );
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(
            StateFile::check_location(&path)
                .unwrap_err()
                .to_string()
                .contains("it is a symlink")
        );
        assert!(StateFile::load(&path).is_err());
    }

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

    /// The temporary name the old `save` opened with O_CREAT | O_TRUNC,
    /// following a symlink: `.<name>.<pid>.tmp`. A symlink planted there
    /// (or at the target) must not be followed, and the file is 0600.
    #[test]
    fn save_follows_no_planted_symlink_and_writes_mode_0600() {
        use std::os::unix::fs::{MetadataExt, symlink};
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("watch-state.json");
        let old_tmp = dir.path().join(format!(".watch-state.json.{}.tmp", std::process::id()));
        symlink(&victim, &old_tmp).unwrap();
        let state = StateFile {
            version: STATE_VERSION,
            jobs: vec![job(10)],
        };
        state.save(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&old_tmp).unwrap().is_symlink());
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file(), "{meta:?}");
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(StateFile::load(&path).unwrap(), state);

        // A symlink at the target is refused, and never written through.
        std::fs::remove_file(&path).unwrap();
        symlink(&victim, &path).unwrap();
        assert!(matches!(state.save(&path), Err(StateError::Insecure { .. })));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
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
