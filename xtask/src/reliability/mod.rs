//! `cargo xtask reliability <soak|chaos|faults>`: the reliability campaign
//! of issue 11, run against a real `ffrtmp watch` daemon on this host.
//!
//! - `soak`: hours-in-minutes of steady work: a short-lived target every
//!   200 ms among ≥ 1,000 non-target execs/s; no target missed, every exit
//!   code right, the daemon's RSS and open fds flat.
//! - `chaos`: `kill -9` of the daemon at a random point of an adoption
//!   burst (and crashes injected between the hierarchies of a move), then a
//!   restart: every target governed once, in every hierarchy, with its
//!   limits; no duplicate job, no leaked cgroup.
//! - `faults`: event loss, bad reloads, a bad state file, `/healthz` under
//!   abuse, 5,000 concurrent targets and a low open-file limit.
//!
//! Each scenario prints its samples, a goal table and a one-line summary,
//! and fails (non-zero exit) when a goal is not met. It never works around
//! a failure of the daemon: it reports it.
//!
//! Safety, as in `bench-watch`: the daemon gets a relative `--cgroup-root`
//! (`ffrtmp-rel-<pid>`, below this process's own cgroup in every
//! hierarchy), every cgroup under it is removed with rmdir at the end (also
//! on error or SIGINT/SIGTERM/SIGHUP, which set a flag checked between
//! steps); only processes started here are signalled, by PID; the target
//! name is unique per run (`tgt-r<pid>`), so no other ffrtmp daemon on the
//! host reacts to it; HTTP only to 127.0.0.1. No host-wide setting is
//! changed.

mod chaos;
mod faults;
mod harness;
mod soak;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

use crate::bench_common::{
    CleanupGuard, Flags, Machine, compile_c, install_signal_handlers, own_hierarchies, target_dir, workspace_root,
};
use harness::{Layout, TARGET_C};

const TAG: &str = "reliability";

const USAGE: &str = "\
usage: cargo xtask reliability <soak|chaos|faults> [options]

Needs root. Builds ffrtmp (see --build) and a static C target stub first.

common options:
  --build release|debug  release: `cargo build --release -p ffrtmp` (chaos adds
                         --features fault-injection); debug: `cargo build
                         --workspace`, whose ffrtmp has fault injection
                         (default release)
  --ffrtmp PATH          use this binary instead of building one
  --backend ebpf|netlink the daemon's event source (default ebpf)
  --target-name NAME     the target name (default tgt-r<pid>; ≤ 15 bytes)

soak [--seconds 600] [--rate 1000] [--interval-ms 200] [--life-ms 100]
     [--timeout-ms 2000] [--sample-secs S] [--rss-bound-pct 10] [--fd-bound 3]
  A target every --interval-ms that lives --life-ms and exits with pid % 200,
  under an exec storm of at least --rate non-target execs/s. Samples the
  daemon's RSS and open fds every S seconds (10, or 5 below 300 s).

chaos [--rounds 100] [--seed N] [--burst 15] [--max-delay-ms 40] [--fault-every 5]
      [--end-while-down 3]
  Per round: daemon (--cpu-quota 50 --memory-limit 64), a burst of --burst
  long-lived targets, kill -9 after a random 0..=max-delay ms (every
  --fault-every-th round instead FFRTMP_FAULT=crash-after-move:1, then :2;
  0 = never), the oldest --end-while-down targets end while no daemon runs,
  restart, check, end the targets, stop, check for leaks.

faults [--only a,b,c,d,e] [--short 2000] [--long 200] [--many 5000]
       [--many-rate 250] [--nofile-targets 1500] [--probes 40]
  a: event loss (SIGSTOP during a burst; ebpf with a 4 KiB ring buffer and
     netlink with a 4 KiB socket buffer); b: reloads with a broken, an
     invalid, an empty and a deleted file; c: a corrupt and an unreadable
     state file; d: /healthz under abuse; e: --many concurrent targets, then
     --nofile-targets with a soft open-file limit of 1024.
";

/// How the ffrtmp binary is obtained.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Build {
    Release,
    Debug,
}

pub struct Common {
    pub build: Build,
    pub ffrtmp: Option<PathBuf>,
    pub backend: String,
    pub target_name: String,
}

impl Common {
    fn new() -> Self {
        Self {
            build: Build::Release,
            ffrtmp: None,
            backend: "ebpf".into(),
            target_name: format!("tgt-r{}", std::process::id()),
        }
    }

    /// Takes a common flag; false if `flag` is not one.
    fn take(&mut self, flag: &str, flags: &mut Flags) -> anyhow::Result<bool> {
        match flag {
            "--build" => {
                self.build = match flags.text(flag)?.as_str() {
                    "release" => Build::Release,
                    "debug" => Build::Debug,
                    v => bail!("--build: expected release or debug, not '{v}'"),
                }
            }
            "--ffrtmp" => self.ffrtmp = Some(PathBuf::from(flags.text(flag)?)),
            "--backend" => {
                let v = flags.text(flag)?;
                ensure!(v == "ebpf" || v == "netlink", "--backend: expected ebpf or netlink");
                self.backend = v;
            }
            "--target-name" => self.target_name = flags.text(flag)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn check(&self) -> anyhow::Result<()> {
        let n = &self.target_name;
        ensure!(
            !n.is_empty() && n.len() <= 14 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "--target-name must be 1..14 bytes of [A-Za-z0-9._-] (a whole comm, with room for a suffix)"
        );
        Ok(())
    }
}

/// Everything a scenario runs with.
pub struct Env {
    pub ffrtmp: PathBuf,
    /// "release build (`cargo build --release -p ffrtmp`)", …
    pub build: String,
    pub work: PathBuf,
    pub stub: PathBuf,
    pub layout: Layout,
    pub backend: String,
    pub name: String,
}

impl Env {
    /// The stub copied under `name` (the target name), in the work dir.
    pub fn target(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.work.join("targets");
        fs::create_dir_all(&dir)?;
        let p = dir.join(name);
        if !p.exists() {
            fs::copy(&self.stub, &p).with_context(|| format!("copying the stub to {}", p.display()))?;
        }
        Ok(p)
    }
}

/// One goal: what, what was measured, met or not.
pub struct Goal {
    pub what: String,
    pub measured: String,
    pub met: bool,
}

/// A scenario's outcome: the details (samples, tables), goals and a summary.
pub struct Report {
    pub scenario: String,
    pub summary: String,
    pub details: String,
    pub goals: Vec<Goal>,
}

impl Report {
    pub fn new(scenario: impl Into<String>) -> Self {
        Self {
            scenario: scenario.into(),
            summary: String::new(),
            details: String::new(),
            goals: Vec::new(),
        }
    }

    pub fn goal(&mut self, what: impl Into<String>, measured: impl Into<String>, met: bool) {
        self.goals.push(Goal {
            what: what.into(),
            measured: measured.into(),
            met,
        });
    }

    pub fn passed(&self) -> bool {
        !self.goals.is_empty() && self.goals.iter().all(|g| g.met)
    }

    pub fn verdict(&self) -> &'static str {
        if self.passed() { "PASS" } else { "FAIL" }
    }

    pub fn goal_table(&self) -> String {
        let mut s = String::from("| goal | measured | status |\n| --- | --- | --- |\n");
        for g in &self.goals {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                g.what,
                g.measured.replace('|', "\\|"),
                if g.met { "met" } else { "**not met**" }
            );
        }
        s
    }
}

fn build_ffrtmp(root: &Path, build: Build, fault_injection: bool) -> anyhow::Result<(PathBuf, String)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let (args, bin, desc): (Vec<&str>, &str, String) = match build {
        Build::Release if fault_injection => (
            vec!["build", "--release", "-p", "ffrtmp", "--features", "fault-injection"],
            "release/ffrtmp",
            "release build with fault injection (`cargo build --release -p ffrtmp --features fault-injection`)".into(),
        ),
        Build::Release => (
            vec!["build", "--release", "-p", "ffrtmp"],
            "release/ffrtmp",
            "release build (`cargo build --release -p ffrtmp`)".into(),
        ),
        Build::Debug => (
            vec!["build", "--workspace"],
            "debug/ffrtmp",
            "debug build (`cargo build --workspace`; it has fault injection)".into(),
        ),
    };
    eprintln!("{TAG}: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(&args)
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "cargo {} failed ({status})", args.join(" "));
    let bin = target_dir(root).join(bin);
    ensure!(bin.is_file(), "{} not found after the build", bin.display());
    Ok((bin, desc))
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let Some(scenario) = args.first() else {
        bail!("which scenario?\n\n{USAGE}");
    };
    if matches!(scenario.as_str(), "-h" | "--help" | "help") {
        print!("{USAGE}");
        return Ok(());
    }
    let mut common = Common::new();
    let rest = &args[1..];
    enum Parsed {
        Soak(soak::Options),
        Chaos(chaos::Options),
        Faults(faults::Options),
    }
    let parsed = match scenario.as_str() {
        "soak" => soak::Options::parse(rest, &mut common)?.map(Parsed::Soak),
        "chaos" => chaos::Options::parse(rest, &mut common)?.map(Parsed::Chaos),
        "faults" => faults::Options::parse(rest, &mut common)?.map(Parsed::Faults),
        other => bail!("unknown scenario '{other}'\n\n{USAGE}"),
    };
    let Some(parsed) = parsed else {
        print!("{USAGE}");
        return Ok(());
    };
    common.check()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "must run as root: ffrtmp watch creates cgroups and moves processes"
    );
    install_signal_handlers();

    let root = workspace_root();
    let fault_injection = matches!(parsed, Parsed::Chaos(_));
    let (ffrtmp, build) = match &common.ffrtmp {
        Some(p) => {
            ensure!(p.is_file(), "--ffrtmp {}: no such file", p.display());
            (
                fs::canonicalize(p)?,
                format!("the binary `{}` given with --ffrtmp", p.display()),
            )
        }
        None => build_ffrtmp(&root, common.build, fault_injection)?,
    };
    let work = target_dir(&root)
        .join("reliability")
        .join(format!("{scenario}-{}", std::process::id()));
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let (stub, linkage) = compile_c(&work, "stub", TARGET_C, TAG)?;

    let cgroup_root = format!("ffrtmp-rel-{}", std::process::id());
    let hierarchies = own_hierarchies()?;
    for h in &hierarchies {
        let d = h.dir.join(&cgroup_root);
        ensure!(!d.exists(), "{} already exists; refusing to use it", d.display());
    }
    let guard = CleanupGuard {
        hierarchies: &hierarchies,
        name: cgroup_root.clone(),
        tag: TAG,
        done: false,
    };
    let env = Env {
        ffrtmp,
        build,
        work: work.clone(),
        stub,
        layout: Layout::detect(cgroup_root.clone())?,
        backend: common.backend.clone(),
        name: common.target_name.clone(),
    };
    eprintln!(
        "{TAG}: {scenario}: ffrtmp {}, target name {}, cgroup root {cgroup_root} (relative), work dir {}",
        env.ffrtmp.display(),
        env.name,
        work.display()
    );
    let reports = match &parsed {
        Parsed::Soak(o) => vec![soak::run(&env, o)?],
        Parsed::Chaos(o) => vec![chaos::run(&env, o)?],
        Parsed::Faults(o) => faults::run(&env, o)?,
    };
    let notes = guard.finish();
    let machine = Machine::collect(&root, linkage, &format!("reliability {scenario}"), rest);

    let mut failed = 0;
    for r in &reports {
        println!("\n### {}\n\n{}", r.scenario, r.details);
        println!("Goals:\n\n{}", r.goal_table());
        failed += r.goals.iter().filter(|g| !g.met).count();
    }
    println!("Run:\n");
    println!("- date: {} (UTC)", machine.date);
    println!("- ffrtmp: {} of {}", env.build, machine.commit);
    println!(
        "- kernel {}; {} CPUs ({}); cgroups {}",
        machine.kernel, machine.nproc, machine.cpu, machine.cgroups
    );
    println!("- command (as root): `{}`", machine.command);
    println!("- logs, event streams and samples: {}", work.display());
    // The root itself is always removed at the end; anything else is news.
    let own_root = format!("/{cgroup_root} (");
    let news: Vec<&str> = notes
        .iter()
        .filter(|n| !(n.starts_with("removed leftover") && n.contains(&own_root)))
        .map(String::as_str)
        .collect();
    if !news.is_empty() {
        println!("- cleanup at the end: {}", news.join("; "));
    }
    println!();
    for r in &reports {
        println!("reliability {}: {} — {}", r.scenario, r.verdict(), r.summary);
    }
    if reports.len() > 1 {
        println!(
            "reliability {scenario}: {} — {} of {} passed",
            if failed == 0 { "PASS" } else { "FAIL" },
            reports.iter().filter(|r| r.passed()).count(),
            reports.len()
        );
    }
    ensure!(failed == 0, "{scenario}: {failed} goal(s) not met");
    Ok(())
}
