//! Job cgroups that already exist under the root: what a restarted daemon
//! re-adopts and `ffrtmp status` shows. The cgroup tree is the truth about
//! what is governed; the daemon's state file only adds what the tree cannot
//! hold (the process identity and when it was attached).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use super::files;
use super::fs;
use super::governor::{
    Governor, JOB_XATTR, JobCgroup, JobDir, LimitOutcome, UsageReader, apply, controller_dirs, get_xattr, is_populated,
};
use super::hierarchy::{Controller, Hierarchy};
use super::limits::{Limits, update_settings};
use super::names::JobId;

/// A job cgroup found under the root, in every hierarchy it spans.
#[derive(Debug)]
pub struct ExistingJob {
    pub id: JobId,
    dirs: Vec<JobDir>,
    version: super::Version,
}

/// A move into a job that an earlier run did not finish, completed (or not).
#[derive(Debug)]
pub struct Completion {
    pub pid: u32,
    /// The job's directory in the hierarchy the process was missing from.
    pub dir: PathBuf,
    pub controllers: Vec<Controller>,
    pub result: Result<(), String>,
}

impl ExistingJob {
    /// Processes in the job in any hierarchy, ascending. On cgroup v1 a job
    /// spans several hierarchies, and a crash between two writes can leave a
    /// process in some of them only: it is the job's all the same.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.members().into_iter().flat_map(|(_, pids)| pids).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Each hierarchy's directory of the job with the processes in it.
    pub fn members(&self) -> Vec<(&std::path::Path, Vec<u32>)> {
        self.dirs
            .iter()
            .map(|d| {
                let pids = fs::read_file(&d.dir.join(files::PROCS))
                    .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
                    .unwrap_or_default();
                (d.dir.as_path(), pids)
            })
            .collect()
    }

    /// Processes of the job missing from some hierarchy of it, with the
    /// directories they are missing from: what is not in effect for them.
    pub fn outside(&self) -> Vec<(u32, PathBuf, Vec<Controller>)> {
        let all = self.pids();
        let members = self.members();
        let mut out = Vec::new();
        for (d, (_, pids)) in self.dirs.iter().zip(&members) {
            for &pid in all.iter().filter(|p| !pids.contains(p)) {
                out.push((pid, d.dir.clone(), d.controllers.clone()));
            }
        }
        out
    }

    /// Finish the moves a crash cut short: every process of the job that is
    /// missing from one of its hierarchies is written there. A process that
    /// exited meanwhile needs nothing.
    pub fn complete_moves(&self) -> Vec<Completion> {
        self.outside()
            .into_iter()
            .filter_map(|(pid, dir, controllers)| {
                let result = match fs::write_file(&dir.join(files::PROCS), &pid.to_string()) {
                    Ok(()) => Ok(()),
                    Err(e) if e.io().raw_os_error() == Some(libc::ESRCH) => return None,
                    Err(e) => Err(e.to_string()),
                };
                Some(Completion {
                    pid,
                    dir,
                    controllers,
                    result,
                })
            })
            .collect()
    }

    pub fn is_populated(&self) -> bool {
        self.dirs
            .iter()
            .any(|d| matches!(is_populated(&d.dir, self.version), Ok(true)))
    }

    pub fn dirs(&self) -> Vec<&std::path::Path> {
        self.dirs.iter().map(|d| d.dir.as_path()).collect()
    }

    /// The directory of the hierarchy that has `controller`, if the job has one.
    pub fn dir_of(&self, controller: Controller) -> Option<&std::path::Path> {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&controller))
            .map(|d| d.dir.as_path())
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
            net: crate::net::SharedShaper::default(),
        }
    }
}

impl Governor {
    /// Mark the directories directly under the root whose names start with
    /// `prefix` and that carry no job mark: jobs whose creator was killed
    /// between its `mkdir` and setting the mark (a `mkdir` can wait on the
    /// kernel's cgroup mutex for milliseconds behind another migration, and a
    /// pending SIGKILL strikes the moment it returns). Only for a prefix the
    /// caller owns under this root — the watch daemon's `auto-`, reserved
    /// for it and held by the one daemon the root's lock admits. Returns the
    /// directories marked.
    pub fn claim_unmarked(&self, prefix: &str) -> Vec<PathBuf> {
        let mut claimed = Vec::new();
        for (_, root, _) in self.all_root_dirs() {
            let Ok(entries) = std::fs::read_dir(&root) else {
                continue;
            };
            for entry in entries.flatten() {
                let dir = entry.path();
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if !name.starts_with(prefix)
                    || JobId::parse(&name).is_err()
                    || !entry.file_type().is_ok_and(|t| t.is_dir())
                    || get_xattr(&dir, JOB_XATTR).is_some()
                {
                    continue;
                }
                match super::governor::set_xattr(&dir, JOB_XATTR, &name) {
                    Ok(()) => claimed.push(dir),
                    Err(e) => tracing::warn!("could not mark {} as an ffrtmp job: {e}", dir.display()),
                }
            }
        }
        claimed
    }

    /// Every job cgroup (a directory carrying the `user.ffrtmp.job` mark)
    /// directly under the root, grouped by job id across hierarchies.
    pub fn existing_jobs(&self) -> Vec<ExistingJob> {
        let mut jobs: BTreeMap<String, Vec<JobDir>> = BTreeMap::new();
        for (mount, root, controllers) in self.all_root_dirs() {
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
                    mount: mount.clone(),
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

    /// The root in every hierarchy a job can span: (mount point, root
    /// directory, controllers).
    fn all_root_dirs(&self) -> Vec<(PathBuf, PathBuf, Vec<Controller>)> {
        match self.hierarchy() {
            Hierarchy::Unified(m) => vec![(
                m.mount_point.clone(),
                m.dir(&self.root().resolve(m)),
                Controller::ALL.to_vec(),
            )],
            _ => self
                .v1_mounts(&Controller::ALL)
                .0
                .into_iter()
                .chain(self.net_mount())
                .map(|(m, controllers)| (m.mount_point.clone(), m.dir(&self.root().resolve(&m)), controllers))
                .collect(),
        }
    }
}

/// Where a delegated daemon runs (see [`delegated_place`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delegation {
    /// systemd started it in the leaf (`DelegateSubgroup=`, systemd 254+):
    /// a relative root sits beside it, in the delegated cgroup.
    InLeaf(PathBuf),
    /// It was started in the delegated cgroup itself (this directory):
    /// systemd before 254 ignores `DelegateSubgroup=`. A job root inside
    /// that cgroup would make every later start in it fail (see
    /// [`delegated_place`]), so the daemon stays there and its jobs go
    /// elsewhere.
    NotInLeaf(PathBuf),
    /// cgroup v1: no leaf rule, nothing to do.
    NotNeeded,
}

/// Under systemd delegation (`Delegate=yes`) on cgroup v2, a job root inside
/// the delegated cgroup needs that cgroup to hand controllers down, and a
/// cgroup that does may hold no process (the no-internal-processes rule):
/// the daemon must live in a leaf child, `leaf`. Only systemd can start it
/// there (`DelegateSubgroup=`, systemd 254+). If systemd started it in the
/// delegated cgroup itself, moving into the leaf would work once — but the
/// next start (a restart, an upgrade, `Restart=on-failure`) is put in the
/// delegated cgroup again, which the kernel then refuses (EBUSY; systemd's
/// `219/CGROUP`) for as long as any job runs. So it is left where it is
/// ([`Delegation::NotInLeaf`]) and the caller keeps the jobs out of it.
/// For [`Delegation::InLeaf`] the returned hierarchy resolves relative
/// roots against the delegated cgroup, not the leaf.
pub fn delegated_place(hierarchy: Hierarchy, leaf: &str) -> (Hierarchy, Delegation) {
    let Hierarchy::Unified(mut mount) = hierarchy else {
        return (hierarchy, Delegation::NotNeeded);
    };
    if mount.own_cgroup.file_name().is_some_and(|n| n == leaf)
        && let Some(delegated) = mount.own_cgroup.parent().map(PathBuf::from)
    {
        let dir = mount.dir(&mount.own_cgroup);
        mount.own_cgroup = delegated;
        return (Hierarchy::Unified(mount), Delegation::InLeaf(dir));
    }
    let dir = mount.dir(&mount.own_cgroup);
    (Hierarchy::Unified(mount), Delegation::NotInLeaf(dir))
}

impl JobCgroup {
    /// A handle that changes this job's limits while it runs (reload),
    /// usable on another thread while the job stays with its owner.
    pub fn limit_writer(&self) -> LimitWriter {
        LimitWriter {
            version: self.version,
            dirs: controller_dirs(&self.dirs),
            net: self.net.clone(),
        }
    }
}

/// Writes a live job's limits.
#[derive(Debug, Clone)]
pub struct LimitWriter {
    version: super::Version,
    dirs: Vec<(Vec<Controller>, PathBuf)>,
    net: crate::net::SharedShaper,
}

impl LimitWriter {
    /// Change the limits from `old` to `new` (see [`update_settings`]):
    /// each write's outcome. Nice is the caller's (it is per thread).
    pub fn update(&self, old: Option<&Limits>, new: &Limits) -> Vec<LimitOutcome> {
        let dir_for = |c: Controller| {
            self.dirs
                .iter()
                .find(|(controllers, _)| controllers.contains(&c))
                .map(|(_, dir)| dir.clone())
                .ok_or_else(|| {
                    format!("the job has no {c} cgroup (it was created without that controller; applies to new jobs)")
                })
        };
        let mut outcomes = apply(update_settings(old, new, self.version), dir_for);
        // Only a change is applied (a rewritten rate restarts the bucket).
        let net_changed = old.is_none_or(|o| o.net_limits() != new.net_limits());
        if net_changed {
            // v2: the one job directory serves, also for a job made
            // without a network limit (its dirs then do not list Net).
            let net_dir = match (self.version, self.dirs.first()) {
                (super::Version::V2, Some((_, dir))) => Ok(dir.clone()),
                _ => dir_for(Controller::Net),
            };
            outcomes.extend(self.net.apply(net_dir, new, old));
        }
        outcomes
    }
}
