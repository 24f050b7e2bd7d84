//! ffrtmp: put media workloads under Linux cgroup limits.
//!
//! One governor ([`cgroup::Governor`]) and its front doors: `run` spawns a
//! child born inside its job cgroup, `attach` adopts a running process.

pub mod cgroup;
pub mod cli;
pub mod events;
pub mod job;
pub mod process;
pub mod report;
pub mod watch;
