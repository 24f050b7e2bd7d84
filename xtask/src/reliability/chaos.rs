//! `reliability chaos`: the daemon dies in the middle of an adoption burst
//! and is restarted. Each round: a daemon with limits, a burst of
//! long-lived targets, `kill -9` after a random delay from the burst's
//! start (or, in fault rounds, the daemon kills itself right after writing
//! a target into the N-th hierarchy of its job: `FFRTMP_FAULT`), the state
//! of every target right after the kill, a few targets ended while no
//! daemon runs, a restart, and the checks: every live target governed once,
//! in every hierarchy, with its limits, one job each and none for the ended
//! ones; then the targets end, the daemon stops and nothing may be left
//! under the root.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::ensure;

use super::harness::{
    Census, Daemon, Layout, Placement, READY_TIMEOUT, Rng, Spawn, Targets, clock_seed, expected_limits, has_job_mark,
    wait_governed,
};
use super::{Common, Env, Report, TAG};
use crate::bench_common::{Flags, Stats, check_interrupt, ms};

const CPU_PCT: u64 = 50;
const MEMORY_MIB: u64 = 64;
/// How long the restarted daemon may take to govern every live target.
const GOVERN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a daemon may take to report every ended target and remove its job.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an event may take to reach the stream after what it reports.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a fault-injected daemon may take to reach its fault point.
const FAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Options {
    rounds: usize,
    seed: Option<u64>,
    burst: usize,
    max_delay_ms: u64,
    fault_every: usize,
    end_while_down: usize,
}

impl Options {
    pub fn parse(args: &[String], common: &mut Common) -> anyhow::Result<Option<Self>> {
        let mut o = Options {
            rounds: 100,
            seed: None,
            burst: 15,
            max_delay_ms: 40,
            fault_every: 5,
            end_while_down: 3,
        };
        let mut flags = Flags::new(args);
        while let Some((a, flag)) = flags.next_flag() {
            match flag {
                "--rounds" => o.rounds = flags.number(flag)? as usize,
                "--seed" => o.seed = Some(flags.number(flag)?),
                "--burst" => o.burst = flags.number(flag)? as usize,
                "--max-delay-ms" => o.max_delay_ms = flags.number(flag)?,
                "--fault-every" => o.fault_every = flags.number(flag)? as usize,
                "--end-while-down" => o.end_while_down = flags.number(flag)? as usize,
                "-h" | "--help" => return Ok(None),
                _ if common.take(flag, &mut flags)? => {}
                _ => anyhow::bail!("chaos: unknown argument '{a}'"),
            }
        }
        ensure!(o.rounds >= 1 && o.burst >= 1, "--rounds and --burst must be at least 1");
        ensure!(o.end_while_down < o.burst, "--end-while-down must be less than --burst");
        ensure!(o.max_delay_ms <= 60_000, "--max-delay-ms at most 60000");
        Ok(Some(o))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// `kill -9` this many ms after the burst started.
    After(u64),
    /// `FFRTMP_FAULT=crash-after-move:N`.
    Fault(usize),
}

impl Kill {
    fn text(self) -> String {
        match self {
            Kill::After(ms) => format!("kill -9 at {ms} ms"),
            Kill::Fault(n) => format!("crash-after-move:{n}"),
        }
    }
}

/// What a problem is about, one goal each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cat {
    Governed,
    Jobs,
    Once,
    Limits,
    Leak,
    Daemon,
}

#[derive(Default)]
struct Round {
    kill: Option<Kill>,
    /// From the burst's start to the daemon's death.
    died_after_ms: f64,
    at_kill: Census,
    /// Job cgroups that held no process right after the kill.
    empty_jobs: usize,
    /// Job directories without ffrtmp's mark right after the kill (made,
    /// killed before the xattr was set).
    unmarked: usize,
    first_attached: usize,
    /// From the restart to every target governed.
    restart_ms: Option<f64>,
    reattached: usize,
    adopted: usize,
    /// Cgroups left under the root at the end of the round.
    leaked: usize,
    problems: Vec<(Cat, String)>,
}

impl Round {
    fn problem(&mut self, cat: Cat, what: String) {
        eprintln!("{TAG}: chaos: PROBLEM: {what}");
        self.problems.push((cat, what));
    }

    fn mid_move(&self) -> bool {
        self.at_kill.partial > 0
    }
}

pub fn run(env: &Env, o: &Options) -> anyhow::Result<Report> {
    let seed = o.seed.unwrap_or_else(clock_seed);
    eprintln!(
        "{TAG}: chaos: seed {seed} (replay with --seed {seed}), {} rounds, bursts of {}",
        o.rounds, o.burst
    );
    let mut rng = Rng::new(seed);
    let mut rounds = Vec::with_capacity(o.rounds);
    let mut faults = 0;
    for n in 1..=o.rounds {
        check_interrupt()?;
        // Drawn every round, so a round's delay depends on the seed and its number only.
        let delay = rng.upto(o.max_delay_ms);
        let kill = if o.fault_every > 0 && n % o.fault_every == 0 {
            faults += 1;
            // N=1, then N=2 (only 1 on v2: one hierarchy).
            Kill::Fault(if faults % 2 == 1 {
                1
            } else {
                2.min(env.layout.job.len())
            })
        } else {
            Kill::After(delay)
        };
        let r = round(env, o, n, kill)?;
        eprintln!(
            "{TAG}: chaos: round {n}/{}: {}: at the kill {} governed, {} mid-move, {} outside, {} empty jobs, {} \
             unmarked dirs; {}",
            o.rounds,
            kill.text(),
            r.at_kill.governed,
            r.at_kill.partial,
            r.at_kill.outside,
            r.empty_jobs,
            r.unmarked,
            if r.problems.is_empty() {
                "ok".to_string()
            } else {
                format!("{} problem(s)", r.problems.len())
            }
        );
        rounds.push(r);
    }
    Ok(report(env, o, seed, &rounds))
}

fn round(env: &Env, o: &Options, n: usize, kill: Kill) -> anyhow::Result<Round> {
    let layout = &env.layout;
    let name = &env.name;
    let target = env.target(name)?;
    let (cpu, mem) = (CPU_PCT.to_string(), MEMORY_MIB.to_string());
    let args = ["--target", name, "--cpu-quota", &cpu, "--memory-limit", &mem];
    let mut r = Round {
        kill: Some(kill),
        ..Round::default()
    };

    let mut first = Spawn::new(format!("chaos-{n:03}-first"), &env.backend, &args);
    if let Kill::Fault(k) = kill {
        first.vars.push(("FFRTMP_FAULT", format!("crash-after-move:{k}")));
    }
    let mut d1 = Daemon::spawn(&env.ffrtmp, &env.work, layout, first)?;
    if let Err(e) = d1.wait_ready(READY_TIMEOUT) {
        r.problem(Cat::Daemon, format!("round {n}: the first daemon: {e:#}"));
        return Ok(r);
    }
    let mut targets = Targets::default();
    let t0 = Instant::now();
    let mut killed = false;
    for _ in 0..o.burst {
        targets.spawn(&target, &["pause".to_string()], Stdio::null())?;
        if let Kill::After(d) = kill
            && !killed
            && t0.elapsed() >= Duration::from_millis(d)
        {
            d1.signal(libc::SIGKILL);
            killed = true;
        }
    }
    match kill {
        Kill::After(d) => {
            if !killed {
                std::thread::sleep((t0 + Duration::from_millis(d)).saturating_duration_since(Instant::now()));
                d1.signal(libc::SIGKILL);
            }
            d1.wait_exit(Duration::from_secs(10));
        }
        Kill::Fault(k) => match d1.wait_exit(FAULT_TIMEOUT) {
            Some(st) if st.signal() == Some(libc::SIGKILL) => {}
            Some(st) => r.problem(
                Cat::Daemon,
                format!(
                    "round {n}: the fault-injected daemon exited with {st}, not by its own SIGKILL; log:\n{}",
                    d1.log_tail(10)
                ),
            ),
            None => {
                r.problem(
                    Cat::Daemon,
                    format!(
                        "round {n}: crash-after-move:{k} not reached within {FAULT_TIMEOUT:?} \
                         (is the binary built with --features fault-injection?)"
                    ),
                );
                d1.kill9();
            }
        },
    }
    r.died_after_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let pids = targets.pids();
    r.at_kill = Census::of(layout, name, &pids);
    r.empty_jobs = layout.empty_jobs();
    r.unmarked = layout.unmarked();
    d1.events.poll();
    let first_attached: HashSet<u32> = d1.events.attached().keys().copied().collect();
    r.first_attached = first_attached.len();
    // The oldest targets end while no daemon runs: the restart must clean
    // up their jobs, whatever state the kill left them in.
    targets.kill_first(o.end_while_down);
    let pids = targets.pids();

    // The restart.
    let t1 = Instant::now();
    let mut d2 = Daemon::spawn(
        &env.ffrtmp,
        &env.work,
        layout,
        Spawn::new(format!("chaos-{n:03}-restart"), &env.backend, &args),
    )?;
    let ready = d2.wait_ready(READY_TIMEOUT);
    if let Err(e) = &ready {
        r.problem(Cat::Daemon, format!("round {n}: the restarted daemon: {e:#}"));
    } else if wait_governed(layout, name, &pids, GOVERN_TIMEOUT)? {
        r.restart_ms = Some(t1.elapsed().as_secs_f64() * 1000.0);
    } else {
        let bad: Vec<String> = pids
            .iter()
            .filter_map(|&p| match layout.placement(p, &Layout::job_id(name, p)) {
                Placement::Governed => None,
                other => Some(format!("pid {p}: {other:?}")),
            })
            .collect();
        r.problem(
            Cat::Governed,
            format!(
                "round {n} ({}): {} of {} targets not in their job in every hierarchy {GOVERN_TIMEOUT:?} after \
                 the restart: {}",
                kill.text(),
                bad.len(),
                pids.len(),
                bad.join(", ")
            ),
        );
    }
    if ready.is_ok() {
        check_restarted(env, n, kill, &pids, &first_attached, &mut d2, &mut r);
    }

    // The end: targets, then the daemon, then nothing may be left.
    targets.kill_all();
    if ready.is_ok() {
        let end = Instant::now() + CLEANUP_TIMEOUT;
        loop {
            d2.events.poll();
            let detached = d2.events.detached();
            let reported = pids.iter().filter(|p| detached.contains_key(p)).count();
            // Only the jobs it governs are the daemon's to remove now; anything
            // else left is found by the leak check below.
            let ours: HashSet<String> = pids.iter().map(|&p| Layout::job_id(name, p)).collect();
            let removed = layout
                .job
                .iter()
                .all(|&i| layout.children(i).iter().all(|n| !ours.contains(n)));
            if (reported == pids.len() && removed) || Instant::now() > end {
                if reported < pids.len() {
                    r.problem(
                        Cat::Once,
                        format!(
                            "round {n}: {} of {} ended targets without a `detached` event after {CLEANUP_TIMEOUT:?}",
                            pids.len() - reported,
                            pids.len()
                        ),
                    );
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match d2.stop() {
            Ok(st) if st.success() => {}
            Ok(st) => r.problem(
                Cat::Daemon,
                format!("round {n}: the restarted daemon stopped with {st}"),
            ),
            Err(e) => r.problem(Cat::Daemon, format!("round {n}: {e:#}")),
        }
    } else {
        d2.kill9();
    }
    let leaks = layout.leftovers();
    r.leaked = leaks.len();
    if !leaks.is_empty() {
        r.problem(
            Cat::Leak,
            format!(
                "round {n} ({}): {} cgroup(s) left under the root once every target had exited and the daemon \
                 stopped: {}",
                kill.text(),
                leaks.len(),
                leaks.join(", ")
            ),
        );
        layout.scrub();
    }
    Ok(r)
}

/// The name prefix of ffrtmp watch's spare job cgroups (ffrtmp/src/cgroup/spare.rs).
const SPARE_PREFIX: &str = ".ffrtmp-spare-";

/// The checks once the restarted daemon governs (or should govern) every target.
fn check_restarted(
    env: &Env,
    n: usize,
    kill: Kill,
    pids: &[u32],
    first_attached: &HashSet<u32>,
    d2: &mut Daemon,
    r: &mut Round,
) {
    let layout = &env.layout;
    let name = &env.name;
    let expected: BTreeSet<String> = pids.iter().map(|&p| Layout::job_id(name, p)).collect();
    // The running daemon's spares (v1: job cgroups made ahead, renamed at an
    // exec) are not jobs. One named with another pid is a killed daemon's
    // that the restarted one should have removed at its start.
    let own_spare = format!("{SPARE_PREFIX}{}-", d2.pid());
    for (i, h) in layout.all.iter().enumerate() {
        let (spares, have): (BTreeSet<String>, BTreeSet<String>) = layout
            .children(i)
            .into_iter()
            .partition(|n| n.starts_with(SPARE_PREFIX));
        let ctrls = if h.controllers.is_empty() {
            "unified"
        } else {
            &h.controllers
        };
        let stale: Vec<&String> = spares.iter().filter(|s| !s.starts_with(&own_spare)).collect();
        if !stale.is_empty() || (!spares.is_empty() && !layout.job.contains(&i)) {
            r.problem(
                Cat::Jobs,
                format!(
                    "round {n} ({}): in {ctrls}, spare cgroups not the running daemon's (pid {}) or where jobs do \
                     not go: {spares:?}",
                    kill.text(),
                    d2.pid()
                ),
            );
        }
        if layout.job.contains(&i) {
            if have != expected {
                let missing: Vec<&String> = expected.difference(&have).collect();
                let extra: Vec<String> = have
                    .difference(&expected)
                    .map(|n| {
                        let marked = has_job_mark(&h.dir.join(&layout.root).join(n));
                        format!("{n}{}", if marked { "" } else { " (no user.ffrtmp.job mark)" })
                    })
                    .collect();
                r.problem(
                    Cat::Jobs,
                    format!(
                        "round {n} ({}): in {ctrls}, job cgroups missing {missing:?}, not belonging to a live \
                         target {extra:?}",
                        kill.text()
                    ),
                );
            }
        } else if !have.is_empty() {
            r.problem(
                Cat::Jobs,
                format!("round {n}: cgroups under the root in {ctrls}, which jobs do not use: {have:?}"),
            );
        }
    }
    // The `attached` event follows the move (limits, renice, then the
    // event, written by a thread of its own): give it a moment.
    let until = Instant::now() + EVENT_TIMEOUT;
    loop {
        d2.events.poll();
        let attached = d2.events.attached();
        if pids.iter().all(|p| attached.contains_key(p)) || Instant::now() > until {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let attached = d2.events.attached();
    for &pid in pids {
        match attached.get(&pid).map(Vec::as_slice) {
            Some([e]) => {
                if e["reattached"] == true {
                    r.reattached += 1;
                } else {
                    r.adopted += 1;
                    if first_attached.contains(&pid) {
                        r.problem(
                            Cat::Once,
                            format!(
                                "round {n}: pid {pid} was governed by the first daemon and adopted again (not \
                                 taken over) by the restarted one"
                            ),
                        );
                    }
                }
            }
            other => r.problem(
                Cat::Once,
                format!(
                    "round {n} ({}): pid {pid}: {} `attached` events from the restarted daemon, expected 1",
                    kill.text(),
                    other.map_or(0, <[_]>::len)
                ),
            ),
        }
    }
    let want = expected_limits(CPU_PCT, MEMORY_MIB);
    for &pid in pids {
        let job = Layout::job_id(name, pid);
        let have = layout.limits(&job);
        if have != want {
            r.problem(
                Cat::Limits,
                format!("round {n}: {job}: limits {have:?}, expected {want:?}"),
            );
        }
    }
}

fn report(env: &Env, o: &Options, seed: u64, rounds: &[Round]) -> Report {
    let mut rep = Report::new(format!("chaos ({} rounds, {})", rounds.len(), env.backend));
    let is_fault = |r: &Round| matches!(r.kill, Some(Kill::Fault(_)));
    let random = rounds.iter().filter(|r| !is_fault(r)).count();
    let mid: Vec<&Round> = rounds.iter().filter(|r| r.mid_move()).collect();
    let mid_random = mid.iter().filter(|r| !is_fault(r)).count();
    let before_any = rounds
        .iter()
        .filter(|r| !is_fault(r) && r.at_kill.governed == 0 && r.at_kill.partial == 0)
        .count();
    let all_governed = rounds
        .iter()
        .filter(|r| !is_fault(r) && r.at_kill.governed == o.burst)
        .count();
    let restart: Vec<u64> = rounds
        .iter()
        .filter_map(|r| r.restart_ms.map(|x| (x * 1e6) as u64))
        .collect();
    let mut d = String::new();
    let _ = writeln!(
        d,
        "Seed {seed} (`--seed {seed}` replays the delays). Each round: `ffrtmp watch --target {} --backend {} \
         --cpu-quota {CPU_PCT} --memory-limit {MEMORY_MIB}`, a burst of {} long-lived targets, then the daemon \
         dies: `kill -9` after a random 0–{} ms from the burst's start, or in every {}th round \
         `FFRTMP_FAULT=crash-after-move:N` (N = 1, 2 alternately); the {} oldest targets killed while no daemon \
         runs; restart; checks; the other targets killed; SIGINT.\n",
        env.name, env.backend, o.burst, o.max_delay_ms, o.fault_every, o.end_while_down
    );
    let _ = writeln!(
        d,
        "- rounds: {} ({random} random kills, {} fault injections)",
        rounds.len(),
        rounds.len() - random
    );
    let _ = writeln!(
        d,
        "- killed mid-move (a target in its job in some hierarchies but not all, right after the kill): {} rounds \
         ({mid_random} of the random kills, {} of the fault injections)",
        mid.len(),
        mid.len() - mid_random
    );
    let _ = writeln!(
        d,
        "- random kills before any target was governed: {before_any}; after all {} were: {all_governed}",
        o.burst
    );
    let _ = writeln!(
        d,
        "- empty job cgroups right after the kill (created, process not yet in): {} in {} rounds",
        rounds.iter().map(|r| r.empty_jobs).sum::<usize>(),
        rounds.iter().filter(|r| r.empty_jobs > 0).count()
    );
    let _ = writeln!(
        d,
        "- job directories without the `user.ffrtmp.job` mark right after the kill (made, mark not yet set): {} in \
         {} rounds",
        rounds.iter().map(|r| r.unmarked).sum::<usize>(),
        rounds.iter().filter(|r| r.unmarked > 0).count()
    );
    let _ = writeln!(
        d,
        "- after the restart: {} targets taken over (`reattached`), {} adopted afresh",
        rounds.iter().map(|r| r.reattached).sum::<usize>(),
        rounds.iter().map(|r| r.adopted).sum::<usize>()
    );
    if !restart.is_empty() {
        let s = Stats::of(&restart);
        let _ = writeln!(
            d,
            "- restart → every target governed: p50 {} p90 {} max {}",
            ms(s.p50),
            ms(s.p90),
            ms(s.max)
        );
    }
    let problems: Vec<&(Cat, String)> = rounds.iter().flat_map(|r| &r.problems).collect();
    if !problems.is_empty() {
        let _ = writeln!(d, "\nProblems ({}):\n", problems.len());
        for (_, p) in problems.iter().take(30) {
            let _ = writeln!(d, "- {}", p.replace('\n', "\n  "));
        }
    }
    let _ = writeln!(
        d,
        "\nRounds (at the kill: governed / mid-move / outside; daemon death measured from the burst's start):\n\n\
         | round | kill | died at | governed | mid-move | outside | empty jobs | unmarked dirs | restart → governed | re-attached / adopted | problems |\n\
         | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
    );
    for (i, r) in rounds.iter().enumerate() {
        let _ = writeln!(
            d,
            "| {} | {} | {:.0} ms | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
            i + 1,
            r.kill.map_or("?".into(), Kill::text),
            r.died_after_ms,
            r.at_kill.governed,
            r.at_kill.partial,
            r.at_kill.outside,
            r.empty_jobs,
            r.unmarked,
            r.restart_ms.map_or("–".into(), |x| format!("{x:.0} ms")),
            r.reattached,
            r.adopted,
            r.problems.len()
        );
    }
    rep.details = d;
    let count = |c: Cat| {
        rounds
            .iter()
            .filter(|r| r.problems.iter().any(|(x, _)| *x == c))
            .count()
    };
    let n = rounds.len();
    for (cat, what) in [
        (
            Cat::Governed,
            "after each restart every live target is governed, in every hierarchy of its job",
        ),
        (
            Cat::Jobs,
            "exactly one job cgroup per live target in every hierarchy (no duplicate job, none left for the \
             targets that ended while no daemon ran, nothing else but the running daemon's own spares)",
        ),
        (
            Cat::Once,
            "each target governed once: one `attached` event after the restart (a job of the first daemon \
             taken over, not adopted again) and one `detached` at its end",
        ),
        (
            Cat::Limits,
            "the limits in every job (cpu 50000 100000, memory 67108864 bytes)",
        ),
        (
            Cat::Leak,
            "0 leaked cgroups under the root in every hierarchy once all targets exited",
        ),
        (
            Cat::Daemon,
            "every daemon got ready and stopped with status 0; every fault point was reached",
        ),
    ] {
        let bad = count(cat);
        rep.goal(what, format!("{bad} of {n} rounds failed"), bad == 0);
    }
    rep.summary = format!(
        "{n} rounds (seed {seed}), {} killed mid-move, {} rounds with problems, {} leaked cgroups",
        mid.len(),
        rounds.iter().filter(|r| !r.problems.is_empty()).count(),
        rounds.iter().map(|r| r.leaked).sum::<usize>()
    );
    rep
}
