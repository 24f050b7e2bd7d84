//! `/proc/<pid>` readers and process identity.
//!
//! A pid number alone can be reused; `(pid, start_time)` cannot (start time
//! is in clock ticks since boot, field 22 of `/proc/<pid>/stat`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use procfs::FromRead;
use procfs::process::{Stat, Status};

/// `PF_KTHREAD` from `include/linux/sched.h`: the task is a kernel thread.
const PF_KTHREAD: u32 = 0x0020_0000;

/// A process identity that survives PID reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId {
    pub pid: u32,
    /// Clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

impl ProcessId {
    /// How long the process has been running (since its start time).
    pub fn age(&self) -> std::time::Duration {
        let started = self.start_time as f64 / clock_ticks() as f64;
        std::time::Duration::from_secs_f64((boot_time_now() - started).max(0.0))
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.pid, self.start_time)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {pid} does not exist")]
    NotFound { pid: u32 },
    #[error("permission denied for pid {pid}: {reason}")]
    PermissionDenied { pid: u32, reason: String },
    #[error(
        "process {pid} does not exist any more: it has exited (a zombie waiting for its parent to reap it); there is nothing left to govern"
    )]
    Zombie { pid: u32 },
    #[error("{tid} is a thread of process {pid}, not a process: attach to --pid {pid}")]
    Thread { tid: u32, pid: u32 },
    #[error("pid {pid} ({comm}) is a kernel thread; kernel threads cannot be governed")]
    KernelThread { pid: u32, comm: String },
    #[error("pid {pid} is this ffrtmp process itself")]
    Myself { pid: u32 },
    #[error("pid {pid} changed identity while attaching (it exited and the number was reused)")]
    Replaced { pid: u32 },
    #[error("opening a pidfd for pid {pid}: {source}")]
    Pidfd {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
}

/// What we need to know about a process from `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub id: ProcessId,
    pub comm: String,
    /// Single-letter state (R, S, D, Z, T, …).
    pub state: char,
    pub ppid: u32,
    pub flags: u32,
    /// The wait(2)-style status, present once the process is a zombie (3.5+).
    pub exit_status: Option<i32>,
}

impl ProcessInfo {
    /// Parse the content of `/proc/<pid>/stat`. The comm field may contain
    /// spaces and `)`; the parser splits at the last `)`.
    pub fn parse_stat(content: &[u8], path: &Path) -> Result<ProcessInfo, ProcError> {
        if !has_stat_shape(content) {
            return Err(ProcError::Parse {
                path: path.to_owned(),
                message: "expected \"PID (COMM) STATE …\"".into(),
            });
        }
        let stat = Stat::from_read(content).map_err(|e| ProcError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let pid = u32::try_from(stat.pid).map_err(|_| ProcError::Parse {
            path: path.to_owned(),
            message: format!("negative pid {}", stat.pid),
        })?;
        Ok(ProcessInfo {
            id: ProcessId {
                pid,
                start_time: stat.starttime,
            },
            comm: stat.comm,
            state: stat.state,
            ppid: u32::try_from(stat.ppid).unwrap_or(0),
            flags: stat.flags,
            exit_status: stat.exit_code,
        })
    }

    /// Read `/proc/<pid>/stat`.
    pub fn read(pid: u32) -> Result<ProcessInfo, ProcError> {
        Self::read_path(&PathBuf::from(format!("/proc/{pid}/stat")), pid)
    }

    fn read_path(path: &Path, pid: u32) -> Result<ProcessInfo, ProcError> {
        let content = read_small(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ProcError::NotFound { pid },
            _ if source.raw_os_error() == Some(libc::ESRCH) => ProcError::NotFound { pid },
            _ => ProcError::Read {
                path: path.to_owned(),
                source,
            },
        })?;
        Self::parse_stat(&content, path)
    }

    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }

    /// Check that this is a process ffrtmp may govern.
    pub fn check_governable(&self) -> Result<(), ProcError> {
        let pid = self.id.pid;
        if pid == own_pid() {
            return Err(ProcError::Myself { pid });
        }
        if self.is_kernel_thread() {
            return Err(ProcError::KernelThread {
                pid,
                comm: self.comm.clone(),
            });
        }
        if self.is_zombie() {
            return Err(ProcError::Zombie { pid });
        }
        Ok(())
    }
}

/// Whether `content` is shaped like the kernel's `"%d (%s) %c …"`
/// (`do_task_stat()` in `fs/proc/array.c`): a space before the first `(`
/// and one after the last `)`, which comes after it. procfs 0.18's
/// `Stat::from_read` slices around the parentheses unchecked and panics
/// (`stat.rs` 242–244: `start_paren - 1`, `end_paren + 2`) on any other
/// shape; it sees the text as read here: lossy UTF-8, trimmed.
fn has_stat_shape(content: &[u8]) -> bool {
    let text = String::from_utf8_lossy(content);
    let line = text.trim().as_bytes();
    let open = line.iter().position(|&b| b == b'(');
    let close = line.iter().rposition(|&b| b == b')');
    matches!((open, close), (Some(open), Some(close))
        if open > 0 && line[open - 1] == b' ' && close > open && line.get(close + 1) == Some(&b' '))
}

/// Read the start of a small `/proc` file (stat, comm, cmdline) with one
/// `read(2)`: the watch hot path reads a few of these per exec, and
/// `fs::read` would add a `statx` and several growing reads.
pub fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    read_start(path, false)
}

/// [`read_small`], then the rest when the first read filled its buffer
/// (`/proc/<pid>/cgroup` with many hierarchies and long paths): one
/// `read(2)` for the usual few hundred bytes, never a cut-off file.
pub fn read_whole(path: &Path) -> io::Result<Vec<u8>> {
    read_start(path, true)
}

fn read_start(path: &Path, whole: bool) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 4096];
    let n = file.read(&mut buf)?;
    buf.truncate(n);
    if whole && n == 4096 {
        file.read_to_end(&mut buf)?;
    }
    Ok(buf)
}

/// Real uid and resident memory from `/proc/<pid>/status`.
pub fn read_status(pid: u32) -> Result<(u32, Option<u64>), ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let content = std::fs::read(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ProcError::NotFound { pid },
        _ => ProcError::Read {
            path: path.clone(),
            source,
        },
    })?;
    let status = Status::from_read(content.as_slice()).map_err(|e| ProcError::Parse {
        path,
        message: e.to_string(),
    })?;
    // VmRSS is in kB.
    Ok((status.ruid, status.vmrss.map(|kb| kb * 1024)))
}

/// The thread group (process) `tid` belongs to: `Tgid` of
/// `/proc/<tid>/status` (a thread's directory is there, unlisted).
pub fn thread_group(tid: u32) -> Result<u32, ProcError> {
    let path = PathBuf::from(format!("/proc/{tid}/status"));
    let content = std::fs::read(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ProcError::NotFound { pid: tid },
        _ => ProcError::Read {
            path: path.clone(),
            source,
        },
    })?;
    let status = Status::from_read(content.as_slice()).map_err(|e| ProcError::Parse {
        path,
        message: e.to_string(),
    })?;
    u32::try_from(status.tgid).map_err(|_| ProcError::Parse {
        path: PathBuf::from(format!("/proc/{tid}/status")),
        message: format!("negative Tgid {}", status.tgid),
    })
}

/// Live thread ids of a process (`/proc/<pid>/task`).
pub fn thread_ids(pid: u32) -> Result<Vec<u32>, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/task"));
    let entries = std::fs::read_dir(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ProcError::NotFound { pid },
        _ => ProcError::Read { path, source },
    })?;
    Ok(entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}

/// Every live process's stat, skipping those that vanish while we look.
pub fn all_processes() -> Vec<ProcessInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| ProcessInfo::read(pid).ok())
        .collect()
}

/// Descendants of `root` (children, grandchildren, …), parents first.
pub fn descendants(root: u32, all: &[ProcessInfo]) -> Vec<ProcessInfo> {
    let mut out: Vec<ProcessInfo> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in all.iter().filter(|p| p.ppid == parent && p.id.pid != root) {
            if !out.iter().any(|o| o.id == p.id) {
                frontier.push(p.id.pid);
                out.push(p.clone());
            }
        }
    }
    out
}

/// Descendants of `pid` from `/proc/<pid>/task/<tid>/children`
/// (CONFIG_PROC_CHILDREN), or from a full `/proc` scan where that file is
/// missing. Processes that exit meanwhile are simply not listed.
pub fn descendants_of(pid: u32) -> Vec<u32> {
    if !Path::new(&format!("/proc/{pid}/task/{pid}/children")).exists() {
        return descendants(pid, &all_processes()).iter().map(|p| p.id.pid).collect();
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for tid in thread_ids(parent).unwrap_or_default() {
            let Ok(raw) = read_small(Path::new(&format!("/proc/{parent}/task/{tid}/children"))) else {
                continue;
            };
            for child in String::from_utf8_lossy(&raw)
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
            {
                if child != pid && !out.contains(&child) {
                    out.push(child);
                    frontier.push(child);
                }
            }
        }
    }
    out
}

/// This process's pid, asked of the kernel once: `getpid` is a system call
/// (glibc caches nothing), and the hot path of every adoption asks twice.
/// A `fork` forgets it in the child (a program embedding the library may
/// fork and go on); `run`'s raw `clone3` children only exec.
pub fn own_pid() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static OWN: AtomicU32 = AtomicU32::new(0);
    static FORGET_ON_FORK: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget() {
        OWN.store(0, Ordering::Relaxed);
    }
    FORGET_ON_FORK.call_once(|| {
        // SAFETY: `forget` is async-signal-safe (one atomic store), as a
        // child handler must be. Without it (ENOMEM) nothing is cached.
        if unsafe { libc::pthread_atfork(None, None, Some(forget)) } != 0 {
            OWN.store(u32::MAX, Ordering::Relaxed);
        }
    });
    match OWN.load(Ordering::Relaxed) {
        u32::MAX => std::process::id(),
        0 => {
            let pid = std::process::id();
            // Unless a failed registration said "never cache" meanwhile.
            let _ = OWN.compare_exchange(0, pid, Ordering::Relaxed, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// Clock ticks per second, for turning start times into seconds.
pub fn clock_ticks() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// Seconds since boot (CLOCK_BOOTTIME), the clock start times count on.
pub fn boot_time_now() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod own_pid_tests {
    use super::own_pid;

    /// The cached pid is this process's, and a forked child asks again.
    #[test]
    fn own_pid_is_ours_and_a_fork_forgets_it() {
        assert_eq!(own_pid(), std::process::id());
        assert_eq!(own_pid(), std::process::id());
        // SAFETY: the child makes only async-signal-safe calls (getpid
        // through own_pid: an atomic load and a system call) and `_exit`s.
        match unsafe { libc::fork() } {
            0 => {
                // SAFETY: getpid and _exit have no preconditions.
                let right = own_pid() == unsafe { libc::getpid() } as u32;
                unsafe { libc::_exit(if right { 0 } else { 1 }) }
            }
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            child => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "the child saw its parent's pid"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_line(pid: u32, comm: &str, state: char, ppid: u32, flags: u32, start: u64) -> String {
        // 52 fields as in proc(5); only the ones we read matter.
        let mut fields = vec!["0".to_string(); 52];
        fields[0] = pid.to_string();
        fields[1] = format!("({comm})");
        fields[2] = state.to_string();
        fields[3] = ppid.to_string();
        fields[8] = flags.to_string();
        fields[21] = start.to_string();
        fields[51] = "256".into();
        fields.join(" ")
    }

    #[test]
    fn comm_with_spaces_and_parens() {
        let line = stat_line(42, "we ird) (name", 'S', 1, 0, 12345);
        let info = ProcessInfo::parse_stat(line.as_bytes(), Path::new("x")).unwrap();
        assert_eq!(info.comm, "we ird) (name");
        assert_eq!(
            info.id,
            ProcessId {
                pid: 42,
                start_time: 12345
            }
        );
        assert_eq!(info.ppid, 1);
        assert_eq!(info.state, 'S');
        assert_eq!(info.exit_status, Some(256));
    }

    #[test]
    fn classifies_kernel_threads_and_zombies() {
        let kthread = ProcessInfo::parse_stat(
            stat_line(2, "kthreadd", 'S', 0, PF_KTHREAD, 1).as_bytes(),
            Path::new("x"),
        )
        .unwrap();
        assert!(matches!(
            kthread.check_governable(),
            Err(ProcError::KernelThread { .. })
        ));
        let zombie = ProcessInfo::parse_stat(stat_line(77, "ffmpeg", 'Z', 1, 0, 1).as_bytes(), Path::new("x")).unwrap();
        assert!(matches!(zombie.check_governable(), Err(ProcError::Zombie { .. })));
        let me = ProcessInfo::parse_stat(
            stat_line(std::process::id(), "me", 'R', 1, 0, 1).as_bytes(),
            Path::new("x"),
        )
        .unwrap();
        assert!(matches!(me.check_governable(), Err(ProcError::Myself { .. })));
    }

    #[test]
    fn short_or_garbled_stat_is_an_error() {
        for bad in ["", "12", "12 (x", "x (y) S", "12 (x)", "12 x) (y S"] {
            assert!(
                ProcessInfo::parse_stat(bad.as_bytes(), Path::new("x")).is_err(),
                "{bad:?}"
            );
        }
    }

    /// Found by `cargo xtask fuzz --target proc_stat` (the input is in
    /// fuzz/regressions/proc_stat/): procfs panicked on these instead of
    /// returning its error.
    #[test]
    fn misplaced_parentheses_are_an_error_not_a_panic() {
        let real = stat_line(42, "ffmpeg", 'S', 1, 0, 12345);
        let garbled = [
            // '(' first: procfs computed `0 - 1`.
            format!("(x) {}", &real[3..]),
            // The last ')' before the first '('.
            "12 ) (x S 1".to_string(),
            // ')' last: its `end_paren + 2` is past the end.
            "12 (x)".to_string(),
            // A multi-byte character where procfs slices.
            "12é(x) S 1".to_string(),
            "12 (x)é1 S 1".to_string(),
        ];
        for bad in garbled.iter().map(String::as_bytes).chain([&include_bytes!(
            "../../../fuzz/regressions/proc_stat/crash-cf6735b26c8b518df9213f1a4148c514d1218549"
        )[..]])
        {
            let parsed = ProcessInfo::parse_stat(bad, Path::new("/proc/42/stat"));
            assert!(
                matches!(parsed, Err(ProcError::Parse { .. })),
                "{:?}: {parsed:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(ProcessInfo::parse_stat(real.as_bytes(), Path::new("/proc/42/stat")).is_ok());
    }

    #[test]
    fn reads_own_stat() {
        let me = ProcessInfo::read(std::process::id()).unwrap();
        assert_eq!(me.id.pid, std::process::id());
        assert!(me.id.start_time > 0);
        assert!(matches!(
            ProcessInfo::read(u32::MAX / 2),
            Err(ProcError::NotFound { .. })
        ));
    }

    #[test]
    fn descendants_of_a_live_process() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & sleep 5 & wait"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let comms_of = |found: &[u32]| -> Vec<String> {
            found
                .iter()
                .filter_map(|p| ProcessInfo::read(*p).ok())
                .map(|i| i.comm)
                .collect()
        };
        // Until both children are forked and have exec'd sleep (a forked
        // child is `sh` for a moment).
        let (mut found, mut comms) = (Vec::new(), Vec::new());
        for _ in 0..200 {
            found = descendants_of(pid);
            comms = comms_of(&found);
            if comms == ["sleep", "sleep"] {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for p in &found {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p as i32), nix::sys::signal::Signal::SIGKILL);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(comms, ["sleep", "sleep"], "{found:?}");
    }

    #[test]
    fn descendants_walks_the_tree() {
        let p = |pid, ppid| ProcessInfo {
            id: ProcessId { pid, start_time: 1 },
            comm: "x".into(),
            state: 'S',
            ppid,
            flags: 0,
            exit_status: None,
        };
        let all = vec![p(1, 0), p(10, 1), p(11, 10), p(12, 11), p(20, 1), p(13, 10)];
        let mut d: Vec<u32> = descendants(10, &all).iter().map(|p| p.id.pid).collect();
        d.sort();
        assert_eq!(d, vec![11, 12, 13]);
    }
}
