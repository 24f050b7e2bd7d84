//! What the reliability scenarios share: the target stub, the cgroup layout
//! seen from this process (where a job's directories are, whether a process
//! sits in its job in every hierarchy, what is left under the root), the
//! daemon under test with its log and event stream, the targets (killed by
//! PID when dropped), a small HTTP client for `/metrics` and `/healthz`, and
//! a seeded random number generator.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::bench_common::{Hierarchy, Proc, check_interrupt, monotonic_ns, own_hierarchies, status_kib};

use super::TAG;

/// How long a daemon may take from spawn to the end of its start-up scan.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGINT'ed daemon may take to stop.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The target stub, copied under each run's target name (comm and argv[0]).
pub const TARGET_C: &str = r#"/* Target stub of `cargo xtask reliability`; its file name is the target name.
 *   NAME pause            sleep until killed
 *   NAME sleep MS         live MS ms, then exit with pid % 200
 *   NAME check LIFE_MS TIMEOUT_MS SEL=PREFIX...
 *       read /proc/self/cgroup (pread of one fd, every 200 us) until, for
 *       every SEL (a v1 controller such as cpu, or "unified" for the 0::
 *       line), that line's path is PREFIX/auto-NAME-PID; live LIFE_MS from
 *       the start (or end at once if governed later than that); write one
 *       line "PID ENTRY_NS GOVERNED_NS" (GOVERNED_NS -1: not governed within
 *       TIMEOUT_MS) with a single write(2), and exit with pid % 200 when
 *       governed, 201 when not, 202 on an error. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void sleep_until(long long t)
{
    struct timespec ts = { t / 1000000000LL, t % 1000000000LL };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Whether the line of buf selected by sel has the path want. */
static int line_is(const char *buf, const char *sel, const char *want)
{
    int unified = strcmp(sel, "unified") == 0;
    size_t sl = strlen(sel), wl = strlen(want);
    for (const char *line = buf; *line; ) {
        const char *nl = strchr(line, '\n');
        const char *end = nl ? nl : line + strlen(line);
        const char *c1 = memchr(line, ':', (size_t)(end - line));
        const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
        if (c2) {
            int hit = 0;
            if (unified) {
                hit = c1 - line == 1 && line[0] == '0' && c2 == c1 + 1;
            } else {
                for (const char *p = c1 + 1; p < c2; ) {
                    const char *e = memchr(p, ',', (size_t)(c2 - p));
                    if (!e)
                        e = c2;
                    if ((size_t)(e - p) == sl && memcmp(p, sel, sl) == 0)
                        hit = 1;
                    p = e + 1;
                }
            }
            if (hit)
                return (size_t)(end - c2 - 1) == wl && memcmp(c2 + 1, want, wl) == 0;
        }
        line = nl ? nl + 1 : end;
    }
    return 0;
}

int main(int argc, char **argv)
{
    long long entry = now();
    const char *name = strrchr(argv[0], '/');
    name = name ? name + 1 : argv[0];
    int pid = (int)getpid(), code = pid % 200;
    if (argc >= 2 && strcmp(argv[1], "pause") == 0) {
        for (;;)
            pause();
    }
    if (argc >= 3 && strcmp(argv[1], "sleep") == 0) {
        sleep_until(entry + atoll(argv[2]) * 1000000LL);
        return code;
    }
    if (argc < 5 || strcmp(argv[1], "check") != 0 || argc - 4 > 16) {
        fprintf(stderr, "usage: NAME pause | NAME sleep MS | NAME check LIFE_MS TIMEOUT_MS SEL=PREFIX...\n");
        return 202;
    }
    long long life = entry + atoll(argv[2]) * 1000000LL;
    long long deadline = entry + atoll(argv[3]) * 1000000LL;
    int nsel = argc - 4;
    static char sels[16][64], wants[16][4096];
    for (int i = 0; i < nsel; i++) {
        const char *eq = strchr(argv[4 + i], '=');
        if (!eq || eq - argv[4 + i] >= 64)
            return 202;
        memcpy(sels[i], argv[4 + i], (size_t)(eq - argv[4 + i]));
        sels[i][eq - argv[4 + i]] = 0;
        snprintf(wants[i], sizeof wants[i], "%s/auto-%s-%d", eq + 1, name, pid);
    }
    int fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 202;
    static char buf[16384];
    long long governed = -1;
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        long long t = now();
        if (n > 0) {
            buf[n] = 0;
            int all = 1;
            for (int i = 0; i < nsel && all; i++)
                all = line_is(buf, sels[i], wants[i]);
            if (all) {
                governed = t;
                break;
            }
        }
        if (t > deadline)
            break;
        struct timespec ts = { 0, 200000 };
        nanosleep(&ts, NULL);
    }
    if (governed >= 0 && now() < life)
        sleep_until(life);
    char line[128];
    int len = snprintf(line, sizeof line, "%d %lld %lld\n", pid, entry, governed);
    if (write(1, line, (size_t)len) != len)
        return 202;
    return governed >= 0 ? code : 201;
}
"#;

/// The exit code a `sleep` or governed `check` target ends with.
pub fn expected_code(pid: u32) -> i32 {
    (pid % 200) as i32
}

/// A `check` target's exit code when it was not governed within its timeout.
pub const CODE_MISSED: i32 = 201;

// ---------------------------------------------------------------- the layout

/// The cgroup hierarchies as this process sees them, and the job root.
pub struct Layout {
    pub v2: bool,
    pub all: Vec<Hierarchy>,
    /// Indexes into `all` of the hierarchies a job spans (v1: those with
    /// cpu, cpuacct or memory; v2: the unified one).
    pub job: Vec<usize>,
    /// The relative `--cgroup-root`.
    pub root: String,
}

/// Where a process sits, per job hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// In its job in every hierarchy.
    Governed,
    /// In its job in some hierarchies only: a move cut short.
    Partial(Vec<bool>),
    /// In no hierarchy of its job.
    Outside,
    /// The process is gone.
    Gone,
}

const JOB_CONTROLLERS: [&str; 3] = ["cpu", "cpuacct", "memory"];

impl Layout {
    pub fn detect(root: String) -> anyhow::Result<Layout> {
        let all = own_hierarchies()?;
        let has = |h: &Hierarchy, c: &str| h.controllers.split(',').any(|x| x == c);
        let v1: Vec<usize> = (0..all.len())
            .filter(|&i| JOB_CONTROLLERS.iter().any(|c| has(&all[i], c)))
            .collect();
        let (v2, job) = if v1.is_empty() {
            let unified = all
                .iter()
                .position(|h| h.controllers.is_empty())
                .context("neither v1 cpu/cpuacct/memory hierarchies nor cgroup2 in /proc/self/cgroup")?;
            (true, vec![unified])
        } else {
            (false, v1)
        };
        Ok(Layout { v2, all, job, root })
    }

    pub fn job_id(name: &str, pid: u32) -> String {
        format!("auto-{name}-{pid}")
    }

    /// `<own cgroup>/<root>` in a hierarchy, as /proc/<pid>/cgroup shows it.
    pub fn prefix(&self, h: &Hierarchy) -> String {
        format!("{}/{}", h.path.trim_end_matches('/'), self.root)
    }

    /// The `SEL=PREFIX` arguments of a `check` target.
    pub fn selectors(&self) -> Vec<String> {
        self.job
            .iter()
            .map(|&i| {
                let h = &self.all[i];
                let sel = if self.v2 {
                    "unified"
                } else {
                    h.controllers
                        .split(',')
                        .find(|c| JOB_CONTROLLERS.contains(c))
                        .expect("a job hierarchy has a job controller")
                };
                format!("{sel}={}", self.prefix(h))
            })
            .collect()
    }

    /// Where `pid` sits relative to `job`.
    pub fn placement(&self, pid: u32, job: &str) -> Placement {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return Placement::Gone;
        };
        let lines = cgroup_lines(&text);
        let inside: Vec<bool> = self
            .job
            .iter()
            .map(|&i| {
                let h = &self.all[i];
                let want = format!("{}/{job}", self.prefix(h));
                lines
                    .iter()
                    .find(|(id, ctrls, _)| {
                        if self.v2 {
                            *id == "0" && ctrls.is_empty()
                        } else {
                            *ctrls == h.controllers
                        }
                    })
                    .is_some_and(|(_, _, path)| *path == want)
            })
            .collect();
        if inside.iter().all(|&b| b) {
            Placement::Governed
        } else if inside.iter().any(|&b| b) {
            Placement::Partial(inside)
        } else {
            Placement::Outside
        }
    }

    /// The names of the cgroups under the root in hierarchy `i`.
    pub fn children(&self, i: usize) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.all[i].dir.join(&self.root))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Jobs (names under the root in any job hierarchy) that hold no
    /// process in any hierarchy: created, nothing moved in yet.
    pub fn empty_jobs(&self) -> usize {
        let names: std::collections::BTreeSet<String> = self.job.iter().flat_map(|&i| self.children(i)).collect();
        names
            .iter()
            .filter(|n| {
                self.job.iter().all(|&i| {
                    fs::read_to_string(self.all[i].dir.join(&self.root).join(n).join("cgroup.procs"))
                        .map_or(true, |s| s.trim().is_empty())
                })
            })
            .count()
    }

    /// Directories under the root, in any job hierarchy, without the job mark.
    pub fn unmarked(&self) -> usize {
        self.job
            .iter()
            .flat_map(|&i| {
                let root = self.all[i].dir.join(&self.root);
                self.children(i).into_iter().map(move |n| root.join(n))
            })
            .filter(|d| !has_job_mark(d))
            .count()
    }

    /// Job cgroups in the first job hierarchy.
    pub fn job_count(&self) -> usize {
        self.children(self.job[0]).len()
    }

    /// Every cgroup under the root, in every hierarchy: `controllers:name`,
    /// with a note when it lacks ffrtmp's job mark (the `user.ffrtmp.job`
    /// xattr, without which no ffrtmp ever lists or removes it).
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, h) in self.all.iter().enumerate() {
            for n in self.children(i) {
                let marked = has_job_mark(&h.dir.join(&self.root).join(&n));
                out.push(format!(
                    "{}:{n}{}",
                    display_controllers(&h.controllers),
                    if marked { "" } else { " (no user.ffrtmp.job mark)" }
                ));
            }
        }
        out
    }

    /// rmdir every cgroup left under the root (never one holding processes:
    /// the kernel refuses); returns what it found.
    pub fn scrub(&self) -> Vec<String> {
        let found = self.leftovers();
        for (i, h) in self.all.iter().enumerate() {
            for n in self.children(i) {
                let d = h.dir.join(&self.root).join(&n);
                if let Err(e) = fs::remove_dir(&d) {
                    eprintln!("{TAG}: could not remove {}: {e}", d.display());
                }
            }
        }
        found
    }

    /// The CPU limit of a job as "QUOTA PERIOD" and its memory limit in
    /// bytes, read from its control files.
    pub fn limits(&self, job: &str) -> (Option<String>, Option<u64>) {
        let read = |h: &Hierarchy, f: &str| {
            fs::read_to_string(h.dir.join(&self.root).join(job).join(f))
                .ok()
                .map(|s| s.trim().to_string())
        };
        let find = |c: &str| {
            self.job
                .iter()
                .map(|&i| &self.all[i])
                .find(|h| self.v2 || h.controllers.split(',').any(|x| x == c))
        };
        let (Some(cpu), Some(mem)) = (find("cpu"), find("memory")) else {
            return (None, None);
        };
        if self.v2 {
            let mem = read(mem, "memory.max").and_then(|s| s.parse().ok());
            (read(cpu, "cpu.max"), mem)
        } else {
            let q = read(cpu, "cpu.cfs_quota_us");
            let p = read(cpu, "cpu.cfs_period_us");
            let cpu = q.zip(p).map(|(q, p)| format!("{q} {p}"));
            (cpu, read(mem, "memory.limit_in_bytes").and_then(|s| s.parse().ok()))
        }
    }
}

/// `--cpu-quota PCT --memory-limit MB` as the control files show them.
pub fn expected_limits(cpu_pct: u64, mem_mib: u64) -> (Option<String>, Option<u64>) {
    (Some(format!("{} 100000", cpu_pct * 1000)), Some(mem_mib * 1024 * 1024))
}

/// Whether a directory carries ffrtmp's job mark, the xattr `user.ffrtmp.job`.
pub fn has_job_mark(dir: &Path) -> bool {
    let (Ok(p), Ok(n)) = (
        std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()),
        std::ffi::CString::new("user.ffrtmp.job"),
    ) else {
        return false;
    };
    // SAFETY: valid NUL-terminated strings; a null buffer of size 0 only
    // asks for the value's length.
    unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}

fn display_controllers(c: &str) -> &str {
    if c.is_empty() { "unified" } else { c }
}

/// `(id, controllers, path)` of each line of a /proc/<pid>/cgroup file.
pub fn cgroup_lines(text: &str) -> Vec<(&str, &str, &str)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            Some((f.next()?, f.next()?, f.next()?))
        })
        .collect()
}

/// Counts of targets by placement.
#[derive(Debug, Default, Clone, Copy)]
pub struct Census {
    pub governed: usize,
    pub partial: usize,
    pub outside: usize,
    pub gone: usize,
}

impl Census {
    pub fn of(layout: &Layout, name: &str, pids: &[u32]) -> Census {
        let mut c = Census::default();
        for &pid in pids {
            match layout.placement(pid, &Layout::job_id(name, pid)) {
                Placement::Governed => c.governed += 1,
                Placement::Partial(_) => c.partial += 1,
                Placement::Outside => c.outside += 1,
                Placement::Gone => c.gone += 1,
            }
        }
        c
    }
}

/// Waits until every pid is governed; false at the deadline.
pub fn wait_governed(layout: &Layout, name: &str, pids: &[u32], timeout: Duration) -> anyhow::Result<bool> {
    let end = Instant::now() + timeout;
    let mut pending: Vec<u32> = pids.to_vec();
    loop {
        check_interrupt()?;
        pending.retain(|&pid| layout.placement(pid, &Layout::job_id(name, pid)) != Placement::Governed);
        if pending.is_empty() {
            return Ok(true);
        }
        if Instant::now() > end {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- the daemon

/// The `--events` stream of one daemon run, read as it grows.
pub struct EventLog {
    file: Option<File>,
    path: PathBuf,
    pending: Vec<u8>,
    pub events: Vec<Value>,
    /// Lines that were not JSON.
    pub malformed: usize,
}

impl EventLog {
    fn new(path: PathBuf) -> Self {
        Self {
            file: None,
            path,
            pending: Vec::new(),
            events: Vec::new(),
            malformed: 0,
        }
    }

    /// Reads what was appended since the last call.
    pub fn poll(&mut self) {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else { return };
        if f.read_to_end(&mut self.pending).is_err() {
            return;
        }
        let Some(last) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.pending.drain(..=last).collect();
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Value>(line) {
                Ok(v) => self.events.push(v),
                Err(_) => self.malformed += 1,
            }
        }
    }

    pub fn of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events.iter().filter(move |e| e["event"] == kind)
    }

    pub fn count(&self, kind: &str) -> usize {
        self.of(kind).count()
    }

    /// `attached` events by pid.
    pub fn attached(&self) -> HashMap<u32, Vec<&Value>> {
        let mut m: HashMap<u32, Vec<&Value>> = HashMap::new();
        for e in self.of("attached") {
            if let Some(pid) = e["pid"].as_u64() {
                m.entry(pid as u32).or_default().push(e);
            }
        }
        m
    }

    /// `detached` events by pid (the result's pid).
    pub fn detached(&self) -> HashMap<u32, Vec<&Value>> {
        let mut m: HashMap<u32, Vec<&Value>> = HashMap::new();
        for e in self.of("detached") {
            if let Some(pid) = e["result"]["pid"].as_u64() {
                m.entry(pid as u32).or_default().push(e);
            }
        }
        m
    }

    /// Each governed process's `attached` and `detached` events, by
    /// identity (pid, start time in clock ticks): a pid is reused within a
    /// long run, so pid alone would mix up processes. A `detached` event is
    /// the one that follows the latest `attached` event of its pid in the
    /// stream (a process is reported after it was attached, and its pid is
    /// reused only after it ended); one with no `attached` before it is
    /// filed under start time 0.
    pub fn lives(&self) -> HashMap<(u32, u64), Life<'_>> {
        let mut lives: HashMap<(u32, u64), Life<'_>> = HashMap::new();
        let mut latest: HashMap<u32, u64> = HashMap::new();
        for e in &self.events {
            if e["event"] == "attached" {
                let (Some(pid), Some(st)) = (e["pid"].as_u64(), e["start_time"].as_u64()) else {
                    continue;
                };
                let pid = pid as u32;
                latest.insert(pid, st);
                lives.entry((pid, st)).or_default().attached.push(e);
            } else if e["event"] == "detached" {
                let Some(pid) = e["result"]["pid"].as_u64() else {
                    continue;
                };
                let pid = pid as u32;
                let st = latest.get(&pid).copied().unwrap_or(0);
                lives.entry((pid, st)).or_default().detached.push(e);
            }
        }
        lives
    }

    /// Total of `events_dropped` counts: lines the daemon could not write.
    pub fn dropped(&self) -> u64 {
        self.of("events_dropped").filter_map(|e| e["count"].as_u64()).sum()
    }

    pub fn ready(&self) -> bool {
        self.of("reconciled").any(|e| e["trigger"] == "startup")
    }
}

/// The events of one governed process.
#[derive(Default)]
pub struct Life<'a> {
    pub attached: Vec<&'a Value>,
    pub detached: Vec<&'a Value>,
}

/// One `ffrtmp watch` run: its process, log file and event stream.
pub struct Daemon {
    pub proc: Proc,
    pub log: PathBuf,
    pub events: EventLog,
    pub label: String,
    status: Option<ExitStatus>,
}

/// How a daemon is started.
pub struct Spawn<'a> {
    pub label: String,
    pub backend: &'a str,
    /// Flags after `watch --cgroup-root R --backend B --events FILE`.
    pub args: Vec<String>,
    pub vars: Vec<(&'static str, String)>,
    /// Soft RLIMIT_NOFILE set before exec (the hard limit is kept).
    pub nofile_soft: Option<u64>,
}

impl<'a> Spawn<'a> {
    pub fn new(label: impl Into<String>, backend: &'a str, args: &[&str]) -> Self {
        Self {
            label: label.into(),
            backend,
            args: args.iter().map(|s| s.to_string()).collect(),
            vars: Vec::new(),
            nofile_soft: None,
        }
    }
}

impl Daemon {
    pub fn spawn(ffrtmp: &Path, work: &Path, layout: &Layout, s: Spawn) -> anyhow::Result<Daemon> {
        let log = work.join(format!("{}.log", s.label));
        let events = work.join(format!("{}.events.jsonl", s.label));
        let _ = fs::remove_file(&events);
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(ffrtmp);
        cmd.args([
            "watch",
            "--cgroup-root",
            &layout.root,
            "--backend",
            s.backend,
            "--events",
        ])
        .arg(&events)
        .args(&s.args)
        .env("FFRTMP_LOG", "info")
        .env_remove("FFRTMP_CGROUP_ROOT")
        .env_remove("FFRTMP_FAULT")
        .env_remove("RUST_LOG")
        .envs(s.vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
        if let Some(soft) = s.nofile_soft {
            // SAFETY: between fork and exec only async-signal-safe calls
            // (getrlimit, setrlimit) on a local struct; no allocation.
            unsafe {
                cmd.pre_exec(move || {
                    let mut r = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    r.rlim_cur = soft.min(r.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().with_context(|| format!("spawning {}", ffrtmp.display()))?;
        Ok(Daemon {
            proc: Proc {
                child: Some(child),
                what: format!("ffrtmp watch ({})", s.label),
                tag: TAG,
            },
            log,
            events: EventLog::new(events),
            label: s.label,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its exit status once it has exited (reaps it).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(c) = self.proc.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            self.status = Some(st);
        }
        self.status
    }

    pub fn running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Waits for the end of the start-up scan (`reconciled`, trigger
    /// `startup`): subscribed, earlier jobs taken over, running targets found.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        loop {
            check_interrupt()?;
            self.events.poll();
            if self.events.ready() {
                return Ok(());
            }
            if let Some(st) = self.exit_status() {
                bail!(
                    "{} exited ({st}) before it was ready; its log ends:\n{}",
                    self.label,
                    self.log_tail(15)
                );
            }
            if Instant::now() > end {
                bail!(
                    "{} not ready within {timeout:?}; its log ends:\n{}",
                    self.label,
                    self.log_tail(15)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        if self.status.is_none() && self.proc.child.is_some() {
            // SAFETY: kill(2) on the PID of our own child, not yet reaped
            // (status is None), so the PID cannot have been reused.
            unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10))
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        while self.exit_status().is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.exit_status()
    }

    /// SIGINT and wait; Err if it did not stop in time (then it is killed).
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal(libc::SIGINT);
        match self.wait_exit(STOP_TIMEOUT) {
            Some(st) => {
                self.events.poll();
                Ok(st)
            }
            None => {
                let _ = self.kill9();
                bail!("{} did not stop within {STOP_TIMEOUT:?} of SIGINT", self.label)
            }
        }
    }

    /// VmRSS (KiB), open fds, threads.
    pub fn sample(&self) -> Option<(u64, usize, usize)> {
        let pid = self.pid();
        let rss = status_kib(pid, "VmRSS")?;
        let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
        let threads = fs::read_dir(format!("/proc/{pid}/task")).ok()?.count();
        Some((rss, fds, threads))
    }

    /// The address of `--metrics-listen 127.0.0.1:0`, from the log.
    pub fn metrics_addr(&self, timeout: Duration) -> anyhow::Result<SocketAddr> {
        const LINE: &str = "Serving /metrics and /healthz on http://";
        let end = Instant::now() + timeout;
        loop {
            if let Some(addr) = self
                .log_text()
                .lines()
                .find_map(|l| l.split_once(LINE).map(|x| x.1.trim()))
            {
                return addr
                    .parse()
                    .with_context(|| format!("metrics address '{addr}' in the log"));
            }
            ensure!(Instant::now() < end, "{}: no `{LINE}` line in its log", self.label);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A stopped daemon would not act on the SIGTERM of Proc's drop.
        self.signal(libc::SIGCONT);
    }
}

// ---------------------------------------------------------------- targets

/// A target started here.
pub struct Target {
    pub pid: u32,
    /// Field 22 of /proc/<pid>/stat (clock ticks since boot): with the pid,
    /// the process's identity. Read right after the spawn: until we reap
    /// the child its pid cannot be reused, even once it has exited.
    pub start_time: u64,
    /// CLOCK_MONOTONIC right before the spawn.
    pub spawned_ns: u64,
    child: Child,
}

/// The targets started here; every one still running is killed by PID
/// (SIGKILL) and reaped when dropped.
#[derive(Default)]
pub struct Targets {
    pub live: Vec<Target>,
}

/// A target that ended.
pub struct Ended {
    pub pid: u32,
    pub start_time: u64,
    pub spawned_ns: u64,
    pub status: ExitStatus,
}

/// Field 22 of /proc/<pid>/stat; 0 if unreadable.
pub fn start_time(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok())
        .unwrap_or(0)
}

impl Targets {
    pub fn spawn(&mut self, path: &Path, args: &[String], stdout: Stdio) -> anyhow::Result<u32> {
        let mut cmd = Command::new(path);
        cmd.args(args).stdin(Stdio::null()).stdout(stdout).stderr(Stdio::null());
        let spawned_ns = monotonic_ns();
        let child = cmd.spawn().with_context(|| format!("spawning {}", path.display()))?;
        let pid = child.id();
        self.live.push(Target {
            pid,
            start_time: start_time(pid),
            spawned_ns,
            child,
        });
        Ok(pid)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.live.iter().map(|t| t.pid).collect()
    }

    /// The targets that have ended since the last call (reaped).
    pub fn reap(&mut self) -> Vec<Ended> {
        let mut ended = Vec::new();
        self.live.retain_mut(|t| match t.child.try_wait() {
            Ok(Some(status)) => {
                ended.push(Ended {
                    pid: t.pid,
                    start_time: t.start_time,
                    spawned_ns: t.spawned_ns,
                    status,
                });
                false
            }
            _ => true,
        });
        ended
    }

    /// SIGKILL the first `n` live targets (the oldest) and reap them.
    pub fn kill_first(&mut self, n: usize) -> Vec<Ended> {
        let rest = self.live.split_off(n.min(self.live.len()));
        let ended = self.kill_all();
        self.live = rest;
        ended
    }

    /// SIGKILL every live target, then reap them all.
    pub fn kill_all(&mut self) -> Vec<Ended> {
        for t in &mut self.live {
            // Child::kill is kill(2) by PID on our own unreaped child.
            let _ = t.child.kill();
        }
        self.live
            .drain(..)
            .filter_map(|mut t| {
                t.child.wait().ok().map(|status| Ended {
                    pid: t.pid,
                    start_time: t.start_time,
                    spawned_ns: t.spawned_ns,
                    status,
                })
            })
            .collect()
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The exit code, or 128+N for a signal.
pub fn code_of(st: ExitStatus) -> i32 {
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// MemAvailable in KiB.
pub fn mem_available_kib() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:")?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- HTTP

/// `GET path` on a new connection: the status and the body, or why not.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let end = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting to {addr}"))?;
    let left = || {
        end.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left()))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        s.set_read_timeout(Some(left()))?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e).with_context(|| format!("reading the answer to GET {path}")),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status in the answer to GET {path}"))?;
    let body = text.split_once("\r\n\r\n").map_or(String::new(), |x| x.1.to_string());
    Ok((status, body))
}

/// The sum of a metric's samples (all label sets) in a text exposition.
pub fn metric_sum(body: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for l in body.lines() {
        let Some(rest) = l.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// One sample of a metric with a given label (`result="failed"`).
pub fn metric_with(body: &str, name: &str, label: &str) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

// ---------------------------------------------------------------- random

/// xorshift64*: reproducible from its seed, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in 0..=max (max < 2^32, so the bias is negligible).
    pub fn upto(&mut self, max: u64) -> u64 {
        self.next() % (max + 1)
    }
}

/// A seed from the clock, for runs without `--seed`.
pub fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32) % 1_000_000_000_000
}

// ---------------------------------------------------------------- numbers

pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        0.0
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

/// The means of the first and the last third of the samples (at least one
/// sample each); None with fewer than 3 samples.
pub fn thirds(x: &[f64]) -> Option<(f64, f64)> {
    if x.len() < 3 {
        return None;
    }
    let k = x.len() / 3;
    Some((mean(&x[..k]), mean(&x[x.len() - k..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirds_of_samples() {
        assert_eq!(thirds(&[1.0, 2.0]), None);
        assert_eq!(thirds(&[1.0, 5.0, 3.0]), Some((1.0, 3.0)));
        assert_eq!(thirds(&[1.0, 1.0, 9.0, 9.0, 2.0, 4.0]), Some((1.0, 3.0)));
    }

    #[test]
    fn rng_is_reproducible() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<u64> = (0..5).map(|_| a.upto(250)).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.upto(250)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x <= 250));
        assert_ne!(Rng::new(1).next(), Rng::new(2).next());
    }

    #[test]
    fn metrics_parsed() {
        let body = "# TYPE ffrtmp_events_lost counter\n\
                    ffrtmp_events_lost_total{source=\"ebpf\"} 12\n\
                    ffrtmp_events_lost_total{source=\"scan\"} 3\n\
                    ffrtmp_events_lost_totalx 5\n\
                    ffrtmp_config_reloads_total{result=\"failed\"} 4\n\
                    ffrtmp_config_reloads_total{result=\"ok\"} 1\n";
        assert_eq!(metric_sum(body, "ffrtmp_events_lost_total"), Some(15.0));
        assert_eq!(metric_sum(body, "ffrtmp_missing_total"), None);
        assert_eq!(
            metric_with(body, "ffrtmp_config_reloads_total", "result=\"failed\""),
            Some(4.0)
        );
    }

    #[test]
    fn lives_keep_reused_pids_apart() {
        let mut log = EventLog::new(PathBuf::from("/nonexistent"));
        for line in [
            r#"{"event":"attached","pid":7,"start_time":100}"#,
            r#"{"event":"detached","result":{"pid":7,"exit_code":7}}"#,
            r#"{"event":"attached","pid":7,"start_time":900}"#,
            r#"{"event":"attached","pid":8,"start_time":901}"#,
            r#"{"event":"detached","result":{"pid":7,"exit_code":7}}"#,
            r#"{"event":"detached","result":{"pid":9,"exit_code":9}}"#,
        ] {
            log.events.push(serde_json::from_str(line).unwrap());
        }
        let lives = log.lives();
        let n = |k: (u32, u64)| lives.get(&k).map(|l| (l.attached.len(), l.detached.len()));
        assert_eq!(n((7, 100)), Some((1, 1)));
        assert_eq!(n((7, 900)), Some((1, 1)));
        assert_eq!(n((8, 901)), Some((1, 0)));
        assert_eq!(n((9, 0)), Some((0, 1)));
    }

    #[test]
    fn cgroup_file_lines() {
        let l = cgroup_lines("4:memory:/a/b\n0::/\n1:cpu,cpuacct:/x:y\n");
        assert_eq!(
            l,
            [("4", "memory", "/a/b"), ("0", "", "/"), ("1", "cpu,cpuacct", "/x:y")]
        );
    }
}
