//! `cargo xtask bench`: the overhead of `ffrtmp run` over a plain spawn.
//!
//! The probe is a tiny static C program whose first action in `main` reads
//! CLOCK_MONOTONIC and prints it. The parent reads the same clock right before
//! `spawn()`; the difference is the time from invoking the command to the
//! probe's first instruction. The modes (direct spawn, `ffrtmp run` without
//! limits, `ffrtmp run` with limits) are interleaved round by round, with the
//! order rotated each round, so drift and ordering effects hit all alike.
//!
//! Jobs go under a relative cgroup root `ffrtmp-bench-<pid>` (relative to this
//! process's own cgroup in every hierarchy); at the end that root is removed
//! with rmdir wherever it is left.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};

use crate::bench_common::{
    CleanupGuard, Flags, Hierarchy, Machine, Stats, c_helper, ffrtmp_binary, monotonic_ns, ms, own_hierarchies,
    target_dir, workspace_root, write_section,
};

const DEFAULT_ITERATIONS: usize = 300;
const DEFAULT_WARMUP: usize = 20;
/// The goal from the foundation issue: `run` costs at most this over a plain spawn.
const GOAL_NS: u64 = 1_000_000;
/// Limits used by the "with limits" mode.
const LIMIT_ARGS: [&str; 4] = ["--cpu-quota", "50", "--memory-limit", "256"];
const MARK_START: &str = "<!-- bench:run-overhead:start -->";
const MARK_END: &str = "<!-- bench:run-overhead:end -->";
const PROBE_PREFIX: &str = "ffrtmp-probe ";

pub const PROBE_C: &str = r#"/* ffrtmp bench probe, written by `cargo xtask bench`.
 * Its first action in main: read CLOCK_MONOTONIC and print it in ns. */
#include <stdio.h>
#include <time.h>

int main(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    printf("ffrtmp-probe %lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    return 0;
}
"#;

pub const WRAPFLOOR_C: &str = r#"/* The floor of a wrapper, written by `cargo xtask bench`.
 *
 * `wrapfloor [v1:DIR | v2:DIR]... -- PROGRAM [ARG]...`
 *
 * Without a DIR: fork, exec PROGRAM, wait, exit with its status: what any
 * wrapper between a caller and its workload costs at least.
 * With DIRs: first make DIR/floor-<pid> in each (DIR is the job root of one
 * hierarchy, made if missing), then born inside it the way `ffrtmp run` is:
 * v1, the child writes "0" to each job's `tasks` (a thread moving itself
 * skips the global lock); v2, clone3(CLONE_INTO_CGROUP). After the wait the
 * job directories are removed, and the roots when empty. No limits, no
 * marks, no log: the least a governing wrapper does. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_DIRS 8

static void die(const char *what, const char *arg) {
    fprintf(stderr, "wrapfloor: %s %s: %s\n", what, arg, strerror(errno));
    _exit(125);
}

int main(int argc, char **argv) {
    char jobs[MAX_DIRS][4096];
    int tasks[MAX_DIRS], v2_fd = -1, n = 0, i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *a = argv[i];
        int v2 = strncmp(a, "v2:", 3) == 0;
        if (n == MAX_DIRS || (!v2 && strncmp(a, "v1:", 3) != 0)) {
            fprintf(stderr, "wrapfloor: %s: expected v1:DIR or v2:DIR (at most %d)\n", a, MAX_DIRS);
            return 2;
        }
        if (mkdir(a + 3, 0755) != 0 && errno != EEXIST) die("mkdir", a + 3);
        snprintf(jobs[n], sizeof jobs[n], "%s/floor-%d", a + 3, (int)getpid());
        if (mkdir(jobs[n], 0755) != 0) die("mkdir", jobs[n]);
        if (v2) {
            v2_fd = open(jobs[n], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (v2_fd < 0) die("open", jobs[n]);
            tasks[n] = -1;
        } else {
            char f[4160];
            snprintf(f, sizeof f, "%s/tasks", jobs[n]);
            tasks[n] = open(f, O_WRONLY | O_CLOEXEC);
            if (tasks[n] < 0) die("open", f);
        }
        n++;
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "wrapfloor: expected -- PROGRAM [ARG]...\n");
        return 2;
    }
    char **cmd = argv + i + 1;
    struct clone_args ca;
    memset(&ca, 0, sizeof ca);
    ca.exit_signal = SIGCHLD;
    if (v2_fd >= 0) {
        ca.flags = CLONE_INTO_CGROUP;
        ca.cgroup = (uint64_t)v2_fd;
    }
    long pid = syscall(SYS_clone3, &ca, sizeof ca);
    if (pid < 0) die("clone3", cmd[0]);
    if (pid == 0) {
        for (int k = 0; k < n; k++)
            if (tasks[k] >= 0 && write(tasks[k], "0", 1) != 1) die("joining", jobs[k]);
        execv(cmd[0], cmd);
        die("exec", cmd[0]);
    }
    int status = 0;
    while (waitpid((pid_t)pid, &status, 0) < 0)
        if (errno != EINTR) die("waitpid", cmd[0]);
    /* As `run` does: the job, then the root if no other job holds it. */
    for (int k = 0; k < n; k++) {
        if (rmdir(jobs[k]) != 0) die("rmdir", jobs[k]);
        *strrchr(jobs[k], '/') = 0;
        if (rmdir(jobs[k]) != 0 && errno != ENOTEMPTY && errno != EBUSY) die("rmdir", jobs[k]);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
"#;

const USAGE: &str = "\
usage: cargo xtask bench [--iterations N] [--warmup N] [--gap-ms MS] [--also PATH] [--ffrtmp PATH]
                         [--beside-a-job] [--prebuilt] [--write]

Measures the median time from invoking `ffrtmp run … -- probe` to the probe's
first instruction, against spawning the probe directly, interleaved in one run.
In the same rounds, two static C wrappers give the floors: one that only forks,
execs and waits (what any wrapper costs), one that also makes the job's cgroups
and joins them as `run` does (what any governing wrapper costs).
Needs root (ffrtmp creates cgroups). Builds ffrtmp (release), the probe and the
wrappers first.

  --iterations N  measured rounds (default 300); each round runs every mode once
  --warmup N      rounds run first and discarded (default 20)
  --gap-ms MS     sleep MS ms before every sample (default 0: back to back);
                  e.g. 50 shows the cost of a `run` on an otherwise idle host
  --also PATH     also measure `PATH run`, no limits: another build of ffrtmp
                  (e.g. static), in the same rounds as the others; repeatable
  --ffrtmp PATH   use this ffrtmp binary instead of building one
  --beside-a-job  keep one long job (`ffrtmp run … -- sleep`) under the root
                  throughout, as on a node with work or a daemon: the root's
                  directories exist, so no sample makes or removes them
  --prebuilt      use the probe and wrapper an earlier run compiled (target/bench/)
                  instead of compiling it: for a guest without a C compiler
  --write         also update the run-overhead section of docs/BENCHMARKS.md
";

struct Options {
    iterations: usize,
    warmup: usize,
    gap_ms: u64,
    also: Vec<PathBuf>,
    ffrtmp: Option<PathBuf>,
    prebuilt: bool,
    write: bool,
    beside_a_job: bool,
}

fn parse_args(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut o = Options {
        iterations: DEFAULT_ITERATIONS,
        warmup: DEFAULT_WARMUP,
        gap_ms: 0,
        also: Vec::new(),
        ffrtmp: None,
        prebuilt: false,
        write: false,
        beside_a_job: false,
    };
    let mut flags = Flags::new(args);
    while let Some((a, flag)) = flags.next_flag() {
        match flag {
            "--iterations" | "-n" => o.iterations = flags.number(flag)? as usize,
            "--warmup" => o.warmup = flags.number(flag)? as usize,
            "--gap-ms" => o.gap_ms = flags.number(flag)?,
            "--also" => o.also.push(PathBuf::from(flags.text(flag)?)),
            "--ffrtmp" => o.ffrtmp = Some(PathBuf::from(flags.text(flag)?)),
            "--prebuilt" if !flags.has_inline() => o.prebuilt = true,
            "--write" if !flags.has_inline() => o.write = true,
            "--beside-a-job" if !flags.has_inline() => o.beside_a_job = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            _ => bail!("unknown argument '{a}'\n\n{USAGE}"),
        }
    }
    ensure!(o.iterations >= 1, "--iterations must be at least 1");
    Ok(Some(o))
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let Some(opts) = parse_args(args)? else {
        return Ok(());
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "must run as root: `ffrtmp run` creates cgroups"
    );

    let root = workspace_root();
    let ffrtmp = ffrtmp_binary(opts.ffrtmp.as_deref(), &root, "bench")?;
    let (probe, linkage) = c_helper(
        &target_dir(&root).join("bench"),
        "probe",
        PROBE_C,
        opts.prebuilt,
        "bench",
    )?;

    let (wrapper, _) = c_helper(
        &target_dir(&root).join("bench"),
        "wrapfloor",
        WRAPFLOOR_C,
        opts.prebuilt,
        "bench",
    )?;

    let cgroup_root = format!("ffrtmp-bench-{}", std::process::id());
    let hierarchies = own_hierarchies()?;
    for h in &hierarchies {
        let d = h.dir.join(&cgroup_root);
        ensure!(
            !d.exists(),
            "{} already exists; refusing to use it (left over from an earlier run?)",
            d.display()
        );
    }
    let guard = CleanupGuard {
        hierarchies: &hierarchies,
        name: cgroup_root.clone(),
        tag: "bench",
        done: false,
    };

    let mut join_args = floor_joins(&hierarchies, &cgroup_root);
    join_args.extend(["--".to_string(), probe.display().to_string()]);
    let mut modes = vec![
        Mode::new(DIRECT, &probe, Vec::new()),
        Mode::new(
            FLOOR_WRAP,
            &wrapper,
            vec!["--".to_string(), probe.display().to_string()],
        ),
        Mode::new(FLOOR_JOIN, &wrapper, join_args),
        Mode::new(RUN_PLAIN, &ffrtmp, run_args(&cgroup_root, &[], &probe)),
        Mode::new(
            "`ffrtmp run`, cpu + memory limits",
            &ffrtmp,
            run_args(&cgroup_root, &LIMIT_ARGS, &probe),
        ),
    ];
    for also in &opts.also {
        ensure!(also.is_file(), "--also {}: no such file", also.display());
        let label = format!("`{} run`, no limits", also.display());
        modes.push(Mode::new(label, also, run_args(&cgroup_root, &[], &probe)));
    }
    modes.push(Mode::lifetime("the probe", &probe, &[]));
    modes.push(Mode::lifetime("`ffrtmp --version`", &ffrtmp, &["--version"]));
    eprintln!(
        "bench: {} warm-up + {} measured rounds of {} modes, cgroup root {cgroup_root} (relative)",
        opts.warmup,
        opts.iterations,
        modes.len()
    );
    let holder = match opts.beside_a_job {
        true => Some(Holder::start(&ffrtmp, &cgroup_root)?),
        false => None,
    };
    let gap = Duration::from_millis(opts.gap_ms);
    let samples = measure(&modes, opts.warmup, opts.iterations, gap);
    drop(holder);
    let samples = samples?;
    let leftovers = guard.finish();

    let stats: Vec<Stats> = samples.iter().map(|s| Stats::of(s)).collect();
    let machine = Machine::collect(&root, linkage, "bench", args);
    let section = render(&modes, &stats, &machine, &opts, &cgroup_root, &leftovers);
    print!("{section}");

    if opts.write {
        write_section(&root, &section, MARK_START, MARK_END, "bench")?;
    }
    Ok(())
}

/// The long job of `--beside-a-job`: `ffrtmp run -- sleep` under the
/// bench's root, so the root exists in every hierarchy a sample uses.
struct Holder {
    child: std::process::Child,
}

impl Holder {
    fn start(ffrtmp: &Path, cgroup_root: &str) -> anyhow::Result<Self> {
        let child = Command::new(ffrtmp)
            .args([
                "run",
                "--cgroup-root",
                cgroup_root,
                "--job-id",
                "bench-holder",
                "--",
                "sleep",
                "100000",
            ])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the job of --beside-a-job")?;
        // From here on, dropping the holder ends the job (a start that
        // times out too).
        let holder = Self { child };
        // Its cgroups exist once its workload runs: wait for the sleep.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let id = holder.child.id();
        let children = format!("/proc/{id}/task/{id}/children");
        while std::fs::read_to_string(&children).unwrap_or_default().trim().is_empty() {
            ensure!(
                std::time::Instant::now() < deadline,
                "the job of --beside-a-job did not start its workload in 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(holder)
    }
}

impl Drop for Holder {
    /// SIGTERM to `run`, which forwards it to the sleep and removes the job.
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        match self.child.wait() {
            Ok(status) => eprintln!("bench: the job of --beside-a-job ended ({status})"),
            Err(e) => eprintln!("bench: waiting for the job of --beside-a-job: {e}"),
        }
    }
}

const DIRECT: &str = "direct spawn";
const RUN_PLAIN: &str = "`ffrtmp run`, no limits";
const FLOOR_WRAP: &str = "a wrapper that forks, execs and waits (static C)";
const FLOOR_JOIN: &str = "a wrapper that also makes and joins the job's cgroups as `run` does (static C)";

/// The wrapper floor's `v1:DIR` / `v2:DIR` arguments: the job root in the
/// hierarchies a `run` without limits uses (ffrtmp's v1 set, the ones with
/// cpu, cpuacct or memory; without any of them, the cgroup2 hierarchy).
fn floor_joins(hierarchies: &[Hierarchy], cgroup_root: &str) -> Vec<String> {
    let used = |h: &&Hierarchy| {
        h.controllers
            .split(',')
            .any(|c| matches!(c, "cpu" | "cpuacct" | "memory"))
    };
    let v1: Vec<String> = hierarchies
        .iter()
        .filter(used)
        .map(|h| format!("v1:{}", h.dir.join(cgroup_root).display()))
        .collect();
    if !v1.is_empty() {
        return v1;
    }
    hierarchies
        .iter()
        .filter(|h| h.controllers.is_empty())
        .map(|h| format!("v2:{}", h.dir.join(cgroup_root).display()))
        .collect()
}

fn run_args(cgroup_root: &str, limits: &[&str], probe: &Path) -> Vec<String> {
    let mut a = vec!["run".to_string(), "--cgroup-root".into(), cgroup_root.into()];
    a.extend(limits.iter().map(|s| s.to_string()));
    a.push("--".into());
    a.push(probe.display().to_string());
    a
}

struct Mode {
    label: String,
    program: PathBuf,
    args: Vec<String>,
    /// What a sample times.
    span: Span,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Span {
    /// From `spawn()` to the probe's stamp: the overhead a wrapper adds.
    ToProbe,
    /// From `spawn()` to the exit seen by `wait`: what starting the program
    /// at all costs (`ffrtmp --version` against the probe), so the `run`
    /// overhead can be split into ffrtmp's start and its set-up.
    Lifetime,
}

impl Mode {
    fn new(label: impl Into<String>, program: &Path, args: Vec<String>) -> Self {
        Self {
            label: label.into(),
            program: program.to_path_buf(),
            args,
            span: Span::ToProbe,
        }
    }

    fn lifetime(label: impl Into<String>, program: &Path, args: &[&str]) -> Self {
        Self {
            span: Span::Lifetime,
            ..Self::new(label, program, args.iter().map(|a| a.to_string()).collect())
        }
    }

    /// The command as shown in the report, with `target/…` paths shortened.
    fn shown(&self) -> String {
        let name = |p: &str| {
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.to_string())
        };
        let mut s = name(&self.program.display().to_string());
        for a in &self.args {
            s.push(' ');
            s.push_str(&if a.starts_with('/') { name(a) } else { a.clone() });
        }
        s
    }

    /// One sample: ns from just before `spawn()` to the probe's stamp.
    fn sample(&self) -> anyhow::Result<u64> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let t0 = monotonic_ns();
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.program.display()))?;
        let out = child.wait_with_output().context("waiting for the probe")?;
        let exited = monotonic_ns();
        ensure!(
            out.status.success(),
            "`{}` failed ({}): {}",
            self.shown(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if self.span == Span::Lifetime {
            return Ok(exited - t0);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stamp: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix(PROBE_PREFIX))
            .with_context(|| format!("no probe stamp in the output of `{}`", self.shown()))?
            .trim()
            .parse()
            .context("parsing the probe stamp")?;
        stamp
            .checked_sub(t0)
            .context("probe stamp earlier than the spawn (clock mismatch?)")
    }
}

/// Runs `warmup + iterations` rounds; each round runs every mode once, in an
/// order rotated by one each round, after sleeping `gap` if non-zero.
/// Returns the measured samples per mode.
fn measure(modes: &[Mode], warmup: usize, iterations: usize, gap: Duration) -> anyhow::Result<Vec<Vec<u64>>> {
    let mut samples = vec![Vec::with_capacity(iterations); modes.len()];
    let rounds = warmup + iterations;
    for round in 0..rounds {
        for k in 0..modes.len() {
            let m = (round + k) % modes.len();
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
            let ns = modes[m].sample()?;
            if round >= warmup {
                samples[m].push(ns);
            }
        }
        if (round + 1) % 100 == 0 {
            eprintln!("bench: {}/{rounds} rounds", round + 1);
        }
    }
    Ok(samples)
}

fn render(
    modes: &[Mode],
    stats: &[Stats],
    m: &Machine,
    o: &Options,
    cgroup_root: &str,
    leftovers: &[String],
) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "{MARK_START}");
    let _ = writeln!(w, "## `run` overhead\n");
    let startup = if m.probe == "static" {
        "a static C binary built with `cc -O2 -static`, so there is no dynamic loader: \
         the stamp comes right after libc's static start-up"
    } else {
        "a dynamically linked C binary built with `cc -O2`: the stamp comes after the \
         dynamic loader and libc start-up"
    };
    let mut pacing = if o.gap_ms == 0 {
        "back to back".to_string()
    } else {
        format!("each sample after {} ms of sleep", o.gap_ms)
    };
    if o.beside_a_job {
        pacing.push_str(
            ", beside one long job under the root (`--beside-a-job`: the root's directories exist throughout)",
        );
    }
    let _ = writeln!(
        w,
        "Time from invoking the command (CLOCK_MONOTONIC read in the parent right \
         before `spawn()`) to the probe's first instruction, taken as the entry of \
         its `main`, whose first action reads CLOCK_MONOTONIC (the probe is {startup}). \
         {} measured rounds after {} warm-up rounds, {pacing}; every round runs each \
         mode once, in an order rotated each round. Jobs go under the relative cgroup \
         root `{cgroup_root}`. Goal: at most {} over a plain spawn.\n",
        o.iterations,
        o.warmup,
        ms(GOAL_NS),
    );
    let _ = writeln!(w, "| mode | command | p50 | p90 | p99 | max |");
    let _ = writeln!(w, "| --- | --- | ---: | ---: | ---: | ---: |");
    let to_probe = || modes.iter().zip(stats).filter(|(m, _)| m.span == Span::ToProbe);
    for (mode, st) in to_probe() {
        let _ = writeln!(
            w,
            "| {} | `{}` | {} | {} | {} | {} |",
            mode.label,
            mode.shown(),
            ms(st.p50),
            ms(st.p90),
            ms(st.p99),
            ms(st.max)
        );
    }
    let _ = writeln!(w, "\nOverhead over the direct spawn (p50 − direct p50):\n");
    let _ = writeln!(w, "| mode | overhead (p50) | ratio (p50) | goal ≤ {} |", ms(GOAL_NS));
    let _ = writeln!(w, "| --- | ---: | ---: | --- |");
    let base = stats[0].p50;
    for (mode, st) in to_probe().skip(1) {
        let over = st.p50 as i64 - base as i64;
        let _ = writeln!(
            w,
            "| {} | {} | {:.1}× | {} |",
            mode.label,
            signed_ms(over),
            st.p50 as f64 / base.max(1) as f64,
            if over <= GOAL_NS as i64 { "met" } else { "**not met**" }
        );
    }
    floor_split(w, modes, stats);
    start_table(w, modes, stats);
    let _ = writeln!(w, "\nMachine and run:\n");
    let _ = writeln!(w, "- date: {} (UTC)", m.date);
    let _ = writeln!(w, "- kernel (`uname -r`): {}", m.kernel);
    let _ = writeln!(w, "- CPUs (`nproc`): {}; model: {}", m.nproc, m.cpu);
    let _ = writeln!(w, "- cgroups: {}", m.cgroups);
    let _ = writeln!(w, "- ffrtmp: {}", m.ffrtmp(o.ffrtmp.as_deref()));
    let _ = writeln!(w, "- command (as root): `{}`", m.command);
    if !leftovers.is_empty() {
        let _ = writeln!(w, "- cleanup after the run: {}", leftovers.join("; "));
    }
    let _ = writeln!(w, "{MARK_END}");
    s
}

/// A difference of two times in ns, as "+1.234 ms" or "−0.012 ms".
fn signed_ms(ns: i64) -> String {
    let sign = if ns >= 0 { "+" } else { "−" };
    format!("{sign}{:.3} ms", ns.unsigned_abs() as f64 / 1e6)
}

/// `run`'s overhead split at the joining wrapper: below it, what any
/// governing wrapper pays here (one more process, the job's cgroups); above
/// it, what ffrtmp adds.
fn floor_split(w: &mut String, modes: &[Mode], stats: &[Stats]) {
    let p50 = |label: &str| {
        modes
            .iter()
            .zip(stats)
            .find(|(m, _)| m.label == label)
            .map(|(_, st)| st.p50 as i64)
    };
    let (Some(direct), Some(wrap), Some(join), Some(run)) =
        (p50(DIRECT), p50(FLOOR_WRAP), p50(FLOOR_JOIN), p50(RUN_PLAIN))
    else {
        return;
    };
    let _ = writeln!(
        w,
        "\n`run`'s overhead without limits ({}) split at the floors, p50: one more process (the forking wrapper \
         over the direct spawn) {}; making and joining the job's cgroups (the joining wrapper over the forking \
         one) {}; ffrtmp's own part (`run` over the joining wrapper: its start, hierarchy reads, job marks, log) {}.",
        signed_ms(run - direct),
        signed_ms(wrap - direct),
        signed_ms(join - wrap),
        signed_ms(run - join)
    );
    if join - direct > GOAL_NS as i64 {
        let _ = writeln!(
            w,
            "The joining wrapper alone is {} over the direct spawn: on this host the goal is below what even \
             this least governing wrapper reaches.",
            signed_ms(join - direct)
        );
    }
}

/// The start (and exit) of ffrtmp alone, in the same rounds: spawn → exit
/// of `ffrtmp --version` against the probe's: roughly how much of `run`'s
/// overhead is the start of a second program rather than its cgroup set-up.
fn start_table(w: &mut String, modes: &[Mode], stats: &[Stats]) {
    let lifetimes: Vec<(&Mode, &Stats)> = modes
        .iter()
        .zip(stats)
        .filter(|(m, _)| m.span == Span::Lifetime)
        .collect();
    let [(probe_mode, probe), (ffrtmp_mode, ffrtmp)] = lifetimes[..] else {
        return;
    };
    let _ = writeln!(
        w,
        "\nStarting (and ending) a program at all, in the same rounds (spawn → exit seen by `wait`; no cgroup work):\n"
    );
    let _ = writeln!(w, "| program | p50 | p90 | p99 |");
    let _ = writeln!(w, "| --- | ---: | ---: | ---: |");
    for (mode, st) in [(probe_mode, probe), (ffrtmp_mode, ffrtmp)] {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            mode.label,
            ms(st.p50),
            ms(st.p90),
            ms(st.p99)
        );
    }
    let start = ffrtmp.p50 as i64 - probe.p50 as i64;
    let _ = writeln!(
        w,
        "\nffrtmp's start and exit cost {} over the probe's at p50. Its start is a part of `run`'s \
         overhead that is not its set-up; its exit is not in `run`'s figure (which stops at the probe's stamp), \
         and `--version` skips the start-up work `run` does: a rough split, not a bound.",
        signed_ms(start)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(controllers: &str, dir: &str) -> Hierarchy {
        Hierarchy {
            controllers: controllers.to_string(),
            path: "/".to_string(),
            dir: PathBuf::from(dir),
        }
    }

    #[test]
    fn the_floor_joins_the_hierarchies_run_uses() {
        let hybrid = [
            h("cpu,cpuacct", "/c/cpu,cpuacct"),
            h("memory", "/c/memory/me"),
            h("pids", "/c/pids"),
            h("name=systemd", "/c/systemd"),
            h("", "/c/unified"),
        ];
        assert_eq!(floor_joins(&hybrid, "r"), ["v1:/c/cpu,cpuacct/r", "v1:/c/memory/me/r"]);
        let v2 = [h("", "/c/me")];
        assert_eq!(floor_joins(&v2, "r"), ["v2:/c/me/r"]);
    }
}
