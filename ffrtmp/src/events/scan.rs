//! Target matching and the `/proc` scan (start-up catch-up, reconcile after
//! loss, and the `poll` backend).

use std::path::Path;

use crate::process::identity::{ProcessInfo, read_small};

/// The 15 bytes of a task's comm (`TASK_COMM_LEN` 16 with the NUL).
pub const COMM_BYTES: usize = 15;

/// Target command names, matched on the exact basename of argv[0].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    names: Vec<String>,
}

impl Targets {
    pub fn new(names: impl IntoIterator<Item = String>) -> Targets {
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort();
        names.dedup();
        Targets { names }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// What the kernel shows as comm for a process exec'd as `name`.
    pub fn comm_of(name: &str) -> &str {
        let mut end = name.len().min(COMM_BYTES);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        &name[..end]
    }

    /// Cheap pre-filter on comm (what the kernel filter also sees).
    pub fn comm_matches(&self, comm: &str) -> bool {
        self.names.iter().any(|n| Self::comm_of(n) == comm)
    }

    /// The target whose name is argv[0]'s basename, if any.
    pub fn argv0_match(&self, argv0: &str) -> Option<&str> {
        let base = Path::new(argv0).file_name()?.to_str()?;
        self.names.iter().find(|n| n.as_str() == base).map(String::as_str)
    }
}

/// argv[0] of a process (empty for kernel threads and zombies). Only the
/// first 4 KiB of the command line are read: argv[0] is at its start.
pub fn argv0(pid: u32) -> Option<String> {
    let cmdline = read_small(Path::new(&format!("/proc/{pid}/cmdline"))).ok()?;
    let first = cmdline.split(|b| *b == 0).next()?;
    (!first.is_empty()).then(|| String::from_utf8_lossy(first).into_owned())
}

/// Read comm cheaply (`/proc/<pid>/comm`).
pub fn comm(pid: u32) -> Option<String> {
    let raw = read_small(Path::new(&format!("/proc/{pid}/comm"))).ok()?;
    let mut c = String::from_utf8_lossy(&raw).into_owned();
    if c.ends_with('\n') {
        c.pop();
    }
    Some(c)
}

/// A running process that matches a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub info: ProcessInfo,
    /// The target name it matched.
    pub command: String,
}

/// Check one pid: comm pre-filter, then argv[0], then its identity.
pub fn check(pid: u32, targets: &Targets) -> Option<Candidate> {
    if !targets.comm_matches(&comm(pid)?) {
        return None;
    }
    let command = targets.argv0_match(&argv0(pid)?)?.to_owned();
    let info = ProcessInfo::read(pid).ok()?;
    if info.is_zombie() || info.is_kernel_thread() {
        return None;
    }
    Some(Candidate { info, command })
}

/// Every running process that matches a target. Only a `/proc` that cannot
/// be listed is an error; processes that vanish meanwhile are skipped.
pub fn scan(targets: &Targets) -> std::io::Result<Vec<Candidate>> {
    let entries =
        std::fs::read_dir("/proc").map_err(|e| std::io::Error::new(e.kind(), format!("listing /proc: {e}")))?;
    Ok(entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| check(pid, targets))
        .collect())
}

/// Is this process ffrtmp itself or one of its descendants? ffrtmp never
/// governs itself or its own children. The walk starts at the parent the
/// caller has already read.
pub fn is_self_or_descendant(info: &ProcessInfo) -> bool {
    let me = std::process::id();
    if info.id.pid == me {
        return true;
    }
    let mut current = info.ppid;
    for _ in 0..64 {
        if current == me {
            return true;
        }
        if current <= 1 {
            return false;
        }
        match ProcessInfo::read(current) {
            Ok(parent) => current = parent.ppid,
            Err(_) => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let t = Targets::new([
            "ffmpeg".to_string(),
            "gst-launch-1.0".into(),
            "a-very-long-command-name".into(),
        ]);
        assert!(t.comm_matches("ffmpeg"));
        assert!(t.comm_matches("gst-launch-1.0"));
        assert!(t.comm_matches("a-very-long-com"));
        assert!(!t.comm_matches("ffprobe"));
        assert_eq!(t.argv0_match("/usr/bin/ffmpeg"), Some("ffmpeg"));
        assert_eq!(t.argv0_match("ffmpeg"), Some("ffmpeg"));
        assert_eq!(
            t.argv0_match("a-very-long-command-name"),
            Some("a-very-long-command-name")
        );
        assert_eq!(t.argv0_match("a-very-long-com"), None);
        assert_eq!(t.argv0_match("ffmpeg-static"), None);
        assert_eq!(Targets::comm_of("éééééééé"), "ééééééé");
    }

    #[test]
    fn self_detection() {
        let read = |pid| ProcessInfo::read(pid).unwrap();
        assert!(is_self_or_descendant(&read(std::process::id())));
        assert!(!is_self_or_descendant(&read(1)));
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(is_self_or_descendant(&read(child.id())));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
