//! Integrations (root only): the watch service embedded as a library (the
//! crate's own `embed_watch` example, built as the `embed-watch` stub), and
//! the JSON-lines event stream of `ffrtmp watch --events`.
//!
//! Targets are copies of `/bin/sh` and `/bin/sleep` under a name unique to
//! the test, so nothing else on the machine matches them; every test has its
//! own relative cgroup root.

use std::collections::BTreeSet;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tests::{EXIT_TIMEOUT, Host, POLL_TIMEOUT, Signal, Spawned, TestRoot, Value, skip, stub_bin, wait_until};

/// A target name unique to this process and test (≤ 15 bytes: all of comm).
fn unique_target() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("fi{:x}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// `from` copied to `<dir>/<name>`, run once (argv[0] `probe`, never a
/// target) until it execs: a parallel fork may briefly hold our write fd,
/// which makes exec fail with ETXTBSY.
#[track_caller]
fn install(dir: &Path, name: &str, from: &str, probe: &[&str]) -> PathBuf {
    let path = dir.join(name);
    tests::copy_executable(Path::new(from), &path);
    let deadline = Instant::now() + POLL_TIMEOUT;
    loop {
        match Command::new(&path).arg0("probe").args(probe).status() {
            Ok(st) => {
                assert!(st.success(), "probing {}: {st}", path.display());
                return path;
            }
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("running {}: {e}", path.display()),
        }
    }
}

/// Our child; killed and reaped on drop (safe by pid while unreaped).
struct Target(Child);

impl Target {
    fn start(cmd: &mut Command) -> Target {
        Target(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting a target"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn wait(&mut self) -> std::process::ExitStatus {
        self.0.wait().expect("reaping a target")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The host, when privileged tests and the ebpf backend can run here;
/// `None` after `skipping:` (a panic under CI=true).
fn ebpf_host() -> Option<&'static Host> {
    let host = tests::privileged()?;
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        skip("the ebpf backend needs BTF (/sys/kernel/btf/vmlinux)");
        return None;
    }
    Some(host)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// The crate's example embeds the service: it governs a target and reports
/// the attach and then the detach with the target's real exit code.
#[test]
fn the_example_embeds_the_service() {
    let Some(host) = ebpf_host() else { return };
    let root = TestRoot::new(host);
    let dir = tempfile::tempdir().expect("a temp dir");
    let name = unique_target();
    let sh = install(dir.path(), &name, "/bin/sh", &["-c", ":"]);

    // The root through the environment, as for `ffrtmp watch`.
    let mut cmd = Command::new(stub_bin("embed-watch"));
    cmd.args([name.as_str(), "--cpu-quota", "50", "--detaches", "1"])
        .env("FFRTMP_CGROUP_ROOT", root.name());
    let example = Spawned::start_with_stdin(cmd, Stdio::null());
    example.wait_for_stdout(r#""event":"started""#);

    // Governed while it sleeps, then exits 7.
    let mut target = Target::start(Command::new(&sh).args(["-c", "sleep 1; exit 7"]));
    let pid = target.pid();
    let job = format!("auto-{name}-{pid}");
    assert!(
        wait_until(POLL_TIMEOUT, || root.holds_all_threads(pid, &job)),
        "the example did not govern {pid}; stdout: {}",
        example.stdout_now()
    );
    assert_eq!(target.wait().code(), Some(7));

    let out = example.wait(EXIT_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    let events = json_lines(&out.stdout);
    let attached = events
        .iter()
        .find(|e| e["event"] == "attached" && e["pid"] == pid)
        .unwrap_or_else(|| panic!("no attached event for {pid}: {events:?}"));
    assert_eq!(attached["job_id"], job.as_str());
    assert_eq!(attached["command"], name.as_str());
    assert_eq!(attached["reattached"], false);
    assert_eq!(attached["limits"][0]["limit"], "cpu_max");
    assert_eq!(attached["limits"][0]["value"], "50000 100000");
    assert!(attached["limits"][0].get("error").is_none(), "{attached}");
    let detached = events
        .iter()
        .find(|e| e["event"] == "detached")
        .unwrap_or_else(|| panic!("no detached event: {events:?}"));
    assert_eq!(detached["result"]["pid"], pid);
    assert_eq!(detached["result"]["job_id"], job.as_str());
    assert_eq!(detached["result"]["exit_code"], 7, "{detached}");
    assert_eq!(detached["result"]["mode"], "watch");
    root.assert_job_gone(&job);
}

/// A running `ffrtmp watch --events …`.
fn watch_with_events(root: &TestRoot, name: &str, events: &Path, extra: &[&str]) -> Spawned {
    let mut cmd = tests::ffrtmp(&[
        "watch",
        "--backend",
        "ebpf",
        "--cgroup-root",
        root.name(),
        "--target",
        name,
    ]);
    cmd.arg("--events").arg(events).args(extra).env("FFRTMP_LOG", "info");
    let daemon = Spawned::start_with_stdin(cmd, Stdio::null());
    assert!(
        wait_until(POLL_TIMEOUT, || daemon.stderr_now().contains("Event source:")
            || !daemon.running()),
        "the daemon did not start: {}",
        daemon.stderr_now()
    );
    assert!(daemon.running(), "{}", daemon.stderr_now());
    daemon
}

/// A JSON type test such as `Value::is_string`.
type IsType = fn(&Value) -> bool;

/// Every line of the stream is a JSON object with the documented envelope
/// and, per kind, the documented fields (docs/events.md).
#[track_caller]
fn check_schema(lines: &[Value]) {
    let kinds: BTreeSet<&str> = [
        "started",
        "attached",
        "detached",
        "attach_failed",
        "filtered",
        "limits_updated",
        "events_lost",
        "reconciled",
        "reloaded",
        "events_dropped",
        "stopped",
    ]
    .into();
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["schema"], 1, "{line}");
        assert_eq!(line["seq"], i as u64 + 1, "seq is 1, 2, 3, …: {line}");
        assert!(line["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
        let kind = line["event"]
            .as_str()
            .unwrap_or_else(|| panic!("no event kind: {line}"));
        assert!(kinds.contains(kind), "undocumented event {kind}: {line}");
        let fields: &[(&str, IsType)] = match kind {
            "started" => &[
                ("backend", Value::is_string),
                ("reason", Value::is_string),
                ("targets", Value::is_array),
            ],
            "attached" => &[
                ("job_id", Value::is_string),
                ("pid", Value::is_u64),
                ("start_time", Value::is_u64),
                ("command", Value::is_string),
                ("reattached", Value::is_boolean),
                ("limits", Value::is_array),
            ],
            "detached" => &[("command", Value::is_string), ("result", Value::is_object)],
            "reconciled" => &[("trigger", Value::is_string), ("found", Value::is_u64)],
            "events_dropped" => &[("count", Value::is_u64), ("total", Value::is_u64)],
            "stopped" => &[("governed", Value::is_u64)],
            _ => &[],
        };
        for (field, is_type) in fields {
            assert!(
                is_type(&line[*field]),
                "{kind}.{field} missing or of the wrong type: {line}"
            );
        }
    }
}

/// `--events FILE`: one JSON object per line, the documented schema, the
/// attach and the detach with the real exit code, `stopped` last.
#[test]
fn event_stream_follows_the_schema() {
    let Some(host) = ebpf_host() else { return };
    let root = TestRoot::new(host);
    let dir = tempfile::tempdir().expect("a temp dir");
    let name = unique_target();
    let sh = install(dir.path(), &name, "/bin/sh", &["-c", ":"]);
    let events = dir.path().join("events.jsonl");
    let daemon = watch_with_events(&root, &name, &events, &["--cpu-quota", "40"]);
    let read = || std::fs::read_to_string(&events).unwrap_or_default();
    // After the start-up scan, the target is found by its exec alone (so
    // its attached event has the latency, measured from the exec).
    assert!(
        wait_until(POLL_TIMEOUT, || read()
            .contains(r#""event":"reconciled","trigger":"startup""#)),
        "no start-up scan in the stream: {}",
        read()
    );

    let mut target = Target::start(Command::new(&sh).args(["-c", "sleep 0.5; exit 3"]));
    let pid = target.pid();
    assert_eq!(target.wait().code(), Some(3));
    assert!(
        wait_until(POLL_TIMEOUT, || read().contains(r#""event":"detached""#)),
        "no detached line; stream: {}; log: {}",
        read(),
        daemon.stderr_now()
    );
    daemon.signal(Signal::SIGINT);
    let out = daemon.wait(EXIT_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);

    let lines = json_lines(&read());
    check_schema(&lines);
    assert_eq!(lines[0]["event"], "started");
    assert_eq!(lines[0]["backend"], "ebpf");
    let attached = lines
        .iter()
        .find(|l| l["event"] == "attached")
        .expect("an attached line");
    assert_eq!(attached["pid"], pid);
    assert_eq!(attached["limits"][0]["value"], "40000 100000");
    // Started after the daemon: its exec was seen, so the latency is there,
    // split at the move, the parts within the whole.
    let latency = |key: &str| {
        attached["latency"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("latency.{key} missing: {attached}"))
    };
    let (total, before, moving) = (latency("total_us"), latency("before_move_us"), latency("move_us"));
    assert!(before + moving <= total, "{attached}");
    let detached = lines
        .iter()
        .find(|l| l["event"] == "detached")
        .expect("a detached line");
    assert_eq!(detached["result"]["exit_code"], 3);
    assert_eq!(detached["result"]["pid"], pid);
    assert_eq!(lines.last().unwrap()["event"], "stopped");
}

/// A reader that never reads does not delay adoption: with the stream a
/// named pipe whose reader stalls, targets keep being governed (checked by
/// cgroup membership), and the lines that did not fit are dropped, counted
/// and reported once the reader reads again.
#[test]
fn a_stalled_reader_never_delays_adoption() {
    let Some(host) = ebpf_host() else { return };
    let root = TestRoot::new(host);
    let dir = tempfile::tempdir().expect("a temp dir");
    let name = unique_target();
    let sleep = install(dir.path(), &name, "/bin/sleep", &["0"]);
    let fifo = dir.path().join("events");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    // The reader: opened (so the writer can open), shrunk to one page, and
    // not read until the end.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("opening the fifo for reading");
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on an fd we own.
    let size = unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(size > 0, "F_SETPIPE_SZ: {}", std::io::Error::last_os_error());

    let daemon = watch_with_events(&root, &name, &fifo, &["--events-buffer", "4"]);
    // Short jobs: each writes an attached and a detached line (the detached
    // one carries the whole job result), far more than the pipe holds.
    for _ in 0..30 {
        let mut t = Target::start(Command::new(&sleep).arg("0.05"));
        t.wait();
    }
    // Now the writer is stuck and the queue full: a new target must still
    // be governed.
    let long = Target::start(Command::new(&sleep).arg("600"));
    let job = format!("auto-{name}-{}", long.pid());
    assert!(
        wait_until(POLL_TIMEOUT, || root.holds_all_threads(long.pid(), &job)),
        "a target was not governed while the event reader stalled; log: {}",
        daemon.stderr_now()
    );
    drop(long);

    // Read everything; the daemon stops meanwhile and the writer reports
    // the drops it has not reported yet.
    let mut text = Vec::new();
    let mut stopped = false;
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        use std::io::Read;
        let mut buf = [0u8; 65536];
        match reader.read(&mut buf) {
            Ok(0) if stopped => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("reading the fifo: {e}"),
        }
        if !stopped && String::from_utf8_lossy(&text).matches('\n').count() > 8 {
            daemon.signal(Signal::SIGINT);
            stopped = true;
        }
        assert!(
            Instant::now() < deadline,
            "the stream did not end; got: {}",
            String::from_utf8_lossy(&text)
        );
    }
    let out = daemon.wait(EXIT_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let lines = json_lines(&String::from_utf8(text).expect("UTF-8 lines"));
    check_schema(&lines);
    let dropped: u64 = lines
        .iter()
        .filter(|l| l["event"] == "events_dropped")
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    assert!(dropped > 0, "no drops reported although the reader stalled: {lines:?}");
    let totals: Vec<u64> = lines
        .iter()
        .filter(|l| l["event"] == "events_dropped")
        .map(|l| l["total"].as_u64().unwrap())
        .collect();
    assert_eq!(totals.last().copied(), Some(dropped), "counts add up to the total");
}
