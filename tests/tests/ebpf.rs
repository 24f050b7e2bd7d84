//! Privileged tests of the eBPF event source against the real kernel (root,
//! BTF, BPF): exec events with the right identity, exactly one exit per
//! governed process (also when the leader exits first), nothing for
//! non-targets, drops counted when the ring is full. They skip with
//! `skipping: <reason>` when a precondition is missing, and fail under CI=true.
//! Each test uses its own target name so tests running in parallel never see
//! each other's processes.

use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ffrtmp::events::btf;
use ffrtmp::events::ebpf::{ARGV0_LEN, EbpfSource, Event, KernelErrors};

const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);
/// Env var that turns the `probe_helper` test into a workload.
const PROBE_ENV: &str = "FFRTMP_EBPF_PROBE";

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("page size")
}

/// `skipping: <reason>` and `false`, or a panic under CI=true.
fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let reason = if unsafe { libc::geteuid() } != 0 {
        "not root: loading eBPF programs needs CAP_BPF and CAP_PERFMON"
    } else if !Path::new(btf::VMLINUX_BTF).exists() {
        "no kernel BTF at /sys/kernel/btf/vmlinux"
    } else {
        return true;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and a privileged test cannot run: {reason}");
    }
    let _ = writeln!(std::io::stderr(), "skipping: {reason}");
    false
}

/// A copy of `from` at `dir/name` (exec'ing it gives comm `name`).
fn probe(dir: &Path, name: &str, from: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("creating the probe dir");
    let to = dir.join(name);
    tests::copy_executable(from, &to);
    to
}

/// Reads events until one satisfies `found`; returns it and everything read.
async fn wait_for(source: &mut EbpfSource, what: &str, found: impl Fn(&Event) -> bool) -> (Event, Vec<Event>) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let from = seen.len();
        match tokio::time::timeout_at(deadline, source.next(&mut seen, 64)).await {
            Ok(r) => {
                r.expect("reading the ring buffer");
            }
            Err(_) => panic!("no {what} within {WAIT:?}; saw {seen:?}"),
        }
        if let Some(e) = seen[from..].iter().find(|e| found(e)) {
            return (*e, seen);
        }
    }
}

/// Everything that arrives within [`QUIET`].
async fn collect_quiet(source: &mut EbpfSource) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + QUIET;
    while let Ok(r) = tokio::time::timeout_at(deadline, source.next(&mut seen, 1024)).await {
        r.expect("reading the ring buffer");
    }
    seen
}

/// `/proc/<pid>/stat` field 22 (starttime, clock ticks since boot).
fn proc_start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/<pid>/stat");
    // comm may hold spaces and ')': the fields resume after the last ')'.
    let rest = &stat[stat.rfind(')').expect("')' in stat") + 1..];
    // rest starts at field 3 (state): field 22 is index 19.
    rest.split_whitespace()
        .nth(19)
        .expect("field 22")
        .parse()
        .expect("numeric starttime")
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).expect("_SC_CLK_TCK")
}

fn exits_of(events: &[Event], pid: u32) -> Vec<Event> {
    events
        .iter()
        .filter(|e| e.kind == Event::EXIT && e.pid == pid)
        .copied()
        .collect()
}

#[tokio::test]
async fn exec_and_exit_events() {
    if !privileged() {
        return;
    }
    const TARGET: &str = "ffrtmp-probe-x";
    let tmp = tempfile::tempdir().expect("tempdir");
    let sleep = probe(tmp.path(), TARGET, Path::new("/bin/sleep"));
    let sh = probe(&tmp.path().join("sh"), TARGET, Path::new("/bin/sh"));
    let other = probe(tmp.path(), "ffrtmp-probe-y", Path::new("/bin/true"));
    let helper = probe(
        &tmp.path().join("threads"),
        TARGET,
        &std::env::current_exe().expect("the test binary"),
    );

    let started = Instant::now();
    let mut source = EbpfSource::load(&[TARGET], 64 * 1024).expect("loading the eBPF source");
    eprintln!("load + attach: {:?}", started.elapsed());

    // 1. A target exec: pid, tid, ppid, uid, comm, start time.
    let mut child = Command::new(&sleep).arg("30").spawn().expect("spawning the probe");
    let pid = child.id();
    let (exec, _) = wait_for(&mut source, "EXEC of the sleep probe", |e| {
        e.kind == Event::EXEC && e.pid == pid
    })
    .await;
    assert_eq!(exec.comm_name(), TARGET.as_bytes());
    assert_eq!(exec.tid, pid);
    assert_eq!(exec.ppid, std::process::id());
    // SAFETY: getuid has no preconditions.
    assert_eq!(exec.uid, unsafe { libc::getuid() });
    assert_eq!(exec.exit_status, 0);
    assert_eq!(exec.start_time_ticks(clk_tck()), proc_start_ticks(pid), "{exec:?}");
    assert_eq!(exec.argv0(), Some(sleep.as_os_str().as_bytes()), "{exec:?}");
    child.kill().expect("killing the sleep probe");
    child.wait().expect("reaping the sleep probe");

    // argv[0] as the caller set it, up to ARGV0_LEN - 2 bytes (a string
    // that fills the buffer reads like a cut one); a longer one is unknown.
    let longest = "y".repeat(ARGV0_LEN - 2);
    let too_long = "x".repeat(ARGV0_LEN - 1);
    for (arg0, carried) in [("ffmpeg", true), (longest.as_str(), true), (too_long.as_str(), false)] {
        let mut child = Command::new(&sleep)
            .arg0(arg0)
            .arg("30")
            .spawn()
            .expect("spawning the probe");
        let pid = child.id();
        let (exec, _) = wait_for(&mut source, "EXEC of the renamed probe", |e| {
            e.kind == Event::EXEC && e.pid == pid
        })
        .await;
        let expected = carried.then_some(arg0.as_bytes());
        assert_eq!(exec.argv0(), expected, "argv[0] of {} bytes: {exec:?}", arg0.len());
        child.kill().expect("killing the probe");
        child.wait().expect("reaping the probe");
    }

    // 2. Non-target execs, and the exit of a pid nobody governs: nothing.
    let other_pid = {
        let mut c = Command::new(&other).spawn().expect("spawning the non-target");
        let p = c.id();
        c.wait().expect("reaping the non-target");
        p
    };
    Command::new("/bin/true").status().expect("running /bin/true");
    let quiet = collect_quiet(&mut source).await;
    assert!(
        !quiet.iter().any(|e| e.pid == other_pid || e.pid == pid),
        "non-target exec or ungoverned exit reported: {quiet:?}"
    );

    // 3. A governed target exits with status 3: exactly one EXIT.
    let mut shell = Command::new(&sh)
        .args(["-c", "read line; exit 3"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawning the sh probe");
    let pid = shell.id();
    let (exec, _) = wait_for(&mut source, "EXEC of the sh probe", |e| {
        e.kind == Event::EXEC && e.pid == pid
    })
    .await;
    source.govern(pid).expect("govern");
    assert!(source.is_governed(pid).unwrap());
    drop(shell.stdin.take()); // EOF: `read` returns, `exit 3` runs
    let (exit, mut seen) = wait_for(&mut source, "EXIT of the sh probe", |e| {
        e.kind == Event::EXIT && e.pid == pid
    })
    .await;
    seen.extend(collect_quiet(&mut source).await);
    assert_eq!(exits_of(&seen, pid).len(), 1, "{seen:?}");
    assert_eq!(exit.exit_status, 3 << 8, "{exit:?}");
    assert_eq!(exit.tid, pid);
    assert_eq!(exit.start_time_ns, exec.start_time_ns);
    assert_eq!(exit.ppid, std::process::id());
    assert_eq!(exit.comm_name(), TARGET.as_bytes());
    assert_eq!(shell.wait().expect("reaping the sh probe").code(), Some(3));
    assert!(!source.is_governed(pid).unwrap(), "the kernel removes a reported pid");
    source.forget(pid).expect("forgetting an already reported pid is fine");

    // 4. Multi-threaded, the leader exits first: still exactly one EXIT,
    //    from the last thread, with the group's status.
    let mut threads = Command::new(&helper)
        .args(["--exact", "probe_helper", "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, "leader-exits-first")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawning the threaded probe");
    let pid = threads.id();
    wait_for(&mut source, "EXEC of the threaded probe", |e| {
        e.kind == Event::EXEC && e.pid == pid
    })
    .await;
    source.govern(pid).expect("govern");
    drop(threads.stdin.take());
    let (exit, mut seen) = wait_for(&mut source, "EXIT of the threaded probe", |e| {
        e.kind == Event::EXIT && e.pid == pid
    })
    .await;
    seen.extend(collect_quiet(&mut source).await);
    assert_eq!(exits_of(&seen, pid).len(), 1, "{seen:?}");
    assert_ne!(exit.tid, pid, "the last thread is not the leader: {exit:?}");
    assert_eq!(exit.exit_status, 5 << 8, "{exit:?}");
    assert_eq!(threads.wait().expect("reaping the threaded probe").code(), Some(5));

    assert_eq!(source.drops(), 0);
    assert_eq!(source.kernel_errors().unwrap(), KernelErrors::default());
    assert_eq!(source.decode_errors(), 0);
}

/// The workload of step 4 above, when run with [`PROBE_ENV`] set (a no-op
/// test otherwise): waits for EOF on stdin, makes the thread group leader
/// exit alone (`SYS_exit` from a signal handler on the leader), then
/// exits the group with status 5 from another thread.
#[test]
fn probe_helper() {
    if std::env::var(PROBE_ENV).as_deref() != Ok("leader-exits-first") {
        return;
    }
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    extern "C" fn leader_exit(_: libc::c_int) {
        // SAFETY: exits only the calling thread (the leader); async-signal-safe.
        unsafe { libc::syscall(libc::SYS_exit, 0) };
    }
    let last = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: exit_group(5): ends the process, which is the point.
        unsafe { libc::_exit(5) }
    });
    // SAFETY: installs a handler and signals the leader thread (tid == pid).
    unsafe {
        let handler: extern "C" fn(libc::c_int) = leader_exit;
        libc::signal(libc::SIGUSR1, handler as libc::sighandler_t);
        let pid = libc::getpid();
        libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGUSR1);
    }
    let _ = last.join();
}

#[tokio::test]
async fn a_full_ring_counts_drops() {
    if !privileged() {
        return;
    }
    const TARGET: &str = "ffrtmp-probe-d";
    const EXECS: u64 = 200;
    let tmp = tempfile::tempdir().expect("tempdir");
    let exe = probe(tmp.path(), TARGET, Path::new("/bin/true"));
    let mut source = EbpfSource::load(&[TARGET], 4096).expect("loading the eBPF source");
    assert_eq!(source.ring_bytes(), 4096.max(page_size()));
    for _ in 0..EXECS {
        Command::new(&exe).status().expect("running the probe");
    }
    let drops = source.drops();
    let received = collect_quiet(&mut source).await;
    let ours = received.iter().filter(|e| e.comm_name() == TARGET.as_bytes()).count() as u64;
    eprintln!(
        "{EXECS} execs into a {} byte ring: {ours} received, {drops} dropped",
        source.ring_bytes()
    );
    assert!(drops > 0, "a 4 KiB ring cannot hold {EXECS} events");
    assert_eq!(ours + drops, EXECS, "every exec is either delivered or counted");
    assert_eq!(source.kernel_errors().unwrap(), KernelErrors::default());
}

#[tokio::test]
async fn without_offsets_nothing_is_emitted_and_it_is_counted() {
    if !privileged() {
        return;
    }
    const TARGET: &str = "ffrtmp-probe-n";
    let tmp = tempfile::tempdir().expect("tempdir");
    let exe = probe(tmp.path(), TARGET, Path::new("/bin/true"));
    let mut source = EbpfSource::load_with(&[TARGET], 4096, None).expect("loading the eBPF source");
    Command::new(&exe).status().expect("running the probe");
    let received = collect_quiet(&mut source).await;
    assert!(received.is_empty(), "{received:?}");
    assert!(source.kernel_errors().unwrap().no_offsets >= 1);
}

#[tokio::test]
async fn set_targets_replaces_the_filter() {
    if !privileged() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = probe(tmp.path(), "ffrtmp-probe-a", Path::new("/bin/true"));
    let b = probe(tmp.path(), "ffrtmp-probe-b", Path::new("/bin/true"));
    let mut source = EbpfSource::load(&["ffrtmp-probe-a"], 4096).expect("loading the eBPF source");
    source
        .set_targets(&["ffrtmp-probe-b", "ffrtmp-probe-b-but-longer-than-15"])
        .expect("set_targets");
    Command::new(&a).status().expect("running probe a");
    Command::new(&b).status().expect("running probe b");
    let received = collect_quiet(&mut source).await;
    let names: Vec<&[u8]> = received.iter().map(|e| e.comm_name()).collect();
    assert_eq!(names, [b"ffrtmp-probe-b".as_slice()], "{received:?}");
}
