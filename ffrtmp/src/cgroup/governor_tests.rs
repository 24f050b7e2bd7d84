//! Job cgroups on fake cgroup trees in a temp dir.
//!
//! A fake tree differs from cgroupfs in three ways the tests work around:
//! - `mkdir` creates no control files: a per-thread hook (`fake_kernel`)
//!   creates them, as the kernel would.
//! - `rmdir` of a directory holding (control) files fails with ENOTEMPTY,
//!   where cgroupfs removes the cgroup. Removal tests delete the control
//!   files first (`kernel_forgets_files`), or check how a failed `rmdir` is
//!   reported.
//! - Writes land at offset 0 of a regular file without truncating it, so a
//!   file written twice shows the second value over the first.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::cgroup::fs::fake_kernel;
use crate::cgroup::limits::{CpuMax, CpuWeight, IoMax, MemoryMax};

const V2_FILES: [&str; 7] = [
    "cpu.max",
    "cpu.weight",
    "memory.max",
    "io.max",
    "cpu.stat",
    "memory.peak",
    "memory.events",
];
const V1_CPU_FILES: &[&str] = &[
    "cpu.cfs_period_us",
    "cpu.cfs_quota_us",
    "cpu.shares",
    "cpu.stat",
    "cpuacct.usage",
];
const V1_CPUACCT_FILES: &[&str] = &["cpuacct.usage"];
const V1_MEMORY_FILES: &[&str] = &[
    "memory.limit_in_bytes",
    "memory.max_usage_in_bytes",
    "memory.oom_control",
];
const V1_BLKIO_FILES: &[&str] = &[
    "blkio.throttle.read_bps_device",
    "blkio.throttle.write_bps_device",
    "blkio.throttle.read_iops_device",
    "blkio.throttle.write_iops_device",
];

fn write(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A v2 cgroup as the kernel makes it; value files start empty so that a
/// file's content is exactly what was written to it.
fn v2_cgroup(dir: &Path, controllers: &str) {
    std::fs::create_dir_all(dir).unwrap();
    write(&dir.join("cgroup.procs"), "");
    write(&dir.join("cgroup.events"), "populated 0\nfrozen 0\n");
    write(&dir.join("cgroup.controllers"), &format!("{controllers}\n"));
    write(&dir.join("cgroup.subtree_control"), "");
    for f in V2_FILES {
        write(&dir.join(f), "");
    }
}

/// Every new directory gets the v2 files, its `cgroup.controllers` listing
/// `controllers`.
fn v2_hook(controllers: &'static str) {
    fake_kernel::set_mkdir_hook(move |dir| v2_cgroup(dir, controllers));
}

/// New directories stay empty (no control files at all).
fn no_files_hook() {
    fake_kernel::set_mkdir_hook(|_| {});
}

/// A v1 cgroup: `cgroup.procs` plus the given control files, empty.
fn v1_cgroup(dir: &Path, files: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    write(&dir.join("cgroup.procs"), "");
    for f in files {
        write(&dir.join(f), "");
    }
}

/// New directories get the control files of the hierarchy they are in.
fn v1_hook(hierarchies: Vec<(PathBuf, &'static [&'static str])>) {
    fake_kernel::set_mkdir_hook(move |dir| {
        let (_, files) = hierarchies
            .iter()
            .find(|(mount, _)| dir.starts_with(mount))
            .unwrap_or_else(|| panic!("mkdir outside every fake hierarchy: {}", dir.display()));
        v1_cgroup(dir, files);
    });
}

fn mount(mount_point: PathBuf, own_cgroup: &str) -> Mount {
    Mount {
        mount_point,
        own_cgroup: own_cgroup.into(),
    }
}

fn job(id: &str) -> JobId {
    JobId::parse(id).unwrap()
}

fn root(s: &str) -> CgroupRoot {
    CgroupRoot::parse(s).unwrap()
}

/// cpu 50 % of a core, weight 200, 256 MiB, read 1 MiB/s from 8:0.
fn all_limits() -> Limits {
    Limits {
        cpu_max: Some(CpuMax::parse_percent("50").unwrap()),
        cpu_weight: Some(CpuWeight::parse("200").unwrap()),
        memory_max: MemoryMax::parse_mb("256").unwrap(),
        memory_high: None,
        memory_swap_max: None,
        io_max: vec![IoMax::parse("8:0 rbps=1M").unwrap()],
        pids_max: None,
        nice: None,
        oom_score_adj: None,
        ..Limits::default()
    }
}

fn outcome(cg: &JobCgroup, kind: LimitKind) -> &LimitOutcome {
    cg.outcomes()
        .iter()
        .find(|o| o.limit == kind)
        .unwrap_or_else(|| panic!("no {kind} outcome in {:?}", cg.outcomes()))
}

/// Every path under `dir` with the content of files (`None` for dirs).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.insert(path.clone(), None);
                stack.push(path);
            } else {
                out.insert(path.clone(), Some(read(&path)));
            }
        }
    }
    out
}

/// Delete the regular files below `dir`, as cgroupfs `rmdir` ignores them.
fn kernel_forgets_files(dir: &Path) {
    for (path, content) in snapshot(dir) {
        if content.is_some() {
            std::fs::remove_file(path).unwrap();
        }
    }
}

fn set_age(dir: &Path, age: Duration) {
    File::open(dir).unwrap().set_modified(SystemTime::now() - age).unwrap();
}

// ---------------------------------------------------------------- v2 limits

#[test]
fn v2_writes_limits_and_enables_controllers_top_down() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("unified");
    v2_cgroup(&mnt, "cpu memory io pids");
    // `a` exists and already hands every controller to its children.
    v2_cgroup(&mnt.join("a"), "cpu memory io pids");
    write(&mnt.join("a/cgroup.subtree_control"), "cpu memory io\n");
    v2_hook("cpu memory io pids");

    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/a/b"));
    let cg = gov.create_job(&job("j1"), &all_limits()).unwrap();

    let dir = mnt.join("a/b/j1");
    assert_eq!(cg.dirs(), vec![dir.as_path()]);
    assert_eq!(cg.version(), Version::V2);
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(&dir.join("cpu.weight")), "200");
    assert_eq!(read(&dir.join("memory.max")), "268435456");
    assert_eq!(read(&dir.join("io.max")), "8:0 rbps=1048576");
    assert!(cg.all_applied(), "{:?}", cg.outcomes());
    let kinds: Vec<_> = cg.outcomes().iter().map(|o| o.limit).collect();
    assert_eq!(
        kinds,
        [
            LimitKind::CpuMax,
            LimitKind::CpuWeight,
            LimitKind::MemoryMax,
            LimitKind::IoMax
        ]
    );
    assert_eq!(outcome(&cg, LimitKind::CpuMax).files, [dir.join("cpu.max")]);
    assert_eq!(outcome(&cg, LimitKind::MemoryMax).value, "268435456");
    assert_eq!(outcome(&cg, LimitKind::IoMax).files, [dir.join("io.max")]);
    assert_eq!(get_xattr(&dir, JOB_XATTR).as_deref(), Some("j1"));
    assert_eq!(cg.procs_files(), [dir.join("cgroup.procs")]);

    // The mount point and the new `b` got "+cpu", "+memory", "+io" in this
    // order, each written at offset 0 over the last: "+io" over "+memory".
    assert_eq!(read(&mnt.join("cgroup.subtree_control")), "+iomory");
    assert_eq!(read(&mnt.join("a/b/cgroup.subtree_control")), "+iomory");
    // `a` already had them: not written at all (any write would show).
    assert_eq!(read(&mnt.join("a/cgroup.subtree_control")), "cpu memory io\n");
    // The job's own subtree_control is left alone.
    assert_eq!(read(&dir.join("cgroup.subtree_control")), "");
}

#[test]
fn v2_a_root_that_enables_every_controller_is_not_walked() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("unified");
    // The mount point enables nothing: a walk up the chain would write
    // "+cpu" there. The root's own subtree_control already lists all of
    // them, which the kernel allows only when the whole chain enables them.
    v2_cgroup(&mnt, "cpu memory io pids");
    v2_cgroup(&mnt.join("a"), "cpu memory io pids");
    write(&mnt.join("a/cgroup.subtree_control"), "cpu memory io\n");
    v2_hook("cpu memory io");

    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/a"));
    let cg = gov.create_job(&job("j1"), &all_limits()).unwrap();
    assert!(cg.all_applied(), "{:?}", cg.outcomes());
    assert_eq!(read(&mnt.join("a/j1/memory.max")), "268435456");
    assert_eq!(read(&mnt.join("cgroup.subtree_control")), "", "the chain was walked");
    assert_eq!(read(&mnt.join("a/cgroup.subtree_control")), "cpu memory io\n");
}

#[test]
fn v2_enable_chain_writes_each_missing_level() {
    for controller in [Controller::Cpu, Controller::Memory, Controller::Io] {
        let name = controller.v2_name().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().to_owned();
        for level in ["", "a", "a/b", "a/b/c"] {
            v2_cgroup(&mnt.join(level), "cpu memory io pids");
        }
        write(&mnt.join("a/b/cgroup.subtree_control"), &format!("pids {name}\n"));
        enable_chain(&mount(mnt.clone(), "/"), Path::new("/a/b/c"), controller).unwrap();
        let control = |level: &str| read(&mnt.join(level).join("cgroup.subtree_control"));
        assert_eq!(control(""), format!("+{name}"));
        assert_eq!(control("a"), format!("+{name}"));
        assert_eq!(control("a/b"), format!("pids {name}\n"));
        assert_eq!(control("a/b/c"), format!("+{name}"));
    }
    // cpuacct has no v2 name: nothing to do, nothing read.
    let tmp = tempfile::tempdir().unwrap();
    enable_chain(&mount(tmp.path().into(), "/"), Path::new("/x"), Controller::Cpuacct).unwrap();
}

#[test]
fn v2_undelegated_limit_controller_fails_only_its_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("unified");
    // The hierarchy has no io controller to give (on a real kernel a
    // cgroup's cgroup.controllers lists what its parent enables, so a fake
    // tree can only model unavailability at the top).
    v2_cgroup(&mnt, "cpu memory pids");
    v2_cgroup(&mnt.join("a"), "cpu memory");
    v2_hook("cpu memory io pids");

    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/a")), root("b"));
    let cg = gov.create_job(&job("j1"), &all_limits()).unwrap();
    let dir = mnt.join("a/b/j1");

    let io = outcome(&cg, LimitKind::IoMax);
    let error = io.error.as_deref().expect("io limit reported applied");
    assert!(error.contains("not available"), "{error}");
    assert!(error.contains(&mnt.display().to_string()), "{error}");
    assert!(io.files.is_empty(), "{:?}", io.files);
    assert_eq!(read(&dir.join("io.max")), "");
    assert!(!cg.all_applied());
    for kind in [LimitKind::CpuMax, LimitKind::CpuWeight, LimitKind::MemoryMax] {
        assert!(outcome(&cg, kind).applied(), "{:?}", cg.outcomes());
    }
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(&dir.join("memory.max")), "268435456");
    // The hierarchy has no io: no level got +io (the mount point only saw
    // "+cpu", then "+memory").
    assert_eq!(read(&mnt.join("cgroup.subtree_control")), "+memory");
    assert_eq!(read(&mnt.join("a/b/cgroup.subtree_control")), "+memory");
}

#[test]
fn v2_missing_statistics_controller_fails_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("unified");
    v2_cgroup(&mnt, "cpu io pids");
    v2_cgroup(&mnt.join("a"), "cpu io");
    v2_hook("cpu io");

    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/a/b"));
    let limits = Limits {
        cpu_max: Some(CpuMax::parse("30000 50000").unwrap()),
        ..Limits::default()
    };
    let cg = gov.create_job(&job("j1"), &limits).unwrap();
    assert_eq!(cg.outcomes().len(), 1);
    assert!(cg.all_applied(), "{:?}", cg.outcomes());
    assert_eq!(read(&mnt.join("a/b/j1/cpu.max")), "30000 50000");
    // memory (statistics only) is not available at all; cpu went all the way down.
    assert_eq!(read(&mnt.join("a/b/cgroup.subtree_control")), "+cpu");
}

// ---------------------------------------------------------------- v1 limits

#[test]
fn v1_hybrid_puts_each_limit_in_its_hierarchy() {
    let tmp = tempfile::tempdir().unwrap();
    let cpu_mnt = tmp.path().join("cpu,cpuacct");
    let mem_mnt = tmp.path().join("memory");
    let unified = tmp.path().join("unified");
    v1_cgroup(&cpu_mnt, V1_CPU_FILES);
    v1_cgroup(&mem_mnt, V1_MEMORY_FILES);
    v1_cgroup(&mem_mnt.join("process_api/x"), V1_MEMORY_FILES);
    std::fs::create_dir(&unified).unwrap();
    v1_hook(vec![
        (cpu_mnt.clone(), V1_CPU_FILES),
        (mem_mnt.clone(), V1_MEMORY_FILES),
    ]);

    let cpu = mount(cpu_mnt.clone(), "/");
    let controllers = BTreeMap::from([
        (Controller::Cpu, cpu.clone()),
        (Controller::Cpuacct, cpu),
        (Controller::Memory, mount(mem_mnt.clone(), "/process_api/x")),
    ]);
    let gov = Governor::new(
        Hierarchy::Hybrid {
            controllers,
            unified: mount(unified.clone(), "/"),
        },
        root("jobs"),
    );
    assert_eq!(gov.version(), Version::V1);
    assert_eq!(
        gov.root_dirs(),
        [cpu_mnt.join("jobs"), mem_mnt.join("process_api/x/jobs")]
    );

    let cg = gov.create_job(&job("j1"), &all_limits()).unwrap();
    let cpu_dir = cpu_mnt.join("jobs/j1");
    let mem_dir = mem_mnt.join("process_api/x/jobs/j1");
    // One directory per mount: co-mounted cpu,cpuacct share one.
    assert_eq!(cg.dirs(), vec![cpu_dir.as_path(), mem_dir.as_path()]);
    assert_eq!(
        cg.procs_files(),
        [cpu_dir.join("cgroup.procs"), mem_dir.join("cgroup.procs")]
    );
    assert_eq!(read(&cpu_dir.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&cpu_dir.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&cpu_dir.join("cpu.shares")), "2048");
    assert_eq!(read(&mem_dir.join("memory.limit_in_bytes")), "268435456");
    assert_eq!(
        outcome(&cg, LimitKind::CpuMax).files,
        [cpu_dir.join("cpu.cfs_period_us"), cpu_dir.join("cpu.cfs_quota_us")]
    );
    assert_eq!(
        outcome(&cg, LimitKind::MemoryMax).files,
        [mem_dir.join("memory.limit_in_bytes")]
    );
    for kind in [LimitKind::CpuMax, LimitKind::CpuWeight, LimitKind::MemoryMax] {
        assert!(outcome(&cg, kind).applied(), "{:?}", cg.outcomes());
    }
    let io = outcome(&cg, LimitKind::IoMax);
    let error = io.error.as_deref().expect("io limit reported applied");
    assert!(error.contains("not mounted"), "{error}");
    assert!(io.files.is_empty());
    // No relative root resolved against the wrong hierarchy, nothing in cgroup2.
    assert!(!cpu_mnt.join("process_api").exists());
    assert!(!mem_mnt.join("jobs").exists());
    assert_eq!(std::fs::read_dir(&unified).unwrap().count(), 0);
    assert_eq!(get_xattr(&mem_dir, JOB_XATTR).as_deref(), Some("j1"));
}

#[test]
fn v1_legacy_io_limit_goes_to_blkio() {
    let tmp = tempfile::tempdir().unwrap();
    let cpu_mnt = tmp.path().join("cpu");
    let blkio_mnt = tmp.path().join("blkio");
    v1_cgroup(&cpu_mnt, V1_CPU_FILES);
    v1_cgroup(&blkio_mnt, V1_BLKIO_FILES);
    v1_hook(vec![
        (cpu_mnt.clone(), V1_CPU_FILES),
        (blkio_mnt.clone(), V1_BLKIO_FILES),
    ]);
    let controllers = BTreeMap::from([
        (Controller::Cpu, mount(cpu_mnt.clone(), "/")),
        (Controller::Io, mount(blkio_mnt.clone(), "/")),
    ]);
    let gov = Governor::new(Hierarchy::Legacy { controllers }, root("/ffrtmp"));
    // blkio is used only when an io limit asks for it.
    assert_eq!(gov.root_dirs(), [cpu_mnt.join("ffrtmp")]);

    let limits = Limits {
        io_max: vec![IoMax::parse("8:16 rbps=1M wiops=100").unwrap()],
        ..Limits::default()
    };
    let cg = gov.create_job(&job("j1"), &limits).unwrap();
    assert!(cg.all_applied(), "{:?}", cg.outcomes());
    let dir = blkio_mnt.join("ffrtmp/j1");
    assert_eq!(read(&dir.join("blkio.throttle.read_bps_device")), "8:16 1048576");
    assert_eq!(read(&dir.join("blkio.throttle.write_iops_device")), "8:16 100");
    assert_eq!(read(&dir.join("blkio.throttle.write_bps_device")), "");
    assert!(cpu_mnt.join("ffrtmp/j1").is_dir());
}

// ------------------------------------------------------- in use / leftovers

#[test]
fn v2_populated_job_dir_is_in_use_and_nothing_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_owned();
    v2_cgroup(&mnt, "cpu memory io pids");
    v2_cgroup(&mnt.join("ffrtmp"), "cpu memory io pids");
    v2_cgroup(&mnt.join("ffrtmp/j1"), "cpu memory io pids");
    write(&mnt.join("ffrtmp/j1/cgroup.events"), "populated 1\nfrozen 0\n");
    write(&mnt.join("ffrtmp/j1/cpu.max"), "max 100000\n");
    v2_hook("cpu memory io pids");
    let before = snapshot(&mnt);

    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/ffrtmp"));
    let err = gov.create_job(&job("j1"), &all_limits()).unwrap_err();
    let CgroupError::InUse { job: id, dir } = &err else {
        panic!("expected InUse, got {err:?}")
    };
    assert_eq!(id.as_str(), "j1");
    assert_eq!(dir, &mnt.join("ffrtmp/j1"));
    assert!(err.to_string().contains("already in use"), "{err}");
    assert_eq!(snapshot(&mnt), before);
}

#[test]
fn v1_pid_in_one_hierarchy_is_in_use_and_nothing_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let cpu_mnt = tmp.path().join("cpu");
    let mem_mnt = tmp.path().join("memory");
    v1_cgroup(&cpu_mnt, V1_CPU_FILES);
    v1_cgroup(&mem_mnt, V1_MEMORY_FILES);
    v1_cgroup(&mem_mnt.join("ffrtmp/j1"), V1_MEMORY_FILES);
    write(&mem_mnt.join("ffrtmp/j1/cgroup.procs"), "4242\n");
    v1_hook(vec![
        (cpu_mnt.clone(), V1_CPU_FILES),
        (mem_mnt.clone(), V1_MEMORY_FILES),
    ]);
    let before = snapshot(tmp.path());

    let controllers = BTreeMap::from([
        (Controller::Cpu, mount(cpu_mnt.clone(), "/")),
        (Controller::Memory, mount(mem_mnt.clone(), "/")),
    ]);
    let gov = Governor::new(Hierarchy::Legacy { controllers }, root("/ffrtmp"));
    let err = gov.create_job(&job("j1"), &all_limits()).unwrap_err();
    assert!(
        matches!(&err, CgroupError::InUse { dir, .. } if *dir == mem_mnt.join("ffrtmp/j1")),
        "{err:?}"
    );
    // In particular no /ffrtmp in the cpu hierarchy.
    assert_eq!(snapshot(tmp.path()), before);
}

#[test]
fn empty_leftover_is_not_reused() {
    // cgroupfs would rmdir the leftover and make a fresh one; on a fake tree
    // its control files make that rmdir fail. Either way the leftover (with
    // its stale limit) must not be taken over as it is.
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_owned();
    v2_cgroup(&mnt, "cpu memory io pids");
    v2_cgroup(&mnt.join("ffrtmp"), "cpu memory io pids");
    let leftover = mnt.join("ffrtmp/j1");
    v2_cgroup(&leftover, "cpu memory io pids");
    write(&leftover.join("cpu.max"), "12345 100000");
    v2_hook("cpu memory io pids");

    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/ffrtmp"));
    let err = gov.create_job(&job("j1"), &all_limits()).unwrap_err();
    assert!(
        matches!(&err, CgroupError::Fs(FsError::Remove { path, .. }) if *path == leftover),
        "{err:?}"
    );
    assert_eq!(read(&leftover.join("cpu.max")), "12345 100000");
}

#[test]
fn empty_leftover_is_recreated() {
    // A fresh directory replaces the leftover, so no stale limit survives.
    // For the leftover's rmdir to succeed on the fake tree, the "kernel"
    // drops its files once the populated check is done: when the first
    // hierarchy (cpu) gets its directories, before the memory leftover goes.
    let tmp = tempfile::tempdir().unwrap();
    let cpu_mnt = tmp.path().join("cpu");
    let mem_mnt = tmp.path().join("memory");
    v1_cgroup(&cpu_mnt, V1_CPU_FILES);
    v1_cgroup(&mem_mnt, V1_MEMORY_FILES);
    let leftover = mem_mnt.join("ffrtmp/j1");
    v1_cgroup(&leftover, V1_MEMORY_FILES);
    let stale = "99999999999999999999";
    write(&leftover.join("memory.limit_in_bytes"), stale);
    let (cpu_hier, gone) = (cpu_mnt.clone(), leftover.clone());
    fake_kernel::set_mkdir_hook(move |dir| {
        if dir.starts_with(&cpu_hier) {
            v1_cgroup(dir, V1_CPU_FILES);
            if gone.join("cgroup.procs").exists() {
                kernel_forgets_files(&gone);
            }
        } else {
            v1_cgroup(dir, V1_MEMORY_FILES);
        }
    });

    let controllers = BTreeMap::from([
        (Controller::Cpu, mount(cpu_mnt.clone(), "/")),
        (Controller::Memory, mount(mem_mnt.clone(), "/")),
    ]);
    let gov = Governor::new(Hierarchy::Legacy { controllers }, root("/ffrtmp"));
    let limits = Limits {
        memory_max: MemoryMax::parse_mb("256").unwrap(),
        ..Limits::default()
    };
    let cg = gov.create_job(&job("j1"), &limits).unwrap();
    assert!(cg.all_applied(), "{:?}", cg.outcomes());
    assert_eq!(read(&leftover.join("memory.limit_in_bytes")), "268435456");
    assert_eq!(read(&leftover.join("memory.oom_control")), "");
    assert_eq!(get_xattr(&leftover, JOB_XATTR).as_deref(), Some("j1"));
}

#[test]
fn v2_root_removed_by_a_concurrent_run_is_built_again() {
    // Another ffrtmp removes the (empty) root right after our mkdir of it:
    // enabling controllers and the job's mkdir fail (ENOENT), and the chain
    // is built again. The failures of the first try must not stick.
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_owned();
    v2_cgroup(&mnt, "cpu memory io pids");
    let root_dir = mnt.join("ffrtmp");
    let removed = Rc::new(Cell::new(false));
    let (target, flag) = (root_dir.clone(), removed.clone());
    fake_kernel::set_mkdir_hook(move |dir| {
        if dir == target && !flag.replace(true) {
            std::fs::remove_dir(dir).unwrap();
        } else {
            v2_cgroup(dir, "cpu memory io pids");
        }
    });

    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/ffrtmp"));
    let cg = gov.create_job(&job("j1"), &all_limits()).unwrap();
    assert!(removed.get());
    assert!(cg.all_applied(), "{:?}", cg.outcomes());
    assert_eq!(read(&root_dir.join("j1/cpu.max")), "50000 100000");
    assert_eq!(read(&root_dir.join("j1/io.max")), "8:0 rbps=1048576");

    // The root is ours (once): discarding takes it.
    kernel_forgets_files(&root_dir);
    cg.discard();
    assert!(!root_dir.exists());
    assert!(mnt.join("cgroup.procs").is_file());
}

// ------------------------------------------------------------------ removal

#[test]
fn v2_remove_takes_created_ancestors_and_keeps_existing_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_owned();
    v2_cgroup(&mnt, "cpu memory io pids");
    v2_cgroup(&mnt.join("keep"), "cpu memory io pids");
    v2_hook("cpu memory io pids");
    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/keep/a/b"));
    let cg = gov.create_job(&job("j1"), &all_limits()).unwrap();
    let dir = mnt.join("keep/a/b/j1");

    kernel_forgets_files(&mnt.join("keep/a"));
    let removal = cg.remove();
    assert_eq!(removal.removed, [dir]);
    assert!(removal.left.is_empty(), "{:?}", removal.left);
    assert!(!mnt.join("keep/a").exists());
    assert!(mnt.join("keep/cgroup.procs").is_file());
}

#[test]
fn a_governor_keeping_its_root_leaves_it_for_the_next_job() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_owned();
    v2_cgroup(&mnt, "cpu memory io pids");
    v2_cgroup(&mnt.join("keep"), "cpu memory io pids");
    v2_hook("cpu memory io pids");
    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/keep/a/b")).keeping_root();
    let cg = gov.create_job(&job("j1"), &all_limits()).unwrap();
    kernel_forgets_files(&mnt.join("keep/a"));
    let removal = cg.remove();
    assert_eq!(removal.removed, [mnt.join("keep/a/b/j1")]);
    assert!(mnt.join("keep/a/b").is_dir(), "the root is kept");
    let again = gov.create_job(&job("j2"), &Limits::default()).unwrap();
    kernel_forgets_files(&mnt.join("keep/a"));
    again.remove();
    // At the end the kept root and the ancestor it needed go, innermost first;
    // what existed before stays.
    gov.remove_kept_root();
    assert!(!mnt.join("keep/a").exists());
    assert!(mnt.join("keep/cgroup.procs").is_file());
}

/// The watch daemon asks for spares; on v2, where there are none, it still
/// keeps its root.
#[test]
fn a_governor_keeping_spares_keeps_its_root_on_v2_too() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_owned();
    v2_cgroup(&mnt, "cpu memory io pids");
    v2_hook("cpu memory io pids");
    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/keep")).keeping_spares();
    let cg = gov.create_job(&job("j1"), &Limits::default()).unwrap();
    kernel_forgets_files(&mnt.join("keep"));
    assert_eq!(cg.remove().removed, [mnt.join("keep/j1")]);
    assert!(mnt.join("keep").is_dir(), "the root is kept");
    gov.remove_kept_root();
    assert!(!mnt.join("keep").exists());
}

#[test]
fn remove_keeps_ancestors_other_jobs_use() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_owned();
    v2_cgroup(&mnt, "cpu memory io pids");
    v2_hook("cpu memory io pids");
    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/ffrtmp"));
    let first = gov.create_job(&job("j1"), &Limits::default()).unwrap();
    let second = gov.create_job(&job("j2"), &Limits::default()).unwrap();

    kernel_forgets_files(&mnt.join("ffrtmp"));
    let removal = first.remove();
    assert_eq!(removal.removed, [mnt.join("ffrtmp/j1")]);
    assert!(mnt.join("ffrtmp/j2").is_dir());
    let removal = second.remove();
    assert_eq!(removal.removed, [mnt.join("ffrtmp/j2")]);
    // j2 did not create the root: it stays for the next job.
    assert!(mnt.join("ffrtmp").is_dir());
}

#[test]
fn remove_reports_what_it_had_to_leave() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_owned();
    v2_cgroup(&mnt, "cpu memory io pids");
    v2_hook("cpu memory io pids");
    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/ffrtmp"));
    let busy = gov.create_job(&job("busy"), &Limits::default()).unwrap();
    let stuck = gov.create_job(&job("stuck"), &Limits::default()).unwrap();
    write(&mnt.join("ffrtmp/busy/cgroup.events"), "populated 1\n");

    // rmdir fails (ENOTEMPTY here; EBUSY on cgroupfs): the reason is the
    // processes when there are some, else the error itself.
    let removal = busy.remove();
    assert!(removal.removed.is_empty());
    assert_eq!(removal.left.len(), 1);
    assert_eq!(removal.left[0].0, mnt.join("ffrtmp/busy"));
    assert_eq!(removal.left[0].1, "descendant processes still run in it");

    let removal = stuck.remove();
    assert_eq!(removal.left.len(), 1);
    assert_eq!(removal.left[0].0, mnt.join("ffrtmp/stuck"));
    assert!(removal.left[0].1.starts_with("removing "), "{}", removal.left[0].1);
    assert!(mnt.join("ffrtmp/busy").is_dir() && mnt.join("ffrtmp/stuck").is_dir());
}

#[test]
fn v1_discard_removes_everything_it_created() {
    let tmp = tempfile::tempdir().unwrap();
    let cpu_mnt = tmp.path().join("cpu,cpuacct");
    let mem_mnt = tmp.path().join("memory");
    v1_cgroup(&cpu_mnt, V1_CPU_FILES);
    v1_cgroup(&mem_mnt, V1_MEMORY_FILES);
    std::fs::create_dir_all(mem_mnt.join("keep")).unwrap();
    no_files_hook();
    let cpu = mount(cpu_mnt.clone(), "/");
    let controllers = BTreeMap::from([
        (Controller::Cpu, cpu.clone()),
        (Controller::Cpuacct, cpu),
        (Controller::Memory, mount(mem_mnt.clone(), "/keep")),
    ]);
    let gov = Governor::new(Hierarchy::Legacy { controllers }, root("a/b"));
    let before = snapshot(tmp.path());
    let cg = gov.create_job(&job("j1"), &Limits::default()).unwrap();
    assert!(cpu_mnt.join("a/b/j1").is_dir() && mem_mnt.join("keep/a/b/j1").is_dir());
    cg.discard();
    assert_eq!(snapshot(tmp.path()), before);
}

#[test]
fn failed_create_discards_what_it_made() {
    let tmp = tempfile::tempdir().unwrap();
    let cpu_mnt = tmp.path().join("cpu");
    let mem_mnt = tmp.path().join("memory");
    v1_cgroup(&cpu_mnt, V1_CPU_FILES);
    v1_cgroup(&mem_mnt, V1_MEMORY_FILES);
    // An empty leftover in the memory hierarchy that rmdir refuses
    // (ENOTEMPTY on the fake tree); the cpu hierarchy comes first.
    let leftover = mem_mnt.join("ffrtmp/j1");
    v1_cgroup(&leftover, V1_MEMORY_FILES);
    no_files_hook();
    let before = snapshot(tmp.path());

    let controllers = BTreeMap::from([
        (Controller::Cpu, mount(cpu_mnt.clone(), "/")),
        (Controller::Memory, mount(mem_mnt.clone(), "/")),
    ]);
    let gov = Governor::new(Hierarchy::Legacy { controllers }, root("/ffrtmp"));
    let err = gov.create_job(&job("j1"), &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, CgroupError::Fs(FsError::Remove { path, .. }) if *path == leftover),
        "{err:?}"
    );
    assert_eq!(snapshot(tmp.path()), before);
}

// -------------------------------------------------------------------- usage

#[test]
fn v2_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_owned();
    v2_cgroup(&mnt, "cpu memory io pids");
    v2_hook("cpu memory io pids");
    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/ffrtmp"));
    let cg = gov.create_job(&job("j1"), &Limits::default()).unwrap();
    let dir = mnt.join("ffrtmp/j1");
    write(
        &dir.join("cpu.stat"),
        "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\nnr_periods 40\nnr_throttled 3\nthrottled_usec 250000\n",
    );
    write(&dir.join("memory.peak"), "1048576\n");
    write(
        &dir.join("memory.events"),
        "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n",
    );
    assert_eq!(
        cg.usage(),
        Usage {
            cpu_seconds: Some(1.5),
            throttled_periods: Some(3),
            throttled_seconds: Some(0.25),
            memory_peak_bytes: Some(1_048_576),
            oom_kills: Some(1),
            network: None,
        }
    );

    // Before 5.19 there is no memory.peak: just that counter is missing.
    std::fs::remove_file(dir.join("memory.peak")).unwrap();
    let usage = cg.usage();
    assert_eq!(usage.memory_peak_bytes, None);
    assert_eq!(usage.oom_kills, Some(1));
}

#[test]
fn v1_usage_reads_each_hierarchy() {
    let tmp = tempfile::tempdir().unwrap();
    let cpu_mnt = tmp.path().join("cpu");
    let acct_mnt = tmp.path().join("cpuacct");
    let mem_mnt = tmp.path().join("memory");
    v1_cgroup(&cpu_mnt, V1_CPU_FILES);
    v1_cgroup(&acct_mnt, V1_CPUACCT_FILES);
    v1_cgroup(&mem_mnt, V1_MEMORY_FILES);
    v1_hook(vec![
        (cpu_mnt.clone(), V1_CPU_FILES),
        (acct_mnt.clone(), V1_CPUACCT_FILES),
        (mem_mnt.clone(), V1_MEMORY_FILES),
    ]);
    let controllers = BTreeMap::from([
        (Controller::Cpu, mount(cpu_mnt.clone(), "/")),
        (Controller::Cpuacct, mount(acct_mnt.clone(), "/")),
        (Controller::Memory, mount(mem_mnt.clone(), "/")),
    ]);
    let gov = Governor::new(Hierarchy::Legacy { controllers }, root("/ffrtmp"));
    let cg = gov.create_job(&job("j1"), &Limits::default()).unwrap();
    assert_eq!(cg.dirs().len(), 3);
    write(&acct_mnt.join("ffrtmp/j1/cpuacct.usage"), "2500000000\n");
    write(
        &cpu_mnt.join("ffrtmp/j1/cpu.stat"),
        "nr_periods 5\nnr_throttled 2\nthrottled_time 750000000\n",
    );
    write(&mem_mnt.join("ffrtmp/j1/memory.max_usage_in_bytes"), "8192\n");
    write(
        &mem_mnt.join("ffrtmp/j1/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    );
    assert_eq!(
        cg.usage(),
        Usage {
            cpu_seconds: Some(2.5),
            throttled_periods: Some(2),
            throttled_seconds: Some(0.75),
            memory_peak_bytes: Some(8192),
            oom_kills: Some(3),
            network: None,
        }
    );

    // Kernels before 4.13 have no oom_kill line.
    write(
        &mem_mnt.join("ffrtmp/j1/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\n",
    );
    assert_eq!(cg.usage().oom_kills, None);
}

// ------------------------------------------------------------ is_populated

#[test]
fn v1_is_populated_looks_into_child_cgroups() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j1");
    v1_cgroup(&dir, &[]);
    v1_cgroup(&dir.join("sub"), &[]);
    v1_cgroup(&dir.join("sub/deeper"), &[]);
    v1_cgroup(&dir.join("other"), &[]);
    assert!(!is_populated(&dir, Version::V1).unwrap());
    write(&dir.join("sub/deeper/cgroup.procs"), "77\n");
    assert!(is_populated(&dir, Version::V1).unwrap());
    assert!(is_populated(&dir.join("sub"), Version::V1).unwrap());
    assert!(!is_populated(&dir.join("other"), Version::V1).unwrap());
    // A cgroup.procs that cannot be read is an error, not "empty".
    std::fs::remove_file(dir.join("other/cgroup.procs")).unwrap();
    assert!(is_populated(&dir.join("other"), Version::V1).is_err());
}

#[test]
fn v1_job_is_populated_in_any_hierarchy() {
    let tmp = tempfile::tempdir().unwrap();
    let cpu_mnt = tmp.path().join("cpu");
    let mem_mnt = tmp.path().join("memory");
    v1_cgroup(&cpu_mnt, V1_CPU_FILES);
    v1_cgroup(&mem_mnt, V1_MEMORY_FILES);
    v1_hook(vec![
        (cpu_mnt.clone(), V1_CPU_FILES),
        (mem_mnt.clone(), V1_MEMORY_FILES),
    ]);
    let controllers = BTreeMap::from([
        (Controller::Cpu, mount(cpu_mnt.clone(), "/")),
        (Controller::Memory, mount(mem_mnt.clone(), "/")),
    ]);
    let gov = Governor::new(Hierarchy::Legacy { controllers }, root("/ffrtmp"));
    let cg = gov.create_job(&job("j1"), &Limits::default()).unwrap();
    assert!(!cg.is_populated().unwrap());
    v1_cgroup(&mem_mnt.join("ffrtmp/j1/child"), &[]);
    write(&mem_mnt.join("ffrtmp/j1/child/cgroup.procs"), "99\n");
    assert!(cg.is_populated().unwrap());
}

#[test]
fn v2_is_populated_reads_cgroup_events() {
    let tmp = tempfile::tempdir().unwrap();
    v2_cgroup(tmp.path(), "");
    assert!(!is_populated(tmp.path(), Version::V2).unwrap());
    write(&tmp.path().join("cgroup.events"), "populated 1\nfrozen 0\n");
    assert!(is_populated(tmp.path(), Version::V2).unwrap());
}

// ------------------------------------------------------- garbage collection

/// A v2 job cgroup under `root`, marked as `marked` says, `age` old.
fn candidate(root: &Path, name: &str, marked: bool, age: Duration) -> PathBuf {
    let dir = root.join(name);
    v2_cgroup(&dir, "cpu memory");
    if marked {
        set_xattr(&dir, JOB_XATTR, name).unwrap();
    }
    set_age(&dir, age);
    dir
}

#[test]
fn garbage_is_marked_empty_old_and_childless() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_owned();
    let root_dir = mnt.join("ffrtmp");
    v2_cgroup(&mnt, "cpu memory io pids");
    v2_cgroup(&root_dir, "cpu memory io pids");
    let old = Duration::from_secs(60);
    let garbage = candidate(&root_dir, "garbage", true, old);
    let unmarked = candidate(&root_dir, "unmarked", false, old);
    let young = candidate(&root_dir, "young", true, Duration::from_secs(5));
    let populated = candidate(&root_dir, "populated", true, Duration::ZERO);
    write(&populated.join("cgroup.events"), "populated 1\n");
    set_age(&populated, old);
    let parent = candidate(&root_dir, "parent", true, Duration::ZERO);
    v2_cgroup(&parent.join("child"), "");
    set_age(&parent, old);
    let broken = candidate(&root_dir, "broken", true, Duration::ZERO);
    std::fs::remove_file(broken.join("cgroup.events")).unwrap();
    set_age(&broken, old);

    assert!(is_garbage(&garbage, Version::V2));
    for dir in [&unmarked, &young, &populated, &parent, &broken] {
        assert!(!is_garbage(dir, Version::V2), "{} taken for garbage", dir.display());
    }
    assert!(!is_garbage(&root_dir.join("cgroup.procs"), Version::V2));

    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/ffrtmp"));
    let keep = snapshot(&root_dir);
    let removed = gov.collect_garbage();
    // The fake tree's garbage cgroup holds files, so its rmdir fails here
    // (cgroupfs removes it): nothing is reported removed, nothing else touched.
    assert_eq!(removed, Vec::<PathBuf>::new());
    assert_eq!(snapshot(&root_dir), keep);
}

#[test]
fn v1_garbage_collection_spares_populated_and_unmarked() {
    let tmp = tempfile::tempdir().unwrap();
    let cpu_mnt = tmp.path().join("cpu");
    let mem_mnt = tmp.path().join("memory");
    let old = Duration::from_secs(60);
    let v1_candidate = |root: &Path, name: &str, marked: bool, procs: &str| {
        let dir = root.join(name);
        v1_cgroup(&dir, &[]);
        write(&dir.join("cgroup.procs"), procs);
        if marked {
            set_xattr(&dir, JOB_XATTR, name).unwrap();
        }
        set_age(&dir, old);
        dir
    };
    let cpu_root = cpu_mnt.join("ffrtmp");
    let mem_root = mem_mnt.join("ffrtmp");
    let garbage = v1_candidate(&cpu_root, "garbage", true, "");
    let busy = v1_candidate(&cpu_root, "busy", true, "1234\n");
    let foreign = v1_candidate(&mem_root, "foreign", false, "");
    let mem_garbage = v1_candidate(&mem_root, "garbage", true, "");
    assert!(is_garbage(&garbage, Version::V1) && is_garbage(&mem_garbage, Version::V1));
    assert!(!is_garbage(&busy, Version::V1));
    assert!(!is_garbage(&foreign, Version::V1));

    let controllers = BTreeMap::from([
        (Controller::Cpu, mount(cpu_mnt.clone(), "/")),
        (Controller::Memory, mount(mem_mnt.clone(), "/")),
    ]);
    let gov = Governor::new(Hierarchy::Legacy { controllers }, root("/ffrtmp"));
    assert_eq!(gov.root_dirs(), [cpu_root.clone(), mem_root.clone()]);
    let before = snapshot(tmp.path());
    // Only the garbage ones are tried, and their rmdir fails on the fake
    // tree (cgroup.procs is a real file): nothing removed, nothing reported.
    assert!(gov.collect_garbage().is_empty());
    assert_eq!(snapshot(tmp.path()), before);
}

#[test]
fn create_job_marks_its_dir_for_garbage_collection() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().to_owned();
    v2_cgroup(&mnt, "cpu memory io pids");
    v2_hook("cpu memory io pids");
    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/ffrtmp"));
    let _cg = gov.create_job(&job("j1"), &Limits::default()).unwrap();
    let dir = mnt.join("ffrtmp/j1");
    assert_eq!(get_xattr(&dir, JOB_XATTR).as_deref(), Some("j1"));
    assert!(!is_garbage(&dir, Version::V2), "a fresh job is garbage");
    set_age(&dir, Duration::from_secs(31));
    assert!(is_garbage(&dir, Version::V2));
}

#[test]
fn v2_level_holding_processes_is_refused_before_any_write() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("unified");
    v2_cgroup(&mnt, "cpu memory io pids");
    v2_cgroup(&mnt.join("p"), "cpu memory io pids");
    // /p holds a process: cgroup v2 forbids it to delegate controllers.
    std::fs::write(mnt.join("p/cgroup.procs"), "4242\n").unwrap();
    let err = enable_chain(&mount(mnt.clone(), "/"), Path::new("/p/jobs"), Controller::Cpu).unwrap_err();
    assert!(matches!(err, CgroupError::InternalProcesses { .. }), "{err}");
    assert!(err.to_string().contains("holds processes"), "{err}");
    // Nothing was written, not even at the levels above /p.
    assert_eq!(read(&mnt.join("cgroup.subtree_control")), "");
    assert_eq!(read(&mnt.join("p/cgroup.subtree_control")), "");
}

// ------------------------------------------- v1 jobs cut short by a crash

/// A v1 job `auto-x-1` under /ffrtmp in a cpu and a memory hierarchy, old
/// enough to be collected; `cpu_procs`/`mem_procs` are its cgroup.procs.
fn v1_job_split(tmp: &Path, cpu_procs: &str, mem_procs: &str) -> (Governor, PathBuf, PathBuf) {
    let (cpu_mnt, mem_mnt) = (tmp.join("cpu"), tmp.join("memory"));
    let mut dirs = Vec::new();
    for (mnt, procs) in [(&cpu_mnt, cpu_procs), (&mem_mnt, mem_procs)] {
        let dir = mnt.join("ffrtmp/auto-x-1");
        v1_cgroup(&dir, &[]);
        write(&dir.join("cgroup.procs"), procs);
        set_xattr(&dir, JOB_XATTR, "auto-x-1").unwrap();
        set_age(&dir, Duration::from_secs(60));
        dirs.push(dir);
    }
    let controllers = BTreeMap::from([
        (Controller::Cpu, mount(cpu_mnt, "/")),
        (Controller::Memory, mount(mem_mnt, "/")),
    ]);
    let gov = Governor::new(Hierarchy::Legacy { controllers }, root("/ffrtmp"));
    (gov, dirs.remove(0), dirs.remove(0))
}

#[test]
fn a_job_populated_in_one_hierarchy_is_not_garbage_in_any() {
    let tmp = tempfile::tempdir().unwrap();
    // Moved into cpu, crashed before memory: the memory dir is empty, but
    // the job is live.
    let (gov, _, _) = v1_job_split(tmp.path(), "4242\n", "");
    assert_eq!(gov.garbage(), Vec::<PathBuf>::new());
    let tmp = tempfile::tempdir().unwrap();
    let (gov, cpu, mem) = v1_job_split(tmp.path(), "", "");
    assert_eq!(gov.garbage(), [cpu, mem], "empty in both: garbage in both");
}

#[test]
fn the_processes_of_a_job_are_those_of_every_hierarchy() {
    let tmp = tempfile::tempdir().unwrap();
    let (gov, _, mem) = v1_job_split(tmp.path(), "4242\n4243\n", "4243\n");
    let jobs = gov.existing_jobs();
    let [job] = &jobs[..] else { panic!("{jobs:?}") };
    assert_eq!(job.pids(), [4242, 4243]);
    assert!(job.is_populated());
    let outside = job.outside();
    assert_eq!(outside, [(4242, mem.clone(), vec![Controller::Memory])]);
    // Completing the move writes the pid where it is missing (the fake
    // tree's cgroup.procs is a plain file: the write lands at offset 0).
    let completions = job.complete_moves();
    assert_eq!(completions.len(), 1, "{completions:?}");
    assert_eq!(completions[0].pid, 4242);
    assert!(completions[0].result.is_ok(), "{completions:?}");
    assert!(read(&mem.join("cgroup.procs")).starts_with("4242"));
}

#[test]
fn a_v1_move_that_fails_part_way_is_undone() {
    let tmp = tempfile::tempdir().unwrap();
    let (gov, cpu, mem) = v1_job_split(tmp.path(), "", "");
    let cg = gov.existing_jobs().pop().unwrap().into_cgroup();
    // The memory write fails (no cgroup.procs: ENOENT), after the cpu one.
    std::fs::remove_file(mem.join("cgroup.procs")).unwrap();
    // Where this process is in the cpu hierarchy, as /proc/self/cgroup says.
    let me = std::process::id();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let cpu_path = own
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "cpu")
                .then(|| path.trim_start_matches('/').to_string())
        })
        .expect("a cpu line");
    let origin = tmp.path().join("cpu").join(&cpu_path);
    std::fs::create_dir_all(&origin).unwrap();
    write(&origin.join("cgroup.procs"), "");

    let err = cg.add_process(me).unwrap_err();
    assert_eq!(err.moved, std::slice::from_ref(&cpu));
    assert_eq!(err.undo, Ok(()), "{err}");
    assert_eq!(
        read(&cpu.join("cgroup.procs")),
        me.to_string(),
        "it was moved into cpu first"
    );
    assert_eq!(
        read(&origin.join("cgroup.procs")),
        me.to_string(),
        "and back where it was"
    );
    assert_eq!(err.io().kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn unmarked_watch_jobs_are_claimed_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let (gov, cpu, _) = v1_job_split(tmp.path(), "", "");
    // A daemon killed between mkdir and the mark: in one hierarchy only.
    let cut_short = tmp.path().join("cpu/ffrtmp/auto-x-2");
    v1_cgroup(&cut_short, &[]);
    let foreign = tmp.path().join("cpu/ffrtmp/someone-else");
    v1_cgroup(&foreign, &[]);
    let claimed = gov.claim_unmarked("auto-");
    assert_eq!(
        claimed,
        std::slice::from_ref(&cut_short),
        "only the unmarked auto- directory"
    );
    assert_eq!(get_xattr(&cut_short, JOB_XATTR).as_deref(), Some("auto-x-2"));
    assert_eq!(
        get_xattr(&foreign, JOB_XATTR),
        None,
        "another's directory is not touched"
    );
    assert_eq!(
        get_xattr(&cpu, JOB_XATTR).as_deref(),
        Some("auto-x-1"),
        "a marked one stays as it was"
    );
    let ids: Vec<String> = gov.existing_jobs().iter().map(|j| j.id.to_string()).collect();
    assert_eq!(ids, ["auto-x-1", "auto-x-2"]);
}

// ------------------------------------------------- cpuset and the IO weight

fn cpuset_limits(cpus: Option<&str>, mems: Option<&str>) -> Limits {
    Limits {
        cpus: cpus.map(|c| crate::cgroup::limits::CpuList::parse_cpus(c).unwrap()),
        mems: mems.map(|m| crate::cgroup::limits::CpuList::parse_mems(m).unwrap()),
        ..Limits::default()
    }
}

#[test]
fn v1_cpuset_dirs_are_filled_from_the_parent_before_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let cpu_mnt = tmp.path().join("cpu");
    let mem_mnt = tmp.path().join("memory");
    let cpuset_mnt = tmp.path().join("cpuset");
    const CPUSET_FILES: &[&str] = &["cpuset.cpus", "cpuset.mems"];
    v1_cgroup(&cpu_mnt, V1_CPU_FILES);
    v1_cgroup(&mem_mnt, V1_MEMORY_FILES);
    v1_cgroup(&cpuset_mnt, CPUSET_FILES);
    write(&cpuset_mnt.join("cpuset.cpus"), "0-3\n");
    write(&cpuset_mnt.join("cpuset.mems"), "0\n");
    // Like the kernel, a new cpuset cgroup starts with empty lists.
    v1_hook(vec![
        (cpu_mnt.clone(), V1_CPU_FILES),
        (mem_mnt.clone(), V1_MEMORY_FILES),
        (cpuset_mnt.clone(), CPUSET_FILES),
    ]);
    let controllers = BTreeMap::from([
        (Controller::Cpu, mount(cpu_mnt.clone(), "/")),
        (Controller::Memory, mount(mem_mnt.clone(), "/")),
        (Controller::Cpuset, mount(cpuset_mnt.clone(), "/")),
    ]);
    let gov = Governor::new(Hierarchy::Legacy { controllers }, root("jobs"));

    // Only --cpus: the root made on the way and the job get the parent's
    // nodes, and the job its CPUs.
    let cg = gov.create_job(&job("j1"), &cpuset_limits(Some("2-3"), None)).unwrap();
    assert!(cg.all_applied(), "{:?}", cg.outcomes());
    assert_eq!(read(&cpuset_mnt.join("jobs/cpuset.cpus")), "0-3");
    assert_eq!(read(&cpuset_mnt.join("jobs/cpuset.mems")), "0");
    assert_eq!(read(&cpuset_mnt.join("jobs/j1/cpuset.cpus")), "2-3");
    assert_eq!(read(&cpuset_mnt.join("jobs/j1/cpuset.mems")), "0");
    assert_eq!(
        outcome(&cg, LimitKind::Cpus).files,
        [cpuset_mnt.join("jobs/j1/cpuset.cpus")]
    );

    // Without a cpuset limit no cpuset cgroup is made at all.
    let cg = gov.create_job(&job("j2"), &all_limits()).unwrap();
    assert!(!cpuset_mnt.join("jobs/j2").exists());
    assert!(cg.dirs().iter().all(|d| !d.starts_with(&cpuset_mnt)));
}

#[test]
fn v2_cpus_the_kernel_narrows_are_reported_not_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("unified");
    v2_cgroup(&mnt, "cpu memory io pids cpuset");
    fake_kernel::set_mkdir_hook(|dir| {
        v2_cgroup(dir, "cpu memory io pids cpuset");
        for f in ["cpuset.cpus", "cpuset.mems"] {
            write(&dir.join(f), "");
        }
        // What the kernel would compute from a parent with CPUs 0-1.
        write(&dir.join("cpuset.cpus.effective"), "0-1\n");
    });
    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/jobs"));

    let cg = gov.create_job(&job("ok"), &cpuset_limits(Some("1"), None)).unwrap();
    assert!(cg.all_applied(), "{:?}", cg.outcomes());
    assert_eq!(read(&mnt.join("jobs/ok/cpuset.cpus")), "1");

    let cg = gov.create_job(&job("wide"), &cpuset_limits(Some("1-3"), None)).unwrap();
    let error = outcome(&cg, LimitKind::Cpus).error.clone().expect("reported applied");
    assert!(
        error.contains("accepted \"1-3\" but the job gets only \"0-1\""),
        "{error}"
    );
}

#[test]
fn io_weight_goes_to_the_files_the_kernel_offers() {
    let weight = |w: &str| Limits {
        io_weight: Some(crate::cgroup::limits::IoWeight::parse(w).unwrap()),
        ..Limits::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("unified");
    v2_cgroup(&mnt, "cpu memory io pids");
    // iocost's io.weight is there, BFQ's io.bfq.weight is not.
    fake_kernel::set_mkdir_hook(|dir| {
        v2_cgroup(dir, "cpu memory io pids");
        write(&dir.join("io.weight"), "");
    });
    let gov = Governor::new(Hierarchy::Unified(mount(mnt.clone(), "/")), root("/jobs"));
    let cg = gov.create_job(&job("j1"), &weight("50")).unwrap();
    let io = outcome(&cg, LimitKind::IoWeight);
    assert!(io.applied(), "{io:?}");
    assert_eq!(io.files, [mnt.join("jobs/j1/io.weight")]);
    assert_eq!(read(&mnt.join("jobs/j1/io.weight")), "default 50");

    // Neither file: not applied, and why.
    v2_hook("cpu memory io pids");
    let cg = gov.create_job(&job("j2"), &weight("50")).unwrap();
    let io = outcome(&cg, LimitKind::IoWeight);
    let error = io.error.as_deref().expect("reported applied");
    assert!(
        error.contains("offers none of") && error.contains("io.bfq.weight"),
        "{error}"
    );
    assert!(io.files.is_empty());
}
