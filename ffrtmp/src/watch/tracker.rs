//! The daemon's decisions, without I/O: a state machine keyed by process
//! identity.
//!
//! [`Tracker`] is told what happened — an exec, the result of reading a
//! process, an adoption's outcome, an exit, a timer, a reload — and answers
//! with [`Action`]s for the I/O shell around it (`daemon.rs`) to carry out:
//! read a process, adopt it, start a timer, finish a job, note something in
//! the log. It never reads a file, a clock or a socket, so every ordering of
//! events can be tested without root (see the tests below, and the property
//! test that drives it with random event sequences against a model kernel).
//!
//! Every entry is keyed by [`ProcessId`] (pid + start time), never by pid:
//! a reused pid is another process, with its own entry (principle 4 of the
//! design). The only state keyed by pid is the count of reads in flight for
//! an exec event whose identity the source could not tell.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::RetryConfig;
use super::filter::Rejected;
use super::rules::Rules;
use crate::cgroup::{JobId, Limits};
use crate::events::scan::Candidate;
use crate::process::ProcessId;

/// How long an exited process waits for the source's report of its exit
/// status when neither its pidfd nor `/proc` could tell it. Both sources can
/// report after the pidfd wakes: the proc connector sends after
/// exit_notify() (6.1), and the BPF ring buffer wakes its reader through
/// irq_work, later still on a slow (emulated) CPU. Only a job whose status
/// never comes pays it.
pub const EXIT_STATUS_GRACE: Duration = Duration::from_secs(1);

/// How long after giving up on a process (or on reading one) a reconcile
/// scan looks for it again: a transient shortage (file descriptors, memory)
/// may be over by then.
pub const RESCAN_AFTER_GIVING_UP: Duration = Duration::from_secs(5);

/// One less of `pid`'s pieces of work in flight.
fn decrement<K: Eq + std::hash::Hash>(counts: &mut HashMap<K, u32>, key: K) {
    if let Some(n) = counts.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

/// Retry backoff: 100 ms, 200 ms, 400 ms, … at most 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

/// A process that matches a target, as a read of `/proc` found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub candidate: Candidate,
    /// How long it had run when it was read.
    pub age: Duration,
    /// CLOCK_MONOTONIC nanoseconds just after it was read alive: an exit
    /// event stamped earlier belongs to an earlier holder of its pid.
    pub seen_ns: u64,
}

impl Found {
    pub fn id(&self) -> ProcessId {
        self.candidate.info.id
    }
}

/// What an [`Action::Check`] with `adopt` came back with.
#[derive(Debug)]
pub enum FusedCheck<J> {
    /// Not adopted in the same work (not a target, gone, failed, or it
    /// must first run for its `min_runtime`): as from a plain check.
    Checked(Checked),
    /// A target, adopted at once into `job_id` with `limits`.
    Adopted {
        found: Found,
        job_id: JobId,
        /// Boxed: `Limits` is large, this enum travels by value.
        limits: Box<Limits>,
        outcome: Adopted<J>,
    },
}

/// Whether a read asked for by an exec of the identity (`pid`,
/// `start_time`) may adopt the target it `found` at once, and into which job
/// with which limits: not when the pid now names another process (its own
/// exec event brings that one), nor while the target has not yet run for
/// its command's `min_runtime`.
pub fn adopt_at_once(rules: &Rules, start_time: Option<u64>, found: &Found) -> Option<(JobId, Limits)> {
    let command = &found.candidate.command;
    let same = start_time == Some(found.id().start_time);
    (same && found.age >= rules.min_runtime_for(command)).then(|| {
        (
            super::adopt::job_id_for(command, found.id().pid),
            rules.limits_for(command).clone(),
        )
    })
}

/// What a `/proc` scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanResult {
    /// Every running target ffrtmp may govern.
    pub found: Vec<Found>,
    /// Processes that could not be read (not "gone"), with why.
    pub failed: Vec<(u32, String)>,
}

/// What reading `/proc/<pid>` after an exec event found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// A target ffrtmp may govern.
    Target(Found),
    /// Not a target (comm or argv[0] do not match), or another process than
    /// the exec event's (its pid was reused meanwhile).
    NotTarget,
    /// A target ffrtmp leaves alone: itself, its own children, or a process
    /// already in an ffrtmp job (such as the child of `ffrtmp run`).
    Skipped { pid: u32, why: &'static str },
    /// The process is gone (exited, or a zombie).
    Gone,
    /// The read failed for another reason (EMFILE, ENOMEM, EACCES, …).
    Failed { error: String },
}

/// What one adoption attempt came to (`J`: the governed job's cgroup, as
/// the I/O side holds it).
#[derive(Debug)]
pub enum Adopted<J> {
    /// Governed: the process is in its job cgroup, in every hierarchy.
    Governed { payload: J, attached: SystemTime },
    /// A filter said no.
    Filtered(Rejected),
    /// The process exited (or its pid was reused) before it could be
    /// governed: nothing failed, there is nothing left to govern.
    Gone,
    /// It failed; a `transient` failure is worth a retry. `announced`: the
    /// attempt had logged `Attaching to PID …` before it failed.
    Failed {
        error: String,
        transient: bool,
        announced: bool,
    },
}

/// A governed job, as the tracker keeps it.
#[derive(Debug)]
pub struct Job<J> {
    pub job_id: JobId,
    pub command: String,
    /// The limits last asked for (a reload diffs against these).
    pub limits: Limits,
    pub attached: SystemTime,
    pub payload: J,
}

/// A timer the shell starts; when it fires, the shell hands it back to
/// [`Tracker::timer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// The process has now run for its `min_runtime`.
    MinRuntime(ProcessId),
    /// Adoption attempt `attempt` is due.
    Retry { id: ProcessId, attempt: u32 },
    /// Read an exec'd process again (the last read failed).
    RetryCheck {
        pid: u32,
        start_time: Option<u64>,
        exec_ns: Option<u64>,
        attempt: u32,
    },
    /// Stop waiting for the source's report of this exit status.
    ExitStatus(ProcessId),
    /// Look for processes that were given up on.
    Rescan,
}

/// What the tracker asks its shell to do.
#[derive(Debug)]
pub enum Action<J> {
    /// Read `/proc/<pid>` (on the blocking pool, or on the loop for the hot
    /// path: docs/architecture.md) and report with
    /// [`Tracker::checked`]. `start_time`: the identity the source reported.
    ///
    /// `adopt`: a new process the source named by identity: if the read
    /// finds a target that [`adopt_at_once`] lets in, adopt it in the same
    /// piece of work (one hand-off instead of two on the way to the move)
    /// and report with [`Tracker::fused_checked`] instead.
    Check {
        pid: u32,
        start_time: Option<u64>,
        exec_ns: Option<u64>,
        attempt: u32,
        adopt: bool,
    },
    /// Adopt a process off the event loop and report with
    /// [`Tracker::adopted`]. `announce`: log `Attaching to PID …` once it
    /// is pinned and has passed the filters (no earlier attempt has).
    Adopt {
        candidate: Candidate,
        job_id: JobId,
        limits: Limits,
        attempt: u32,
        announce: bool,
    },
    /// A `/proc` scan; report with [`Tracker::scanned`].
    Scan(&'static str),
    /// Start a timer.
    Timer { after: Duration, timer: Timer },
    /// Tell the event source this pid is governed (eBPF reports exits only
    /// for those), and watch the process's pidfd.
    Watch(ProcessId),
    /// Write a governed job's new limits (its job is [`Tracker::job`]).
    UpdateLimits { id: ProcessId, old: Limits, new: Limits },
    /// The job's process exited: read its usage, remove its cgroup, report.
    Finish {
        id: ProcessId,
        job: Job<J>,
        status: Option<i32>,
    },
    /// Something for the log, metrics and event stream.
    Note(Note),
}

/// What the tracker decided, for the log, the metrics and the event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A process is governed (its job is [`Tracker::job`]).
    Governed {
        id: ProcessId,
        exec_ns: Option<u64>,
        reattached: bool,
    },
    Filtered {
        id: ProcessId,
        command: String,
        rejected: Rejected,
    },
    /// Adoption waits for `min_runtime`.
    Waiting {
        id: ProcessId,
        command: String,
        wait: Duration,
    },
    /// A target exited before it could be governed.
    ExitedUngoverned { id: ProcessId, command: String },
    /// An adoption failed; `retry_in` when another attempt follows.
    AttachFailed {
        id: ProcessId,
        command: String,
        error: String,
        attempt: u32,
        retry_in: Option<Duration>,
    },
    /// Reading an exec'd process failed; `retry_in` when it is read again,
    /// else a later scan looks for it.
    CheckFailed {
        pid: u32,
        error: String,
        attempt: u32,
        retry_in: Option<Duration>,
    },
    /// An exec event brought `found` new targets (before their adoption).
    Discovered { found: usize },
    /// A scan found `found` new targets.
    Reconciled { trigger: &'static str, found: usize },
    /// A scan failed.
    ScanFailed { trigger: &'static str, error: String },
    /// A scan could not read some processes; a later scan looks again.
    ScanIncomplete {
        trigger: &'static str,
        failed: Vec<(u32, String)>,
    },
}

/// Where one tracked process is.
#[derive(Debug)]
enum Phase<J> {
    /// Waiting for its `min_runtime` timer.
    Waiting,
    /// An adoption attempt is in flight.
    Adopting,
    /// Waiting for the retry timer of attempt `attempt`.
    Retrying { attempt: u32 },
    /// A filter said no (forgotten when it exits, or a scan no longer sees it).
    Rejected,
    /// Its adoption failed for good (or ran out of retries): the next scan
    /// that still sees it tries again (forgotten when it exits, or a scan no
    /// longer sees it).
    GaveUp,
    /// In its job cgroup, running.
    Governed(Job<J>),
    /// Exited; waiting briefly for the source's report of its status.
    AwaitingStatus(Job<J>),
}

#[derive(Debug)]
struct Entry<J> {
    /// The process as it was read, and the target it matched.
    candidate: Candidate,
    phase: Phase<J>,
    /// When the kernel saw the exec (CLOCK_MONOTONIC ns), for the latency.
    exec_ns: Option<u64>,
    /// Monotonic ns just after the process was read alive: see [`Found`].
    seen_ns: u64,
    /// The exit status the event source reported, before the pidfd woke.
    exit_status: Option<i32>,
    /// An attempt has logged `Attaching to PID …`.
    announced: bool,
}

/// The daemon's bookkeeping: every process it is adopting, governing,
/// waiting for or has rejected, keyed by identity.
#[derive(Debug)]
pub struct Tracker<J> {
    rules: Arc<Rules>,
    retry: RetryConfig,
    /// The source reports exit statuses, so one missing when the pidfd
    /// wakes may still come.
    source_reports_status: bool,
    entries: HashMap<ProcessId, Entry<J>>,
    /// Reads in flight per pid, for exec events without an identity.
    checking: HashMap<u32, u32>,
    /// Reads in flight that may adopt what they find ([`FusedCheck`]), by
    /// the identity their exec event named: nothing else starts an
    /// adoption of these meanwhile.
    fused: HashMap<ProcessId, u32>,
    /// A rescan timer is running.
    rescan_pending: bool,
    /// When events were last lost (CLOCK_MONOTONIC ns): a process seen
    /// before then may have lost its exit event, so an exit event carrying
    /// only its pid may be another holder's.
    last_loss_ns: u64,
}

impl<J> Tracker<J> {
    pub fn new(rules: Arc<Rules>, retry: RetryConfig, source_reports_status: bool) -> Tracker<J> {
        Tracker {
            rules,
            retry,
            source_reports_status,
            entries: HashMap::new(),
            checking: HashMap::new(),
            fused: HashMap::new(),
            rescan_pending: false,
            last_loss_ns: 0,
        }
    }

    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// The governed job of `id` (running or awaiting its exit status).
    pub fn job(&self, id: ProcessId) -> Option<&Job<J>> {
        match &self.entries.get(&id)?.phase {
            Phase::Governed(job) | Phase::AwaitingStatus(job) => Some(job),
            _ => None,
        }
    }

    /// Every governed job (for the state file and at shutdown).
    pub fn jobs(&self) -> impl Iterator<Item = (ProcessId, &Job<J>)> {
        self.entries.iter().filter_map(|(id, e)| match &e.phase {
            Phase::Governed(job) | Phase::AwaitingStatus(job) => Some((*id, job)),
            _ => None,
        })
    }

    /// How many processes are governed.
    pub fn governed(&self) -> usize {
        self.jobs().count()
    }

    /// Every entry, governed or not: what the tracker still remembers.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.checking.is_empty() && self.fused.is_empty()
    }

    /// Is `id` known in any phase?
    pub fn knows(&self, id: ProcessId) -> bool {
        self.entries.contains_key(&id)
    }

    /// An exec event. `start_time` when the source knows the identity
    /// (eBPF), `exec_ns` when it knows when the exec happened.
    pub fn exec(&mut self, pid: u32, start_time: Option<u64>, exec_ns: Option<u64>) -> Vec<Action<J>> {
        if let Some(start_time) = start_time {
            let id = ProcessId { pid, start_time };
            if self.knows(id) || self.fused.contains_key(&id) {
                // The same process exec'd again: it keeps its phase (or the
                // read of its first exec decides it).
                return Vec::new();
            }
        }
        // An identity the tracker does not know may be adopted by the read
        // itself; without one (netlink) the pid may be a known process
        // exec'ing again, so the read reports first.
        vec![self.check(pid, start_time, exec_ns, 0, start_time.is_some())]
    }

    fn check(
        &mut self,
        pid: u32,
        start_time: Option<u64>,
        exec_ns: Option<u64>,
        attempt: u32,
        adopt: bool,
    ) -> Action<J> {
        *self.checking.entry(pid).or_default() += 1;
        if let Some(start_time) = start_time.filter(|_| adopt) {
            *self.fused.entry(ProcessId { pid, start_time }).or_default() += 1;
        }
        Action::Check {
            pid,
            start_time,
            exec_ns,
            attempt,
            adopt,
        }
    }

    /// The result of an [`Action::Check`] with `adopt`.
    pub fn fused_checked(
        &mut self,
        pid: u32,
        start_time: Option<u64>,
        exec_ns: Option<u64>,
        result: FusedCheck<J>,
    ) -> Vec<Action<J>> {
        if let Some(start_time) = start_time {
            decrement(&mut self.fused, ProcessId { pid, start_time });
        }
        let (found, job_id, limits, outcome) = match result {
            FusedCheck::Checked(result) => return self.checked(pid, start_time, exec_ns, 0, result),
            FusedCheck::Adopted {
                found,
                job_id,
                limits,
                outcome,
            } => (found, job_id, *limits, outcome),
        };
        decrement(&mut self.checking, pid);
        let id = found.id();
        if !self.knows(id) {
            // The usual case: exec() asked only for an identity it did not
            // know, and scans leave the pid alone while this read runs.
            let announced = match &outcome {
                Adopted::Governed { .. } => true,
                Adopted::Failed { announced, .. } => *announced,
                Adopted::Filtered(_) | Adopted::Gone => false,
            };
            self.entries.insert(
                id,
                Entry {
                    candidate: found.candidate.clone(),
                    phase: Phase::Adopting,
                    exec_ns,
                    seen_ns: found.seen_ns,
                    exit_status: None,
                    announced,
                },
            );
        }
        self.adopted(found.candidate, job_id, limits, 0, outcome)
    }

    /// The result of an [`Action::Check`].
    pub fn checked(
        &mut self,
        pid: u32,
        start_time: Option<u64>,
        exec_ns: Option<u64>,
        attempt: u32,
        result: Checked,
    ) -> Vec<Action<J>> {
        decrement(&mut self.checking, pid);
        match result {
            Checked::Target(found) => {
                if start_time.is_some_and(|st| st != found.id().start_time) {
                    // Another process now holds the pid; its own exec event
                    // (or a scan) brings it here.
                    return Vec::new();
                }
                let mut out = Vec::new();
                if !self.knows(found.id()) {
                    // The old tool's line before `Attaching to PID …`.
                    out.push(Action::Note(Note::Discovered { found: 1 }));
                }
                self.consider(found, exec_ns, &mut out);
                out
            }
            Checked::NotTarget | Checked::Skipped { .. } | Checked::Gone => Vec::new(),
            Checked::Failed { error } => {
                // Nothing is dropped without a trace: logged, counted and
                // read again; after the last attempt a scan looks later.
                let retry = attempt < self.retry.max_attempts;
                let retry_in = retry.then(|| backoff(attempt));
                let mut out = vec![Action::Note(Note::CheckFailed {
                    pid,
                    error,
                    attempt,
                    retry_in,
                })];
                match retry_in {
                    Some(after) => out.push(Action::Timer {
                        after,
                        timer: Timer::RetryCheck {
                            pid,
                            start_time,
                            exec_ns,
                            attempt: attempt + 1,
                        },
                    }),
                    None => self.rescan_later(&mut out),
                }
                out
            }
        }
    }

    /// A target found by a read: adopt it now, or when it has run long
    /// enough — unless it is known already.
    fn consider(&mut self, found: Found, exec_ns: Option<u64>, out: &mut Vec<Action<J>>) {
        let id = found.id();
        if self.knows(id) {
            return;
        }
        let command = found.candidate.command.clone();
        let min = self.rules.min_runtime_for(&command);
        let waiting = found.age < min;
        self.entries.insert(
            id,
            Entry {
                candidate: found.candidate.clone(),
                phase: if waiting { Phase::Waiting } else { Phase::Adopting },
                exec_ns,
                seen_ns: found.seen_ns,
                exit_status: None,
                announced: false,
            },
        );
        if waiting {
            let wait = min - found.age;
            out.push(Action::Note(Note::Waiting { id, command, wait }));
            out.push(Action::Timer {
                after: wait,
                timer: Timer::MinRuntime(id),
            });
        } else {
            out.push(self.adopt_action(found.candidate, 0, true));
        }
    }

    fn adopt_action(&self, candidate: Candidate, attempt: u32, announce: bool) -> Action<J> {
        let job_id = super::adopt::job_id_for(&candidate.command, candidate.info.id.pid);
        let limits = self.rules.limits_for(&candidate.command).clone();
        Action::Adopt {
            candidate,
            job_id,
            limits,
            attempt,
            announce,
        }
    }

    /// The outcome of an [`Action::Adopt`] for `candidate` (the same one).
    pub fn adopted(
        &mut self,
        candidate: Candidate,
        job_id: JobId,
        limits: Limits,
        attempt: u32,
        outcome: Adopted<J>,
    ) -> Vec<Action<J>> {
        let id = candidate.info.id;
        let mut out = Vec::new();
        let Some(entry) = self.entries.get_mut(&id) else {
            // Every adoption in flight has its entry; a governed process is
            // never forgotten, so a stray success is still tracked.
            if let Adopted::Governed { payload, attached } = outcome {
                let entry = Entry {
                    candidate,
                    phase: Phase::Adopting,
                    exec_ns: None,
                    seen_ns: 0,
                    exit_status: None,
                    announced: true,
                };
                self.entries.insert(id, entry);
                self.governed_now(id, job_id, limits, payload, attached, &mut out);
            }
            return out;
        };
        match outcome {
            Adopted::Governed { payload, attached } => {
                self.governed_now(id, job_id, limits, payload, attached, &mut out);
            }
            Adopted::Filtered(rejected) => {
                entry.phase = Phase::Rejected;
                out.push(Action::Note(Note::Filtered {
                    id,
                    command: entry.candidate.command.clone(),
                    rejected,
                }));
            }
            Adopted::Gone => {
                let entry = self.entries.remove(&id).expect("just seen");
                out.push(Action::Note(Note::ExitedUngoverned {
                    id,
                    command: entry.candidate.command,
                }));
            }
            Adopted::Failed {
                error,
                transient,
                announced,
            } => {
                entry.announced |= announced;
                let retry = transient && attempt < self.retry.max_attempts;
                let retry_in = retry.then(|| backoff(attempt));
                out.push(Action::Note(Note::AttachFailed {
                    id,
                    command: entry.candidate.command.clone(),
                    error,
                    attempt,
                    retry_in,
                }));
                match retry_in {
                    Some(after) => {
                        entry.phase = Phase::Retrying { attempt: attempt + 1 };
                        out.push(Action::Timer {
                            after,
                            timer: Timer::Retry {
                                id,
                                attempt: attempt + 1,
                            },
                        });
                    }
                    None => {
                        // Given up until a scan sees it again; after a
                        // transient failure that scan comes soon.
                        entry.phase = Phase::GaveUp;
                        if transient {
                            self.rescan_later(&mut out);
                        }
                    }
                }
            }
        }
        out
    }

    fn governed_now(
        &mut self,
        id: ProcessId,
        job_id: JobId,
        limits: Limits,
        payload: J,
        attached: SystemTime,
        out: &mut Vec<Action<J>>,
    ) {
        let entry = self.entries.get_mut(&id).expect("the caller made the entry");
        let current = self.rules.limits_for(&entry.candidate.command).clone();
        let stale = current != limits;
        entry.phase = Phase::Governed(Job {
            job_id,
            command: entry.candidate.command.clone(),
            limits: limits.clone(),
            attached,
            payload,
        });
        out.push(Action::Watch(id));
        out.push(Action::Note(Note::Governed {
            id,
            exec_ns: entry.exec_ns,
            reattached: false,
        }));
        if stale {
            // A reload came while it was being adopted: catch up now.
            self.set_limits(id, current, out);
        }
    }

    /// A job an earlier daemon left, taken over at start (its limits are
    /// already the current rules').
    pub fn reattached(&mut self, found: Found, job: Job<J>) -> Vec<Action<J>> {
        let id = found.id();
        if self.knows(id) {
            return Vec::new();
        }
        self.entries.insert(
            id,
            Entry {
                candidate: found.candidate,
                phase: Phase::Governed(job),
                exec_ns: None,
                seen_ns: found.seen_ns,
                exit_status: None,
                announced: false,
            },
        );
        vec![
            Action::Watch(id),
            Action::Note(Note::Governed {
                id,
                exec_ns: None,
                reattached: true,
            }),
        ]
    }

    /// The event source reported an exit. `start_time` when it knows the
    /// identity (eBPF); otherwise `time_ns`, when the exit happened.
    pub fn source_exit(
        &mut self,
        pid: u32,
        start_time: Option<u64>,
        status: i32,
        time_ns: Option<u64>,
    ) -> Vec<Action<J>> {
        let Some(id) = self.exit_owner(pid, start_time, time_ns) else {
            return Vec::new();
        };
        let entry = self.entries.get_mut(&id).expect("found by exit_owner");
        match entry.phase {
            Phase::AwaitingStatus(_) => {
                let Phase::AwaitingStatus(job) = self.entries.remove(&id).expect("just seen").phase else {
                    unreachable!("matched above")
                };
                vec![Action::Finish {
                    id,
                    job,
                    status: Some(status),
                }]
            }
            // Its rejection (or failure) is over: nothing to remember.
            Phase::Rejected | Phase::GaveUp => {
                self.entries.remove(&id);
                Vec::new()
            }
            // Kept until the pidfd says so (governed), or until the
            // adoption or timer in flight finds the process gone.
            _ => {
                entry.exit_status = Some(status);
                Vec::new()
            }
        }
    }

    /// Which entry an exit event is about. With the identity, exactly that
    /// one. With a pid and the time of the exit, the last holder of the pid
    /// seen alive before that time: every earlier holder had exited before
    /// it was born (a pid is reused only once free), and a later holder was
    /// not yet seen. With a pid alone, the oldest holder without a status
    /// (events arrive in the order they happened). Neither for a process
    /// seen before events were last lost: its own exit may have been lost,
    /// and then this one is a later holder's (one ffrtmp never saw).
    fn exit_owner(&self, pid: u32, start_time: Option<u64>, time_ns: Option<u64>) -> Option<ProcessId> {
        let unreported = |id: &ProcessId| self.entries.get(id).is_some_and(|e| e.exit_status.is_none());
        if let Some(start_time) = start_time {
            return Some(ProcessId { pid, start_time }).filter(unreported);
        }
        let holders = self
            .entries
            .iter()
            .filter(|(id, e)| id.pid == pid && e.seen_ns >= self.last_loss_ns);
        match time_ns {
            Some(at) => holders
                .filter(|(_, e)| e.seen_ns < at)
                .map(|(id, _)| *id)
                .max_by_key(|id| id.start_time)
                .filter(unreported),
            None => holders
                .map(|(id, _)| *id)
                .filter(unreported)
                .min_by_key(|id| id.start_time),
        }
    }

    /// The pidfd of governed `id` became readable; `status` is what it (or
    /// the zombie's `/proc/<pid>/stat`) could tell.
    pub fn pidfd_exit(&mut self, id: ProcessId, status: Option<i32>) -> Vec<Action<J>> {
        let Some(entry) = self.entries.get_mut(&id) else {
            return Vec::new();
        };
        if !matches!(entry.phase, Phase::Governed(_)) {
            return Vec::new();
        }
        // The pidfd knows the identity exactly; the source's report is the
        // fallback (before 6.15 a reaped process's pidfd cannot tell).
        let status = status.or(entry.exit_status);
        let Phase::Governed(job) = std::mem::replace(&mut entry.phase, Phase::Waiting) else {
            unreachable!("matched above")
        };
        if status.is_none() && self.source_reports_status {
            entry.phase = Phase::AwaitingStatus(job);
            return vec![Action::Timer {
                after: EXIT_STATUS_GRACE,
                timer: Timer::ExitStatus(id),
            }];
        }
        self.entries.remove(&id);
        vec![Action::Finish { id, job, status }]
    }

    /// A timer fired.
    pub fn timer(&mut self, timer: Timer) -> Vec<Action<J>> {
        match timer {
            Timer::MinRuntime(id) => self.due(id, |phase| matches!(phase, Phase::Waiting), 0),
            Timer::Retry { id, attempt } => self.due(
                id,
                |phase| matches!(phase, Phase::Retrying { attempt: a } if *a == attempt),
                attempt,
            ),
            Timer::RetryCheck {
                pid,
                start_time,
                exec_ns,
                attempt,
            } => vec![self.check(pid, start_time, exec_ns, attempt, false)],
            Timer::ExitStatus(id) => match self.entries.get(&id).map(|e| &e.phase) {
                Some(Phase::AwaitingStatus(_)) => {
                    let Phase::AwaitingStatus(job) = self.entries.remove(&id).expect("just seen").phase else {
                        unreachable!("matched above")
                    };
                    vec![Action::Finish { id, job, status: None }]
                }
                _ => Vec::new(),
            },
            Timer::Rescan => {
                self.rescan_pending = false;
                vec![Action::Scan("retry")]
            }
        }
    }

    /// Start adoption attempt `attempt` of `id` if it is in the phase the
    /// timer was set for.
    fn due(&mut self, id: ProcessId, expected: impl Fn(&Phase<J>) -> bool, attempt: u32) -> Vec<Action<J>> {
        let Some(entry) = self.entries.get_mut(&id).filter(|e| expected(&e.phase)) else {
            return Vec::new();
        };
        entry.phase = Phase::Adopting;
        // The adoption reads the process again (pidfd, identity): one that
        // exited meanwhile comes back as gone.
        let (candidate, announce) = (entry.candidate.clone(), !entry.announced);
        vec![self.adopt_action(candidate, attempt, announce)]
    }

    /// A `/proc` scan finished: every running target it found.
    pub fn scanned(&mut self, trigger: &'static str, result: Result<ScanResult, String>) -> Vec<Action<J>> {
        let ScanResult { found, failed } = match result {
            Ok(scan) => scan,
            Err(error) => {
                let mut out = vec![Action::Note(Note::ScanFailed { trigger, error })];
                self.rescan_later(&mut out);
                return out;
            }
        };
        // Rejections and failures of processes the scan no longer sees are over.
        let present: std::collections::HashSet<ProcessId> = found.iter().map(Found::id).collect();
        self.entries
            .retain(|id, e| !matches!(e.phase, Phase::Rejected | Phase::GaveUp) || present.contains(id));
        let mut out = Vec::new();
        let mut new = 0;
        for f in found {
            let id = f.id();
            match self.entries.get_mut(&id) {
                // A read of this pid may adopt it: it reports what it did.
                None if self.fused.contains_key(&id) => {}
                None => {
                    new += 1;
                    self.consider(f, None, &mut out);
                }
                // Given up on: a new series of attempts.
                Some(entry) if matches!(entry.phase, Phase::GaveUp) => {
                    new += 1;
                    entry.phase = Phase::Adopting;
                    let (candidate, announce) = (entry.candidate.clone(), !entry.announced);
                    out.push(self.adopt_action(candidate, 0, announce));
                }
                Some(_) => {}
            }
        }
        out.insert(0, Action::Note(Note::Reconciled { trigger, found: new }));
        if !failed.is_empty() {
            out.push(Action::Note(Note::ScanIncomplete { trigger, failed }));
            self.rescan_later(&mut out);
        }
        out
    }

    /// Events were lost (noticed at `now_ns`, CLOCK_MONOTONIC): look for
    /// what they would have shown.
    pub fn lost(&mut self, now_ns: u64) -> Vec<Action<J>> {
        self.last_loss_ns = self.last_loss_ns.max(now_ns);
        vec![Action::Scan("loss")]
    }

    /// New rules (a configuration reload): running jobs get their new
    /// limits, and every running target is decided on again.
    pub fn reload(&mut self, rules: Arc<Rules>, retry: RetryConfig) -> Vec<Action<J>> {
        self.rules = rules;
        self.retry = retry;
        let mut out = Vec::new();
        let governed: Vec<ProcessId> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.phase, Phase::Governed(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in governed {
            let command = &self.entries[&id].candidate.command;
            let new = self.rules.limits_for(command).clone();
            self.set_limits(id, new, &mut out);
        }
        // Filters may have changed.
        self.entries.retain(|_, e| !matches!(e.phase, Phase::Rejected));
        out.push(Action::Scan("reload"));
        out
    }

    /// Ask for `new` limits on governed `id` if they differ from its own.
    fn set_limits(&mut self, id: ProcessId, new: Limits, out: &mut Vec<Action<J>>) {
        let Some(Phase::Governed(job)) = self.entries.get_mut(&id).map(|e| &mut e.phase) else {
            return;
        };
        if job.limits == new {
            return;
        }
        let old = std::mem::replace(&mut job.limits, new.clone());
        out.push(Action::UpdateLimits { id, old, new });
    }

    /// Stopping: jobs still waiting for their exit status are finished now,
    /// without it.
    pub fn stop(&mut self) -> Vec<Action<J>> {
        let waiting: Vec<ProcessId> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.phase, Phase::AwaitingStatus(_)))
            .map(|(id, _)| *id)
            .collect();
        waiting
            .into_iter()
            .filter_map(|id| match self.entries.remove(&id)?.phase {
                Phase::AwaitingStatus(job) => Some(Action::Finish { id, job, status: None }),
                _ => None,
            })
            .collect()
    }

    fn rescan_later(&mut self, out: &mut Vec<Action<J>>) {
        if !std::mem::replace(&mut self.rescan_pending, true) {
            out.push(Action::Timer {
                after: RESCAN_AFTER_GIVING_UP,
                timer: Timer::Rescan,
            });
        }
    }
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
