//! Setting a per-thread attribute (nice, IO class) on every thread of a
//! process, threads being created meanwhile included.
//!
//! A new thread copies its creator's nice and IO class at the start of
//! `clone()` (`dup_task_struct`), but appears in `/proc/<pid>/task` only at
//! its end. So a thread that is in the middle of a clone when it is changed
//! hands the *old* value to a thread no listing has shown yet. Listing again
//! until nothing new appears is not enough (seen in an emulated VM: one of
//! six threads kept nice 0). The passes below therefore go on while any
//! thread may still be inside a clone: its `/proc/…/syscall` says `clone`
//! or `clone3`, or `running` (on a CPU or runnable, the syscall not known),
//! for at most [`MAX_WAITS`] short waits. Adoption runs on the blocking
//! pool after the move, so the waits delay neither the move nor other
//! adoptions.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::time::Duration;

use super::identity::{ProcError, read_small, thread_ids};

/// Waits for threads that may be inside a clone, at most (80 × 250 µs =
/// 20 ms): a clone takes tens of microseconds on hardware, but 8 waits of
/// 200 µs were not enough in an emulated guest (one thread of six missed,
/// twice). A thread that runs all the time (an encoder) shows `running` in
/// every pass, which costs this bound and no more.
pub const MAX_WAITS: u32 = 80;
const WAIT: Duration = Duration::from_micros(250);
/// Passes at most, waits or not: a process that creates threads without
/// pause would otherwise show a new one in every pass for ever.
pub const MAX_PASSES: u32 = 200;

/// What a thread was doing, from `/proc/<pid>/task/<tid>/syscall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doing {
    /// On a CPU: it may be inside a clone.
    Running,
    /// Blocked inside `clone` or `clone3`.
    Cloning,
    /// Blocked in another syscall (or the file is gone: the thread exited).
    Other,
}

impl Doing {
    /// Parses the file's first field: `running`, or the syscall number.
    pub fn parse(syscall_file: &str) -> Doing {
        match syscall_file.split_whitespace().next() {
            Some("running") => Doing::Running,
            Some(nr) => match nr.parse::<libc::c_long>() {
                Ok(nr) if nr == libc::SYS_clone || nr == libc::SYS_clone3 => Doing::Cloning,
                _ => Doing::Other,
            },
            None => Doing::Other,
        }
    }

    fn may_be_cloning(self) -> bool {
        self != Doing::Other
    }
}

/// Whether the listing has settled: no thread may still be inside a clone
/// (stops at the first that may, so a busy process costs one read).
pub fn settled(mut doing: impl Iterator<Item = Doing>) -> bool {
    !doing.any(Doing::may_be_cloning)
}

fn doing(pid: u32, tid: u32) -> Doing {
    let path = format!("/proc/{pid}/task/{tid}/syscall");
    read_small(Path::new(&path)).map_or(Doing::Other, |b| Doing::parse(&String::from_utf8_lossy(&b)))
}

/// A thread whose attribute could not be set.
#[derive(Debug)]
pub enum EveryThreadError {
    Proc(ProcError),
    Set { tid: u32, source: io::Error },
}

/// Calls `set(tid)` once for every thread of `pid`, including threads that
/// appear while it runs (see the module), in at most [`MAX_PASSES`] passes.
/// A thread that exits meanwhile (ESRCH) is not an error. Returns how many
/// threads were set.
pub fn set_every_thread(pid: u32, mut set: impl FnMut(u32) -> io::Result<()>) -> Result<usize, EveryThreadError> {
    let mut done = BTreeSet::new();
    let mut waits_left = MAX_WAITS;
    for _ in 0..MAX_PASSES {
        let tids = match thread_ids(pid) {
            Ok(tids) => tids,
            // Gone after a pass that set its threads: they all were set.
            Err(ProcError::NotFound { .. }) if !done.is_empty() => return Ok(done.len()),
            Err(e) => return Err(EveryThreadError::Proc(e)),
        };
        let mut found_new = false;
        for &tid in &tids {
            if !done.insert(tid) {
                continue;
            }
            found_new = true;
            match set(tid) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(source) => return Err(EveryThreadError::Set { tid, source }),
            }
        }
        // A new thread (every thread, in the first pass): list once more.
        if found_new {
            continue;
        }
        if waits_left == 0 || settled(tids.iter().map(|&tid| doing(pid, tid))) {
            return Ok(done.len());
        }
        waits_left -= 1;
        std::thread::sleep(WAIT);
    }
    Ok(done.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syscall_file_says_what_a_thread_does() {
        assert_eq!(Doing::parse("running\n"), Doing::Running);
        let clone = format!("{} 0x3d0f00 0x7f 0x0 0x0 0x0 0x0 0x7ffd 0x7f12\n", libc::SYS_clone);
        assert_eq!(Doing::parse(&clone), Doing::Cloning);
        assert_eq!(Doing::parse(&format!("{} 0x7f 0x58", libc::SYS_clone3)), Doing::Cloning);
        // read(0, …) and futex: blocked elsewhere.
        assert_eq!(
            Doing::parse("0 0x0 0x7f 0x2000 0x0 0x0 0x0 0x7ffd 0x7f12"),
            Doing::Other
        );
        assert_eq!(Doing::parse(&format!("{} 0x7f 0x80", libc::SYS_futex)), Doing::Other);
        // A thread in user space between syscalls, or an empty file.
        assert_eq!(Doing::parse("-1 0x7ffd 0x7f12"), Doing::Other);
        assert_eq!(Doing::parse(""), Doing::Other);
    }

    #[test]
    fn the_listing_settles_when_no_thread_may_be_cloning() {
        use Doing::*;
        assert!(!settled([Other, Cloning].into_iter()));
        assert!(!settled([Running].into_iter()));
        assert!(settled([Other, Other].into_iter()), "all blocked elsewhere");
        assert!(settled([].into_iter()));
    }

    #[test]
    fn a_process_gone_after_the_first_pass_is_done_not_an_error() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let n = set_every_thread(pid, |_| {
            // Our own child: it ends (and is reaped) during the first pass.
            child.kill()?;
            child.wait().map(drop)
        })
        .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn every_thread_of_this_process_is_visited_once() {
        // Spawned threads are in /proc/self/task once spawn() returns.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let parked: Vec<_> = (0..3)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::park();
                    }
                })
            })
            .collect();
        let pid = std::process::id();
        let mut seen = Vec::new();
        let n = set_every_thread(pid, |tid| {
            seen.push(tid);
            Ok(())
        })
        .unwrap();
        let unique: BTreeSet<u32> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "no thread twice: {seen:?}");
        assert_eq!(n, seen.len());
        assert!(n >= 4, "the main thread and three parked ones: {seen:?}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in &parked {
            t.thread().unpark();
        }
        for t in parked {
            t.join().unwrap();
        }
    }
}
