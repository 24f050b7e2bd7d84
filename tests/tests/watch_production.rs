//! The production features of `ffrtmp watch` against real kernel events and
//! real cgroups (root only): the `--watch-config` file (per-command limits,
//! flag precedence, filters), restart without losing a governed process (the
//! state file and the cgroup tree), SIGHUP reload, and the metrics and health
//! endpoint.
//!
//! Same rules as `watch.rs`, whose infrastructure (`support/mod.rs`) this
//! file shares: a relative cgroup root per test ([`TestRoot`]), target names
//! unique to the test ([`unique_target`]), every process started killed by
//! PID when the test ends, network on 127.0.0.1 only. The ebpf backend is the
//! default; two scenarios also run on netlink.

#[macro_use]
mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use tests::{EXIT_TIMEOUT, POLL_TIMEOUT, Signal, Spawned, TestRoot, Value, Version, wait_until};

for_backends! {
    per_command_limits_from_the_config_file: [ebpf, netlink];
    reload_adds_new_targets: [ebpf, netlink];
}

// ---------------------------------------------------------------------------
// The configuration file

/// A `--watch-config` file in a temp dir of its own (removed on drop).
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(yaml: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("a temp dir for the config file");
        let path = dir.path().join("watch.yaml");
        let file = ConfigFile { _dir: dir, path };
        file.write(yaml);
        file
    }

    /// Replace the content atomically (a reader never sees half a file).
    fn write(&self, yaml: &str) {
        let tmp = self.path.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml).expect("writing the config file");
        std::fs::rename(&tmp, &self.path).expect("renaming the config file into place");
    }

    fn arg(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temp path")
    }
}

/// `key: value` pairs of a YAML block, the values in YAML flow syntax.
type Keys<'a> = &'a [(&'a str, &'a str)];

/// A filters block in the old tool's schema: every key it knew, empty (the
/// old tool's "not set"), except those given in `set`.
fn filters_block(indent: &str, set: Keys) -> String {
    const OLD_KEYS: [(&str, &str); 12] = [
        ("allowed_users", "[]"),
        ("blocked_users", "[]"),
        ("allowed_uids", "[]"),
        ("blocked_uids", "[]"),
        ("allowed_parents", "[]"),
        ("blocked_parents", "[]"),
        ("parent_match", "immediate"),
        ("min_runtime", "\"\""),
        ("max_runtime", "\"\""),
        ("allowed_dirs", "[]"),
        ("blocked_dirs", "[]"),
        ("dir_match", "exact"),
    ];
    for (key, _) in set {
        assert!(OLD_KEYS.iter().any(|(k, _)| k == key), "not a filter key: {key}");
    }
    OLD_KEYS
        .iter()
        .map(|&(key, empty)| {
            let value = set.iter().find(|(k, _)| *k == key).map_or(empty, |(_, v)| v);
            format!("{indent}{key}: {value}\n")
        })
        .collect()
}

/// A limits block in the old schema (`cpu_quota`, `cpu_weight`,
/// `memory_limit`; 0 = not set).
fn limits_block(indent: &str, limits: Keys) -> String {
    limits.iter().map(|(k, v)| format!("{indent}{k}: {v}\n")).collect()
}

/// One `commands.<name>` entry: its limits and its filters.
struct CommandConfig<'a> {
    name: &'a str,
    limits: Keys<'a>,
    filters: Keys<'a>,
}

/// A whole file in the old tool's schema, every old key present.
fn old_schema(targets: &[&str], default_limits: Keys, filters: Keys, commands: &[CommandConfig]) -> String {
    let mut yaml = String::from("scan_interval: \"200ms\"\ntarget_commands:\n");
    for t in targets {
        yaml.push_str(&format!("  - \"{t}\"\n"));
    }
    yaml.push_str("default_limits:\n");
    let defaults: Vec<(&str, &str)> = ["cpu_quota", "cpu_weight", "memory_limit"]
        .into_iter()
        .map(|k| (k, default_limits.iter().find(|(d, _)| *d == k).map_or("0", |(_, v)| v)))
        .collect();
    yaml.push_str(&limits_block("  ", &defaults));
    yaml.push_str("filters:\n");
    yaml.push_str(&filters_block("  ", filters));
    if commands.is_empty() {
        yaml.push_str("commands: {}\n");
    } else {
        yaml.push_str("commands:\n");
        for c in commands {
            yaml.push_str(&format!("  \"{}\":\n    limits:\n", c.name));
            if c.limits.is_empty() {
                yaml.push_str("      cpu_quota: 0\n");
            }
            yaml.push_str(&limits_block("      ", c.limits));
            yaml.push_str("    filters:\n");
            yaml.push_str(&filters_block("      ", c.filters));
        }
    }
    yaml
}

/// The CPU weight file's content for weight `w`: v1 `cpu.shares`
/// (w×1024/100), v2 `cpu.weight`.
fn weight_file_value(root: &TestRoot, w: u64) -> String {
    match root.host().version {
        Version::V1 => (w * 1024 / 100).to_string(),
        Version::V2 => w.to_string(),
    }
}

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// Helpers

/// Start ffrtmp watch on `backend` with `--watch-config file` (targets from
/// the file) and `flags`; wait until it is ready.
#[track_caller]
fn start_with_config(root: &TestRoot, backend: Backend, file: &ConfigFile, flags: &[&str]) -> Daemon {
    let mut args = vec!["--watch-config", file.arg()];
    args.extend_from_slice(flags);
    Daemon::start(root, backend, &[], &args)
}

/// The test process's own cgroups: where every process it starts is born,
/// and where one the daemon left alone still is.
fn own_cgroups() -> String {
    cgroup_file(std::process::id())
}

/// `pid` was not moved: it is still in the test's own cgroups, and no job of
/// `name` exists for it.
#[track_caller]
fn assert_not_moved(root: &TestRoot, name: &str, pid: u32) {
    assert_eq!(
        cgroup_file(pid),
        own_cgroups(),
        "{pid} was moved out of the test's own cgroups"
    );
    root.assert_job_gone(&job_of(name, pid));
}

/// Wait for a log line containing `needle`.
#[track_caller]
fn wait_line(daemon: &Daemon, needle: &str) -> String {
    daemon.wait_log(POLL_TIMEOUT, &format!("line containing {needle:?}"), |log| {
        log.contains(needle)
    })
}

/// How many log lines contain `needle`.
fn count_lines_containing(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// The `not governed` line of `pid`: `PID P (cmd) not governed: <filter>: …`.
fn not_governed(pid: u32, name: &str, filter: &str) -> String {
    format!("PID {pid} ({name}) not governed: {filter}: ")
}

/// Kill `target` (SIGKILL, reaped): dropping it does exactly that.
fn end(target: Target) {
    drop(target);
}

// ---------------------------------------------------------------------------
// 1, 2. Limits from the file, and flag precedence

/// Two targets, A with its own `commands.A.limits`, B with the file's
/// `default_limits`: each job's control files carry its own limits (A's
/// unset cpu_weight is merged from the defaults). The file uses the old
/// tool's schema with every old key present.
fn per_command_limits_from_the_config_file(backend: Backend) {
    let Some(run) = LimitsRun::start(backend, &[]) else {
        return;
    };
    let (root, ja, jb) = (&run.root, &run.ja, &run.jb);
    assert_eq!(root.cpu_max(ja), "20000 100000", "{ja}: commands.A.limits.cpu_quota 20");
    assert_eq!(
        root.memory_max(ja),
        Some(32 * MIB),
        "{ja}: commands.A.limits.memory_limit 32"
    );
    assert_eq!(
        root.cpu_weight_file(ja),
        weight_file_value(root, 200),
        "{ja}: cpu_weight 0 (not set) in commands.A.limits: default_limits.cpu_weight 200"
    );
    assert_eq!(root.cpu_max(jb), "50000 100000", "{jb}: default_limits.cpu_quota 50");
    assert_eq!(
        root.memory_max(jb),
        Some(64 * MIB),
        "{jb}: default_limits.memory_limit 64"
    );
    assert_eq!(root.cpu_weight_file(jb), weight_file_value(root, 200), "{jb}");

    let log = run.daemon.stop();
    assert_attached_once(&log, &run.a, &[run.ta.pid()]);
    assert_attached_once(&log, &run.b, &[run.tb.pid()]);
    // cpu_weight 200 for targets nobody restricts is warned about (issue
    // 19); nothing else is.
    assert!(
        log.lines()
            .filter(|l| l.contains("warning: "))
            .all(|l| l.contains("more than the kernel's default")),
        "the file should load without another warning; log:\n{log}"
    );
    assert!(
        log.contains("gets cpu_weight 200 (more than the kernel's default)"),
        "log:\n{log}"
    );
}

/// Targets A and B (sleep stubs) running, each governed by a daemon under
/// [`limits_file`] plus `flags`. Fields drop in order: the targets, the
/// daemon, then the files and the cgroup root.
struct LimitsRun {
    ta: Target,
    tb: Target,
    daemon: Daemon,
    a: String,
    b: String,
    ja: String,
    jb: String,
    _file: ConfigFile,
    _stubs: Stubs,
    root: TestRoot,
}

impl LimitsRun {
    /// `None` after `skipping:` (a panic under CI=true).
    fn start(backend: Backend, flags: &[&str]) -> Option<LimitsRun> {
        let host = setup(backend)?;
        let root = TestRoot::new(host);
        let stubs = Stubs::new();
        let (a, b) = (unique_target(), unique_target());
        let (path_a, path_b) = (stubs.sleep(&a), stubs.sleep(&b));
        let file = ConfigFile::new(&limits_file(&a, &b));
        let daemon = start_with_config(&root, backend, &file, flags);
        let ta = Target::sleeping(&path_a);
        let tb = Target::sleeping(&path_b);
        daemon.wait_governed(&root, &a, &[ta.pid()], POLL_TIMEOUT);
        daemon.wait_governed(&root, &b, &[tb.pid()], POLL_TIMEOUT);
        Some(LimitsRun {
            ja: job_of(&a, ta.pid()),
            jb: job_of(&b, tb.pid()),
            ta,
            tb,
            daemon,
            a,
            b,
            _file: file,
            _stubs: stubs,
            root,
        })
    }
}

/// The old-schema file of the limit tests: A 20 % / 32 MiB, defaults
/// 50 % / weight 200 / 64 MiB.
fn limits_file(a: &str, b: &str) -> String {
    old_schema(
        &[a, b],
        &[("cpu_quota", "50"), ("cpu_weight", "200"), ("memory_limit", "64")],
        &[],
        &[CommandConfig {
            name: a,
            limits: &[("cpu_quota", "20"), ("cpu_weight", "0"), ("memory_limit", "32")],
            filters: &[],
        }],
    )
}

/// The same file with `--cpu-quota 70`: the flag beats the file's default
/// and per-command CPU limits for both targets; memory still comes from
/// the file.
#[test]
fn limit_flags_override_the_file() {
    let Some(run) = LimitsRun::start(Backend::Ebpf, &["--cpu-quota", "70"]) else {
        return;
    };
    let (root, ja, jb) = (&run.root, &run.ja, &run.jb);
    assert_eq!(
        root.cpu_max(ja),
        "70000 100000",
        "{ja}: --cpu-quota 70 over commands.A.limits"
    );
    assert_eq!(
        root.cpu_max(jb),
        "70000 100000",
        "{jb}: --cpu-quota 70 over default_limits"
    );
    assert_eq!(
        root.memory_max(ja),
        Some(32 * MIB),
        "{ja}: memory from commands.A.limits"
    );
    assert_eq!(root.memory_max(jb), Some(64 * MIB), "{jb}: memory from default_limits");
    assert_eq!(root.cpu_weight_file(ja), weight_file_value(root, 200), "{ja}");
    run.daemon.stop();
}

// ---------------------------------------------------------------------------
// 3. Filters

/// Per-command filters in one daemon: A (`blocked_uids: [0]`) and C
/// (`blocked_users: [root]`) are left in the test's own cgroups, each with
/// one `not governed` line naming the filter; B (no filter) is governed.
#[test]
fn filters_by_uid_and_user_leave_targets_alone() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    assert!(nix::unistd::getuid().is_root(), "the test runs as uid 0");
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let (a, b, c) = (unique_target(), unique_target(), unique_target());
    let paths = [stubs.sleep(&a), stubs.sleep(&b), stubs.sleep(&c)];
    let file = ConfigFile::new(&old_schema(
        &[&a, &b, &c],
        &[("cpu_quota", "20")],
        &[],
        &[
            CommandConfig {
                name: &a,
                limits: &[],
                filters: &[("blocked_uids", "[0]")],
            },
            CommandConfig {
                name: &c,
                limits: &[],
                filters: &[("blocked_users", "[root]")],
            },
        ],
    ));

    let daemon = start_with_config(&root, backend, &file, &[]);
    let [ta, tb, tc] = paths.map(|p| Target::sleeping(&p));
    daemon.wait_governed(&root, &b, &[tb.pid()], POLL_TIMEOUT);
    assert_eq!(root.cpu_max(&job_of(&b, tb.pid())), "20000 100000");
    wait_line(&daemon, &not_governed(ta.pid(), &a, "blocked_uids"));
    wait_line(&daemon, &not_governed(tc.pid(), &c, "blocked_users"));
    assert_not_moved(&root, &a, ta.pid());
    assert_not_moved(&root, &c, tc.pid());
    assert!(ta.running() && tc.running(), "a filtered target died");

    let log = daemon.stop();
    for (pid, name, filter) in [(ta.pid(), &a, "blocked_uids"), (tc.pid(), &c, "blocked_users")] {
        assert_eq!(
            count_lines_containing(&log, &not_governed(pid, name, filter)),
            1,
            "one `not governed` line for {pid}; log:\n{log}"
        );
        // The filters run before the adoption announces itself.
        assert_eq!(
            count_lines_containing(&log, &format!("Attaching to PID {pid} ")),
            0,
            "{pid} was filtered out, yet announced; log:\n{log}"
        );
        assert!(
            !log.contains(&format!("✓ Attached to PID {pid} ")),
            "{pid} was attached; log:\n{log}"
        );
    }
    let line = log
        .lines()
        .find(|l| l.contains(&not_governed(tc.pid(), &c, "blocked_users")))
        .expect("checked");
    assert!(line.contains("\"root\""), "the line names the user: {line}");
    assert_attached_once(&log, &b, &[tb.pid()]);
    assert_not_moved(&root, &a, ta.pid());
    assert_not_moved(&root, &c, tc.pid());
}

/// `allowed_dirs: [<tmp>/work]` with `dir_match: prefix`: a target whose
/// working directory is below it is governed; one in `/` and one in the
/// sibling `<tmp>/workx` (a string prefix, not a path prefix) are not.
#[test]
fn allowed_dirs_with_prefix_match() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let path = stubs.sleep(&name);
    let tmp = tempfile::tempdir().expect("a temp dir");
    // The kernel reports the resolved working directory.
    let base = tmp.path().canonicalize().expect("canonical temp dir");
    let (work, deep, sibling) = (base.join("work"), base.join("work/a/b"), base.join("workx"));
    std::fs::create_dir_all(&deep).expect("mkdir");
    std::fs::create_dir_all(&sibling).expect("mkdir");
    let allowed = format!("[{:?}]", work.to_str().expect("UTF-8 path"));
    let file = ConfigFile::new(&old_schema(
        &[&name],
        &[("cpu_quota", "20")],
        &[("allowed_dirs", &allowed), ("dir_match", "prefix")],
        &[],
    ));

    let daemon = start_with_config(&root, backend, &file, &[]);
    let in_dir = |dir: &Path| Target::spawn(Command::new(&path).arg("600").current_dir(dir).stdin(Stdio::null()));
    let inside = in_dir(&deep);
    let at_root = in_dir(Path::new("/"));
    let beside = in_dir(&sibling);
    daemon.wait_governed(&root, &name, &[inside.pid()], POLL_TIMEOUT);
    wait_line(&daemon, &not_governed(at_root.pid(), &name, "allowed_dirs"));
    wait_line(&daemon, &not_governed(beside.pid(), &name, "allowed_dirs"));
    assert_not_moved(&root, &name, at_root.pid());
    assert_not_moved(&root, &name, beside.pid());

    let log = daemon.stop();
    assert_attached_once(&log, &name, &[inside.pid()]);
    assert_not_moved(&root, &name, at_root.pid());
    assert_not_moved(&root, &name, beside.pid());
}

/// `min_runtime: "1500ms"`: a target is left alone while younger than that
/// (checked at ~0.5 s: not in a job, no `Attaching` line), governed once it
/// is older; a target that exits after 0.3 s is never attached.
#[test]
fn min_runtime_delays_adoption() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let sleep = stubs.sleep(&name);
    // The same name as a shell, in another dir: a short-lived target.
    let sh = stubs.install_in("sh", &name, Path::new("/bin/sh"), &["-c", ":"]);
    let file = ConfigFile::new(&old_schema(
        &[&name],
        &[("cpu_quota", "20")],
        &[("min_runtime", "\"1500ms\"")],
        &[],
    ));
    // At debug level the daemon logs each delayed adoption and its end.
    let daemon = Daemon::spawn_logging(
        tests::ffrtmp_bin(),
        "info,ffrtmp::watch::daemon=debug",
        &root,
        backend,
        &[],
        &["--watch-config", file.arg()],
    );
    daemon.wait_ready();

    // The short one first, so its timer is due before the long one's.
    let short_started = Instant::now();
    let mut short = Target::spawn(
        Command::new(&sh)
            .args(["-c", "read line; exit 0"])
            .stdin(Stdio::piped()),
    );
    let short_pid = short.pid();
    // Seen, and its adoption delayed.
    wait_line(&daemon, &format!("PID {short_pid} ({name}): adopting in "));
    std::thread::sleep(Duration::from_millis(100));
    let spawned = Instant::now();
    let long = Target::sleeping(&sleep);
    let long_pid = long.pid();

    // The short one exits once it has run 0.3 s, and is reaped.
    std::thread::sleep(Duration::from_millis(300).saturating_sub(short_started.elapsed()));
    let short_lived = short_started.elapsed();
    drop(short.stdin());
    let status = short.reap(POLL_TIMEOUT);
    assert!(status.success(), "the short target: {status}");
    // Unless this machine stalled near its min_runtime, it exited well before.
    let short_checked = short_lived < Duration::from_millis(1200);
    if !short_checked {
        eprintln!("note: the short target lived {short_lived:?}, too close to min_runtime: not checked");
    }

    // At ~0.5 s the long one is still too young.
    std::thread::sleep(Duration::from_millis(500).saturating_sub(spawned.elapsed()));
    let governed_early = root.holds_all_threads(long_pid, &job_of(&name, long_pid));
    let log = daemon.log();
    let checked_at = spawned.elapsed();
    // The process is younger than the time since we spawned it: unless this
    // machine stalled past min_runtime, it must not be governed yet.
    if checked_at < Duration::from_millis(1400) {
        assert!(
            !governed_early,
            "governed at {checked_at:?}, before its min_runtime 1.5 s"
        );
        assert!(
            !log.contains(&format!("Attaching to PID {long_pid} ")),
            "attaching at {checked_at:?}, before its min_runtime 1.5 s; log:\n{log}"
        );
        assert_eq!(cgroup_file(long_pid), own_cgroups(), "moved before its min_runtime");
    } else {
        eprintln!("note: the ~0.5 s check ran only at {checked_at:?}: skipped");
    }

    daemon.wait_governed(&root, &name, &[long_pid], POLL_TIMEOUT);
    assert_eq!(root.cpu_max(&job_of(&name, long_pid)), "20000 100000");
    let age = process_age(long_pid);
    assert!(
        age >= Duration::from_millis(1500),
        "governed, so at least 1.5 s old: {age:?}"
    );

    let log = daemon.stop();
    assert_attached_once(&log, &name, &[long_pid]);
    for pid in [short_pid, long_pid] {
        let delayed = format!("PID {pid} ({name}): adopting in ");
        assert_eq!(
            count_lines_containing(&log, &delayed),
            1,
            "{pid}'s adoption should have been delayed once; log:\n{log}"
        );
    }
    if !short_checked {
        return;
    }
    // The short one's timer was due before the long one's and the daemon
    // handles them in order: it has been decided, and never attached.
    assert!(
        log.contains(&format!("PID {short_pid} exited before it was adopted")),
        "log:\n{log}"
    );
    for never in ["Attaching to PID", "✓ Attached to PID"] {
        assert!(
            !log.contains(&format!("{never} {short_pid} ")),
            "the target that lived 0.3 s was attached; log:\n{log}"
        );
    }
    root.assert_job_gone(&job_of(&name, short_pid));
}

/// How long `pid` has been running, from `/proc/<pid>/stat` and the boot
/// clock.
fn process_age(pid: u32) -> Duration {
    let ticks = tests::start_time(pid).expect("the process exists");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let now = ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9;
    Duration::from_secs_f64((now - ticks as f64 / hz).max(0.0))
}

// ---------------------------------------------------------------------------
// 4. Restart

/// The jobs of the state file: (job_id, pid, start_time, command).
fn state_jobs(path: &Path) -> Option<Vec<(String, u32, u64, String)>> {
    let text = std::fs::read_to_string(path).ok()?;
    let state: Value = serde_json::from_str(&text).ok()?;
    assert_eq!(state["version"], 1, "state file version: {text}");
    let jobs = state["jobs"].as_array()?;
    jobs.iter()
        .map(|j| {
            Some((
                j["job_id"].as_str()?.to_owned(),
                u32::try_from(j["pid"].as_u64()?).ok()?,
                j["start_time"].as_u64()?,
                j["command"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Wait until the state file lists exactly the jobs of `pids` (each with its
/// real start time); panics with the file otherwise.
#[track_caller]
fn wait_state_lists(path: &Path, name: &str, pids: &[u32]) {
    let mut expected: Vec<(String, u32, u64, String)> = pids
        .iter()
        .map(|&p| {
            let start = tests::start_time(p).expect("a live target");
            (job_of(name, p), p, start, name.to_owned())
        })
        .collect();
    expected.sort_by_key(|j| j.1);
    let ok = wait_until(POLL_TIMEOUT, || {
        state_jobs(path).is_some_and(|mut jobs| {
            jobs.sort_by_key(|j| j.1);
            jobs == expected
        })
    });
    assert!(
        ok,
        "the state file {} should list {expected:?}; it holds: {:?}",
        path.display(),
        std::fs::read_to_string(path)
    );
}

/// Mark `dir` as an ffrtmp job cgroup, as ffrtmp does.
#[track_caller]
fn set_job_xattr(dir: &Path, job: &str) {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("no NUL in a path");
    let name = c"user.ffrtmp.job";
    // SAFETY: valid NUL-terminated path and name, and a buffer of the given length.
    let rc = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), job.as_ptr().cast(), job.len(), 0) };
    assert_eq!(
        rc,
        0,
        "setxattr({}, user.ffrtmp.job): {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
}

/// The root's directories in the hierarchies that hold `job` (those ffrtmp
/// makes jobs in).
fn hierarchies_of(root: &TestRoot, job: &str) -> Vec<PathBuf> {
    root.all_dirs().into_iter().filter(|d| d.join(job).is_dir()).collect()
}

/// Wait until every pid has exactly one `↻ Re-attached` line.
#[track_caller]
fn wait_reattached(daemon: &Daemon, name: &str, pids: &[u32]) -> String {
    daemon.wait_log(POLL_TIMEOUT, "`↻ Re-attached` lines", |log| {
        pids.iter()
            .all(|&p| log.contains(&format!("↻ Re-attached to PID {p} (job: {}, {name})", job_of(name, p))))
    })
}

#[track_caller]
fn assert_reattached_once(log: &str, name: &str, pids: &[u32]) {
    for &pid in pids {
        let job = job_of(name, pid);
        assert_eq!(
            count_lines_ending(log, &format!("↻ Re-attached to PID {pid} (job: {job}, {name})")),
            1,
            "one `↻ Re-attached` line for {pid}; log:\n{log}"
        );
        assert!(
            !log.contains(&format!("Attaching to PID {pid} ")),
            "{pid} was adopted again instead of taken over; log:\n{log}"
        );
    }
}

/// Three governed targets, the state file written; `kill -9` of the daemon.
/// While it is dead an empty leftover job cgroup appears under the root, and
/// the state file gains an entry for a live non-target (a plain `sleep` we
/// started) with a wrong start time. The restarted daemon takes each target
/// back exactly once with its limits, removes the leftover, leaves the
/// `sleep` alone, and reports a target that then exits.
#[test]
fn restart_takes_over_from_the_state_file() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let path = stubs.sleep(&name);
    let tmp = tempfile::tempdir().expect("a temp dir");
    let state = tmp.path().join("state.json");
    let state_arg = state.to_str().expect("UTF-8 path");
    let mut flags = vec![
        "--enable-state",
        "--state-path",
        state_arg,
        "--state-flush-interval",
        "200ms",
    ];
    flags.extend_from_slice(&LIMITS);

    let daemon = Daemon::start(&root, backend, &[&name], &flags);
    let mut targets: Vec<Target> = (0..3).map(|_| Target::sleeping(&path)).collect();
    let pids: Vec<u32> = targets.iter().map(Target::pid).collect();
    daemon.wait_governed(&root, &name, &pids, POLL_TIMEOUT);
    wait_state_lists(&state, &name, &pids);
    daemon.kill();

    // While no daemon runs: an empty job cgroup of an earlier run…
    let leftover = format!("auto-{name}-999999");
    let hierarchies = hierarchies_of(&root, &job_of(&name, pids[0]));
    assert!(!hierarchies.is_empty(), "no hierarchy holds the jobs");
    for dir in &hierarchies {
        let job_dir = dir.join(&leftover);
        std::fs::create_dir(&job_dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", job_dir.display()));
        set_job_xattr(&job_dir, &leftover);
    }
    // …and a state entry naming a live process that is no target and not in
    // any job, with a start time that is not its own.
    let stranger = Target::spawn(Command::new("sleep").arg("600").stdin(Stdio::null()));
    let spid = stranger.pid();
    let stranger_job = job_of(&name, spid);
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&state).expect("reading the state"))
        .expect("the state file is JSON");
    doc["jobs"]
        .as_array_mut()
        .expect("a jobs array")
        .push(serde_json::json!({
            "job_id": stranger_job,
            "pid": spid,
            "start_time": tests::start_time(spid).expect("sleep runs") + 4242,
            "command": name,
            "attached_unix_ms": 1_700_000_000_000u64,
        }));
    std::fs::write(&state, serde_json::to_string_pretty(&doc).expect("JSON")).expect("writing the state");

    let daemon = Daemon::start(&root, backend, &[&name], &flags);
    wait_reattached(&daemon, &name, &pids);
    wait_line(
        &daemon,
        &format!("removed the empty job cgroup {leftover} of an earlier run"),
    );
    root.assert_job_gone(&leftover);
    for &pid in &pids {
        assert!(root.holds_all_threads(pid, &job_of(&name, pid)), "{pid} left its job");
        assert_limits(&root, &name, pid);
    }
    assert_eq!(cgroup_file(spid), own_cgroups(), "the stranger was moved");
    root.assert_job_gone(&stranger_job);
    // The new daemon writes its own state: the three, not the stranger.
    wait_state_lists(&state, &name, &pids);

    // Governing goes on: a new target is adopted…
    let fresh = Target::sleeping(&path);
    daemon.wait_governed(&root, &name, &[fresh.pid()], POLL_TIMEOUT);
    // …and a re-attached one that ends is reported and its job removed.
    let ended = targets.remove(0);
    let ended_job = job_of(&name, ended.pid());
    let ended_pid = ended.pid();
    end(ended);
    wait_line(&daemon, &format!("Process {ended_pid} exited (job {ended_job}, "));
    wait_until(POLL_TIMEOUT, || {
        hierarchies.iter().all(|d| !d.join(&ended_job).exists())
    });
    root.assert_job_gone(&ended_job);

    let log = daemon.stop();
    assert_reattached_once(&log, &name, &pids);
    assert_attached_once(&log, &name, &[fresh.pid()]);
    assert!(
        log.contains(&format!("State saved to {}", state.display())),
        "log:\n{log}"
    );
    assert!(
        !log.contains(&format!("PID {spid} ")),
        "the stranger was considered; log:\n{log}"
    );
    assert_eq!(cgroup_file(spid), own_cgroups(), "the stranger was moved");
    assert!(stranger.running(), "the stranger died");
    root.assert_job_gone(&stranger_job);
}

/// Without a state file the cgroup tree alone is enough: after `kill -9`
/// the restarted daemon takes both targets back once, with their limits,
/// and reports one that exits.
#[test]
fn restart_without_a_state_file_takes_over_from_the_tree() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let path = stubs.sleep(&name);

    let daemon = Daemon::start(&root, backend, &[&name], &LIMITS);
    let mut targets: Vec<Target> = (0..2).map(|_| Target::sleeping(&path)).collect();
    let pids: Vec<u32> = targets.iter().map(Target::pid).collect();
    daemon.wait_governed(&root, &name, &pids, POLL_TIMEOUT);
    daemon.kill();

    let daemon = Daemon::start(&root, backend, &[&name], &LIMITS);
    wait_reattached(&daemon, &name, &pids);
    for &pid in &pids {
        assert!(root.holds_all_threads(pid, &job_of(&name, pid)), "{pid} left its job");
        assert_limits(&root, &name, pid);
    }
    let ended = targets.remove(0);
    let (ended_pid, ended_job) = (ended.pid(), job_of(&name, ended.pid()));
    end(ended);
    wait_line(&daemon, &format!("Process {ended_pid} exited (job {ended_job}, "));
    wait_until(POLL_TIMEOUT, || {
        root.all_dirs().iter().all(|d| !d.join(&ended_job).exists())
    });
    root.assert_job_gone(&ended_job);

    let log = daemon.stop();
    assert_reattached_once(&log, &name, &pids);
    assert!(
        root.holds_all_threads(pids[1], &job_of(&name, pids[1])),
        "stopping moved the target out"
    );
}

/// A crash between the hierarchies of a move. Fault injection makes the
/// daemon SIGKILL itself right after writing the target into the first
/// hierarchy of its job. On cgroup v1 the target is then in its cpu job
/// cgroup only: `status` says its memory limit is not in effect; an aged
/// job is still not garbage for another front door's start; the restarted
/// daemon completes the move (the target is in every hierarchy of its job,
/// with all its limits and nice), takes the job over once and reports it at
/// its end. On v2 (one hierarchy) the crash comes after the whole move and
/// the restart takes it over all the same.
#[test]
fn a_crash_between_the_hierarchies_of_a_move_is_completed_at_restart() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let path = stubs.sleep(&name);

    let crashing = Daemon::spawn_env(
        tests::ffrtmp_bin(),
        "info",
        &root,
        backend,
        &[&name],
        &LIMITS,
        &[("FFRTMP_FAULT", "crash-after-move:1")],
    );
    crashing.wait_ready();
    let target = Target::sleeping(&path);
    let (pid, job) = (target.pid(), job_of(&name, target.pid()));
    assert!(
        wait_until(POLL_TIMEOUT, || !crashing.proc.running()),
        "the fault point was never reached; log:\n{}",
        crashing.log()
    );
    let log = crashing.log();
    assert!(log.contains(&format!("Attaching to PID {pid} ")), "log:\n{log}");
    assert!(
        !log.contains("✓ Attached"),
        "it crashed before it could say so; log:\n{log}"
    );
    crashing.kill();

    let in_job = |c: tests::Controller| root.procs(c, &job).contains(&pid);
    let status = || tests::run_ffrtmp(&["status", "--json", "--cgroup-root", root.name()]).json();
    if host.version == Version::V1 {
        let moved: Vec<bool> = host.job_controllers().into_iter().map(in_job).collect();
        assert_eq!(moved, [true, false, false], "cpu, cpuacct, memory after the crash");
        let report = status();
        let entry = &report["jobs"][0];
        assert_eq!(entry["job_id"], job.as_str(), "{report}");
        assert_eq!(
            entry["limits"]["memory_max_bytes"],
            Value::Null,
            "not in effect: {report}"
        );
        let outside = entry["not_in_effect"].as_array().expect("an array");
        assert!(
            outside
                .iter()
                .any(|n| n["pid"] == pid && n["controllers"].to_string().contains("memory")),
            "{report}"
        );
        // Old enough for garbage collection, empty in two hierarchies of
        // three: another front door's start must leave all of it alone.
        let job_dirs: Vec<PathBuf> = host
            .job_controllers()
            .into_iter()
            .map(|c| root.job_dir(c, &job))
            .collect();
        for dir in &job_dirs {
            let old = std::time::SystemTime::now() - Duration::from_secs(120);
            std::fs::File::open(dir)
                .and_then(|f| f.set_modified(old))
                .unwrap_or_else(|e| panic!("aging {}: {e}", dir.display()));
        }
        let out = tests::run_ffrtmp(&["run", "--cgroup-root", root.name(), "--", "true"]);
        assert_eq!(out.code(), 0, "{}", out.stderr);
        for dir in &job_dirs {
            assert!(dir.exists(), "{} of the live job was removed as garbage", dir.display());
        }
    } else {
        assert!(in_job(tests::Controller::Cpu), "v2: one write, the whole move");
    }

    let daemon = Daemon::start(&root, backend, &[&name], &LIMITS);
    wait_reattached(&daemon, &name, &[pid]);
    assert!(
        root.holds_all_threads(pid, &job),
        "{pid} is not in every hierarchy of {job}"
    );
    assert_limits(&root, &name, pid);
    let report = status();
    assert_eq!(report["jobs"][0]["not_in_effect"], Value::Array(Vec::new()), "{report}");
    assert_eq!(report["jobs"][0]["limits"]["memory_max_bytes"], 64 << 20, "{report}");

    end(target);
    wait_line(&daemon, &format!("Process {pid} exited (job {job}, "));
    wait_until(POLL_TIMEOUT, || root.all_dirs().iter().all(|d| !d.join(&job).exists()));
    root.assert_job_gone(&job);
    let log = daemon.stop();
    assert_reattached_once(&log, &name, &[pid]);
    if host.version == Version::V1 {
        assert!(
            log.contains(&format!("job {job}: PID {pid} was not in ")),
            "the completion is logged; log:\n{log}"
        );
    }
}

/// Out of file descriptors, nothing is dropped: the daemon's open-file
/// limit is lowered (prlimit) to a few above what it holds, then 30
/// targets start. Those it cannot pin or even read fail with EMFILE, each
/// one logged. Once descriptors are available again (the limit restored),
/// the retry scan governs every remaining target, each exactly once.
#[test]
fn out_of_file_descriptors_targets_are_governed_once_fds_free_up() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let path = stubs.sleep(&name);
    let daemon = Daemon::start(&root, backend, &[&name], &LIMITS);

    let prlimit = |limit: &libc::rlimit, old: *mut libc::rlimit| {
        // SAFETY: prlimit on our own child with a valid rlimit and a valid
        // (or null) out-pointer.
        let rc = unsafe { libc::prlimit(daemon.pid() as libc::pid_t, libc::RLIMIT_NOFILE, limit, old) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    let open = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .expect("the daemon's fds")
        .count() as u64;
    // The soft limit only: restoring it later needs no privilege.
    let mut before = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading our own child's limit into a valid rlimit.
    let rc = unsafe {
        libc::prlimit(
            daemon.pid() as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut before,
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let tight = libc::rlimit {
        rlim_cur: open + 6,
        rlim_max: before.rlim_max,
    };
    prlimit(&tight, std::ptr::null_mut());

    let targets: Vec<Target> = (0..30).map(|_| Target::sleeping(&path)).collect();
    daemon.wait_log(POLL_TIMEOUT, "an EMFILE failure", |log| {
        log.contains("Too many open files")
    });
    // Let the first wave settle: some governed, the rest failed.
    std::thread::sleep(Duration::from_secs(1));
    let governed = |t: &&Target| root.holds_all_threads(t.pid(), &job_of(&name, t.pid()));
    let (first, rest): (Vec<&Target>, Vec<&Target>) = targets.iter().partition(governed);
    let log = daemon.log();
    assert!(
        !first.is_empty(),
        "none governed with {} fds; log:\n{}",
        tight.rlim_cur,
        tail(&log)
    );
    assert!(
        !rest.is_empty(),
        "all governed: the limit did not bite; log:\n{}",
        tail(&log)
    );
    for t in &rest {
        let pid = t.pid();
        assert!(
            log.contains(&format!("could not attach to PID {pid} ")) || log.contains("could not check PID"),
            "{pid} is neither governed nor reported; log:\n{log}"
        );
    }

    prlimit(&before, std::ptr::null_mut());
    let pids: Vec<u32> = targets.iter().map(Target::pid).collect();
    daemon.wait_governed(&root, &name, &pids, Duration::from_secs(30));
    let log = daemon.stop();
    assert_attached_once(&log, &name, &pids);
    assert!(log.contains("Discovered"), "the retry scan found them; log:\n{log}");
}

/// A second daemon on the same cgroup root refuses to start, naming the
/// first one's pid; the first goes on governing. Once the first is gone
/// (even by kill -9), a new one starts.
#[test]
fn a_second_daemon_on_the_same_root_refuses() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let path = stubs.sleep(&name);
    let first = Daemon::start(&root, backend, &[&name], &LIMITS);
    let second = Daemon::spawn(&root, backend, &[&name], &LIMITS).proc.wait(EXIT_TIMEOUT);
    assert_eq!(second.code(), 125, "{second:?}");
    let line = second.stderr.lines().last().unwrap_or_default();
    assert!(
        line.contains(&format!(
            "another ffrtmp watch (pid {}) already governs the cgroup root",
            first.pid()
        )),
        "{second:?}"
    );
    let target = Target::sleeping(&path);
    first.wait_governed(&root, &name, &[target.pid()], POLL_TIMEOUT);
    first.kill();
    let third = Daemon::start(&root, backend, &[&name], &LIMITS);
    wait_reattached(&third, &name, &[target.pid()]);
    drop(target);
    third.stop();
}

/// A configuration file others can write is refused at start (exit 125,
/// one line naming it) and on SIGHUP (the running configuration is kept).
#[test]
fn a_configuration_others_can_write_is_refused_at_start_and_on_reload() {
    use std::os::unix::fs::PermissionsExt;
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let name = unique_target();
    let file = ConfigFile::new(&format!("target_commands: [{name}]\n"));
    let open = |mode| std::fs::set_permissions(&file.path, std::fs::Permissions::from_mode(mode)).unwrap();
    open(0o666);
    let out = Daemon::spawn(&root, backend, &[], &["--watch-config", file.arg()])
        .proc
        .wait(EXIT_TIMEOUT);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "ffrtmp: error: refusing the watch configuration {}",
            file.arg()
        )),
        "{out:?}"
    );
    open(0o644);
    let daemon = start_with_config(&root, backend, &file, &[]);
    open(0o666);
    daemon.signal(Signal::SIGHUP);
    let log = wait_line(
        &daemon,
        "configuration reload failed, keeping the running configuration: ",
    );
    assert!(log.contains("refusing the watch configuration"), "log:\n{log}");
    daemon.stop();
}

// ---------------------------------------------------------------------------
// 5. Reload

/// The file of the reload tests: `targets`, cpu_quota `quota`.
fn quota_file(targets: &[&str], quota: &str) -> String {
    old_schema(targets, &[("cpu_quota", quota)], &[], &[])
}

/// SIGHUP with a new cpu_quota updates the running job (`limits updated`);
/// SIGHUP with an invalid file (an unknown key) is logged and changes
/// nothing: the daemon runs on, the job keeps its limit, and a target
/// started afterwards gets the last good configuration's limits.
#[test]
fn reload_updates_limits_and_survives_a_bad_file() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let path = stubs.sleep(&name);
    let file = ConfigFile::new(&quota_file(&[&name], "20"));
    // SIGHUP alone: with the file followed, each write would reload too.
    let daemon = start_with_config(&root, backend, &file, &["--no-follow-config"]);

    let first = Target::sleeping(&path);
    let (pid, job) = (first.pid(), job_of(&name, first.pid()));
    daemon.wait_governed(&root, &name, &[pid], POLL_TIMEOUT);
    assert_eq!(root.cpu_max(&job), "20000 100000");

    file.write(&quota_file(&[&name], "60"));
    daemon.signal(Signal::SIGHUP);
    wait_line(&daemon, &format!("PID {pid} (job: {job}): limits updated: "));
    wait_line(&daemon, "Configuration reloaded");
    assert_eq!(root.cpu_max(&job), "60000 100000", "{job} after the reload");

    let good = quota_file(&[&name], "60");
    file.write(&format!("{good}no_such_key: 1\n"));
    daemon.signal(Signal::SIGHUP);
    let log = wait_line(
        &daemon,
        "configuration reload failed, keeping the running configuration: ",
    );
    let line = log
        .lines()
        .find(|l| l.contains("configuration reload failed"))
        .expect("waited for it");
    assert!(
        line.contains("no_such_key") && line.contains(file.arg()),
        "the error names the key and the file: {line}"
    );
    assert!(daemon.proc.running(), "the daemon died of a bad file; log:\n{log}");
    assert_eq!(root.cpu_max(&job), "60000 100000", "{job} after the failed reload");

    let second = Target::sleeping(&path);
    daemon.wait_governed(&root, &name, &[second.pid()], POLL_TIMEOUT);
    assert_eq!(
        root.cpu_max(&job_of(&name, second.pid())),
        "60000 100000",
        "a new target gets the running configuration's limits"
    );
    assert_eq!(root.cpu_max(&job), "60000 100000");

    let log = daemon.stop();
    assert_eq!(
        count_lines_containing(&log, "Reloading configuration from "),
        2,
        "log:\n{log}"
    );
    assert_eq!(count_lines_containing(&log, "Configuration reloaded"), 1, "log:\n{log}");
    assert_eq!(
        count_lines_containing(&log, &format!("PID {pid} (job: {job}): limits updated: ")),
        1,
        "log:\n{log}"
    );
    assert_attached_once(&log, &name, &[pid, second.pid()]);
}

fn net_file(target: &str, egress: Option<&str>) -> String {
    let mut yaml =
        format!("scan_interval: \"200ms\"\ntarget_commands:\n  - \"{target}\"\ndefault_limits:\n  cpu_quota: 50\n");
    if let Some(rate) = egress {
        yaml.push_str(&format!("  net_egress_max: \"{rate}\"\n"));
    }
    yaml
}

/// A watch job's network limit: attached at adoption, its rate changed and
/// then removed by reloads, each read back from the kernel by `status`
/// (the rate in the bucket of the program attached to the job's cgroup2
/// directory, and none once it is detached).
#[test]
fn net_reload_changes_and_removes_a_network_limit() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let path = stubs.sleep(&name);
    let file = ConfigFile::new(&net_file(&name, Some("20mbit")));
    let daemon = start_with_config(&root, backend, &file, &["--no-follow-config"]);
    let target = Target::sleeping(&path);
    let (pid, job) = (target.pid(), job_of(&name, target.pid()));
    daemon.wait_governed(&root, &name, &[pid], POLL_TIMEOUT);
    let egress = || {
        let report = tests::run_ffrtmp(&["status", "--json", "--cgroup-root", root.name()]).json();
        let entry = report["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["job_id"] == job.as_str()).cloned())
            .unwrap_or_else(|| panic!("{job} not in {report}"));
        entry["limits"]["net_egress_max"].clone()
    };
    assert_eq!(egress(), "20mbit");

    file.write(&net_file(&name, Some("8mbit")));
    daemon.signal(Signal::SIGHUP);
    wait_line(&daemon, &format!("PID {pid} (job: {job}): limits updated: "));
    assert_eq!(egress(), "8mbit", "after the reload to 8mbit");

    file.write(&net_file(&name, None));
    daemon.signal(Signal::SIGHUP);
    let deadline = Instant::now() + POLL_TIMEOUT;
    while egress() != Value::Null && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(egress(), Value::Null, "the limit removed by a reload is detached");
    daemon.stop();
}

/// A ConfigMap volume as kubelet writes it: `watch.yaml -> ..data/watch.yaml`,
/// `..data -> ..<timestamp>`; an update is a new timestamped directory and a
/// symlink renamed over `..data`.
struct KubeletVolume {
    dir: tempfile::TempDir,
    generation: u32,
}

impl KubeletVolume {
    fn new(yaml: &str) -> KubeletVolume {
        let mut volume = KubeletVolume {
            dir: tempfile::tempdir().expect("a temp dir for the volume"),
            generation: 0,
        };
        volume.publish(yaml);
        std::os::unix::fs::symlink("..data/watch.yaml", volume.file()).expect("linking watch.yaml");
        volume
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("watch.yaml")
    }

    /// kubelet's update (AtomicWriter): write the new generation, swap
    /// `..data` to it with a rename, remove the old generation.
    fn publish(&mut self, yaml: &str) {
        let root = self.dir.path();
        let old = (self.generation > 0).then(|| root.join(format!("..gen_{}", self.generation)));
        self.generation += 1;
        let name = format!("..gen_{}", self.generation);
        std::fs::create_dir(root.join(&name)).expect("creating the new generation");
        std::fs::write(root.join(&name).join("watch.yaml"), yaml).expect("writing the new generation");
        std::os::unix::fs::symlink(&name, root.join("..data_tmp")).expect("linking ..data_tmp");
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swapping ..data");
        if let Some(old) = old {
            std::fs::remove_dir_all(old).expect("removing the old generation");
        }
    }
}

/// The configuration file is followed without SIGHUP: a kubelet-style
/// ConfigMap update changes a running job's limit; a broken update is
/// refused, the limit and the daemon stay, and `/metrics`
/// (`ffrtmp_config_last_reload_successful` 0) and `/healthz` (degraded,
/// `config_error` naming the key) say so; an editor's rename of a fixed file
/// over the link applies and clears both.
#[test]
fn a_changed_configuration_file_is_reloaded_without_sighup() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let path = stubs.sleep(&name);
    let mut volume = KubeletVolume::new(&quota_file(&[&name], "20"));
    let file = volume.file();
    let file_arg = file.to_str().expect("a UTF-8 temp path");
    let (daemon, addr) = start_with_metrics_and(&root, backend, &name, &["--watch-config", file_arg]);
    wait_line(&daemon, &format!("Following {file_arg}: "));

    let target = Target::sleeping(&path);
    let (pid, job) = (target.pid(), job_of(&name, target.pid()));
    daemon.wait_governed(&root, &name, &[pid], POLL_TIMEOUT);
    assert_eq!(root.cpu_max(&job), "20000 100000");

    volume.publish(&quota_file(&[&name], "60"));
    wait_until(POLL_TIMEOUT, || root.cpu_max(&job) == "60000 100000");
    assert_eq!(root.cpu_max(&job), "60000 100000", "{job} after the ConfigMap update");
    wait_line(&daemon, "Configuration reloaded");

    volume.publish(&format!("{}cpu_quot: 30\n", quota_file(&[&name], "30")));
    let log = wait_line(
        &daemon,
        "configuration reload failed, keeping the running configuration: ",
    );
    assert!(daemon.proc.running(), "the daemon died of a bad file; log:\n{log}");
    assert_eq!(root.cpu_max(&job), "60000 100000", "{job} after the refused update");
    let text = scrape(addr);
    assert_sample(&text, "ffrtmp_config_last_reload_successful", 0.0);
    assert_sample(&text, "ffrtmp_config_reloads_total{result=\"failed\"}", 1.0);
    let health = http_get(addr, "/healthz");
    assert_eq!(health.status, 200, "degraded still answers 200: {}", health.body);
    let report: Value = serde_json::from_str(&health.body).expect("/healthz is JSON");
    assert_eq!(report["status"], "degraded", "{}", health.body);
    assert!(
        report["config_error"].as_str().is_some_and(|e| e.contains("cpu_quot")),
        "config_error names the bad key: {}",
        health.body
    );

    // An editor's save: a new file renamed over the name (here over the link).
    let tmp = volume.dir.path().join(".watch.yaml.tmp");
    std::fs::write(&tmp, quota_file(&[&name], "40")).expect("writing the editor's file");
    std::fs::rename(&tmp, &file).expect("renaming it over watch.yaml");
    wait_until(POLL_TIMEOUT, || root.cpu_max(&job) == "40000 100000");
    assert_eq!(root.cpu_max(&job), "40000 100000", "{job} after the editor's save");
    wait_until(POLL_TIMEOUT, || {
        sample(&scrape(addr), "ffrtmp_config_last_reload_successful") == Some(1.0)
    });
    let health = http_get(addr, "/healthz");
    let report: Value = serde_json::from_str(&health.body).expect("/healthz is JSON");
    assert_eq!(report["status"], "healthy", "{}", health.body);
    assert_eq!(report["config_error"], Value::Null, "{}", health.body);

    let log = daemon.stop();
    let changed = |what: &str| {
        count_lines_containing(
            &log,
            &format!("Configuration file {file_arg} changed ({what}): reloading"),
        )
    };
    assert_eq!(
        (changed("..data"), changed("watch.yaml")),
        (2, 1),
        "one reload per update; log:\n{log}"
    );
    assert_eq!(
        count_lines_containing(&log, "Reloading configuration from "),
        3,
        "log:\n{log}"
    );
    assert_attached_once(&log, &name, &[pid]);
}

/// A name added to `target_commands` and SIGHUP: a process of that name
/// already running is governed (by the reload's scan), and one started
/// afterwards too (the event source's target list was updated).
fn reload_adds_new_targets(backend: Backend) {
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let (a, b) = (unique_target(), unique_target());
    let (path_a, path_b) = (stubs.sleep(&a), stubs.sleep(&b));
    let file = ConfigFile::new(&quota_file(&[&a], "20"));
    let daemon = start_with_config(&root, backend, &file, &[]);

    let early_b = Target::sleeping(&path_b);
    let ta = Target::sleeping(&path_a);
    daemon.wait_governed(&root, &a, &[ta.pid()], POLL_TIMEOUT);
    // B's exec came before A's: it has been seen and ignored.
    assert_not_moved(&root, &b, early_b.pid());

    file.write(&quota_file(&[&a, &b], "20"));
    daemon.signal(Signal::SIGHUP);
    wait_line(&daemon, "Configuration reloaded");
    daemon.wait_governed(&root, &b, &[early_b.pid()], POLL_TIMEOUT);
    let late_b = Target::sleeping(&path_b);
    daemon.wait_governed(&root, &b, &[late_b.pid()], POLL_TIMEOUT);
    for pid in [early_b.pid(), late_b.pid()] {
        assert_eq!(root.cpu_max(&job_of(&b, pid)), "20000 100000");
    }

    let log = daemon.stop();
    assert_attached_once(&log, &a, &[ta.pid()]);
    assert_attached_once(&log, &b, &[early_b.pid(), late_b.pid()]);
}

// ---------------------------------------------------------------------------
// 6. Metrics and health

/// Samples of `metric` for job `job`.
fn job_samples(text: &str, metric: &str, job: &str) -> usize {
    let label = format!("job_id=\"{job}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
        .count()
}

/// `/metrics` follows the daemon's life: nothing governed at first; two
/// adoptions of A, two governed, exec events counted, a per-job CPU series
/// for each job; when one exits, `ffrtmp_jobs_total` with the reason and
/// exit of its summary line, its series gone, the other's kept. `/healthz`
/// is a 200 `healthy`.
#[test]
fn metrics_and_health_follow_the_daemon() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let sh = stubs.sh(&name);
    let (daemon, addr) = start_with_metrics(&root, backend, &name);

    let text = scrape(addr);
    assert_sample(&text, "ffrtmp_governed_processes", 0.0);
    assert_sample(&text, "ffrtmp_reattached_total", 0.0);
    assert_sample(&text, "ffrtmp_config_reloads_total{result=\"failed\"}", 0.0);
    assert_sample(
        &text,
        &format!("ffrtmp_build_info{{version=\"{}\",backend=\"ebpf\"}}", ffrtmp_version()),
        1.0,
    );
    assert!(
        sample(&text, "ffrtmp_reconcile_scans_total{trigger=\"startup\"}").is_some_and(|n| n >= 1.0),
        "the startup scan is counted:\n{text}"
    );

    // Two targets that exit 0 when their stdin is closed.
    let read_line = || {
        Target::spawn(
            Command::new(&sh)
                .args(["-c", "read line; exit 0"])
                .stdin(Stdio::piped()),
        )
    };
    let mut first = read_line();
    let second = read_line();
    let (p1, p2) = (first.pid(), second.pid());
    let (j1, j2) = (job_of(&name, p1), job_of(&name, p2));
    daemon.wait_governed(&root, &name, &[p1, p2], POLL_TIMEOUT);
    daemon.wait_log(POLL_TIMEOUT, "two `✓ Attached` lines", |log| {
        log.contains(&format!("✓ Attached to PID {p1} (job: {j1})"))
            && log.contains(&format!("✓ Attached to PID {p2} (job: {j2})"))
    });

    let text = scrape(addr);
    assert_sample(
        &text,
        &format!("ffrtmp_adoptions_total{{command=\"{name}\",result=\"ok\"}}"),
        2.0,
    );
    assert_sample(&text, "ffrtmp_governed_processes", 2.0);
    let events = sample(&text, "ffrtmp_events_total{source=\"ebpf\"}");
    assert!(
        events.is_some_and(|n| n >= 2.0),
        "two exec events at least: {events:?}\n{text}"
    );
    for job in [&j1, &j2] {
        assert_eq!(
            job_samples(&text, "ffrtmp_job_cpu_seconds_total", job),
            1,
            "a CPU series for {job}:\n{text}"
        );
    }
    // Adoptions of processes found by a scan have no exec time to measure from.
    let log = daemon.log();
    let scanned: u64 = discovered(&log).iter().sum();
    let latency = sample(&text, "ffrtmp_adoption_latency_seconds_count").unwrap_or(0.0);
    assert!(
        latency >= 2.0 - scanned as f64,
        "adoption latency count {latency} for 2 adoptions ({scanned} found by a scan):\n{text}"
    );

    let health = http_get(addr, "/healthz");
    assert_eq!(health.status, 200, "/healthz: {}", health.body);
    let report: Value = serde_json::from_str(&health.body).expect("/healthz is JSON");
    assert_eq!(report["status"], "healthy", "/healthz: {}", health.body);
    assert!(health.body.contains("\"status\":\"healthy\""), "{}", health.body);

    // The first one exits 0 and is reaped.
    drop(first.stdin());
    let status = first.reap(POLL_TIMEOUT);
    assert!(status.success(), "{status}");
    let prefix = format!("JOB {j1} | ");
    let log = wait_line(&daemon, &prefix);
    let summary = log.lines().find(|l| l.contains(&prefix)).expect("waited for it");
    let field = |key: &str| -> String {
        summary
            .split(" | ")
            .find_map(|f| f.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {summary}"))
            .to_owned()
    };
    let (reason, exit) = (field("reason="), field("exit="));
    assert_eq!(
        (reason.as_str(), exit.as_str()),
        ("observed_to_completion", "0"),
        "{summary}"
    );
    let jobs_total = format!("ffrtmp_jobs_total{{command=\"{name}\",reason=\"{reason}\",exit=\"{exit}\"}}");
    let mut text = String::new();
    wait_until(POLL_TIMEOUT, || {
        text = scrape(addr);
        sample(&text, &jobs_total).is_some()
    });
    assert_sample(&text, &jobs_total, 1.0);
    assert_sample(&text, "ffrtmp_governed_processes", 1.0);
    assert_sample(
        &text,
        &format!("ffrtmp_adoptions_total{{command=\"{name}\",result=\"ok\"}}"),
        2.0,
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(&format!("job_id=\"{j1}\""))).count(),
        0,
        "{j1} ended: its series are gone:\n{text}"
    );
    assert_eq!(job_samples(&text, "ffrtmp_job_cpu_seconds_total", &j2), 1, "{text}");
    let latency = sample(&text, "ffrtmp_adoption_latency_seconds_count").unwrap_or(0.0);
    assert!(latency >= 2.0 - scanned as f64, "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");

    let health = http_get(addr, "/healthz");
    assert_eq!(health.status, 200, "/healthz: {}", health.body);
    assert!(health.body.contains("\"status\":\"healthy\""), "{}", health.body);
    drop(second);
    daemon.stop();
}

/// The version ffrtmp reports (`ffrtmp --version`: `ffrtmp X.Y.Z`).
fn ffrtmp_version() -> String {
    let out = tests::run_ffrtmp(&["--version"]);
    assert_eq!(out.code(), 0, "{out:?}");
    out.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("ffrtmp --version: {out:?}"))
        .to_owned()
}

/// `--metrics-listen` on a port already taken: ffrtmp exits non-zero with
/// one error line naming the address, and creates no cgroup.
#[test]
fn metrics_port_in_use_is_a_clear_error() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let taken = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let addr = taken.local_addr().expect("its address").to_string();
    let name = unique_target();
    let mut cmd = tests::ffrtmp(&["watch", "--cgroup-root", root.name(), "--target", &name]);
    cmd.args(backend.args()).args(["--metrics-listen", &addr]);
    let out = Spawned::start_with_stdin(cmd, Stdio::null()).wait(tests::EXIT_TIMEOUT);
    assert_ne!(out.code(), 0, "{out:?}");
    assert_eq!(out.code(), 125, "ffrtmp's own failures exit 125: {out:?}");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("ffrtmp: error: ") || l.contains(" error: ") || l.contains(" warning: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {out:?}");
    assert!(errors[0].contains(&addr), "the error names {addr}: {out:?}");
    assert_eq!(
        out.stderr.lines().last(),
        Some(errors[0]),
        "the error is the last line: {out:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    root.assert_nothing_created();
    drop(taken);
}

/// The daemon's file with `cpus`, `io_weight` and `io_class` for `target`.
fn cpuset_io_file(target: &str, cpus: &str, weight: &str, class: &str) -> String {
    format!(
        "scan_interval: \"200ms\"\ntarget_commands: [\"{target}\"]\ndefault_limits:\n  cpus: \"{cpus}\"\n  io_weight: {weight}\n  io_class: \"{class}\"\n"
    )
}

/// `cpus`, `io_weight` and `io_class` from the file govern a new target,
/// and a reload changes all three on the running job: the cpuset and
/// weight files, and the IO class of every thread (`ioprio_get`).
#[test]
fn reload_updates_cpus_io_weight_and_io_class() {
    let backend = Backend::Ebpf;
    let Some(host) = setup(backend) else { return };
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let path = stubs.sleep(&name);
    let file = ConfigFile::new(&cpuset_io_file(&name, "0", "50", "idle"));
    let daemon = start_with_config(&root, backend, &file, &["--no-follow-config"]);

    let target = Target::sleeping(&path);
    let (pid, job) = (target.pid(), job_of(&name, target.pid()));
    daemon.wait_governed(&root, &name, &[pid], POLL_TIMEOUT);
    let cpuset = root.job_dir(tests::Controller::Cpuset, &job);
    let io = root.job_dir(tests::Controller::Io, &job);
    let read = |p: PathBuf| std::fs::read_to_string(&p).map_or_else(|e| format!("<{e}>"), |s| s.trim().to_string());
    // The weight file this kernel has (v1 BFQ: N×5; v2 iocost: "default N").
    let weight_file = ["blkio.bfq.weight", "io.weight"]
        .into_iter()
        .find(|f| io.join(f).exists());
    let class_of_all = |raw: u16| {
        wait_until(POLL_TIMEOUT, || {
            tests::threads(pid).iter().all(|&t| tests::ioprio_of(t) == Some(raw))
        })
    };
    assert!(class_of_all(3 << 13), "not idle: {:?}", tests::threads(pid));
    assert_eq!(read(cpuset.join("cpuset.cpus")), "0");
    let weight = |v1: &str, v2: &str| match weight_file {
        Some("blkio.bfq.weight") => assert_eq!(read(io.join("blkio.bfq.weight")), v1),
        Some(f) => assert_eq!(read(io.join(f)).lines().next(), Some(v2)),
        None => {}
    };
    weight("250", "default 50");

    file.write(&cpuset_io_file(&name, "1", "200", "best-effort:2"));
    daemon.signal(Signal::SIGHUP);
    wait_line(&daemon, &format!("PID {pid} (job: {job}): limits updated: "));
    wait_line(&daemon, "Configuration reloaded");
    assert_eq!(read(cpuset.join("cpuset.cpus")), "1");
    weight("1000", "default 200");
    assert!(
        class_of_all((2 << 13) | 2),
        "not best-effort:2: {:?}",
        tests::threads(pid)
    );

    let log = daemon.stop();
    if weight_file.is_none() {
        assert!(log.contains("io_weight=50: the kernel offers none of"), "log:\n{log}");
    }
    assert_attached_once(&log, &name, &[pid]);
}
