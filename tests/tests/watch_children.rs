//! `ffrtmp watch` adopts a target together with the children it forked
//! before it was moved (children forked later are born inside its cgroup).
//! Deterministic: the target and its child exist before the daemon starts,
//! so the catch-up scan adopts them.

use std::time::Duration;

use tests::{Controller, Signal, Spawned, TestRoot, ffrtmp, privileged, wait_until};

#[test]
fn children_forked_before_the_move_join_the_job() {
    let Some(host) = privileged() else { return };
    let root = TestRoot::new(host);
    let tmp = tempfile::tempdir().expect("tempdir");
    // A target name of our own (≤ 15 bytes) so no other daemon reacts to it.
    let name = format!("fk{}", std::process::id() % 1_000_000);
    let target = tmp.path().join(&name);
    tests::copy_executable(std::path::Path::new("/bin/sh"), &target);

    // The target (a shell) forks a sleep, then waits for it.
    let workload = Spawned::start(std::process::Command::new(&target).args(["-c", "sleep 30 & wait"]));
    let pid = workload.pid();
    let mut child = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            child = ffrtmp::process::identity::descendants_of(pid).first().copied();
            child.is_some()
        }),
        "the target did not fork"
    );
    let child = child.expect("checked");
    let before = host.cgroup_of(child, Controller::Cpu).expect("the child's cgroup");

    let daemon = Spawned::start(ffrtmp(&["watch", "--cgroup-root", root.name(), "--target", &name]));
    let job = format!("auto-{name}-{pid}");
    let job_cgroup = root.job_cgroup(Controller::Cpu, &job);
    let both_in = wait_until(Duration::from_secs(20), || {
        host.cgroup_of(pid, Controller::Cpu).as_deref() == Some(job_cgroup.as_str())
            && host.cgroup_of(child, Controller::Cpu).as_deref() == Some(job_cgroup.as_str())
    });
    let child_now = host.cgroup_of(child, Controller::Cpu);
    daemon.signal(Signal::SIGINT);
    let out = daemon.wait(Duration::from_secs(20));
    // Cleanup by PID: both are ours (the sleep is our own child's child).
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child as i32), Signal::SIGKILL);
    workload.kill();
    assert!(
        both_in,
        "target and child not both in {job_cgroup}: child was in {before}, now {child_now:?}; daemon: {}",
        out.stderr
    );
    assert_eq!(out.code(), 0, "watch: {}", out.stderr);
}
