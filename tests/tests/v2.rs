//! cgroup v2 only: what ffrtmp does on a unified hierarchy, read back from
//! the kernel's files. They run in `cargo xtask vm-test` (Debian 6.1, pure
//! cgroup v2, the test process in the root cgroup). On a v1 host each test
//! returns at once, printing `not applicable: cgroup v1 host (…)`; on a v2
//! host a missing precondition fails under `CI=true`, as everywhere.
//!
//! Each test has its own relative cgroup root ([`TestRoot`]); every process
//! a test starts is killed by PID when the test ends, before the root's
//! cgroups are removed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::{
    Controller, EXIT_TIMEOUT, Host, Output, Spawned, TestDisk, TestRoot, Value, Version, comm, run_ffrtmp, skip,
    stub_bin, wait_until, whole_disk_of,
};

const NOT_APPLICABLE: &str = "not applicable: cgroup v1 host (this v2 test runs in cargo xtask vm-test)";

/// The host when it is cgroup v2 and privileged tests can run; `None` after
/// the `not applicable` line (v1 host) or a skip (a panic under `CI=true`).
fn v2_host() -> Option<&'static Host> {
    if let Ok(host) = Host::detect()
        && host.version == Version::V1
    {
        let test = std::thread::current()
            .name()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        // Past libtest's capture, like `skip`.
        let _ = writeln!(std::io::stderr(), "{NOT_APPLICABLE}{test}");
        return None;
    }
    let host = tests::privileged()?;
    assert_eq!(host.version, Version::V2, "Host::detect and privileged() disagree");
    Some(host)
}

macro_rules! require_v2 {
    () => {
        match v2_host() {
            Some(host) => host,
            None => return,
        }
    };
}

/// Can a relative root get `controller`? Our own cgroup must offer it and,
/// unless it is the root cgroup (exempt from "no internal processes"),
/// already delegate it, since it holds this process. Skips if not.
fn controller_usable(host: &Host, controller: &str) -> bool {
    let own = host.own_dir(Controller::Cpu);
    let read = |f: &str| std::fs::read_to_string(own.join(f)).unwrap_or_default();
    let has = |text: String| text.split_whitespace().any(|c| c == controller);
    let is_root = host
        .mount_for(Controller::Cpu)
        .is_some_and(|m| m.own_cgroup == Path::new("/"));
    if !has(read("cgroup.controllers")) {
        skip(&format!(
            "cgroup v2: the {controller} controller is not available in {}",
            own.display()
        ));
        return false;
    }
    if !is_root && !has(read("cgroup.subtree_control")) {
        skip(&format!(
            "cgroup v2: {} holds this process and does not delegate {controller}",
            own.display()
        ));
        return false;
    }
    true
}

/// The disk for `--io-max` (in the VM the scratch disk), or `None` after a skip.
fn io_disk(host: &Host) -> Option<TestDisk> {
    if !controller_usable(host, "io") {
        return None;
    }
    let disk = tests::test_disk();
    if disk.is_none() {
        skip("/ is not on a block device and FFRTMP_VM_DISK is not set: no disk for io.max");
    }
    disk
}

/// A control file of `dir`, trimmed; panics with the path when unreadable.
#[track_caller]
fn read(dir: &Path, file: &str) -> String {
    let path = dir.join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

/// The cgroup directories below `dir`.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// `ffrtmp run --cgroup-root <cgroup_root> --job-id <job> <flags> -- cat`,
/// running until [`Job::finish`] closes cat's stdin.
struct Job {
    ffrtmp: Spawned,
    /// The job's cgroup directory.
    dir: PathBuf,
}

impl Job {
    /// Start it and wait until cat has exec'd inside the job cgroup.
    #[track_caller]
    fn start(root: &TestRoot, sub: &str, job: &str, flags: &[&str]) -> Job {
        let cgroup_root = if sub.is_empty() {
            root.name().to_owned()
        } else {
            format!("{}/{sub}", root.name())
        };
        let mut args = vec!["run", "--cgroup-root", &cgroup_root, "--job-id", job];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "cat"]);
        let ffrtmp = Spawned::start(tests::ffrtmp(&args));
        let dir = root.dir(Controller::Cpu).join(sub).join(job);
        let procs = || -> Vec<u32> {
            std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        };
        let started = wait_until(tests::POLL_TIMEOUT, || {
            procs().iter().any(|&p| comm(p).as_deref() == Some("cat")) || !ffrtmp.running()
        });
        assert!(
            started && ffrtmp.running(),
            "job {job} never got its cat into {}; stderr: {}",
            dir.display(),
            ffrtmp.stderr_now()
        );
        Job { ffrtmp, dir }
    }

    /// EOF to cat; ffrtmp must exit 0.
    #[track_caller]
    fn finish(mut self) -> Output {
        self.ffrtmp.close_stdin();
        let out = self.ffrtmp.wait(EXIT_TIMEOUT);
        assert_eq!(out.code(), 0, "{out:?}");
        out
    }
}

/// The JSON result written with `--result-file`.
#[track_caller]
fn result_file(path: &Path, out: &Output) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading the result file {}: {e}; {out:?}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the result file is not JSON ({e}): {text}"))
}

/// Every level from the cgroup2 mount down to the job's parent (the
/// `--cgroup-root`) delegates cpu, memory and io in `cgroup.subtree_control`,
/// so the job has them; read while the job runs. The root is two levels
/// below the test root, so ffrtmp creates three levels and enables them
/// top-down.
#[test]
fn v2_controllers_enabled_top_down() {
    let host = require_v2!();
    let Some(disk) = io_disk(host) else { return };
    let root = TestRoot::new(host);
    let io = format!("{} wbps=10M", disk.dev);
    let job = Job::start(
        &root,
        "tier/jobs",
        "td",
        &["--cpu-quota", "50", "--memory-limit", "64", "--io-max", &io],
    );
    let mount = host
        .mount_for(Controller::Cpu)
        .expect("the cgroup2 mount")
        .mount_point
        .clone();
    let parent = job.dir.parent().expect("the job's parent").to_path_buf();
    let mut levels = Vec::new();
    let mut dir = parent.as_path();
    loop {
        levels.push(dir.to_path_buf());
        if dir == mount {
            break;
        }
        dir = dir
            .parent()
            .unwrap_or_else(|| panic!("{} is not below {}", parent.display(), mount.display()));
    }
    levels.reverse();
    assert!(levels.len() >= 4, "mount, test root, tier, jobs: {levels:?}");
    let mut missing = Vec::new();
    for level in &levels {
        let control = read(level, "cgroup.subtree_control");
        for c in ["cpu", "memory", "io"] {
            if !words(&control).contains(&c) {
                missing.push(format!(
                    "{}: {c} not in {control:?}",
                    level.join("cgroup.subtree_control").display()
                ));
            }
        }
    }
    let available = read(&job.dir, "cgroup.controllers");
    for c in ["cpu", "memory", "io"] {
        if !words(&available).contains(&c) {
            missing.push(format!(
                "{}: {c} not in {available:?}",
                job.dir.join("cgroup.controllers").display()
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "controllers not enabled top-down:\n{}",
        missing.join("\n")
    );
    // The job is a leaf holding processes: it enables nothing itself.
    assert_eq!(read(&job.dir, "cgroup.subtree_control"), "");
    let out = job.finish();
    assert!(out.summary_line().contains("reason=completed_successfully"), "{out:?}");
    root.assert_job_gone("tier/jobs/td");
}

/// The root given is below a cgroup P that holds a process. cgroup v2 lets
/// no cgroup holding processes hand controllers to its children (EBUSY for
/// domain controllers; `cpu`, a threaded controller, would be accepted but
/// would turn P into a thread root whose new children can hold no process),
/// so ffrtmp must not enable controllers in P. Expected: the error names P's
/// `cgroup.subtree_control` and says it holds processes; best effort runs
/// the workload and reports `limit_apply_failed`; `--strict` exits 125
/// without running it; either way P is left as it was (same processes,
/// nothing enabled, still a domain, no cgroup below it).
#[test]
fn v2_ebusy_reported_clearly() {
    let host = require_v2!();
    let root = TestRoot::new(host);
    let top = root.dir(Controller::Cpu);
    std::fs::create_dir(&top).unwrap_or_else(|e| panic!("mkdir {}: {e}", top.display()));
    let tmp = tempfile::tempdir().expect("a temp dir");
    let mut problems = Vec::new();
    for strict in [true, false] {
        let name = if strict { "busy-strict" } else { "busy" };
        let p = top.join(name);
        std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        // Our own sleep, moved into P (one pid per write). Dropped (killed)
        // at the end of the iteration, before `root` removes P.
        let sleeper = Spawned::start_with_stdin(Command::new("sleep").arg("600"), Stdio::null());
        std::fs::write(p.join("cgroup.procs"), sleeper.pid().to_string())
            .unwrap_or_else(|e| panic!("moving {} into {}: {e}", sleeper.pid(), p.display()));
        let procs_before = read(&p, "cgroup.procs");
        assert_eq!(procs_before, sleeper.pid().to_string());
        let type_before = read(&p, "cgroup.type");

        let marker = tmp.path().join(format!("{name}.ran"));
        let result = tmp.path().join(format!("{name}.json"));
        let cgroup_root = format!("{}/{name}/jobs", root.name());
        let mut args = vec![
            "run",
            "--cgroup-root",
            &cgroup_root,
            "--job-id",
            "eb",
            "--cpu-quota",
            "50",
        ];
        if strict {
            args.push("--strict");
        }
        let (marker_arg, result_arg) = (marker.to_str().expect("UTF-8"), result.to_str().expect("UTF-8"));
        args.extend_from_slice(&["--result-file", result_arg, "--", "touch", marker_arg]);
        let out = run_ffrtmp(&args);

        let file = p.join("cgroup.subtree_control");
        let file_shown = file.display().to_string();
        let clear = |text: &str| text.contains("holds processes") && text.contains(&file_shown);
        let case = if strict { "--strict" } else { "best effort" };
        if strict {
            if out.status.code() != Some(125) {
                problems.push(format!("{case}: expected exit 125: {out:?}"));
            }
            if !clear(&out.stderr) {
                problems.push(format!(
                    "{case}: the error should say that {file_shown}'s cgroup holds processes: stderr {:?}",
                    out.stderr
                ));
            }
            if marker.exists() {
                problems.push(format!("{case}: refused, yet the workload ran"));
            }
        } else {
            if out.status.code() != Some(0) || !marker.exists() {
                problems.push(format!(
                    "{case}: the workload should run (ungoverned by the failed limit) and exit 0: ran {}, {out:?}",
                    marker.exists()
                ));
            }
            if result.exists() {
                let json = result_file(&result, &out);
                if json["platform_sla_reason"] != "limit_apply_failed" {
                    problems.push(format!("{case}: reason should be limit_apply_failed: {json}"));
                }
                let failed = json["limits"]["failed"].as_array().cloned().unwrap_or_default();
                let cpu = failed.iter().find(|f| f["limit"] == "cpu_max");
                match cpu.and_then(|f| f["error"].as_str()) {
                    Some(error) if clear(error) => {}
                    _ => problems.push(format!(
                        "{case}: limits.failed should hold cpu_max with an error naming {file_shown} and saying it holds processes: {json}"
                    )),
                }
            } else {
                problems.push(format!("{case}: no result file: {out:?}"));
            }
        }
        // P is as it was.
        let left = subdirs(&p);
        if !left.is_empty() {
            problems.push(format!("{case}: left behind in P: {left:?}"));
        }
        let enabled = read(&p, "cgroup.subtree_control");
        if !enabled.is_empty() {
            problems.push(format!(
                "{case}: {file_shown} was changed to {enabled:?} (cgroup.type now {:?})",
                read(&p, "cgroup.type")
            ));
        }
        let type_after = read(&p, "cgroup.type");
        if type_after != type_before {
            problems.push(format!(
                "{case}: {}/cgroup.type changed from {type_before:?} to {type_after:?}",
                p.display()
            ));
        }
        let procs_after = read(&p, "cgroup.procs");
        if procs_after != procs_before {
            problems.push(format!(
                "{case}: P's processes changed: {procs_before:?} → {procs_after:?}"
            ));
        }
        drop(sleeper);
    }
    assert!(
        problems.is_empty(),
        "a --cgroup-root below a cgroup holding processes:\n{}",
        problems.join("\n")
    );
}

/// `run` starts its child with `clone3(CLONE_INTO_CGROUP)`: the result says
/// so, and the child's first read of `/proc/self/cgroup` (cat's only
/// action) already shows the job cgroup.
#[test]
fn v2_run_spawns_with_clone_into_cgroup() {
    let host = require_v2!();
    let root = TestRoot::new(host);
    let tmp = tempfile::tempdir().expect("a temp dir");
    let result = tmp.path().join("result.json");
    let out = run_ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "born",
        "--cpu-quota",
        "50",
        "--result-file",
        result.to_str().expect("UTF-8"),
        "--",
        "cat",
        "/proc/self/cgroup",
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    // cat's output, then (after it exited) ffrtmp's text report.
    let expected = format!("0::{}", root.job_cgroup(Controller::Cpu, "born"));
    let cgroup_lines: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("0::")).collect();
    assert_eq!(
        (out.stdout.lines().next(), cgroup_lines),
        (Some(expected.as_str()), vec![expected.as_str()]),
        "the child's /proc/self/cgroup: {out:?}"
    );
    let json = result_file(&result, &out);
    assert_eq!(json["cgroup"]["joined_by"], "clone_into_cgroup", "{json}");
    assert_eq!(json["platform_sla_reason"], "completed_successfully", "{json}");
    root.assert_job_gone("born");
}

/// The v2 files hold exactly what was asked, read while the job runs.
#[test]
fn v2_limit_file_contents() {
    let host = require_v2!();
    let Some(disk) = io_disk(host) else { return };
    let root = TestRoot::new(host);
    let io = format!("{} rbps=1M wbps=2M", disk.dev);
    let job = Job::start(
        &root,
        "",
        "files",
        &[
            "--cpu-quota",
            "50",
            "--cpu-weight",
            "50",
            "--memory-max",
            "100M",
            "--io-max",
            &io,
        ],
    );
    assert_eq!(read(&job.dir, "cpu.max"), "50000 100000");
    assert_eq!(read(&job.dir, "cpu.weight"), "50");
    assert_eq!(read(&job.dir, "memory.max"), (100u64 << 20).to_string());
    let io_max = read(&job.dir, "io.max");
    assert_eq!(
        io_max.lines().collect::<Vec<_>>(),
        vec![format!("{} rbps=1048576 wbps=2097152 riops=max wiops=max", disk.dev)],
        "io.max"
    );
    job.finish();
    root.assert_job_gone("files");
}

/// One run of the O_DIRECT writer under ffrtmp: its bytes per second.
#[track_caller]
fn direct_write_bps(root: &TestRoot, job: &str, target: &Path, bytes: u64, flags: &[&str]) -> f64 {
    let writer = stub_bin("stub-dwrite");
    let bytes = bytes.to_string();
    let mut args = vec!["run", "--cgroup-root", root.name(), "--job-id", job, "--strict"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[
        "--",
        writer.to_str().expect("UTF-8"),
        target.to_str().expect("UTF-8"),
        &bytes,
    ]);
    let out = Spawned::start_with_stdin(tests::ffrtmp(&args), Stdio::null()).wait(Duration::from_secs(60));
    assert_eq!(out.code(), 0, "{out:?}");
    out.stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bps=")?.parse().ok())
        .unwrap_or_else(|| panic!("no bps= from the writer: {out:?}"))
}

/// `io.max wbps=1M` really throttles direct writes to the disk: measured
/// in the same test with and without the limit.
#[test]
fn v2_io_max_really_throttles() {
    let host = require_v2!();
    let Some(disk) = io_disk(host) else { return };
    let root = TestRoot::new(host);
    // The scratch disk itself; on a v2 host with / on a disk, a file on it.
    let scratch_dir;
    let target = if disk.scratch {
        disk.path.clone()
    } else {
        let Some(dir) = ["/var/tmp", "/tmp"]
            .into_iter()
            .find(|d| whole_disk_of(Path::new(d)).as_ref() == Some(&disk.dev))
        else {
            skip(&format!(
                "no scratch disk (FFRTMP_VM_DISK) and no temp dir on {}",
                disk.dev
            ));
            return;
        };
        scratch_dir = tempfile::tempdir_in(dir).expect("a temp dir on the disk");
        scratch_dir.path().join("direct-writes")
    };
    const LIMIT: f64 = (1u64 << 20) as f64;
    const BYTES: u64 = 4 << 20;
    let limit = format!("{} wbps=1M", disk.dev);
    let limited = direct_write_bps(&root, "io-limited", &target, BYTES, &["--io-max", &limit]);
    let free = direct_write_bps(&root, "io-free", &target, BYTES, &[]);
    eprintln!(
        "direct writes of {} MiB to {}: {:.2} MiB/s under wbps=1M, {:.2} MiB/s without",
        BYTES >> 20,
        target.display(),
        limited / LIMIT,
        free / LIMIT
    );
    assert!(
        limited <= 1.3 * LIMIT,
        "{:.2} MiB/s under a 1 MiB/s io.max: not throttled",
        limited / LIMIT
    );
    assert!(
        free >= 4.0 * limited,
        "without the limit {:.2} MiB/s, with it {:.2} MiB/s: the difference should be large",
        free / LIMIT,
        limited / LIMIT
    );
    root.assert_job_gone("io-limited");
    root.assert_job_gone("io-free");
}

/// A job that touches more than `memory.max` is OOM-killed by the kernel
/// and reported as such (from `memory.events`).
#[test]
fn v2_memory_max_oom_is_reported() {
    let host = require_v2!();
    let root = TestRoot::new(host);
    let tmp = tempfile::tempdir().expect("a temp dir");
    let result = tmp.path().join("result.json");
    let stub = stub_bin("stub-mem");
    let out = Spawned::start_with_stdin(
        tests::ffrtmp(&[
            "run",
            "--cgroup-root",
            root.name(),
            "--job-id",
            "oom",
            "--memory-max",
            "32M",
            "--result-file",
            result.to_str().expect("UTF-8"),
            "--",
            stub.to_str().expect("UTF-8"),
            "128",
        ]),
        Stdio::null(),
    )
    .wait(Duration::from_secs(60));
    assert_eq!(out.code(), 137, "SIGKILL by the OOM killer: {out:?}");
    assert!(!out.stdout.contains("done"), "the stub got all its memory: {out:?}");
    let json = result_file(&result, &out);
    assert_eq!(json["platform_sla_reason"], "oom_killed", "{json}");
    assert_eq!(json["platform_sla_compliant"], false, "{json}");
    assert_eq!(json["exit_code"], 137, "{json}");
    assert_eq!(json["signal"], 9, "{json}");
    let kills = json["usage"]["oom_kills"].as_u64();
    assert!(kills.is_some_and(|k| k >= 1), "usage.oom_kills: {json}");
    let summary = out.summary_line();
    assert!(
        summary.contains("sla=VIOLATION") && summary.contains("reason=oom_killed") && summary.contains("exit=137"),
        "{summary}"
    );
    root.assert_job_gone("oom");
}

/// `usage.memory_peak_bytes` (v2 `memory.peak`, Linux 5.19+) covers what the
/// job touched; on an older kernel, whose job cgroup has no `memory.peak`
/// (the stub looks), it is `null`, never a made-up figure.
#[test]
fn v2_memory_peak_in_result() {
    let host = require_v2!();
    let root = TestRoot::new(host);
    let tmp = tempfile::tempdir().expect("a temp dir");
    let result = tmp.path().join("result.json");
    let stub = stub_bin("stub-mem");
    const MIB: u64 = 48;
    const MAX: u64 = 256 << 20;
    let out = Spawned::start_with_stdin(
        tests::ffrtmp(&[
            "run",
            "--cgroup-root",
            root.name(),
            "--job-id",
            "peak",
            "--memory-max",
            &MAX.to_string(),
            "--result-file",
            result.to_str().expect("UTF-8"),
            "--",
            stub.to_str().expect("UTF-8"),
            &MIB.to_string(),
        ]),
        Stdio::null(),
    )
    .wait(Duration::from_secs(60));
    assert_eq!(out.code(), 0, "{out:?}");
    let touched = MIB << 20;
    assert!(out.stdout.contains(&format!("done {touched}")), "{out:?}");
    let json = result_file(&result, &out);
    assert_eq!(json["platform_sla_reason"], "completed_successfully", "{json}");
    if out.stdout.contains("memory.peak no") {
        eprintln!("note: this kernel has no memory.peak (before 5.19): memory_peak_bytes must be null");
        assert_eq!(json["usage"]["memory_peak_bytes"], tests::Value::Null, "{json}");
        assert_eq!(json["usage"]["oom_kills"], 0, "{json}");
        root.assert_job_gone("peak");
        return;
    }
    assert!(out.stdout.contains("memory.peak yes"), "the stub says nothing: {out:?}");
    let peak = json["usage"]["memory_peak_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("usage.memory_peak_bytes missing: {json}"));
    assert!(
        (touched..=MAX).contains(&peak),
        "memory_peak_bytes {peak}: expected between the {touched} bytes touched and memory.max {MAX}: {json}"
    );
    assert_eq!(json["usage"]["oom_kills"], 0, "{json}");
    root.assert_job_gone("peak");
}

/// `/bin/sleep` copied to `dir/name`: a target whose comm and argv[0]
/// are `name`.
fn sleep_named(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    tests::copy_executable(Path::new("/bin/sleep"), &path);
    path
}

/// `path 600`: a target that sleeps until killed (when dropped).
fn sleeping(path: &Path) -> Spawned {
    let mut c = Command::new(path);
    c.arg("600");
    Spawned::start_with_stdin(c, Stdio::null())
}

/// A unit cgroup as systemd's `Delegate=yes` makes it: `unit` under the test
/// root, `cpu` handed down to it. And a target program of a unique name.
struct DelegatedUnit {
    root: TestRoot,
    unit: PathBuf,
    name: String,
    target_path: PathBuf,
    _stubs: tempfile::TempDir,
}

impl DelegatedUnit {
    fn new(host: &'static tests::Host) -> DelegatedUnit {
        let root = TestRoot::new(host);
        let unit = root.dir(Controller::Cpu).join("unit");
        std::fs::create_dir_all(&unit).unwrap_or_else(|e| panic!("creating {}: {e}", unit.display()));
        // The root delegates cpu to the unit, as a systemd slice would.
        for (dir, control) in [
            (host.own_dir(Controller::Cpu), "+cpu"),
            (root.dir(Controller::Cpu), "+cpu"),
        ] {
            let file = dir.join("cgroup.subtree_control");
            if !read(&dir, "cgroup.subtree_control")
                .split_whitespace()
                .any(|c| c == "cpu")
            {
                std::fs::write(&file, control)
                    .unwrap_or_else(|e| panic!("writing {control} to {}: {e}", file.display()));
            }
        }
        let stubs = tempfile::tempdir().expect("a temp dir");
        let name = format!("fd{:x}", std::process::id());
        let target_path = sleep_named(stubs.path(), &name);
        DelegatedUnit {
            root,
            unit,
            name,
            target_path,
            _stubs: stubs,
        }
    }

    /// `ffrtmp watch --delegated --cgroup-root jobs` started in `cgroup`
    /// (the unit's, or its leaf `daemon`), as systemd starts the unit.
    fn start_daemon(&self, cgroup: &Path) -> Spawned {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec {} watch --delegated --cgroup-root jobs --backend ebpf --target {} --cpu-quota 20",
            cgroup.display(),
            tests::ffrtmp_bin().display(),
            self.name
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", &script])
            .env("FFRTMP_LOG", "info")
            .env_remove("FFRTMP_CGROUP_ROOT");
        let daemon = Spawned::start_with_stdin(cmd, Stdio::null());
        let ready = wait_until(tests::POLL_TIMEOUT, || {
            daemon.stderr_now().contains("Event source:") || !daemon.running()
        });
        assert!(
            ready && daemon.running(),
            "the daemon did not start: {}",
            daemon.stderr_now()
        );
        daemon
    }

    fn target(&self) -> Spawned {
        sleeping(&self.target_path)
    }
}

/// Wait until `pid` is in the job cgroup `job` (a directory).
#[track_caller]
fn assert_lands_in(job: &Path, pid: u32, daemon: &Spawned) {
    let governed = wait_until(tests::POLL_TIMEOUT, || {
        std::fs::read_to_string(job.join("cgroup.procs"))
            .is_ok_and(|p| p.split_whitespace().any(|p| p == pid.to_string()))
    });
    assert!(
        governed,
        "{pid} is not in {}; log: {}",
        job.display(),
        daemon.stderr_now()
    );
}

/// `ffrtmp watch --delegated` started by systemd 254+ with
/// `DelegateSubgroup=daemon`: in the leaf `daemon` of its unit's cgroup. The
/// unit's cgroup holds no process and hands controllers to the relative job
/// root `jobs` beside the daemon; every job stays inside the unit's subtree,
/// and a restart in the leaf while a job runs takes it over.
#[test]
fn v2_delegated_watch_in_its_leaf_keeps_jobs_in_its_unit() {
    let host = require_v2!();
    if !controller_usable(host, "cpu") {
        return;
    }
    let u = DelegatedUnit::new(host);
    let leaf = u.unit.join("daemon");
    std::fs::create_dir(&leaf).expect("the leaf");
    let daemon = u.start_daemon(&leaf);
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", daemon.pid())).expect("the daemon's cgroup");
    assert!(
        own.trim_end().ends_with(&format!("/{}/unit/daemon", u.root.name())),
        "the daemon is not in the leaf: {own}; log: {}",
        daemon.stderr_now()
    );
    assert!(
        daemon.stderr_now().contains("Delegated cgroup: started in the leaf"),
        "{}",
        daemon.stderr_now()
    );

    let target = u.target();
    let job = u.unit.join("jobs").join(format!("auto-{}-{}", u.name, target.pid()));
    assert_lands_in(&job, target.pid(), &daemon);
    assert_eq!(read(&job, "cpu.max"), "20000 100000");
    // The unit cgroup itself holds no process (the no-internal-processes rule).
    assert_eq!(read(&u.unit, "cgroup.procs"), "");

    // The unit's cgroup now hands controllers to jobs/, so the kernel
    // refuses any process in it: why a daemon started there (systemd
    // before 254) must not put its jobs below it.
    daemon.kill();
    let refused = std::fs::write(u.unit.join("cgroup.procs"), std::process::id().to_string());
    assert_eq!(
        refused.as_ref().map_err(|e| e.raw_os_error()),
        Err(Some(libc::EBUSY)),
        "joining the unit cgroup should be refused"
    );
    // A restart in the leaf takes the job over, still resolving `jobs`
    // against the unit's cgroup.
    let restarted = u.start_daemon(&leaf);
    let line = format!("Re-attached to PID {}", target.pid());
    let retaken = wait_until(tests::POLL_TIMEOUT, || {
        restarted.stderr_now().contains(&line) || !restarted.running()
    });
    assert!(
        retaken,
        "the restarted daemon did not take the job over: {}",
        restarted.stderr_now()
    );
    assert_lands_in(&job, target.pid(), &restarted);
    target.kill();
    restarted.kill();
}

/// `ffrtmp watch --delegated` started in its unit's cgroup itself, as
/// systemd before 254 does (it ignores `DelegateSubgroup=`): the daemon
/// stays there, its jobs go to the absolute root `/ffrtmp` (the unit's
/// cgroup hands no controllers down), and a restart in the unit's cgroup
/// while a job runs works and takes the job over. In the vm-test guest only:
/// it creates `/ffrtmp` at the top of the hierarchy.
#[test]
fn v2_delegated_watch_started_in_its_unit_keeps_jobs_out_of_it() {
    let host = require_v2!();
    if !tests::vm_guest_only("creates /ffrtmp at the top of the cgroup tree") {
        return;
    }
    if !controller_usable(host, "cpu") {
        return;
    }
    let u = DelegatedUnit::new(host);
    let daemon = u.start_daemon(&u.unit);
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", daemon.pid())).expect("the daemon's cgroup");
    assert!(
        own.trim_end().ends_with(&format!("/{}/unit", u.root.name())),
        "the daemon left its unit's cgroup: {own}; log: {}",
        daemon.stderr_now()
    );
    assert!(
        daemon
            .stderr_now()
            .contains("not in its leaf daemon (DelegateSubgroup=daemon needs systemd 254+): jobs go to /ffrtmp instead of the relative root jobs"),
        "{}",
        daemon.stderr_now()
    );

    let target = u.target();
    let top = Path::new("/sys/fs/cgroup/ffrtmp");
    let job = top.join(format!("auto-{}-{}", u.name, target.pid()));
    assert_lands_in(&job, target.pid(), &daemon);
    assert_eq!(read(&job, "cpu.max"), "20000 100000");
    assert_eq!(
        read(&u.unit, "cgroup.subtree_control"),
        "",
        "the unit hands nothing down"
    );
    assert!(!u.unit.join("jobs").exists(), "no job root inside the unit");

    // A restart in the unit's cgroup while the job runs: allowed, and the
    // job is taken over.
    daemon.kill();
    let restarted = u.start_daemon(&u.unit);
    let line = format!("Re-attached to PID {}", target.pid());
    let retaken = wait_until(tests::POLL_TIMEOUT, || {
        restarted.stderr_now().contains(&line) || !restarted.running()
    });
    assert!(
        retaken,
        "the restarted daemon did not take the job over: {}",
        restarted.stderr_now()
    );
    assert_lands_in(&job, target.pid(), &restarted);
    target.kill();
    // The daemon removes the job when its process is gone.
    let removed = wait_until(tests::POLL_TIMEOUT, || !job.exists());
    restarted.kill();
    let _ = std::fs::remove_dir(&job);
    let _ = std::fs::remove_dir(top);
    assert!(removed, "{} was not removed after its process exited", job.display());
}

/// The cgroup2 mount's root options put back when dropped (VM guest only).
struct RestoreRootOptions {
    mount: ffrtmp::cgroup::dynmods::Cgroup2Mount,
    data: String,
}

impl RestoreRootOptions {
    /// Remount the cgroup2 mount with exactly the root options `data`.
    fn set(data: &str) -> RestoreRootOptions {
        use ffrtmp::cgroup::dynmods;
        assert!(tests::in_vm_guest(), "remounting outside the VM guest");
        let mount = dynmods::detect()
            .expect("detecting the cgroup2 mount")
            .cgroup2
            .expect("the guest mounts cgroup2");
        let before = dynmods::remount_for(&mount).expect("its remount").data;
        let mut remount = dynmods::remount_for(&mount).expect("its remount");
        remount.data = data.to_owned();
        dynmods::remount(&remount).unwrap_or_else(|e| panic!("remounting with {data}: {e}"));
        RestoreRootOptions { mount, data: before }
    }
}

impl Drop for RestoreRootOptions {
    fn drop(&mut self) {
        use ffrtmp::cgroup::dynmods;
        if let Ok(mut remount) = dynmods::remount_for(&self.mount) {
            remount.data = self.data.clone();
            if let Err(e) = dynmods::remount(&remount) {
                eprintln!("restoring the cgroup2 options {}: {e}", self.data);
            }
        }
    }
}

/// `ffrtmp watch` started in a cgroup namespace of its own (what podman and
/// containerd give a container on cgroup v2) while PID 1 is the host's: it
/// joins PID 1's namespace before anything else, so that with `nsdelegate`
/// (systemd's mount option) the kernel lets it move processes outside the
/// namespace it was started in, and a relative root is resolved against its
/// real cgroup. In the vm-test guest only (it remounts cgroup2).
#[test]
fn v2_watch_started_in_a_cgroup_namespace_joins_the_hosts() {
    let host = require_v2!();
    if !tests::vm_guest_only("remounts cgroup2 with nsdelegate") {
        return;
    }
    if !controller_usable(host, "cpu") {
        return;
    }
    let _options = RestoreRootOptions::set("nsdelegate");
    let root = TestRoot::new(host);
    let stubs = tempfile::tempdir().expect("a temp dir");
    let name = format!("ns{:x}", std::process::id());
    let target_path = sleep_named(stubs.path(), &name);

    let mut cmd = tests::ffrtmp(&[
        "watch",
        "--backend",
        "ebpf",
        "--cgroup-root",
        root.name(),
        "--target",
        &name,
        "--cpu-quota",
        "20",
    ]);
    cmd.env("FFRTMP_LOG", "info");
    tests::in_new_cgroup_namespace(&mut cmd);
    let daemon = Spawned::start_with_stdin(cmd, Stdio::null());
    let ready = wait_until(tests::POLL_TIMEOUT, || {
        daemon.stderr_now().contains("Event source:") || !daemon.running()
    });
    assert!(
        ready && daemon.running(),
        "the daemon did not start: {}",
        daemon.stderr_now()
    );
    assert!(
        daemon.stderr_now().contains("Joined the host's cgroup namespace"),
        "{}",
        daemon.stderr_now()
    );

    let target = sleeping(&target_path);
    let job = root.dir(Controller::Cpu).join(format!("auto-{name}-{}", target.pid()));
    assert_lands_in(&job, target.pid(), &daemon);
    assert_eq!(read(&job, "cpu.max"), "20000 100000");
    target.kill();
    daemon.kill();
}
