//! What every event source produces for the watch loop.

/// A process event, already reduced to what the watch loop needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceEvent {
    /// A process (thread group) exec'd; identity and match are confirmed
    /// by reading `/proc/<pid>`.
    Exec {
        pid: u32,
        /// When the kernel saw the exec, CLOCK_MONOTONIC nanoseconds (None
        /// when the source cannot tell): the start of "exec → limits in
        /// place".
        time_ns: Option<u64>,
    },
    /// A process exited with this wait(2)-style status.
    Exit { pid: u32, status: i32 },
    /// Events were lost (ring buffer full, netlink overflow or sequence
    /// gap); a reconcile scan must follow.
    Lost { count: u64 },
}
