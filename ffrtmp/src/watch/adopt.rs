//! The blocking half of the daemon: everything that reads `/proc`, looks up
//! users or writes cgroup files runs here, on tokio's blocking pool, so a
//! slow `memory.max` write or name-service lookup never stalls events —
//! except [`inspect_and_adopt`] of an eBPF exec without filters or network
//! limits, which the daemon runs on its loop (docs/architecture.md, "The
//! hot path").

use std::time::SystemTime;

use super::filter::{self, ProcessFacts, SystemEnv};
use super::rules::Rules;
use super::state::StateJob;
use super::tracker::{self, Adopted, Checked, Found, FusedCheck, ScanResult};
use crate::cgroup::{CgroupError, ExistingJob, Governor, JobCgroup, JobId, LimitOutcome, Limits, ProcCgroups};
use crate::events::scan::{self, Candidate, CheckError, Targets};
use crate::lifecycle::{self, Created, Finish, MoveError};
use crate::process::identity::ProcessInfo;
use crate::process::{PidFd, Pinned, ProcError, ProcessId};
use crate::report::{Ending, JobResult, Mode};

/// The prefix of every job id the watch daemon gives; a restarted daemon
/// takes over only job cgroups named so (or listed in its state file), never
/// those of `ffrtmp run` or `attach`.
pub const WATCH_JOB_PREFIX: &str = "auto-";

/// The job id of a watched process: `auto-<command>-<pid>`.
pub fn job_id_for(command: &str, pid: u32) -> JobId {
    JobId::parse(&format!("{WATCH_JOB_PREFIX}{command}-{pid}"))
        .or_else(|_| JobId::parse(&format!("{WATCH_JOB_PREFIX}{pid}")))
        .expect("auto-<pid> is a valid job id")
}

pub use crate::process::monotonic_ns;

/// A target as read now: its age, and when it was last seen alive.
fn found(candidate: Candidate) -> Found {
    let age = candidate.info.id.age();
    Found {
        candidate,
        age,
        seen_ns: monotonic_ns(),
    }
}

/// Why ffrtmp leaves a target alone, if it does: it never governs itself,
/// its own children, or a process already in an ffrtmp job (such as the
/// child of `ffrtmp run`).
fn skip_reason(governor: &Governor, candidate: &Candidate) -> Option<&'static str> {
    skip_reason_if(candidate, || governor.in_job_cgroup(candidate.info.id.pid))
}

/// [`skip_reason`], `in_job` saying whether the process is in a job.
fn skip_reason_if(candidate: &Candidate, in_job: impl FnOnce() -> bool) -> Option<&'static str> {
    if scan::is_self_or_descendant(&candidate.info) {
        Some("ffrtmp itself or its child")
    } else if in_job() {
        Some("already in an ffrtmp job cgroup")
    } else {
        None
    }
}

/// Read an exec'd process (on the blocking pool: `cmdline` takes the
/// target's mmap lock, which a process in reclaim can hold for long).
pub fn inspect(pid: u32, targets: &Targets, governor: &Governor) -> Checked {
    match scan::check(pid, targets) {
        Ok(None) => Checked::NotTarget,
        Err(CheckError::Gone { .. }) => Checked::Gone,
        Err(e) => Checked::Failed { error: e.to_string() },
        Ok(Some(candidate)) => match skip_reason(governor, &candidate) {
            Some(why) => Checked::Skipped { pid, why },
            None => Checked::Target(found(candidate)),
        },
    }
}

/// [`inspect`], and when it finds a target the tracker let in at once
/// ([`tracker::adopt_at_once`]), [`adopt`] in the same piece of work: the
/// path from an exec event to the move, with no hand-off when the daemon
/// runs it on its loop. The caller replaces the spare a job took
/// ([`Governor::refill_spares`]) afterwards, off that path.
///
/// The event gave the process's identity, so it is pinned first: one pidfd
/// and one `stat` read both check the identity and give comm, state and
/// parent, where [`inspect`] then [`adopt`] read `comm` and `stat` before
/// the pin and `stat` again in it (this is the hot path of every adoption).
/// `argv0`: argv[0] as the exec event carried it, which spares the read of
/// `/proc/<pid>/cmdline` (it waits on the target's mmap lock, busy while
/// the new image maps its libraries).
pub fn inspect_and_adopt(
    governor: &Governor,
    rules: &Rules,
    pid: u32,
    start_time: Option<u64>,
    argv0: Option<&str>,
) -> FusedCheck<Governed> {
    // Without an identity nothing is adopted at once (see adopt_at_once).
    let Some(start_time) = start_time else {
        return FusedCheck::Checked(inspect(pid, &rules.targets, governor));
    };
    let (found, pinned) = match inspect_pinned(pid, start_time, argv0, &rules.targets, governor) {
        Ok(read) => read,
        Err(checked) => return FusedCheck::Checked(checked),
    };
    let Some((job_id, limits)) = tracker::adopt_at_once(rules, Some(start_time), &found) else {
        return FusedCheck::Checked(Checked::Target(found));
    };
    // The old tool's line before `Attaching to PID …` (the tracker logs it
    // for the reads it adopts from itself).
    tracing::info!("Discovered 1 new process(es)");
    let outcome = adopt_pinned(governor, rules, &found.candidate, pinned, &job_id, &limits, true);
    FusedCheck::Adopted {
        found,
        job_id,
        limits: Box::new(limits),
        outcome,
    }
}

/// A pinned process, and its cgroups when they were read after the pin.
struct PinnedAt {
    pinned: Pinned,
    cgroups: Option<ProcCgroups>,
}

/// The checks of [`inspect`] for the process `pid` started at
/// `start_time`, pinned first. `Err` is the answer when it is no target;
/// the cgroups read to see whether it is in a job already come along, for
/// the move (they are where a move cut short puts it back).
fn inspect_pinned(
    pid: u32,
    start_time: u64,
    argv0: Option<&str>,
    targets: &Targets,
    governor: &Governor,
) -> Result<(Found, PinnedAt), Checked> {
    let pinned = match crate::process::pin(pid, Some(ProcessId { pid, start_time })) {
        Ok(pinned) => pinned,
        // Replaced: the exec'd process has exited and its pid is reused.
        Err(ProcError::NotFound { .. } | ProcError::Zombie { .. } | ProcError::Replaced { .. }) => {
            return Err(Checked::Gone);
        }
        Err(e) => return Err(Checked::Failed { error: e.to_string() }),
    };
    if pinned.info.is_kernel_thread() || !targets.comm_text_matches(&pinned.info.comm) {
        return Err(Checked::NotTarget);
    }
    // The process pinned is the one that exec'd: the event's argv[0] is its own.
    let read;
    let argv0 = match argv0 {
        Some(a) => Some(a),
        None => {
            read = match scan::argv0(pid) {
                Ok(read) => read,
                Err(CheckError::Gone { .. }) => return Err(Checked::Gone),
                Err(e) => return Err(Checked::Failed { error: e.to_string() }),
            };
            read.as_deref()
        }
    };
    let command = argv0.and_then(|a| targets.argv0_match(a)).map(str::to_owned);
    let Some(command) = command else {
        return Err(Checked::NotTarget);
    };
    let candidate = Candidate {
        info: pinned.info.clone(),
        command,
    };
    let mut cgroups = None;
    let in_job = || {
        cgroups = ProcCgroups::read(pid);
        cgroups.as_ref().is_some_and(|c| governor.job_in(c).is_some())
    };
    match skip_reason_if(&candidate, in_job) {
        Some(why) => Err(Checked::Skipped { pid, why }),
        None => Ok((found(candidate), PinnedAt { pinned, cgroups })),
    }
}

/// Scan `/proc` for every running target ffrtmp may govern.
pub fn scan_targets(targets: &Targets, governor: &Governor) -> Result<ScanResult, String> {
    let scan = scan::scan(targets).map_err(|e| e.to_string())?;
    Ok(ScanResult {
        found: scan
            .found
            .into_iter()
            .filter(|c| skip_reason(governor, c).is_none())
            .map(found)
            .collect(),
        failed: scan.failed.into_iter().map(|(pid, e)| (pid, e.to_string())).collect(),
    })
}

/// A governed process, as an adoption hands it to the daemon.
pub struct Governed {
    pub cgroup: JobCgroup,
    pub pidfd: PidFd,
    /// The move of the process itself, for the latency split.
    pub moved: lifecycle::MoveSpan,
}

/// Why an adoption failed, classified for the retry decision.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("reading the process: {0}")]
    Read(#[source] ProcError),
    #[error("creating its cgroup: {0}")]
    Create(#[source] CgroupError),
    #[error(transparent)]
    Move(#[from] MoveError),
}

impl AdoptError {
    /// The process is no longer there (exited, or its pid reused).
    fn is_gone(&self) -> bool {
        matches!(
            self,
            AdoptError::Read(ProcError::NotFound { .. } | ProcError::Zombie { .. } | ProcError::Replaced { .. })
                | AdoptError::Move(MoveError::Exited { .. })
        )
    }

    /// A failure that may go away by itself: the kernel was busy or short
    /// of memory or file descriptors, or a call was interrupted. A
    /// permission or a bad value fails the same way again.
    fn is_transient(&self) -> bool {
        const TRANSIENT: [i32; 6] = [
            libc::EBUSY,
            libc::EAGAIN,
            libc::EINTR,
            libc::ENOMEM,
            libc::EMFILE,
            libc::ENFILE,
        ];
        let errno = match self {
            AdoptError::Read(ProcError::Pidfd { source, .. } | ProcError::Read { source, .. }) => source.raw_os_error(),
            AdoptError::Move(e) => e.errno(),
            AdoptError::Create(CgroupError::Fs(e)) => e.io().raw_os_error(),
            _ => None,
        };
        errno.is_some_and(|n| TRANSIENT.contains(&n))
    }
}

/// Identity (pin), filters, job cgroup, move, nice. The first attempt
/// announces itself (`Attaching to PID …`) once the process is pinned and
/// the filters have passed.
pub fn adopt(
    governor: &Governor,
    rules: &Rules,
    candidate: &Candidate,
    job_id: &JobId,
    limits: &Limits,
    announce: bool,
) -> Adopted<Governed> {
    match crate::process::pin(candidate.info.id.pid, Some(candidate.info.id)) {
        Ok(pinned) => {
            let pinned = PinnedAt { pinned, cgroups: None };
            let adopted = adopt_pinned(governor, rules, candidate, pinned, job_id, limits, announce);
            // The spare this job may have taken is replaced last, once the
            // process has everything it is given, whether or not it worked.
            governor.refill_spares();
            adopted
        }
        Err(e) => {
            let error = AdoptError::Read(e);
            if error.is_gone() {
                Adopted::Gone
            } else {
                failed(error, false)
            }
        }
    }
}

/// [`adopt`] once the process is pinned.
fn adopt_pinned(
    governor: &Governor,
    rules: &Rules,
    candidate: &Candidate,
    pinned: PinnedAt,
    job_id: &JobId,
    limits: &Limits,
    announce: bool,
) -> Adopted<Governed> {
    // Without filters there is nothing to read: keep the hot path short.
    if rules.checks_process_for(&candidate.command) {
        let facts = match ProcessFacts::read(&candidate.info) {
            Ok(facts) => facts,
            Err(ProcError::NotFound { .. } | ProcError::Zombie { .. }) => return Adopted::Gone,
            Err(e) => return failed(AdoptError::Read(e), false),
        };
        if let Err(rejected) = filter::check(rules.filters_for(&candidate.command), &facts, &SystemEnv) {
            return Adopted::Filtered(rejected);
        }
    }
    if announce {
        let pid = candidate.info.id.pid;
        tracing::info!("Attaching to PID {pid} ({}) as job {job_id}", candidate.command);
    }
    match govern(governor, pinned, job_id, limits) {
        Ok(governed) => Adopted::Governed {
            payload: governed,
            attached: SystemTime::now(),
        },
        Err(error) if error.is_gone() => Adopted::Gone,
        Err(error) => failed(error, true),
    }
}

/// A failed attempt; `announced`: it got as far as `Attaching to PID …`.
fn failed<J>(error: AdoptError, announced: bool) -> Adopted<J> {
    Adopted::Failed {
        transient: error.is_transient(),
        error: error.to_string(),
        announced,
    }
}

fn govern(governor: &Governor, target: PinnedAt, job_id: &JobId, limits: &Limits) -> Result<Governed, AdoptError> {
    let PinnedAt { pinned, cgroups } = target;
    let mut cgroup = governor.create_job(job_id, limits).map_err(AdoptError::Create)?;
    cgroup.note_adoption();
    // Children it forked before the move stayed behind (later ones are
    // born inside): they belong to the same job.
    let moved = lifecycle::move_in(&cgroup, &pinned, true, cgroups.as_ref());
    // The limits' lines come after the move, in the same place among the
    // old tool's lines (after `Attaching to PID …`, which stays before the
    // move so a crash in it still shows what was being attached): writing
    // them is not on the path to the move.
    lifecycle::log_outcomes(&cgroup);
    let moved = match moved {
        Ok(moved) => moved,
        Err(e @ MoveError::Replaced { .. }) => {
            // The job holds a stranger now: leave it (never move a process
            // ffrtmp does not know back and forth), say so.
            tracing::error!("{e}; the job cgroup is left in place");
            return Err(e.into());
        }
        Err(e) => {
            cgroup.discard();
            return Err(e.into());
        }
    };
    for (child, why) in &moved.missed {
        tracing::warn!("PID {}: child {child} not moved: {why}", pinned.id().pid);
    }
    if let Some(nice) = limits.nice {
        cgroup.record(lifecycle::renice(pinned.id().pid, &moved.pids, nice));
    }
    if let Some(adj) = limits.oom_score_adj {
        cgroup.record(lifecycle::set_oom_score_adj(pinned.id().pid, &moved.pids, adj));
    }
    if let Some(class) = limits.io_class {
        cgroup.record(lifecycle::set_io_class(pinned.id().pid, &moved.pids, class));
    }
    Ok(Governed {
        cgroup,
        pidfd: pinned.pidfd,
        moved: moved.span,
    })
}

/// Apply new limits to a running job (reload): cgroup files, then nice,
/// oom_score_adj and the IO class.
pub fn update_limits(
    writer: &crate::cgroup::LimitWriter,
    main: u32,
    pids: &[u32],
    old: Option<&Limits>,
    new: &Limits,
) -> Vec<LimitOutcome> {
    let mut outcomes = writer.update(old, new);
    if old.is_none_or(|old| old.nice != new.nice)
        && let Some(nice) = new.nice
    {
        outcomes.push(lifecycle::renice(main, pids, nice));
    }
    if old.is_none_or(|old| old.oom_score_adj != new.oom_score_adj)
        && let Some(adj) = new.oom_score_adj
    {
        outcomes.push(lifecycle::set_oom_score_adj(main, pids, adj));
    }
    if old.is_none_or(|old| old.io_class != new.io_class)
        && let Some(class) = new.io_class
    {
        outcomes.push(lifecycle::set_io_class(main, pids, class));
    }
    outcomes
}

/// A job of an earlier daemon, taken over.
pub struct Reattached {
    /// Its main process and command.
    pub found: Found,
    /// The job; its outcomes are those of writing the current limits.
    pub cgroup: JobCgroup,
    pub pidfd: PidFd,
    pub attached: SystemTime,
    pub limits: Limits,
}

/// What became of the job cgroups found under the root at start.
#[derive(Default)]
pub struct Takeover {
    pub reattached: Vec<Reattached>,
    /// Empty job cgroups of an earlier daemon, removed.
    pub removed: Vec<String>,
    /// Populated watch jobs that could not be taken over, with why.
    pub failed: Vec<(String, String)>,
    /// Moves into a job that an earlier run did not finish (it crashed
    /// between the hierarchies of a v1 job), and how completing them went.
    pub completed: Vec<(String, crate::cgroup::existing::Completion)>,
    /// Job directories an earlier daemon made but could not mark, marked now.
    pub claimed: Vec<std::path::PathBuf>,
}

/// Take over what an earlier daemon left: every populated watch job
/// cgroup under the root is governed again (the tree is the truth; the
/// state file adds the identity it recorded), empty ones are removed. Jobs
/// of `ffrtmp run`/`attach` under the same root are left alone.
pub fn take_over(governor: &Governor, rules: &Rules, state: &[StateJob]) -> Takeover {
    // An earlier daemon killed between a job's mkdir and its mark left the
    // directory unmarked; `auto-` is this daemon's alone under its root.
    let mut out = Takeover {
        claimed: governor.claim_unmarked(WATCH_JOB_PREFIX),
        ..Takeover::default()
    };
    for job in governor.existing_jobs() {
        let recorded = state.iter().find(|s| s.job_id == job.id.as_str());
        if recorded.is_none() && !job.id.as_str().starts_with(WATCH_JOB_PREFIX) {
            continue;
        }
        let job_id = job.id.clone();
        if !job.is_populated() {
            let removal = job.into_cgroup().remove();
            if removal.left.is_empty() {
                out.removed.push(job_id.to_string());
            }
            continue;
        }
        let completions = job.complete_moves();
        match reattach(job, recorded, rules, &completions) {
            Ok(r) => out.reattached.push(r),
            Err(e) => out.failed.push((job_id.to_string(), e.to_string())),
        }
        out.completed
            .extend(completions.into_iter().map(|c| (job_id.to_string(), c)));
    }
    out
}

/// Why a job of an earlier daemon could not be taken over.
#[derive(Debug, thiserror::Error)]
pub enum ReattachError {
    #[error("no process of the job could be read")]
    NoProcess,
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("PID {pid} left the job while it was being taken over")]
    Left { pid: u32 },
}

fn reattach(
    job: ExistingJob,
    recorded: Option<&StateJob>,
    rules: &Rules,
    completions: &[crate::cgroup::existing::Completion],
) -> Result<Reattached, ReattachError> {
    let pids = job.pids();
    let info = main_process(&job.id, &pids, recorded).ok_or(ReattachError::NoProcess)?;
    let main = info.id.pid;
    // Pin the identity: the pid read from cgroup.procs may have exited and
    // been reused by a stranger since; with the pidfd open, the same process
    // must still be there and still in the job.
    let pidfd = match crate::process::pin(main, Some(info.id)) {
        Ok(pinned) => pinned.pidfd,
        // It exited meanwhile: taken over all the same, so that its end is
        // reported (at once) and its cgroup removed.
        Err(ProcError::Zombie { .. }) => PidFd::open(main).map_err(|source| ProcError::Pidfd { pid: main, source })?,
        Err(e) => return Err(e.into()),
    };
    if !job.pids().contains(&main) {
        return Err(ReattachError::Left { pid: main });
    }
    // The process is in our job cgroup, so it is the job's (PID reuse cannot
    // put a stranger there); the state file, when it has the identity, must
    // agree, else the job's own process was replaced by one of its children.
    if let Some(r) = recorded.filter(|r| r.pid == main && r.start_time != info.id.start_time) {
        tracing::warn!(
            "job {}: PID {main} started at {} now, not at {} as recorded; taking over the job's current process",
            job.id,
            info.id.start_time,
            r.start_time
        );
    }
    let command = recorded
        .map(|r| r.command.clone())
        .or_else(|| command_from_job_id(job.id.as_str(), main))
        .unwrap_or_else(|| info.comm.clone());
    let attached = recorded
        .map(StateJob::attached)
        .or_else(|| job.created())
        .unwrap_or_else(SystemTime::now);
    let limits = rules.limits_for(&command).clone();
    let mut cgroup = job.into_cgroup();
    for mut outcome in update_limits(&cgroup.limit_writer(), main, &pids, None, &limits) {
        // A limit written into a directory the main process could not be
        // moved into is not in effect for it.
        let outside = completions
            .iter()
            .filter(|c| c.pid == main)
            .find_map(|c| c.result.as_ref().err().map(|e| (c, e)))
            .filter(|(c, _)| outcome.files.iter().any(|f| f.starts_with(&c.dir)));
        if let (Some((c, e)), None) = (outside, &outcome.error) {
            outcome.error = Some(format!("not in effect: PID {main} is not in {} ({e})", c.dir.display()));
        }
        cgroup.record(outcome);
    }
    Ok(Reattached {
        found: found(Candidate { info, command }),
        cgroup,
        pidfd,
        attached,
        limits,
    })
}

/// The job's main process: the recorded pid if it is still in the job,
/// else the pid in the job id (`auto-<cmd>-<pid>`), else the lowest that is
/// alive.
fn main_process(job: &JobId, pids: &[u32], recorded: Option<&StateJob>) -> Option<ProcessInfo> {
    let alive = |pid: u32| pids.contains(&pid).then(|| ProcessInfo::read(pid).ok()).flatten();
    recorded
        .and_then(|r| alive(r.pid))
        .or_else(|| alive(job.as_str().rsplit('-').next()?.parse().ok()?))
        .or_else(|| {
            let mut sorted = pids.to_vec();
            sorted.sort_unstable();
            sorted.into_iter().find_map(alive)
        })
}

/// `auto-<cmd>-<pid>` → `<cmd>`.
fn command_from_job_id(job: &str, pid: u32) -> Option<String> {
    let rest = job.strip_prefix(WATCH_JOB_PREFIX)?;
    let cmd = rest.strip_suffix(&format!("-{pid}"))?;
    (!cmd.is_empty()).then(|| cmd.to_string())
}

/// A governed process that exited: usage, removal and its result.
pub struct Finished {
    pub id: ProcessId,
    pub job_id: JobId,
    pub command: String,
    pub ending: Ending,
    pub result: JobResult,
}

/// Usage, removal and the summary line of one exited process.
pub fn finish(
    id: ProcessId,
    job_id: JobId,
    command: String,
    cgroup: JobCgroup,
    attached: SystemTime,
    status: Option<i32>,
) -> Finished {
    let ending = status.map_or(Ending::ExitedUnknown, Ending::from_wait_status);
    let process_seconds = id.age().as_secs_f64();
    let result = lifecycle::finish(
        Created::Job(cgroup),
        Finish {
            job_id: job_id.clone(),
            pid: id.pid,
            mode: Mode::Watch,
            started: attached,
            ending,
            joined_by: Some("moved"),
            process_seconds: Some(process_seconds),
        },
    );
    Finished {
        id,
        job_id,
        command,
        ending,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        assert_eq!(job_id_for("ffmpeg", 42).as_str(), "auto-ffmpeg-42");
        assert_eq!(job_id_for("weird name", 42).as_str(), "auto-42");
        assert_eq!(
            command_from_job_id("auto-gst-launch-1.0-7", 7).as_deref(),
            Some("gst-launch-1.0")
        );
        assert_eq!(command_from_job_id("auto-7", 7), None);
        assert_eq!(command_from_job_id("cam-1", 7), None);
    }

    /// A governor on a fake cgroup2 mount (an empty directory): no process
    /// is in a job there.
    fn fake_governor(dir: &std::path::Path) -> Governor {
        let mount = crate::cgroup::hierarchy::Mount {
            mount_point: dir.to_owned(),
            own_cgroup: "/".into(),
        };
        Governor::new(
            crate::cgroup::Hierarchy::Unified(mount),
            crate::cgroup::CgroupRoot::parse("ffrtmp-test").unwrap(),
        )
    }

    /// Wait until `pid` shows the comm and argv[0] of its exec: `spawn`
    /// returns once the exec has closed its close-on-exec files, and the
    /// kernel sets comm and the arguments after that (the daemon reads a
    /// process only after `sched_process_exec`, which fires later still).
    fn wait_exec(pid: u32, comm: &str, argv0: &str) {
        wait_for(&format!("{pid} to exec {comm} as {argv0}"), || {
            ProcessInfo::read(pid).is_ok_and(|i| i.comm == comm)
                && scan::argv0(pid).ok().flatten().as_deref() == Some(argv0)
        });
    }

    /// Wait until `pid` is a zombie (killed, not reaped yet).
    fn wait_zombie(pid: u32) {
        wait_for(&format!("{pid} to be a zombie"), || {
            ProcessInfo::read(pid).is_ok_and(|i| i.is_zombie())
        });
    }

    /// Poll `done` every 2 ms, for 5 s at most.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// The fused read pins the event's identity before anything else: the
    /// wrong start time, a zombie or a reaped pid is gone, comm and argv[0]
    /// must both match, and a process that passes reaches the skip reasons
    /// (a child of this test is "ffrtmp itself or its child"). Reads `/proc`
    /// only.
    #[test]
    fn the_fused_read_pins_the_identity_of_the_event() {
        use std::os::unix::process::CommandExt;
        let fake = tempfile::tempdir().unwrap();
        let governor = fake_governor(fake.path());
        let sleep = Targets::new(["sleep".to_string()]);
        let read_with = |pid, start_time, argv0, targets: &Targets| {
            inspect_pinned(pid, start_time, argv0, targets, &governor).map(|_| ())
        };
        let read = |pid, start_time, targets: &Targets| read_with(pid, start_time, None, targets);

        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        wait_exec(pid, "sleep", "sleep");
        let start_time = ProcessInfo::read(pid).unwrap().id.start_time;
        assert_eq!(
            read(pid, start_time, &sleep),
            Err(Checked::Skipped {
                pid,
                why: "ffrtmp itself or its child"
            })
        );
        assert_eq!(
            read(pid, start_time + 1, &sleep),
            Err(Checked::Gone),
            "another identity"
        );
        assert_eq!(
            read(pid, start_time, &Targets::new(["ffmpeg".to_string()])),
            Err(Checked::NotTarget)
        );
        // comm `sleep` (the file exec'd), argv[0] `ffmpeg`: no target either way.
        let mut renamed = std::process::Command::new("sleep")
            .arg0("ffmpeg")
            .arg("30")
            .spawn()
            .unwrap();
        wait_exec(renamed.id(), "sleep", "ffmpeg");
        let (rpid, rstart) = (renamed.id(), ProcessInfo::read(renamed.id()).unwrap().id.start_time);
        assert_eq!(read(rpid, rstart, &sleep), Err(Checked::NotTarget));
        assert_eq!(
            read(rpid, rstart, &Targets::new(["ffmpeg".to_string()])),
            Err(Checked::NotTarget)
        );
        // The exec event's argv[0] stands in for /proc/<pid>/cmdline.
        let skipped = Err(Checked::Skipped {
            pid: rpid,
            why: "ffrtmp itself or its child",
        });
        assert_eq!(read_with(rpid, rstart, Some("/bin/sleep"), &sleep), skipped);
        assert_eq!(
            read_with(pid, start_time, Some("ffmpeg"), &sleep),
            Err(Checked::NotTarget)
        );
        renamed.kill().unwrap();
        renamed.wait().unwrap();
        child.kill().unwrap();
        wait_zombie(pid);
        assert_eq!(read(pid, start_time, &sleep), Err(Checked::Gone), "a zombie");
        child.wait().unwrap();
        assert_eq!(read(pid, start_time, &sleep), Err(Checked::Gone), "reaped");
    }

    /// A target that is no child of ours (orphaned: its shell exited) passes,
    /// pinned, and its cgroups come along for the move.
    #[test]
    fn the_fused_read_hands_a_target_and_its_cgroups_on() {
        let fake = tempfile::tempdir().unwrap();
        let governor = fake_governor(fake.path());
        let out = std::process::Command::new("sh")
            .args(["-c", "sleep 30 </dev/null >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        // `$!` is known once forked, maybe before the exec.
        wait_exec(pid, "sleep", "sleep");
        let start_time = ProcessInfo::read(pid).unwrap().id.start_time;
        let read = inspect_pinned(pid, start_time, None, &Targets::new(["sleep".to_string()]), &governor);
        // Ours to end (started above), by its pid.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let (found, target) = read.expect("an orphaned sleep is a target");
        assert_eq!(found.candidate.command, "sleep");
        assert_eq!(target.pinned.id(), ProcessId { pid, start_time });
        assert!(target.cgroups.is_some(), "its /proc/<pid>/cgroup was read");
    }

    #[test]
    fn transient_errors() {
        let io = |n| std::io::Error::from_raw_os_error(n);
        let pidfd = |n| AdoptError::Read(ProcError::Pidfd { pid: 5, source: io(n) });
        assert!(pidfd(libc::EMFILE).is_transient());
        assert!(pidfd(libc::ENFILE).is_transient());
        assert!(!pidfd(libc::EPERM).is_transient());
        let write = |n| {
            AdoptError::Move(MoveError::Write {
                pid: 5,
                source: crate::cgroup::governor::PartialMove {
                    moved: Vec::new(),
                    undo: Ok(()),
                    error: crate::cgroup::fs::FsError::Write {
                        path: "/x/cgroup.procs".into(),
                        value: "5".into(),
                        source: io(n),
                    },
                },
            })
        };
        assert!(write(libc::EBUSY).is_transient());
        assert!(!write(libc::EACCES).is_transient());
        let create = |n| {
            AdoptError::Create(CgroupError::Fs(crate::cgroup::fs::FsError::Create {
                path: "/x".into(),
                source: io(n),
            }))
        };
        assert!(create(libc::ENOMEM).is_transient());
        assert!(!create(libc::EACCES).is_transient());
        assert!(AdoptError::Read(ProcError::Replaced { pid: 5 }).is_gone());
        assert!(AdoptError::Move(MoveError::Exited { pid: 5 }).is_gone());
        assert!(!write(libc::EBUSY).is_gone());
    }
}
