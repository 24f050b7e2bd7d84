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
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};

const DEFAULT_ITERATIONS: usize = 300;
const DEFAULT_WARMUP: usize = 20;
/// The goal from the foundation issue: `run` costs at most this over a plain spawn.
const GOAL_NS: u64 = 1_000_000;
/// Limits used by the "with limits" mode.
const LIMIT_ARGS: [&str; 4] = ["--cpu-quota", "50", "--memory-limit", "256"];
const MARK_START: &str = "<!-- bench:run-overhead:start -->";
const MARK_END: &str = "<!-- bench:run-overhead:end -->";
const PROBE_PREFIX: &str = "ffrtmp-probe ";

const PROBE_C: &str = r#"/* ffrtmp bench probe, written by `cargo xtask bench`.
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

const USAGE: &str = "\
usage: cargo xtask bench [--iterations N] [--warmup N] [--gap-ms MS] [--write]

Measures the median time from invoking `ffrtmp run … -- probe` to the probe's
first instruction, against spawning the probe directly, interleaved in one run.
Needs root (ffrtmp creates cgroups). Builds ffrtmp (release) and the probe first.

  --iterations N  measured rounds (default 300); each round runs every mode once
  --warmup N      rounds run first and discarded (default 20)
  --gap-ms MS     sleep MS ms before every sample (default 0: back to back);
                  e.g. 50 shows the cost of a `run` on an otherwise idle host
  --write         also update the run-overhead section of docs/BENCHMARKS.md
";

struct Options {
    iterations: usize,
    warmup: usize,
    gap_ms: u64,
    write: bool,
}

fn parse_args(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut o = Options {
        iterations: DEFAULT_ITERATIONS,
        warmup: DEFAULT_WARMUP,
        gap_ms: 0,
        write: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut value = |name: &str| -> anyhow::Result<usize> {
            let v = match &inline {
                Some(v) => v.clone(),
                None => it.next().cloned().with_context(|| format!("{name} needs a value"))?,
            };
            v.parse()
                .with_context(|| format!("invalid value '{v}' for {name}: expected a whole number"))
        };
        match flag {
            "--iterations" | "-n" => o.iterations = value("--iterations")?,
            "--warmup" => o.warmup = value("--warmup")?,
            "--gap-ms" => o.gap_ms = value("--gap-ms")? as u64,
            "--write" if inline.is_none() => o.write = true,
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
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    build_ffrtmp(&root)?;
    let ffrtmp = target.join("release/ffrtmp");
    ensure!(ffrtmp.is_file(), "{} not found after the build", ffrtmp.display());
    let (probe, linkage) = build_probe(&target.join("bench"))?;

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
        name: &cgroup_root,
        done: false,
    };

    let modes = [
        Mode::new("direct spawn", &probe, Vec::new()),
        Mode::new("`ffrtmp run`, no limits", &ffrtmp, run_args(&cgroup_root, &[], &probe)),
        Mode::new(
            "`ffrtmp run`, cpu + memory limits",
            &ffrtmp,
            run_args(&cgroup_root, &LIMIT_ARGS, &probe),
        ),
    ];
    eprintln!(
        "bench: {} warm-up + {} measured rounds of {} modes, cgroup root {cgroup_root} (relative)",
        opts.warmup,
        opts.iterations,
        modes.len()
    );
    let gap = Duration::from_millis(opts.gap_ms);
    let samples = measure(&modes, opts.warmup, opts.iterations, gap)?;
    let leftovers = guard.finish();

    let stats: Vec<Stats> = samples.iter().map(|s| Stats::of(s)).collect();
    let machine = Machine::collect(&root, linkage, args);
    let section = render(&modes, &stats, &machine, &opts, &cgroup_root, &leftovers);
    print!("{section}");

    if opts.write {
        let path = root.join("docs/BENCHMARKS.md");
        let existing = match fs::read_to_string(&path) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let updated = update_section(existing.as_deref(), &section)?;
        fs::create_dir_all(path.parent().expect("docs/ has a parent"))?;
        fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: updated {}", path.display());
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn build_ffrtmp(root: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: cargo build --release -p ffrtmp");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "ffrtmp"])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "cargo build --release -p ffrtmp failed ({status})");
    Ok(())
}

/// Compiles the probe with `cc -O2 -static`, or dynamically if static linking
/// is unavailable. Returns its path and the linkage used.
fn build_probe(dir: &Path) -> anyhow::Result<(PathBuf, &'static str)> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let src = dir.join("probe.c");
    let out = dir.join("probe");
    fs::write(&src, PROBE_C).with_context(|| format!("writing {}", src.display()))?;
    for (linkage, extra) in [("static", &["-static"][..]), ("dynamic", &[][..])] {
        let output = Command::new("cc")
            .args(["-O2"])
            .args(extra)
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .output()
            .context("running cc (is a C compiler installed?)")?;
        if output.status.success() {
            return Ok((out, linkage));
        }
        eprintln!(
            "bench: cc -O2 {} failed: {}",
            extra.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    bail!("could not compile the probe {}", src.display())
}

fn run_args(cgroup_root: &str, limits: &[&str], probe: &Path) -> Vec<String> {
    let mut a = vec!["run".to_string(), "--cgroup-root".into(), cgroup_root.into()];
    a.extend(limits.iter().map(|s| s.to_string()));
    a.push("--".into());
    a.push(probe.display().to_string());
    a
}

struct Mode {
    label: &'static str,
    program: PathBuf,
    args: Vec<String>,
}

impl Mode {
    fn new(label: &'static str, program: &Path, args: Vec<String>) -> Self {
        Self {
            label,
            program: program.to_path_buf(),
            args,
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
        ensure!(
            out.status.success(),
            "`{}` failed ({}): {}",
            self.shown(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
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

fn monotonic_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stats {
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
}

impl Stats {
    fn of(samples: &[u64]) -> Self {
        let mut s = samples.to_vec();
        s.sort_unstable();
        Self {
            p50: percentile(&s, 50),
            p90: percentile(&s, 90),
            p99: percentile(&s, 99),
            max: *s.last().expect("at least one sample"),
        }
    }
}

/// Nearest-rank percentile of sorted, non-empty samples.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

/// Where the bench's jobs go: this process's own cgroup directory in one hierarchy.
struct Hierarchy {
    /// Controllers as in /proc/self/cgroup (`cpu`, `name=systemd`, empty for v2).
    controllers: String,
    dir: PathBuf,
}

/// This process's cgroup directory in every mounted hierarchy.
fn own_hierarchies() -> anyhow::Result<Vec<Hierarchy>> {
    let cgroup = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let mounts = cgroup_mounts()?;
    let mut out = Vec::new();
    for line in cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let wanted: Vec<&str> = ctrls.split(',').filter(|c| !c.is_empty()).collect();
        let mount = mounts.iter().find(|m| {
            if wanted.is_empty() {
                m.fstype == "cgroup2"
            } else {
                m.fstype == "cgroup" && wanted.iter().all(|c| m.options.iter().any(|o| o == c))
            }
        });
        let Some(m) = mount else { continue };
        // The mount shows the hierarchy from `m.root` down.
        let Some(rel) = path.strip_prefix(m.root.as_str()) else {
            continue;
        };
        out.push(Hierarchy {
            controllers: ctrls.to_string(),
            dir: m.point.join(rel.trim_start_matches('/')),
        });
    }
    ensure!(!out.is_empty(), "no mounted cgroup hierarchy found");
    Ok(out)
}

struct CgroupMount {
    fstype: String,
    root: String,
    point: PathBuf,
    options: Vec<String>,
}

fn cgroup_mounts() -> anyhow::Result<Vec<CgroupMount>> {
    let info = fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(info.lines().filter_map(parse_mountinfo_line).collect())
}

/// `id parent maj:min root point opts [optional…] - fstype source superopts`
fn parse_mountinfo_line(line: &str) -> Option<CgroupMount> {
    let (pre, post) = line.split_once(" - ")?;
    let pre: Vec<&str> = pre.split(' ').collect();
    let post: Vec<&str> = post.split(' ').collect();
    let fstype = *post.first()?;
    if fstype != "cgroup" && fstype != "cgroup2" {
        return None;
    }
    Some(CgroupMount {
        fstype: fstype.to_string(),
        root: unescape(pre.get(3)?),
        point: PathBuf::from(unescape(pre.get(4)?)),
        options: post.get(2)?.split(',').map(str::to_string).collect(),
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(o)) = (b[i], octal) {
            out.push((o[0] - b'0') * 64 + (o[1] - b'0') * 8 + (o[2] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes the bench's cgroup root in every hierarchy, also on early return.
struct CleanupGuard<'a> {
    hierarchies: &'a [Hierarchy],
    name: &'a str,
    done: bool,
}

impl CleanupGuard<'_> {
    /// rmdir the root (and any job cgroup left in it), deepest first, in every
    /// hierarchy. Returns what had to be removed or could not be.
    fn cleanup(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for h in self.hierarchies {
            let d = h.dir.join(self.name);
            if d.is_dir() {
                rmdir_tree(&d, &h.controllers, &mut notes);
            }
        }
        for n in &notes {
            eprintln!("bench: cleanup: {n}");
        }
        notes
    }
}

impl CleanupGuard<'_> {
    fn finish(mut self) -> Vec<String> {
        self.done = true;
        self.cleanup()
    }
}

impl Drop for CleanupGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.cleanup();
        }
    }
}

fn rmdir_tree(dir: &Path, controllers: &str, notes: &mut Vec<String>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path(), controllers, notes);
            }
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => notes.push(format!("removed leftover {} ({controllers})", dir.display())),
        Err(e) => notes.push(format!("could not remove {}: {e}", dir.display())),
    }
}

struct Machine {
    date: String,
    kernel: String,
    nproc: String,
    cpu: String,
    cgroups: String,
    commit: String,
    probe: &'static str,
    command: String,
}

impl Machine {
    fn collect(root: &Path, probe: &'static str, args: &[String]) -> Self {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let git = |a: &[&str]| {
            Command::new("git")
                .args(a)
                .current_dir(root)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let commit = match git(&["rev-parse", "--short", "HEAD"]) {
            Some(c) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
                Some(s) if !s.is_empty() => format!("{c} (with uncommitted changes)"),
                _ => c,
            },
            None => "unknown".into(),
        };
        let mut command = String::from("cargo xtask bench");
        for a in args {
            command.push(' ');
            command.push_str(a);
        }
        Self {
            date: utc_date(SystemTime::now()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            nproc: std::thread::available_parallelism()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "unknown".into()),
            cpu,
            cgroups: describe_cgroups(),
            commit,
            probe,
            command,
        }
    }
}

/// "v1 (hybrid): …", "v1 (legacy): …" or "v2 (unified): …".
fn describe_cgroups() -> String {
    let mounts = cgroup_mounts().unwrap_or_default();
    let mut v1: Vec<&str> = mounts
        .iter()
        .filter(|m| m.fstype == "cgroup")
        .flat_map(|m| m.options.iter().map(String::as_str))
        .filter(|o| KNOWN_V1.contains(o))
        .collect();
    v1.sort_unstable();
    v1.dedup();
    let v2 = mounts.iter().find(|m| m.fstype == "cgroup2").map(|m| {
        let c = fs::read_to_string(m.point.join("cgroup.controllers")).unwrap_or_default();
        let c = c.trim();
        format!(
            "cgroup2 at {} (controllers: {})",
            m.point.display(),
            if c.is_empty() { "none" } else { c }
        )
    });
    match (v1.is_empty(), v2) {
        (false, Some(v2)) => format!("v1 (hybrid): v1 controllers {}; {v2}", v1.join(", ")),
        (false, None) => format!("v1 (legacy): controllers {}", v1.join(", ")),
        (true, Some(v2)) => format!("v2 (unified): {v2}"),
        (true, None) => "none mounted".into(),
    }
}

const KNOWN_V1: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// `YYYY-MM-DD` (UTC).
fn utc_date(t: SystemTime) -> String {
    let days = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
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
    let pacing = if o.gap_ms == 0 {
        "back to back".to_string()
    } else {
        format!("each sample after {} ms of sleep", o.gap_ms)
    };
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
    for (mode, st) in modes.iter().zip(stats) {
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
    for (mode, st) in modes.iter().zip(stats).skip(1) {
        let over = st.p50 as i64 - base as i64;
        let _ = writeln!(
            w,
            "| {} | {}{:.3} ms | {:.1}× | {} |",
            mode.label,
            if over >= 0 { "+" } else { "−" },
            over.unsigned_abs() as f64 / 1e6,
            st.p50 as f64 / base.max(1) as f64,
            if over <= GOAL_NS as i64 { "met" } else { "**not met**" }
        );
    }
    let _ = writeln!(w, "\nMachine and run:\n");
    let _ = writeln!(w, "- date: {} (UTC)", m.date);
    let _ = writeln!(w, "- kernel (`uname -r`): {}", m.kernel);
    let _ = writeln!(w, "- CPUs (`nproc`): {}; model: {}", m.nproc, m.cpu);
    let _ = writeln!(w, "- cgroups: {}", m.cgroups);
    let _ = writeln!(w, "- ffrtmp: release build of {}", m.commit);
    let _ = writeln!(w, "- command (as root): `{}`", m.command);
    if !leftovers.is_empty() {
        let _ = writeln!(w, "- cleanup after the run: {}", leftovers.join("; "));
    }
    let _ = writeln!(w, "{MARK_END}");
    s
}

/// Replaces the run-overhead section (between the markers) of BENCHMARKS.md,
/// keeping every other section; appends it if absent; creates the file if new.
fn update_section(existing: Option<&str>, section: &str) -> anyhow::Result<String> {
    let Some(doc) = existing else {
        return Ok(format!(
            "# Benchmarks\n\nMeasured numbers, the machine and the exact command for each \
             benchmark. Sections between `<!-- bench:… -->` markers are rewritten by \
             `cargo xtask bench --write`; keep hand-written text outside them.\n\n{section}"
        ));
    };
    match (doc.find(MARK_START), doc.find(MARK_END)) {
        (Some(a), Some(b)) if a < b => {
            let end = b + MARK_END.len();
            let end = if doc[end..].starts_with('\n') { end + 1 } else { end };
            Ok(format!("{}{section}{}", &doc[..a], &doc[end..]))
        }
        (None, None) => {
            let sep = if doc.is_empty() || doc.ends_with("\n\n") {
                ""
            } else if doc.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            Ok(format!("{doc}{sep}{section}"))
        }
        _ => bail!("docs/BENCHMARKS.md has unbalanced {MARK_START} / {MARK_END} markers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&s, 50), 50);
        assert_eq!(percentile(&s, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        let st = Stats::of(&[5, 1, 3, 2, 4]);
        assert_eq!((st.p50, st.p90, st.p99, st.max), (3, 5, 5, 5));
    }

    #[test]
    fn section_replaced_others_kept() {
        let section = format!("{MARK_START}\nnew\n{MARK_END}\n");
        let doc = format!("# B\n\n## other\nx\n\n{MARK_START}\nold\n{MARK_END}\n\n## later\ny\n");
        let out = update_section(Some(&doc), &section).unwrap();
        assert_eq!(out, format!("# B\n\n## other\nx\n\n{section}\n## later\ny\n"));
        let appended = update_section(Some("# B\n\n## other\n"), &section).unwrap();
        assert_eq!(appended, format!("# B\n\n## other\n\n{section}"));
        assert!(update_section(None, &section).unwrap().ends_with(&section));
        assert!(update_section(Some(MARK_END), &section).is_err());
    }

    #[test]
    fn mountinfo_cgroup_lines() {
        let v1 = "35 27 0:30 / /sys/fs/cgroup/cpu rw,nosuid shared:14 - cgroup cgroup rw,cpu";
        let m = parse_mountinfo_line(v1).unwrap();
        assert_eq!((m.fstype.as_str(), m.root.as_str()), ("cgroup", "/"));
        assert_eq!(m.point, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(m.options, ["rw", "cpu"]);
        let v2 = r"30 27 0:26 /a\040b /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw";
        let m = parse_mountinfo_line(v2).unwrap();
        assert_eq!((m.fstype.as_str(), m.root.as_str()), ("cgroup2", "/a b"));
        assert!(parse_mountinfo_line("1 0 8:1 / / rw - ext4 /dev/sda1 rw").is_none());
    }

    #[test]
    fn dates() {
        let at = |s: u64| utc_date(UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01");
        assert_eq!(at(951_782_400), "2000-02-29");
        assert_eq!(at(1_767_225_599), "2025-12-31");
    }
}
