//! `ffrtmp attach` against the host's real cgroups (root only; each test
//! has its own relative cgroup root, so they run in parallel).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use tests::{
    Controller, EXIT_TIMEOUT, PidGuard, Signal, Spawned, TestRoot, comm, cpus_allowed, descendants, ffrtmp, ioprio_of,
    nice_of, proc_state, require_privileged, run_ffrtmp, skip, stat_field, stub_bin, threads, wait_until,
};

/// Wait until process `pid` (all its threads) is in the job's cgroup.
#[track_caller]
fn wait_moved(root: &TestRoot, pid: u32, job: &str, attach: &Spawned) {
    let moved = wait_until(tests::POLL_TIMEOUT, || {
        root.holds_all_threads(pid, job) || !attach.running()
    });
    assert!(
        moved && root.holds_all_threads(pid, job),
        "pid {pid} not moved into job {job}; attach stderr: {}",
        attach.stderr_now()
    );
}

fn attach(root: &TestRoot, pid: u32, job: &str, flags: &[&str]) -> Spawned {
    let pid = pid.to_string();
    let mut args = vec![
        "attach",
        "--pid",
        &pid,
        "--cgroup-root",
        root.name(),
        "--job-id",
        job,
        "--json",
    ];
    args.extend_from_slice(flags);
    Spawned::start_with_stdin(ffrtmp(&args), Stdio::null())
}

/// `--oom-score-adj 300`: the attached process's `oom_score_adj`, and the
/// outcome in the result.
#[test]
fn attach_sets_oom_score_adj() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let mut target = Spawned::start(Command::new(stub_bin("stub-threads")).args(["1", "0"]));
    target.wait_for_stdout("ready");
    let pid = target.pid();
    let ffrtmp = attach(&root, pid, "oom", &["--oom-score-adj", "300"]);
    wait_moved(&root, pid, "oom", &ffrtmp);
    let path = format!("/proc/{pid}/oom_score_adj");
    let set = wait_until(tests::POLL_TIMEOUT, || {
        std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == "300")
    });
    assert!(
        set,
        "{path}: {:?}; stderr: {}",
        std::fs::read_to_string(&path),
        ffrtmp.stderr_now()
    );
    // `ffrtmp status` reads it back from the process.
    let status = run_ffrtmp(&["status", "--cgroup-root", root.name(), "--json"]).json();
    let job = status["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job_id"] == "oom"));
    assert_eq!(
        job.map(|j| j["limits"]["oom_score_adj"].clone()),
        Some(serde_json::json!(300)),
        "{status}"
    );
    target.write_stdin(b"go\n");
    let out = ffrtmp.wait(EXIT_TIMEOUT);
    assert_eq!(out.code(), 0, "{out:?}");
    let json = out.json();
    let applied = json["limits"]["applied"].as_array().cloned().unwrap_or_default();
    assert!(
        applied
            .iter()
            .any(|a| a["limit"] == "oom_score_adj" && a["value"] == "300"),
        "{json}"
    );
}

#[test]
fn attach_moves_and_renices_every_thread() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    // Four parked threads besides the main one; exits 7 after a line on stdin.
    let mut target = Spawned::start(Command::new(stub_bin("stub-threads")).args(["4", "7"]));
    target.wait_for_stdout("ready");
    let pid = target.pid();
    assert_eq!(threads(pid).len(), 5, "the stub should run 5 threads");

    let ffrtmp = attach(&root, pid, "threads", &["--nice", "7", "--cpu-quota", "40"]);
    wait_moved(&root, pid, "threads", &ffrtmp);
    // Renicing follows the move: poll for it too, with a deadline.
    let reniced = wait_until(tests::POLL_TIMEOUT, || {
        threads(pid).iter().all(|&t| nice_of(pid, t) == Some(7))
    });
    let nices: Vec<_> = threads(pid).iter().map(|&t| (t, nice_of(pid, t))).collect();
    assert!(
        reniced,
        "not every thread has nice 7: {nices:?}; stderr: {}",
        ffrtmp.stderr_now()
    );
    assert_eq!(root.cpu_max("threads"), "40000 100000");
    assert!(ffrtmp.running(), "attach must keep watching: {}", ffrtmp.stderr_now());

    // Let the stub exit 7. We do not reap it until attach has finished, so its
    // exit status stays visible to attach in /proc/<pid>/stat.
    target.write_stdin(b"go\n");
    let out = ffrtmp.wait(EXIT_TIMEOUT);
    assert_eq!(out.code(), 0, "{out:?}");
    let json = out.json();
    assert_eq!(json["mode"], "attach", "{json}");
    assert_eq!(json["pid"], pid, "{json}");
    assert_eq!(json["platform_sla_reason"], "observed_to_completion", "{json}");
    assert_eq!(json["platform_sla_compliant"], true, "{json}");
    assert_eq!(json["exit_code"], 7, "{json}");
    assert!(json["process_seconds"].is_f64(), "{json}");
    assert_eq!(target.wait(EXIT_TIMEOUT).code(), 7);
    root.assert_job_gone("threads");
}

#[track_caller]
fn assert_attach_refused(root: &TestRoot, pid: u32, message: &str) {
    let out = run_ffrtmp(&[
        "attach",
        "--pid",
        &pid.to_string(),
        "--cgroup-root",
        root.name(),
        "--cpu-quota",
        "50",
    ]);
    assert_eq!(out.code(), 125, "pid {pid}: {out:?}");
    assert!(out.stderr.contains(message), "pid {pid}: expected {message:?}: {out:?}");
    root.assert_nothing_created();
}

#[test]
fn attach_refuses_a_missing_pid() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    // A pid that just ended: the kernel hands out pids cyclically, so the
    // number is not reused this soon.
    let mut gone = Command::new("true").spawn().expect("spawning true");
    let pid = gone.id();
    gone.wait().expect("reaping true");
    assert!(proc_state(pid).is_none(), "pid {pid} was reused");
    // The old tool's scripts look for "does not exist".
    assert_attach_refused(&root, pid, &format!("process {pid} does not exist"));
    assert_attach_refused(&root, 99_999_999, "process 99999999 does not exist");
}

/// PID 1 is refused: everything init starts afterwards would be born in
/// the job.
#[test]
fn attach_refuses_init() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    assert_attach_refused(&root, 1, "pid 1 is init of this PID namespace");
}

/// A thread id names a thread, not a process: said so, nothing created.
#[test]
fn attach_refuses_a_thread_naming_its_process() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let stub = Spawned::start_with_stdin(Command::new(stub_bin("stub-threads")), Stdio::piped());
    stub.wait_for_stdout("ready");
    let pid = stub.pid();
    let tid = *threads(pid).iter().find(|&&t| t != pid).expect("a second thread");
    assert_attach_refused(
        &root,
        tid,
        &format!("{tid} is a thread of process {pid}, not a process: attach to --pid {pid}"),
    );
}

/// A second attach to a process another job governs is refused, naming
/// that job, and the first job keeps it; with --force it is taken over.
#[test]
fn attach_refuses_a_process_another_job_governs() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let mut target = Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawning sleep");
    let pid = target.id();
    let _guard = PidGuard::new(pid);
    let first = attach(&root, pid, "first-job", &[]);
    wait_moved(&root, pid, "first-job", &first);
    let before = root.all_dirs();
    let out = run_ffrtmp(&[
        "attach",
        "--pid",
        &pid.to_string(),
        "--cgroup-root",
        root.name(),
        "--job-id",
        "second-job",
    ]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("pid {pid} is already governed by job first-job")),
        "{out:?}"
    );
    assert!(root.holds_all_threads(pid, "first-job"), "the first job lost it");
    assert!(
        !root.all_dirs().iter().any(|d| d.join("second-job").exists()),
        "a second job was made: {before:?}"
    );
    let forced = attach(&root, pid, "second-job", &["--force"]);
    wait_moved(&root, pid, "second-job", &forced);
    let _ = target.kill();
    let _ = target.wait();
    let out = forced.wait(EXIT_TIMEOUT);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stderr.contains("--force: pid"), "{out:?}");
    let _ = first.wait(EXIT_TIMEOUT);
}

#[test]
fn attach_refuses_a_zombie() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    // Our own child, exited and not yet reaped: a zombie.
    let mut child = Command::new("true")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawning true");
    let pid = child.id();
    let zombie = wait_until(tests::POLL_TIMEOUT, || proc_state(pid) == Some('Z'));
    assert!(zombie, "pid {pid} did not become a zombie");
    assert_attach_refused(
        &root,
        pid,
        &format!("process {pid} does not exist any more: it has exited"),
    );
    child.wait().expect("reaping the zombie");
}

#[test]
fn attach_refuses_a_kernel_thread() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    const PF_KTHREAD: u64 = 0x0020_0000;
    let is_kthread = |pid: u32| {
        stat_field(&PathBuf::from(format!("/proc/{pid}/stat")), 9)
            .and_then(|f| f.parse::<u64>().ok())
            .is_some_and(|flags| flags & PF_KTHREAD != 0)
    };
    // kthreadd is pid 2 outside a pid namespace; otherwise look for one.
    let kthread = if comm(2).as_deref() == Some("kthreadd") && is_kthread(2) {
        Some(2)
    } else {
        std::fs::read_dir("/proc")
            .expect("listing /proc")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|&p| is_kthread(p))
    };
    let Some(pid) = kthread else {
        skip("no kernel thread is visible in /proc (pid namespace?)");
        return;
    };
    assert_attach_refused(&root, pid, "kernel thread");
}

#[test]
fn sigterm_detaches_and_the_limits_stay() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let target = Spawned::start_with_stdin(Command::new("sleep").arg("60"), Stdio::null());
    let pid = target.pid();
    let ffrtmp = attach(&root, pid, "detach", &["--cpu-quota", "30", "--memory-limit", "256"]);
    wait_moved(&root, pid, "detach", &ffrtmp);
    // attach blocks SIGTERM before it creates the cgroup: it is safe to send now.
    ffrtmp.signal(Signal::SIGTERM);
    let out = ffrtmp.wait(EXIT_TIMEOUT);
    assert_eq!(out.code(), 0, "{out:?}");
    let json = out.json();
    assert_eq!(json["platform_sla_reason"], "detached_workload_continues", "{json}");
    assert_eq!(json["sla_eligible"], false, "{json}");
    assert_eq!(json["exit_code"], tests::Value::Null, "{json}");
    // The process runs on, untouched, in its cgroup, under its limits.
    assert!(target.running(), "the target died: state {:?}", proc_state(pid));
    assert!(root.holds_all_threads(pid, "detach"), "the target left the job cgroup");
    assert_eq!(root.cpu_max("detach"), "30000 100000");
    assert_eq!(root.memory_max("detach"), Some(256 << 20));
    // `target` is dropped (killed, reaped) before `root` removes the cgroups.
    drop(target);
}

#[test]
fn tree_moves_descendants_forked_before_the_move() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    // A child and a grandchild (under an inner shell), all forked before attach.
    let script = r#"sleep 60 & sh -c "sleep 60 & wait" & echo ready; wait"#;
    let target = Spawned::start_with_stdin(Command::new("sh").args(["-c", script]), Stdio::null());
    let pid = target.pid();
    target.wait_for_stdout("ready");
    let mut tree = Vec::new();
    let complete = wait_until(tests::POLL_TIMEOUT, || {
        tree = descendants(pid);
        let mut comms: Vec<String> = tree.iter().filter_map(|&p| comm(p)).collect();
        comms.sort();
        comms == ["sh", "sleep", "sleep"]
    });
    assert!(complete, "the process tree did not form: {tree:?}");
    // Killed before `target` (our child, the tree's top) and before `root`.
    let guards: Vec<PidGuard> = tree.iter().map(|&p| PidGuard::new(p)).collect();

    let ffrtmp = attach(&root, pid, "tree", &["--tree", "--cpu-quota", "25"]);
    wait_moved(&root, pid, "tree", &ffrtmp);
    for &p in &tree {
        wait_moved(&root, p, "tree", &ffrtmp);
    }
    let mut procs = root.procs(Controller::Cpu, "tree");
    procs.sort_unstable();
    let mut expected = tree.clone();
    expected.push(pid);
    expected.sort_unstable();
    assert_eq!(procs, expected, "the job holds exactly the tree");
    assert_eq!(root.cpu_max("tree"), "25000 100000");

    ffrtmp.signal(Signal::SIGTERM);
    let out = ffrtmp.wait(EXIT_TIMEOUT);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.json()["platform_sla_reason"], "detached_workload_continues");
    drop(guards);
    drop(target);
}

/// `--io-class idle` and `--cpus 0` on a running process: every one of its
/// five threads (already started, so nothing is inherited) reads back idle
/// with `ioprio_get`, and the kernel runs the process on CPU 0 only.
#[test]
fn attach_sets_the_io_class_of_every_thread_and_its_cpus() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let mut target = Spawned::start(Command::new(stub_bin("stub-threads")).args(["4", "0"]));
    target.wait_for_stdout("ready");
    let pid = target.pid();
    let ffrtmp = attach(&root, pid, "ioclass", &["--io-class", "idle", "--cpus", "0"]);
    wait_moved(&root, pid, "ioclass", &ffrtmp);
    let idle = 3u16 << 13;
    let all_idle = wait_until(tests::POLL_TIMEOUT, || {
        threads(pid).iter().all(|&t| ioprio_of(t) == Some(idle))
    });
    let got: Vec<_> = threads(pid).iter().map(|&t| (t, ioprio_of(t))).collect();
    assert!(
        all_idle,
        "not every thread is idle: {got:?}; stderr: {}",
        ffrtmp.stderr_now()
    );
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(cpus_allowed(pid).as_deref(), Some("0"));
    target.write_stdin(b"go\n");
    let out = ffrtmp.wait(EXIT_TIMEOUT);
    assert_eq!(out.code(), 0, "{out:?}");
    let applied = out.json()["limits"]["applied"].as_array().cloned().unwrap_or_default();
    for (limit, value) in [("io_class", "idle"), ("cpus", "0")] {
        assert!(
            applied.iter().any(|a| a["limit"] == limit && a["value"] == value),
            "{limit}={value} not in applied: {applied:?}"
        );
    }
    assert_eq!(target.wait(EXIT_TIMEOUT).code(), 0);
    root.assert_job_gone("ioclass");
}
