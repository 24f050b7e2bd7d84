//! CLI side of the job lifecycle: the job id from the flags, and printing
//! the result.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context;

use super::args::GovernArgs;
use crate::cgroup::JobId;
use crate::fsutil;
use crate::report::JobResult;

/// The mode of a `--result-file`: the result is no secret, and whoever
/// collects it (a CI job, a log shipper) is often not root.
const RESULT_FILE_MODE: u32 = 0o644;

/// The job id to use: given, or `unnamed-<ffrtmp pid>`.
pub fn job_id(args: &GovernArgs) -> JobId {
    args.job_id
        .clone()
        .unwrap_or_else(|| JobId::unnamed(std::process::id()))
}

/// Print the result: the summary line on stderr; the JSON document or the
/// text block on stdout; the JSON document to --result-file.
pub fn emit(result: &JobResult, args: &GovernArgs) -> anyhow::Result<()> {
    result.log_summary();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", result.to_json())?;
    } else {
        write!(out, "{}", result.text_block())?;
    }
    out.flush()?;
    if let Some(path) = &args.result_file {
        write_result_file(path, (result.to_json() + "\n").as_bytes())
            .with_context(|| format!("writing the result to {}", path.display()))?;
    }
    Ok(())
}

/// Write `--result-file PATH` as root without following a symlink someone
/// planted at PATH (`/tmp/result.json` → `/etc/shadow`):
///
/// - PATH is replaced by a new regular file, mode 0644, atomically
///   ([`fsutil::replace`]); a symlink at PATH is replaced, not followed.
/// - A named pipe or a character device at PATH (`/dev/null`, a pipe a
///   collector reads) is written in place: replacing it would break it, and
///   it is not a file anyone's data can be clobbered through.
/// - A symlink to one of our own file descriptors (`/dev/stdout`,
///   `/dev/fd/N`) is refused: replacing it would remove the host's
///   `/dev/stdout`, and `--json` prints the result on stdout.
fn write_result_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if is_special(meta.file_type()) => write_in_place(path, contents),
        Ok(meta) if meta.is_symlink() => {
            let target = std::fs::read_link(path)?;
            if names_a_descriptor(&target) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "it is a symlink to a file descriptor ({}) and would be replaced, not written through; use --json to print the result on stdout",
                        target.display()
                    ),
                ));
            }
            fsutil::replace(path, contents, RESULT_FILE_MODE)
        }
        _ => fsutil::replace(path, contents, RESULT_FILE_MODE),
    }
}

fn is_special(file_type: std::fs::FileType) -> bool {
    file_type.is_fifo() || file_type.is_char_device()
}

/// `/proc/self/fd/N`, `/proc/thread-self/fd/N`, `/dev/fd/N` (and `/dev/stdout`,
/// which links to the first).
fn names_a_descriptor(target: &Path) -> bool {
    ["/proc/self/fd/", "/proc/thread-self/fd/", "/dev/fd/", "/dev/std"]
        .iter()
        .any(|prefix| target.to_string_lossy().starts_with(prefix))
}

/// Open the pipe or device at `path` without following a symlink and check
/// it still is one (not a file swapped in since the `lstat`), then write.
fn write_in_place(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)?;
    if !is_special(file.metadata()?.file_type()) {
        return Err(io::Error::other(
            "it changed from a pipe or device into a file while being opened",
        ));
    }
    file.write_all(contents)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn a_symlink_at_the_result_file_is_replaced_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("result.json");
        symlink(&victim, &path).unwrap();
        write_result_file(&path, b"{\"job_id\":\"j\"}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file(), "{meta:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"job_id\":\"j\"}\n");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.mode() & 0o7777, RESULT_FILE_MODE);
        // A dangling one is not created through either.
        std::fs::remove_file(&path).unwrap();
        symlink(dir.path().join("nowhere"), &path).unwrap();
        write_result_file(&path, b"{}\n").unwrap();
        assert!(!dir.path().join("nowhere").exists());
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
    }

    #[test]
    fn a_named_pipe_is_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipe");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader = {
            let path = path.clone();
            std::thread::spawn(move || std::fs::read_to_string(path).unwrap())
        };
        write_result_file(&path, b"{}\n").unwrap();
        assert_eq!(reader.join().unwrap(), "{}\n");
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_fifo());
    }

    #[test]
    fn a_symlink_to_a_descriptor_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        symlink("/proc/self/fd/1", &path).unwrap();
        let e = write_result_file(&path, b"{}\n").unwrap_err().to_string();
        assert!(e.contains("--json"), "{e}");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
    }
}
