//! The tracker without root: every ordering the kernel and the blocking
//! pool can produce, as unit tests, and a property test against a model.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use super::*;
use crate::cgroup::limits::Nice;
use crate::events::scan::Targets;
use crate::process::ProcessInfo;
use crate::watch::Filters;

/// Payload of a governed job in these tests: the process that was moved.
type T = Tracker<ProcessId>;

fn rules() -> Arc<Rules> {
    Arc::new(Rules::simple(Targets::new(["ffmpeg".to_string()]), Limits::default()))
}

fn tracker() -> T {
    Tracker::new(rules(), RetryConfig { max_attempts: 2 }, true)
}

fn id(pid: u32, start_time: u64) -> ProcessId {
    ProcessId { pid, start_time }
}

fn found(id: ProcessId, seen_ns: u64) -> Found {
    Found {
        candidate: Candidate {
            info: ProcessInfo {
                id,
                comm: "ffmpeg".into(),
                state: 'S',
                ppid: 1,
                flags: 0,
                exit_status: None,
            },
            command: "ffmpeg".into(),
        },
        age: Duration::from_secs(1),
        seen_ns,
    }
}

fn scan(found: Vec<Found>) -> ScanResult {
    ScanResult {
        found,
        failed: Vec::new(),
    }
}

/// The adoption the actions ask for, if exactly one.
fn adoption(actions: &[Action<ProcessId>]) -> Option<(Candidate, JobId, Limits, u32)> {
    let mut it = actions.iter().filter_map(|a| match a {
        Action::Adopt {
            candidate,
            job_id,
            limits,
            attempt,
            ..
        } => Some((candidate.clone(), job_id.clone(), limits.clone(), *attempt)),
        _ => None,
    });
    let first = it.next();
    assert!(it.next().is_none(), "two adoptions at once: {actions:?}");
    first
}

fn finished(actions: &[Action<ProcessId>]) -> Vec<(ProcessId, ProcessId, Option<i32>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Finish { id, job, status } => Some((*id, job.payload, *status)),
            _ => None,
        })
        .collect()
}

fn timers(actions: &[Action<ProcessId>]) -> Vec<Timer> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Timer { timer, .. } => Some(timer.clone()),
            _ => None,
        })
        .collect()
}

fn scans(actions: &[Action<ProcessId>]) -> usize {
    actions.iter().filter(|a| matches!(a, Action::Scan(_))).count()
}

/// Drive `p` from an eBPF exec event to governed; returns the actions of
/// the adoption's outcome.
fn govern(t: &mut T, p: ProcessId, seen_ns: u64) -> Vec<Action<ProcessId>> {
    let a = t.exec(p.pid, Some(p.start_time), Some(seen_ns));
    assert!(matches!(a[..], [Action::Check { .. }]), "{a:?}");
    // Reported as a plain read, so the adoption is an action of its own.
    let a = t.fused_checked(
        p.pid,
        Some(p.start_time),
        Some(seen_ns),
        FusedCheck::Checked(Checked::Target(found(p, seen_ns))),
    );
    let (candidate, job_id, limits, attempt) = adoption(&a).expect("adopts");
    assert_eq!(candidate.info.id, p);
    t.adopted(
        candidate,
        job_id,
        limits,
        attempt,
        Adopted::Governed {
            payload: p,
            attached: SystemTime::now(),
        },
    )
}

#[test]
fn an_exec_of_a_reused_pid_before_the_old_exit_keeps_both_jobs() {
    let mut t = tracker();
    let (old, new) = (id(100, 1), id(100, 2));
    govern(&mut t, old, 10);
    // The new holder of pid 100 is seen before the old one's exit arrives.
    let a = govern(&mut t, new, 20);
    assert!(a.iter().any(|a| matches!(a, Action::Watch(w) if *w == new)));
    assert_eq!(t.governed(), 2);
    let a = t.pidfd_exit(old, Some(0));
    assert_eq!(finished(&a), [(old, old, Some(0))]);
    assert!(t.job(new).is_some(), "the newer process's job is kept");
    let a = t.pidfd_exit(new, Some(256));
    assert_eq!(finished(&a), [(new, new, Some(256))]);
    assert!(t.is_empty());
}

#[test]
fn an_exec_of_a_reused_pid_after_the_old_exit_is_a_new_job() {
    let mut t = tracker();
    let (old, new) = (id(100, 1), id(100, 2));
    govern(&mut t, old, 10);
    assert_eq!(finished(&t.source_exit(100, Some(1), 9, Some(15))), []);
    assert_eq!(finished(&t.pidfd_exit(old, None)), [(old, old, Some(9))]);
    govern(&mut t, new, 20);
    assert_eq!(t.governed(), 1);
    assert!(t.job(new).is_some());
}

#[test]
fn a_new_target_is_discovered_before_it_is_adopted() {
    let mut t = tracker();
    let p = id(100, 1);
    let a = t.checked(100, None, None, 0, Checked::Target(found(p, 1)));
    assert!(matches!(a[0], Action::Note(Note::Discovered { found: 1 })), "{a:?}");
    assert!(matches!(a[1], Action::Adopt { .. }), "{a:?}");
    // Seen again: nothing new.
    assert!(t.checked(100, None, None, 0, Checked::Target(found(p, 2))).is_empty());
}

#[test]
fn a_check_that_finds_another_process_than_the_exec_is_ignored() {
    let mut t = tracker();
    t.exec(100, Some(1), None);
    // The pid was reused between the exec and the read.
    let a = t.fused_checked(
        100,
        Some(1),
        None,
        FusedCheck::Checked(Checked::Target(found(id(100, 2), 5))),
    );
    assert!(a.is_empty(), "{a:?}");
    assert!(t.is_empty());
}

#[test]
fn an_exit_before_the_adoption_finishes() {
    // The adoption finds it gone: counted, forgotten.
    let mut t = tracker();
    let p = id(100, 1);
    t.exec(100, None, None);
    let a = t.checked(100, None, None, 0, Checked::Target(found(p, 5)));
    let (c, j, l, n) = adoption(&a).unwrap();
    assert!(t.source_exit(100, None, 0, Some(6)).is_empty());
    let a = t.adopted(c, j, l, n, Adopted::Gone);
    assert!(matches!(&a[..], [Action::Note(Note::ExitedUngoverned { id, .. })] if *id == p));
    assert!(t.is_empty());

    // It was moved as a zombie: governed, then its pidfd is readable at
    // once; the status the source reported first is used.
    let mut t = tracker();
    t.exec(100, None, None);
    let a = t.checked(100, None, None, 0, Checked::Target(found(p, 5)));
    let (c, j, l, n) = adoption(&a).unwrap();
    t.source_exit(100, None, 3 << 8, Some(6));
    t.adopted(
        c,
        j,
        l,
        n,
        Adopted::Governed {
            payload: p,
            attached: SystemTime::now(),
        },
    );
    assert_eq!(finished(&t.pidfd_exit(p, None)), [(p, p, Some(3 << 8))]);
    assert!(t.is_empty());
}

#[test]
fn a_status_before_the_pidfd_wakes() {
    let mut t = tracker();
    let p = id(100, 1);
    govern(&mut t, p, 10);
    assert!(t.source_exit(100, Some(1), 256, None).is_empty());
    assert_eq!(finished(&t.pidfd_exit(p, None)), [(p, p, Some(256))]);
}

#[test]
fn a_status_after_the_pidfd_wakes() {
    let mut t = tracker();
    let p = id(100, 1);
    govern(&mut t, p, 10);
    let a = t.pidfd_exit(p, None);
    assert_eq!(timers(&a), [Timer::ExitStatus(p)]);
    assert!(t.job(p).is_some(), "still reported as governed while it waits");
    assert_eq!(finished(&t.source_exit(100, Some(1), 9, None)), [(p, p, Some(9))]);
    // The grace timer that follows changes nothing.
    assert!(t.timer(Timer::ExitStatus(p)).is_empty());
    assert!(t.is_empty());
}

#[test]
fn a_status_that_never_comes() {
    let mut t = tracker();
    let p = id(100, 1);
    govern(&mut t, p, 10);
    t.pidfd_exit(p, None);
    assert_eq!(finished(&t.timer(Timer::ExitStatus(p))), [(p, p, None)]);
    assert!(t.is_empty());
    // A source without statuses (poll) does not wait.
    let mut t: T = Tracker::new(rules(), RetryConfig::default(), false);
    govern(&mut t, p, 10);
    assert_eq!(finished(&t.pidfd_exit(p, None)), [(p, p, None)]);
}

#[test]
fn the_pidfd_status_wins_over_the_source() {
    let mut t = tracker();
    let p = id(100, 1);
    govern(&mut t, p, 10);
    t.source_exit(100, None, 1, Some(50));
    assert_eq!(finished(&t.pidfd_exit(p, Some(2))), [(p, p, Some(2))]);
}

#[test]
fn an_exit_stamped_before_the_process_was_seen_is_an_earlier_holders() {
    let mut t = tracker();
    let p = id(100, 2);
    govern(&mut t, p, 100);
    // A pid-only exit (netlink) from before the read: not this process's.
    t.source_exit(100, None, 9, Some(99));
    let a = t.pidfd_exit(p, None);
    assert_eq!(timers(&a), [Timer::ExitStatus(p)]);
    // Its own exit, stamped later, is.
    assert_eq!(finished(&t.source_exit(100, None, 0, Some(101))), [(p, p, Some(0))]);
}

#[test]
fn a_stamped_exit_goes_to_the_last_holder_seen_before_it() {
    let mut t = tracker();
    let (old, new) = (id(100, 1), id(100, 2));
    govern(&mut t, old, 10);
    govern(&mut t, new, 20);
    // The old holder's exit was lost; the next one stamped after the new
    // holder was seen alive is the new holder's, not the old one's.
    t.source_exit(100, None, 6, Some(40));
    assert_eq!(timers(&t.pidfd_exit(old, None)), [Timer::ExitStatus(old)]);
    assert_eq!(finished(&t.pidfd_exit(new, None)), [(new, new, Some(6))]);
    // Late but stamped in its time, the old one's is still its own.
    assert_eq!(finished(&t.source_exit(100, None, 5, Some(15))), [(old, old, Some(5))]);
}

#[test]
fn after_a_loss_a_pid_only_exit_is_not_trusted_for_processes_seen_before() {
    let mut t = tracker();
    let p = id(100, 1);
    govern(&mut t, p, 10);
    // Its exit may have been among the lost; this may be a later holder's.
    t.lost(20);
    t.source_exit(100, None, 6, Some(40));
    assert_eq!(timers(&t.pidfd_exit(p, None)), [Timer::ExitStatus(p)]);
    assert_eq!(finished(&t.timer(Timer::ExitStatus(p))), [(p, p, None)]);
    // With its identity (eBPF), it is still taken.
    let q = id(101, 1);
    govern(&mut t, q, 10);
    t.source_exit(101, Some(1), 7, Some(41));
    assert_eq!(finished(&t.pidfd_exit(q, None)), [(q, q, Some(7))]);
}

#[test]
fn an_unstamped_exit_goes_to_the_oldest_holder_without_a_status() {
    let mut t = tracker();
    let (old, new) = (id(100, 1), id(100, 2));
    govern(&mut t, old, 10);
    govern(&mut t, new, 20);
    t.source_exit(100, None, 5, None);
    t.source_exit(100, None, 6, None);
    assert_eq!(finished(&t.pidfd_exit(old, None)), [(old, old, Some(5))]);
    assert_eq!(finished(&t.pidfd_exit(new, None)), [(new, new, Some(6))]);
}

#[test]
fn transient_failures_are_retried_then_given_up() {
    let mut t = tracker();
    let p = id(100, 1);
    t.exec(100, Some(1), None);
    let mut a = t.fused_checked(100, Some(1), None, FusedCheck::Checked(Checked::Target(found(p, 5))));
    for attempt in 0..=2 {
        let (c, j, l, n) = adoption(&a).expect("an attempt");
        assert_eq!(n, attempt);
        let failed = Adopted::Failed {
            error: "EMFILE".into(),
            transient: true,
            announced: false,
        };
        a = t.adopted(c, j, l, n, failed);
        let note = a.iter().find_map(|a| match a {
            Action::Note(Note::AttachFailed { retry_in, .. }) => Some(*retry_in),
            _ => None,
        });
        if attempt < 2 {
            assert_eq!(note, Some(Some(backoff(attempt))));
            assert_eq!(
                timers(&a),
                [Timer::Retry {
                    id: p,
                    attempt: attempt + 1
                }]
            );
            // Seen again meanwhile: not adopted twice.
            assert!(
                t.scanned("loss", Ok(scan(vec![found(p, 6)])))
                    .iter()
                    .all(|a| adoption(std::slice::from_ref(a)).is_none())
            );
            a = t.timer(Timer::Retry {
                id: p,
                attempt: attempt + 1,
            });
        } else {
            assert_eq!(note, Some(None), "given up after the last attempt");
            assert_eq!(timers(&a), [Timer::Rescan], "a later scan looks again");
        }
    }
    assert_eq!(t.len(), 1, "remembered as given up");
    assert!(t.exec(100, Some(1), None).is_empty(), "not read again for an exec");
    // The rescan finds it again: a new series of attempts.
    assert_eq!(scans(&t.timer(Timer::Rescan)), 1);
    let (.., attempt) = adoption(&t.scanned("retry", Ok(scan(vec![found(p, 7)])))).expect("tried again");
    assert_eq!(attempt, 0);
}

#[test]
fn a_process_given_up_on_is_forgotten_when_gone() {
    let mut t = tracker();
    let p = id(100, 1);
    let a = t.checked(100, None, None, 0, Checked::Target(found(p, 5)));
    let (c, j, l, n) = adoption(&a).unwrap();
    let failed = Adopted::Failed {
        error: "EACCES".into(),
        transient: false,
        announced: true,
    };
    t.adopted(c, j, l, n, failed);
    assert_eq!(t.len(), 1);
    assert!(adoption(&t.scanned("poll", Ok(scan(vec![])))).is_none());
    assert!(t.is_empty(), "a scan that no longer sees it forgets it");
}

#[test]
fn attaching_is_announced_once_per_series_of_attempts() {
    let announce = |a: &[Action<ProcessId>]| {
        a.iter().find_map(|a| match a {
            Action::Adopt { announce, .. } => Some(*announce),
            _ => None,
        })
    };
    let mut t = tracker();
    let p = id(100, 1);
    let a = t.checked(100, None, None, 0, Checked::Target(found(p, 5)));
    assert_eq!(announce(&a), Some(true));
    let (c, j, l, n) = adoption(&a).unwrap();
    // Failed before it got as far as announcing (EMFILE pinning it).
    let failed = |announced| Adopted::Failed {
        error: "EMFILE".into(),
        transient: true,
        announced,
    };
    t.adopted(c, j, l, n, failed(false));
    let a = t.timer(Timer::Retry { id: p, attempt: 1 });
    assert_eq!(announce(&a), Some(true), "nothing was announced yet");
    let (c, j, l, n) = adoption(&a).unwrap();
    t.adopted(c, j, l, n, failed(true));
    let a = t.timer(Timer::Retry { id: p, attempt: 2 });
    assert_eq!(announce(&a), Some(false), "announced by the attempt before");
}

#[test]
fn a_permanent_failure_is_not_retried() {
    let mut t = tracker();
    let p = id(100, 1);
    t.exec(100, Some(1), None);
    let a = t.fused_checked(100, Some(1), None, FusedCheck::Checked(Checked::Target(found(p, 5))));
    let (c, j, l, n) = adoption(&a).unwrap();
    let a = t.adopted(
        c,
        j,
        l,
        n,
        Adopted::Failed {
            error: "EACCES".into(),
            transient: false,
            announced: true,
        },
    );
    assert!(timers(&a).is_empty());
    assert_eq!(t.len(), 1, "remembered until a scan sees it again or not");
}

#[test]
fn a_stale_retry_timer_does_nothing() {
    let mut t = tracker();
    let p = id(100, 1);
    govern(&mut t, p, 5);
    assert!(t.timer(Timer::Retry { id: p, attempt: 1 }).is_empty());
    assert!(t.timer(Timer::MinRuntime(p)).is_empty());
    assert!(t.timer(Timer::ExitStatus(p)).is_empty());
    assert_eq!(t.governed(), 1);
}

#[test]
fn a_failed_read_is_retried_and_then_left_to_a_scan() {
    let mut t = tracker();
    t.exec(100, None, Some(1));
    let mut attempt = 0;
    loop {
        let a = t.checked(
            100,
            None,
            Some(1),
            attempt,
            Checked::Failed {
                error: "Too many open files".into(),
            },
        );
        assert!(a.iter().any(|a| matches!(a, Action::Note(Note::CheckFailed { .. }))));
        match timers(&a).as_slice() {
            [Timer::RetryCheck { attempt: next, .. }] => {
                let timer = timers(&a).remove(0);
                let a = t.timer(timer);
                assert!(matches!(a[..], [Action::Check { attempt: n, .. }] if n == *next));
                attempt = *next;
            }
            [Timer::Rescan] => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(attempt, 2);
    assert!(t.is_empty());
}

#[test]
fn filtered_then_reloaded() {
    let mut t = tracker();
    let p = id(100, 1);
    t.exec(100, Some(1), None);
    let a = t.fused_checked(100, Some(1), None, FusedCheck::Checked(Checked::Target(found(p, 5))));
    let (c, j, l, n) = adoption(&a).unwrap();
    let rejected = Rejected {
        filter: "blocked_uids",
        detail: "uid 0".into(),
    };
    let a = t.adopted(c, j, l, n, Adopted::Filtered(rejected));
    assert!(matches!(&a[..], [Action::Note(Note::Filtered { .. })]));
    // Seen again: not decided on again.
    assert!(t.exec(100, Some(1), None).is_empty());
    assert!(adoption(&t.scanned("poll", Ok(scan(vec![found(p, 6)])))).is_none());
    // A reload decides again about everything running.
    let a = t.reload(rules(), RetryConfig::default());
    assert_eq!(scans(&a), 1);
    assert!(adoption(&t.scanned("reload", Ok(scan(vec![found(p, 7)])))).is_some());
}

#[test]
fn a_rejection_ends_with_the_process() {
    let mut t = tracker();
    let p = id(100, 1);
    t.scanned("startup", Ok(scan(vec![found(p, 1)])));
    let a = t.scanned("startup", Ok(scan(vec![])));
    assert!(adoption(&a).is_none(), "already adopting");
    let (c, j, l, n) = {
        let mut t2 = tracker();
        adoption(&t2.scanned("startup", Ok(scan(vec![found(p, 1)])))).unwrap()
    };
    let rejected = Rejected {
        filter: "allowed_users",
        detail: "root".into(),
    };
    t.adopted(c, j, l, n, Adopted::Filtered(rejected));
    assert_eq!(t.len(), 1);
    // By its exit (netlink reports every exit) …
    t.source_exit(100, None, 0, Some(5));
    assert!(t.is_empty());
}

#[test]
fn an_incomplete_or_failed_scan_is_tried_again() {
    let mut t = tracker();
    let a = t.scanned(
        "loss",
        Ok(ScanResult {
            found: Vec::new(),
            failed: vec![(100, "Too many open files".into())],
        }),
    );
    assert!(a.iter().any(|a| matches!(a, Action::Note(Note::ScanIncomplete { .. }))));
    assert_eq!(timers(&a), [Timer::Rescan]);
    // One rescan timer at a time.
    assert!(timers(&t.scanned("loss", Err("listing /proc: EMFILE".into()))).is_empty());
    assert_eq!(scans(&t.timer(Timer::Rescan)), 1);
    assert_eq!(
        timers(&t.scanned("retry", Err("listing /proc: EMFILE".into()))),
        [Timer::Rescan]
    );
}

#[test]
fn scan_and_events_adopt_once() {
    let mut t = tracker();
    let p = id(100, 1);
    let a = t.scanned("startup", Ok(scan(vec![found(p, 1)])));
    assert!(adoption(&a).is_some());
    t.exec(100, None, Some(2));
    let a = t.checked(100, None, Some(2), 0, Checked::Target(found(p, 3)));
    assert!(adoption(&a).is_none(), "{a:?}");
    // With the identity from the source, not even read again.
    assert!(t.exec(100, Some(1), None).is_empty());
}

#[test]
fn take_over_after_restart() {
    let mut t = tracker();
    let p = id(100, 1);
    let job = Job {
        job_id: JobId::parse("auto-ffmpeg-100").unwrap(),
        command: "ffmpeg".into(),
        limits: Limits::default(),
        attached: SystemTime::now(),
        payload: p,
    };
    let a = t.reattached(found(p, 1), job);
    assert!(a.iter().any(|a| matches!(a, Action::Watch(w) if *w == p)));
    assert!(matches!(
        a.last(),
        Some(Action::Note(Note::Governed { reattached: true, .. }))
    ));
    // The start-up scan and a late exec event see it: not adopted again.
    assert!(adoption(&t.scanned("startup", Ok(scan(vec![found(p, 2)])))).is_none());
    assert!(t.exec(100, Some(1), None).is_empty());
    assert_eq!(finished(&t.pidfd_exit(p, Some(0))), [(p, p, Some(0))]);
}

#[test]
fn min_runtime_waits_then_adopts() {
    let mut rules = Rules::simple(Targets::new(["ffmpeg".to_string()]), Limits::default());
    rules.filters = Filters {
        min_runtime: Some(Duration::from_secs(5)),
        ..Filters::default()
    };
    let mut t: T = Tracker::new(Arc::new(rules), RetryConfig::default(), true);
    let p = id(100, 1);
    let a = t.checked(100, None, None, 0, Checked::Target(found(p, 1)));
    assert!(adoption(&a).is_none());
    assert_eq!(timers(&a), [Timer::MinRuntime(p)]);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Note(Note::Waiting { wait, .. }) if *wait == Duration::from_secs(4)))
    );
    let (c, ..) = adoption(&t.timer(Timer::MinRuntime(p))).expect("adopted when due");
    assert_eq!(c.info.ppid, 1, "the process as it was read, for the filters");
}

#[test]
fn a_reload_updates_running_jobs_and_adoptions_in_flight() {
    let mut t = tracker();
    let (running, adopting) = (id(100, 1), id(101, 1));
    govern(&mut t, running, 1);
    let a = t.checked(101, None, None, 0, Checked::Target(found(adopting, 2)));
    let (c, j, l, n) = adoption(&a).unwrap();

    let mut new = Rules::simple(Targets::new(["ffmpeg".to_string()]), Limits::default());
    new.default_limits.nice = Some(Nice::parse("5").unwrap());
    let a = t.reload(Arc::new(new), RetryConfig::default());
    let updates: Vec<ProcessId> = a
        .iter()
        .filter_map(|a| match a {
            Action::UpdateLimits { id, new, .. } if new.nice.is_some() => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(updates, [running]);
    // The adoption in flight wrote the old limits: it catches up.
    let a = t.adopted(
        c,
        j,
        l,
        n,
        Adopted::Governed {
            payload: adopting,
            attached: SystemTime::now(),
        },
    );
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::UpdateLimits { id, .. } if *id == adopting))
    );
    assert_eq!(t.job(adopting).unwrap().limits.nice, Some(Nice::parse("5").unwrap()));
    // Unchanged limits write nothing.
    let a = t.reload(t.rules().clone(), RetryConfig::default());
    assert!(!a.iter().any(|a| matches!(a, Action::UpdateLimits { .. })));
}

#[test]
fn stopping_finishes_jobs_waiting_for_a_status() {
    let mut t = tracker();
    let (a_id, b_id) = (id(100, 1), id(101, 1));
    govern(&mut t, a_id, 1);
    govern(&mut t, b_id, 1);
    t.pidfd_exit(a_id, None);
    assert_eq!(finished(&t.stop()), [(a_id, a_id, None)]);
    assert_eq!(t.governed(), 1, "the running job stays governed");
}

// The property test: a model kernel, a model shell, random interleavings.

/// A process of the model kernel.
#[derive(Debug, Clone)]
struct Proc {
    id: ProcessId,
    target: bool,
    alive: bool,
    status: i32,
    /// A filter rejects it (decided by its identity).
    filtered: bool,
}

/// Work the shell has been asked to do and not yet done.
#[derive(Debug)]
enum Pending {
    Check {
        pid: u32,
        start_time: Option<u64>,
        exec_ns: Option<u64>,
        attempt: u32,
        adopt: bool,
    },
    Adopt {
        candidate: Candidate,
        job_id: JobId,
        limits: Box<Limits>,
        attempt: u32,
    },
    Scan(&'static str),
    Timer(Timer),
    /// A watched process's pidfd became readable.
    Pidfd(ProcessId),
}

#[derive(Debug)]
enum Event {
    Exec {
        pid: u32,
        start_time: Option<u64>,
        at: u64,
    },
    Exit {
        pid: u32,
        start_time: Option<u64>,
        status: i32,
        at: u64,
    },
}

struct Model {
    /// eBPF-like (identities on events, exits of governed pids only) or
    /// netlink-like (no identities, every exit, stamped).
    ebpf: bool,
    /// The pidfd can tell a reaped process's status (6.15+).
    pidfd_status: bool,
    clock: u64,
    procs: Vec<Proc>,
    events: std::collections::VecDeque<Event>,
    pending: Vec<Pending>,
    t: T,
    /// Pids the eBPF map reports exits for.
    governed_pids: HashSet<u32>,
    /// Processes whose pidfd is watched.
    watched: HashSet<ProcessId>,
    /// Processes moved into a job: adoption in flight or governed.
    adopting: HashSet<ProcessId>,
    in_job: HashSet<ProcessId>,
    finished: BTreeMap<ProcessId, Option<i32>>,
}

impl Model {
    fn new(ebpf: bool, pidfd_status: bool) -> Model {
        Model {
            ebpf,
            pidfd_status,
            clock: 1,
            procs: Vec::new(),
            events: Default::default(),
            pending: Vec::new(),
            t: Tracker::new(rules(), RetryConfig { max_attempts: 2 }, true),
            governed_pids: HashSet::new(),
            watched: HashSet::new(),
            adopting: HashSet::new(),
            in_job: HashSet::new(),
            finished: BTreeMap::new(),
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn proc(&self, id: ProcessId) -> Option<&Proc> {
        self.procs.iter().find(|p| p.id == id)
    }

    /// The live process holding `pid` (a pid is reused only once free).
    fn holder(&self, pid: u32) -> Option<&Proc> {
        self.procs.iter().find(|p| p.id.pid == pid && p.alive)
    }

    fn spawn(&mut self, pid: u32, target: bool) {
        if self.holder(pid).is_some() {
            return;
        }
        let start_time = self.tick();
        let id = ProcessId { pid, start_time };
        self.procs.push(Proc {
            id,
            target,
            alive: true,
            status: (start_time as i32 % 7) << 8,
            filtered: start_time.is_multiple_of(5),
        });
        // Both sources report every exec of a target (eBPF filters others).
        if target || !self.ebpf {
            self.events.push_back(Event::Exec {
                pid,
                start_time: self.ebpf.then_some(start_time),
                at: start_time,
            });
        }
    }

    fn exit(&mut self, pid: u32) {
        let at = self.tick();
        let Some(p) = self.procs.iter_mut().find(|p| p.id.pid == pid && p.alive) else {
            return;
        };
        p.alive = false;
        let (id, status) = (p.id, p.status);
        if !self.ebpf || self.governed_pids.remove(&pid) {
            self.events.push_back(Event::Exit {
                pid,
                start_time: self.ebpf.then_some(id.start_time),
                status,
                at,
            });
        }
        if self.watched.contains(&id) {
            self.pending.push(Pending::Pidfd(id));
        }
    }

    fn deliver(&mut self, lose: bool) {
        let Some(event) = self.events.pop_front() else { return };
        let actions = if lose {
            let now = self.tick();
            self.t.lost(now)
        } else {
            match event {
                Event::Exec { pid, start_time, at } => self.t.exec(pid, start_time, Some(at)),
                Event::Exit {
                    pid,
                    start_time,
                    status,
                    at,
                } => self.t.source_exit(pid, start_time, status, Some(at)),
            }
        };
        self.act(actions);
    }

    fn found(&self, p: &Proc, seen_ns: u64) -> Found {
        let mut f = found(p.id, seen_ns);
        f.age = Duration::from_secs(10);
        f
    }

    /// Do one piece of pending work; `fail` injects a failure where one can happen.
    fn complete(&mut self, index: usize, fail: u8) {
        if self.pending.is_empty() {
            return;
        }
        let work = self.pending.swap_remove(index % self.pending.len());
        let actions = match work {
            Pending::Check {
                pid,
                start_time,
                exec_ns,
                attempt,
                adopt,
            } => {
                let seen = self.tick();
                let result = match self.holder(pid) {
                    _ if fail == 1 => Checked::Failed { error: "EMFILE".into() },
                    None => Checked::Gone,
                    Some(p) if !p.target => Checked::NotTarget,
                    Some(p) => Checked::Target(self.found(p, seen)),
                };
                if adopt {
                    self.fused_check(pid, start_time, exec_ns, result, fail)
                } else {
                    self.t.checked(pid, start_time, exec_ns, attempt, result)
                }
            }
            Pending::Adopt {
                candidate,
                job_id,
                limits,
                attempt,
            } => {
                let id = candidate.info.id;
                assert!(self.adopting.remove(&id), "an adoption nobody asked for: {id}");
                let outcome = self.adoption_outcome(id, attempt, fail);
                self.t.adopted(candidate, job_id, *limits, attempt, outcome)
            }
            Pending::Scan(trigger) => {
                let seen = self.tick();
                let found = self
                    .procs
                    .iter()
                    .filter(|p| p.alive && p.target)
                    .map(|p| self.found(p, seen))
                    .collect();
                self.t.scanned(trigger, Ok(scan(found)))
            }
            Pending::Timer(timer) => self.t.timer(timer),
            Pending::Pidfd(id) => {
                let p = self.proc(id).expect("a watched process exists");
                let status = (self.pidfd_status || fail == 1).then_some(p.status);
                self.t.pidfd_exit(id, status)
            }
        };
        self.act(actions);
    }

    /// The daemon's `inspect_and_adopt`: the read's result, and when it is
    /// a target let in at once, its adoption in the same step.
    fn fused_check(
        &mut self,
        pid: u32,
        start_time: Option<u64>,
        exec_ns: Option<u64>,
        result: Checked,
        fail: u8,
    ) -> Vec<Action<ProcessId>> {
        let result = match result {
            Checked::Target(found) => match adopt_at_once(self.t.rules(), start_time, &found) {
                Some((job_id, limits)) => {
                    let id = found.id();
                    assert!(
                        !self.in_job.contains(&id) && !self.adopting.contains(&id),
                        "{id} adopted by a read while governed or being adopted"
                    );
                    // (fail 1 already failed the read.)
                    let outcome = self.adoption_outcome(id, 0, if fail == 1 { 0 } else { fail });
                    FusedCheck::Adopted {
                        found,
                        job_id,
                        limits: Box::new(limits),
                        outcome,
                    }
                }
                None => FusedCheck::Checked(Checked::Target(found)),
            },
            other => FusedCheck::Checked(other),
        };
        self.t.fused_checked(pid, start_time, exec_ns, result)
    }

    /// What adopting `id` comes to in the model; `fail` injects a failure.
    fn adoption_outcome(&mut self, id: ProcessId, attempt: u32, fail: u8) -> Adopted<ProcessId> {
        match self.proc(id) {
            _ if fail == 1 => Adopted::Failed {
                error: "EBUSY".into(),
                transient: true,
                announced: attempt % 2 == 1,
            },
            _ if fail == 2 => Adopted::Failed {
                error: "EACCES".into(),
                transient: false,
                announced: false,
            },
            Some(p) if p.alive && p.filtered => Adopted::Filtered(Rejected {
                filter: "blocked_uids",
                detail: String::new(),
            }),
            Some(p) if p.alive => {
                assert!(self.in_job.insert(id), "{id} moved into a second job");
                Adopted::Governed {
                    payload: id,
                    attached: SystemTime::UNIX_EPOCH,
                }
            }
            _ => Adopted::Gone,
        }
    }

    fn act(&mut self, actions: Vec<Action<ProcessId>>) {
        for action in actions {
            match action {
                Action::Check {
                    pid,
                    start_time,
                    exec_ns,
                    attempt,
                    adopt,
                } => self.pending.push(Pending::Check {
                    pid,
                    start_time,
                    exec_ns,
                    attempt,
                    adopt,
                }),
                Action::Adopt {
                    candidate,
                    job_id,
                    limits,
                    attempt,
                    ..
                } => {
                    let id = candidate.info.id;
                    assert!(
                        !self.in_job.contains(&id) && self.adopting.insert(id),
                        "{id} adopted while governed or being adopted"
                    );
                    assert!(self.proc(id).is_some_and(|p| p.target), "{id} is not a target");
                    self.pending.push(Pending::Adopt {
                        candidate,
                        job_id,
                        limits: Box::new(limits),
                        attempt,
                    });
                }
                Action::Scan(trigger) => self.pending.push(Pending::Scan(trigger)),
                Action::Timer { timer, .. } => self.pending.push(Pending::Timer(timer)),
                Action::Watch(id) => {
                    assert!(self.in_job.contains(&id), "watching {id}, which is in no job");
                    assert!(self.watched.insert(id), "{id} watched twice");
                    let p = self.proc(id).expect("exists").clone();
                    if self.ebpf {
                        self.governed_pids.insert(id.pid);
                    }
                    if !p.alive {
                        // Moved as a zombie: its pidfd is readable at once.
                        self.pending.push(Pending::Pidfd(id));
                    }
                }
                Action::UpdateLimits { id, .. } => {
                    assert!(self.t.job(id).is_some(), "limits for {id}, which is not governed");
                }
                Action::Finish { id, job, status } => {
                    assert_eq!(job.payload, id, "the job of another process");
                    let p = self.proc(id).expect("exists");
                    assert!(!p.alive, "{id} reported while it runs");
                    if let Some(s) = status {
                        assert_eq!(s, p.status, "{id} reported with another process's status");
                    }
                    assert!(self.finished.insert(id, status).is_none(), "{id} reported twice");
                    assert!(self.in_job.remove(&id));
                }
                Action::Note(_) => {}
            }
        }
    }

    /// Everything exits, every event and piece of work runs out.
    fn quiesce(&mut self) {
        let pids: Vec<u32> = self.procs.iter().filter(|p| p.alive).map(|p| p.id.pid).collect();
        for pid in pids {
            self.exit(pid);
        }
        for _ in 0..10_000 {
            if !self.events.is_empty() {
                self.deliver(false);
            } else if !self.pending.is_empty() {
                self.complete(0, 0);
            } else {
                break;
            }
        }
        assert!(self.events.is_empty() && self.pending.is_empty(), "did not settle");
        // A scan forgets the rejections of processes gone.
        let a = self.t.scanned("final", Ok(scan(Vec::new())));
        self.act(a);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 2000, ..Default::default() })]

    /// Random interleavings of spawns (over five pids, so pids are reused
    /// often), exits, event delivery and loss, work completing in any order
    /// and failing: the tracker never adopts a process twice or one that is
    /// not a target, never reports a process that runs or with another's
    /// status, reports each governed process exactly once, and forgets
    /// everything once all have exited.
    #[test]
    fn random_event_sequences_never_confuse_processes(
        ebpf in proptest::bool::ANY,
        pidfd_status in proptest::bool::ANY,
        ops in proptest::collection::vec((0u8..6, 0u8..5, 0u8..8), 0..200),
    ) {
        let mut m = Model::new(ebpf, pidfd_status);
        for (op, pid, arg) in ops {
            let pid = 100 + u32::from(pid);
            match op {
                0 => m.spawn(pid, arg % 4 != 0),
                1 => m.exit(pid),
                2 | 3 => m.deliver(arg == 0),
                _ => m.complete(usize::from(arg), if arg >= 6 { arg - 5 } else { 0 }),
            }
        }
        m.quiesce();
        let governed: Vec<ProcessId> = m.in_job.iter().copied().collect();
        proptest::prop_assert!(governed.is_empty(), "governed but never reported: {governed:?}");
        proptest::prop_assert!(m.t.is_empty(), "entries left: {}", m.t.len());
    }
}

/// An eBPF exec of an unknown identity asks for a read that may adopt at
/// once; its report governs the process without a second piece of work.
#[test]
fn a_read_that_adopts_at_once_governs_in_one_step() {
    let mut t = tracker();
    let p = id(100, 7);
    let a = t.exec(100, Some(7), Some(3));
    assert!(matches!(a[..], [Action::Check { adopt: true, .. }]), "{a:?}");
    let f = found(p, 5);
    let (job_id, limits) = adopt_at_once(t.rules(), Some(7), &f).expect("no min_runtime here");
    let a = t.fused_checked(
        100,
        Some(7),
        Some(3),
        FusedCheck::Adopted {
            found: f,
            job_id,
            limits: Box::new(limits),
            outcome: Adopted::Governed {
                payload: p,
                attached: SystemTime::now(),
            },
        },
    );
    assert!(adoption(&a).is_none(), "adopted already: {a:?}");
    assert!(a.iter().any(|a| matches!(a, Action::Watch(w) if *w == p)), "{a:?}");
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Note(Note::Governed { exec_ns: Some(3), .. }))),
        "{a:?}"
    );
    assert_eq!(t.governed(), 1);
    let a = t.pidfd_exit(p, Some(0));
    assert_eq!(finished(&a), [(p, p, Some(0))]);
    assert!(t.is_empty());
}

/// While such a read runs, neither a scan nor a second exec of the same
/// process starts another adoption; once it reports, all is as usual.
#[test]
fn nothing_else_adopts_a_process_a_read_may_adopt() {
    let mut t = tracker();
    let p = id(100, 7);
    t.exec(100, Some(7), None);
    assert!(t.exec(100, Some(7), None).is_empty(), "the same process exec'd again");
    let a = t.scanned("loss", Ok(scan(vec![found(p, 4)])));
    assert!(adoption(&a).is_none(), "{a:?}");
    assert!(matches!(a[0], Action::Note(Note::Reconciled { found: 0, .. })), "{a:?}");
    // Another holder of the pid is still read and adopted as usual.
    assert!(matches!(
        t.exec(100, Some(8), None)[..],
        [Action::Check { adopt: true, .. }]
    ));
    // The read came back without adopting (it failed): a retry follows.
    let a = t.fused_checked(
        100,
        Some(7),
        None,
        FusedCheck::Checked(Checked::Failed { error: "EMFILE".into() }),
    );
    assert!(
        matches!(timers(&a)[..], [Timer::RetryCheck { attempt: 1, .. }]),
        "{a:?}"
    );
    let a = t.scanned("loss", Ok(scan(vec![found(p, 6)])));
    assert!(adoption(&a).is_some(), "a scan adopts it now: {a:?}");
}

#[test]
fn a_read_adopts_at_once_only_the_process_of_its_exec_once_it_may() {
    let waiting = Arc::new(Rules {
        filters: Filters {
            min_runtime: Some(Duration::from_secs(5)),
            ..Filters::default()
        },
        ..(*rules()).clone()
    });
    let f = found(id(100, 7), 5);
    assert!(adopt_at_once(&rules(), Some(7), &f).is_some());
    assert!(
        adopt_at_once(&rules(), Some(8), &f).is_none(),
        "the pid is another process's now"
    );
    assert!(adopt_at_once(&rules(), None, &f).is_none());
    assert!(adopt_at_once(&waiting, Some(7), &f).is_none(), "1 s old, 5 s asked");
}
