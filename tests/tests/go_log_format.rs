//! `ffrtmp watch`'s log read by a parser written for the old Go tool's
//! format (root only). The Go daemon logged through
//! `log.New(os.Stdout, "[watch] ", log.LstdFlags)` and wrote the summary
//! with Go's standard logger (`log.Printf("JOB %s | …runtime=%.0fs | exit=%d
//! | pid=%d", …)`, no prefix): the regular expressions below are those
//! formats, as a script that parses the old tool's output would hold them.

#[macro_use]
mod support;

use regex::Regex;
use std::process::{Command, Stdio};

use support::*;
use tests::{POLL_TIMEOUT, TestRoot};

for_backends! {
    the_default_log_reads_like_the_old_tools: [ebpf, netlink];
}

const STAMP: &str = r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}";

/// One line of the Go tool's output about `pid`, and what it says.
#[derive(Debug, PartialEq)]
enum GoLine {
    Attaching {
        job: String,
        command: String,
    },
    Attached {
        job: String,
    },
    Summary {
        job: String,
        sla: String,
        reason: String,
        runtime: u64,
        exit: i64,
    },
    Exited {
        job: String,
        duration: f64,
    },
    Detached {
        job: String,
    },
}

fn parse(log: &str, pid: u32) -> Vec<GoLine> {
    let watch = |body: &str| Regex::new(&format!(r"^\[watch\] {STAMP} {body}$")).unwrap();
    let attaching = watch(&format!(r"Attaching to PID {pid} \((\S+)\) as job (\S+)"));
    let attached = watch(&format!(r"✓ Attached to PID {pid} \(job: (\S+)\)"));
    let exited = watch(&format!(r"Process {pid} exited \(job (\S+), duration: ([0-9.]+)s\)"));
    let detached = watch(&format!(r"⊗ Detached from PID {pid} \(job: (\S+)\)"));
    let summary = Regex::new(&format!(
        r"^{STAMP} JOB (\S+) \| sla=(COMPLIANT|VIOLATION) \| reason=(\w+) \| runtime=(\d+)s \| exit=(-?\d+) \| pid={pid}$"
    ))
    .unwrap();
    let s = |c: &regex::Captures, i: usize| c[i].to_string();
    log.lines()
        .filter_map(|line| {
            if let Some(c) = attaching.captures(line) {
                Some(GoLine::Attaching {
                    command: s(&c, 1),
                    job: s(&c, 2),
                })
            } else if let Some(c) = attached.captures(line) {
                Some(GoLine::Attached { job: s(&c, 1) })
            } else if let Some(c) = summary.captures(line) {
                Some(GoLine::Summary {
                    job: s(&c, 1),
                    sla: s(&c, 2),
                    reason: s(&c, 3),
                    runtime: c[4].parse().unwrap(),
                    exit: c[5].parse().unwrap(),
                })
            } else if let Some(c) = exited.captures(line) {
                Some(GoLine::Exited {
                    job: s(&c, 1),
                    duration: c[2].parse().unwrap(),
                })
            } else {
                detached.captures(line).map(|c| GoLine::Detached { job: s(&c, 1) })
            }
        })
        .collect()
}

/// A target that lives about a second and exits 3: the old tool's lines,
/// in the old tool's order (the summary, then `Process … exited`, then
/// `⊗ Detached`), each in its format; and the start-up and stop lines.
fn the_default_log_reads_like_the_old_tools(backend: Backend) {
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let path = stubs.sh(&name);
    let daemon = Daemon::start(&root, backend, &[&name], &LIMITS);
    let mut target = Target::spawn(Command::new(&path).args(["-c", "sleep 1; exit 3"]).stdin(Stdio::null()));
    let pid = target.pid();
    daemon.wait_governed(&root, &name, &[pid], POLL_TIMEOUT);
    assert_eq!(target.reap(POLL_TIMEOUT).code(), Some(3));
    daemon.wait_log(POLL_TIMEOUT, "⊗ Detached", |log| {
        log.contains(&format!("⊗ Detached from PID {pid} "))
    });
    let log = daemon.stop();

    let job = job_of(&name, pid);
    let lines = parse(&log, pid);
    assert_eq!(lines.len(), 5, "five lines about {pid}: {lines:?}; log:\n{log}");
    assert_eq!(
        lines[0],
        GoLine::Attaching {
            job: job.clone(),
            command: name.clone()
        }
    );
    assert_eq!(lines[1], GoLine::Attached { job: job.clone() });
    match &lines[2] {
        GoLine::Summary {
            job: j,
            sla,
            reason,
            runtime,
            exit,
        } => {
            assert_eq!(
                (j, sla.as_str(), reason.as_str(), *exit),
                (&job, "COMPLIANT", "observed_to_completion", 3)
            );
            assert!((1..=3).contains(runtime), "runtime {runtime}s");
        }
        other => panic!("the summary comes third: {other:?}; log:\n{log}"),
    }
    // From the attach to the exit: under a second (adoption takes a moment,
    // long under emulation), never more than the target lived.
    assert!(
        matches!(&lines[3], GoLine::Exited { job: j, duration } if *j == job && *duration > 0.0 && *duration < 3.0),
        "{:?}",
        lines[3]
    );
    assert_eq!(lines[4], GoLine::Detached { job });

    // The daemon's own lines, with the prefix and the time.
    let line = |body: &str| Regex::new(&format!(r"(?m)^\[watch\] {STAMP} {body}$")).unwrap();
    for body in [
        r"Starting auto-attach service\.\.\.".to_string(),
        format!(r"Target commands: \[{}\]", regex::escape(&name)),
        // Where jobs go, with which limits, and that the event backends do not poll.
        r"Job cgroups: auto-<command>-<pid> under /sys/fs/cgroup/.+".to_string(),
        r"Limits: cpu_max=20000 100000, memory_max=67108864, nice=4".to_string(),
        format!(r"Scan interval: none \({} reports every exec; .*\)", backend.name()),
        r"Received signal interrupt, shutting down\.\.\.".to_string(),
        r"Service stopped gracefully".to_string(),
    ] {
        assert!(line(&body).is_match(&log), "no line {body:?}; log:\n{log}");
    }
}
