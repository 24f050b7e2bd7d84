//! Job cgroups that already exist under the root: what a restarted daemon
//! re-adopts and `ffrtmp status` shows. The cgroup tree is the truth about
//! what is governed; the daemon's state file only adds what the tree cannot
//! hold (the process identity and when it was attached).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use super::fs;
use super::hierarchy::{Controller, Hierarchy};
use super::job::{
    Governor, JOB_XATTR, JobCgroup, JobDir, LimitOutcome, UsageReader, controller_dirs, get_xattr, is_populated,
};
use super::limits::{Limits, update_settings};
use super::names::JobId;

/// A job cgroup found under the root, in every hierarchy it spans.
#[derive(Debug)]
pub struct ExistingJob {
    pub id: JobId,
    dirs: Vec<JobDir>,
    version: super::Version,
}

impl ExistingJob {
    /// Processes in the job (from the first hierarchy's `cgroup.procs`).
    pub fn pids(&self) -> Vec<u32> {
        fs::read_file(&self.dirs[0].dir.join("cgroup.procs"))
            .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }

    pub fn is_populated(&self) -> bool {
        self.dirs
            .iter()
            .any(|d| matches!(is_populated(&d.dir, self.version), Ok(true)))
    }

    pub fn dirs(&self) -> Vec<&std::path::Path> {
        self.dirs.iter().map(|d| d.dir.as_path()).collect()
    }

    /// When the job dir was made (its birth/modification time): a job
    /// re-adopted without a state file counts its age from here.
    pub fn created(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.dirs[0].dir)
            .and_then(|m| m.created().or_else(|_| m.modified()))
            .ok()
    }

    pub fn usage_reader(&self) -> UsageReader {
        UsageReader::for_dirs(self.version, controller_dirs(&self.dirs))
    }

    /// A control file's content (for `status`), from the hierarchy that has
    /// `controller`.
    pub fn read(&self, controller: Controller, file: &str) -> Option<String> {
        let dir = self
            .dirs
            .iter()
            .find(|d| d.controllers.contains(&controller))
            .map(|d| &d.dir)?;
        fs::read_optional(&dir.join(file)).ok().flatten()
    }

    /// Take the job over: the returned cgroup is removed like any other
    /// when its process exits.
    pub fn into_cgroup(self) -> JobCgroup {
        JobCgroup {
            id: self.id,
            version: self.version,
            created: self.dirs.iter().map(|d| d.dir.clone()).collect(),
            dirs: self.dirs,
            outcomes: Vec::new(),
        }
    }
}

impl Governor {
    /// Every job cgroup (a directory carrying the `user.ffrtmp.job` mark)
    /// directly under the root, grouped by job id across hierarchies.
    pub fn existing_jobs(&self) -> Vec<ExistingJob> {
        let mut jobs: BTreeMap<String, Vec<JobDir>> = BTreeMap::new();
        for (root, controllers) in self.all_root_dirs() {
            let Ok(entries) = std::fs::read_dir(&root) else {
                continue;
            };
            for entry in entries.flatten() {
                let dir = entry.path();
                if !entry.file_type().is_ok_and(|t| t.is_dir()) || get_xattr(&dir, JOB_XATTR).is_none() {
                    continue;
                }
                let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                    continue;
                };
                jobs.entry(name).or_default().push(JobDir {
                    controllers: controllers.clone(),
                    dir,
                    leftover: false,
                });
            }
        }
        jobs.into_iter()
            .filter_map(|(name, dirs)| {
                let id = JobId::parse(&name).ok()?;
                Some(ExistingJob {
                    id,
                    dirs,
                    version: self.version(),
                })
            })
            .collect()
    }

    /// The root in every hierarchy a job can span, with its controllers.
    fn all_root_dirs(&self) -> Vec<(PathBuf, Vec<Controller>)> {
        match self.hierarchy() {
            Hierarchy::Unified(m) => vec![(m.dir(&self.root().resolve(m)), Controller::ALL.to_vec())],
            _ => self
                .v1_mounts(&Controller::ALL)
                .0
                .into_iter()
                .map(|(m, controllers)| (m.dir(&self.root().resolve(&m)), controllers))
                .collect(),
        }
    }
}

/// Where a delegated daemon runs (see [`enter_delegated_leaf`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delegation {
    /// systemd started it in the leaf already (`DelegateSubgroup=`).
    InLeaf(PathBuf),
    /// It moved itself into the leaf.
    Moved(PathBuf),
    /// cgroup v1: no leaf rule, nothing moved.
    NotNeeded,
}

/// Under systemd delegation (`Delegate=yes`) on cgroup v2, the delegated
/// cgroup must hold no process so it can hand controllers to the job root
/// beside the daemon (the no-internal-processes rule): the daemon lives in
/// its leaf child `leaf`. Either systemd put it there (`DelegateSubgroup=`,
/// systemd 254+: the only way a restart works while jobs run), or it moves
/// itself there now. Either way the returned hierarchy resolves relative
/// roots against the delegated cgroup, not the leaf.
pub fn enter_delegated_leaf(hierarchy: Hierarchy, leaf: &str) -> Result<(Hierarchy, Delegation), super::CgroupError> {
    let Hierarchy::Unified(mut mount) = hierarchy else {
        return Ok((hierarchy, Delegation::NotNeeded));
    };
    if mount.own_cgroup.file_name().is_some_and(|n| n == leaf)
        && let Some(delegated) = mount.own_cgroup.parent().map(PathBuf::from)
    {
        let dir = mount.dir(&mount.own_cgroup);
        mount.own_cgroup = delegated;
        return Ok((Hierarchy::Unified(mount), Delegation::InLeaf(dir)));
    }
    let dir = mount.dir(&mount.own_cgroup).join(leaf);
    fs::create_dir(&dir)?;
    // "0" moves the writing process (all its threads).
    fs::write_file(&dir.join("cgroup.procs"), "0")?;
    Ok((Hierarchy::Unified(mount), Delegation::Moved(dir)))
}

impl JobCgroup {
    /// A handle that changes this job's limits while it runs (reload),
    /// usable on another thread while the job stays with its owner.
    pub fn limit_writer(&self) -> LimitWriter {
        LimitWriter {
            version: self.version,
            dirs: controller_dirs(&self.dirs),
        }
    }
}

/// Writes a live job's limits.
#[derive(Debug, Clone)]
pub struct LimitWriter {
    version: super::Version,
    dirs: Vec<(Vec<Controller>, PathBuf)>,
}

impl LimitWriter {
    /// Change the limits from `old` to `new` (see [`update_settings`]):
    /// each write's outcome. Nice is the caller's (it is per thread).
    pub fn update(&self, old: Option<&Limits>, new: &Limits) -> Vec<LimitOutcome> {
        let mut outcomes = Vec::new();
        for setting in update_settings(old, new, self.version) {
            let mut files = Vec::new();
            let mut error = None;
            for write in &setting.writes {
                let Some((_, dir)) = self.dirs.iter().find(|(c, _)| c.contains(&write.controller)) else {
                    error = Some(format!(
                        "the job has no {} cgroup (it was created without that controller; applies to new jobs)",
                        write.controller.v1_name()
                    ));
                    break;
                };
                let path = dir.join(write.file);
                files.push(path.clone());
                if let Err(e) = fs::write_file(&path, &write.value) {
                    error = Some(e.to_string());
                    break;
                }
            }
            outcomes.push(LimitOutcome {
                limit: setting.kind,
                value: setting.value,
                files,
                error,
            });
        }
        outcomes
    }
}
