//! The IO scheduling class (`ioprio_set`), per thread like nice:
//! `IOPRIO_WHO_PROCESS` with a tid changes that one thread, so every entry
//! of `/proc/<pid>/task` is set, threads created meanwhile included (see
//! [`super::threads`]). New threads and children inherit it.
//! No crate wraps the syscall (nix does not), hence `libc::syscall`.

use std::io;

use super::identity::ProcError;
use super::threads::{EveryThreadError, set_every_thread};
use crate::cgroup::limits::IoClass;

/// `IOPRIO_WHO_PROCESS` (include/uapi/linux/ioprio.h): one thread by tid.
pub const IOPRIO_WHO_PROCESS: libc::c_int = 1;

#[derive(Debug, thiserror::Error)]
pub enum IoprioError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("ioprio_set({class}) on thread {tid} of pid {pid}: {source}{}", hint(*class, source))]
    Set {
        pid: u32,
        tid: u32,
        class: IoClass,
        #[source]
        source: io::Error,
    },
}

/// Why the kernel says no, when it is the usual reason.
pub fn hint(class: IoClass, e: &io::Error) -> &'static str {
    match (class, e.raw_os_error()) {
        (IoClass::Realtime(_), Some(libc::EPERM)) => " (the realtime class needs CAP_SYS_ADMIN)",
        _ => "",
    }
}

/// Set the IO class of one thread (tid 0: the calling thread).
pub fn set_thread(tid: u32, class: IoClass) -> io::Result<()> {
    // SAFETY: ioprio_set takes three integers and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid as libc::c_int,
            libc::c_int::from(class.ioprio()),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The raw `ioprio_get` value of one thread (class << 13 | level).
pub fn thread_ioprio(tid: u32) -> io::Result<u16> {
    // SAFETY: as above; ioprio_get only returns an integer.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid as libc::c_int) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as u16)
    }
}

/// Set the IO class of every thread of `pid`, threads being created
/// meanwhile included ([`super::threads`]). Returns how many threads were
/// set; a thread that exits meanwhile (ESRCH) is not an error.
pub fn set_all_threads(pid: u32, class: IoClass) -> Result<usize, IoprioError> {
    set_every_thread(pid, |tid| set_thread(tid, class)).map_err(|e| match e {
        EveryThreadError::Proc(e) => IoprioError::Proc(e),
        EveryThreadError::Set { tid, source } => IoprioError::Set {
            pid,
            tid,
            class,
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_takes_the_class_and_reads_it_back() {
        // Idle and best-effort need no privilege; a thread of our own.
        let got = std::thread::spawn(|| {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() } as u32;
            set_thread(0, IoClass::BestEffort(6)).unwrap();
            let be = thread_ioprio(tid).unwrap();
            set_thread(tid, IoClass::Idle).unwrap();
            (be, thread_ioprio(0).unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(IoClass::from_ioprio(got.0), Some(IoClass::BestEffort(6)));
        assert_eq!(IoClass::from_ioprio(got.1), Some(IoClass::Idle));
    }

    #[test]
    fn realtime_refused_says_why() {
        let e = IoprioError::Set {
            pid: 1,
            tid: 2,
            class: IoClass::Realtime(0),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert!(
            e.to_string().ends_with("(the realtime class needs CAP_SYS_ADMIN)"),
            "{e}"
        );
    }
}
