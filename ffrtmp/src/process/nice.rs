//! Niceness is per thread on Linux: `setpriority(PRIO_PROCESS, tid)` changes
//! one thread, so every entry of `/proc/<pid>/task` is reniced, and the list
//! is read once more to catch threads created meanwhile.

use std::collections::BTreeSet;
use std::io;

use super::identity::{ProcError, thread_ids};

#[derive(Debug, thiserror::Error)]
pub enum NiceError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("setpriority({nice}) on thread {tid} of pid {pid}: {source}")]
    Set {
        pid: u32,
        tid: u32,
        nice: i8,
        #[source]
        source: io::Error,
    },
}

/// Set the nice value of one thread (or, with tid 0, the calling thread).
pub fn set_thread_nice(tid: u32, nice: i8) -> io::Result<()> {
    // SAFETY: plain syscall wrapper; PRIO_PROCESS with a tid acts on one thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, i32::from(nice)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Renice every thread of `pid`. Returns how many threads were set.
/// A thread that exits meanwhile (ESRCH) is not an error.
pub fn renice_all_threads(pid: u32, nice: i8) -> Result<usize, NiceError> {
    let mut done = BTreeSet::new();
    for _pass in 0..2 {
        for tid in thread_ids(pid)? {
            if done.contains(&tid) {
                continue;
            }
            match set_thread_nice(tid, nice) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(source) => return Err(NiceError::Set { pid, tid, nice, source }),
            }
            done.insert(tid);
        }
    }
    Ok(done.len())
}

/// The nice value of one thread.
pub fn thread_nice(tid: u32) -> io::Result<i32> {
    // getpriority can legitimately return -1, so errno is the error signal.
    // SAFETY: errno location is thread-local and valid.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain syscall wrapper.
    let v = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
    let err = io::Error::last_os_error();
    if v == -1 && err.raw_os_error() != Some(0) {
        Err(err)
    } else {
        Ok(v)
    }
}
