//! The governor's cgroup side: create a job cgroup, write the limits into it
//! while it is still empty, let processes join, read usage, remove it.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::fs::{self, FsError};
use super::hierarchy::{Controller, Hierarchy, Mount};
use super::limits::{LimitKind, Limits, Version};
use super::names::{CgroupRoot, JobId};

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
}

impl LimitOutcome {
    pub fn applied(&self) -> bool {
        self.error.is_none()
    }
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
    pub(super) dir: PathBuf,
    /// An empty cgroup of an earlier job with this id, seen before
    /// creation: it is removed and made anew so no stale limit survives.
    pub(super) leftover: bool,
}

/// Creates job cgroups under one root, on one hierarchy.
#[derive(Debug, Clone)]
pub struct Governor {
    hierarchy: Hierarchy,
    root: CgroupRoot,
}

impl Governor {
    pub fn new(hierarchy: Hierarchy, root: CgroupRoot) -> Governor {
        Governor { hierarchy, root }
    }

    pub fn root(&self) -> &CgroupRoot {
        &self.root
    }

    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
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
        let path = Path::new("/proc").join(pid.to_string()).join("cgroup");
        let Ok(raw) = crate::process::identity::read_small(&path) else {
            return false;
        };
        let cpu = self.hierarchy.v1_controllers().and_then(|c| c.get(&Controller::Cpu));
        String::from_utf8_lossy(&raw).lines().any(|line| {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(cgroup)) = (parts.next(), parts.next(), parts.next()) else {
                return false;
            };
            let mount = match &self.hierarchy {
                Hierarchy::Unified(m) => controllers.is_empty().then_some(m),
                _ => cpu.filter(|_| controllers.split(',').any(|c| c == "cpu")),
            };
            mount.is_some_and(|m| get_xattr(&m.dir(Path::new(cgroup)), JOB_XATTR).is_some())
        })
    }

    /// v1: distinct mounts holding the always-used controllers plus `extra`,
    /// and the controllers of `extra` that are not mounted.
    pub(super) fn v1_mounts(&self, extra: &[Controller]) -> (Vec<(Mount, Vec<Controller>)>, Vec<Controller>) {
        let Some(mounted) = self.hierarchy.v1_controllers() else {
            return (Vec::new(), Vec::new());
        };
        let mut wanted = vec![Controller::Cpu, Controller::Cpuacct, Controller::Memory];
        for c in extra {
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
        };
        let mut unavailable: BTreeMap<Controller, String> = BTreeMap::new();
        // (mount, chain of cgroup paths from the top down to the root, controllers)
        let mut plan = Vec::new();
        match &self.hierarchy {
            Hierarchy::Unified(m) => plan.push((m.clone(), Controller::ALL.to_vec())),
            _ => {
                let (mounts, missing) = self.v1_mounts(&limits.controllers());
                for controller in missing {
                    unavailable.insert(controller, CgroupError::NotMounted { controller }.to_string());
                }
                plan.extend(mounts);
            }
        }
        for (mount, controllers) in &plan {
            let root = mount.dir(&self.root.resolve(mount));
            let dir = root.join(job.as_str());
            let leftover = dir.exists();
            if leftover && is_populated(&dir, cg.version)? {
                return Err(CgroupError::InUse { job: job.clone(), dir });
            }
            cg.dirs.push(JobDir {
                controllers: controllers.clone(),
                dir,
                leftover,
            });
        }
        let result = self.build(&mut cg, &plan, limits, &mut unavailable);
        match result {
            Ok(()) => Ok(cg),
            Err(e) => {
                cg.discard();
                Err(e)
            }
        }
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
        let mut path = mount.mount_point.clone();
        for part in root.strip_prefix("/").unwrap_or(root).components() {
            path.push(part);
            if fs::create_dir(&path)? && !cg.created.contains(&path) {
                cg.created.push(path.clone());
            }
        }
        if cg.version == Version::V2 {
            // Controllers wanted for statistics only (cpu, memory) are
            // best effort; a failure for a limit's controller fails that limit.
            let mut wanted = required.to_vec();
            for c in [Controller::Cpu, Controller::Memory] {
                if !wanted.contains(&c) {
                    wanted.push(c);
                }
            }
            for controller in wanted {
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
        for setting in limits.settings(cg.version) {
            let mut files = Vec::new();
            let mut error = None;
            for write in &setting.writes {
                if let Some(why) = unavailable.get(&write.controller) {
                    error = Some(why.clone());
                    break;
                }
                let path = cg.dir_for(write.controller).join(write.file);
                files.push(path.clone());
                if let Err(e) = fs::write_file(&path, &write.value) {
                    error = Some(e.to_string());
                    break;
                }
            }
            cg.outcomes.push(LimitOutcome {
                limit: setting.kind,
                value: setting.value,
                files,
                error,
            });
        }
    }

    /// Remove empty, marked job cgroups under the root that an earlier run
    /// had to leave behind. Returns the directories removed.
    pub fn collect_garbage(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for root in self.root_dirs() {
            let Ok(entries) = std::fs::read_dir(&root) else {
                continue;
            };
            for entry in entries.flatten() {
                let dir = entry.path();
                if is_garbage(&dir, self.version()) && fs::remove_dir(&dir).is_ok() {
                    tracing::info!("removed leftover empty job cgroup {}", dir.display());
                    removed.push(dir);
                }
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
            let events = fs::read_file(&dir.join("cgroup.events"))?;
            Ok(fs::keyed_value(&events, "populated") == Some(1))
        }
        Version::V1 => {
            if !fs::read_file(&dir.join("cgroup.procs"))?.trim().is_empty() {
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
            || fs::read_file(&dir.join("cgroup.controllers"))?
                .split_whitespace()
                .any(|c| c == name);
        if !available {
            return Err(CgroupError::ControllerUnavailable {
                controller: name,
                dir: dir.clone(),
            });
        }
        let control = dir.join("cgroup.subtree_control");
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
        if depth > 0 && !fs::read_file(&dir.join("cgroup.procs"))?.trim().is_empty() {
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
        self.dirs.iter().map(|d| d.dir.join("cgroup.procs")).collect()
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

    /// Move a whole process (all its threads) into the job, in every hierarchy.
    pub fn add_process(&self, pid: u32) -> Result<(), FsError> {
        for procs in self.procs_files() {
            fs::write_file(&procs, &pid.to_string())?;
        }
        Ok(())
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
        let mut u = Usage::default();
        match self.version {
            Version::V2 => {
                if let Some(stat) = read(Controller::Cpu, "cpu.stat") {
                    u.cpu_seconds = fs::keyed_value(&stat, "usage_usec").map(|us| us as f64 / 1e6);
                    u.throttled_periods = fs::keyed_value(&stat, "nr_throttled");
                    u.throttled_seconds = fs::keyed_value(&stat, "throttled_usec").map(|us| us as f64 / 1e6);
                }
                u.memory_peak_bytes = read(Controller::Memory, "memory.peak").and_then(|s| s.trim().parse().ok());
                u.oom_kills = read(Controller::Memory, "memory.events").and_then(|s| fs::keyed_value(&s, "oom_kill"));
            }
            Version::V1 => {
                u.cpu_seconds = read(Controller::Cpuacct, "cpuacct.usage")
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(|ns| ns as f64 / 1e9);
                if let Some(stat) = read(Controller::Cpu, "cpu.stat") {
                    u.throttled_periods = fs::keyed_value(&stat, "nr_throttled");
                    u.throttled_seconds = fs::keyed_value(&stat, "throttled_time").map(|ns| ns as f64 / 1e9);
                }
                u.memory_peak_bytes =
                    read(Controller::Memory, "memory.max_usage_in_bytes").and_then(|s| s.trim().parse().ok());
                u.oom_kills =
                    read(Controller::Memory, "memory.oom_control").and_then(|s| fs::keyed_value(&s, "oom_kill"));
            }
        }
        u
    }

    /// Current memory use in bytes (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    pub fn memory_current(&self) -> Option<u64> {
        let file = match self.version {
            Version::V2 => "memory.current",
            Version::V1 => "memory.usage_in_bytes",
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

fn set_xattr(path: &Path, name: &str, value: &str) -> io::Result<()> {
    let p = cstring(path)?;
    let n = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let rc = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(super) fn get_xattr(path: &Path, name: &str) -> Option<String> {
    let p = cstring(path).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = [0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| String::from_utf8_lossy(&buf[..len as usize]).into_owned())
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;

fn cstring(path: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}
