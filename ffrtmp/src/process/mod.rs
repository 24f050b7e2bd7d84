//! Processes: identity (pid + start time), pidfds, per-thread nice,
//! spawning a child that is born inside its cgroup, and the open-file limit.

pub mod identity;
pub mod ioprio;
pub mod nice;
pub mod oom;
pub mod pidfd;
pub mod pin;
pub mod rlimit;
pub mod spawn;
pub mod threads;

pub use identity::{ProcError, ProcessId, ProcessInfo};
pub use pidfd::PidFd;
pub use pin::{Pinned, pin};

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of the kernel's event
/// timestamps (`bpf_ktime_get_ns`, the proc connector's `timestamp_ns`).
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}
