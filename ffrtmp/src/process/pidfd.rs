//! pidfds (5.3+): a handle on one process that becomes readable when it
//! exits. It does not pin the pid number, but it never refers to another
//! process, which is what identity checks need.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// `PIDFD_INFO_EXIT` from `include/uapi/linux/pidfd.h` (6.15+).
const PIDFD_INFO_EXIT: u64 = 1 << 3;

/// `struct pidfd_info` from `include/uapi/linux/pidfd.h` (6.15, 72 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
    coredump_mask: u32,
    spare1: u32,
}

/// `PIDFD_GET_INFO` = `_IOWR(0xFF, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: libc::Ioctl =
    ((3 << 30) | ((std::mem::size_of::<PidfdInfo>() as u32) << 16) | (0xFF << 8) | 11) as libc::Ioctl;

#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
        Ok(PidFd(fd))
    }

    pub fn from_owned(fd: OwnedFd) -> PidFd {
        PidFd(fd)
    }

    /// The wait(2)-style exit status of the exited process, from
    /// `PIDFD_GET_INFO` with `PIDFD_INFO_EXIT` (Linux 6.15+). Unlike a
    /// zombie's `/proc/<pid>/stat`, this survives the parent reaping it.
    /// `None` on older kernels or while the process still runs.
    pub fn exit_status(&self) -> Option<i32> {
        let mut info = PidfdInfo {
            mask: PIDFD_INFO_EXIT,
            ..PidfdInfo::default()
        };
        // SAFETY: PIDFD_GET_INFO reads and writes a struct pidfd_info of
        // the size encoded in the request number; `info` is exactly that.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), PIDFD_GET_INFO, &mut info as *mut PidfdInfo) };
        (rc == 0 && info.mask & PIDFD_INFO_EXIT != 0).then_some(info.exit_code)
    }

    /// The exit status of `id`, which this pidfd refers to, once it has
    /// exited — whether or not its parent has reaped it yet. A process goes
    /// zombie → reaped: the pidfd knows the status after the reaping (6.15+),
    /// `/proc/<pid>/stat` while it is a zombie; asking pidfd, /proc, pidfd in
    /// that order cannot fall between the two.
    pub fn status_after_exit(&self, id: super::ProcessId) -> Option<i32> {
        self.exit_status()
            .or_else(|| match super::ProcessInfo::read(id.pid) {
                Ok(info) if info.id == id && info.is_zombie() => info.exit_status,
                _ => None,
            })
            .or_else(|| self.exit_status())
    }

    /// Has the process exited (become a zombie or been reaped)?
    pub fn has_exited(&self) -> io::Result<bool> {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::ZERO).map_err(io::Error::from)?;
        Ok(n > 0)
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> i32 {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_number_matches_the_uapi_header() {
        assert_eq!(std::mem::size_of::<PidfdInfo>(), 72);
        assert_eq!(PIDFD_GET_INFO as u32, 0xC048_FF0B);
    }

    #[test]
    fn exit_status_survives_reaping_on_new_kernels() {
        let mut child = std::process::Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let pidfd = PidFd::open(child.id()).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(3));
        // Reaped: /proc no longer has it, the pidfd still knows (6.15+).
        match pidfd.exit_status() {
            Some(status) => assert_eq!(status, 3 << 8),
            None => eprintln!("PIDFD_INFO_EXIT not supported by this kernel"),
        }
        assert!(pidfd.has_exited().unwrap());
    }
}
