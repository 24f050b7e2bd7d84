//! The governor's cgroup side: create a job cgroup, write the limits into it
//! while it is still empty, let processes join, read usage, remove it.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::cpuset;
use super::files;
use super::fs::{self, FsError};
use super::hierarchy::{Controller, Hierarchy, Mount};
use super::limits::{FileWrite, LimitKind, Limits, Version, WriteMode};
use super::names::{CgroupRoot, JobId};
use super::spare::{self, Plan, PlanKey};

/// Extended attribute that marks a cgroup directory as an ffrtmp job, so
/// garbage collection never touches cgroups that are not ours even when
/// `--cgroup-root` points somewhere shared. Its value is the job id.
pub const JOB_XATTR: &str = "user.ffrtmp.job";

/// Empty, marked job cgroups younger than this are left alone by garbage
/// collection: another ffrtmp may be between creating one and moving its
/// process in.
const GC_MIN_AGE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("job id {job} is already in use: {} holds processes", dir.display())]
    InUse { job: JobId, dir: PathBuf },
    #[error(
        "cannot enable +{controller} in {}: that cgroup holds processes, and cgroup v2 lets only a cgroup without processes hand controllers to its children (EBUSY); choose a --cgroup-root below a cgroup that holds no processes",
        file.display()
    )]
    InternalProcesses { controller: &'static str, file: PathBuf },
    #[error(
        "the {controller} controller is not available in {} (its parent does not delegate it: add +{controller} to the parent's cgroup.subtree_control)",
        dir.display()
    )]
    ControllerUnavailable { controller: &'static str, dir: PathBuf },
    #[error("the {controller} controller is not mounted on this host")]
    NotMounted { controller: Controller },
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// A move into a job that failed. On cgroup v1 the process may already
/// have been written into the directories `moved` (of earlier
/// hierarchies); `undo` says whether it was moved back out of them.
#[derive(Debug, thiserror::Error)]
#[error("{error}{}", match undo {
    Err(e) => format!("; it stays in {} ({e})", moved.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")),
    Ok(()) => String::new(),
})]
pub struct PartialMove {
    pub moved: Vec<PathBuf>,
    pub undo: Result<(), String>,
    #[source]
    pub error: FsError,
}

impl PartialMove {
    /// The OS error of the failed write.
    pub fn io(&self) -> &io::Error {
        self.error.io()
    }
}

/// Whether one requested limit took effect, for the log and the JSON result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LimitOutcome {
    pub limit: LimitKind,
    pub value: String,
    /// Control files written (empty for nice, which is per thread).
    pub files: Vec<PathBuf>,
    /// `None` when applied; otherwise what failed, with the OS error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What else is worth knowing about how it applies (network limits:
    /// pacing or policing, and why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl LimitOutcome {
    pub fn applied(&self) -> bool {
        self.error.is_none()
    }
}

/// Write each setting's files, in order, into the directory `dir_for` gives
/// for its controller (or the reason it cannot): one outcome per setting,
/// which stops at its first failed write. The one place limits are written,
/// at creation and on a reload.
pub(super) fn apply(
    settings: Vec<super::limits::Setting>,
    dir_for: impl Fn(Controller) -> Result<PathBuf, String>,
) -> Vec<LimitOutcome> {
    settings
        .into_iter()
        .map(|setting| {
            let mut files = Vec::new();
            let mut error = setting.unsupported.map(str::to_owned);
            let mut absent = Vec::new();
            for write in setting.writes.iter().filter(|_| setting.unsupported.is_none()) {
                let dir = match dir_for(write.controller) {
                    Ok(dir) => dir,
                    Err(why) => {
                        error = Some(why);
                        break;
                    }
                };
                let path = dir.join(write.file);
                if write.mode == WriteMode::IfPresent && !path.exists() {
                    absent.push(path);
                    continue;
                }
                files.push(path.clone());
                if let Err(e) = write_one(&path, write) {
                    error = Some(e);
                    break;
                }
            }
            if error.is_none() && files.is_empty() && !absent.is_empty() {
                error = Some(none_present(&absent));
            }
            LimitOutcome {
                limit: setting.kind,
                value: setting.value,
                files,
                error,
                note: None,
            }
        })
        .collect()
}

/// One write as its mode says, with what the kernel granted checked for
/// cpuset (v2 takes CPUs outside the parent's set and quietly drops them).
fn write_one(path: &Path, write: &FileWrite) -> Result<(), String> {
    let value = match write.mode {
        WriteMode::CopyParent => cpuset::parent_value(path).map_err(|e| e.to_string())?,
        WriteMode::Required | WriteMode::IfPresent => write.value.clone(),
    };
    fs::write_file(path, &value).map_err(|e| match cpuset::is_cpuset_file(write.file) {
        true => format!("{e}; {}", cpuset::explain_refusal(path)),
        false => e.to_string(),
    })?;
    if write.mode != WriteMode::CopyParent && cpuset::is_cpuset_file(write.file) {
        cpuset::check_granted(path, &value)?;
    }
    Ok(())
}

fn none_present(absent: &[PathBuf]) -> String {
    let names: Vec<String> = absent.iter().map(|p| p.display().to_string()).collect();
    format!(
        "the kernel offers none of {}: no IO weight here (v2 io.weight needs iocost, io.bfq.weight the BFQ scheduler; v1 blkio.bfq.weight needs BFQ)",
        names.join(", ")
    )
}

/// Resource usage read from the job's cgroup before it is removed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Usage {
    pub cpu_seconds: Option<f64>,
    pub throttled_periods: Option<u64>,
    pub throttled_seconds: Option<f64>,
    /// v2 `memory.peak` (5.19+), v1 `memory.max_usage_in_bytes`.
    pub memory_peak_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    /// The network programs' counters, for a job with a network limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::net::NetUsage>,
}

/// What happened when the job cgroup was removed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Removal {
    pub removed: Vec<PathBuf>,
    /// Directories left in place, with why (usually: descendants still run).
    pub left: Vec<(PathBuf, String)>,
}

/// One hierarchy's directory for a job (v2 has exactly one).
#[derive(Debug, Clone)]
pub(super) struct JobDir {
    pub(super) controllers: Vec<Controller>,
    /// The hierarchy's mount point (the dir is below it).
    pub(super) mount: PathBuf,
    pub(super) dir: PathBuf,
    /// An empty cgroup of an earlier job with this id, seen before
    /// creation: it is removed and made anew so no stale limit survives.
    pub(super) leftover: bool,
}

/// Why a legacy host (no cgroup2 mount) cannot limit a job's network.
const NO_CGROUP2: &str = "no cgroup2 file system is mounted: network limits attach to the job's cgroup2 \
                          directory (sockets record their cgroup there)";

/// Creates job cgroups under one root, on one hierarchy.
#[derive(Debug, Clone)]
pub struct Governor {
    hierarchy: Hierarchy,
    root: CgroupRoot,
    /// With [`Governor::keeping_root`]: the root (and ancestors) its jobs
    /// created, kept for the next job instead of removed with each.
    kept: Option<Arc<Mutex<Vec<PathBuf>>>>,
    /// With [`Governor::keeping_spares`] (v1): job cgroups made ahead, renamed
    /// into place at a job's start (see [`spare`]).
    spares: Option<Arc<Mutex<spare::Pool>>>,
    /// The network programs, loaded at the first job with a network limit.
    net: crate::net::SharedShaper,
}

impl Governor {
    pub fn new(hierarchy: Hierarchy, root: CgroupRoot) -> Governor {
        Governor {
            hierarchy,
            root,
            kept: None,
            spares: None,
            net: crate::net::SharedShaper::default(),
        }
    }

    /// The shared network programs (for reloads of this governor's jobs).
    pub fn net(&self) -> &crate::net::SharedShaper {
        &self.net
    }

    /// Keep the root directories a job creates when the job is removed: a
    /// daemon's next job finds them, so making a job is one `mkdir` per
    /// hierarchy instead of two (and one `rmdir` fewer at its end). They
    /// go with [`Governor::remove_kept_root`].
    pub fn keeping_root(mut self) -> Governor {
        self.kept = Some(Arc::default());
        self
    }

    /// Make each job from a spare made ahead where the kernel can rename a
    /// cgroup (v1): the exec then costs a `rename` per hierarchy instead of
    /// a `mkdir`, whose grace period the move would wait out (see
    /// [`spare`]). Spares are made by [`Governor::refill_spares`], off the
    /// path to a move. Implies [`Governor::keeping_root`] on every version
    /// (spares live in the kept root); on v2 that is all it does.
    pub fn keeping_spares(self) -> Governor {
        let mut governor = self.keeping_root();
        if governor.version() == Version::V1 {
            governor.spares = Some(Arc::default());
        }
        governor
    }

    /// Remove the spares (no process can be in one), then the root
    /// directories kept by [`Governor::keeping_root`] that are empty now
    /// (the innermost first); those still holding jobs stay.
    pub fn remove_kept_root(&self) {
        if let Some(pool) = &self.spares {
            let spares = lock(pool).drain();
            spares.iter().for_each(|s| remove_spare(s));
        }
        let Some(kept) = &self.kept else { return };
        let dirs = std::mem::take(&mut *kept.lock().unwrap_or_else(|e| e.into_inner()));
        for dir in dirs.iter().rev() {
            match std::fs::remove_dir(dir) {
                Ok(()) => tracing::debug!("removed {}", dir.display()),
                Err(e) => tracing::debug!("left {} in place: {e}", dir.display()),
            }
        }
    }

    pub fn root(&self) -> &CgroupRoot {
        &self.root
    }

    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Is `mount` the v1 cpuset hierarchy (perhaps co-mounted)? From the
    /// hierarchy read at start, not a `stat` per job: this is on the way
    /// to every adoption's move.
    fn is_cpuset_mount(&self, mount: &Mount) -> bool {
        self.hierarchy
            .v1_controllers()
            .and_then(|c| c.get(&Controller::Cpuset))
            .is_some_and(|cpuset| cpuset.mount_point == mount.mount_point)
    }

    pub fn version(&self) -> Version {
        if self.hierarchy.is_v2() {
            Version::V2
        } else {
            Version::V1
        }
    }

    /// The root directory in each hierarchy used, e.g. for garbage collection.
    pub fn root_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = match &self.hierarchy {
            Hierarchy::Unified(m) => vec![m.dir(&self.root.resolve(m))],
            _ => self
                .v1_mounts(&[])
                .0
                .into_iter()
                .map(|(m, _)| m.dir(&self.root.resolve(&m)))
                .collect(),
        };
        dirs.dedup();
        dirs
    }

    /// Is `pid` already in an ffrtmp job cgroup — of any root, such as a job
    /// of `ffrtmp run`? Job cgroups carry the [`JOB_XATTR`] mark. Watch
    /// leaves such processes alone instead of moving them out of their job.
    pub fn in_job_cgroup(&self, pid: u32) -> bool {
        self.job_of(pid).is_some()
    }

    /// The job `pid` is in (its id and directory), read from the cgroup it
    /// is in (the cpu hierarchy on v1) and that cgroup's [`JOB_XATTR`] mark.
    pub fn job_of(&self, pid: u32) -> Option<(String, PathBuf)> {
        self.job_in(&ProcCgroups::read(pid)?)
    }

    /// [`Governor::job_of`] the process whose cgroups are `cgroups`.
    pub fn job_in(&self, cgroups: &ProcCgroups) -> Option<(String, PathBuf)> {
        let (mount, cgroup) = match &self.hierarchy {
            Hierarchy::Unified(m) => (m, cgroups.path_in(None)?),
            _ => {
                let cpu = self.hierarchy.v1_controllers()?.get(&Controller::Cpu)?;
                (cpu, cgroups.path_in(Some(Controller::Cpu.v1_name()))?)
            }
        };
        let dir = mount.dir(Path::new(cgroup));
        get_xattr(&dir, JOB_XATTR).map(|job| (job, dir))
    }

    /// Hybrid: the unified mount, for the jobs' [`Controller::Net`]
    /// directories (on v2 the job directory serves; legacy has none).
    pub(super) fn net_mount(&self) -> Option<(Mount, Vec<Controller>)> {
        match &self.hierarchy {
            Hierarchy::Hybrid { unified, .. } => Some((unified.clone(), vec![Controller::Net])),
            _ => None,
        }
    }

    /// v1: distinct mounts holding the always-used controllers plus `extra`,
    /// and the controllers of `extra` that are not mounted.
    pub(super) fn v1_mounts(&self, extra: &[Controller]) -> (Vec<(Mount, Vec<Controller>)>, Vec<Controller>) {
        let Some(mounted) = self.hierarchy.v1_controllers() else {
            return (Vec::new(), Vec::new());
        };
        let mut wanted = vec![Controller::Cpu, Controller::Cpuacct, Controller::Memory];
        for c in extra.iter().filter(|c| c.is_v1()) {
            if !wanted.contains(c) {
                wanted.push(*c);
            }
        }
        let mut by_mount: BTreeMap<PathBuf, (Mount, Vec<Controller>)> = BTreeMap::new();
        let mut missing = Vec::new();
        for controller in wanted {
            match mounted.get(&controller) {
                Some(m) => by_mount
                    .entry(m.mount_point.clone())
                    .or_insert_with(|| (m.clone(), Vec::new()))
                    .1
                    .push(controller),
                None if extra.contains(&controller) => missing.push(controller),
                None => {}
            }
        }
        (by_mount.into_values().collect(), missing)
    }

    /// Create `<root>/<job>` with `limits` written into it while it is still
    /// empty. Each limit's outcome is recorded in the returned job; an error
    /// means no job cgroup exists (whatever this call created is removed).
    pub fn create_job(&self, job: &JobId, limits: &Limits) -> Result<JobCgroup, CgroupError> {
        let mut cg = JobCgroup {
            id: job.clone(),
            version: self.version(),
            dirs: Vec::new(),
            created: Vec::new(),
            outcomes: Vec::new(),
            net: self.net.clone(),
        };
        let (plan, mut unavailable) = self.plan(&limits.controllers());
        for (mount, controllers) in &plan {
            let root = mount.dir(&self.root.resolve(mount));
            cg.dirs.push(JobDir {
                controllers: controllers.clone(),
                mount: mount.mount_point.clone(),
                dir: root.join(job.as_str()),
                leftover: false,
            });
        }
        // A spare is renamed without looking first: the kernel refuses a
        // rename onto an existing directory (EEXIST), and only then, or
        // without a spare, is a leftover of the same name looked for.
        let result = if self.rename_spare(&plan, &mut cg) {
            self.write_limits(&mut cg, limits, &unavailable);
            Ok(())
        } else {
            for d in &mut cg.dirs {
                d.leftover = d.dir.exists();
                if d.leftover && is_populated(&d.dir, cg.version)? {
                    return Err(CgroupError::InUse {
                        job: job.clone(),
                        dir: d.dir.clone(),
                    });
                }
            }
            self.build(&mut cg, &plan, limits, &mut unavailable)
        };
        match result {
            Ok(()) => {
                if let Some(kept) = &self.kept {
                    // The job owns only its own directories now.
                    let dirs = &cg.dirs;
                    let (jobs, ancestors): (Vec<PathBuf>, Vec<PathBuf>) =
                        cg.created.drain(..).partition(|c| dirs.iter().any(|d| d.dir == *c));
                    cg.created = jobs;
                    kept.lock().unwrap_or_else(|e| e.into_inner()).extend(ancestors);
                }
                Ok(cg)
            }
            Err(e) => {
                cg.discard();
                Err(e)
            }
        }
    }

    /// The hierarchies a job with limits on `wanted` spans, and the
    /// controllers among `wanted` that no hierarchy here offers (with why).
    fn plan(&self, wanted: &[Controller]) -> (Plan, BTreeMap<Controller, String>) {
        let mut unavailable = BTreeMap::new();
        let mut plan = Vec::new();
        match &self.hierarchy {
            // Net only for a job with a network limit: a job without one
            // is never asked for network programs (no syscall per read).
            Hierarchy::Unified(m) => plan.push((
                m.clone(),
                Controller::ALL
                    .into_iter()
                    .filter(|c| *c != Controller::Net || wanted.contains(c))
                    .collect(),
            )),
            _ => {
                let (mounts, missing) = self.v1_mounts(wanted);
                for controller in missing {
                    unavailable.insert(controller, CgroupError::NotMounted { controller }.to_string());
                }
                plan.extend(mounts);
                if wanted.contains(&Controller::Net) {
                    match self.net_mount() {
                        Some(net) => plan.push(net),
                        None => {
                            unavailable.insert(Controller::Net, NO_CGROUP2.to_string());
                        }
                    }
                }
            }
        }
        (plan, unavailable)
    }

    /// The directories jobs of `plan` go in: the key of its spares, or
    /// `None` where spares cannot serve it (a cgroup2 directory, for network
    /// limits, cannot be renamed).
    fn spare_key(&self, plan: &Plan) -> Option<PlanKey> {
        let renamable = plan
            .iter()
            .all(|(_, controllers)| !controllers.contains(&Controller::Net));
        (renamable && !plan.is_empty()).then(|| {
            plan.iter()
                .map(|(mount, _)| mount.dir(&self.root.resolve(mount)))
                .collect()
        })
    }

    /// Have spares ready for jobs with `limits` (a daemon's rules, at start).
    pub fn prepare_spares(&self, limits: &Limits) {
        let (plan, _) = self.plan(&limits.controllers());
        self.want_spares(&plan);
        self.refill_spares();
    }

    /// Record that jobs of `plan` want spares; the first time, remove the
    /// spares of daemons that are gone. Returns the pool and the plan's key;
    /// `None` without spares or for a plan they cannot serve.
    fn want_spares(&self, plan: &Plan) -> Option<(&Mutex<spare::Pool>, PlanKey)> {
        let (pool, key) = (self.spares.as_deref()?, self.spare_key(plan)?);
        let mut wanted = lock(pool);
        // Before this daemon made any: spares named with its pid are an
        // earlier daemon's that had the same pid (pid 1 in a container).
        let none_made = wanted.is_empty();
        if wanted.want(key.clone(), plan) {
            remove_stale_spares(&key, none_made);
        }
        Some((pool, key))
    }

    /// Rename a spare into `cg`'s directories and mark them as the job's.
    /// False (nothing changed) when there is no spare or a rename fails (a
    /// directory of that name is left over, say); the caller then makes the job.
    fn rename_spare(&self, plan: &Plan, cg: &mut JobCgroup) -> bool {
        let Some((pool, key)) = self.want_spares(plan) else {
            return false;
        };
        let Some(spare) = lock(pool).take(&key) else {
            return false;
        };
        for (i, (from, job)) in spare.iter().zip(&cg.dirs).enumerate() {
            if let Err(e) = std::fs::rename(from, &job.dir) {
                tracing::debug!(
                    "renaming spare {} to {}: {e}; making the job",
                    from.display(),
                    job.dir.display()
                );
                for (back, job) in spare.iter().zip(&cg.dirs).take(i) {
                    // Not left under the job's name: the job is made there next.
                    if let Err(e) = std::fs::rename(&job.dir, back).or_else(|_| std::fs::remove_dir(&job.dir)) {
                        // Unmarked under the job's name: nothing collects it.
                        tracing::warn!(
                            "the spare renamed to {} could not be renamed back or removed ({e}); it is left in place",
                            job.dir.display()
                        );
                    }
                }
                remove_spare(&spare);
                return false;
            }
        }
        for job in &cg.dirs {
            cg.created.push(job.dir.clone());
            if let Err(e) = set_xattr(&job.dir, JOB_XATTR, cg.id.as_str()) {
                tracing::debug!(
                    "could not mark {} as an ffrtmp job ({e}); it will not be garbage-collected",
                    job.dir.display()
                );
            }
        }
        true
    }

    /// Make the spares wanted (after a job took one, or at start). Blocking
    /// file system work: call it off the path to a move.
    pub fn refill_spares(&self) {
        let Some(pool) = &self.spares else { return };
        let todo = lock(pool).start_making(std::process::id());
        for (key, plan, name) in todo {
            let made = self
                .make_spare(&plan, &name)
                .inspect_err(|e| tracing::debug!("could not make spare job cgroup {name}: {e}"))
                .ok();
            lock(pool).made(&key, made);
        }
    }

    /// One spare: `name` under the root of every hierarchy of `plan`, the
    /// root made first where missing (and kept, as a job's would be).
    fn make_spare(&self, plan: &Plan, name: &str) -> Result<Vec<PathBuf>, CgroupError> {
        let mut made = Vec::new();
        for (mount, _) in plan {
            if let Err(e) = self.make_spare_dir(mount, name, &mut made) {
                remove_spare(&made);
                return Err(e);
            }
        }
        Ok(made)
    }

    /// `name` under the root in `mount`, added to `made` once it exists.
    fn make_spare_dir(&self, mount: &Mount, name: &str, made: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
        let root = self.root.resolve(mount);
        let mut created = Vec::new();
        let made_root = self.ensure_root(mount, &root, &mut created);
        if let Some(kept) = &self.kept {
            lock(kept).extend(created.iter().cloned());
        }
        made_root?;
        let dir = mount.dir(&root).join(name);
        if !fs::create_dir(&dir)? {
            let source = io::ErrorKind::AlreadyExists.into();
            return Err(FsError::Create { path: dir, source }.into());
        }
        made.push(dir.clone());
        if self.is_cpuset_mount(mount) {
            for d in created.iter().chain([&dir]) {
                cpuset::fill_from_parent(d)?;
            }
        }
        Ok(())
    }

    fn build(
        &self,
        cg: &mut JobCgroup,
        plan: &[(Mount, Vec<Controller>)],
        limits: &Limits,
        unavailable: &mut BTreeMap<Controller, String>,
    ) -> Result<(), CgroupError> {
        let required = limits.controllers();
        for ((mount, _), job_dir) in plan.iter().zip(cg.dirs.clone()) {
            let root = self.root.resolve(mount);
            // Another ffrtmp may remove an empty root it created between our
            // mkdir of the root and of the job (ENOENT): build the chain again.
            let mut attempts = 0;
            loop {
                attempts += 1;
                match self.prepare_chain(cg, mount, &root, &required, unavailable, &job_dir) {
                    Err(CgroupError::Fs(e)) if attempts < 3 && e.io().kind() == io::ErrorKind::NotFound => continue,
                    other => break other?,
                }
            }
        }
        self.write_limits(cg, limits, unavailable);
        Ok(())
    }

    /// Make the root (and its missing ancestors, top-down), adding each
    /// directory made to `created`.
    fn ensure_root(&self, mount: &Mount, root: &Path, created: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
        let relative = root.strip_prefix("/").unwrap_or(root);
        let root_dir = mount.mount_point.join(relative);
        // Usually the root is there already (a daemon keeps it): one mkdir
        // says so, instead of one per ancestor.
        match fs::create_dir(&root_dir) {
            Ok(false) => {}
            Ok(true) => {
                if !created.contains(&root_dir) {
                    created.push(root_dir);
                }
            }
            // An ancestor is missing: the chain is made top-down.
            Err(e) if e.io().kind() == io::ErrorKind::NotFound => {
                let mut path = mount.mount_point.clone();
                for part in relative.components() {
                    path.push(part);
                    if fs::create_dir(&path)? && !created.contains(&path) {
                        created.push(path.clone());
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Create the root's missing ancestors top-down, then the root; on v2
    /// enable the controllers along the chain; then (re)create the job dir.
    fn prepare_chain(
        &self,
        cg: &mut JobCgroup,
        mount: &Mount,
        root: &Path,
        required: &[Controller],
        unavailable: &mut BTreeMap<Controller, String>,
        job_dir: &JobDir,
    ) -> Result<(), CgroupError> {
        self.ensure_root(mount, root, &mut cg.created)?;
        if cg.version == Version::V2 {
            // Controllers wanted for statistics only (cpu, memory) are
            // best effort; a failure for a limit's controller fails that limit.
            let mut wanted = required.to_vec();
            for c in [Controller::Cpu, Controller::Memory] {
                if !wanted.contains(&c) {
                    wanted.push(c);
                }
            }
            // Enabled in the root's subtree_control means enabled all the
            // way down to it (a cgroup can enable only what its parent
            // does): one read instead of the chain's walk, which reads two
            // files per level and controller. This is on the path to every
            // move into a new job.
            let enabled = fs::read_file(&mount.dir(root).join(files::SUBTREE_CONTROL)).unwrap_or_default();
            let enabled: Vec<&str> = enabled.split_whitespace().collect();
            for controller in wanted {
                if controller.v2_name().is_some_and(|name| enabled.contains(&name)) {
                    unavailable.remove(&controller);
                    continue;
                }
                match enable_chain(mount, root, controller) {
                    // A retry forgets the failure of an earlier try.
                    Ok(()) => {
                        unavailable.remove(&controller);
                    }
                    Err(e) if required.contains(&controller) => {
                        unavailable.insert(controller, e.to_string());
                    }
                    Err(e) => tracing::debug!("statistics controller not enabled: {e}"),
                }
            }
        }
        let dir = job_dir.dir.as_path();
        let ours = cg.created.iter().any(|c| c == dir);
        if job_dir.leftover && !ours && dir.exists() {
            fs::remove_dir(dir)?;
        }
        // Existing now means another ffrtmp created it meanwhile: the id is
        // taken, and its cgroup is not ours to touch.
        if !fs::create_dir(dir)? && !ours {
            return Err(CgroupError::InUse {
                job: cg.id.clone(),
                dir: dir.to_path_buf(),
            });
        }
        if !cg.created.iter().any(|c| c == dir) {
            cg.created.push(dir.to_path_buf());
        }
        if cg.version == Version::V1 && self.is_cpuset_mount(mount) {
            // Top-down: each directory ffrtmp made here takes its parent's
            // CPUs and nodes, so the job dir can take a task (and a limit).
            for made in cg.created.iter().filter(|c| c.starts_with(&mount.mount_point)) {
                cpuset::fill_from_parent(made)?;
            }
        }
        if let Err(e) = set_xattr(dir, JOB_XATTR, cg.id.as_str()) {
            tracing::debug!(
                "could not mark {} as an ffrtmp job ({e}); it will not be garbage-collected",
                dir.display()
            );
        }
        Ok(())
    }

    /// Write every setting into the job dirs, recording each outcome.
    fn write_limits(&self, cg: &mut JobCgroup, limits: &Limits, unavailable: &BTreeMap<Controller, String>) {
        let outcomes = apply(limits.settings(cg.version), |c| match unavailable.get(&c) {
            Some(why) => Err(why.clone()),
            None => Ok(cg.dir_for(c).to_path_buf()),
        });
        cg.outcomes.extend(outcomes);
        let net_dir = match unavailable.get(&Controller::Net) {
            Some(why) => Err(why.clone()),
            None => Ok(cg.dir_for(Controller::Net).to_path_buf()),
        };
        // A new cgroup has nothing attached: only what is set is applied.
        let outcomes = self.net.apply(net_dir, limits, Some(&Limits::default()));
        cg.outcomes.extend(outcomes);
    }

    /// The directories of every job under the root that is garbage: marked,
    /// older than [`GC_MIN_AGE`] and empty in **every** hierarchy it spans.
    /// A job whose process sits in its cpu directory but not (yet) in its
    /// memory one — a move cut short by a crash — is not garbage, in any
    /// hierarchy.
    pub fn garbage(&self) -> Vec<PathBuf> {
        self.existing_jobs()
            .into_iter()
            .filter(|job| job.dirs().iter().all(|dir| is_garbage(dir, self.version())))
            .flat_map(|job| job.dirs().into_iter().map(Path::to_path_buf).collect::<Vec<_>>())
            .collect()
    }

    /// Remove the garbage jobs ([`Governor::garbage`]) an earlier run had to
    /// leave behind. Returns the directories removed.
    pub fn collect_garbage(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for dir in self.garbage() {
            if fs::remove_dir(&dir).is_ok() {
                tracing::info!("removed leftover empty job cgroup {}", dir.display());
                removed.push(dir);
            }
        }
        removed
    }
}

fn is_garbage(dir: &Path, version: Version) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    let old_enough = meta
        .modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age >= GC_MIN_AGE);
    meta.is_dir()
        && old_enough
        && get_xattr(dir, JOB_XATTR).is_some()
        && !has_subdirs(dir)
        && matches!(is_populated(dir, version), Ok(false))
}

fn has_subdirs(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|it| it.flatten().any(|e| e.file_type().is_ok_and(|t| t.is_dir())))
        .unwrap_or(true)
}

/// Does the cgroup at `dir`, or any cgroup below it, hold a process?
pub fn is_populated(dir: &Path, version: Version) -> Result<bool, FsError> {
    match version {
        Version::V2 => {
            let events = fs::read_file(&dir.join(files::EVENTS))?;
            Ok(fs::keyed_value(&events, "populated") == Some(1))
        }
        Version::V1 => {
            if !fs::read_file(&dir.join(files::PROCS))?.trim().is_empty() {
                return Ok(true);
            }
            let entries = std::fs::read_dir(dir).map_err(|source| FsError::Read {
                path: dir.to_owned(),
                source,
            })?;
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) && is_populated(&entry.path(), version)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }
}

/// v2: make `controller` available to the children of `root` by enabling it
/// in `cgroup.subtree_control` of every cgroup from the top of the hierarchy
/// down to `root`, writing only where it is missing.
fn enable_chain(mount: &Mount, root: &Path, controller: Controller) -> Result<(), CgroupError> {
    let Some(name) = controller.v2_name() else {
        return Ok(());
    };
    let mut dir = mount.mount_point.clone();
    let mut levels = vec![dir.clone()];
    for part in root.strip_prefix("/").unwrap_or(root).components() {
        dir.push(part);
        levels.push(dir.clone());
    }
    // Check every level before writing to any, so a refusal changes nothing.
    // A level's cgroup.controllers lists only what its parent enables, so
    // below a level we are about to enable the controller counts as available.
    let mut missing = Vec::new();
    let mut enabling_above = false;
    for (depth, dir) in levels.iter().enumerate() {
        let available = enabling_above
            || fs::read_file(&dir.join(files::CONTROLLERS))?
                .split_whitespace()
                .any(|c| c == name);
        if !available {
            return Err(CgroupError::ControllerUnavailable {
                controller: name,
                dir: dir.clone(),
            });
        }
        let control = dir.join(files::SUBTREE_CONTROL);
        // A directory we are about to create does not exist yet.
        if !control.exists() && depth > 0 {
            enabling_above = true;
            continue;
        }
        if fs::read_file(&control)?.split_whitespace().any(|c| c == name) {
            enabling_above = false;
            continue;
        }
        // No internal processes: a non-root cgroup that holds processes
        // cannot hand a domain controller to its children (EBUSY). Threaded
        // controllers such as cpu would be accepted, but they turn the
        // cgroup threaded and make domain children unusable (EOPNOTSUPP),
        // so the rule is enforced here for every controller.
        if depth > 0 && !fs::read_file(&dir.join(files::PROCS))?.trim().is_empty() {
            return Err(CgroupError::InternalProcesses {
                controller: name,
                file: control,
            });
        }
        missing.push(control);
        enabling_above = true;
    }
    for control in missing {
        fs::write_file(&control, &format!("+{name}")).map_err(|e| {
            if e.io().raw_os_error() == Some(libc::EBUSY) {
                CgroupError::InternalProcesses {
                    controller: name,
                    file: control.clone(),
                }
            } else {
                CgroupError::Fs(e)
            }
        })?;
    }
    Ok(())
}

/// A job's cgroup (one directory per hierarchy used).
#[derive(Debug)]
pub struct JobCgroup {
    pub(super) id: JobId,
    pub(super) version: Version,
    pub(super) dirs: Vec<JobDir>,
    /// Directories this job created (ancestors, then job dirs), in order.
    pub(super) created: Vec<PathBuf>,
    pub(super) outcomes: Vec<LimitOutcome>,
    /// The network programs that change this job's network limits.
    pub(super) net: crate::net::SharedShaper,
}

impl JobCgroup {
    pub fn id(&self) -> &JobId {
        &self.id
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Every requested limit and whether it took effect.
    pub fn outcomes(&self) -> &[LimitOutcome] {
        &self.outcomes
    }

    /// For a job that adopts a running process (attach, watch): its network
    /// limits cannot reach the sockets the process opened before the move,
    /// which keep the cgroup they were created in; each such outcome says so.
    pub fn note_adoption(&mut self) {
        const BEFORE: &str = "sockets the process opened before it was moved keep their old cgroup and are not limited";
        for o in &mut self.outcomes {
            if matches!(o.limit, LimitKind::NetEgressMax | LimitKind::NetIngressMax) && o.applied() {
                o.note = Some(match o.note.take() {
                    Some(n) => format!("{n}; {BEFORE}"),
                    None => BEFORE.to_string(),
                });
            }
        }
    }

    /// Record the outcome of a limit applied outside the cgroup (nice).
    pub fn record(&mut self, outcome: LimitOutcome) {
        self.outcomes.push(outcome);
    }

    pub fn all_applied(&self) -> bool {
        self.outcomes.iter().all(LimitOutcome::applied)
    }

    /// The job's directories (one on v2).
    pub fn dirs(&self) -> Vec<&Path> {
        self.dirs.iter().map(|d| d.dir.as_path()).collect()
    }

    /// The `cgroup.procs` file of every hierarchy used.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.dir.join(files::PROCS)).collect()
    }

    /// Whether one of the job's directories carries the cpuset controller,
    /// whose attach acts on the joining process's memory (it rebinds the
    /// memory policy and, on v2 always, migrates the pages of its mm).
    pub fn has_cpuset(&self) -> bool {
        self.dirs.iter().any(|d| d.controllers.contains(&Controller::Cpuset))
    }

    /// v1: the `tasks` file of every hierarchy used. A single-threaded
    /// process (a child between fork and exec) that writes `0` to each joins
    /// the job without taking the global migration lock.
    /// A hybrid host's cgroup2 directory (network limits) has no `tasks`:
    /// there `0` goes to `cgroup.procs`, which moves the writer's process.
    pub fn tasks_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| match d.controllers.as_slice() {
                [Controller::Net] => d.dir.join(files::PROCS),
                _ => d.dir.join(files::TASKS),
            })
            .collect()
    }

    fn dir_for(&self, controller: Controller) -> &Path {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&controller))
            .map_or(self.dirs[0].dir.as_path(), |d| d.dir.as_path())
    }

    /// A cheap handle that reads this job's usage, for readers outside the
    /// job's owner (the metrics endpoint reads it at scrape time).
    pub fn usage_reader(&self) -> UsageReader {
        UsageReader::for_dirs(self.version, controller_dirs(&self.dirs))
    }

    /// Move a whole process (all its threads) into the job, in every
    /// hierarchy, one after the other. On cgroup v1 a write can fail after
    /// others succeeded: the process is then moved back where it was in
    /// those hierarchies, so it is never half in a job ([`PartialMove`] says
    /// how that went).
    pub fn add_process(&self, pid: u32) -> Result<(), PartialMove> {
        self.add_process_from(pid, None)
    }

    /// [`JobCgroup::add_process`] of a process whose cgroups were read
    /// just before (`from`), so they are not read again on the way to the
    /// move. They are where a move cut short puts it back.
    pub fn add_process_from(&self, pid: u32, from: Option<&ProcCgroups>) -> Result<(), PartialMove> {
        // Where it is now, per hierarchy, to undo a move cut short (v1 only:
        // v2 has one hierarchy, one write).
        let origins = match from {
            _ if self.dirs.len() <= 1 => Vec::new(),
            Some(cgroups) => self.current_cgroups(cgroups),
            None => ProcCgroups::read(pid).map_or_else(|| vec![None; self.dirs.len()], |c| self.current_cgroups(&c)),
        };
        let value = pid.to_string();
        for (done, procs) in self.procs_files().into_iter().enumerate() {
            if let Err(error) = fs::write_file(&procs, &value) {
                let moved = self.dirs[..done].iter().map(|d| d.dir.clone()).collect();
                let undo = self.move_back(pid, done, &origins);
                return Err(PartialMove { moved, undo, error });
            }
            crate::fault::point(crate::fault::Point::AfterMoveInto(done + 1));
        }
        Ok(())
    }

    /// The cgroup directory `pid` is in, for each of the job's hierarchies
    /// (`None` where `/proc/<pid>/cgroup` does not say).
    fn current_cgroups(&self, cgroups: &ProcCgroups) -> Vec<Option<PathBuf>> {
        self.dirs
            .iter()
            .map(|d| {
                let name = d.controllers.first().map(|c| c.v1_name())?;
                let path = cgroups.path_in(Some(name))?;
                Some(d.mount.join(path.trim_start_matches('/')))
            })
            .collect()
    }

    /// Write `pid` back into its former cgroup in the first `done`
    /// hierarchies; `Err` says what could not be undone.
    fn move_back(&self, pid: u32, done: usize, origins: &[Option<PathBuf>]) -> Result<(), String> {
        let mut failed = Vec::new();
        for (i, d) in self.dirs[..done].iter().enumerate() {
            let result = match origins.get(i).cloned().flatten() {
                Some(origin) => fs::write_file(&origin.join(files::PROCS), &pid.to_string()).map_err(|e| e.to_string()),
                None => Err(format!("its former cgroup in {} is unknown", d.mount.display())),
            };
            if let Err(e) = result {
                failed.push(format!("{}: {e}", d.dir.display()));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    pub fn is_populated(&self) -> Result<bool, FsError> {
        for d in &self.dirs {
            if is_populated(&d.dir, self.version)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Read usage; a counter the kernel does not offer stays `None`.
    pub fn usage(&self) -> Usage {
        self.usage_reader().read()
    }

    /// Remove the job's directories, and the ancestors this job created when
    /// they are empty. A directory that still holds processes is left, and
    /// said so; the garbage collector of a later start removes it once empty.
    ///
    /// An exited process can keep its cgroup busy for a moment (until its
    /// parent reaps it), so EBUSY is retried briefly.
    pub fn remove(mut self) -> Removal {
        let mut removal = Removal::default();
        for d in std::mem::take(&mut self.dirs) {
            match remove_with_retry(&d.dir) {
                Ok(()) => removal.removed.push(d.dir),
                Err(e) => {
                    let why = match is_populated(&d.dir, self.version) {
                        Ok(true) => "descendant processes still run in it".to_string(),
                        _ => e.to_string(),
                    };
                    removal.left.push((d.dir, why));
                }
            }
        }
        // Ancestors this job created go too when nothing else uses them
        // (rmdir fails on a busy or non-empty one, which is fine). The job
        // dirs themselves are done above: never rmdir one again, as another
        // run may already have made a new cgroup with this job id.
        for dir in self.created.iter().rev() {
            let is_job_dir = removal.removed.contains(dir) || removal.left.iter().any(|(left, _)| left == dir);
            if !is_job_dir {
                let _ = std::fs::remove_dir(dir);
            }
        }
        removal
    }

    /// Undo everything: used when creation failed or `--strict` refused.
    pub fn discard(mut self) {
        self.dirs.clear();
        let created = std::mem::take(&mut self.created);
        for dir in created.iter().rev() {
            if let Err(e) = fs::remove_dir(dir) {
                tracing::warn!("could not remove {}: {}", dir.display(), e.io());
            }
        }
    }
}

/// Reads a job's usage from its cgroup files.
#[derive(Debug, Clone)]
pub struct UsageReader {
    version: Version,
    dirs: Vec<(Vec<Controller>, PathBuf)>,
}

impl UsageReader {
    /// A reader for job dirs given as (controllers, directory).
    pub fn for_dirs(version: Version, dirs: Vec<(Vec<Controller>, PathBuf)>) -> UsageReader {
        UsageReader { version, dirs }
    }

    fn dir_for(&self, controller: Controller) -> &Path {
        self.dirs
            .iter()
            .find(|(controllers, _)| controllers.contains(&controller))
            .map_or(self.dirs[0].1.as_path(), |(_, dir)| dir.as_path())
    }

    /// Read usage; a counter the kernel does not offer stays `None`.
    pub fn read(&self) -> Usage {
        let read = |c: Controller, file: &str| fs::read_optional(&self.dir_for(c).join(file)).ok().flatten();
        let mut u = Usage {
            network: self.network(),
            ..Usage::default()
        };
        match self.version {
            Version::V2 => {
                if let Some(stat) = read(Controller::Cpu, files::CPU_STAT) {
                    u.cpu_seconds = fs::keyed_value(&stat, "usage_usec").map(|us| us as f64 / 1e6);
                    u.throttled_periods = fs::keyed_value(&stat, "nr_throttled");
                    u.throttled_seconds = fs::keyed_value(&stat, "throttled_usec").map(|us| us as f64 / 1e6);
                }
                u.memory_peak_bytes = read(Controller::Memory, files::MEMORY_PEAK).and_then(|s| s.trim().parse().ok());
                u.oom_kills =
                    read(Controller::Memory, files::MEMORY_EVENTS).and_then(|s| fs::keyed_value(&s, "oom_kill"));
            }
            Version::V1 => {
                u.cpu_seconds = read(Controller::Cpuacct, files::CPUACCT_USAGE)
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(|ns| ns as f64 / 1e9);
                if let Some(stat) = read(Controller::Cpu, files::CPU_STAT) {
                    u.throttled_periods = fs::keyed_value(&stat, "nr_throttled");
                    u.throttled_seconds = fs::keyed_value(&stat, "throttled_time").map(|ns| ns as f64 / 1e9);
                }
                u.memory_peak_bytes =
                    read(Controller::Memory, files::MEMORY_MAX_USAGE_IN_BYTES).and_then(|s| s.trim().parse().ok());
                u.oom_kills =
                    read(Controller::Memory, files::MEMORY_OOM_CONTROL).and_then(|s| fs::keyed_value(&s, "oom_kill"));
            }
        }
        u
    }

    /// The counters of the network programs on the job's cgroup2 directory,
    /// if it has one and they are attached.
    fn network(&self) -> Option<crate::net::NetUsage> {
        let (_, dir) = self.dirs.iter().find(|(c, _)| c.contains(&Controller::Net))?;
        let cgroup = crate::net::JobSocketCgroup::open(dir).ok()?;
        match cgroup.usage() {
            Ok(usage) if !usage.is_empty() => Some(usage),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!("network counters of {}: {e}", dir.display());
                None
            }
        }
    }

    /// Current memory use in bytes (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    pub fn memory_current(&self) -> Option<u64> {
        let file = match self.version {
            Version::V2 => files::MEMORY_CURRENT,
            Version::V1 => files::MEMORY_USAGE_IN_BYTES,
        };
        fs::read_optional(&self.dir_for(Controller::Memory).join(file))
            .ok()
            .flatten()
            .and_then(|s| s.trim().parse().ok())
    }
}

/// Each job dir with the controllers it serves.
pub(super) fn controller_dirs(dirs: &[JobDir]) -> Vec<(Vec<Controller>, PathBuf)> {
    dirs.iter().map(|d| (d.controllers.clone(), d.dir.clone())).collect()
}

fn remove_with_retry(dir: &Path) -> Result<(), FsError> {
    let mut delay = Duration::from_millis(1);
    loop {
        match fs::remove_dir(dir) {
            Err(e) if e.io().raw_os_error() == Some(libc::EBUSY) && delay < Duration::from_millis(300) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) if e.io().kind() == io::ErrorKind::NotFound => return Ok(()),
            other => return other,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The text of `/proc/<pid>/cgroup`: which cgroup a process is in, in
/// every hierarchy.
#[derive(Debug, Clone)]
pub struct ProcCgroups(String);

impl ProcCgroups {
    /// `None` when it cannot be read (the process is gone).
    pub fn read(pid: u32) -> Option<ProcCgroups> {
        let path = Path::new("/proc").join(pid.to_string()).join("cgroup");
        let raw = crate::process::identity::read_whole(&path).ok()?;
        Some(ProcCgroups(String::from_utf8_lossy(&raw).into_owned()))
    }

    /// The cgroup path (`/a/b`) in the v1 hierarchy of controller `v1`
    /// (`cpu`, `memory`, …), or in the unified hierarchy for `None`.
    fn path_in(&self, v1: Option<&str>) -> Option<&str> {
        self.0.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let here = match v1 {
                None => controllers.is_empty(),
                Some(name) => controllers.split(',').any(|c| c == name),
            };
            here.then_some(path)
        })
    }
}

/// Remove a spare's directories (empty: nothing is ever moved into one).
fn remove_spare(dirs: &[PathBuf]) {
    for dir in dirs.iter().rev() {
        if let Err(e) = std::fs::remove_dir(dir) {
            tracing::debug!("left spare {} in place: {e}", dir.display());
        }
    }
}

/// Remove the spares under `roots` whose daemon (the pid in their name) is
/// gone: a daemon killed before it could remove its own. With `own_too`,
/// also those named with this process's pid.
fn remove_stale_spares(roots: &[PathBuf], own_too: bool) {
    let own = std::process::id();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else { continue };
        for entry in entries.flatten() {
            let owner = entry.file_name().to_str().and_then(spare::owner);
            let gone = |pid: u32| !Path::new("/proc").join(pid.to_string()).exists();
            if owner.is_some_and(|pid| if pid == own { own_too } else { gone(pid) }) {
                remove_spare(&[entry.path()]);
            }
        }
    }
}

pub(super) fn set_xattr(path: &Path, name: &str, value: &str) -> io::Result<()> {
    rustix::fs::setxattr(path, name, value.as_bytes(), rustix::fs::XattrFlags::empty()).map_err(io::Error::from)
}

pub(super) fn get_xattr(path: &Path, name: &str) -> Option<String> {
    let mut buf = [0u8; 256];
    let len = rustix::fs::getxattr(path, name, &mut buf[..]).ok()?;
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

#[cfg(test)]
#[path = "governor_tests.rs"]
mod tests;
