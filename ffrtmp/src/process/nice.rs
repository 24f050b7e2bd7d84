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

/// Set the nice value of one thread (or, with tid 0, the calling thread):
/// `setpriority(PRIO_PROCESS, tid)` acts on one thread on Linux.
pub fn set_thread_nice(tid: u32, nice: i8) -> io::Result<()> {
    rustix::process::setpriority_process(thread(tid)?, i32::from(nice)).map_err(io::Error::from)
}

/// `None` (the calling thread) for 0, else the tid.
fn thread(tid: u32) -> io::Result<Option<rustix::process::Pid>> {
    match i32::try_from(tid) {
        Ok(0) => Ok(None),
        Ok(raw) => Ok(rustix::process::Pid::from_raw(raw)),
        Err(_) => Err(io::Error::from_raw_os_error(libc::ESRCH)),
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
    rustix::process::getpriority_process(thread(tid)?).map_err(io::Error::from)
}
