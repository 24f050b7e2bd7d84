//! The blocking half of the daemon: everything that reads `/proc`, looks up
//! users or writes cgroup files runs here, on tokio's blocking pool, so a
//! slow `memory.max` write or name-service lookup never stalls events.

use std::time::SystemTime;

use anyhow::{Context, bail};

use super::filter::{self, ProcessFacts, Rejected, SystemEnv};
use super::rules::Rules;
use super::state::StateJob;
use crate::cgroup::{CgroupError, ExistingJob, Governor, JobCgroup, JobId, LimitOutcome, Limits};
use crate::events::scan::Candidate;
use crate::job::{self as lifecycle, Created, Finish};
use crate::process::identity::{ProcessInfo, descendants_of};
use crate::process::nice::{NiceError, renice_all_threads};
use crate::process::{PidFd, ProcError, ProcessId};
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

/// What one adoption attempt came to.
pub enum Adopted {
    /// Governed: the process is in its cgroup with these limits.
    Governed { cgroup: JobCgroup, pidfd: PidFd },
    /// A filter said no.
    Filtered(Rejected),
    /// The process exited (or its pid was reused) before it could be
    /// governed: nothing failed, there is just nothing left to govern.
    Gone,
    /// It failed; `transient` failures are worth a retry.
    Failed { error: anyhow::Error, transient: bool },
}

/// Filters, identity check, job cgroup, move, nice. The first attempt
/// announces itself (`Attaching to PID …`) once the filters have passed.
pub fn adopt(governor: &Governor, rules: &Rules, candidate: &Candidate, job_id: &JobId, first: bool) -> Adopted {
    // Without filters there is nothing to read: keep the hot path short.
    if rules.checks_process_for(&candidate.command) {
        let facts = match ProcessFacts::read(&candidate.info) {
            Ok(facts) => facts,
            Err(ProcError::NotFound { .. } | ProcError::Zombie { .. }) => return Adopted::Gone,
            Err(e) => {
                return Adopted::Failed {
                    error: anyhow::Error::new(e).context("reading the process"),
                    transient: false,
                };
            }
        };
        if let Err(rejected) = filter::check(rules.filters_for(&candidate.command), &facts, &SystemEnv) {
            return Adopted::Filtered(rejected);
        }
    }
    if first {
        let pid = candidate.info.id.pid;
        tracing::info!("Attaching to PID {pid} ({}) as job {job_id}", candidate.command);
    }
    match govern(governor, candidate, job_id, rules.limits_for(&candidate.command)) {
        Ok((cgroup, pidfd)) => Adopted::Governed { cgroup, pidfd },
        Err(error) if is_gone(&error) => Adopted::Gone,
        Err(error) => {
            let transient = is_transient(&error);
            Adopted::Failed { error, transient }
        }
    }
}

fn govern(
    governor: &Governor,
    candidate: &Candidate,
    job_id: &JobId,
    limits: &Limits,
) -> anyhow::Result<(JobCgroup, PidFd)> {
    let id = candidate.info.id;
    let pidfd = PidFd::open(id.pid).with_context(|| format!("pidfd_open({})", id.pid))?;
    if ProcessInfo::read(id.pid)?.id != id {
        return Err(ProcError::Replaced { pid: id.pid }.into());
    }
    let mut cgroup = match lifecycle::create(governor, job_id, limits, false)? {
        Created::Job(cg) => cg,
        Created::Failed { error, .. } => bail!("creating its cgroup: {error}"),
    };
    if let Err(e) = cgroup.add_process(id.pid) {
        cgroup.discard();
        return Err(anyhow::Error::new(e).context("moving it into its cgroup"));
    }
    // Children it forked before the move stayed behind (later ones are born
    // inside): they belong to the same job.
    let mut moved = vec![id.pid];
    for child in descendants_of(id.pid) {
        match cgroup.add_process(child) {
            Ok(()) => moved.push(child),
            Err(e) if e.io().raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => tracing::warn!("PID {}: child {child} not moved: {e}", id.pid),
        }
    }
    if let Some(outcome) = renice(id.pid, &moved, limits) {
        cgroup.record(outcome);
    }
    Ok((cgroup, pidfd))
}

/// Nice every thread of `pids` (the job's main process first).
fn renice(main: u32, pids: &[u32], limits: &Limits) -> Option<LimitOutcome> {
    let nice = limits.nice?;
    let errors: Vec<String> = pids
        .iter()
        .filter_map(|&pid| match renice_all_threads(pid, nice.get()) {
            // A child that exited meanwhile needs no nice value.
            Err(NiceError::Proc(ProcError::NotFound { .. })) if pid != main => None,
            other => other.err().map(|e| e.to_string()),
        })
        .collect();
    let error = (!errors.is_empty()).then(|| errors.join("; "));
    Some(lifecycle::nice_outcome(nice.get(), error))
}

/// The process is no longer there: it exited (ESRCH from pidfd_open or a
/// cgroup.procs write, /proc gone) or its pid now names another process.
fn is_gone(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<ProcError>() {
            return matches!(
                e,
                ProcError::NotFound { .. } | ProcError::Zombie { .. } | ProcError::Replaced { .. }
            );
        }
        errno(cause) == Some(libc::ESRCH)
    })
}

fn errno(cause: &(dyn std::error::Error + 'static)) -> Option<i32> {
    if let Some(e) = cause.downcast_ref::<std::io::Error>() {
        e.raw_os_error()
    } else if let Some(e) = cause.downcast_ref::<crate::cgroup::fs::FsError>() {
        e.io().raw_os_error()
    } else if let Some(CgroupError::Fs(e)) = cause.downcast_ref::<CgroupError>() {
        e.io().raw_os_error()
    } else {
        None
    }
}

/// A failure that may go away by itself: the kernel was busy or short of
/// memory, or a call was interrupted. A process that is gone, a permission
/// or a bad value will fail the same way again.
fn is_transient(error: &anyhow::Error) -> bool {
    const TRANSIENT: [i32; 4] = [libc::EBUSY, libc::EAGAIN, libc::EINTR, libc::ENOMEM];
    error
        .chain()
        .any(|cause| errno(cause).is_some_and(|n| TRANSIENT.contains(&n)))
}

/// Apply new limits to a running job (reload): cgroup files, then nice.
pub fn update_limits(
    writer: &crate::cgroup::LimitWriter,
    main: u32,
    pids: &[u32],
    old: Option<&Limits>,
    new: &Limits,
) -> Vec<LimitOutcome> {
    let mut outcomes = writer.update(old, new);
    if old.is_none_or(|old| old.nice != new.nice)
        && let Some(outcome) = renice(main, pids, new)
    {
        outcomes.push(outcome);
    }
    outcomes
}

/// A job of an earlier daemon, taken over.
pub struct Reattached {
    pub id: ProcessId,
    pub job_id: JobId,
    pub command: String,
    pub cgroup: JobCgroup,
    pub pidfd: PidFd,
    pub attached: SystemTime,
    pub limits: Limits,
    pub outcomes: Vec<LimitOutcome>,
}

/// What became of the job cgroups found under the root at start.
#[derive(Default)]
pub struct Takeover {
    pub reattached: Vec<Reattached>,
    /// Empty job cgroups of an earlier daemon, removed.
    pub removed: Vec<String>,
    /// Populated watch jobs that could not be taken over, with why.
    pub failed: Vec<(String, String)>,
}

/// Take over what an earlier daemon left: every populated watch job
/// cgroup under the root is governed again (the tree is the truth; the
/// state file adds the identity it recorded), empty ones are removed. Jobs
/// of `ffrtmp run`/`attach` under the same root are left alone.
pub fn take_over(governor: &Governor, rules: &Rules, state: &[StateJob]) -> Takeover {
    let mut out = Takeover::default();
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
        match reattach(job, recorded, rules) {
            Ok(r) => out.reattached.push(r),
            Err(e) => out.failed.push((job_id.to_string(), format!("{e:#}"))),
        }
    }
    out
}

fn reattach(job: ExistingJob, recorded: Option<&StateJob>, rules: &Rules) -> anyhow::Result<Reattached> {
    let pids = job.pids();
    let info = main_process(&job.id, &pids, recorded).context("no process of the job could be read")?;
    let main = info.id.pid;
    // Pin the identity: the pid read from cgroup.procs may have exited and
    // been reused by a stranger since; with the pidfd open, the same process
    // must still be there and still in the job.
    let pidfd = PidFd::open(main).with_context(|| format!("pidfd_open({main})"))?;
    if ProcessInfo::read(main)?.id != info.id || !job.pids().contains(&main) {
        return Err(ProcError::Replaced { pid: main }.into());
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
    let cgroup = job.into_cgroup();
    let outcomes = update_limits(&cgroup.limit_writer(), main, &pids, None, &limits);
    Ok(Reattached {
        id: info.id,
        job_id: cgroup.id().clone(),
        command,
        cgroup,
        pidfd,
        attached,
        limits,
        outcomes,
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

    #[test]
    fn transient_errors() {
        let busy = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EBUSY)).context("moving");
        assert!(is_transient(&busy));
        let gone = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ESRCH)).context("moving");
        assert!(!is_transient(&gone));
        assert!(!is_transient(&anyhow::anyhow!("pid 5 was reused")));
        assert!(is_gone(&gone));
        assert!(is_gone(
            &anyhow::Error::new(ProcError::Replaced { pid: 5 }).context("adopting")
        ));
        assert!(!is_gone(&busy));
    }
}
