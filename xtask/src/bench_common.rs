//! Pieces shared by the benchmark and reliability tasks (`bench`,
//! `bench-watch`, `reliability`): building ffrtmp and C helpers, the clock,
//! percentiles, this process's cgroups and their clean-up, machine facts,
//! rewriting a marked section of docs/BENCHMARKS.md, signals, a guard for
//! the processes a task starts, and the exec storm helper.

use std::fs;
use std::io::{ErrorKind, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `$CARGO_TARGET_DIR`, else `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The shipped build of ffrtmp (packaging/release-build: profile dist, static-pie);
/// returns the binary.
pub fn build_ffrtmp(root: &Path, tag: &str) -> anyhow::Result<PathBuf> {
    script_output_path(root, "packaging/release-build", tag)
}

/// Run `script` (packaging/release-build, build-deb, build-oci-image): the
/// path it prints last.
pub fn script_output_path(root: &Path, script: &str, tag: &str) -> anyhow::Result<PathBuf> {
    eprintln!("{tag}: building with {script}");
    let out = Command::new(root.join(script))
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {script}"))?;
    ensure!(out.status.success(), "{script} failed ({})", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default().trim();
    let path = if Path::new(last).is_absolute() {
        PathBuf::from(last)
    } else {
        root.join(last)
    };
    ensure!(path.is_file(), "{script} printed '{last}', which is not a file");
    Ok(path)
}

/// The ffrtmp binary a bench measures: `given` (`--ffrtmp PATH`), else a
/// fresh release build.
pub fn ffrtmp_binary(given: Option<&Path>, root: &Path, tag: &str) -> anyhow::Result<PathBuf> {
    match given {
        Some(p) => {
            ensure!(p.is_file(), "--ffrtmp {}: no such file", p.display());
            fs::canonicalize(p).with_context(|| format!("--ffrtmp {}", p.display()))
        }
        None => build_ffrtmp(root, tag),
    }
}

/// Compiles `source` to `dir/name` with `cc -O2 -static`, or dynamically if
/// static linking is unavailable. Returns the binary and the linkage used.
pub fn compile_c(dir: &Path, name: &str, source: &str, tag: &str) -> anyhow::Result<(PathBuf, &'static str)> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let src = dir.join(format!("{name}.c"));
    let out = dir.join(name);
    fs::write(&src, source).with_context(|| format!("writing {}", src.display()))?;
    for (linkage, extra) in [("static", &["-static"][..]), ("dynamic", &[][..])] {
        let output = Command::new("cc")
            .args(["-O2", "-Wall"])
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
            "{tag}: cc -O2 {} failed: {}",
            extra.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    bail!("could not compile {}", src.display())
}

/// A C helper in `dir/name`: compiled from `source` (`compile_c`), or with
/// `prebuilt` the one an earlier run compiled there, for a guest without a
/// C compiler (`bench-vm`). Its linkage is then read from its ELF headers:
/// a program interpreter means dynamic.
pub fn c_helper(
    dir: &Path,
    name: &str,
    source: &str,
    prebuilt: bool,
    tag: &str,
) -> anyhow::Result<(PathBuf, &'static str)> {
    if !prebuilt {
        return compile_c(dir, name, source, tag);
    }
    let bin = dir.join(name);
    match crate::vm::elf_interp(&bin)? {
        Some(None) => Ok((bin, "static")),
        Some(Some(_)) => Ok((bin, "dynamic")),
        None => bail!("--prebuilt: {} is not an ELF executable", bin.display()),
    }
}

pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Stats {
    /// Nearest-rank percentiles of non-empty samples.
    pub fn of(samples: &[u64]) -> Self {
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
pub fn percentile(sorted: &[u64], p: usize) -> u64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

pub fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

/// Where the benches' cgroups go: this process's own cgroup directory in one hierarchy.
pub struct Hierarchy {
    /// Controllers as in /proc/self/cgroup (`cpu`, `name=systemd`, empty for v2).
    pub controllers: String,
    /// The path as in /proc/self/cgroup (`/`, `/process_api/…`).
    pub path: String,
    pub dir: PathBuf,
}

/// This process's cgroup directory in every mounted hierarchy.
pub fn own_hierarchies() -> anyhow::Result<Vec<Hierarchy>> {
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
            path: path.to_string(),
            dir: m.point.join(rel.trim_start_matches('/')),
        });
    }
    ensure!(!out.is_empty(), "no mounted cgroup hierarchy found");
    Ok(out)
}

pub struct CgroupMount {
    pub fstype: String,
    pub root: String,
    pub point: PathBuf,
    pub options: Vec<String>,
}

impl CgroupMount {
    /// The mount option that spares a move its RCU grace period (cgroup2,
    /// and cgroup1 at mount time; the lock is global: one mount showing it
    /// means every move).
    pub fn favordynmods(&self) -> bool {
        self.options.iter().any(|o| o == "favordynmods")
    }
}

/// Whether favordynmods is on (some cgroup mount shows it).
pub fn favordynmods_on() -> bool {
    cgroup_mounts()
        .unwrap_or_default()
        .iter()
        .any(CgroupMount::favordynmods)
}

pub fn cgroup_mounts() -> anyhow::Result<Vec<CgroupMount>> {
    let info = fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(info.lines().filter_map(parse_mountinfo_line).collect())
}

/// `id parent maj:min root point opts [optional…] - fstype source superopts`
pub fn parse_mountinfo_line(line: &str) -> Option<CgroupMount> {
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

/// Removes a bench cgroup (a name relative to this process's cgroup) in every
/// hierarchy, also on early return. Only ever rmdir: a cgroup that still holds
/// processes stays and is reported.
pub struct CleanupGuard<'a> {
    pub hierarchies: &'a [Hierarchy],
    pub name: String,
    pub tag: &'static str,
    pub done: bool,
}

impl CleanupGuard<'_> {
    /// rmdir the cgroup (and any cgroup left in it), deepest first, in every
    /// hierarchy. Returns what had to be removed or could not be.
    fn cleanup(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for h in self.hierarchies {
            let d = h.dir.join(&self.name);
            if d.is_dir() {
                rmdir_tree(&d, &h.controllers, &mut notes);
            }
        }
        for n in &notes {
            eprintln!("{}: cleanup: {n}", self.tag);
        }
        notes
    }

    pub fn finish(mut self) -> Vec<String> {
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

/// The tree's commit as `Machine` reports it, handed to a guest that has no
/// git tree (`bench-vm`).
pub const TREE_ENV: &str = "FFRTMP_BENCH_TREE";

pub struct Machine {
    pub date: String,
    pub kernel: String,
    pub nproc: String,
    pub cpu: String,
    pub cgroups: String,
    pub commit: String,
    pub probe: &'static str,
    pub command: String,
}

impl Machine {
    /// Which ffrtmp a bench measured: the binary given with `--ffrtmp`, or
    /// the shipped build of the tree (packaging/release-build).
    pub fn ffrtmp(&self, given: Option<&Path>) -> String {
        match given {
            Some(p) => format!(
                "the binary `{}` given with `--ffrtmp` (tree at {})",
                p.display(),
                self.commit
            ),
            None => format!(
                "the shipped build of {} (packaging/release-build: profile dist, static-pie)",
                self.commit
            ),
        }
    }

    /// `task` and `args` give the command line shown: `cargo xtask <task> <args…>`.
    pub fn collect(root: &Path, probe: &'static str, task: &str, args: &[String]) -> Self {
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
            // A guest without the tree (bench-vm) is told the host's.
            None => std::env::var(TREE_ENV).unwrap_or_else(|_| "unknown".into()),
        };
        let mut command = format!("cargo xtask {task}");
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
pub fn describe_cgroups() -> String {
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
            "cgroup2 at {} (controllers: {}; favordynmods {})",
            m.point.display(),
            if c.is_empty() { "none" } else { c },
            if m.favordynmods() { "on" } else { "off" }
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
pub fn utc_date(t: SystemTime) -> String {
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

/// Replaces the section between `start` and `end` (markers included) of
/// BENCHMARKS.md, keeping every other section; appends it if absent; creates
/// the file if new.
pub fn update_section(existing: Option<&str>, section: &str, start: &str, end: &str) -> anyhow::Result<String> {
    let Some(doc) = existing else {
        return Ok(format!(
            "# Benchmarks\n\nMeasured numbers, the machine and the exact command for each \
             benchmark. Sections between `<!-- bench:… -->` markers are rewritten by the \
             `cargo xtask bench…` tasks with `--write`; keep hand-written text outside them.\n\n{section}"
        ));
    };
    match (doc.find(start), doc.find(end)) {
        (Some(a), Some(b)) if a < b => {
            let stop = b + end.len();
            let stop = if doc[stop..].starts_with('\n') { stop + 1 } else { stop };
            Ok(format!("{}{section}{}", &doc[..a], &doc[stop..]))
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
        _ => bail!("docs/BENCHMARKS.md has unbalanced {start} / {end} markers"),
    }
}

/// Rewrites the marked section of `<root>/docs/BENCHMARKS.md`.
pub fn write_section(root: &Path, section: &str, start: &str, end: &str, tag: &str) -> anyhow::Result<()> {
    let path = root.join("docs/BENCHMARKS.md");
    let existing = match fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let updated = update_section(existing.as_deref(), section, start, end)?;
    fs::create_dir_all(path.parent().expect("docs/ has a parent"))?;
    fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("{tag}: updated {}", path.display());
    Ok(())
}

/// `--flag VALUE` and `--flag=VALUE` reading shared by the bench tasks.
pub struct Flags<'a> {
    it: std::slice::Iter<'a, String>,
    inline: Option<&'a str>,
}

impl<'a> Flags<'a> {
    pub fn new(args: &'a [String]) -> Flags<'a> {
        Flags {
            it: args.iter(),
            inline: None,
        }
    }

    /// The next argument and its flag part (before any `=`).
    pub fn next_flag(&mut self) -> Option<(&'a str, &'a str)> {
        let arg = self.it.next()?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (arg.as_str(), None),
        };
        self.inline = inline;
        Some((arg, flag))
    }

    /// Whether the current flag came with `=value` (a switch must not).
    pub fn has_inline(&self) -> bool {
        self.inline.is_some()
    }

    /// The current flag's value: inline or the next argument.
    pub fn text(&mut self, flag: &str) -> anyhow::Result<String> {
        match self.inline.take() {
            Some(v) => Ok(v.to_string()),
            None => self.it.next().cloned().with_context(|| format!("{flag} needs a value")),
        }
    }

    /// The current flag's value as a whole number.
    pub fn number(&mut self, flag: &str) -> anyhow::Result<u64> {
        let v = self.text(flag)?;
        v.parse()
            .with_context(|| format!("invalid value '{v}' for {flag}: expected a whole number"))
    }
}

// ---------------------------------------------------------------- the exec storm

/// The soak's storm program: it exits 0 at once. Linked statically where
/// `cc` can, its exec skips the dynamic loader that `/bin/true` pays for
/// (7–33% more execs/s from the same workers on a 2-vCPU host, in the
/// runs of docs/RELIABILITY.md).
pub const NOOP_C: &str = "/* Written by `cargo xtask reliability soak`: exits 0. */\nint main(void) { return 0; }\n";

pub const STORM_C: &str = r#"/* Exec storm, written by `cargo xtask bench-watch` and `reliability`: `storm RATE WORKERS PROGRAM`.
 * WORKERS forked processes each vfork+exec PROGRAM at RATE/WORKERS per second
 * (absolute schedule; after a stall of more than 100 ms the schedule restarts
 * instead of bursting). On SIGTERM/SIGINT it stops the workers and prints
 * "storm EXECS ELAPSED_NS" (successful runs of PROGRAM). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

static long long now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void worker(unsigned long long *count, long long interval, const char *prog)
{
    long long next = now();
    while (!stop) {
        long long t = now();
        if (t < next) {
            struct timespec ts = { next / 1000000000LL, next % 1000000000LL };
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            continue;
        }
        if (t - next > 100000000LL)
            next = t;
        pid_t p = vfork();
        if (p == 0) {
            execl(prog, "true", (char *)NULL);
            _exit(127);
        }
        if (p > 0) {
            int st;
            while (waitpid(p, &st, 0) < 0 && errno == EINTR)
                ;
            if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                (*count)++;
        }
        next += interval;
    }
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: storm RATE WORKERS PROGRAM\n");
        return 2;
    }
    double rate = atof(argv[1]);
    int workers = atoi(argv[2]);
    if (rate <= 0 || workers < 1 || workers > 64) {
        fprintf(stderr, "storm: bad RATE or WORKERS\n");
        return 2;
    }
    unsigned long long *counts = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (counts == MAP_FAILED)
        return 1;
    struct sigaction sa = { 0 };
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &old);
    long long interval = (long long)(1e9 * workers / rate);
    long long t0 = now();
    pid_t kids[64];
    int n = 0;
    for (int w = 0; w < workers; w++) {
        pid_t p = fork();
        if (p == 0) {
            sigprocmask(SIG_SETMASK, &old, NULL);
            worker(&counts[w], interval, argv[3]);
        }
        if (p > 0)
            kids[n++] = p;
    }
    while (!stop)
        sigsuspend(&old);
    for (int i = 0; i < n; i++)
        kill(kids[i], SIGTERM);
    for (int i = 0; i < n; i++)
        while (waitpid(kids[i], NULL, 0) < 0 && errno == EINTR)
            ;
    long long t1 = now();
    unsigned long long total = 0;
    for (int w = 0; w < workers; w++)
        total += counts[w];
    printf("storm %llu %lld\n", total, t1 - t0);
    return 0;
}
"#;

// ---------------------------------------------------------------- signals

pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM/SIGHUP set a flag; the task stops at the next check and
/// every guard (processes, /etc files, cgroups) runs on the way out.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
}

pub fn check_interrupt() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps in short steps so that a signal stops the task promptly.
pub fn sleep_checked(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupt()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

// ---------------------------------------------------------------- processes

/// A process started here, stopped by PID (SIGTERM, then SIGKILL after 5 s)
/// when dropped or `stop`ped.
pub struct Proc {
    pub child: Option<Child>,
    pub what: String,
    /// The task's name, for its messages.
    pub tag: &'static str,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL. Returns the child for its output.
    pub fn stop(&mut self) -> Option<Child> {
        let mut child = self.child.take()?;
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on the PID of our own unreaped child: it cannot
            // have been reused while we have not waited for it.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!(
                    "{}: {} (pid {}) ignored SIGTERM; SIGKILL",
                    self.tag,
                    self.what,
                    child.id()
                );
                let _ = child.kill();
            }
        }
        Some(child)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.stop() {
            let _ = c.wait();
        }
    }
}

/// A `kB` field of /proc/<pid>/status.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Stops the storm helper; returns its achieved exec rate.
pub fn stop_storm(p: &mut Proc) -> anyhow::Result<f64> {
    let mut child = p.stop().context("storm helper already stopped")?;
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        so.read_to_string(&mut out)
            .context("reading the storm helper's output")?;
    }
    let _ = child.wait();
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("storm "))
        .context("no result line from the storm helper")?;
    let mut f = line.split_whitespace().map(|v| v.parse::<u64>());
    let (Some(Ok(n)), Some(Ok(ns))) = (f.next(), f.next()) else {
        bail!("malformed storm line '{line}'");
    };
    let rate = n as f64 / (ns as f64 / 1e9);
    eprintln!("{}: storm: {n} execs in {:.1} s = {rate:.0}/s", p.tag, ns as f64 / 1e9);
    Ok(rate)
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
        let (a, b) = ("<!-- bench:x:start -->", "<!-- bench:x:end -->");
        let section = format!("{a}\nnew\n{b}\n");
        let doc = format!("# B\n\n## other\nx\n\n{a}\nold\n{b}\n\n## later\ny\n");
        let out = update_section(Some(&doc), &section, a, b).unwrap();
        assert_eq!(out, format!("# B\n\n## other\nx\n\n{section}\n## later\ny\n"));
        let appended = update_section(Some("# B\n\n## other\n"), &section, a, b).unwrap();
        assert_eq!(appended, format!("# B\n\n## other\n\n{section}"));
        assert!(update_section(None, &section, a, b).unwrap().ends_with(&section));
        assert!(update_section(Some(b), &section, a, b).is_err());
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
        assert!(!m.favordynmods());
        let on = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 none rw,nsdelegate,favordynmods";
        assert!(parse_mountinfo_line(on).unwrap().favordynmods());
        // cgroup1 takes it at mount time too (not on a remount).
        assert!(
            parse_mountinfo_line(&v1.replace(",cpu", ",cpu,favordynmods"))
                .unwrap()
                .favordynmods()
        );
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
