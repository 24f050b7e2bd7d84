//! Replacing a file atomically, safely as root in a directory that others
//! may write to (`/tmp`, a shared results directory).
//!
//! [`replace`] writes a new, exclusively created temporary file next to the
//! target (`O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC`, an unpredictable
//! name, a fresh name on `EEXIST`), fsyncs it, renames it over the target
//! and fsyncs the directory. A symlink planted at the target or at any
//! temporary name is never followed: `O_EXCL` refuses an existing name of
//! any kind, and `rename(2)` replaces a symlink itself, not what it points
//! to. A reader sees the old file or the new one, never a torn write.

use std::fs::{File, OpenOptions, Permissions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Temporary names tried before giving up: each is unpredictable, so only a
/// directory already full of our own leftovers (or a broken random source)
/// runs out.
const TEMP_ATTEMPTS: usize = 64;

/// Replace `path` with a new regular file holding `contents`, with
/// permissions exactly `mode` (not reduced by the umask).
///
/// The error says which step failed; the caller names `path`. On an error
/// the temporary file is removed and `path` is unchanged, except when only
/// the final fsync of the directory fails (the new file is then in place
/// but may not survive a crash).
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    replace_with_names(path, contents, mode, temp_names(path))
}

/// [`replace`] with the temporary names given, so tests can plant files at them.
fn replace_with_names(
    path: &Path,
    contents: &[u8],
    mode: u32,
    names: impl IntoIterator<Item = String>,
) -> io::Result<()> {
    let dir = parent_dir(path);
    let (tmp, mut file) = create_temp(dir, mode, names)?;
    let written = file
        .set_permissions(Permissions::from_mode(mode))
        .and_then(|()| file.write_all(contents))
        .and_then(|()| file.sync_all())
        .map_err(|e| with_step(e, "writing", &tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| with_step(e, "renaming", &tmp)));
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_step(e, "syncing the directory", dir))
}

/// The directory `path` is in; `.` for a bare file name.
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Create the first of `names` in `dir` that does not exist yet.
fn create_temp(dir: &Path, mode: u32, names: impl IntoIterator<Item = String>) -> io::Result<(PathBuf, File)> {
    for name in names {
        let tmp = dir.join(name);
        // create_new is O_CREAT | O_EXCL: an existing name, a symlink
        // included, is EEXIST and never opened; O_NOFOLLOW says the same
        // once more. std adds O_CLOEXEC.
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp);
        match opened {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(with_step(e, "creating", &tmp)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "creating a temporary file in {}: every name tried exists",
            dir.display()
        ),
    ))
}

/// `.<name>.<pid>.<counter>.<random>.tmp`, [`TEMP_ATTEMPTS`] of them; the
/// name is cut to 100 characters so the result stays under NAME_MAX (255).
fn temp_names(path: &Path) -> impl Iterator<Item = String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name: String = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().chars().take(100).collect());
    let pid = std::process::id();
    (0..TEMP_ATTEMPTS).map(move |_| {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!(".{name}.{pid}.{n}.{:016x}.tmp", random_u64())
    })
}

/// 64 unpredictable bits: std seeds every `RandomState` from the OS's
/// random source (getrandom(2)), so no extra dependency is needed.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    hasher.write_u64(now.map_or(0, |d| d.as_nanos() as u64));
    hasher.finish()
}

fn with_step(e: io::Error, step: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{step} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, symlink};

    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn replaces_with_the_exact_mode_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();
        replace(&path, b"new\n", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(mode_of(&path), 0o600);
        // 0644 although a umask of 077 would have cut it to 0600.
        replace(&path, b"newer\n", 0o644).unwrap();
        assert_eq!(mode_of(&path), 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_symlink_at_a_temporary_name_is_skipped_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        // Planted at the first name: also a dangling one, which O_CREAT
        // without O_EXCL would create through.
        symlink(&victim, dir.path().join("a")).unwrap();
        symlink(dir.path().join("nowhere"), dir.path().join("b")).unwrap();
        let path = dir.path().join("out");
        replace_with_names(&path, b"data", 0o600, ["a".into(), "b".into(), "c".into()]).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!dir.path().join("nowhere").exists());
        assert!(std::fs::symlink_metadata(dir.path().join("a")).unwrap().is_symlink());
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
        assert!(!dir.path().join("c").exists(), "renamed away");
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("out");
        symlink(&victim, &path).unwrap();
        replace(&path, b"data", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }

    #[test]
    fn errors_say_the_step_and_remove_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // rename(2) cannot replace a non-empty directory.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), "").unwrap();
        let e = replace(&path, b"data", 0o600).unwrap_err();
        assert!(e.to_string().starts_with("renaming "), "{e}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");

        let e = replace_with_names(&dir.path().join("x"), b"", 0o600, ["taken".into()]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("every name tried exists"), "{e}");
    }

    #[test]
    fn temporary_names_differ_and_start_with_the_file_name() {
        let names: Vec<String> = temp_names(Path::new("/var/lib/ffrtmp/watch-state.json")).collect();
        assert_eq!(names.len(), TEMP_ATTEMPTS);
        assert!(
            names
                .iter()
                .all(|n| n.starts_with(".watch-state.json.") && n.ends_with(".tmp"))
        );
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }
}
