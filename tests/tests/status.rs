//! `ffrtmp status` against the host's real cgroups (root only; each test has
//! its own relative cgroup root, and status reads it from the same cgroup).

use std::time::Duration;

use tests::{Output, PidGuard, Signal, Spawned, TestRoot, Value, ffrtmp, require_privileged, run_ffrtmp};

/// `ffrtmp status --cgroup-root <root> [--json]`, which must succeed.
#[track_caller]
fn status(root: &TestRoot, json: bool) -> Output {
    let mut args = vec!["status", "--cgroup-root", root.name()];
    if json {
        args.push("--json");
    }
    let out = run_ffrtmp(&args);
    assert_eq!(out.code(), 0, "{out:?}");
    out
}

/// The job `id` of a `status --json` document, if listed.
fn job<'a>(doc: &'a Value, id: &str) -> Option<&'a Value> {
    doc["jobs"].as_array()?.iter().find(|j| j["job_id"] == id)
}

#[test]
fn status_shows_a_running_job_and_its_limits() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let run = Spawned::start(ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "shown",
        "--cpu-quota",
        "50",
        "--memory-limit",
        "64",
        "--",
        "sleep",
        "30",
    ]));
    let pid = root.wait_for_process("shown", "sleep");
    // Dropped before `root`: if the test fails, sleep is killed.
    let _workload = PidGuard::new(pid);

    let doc = status(&root, true).json();
    assert_eq!(doc["version"], 1, "{doc}");
    assert_eq!(doc["cgroup_root"], root.name(), "{doc}");
    let shown = job(&doc, "shown").unwrap_or_else(|| panic!("job shown not listed: {doc}"));
    assert_eq!(shown["pids"], serde_json::json!([pid]), "{doc}");
    assert_eq!(shown["command"], "sleep", "{doc}");
    assert_eq!(shown["mode"], "run/attach", "{doc}");
    assert_eq!(
        shown["limits"]["cpu_max"],
        serde_json::json!({"quota_us": 50000, "period_us": 100000}),
        "{doc}"
    );
    assert_eq!(shown["limits"]["memory_max_bytes"], 67108864, "{doc}");
    assert!(shown["age_seconds"].as_f64().is_some_and(|a| a >= 0.0), "{doc}");
    assert!(shown["usage"]["cpu_seconds"].as_f64().is_some(), "{doc}");
    assert!(shown["usage"]["memory_current_bytes"].as_u64().is_some(), "{doc}");

    let table = status(&root, false).stdout;
    let row = table
        .lines()
        .find(|l| l.starts_with("shown "))
        .unwrap_or_else(|| panic!("no row for job shown:\n{table}"));
    for cell in [pid.to_string().as_str(), "sleep", "50%", "64 MiB"] {
        assert!(row.contains(cell), "{cell:?} missing from the row {row:?}");
    }

    // ffrtmp run forwards SIGTERM to sleep, reports and removes the cgroup.
    run.signal(Signal::SIGTERM);
    let out = run.wait(Duration::from_secs(10));
    assert_eq!(out.code(), 128 + 15, "{out:?}");
    root.assert_job_gone("shown");
    let doc = status(&root, true).json();
    assert!(job(&doc, "shown").is_none(), "job still listed after it ended: {doc}");
    let table = status(&root, false).stdout;
    assert!(
        table.starts_with(&format!("no governed jobs under {}", root.name())),
        "{table}"
    );
}

#[test]
fn status_lists_an_empty_leftover_job() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    // The wrapper dies first, so nobody removes the cgroup; then its
    // workload ends and leaves the job cgroup empty.
    root.leave_empty_job("left");

    let doc = status(&root, true).json();
    let left = job(&doc, "left").unwrap_or_else(|| panic!("job left not listed: {doc}"));
    assert_eq!(left["pids"], serde_json::json!([]), "{doc}");
    assert_eq!(left["command"], Value::Null, "{doc}");
    let table = status(&root, false).stdout;
    let row = table
        .lines()
        .find(|l| l.starts_with("left "))
        .unwrap_or_else(|| panic!("no row for job left:\n{table}"));
    assert!(row.contains("(empty)"), "{row:?}");
}
