//! Target matching and the `/proc` scan (start-up catch-up, reconcile after
//! loss, and the `poll` backend).

use std::path::Path;

use crate::process::identity::{ProcessId, ProcessInfo, read_small};

/// The 15 bytes of a task's comm (`TASK_COMM_LEN` 16 with the NUL).
pub const COMM_BYTES: usize = 15;

/// Target command names, matched on the exact basename of argv[0].
///
/// A process is a target when two things agree. First its comm: the
/// kernel sets it at exec to the basename of the *file name passed to
/// execve* (not argv[0]), cut to 15 bytes anywhere, even inside a UTF-8
/// character; the eBPF filter and the first check here compare it with the
/// first 15 bytes of each target name. Then argv[0]: its basename must be
/// the whole target name. So `ffmpeg` run through a symlink named `ff` is
/// not a target (comm `ff`), nor is `/bin/sh -c` with argv[0] `ffmpeg`.
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

    /// What the kernel stores as comm for a process exec'd as `name`: its
    /// first 15 bytes, cut wherever that falls (`__set_task_comm()` copies
    /// bytes; fs/exec.c).
    pub fn comm_of(name: &str) -> &[u8] {
        &name.as_bytes()[..name.len().min(COMM_BYTES)]
    }

    /// Cheap pre-filter on comm's raw bytes (what the kernel filter also sees).
    pub fn comm_matches(&self, comm: &[u8]) -> bool {
        self.names.iter().any(|n| Self::comm_of(n) == comm)
    }

    /// [`Targets::comm_matches`] on comm as text (`/proc/<pid>/stat` read
    /// lossily): the raw bytes of a comm cut inside a character are
    /// compared in the same lossy form, so the cut still matches. Two
    /// invalid bytes read alike here; argv[0] decides after this anyway.
    pub fn comm_text_matches(&self, comm: &str) -> bool {
        self.names
            .iter()
            .any(|n| String::from_utf8_lossy(Self::comm_of(n)) == comm)
    }

    /// The target whose name is argv[0]'s basename, if any.
    pub fn argv0_match(&self, argv0: &str) -> Option<&str> {
        let base = Path::new(argv0).file_name()?.to_str()?;
        self.names.iter().find(|n| n.as_str() == base).map(String::as_str)
    }
}

/// Why a process could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// It exited (or is a zombie): nothing to check.
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    /// Reading `/proc` failed for another reason (EMFILE, ENOMEM, EACCES…):
    /// the answer is unknown, not "no".
    #[error("reading {path}: {error}")]
    Read { path: String, error: String },
}

impl CheckError {
    fn from_io(pid: u32, path: &str, e: &std::io::Error) -> CheckError {
        if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) {
            CheckError::Gone { pid }
        } else {
            CheckError::Read {
                path: path.to_string(),
                error: e.to_string(),
            }
        }
    }
}

fn read_proc(pid: u32, file: &str) -> Result<Vec<u8>, CheckError> {
    let path = format!("/proc/{pid}/{file}");
    read_small(Path::new(&path)).map_err(|e| CheckError::from_io(pid, &path, &e))
}

/// argv[0] of a process (`None` for kernel threads and zombies, whose
/// command line is empty). Only the first 4 KiB of the command line are
/// read: argv[0] is at its start.
pub fn argv0(pid: u32) -> Result<Option<String>, CheckError> {
    let cmdline = read_proc(pid, "cmdline")?;
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    Ok((!first.is_empty()).then(|| String::from_utf8_lossy(first).into_owned()))
}

/// comm's raw bytes (`/proc/<pid>/comm` without its newline).
pub fn comm_bytes(pid: u32) -> Result<Vec<u8>, CheckError> {
    let mut raw = read_proc(pid, "comm")?;
    if raw.last() == Some(&b'\n') {
        raw.pop();
    }
    Ok(raw)
}

/// comm as text, for display (not for matching).
pub fn comm(pid: u32) -> Option<String> {
    comm_bytes(pid)
        .ok()
        .map(|raw| String::from_utf8_lossy(&raw).into_owned())
}

/// A running process that matches a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub info: ProcessInfo,
    /// The target name it matched.
    pub command: String,
}

/// Check one pid: comm pre-filter, then argv[0], then its identity.
/// `Ok(None)`: not a target. An error other than [`CheckError::Gone`] means
/// the question is still open.
pub fn check(pid: u32, targets: &Targets) -> Result<Option<Candidate>, CheckError> {
    if !targets.comm_matches(&comm_bytes(pid)?) {
        return Ok(None);
    }
    let Some(argv0) = argv0(pid)? else {
        return Ok(None);
    };
    let Some(command) = targets.argv0_match(&argv0).map(str::to_owned) else {
        return Ok(None);
    };
    let info = ProcessInfo::read(pid).map_err(|e| match e {
        crate::process::ProcError::NotFound { .. } => CheckError::Gone { pid },
        other => CheckError::Read {
            path: format!("/proc/{pid}/stat"),
            error: other.to_string(),
        },
    })?;
    if info.is_zombie() {
        return Err(CheckError::Gone { pid });
    }
    if info.is_kernel_thread() {
        return Ok(None);
    }
    Ok(Some(Candidate { info, command }))
}

/// What a `/proc` scan found.
#[derive(Debug, Default)]
pub struct Scan {
    pub found: Vec<Candidate>,
    /// Processes that could not be checked, and why (never "gone").
    pub failed: Vec<(u32, CheckError)>,
}

/// Every running process that matches a target. Only a `/proc` that cannot
/// be listed is an error; processes that vanish meanwhile are skipped, and
/// those that cannot be read are listed as failed.
pub fn scan(targets: &Targets) -> std::io::Result<Scan> {
    let listing = |e: std::io::Error| std::io::Error::new(e.kind(), format!("listing /proc: {e}"));
    let mut scan = Scan::default();
    for entry in std::fs::read_dir("/proc").map_err(listing)? {
        let Some(pid) = entry
            .map_err(listing)?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        match check(pid, targets) {
            Ok(Some(c)) => scan.found.push(c),
            Ok(None) | Err(CheckError::Gone { .. }) => {}
            Err(e) => scan.failed.push((pid, e)),
        }
    }
    Ok(scan)
}

/// Is this process ffrtmp itself or one of its descendants? ffrtmp never
/// governs itself or its own children. The walk starts at the parent the
/// caller has already read; it is skipped when ffrtmp has no child at all
/// (the daemon forks nothing but a short `getent` for a user filter), which
/// saves the hot path a `stat` read.
pub fn is_self_or_descendant(info: &ProcessInfo) -> bool {
    let own_pid = crate::process::identity::own_pid();
    // Itself or a child: no look needed (and a child reaped meanwhile is
    // still known as one).
    if info.id.pid == own_pid || info.ppid == own_pid {
        return true;
    }
    // A descendant's chain of parents ends in a child of ours; a process
    // whose chain broke (an ancestor died) was re-parented away from us.
    if !has_children() {
        return false;
    }
    static ME: std::sync::OnceLock<Option<ProcessId>> = std::sync::OnceLock::new();
    let me = ME.get_or_init(|| ProcessInfo::read(own_pid).ok().map(|i| i.id));
    match me {
        Some(me) => descends_from(*me, info, |pid| ProcessInfo::read(pid).ok()),
        // Without its own start time, the plain walk up to init.
        None => descends_from(
            ProcessId {
                pid: own_pid,
                start_time: 0,
            },
            info,
            |pid| ProcessInfo::read(pid).ok(),
        ),
    }
}

/// Has this process a child (running, stopped or a zombie)? `waitid` with
/// `WNOWAIT` reaps nothing and fails with ECHILD exactly when there is none;
/// `__WALL` counts children of any exit signal, and children of every thread
/// of the process count. One system call and no file (it takes the kernel's
/// `tasklist_lock` for reading, as a fork or an exit does).
fn has_children() -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let any_state = WaitPidFlag::WEXITED | WaitPidFlag::WSTOPPED | WaitPidFlag::WCONTINUED;
    let look_only = WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT | WaitPidFlag::__WALL;
    !matches!(waitid(Id::All, any_state | look_only), Err(nix::errno::Errno::ECHILD))
}

/// Is `info` the process `me` or below it? Walks up the parents (`read`
/// gives a process by pid). A descendant of `me` started no earlier than
/// `me`, and so did every process between them: the walk stops at the first
/// process older than `me` — usually the target's own parent shell, so one
/// read instead of one per ancestor up to init.
fn descends_from(me: ProcessId, info: &ProcessInfo, mut read: impl FnMut(u32) -> Option<ProcessInfo>) -> bool {
    if info.id.pid == me.pid {
        return true;
    }
    if info.id.start_time < me.start_time {
        return false;
    }
    let mut current = info.ppid;
    for _ in 0..64 {
        if current == me.pid {
            return true;
        }
        if current <= 1 {
            return false;
        }
        match read(current) {
            Some(parent) if parent.id.start_time >= me.start_time => current = parent.ppid,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, ppid: u32, start_time: u64) -> ProcessInfo {
        ProcessInfo {
            id: ProcessId { pid, start_time },
            comm: "p".into(),
            state: 'S',
            ppid,
            flags: 0,
            exit_status: None,
        }
    }

    #[test]
    fn descendants_are_found_and_the_walk_stops_at_an_older_process() {
        // init 1 ─ shell 10 (t=5) ─ ffrtmp 20 (t=50) ─ sh 30 (t=60) ─ target 40 (t=61)
        //                        └─ other 31 (t=70) ─ target 41 (t=71)
        let table = [proc(10, 1, 5), proc(20, 10, 50), proc(30, 20, 60), proc(31, 10, 70)];
        let me = ProcessId {
            pid: 20,
            start_time: 50,
        };
        let reads = std::cell::RefCell::new(Vec::new());
        let read = |pid: u32| {
            reads.borrow_mut().push(pid);
            table.iter().find(|p| p.id.pid == pid).cloned()
        };
        assert!(descends_from(me, &proc(40, 30, 61), &read));
        assert!(descends_from(me, &proc(20, 10, 50), &read), "itself");
        assert!(!descends_from(me, &proc(41, 31, 71), &read));
        // 41's walk read 31 (started after ffrtmp), then 10, which is older: stop.
        assert_eq!(*reads.borrow(), [30, 31, 10]);
        reads.borrow_mut().clear();
        // Started before ffrtmp: not its descendant, nothing read.
        assert!(!descends_from(me, &proc(42, 10, 6), &read));
        assert!(reads.borrow().is_empty());
        // Without a start time to compare (0), the walk goes up to init.
        let plain = ProcessId { pid: 20, start_time: 0 };
        assert!(!descends_from(plain, &proc(41, 31, 71), &read));
        assert_eq!(*reads.borrow(), [31, 10]);
    }

    /// Set in the copy of this test binary that
    /// `without_a_child_nothing_descends` starts, which has no child.
    const CHILDLESS: &str = "FFRTMP_TEST_CHILDLESS";

    fn wait_for_state(pid: u32, state: char) {
        for _ in 0..500 {
            if ProcessInfo::read(pid).is_ok_and(|i| i.state == state) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("process {pid} never reached state {state}");
    }

    #[test]
    fn a_child_is_seen_and_not_reaped() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        assert!(has_children());
        wait_for_state(pid, 'Z');
        assert!(has_children(), "a zombie child counts");
        // Still a zombie: the look reaped nothing.
        wait_for_state(pid, 'Z');
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn without_a_child_nothing_descends() {
        if std::env::var_os(CHILDLESS).is_some() {
            // The copy: a libtest process running this one test (on a
            // thread of its own) with no child of its own.
            assert!(!has_children());
            let init = ProcessInfo::read(1).unwrap();
            assert!(!is_self_or_descendant(&init));
            let me = ProcessInfo::read(std::process::id()).unwrap();
            assert!(is_self_or_descendant(&me));
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "events::scan::tests::without_a_child_nothing_descends",
                "--test-threads=1",
            ])
            .env(CHILDLESS, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("1 passed"), "the copy ran nothing: {text}");
    }

    #[test]
    fn matching() {
        let t = Targets::new([
            "ffmpeg".to_string(),
            "gst-launch-1.0".into(),
            "a-very-long-command-name".into(),
        ]);
        assert!(t.comm_matches(b"ffmpeg"));
        assert!(t.comm_matches(b"gst-launch-1.0"));
        assert!(t.comm_matches(b"a-very-long-com"));
        assert!(!t.comm_matches(b"ffprobe"));
        assert!(t.comm_text_matches("a-very-long-com"));
        assert!(!t.comm_text_matches("ffprobe"));
        assert_eq!(t.argv0_match("/usr/bin/ffmpeg"), Some("ffmpeg"));
        assert_eq!(t.argv0_match("ffmpeg"), Some("ffmpeg"));
        assert_eq!(
            t.argv0_match("a-very-long-command-name"),
            Some("a-very-long-command-name")
        );
        assert_eq!(t.argv0_match("a-very-long-com"), None);
        assert_eq!(t.argv0_match("ffmpeg-static"), None);
    }

    #[test]
    fn comm_is_cut_at_15_bytes_even_inside_a_character() {
        // "reltgt-abcdefg" is 14 bytes and 'é' 2: the kernel keeps the
        // first byte of the 'é' as the 15th.
        let name = "reltgt-abcdefgé";
        let t = Targets::new([name.to_string()]);
        let kernel_comm = &name.as_bytes()[..15];
        assert_eq!(Targets::comm_of(name), kernel_comm);
        assert!(t.comm_matches(kernel_comm));
        assert!(!t.comm_matches(b"reltgt-abcdefg"));
        // As /proc/<pid>/stat gives it: lossy text.
        assert!(t.comm_text_matches(&String::from_utf8_lossy(kernel_comm)));
        assert!(!t.comm_text_matches("reltgt-abcdefg"));
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
