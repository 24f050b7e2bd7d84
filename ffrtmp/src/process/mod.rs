//! Processes: identity (pid + start time), pidfds, per-thread nice, and
//! spawning a child that is born inside its cgroup.

pub mod identity;
pub mod nice;
pub mod pidfd;
pub mod spawn;

pub use identity::{ProcError, ProcessId, ProcessInfo};
pub use pidfd::PidFd;
