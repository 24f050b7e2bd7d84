//! `ffrtmp watch` and `ffrtmp run` on one node: a target that `run` started
//! in its own job cgroup is already governed, and the daemon must not move it
//! out of that job into one of its own.

use std::time::Duration;

use tests::{Controller, Signal, Spawned, TestRoot, ffrtmp, privileged, wait_until};

#[test]
fn watch_leaves_a_job_of_run_alone() {
    let Some(host) = privileged() else { return };
    let watch_root = TestRoot::new(host);
    let run_root = TestRoot::new(host);
    let tmp = tempfile::tempdir().expect("tempdir");
    // A target name of our own (≤ 15 bytes) so no other daemon reacts to it.
    let name = format!("fc{}", std::process::id() % 1_000_000);
    let target = tmp.path().join(&name);
    tests::copy_executable(std::path::Path::new("/bin/sleep"), &target);

    let daemon = Spawned::start(ffrtmp(&[
        "watch",
        "--cgroup-root",
        watch_root.name(),
        "--target",
        &name,
    ]));
    assert!(
        wait_until(Duration::from_secs(20), || daemon
            .stderr_now()
            .contains("Event source:")),
        "the daemon did not get ready: {}",
        daemon.stderr_now()
    );

    let target_arg = target.to_str().expect("utf-8 temp path");
    let run = Spawned::start(ffrtmp(&[
        "run",
        "--cgroup-root",
        run_root.name(),
        "--job-id",
        "held",
        "--",
        target_arg,
        "2",
    ]));
    let pid = run_root.wait_for_process("held", &name);
    // Give the daemon ample time to (wrongly) act on the exec.
    std::thread::sleep(Duration::from_millis(700));
    let cgroup = host.cgroup_of(pid, Controller::Cpu).expect("the target's cpu cgroup");
    assert_eq!(
        cgroup,
        run_root.job_cgroup(Controller::Cpu, "held"),
        "watch moved run's workload"
    );
    assert!(
        !daemon.stderr_now().contains(&format!("Attaching to PID {pid}")),
        "watch tried to adopt run's workload: {}",
        daemon.stderr_now()
    );

    let out = run.wait(Duration::from_secs(20));
    assert_eq!(out.code(), 0, "run: {}", out.stderr);
    daemon.signal(Signal::SIGINT);
    let out = daemon.wait(Duration::from_secs(20));
    assert_eq!(out.code(), 0, "watch: {}", out.stderr);
}
