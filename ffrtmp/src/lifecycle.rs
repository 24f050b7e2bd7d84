//! The job lifecycle shared by every front door (run, attach, watch):
//! create the job cgroup (honouring strict mode), record each limit's
//! outcome, and at the end read usage, remove the cgroup and build the result.

use std::time::SystemTime;

use crate::cgroup::governor::LimitOutcome;
use crate::cgroup::limits::LimitKind;
use crate::cgroup::{CgroupError, CgroupRoot, Delegation, Governor, Hierarchy, JobCgroup, JobId, Limits};
use crate::report::{CgroupReport, Ending, JobRecord, JobResult, LeftCgroup, Mode};

/// Why a job's lifecycle could not start.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("detecting the cgroup hierarchy: {0}")]
    Hierarchy(#[source] crate::cgroup::hierarchy::DetectError),
    /// The job id names a cgroup that holds processes.
    #[error(transparent)]
    InUse(CgroupError),
    #[error("--strict: creating the cgroup for job {job}: {source}")]
    StrictCreate {
        job: JobId,
        #[source]
        source: CgroupError,
    },
    #[error("--strict: limits not applied, nothing left behind: {failed}")]
    StrictLimits { failed: String },
}

/// The governor for `root`: detect the hierarchy (logged once) and tidy
/// leftovers of earlier jobs. Every front door starts with this.
pub fn governor(root: CgroupRoot) -> Result<Governor, JobError> {
    let (governor, housekeeping) = governor_for_run(root)?;
    housekeeping.done(&governor);
    Ok(governor)
}

/// [`governor`] with the work a new job does not need left for later: the
/// hierarchy's log line and the removal of earlier jobs' leftovers. `run`
/// does them once its child is started ([`Housekeeping::done`]): the
/// collection reads every job directory under the root (a shared root
/// holds the daemon's jobs too), and the first log line reads the time
/// zone; neither decides where or how the child starts. A leftover is at
/// least 30 s old, so it is never the new job.
pub fn governor_for_run(root: CgroupRoot) -> Result<(Governor, Housekeeping), JobError> {
    let hierarchy = Hierarchy::detect().map_err(JobError::Hierarchy)?;
    let line = hierarchy.describe();
    Ok((Governor::new(hierarchy, root), Housekeeping { line: Some(line) }))
}

/// What [`governor_for_run`] left for later.
#[must_use = "the hierarchy line and the garbage collection are still to do"]
pub struct Housekeeping {
    line: Option<String>,
}

impl Housekeeping {
    /// Log the hierarchy's line, once.
    pub fn log_hierarchy(&mut self) {
        if let Some(line) = self.line.take() {
            tracing::info!("{line}");
        }
    }

    /// Log the hierarchy's line if that is still to do, and remove earlier
    /// jobs' leftovers.
    pub fn done(mut self, governor: &Governor) {
        self.log_hierarchy();
        governor.collect_garbage();
    }
}

/// [`governor`] for a daemon in a delegated cgroup that systemd may have
/// started in the leaf `leaf` of it (see [`crate::cgroup::delegated_place`]).
pub fn delegated_governor(root: CgroupRoot, leaf: Option<&str>) -> Result<Governor, JobError> {
    let mut hierarchy = Hierarchy::detect().map_err(JobError::Hierarchy)?;
    tracing::info!("{}", hierarchy.describe());
    let mut root = root;
    if let Some(leaf) = leaf {
        let (delegated, how) = crate::cgroup::delegated_place(hierarchy, leaf);
        hierarchy = delegated;
        root = root_for(root, &how, leaf);
    }
    let governor = Governor::new(hierarchy, root);
    governor.collect_garbage();
    Ok(governor)
}

/// Where a delegated daemon's jobs go, logged: a relative root beside the
/// daemon when systemd started it in its leaf; otherwise outside its cgroup
/// (the default absolute root), so that every later start in that cgroup
/// still works while jobs run.
fn root_for(root: CgroupRoot, how: &Delegation, leaf: &str) -> CgroupRoot {
    match how {
        Delegation::InLeaf(dir) => {
            tracing::info!("Delegated cgroup: started in the leaf {}", dir.display());
            root
        }
        Delegation::NotInLeaf(dir) if matches!(root, CgroupRoot::Relative(_)) => {
            let fallback = CgroupRoot::default();
            tracing::warn!(
                "Delegated cgroup: started in {} itself, not in its leaf {leaf} (DelegateSubgroup={leaf} needs systemd 254+): jobs go to {fallback} instead of the relative root {root}, so that a restart while they run can start in this cgroup (one that hands controllers to jobs below it may hold no process)",
                dir.display()
            );
            fallback
        }
        Delegation::NotInLeaf(dir) => {
            tracing::info!(
                "Delegated cgroup: the daemon runs in {}; jobs go to {root}",
                dir.display()
            );
            root
        }
        Delegation::NotNeeded => {
            tracing::info!("Delegated cgroup: cgroup v1 has no leaf rule; the daemon stays where it is");
            root
        }
    }
}

/// A job cgroup, or why there is none (best effort goes on without one).
pub enum Created {
    Job(JobCgroup),
    Failed { error: String, outcomes: Vec<LimitOutcome> },
}

impl Created {
    pub fn job(&self) -> Option<&JobCgroup> {
        match self {
            Created::Job(j) => Some(j),
            Created::Failed { .. } => None,
        }
    }

    pub fn record(&mut self, outcome: LimitOutcome) {
        log_outcome(&outcome);
        match self {
            Created::Job(j) => j.record(outcome),
            Created::Failed { outcomes, .. } => outcomes.push(outcome),
        }
    }

    pub fn outcomes(&self) -> Vec<LimitOutcome> {
        match self {
            Created::Job(j) => j.outcomes().to_vec(),
            Created::Failed { outcomes, .. } => outcomes.clone(),
        }
    }

    /// Remove what was created (on a fatal error after creation).
    pub fn discard(self) {
        if let Created::Job(j) = self {
            j.discard();
        }
    }
}

/// Create the job cgroup with its limits. A job id in use is always refused;
/// with `strict`, any failure removes what was created and is an error.
pub fn create(governor: &Governor, job: &JobId, limits: &Limits, strict: bool) -> Result<Created, JobError> {
    match create_logged(governor, job, limits) {
        Ok(cg) => {
            if strict && !cg.all_applied() {
                let failed = cg
                    .outcomes()
                    .iter()
                    .filter_map(|o| o.error.as_ref().map(|e| format!("{}: {e}", o.limit)))
                    .collect::<Vec<_>>()
                    .join("; ");
                cg.discard();
                return Err(JobError::StrictLimits { failed });
            }
            Ok(Created::Job(cg))
        }
        Err(e @ CgroupError::InUse { .. }) => Err(JobError::InUse(e)),
        Err(e) if strict => Err(JobError::StrictCreate {
            job: job.clone(),
            source: e,
        }),
        Err(e) => {
            let error = e.to_string();
            tracing::warn!("cgroup for job {job} not created, the workload runs ungoverned: {error}");
            let net = limits
                .net_limits()
                .into_iter()
                .map(|(kind, rate)| (kind, rate.to_string()));
            let outcomes = limits
                .settings(governor.version())
                .into_iter()
                .map(|s| (s.kind, s.value))
                .chain(net)
                .map(|(limit, value)| LimitOutcome {
                    limit,
                    value,
                    files: Vec::new(),
                    error: Some(format!("no job cgroup: {error}")),
                    note: None,
                })
                .collect();
            Ok(Created::Failed { error, outcomes })
        }
    }
}

/// Create the job cgroup with its limits and log each limit's outcome.
pub fn create_logged(governor: &Governor, job: &JobId, limits: &Limits) -> Result<JobCgroup, CgroupError> {
    let cg = governor.create_job(job, limits)?;
    log_outcomes(&cg);
    Ok(cg)
}

/// One `applied …` (or `NOT applied …`) line per limit of the job.
pub fn log_outcomes(cg: &JobCgroup) {
    for o in cg.outcomes() {
        log_outcome(o);
    }
}

pub fn nice_outcome(nice: i8, error: Option<String>) -> LimitOutcome {
    LimitOutcome {
        limit: LimitKind::Nice,
        value: nice.to_string(),
        files: Vec::new(),
        error,
        note: None,
    }
}

/// The outcome of `oom_score_adj` for the process `pid`.
pub fn oom_score_adj_outcome(pid: u32, adj: i16, error: Option<String>) -> LimitOutcome {
    LimitOutcome {
        limit: LimitKind::OomScoreAdj,
        value: adj.to_string(),
        files: vec![crate::process::oom::path(pid)],
        error,
        note: None,
    }
}

/// Set `oom_score_adj` of the job's processes (`main` and the descendants
/// moved with it); a descendant gone meanwhile is no error.
pub fn set_oom_score_adj(main: u32, pids: &[u32], adj: crate::cgroup::limits::OomScoreAdj) -> LimitOutcome {
    let errors: Vec<String> = pids
        .iter()
        .filter_map(|&pid| match crate::process::oom::set(pid, adj.get()) {
            Ok(()) => None,
            Err(e) if pid != main && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("writing {}: {e}", crate::process::oom::path(pid).display())),
        })
        .collect();
    oom_score_adj_outcome(main, adj.get(), (!errors.is_empty()).then(|| errors.join("; ")))
}

fn log_outcome(o: &LimitOutcome) {
    let files = o
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match &o.error {
        None if files.is_empty() => tracing::info!("applied {}={}", o.limit, o.value),
        None => tracing::info!("applied {}={} ({files})", o.limit, o.value),
        Some(e) => tracing::warn!("NOT applied {}={}: {e}", o.limit, o.value),
    }
}

/// Everything known when a job ends.
pub struct Finish {
    pub job_id: JobId,
    pub pid: u32,
    pub mode: Mode,
    pub started: SystemTime,
    pub ending: Ending,
    pub joined_by: Option<&'static str>,
    pub process_seconds: Option<f64>,
}

/// Read usage, remove the cgroup (unless detached), build the result.
pub fn finish(created: Created, f: Finish) -> JobResult {
    let ended = SystemTime::now();
    let outcomes = created.outcomes();
    let mut cgroup = CgroupReport {
        joined_by: f.joined_by,
        ..CgroupReport::default()
    };
    let (usage, cgroup_created) = match created {
        Created::Job(job) => {
            let usage = job.usage();
            cgroup.paths = job.dirs().iter().map(|p| p.to_path_buf()).collect();
            if f.ending == Ending::Detached {
                cgroup.left = cgroup
                    .paths
                    .iter()
                    .map(|p| LeftCgroup {
                        path: p.clone(),
                        reason: "detached: the process keeps running under its limits".into(),
                    })
                    .collect();
            } else {
                let removal = job.remove();
                for (dir, why) in &removal.left {
                    tracing::warn!(
                        "left cgroup {} in place: {why}; it is removed at a later start once empty",
                        dir.display()
                    );
                }
                cgroup.record_removal(removal);
            }
            (usage, true)
        }
        Created::Failed { error, .. } => {
            cgroup.error = Some(error);
            (Default::default(), false)
        }
    };
    JobResult::new(JobRecord {
        job_id: f.job_id.to_string(),
        pid: f.pid,
        mode: f.mode,
        started: f.started,
        ended,
        ending: f.ending,
        outcomes,
        usage,
        cgroup,
        cgroup_created,
        process_seconds: f.process_seconds,
    })
}

/// Why a pinned process could not be moved into its job.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// It exited before (or while) it was moved: nothing to govern.
    #[error("pid {pid} exited before it could be moved")]
    Exited { pid: u32 },
    /// Its pid now names another process, which the write may have moved:
    /// the job holds a stranger (left in place, reported, never signalled).
    #[error(
        "pid {pid} exited and its number was reused while it was being moved; the process now holding it may be in job {job}"
    )]
    Replaced { pid: u32, job: JobId },
    #[error("moving pid {pid} into its job cgroup: {source}")]
    Write {
        pid: u32,
        #[source]
        source: crate::cgroup::governor::PartialMove,
    },
}

impl MoveError {
    /// The OS error behind the failure, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            MoveError::Write { source, .. } => source.io().raw_os_error(),
            _ => None,
        }
    }
}

/// What [`move_in`] moved.
#[derive(Debug, Default)]
pub struct Moved {
    /// The process and every descendant moved (the process first).
    pub pids: Vec<u32>,
    /// Descendants that could not be moved, with why.
    pub missed: Vec<(u32, String)>,
    /// When the process's own move began and ended.
    pub span: MoveSpan,
}

/// The write(s) of the process into its job, CLOCK_MONOTONIC ns: what the
/// kernel's migration costs (the global lock's wait included), apart from
/// ffrtmp's own work before it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MoveSpan {
    pub started_ns: u64,
    pub finished_ns: u64,
}

impl MoveSpan {
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.finished_ns.saturating_sub(self.started_ns))
    }
}

/// Move a pinned process into `job`, in every hierarchy the job spans;
/// with `descendants`, also the children it forked before (later ones are
/// born inside). Used by `attach` and by the watch daemon alike.
///
/// The pidfd says whether the process still runs right before the write;
/// after it, a pid reused in between is reported ([`MoveError::Replaced`])
/// instead of governed by mistake (see [`moved_whom`]).
///
/// `from`: the target's cgroups when they were read just before (where a
/// move cut short puts it back); `None` reads them here.
pub fn move_in(
    job: &JobCgroup,
    target: &crate::process::Pinned,
    descendants: bool,
    from: Option<&crate::cgroup::ProcCgroups>,
) -> Result<Moved, MoveError> {
    let id = target.id();
    let pid = id.pid;
    let exited = |pidfd: &crate::process::PidFd| pidfd.has_exited().unwrap_or(false);
    if exited(&target.pidfd) {
        return Err(MoveError::Exited { pid });
    }
    let started_ns = crate::process::monotonic_ns();
    job.add_process_from(pid, from)
        .map_err(|source| match source.io().raw_os_error() {
            Some(libc::ESRCH) => MoveError::Exited { pid },
            _ => MoveError::Write { pid, source },
        })?;
    let span = MoveSpan {
        started_ns,
        finished_ns: crate::process::monotonic_ns(),
    };
    if moved_whom(target) == Whom::Stranger {
        return Err(MoveError::Replaced {
            pid,
            job: job.id().clone(),
        });
    }
    let mut moved = Moved {
        pids: vec![pid],
        missed: Vec::new(),
        span,
    };
    if descendants {
        for child in crate::process::identity::descendants_of(pid) {
            match job.add_process(child) {
                Ok(()) => moved.pids.push(child),
                Err(e) if e.io().raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => moved.missed.push((child, e.to_string())),
            }
        }
    }
    Ok(moved)
}

/// Whom a write of the pinned pid into `cgroup.procs` moved.
#[derive(Debug, PartialEq, Eq)]
enum Whom {
    Target,
    Stranger,
}

/// Decide whom the write just done moved. The write has succeeded, so the
/// process it moved is in the job whatever this returns: an answer that
/// cannot be had (no file descriptor left, say) must not turn into "not
/// moved", or the job would hold a process nobody tracks.
///
/// If the pidfd still reports the target running, its pid could not have
/// been reused before the write: the target was moved. Only if it has
/// exited since is the identity read again (a reuse needs an exit first).
fn moved_whom(target: &crate::process::Pinned) -> Whom {
    let id = target.id();
    match target.pidfd.has_exited() {
        Ok(false) => return Whom::Target,
        Ok(true) => {}
        Err(e) => tracing::debug!("pidfd of pid {} after the move: {e}; reading its identity", id.pid),
    }
    match crate::process::ProcessInfo::read(id.pid) {
        Ok(now) if now.id == id => Whom::Target,
        Ok(_) => Whom::Stranger,
        // Exited right after the move: it is in the job; its end is watched.
        Err(crate::process::ProcError::NotFound { .. }) => Whom::Target,
        Err(e) => {
            tracing::warn!(
                "pid {} exited right after it was moved and its identity could not be read again ({e}); counting it as moved",
                id.pid
            );
            Whom::Target
        }
    }
}

pub fn io_class_outcome(class: crate::cgroup::limits::IoClass, error: Option<String>) -> LimitOutcome {
    LimitOutcome {
        limit: LimitKind::IoClass,
        value: class.to_string(),
        files: Vec::new(),
        error,
        note: None,
    }
}

/// Set the IO class of every thread of `pids` (the job's main process
/// first), like [`renice`]; a descendant that exited meanwhile needs none.
pub fn set_io_class(main: u32, pids: &[u32], class: crate::cgroup::limits::IoClass) -> LimitOutcome {
    use crate::process::ioprio::{IoprioError, set_all_threads};
    let errors: Vec<String> = pids
        .iter()
        .filter_map(|&pid| match set_all_threads(pid, class) {
            Ok(n) => {
                tracing::debug!("set IO class {class} on {n} thread(s) of pid {pid}");
                None
            }
            Err(IoprioError::Proc(crate::process::ProcError::NotFound { .. })) if pid != main => None,
            Err(e) => Some(e.to_string()),
        })
        .collect();
    io_class_outcome(class, (!errors.is_empty()).then(|| errors.join("; ")))
}

/// Renice every thread of `pids` (the job's main process first) and say
/// how it went; a descendant that exited meanwhile needs no nice value.
pub fn renice(main: u32, pids: &[u32], nice: crate::cgroup::limits::Nice) -> LimitOutcome {
    use crate::process::nice::{NiceError, renice_all_threads};
    let errors: Vec<String> = pids
        .iter()
        .filter_map(|&pid| match renice_all_threads(pid, nice.get()) {
            Ok(n) => {
                tracing::debug!("reniced {n} thread(s) of pid {pid} to {}", nice.get());
                None
            }
            Err(NiceError::Proc(crate::process::ProcError::NotFound { .. })) if pid != main => None,
            Err(e) => Some(e.to_string()),
        })
        .collect();
    nice_outcome(nice.get(), (!errors.is_empty()).then(|| errors.join("; ")))
}
