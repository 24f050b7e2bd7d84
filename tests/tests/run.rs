//! `ffrtmp run` against the host's real cgroups (root only; each test has
//! its own relative cgroup root, so they run in parallel).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tests::{
    Clone3Refused, Controller, EXIT_TIMEOUT, ForbiddenDirs, Host, Output, PidGuard, Signal, Spawned, TestDisk,
    TestRoot, Value, Version, comm, cpus_allowed, descendants, ffrtmp, ioprio_of, missing_block_device, nice_of,
    on_path, proc_state, require_privileged, run_ffrtmp, skip, stub_bin, threads, unique_name, wait_until,
};

/// `ffrtmp run --cgroup-root <root> --job-id <job> <flags> -- cat`: the
/// workload blocks reading our stdin pipe until [`Job::finish`]. Returns once
/// the workload sits in its cgroup.
struct Job {
    ffrtmp: Spawned,
    pid: u32,
}

impl Job {
    #[track_caller]
    fn start(root: &TestRoot, job: &str, flags: &[&str]) -> Job {
        let mut args = vec!["run", "--cgroup-root", root.name(), "--job-id", job];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "cat"]);
        let ffrtmp = Spawned::start(tests::ffrtmp(&args));
        // Ready once cat has exec'd inside the cgroup: whatever ffrtmp does
        // between fork and exec (joining, nice) is done by then.
        let mut pid = None;
        let joined = wait_until(tests::POLL_TIMEOUT, || {
            pid = root
                .procs(Controller::Cpu, job)
                .into_iter()
                .find(|&p| comm(p).as_deref() == Some("cat"));
            pid.is_some() || !ffrtmp.running()
        });
        let Some(pid) = pid.filter(|_| joined) else {
            panic!("job {job} never got a process; stderr: {}", ffrtmp.stderr_now());
        };
        Job { ffrtmp, pid }
    }

    /// Let the workload end (EOF on its stdin) and wait for ffrtmp.
    #[track_caller]
    fn finish(mut self) -> Output {
        self.ffrtmp.close_stdin();
        let out = self.ffrtmp.wait(EXIT_TIMEOUT);
        assert_eq!(out.code(), 0, "{out:?}");
        out
    }
}

/// Run with a limit, read the limit back while the workload runs, let it end.
#[track_caller]
fn with_running_job(host: &'static Host, flags: &[&str], check: impl FnOnce(&TestRoot, &str, u32)) {
    let root = TestRoot::new(host);
    let job = Job::start(&root, "limits", flags);
    check(&root, "limits", job.pid);
    job.finish();
    root.assert_job_gone("limits");
}

#[test]
fn child_is_born_in_its_cgroup() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    // cat's first and only action reads its own cgroup membership: it was
    // in the job cgroup before its first instruction.
    let out = run_ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "born",
        "--",
        "cat",
        "/proc/self/cgroup",
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_born_in(&root, "born", &host.job_controllers(), &out);
}

/// `out` (cat's `/proc/self/cgroup`, then ffrtmp's report) shows the job
/// cgroup `job` in the hierarchy of each of `controllers`.
#[track_caller]
fn assert_born_in(root: &TestRoot, job: &str, controllers: &[Controller], out: &Output) {
    let host = root.host();
    for &c in controllers {
        let line = out
            .stdout
            .lines()
            .find(|l| {
                let mut parts = l.splitn(3, ':');
                let (Some(id), Some(ctrls)) = (parts.next(), parts.next()) else {
                    return false;
                };
                match host.version {
                    Version::V1 => ctrls.split(',').any(|n| n == c.v1_name()),
                    Version::V2 => id == "0" && ctrls.is_empty(),
                }
            })
            .unwrap_or_else(|| panic!("no {} line in the child's /proc/self/cgroup: {out:?}", c.v1_name()));
        let path = line.splitn(3, ':').nth(2).unwrap_or_default();
        assert_eq!(path, root.job_cgroup(c, job), "{} hierarchy: {out:?}", c.v1_name());
    }
}

/// In a container whose seccomp profile refuses `clone3` (ENOSYS from
/// moby's and containers-common's defaults without `CAP_SYS_ADMIN`, EPERM
/// from Docker's before 20.10.10), `run` starts its child through glibc's
/// `clone`, or `fork` for a cpuset job. The child still joins before its
/// exec: cat's only read shows the job cgroup in every hierarchy, and the
/// result says the child wrote its way in (on v2, that is the fallback from
/// `CLONE_INTO_CGROUP`). Without the fallback the start fails.
#[test]
fn without_clone3_the_child_is_still_born_in_its_cgroup() {
    let host = require_privileged!();
    let tmp = tempfile::tempdir().expect("a temp dir");
    for errno in [libc::ENOSYS, libc::EPERM] {
        let refused = Clone3Refused { errno };
        let answer = refused.answer().expect("installing the seccomp filter");
        assert_eq!(
            answer, errno,
            "clone3 under the filter answered errno {answer}, not {errno}"
        );
        let mut controllers = host.job_controllers();
        controllers.push(Controller::Cpuset);
        for (case, flags, controllers) in [
            ("plain", &[][..], &controllers[..controllers.len() - 1]),
            ("cpuset", &["--cpus", "0"][..], &controllers[..]),
        ] {
            let root = TestRoot::new(host);
            let result = tmp.path().join(format!("{case}-{errno}.json"));
            let mut args = vec!["run", "--cgroup-root", root.name(), "--job-id", "born"];
            args.extend_from_slice(flags);
            args.extend_from_slice(&["--result-file", result.to_str().expect("UTF-8")]);
            args.extend_from_slice(&["--", "cat", "/proc/self/cgroup"]);
            let mut cmd = ffrtmp(&args);
            refused.apply(&mut cmd);
            let out = Spawned::start_with_stdin(cmd, Stdio::null()).wait(EXIT_TIMEOUT);
            assert_eq!(out.code(), 0, "{case}, clone3 answering errno {errno}: {out:?}");
            assert_born_in(&root, "born", controllers, &out);
            let text = std::fs::read_to_string(&result).unwrap_or_else(|e| panic!("{}: {e}", result.display()));
            let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(
                json["cgroup"]["joined_by"], "pre_exec_write",
                "{case}, errno {errno}: {json}"
            );
            root.assert_job_gone("born");
        }
    }
}

#[test]
fn cpu_quota_percent() {
    let host = require_privileged!();
    with_running_job(host, &["--cpu-quota", "50"], |root, job, _| {
        assert_eq!(root.cpu_max(job), "50000 100000");
    });
}

#[test]
fn cpu_max_raw() {
    let host = require_privileged!();
    with_running_job(host, &["--cpu-max", "30000 60000"], |root, job, _| {
        assert_eq!(root.cpu_max(job), "30000 60000");
    });
}

#[test]
fn cpu_quota_wins_over_cpu_max() {
    let host = require_privileged!();
    with_running_job(
        host,
        &["--cpu-max", "30000 60000", "--cpu-quota", "150"],
        |root, job, _| {
            assert_eq!(root.cpu_max(job), "150000 100000");
        },
    );
}

/// The `max` count of a `pids.events` file (forks the kernel refused).
fn pids_refused(events: &str) -> u64 {
    events
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `--pids-max 20`: `pids.max` is 20 (v1's pids hierarchy, v2) and a fork
/// bomb in the job stops there: the kernel refuses the forks past it
/// (`pids.events` counts them) and the job never holds more than 20
/// processes. (Not `pids.current`: the kernel adds a fork to it before it
/// compares with the limit and takes it back when refused, so a read can
/// see 21 for a moment; one did, in the 6.12 guest.)
#[test]
fn pids_max_stops_a_fork_bomb() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    // 40 children that live 3 s; the shell goes on when a fork fails.
    let bomb = "for i in $(seq 40); do sleep 3 & done; wait";
    let cmd = ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "forks",
        "--pids-max",
        "20",
        "--",
        "sh",
        "-c",
        bomb,
    ]);
    let run = Spawned::start_with_stdin(cmd, std::process::Stdio::null());
    let dir = root.job_dir(Controller::Pids, "forks");
    let mut most = 0u64;
    let refused = wait_until(Duration::from_secs(10), || {
        most = most.max(root.procs(Controller::Pids, "forks").len() as u64);
        std::fs::read_to_string(dir.join("pids.events")).is_ok_and(|e| pids_refused(&e) > 0)
    });
    let max = std::fs::read_to_string(dir.join("pids.max")).unwrap_or_default();
    let out = run.wait(EXIT_TIMEOUT);
    assert!(refused, "no fork was refused: {out:?}");
    assert_eq!(max.trim(), "20", "{}/pids.max", dir.display());
    assert!(most <= 20, "the job held {most} processes");
    assert!(
        out.stderr.contains("applied pids_max=20"),
        "the outcome is reported: {out:?}"
    );
    // The shell gives up at the first fork refused; its children live on
    // in the job for their 3 s (the root's removal waits for them).
    let drained = wait_until(Duration::from_secs(10), || {
        root.procs(Controller::Pids, "forks").is_empty()
    });
    assert!(drained, "the bomb's children did not end");
}

/// A memory limit only cgroup v2 has a file for (`flag value` → `file`
/// holding `bytes`, reported as `limit`): on v2 the workload's first read of
/// `file` already shows it; on v1 the limit is reported not applied, with
/// the reason, the job runs, and `--strict` refuses to start instead.
#[track_caller]
fn v2_only_memory_limit(flag: &str, value: &str, file: &str, limit: &str, bytes: &str) {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let read_file =
        format!("cat /sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)/{file} 2>/dev/null || echo none");
    let run = |job: &str, strict: bool, command: &[&str]| {
        let mut args = vec!["run", "--cgroup-root", root.name(), "--job-id", job, flag, value];
        if strict {
            args.push("--strict");
        }
        args.push("--");
        args.extend_from_slice(command);
        run_ffrtmp(&args)
    };
    let out = run("v2-only", false, &["sh", "-c", &read_file]);
    assert_eq!(out.code(), 0, "{out:?}");
    match host.version {
        Version::V2 => {
            assert_eq!(out.stdout.lines().next(), Some(bytes), "the child read {file}: {out:?}");
            assert!(out.stderr.contains(&format!("applied {limit}={bytes}")), "{out:?}");
            assert!(!out.stderr.contains("NOT applied"), "{out:?}");
        }
        Version::V1 => {
            let why = format!("NOT applied {limit}={bytes}: {file} needs cgroup v2");
            assert!(out.stderr.contains(&why), "{out:?}");
            let strict = run("v2-only-strict", true, &["true"]);
            assert_eq!(strict.code(), 125, "{strict:?}");
            assert!(strict.stderr.contains(limit), "{strict:?}");
        }
    }
    root.assert_job_gone("v2-only");
}

/// `--memory-high 64M`: the throttle below the hard limit, `memory.high`.
#[test]
fn memory_high_on_v2_and_said_not_applied_on_v1() {
    v2_only_memory_limit("--memory-high", "64M", "memory.high", "memory_high", "67108864");
}

/// `--memory-swap-max 0` keeps the job out of swap: `memory.swap.max` 0.
#[test]
fn memory_swap_max_on_v2_and_said_not_applied_on_v1() {
    v2_only_memory_limit("--memory-swap-max", "0", "memory.swap.max", "memory_swap_max", "0");
}

/// Does this process hold CAP_SYS_RESOURCE (bit 24 of CapEff)? Lowering
/// `oom_score_adj` needs it; the project's sandboxes do not grant it.
fn has_cap_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// `--oom-score-adj`: the workload's first read of its own
/// `oom_score_adj` already sees it (written before exec). Lowering it
/// needs CAP_SYS_RESOURCE: without it the limit is reported not applied,
/// with the kernel's reason, and the workload keeps 0.
#[test]
fn oom_score_adj_is_set_before_exec() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let can_lower = has_cap_sys_resource();
    for adj in ["500", "-200"] {
        let out = run_ffrtmp(&[
            "run",
            "--cgroup-root",
            root.name(),
            "--job-id",
            "oom",
            "--oom-score-adj",
            adj,
            "--",
            "cat",
            "/proc/self/oom_score_adj",
        ]);
        assert_eq!(out.code(), 0, "{out:?}");
        if adj == "500" || can_lower {
            assert_eq!(out.stdout.lines().next(), Some(adj), "the workload's own read: {out:?}");
            assert!(out.stderr.contains(&format!("applied oom_score_adj={adj}")), "{out:?}");
        } else {
            assert_eq!(out.stdout.lines().next(), Some("0"), "{out:?}");
            assert!(
                out.stderr
                    .contains("NOT applied oom_score_adj=-200: writing /proc/self/oom_score_adj: Permission denied"),
                "{out:?}"
            );
        }
    }
    root.assert_job_gone("oom");
}

#[test]
fn cpu_weight() {
    let host = require_privileged!();
    with_running_job(host, &["--cpu-weight", "50"], |root, job, _| {
        let expected = match root.host().version {
            Version::V1 => "512", // cpu.shares = weight * 1024 / 100
            Version::V2 => "50",
        };
        assert_eq!(root.cpu_weight_file(job), expected);
    });
}

#[test]
fn memory_limit_in_mib() {
    let host = require_privileged!();
    with_running_job(host, &["--memory-limit", "64"], |root, job, _| {
        assert_eq!(root.memory_max(job), Some(64 << 20));
    });
}

#[test]
fn memory_max_in_bytes() {
    let host = require_privileged!();
    with_running_job(host, &["--memory-max", "100M"], |root, job, _| {
        assert_eq!(root.memory_max(job), Some(100 << 20));
    });
}

#[test]
fn memory_limit_wins_over_memory_max() {
    let host = require_privileged!();
    with_running_job(
        host,
        &["--memory-max", "100M", "--memory-limit", "64"],
        |root, job, _| {
            assert_eq!(root.memory_max(job), Some(64 << 20));
        },
    );
}

/// The disk holding `/` (in the VM, whose `/` is no block device, the
/// scratch disk `$FFRTMP_VM_DISK`), or `None` after a skip line.
fn test_disk() -> Option<TestDisk> {
    let disk = tests::test_disk();
    if disk.is_none() {
        skip("/ is not on a block device and FFRTMP_VM_DISK is not set, so there is no disk to put an IO limit on");
    }
    disk
}

#[test]
fn io_max_by_device_number() {
    let host = require_privileged!();
    let Some(disk) = test_disk() else { return };
    let spec = format!("{} rbps=1M", disk.dev);
    with_running_job(host, &["--io-max", &spec], |root, job, _| {
        assert_eq!(root.io_rbps(job, &disk.dev), Some(1 << 20));
    });
}

/// `--io-max PATH …` puts the limit on the whole disk holding PATH: `/`
/// on the host; in the VM the scratch disk's device node (a block device
/// stands for itself).
#[test]
fn io_max_by_path_resolves_to_the_whole_disk() {
    let host = require_privileged!();
    let Some(disk) = test_disk() else { return };
    let spec = format!("{} rbps=2M", disk.path.display());
    with_running_job(host, &["--io-max", &spec], |root, job, _| {
        assert_eq!(
            root.io_rbps(job, &disk.dev),
            Some(2 << 20),
            "limit not set on the disk {} holding {}",
            disk.dev,
            disk.path.display()
        );
    });
}

#[test]
fn nice_applies_to_the_child() {
    let host = require_privileged!();
    with_running_job(host, &["--nice", "5"], |_, _, pid| {
        assert_eq!(nice_of(pid, pid), Some(5), "nice of the workload {pid}");
    });
}

#[test]
fn exit_status_is_the_childs() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    for (script, code) in [("exit 0", 0), ("exit 42", 42)] {
        let out = run_ffrtmp(&["run", "--cgroup-root", root.name(), "--json", "--", "sh", "-c", script]);
        assert_eq!(out.code(), code, "{out:?}");
        let json = out.json();
        assert_eq!(json["exit_code"], code, "{json}");
        assert_eq!(json["signal"], Value::Null, "{json}");
        let reason = if code == 0 {
            "completed_successfully"
        } else {
            "workload_failed_platform_ok"
        };
        assert_eq!(json["platform_sla_reason"], reason, "{json}");
        assert_eq!(json["platform_sla_compliant"], true, "{json}");
    }
}

#[test]
fn killed_by_sigterm_is_143() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let out = run_ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--json",
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ]);
    assert_eq!(out.code(), 143, "{out:?}");
    let json = out.json();
    assert_eq!(json["exit_code"], 143, "{json}");
    assert_eq!(json["signal"], 15, "{json}");
    assert_eq!(json["platform_sla_reason"], "workload_failed_platform_ok", "{json}");
    assert!(out.summary_line().contains("| exit=143 |"), "{out:?}");
}

#[test]
fn not_executable_is_126_and_not_found_is_127() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let dir = tempfile::tempdir().expect("a temp dir");
    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("writing the script");
    let script = script.to_str().expect("a UTF-8 temp path");
    let missing = format!("ffrtmp-no-such-command-{}", unique_name());
    for (program, code) in [(script, 126), (missing.as_str(), 127)] {
        let out = run_ffrtmp(&["run", "--cgroup-root", root.name(), "--cpu-quota", "50", "--", program]);
        assert_eq!(out.code(), code, "{out:?}");
        assert!(out.stderr.contains(program), "the error names the program: {out:?}");
        root.assert_nothing_created();
    }
}

/// `ffrtmp` alone is a usage error like any other: the help on stderr, 125.
#[test]
fn ffrtmp_alone_is_a_usage_error() {
    let out = run_ffrtmp(&[]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(out.stderr.contains("Usage: ffrtmp [OPTIONS] <COMMAND>"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn bad_flag_values_exit_125_with_one_line_and_create_nothing() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    // Where `--cgroup-root ../<name>` would land if `..` were honoured.
    let escape = unique_name();
    let escaped = ForbiddenDirs(
        host.mounts
            .iter()
            .flat_map(|m| [m.own_dir.join("..").join(&escape), m.own_dir.join(&escape)])
            .collect(),
    );
    let escape_root = format!("../{escape}");
    let cases: &[(&str, &str)] = &[
        ("--cpu-weight", "0"),
        ("--cpu-weight", "10001"),
        ("--memory-high", "lots"),
        ("--memory-swap-max", "lots"),
        ("--memory-swap-max", "-1"),
        ("--oom-score-adj", "1001"),
        ("--oom-score-adj", "lots"),
        ("--pids-max", "0"),
        ("--pids-max", "max"),
        ("--pids-max", "4194305"),
        ("--cpus", "3-1"),
        ("--cpus", "0,0"),
        ("--cpus", "all"),
        ("--mems", ""),
        ("--mems", "0-"),
        ("--io-weight", "0"),
        ("--io-weight", "10001"),
        ("--io-class", "rt"),
        ("--io-class", "best-effort:8"),
        ("--io-class", "idle:1"),
        ("--nice", "99"),
        ("--nice", "-21"),
        ("--cpu-quota", "abc"),
        ("--cpu-quota", "0"),
        ("--cpu-max", "fast"),
        ("--memory-limit", "-5"),
        ("--memory-max", "lots"),
        ("--io-max", "bogus"),
        ("--io-max", "8:0 rbps=0"),
        ("--job-id", "../x"),
        ("--job-id", ".."),
        ("--job-id", "a/b"),
        ("--job-id", ""),
        ("--job-id", "auto-ffmpeg-1"),
        ("--cgroup-root", &escape_root),
        ("--cgroup-root", "/"),
        ("--cgroup-root", "a/../../b"),
    ];
    for &(flag, value) in cases {
        let mut args = vec!["run"];
        if flag != "--cgroup-root" {
            args.extend_from_slice(&["--cgroup-root", root.name()]);
        }
        args.extend_from_slice(&[flag, value, "--", "true"]);
        let out = run_ffrtmp(&args);
        assert_eq!(out.code(), 125, "{flag} {value:?}: {out:?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{flag} {value:?}: stderr is not one line: {out:?}");
        assert!(
            lines[0].contains(flag),
            "{flag} {value:?}: the error does not name the flag: {out:?}"
        );
        assert!(
            lines[0].contains(&format!("'{value}'")),
            "{flag} {value:?}: the error does not show the value: {out:?}"
        );
        assert!(out.stdout.is_empty(), "{flag} {value:?}: {out:?}");
        root.assert_nothing_created();
        escaped.assert_absent();
    }
    // An unknown option before `--` is a usage error, not a command to run.
    let out = run_ffrtmp(&["run", "--cgroup-root", root.name(), "--sla-eligibl", "--", "true"]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("'--sla-eligibl'"), "{out:?}");
    root.assert_nothing_created();
}

#[test]
fn signals_to_the_wrapper_are_forwarded() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    // "ready" is printed once the trap is set and the background sleep
    // exists, so the signal cannot arrive too early.
    let script = r#"trap "echo got-term; exit 3" TERM; sleep 30 & echo ready; wait"#;
    let ffrtmp = Spawned::start(ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "sig",
        "--",
        "sh",
        "-c",
        script,
    ]));
    ffrtmp.wait_for_stdout("ready");
    // Until sleep has exec'd, the forked child still runs the shell's trap
    // handler, which would swallow the signal and leave sleep running.
    let mut workload = Vec::new();
    let execd = wait_until(tests::POLL_TIMEOUT, || {
        workload = descendants(ffrtmp.pid());
        workload.iter().any(|&p| comm(p).as_deref() == Some("sleep"))
    });
    assert!(execd, "sleep never started: {}", ffrtmp.stderr_now());
    // Dropped before `root`: if anything survives a failure, it is killed.
    let _workload: Vec<PidGuard> = workload.into_iter().filter_map(PidGuard::try_new).collect();
    ffrtmp.signal(Signal::SIGTERM);
    let out = ffrtmp.wait(Duration::from_secs(10));
    assert!(
        out.stdout.contains("got-term"),
        "the child did not handle SIGTERM: {out:?}"
    );
    assert_eq!(out.code(), 3, "{out:?}");
    let summary = out.summary_line();
    assert!(summary.starts_with("JOB sig | "), "{out:?}");
    assert!(summary.contains("| exit=3 |"), "{out:?}");
    root.assert_job_gone("sig");
}

/// `--on-signal detach` (the old tool's behaviour): SIGTERM makes the
/// wrapper report `detached_workload_continues` and exit 0; the workload
/// never sees the signal and keeps running in its job cgroup with its
/// limits.
#[test]
fn on_signal_detach_leaves_the_workload_running() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let script = r#"trap "echo got-term; exit 3" TERM; echo ready; sleep 30; echo finished"#;
    let ffrtmp = Spawned::start(ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "det",
        "--cpu-quota",
        "30",
        "--on-signal",
        "detach",
        "--json",
        "--",
        "sh",
        "-c",
        script,
    ]));
    ffrtmp.wait_for_stdout("ready");
    let shell = descendants(ffrtmp.pid()).first().copied().expect("the shell");
    let _guards: Vec<PidGuard> = [shell]
        .into_iter()
        .chain(descendants(shell))
        .filter_map(PidGuard::try_new)
        .collect();
    ffrtmp.signal(Signal::SIGTERM);
    let out = ffrtmp.wait(Duration::from_secs(10));
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(!out.stdout.contains("got-term"), "the workload got the signal: {out:?}");
    let json: tests::Value = serde_json::from_str(
        out.stdout
            .lines()
            .skip_while(|l| !l.starts_with('{'))
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
    )
    .unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(json["platform_sla_reason"], "detached_workload_continues", "{json}");
    assert!(
        out.summary_line().contains("reason=detached_workload_continues"),
        "{out:?}"
    );
    assert!(proc_state(shell).is_some_and(|s| s != 'Z'), "the workload died");
    assert!(root.holds_all_threads(shell, "det"), "the workload left its cgroup");
    assert_eq!(root.cpu_max("det"), "30000 100000");
}

#[test]
fn kill_9_of_the_wrapper_leaves_the_workload_governed() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let ffrtmp = Spawned::start(ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "k9",
        "--cpu-quota",
        "50",
        "--",
        "sleep",
        "60",
    ]));
    let pid = root.wait_for_process("k9", "sleep");
    // Dropped before `root` (declared after it): killed, reaped by init, then
    // the cgroups are removed.
    let workload = PidGuard::new(pid);
    ffrtmp.kill();
    // Give a parent-death signal, if there were one, time to land.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        workload.alive(),
        "the workload died with the wrapper (state {:?})",
        proc_state(pid)
    );
    for c in host.job_controllers() {
        assert_eq!(
            host.cgroup_of(pid, c),
            Some(root.job_cgroup(c, "k9")),
            "{} hierarchy",
            c.v1_name()
        );
    }
    assert_eq!(root.cpu_max("k9"), "50000 100000");
    assert!(root.procs(Controller::Cpu, "k9").contains(&pid));
}

#[test]
fn the_cgroup_is_removed_after_exit() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let out = run_ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "gone",
        "--cpu-quota",
        "50",
        "--memory-limit",
        "64",
        "--json",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    let json = out.json();
    let paths = json["cgroup"]["paths"].as_array().expect("cgroup.paths");
    assert!(!paths.is_empty(), "no cgroup was created: {json}");
    for p in paths {
        let p = Path::new(p.as_str().expect("a path"));
        assert!(p.ends_with(Path::new(root.name()).join("gone")), "{json}");
        assert!(!p.exists(), "{} left behind", p.display());
    }
    root.assert_job_gone("gone");
}

#[test]
fn a_job_id_in_use_is_refused() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let first = Job::start(&root, "dup", &["--cpu-quota", "50"]);
    let out = run_ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "dup",
        "--cpu-quota",
        "20",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(out.stderr.contains("in use"), "{out:?}");
    // The first job is untouched: same process, same limit, still running.
    assert_eq!(root.procs(Controller::Cpu, "dup"), vec![first.pid]);
    assert_eq!(root.cpu_max("dup"), "50000 100000");
    assert!(first.ffrtmp.running());
    let out = first.finish();
    assert!(out.summary_line().contains("reason=completed_successfully"), "{out:?}");
    root.assert_job_gone("dup");
}

#[test]
fn json_result_and_result_file() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("result.json");
    let out = run_ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "js",
        "--cpu-quota",
        "50",
        "--json",
        "--result-file",
        file.to_str().expect("a UTF-8 temp path"),
        "--",
        "sh",
        "-c",
        "echo child-pid=$$ >&2",
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    let json = out.json();
    let child_pid: u64 = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("child-pid=")?.trim().parse().ok())
        .expect("the child printed its pid");
    assert_eq!(json["job_id"], "js");
    assert_eq!(json["pid"].as_u64(), Some(child_pid), "{json}");
    assert_eq!(json["mode"], "run");
    for key in ["start_time", "end_time"] {
        let t = json[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is not a string: {json}"));
        assert!(t.contains('T') && t.ends_with('Z'), "{key} is not RFC 3339 UTC: {t}");
    }
    assert!(json["start_time"].as_str() <= json["end_time"].as_str(), "{json}");
    assert!(
        json["processing_seconds"].is_f64(),
        "processing_seconds is not a float: {json}"
    );
    assert!(json["processing_seconds"].as_f64() >= Some(0.0), "{json}");
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["signal"], Value::Null);
    assert_eq!(json["platform_sla_compliant"], true);
    assert_eq!(json["platform_sla_reason"], "completed_successfully");
    assert_eq!(json["sla_eligible"], true);
    let limits = &json["limits"];
    assert_eq!(limits["requested"][0]["limit"], "cpu_max", "{json}");
    assert_eq!(limits["requested"][0]["value"], "50000 100000", "{json}");
    assert_eq!(limits["applied"][0]["limit"], "cpu_max", "{json}");
    assert_eq!(limits["failed"].as_array().map(Vec::len), Some(0), "{json}");
    let usage = json["usage"]
        .as_object()
        .unwrap_or_else(|| panic!("usage is not an object: {json}"));
    assert!(usage.get("cpu_seconds").is_some_and(Value::is_f64), "{json}");
    assert!(usage.contains_key("throttled_periods"), "{json}");
    let written = std::fs::read_to_string(&file).expect("the result file");
    let from_file: Value = serde_json::from_str(&written).expect("the result file is JSON");
    assert_eq!(from_file, json, "--result-file differs from stdout");
}

#[test]
fn strict_refuses_a_limit_that_cannot_be_applied() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let dir = tempfile::tempdir().expect("a temp dir");
    let marker = dir.path().join("ran");
    let marker_arg = marker.to_str().expect("a UTF-8 temp path");
    // The kernel rejects a throttle for a device that does not exist (ENODEV).
    let spec = format!("{} rbps=1M", missing_block_device());
    let out = run_ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "strict",
        "--strict",
        "--io-max",
        &spec,
        "--",
        "touch",
        marker_arg,
    ]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(!marker.exists(), "--strict refused, yet the command ran");
    assert!(out.stderr.contains("io_max"), "the error names the limit: {out:?}");
    root.assert_nothing_created();
}

#[test]
fn without_strict_a_failed_limit_is_a_reported_violation() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let spec = format!("{} rbps=1M", missing_block_device());
    let out = run_ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "lax",
        "--cpu-quota",
        "50",
        "--io-max",
        &spec,
        "--json",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    let json = out.json();
    assert_eq!(json["platform_sla_reason"], "limit_apply_failed", "{json}");
    assert_eq!(json["platform_sla_compliant"], false, "{json}");
    let failed = json["limits"]["failed"].as_array().expect("limits.failed");
    assert_eq!(failed.len(), 1, "{json}");
    assert_eq!(failed[0]["limit"], "io_max", "{json}");
    let error = failed[0]["error"].as_str().expect("the failure's error");
    assert!(error.contains("os error"), "the OS error is missing: {error}");
    assert_eq!(json["limits"]["applied"][0]["limit"], "cpu_max", "{json}");
    let summary = out.summary_line();
    assert!(
        summary.contains("sla=VIOLATION") && summary.contains("reason=limit_apply_failed"),
        "{out:?}"
    );
    root.assert_job_gone("lax");
}

#[test]
fn ffmpeg_under_half_a_core_is_throttled() {
    let host = require_privileged!();
    if !on_path("ffmpeg") {
        skip("ffmpeg is not on PATH (apt-get install ffmpeg)");
        return;
    }
    let root = TestRoot::new(host);
    // About 3 CPU seconds of work: some 6 s of wall time under 50 %.
    let out = Spawned::start_with_stdin(
        ffrtmp(&[
            "run",
            "--cgroup-root",
            root.name(),
            "--job-id",
            "ffmpeg",
            "--cpu-quota",
            "50",
            "--json",
            "--",
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=1280x720:rate=30",
            "-t",
            "60",
            "-f",
            "null",
            "-",
        ]),
        std::process::Stdio::null(),
    )
    .wait(Duration::from_secs(120));
    assert_eq!(out.code(), 0, "{out:?}");
    let json = out.json();
    let seconds = json["processing_seconds"].as_f64().expect("processing_seconds");
    let cpu = json["usage"]["cpu_seconds"].as_f64().expect("usage.cpu_seconds");
    let throttled = json["usage"]["throttled_periods"]
        .as_u64()
        .expect("usage.throttled_periods");
    assert!(seconds >= 1.0, "ffmpeg ran too briefly to judge: {json}");
    assert!(throttled > 0, "never throttled: {json}");
    assert!(
        cpu / seconds <= 0.6,
        "used {cpu:.2} CPU s in {seconds:.2} s, more than half a core: {json}"
    );
    root.assert_job_gone("ffmpeg");
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path).map_or_else(|e| format!("<{e}>"), |s| s.trim().to_string())
}

/// `--cpus 0`: the job's `cpuset.cpus` is 0 and the kernel lets the
/// workload run on CPU 0 only. v1: the new cpuset cgroup (which starts
/// with empty lists and refuses tasks) got its parent's memory nodes.
#[test]
fn cpus_confine_the_workload_and_v1_gets_the_parents_mems() {
    let host = require_privileged!();
    with_running_job(host, &["--cpus", "0"], |root, job, pid| {
        let dir = root.job_dir(Controller::Cpuset, job);
        assert_eq!(read_trimmed(&dir.join("cpuset.cpus")), "0", "{}", dir.display());
        assert_eq!(cpus_allowed(pid).as_deref(), Some("0"), "pid {pid}");
        let parent = dir.parent().unwrap().parent().unwrap();
        match host.version {
            // Empty: "all of the parent's".
            Version::V2 => assert_eq!(read_trimmed(&dir.join("cpuset.mems")), ""),
            Version::V1 => assert_eq!(
                read_trimmed(&dir.join("cpuset.mems")),
                read_trimmed(&parent.join("cpuset.mems"))
            ),
        }
    });
}

/// `--mems 0` alone: v1 copies the parent's CPUs, or no task could join.
#[test]
fn mems_alone_still_lets_the_task_in() {
    let host = require_privileged!();
    with_running_job(host, &["--mems", "0"], |root, job, pid| {
        let dir = root.job_dir(Controller::Cpuset, job);
        assert_eq!(read_trimmed(&dir.join("cpuset.mems")), "0");
        assert!(root.procs(Controller::Cpuset, job).contains(&pid));
        if host.version == Version::V1 {
            let parent = dir.parent().unwrap().parent().unwrap();
            assert_eq!(
                read_trimmed(&dir.join("cpuset.cpus")),
                read_trimmed(&parent.join("cpuset.cpus"))
            );
        }
    });
}

/// A CPU the machine (and so the parent) does not have: the kernel's
/// error, with what the parent allows; the job still runs.
#[test]
fn cpus_outside_the_parent_are_reported_with_the_kernels_error() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let out = run_ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "wide",
        "--cpus",
        "4000",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("NOT applied cpus=4000"))
        .unwrap_or_else(|| panic!("no NOT applied line: {out:?}"));
    assert!(
        line.contains("cpuset.cpus must be within the parent's effective set"),
        "{line}"
    );
    assert!(line.contains("os error"), "the kernel's error is shown: {line}");
    root.assert_job_gone("wide");
}

/// `--io-weight 50`: written to each weight file the kernel offers — v1
/// BFQ's `blkio.bfq.weight` (50×5 = 250), v2 iocost's `io.weight`
/// ("default 50") and BFQ's `io.bfq.weight` (50) — or, with none,
/// reported not applied.
#[test]
fn io_weight_lands_in_the_weight_files_there_are() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let job = Job::start(&root, "weight", &["--io-weight", "50"]);
    let dir = root.job_dir(Controller::Io, "weight");
    let expected: &[(&str, &str)] = match host.version {
        Version::V1 => &[("blkio.bfq.weight", "250"), ("blkio.weight", "250")],
        Version::V2 => &[("io.weight", "default 50"), ("io.bfq.weight", "default 50")],
    };
    let present: Vec<_> = expected.iter().filter(|(f, _)| dir.join(f).exists()).collect();
    for (file, value) in &present {
        assert_eq!(read_trimmed(&dir.join(file)).lines().next(), Some(*value), "{file}");
    }
    let out = job.finish();
    match present.is_empty() {
        true => assert!(
            out.stderr
                .contains("NOT applied io_weight=50: the kernel offers none of"),
            "{out:?}"
        ),
        false => assert!(
            out.stderr.contains("applied io_weight=50") && !out.stderr.contains("NOT applied"),
            "{out:?}"
        ),
    }
    root.assert_job_gone("weight");
}

/// `--io-class`: set before exec, so every thread the workload starts has
/// it (read back with `ioprio_get` for each of `/proc/<pid>/task`).
#[test]
fn io_class_is_on_every_thread_of_the_workload() {
    let host = require_privileged!();
    for (class, raw) in [
        ("idle", 3u16 << 13),
        ("best-effort:6", (2 << 13) | 6),
        ("realtime:1", (1 << 13) | 1),
    ] {
        let root = TestRoot::new(host);
        let stub = stub_bin("stub-threads");
        let args = [
            "run",
            "--cgroup-root",
            root.name(),
            "--job-id",
            "ioprio",
            "--io-class",
            class,
            "--",
        ];
        let mut cmd = ffrtmp(&args);
        cmd.args([stub.as_os_str(), "3".as_ref()]);
        let mut run = Spawned::start_with_stdin(cmd, std::process::Stdio::piped());
        run.wait_for_stdout("ready");
        let pid = root.procs(Controller::Cpu, "ioprio")[0];
        let tids = threads(pid);
        assert_eq!(tids.len(), 4, "{class}: the stub runs 4 threads");
        let got: Vec<_> = tids.iter().map(|&t| (t, ioprio_of(t))).collect();
        assert!(got.iter().all(|(_, p)| *p == Some(raw)), "{class}: {got:?}");
        run.write_stdin(b"go\n");
        let out = run.wait(EXIT_TIMEOUT);
        assert_eq!(out.code(), 0, "{out:?}");
        assert!(out.stderr.contains(&format!("applied io_class={class}")), "{out:?}");
        root.assert_job_gone("ioprio");
    }
}

#[test]
fn leftovers_of_earlier_jobs_are_removed_once_the_child_started() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    // A wrapper killed by SIGKILL leaves its job: marked, and empty once
    // its workload ends.
    root.leave_empty_job("old");
    let left: Vec<_> = root
        .all_dirs()
        .into_iter()
        .map(|d| d.join("old"))
        .filter(|d| d.is_dir())
        .collect();
    assert!(!left.is_empty(), "the killed run left no job behind");
    // Only leftovers at least 30 s old are removed (a younger one may be a
    // job another run is about to join): age them.
    let minute_ago = std::time::SystemTime::now() - Duration::from_secs(60);
    for dir in &left {
        let handle = std::fs::File::open(dir).unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()));
        handle
            .set_modified(minute_ago)
            .unwrap_or_else(|e| panic!("ageing {}: {e}", dir.display()));
    }

    let out = run_ffrtmp(&["run", "--cgroup-root", root.name(), "--job-id", "new", "--", "true"]);
    assert_eq!(out.code(), 0, "{out:?}");
    root.assert_job_gone("old");
    root.assert_job_gone("new");
    // Off the path to the child's start: after the line that says it started.
    let started = out.stderr.find("started pid ");
    let removed = out.stderr.find("removed leftover empty job cgroup ");
    assert!(
        matches!((started, removed), (Some(s), Some(r)) if s < r),
        "expected `started pid …` before `removed leftover …`:\n{}",
        out.stderr
    );
}
