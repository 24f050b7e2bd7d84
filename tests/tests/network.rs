//! `--net-egress-max` / `--net-ingress-max` against real TCP traffic
//! (every test is named `net_…`: the VM suite runs them in a boot of their
//! own, see scripts/test-all)
//! between two network namespaces joined by a veth pair, which each test
//! creates and removes (`ip netns`); nothing leaves them.
//!
//! The devices keep their default qdisc (noqueue), so egress is policed,
//! with the job's TCP connections paced at the rate by the sock_ops
//! program; pacing with `fq` is not exercised here (this host's kernel has
//! no `sch_fq`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

mod support;

use ffrtmp::net::{Hook, bpf};
use tests::{
    EXIT_TIMEOUT, POLL_TIMEOUT, Signal, Spawned, TestRoot, Value, Version, ffrtmp_bin, privileged, stub_bin, wait_until,
};

/// iproute2's `ip` (in the VM guest busybox has an `ip` too, earlier on
/// PATH, without `netns`).
fn ip() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("-V")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("iproute2"))
        })
        .expect("iproute2's ip (the VM suite includes it: --include ip)")
}

/// iproute2's `tc`, like [`ip`].
fn tc() -> &'static str {
    ["/usr/sbin/tc", "/sbin/tc", "/usr/bin/tc", "/bin/tc"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("iproute2's tc (the VM suite includes it: --include tc)")
}

/// Two namespaces `<base>a`/`<base>b`, 10.<n>.0.1 and .2 on a veth pair.
struct NetPair {
    a: String,
    b: String,
    /// The device in `a`.
    dev_a: String,
    addr_b: String,
    addr_a: String,
}

impl NetPair {
    fn new() -> NetPair {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base = format!("fft{}x{n}", std::process::id() % 100_000);
        let subnet = 100 + (std::process::id() % 100) as u8 + n as u8;
        let pair = NetPair {
            a: format!("{base}a"),
            b: format!("{base}b"),
            dev_a: format!("{base}va"),
            addr_a: format!("10.{subnet}.0.1"),
            addr_b: format!("10.{subnet}.0.2"),
        };
        let (va, vb) = (format!("{base}va"), format!("{base}vb"));
        for args in [
            vec!["netns", "add", &pair.a],
            vec!["netns", "add", &pair.b],
            vec!["link", "add", &va, "type", "veth", "peer", "name", &vb],
            vec!["link", "set", &va, "netns", &pair.a],
            vec!["link", "set", &vb, "netns", &pair.b],
            vec!["-n", &pair.a, "addr", "add", &format!("{}/24", pair.addr_a), "dev", &va],
            vec!["-n", &pair.b, "addr", "add", &format!("{}/24", pair.addr_b), "dev", &vb],
            vec!["-n", &pair.a, "link", "set", &va, "up"],
            vec!["-n", &pair.b, "link", "set", &vb, "up"],
            vec!["-n", &pair.a, "link", "set", "lo", "up"],
            vec!["-n", &pair.b, "link", "set", "lo", "up"],
        ] {
            let status = Command::new(ip()).args(&args).status().expect("running ip");
            assert!(status.success(), "ip {args:?}: {status}");
        }
        pair
    }

    /// `cmd` runs in namespace `ns` (setns before exec; the mount namespace
    /// stays, so the cgroup file systems stay visible).
    fn inside<'c>(&self, ns: &str, cmd: &'c mut Command) -> &'c mut Command {
        let file = std::fs::File::open(Path::new("/run/netns").join(ns)).expect("opening the netns");
        // SAFETY: setns(2) in the forked child before exec, no allocation;
        // the moved-in file keeps the descriptor open until then.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Removing a namespace removes its end of the veth, and so both.
        for ns in [&self.a, &self.b] {
            let _ = Command::new(ip()).args(["netns", "del", ns]).status();
        }
    }
}

/// `net-blast ARGS`, under `ffrtmp ARGS --` when `via` gives them.
fn blast(via: Option<&[String]>, args: &[&str]) -> Command {
    let blast = stub_bin("net-blast");
    let mut cmd = match via {
        Some(ffrtmp_args) => {
            let mut c = Command::new(ffrtmp_bin());
            c.args(ffrtmp_args).arg("--").arg(&blast);
            c
        }
        None => Command::new(&blast),
    };
    cmd.args(args).env_remove("FFRTMP_CGROUP_ROOT");
    cmd
}

/// `ffrtmp run --cgroup-root ROOT FLAG RATE [--json]`, for [`blast`].
fn run_with(root: &TestRoot, flag: &str, rate: &str, json: bool) -> Vec<String> {
    let mut args: Vec<String> = ["run", "--cgroup-root", root.name(), flag, rate]
        .map(String::from)
        .to_vec();
    if json {
        args.push("--json".into());
    }
    args
}

/// A receiver in `ns` on `port`; returns it once it listens.
fn receiver(pair: &NetPair, ns: &str, port: u16, via: Option<Vec<String>>) -> std::process::Child {
    let mut cmd = blast(via.as_deref(), &["recv", &port.to_string()]);
    let mut child = pair
        .inside(ns, &mut cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the receiver");
    let mut line = String::new();
    let stdout = child.stdout.as_mut().expect("piped");
    let mut reader = BufReader::new(stdout);
    reader.read_line(&mut line).expect("reading the receiver");
    assert!(line.contains("listening"), "receiver said {line:?}");
    child
}

/// The rate (bit/s) the receiver measured, from its last output line.
fn measured(child: std::process::Child) -> (f64, String) {
    let out = child.wait_with_output().expect("waiting for the receiver");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = stdout
        .lines()
        .find(|l| l.contains("rate_bps"))
        .unwrap_or_else(|| panic!("no rate: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    let v: serde_json::Value = serde_json::from_str(line).expect("receiver JSON");
    (v["rate_bps"].as_f64().expect("rate_bps"), stdout)
}

fn sender(pair: &NetPair, ns: &str, to: &str, port: u16, secs: u32, via: Option<Vec<String>>) -> std::process::Output {
    let mut cmd = blast(via.as_deref(), &["send", &format!("{to}:{port}"), &secs.to_string()]);
    pair.inside(ns, &mut cmd).output().expect("running the sender")
}

fn within(rate: f64, limit: f64) -> bool {
    (rate - limit).abs() <= 0.1 * limit
}

/// What the path carries with no limit, from `from` to `to` (2 s).
fn unlimited_rate(pair: &NetPair, from: &str, to: &str, to_addr: &str) -> f64 {
    let recv = receiver(pair, to, 5009, None);
    let out = sender(pair, from, to_addr, 5009, 2, None);
    assert!(out.status.success(), "{out:?}");
    measured(recv).0
}

/// `got` is within 10 % of `limit` where the path can carry twice the
/// limit; where it cannot (the emulated VM, whose TCP tops out near a few
/// hundred Mbit/s), at most the limit: the limit cannot be shown reached.
/// In the emulated guest the path must carry ten times the limit: its
/// throughput is CPU-bound and moves with the host's load between the
/// capacity run and this one (a 6.12 guest beside another lane measured
/// 175.7 of 200 Mbit/s after a capacity run well above 400).
///
/// Above the limit fails at once. Below it, `Slow` asks for the flow again
/// ([`MEASURES`] tries in all): the path itself was slower at that moment
/// than in the capacity run (a CPU-bound emulated guest beside another
/// lane, or a loaded host: 14.2 of 20 Mbit/s in a 5.10 guest, 167 of 200
/// on the host), which says nothing about the limit. A limit that holds
/// the rate too low is below the mark in every try, and fails.
fn assert_rate(got: f64, limit: f64, capacity: f64, what: &str, last_try: bool) -> Rate {
    eprintln!(
        "note: {limit:.0} bit/s limit: measured {got:.0} bit/s ({:+.1} %)",
        (got / limit - 1.0) * 100.0
    );
    let headroom = if tests::in_vm_guest() { 10.0 } else { 2.0 };
    if capacity >= headroom * limit {
        assert!(got <= 1.1 * limit, "measured {got:.0} bit/s, above the limit: {what}");
        if !within(got, limit) {
            assert!(!last_try, "measured {got:.0} bit/s in every try: {what}");
            eprintln!("note: below the limit; measuring again");
            return Rate::Slow;
        }
    } else {
        eprintln!(
            "note: the path carries {capacity:.0} bit/s unlimited, under {headroom}x the limit here: {limit:.0} is checked as an upper bound"
        );
        assert!(got <= 1.1 * limit, "measured {got:.0} bit/s: {what}");
    }
    Rate::Held
}

/// How many times a flow under a limit is measured at most ([`assert_rate`]).
const MEASURES: usize = 3;

#[derive(PartialEq)]
enum Rate {
    Held,
    Slow,
}

/// Two 4 s flows at once over `(from, to, to_addr)`, on ports `port` and
/// `port + 1`: the first under `ffrtmp run` at its sending end, its
/// receiving end or both (`limited`: their arguments, a 20mbit limit), the
/// second unlimited. The limited one gets at most the rate (the solo runs
/// show it is reached; beside a flow that takes every CPU, as in the
/// emulated VM, it may get less, never more). The unlimited one gets far
/// more, and, on real CPUs, at least half of what the path carried to it
/// alone (`alone`). In the emulated VM guest the path is CPU-bound (both
/// vCPUs on one host thread): any second flow takes from it, limited or not
/// (a 5.10 guest once gave 1.47 of 3.82 Gbit/s), so there only "far more"
/// holds.
fn assert_beside(
    pair: &NetPair,
    (from, to, to_addr): (&str, &str, &str),
    limited: (Option<Vec<String>>, Option<Vec<String>>),
    port: u16,
    alone: f64,
    who: &str,
) {
    let (via_sender, via_receiver) = limited;
    let limited_recv = receiver(pair, to, port, via_receiver);
    let free_recv = receiver(pair, to, port + 1, None);
    std::thread::scope(|s| {
        let a = s.spawn(|| sender(pair, from, to_addr, port, 4, via_sender));
        let b = s.spawn(|| sender(pair, from, to_addr, port + 1, 4, None));
        assert!(a.join().expect("the limited flow's sender").status.success());
        assert!(b.join().expect("the free flow's sender").status.success());
    });
    let (got_limited, _) = measured(limited_recv);
    let (got, _) = measured(free_recv);
    eprintln!("note: beside each other: limited {got_limited:.0} bit/s, unlimited {got:.0} bit/s (alone {alone:.0})");
    assert!(got_limited <= 20e6 * 1.1, "limited beside free: {got_limited:.0} bit/s");
    assert!(
        got > 200e6,
        "the unlimited {who} got only {got:.0} bit/s (alone {alone:.0})"
    );
    if !tests::in_vm_guest() {
        assert!(
            got >= 0.5 * alone,
            "the unlimited {who} got only {got:.0} bit/s beside the limited one (alone {alone:.0})"
        );
    }
}

/// The JSON result of `ffrtmp run --json`.
fn result(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "run --json: {e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn net_egress_is_held_to_the_rate_and_an_unlimited_sender_is_not() {
    let Some(host) = privileged() else { return };
    let root = TestRoot::new(host);
    let pair = NetPair::new();
    let capacity = unlimited_rate(&pair, &pair.a, &pair.b, &pair.addr_b);
    for (rate, bits) in [("2mbit", 2e6), ("20mbit", 20e6), ("200mbit", 200e6)] {
        let mut attempt = 0;
        let out = loop {
            attempt += 1;
            let recv = receiver(&pair, &pair.b, 5001, None);
            let args = run_with(&root, "--net-egress-max", rate, true);
            let out = sender(&pair, &pair.a, &pair.addr_b, 5001, 5, Some(args));
            assert!(out.status.success(), "{out:?}");
            let (got, said) = measured(recv);
            if assert_rate(got, bits, capacity, &format!("{rate}: {said}"), attempt == MEASURES) == Rate::Held {
                break out;
            }
        };
        let r = result(&out);
        let applied = &r["limits"]["applied"][0];
        assert_eq!(applied["limit"], "net_egress_max", "{r}");
        assert_eq!(applied["value"], rate, "{r}");
        let egress = &r["usage"]["network"]["egress"];
        let passed = egress["passed_bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no counters: {r}"));
        assert!(
            passed as f64 >= bits / 8.0 * 4.0,
            "{rate}: the program counted {passed} bytes: {r}"
        );
        // The job's cgroup2 directory (and so its programs) went with it.
        let dir = applied["files"][0].as_str().expect("the cgroup2 dir");
        assert!(!Path::new(dir).exists(), "{dir} left behind");
    }
    let args = run_with(&root, "--net-egress-max", "20mbit", false);
    assert_beside(
        &pair,
        (&pair.a, &pair.b, &pair.addr_b),
        (Some(args), None),
        5002,
        capacity,
        "sender",
    );
}

/// With fq on the device, egress is paced (departure times); on a kernel
/// without `sch_fq` (this host's) the qdisc cannot be set and the other
/// branch is asserted: policing, saying so, still at the rate.
#[test]
fn net_egress_paces_where_the_device_has_fq() {
    let Some(host) = privileged() else { return };
    let root = TestRoot::new(host);
    let pair = NetPair::new();
    let fq = Command::new(tc())
        .args(["-n", &pair.a, "qdisc", "replace", "dev", &pair.dev_a, "root", "fq"])
        .status()
        .expect("running tc")
        .success();
    let recv = receiver(&pair, &pair.b, 5005, None);
    let args = run_with(&root, "--net-egress-max", "20mbit", true);
    let out = sender(&pair, &pair.a, &pair.addr_b, 5005, 5, Some(args));
    assert!(out.status.success(), "{out:?}");
    let (got, said) = measured(recv);
    let r = result(&out);
    let note = r["limits"]["applied"][0]["note"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(within(got, 20e6), "fq={fq}: measured {got:.0} bit/s ({note}): {said}");
    if fq {
        assert_eq!(note, format!("pacing: fq on {}", pair.dev_a), "{r}");
        let delayed = r["usage"]["network"]["egress"]["delayed_packets"].as_u64().unwrap_or(0);
        assert!(delayed > 0, "pacing delayed no packet: {r}");
    } else {
        assert!(
            note.starts_with(&format!("policing: {} has noqueue, not fq", pair.dev_a)),
            "{r}"
        );
    }
}

/// `ffrtmp run --json`'s result in the output of a workload that printed
/// lines of its own first: the pretty-printed document from its first `{`
/// line to the end.
fn result_after_output(stdout: &str) -> serde_json::Value {
    let at = stdout
        .find("\n{\n")
        .unwrap_or_else(|| panic!("no run --json result in {stdout}"));
    serde_json::from_str(&stdout[at + 1..]).unwrap_or_else(|e| panic!("run --json: {e}: {stdout}"))
}

/// Ingress at 2, 20 and 200 mbit, each with its counters in the result;
/// then a limited receiver beside an unlimited one.
#[test]
fn net_ingress_is_policed_to_the_rate_and_an_unlimited_receiver_is_not() {
    let Some(host) = privileged() else { return };
    let root = TestRoot::new(host);
    let pair = NetPair::new();
    let capacity = unlimited_rate(&pair, &pair.b, &pair.a, &pair.addr_a);
    for (rate, bits) in [("2mbit", 2e6), ("20mbit", 20e6), ("200mbit", 200e6)] {
        let mut attempt = 0;
        let said = loop {
            attempt += 1;
            let args = run_with(&root, "--net-ingress-max", rate, true);
            let recv = receiver(&pair, &pair.a, 5004, Some(args));
            let out = sender(&pair, &pair.b, &pair.addr_a, 5004, 5, None);
            assert!(out.status.success(), "{out:?}");
            let (got, said) = measured(recv);
            let what = format!("{rate} ingress: {said}");
            if assert_rate(got, bits, capacity, &what, attempt == MEASURES) == Rate::Held {
                break said;
            }
        };
        let r = result_after_output(&said);
        let applied = &r["limits"]["applied"][0];
        assert_eq!(applied["limit"], "net_ingress_max", "{r}");
        assert_eq!(applied["value"], rate, "{r}");
        let network = &r["usage"]["network"];
        let passed = network["ingress"]["passed_bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no ingress counters: {r}"));
        // What the receiver got in 5 s at no less than 80 % of the rate
        // (less where the emulated path cannot carry it).
        let floor = bits.min(capacity) / 8.0 * 5.0 * 0.8;
        assert!(
            passed as f64 >= floor,
            "{rate}: the program counted {passed} bytes, expected at least {floor:.0}: {r}"
        );
        assert_eq!(network["egress"], Value::Null, "no egress limit: {r}");
    }
    let args = run_with(&root, "--net-ingress-max", "20mbit", false);
    assert_beside(
        &pair,
        (&pair.b, &pair.a, &pair.addr_a),
        (None, Some(args)),
        5012,
        capacity,
        "receiver",
    );
}

/// A job's cgroup2 directory, where its network programs are attached
/// (`None`: the host has no cgroup2 mount).
fn cgroup2_job_dir(root: &TestRoot, job: &str) -> Option<std::path::PathBuf> {
    let mount = root.host().mounts.iter().find(|m| m.v2)?;
    Some(mount.own_dir.join(root.name()).join(job))
}

/// The ids of the programs attached to `dir` for each network hook.
fn programs_on(dir: &Path) -> Vec<(Hook, Vec<u32>)> {
    let cgroup = std::fs::File::open(dir).unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()));
    [Hook::Egress, Hook::Ingress, Hook::SockOps]
        .into_iter()
        .map(|hook| {
            let ids = bpf::query(cgroup.as_fd(), hook)
                .unwrap_or_else(|e| panic!("querying {hook:?} on {}: {e}", dir.display()));
            (hook, ids)
        })
        .collect()
}

/// Zero cost without a network limit: a job without one has no program on
/// its cgroup2 directory (on a hybrid host it has no cgroup2 directory at
/// all); one with `--net-egress-max` beside it has its egress and
/// `sock_ops` programs there, which shows the query sees them.
#[test]
fn net_a_job_without_a_network_limit_has_no_program() {
    let Some(host) = privileged() else { return };
    let root = TestRoot::new(host);
    for (job, net) in [("plain", None), ("limited", Some("20mbit"))] {
        let mut cmd = Command::new(ffrtmp_bin());
        cmd.args([
            "run",
            "--cgroup-root",
            root.name(),
            "--job-id",
            job,
            "--cpu-weight",
            "50",
        ]);
        if let Some(rate) = net {
            cmd.args(["--net-egress-max", rate]);
        }
        cmd.args(["--", "sh", "-c", "echo ready; read x"])
            .env_remove("FFRTMP_CGROUP_ROOT");
        let mut run = Spawned::start(cmd);
        run.wait_for_stdout("ready");
        let dir = cgroup2_job_dir(&root, job);
        let on_dir = dir.as_deref().filter(|d| d.is_dir()).map(programs_on);
        eprintln!("note: {job}: {dir:?}: {on_dir:?}");
        let attached = |hook: Hook| {
            on_dir
                .as_ref()
                .and_then(|p| p.iter().find(|(h, _)| *h == hook))
                .map_or(0, |(_, ids)| ids.len())
        };
        match (net, host.version) {
            (None, Version::V1) => assert!(
                on_dir.is_none(),
                "{job}: a cgroup2 directory {dir:?} without a network limit"
            ),
            (None, Version::V2) => {
                let programs = on_dir
                    .as_ref()
                    .unwrap_or_else(|| panic!("{job}: no cgroup2 directory {dir:?}"));
                assert!(
                    programs.iter().all(|(_, ids)| ids.is_empty()),
                    "{job}: programs {programs:?}"
                );
            }
            (Some(_), _) => {
                assert!(
                    attached(Hook::Egress) >= 1,
                    "{job}: no egress program on {dir:?}: {on_dir:?}"
                );
                assert!(
                    attached(Hook::SockOps) >= 1,
                    "{job}: no sock_ops program on {dir:?}: {on_dir:?}"
                );
                assert_eq!(
                    attached(Hook::Ingress),
                    0,
                    "{job}: an ingress program without an ingress limit"
                );
            }
        }
        run.write_stdin(b"\n");
        let out = run.wait(EXIT_TIMEOUT);
        assert_eq!(out.code(), 0, "{out:?}");
        root.assert_job_gone(job);
    }
}

/// A real stream: ffmpeg pushing raw 160x120 video in MPEG-TS over TCP at
/// ~12 mbit/s (`-re`), held to 8mbit.
#[test]
fn net_an_ffmpeg_stream_is_held_to_the_rate() {
    let Some(host) = privileged() else { return };
    let Some(ffmpeg) = ["/usr/bin/ffmpeg", "/usr/local/bin/ffmpeg"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        tests::skip("ffmpeg is not installed (the VM suite includes it: --include ffmpeg)");
        return;
    };
    let root = TestRoot::new(host);
    let pair = NetPair::new();
    // The stream, under `ffrtmp run --net-egress-max 8mbit` or alone.
    let stream = |limited: bool| {
        let recv = receiver(&pair, &pair.b, 5006, None);
        let mut cmd = if limited {
            let mut c = Command::new(ffrtmp_bin());
            c.args([
                "run",
                "--cgroup-root",
                root.name(),
                "--net-egress-max",
                "8mbit",
                "--",
                ffmpeg,
            ]);
            c
        } else {
            Command::new(ffmpeg)
        };
        cmd.args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i"])
            .arg("testsrc=size=160x120:rate=25")
            .args(["-t", "4", "-c:v", "rawvideo", "-pix_fmt", "rgb24", "-f", "mpegts"])
            .arg(format!("tcp://{}:5006", pair.addr_b))
            .env_remove("FFRTMP_CGROUP_ROOT");
        let out = pair.inside(&pair.a, &mut cmd).output().expect("running ffmpeg");
        // Held back, ffmpeg is still writing when its 4 s of input end: it
        // finishes late, and its exit status is ffmpeg's own.
        assert!(out.status.success(), "limited={limited}: {out:?}");
        measured(recv)
    };
    // What ffmpeg sends here with no limit: ~11.5 mbit/s of real time,
    // less where it cannot keep up (an emulated VM beside another).
    let (source, _) = stream(false);
    let (got, said) = stream(true);
    eprintln!("note: ffmpeg alone {source:.0} bit/s; at 8mbit {got:.0} bit/s");
    if source >= 1.25 * 8e6 {
        assert!(
            within(got, 8e6),
            "ffmpeg at 8mbit: measured {got:.0} bit/s (alone {source:.0}): {said}"
        );
    } else {
        // The stream itself is not much faster than the limit: it cannot
        // be shown held to it, only held under it.
        eprintln!("note: ffmpeg sends only {source:.0} bit/s here: 8mbit is checked as an upper bound");
        assert!(got <= 1.1 * 8e6, "ffmpeg at 8mbit: measured {got:.0} bit/s: {said}");
    }
}

/// `attach`: connections the process opens after the move are held to the
/// rate, and the result says what it cannot reach (sockets from before).
/// A flow below the rate is measured again with a new sender, as
/// [`assert_rate`] says (the CI of 8244732 failed on a 5.10 guest's 15.3 of
/// 20 Mbit/s in one try).
#[test]
fn net_attach_limits_connections_opened_after_the_move() {
    let Some(host) = privileged() else { return };
    let root = TestRoot::new(host);
    let pair = NetPair::new();
    let capacity = unlimited_rate(&pair, &pair.a, &pair.b, &pair.addr_b);
    let mut attempt = 0;
    let out = loop {
        attempt += 1;
        let (got, said, out) = attach_a_sender(&pair, &root);
        let what = format!("attached at 20mbit: {said}");
        if assert_rate(got, 20e6, capacity, &what, attempt == MEASURES) == Rate::Held {
            break out;
        }
    };
    let r = result(&out);
    let applied = r["limits"]["applied"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["limit"] == "net_egress_max"))
        .unwrap_or_else(|| panic!("net_egress_max not applied: {r}"));
    let note = applied["note"].as_str().unwrap_or_default();
    assert!(note.contains("opened before it was moved keep their old cgroup"), "{r}");
}

/// One sender that opens its connection only once it is in the test root,
/// adopted by `ffrtmp attach --net-egress-max 20mbit`: the rate the
/// receiver measured, its output and attach's.
fn attach_a_sender(pair: &NetPair, root: &TestRoot) -> (f64, String, std::process::Output) {
    let recv = receiver(pair, &pair.b, 5007, None);
    let blast = stub_bin("net-blast");
    // The connection must open after the move: the workload waits until
    // its own cgroup (the v2 line, which sockets record) is in the test
    // root. A fixed sleep was not enough in an emulated guest under load,
    // where the attach took longer than it.
    let script = format!(
        "until grep -q '^0::.*/{root}/' /proc/self/cgroup; do sleep 0.05; done; exec {blast} send {addr}:5007 5",
        root = root.name(),
        blast = blast.display(),
        addr = pair.addr_b
    );
    let mut workload = Command::new("/bin/sh");
    workload.args(["-c", &script]);
    let mut workload = pair
        .inside(&pair.a, &mut workload)
        .spawn()
        .expect("starting the workload");
    let out = Command::new(ffrtmp_bin())
        .args([
            "attach",
            "--cgroup-root",
            root.name(),
            "--net-egress-max",
            "20mbit",
            "--json",
            "--pid",
        ])
        .arg(workload.id().to_string())
        .env_remove("FFRTMP_CGROUP_ROOT")
        .output()
        .expect("running ffrtmp attach");
    let _ = workload.wait();
    assert!(out.status.success(), "{out:?}");
    let (got, said) = measured(recv);
    (got, said, out)
}

#[test]
fn net_a_bare_number_is_refused_and_nothing_is_created() {
    let Some(host) = privileged() else { return };
    let root = TestRoot::new(host);
    let out = Command::new(ffrtmp_bin())
        .args([
            "run",
            "--cgroup-root",
            root.name(),
            "--net-egress-max",
            "1000000",
            "--",
            "true",
        ])
        .env_remove("FFRTMP_CGROUP_ROOT")
        .output()
        .expect("running ffrtmp");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--net-egress-max") && stderr.contains("1000000") && stderr.contains("ambiguous"),
        "{stderr}"
    );
    root.assert_nothing_created();
}

/// `ffrtmp watch --events`: a job's network counters reach the event
/// stream. A target (a copy of `sh`, under a name unique to the test) is
/// adopted at its exec, waits a second so its socket is opened in the job
/// cgroup, then execs `net-blast send`; its `detached` event carries
/// `usage.network.egress` with at least the bytes the receiver got, and no
/// ingress counters (no ingress limit). While it sends, `/metrics` has its
/// `ffrtmp_job_net_egress_bytes_total` series growing, and no ingress one.
#[test]
fn net_counters_reach_the_event_stream_and_the_metrics() {
    let Some(host) = privileged() else { return };
    let root = TestRoot::new(host);
    let pair = NetPair::new();
    let dir = tempfile::tempdir().expect("a temp dir");
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("fn{:x}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let sh = dir.path().join(&name);
    tests::copy_executable(Path::new("/bin/sh"), &sh);
    let events = dir.path().join("events.jsonl");
    let metrics = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let mut cmd = Command::new(ffrtmp_bin());
    cmd.args([
        "watch",
        "--cgroup-root",
        root.name(),
        "--target",
        &name,
        "--net-egress-max",
        "20mbit",
        "--metrics-listen",
        &metrics.to_string(),
    ])
    .arg("--events")
    .arg(&events)
    .env_remove("FFRTMP_CGROUP_ROOT")
    .env("FFRTMP_LOG", "info");
    let daemon = Spawned::start_with_stdin(cmd, Stdio::null());
    let read = || std::fs::read_to_string(&events).unwrap_or_default();
    assert!(
        wait_until(POLL_TIMEOUT, || read()
            .contains(r#""event":"reconciled","trigger":"startup""#)),
        "the daemon did not start: {}",
        daemon.stderr_now()
    );
    assert!(
        wait_until(POLL_TIMEOUT, || daemon.stderr_now().contains("Serving /metrics")),
        "no metrics endpoint: {}",
        daemon.stderr_now()
    );

    let recv = receiver(&pair, &pair.b, 5011, None);
    let script = format!(
        "sleep 1; exec {} send {}:5011 2",
        stub_bin("net-blast").display(),
        pair.addr_b
    );
    let mut target = Command::new(&sh);
    target.args(["-c", &script]);
    let mut target = pair.inside(&pair.a, &mut target).spawn().expect("running the target");
    let job = format!("auto-{name}-{}", target.id());
    let series =
        |text: &str, metric: &str| support::sample(text, &format!("{metric}{{job_id=\"{job}\",command=\"{name}\"}}"));
    let (mut egress_metric, mut ingress_metric) = (None::<f64>, None::<f64>);
    let status = loop {
        if let Some(status) = target.try_wait().expect("waiting for the target") {
            break status;
        }
        let text = support::scrape(metrics);
        if let Some(v) = series(&text, "ffrtmp_job_net_egress_bytes_total") {
            egress_metric = Some(egress_metric.map_or(v, |m| m.max(v)));
        }
        ingress_metric = ingress_metric.or(series(&text, "ffrtmp_job_net_ingress_bytes_total"));
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "the target: {status}");
    eprintln!("note: ffrtmp_job_net_egress_bytes_total of {job} reached {egress_metric:?} while it ran");
    assert!(
        egress_metric.is_some_and(|v| v > 0.0),
        "no growing egress series for {job} in /metrics (largest {egress_metric:?})"
    );
    assert_eq!(
        ingress_metric, None,
        "an ingress series for {job}, which has no ingress limit"
    );
    let out = recv.wait_with_output().expect("waiting for the receiver");
    let said: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no receiver JSON: {out:?}"));
    let received = said["bytes"].as_u64().expect("bytes");
    assert!(
        wait_until(POLL_TIMEOUT, || read().contains(r#""event":"detached""#)),
        "no detached event; stream: {}; log: {}",
        read(),
        daemon.stderr_now()
    );
    daemon.signal(Signal::SIGINT);
    let log = daemon.wait(EXIT_TIMEOUT);
    assert_eq!(log.status.code(), Some(0), "{}", log.stderr);

    let detached: Value = read()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "detached")
        .expect("a detached line");
    let network = &detached["result"]["usage"]["network"];
    let egress = &network["egress"];
    let sent = egress["passed_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no egress counters: {detached}"));
    eprintln!("note: the receiver got {received} bytes; the event counts {sent} bytes passed: {egress}");
    assert!(received > 0, "{said}");
    // The counters see whole packets (headers included), the receiver the
    // payload: at least as much, and not more than headers can explain.
    assert!(
        sent >= received && sent <= received + received / 10 + 64 * 1024,
        "passed {sent} bytes for {received} received: {detached}"
    );
    assert!(egress["passed_packets"].as_u64().is_some_and(|p| p > 0), "{detached}");
    assert_eq!(network["ingress"], Value::Null, "no ingress limit: {detached}");
}
