//! Niceness is per thread on Linux: `setpriority(PRIO_PROCESS, tid)` changes
//! one thread, so every entry of `/proc/<pid>/task` is reniced, threads
//! created meanwhile included (see [`super::threads`]).

use std::io;

use super::identity::ProcError;
use super::threads::{EveryThreadError, set_every_thread};

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

/// Renice every thread of `pid`, threads being created meanwhile included
/// ([`super::threads`]). Returns how many threads were set. A thread that
/// exits meanwhile (ESRCH) is not an error.
pub fn renice_all_threads(pid: u32, nice: i8) -> Result<usize, NiceError> {
    set_every_thread(pid, |tid| set_thread_nice(tid, nice)).map_err(|e| match e {
        EveryThreadError::Proc(e) => NiceError::Proc(e),
        EveryThreadError::Set { tid, source } => NiceError::Set { pid, tid, nice, source },
    })
}

/// The nice value of one thread.
pub fn thread_nice(tid: u32) -> io::Result<i32> {
    rustix::process::getpriority_process(thread(tid)?).map_err(io::Error::from)
}
