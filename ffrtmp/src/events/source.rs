//! What every event source produces for the watch loop.

/// A process event, already reduced to what the watch loop needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// A process (thread group) exec'd; whether it is a target is confirmed
    /// by reading `/proc/<pid>`.
    Exec {
        pid: u32,
        /// Its start time in clock ticks after boot (`/proc/<pid>/stat`
        /// field 22) when the source knows it (eBPF): with `pid`, its
        /// identity.
        start_time: Option<u64>,
        /// When the kernel saw the exec, CLOCK_MONOTONIC nanoseconds (None
        /// when the source cannot tell): the start of "exec → limits in
        /// place".
        time_ns: Option<u64>,
        /// argv[0] as the exec left it, when the source carries it (eBPF,
        /// for an argv[0] of up to 122 bytes): `/proc/<pid>/cmdline` need
        /// not be read, which would wait on the target's mmap lock.
        argv0: Option<String>,
    },
    /// A process exited with this wait(2)-style status.
    Exit {
        pid: u32,
        /// As for [`SourceEvent::Exec`]: the identity, when known.
        start_time: Option<u64>,
        status: i32,
        /// When it exited, CLOCK_MONOTONIC nanoseconds, when known.
        time_ns: Option<u64>,
    },
    /// Events were lost (ring buffer full, netlink overflow or sequence
    /// gap); a reconcile scan must follow.
    Lost { count: u64 },
}
