//! Pinning a running process before acting on it: a pidfd, and the same
//! start time before and after it was opened. Shared by `attach` and the
//! watch daemon, so both adopt a process the same way.

use super::identity::{ProcError, ProcessId, ProcessInfo};
use super::pidfd::PidFd;

/// A process held by a pidfd whose identity was read before and after the
/// pidfd was opened: the pidfd refers to exactly `info.id`.
#[derive(Debug)]
pub struct Pinned {
    pub info: ProcessInfo,
    pub pidfd: PidFd,
}

impl Pinned {
    pub fn id(&self) -> ProcessId {
        self.info.id
    }
}

/// Pin `pid`; when `expected` is given, it must be that process. A zombie
/// is refused: there is nothing left to govern.
///
/// With `expected` (an identity read earlier) the pidfd is opened first and
/// the identity read once after it: if the pid named another process when
/// the pidfd was opened, the process read earlier had exited by then, it
/// cannot hold the pid after the open either, and the identity read after
/// the open refuses it.
pub fn pin(pid: u32, expected: Option<ProcessId>) -> Result<Pinned, ProcError> {
    let expected = match expected {
        Some(id) => id,
        None => ProcessInfo::read(pid)?.id,
    };
    let pidfd = PidFd::open(pid).map_err(|source| match source.raw_os_error() {
        Some(libc::ESRCH) => ProcError::NotFound { pid },
        _ => ProcError::Pidfd { pid, source },
    })?;
    let after = ProcessInfo::read(pid)?;
    if after.id != expected {
        return Err(ProcError::Replaced { pid });
    }
    // The state read after the open says it: the kernel marks a process
    // a zombie when its pidfd turns readable (exit_notify), so a poll of
    // the pidfd here would only repeat it. A process that exits from now
    // on is caught by the pidfd where it matters, right before a move.
    if after.is_zombie() {
        return Err(ProcError::Zombie { pid });
    }
    Ok(Pinned { info: after, pidfd })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_a_live_process_and_refuses_another_identity() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let pid = child.id();
        let pinned = pin(pid, None).unwrap();
        assert_eq!(pinned.id().pid, pid);
        let other = ProcessId {
            pid,
            start_time: pinned.id().start_time + 1,
        };
        assert!(matches!(pin(pid, Some(other)), Err(ProcError::Replaced { .. })));
        child.kill().unwrap();
        // A zombie (not yet reaped) is refused, a reaped process is not found.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(matches!(pin(pid, None), Err(ProcError::Zombie { .. })));
        child.wait().unwrap();
        assert!(matches!(pin(pid, None), Err(ProcError::NotFound { .. })));
    }
}
