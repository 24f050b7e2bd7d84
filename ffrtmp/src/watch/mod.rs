//! `ffrtmp watch`: kernel process events → match a target → adopt it into
//! a job cgroup immediately → report the job when it exits.

mod daemon;
mod source;

use std::time::Duration;

pub use daemon::run;
pub use source::Backend;

use crate::cgroup::{CgroupRoot, Limits};
use crate::events::scan::Targets;

/// Everything the daemon needs.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub targets: Targets,
    pub limits: Limits,
    pub cgroup_root: CgroupRoot,
    pub backend: Backend,
    /// The poll backend's scan period.
    pub scan_interval: Duration,
    /// eBPF ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Proc connector receive buffer in bytes.
    pub netlink_rcvbuf: usize,
}

impl WatchConfig {
    pub const DEFAULT_RING_BYTES: u32 = 256 * 1024;
    pub const DEFAULT_NETLINK_RCVBUF: usize = 8 * 1024 * 1024;
}
