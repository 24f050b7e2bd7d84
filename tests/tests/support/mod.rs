//! What the `ffrtmp watch` test files share (`mod support;`): the event
//! backends and one `#[test]` per backend ([`for_backends!`]), unique target
//! names and their stub executables ([`Stubs`]), targets killed by PID when
//! dropped ([`Target`]), the daemon under test ([`Daemon`]) and assertions on
//! its log and on the jobs' cgroups.
//!
//! Each test file uses part of it.
#![allow(dead_code, unused_macros, unused_imports)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tests::{
    EXIT_TIMEOUT, Host, POLL_TIMEOUT, Signal, Spawned, TestRoot, nice_of, proc_state, skip, threads, wait_until,
};

/// How long many targets (a burst of 200, a reconcile) may take to be governed.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(30);
/// The poll backend's period in these tests.
pub const SCAN_INTERVAL: &str = "200ms";
/// Set in the environment of this test binary when it runs as a

// ---------------------------------------------------------------------------
// One test per backend

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Ebpf,
    Netlink,
    Poll,
}

impl Backend {
    pub fn from_name(name: &str) -> Backend {
        match name {
            "ebpf" => Backend::Ebpf,
            "netlink" => Backend::Netlink,
            "poll" => Backend::Poll,
            other => panic!("unknown backend {other}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Ebpf => "ebpf",
            Backend::Netlink => "netlink",
            Backend::Poll => "poll",
        }
    }

    /// The `ffrtmp watch` flags selecting this backend.
    pub fn args(self) -> Vec<&'static str> {
        let mut args = vec!["--backend", self.name()];
        if self == Backend::Poll {
            args.extend_from_slice(&["--scan-interval", SCAN_INTERVAL]);
        }
        args
    }

    /// Why this backend cannot work on this host, if it cannot.
    pub fn unavailable(self) -> Option<String> {
        match self {
            Backend::Ebpf => (!Path::new("/sys/kernel/btf/vmlinux").exists())
                .then(|| "the ebpf backend needs BTF (/sys/kernel/btf/vmlinux), which this kernel lacks".into()),
            Backend::Netlink => proc_connector_unavailable(),
            Backend::Poll => None,
        }
    }
}

/// Can we bind to the proc connector's multicast group? (It is silently
/// dead outside the initial user namespace, so check that too.)
pub fn proc_connector_unavailable() -> Option<String> {
    const NETLINK_CONNECTOR: libc::c_int = 11;
    const CN_IDX_PROC: u32 = 1;
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    if uid_map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"] {
        return Some(format!(
            "the proc connector only works in the initial user namespace (uid_map {uid_map:?})"
        ));
    }
    // SAFETY: plain socket/bind/close on an fd we own; `addr` is a valid sockaddr_nl.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_CONNECTOR,
        );
        if fd < 0 {
            return Some(format!(
                "no proc connector (socket(NETLINK_CONNECTOR): {})",
                std::io::Error::last_os_error()
            ));
        }
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = CN_IDX_PROC;
        let rc = libc::bind(
            fd,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        );
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        (rc != 0).then(|| format!("cannot bind to the proc connector: {error}"))
    }
}

/// The host, when this backend's privileged tests can run; `None` after
/// `skipping: <reason>` (a panic under `CI=true`).
pub fn setup(backend: Backend) -> Option<&'static Host> {
    let host = tests::privileged()?;
    if let Some(reason) = backend.unavailable() {
        skip(&reason);
        return None;
    }
    Some(host)
}

/// `for_backends! { scenario: [ebpf, netlink, poll]; … }` makes a module per
/// scenario with one `#[test]` per listed backend calling `scenario(backend)`.
macro_rules! for_backends {
    ($($scenario:ident: [$($backend:ident),+ $(,)?];)+) => {
        $(
            mod $scenario {
                $(
                    #[test]
                    fn $backend() {
                        super::$scenario($crate::support::Backend::from_name(stringify!($backend)));
                    }
                )+
            }
        )+
    };
}

// ---------------------------------------------------------------------------
// Targets

/// A target name unique to this test process and test, ≤ 15 bytes (so the
/// kernel's comm is the whole name), with room for a suffix.
pub fn unique_target() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("ft{:x}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    assert!(name.len() <= 13, "target name {name} too long");
    name
}

/// A temp dir of stub executables, removed on drop.
pub struct Stubs {
    pub dir: tempfile::TempDir,
}

impl Stubs {
    pub fn new() -> Stubs {
        Stubs {
            dir: tempfile::tempdir().expect("a temp dir for the stubs"),
        }
    }

    /// Copy `from` to `<dir>/<subdir>/<name>` (mode kept), then run it once
    /// with `probe` (argv[0] `stub-probe`, never a target) until it execs.
    ///
    /// While we write the copy, a parallel test's fork can inherit our
    /// write fd until its exec closes it; exec'ing the copy meanwhile fails
    /// with ETXTBSY. Once one exec has succeeded the copy has no writer left.
    #[track_caller]
    pub fn install_in(&self, subdir: &str, name: &str, from: &Path, probe: &[&str]) -> PathBuf {
        let dir = self.dir.path().join(subdir);
        std::fs::create_dir_all(&dir).expect("creating the stub dir");
        let path = dir.join(name);
        std::fs::copy(from, &path).unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), path.display()));
        let deadline = Instant::now() + POLL_TIMEOUT;
        loop {
            let mut cmd = Command::new(&path);
            cmd.arg0("stub-probe")
                .args(probe)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            match cmd.status() {
                Ok(status) => {
                    assert!(status.success(), "{cmd:?}: {status}");
                    return path;
                }
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{cmd:?}: {e}"),
            }
        }
    }

    /// `/bin/sleep` under `name`.
    pub fn sleep(&self, name: &str) -> PathBuf {
        self.install_in("bin", name, Path::new("/bin/sleep"), &["0"])
    }

    /// `/bin/sh` under `name`.
    pub fn sh(&self, name: &str) -> PathBuf {
        self.install_in("bin", name, Path::new("/bin/sh"), &["-c", ":"])
    }

    /// This test binary under `name` (see [`threaded_stub`]).
    pub fn this_test(&self, name: &str) -> PathBuf {
        let exe = std::env::current_exe().expect("this test binary");
        self.install_in("bin", name, &exe, &["--list"])
    }
}

/// A process we started. Dropping it SIGKILLs and reaps it: safe by PID,
/// since an unreaped child's number cannot be reused (and `Child::kill` does
/// nothing once it has been reaped).
pub struct Target {
    pub child: Child,
}

impl Target {
    #[track_caller]
    pub fn spawn(cmd: &mut Command) -> Target {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        // `spawn` returns after the exec succeeded: argv[0] and comm are set.
        Target { child }
    }

    /// `path 600` (a sleep stub), long-lived; stdin closed.
    #[track_caller]
    pub fn sleeping(path: &Path) -> Target {
        Target::spawn(Command::new(path).arg("600").stdin(Stdio::null()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin is piped")
    }

    /// Reap it the moment it exits, as a parent blocked in wait() would: a
    /// pidfd wakes us when it dies (at most `timeout`), then we reap at once.
    #[track_caller]
    pub fn reap(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.pid();
        // SAFETY: pidfd_open on our own unreaped child; the fd is closed below.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
        assert!(pidfd >= 0, "pidfd_open({pid}): {}", std::io::Error::last_os_error());
        let mut fds = [libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd; then closing the fd we opened.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        let status = self.child.try_wait();
        // SAFETY: closing the pidfd we opened above.
        unsafe { libc::close(pidfd) };
        match status {
            Ok(Some(status)) => status,
            Ok(None) => panic!("target {pid} did not exit within {timeout:?} (poll: {ready})"),
            Err(e) => panic!("waiting for {pid}: {e}"),
        }
    }

    /// Still running (not a zombie)?
    pub fn running(&self) -> bool {
        proc_state(self.pid()).is_some_and(|s| s != 'Z')
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The daemon

/// A running `ffrtmp watch`, its stderr (the log) captured.
pub struct Daemon {
    pub proc: Spawned,
    pub backend: Backend,
}

impl Daemon {
    /// Start `ffrtmp watch` with our root, backend and targets, plus `flags`.
    /// Does not wait for it to be ready.
    pub fn spawn(root: &TestRoot, backend: Backend, targets: &[&str], flags: &[&str]) -> Daemon {
        Daemon::spawn_as(tests::ffrtmp_bin(), root, backend, targets, flags)
    }

    /// The same, with `program` (the ffrtmp binary under another name) as argv[0].
    pub fn spawn_as(program: &Path, root: &TestRoot, backend: Backend, targets: &[&str], flags: &[&str]) -> Daemon {
        Daemon::spawn_logging(program, "info", root, backend, targets, flags)
    }

    /// The same, logging at `FFRTMP_LOG=<log>` (e.g. `info,ffrtmp::watch::daemon=debug`).
    pub fn spawn_logging(
        program: &Path,
        log: &str,
        root: &TestRoot,
        backend: Backend,
        targets: &[&str],
        flags: &[&str],
    ) -> Daemon {
        Daemon::spawn_env(program, log, root, backend, targets, flags, &[])
    }

    /// The same, with more environment variables (e.g. `FFRTMP_FAULT`).
    pub fn spawn_env(
        program: &Path,
        log: &str,
        root: &TestRoot,
        backend: Backend,
        targets: &[&str],
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut cmd = Command::new(program);
        cmd.envs(env.iter().copied());
        cmd.args(["watch", "--cgroup-root", root.name()])
            .args(backend.args())
            .env_remove("FFRTMP_CGROUP_ROOT")
            .env("FFRTMP_LOG", log);
        for t in targets {
            cmd.args(["--target", t]);
        }
        cmd.args(flags);
        Daemon {
            proc: Spawned::start_with_stdin(cmd, Stdio::null()),
            backend,
        }
    }

    /// Start it and wait until it is ready (subscribed; the catch-up scan started).
    #[track_caller]
    pub fn start(root: &TestRoot, backend: Backend, targets: &[&str], flags: &[&str]) -> Daemon {
        let daemon = Daemon::spawn(root, backend, targets, flags);
        daemon.wait_ready();
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn log(&self) -> String {
        self.proc.stderr_now()
    }

    pub fn ready(&self) -> bool {
        self.log().contains("Event source:")
    }

    /// Wait for the `Event source: <backend> (…)` line.
    #[track_caller]
    pub fn wait_ready(&self) {
        self.wait_log(POLL_TIMEOUT, "the `Event source:` line", |log| {
            log.contains("Event source:")
        });
        let log = self.log();
        let source = format!("Event source: {} (", self.backend.name());
        assert!(log.contains(&source), "expected {source:?}; log:\n{log}");
    }

    /// Wait until the log satisfies `cond`; panics (with the log) at the
    /// deadline or if the daemon exits first.
    #[track_caller]
    pub fn wait_log(&self, timeout: Duration, what: &str, cond: impl Fn(&str) -> bool) -> String {
        wait_until(timeout, || cond(&self.log()) || !self.proc.running());
        let log = self.log();
        assert!(
            cond(&log),
            "{} daemon: no {what} within {timeout:?} (running: {}); log:\n{}",
            self.backend.name(),
            self.proc.running(),
            tail(&log)
        );
        log
    }

    /// Wait until every pid sits (all its threads) in its `auto-<name>-<pid>` cgroup.
    #[track_caller]
    pub fn wait_governed(&self, root: &TestRoot, name: &str, pids: &[u32], timeout: Duration) {
        let ungoverned = || -> Vec<u32> {
            pids.iter()
                .copied()
                .filter(|&p| !root.holds_all_threads(p, &job_of(name, p)))
                .collect()
        };
        wait_until(timeout, || ungoverned().is_empty() || !self.proc.running());
        let left = ungoverned();
        assert!(
            left.is_empty(),
            "{} daemon: {} of {} target(s) not governed within {timeout:?}: {left:?} (daemon running: {}); log:\n{}",
            self.backend.name(),
            left.len(),
            pids.len(),
            self.proc.running(),
            tail(&self.log())
        );
    }

    pub fn signal(&self, sig: Signal) {
        self.proc.signal(sig);
    }

    /// SIGINT; it must exit 0 with `Service stopped gracefully`. Its whole log.
    #[track_caller]
    pub fn stop(self) -> String {
        self.proc.signal(Signal::SIGINT);
        let out = self.proc.wait(EXIT_TIMEOUT);
        assert_eq!(
            out.status.code(),
            Some(0),
            "SIGINT: expected exit 0; log:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("Received signal interrupt, shutting down..."),
            "log:\n{}",
            out.stderr
        );
        assert!(
            out.stderr
                .lines()
                .last()
                .is_some_and(|l| l.contains("Service stopped gracefully")),
            "the last line should be `Service stopped gracefully`; log:\n{}",
            out.stderr
        );
        out.stderr
    }

    /// SIGKILL and reap it.
    pub fn kill(self) {
        self.proc.kill();
    }
}

/// The last lines of a long log.
pub fn tail(log: &str) -> String {
    const LINES: usize = 80;
    let lines: Vec<&str> = log.lines().collect();
    let skipped = lines.len().saturating_sub(LINES);
    let shown = lines[skipped..].join("\n");
    if skipped > 0 {
        format!("[… {skipped} lines …]\n{shown}")
    } else {
        shown
    }
}

pub fn job_of(name: &str, pid: u32) -> String {
    format!("auto-{name}-{pid}")
}

/// How many log lines end with `suffix`.
pub fn count_lines_ending(log: &str, suffix: &str) -> usize {
    log.lines().filter(|l| l.ends_with(suffix)).count()
}

/// Each pid was attached exactly once, as `auto-<name>-<pid>`.
#[track_caller]
pub fn assert_attached_once(log: &str, name: &str, pids: &[u32]) {
    let wrong: Vec<String> = pids
        .iter()
        .filter_map(|&pid| {
            let job = job_of(name, pid);
            let attaching = count_lines_ending(log, &format!("Attaching to PID {pid} ({name}) as job {job}"));
            let attached = count_lines_ending(log, &format!("✓ Attached to PID {pid} (job: {job})"));
            (attaching != 1 || attached != 1).then(|| format!("{pid}: {attaching} Attaching, {attached} ✓ Attached"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "not attached exactly once: {wrong:?}; log:\n{}",
        tail(log)
    );
}

/// The N of every `<prefix>N<suffix>` line, e.g. `Discovered N new process(es)`.
pub fn numbers_in(log: &str, prefix: &str, suffix: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find(prefix)? + prefix.len()..];
            rest.strip_suffix(suffix)?.trim().parse().ok()
        })
        .collect()
}

pub fn discovered(log: &str) -> Vec<u64> {
    numbers_in(log, "Discovered ", " new process(es)")
}

/// The counts of the `N process event(s) lost; reconciling …` lines.
pub fn lost_counts(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            let (before, _) = l.split_once(" process event(s) lost; reconciling")?;
            before.split_whitespace().last()?.parse().ok()
        })
        .collect()
}

/// `/proc/<pid>/cgroup`, whole.
#[track_caller]
pub fn cgroup_file(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_else(|e| panic!("/proc/{pid}/cgroup: {e}"))
}

/// The limits every governed target gets in these tests.
pub const LIMITS: [&str; 6] = ["--cpu-quota", "20", "--memory-limit", "64", "--nice", "4"];

/// The job of `pid` has [`LIMITS`] in the kernel's files, and every thread
/// nice 4 (renicing follows the move: waited for, with a deadline).
#[track_caller]
pub fn assert_limits(root: &TestRoot, name: &str, pid: u32) {
    let job = job_of(name, pid);
    wait_until(POLL_TIMEOUT, || {
        threads(pid).iter().all(|&t| nice_of(pid, t) == Some(4))
    });
    // v1 cpu.cfs_quota_us 20000 + cpu.cfs_period_us 100000, or v2 cpu.max.
    assert_eq!(root.cpu_max(&job), "20000 100000", "CPU limit of {job}");
    assert_eq!(root.memory_max(&job), Some(64 << 20), "memory limit of {job}");
    let nices: Vec<(u32, Option<i32>)> = threads(pid).iter().map(|&t| (t, nice_of(pid, t))).collect();
    assert!(
        !nices.is_empty() && nices.iter().all(|(_, n)| *n == Some(4)),
        "every thread of {pid} should be nice 4: {nices:?}"
    );
}

// ---------------------------------------------------------------------------
// HTTP on 127.0.0.1: the metrics endpoint, and Prometheus (prometheus.rs)

/// A port on 127.0.0.1 nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("its address").port()
}

/// The daemon serving metrics on a free port of 127.0.0.1 (should another
/// process take the port between our probe and its bind, another one is
/// tried), ready, with its `Serving` line; and the address.
#[track_caller]
pub fn start_with_metrics(root: &TestRoot, backend: Backend, name: &str) -> (Daemon, SocketAddr) {
    start_with_metrics_and(root, backend, name, &[])
}

/// [`start_with_metrics`] with more flags.
#[track_caller]
pub fn start_with_metrics_and(root: &TestRoot, backend: Backend, name: &str, flags: &[&str]) -> (Daemon, SocketAddr) {
    for _ in 0..5 {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let listen = addr.to_string();
        let mut args = vec!["--metrics-listen", listen.as_str()];
        args.extend_from_slice(flags);
        let daemon = Daemon::spawn(root, backend, &[name], &args);
        wait_until(POLL_TIMEOUT, || {
            daemon.log().contains("Serving /metrics") || !daemon.proc.running()
        });
        let log = daemon.log();
        if log.contains(&format!("listening for metrics on {listen}")) && !daemon.proc.running() {
            continue;
        }
        daemon.wait_ready();
        let serving = format!("Serving /metrics and /healthz on http://{listen}");
        daemon.wait_log(POLL_TIMEOUT, &format!("line containing {serving:?}"), |log| {
            log.contains(&serving)
        });
        return (daemon, addr);
    }
    panic!("no free port for the metrics endpoint after 5 tries");
}

/// `/metrics`, checked to be a 200.
#[track_caller]
pub fn scrape(addr: SocketAddr) -> String {
    let reply = http_get(addr, "/metrics");
    assert_eq!(reply.status, 200, "GET /metrics: {}", reply.body);
    reply.body
}

/// The value of the sample `series` (name and labels exactly as exported).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| match l.rsplit_once(' ') {
            Some((s, v)) if s == series => v.parse().ok(),
            _ => None,
        })
}

#[track_caller]
pub fn assert_sample(text: &str, series: &str, expected: f64) {
    assert_eq!(sample(text, series), Some(expected), "{series}; /metrics:\n{text}");
}

/// A response: the status code, the head and the body.
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Send `request` (a whole HTTP/1.x request) and read the answer until the
/// server closes the connection.
pub fn http_request(addr: SocketAddr, request: &str) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, POLL_TIMEOUT)?;
    stream.set_read_timeout(Some(POLL_TIMEOUT))?;
    stream.set_write_timeout(Some(POLL_TIMEOUT))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let raw = String::from_utf8(raw).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {raw:?}"));
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(|| bad("no header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    Ok(Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// The Content-Length of a response head.
pub fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// `GET path` over HTTP/1.1 with a plain socket (ffrtmp's responder closes
/// the connection after one answer); its Content-Length must be the body's.
#[track_caller]
pub fn http_get(addr: SocketAddr, path: &str) -> Reply {
    let reply = http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    assert_eq!(
        content_length(&reply.head),
        Some(reply.body.len()),
        "Content-Length vs the body: {}",
        reply.head
    );
    reply
}

/// `GET path` as HTTP/1.0: Go's server (Prometheus) chunks longer answers to
/// HTTP/1.1 clients, never to 1.0 ones, and closes after the body.
pub fn http10_get(addr: SocketAddr, path: &str) -> std::io::Result<Reply> {
    http_request(addr, &format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n"))
}

/// `POST path` as HTTP/1.0 with `form` as an `application/x-www-form-urlencoded` body.
pub fn http10_post_form(addr: SocketAddr, path: &str, form: &[(&str, &str)]) -> std::io::Result<Reply> {
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect();
    let body = body.join("&");
    http_request(
        addr,
        &format!(
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// Percent-encoding of everything but the unreserved characters (RFC 3986).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
