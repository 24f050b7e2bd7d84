//! The job lifecycle shared by every front door (run, attach, watch):
//! create the job cgroup (honouring strict mode), record each limit's
//! outcome, and at the end read usage, remove the cgroup and build the result.

use std::time::SystemTime;

use anyhow::{Context, bail};

use crate::cgroup::job::LimitOutcome;
use crate::cgroup::limits::LimitKind;
use crate::cgroup::{CgroupRoot, Delegation, Governor, Hierarchy, JobCgroup, JobId, Limits};
use crate::report::{CgroupReport, Ending, JobRecord, JobResult, LeftCgroup, Mode};

/// The governor for `root`: detect the hierarchy (logged once) and tidy
/// leftovers of earlier jobs. Every front door starts with this.
pub fn governor(root: CgroupRoot) -> anyhow::Result<Governor> {
    delegated_governor(root, None)
}

/// [`governor`] for a daemon in a delegated cgroup that lives in the leaf
/// `leaf` of it (see [`crate::cgroup::enter_delegated_leaf`]).
pub fn delegated_governor(root: CgroupRoot, leaf: Option<&str>) -> anyhow::Result<Governor> {
    let mut hierarchy = Hierarchy::detect().context("detecting the cgroup hierarchy")?;
    tracing::info!("{}", hierarchy.describe());
    if let Some(leaf) = leaf {
        let (delegated, how) = crate::cgroup::enter_delegated_leaf(hierarchy, leaf)
            .context("moving into the leaf of the delegated cgroup")?;
        hierarchy = delegated;
        match how {
            Delegation::InLeaf(dir) => tracing::info!("Delegated cgroup: started in the leaf {}", dir.display()),
            Delegation::Moved(dir) => tracing::info!("Delegated cgroup: the daemon runs in {}", dir.display()),
            Delegation::NotNeeded => {
                tracing::info!("Delegated cgroup: cgroup v1 has no leaf rule; the daemon stays where it is")
            }
        }
    }
    let governor = Governor::new(hierarchy, root);
    governor.collect_garbage();
    Ok(governor)
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
pub fn create(governor: &Governor, job: &JobId, limits: &Limits, strict: bool) -> anyhow::Result<Created> {
    match governor.create_job(job, limits) {
        Ok(cg) => {
            for o in cg.outcomes() {
                log_outcome(o);
            }
            if strict && !cg.all_applied() {
                let failed = cg
                    .outcomes()
                    .iter()
                    .filter_map(|o| o.error.as_ref().map(|e| format!("{}: {e}", o.limit)))
                    .collect::<Vec<_>>()
                    .join("; ");
                cg.discard();
                bail!("--strict: limits not applied, nothing left behind: {failed}");
            }
            Ok(Created::Job(cg))
        }
        Err(e @ crate::cgroup::CgroupError::InUse { .. }) => Err(e.into()),
        Err(e) if strict => Err(anyhow::Error::new(e).context(format!("--strict: creating the cgroup for job {job}"))),
        Err(e) => {
            let error = e.to_string();
            tracing::warn!("cgroup for job {job} not created, the workload runs ungoverned: {error}");
            let outcomes = limits
                .settings(governor.version())
                .into_iter()
                .map(|s| LimitOutcome {
                    limit: s.kind,
                    value: s.value,
                    files: Vec::new(),
                    error: Some(format!("no job cgroup: {error}")),
                })
                .collect();
            Ok(Created::Failed { error, outcomes })
        }
    }
}

pub fn nice_outcome(nice: i8, error: Option<String>) -> LimitOutcome {
    LimitOutcome {
        limit: LimitKind::Nice,
        value: nice.to_string(),
        files: Vec::new(),
        error,
    }
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
