//! `cargo xtask bench-watch`: how soon a new target process is governed,
//! seen from inside the target, for each `ffrtmp watch` backend against
//! cgrulesengd, on a quiet host and under an exec storm; plus the daemon's
//! CPU and memory cost.
//!
//! The probe is a small static C program copied under a target's name. The
//! parent reads CLOCK_MONOTONIC right before `spawn()`; the probe stamps the
//! entry of `main`, then reads `/proc/self/cgroup` every 20 µs (pread at
//! offset 0 of one fd; a reader that never leaves the kernel stretches the
//! RCU grace period every move waits for) until the cpu line (v1) or the `0::` line (v2) shows its job
//! cgroup, stamps again and prints both. It gives up after `--timeout-ms`
//! ("missed"). The "floor" run spawns the probe with no governor: spawn to
//! first instruction, which is the best any governor could achieve.
//!
//! Safety: ffrtmp daemons get a relative `--cgroup-root` (`ffrtmp-bench-<pid>`,
//! under this process's own cgroup in every hierarchy); the cgrulesengd rule
//! uses the cpu controller only and a group under this process's own cpu
//! cgroup; /etc/cgrules.conf is backed up and restored (also on error and on
//! SIGINT/SIGTERM/SIGHUP, which only set a flag checked between steps); every
//! cgroup created is removed with rmdir; only processes started here are
//! signalled, by PID. The target name is unique per run (`ffmpeg-b<pid>`) so
//! that other ffrtmp daemons on the host (tests with the default targets) and
//! this run's governors never touch each other's processes.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::bench_common::{
    CleanupGuard, Flags, Hierarchy, INTERRUPTED, Machine, Proc, STORM_C, Stats, c_helper, cgroup_mounts,
    check_interrupt, favordynmods_on, ffrtmp_binary, install_signal_handlers, monotonic_ns, ms, own_hierarchies,
    sleep_checked, status_kib, stop_storm, target_dir, workspace_root, write_section,
};
use crate::cdf_plot;

const TAG: &str = "bench-watch";
const MARK_START: &str = "<!-- bench:watch-latency:start -->";
const MARK_END: &str = "<!-- bench:watch-latency:end -->";
const PROBE_PREFIX: &str = "ffrtmp-probe ";
const CGRULES_CONF: &str = "/etc/cgrules.conf";
const CGRULES_DIR: &str = "/etc/cgrules.d";
const CGRED_SOCKET: &str = "/run/cgred.socket";
const CGCONFIG_CONF: &str = "/etc/cgconfig.conf";
const CGCONFIG_DIR: &str = "/etc/cgconfig.d";

// Goals from issue 3.
const GOAL_EBPF_OVER_FLOOR_NS: u64 = 1_000_000;
const GOAL_NETLINK_OVER_FLOOR_NS: u64 = 3_000_000;
const GOAL_EBPF_VS_CGRED: f64 = 20.0;
const GOAL_IDLE_CPU_PCT: f64 = 0.05;
const GOAL_STORM_CPU_PCT: f64 = 5.0;
const GOAL_RSS_KIB: u64 = 16 * 1024;
/// Issue 17: ffrtmp's own part of an adoption (exec → the move's start).
const GOAL_OWN_P50_NS: u64 = 300_000;
const GOAL_OWN_P99_NS: u64 = 1_000_000;
/// With favordynmods on: ebpf's p50 margin over the floor, as a share of
/// cgrulesengd's at most (issue 17).
const GOAL_MARGIN_SHARE_OF_CGRED: f64 = 0.5;
const STORM_MIN_RATE: f64 = 1000.0;

pub const PROBE_C: &str = r#"/* ffrtmp watch-latency probe, written by `cargo xtask bench-watch`.
 * argv: [SELECTOR PARENT LEAF TIMEOUT_MS LINGER_MS]; without them it only stamps (floor).
 * SELECTOR: "cpu" (the v1 line whose controllers include cpu) or "unified"
 * (the 0:: line). Governed when that line's path starts with PARENT + "/" and
 * a later component is LEAF<pid>, or, if LEAF is "-", when it equals PARENT.
 * Prints: "ffrtmp-probe ENTRY_NS floor", "ffrtmp-probe ENTRY_NS governed T_NS READS"
 * or "ffrtmp-probe ENTRY_NS missed LAST_PATH READS". Once governed it stays
 * LINGER_MS more, like a real target, so the governor can finish its work. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static long long now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* The path of the selected line, copied to out; 0 if absent. */
static int line_path(char *buf, const char *sel, char *out, size_t outlen)
{
    for (char *line = buf; line && *line; ) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2) {
            int hit = 0;
            if (strcmp(sel, "unified") == 0) {
                hit = strncmp(line, "0::", 3) == 0;
            } else {
                size_t sl = strlen(sel);
                for (char *p = c1 + 1; p < c2; ) {
                    char *e = memchr(p, ',', (size_t)(c2 - p));
                    if (!e)
                        e = c2;
                    if ((size_t)(e - p) == sl && memcmp(p, sel, sl) == 0)
                        hit = 1;
                    p = e + 1;
                }
            }
            if (hit) {
                snprintf(out, outlen, "%s", c2 + 1);
                return 1;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    return 0;
}

static int governed(const char *path, const char *parent, const char *leaf)
{
    size_t pl = strlen(parent);
    if (strcmp(leaf, "-") == 0)
        return strcmp(path, parent) == 0;
    if (strncmp(path, parent, pl) != 0 || path[pl] != '/')
        return 0;
    size_t ll = strlen(leaf);
    for (const char *p = path + pl + 1; *p; ) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == ll && memcmp(p, leaf, ll) == 0)
            return 1;
        if (!e)
            break;
        p = e + 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    long long entry = now();
    if (argc < 6) {
        printf("ffrtmp-probe %lld floor\n", entry);
        return 0;
    }
    const char *sel = argv[1], *parent = argv[2];
    char leaf[256];
    if (strcmp(argv[3], "-") == 0)
        snprintf(leaf, sizeof leaf, "-");
    else
        snprintf(leaf, sizeof leaf, "%s%d", argv[3], (int)getpid());
    long long deadline = entry + atoll(argv[4]) * 1000000LL;
    int fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        perror("open /proc/self/cgroup");
        return 1;
    }
    static char buf[16384], path[4096];
    long long reads = 0;
    strcpy(path, "?");
    /* Sleep 20 us between reads (with 1 ns timer slack) instead of reading
     * back to back: a CPU that never leaves the kernel's read path reports
     * no RCU quiescent state at its ticks, so a busy reader stretched the
     * grace period that every cgroup.procs write waits for (measured: a
     * move took 12-19 ms p50 beside a busy reader, 6.6 ms beside a
     * sleeper). A real workload runs in user space; the sleep keeps the
     * probe out of the measurement at the cost of tens of us resolution. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    struct timespec gap = { 0, 20000 };
    for (;;) {
        if (reads > 0)
            nanosleep(&gap, NULL);
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        long long t = now();
        reads++;
        if (n > 0) {
            buf[n] = 0;
            if (line_path(buf, sel, path, sizeof path) && governed(path, parent, leaf)) {
                printf("ffrtmp-probe %lld governed %lld %lld\n", entry, t, reads);
                fflush(stdout);
                usleep((useconds_t)atoi(argv[5]) * 1000);
                return 0;
            }
        }
        if (t > deadline) {
            printf("ffrtmp-probe %lld missed %s %lld\n", entry, path, reads);
            return 0;
        }
    }
}
"#;

const USAGE: &str = "\
usage: cargo xtask bench-watch [options] [--write]

Spawn-to-governed latency seen from inside a target (p50/p90/p99/max), for: the
floor (no governor), `ffrtmp watch` with each backend (ebpf, netlink, poll with
--scan-interval 1s), and cgrulesengd (cgroup-tools); on a quiet host and again
under an exec storm; plus each daemon's CPU (idle and storm) and RSS.
Needs root. Builds ffrtmp (release), the probe and the storm helper first.

  --spawns N           measured spawns per run (default 500)
  --poll-spawns N      measured spawns for the poll backend (default 200; each
                       waits up to one scan interval)
  --warmup N           discarded spawns after the governor is ready (default 10)
  --gap-ms MS          sleep before each spawn (default 100: each target starts
                       on a settled host; 0 = back to back, which keeps the
                       kernel's cgroup-migration lock warm and flatters everyone)
  --gap-jitter-ms MS   add 0 to MS ms (at most 1000) (the same pseudo-random sequence for every
                       governor) to each gap, so spawns do not lock onto the
                       kernel's tick (default 0)
  --timeout-ms MS      the probe reports \"missed\" after MS (default 2000)
  --linger-ms MS       a governed probe stays MS more so the governor can finish
                       (default 50)
  --idle-secs S        daemon CPU measured over S idle seconds (default 60)
  --storm-secs S       daemon CPU measured over S seconds of storm alone (default 10)
  --storm-rate R       non-target execs/s asked of the storm helper (default 1100)
  --storm-workers N    storm processes sharing that rate (default 2)
  --scan-interval D    --scan-interval given to the poll backend (default 1s)
  --only LIST          comma-separated subset of floor,ebpf,netlink,poll,cgrulesengd
  --no-storm           skip the storm runs
  --no-install         do not `apt-get install cgroup-tools` when cgrulesengd is missing
  --ffrtmp PATH        use this ffrtmp binary instead of building one
  --prebuilt           use the probe and storm helper an earlier run compiled
                       (target/bench-watch/{probe,storm}) instead of compiling
                       them: for a guest without a C compiler (`bench-vm`)
  --target-name NAME   the probe's file name = the target (default ffmpeg-b<pid>,
                       unique so no other ffrtmp on the host reacts to it)
  --write              also update the watch-latency section of docs/BENCHMARKS.md
";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Gov {
    Floor,
    Ebpf,
    Netlink,
    Poll,
    Cgred,
}

const ALL_GOVS: [Gov; 5] = [Gov::Floor, Gov::Ebpf, Gov::Netlink, Gov::Poll, Gov::Cgred];

impl Gov {
    fn key(self) -> &'static str {
        match self {
            Gov::Floor => "floor",
            Gov::Ebpf => "ebpf",
            Gov::Netlink => "netlink",
            Gov::Poll => "poll",
            Gov::Cgred => "cgrulesengd",
        }
    }

    fn backend(self) -> Option<&'static str> {
        match self {
            Gov::Ebpf => Some("ebpf"),
            Gov::Netlink => Some("netlink"),
            Gov::Poll => Some("poll"),
            _ => None,
        }
    }

    fn is_daemon(self) -> bool {
        self != Gov::Floor
    }
}

struct Options {
    spawns: usize,
    poll_spawns: usize,
    warmup: usize,
    gap_ms: u64,
    gap_jitter_ms: u64,
    timeout_ms: u64,
    linger_ms: u64,
    idle_secs: u64,
    storm_secs: u64,
    storm_rate: u64,
    storm_workers: usize,
    scan_interval: String,
    only: Vec<Gov>,
    storm: bool,
    install: bool,
    target_name: String,
    ffrtmp: Option<PathBuf>,
    prebuilt: bool,
    write: bool,
}

fn parse_args(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut o = Options {
        spawns: 500,
        poll_spawns: 200,
        warmup: 10,
        gap_ms: 100,
        gap_jitter_ms: 0,
        timeout_ms: 2000,
        linger_ms: 50,
        idle_secs: 60,
        storm_secs: 10,
        storm_rate: 1100,
        storm_workers: 2,
        scan_interval: "1s".into(),
        only: ALL_GOVS.to_vec(),
        storm: true,
        install: true,
        target_name: format!("ffmpeg-b{}", std::process::id()),
        ffrtmp: None,
        prebuilt: false,
        write: false,
    };
    let mut flags = Flags::new(args);
    while let Some((a, flag)) = flags.next_flag() {
        match flag {
            "--spawns" | "-n" => o.spawns = flags.number(flag)? as usize,
            "--poll-spawns" => o.poll_spawns = flags.number(flag)? as usize,
            "--warmup" => o.warmup = flags.number(flag)? as usize,
            "--gap-ms" => o.gap_ms = flags.number(flag)?,
            "--gap-jitter-ms" => o.gap_jitter_ms = flags.number(flag)?,
            "--timeout-ms" => o.timeout_ms = flags.number(flag)?,
            "--linger-ms" => o.linger_ms = flags.number(flag)?,
            "--idle-secs" => o.idle_secs = flags.number(flag)?,
            "--storm-secs" => o.storm_secs = flags.number(flag)?,
            "--storm-rate" => o.storm_rate = flags.number(flag)?,
            "--storm-workers" => o.storm_workers = flags.number(flag)? as usize,
            "--scan-interval" => o.scan_interval = flags.text(flag)?,
            "--target-name" => o.target_name = flags.text(flag)?,
            "--ffrtmp" => o.ffrtmp = Some(PathBuf::from(flags.text(flag)?)),
            "--only" => {
                let v = flags.text(flag)?;
                o.only = Vec::new();
                for k in v.split(',').filter(|k| !k.is_empty()) {
                    let g = ALL_GOVS
                        .iter()
                        .find(|g| g.key() == k)
                        .with_context(|| format!("--only: unknown run '{k}'"))?;
                    o.only.push(*g);
                }
            }
            "--no-storm" if !flags.has_inline() => o.storm = false,
            "--no-install" if !flags.has_inline() => o.install = false,
            "--write" if !flags.has_inline() => o.write = true,
            "--prebuilt" if !flags.has_inline() => o.prebuilt = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            _ => bail!("unknown argument '{a}'\n\n{USAGE}"),
        }
    }
    ensure!(
        o.spawns >= 1 && o.poll_spawns >= 1,
        "--spawns and --poll-spawns must be at least 1"
    );
    ensure!(o.timeout_ms >= 1, "--timeout-ms must be at least 1");
    ensure!(
        o.gap_jitter_ms <= 1000,
        "--gap-jitter-ms {} is too large: expected 0 to 1000",
        o.gap_jitter_ms
    );
    ensure!(o.storm_rate >= 1, "--storm-rate must be at least 1");
    ensure!((1..=64).contains(&o.storm_workers), "--storm-workers must be 1..64");
    ensure!(
        !o.target_name.is_empty()
            && o.target_name.len() <= 15
            && o.target_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        "--target-name must be 1..15 bytes of [A-Za-z0-9._-] (a whole comm)"
    );
    Ok(Some(o))
}

/// Restores a file replaced for the bench (or removes it if it did not
/// exist), also on error and on a signal. A copy of the original is kept on
/// disk until it is restored, in case this process is killed outright.
struct FileRestore {
    path: PathBuf,
    original: Option<(Vec<u8>, fs::Permissions)>,
    backup: PathBuf,
    done: bool,
}

impl FileRestore {
    fn replace(path: &Path, content: &str, backup: &Path) -> anyhow::Result<Self> {
        let original = match fs::read(path) {
            Ok(b) => {
                let perm = fs::metadata(path)?.permissions();
                fs::write(backup, &b).with_context(|| format!("backing up {}", path.display()))?;
                eprintln!("{TAG}: {} backed up to {}", path.display(), backup.display());
                Some((b, perm))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let guard = Self {
            path: path.to_path_buf(),
            original,
            backup: backup.to_path_buf(),
            done: false,
        };
        fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
        if guard.original.is_none() {
            fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
        }
        Ok(guard)
    }

    fn restore(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let result = match &self.original {
            Some((bytes, perm)) => {
                fs::write(&self.path, bytes).and_then(|()| fs::set_permissions(&self.path, perm.clone()))
            }
            None => fs::remove_file(&self.path),
        };
        match result {
            Ok(()) => {
                if self.original.is_some() {
                    let _ = fs::remove_file(&self.backup);
                }
                let how = if self.original.is_some() {
                    "restored"
                } else {
                    "removed (created for the run)"
                };
                eprintln!("{TAG}: {how} {}", self.path.display());
            }
            Err(e) => eprintln!(
                "{TAG}: COULD NOT RESTORE {}: {e} (original in {})",
                self.path.display(),
                self.backup.display()
            ),
        }
    }
}

impl Drop for FileRestore {
    fn drop(&mut self) {
        self.restore();
    }
}

/// What cgrulesengd needs, set up for one run and undone when dropped (also
/// on error or a signal): the files replaced or created in /etc, the
/// directory created there, and its socket if it was not there before
/// (cgrulesengd 2.0 leaves it behind on SIGTERM).
#[derive(Default)]
struct CgredEnv {
    files: Vec<FileRestore>,
    dir_created: Option<PathBuf>,
    socket_before: bool,
}

impl Drop for CgredEnv {
    fn drop(&mut self) {
        if self.files.is_empty() && self.dir_created.is_none() {
            return;
        }
        for f in self.files.iter_mut().rev() {
            f.restore();
        }
        if let Some(d) = self.dir_created.take() {
            match fs::remove_dir(&d) {
                Ok(()) => eprintln!("{TAG}: removed {}", d.display()),
                Err(e) => eprintln!("{TAG}: COULD NOT REMOVE {}: {e}", d.display()),
            }
        }
        if !self.socket_before && Path::new(CGRED_SOCKET).exists() {
            match fs::remove_file(CGRED_SOCKET) {
                Ok(()) => eprintln!("{TAG}: removed {CGRED_SOCKET} left by cgrulesengd"),
                Err(e) => eprintln!("{TAG}: could not remove {CGRED_SOCKET}: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------- /proc readings

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// utime + stime of the whole process (dead threads included), in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state(3) ... utime(14) stime(15), i.e. indexes 11 and 12.
    let field = |i: usize| -> anyhow::Result<u64> { f.get(i).context("short stat")?.parse().context("stat field") };
    Ok(field(11)? + field(12)?)
}

/// Voluntary + involuntary context switches summed over the live threads.
fn ctxt_switches(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|t| {
            let s = fs::read_to_string(t.path().join("status")).unwrap_or_default();
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

fn thread_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Forks since boot (`processes` in /proc/stat): the whole host's activity.
fn host_forks() -> u64 {
    fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("processes ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// CPU of a process over a window, as % of one core.
#[derive(Clone, Copy, Debug)]
struct CpuWindow {
    secs: f64,
    cpu_ms: f64,
    wakeups_per_s: f64,
    host_forks_per_s: f64,
}

impl CpuWindow {
    fn pct(&self) -> f64 {
        self.cpu_ms / 10.0 / self.secs
    }

    fn measure(pid: u32, d: Duration) -> anyhow::Result<Self> {
        let (c0, w0, f0, t0) = (cpu_ticks(pid)?, ctxt_switches(pid), host_forks(), Instant::now());
        sleep_checked(d)?;
        let (c1, w1, f1) = (cpu_ticks(pid)?, ctxt_switches(pid), host_forks());
        let secs = t0.elapsed().as_secs_f64();
        Ok(Self {
            secs,
            cpu_ms: (c1.saturating_sub(c0)) as f64 * 1000.0 / clk_tck() as f64,
            wakeups_per_s: w1.saturating_sub(w0) as f64 / secs,
            host_forks_per_s: f1.saturating_sub(f0) as f64 / secs,
        })
    }
}

// ---------------------------------------------------------------- the probe

/// How the probe recognises "governed".
#[derive(Clone)]
struct Expect {
    selector: &'static str,
    parent: String,
    leaf: String,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Spawn to the probe's first instruction.
    entry: u64,
    /// Spawn to the first read that showed the job cgroup; None = missed.
    governed: Option<u64>,
}

struct Prober {
    probe: PathBuf,
    timeout_ms: u64,
    linger_ms: u64,
}

impl Prober {
    fn spawn(&self, expect: Option<&Expect>) -> anyhow::Result<(Sample, String)> {
        let mut cmd = Command::new(&self.probe);
        if let Some(e) = expect {
            cmd.args([
                e.selector,
                &e.parent,
                &e.leaf,
                &self.timeout_ms.to_string(),
                &self.linger_ms.to_string(),
            ]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let t0 = monotonic_ns();
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.probe.display()))?;
        let out = child.wait_with_output().context("waiting for the probe")?;
        ensure!(
            out.status.success(),
            "probe failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(PROBE_PREFIX))
            .context("no probe line in its output")?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let at = |i: usize| -> anyhow::Result<u64> {
            let v: u64 = f.get(i).context("short probe line")?.parse().context("probe stamp")?;
            v.checked_sub(t0)
                .context("probe stamp earlier than the spawn (clock mismatch?)")
        };
        let entry = at(0)?;
        let (governed, note) = match f.get(1).copied() {
            Some("floor") => (Some(entry), String::new()),
            Some("governed") => (Some(at(2)?), String::new()),
            Some("missed") => (None, f.get(2).copied().unwrap_or("?").to_string()),
            _ => bail!("unexpected probe line '{line}'"),
        };
        Ok((Sample { entry, governed }, note))
    }
}

// ---------------------------------------------------------------- one run

#[derive(Default)]
struct DaemonCost {
    idle: Option<CpuWindow>,
    storm: Option<CpuWindow>,
    hwm_kib: Option<u64>,
    rss_kib: Option<u64>,
    threads: usize,
    /// From the ffrtmp log: attaches, failures, lost-event warnings.
    attached: Option<usize>,
    attach_failures: usize,
    lost_warnings: usize,
    /// ffrtmp's own split of each measured adoption (its event stream).
    split: Option<Split>,
}

/// exec → move start (ffrtmp's own work) and the move itself, in ns, per
/// adoption, from the `latency` of ffrtmp's `attached` events.
struct Split {
    before_move: Vec<u64>,
    moving: Vec<u64>,
}

impl Split {
    /// The attached events of `events` (JSON lines), the first `skip`
    /// (warm-up) left out.
    fn from_events(events: &str, skip: usize) -> Option<Split> {
        let mut split = Split {
            before_move: Vec::new(),
            moving: Vec::new(),
        };
        let latencies = events
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "attached")
            .filter_map(|e| {
                let l = &e["latency"];
                Some((l["before_move_us"].as_u64()?, l["move_us"].as_u64()?))
            })
            .skip(skip);
        for (before, moving) in latencies {
            split.before_move.push(before * 1000);
            split.moving.push(moving * 1000);
        }
        (!split.before_move.is_empty()).then_some(split)
    }
}

struct Measured {
    samples: Vec<Sample>,
    missed_paths: Vec<String>,
    warmup_tries: usize,
}

impl Measured {
    fn missed(&self) -> usize {
        self.samples.iter().filter(|s| s.governed.is_none()).count()
    }

    fn entry_stats(&self) -> Stats {
        Stats::of(&self.samples.iter().map(|s| s.entry).collect::<Vec<_>>())
    }

    /// Over the governed samples only; None if all were missed.
    fn governed_stats(&self) -> Option<Stats> {
        let g: Vec<u64> = self.samples.iter().filter_map(|s| s.governed).collect();
        (!g.is_empty()).then(|| Stats::of(&g))
    }
}

struct RunResult {
    gov: Gov,
    storm: bool,
    outcome: Result<Measured, String>,
    storm_rate: Option<f64>,
    cost: DaemonCost,
}

struct Ctx<'a> {
    opts: &'a Options,
    ffrtmp: PathBuf,
    prober: Prober,
    storm_bin: PathBuf,
    work: PathBuf,
    cgroup_root: String,
    cgred_group: String,
    hierarchies: &'a [Hierarchy],
    cgred_bin: Result<PathBuf, String>,
}

impl Ctx<'_> {
    /// The probe's expectation for a governor.
    fn expect(&self, gov: Gov) -> anyhow::Result<Option<Expect>> {
        if gov == Gov::Floor {
            return Ok(None);
        }
        let cpu = self
            .hierarchies
            .iter()
            .find(|h| h.controllers.split(',').any(|c| c == "cpu"));
        let (selector, h) = match cpu {
            Some(h) => ("cpu", h),
            None => (
                "unified",
                self.hierarchies
                    .iter()
                    .find(|h| h.controllers.is_empty())
                    .context("neither a v1 cpu hierarchy nor cgroup2 in /proc/self/cgroup")?,
            ),
        };
        let base = h.path.trim_end_matches('/');
        Ok(Some(match gov {
            Gov::Cgred => Expect {
                selector,
                parent: format!("{base}/{}", self.cgred_group),
                leaf: "-".into(),
            },
            _ => Expect {
                selector,
                parent: format!("{base}/{}", self.cgroup_root),
                leaf: format!("auto-{}-", self.opts.target_name),
            },
        }))
    }

    fn run(&self, gov: Gov, storm: bool) -> anyhow::Result<RunResult> {
        let label = format!("{}{}", gov.key(), if storm { " (storm)" } else { "" });
        eprintln!("{TAG}: ---- {label}");
        let mut result = RunResult {
            gov,
            storm,
            outcome: Err(String::new()),
            storm_rate: None,
            cost: DaemonCost::default(),
        };
        // Guards, dropped in reverse: the daemon stops before the rules file
        // is restored.
        let mut _env = CgredEnv::default();
        let log = self
            .work
            .join(format!("{}{}.log", gov.key(), if storm { "-storm" } else { "" }));
        let mut daemon = match self.start_governor(gov, &log, &mut _env) {
            Ok(d) => d,
            Err(why) => {
                eprintln!("{TAG}: {label}: unavailable: {why}");
                result.outcome = Err(why);
                return Ok(result);
            }
        };
        let expect = self.expect(gov)?;

        let mut storm_proc = None;
        if storm {
            storm_proc = Some(self.start_storm()?);
            sleep_checked(Duration::from_secs(1))?;
            if let Some(d) = &daemon
                && self.opts.storm_secs > 0
            {
                let w = CpuWindow::measure(d.pid(), Duration::from_secs(self.opts.storm_secs))?;
                eprintln!("{TAG}: {label}: daemon CPU under storm {:.3}% of a core", w.pct());
                result.cost.storm = Some(w);
            }
        }

        // Ready = the first governed warm-up probe (up to 10 tries), then the
        // warm-up proper.
        let mut tries = 0;
        if gov.is_daemon() {
            loop {
                check_interrupt()?;
                tries += 1;
                let (s, _) = self.prober.spawn(expect.as_ref())?;
                if s.governed.is_some() {
                    break;
                }
                if tries >= 10 || daemon.as_mut().is_some_and(Proc::exited) {
                    let why = format!("no warm-up probe governed in {tries} tries (see {})", log.display());
                    eprintln!("{TAG}: {label}: {why}");
                    result.outcome = Err(why);
                    return Ok(result);
                }
            }
        }
        let n = if gov == Gov::Poll {
            self.opts.poll_spawns
        } else {
            self.opts.spawns
        };
        let warmup = if gov == Gov::Poll {
            self.opts.warmup.min(2)
        } else {
            self.opts.warmup
        };
        let mut jitter = Jitter::new(self.opts.gap_jitter_ms);
        let mut samples = Vec::with_capacity(n);
        let mut missed_paths = Vec::new();
        for i in 0..warmup + n {
            check_interrupt()?;
            let gap = Duration::from_millis(self.opts.gap_ms) + jitter.next();
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
            let (s, note) = self.prober.spawn(expect.as_ref())?;
            if i >= warmup {
                if s.governed.is_none() {
                    eprintln!("{TAG}: {label}: MISSED spawn {} (its cgroup: {note})", i - warmup);
                    missed_paths.push(note);
                }
                samples.push(s);
            }
            if (i + 1) % 100 == 0 {
                eprintln!("{TAG}: {label}: {}/{} spawns", i + 1, warmup + n);
            }
        }
        if let Some(mut s) = storm_proc {
            result.storm_rate = Some(stop_storm(&mut s)?);
        }
        if let Some(d) = &daemon
            && !storm
            && self.opts.idle_secs > 0
        {
            eprintln!("{TAG}: {label}: idle for {} s", self.opts.idle_secs);
            let w = CpuWindow::measure(d.pid(), Duration::from_secs(self.opts.idle_secs))?;
            eprintln!(
                "{TAG}: {label}: daemon CPU idle {:.4}% of a core, {:.2} wake-ups/s",
                w.pct(),
                w.wakeups_per_s
            );
            result.cost.idle = Some(w);
        }
        if let Some(d) = daemon.as_mut() {
            let pid = d.pid();
            result.cost.hwm_kib = status_kib(pid, "VmHWM");
            result.cost.rss_kib = status_kib(pid, "VmRSS");
            result.cost.threads = thread_count(pid);
            if let Some(mut c) = d.stop() {
                let _ = c.wait();
            }
        }
        drop(daemon);
        if gov.backend().is_some() {
            let text = fs::read_to_string(&log).unwrap_or_default();
            result.cost.attached = Some(text.matches("✓ Attached to PID").count());
            result.cost.attach_failures = text.matches("could not attach").count();
            result.cost.lost_warnings = text.matches("event(s) lost").count();
            let events = fs::read_to_string(log.with_extension("events.jsonl")).unwrap_or_default();
            result.cost.split = Split::from_events(&events, tries + warmup);
        }
        let csv = self
            .work
            .join(format!("{}{}.csv", gov.key(), if storm { "-storm" } else { "" }));
        let mut text = String::from("spawn_to_main_ns,spawn_to_governed_ns\n");
        for x in &samples {
            let _ = writeln!(
                text,
                "{},{}",
                x.entry,
                x.governed.map_or(String::new(), |g| g.to_string())
            );
        }
        fs::write(&csv, text).with_context(|| format!("writing {}", csv.display()))?;
        let m = Measured {
            samples,
            missed_paths,
            warmup_tries: tries,
        };
        if let Some(st) = m.governed_stats() {
            eprintln!(
                "{TAG}: {label}: governed p50 {} p99 {} max {}, missed {}",
                ms(st.p50),
                ms(st.p99),
                ms(st.max),
                m.missed()
            );
        }
        result.outcome = Ok(m);
        Ok(result)
    }

    /// Starts the governor; Ok(None) for the floor; Err(reason) if unavailable.
    fn start_governor(&self, gov: Gov, log: &Path, env: &mut CgredEnv) -> Result<Option<Proc>, String> {
        let io = || -> Result<(Stdio, Stdio), String> {
            let f = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
            let g = f.try_clone().map_err(|e| e.to_string())?;
            Ok((Stdio::from(f), Stdio::from(g)))
        };
        match gov {
            Gov::Floor => Ok(None),
            Gov::Ebpf | Gov::Netlink | Gov::Poll => {
                let backend = gov.backend().expect("a backend");
                let mut cmd = Command::new(&self.ffrtmp);
                cmd.args(["watch", "--cgroup-root", &self.cgroup_root]).args([
                    "--target",
                    &self.opts.target_name,
                    "--backend",
                    backend,
                ]);
                // Its own split of each adoption's latency (written by a
                // thread of its own, never in the way of adoption). ffrtmp
                // appends to the file: start from an empty one, or an
                // earlier bench's adoptions would be counted with these.
                let events = log.with_extension("events.jsonl");
                match fs::remove_file(&events) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(format!("removing {}: {e}", events.display()));
                    }
                    _ => {}
                }
                cmd.arg("--events").arg(&events);
                if gov == Gov::Poll {
                    cmd.args(["--scan-interval", &self.opts.scan_interval]);
                }
                let (out, err) = io()?;
                cmd.env_remove("RUST_LOG")
                    .env_remove("FFRTMP_CGROUP_ROOT")
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err);
                let child = cmd.spawn().map_err(|e| format!("spawning ffrtmp: {e}"))?;
                let mut p = Proc {
                    child: Some(child),
                    what: format!("ffrtmp watch --backend {backend}"),
                    tag: TAG,
                };
                // Ready once it names its event source.
                let end = Instant::now() + Duration::from_secs(20);
                loop {
                    if INTERRUPTED.load(Ordering::SeqCst) {
                        return Err("interrupted".into());
                    }
                    let text = fs::read_to_string(log).unwrap_or_default();
                    if let Some(l) = text.lines().find(|l| l.contains("Event source:")) {
                        let src = l.split("Event source:").nth(1).unwrap_or("").trim();
                        if !src.starts_with(backend) {
                            return Err(format!("asked for {backend}, daemon says `Event source: {src}`"));
                        }
                        break;
                    }
                    if p.exited() {
                        let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                        return Err(format!("`ffrtmp watch --backend {backend}` exited: {}", last.trim()));
                    }
                    if Instant::now() > end {
                        return Err("no `Event source:` line within 20 s".into());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(Some(p))
            }
            Gov::Cgred => {
                let bin = self.cgred_bin.clone()?;
                if let Some(pid) = find_process("cgrulesengd") {
                    return Err(format!("another cgrulesengd is running (pid {pid}); not touching it"));
                }
                if let Ok(d) = fs::read_dir(CGRULES_DIR)
                    && d.flatten().next().is_some()
                {
                    return Err(format!(
                        "{CGRULES_DIR} has entries that cgrulesengd would also apply; not touching them"
                    ));
                }
                let dest = self.cgred_destination().map_err(|e| format!("{e:#}"))?;
                let rule = format!(
                    "# Written by `cargo xtask bench-watch` (pid {}); restored when it ends.\n\
                     # cpu controller only: never move processes in other hierarchies.\n\
                     *:{}\tcpu\t{dest}/\n",
                    std::process::id(),
                    self.opts.target_name
                );
                env.socket_before = Path::new(CGRED_SOCKET).exists();
                let backup = |name: &str| self.work.join(format!("{name}.orig"));
                env.files.push(
                    FileRestore::replace(Path::new(CGRULES_CONF), &rule, &backup("cgrules.conf"))
                        .map_err(|e| format!("{e:#}"))?,
                );
                // cgrulesengd 2.0 exits at start-up without these (it reads
                // templates from them); create them empty only if missing.
                if !Path::new(CGCONFIG_CONF).exists() {
                    env.files.push(
                        FileRestore::replace(Path::new(CGCONFIG_CONF), "", &backup("cgconfig.conf"))
                            .map_err(|e| format!("{e:#}"))?,
                    );
                }
                if !Path::new(CGCONFIG_DIR).exists() {
                    fs::create_dir(CGCONFIG_DIR).map_err(|e| format!("creating {CGCONFIG_DIR}: {e}"))?;
                    env.dir_created = Some(PathBuf::from(CGCONFIG_DIR));
                }
                let (out, err) = io()?;
                let child = Command::new(bin)
                    .args(["-n", "-Q"])
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .map_err(|e| format!("spawning cgrulesengd: {e}"))?;
                Ok(Some(Proc {
                    child: Some(child),
                    what: "cgrulesengd".into(),
                    tag: TAG,
                }))
            }
        }
    }

    /// The cgrulesengd rule's destination: our cgred group relative to the
    /// cpu hierarchy's mount point (v1), or the cgroup2 mount (v2). The group
    /// itself is created here (cgrulesengd does not create it).
    fn cgred_destination(&self) -> anyhow::Result<String> {
        let mounts = cgroup_mounts()?;
        let (h, mount) = match self
            .hierarchies
            .iter()
            .find(|h| h.controllers.split(',').any(|c| c == "cpu"))
        {
            Some(h) => {
                let m = mounts
                    .iter()
                    .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == "cpu"))
                    .context("no cgroup v1 mount with the cpu controller")?;
                (h, m)
            }
            None => {
                let h = self
                    .hierarchies
                    .iter()
                    .find(|h| h.controllers.is_empty())
                    .context("no cgroup2 entry")?;
                (
                    h,
                    mounts
                        .iter()
                        .find(|m| m.fstype == "cgroup2")
                        .context("no cgroup2 mount")?,
                )
            }
        };
        let dir = h.dir.join(&self.cgred_group);
        if !dir.is_dir() {
            fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let rel = dir
            .strip_prefix(&mount.point)
            .with_context(|| format!("{} is not under {}", dir.display(), mount.point.display()))?;
        Ok(format!("/{}", rel.display()).replace("//", "/"))
    }

    fn start_storm(&self) -> anyhow::Result<Proc> {
        let child = Command::new(&self.storm_bin)
            .args([
                &self.opts.storm_rate.to_string(),
                &self.opts.storm_workers.to_string(),
                "/bin/true",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning the storm helper")?;
        Ok(Proc {
            child: Some(child),
            what: "storm helper".into(),
            tag: TAG,
        })
    }
}

/// The PID of a process with this comm, if any.
fn find_process(comm: &str) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let c = fs::read_to_string(e.path().join("comm")).ok()?;
        (c.trim() == comm).then_some(pid)
    })
}

/// cgrulesengd's path; installs cgroup-tools if missing and allowed.
pub fn find_cgrulesengd(install: bool) -> Result<PathBuf, String> {
    let find = || {
        ["/usr/sbin/cgrulesengd", "/sbin/cgrulesengd", "/usr/bin/cgrulesengd"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    if !install {
        return Err("cgrulesengd not installed (--no-install)".into());
    }
    eprintln!("{TAG}: apt-get install -y cgroup-tools");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "cgroup-tools"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    match find() {
        Some(p) => Ok(p),
        None if ok => Err("cgroup-tools installed but cgrulesengd not found".into()),
        None => Err("cgrulesengd missing and `apt-get install -y cgroup-tools` failed".into()),
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cgred_version() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "cgroup-tools"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown version".into())
}

// ---------------------------------------------------------------- main

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let Some(opts) = parse_args(args)? else {
        return Ok(());
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "must run as root: the governors create cgroups and move processes"
    );
    install_signal_handlers();

    let root = workspace_root();
    let ffrtmp = ffrtmp_binary(opts.ffrtmp.as_deref(), &root, TAG)?;
    let work = target_dir(&root).join("bench-watch");
    let (probe_bin, linkage) = c_helper(&work, "probe", PROBE_C, opts.prebuilt, TAG)?;
    let (storm_bin, _) = c_helper(&work, "storm", STORM_C, opts.prebuilt, TAG)?;
    // The probe under the target's name, in a directory of its own.
    let probe_dir = work.join("targets");
    fs::create_dir_all(&probe_dir)?;
    let probe = probe_dir.join(&opts.target_name);
    fs::copy(&probe_bin, &probe).with_context(|| format!("copying the probe to {}", probe.display()))?;

    let cgroup_root = format!("ffrtmp-bench-{}", std::process::id());
    let cgred_group = format!("{cgroup_root}-cgred");
    let hierarchies = own_hierarchies()?;
    for h in &hierarchies {
        for name in [&cgroup_root, &cgred_group] {
            let d = h.dir.join(name);
            ensure!(
                !d.exists(),
                "{} already exists; refusing to use it (left over from an earlier run?)",
                d.display()
            );
        }
    }
    let guard_root = CleanupGuard {
        hierarchies: &hierarchies,
        name: cgroup_root.clone(),
        tag: TAG,
        done: false,
    };
    let guard_cgred = CleanupGuard {
        hierarchies: &hierarchies,
        name: cgred_group.clone(),
        tag: TAG,
        done: false,
    };
    let cgred_bin = if opts.only.contains(&Gov::Cgred) {
        find_cgrulesengd(opts.install)
    } else {
        Err("not run (--only)".into())
    };

    let ctx = Ctx {
        opts: &opts,
        ffrtmp,
        prober: Prober {
            probe,
            timeout_ms: opts.timeout_ms,
            linger_ms: opts.linger_ms,
        },
        storm_bin,
        work: work.clone(),
        cgroup_root: cgroup_root.clone(),
        cgred_group,
        hierarchies: &hierarchies,
        cgred_bin,
    };
    eprintln!(
        "{TAG}: target name {}, cgroup root {cgroup_root} (relative), runs: {}{}",
        opts.target_name,
        opts.only.iter().map(|g| g.key()).collect::<Vec<_>>().join(", "),
        if opts.storm { ", each again under the storm" } else { "" }
    );
    let started = Instant::now();
    let load_before = loadavg();
    let mut results = Vec::new();
    for storm in [false, true] {
        if storm && !opts.storm {
            continue;
        }
        for gov in ALL_GOVS {
            if opts.only.contains(&gov) {
                results.push(ctx.run(gov, storm)?);
            }
        }
    }
    let mut leftovers = guard_root.finish();
    leftovers.extend(guard_cgred.finish());
    eprintln!("{TAG}: done in {:.0} s", started.elapsed().as_secs_f64());

    let machine = Machine::collect(&root, linkage, "bench-watch", args);
    let info = RunInfo {
        cgroup_root,
        load: (load_before, loadavg()),
        cgred_version: cgred_version(),
        leftovers,
    };
    let section = render(&results, &opts, &machine, &info);
    print!("{section}");
    let plots = if opts.write { root.join("docs") } else { work.clone() };
    write_plots(&results, &opts, &plots)?;
    if opts.write {
        write_section(&root, &section, MARK_START, MARK_END, TAG)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- report

/// The file names of the CDF plots, beside docs/BENCHMARKS.md.
fn plot_name(storm: bool) -> &'static str {
    if storm {
        "bench-watch-storm.svg"
    } else {
        "bench-watch-quiet.svg"
    }
}

/// One spawn-to-governed CDF per host state, every governor of the run on it.
fn write_plots(results: &[RunResult], o: &Options, dir: &Path) -> anyhow::Result<()> {
    for storm in [false, true] {
        let series: Vec<cdf_plot::Series> = results
            .iter()
            .filter(|r| r.storm == storm)
            .filter_map(|r| {
                let m = r.outcome.as_ref().ok()?;
                Some(cdf_plot::Series {
                    label: label(r.gov, o),
                    samples_ns: m.samples.iter().filter_map(|s| s.governed).collect(),
                })
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let title = format!(
            "spawn → governed, {}",
            if storm {
                format!("under a {} execs/s storm", o.storm_rate)
            } else {
                "quiet host".to_string()
            }
        );
        let path = dir.join(plot_name(storm));
        fs::write(&path, cdf_plot::render(&title, &series)).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("{TAG}: wrote {}", path.display());
    }
    Ok(())
}

struct RunInfo {
    cgroup_root: String,
    /// /proc/loadavg before and after: other work on the host adds noise.
    load: (String, String),
    cgred_version: String,
    leftovers: Vec<String>,
}

fn label(gov: Gov, o: &Options) -> String {
    match gov {
        Gov::Floor => "floor (no governor)".into(),
        Gov::Ebpf => "ffrtmp `ebpf`".into(),
        Gov::Netlink => "ffrtmp `netlink`".into(),
        Gov::Poll => format!("ffrtmp `poll` (`--scan-interval {}`)", o.scan_interval),
        Gov::Cgred => "cgrulesengd".into(),
    }
}

fn find(results: &[RunResult], gov: Gov, storm: bool) -> Option<&RunResult> {
    results.iter().find(|r| r.gov == gov && r.storm == storm)
}

fn p99_of(results: &[RunResult], gov: Gov, storm: bool) -> Option<u64> {
    find(results, gov, storm)?
        .outcome
        .as_ref()
        .ok()?
        .governed_stats()
        .map(|s| s.p99)
}

fn pct(p: f64) -> String {
    if p < 0.1 {
        format!("{p:.4}%")
    } else {
        format!("{p:.2}%")
    }
}

/// A ratio with sensible precision: 129×, 2.2×, 0.04×.
fn times(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}×")
    } else if r >= 1.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// ffrtmp's own account of each measured adoption: exec → the start of the
/// move (its own work: event delivery, reading the process, the job
/// cgroup and its limits) and the move itself (the kernel's migration).
fn split_table(w: &mut String, results: &[RunResult], o: &Options) {
    let rows: Vec<&RunResult> = results.iter().filter(|r| r.cost.split.is_some()).collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "\n### Where ffrtmp's latency goes\n\nFrom the `latency` of ffrtmp's own `attached` \
         events (`--events`; docs/events.md), for the measured spawns above (warm-up left out): \
         *before the move* is the kernel's exec timestamp → the start of the `cgroup.procs` \
         (v1: `cgroup.procs` of each hierarchy) write, ffrtmp's own work; *move* is that write, \
         the kernel's migration with its lock's wait. Microsecond resolution.\n"
    );
    let _ = writeln!(
        w,
        "| governor | adoptions | before the move p50 | p99 | move p50 | p99 | own share of p50 |"
    );
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        let split = r.cost.split.as_ref().expect("filtered");
        let (own, moving) = (Stats::of(&split.before_move), Stats::of(&split.moving));
        let share = own.p50 as f64 / (own.p50 + moving.p50).max(1) as f64;
        let _ = writeln!(
            w,
            "| {}{} | {} | {} | {} | {} | {} | {:.0}% |",
            label(r.gov, o),
            if r.storm { " (storm)" } else { "" },
            split.before_move.len(),
            ms(own.p50),
            ms(own.p99),
            ms(moving.p50),
            ms(moving.p99),
            share * 100.0
        );
    }
}

fn latency_table(w: &mut String, results: &[RunResult], o: &Options, storm: bool) {
    let _ = writeln!(
        w,
        "| governor | spawns | missed | spawn → main p50 | spawn → governed p50 | p90 | p99 | max | \
         cgrulesengd p99 ÷ this p99 |{}",
        if storm { " storm execs/s |" } else { "" }
    );
    let _ = writeln!(
        w,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |{}",
        if storm { " ---: |" } else { "" }
    );
    let cgred = p99_of(results, Gov::Cgred, storm);
    for r in results.iter().filter(|r| r.storm == storm) {
        let rate = match (storm, r.storm_rate) {
            (false, _) => String::new(),
            (true, Some(x)) => format!(" {x:.0} |"),
            (true, None) => " – |".into(),
        };
        match &r.outcome {
            Err(why) => {
                let _ = writeln!(
                    w,
                    "| {} | – | – | – | **unavailable**: {} | | | | |{rate}",
                    label(r.gov, o),
                    why.replace('|', "\\|")
                );
            }
            Ok(m) => {
                let e = m.entry_stats();
                let (p50, p90, p99, max, ratio) = match m.governed_stats() {
                    Some(g) => (
                        ms(g.p50),
                        ms(g.p90),
                        ms(g.p99),
                        ms(g.max),
                        cgred.map_or("–".into(), |c| times(c as f64 / g.p99.max(1) as f64)),
                    ),
                    None => Default::default(),
                };
                let missed = if r.gov == Gov::Floor {
                    "–".to_string()
                } else if m.missed() > 0 {
                    format!("**{}**", m.missed())
                } else {
                    "0".into()
                };
                let _ = writeln!(
                    w,
                    "| {} | {} | {missed} | {} | {p50} | {p90} | {p99} | {max} | {ratio} |{rate}",
                    label(r.gov, o),
                    m.samples.len(),
                    ms(e.p50),
                );
            }
        }
    }
}

enum Status {
    Met,
    NotMet,
    NotMeasured,
}

impl Status {
    fn of(ok: bool) -> Self {
        if ok { Status::Met } else { Status::NotMet }
    }

    fn text(&self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::NotMet => "**not met**",
            Status::NotMeasured => "not measured",
        }
    }
}

fn goals(results: &[RunResult], o: &Options) -> Vec<(String, String, Status)> {
    let mut g = Vec::new();
    let conds: &[bool] = if o.storm { &[false, true] } else { &[false] };
    let why_not = |gov: Gov, storm: bool| -> String {
        match find(results, gov, storm).map(|r| &r.outcome) {
            Some(Err(why)) => format!("{} unavailable: {why}", gov.key()),
            Some(Ok(_)) => format!("{}: every probe missed", gov.key()),
            None => format!("{} not run", gov.key()),
        }
    };
    for &storm in conds {
        let when = if storm { "storm" } else { "quiet" };
        let floor = p99_of(results, Gov::Floor, storm);
        let cgred = p99_of(results, Gov::Cgred, storm);
        for (gov, limit) in [
            (Gov::Ebpf, GOAL_EBPF_OVER_FLOOR_NS),
            (Gov::Netlink, GOAL_NETLINK_OVER_FLOOR_NS),
        ] {
            let goal = format!("{} p99 within {} of the floor's p99 ({when})", gov.key(), ms(limit));
            match (p99_of(results, gov, storm), floor) {
                (Some(p), Some(f)) => {
                    let over = p as i64 - f as i64;
                    let vs = cgred.map_or(String::new(), |c| {
                        format!(
                            "; cgrulesengd p99 {} is {} this",
                            ms(c),
                            times(c as f64 / p.max(1) as f64)
                        )
                    });
                    g.push((
                        goal,
                        format!(
                            "{} − {} = {}{:.3} ms{vs}",
                            ms(p),
                            ms(f),
                            if over >= 0 { "+" } else { "−" },
                            over.unsigned_abs() as f64 / 1e6
                        ),
                        Status::of(over <= limit as i64),
                    ));
                }
                (None, _) => g.push((goal, why_not(gov, storm), Status::NotMeasured)),
                (_, None) => g.push((goal, why_not(Gov::Floor, storm), Status::NotMeasured)),
            }
        }
        let goal = format!("ebpf p99 ≥ {GOAL_EBPF_VS_CGRED:.0}× lower than cgrulesengd's p99 ({when})");
        match (p99_of(results, Gov::Ebpf, storm), cgred) {
            (Some(e), Some(c)) => {
                let r = c as f64 / e.max(1) as f64;
                g.push((
                    goal,
                    format!("{} ÷ {} = {}", ms(c), ms(e), times(r)),
                    Status::of(r >= GOAL_EBPF_VS_CGRED),
                ));
            }
            (None, _) => g.push((goal, why_not(Gov::Ebpf, storm), Status::NotMeasured)),
            (_, None) => g.push((goal, why_not(Gov::Cgred, storm), Status::NotMeasured)),
        }
    }
    // Missed targets, every run.
    let mut missed = Vec::new();
    let mut total = 0;
    for r in results.iter().filter(|r| r.gov != Gov::Floor) {
        if let Ok(m) = &r.outcome {
            total += m.missed();
            missed.push(format!(
                "{}{} {}",
                r.gov.key(),
                if r.storm { " (storm)" } else { "" },
                m.missed()
            ));
        }
    }
    g.push((
        "zero missed targets in every run".into(),
        if missed.is_empty() {
            "no run measured".into()
        } else {
            missed.join(", ")
        },
        if missed.is_empty() {
            Status::NotMeasured
        } else {
            Status::of(total == 0)
        },
    ));
    if o.storm {
        let s = find(results, Gov::Ebpf, true).map(|r| (&r.outcome, r.cost.storm, r.storm_rate));
        let goal = format!("ebpf daemon CPU during the storm ≤ {GOAL_STORM_CPU_PCT}% of a core");
        match s {
            Some((Ok(_), Some(w), rate)) => g.push((
                goal,
                format!(
                    "{} over {:.0} s at {:.0} execs/s",
                    pct(w.pct()),
                    w.secs,
                    rate.unwrap_or(0.0)
                ),
                Status::of(w.pct() <= GOAL_STORM_CPU_PCT),
            )),
            _ => g.push((goal, why_not(Gov::Ebpf, true), Status::NotMeasured)),
        }
        let rates: Vec<f64> = results.iter().filter_map(|r| r.storm_rate).collect();
        if !rates.is_empty() {
            let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
            g.push((
                format!("storm of ≥ {STORM_MIN_RATE:.0} non-target execs/s (bench precondition)"),
                format!("lowest run: {lo:.0} execs/s"),
                Status::of(lo >= STORM_MIN_RATE),
            ));
        }
    }
    for gov in [Gov::Ebpf, Gov::Netlink, Gov::Poll] {
        let idle = find(results, gov, false).and_then(|r| r.cost.idle);
        let goal = format!("{} daemon idle CPU ≤ {GOAL_IDLE_CPU_PCT}% of a core", gov.key());
        match idle {
            Some(w) => g.push((
                goal,
                format!(
                    "{} ({:.0} ms in {:.0} s{})",
                    pct(w.pct()),
                    w.cpu_ms,
                    w.secs,
                    if gov == Gov::Poll {
                        format!(", scanning every {}", o.scan_interval)
                    } else {
                        String::new()
                    }
                ),
                Status::of(w.pct() <= GOAL_IDLE_CPU_PCT),
            )),
            None => g.push((goal, why_not(gov, false), Status::NotMeasured)),
        }
    }
    for gov in [Gov::Ebpf, Gov::Netlink, Gov::Poll] {
        let hwm = results
            .iter()
            .filter(|r| r.gov == gov)
            .filter_map(|r| r.cost.hwm_kib)
            .max();
        let goal = format!("{} daemon RSS ≤ {}", gov.key(), mib(GOAL_RSS_KIB));
        match hwm {
            Some(k) => g.push((goal, format!("peak VmHWM {}", mib(k)), Status::of(k <= GOAL_RSS_KIB))),
            None => g.push((goal, why_not(gov, false), Status::NotMeasured)),
        }
    }
    g.extend(ahead_of_cgred(results, conds, &why_not));
    if favordynmods_on() {
        g.extend(margin_goals(results, conds, &why_not));
    }
    g.extend(own_work_goals(results, conds));
    g
}

/// Issue 17, favordynmods on (no grace period to wait for): ebpf's margin
/// over the floor at p50 at most half of cgrulesengd's. (Its p99 within
/// 1 ms of the floor's is the general goal above.)
fn margin_goals(
    results: &[RunResult],
    conds: &[bool],
    why_not: &dyn Fn(Gov, bool) -> String,
) -> Vec<(String, String, Status)> {
    let p50 = |gov: Gov, storm: bool| {
        find(results, gov, storm)
            .and_then(|r| r.outcome.as_ref().ok())
            .and_then(Measured::governed_stats)
            .map(|s| s.p50 as i64)
    };
    let mut g = Vec::new();
    for &storm in conds {
        let when = if storm { "storm" } else { "quiet" };
        let goal = format!(
            "favordynmods on: ebpf p50 margin over the floor ≤ {GOAL_MARGIN_SHARE_OF_CGRED}× cgrulesengd's ({when})"
        );
        let signed = |ns: i64| {
            format!(
                "{}{:.3} ms",
                if ns >= 0 { "+" } else { "−" },
                ns.unsigned_abs() as f64 / 1e6
            )
        };
        match (p50(Gov::Floor, storm), p50(Gov::Ebpf, storm), p50(Gov::Cgred, storm)) {
            (Some(f), Some(e), Some(c)) => g.push((
                goal,
                format!("ebpf {} against cgrulesengd {}", signed(e - f), signed(c - f)),
                Status::of((e - f) as f64 <= GOAL_MARGIN_SHARE_OF_CGRED * (c - f) as f64),
            )),
            (None, _, _) => g.push((goal, why_not(Gov::Floor, storm), Status::NotMeasured)),
            (_, None, _) => g.push((goal, why_not(Gov::Ebpf, storm), Status::NotMeasured)),
            (_, _, None) => g.push((goal, why_not(Gov::Cgred, storm), Status::NotMeasured)),
        }
    }
    g
}

/// Issue 17: ffrtmp ebpf no slower than cgrulesengd, p50 and p99, in
/// every run (quiet, storm).
fn ahead_of_cgred(
    results: &[RunResult],
    conds: &[bool],
    why_not: &dyn Fn(Gov, bool) -> String,
) -> Vec<(String, String, Status)> {
    let mut g = Vec::new();
    let stats = |gov: Gov, storm: bool| {
        find(results, gov, storm)
            .and_then(|r| r.outcome.as_ref().ok())
            .and_then(Measured::governed_stats)
    };
    for &storm in conds {
        let when = if storm { "storm" } else { "quiet" };
        let goal = format!("ebpf p50 and p99 ≤ cgrulesengd's ({when})");
        match (stats(Gov::Ebpf, storm), stats(Gov::Cgred, storm)) {
            (Some(e), Some(c)) => g.push((
                goal,
                format!(
                    "p50 {} vs {} ({}), p99 {} vs {} ({})",
                    ms(e.p50),
                    ms(c.p50),
                    times(c.p50 as f64 / e.p50.max(1) as f64),
                    ms(e.p99),
                    ms(c.p99),
                    times(c.p99 as f64 / e.p99.max(1) as f64)
                ),
                Status::of(e.p50 <= c.p50 && e.p99 <= c.p99),
            )),
            (None, _) => g.push((goal, why_not(Gov::Ebpf, storm), Status::NotMeasured)),
            (_, None) => g.push((goal, why_not(Gov::Cgred, storm), Status::NotMeasured)),
        }
    }
    g
}

/// Issue 17: ffrtmp's own work before the move ≤ 0.3 ms p50, ≤ 1 ms p99.
fn own_work_goals(results: &[RunResult], conds: &[bool]) -> Vec<(String, String, Status)> {
    let mut g = Vec::new();
    for &storm in conds {
        let when = if storm { "storm" } else { "quiet" };
        for gov in [Gov::Ebpf, Gov::Netlink] {
            let goal = format!(
                "{} own work before the move ≤ {} p50, ≤ {} p99 ({when})",
                gov.key(),
                ms(GOAL_OWN_P50_NS),
                ms(GOAL_OWN_P99_NS)
            );
            match find(results, gov, storm).and_then(|r| r.cost.split.as_ref()) {
                Some(split) => {
                    let own = Stats::of(&split.before_move);
                    g.push((
                        goal,
                        format!("p50 {}, p99 {}", ms(own.p50), ms(own.p99)),
                        Status::of(own.p50 <= GOAL_OWN_P50_NS && own.p99 <= GOAL_OWN_P99_NS),
                    ));
                }
                None => g.push((goal, format!("{} not run or no split", gov.key()), Status::NotMeasured)),
            }
        }
    }
    g
}

fn render(results: &[RunResult], o: &Options, m: &Machine, info: &RunInfo) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "{MARK_START}");
    let _ = writeln!(w, "## `watch`: spawn-to-governed latency and daemon cost\n");
    let startup = if m.probe == "static" {
        "a static C binary (`cc -O2 -static`)"
    } else {
        "a dynamically linked C binary (`cc -O2`)"
    };
    let pacing = match (o.gap_ms, o.gap_jitter_ms) {
        (0, 0) => "back to back".to_string(),
        (gap, 0) => format!("each {gap} ms after the previous probe exited"),
        (0, j) => format!(
            "0–{j} ms (one pseudo-random sequence, the same for every governor) after the previous probe exited"
        ),
        (gap, j) => format!(
            "each {gap} ms plus 0–{j} ms (one pseudo-random sequence, the same for every governor) \
             after the previous probe exited"
        ),
    };
    let _ = writeln!(
        w,
        "Seen from inside the target. The parent reads CLOCK_MONOTONIC right before `spawn()` of \
         a probe ({startup}) whose file name is the target `{name}`; the probe stamps the entry \
         of `main`, then reads `/proc/self/cgroup` (one fd, `pread` at offset 0) every 20 µs \
         (a nanosleep between reads: a reader that never leaves the kernel delays the RCU grace \
         period every cgroup move waits for, by 2-3× here) until the cpu line (v1) or the `0::` line (v2) shows its job cgroup — `…/{root}/auto-{name}-<pid>` \
         for ffrtmp, the rule's group `{root}-cgred` for cgrulesengd — and stamps again; it \
         reports **missed** if that has not happened {timeout} ms after its start; once governed \
         it stays {linger} ms more, like a real target, so the governor finishes its work. \
         *spawn → main* is the time to the probe's first instruction; the **floor** row \
         (no governor) is the best any governor could do. Spawns are sequential, {pacing}, \
         after {warmup} discarded warm-up spawns and once a first warm-up probe was governed. \
         The target name is unique per run so no other ffrtmp on the host reacts to it (ffrtmp \
         and cgrulesengd match it exactly like `ffmpeg`: whole basename, ≤ 15 bytes). ffrtmp runs \
         as `ffrtmp watch --cgroup-root {root} --target {name} --backend B` (relative root), with \
         default limits; the poll backend with `--scan-interval {scan}` (the default 10s would \
         make 500 spawns take over 40 min) and {poll} spawns. cgrulesengd (cgroup-tools \
         {cgv}) runs as `cgrulesengd -n -Q` with `/etc/cgrules.conf` holding only \
         `*:{name} cpu <group>/` (the group lives in the cpu hierarchy, under this process's \
         own cpu cgroup); the file is restored afterwards.\n",
        name = o.target_name,
        root = info.cgroup_root,
        timeout = o.timeout_ms,
        linger = o.linger_ms,
        warmup = o.warmup,
        scan = o.scan_interval,
        poll = o.poll_spawns,
        cgv = info.cgred_version,
    );
    let _ = writeln!(w, "### Quiet host\n");
    latency_table(w, results, o, false);
    let _ = writeln!(w, "\n![spawn → governed CDF, quiet host]({})", plot_name(false));
    if o.storm {
        let _ = writeln!(
            w,
            "\n### Under an exec storm\n\n{} processes each `vfork`+`exec` `/bin/true` on an absolute \
             schedule, {} execs/s asked in total; the rate achieved in each run is in the last \
             column (successful execs over the helper's lifetime).\n",
            o.storm_workers, o.storm_rate
        );
        latency_table(w, results, o, true);
        let _ = writeln!(w, "\n![spawn → governed CDF, exec storm]({})", plot_name(true));
    }
    split_table(w, results, o);
    let _ = writeln!(
        w,
        "\n### Daemon cost\n\nCPU is utime+stime from `/proc/<pid>/stat` (all threads, {} ticks/s): \
         *idle* over {} s right after the quiet run's spawns, with no target starting; *storm* over {} s \
         of storm alone, before its spawns. Wake-ups are context switches of the live threads \
         (`/proc/<pid>/task/*/status`); host forks/s (`processes` in `/proc/stat`) shows what \
         else ran on the host meanwhile. RSS from `/proc/<pid>/status` at the end of each run \
         (VmHWM = peak).\n",
        clk_tck(),
        o.idle_secs,
        o.storm_secs
    );
    let _ = writeln!(
        w,
        "| daemon | idle CPU | idle wake-ups/s | host forks/s (idle) | storm CPU | VmHWM | VmRSS | threads | \
         attached / lost-event warnings / attach failures |"
    );
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for gov in ALL_GOVS.iter().copied().filter(|g| g.is_daemon()) {
        let quiet = find(results, gov, false);
        let storm = find(results, gov, true);
        let (Some(q), st) = (quiet.or(storm), storm) else {
            continue;
        };
        if q.outcome.is_err() && st.is_none_or(|s| s.outcome.is_err()) {
            let _ = writeln!(w, "| {} | unavailable | | | | | | | |", label(gov, o));
            continue;
        }
        let idle = quiet.and_then(|r| r.cost.idle);
        let stc = storm.and_then(|r| r.cost.storm);
        let hwm = [quiet, storm].iter().flatten().filter_map(|r| r.cost.hwm_kib).max();
        let rss = storm.or(quiet).and_then(|r| r.cost.rss_kib);
        let threads = [quiet, storm]
            .iter()
            .flatten()
            .map(|r| r.cost.threads)
            .max()
            .unwrap_or(0);
        let log = [quiet, storm]
            .iter()
            .flatten()
            .filter_map(|r| {
                r.cost.attached.map(|a| {
                    format!(
                        "{}: {a} / {} / {}",
                        if r.storm { "storm" } else { "quiet" },
                        r.cost.lost_warnings,
                        r.cost.attach_failures
                    )
                })
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            label(gov, o),
            idle.map_or("–".into(), |x| format!(
                "{} ({:.0} ms / {:.0} s)",
                pct(x.pct()),
                x.cpu_ms,
                x.secs
            )),
            idle.map_or("–".into(), |x| format!("{:.2}", x.wakeups_per_s)),
            idle.map_or("–".into(), |x| format!("{:.1}", x.host_forks_per_s)),
            stc.map_or("–".into(), |x| format!(
                "{} ({:.0} ms / {:.0} s)",
                pct(x.pct()),
                x.cpu_ms,
                x.secs
            )),
            hwm.map_or("–".into(), mib),
            rss.map_or("–".into(), mib),
            threads,
            if log.is_empty() { "–".into() } else { log },
        );
    }
    let missed: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let m = r.outcome.as_ref().ok()?;
            (!m.missed_paths.is_empty()).then(|| {
                let mut p = m.missed_paths.clone();
                p.sort();
                p.dedup();
                format!(
                    "{}{}: {} missed; their cpu cgroup at the timeout: {}",
                    r.gov.key(),
                    if r.storm { " (storm)" } else { "" },
                    m.missed_paths.len(),
                    p.iter()
                        .take(5)
                        .map(|x| format!("`{x}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect();
    if !missed.is_empty() {
        let _ = writeln!(w, "\nMissed targets:\n");
        for x in missed {
            let _ = writeln!(w, "- {x}");
        }
    }
    let slow_ready: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let m = r.outcome.as_ref().ok()?;
            (m.warmup_tries > 1).then(|| format!("{} needed {} warm-up tries", r.gov.key(), m.warmup_tries))
        })
        .collect();
    if !slow_ready.is_empty() {
        let _ = writeln!(w, "\nReadiness: {}.", slow_ready.join("; "));
    }
    let _ = writeln!(
        w,
        "\n### Goals (issues 3 and 17)\n\nRatios are against cgrulesengd measured in the same run.\n"
    );
    let _ = writeln!(w, "| goal | measured | status |");
    let _ = writeln!(w, "| --- | --- | --- |");
    for (goal, measured, status) in goals(results, o) {
        let _ = writeln!(w, "| {goal} | {} | {} |", measured.replace('|', "\\|"), status.text());
    }
    let _ = writeln!(w, "\nMachine and run:\n");
    let _ = writeln!(w, "- date: {} (UTC)", m.date);
    let _ = writeln!(w, "- kernel (`uname -r`): {}", m.kernel);
    let _ = writeln!(w, "- CPUs (`nproc`): {}; model: {}", m.nproc, m.cpu);
    let _ = writeln!(w, "- cgroups: {}", m.cgroups);
    let _ = writeln!(w, "- ffrtmp: {}", m.ffrtmp(o.ffrtmp.as_deref()));
    let _ = writeln!(w, "- cgrulesengd: cgroup-tools {}", info.cgred_version);
    let _ = writeln!(
        w,
        "- load average (1/5/15 min) before → after the run: {} → {}",
        info.load.0, info.load.1
    );
    let _ = writeln!(w, "- command (as root): `{}`", m.command);
    if !info.leftovers.is_empty() {
        let _ = writeln!(w, "- cleanup after the run: {}", info.leftovers.join("; "));
    }
    let _ = writeln!(w, "{MARK_END}");
    s
}

/// The extra sleep of `--gap-jitter-ms`: 0..=max ms in 10 µs steps from a
/// fixed-seed xorshift, so every governor's run sees the same sequence.
/// Without it the spawns lock onto the kernel's tick: each probe exits a
/// fixed time after a grace period ends (which is tick-aligned), and so the
/// next one's exec always falls at the same point between two ticks.
struct Jitter {
    max_10us: u64,
    state: u64,
}

impl Jitter {
    fn new(max_ms: u64) -> Jitter {
        Jitter {
            max_10us: max_ms * 100,
            state: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn next(&mut self) -> Duration {
        if self.max_10us == 0 {
            return Duration::ZERO;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        Duration::from_micros(self.state % (self.max_10us + 1) * 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_jitter_is_bounded_repeatable_and_spread() {
        assert_eq!(Jitter::new(0).next(), Duration::ZERO);
        let draw = || {
            let mut j = Jitter::new(8);
            (0..1000).map(|_| j.next()).collect::<Vec<_>>()
        };
        let (a, b) = (draw(), draw());
        assert_eq!(a, b, "every governor sees the same sequence");
        assert!(a.iter().all(|d| *d <= Duration::from_millis(8)));
        // Spread over the whole range, so the exec's place between two
        // ticks (4 ms at HZ=250) is not fixed: every 1 ms bucket is hit.
        for ms in 0..8 {
            let n = a.iter().filter(|d| d.as_millis() == ms).count();
            assert!(n > 50, "{n} of 1000 draws in [{ms}, {}) ms", ms + 1);
        }
    }

    #[test]
    fn args_defaults_and_errors() {
        let o = parse_args(&[]).unwrap().unwrap();
        assert_eq!((o.spawns, o.poll_spawns, o.idle_secs), (500, 200, 60));
        assert_eq!(o.only, ALL_GOVS);
        assert!(o.target_name.len() <= 15);
        let a: Vec<String> = ["--spawns=20", "--only", "floor,netlink", "--no-storm", "--write"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = parse_args(&a).unwrap().unwrap();
        assert_eq!((o.spawns, o.storm, o.write), (20, false, true));
        assert_eq!(o.only, [Gov::Floor, Gov::Netlink]);
        assert!(parse_args(&["--only=bogus".to_string()]).is_err());
        assert!(parse_args(&["--target-name=a/b".to_string()]).is_err());
        assert!(parse_args(&["--target-name=abcdefghijklmnop".to_string()]).is_err());
    }

    #[test]
    fn the_split_is_read_from_attached_events_after_the_warm_up() {
        let events = [
            r#"{"event":"started","backend":"ebpf"}"#,
            r#"{"event":"attached","latency":{"total_us":9,"before_move_us":5,"move_us":4}}"#,
            r#"{"event":"attached","reattached":true}"#,
            r#"{"event":"attached","latency":{"total_us":30,"before_move_us":10,"move_us":20}}"#,
            "not json",
        ]
        .join("\n");
        let split = Split::from_events(&events, 1).unwrap();
        assert_eq!(split.before_move, [10_000]);
        assert_eq!(split.moving, [20_000]);
        assert!(Split::from_events(&events, 2).is_none());
    }

    #[test]
    fn measured_stats_skip_missed() {
        let m = Measured {
            samples: vec![
                Sample {
                    entry: 1,
                    governed: Some(10),
                },
                Sample {
                    entry: 2,
                    governed: None,
                },
                Sample {
                    entry: 3,
                    governed: Some(30),
                },
            ],
            missed_paths: vec!["/".into()],
            warmup_tries: 1,
        };
        assert_eq!(m.missed(), 1);
        assert_eq!(m.governed_stats().unwrap().max, 30);
        assert_eq!(m.entry_stats().p50, 2);
    }
}
