//! What the watch service tells the program that embeds it: typed events,
//! as they happen. `ffrtmp watch --events` writes them as JSON lines.

use serde::Serialize;

use crate::cgroup::LimitOutcome;
use crate::report::JobResult;

/// From a target's exec (the kernel's timestamp) to its limits in place,
/// split at the move into its cgroup, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AdoptionLatency {
    /// exec → limits in place, the whole.
    pub total_us: u64,
    /// exec → the start of the write that moves the process: ffrtmp's own
    /// work (reading the process, making the cgroup, writing its limits)
    /// and the waits for its threads to be scheduled.
    pub before_move_us: u64,
    /// The write itself: the kernel's migration, its lock's wait included.
    pub move_us: u64,
}

/// One thing the watch service did or saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WatchEvent {
    /// The service is running: the event source it chose and why.
    Started {
        backend: String,
        reason: String,
        targets: Vec<String>,
    },
    /// A process is governed: its job cgroup exists with these limits and
    /// the process is in it. `reattached` when a restarted service took
    /// over a job it had governed before.
    Attached {
        job_id: String,
        pid: u32,
        /// `/proc/<pid>/stat` field 22: with `pid`, the process identity.
        start_time: u64,
        command: String,
        reattached: bool,
        limits: Vec<LimitOutcome>,
        /// How long it took, when the exec time is known (not for a job
        /// taken over, nor for one found by a scan of the poll backend).
        #[serde(skip_serializing_if = "Option::is_none")]
        latency: Option<AdoptionLatency>,
    },
    /// A governed process exited: the job's full result.
    Detached { command: String, result: Box<JobResult> },
    /// A matching process could not be governed.
    AttachFailed {
        pid: u32,
        command: String,
        error: String,
        /// Set when the failure looked transient and a retry is scheduled.
        retry_in_ms: Option<u64>,
    },
    /// A matching process was left alone by a filter.
    Filtered {
        pid: u32,
        command: String,
        filter: String,
        detail: String,
    },
    /// A running job's limits changed (configuration reload).
    LimitsUpdated {
        job_id: String,
        pid: u32,
        limits: Vec<LimitOutcome>,
    },
    /// Process events were lost; a reconcile scan follows.
    EventsLost { source: String, count: u64 },
    /// A `/proc` scan finished: why it ran and how many new targets it found.
    Reconciled { trigger: String, found: usize },
    /// The configuration was re-read (`ok: false`: the old one is kept).
    Reloaded { ok: bool, error: Option<String> },
    /// The service stopped; governed processes keep their cgroups.
    Stopped { governed: usize },
}
