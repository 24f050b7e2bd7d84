//! `reliability faults`: one daemon per sub-scenario, each pass/fail.
//!
//! - a: event loss. The daemon is stopped (SIGSTOP) while a burst of
//!   short-lived and long-lived targets starts, so its tiny eBPF ring buffer
//!   (or proc connector socket buffer) overflows; after SIGCONT every
//!   long-lived target must be governed (the reconcile scan after a loss)
//!   and the loss must show in the log and the metrics.
//! - b: reloads (SIGHUP) with a broken, an invalid, an empty and a deleted
//!   file keep the running configuration and say so; the next good reload
//!   applies.
//! - c: a corrupt and an unreadable state file: the daemon starts, says so,
//!   and takes the jobs over from the cgroup tree.
//! - d: `/healthz` answers within 1 s while idle connections, an oversized
//!   request head and a `/metrics` hammer load the responder.
//! - e: thousands of concurrent governed targets, then a soft open-file
//!   limit of 1024 (as systemd sets it) with more targets than that.

use std::fmt::Write as _;
use std::fs;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use super::harness::{
    Census, Daemon, Layout, READY_TIMEOUT, Spawn, Targets, expected_limits, http_get, mem_available_kib, metric_sum,
    metric_with, wait_governed,
};
use super::{Common, Env, Report, TAG};
use crate::bench_common::{Flags, Stats, check_interrupt, ms, status_kib};

pub struct Options {
    only: Vec<char>,
    short: usize,
    long: usize,
    many: usize,
    many_rate: u64,
    nofile_targets: usize,
    probes: usize,
    idle_conns: usize,
    header_kib: usize,
}

/// The fault sub-scenarios, in the order they run.
const ALL: [char; 5] = ['a', 'b', 'c', 'd', 'e'];
/// Stop creating targets when the host has less memory than this left.
const MIN_AVAILABLE_KIB: u64 = 2 * 1024 * 1024;
/// A target must be governed this long after it started (single targets).
const GOVERN_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting on many targets fails after this long without progress.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// `/healthz` must answer within this, under abuse.
const HEALTHZ_GOAL: Duration = Duration::from_secs(1);
/// A probe gives up after this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

impl Options {
    pub fn parse(args: &[String], common: &mut Common) -> anyhow::Result<Option<Self>> {
        let mut o = Options {
            only: ALL.to_vec(),
            short: 2000,
            long: 200,
            many: 5000,
            many_rate: 250,
            nofile_targets: 1500,
            probes: 40,
            idle_conns: 100,
            header_kib: 64,
        };
        let mut flags = Flags::new(args);
        while let Some((a, flag)) = flags.next_flag() {
            match flag {
                "--only" => {
                    o.only = Vec::new();
                    for k in flags.text(flag)?.split(',').filter(|k| !k.is_empty()) {
                        let c = k.chars().next().filter(|c| k.len() == 1 && ALL.contains(c));
                        o.only
                            .push(c.with_context(|| format!("--only: unknown sub-scenario '{k}' (a..e)"))?);
                    }
                }
                "--short" => o.short = flags.number(flag)? as usize,
                "--long" => o.long = flags.number(flag)? as usize,
                "--many" => o.many = flags.number(flag)? as usize,
                "--many-rate" => o.many_rate = flags.number(flag)?,
                "--nofile-targets" => o.nofile_targets = flags.number(flag)? as usize,
                "--probes" => o.probes = flags.number(flag)? as usize,
                "--idle-conns" => o.idle_conns = flags.number(flag)? as usize,
                "--header-kib" => o.header_kib = flags.number(flag)? as usize,
                "-h" | "--help" => return Ok(None),
                _ if common.take(flag, &mut flags)? => {}
                _ => bail!("faults: unknown argument '{a}'"),
            }
        }
        ensure!(
            o.long >= 1 && o.many >= 1 && o.nofile_targets >= 1,
            "target counts must be at least 1"
        );
        ensure!(
            o.many_rate >= 1 && o.probes >= 1,
            "--many-rate and --probes must be at least 1"
        );
        Ok(Some(o))
    }
}

pub fn run(env: &Env, o: &Options) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    type Sub<'a> = (char, String, Box<dyn Fn() -> anyhow::Result<Report> + 'a>);
    let mut subs: Vec<Sub> = Vec::new();
    for backend in ["ebpf", "netlink"] {
        subs.push((
            'a',
            format!("faults a: event loss ({backend})"),
            Box::new(move || loss(env, o, backend)),
        ));
    }
    subs.push(('b', "faults b: bad reloads".into(), Box::new(|| reload(env))));
    subs.push(('c', "faults c: bad state file".into(), Box::new(|| state(env))));
    subs.push((
        'd',
        "faults d: /healthz under abuse".into(),
        Box::new(|| healthz(env, o)),
    ));
    subs.push((
        'e',
        format!("faults e: {} concurrent targets", o.many),
        Box::new(|| many(env, o, o.many, None)),
    ));
    subs.push((
        'e',
        format!("faults e: {} targets, soft open-file limit 1024", o.nofile_targets),
        Box::new(|| many(env, o, o.nofile_targets, Some(1024))),
    ));
    for (key, label, sub) in subs {
        if !o.only.contains(&key) {
            continue;
        }
        check_interrupt()?;
        eprintln!("{TAG}: ---- {label}");
        let mut rep = match sub() {
            Ok(r) => r,
            Err(e) if crate::bench_common::INTERRUPTED.load(Ordering::SeqCst) => return Err(e),
            Err(e) => {
                let mut r = Report::new(label.clone());
                r.goal("the sub-scenario ran to its end", format!("{e:#}"), false);
                r.summary = format!("stopped: {e:#}").lines().next().unwrap_or("").to_string();
                r
            }
        };
        // A sub-scenario that stopped early may leave empty job cgroups behind.
        let left = env.layout.scrub();
        if !left.is_empty() {
            let _ = writeln!(rep.details, "\n- removed after the sub-scenario: {}", left.join(", "));
        }
        eprintln!("{TAG}: {label}: {} — {}", rep.verdict(), rep.summary);
        reports.push(rep);
    }
    Ok(reports)
}

/// Spawns a `pause` target and waits until it is governed.
fn governed_target(env: &Env, targets: &mut Targets, name: &str) -> anyhow::Result<(u32, bool)> {
    let path = env.target(name)?;
    let pid = targets.spawn(&path, &["pause".to_string()], Stdio::null())?;
    let ok = wait_governed(&env.layout, name, &[pid], GOVERN_TIMEOUT)?;
    Ok((pid, ok))
}

/// Waits until the ended targets are reported and nothing is left under the root.
fn wait_cleaned(env: &Env, d: &mut Daemon, pids: &[u32], timeout: Duration) -> anyhow::Result<(usize, Duration)> {
    let t0 = Instant::now();
    let mut last = (usize::MAX, Instant::now());
    loop {
        check_interrupt()?;
        d.events.poll();
        let detached = d.events.detached();
        let reported = pids.iter().filter(|p| detached.contains_key(p)).count();
        let left = env.layout.leftovers().len();
        if reported == pids.len() && left == 0 {
            return Ok((reported, t0.elapsed()));
        }
        if left != last.0 {
            last = (left, Instant::now());
        }
        if last.1.elapsed() > timeout || !d.running() {
            return Ok((reported, t0.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The goals every sub-scenario ends with: its daemon stopped cleanly, nothing left.
fn end_goals(rep: &mut Report, env: &Env, d: &mut Daemon) {
    let stopped = d.stop();
    let leaks = env.layout.leftovers();
    rep.goal(
        "0 leaked cgroups under the root once all targets exited",
        if leaks.is_empty() {
            "0".into()
        } else {
            format!("{}: {}", leaks.len(), leaks.join(", "))
        },
        leaks.is_empty(),
    );
    match stopped {
        Ok(st) => rep.goal(
            "the daemon stopped with status 0 on SIGINT",
            st.to_string(),
            st.success(),
        ),
        Err(e) => rep.goal("the daemon stopped with status 0 on SIGINT", format!("{e:#}"), false),
    }
}

fn proc_state(pid: u32) -> Option<char> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

// ---------------------------------------------------------------- a: loss

fn loss(env: &Env, o: &Options, backend: &str) -> anyhow::Result<Report> {
    let name = format!("{}{}", env.name, if backend == "ebpf" { 'a' } else { 'n' });
    let target = env.target(&name)?;
    let (flag, buffer) = match backend {
        "ebpf" => ("--ebpf-ring-bytes", "eBPF ring buffer"),
        _ => ("--netlink-rcvbuf", "proc connector socket receive buffer"),
    };
    let args = ["--target", &name, "--metrics-listen", "127.0.0.1:0", flag, "4096"];
    let mut d = Daemon::spawn(
        &env.ffrtmp,
        &env.work,
        &env.layout,
        Spawn::new(format!("faults-a-{backend}"), backend, &args),
    )?;
    d.wait_ready(READY_TIMEOUT)?;
    let addr = d.metrics_addr(Duration::from_secs(5))?;
    let mut long = Targets::default();
    let mut short = Targets::default();
    d.signal(libc::SIGSTOP);
    let until = Instant::now() + Duration::from_secs(2);
    while proc_state(d.pid()) != Some('T') {
        ensure!(Instant::now() < until, "the daemon did not stop on SIGSTOP");
        std::thread::sleep(Duration::from_millis(1));
    }
    let total = o.short + o.long;
    let every = (total / o.long).max(1);
    let t0 = Instant::now();
    for i in 0..total {
        if i % 100 == 0 {
            check_interrupt()?;
            short.reap();
        }
        if long.live.len() < o.long && (i % every == every - 1 || total - i <= o.long - long.live.len()) {
            long.spawn(&target, &["pause".to_string()], Stdio::null())?;
        } else {
            short.spawn(&target, &["sleep".to_string(), "5".to_string()], Stdio::null())?;
        }
    }
    let burst = t0.elapsed();
    // The short-lived end while the daemon still sleeps.
    std::thread::sleep(Duration::from_millis(200));
    short.reap();
    let short_alive = short.live.len();
    d.signal(libc::SIGCONT);
    let t1 = Instant::now();
    let long_pids = long.pids();
    let all = wait_governed(&env.layout, &name, &long_pids, Duration::from_secs(60))?;
    let govern_secs = t1.elapsed().as_secs_f64();
    let census = Census::of(&env.layout, &name, &long_pids);
    std::thread::sleep(Duration::from_millis(500));
    d.events.poll();
    let log = d.log_text();
    let lost_lines: Vec<String> = log
        .lines()
        .filter(|l| l.contains("event(s) lost"))
        .map(|l| l.trim().to_string())
        .collect();
    let metrics = http_get(addr, "/metrics", Duration::from_secs(10));
    let (lost_metric, loss_scans) = match &metrics {
        Ok((200, body)) => (
            metric_sum(body, "ffrtmp_events_lost_total"),
            metric_with(body, "ffrtmp_reconcile_scans_total", "trigger=\"loss\""),
        ),
        _ => (None, None),
    };
    let lost_events: u64 = d.events.of("events_lost").filter_map(|e| e["count"].as_u64()).sum();
    let exited_before = log.matches("exited before it was adopted").count();
    let attached = d.events.count("attached");

    short.kill_all();
    long.kill_all();
    let (reported, _) = wait_cleaned(env, &mut d, &long_pids, Duration::from_secs(30))?;

    let mut rep = Report::new(format!("faults a: event loss ({backend})"));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`ffrtmp watch --target {name} --backend {backend} {flag} 4096 --metrics-listen 127.0.0.1:0`; SIGSTOP; \
         a burst of {} short-lived (5 ms) and {} long-lived targets; SIGCONT 200 ms after the burst.\n",
        o.short, o.long
    );
    let _ = writeln!(
        s,
        "- burst: {total} targets in {:.2} s ({:.0}/s); short-lived still running at SIGCONT: {short_alive}",
        burst.as_secs_f64(),
        total as f64 / burst.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "- long-lived governed after SIGCONT: {} of {} in {govern_secs:.2} s ({} mid-move, {} outside)",
        census.governed, o.long, census.partial, census.outside
    );
    let _ = writeln!(
        s,
        "- loss: log `{}`; `ffrtmp_events_lost_total` {}; `events_lost` events in the stream: {} (count {lost_events}); \
         reconcile scans after a loss: {}",
        lost_lines.first().map_or("(none)", String::as_str),
        lost_metric.map_or("?".into(), |v| format!("{v:.0}")),
        d.events.count("events_lost"),
        loss_scans.map_or("?".into(), |v| format!("{v:.0}"))
    );
    let _ = writeln!(
        s,
        "- `attached` events {attached} (long-lived {}), `exited before it was adopted` log lines {exited_before}; \
         long-lived reported at their end {reported} of {}",
        o.long, o.long
    );
    if let Err(e) = &metrics {
        let _ = writeln!(s, "- GET /metrics failed: {e:#}");
    }
    rep.details = s;
    rep.goal(
        format!("the burst overflowed the {buffer}: the log says `N process event(s) lost`"),
        format!("{} such line(s)", lost_lines.len()),
        !lost_lines.is_empty(),
    );
    rep.goal(
        "the loss is in the metrics: `ffrtmp_events_lost_total` > 0",
        lost_metric.map_or_else(
            || format!("not found ({:?})", metrics.as_ref().map(|m| m.0)),
            |v| format!("{v:.0}"),
        ),
        lost_metric.is_some_and(|v| v > 0.0),
    );
    rep.goal(
        "every long-lived target governed after SIGCONT (reconcile scan after the loss), within 60 s",
        format!("{} of {}", census.governed, o.long),
        all,
    );
    rep.goal(
        "every long-lived target reported by a `detached` event at its end",
        format!("{reported} of {}", o.long),
        reported == o.long,
    );
    end_goals(&mut rep, env, &mut d);
    rep.summary = format!(
        "{} lost events (metric), {} of {} long-lived governed in {govern_secs:.1} s",
        lost_metric.map_or("?".into(), |v| format!("{v:.0}")),
        census.governed,
        o.long
    );
    Ok(rep)
}

// ---------------------------------------------------------------- b: reload

fn reload(env: &Env) -> anyhow::Result<Report> {
    let name = format!("{}b", env.name);
    let cfg = env.work.join("watch-config.yaml");
    let good = |cpu: u64, mem: u64| {
        format!(
            "# Written by `cargo xtask reliability faults`.\ntarget_commands:\n  - {name}\n\
             default_limits:\n  cpu_quota: {cpu}\n  memory_limit: {mem}\n"
        )
    };
    fs::write(&cfg, good(50, 64))?;
    let cfg_s = cfg.display().to_string();
    let mut d = Daemon::spawn(
        &env.ffrtmp,
        &env.work,
        &env.layout,
        Spawn::new(
            "faults-b",
            &env.backend,
            &["--watch-config", &cfg_s, "--metrics-listen", "127.0.0.1:0"],
        ),
    )?;
    d.wait_ready(READY_TIMEOUT)?;
    let addr = d.metrics_addr(Duration::from_secs(5))?;
    let (old, new) = (expected_limits(50, 64), expected_limits(80, 96));
    let mut targets = Targets::default();
    let (first, ok) = governed_target(env, &mut targets, &name)?;
    ensure!(
        ok,
        "the first target (pid {first}) was not governed within {GOVERN_TIMEOUT:?}"
    );
    let first_job = Layout::job_id(&name, first);
    ensure!(
        env.layout.limits(&first_job) == old,
        "the first target's limits are {:?}, not {old:?}",
        env.layout.limits(&first_job)
    );
    let bad: [(&str, Option<String>); 4] = [
        (
            "a broken file (YAML syntax error)",
            Some(format!("target_commands: [{name}\ndefault_limits: {{cpu_quota: 80\n")),
        ),
        (
            "an invalid value (cpu_weight: 20000)",
            Some(format!(
                "target_commands:\n  - {name}\ndefault_limits:\n  cpu_quota: 80\n  cpu_weight: 20000\n"
            )),
        ),
        ("an empty file", Some(String::new())),
        ("a deleted file", None),
    ];
    const KEPT: &str = "configuration reload failed, keeping the running configuration";
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`ffrtmp watch --watch-config FILE` with `default_limits: {{cpu_quota: 50, memory_limit: 64}}`; a running \
         target; then for each bad file: SIGHUP, and a new target started after it. Last, a good file with \
         `cpu_quota: 80, memory_limit: 96` and SIGHUP.\n"
    );
    let _ = writeln!(
        s,
        "| reload with | `reloaded` event | log says it kept the configuration | running job's limits | new target's limits |\n| --- | --- | --- | --- | --- |"
    );
    let mut rep = Report::new("faults b: bad reloads");
    for (k, (what, content)) in bad.iter().enumerate() {
        match content {
            Some(c) => fs::write(&cfg, c)?,
            None => fs::remove_file(&cfg)?,
        }
        d.signal(libc::SIGHUP);
        let event = wait_reloaded(&mut d, k + 1)?;
        let log_kept = d.log_text().matches(KEPT).count() == k + 1;
        let running = env.layout.limits(&first_job);
        let (pid, governed) = governed_target(env, &mut targets, &name)?;
        let fresh = env.layout.limits(&Layout::job_id(&name, pid));
        let ev_text = match &event {
            Some(e) => format!(
                "ok {}, error: {}",
                e["ok"],
                e["error"]
                    .as_str()
                    .unwrap_or("null")
                    .chars()
                    .take(140)
                    .collect::<String>()
            ),
            None => "none within 10 s".into(),
        };
        let _ = writeln!(
            s,
            "| {what} | {} | {} | {} | {} |",
            ev_text.replace('|', "\\|"),
            if log_kept { "yes" } else { "**no**" },
            show(&running),
            if governed {
                show(&fresh)
            } else {
                "**not governed**".into()
            }
        );
        let ok =
            event.as_ref().is_some_and(|e| e["ok"] == false) && log_kept && running == old && governed && fresh == old;
        rep.goal(
            format!(
                "reload with {what}: `reloaded` ok false, the log says `{KEPT}`, the running job and a new target \
                 keep the old limits"
            ),
            format!(
                "event: {}; log line: {}; running {}; new {}",
                event.as_ref().map_or("none".into(), |e| e["ok"].to_string()),
                if log_kept { "yes" } else { "no" },
                show(&running),
                if governed { show(&fresh) } else { "not governed".into() }
            ),
            ok,
        );
    }
    fs::write(&cfg, good(80, 96))?;
    d.signal(libc::SIGHUP);
    let event = wait_reloaded(&mut d, bad.len() + 1)?;
    let pids = targets.pids();
    let until = Instant::now() + Duration::from_secs(5);
    let all_new = loop {
        let n = pids
            .iter()
            .filter(|&&p| env.layout.limits(&Layout::job_id(&name, p)) == new)
            .count();
        if n == pids.len() || Instant::now() > until {
            break n;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (pid, governed) = governed_target(env, &mut targets, &name)?;
    let fresh = env.layout.limits(&Layout::job_id(&name, pid));
    let _ = writeln!(
        s,
        "| a good file (cpu 80, memory 96) | ok {} | – | {all_new} of {} running jobs {} | {} |",
        event.as_ref().map_or("none".into(), |e| e["ok"].to_string()),
        pids.len(),
        show(&new),
        if governed {
            show(&fresh)
        } else {
            "**not governed**".into()
        }
    );
    rep.goal(
        "the next good reload applies: `reloaded` ok true, every running job and a new target get the new limits",
        format!(
            "event ok {}; {all_new} of {} running jobs updated; new target {}",
            event.as_ref().map_or("none".into(), |e| e["ok"].to_string()),
            pids.len(),
            if governed { show(&fresh) } else { "not governed".into() }
        ),
        event.as_ref().is_some_and(|e| e["ok"] == true) && all_new == pids.len() && governed && fresh == new,
    );
    let (failed, ok) = match http_get(addr, "/metrics", Duration::from_secs(10)) {
        Ok((200, body)) => (
            metric_with(&body, "ffrtmp_config_reloads_total", "result=\"failed\""),
            metric_with(&body, "ffrtmp_config_reloads_total", "result=\"ok\""),
        ),
        _ => (None, None),
    };
    rep.goal(
        format!(
            "the metrics count them: `ffrtmp_config_reloads_total` failed {}, ok 1",
            bad.len()
        ),
        format!("failed {failed:?}, ok {ok:?}"),
        failed == Some(bad.len() as f64) && ok == Some(1.0),
    );
    let pids = targets.pids();
    targets.kill_all();
    wait_cleaned(env, &mut d, &pids, Duration::from_secs(15))?;
    rep.details = s;
    end_goals(&mut rep, env, &mut d);
    let kept = rep.goals.iter().take(bad.len()).filter(|g| g.met).count();
    rep.summary = format!(
        "{kept} of {} bad reloads kept the running configuration; the good reload {}",
        bad.len(),
        if rep.goals.get(bad.len()).is_some_and(|g| g.met) {
            "applied"
        } else {
            "did NOT apply"
        }
    );
    Ok(rep)
}

fn show(l: &(Option<String>, Option<u64>)) -> String {
    format!(
        "cpu {}, memory {}",
        l.0.as_deref().unwrap_or("?"),
        l.1.map_or("?".into(), |m| format!("{} MiB", m / 1024 / 1024))
    )
}

/// The n-th `reloaded` event (1-based), waiting up to 10 s.
fn wait_reloaded(d: &mut Daemon, n: usize) -> anyhow::Result<Option<serde_json::Value>> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        check_interrupt()?;
        d.events.poll();
        if let Some(e) = d.events.of("reloaded").nth(n - 1) {
            return Ok(Some(e.clone()));
        }
        if Instant::now() > until || !d.running() {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- c: state

fn state(env: &Env) -> anyhow::Result<Report> {
    let name = format!("{}c", env.name);
    let dir = env.work.join("state");
    fs::create_dir_all(&dir)?;
    let path = dir.join("watch-state.json");
    let path_s = path.display().to_string();
    let args = [
        "--target",
        &name,
        "--enable-state",
        "--state-path",
        &path_s,
        "--state-flush-interval",
        "200ms",
    ];
    let spawn = |label: &str| {
        Daemon::spawn(
            &env.ffrtmp,
            &env.work,
            &env.layout,
            Spawn::new(label, &env.backend, &args),
        )
    };
    let mut d1 = spawn("faults-c-first")?;
    d1.wait_ready(READY_TIMEOUT)?;
    let mut targets = Targets::default();
    for _ in 0..3 {
        let (pid, ok) = governed_target(env, &mut targets, &name)?;
        ensure!(ok, "target {pid} not governed within {GOVERN_TIMEOUT:?}");
    }
    let pids = targets.pids();
    let until = Instant::now() + Duration::from_secs(5);
    while !fs::read_to_string(&path).is_ok_and(|s| pids.iter().all(|p| s.contains(&format!("\"pid\": {p}")))) {
        ensure!(
            Instant::now() < until,
            "the state file {} never named the 3 targets",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = d1.stop()?;
    ensure!(st.success(), "the first daemon stopped with {st}");

    let mut rep = Report::new("faults c: bad state file");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`ffrtmp watch --target {name} --enable-state --state-path FILE --state-flush-interval 200ms`: 3 targets \
         governed, SIGINT (the state is saved), the file spoiled, a new daemon started. As root a mode-000 file \
         is still readable (CAP_DAC_OVERRIDE), so an unreadable file is a directory in its place.\n"
    );
    let _ = writeln!(
        s,
        "| state file | the daemon says | re-attached (log / events) | targets governed |\n| --- | --- | --- | --- |"
    );
    let variants: [(&str, &str); 2] = [
        ("corrupt (not JSON)", "is not valid"),
        ("unreadable (a directory in its place)", "reading the state file"),
    ];
    let mut last = None;
    let mut notes = String::new();
    for (k, (what, says)) in variants.iter().enumerate() {
        if k == 0 {
            fs::write(&path, "{ this is not JSON")?;
        } else {
            fs::remove_file(&path)?;
            fs::create_dir(&path)?;
        }
        let mut d = spawn(&format!("faults-c-{}", k + 1))?;
        let ready = d.wait_ready(READY_TIMEOUT);
        let governed = ready.is_ok() && wait_governed(&env.layout, &name, &pids, GOVERN_TIMEOUT)?;
        // The events follow the take-over, written by a thread of their own.
        let until = Instant::now() + Duration::from_secs(5);
        while ready.is_ok() && d.running() && Instant::now() < until {
            d.events.poll();
            let attached = d.events.attached();
            if pids.iter().all(|p| attached.contains_key(p)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = d.log_text();
        let line = log
            .lines()
            .find(|l| l.contains(says) && l.contains("relying on the cgroup tree alone"))
            .map(|l| l.trim().to_string());
        let in_log = pids
            .iter()
            .filter(|p| log.contains(&format!("↻ Re-attached to PID {p} ")))
            .count();
        let attached = d.events.attached();
        let in_events = pids
            .iter()
            .filter(|p| {
                attached
                    .get(p)
                    .is_some_and(|v| v.len() == 1 && v[0]["reattached"] == true)
            })
            .count();
        let alive = d.running();
        let _ = writeln!(
            s,
            "| {what} | {} | {in_log} / {in_events} of 3 | {} |",
            line.as_deref()
                .map_or("**nothing**".into(), |l| format!("`{}`", l.replace('|', "\\|"))),
            if governed { "3 of 3" } else { "**no**" }
        );
        rep.goal(
            format!(
                "{what}: the daemon starts, says so (`…{says}…; relying on the cgroup tree alone`) and re-attaches \
                 every job (`↻ Re-attached`)"
            ),
            format!(
                "{}; {}; re-attached {in_log} (log) / {in_events} (events) of 3; {}",
                match &ready {
                    Ok(()) if alive => "started".to_string(),
                    Ok(()) => "started, then exited".to_string(),
                    Err(e) => format!("did not start: {e:#}"),
                },
                if line.is_some() { "said so" } else { "said nothing" },
                if governed { "all governed" } else { "not all governed" }
            ),
            ready.is_ok() && alive && line.is_some() && in_log == 3 && in_events == 3 && governed,
        );
        if k + 1 < variants.len() {
            let st = d.stop()?;
            let valid = fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some();
            let _ = writeln!(
                notes,
                "- after {what}: stopped with {st}; the state file is valid again: {valid}"
            );
        } else {
            last = Some(d);
        }
    }
    let mut d = last.expect("the last variant's daemon");
    targets.kill_all();
    wait_cleaned(env, &mut d, &pids, Duration::from_secs(15))?;
    end_goals(&mut rep, env, &mut d);
    let save_warning = d
        .log_text()
        .lines()
        .find(|l| l.contains("writing the state file"))
        .map(|l| l.trim().to_string());
    s.push('\n');
    s.push_str(&notes);
    let _ = writeln!(
        s,
        "- with the directory in place, saving at the stop: {}",
        save_warning.map_or("no warning logged".into(), |l| format!("`{l}`"))
    );
    let _ = fs::remove_dir(&path);
    rep.details = s;
    let ok = rep.goals.iter().take(2).filter(|g| g.met).count();
    rep.summary = format!("{ok} of 2 spoiled state files: started and took the jobs over");
    Ok(rep)
}

// ---------------------------------------------------------------- d: /healthz

/// One `/healthz` probe: the time to the whole answer, and its status.
fn probe(addr: SocketAddr) -> (Duration, Result<u16, String>) {
    let t = Instant::now();
    let r = http_get(addr, "/healthz", PROBE_TIMEOUT)
        .map(|(code, _)| code)
        .map_err(|e| {
            let timed_out = e
                .chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .any(|io| matches!(io.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
            if timed_out {
                format!("no answer within {PROBE_TIMEOUT:?}")
            } else {
                format!("{e:#}")
            }
        });
    (t.elapsed(), r)
}

fn probes(
    addr: SocketAddr,
    n: usize,
    gap: Duration,
    budget: Duration,
) -> anyhow::Result<Vec<(Duration, Result<u16, String>)>> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    for _ in 0..n {
        check_interrupt()?;
        out.push(probe(addr));
        if t0.elapsed() > budget {
            break;
        }
        std::thread::sleep(gap);
    }
    Ok(out)
}

fn summarize(p: &[(Duration, Result<u16, String>)]) -> (Duration, Duration, usize) {
    let ns: Vec<u64> = p.iter().map(|(d, _)| d.as_nanos() as u64).collect();
    let st = Stats::of(&ns);
    let ok = p.iter().filter(|(_, r)| matches!(r, Ok(200))).count();
    (Duration::from_nanos(st.p50), Duration::from_nanos(st.max), ok)
}

#[derive(Default)]
struct AbuseCounts {
    idle_opened: usize,
    idle_closed_by_server: usize,
    big_sent: usize,
    big_answers: Vec<String>,
    metrics_ok: usize,
    metrics_failed: usize,
}

fn healthz(env: &Env, o: &Options) -> anyhow::Result<Report> {
    let name = format!("{}d", env.name);
    let mut d = Daemon::spawn(
        &env.ffrtmp,
        &env.work,
        &env.layout,
        Spawn::new(
            "faults-d",
            &env.backend,
            &["--target", &name, "--metrics-listen", "127.0.0.1:0"],
        ),
    )?;
    d.wait_ready(READY_TIMEOUT)?;
    let addr = d.metrics_addr(Duration::from_secs(5))?;
    // Some governed jobs, so that /metrics reads cgroup files.
    let mut targets = Targets::default();
    let path = env.target(&name)?;
    for _ in 0..20 {
        targets.spawn(&path, &["pause".to_string()], Stdio::null())?;
    }
    let pids = targets.pids();
    ensure!(
        wait_governed(&env.layout, &name, &pids, Duration::from_secs(20))?,
        "20 targets not governed within 20 s"
    );
    let quiet = probes(addr, 20, Duration::from_millis(50), Duration::from_secs(30))?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut handles: Vec<JoinHandle<AbuseCounts>> = Vec::new();
    {
        let (stop, n) = (Arc::clone(&stop), o.idle_conns);
        handles.push(std::thread::spawn(move || idle_connections(addr, n, &stop)));
    }
    {
        let (stop, kib) = (Arc::clone(&stop), o.header_kib);
        handles.push(std::thread::spawn(move || oversized_heads(addr, kib, &stop)));
    }
    for _ in 0..2 {
        let stop = Arc::clone(&stop);
        handles.push(std::thread::spawn(move || hammer_metrics(addr, &stop)));
    }
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let abused = probes(addr, o.probes, Duration::from_millis(250), Duration::from_secs(40));
    let abuse_secs = t0.elapsed().as_secs_f64() + 1.0;
    stop.store(true, Ordering::SeqCst);
    let mut c = AbuseCounts::default();
    for h in handles {
        let x = h.join().unwrap_or_default();
        c.idle_opened += x.idle_opened;
        c.idle_closed_by_server += x.idle_closed_by_server;
        c.big_sent += x.big_sent;
        c.big_answers.extend(x.big_answers);
        c.metrics_ok += x.metrics_ok;
        c.metrics_failed += x.metrics_failed;
    }
    let abused = abused?;
    let after = probes(addr, 5, Duration::from_millis(50), Duration::from_secs(30))?;

    let mut rep = Report::new("faults d: /healthz under abuse");
    let (q50, qmax, qok) = summarize(&quiet);
    let (a50, amax, aok) = summarize(&abused);
    let (_, pmax, pok) = summarize(&after);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`ffrtmp watch --target {name} --metrics-listen 127.0.0.1:0` governing 20 targets. Abuse: {} idle TCP \
         connections (each one the server closes is opened again), a client sending {} KiB request heads over and \
         over, and 2 clients fetching `/metrics` back to back. A probe is a new connection with `GET /healthz`, \
         timed to the end of the answer (10 s timeout, then it counts as 10 s).\n",
        o.idle_conns, o.header_kib
    );
    let _ = writeln!(
        s,
        "| phase | probes | 200 OK | p50 | worst |\n| --- | ---: | ---: | ---: | ---: |\n\
         | quiet | {} | {qok} | {} | {} |\n| under abuse | {} | {aok} | {} | {} |\n| after the abuse | {} | {pok} | – | {} |",
        quiet.len(),
        ms(q50.as_nanos() as u64),
        ms(qmax.as_nanos() as u64),
        abused.len(),
        ms(a50.as_nanos() as u64),
        ms(amax.as_nanos() as u64),
        after.len(),
        ms(pmax.as_nanos() as u64)
    );
    let mut answers = c.big_answers.clone();
    answers.sort();
    answers.dedup();
    let _ = writeln!(
        s,
        "\n- abuse over {abuse_secs:.0} s: idle connections opened {} (closed by the server {}); oversized heads sent \
         {} (answers: {}); `/metrics` fetched {} times ({:.0}/s), {} failed",
        c.idle_opened,
        c.idle_closed_by_server,
        c.big_sent,
        answers.join(", "),
        c.metrics_ok,
        c.metrics_ok as f64 / abuse_secs,
        c.metrics_failed
    );
    let slow: Vec<String> = abused
        .iter()
        .filter(|(t, r)| *t > HEALTHZ_GOAL || !matches!(r, Ok(200)))
        .map(|(t, r)| {
            format!(
                "{} ({})",
                ms(t.as_nanos() as u64),
                r.as_ref().map_or_else(|e| e.clone(), |c| c.to_string())
            )
        })
        .collect();
    if !slow.is_empty() {
        let _ = writeln!(
            s,
            "- probes over {} or not 200 ({}): {}",
            ms(HEALTHZ_GOAL.as_nanos() as u64),
            slow.len(),
            slow.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some((rss, fds, threads)) = d.sample() {
        let _ = writeln!(
            s,
            "- daemon after the abuse: VmRSS {rss} KiB, {fds} fds, {threads} threads"
        );
    }
    rep.details = s;
    rep.goal(
        format!(
            "`GET /healthz` answers 200 within {} under abuse (worst of {} probes)",
            ms(HEALTHZ_GOAL.as_nanos() as u64),
            abused.len()
        ),
        format!(
            "worst {}{}, {aok} of {} answered 200",
            ms(amax.as_nanos() as u64),
            if amax >= PROBE_TIMEOUT {
                " (the probe timeout: no answer)"
            } else {
                ""
            },
            abused.len()
        ),
        amax <= HEALTHZ_GOAL && aok == abused.len(),
    );
    rep.goal(
        "the daemon still answers and governs after the abuse",
        format!("{pok} of {} probes 200; running: {}", after.len(), d.running()),
        pok == after.len() && d.running(),
    );
    targets.kill_all();
    wait_cleaned(env, &mut d, &pids, Duration::from_secs(15))?;
    end_goals(&mut rep, env, &mut d);
    rep.summary = format!(
        "worst /healthz {} under abuse (quiet {}), {aok} of {} answered",
        ms(amax.as_nanos() as u64),
        ms(qmax.as_nanos() as u64),
        abused.len()
    );
    Ok(rep)
}

/// Holds `n` idle connections open; one the server closes is opened again.
fn idle_connections(addr: SocketAddr, n: usize, stop: &AtomicBool) -> AbuseCounts {
    let mut c = AbuseCounts::default();
    let open = |c: &mut AbuseCounts| {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_nonblocking(true).ok()?;
        c.idle_opened += 1;
        Some(s)
    };
    let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| open(&mut c)).collect();
    while !stop.load(Ordering::SeqCst) {
        for slot in conns.iter_mut() {
            let closed = match slot {
                Some(s) => {
                    let mut b = [0u8; 512];
                    !matches!(s.read(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock)
                }
                None => true,
            };
            if closed {
                if slot.is_some() {
                    c.idle_closed_by_server += 1;
                }
                *slot = open(&mut c);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    c
}

/// Sends request heads of `kib` KiB, one connection after the other.
fn oversized_heads(addr: SocketAddr, kib: usize, stop: &AtomicBool) -> AbuseCounts {
    let mut c = AbuseCounts::default();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(kib * 1024)
    );
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let sent = s.write_all(head.as_bytes());
        c.big_sent += 1;
        let mut b = [0u8; 64];
        let answer = match s.read(&mut b) {
            Ok(n) if n > 0 => String::from_utf8_lossy(&b[..n])
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .to_string(),
            Ok(_) => "closed".into(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => "no answer in 10 s".into(),
            Err(e) if sent.is_err() => format!("write: {}", sent.err().map_or(e.kind(), |x| x.kind())),
            Err(e) => format!("{:?}", e.kind()),
        };
        c.big_answers.push(answer);
        std::thread::sleep(Duration::from_millis(200));
    }
    c
}

fn hammer_metrics(addr: SocketAddr, stop: &AtomicBool) -> AbuseCounts {
    let mut c = AbuseCounts::default();
    while !stop.load(Ordering::SeqCst) {
        match http_get(addr, "/metrics", Duration::from_secs(10)) {
            Ok((200, _)) => c.metrics_ok += 1,
            _ => c.metrics_failed += 1,
        }
    }
    c
}

// ---------------------------------------------------------------- e: many

fn many(env: &Env, o: &Options, n: usize, nofile: Option<u64>) -> anyhow::Result<Report> {
    let name = format!("{}{}", env.name, if nofile.is_some() { 'f' } else { 'e' });
    let path = env.target(&name)?;
    let label = if nofile.is_some() {
        "faults-e-nofile"
    } else {
        "faults-e"
    };
    let mut spawn = Spawn::new(label, &env.backend, &["--target", &name]);
    spawn.nofile_soft = nofile;
    let mut d = Daemon::spawn(&env.ffrtmp, &env.work, &env.layout, spawn)?;
    d.wait_ready(READY_TIMEOUT)?;
    let limits = fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap_or_default();
    let nofile_line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let raised = d
        .log_text()
        .lines()
        .find(|l| l.contains("open-file limit"))
        .map(|l| l.trim().to_string())
        .unwrap_or_default();

    let mut targets = Targets::default();
    let gap = Duration::from_secs_f64(1.0 / o.many_rate as f64);
    let t0 = Instant::now();
    let mut stopped_early = None;
    for i in 0..n {
        if i % 100 == 0 {
            check_interrupt()?;
            let avail = mem_available_kib();
            if avail < MIN_AVAILABLE_KIB {
                stopped_early = Some(format!(
                    "stopped at {i} targets: MemAvailable {} MiB < {} MiB",
                    avail / 1024,
                    MIN_AVAILABLE_KIB / 1024
                ));
                break;
            }
            if !d.running() {
                stopped_early = Some(format!(
                    "stopped at {i} targets: the daemon exited:\n{}",
                    d.log_tail(10)
                ));
                break;
            }
            if i % 1000 == 0 && i > 0 {
                eprintln!(
                    "{TAG}: {label}: {i} targets started, {} job cgroups",
                    env.layout.job_count()
                );
            }
        }
        targets.spawn(&path, &["pause".to_string()], Stdio::null())?;
        let due = t0 + gap * (i as u32 + 1);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let spawn_secs = t0.elapsed().as_secs_f64();
    let pids = targets.pids();
    // Governed: every job cgroup there, then every process checked.
    let mut last = (0usize, Instant::now());
    let census = loop {
        check_interrupt()?;
        let jobs = env.layout.job_count();
        if jobs >= pids.len() {
            let c = Census::of(&env.layout, &name, &pids);
            if c.governed == pids.len() {
                break c;
            }
        }
        if jobs != last.0 {
            last = (jobs, Instant::now());
        }
        if last.1.elapsed() > STALL_TIMEOUT || !d.running() {
            break Census::of(&env.layout, &name, &pids);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let govern_secs = t0.elapsed().as_secs_f64();
    let per_hierarchy: Vec<String> = env
        .layout
        .job
        .iter()
        .map(|&i| format!("{} {}", env.layout.all[i].controllers, env.layout.children(i).len()))
        .collect();
    let at_peak = d.sample();
    let hwm = status_kib(d.pid(), "VmHWM");
    d.events.poll();
    let attached = d.events.count("attached");
    let mem_avail = mem_available_kib();

    eprintln!("{TAG}: {label}: ending {} targets", pids.len());
    let t1 = Instant::now();
    targets.kill_all();
    let (reported, _) = wait_cleaned(env, &mut d, &pids, STALL_TIMEOUT)?;
    let teardown_secs = t1.elapsed().as_secs_f64();
    let after = d.sample();

    let mut rep = Report::new(if nofile.is_some() {
        format!("faults e: {n} targets, soft open-file limit 1024")
    } else {
        format!("faults e: {n} concurrent targets")
    });
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`ffrtmp watch --target {name} --backend {}`{}; {n} long-lived targets started at {}/s.\n",
        env.backend,
        if nofile.is_some() {
            " started with a soft RLIMIT_NOFILE of 1024 (hard limit unchanged), as systemd's default"
        } else {
            ""
        },
        o.many_rate
    );
    let _ = writeln!(
        s,
        "- open-file limit: log `{raised}`; /proc/<pid>/limits `{nofile_line}`"
    );
    let _ = writeln!(
        s,
        "- started {} targets in {spawn_secs:.1} s; all governed {:.1} s after the first start: {} governed, {} \
         mid-move, {} outside, {} gone; job cgroups per hierarchy: {}",
        pids.len(),
        govern_secs,
        census.governed,
        census.partial,
        census.outside,
        census.gone,
        per_hierarchy.join(", ")
    );
    if let Some((rss, fds, threads)) = at_peak {
        let _ = writeln!(
            s,
            "- daemon with all governed: VmRSS {:.1} MiB (VmHWM {:.1} MiB), {fds} open fds, {threads} threads; host \
             MemAvailable {:.1} GiB",
            rss as f64 / 1024.0,
            hwm.unwrap_or(0) as f64 / 1024.0,
            mem_avail as f64 / 1024.0 / 1024.0
        );
    }
    if let Some((rss, fds, threads)) = after {
        let _ = writeln!(
            s,
            "- after all ended ({teardown_secs:.1} s to end them and see every job removed): VmRSS {:.1} MiB, {fds} \
             open fds, {threads} threads; `detached` events for {reported} of {}",
            rss as f64 / 1024.0,
            pids.len()
        );
    }
    d.events.poll();
    let lost: u64 = d.events.of("events_lost").filter_map(|e| e["count"].as_u64()).sum();
    let _ = writeln!(
        s,
        "- event stream: {attached} `attached`, {} `detached`, {} lines dropped; process events lost by the source \
         (and reconciled by a scan): {lost}",
        d.events.count("detached"),
        d.events.dropped()
    );
    if let Some(why) = &stopped_early {
        let _ = writeln!(s, "- **{why}**");
    }
    rep.details = s;
    rep.goal(
        format!("all {n} targets governed (a job cgroup each, /proc/<pid>/cgroup in it in every hierarchy)"),
        format!(
            "{} of {n} governed; {}",
            census.governed,
            stopped_early.as_deref().unwrap_or("all started")
        ),
        census.governed == n && stopped_early.is_none(),
    );
    if let Some(soft) = nofile {
        let hard = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(4))
            .unwrap_or("?")
            .to_string();
        let want = format!("raised the open-file limit from {soft} to {hard}");
        rep.goal(
            format!("the daemon raised its soft open-file limit from {soft} to the hard one, and says so"),
            format!("log: `{raised}`; limits: `{nofile_line}`"),
            raised.contains(&want),
        );
    }
    rep.goal(
        "every ended target reported (`detached`) and its job removed",
        format!("{reported} of {} reported", pids.len()),
        reported == pids.len(),
    );
    end_goals(&mut rep, env, &mut d);
    rep.summary = format!(
        "{} of {n} governed in {govern_secs:.0} s; daemon {}; {} leaked cgroups",
        census.governed,
        at_peak.map_or("?".into(), |(rss, fds, _)| format!(
            "VmRSS {:.1} MiB, {fds} fds",
            rss as f64 / 1024.0
        )),
        env.layout.leftovers().len()
    );
    Ok(rep)
}
