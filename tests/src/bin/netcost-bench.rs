//! Bench helper: what ffrtmp's network programs cost per packet, measured
//! in the `cargo xtask vm-test` guest (docs/BENCHMARKS.md).
//!
//! `netcost-bench [ROUNDS [SECS]]` (defaults 3 and 3) turns the kernel's BPF
//! run-time statistics on (`BPF_ENABLE_STATS`, the same switch as
//! `kernel.bpf_stats_enabled`; it is global, so this refuses to run
//! anywhere but in the VM guest, and the kernel turns it off again when
//! this process exits), then, ROUNDS times, runs a TCP sender and receiver
//! (`net-blast`, over 127.0.0.1 for SECS seconds) with one of them under
//! `ffrtmp run --cgroup-root netcost-bench`:
//!
//! - `egress, not binding`: the sender with `--net-egress-max 400gbit` (the
//!   program runs and passes every packet);
//! - `egress, binding`: the sender with `--net-egress-max 200mbit` (loopback
//!   has no fq: the program polices);
//! - `ingress, not binding`: the receiver with `--net-ingress-max 400gbit`.
//!
//! As soon as the job's cgroup appears, a reference program that does
//! nothing (`r0 = 1; exit`: pass) is attached beside ffrtmp's at the same
//! hook, so both run on the same packets at the same time. While the job
//! runs, the bench samples both programs' `run_time_ns` and `run_cnt` every
//! 50 ms; the last sample before the job's cgroup goes is the figure. One
//! line per scenario and round: runs, ns per run of ffrtmp's program and of
//! the empty one, their ratio, bytes per run (loopback hands TCP segments
//! of up to 64 KiB to the hook: a run is one such packet) and the program's
//! time as a share of the transfer's wall time. Then the medians and ranges
//! over the rounds. The guest is emulated (TCG): absolute times are
//! inflated; the ratio to the empty program is what to read.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aya::sys::Stats;
use ffrtmp::net::{Hook, JobSocketCgroup, RunStats};

/// Which side the job is, with what limit.
struct Scenario {
    name: &'static str,
    flag: &'static str,
    rate: &'static str,
    hook: Hook,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "egress, not binding (400gbit)",
        flag: "--net-egress-max",
        rate: "400gbit",
        hook: Hook::Egress,
    },
    Scenario {
        name: "egress, binding (200mbit, policing)",
        flag: "--net-egress-max",
        rate: "200mbit",
        hook: Hook::Egress,
    },
    Scenario {
        name: "ingress, not binding (400gbit)",
        flag: "--net-ingress-max",
        rate: "400gbit",
        hook: Hook::Ingress,
    },
];

/// The job root, relative to this process's own cgroup.
const ROOT: &str = "netcost-bench";

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().expect("a number"));
    let rounds = args.next().unwrap_or(3);
    let secs = args.next().unwrap_or(3);
    if !tests::in_vm_guest() {
        eprintln!("netcost-bench: not in the cargo xtask vm-test guest: refusing to turn on BPF statistics here");
        std::process::exit(2);
    }
    let _stats = aya::sys::enable_stats(Stats::RunTime).expect("BPF_ENABLE_STATS");
    let bin = std::env::current_exe().expect("this program's path");
    let dir = bin.parent().expect("in a directory").to_path_buf();
    say(&format!(
        "netcost-bench: kernel {}, {} CPUs; {rounds} rounds of {secs} s per scenario over 127.0.0.1",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    ));
    let root = job_root();
    // Per scenario: (ns per run of ffrtmp's program, of the empty one, ratio).
    let mut figures: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); SCENARIOS.len()];
    let mut port = 5100;
    for round in 1..=rounds {
        for (i, scenario) in SCENARIOS.iter().enumerate() {
            port += 1;
            let m = measure(&dir, &root, scenario, port, secs);
            let (ours, empty) = (ns_per_run(&m.ours), ns_per_run(&m.empty));
            say(&format!(
                "round {round} {}: {} runs, {ours:.0} ns per run; empty program {} runs, {empty:.0} ns per run; ratio {:.2}x; {:.0} bytes per run, {:.1} Mbit/s; program time {:.2} % of the wall time",
                scenario.name,
                m.ours.run_count,
                m.empty.run_count,
                ours / empty,
                m.received as f64 / m.ours.run_count.max(1) as f64,
                m.received as f64 * 8.0 / secs as f64 / 1e6,
                m.ours.run_time_ns as f64 / (secs as f64 * 1e9) * 100.0,
            ));
            figures[i].push((ours, empty, ours / empty));
        }
    }
    let _ = std::fs::remove_dir(&root);
    for (scenario, values) in SCENARIOS.iter().zip(figures) {
        let summary = |pick: fn(&(f64, f64, f64)) -> f64| {
            let mut v: Vec<f64> = values.iter().map(pick).collect();
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[0], v[v.len() - 1])
        };
        let (ours, ours_lo, ours_hi) = summary(|f| f.0);
        let (empty, empty_lo, empty_hi) = summary(|f| f.1);
        let (ratio, ratio_lo, ratio_hi) = summary(|f| f.2);
        say(&format!(
            "netcost-bench {}: median {ours:.0} ns per run (rounds {ours_lo:.0}..{ours_hi:.0}); empty program {empty:.0} ns ({empty_lo:.0}..{empty_hi:.0}); ratio {ratio:.2}x ({ratio_lo:.2}..{ratio_hi:.2})",
            scenario.name,
        ));
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Where `ffrtmp run --cgroup-root netcost-bench` puts its jobs (cgroup2).
fn job_root() -> PathBuf {
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("reading /proc/self/cgroup");
    let own = own.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup2 line");
    Path::new("/sys/fs/cgroup")
        .join(own.trim().trim_start_matches('/'))
        .join(ROOT)
}

struct Measured {
    ours: RunStats,
    empty: RunStats,
    received: u64,
}

fn ns_per_run(stats: &RunStats) -> f64 {
    stats.run_time_ns as f64 / stats.run_count.max(1) as f64
}

/// One run of `scenario`.
fn measure(dir: &Path, root: &Path, scenario: &Scenario, port: u16, secs: u64) -> Measured {
    let blast = dir.join("net-blast");
    let ingress = scenario.hook == Hook::Ingress;
    let side = |limited: bool| {
        if limited {
            let mut cmd = Command::new(dir.join("ffrtmp"));
            cmd.arg("run")
                .args(["--cgroup-root", ROOT, scenario.flag, scenario.rate, "--"])
                .arg(&blast);
            cmd
        } else {
            Command::new(&blast)
        }
    };
    let mut recv = side(ingress)
        .args(["recv", &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the receiver");
    let mut out = BufReader::new(recv.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line).expect("reading the receiver");
    assert!(line.contains("listening"), "the receiver said {line:?}");

    let mut send = side(!ingress)
        .args(["send", &format!("127.0.0.1:{port}"), &secs.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the sender");
    let job = if ingress { &mut recv } else { &mut send };
    let (ours, empty) = sample_until_exit(job, root, scenario.hook);

    let status = send.wait().expect("waiting for the sender");
    assert!(status.success(), "the sender: {status}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("reading the receiver");
    let status = recv.wait().expect("waiting for the receiver");
    assert!(status.success(), "the receiver: {status}");
    let said: serde_json::Value = rest
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result from the receiver: {rest}"));
    Measured {
        ours,
        empty,
        received: said["bytes"].as_u64().expect("bytes"),
    }
}

/// The statistics of ffrtmp's program at `hook` on the job under `root`
/// and of the empty program attached beside it, last sampled before `job`
/// exits (every 50 ms).
fn sample_until_exit(job: &mut Child, root: &Path, hook: Hook) -> (RunStats, RunStats) {
    let empty = empty::load(hook);
    let mut attached = false;
    let mut last: Option<(RunStats, RunStats)> = None;
    while job.try_wait().expect("waiting for the job").is_none() {
        let jobs = std::fs::read_dir(root).into_iter().flatten().flatten();
        for entry in jobs.filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            let Ok(cgroup) = JobSocketCgroup::open(&entry.path()) else {
                continue;
            };
            if !attached {
                empty::attach(&empty, &entry.path(), hook);
                attached = true;
            }
            if let Ok(Some(stats)) = cgroup.run_stats(hook) {
                last = Some((stats, empty::stats(&empty)));
            }
        }
        // Quick until the empty program is beside ffrtmp's, then light.
        std::thread::sleep(Duration::from_millis(if attached { 50 } else { 2 }));
    }
    last.expect("the job's program was never seen attached")
}

/// The reference: a cgroup_skb program of two instructions that passes
/// every packet, loaded with bpf(2) directly (aya loads only from an ELF
/// object), attached and read with ffrtmp's own bpf(2) helpers.
mod empty {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::path::Path;

    use aya_obj::generated::{bpf_attach_type, bpf_cmd, bpf_prog_type};
    use ffrtmp::net::{Hook, RunStats, bpf};

    /// The leading fields of `union bpf_attr` for BPF_PROG_LOAD.
    #[repr(C)]
    #[derive(Default)]
    struct LoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }

    pub fn load(hook: Hook) -> OwnedFd {
        // r0 = 1 (BPF_ALU64 | BPF_MOV | BPF_K), then exit (BPF_JMP | BPF_EXIT).
        let insns: [u64; 2] = [0x0000_0001_0000_00b7, 0x0000_0000_0000_0095];
        let license = c"GPL";
        let mut name = [0u8; 16];
        name[..5].copy_from_slice(b"empty");
        let mut attr = LoadAttr {
            prog_type: bpf_prog_type::BPF_PROG_TYPE_CGROUP_SKB as u32,
            insn_cnt: 2,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            expected_attach_type: match hook {
                Hook::Egress => bpf_attach_type::BPF_CGROUP_INET_EGRESS as u32,
                _ => bpf_attach_type::BPF_CGROUP_INET_INGRESS as u32,
            },
            ..LoadAttr::default()
        };
        // SAFETY: attr is an initialised prefix of bpf_attr whose pointers
        // (insns, license) outlive the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                bpf_cmd::BPF_PROG_LOAD as libc::c_int,
                std::ptr::from_mut(&mut attr),
                size_of::<LoadAttr>() as u32,
            )
        };
        assert!(
            fd >= 0,
            "loading the empty program: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the kernel just returned this new descriptor.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    }

    /// Beside ffrtmp's program (BPF_F_ALLOW_MULTI), until the cgroup goes.
    pub fn attach(prog: &OwnedFd, cgroup: &Path, hook: Hook) {
        let dir = std::fs::File::open(cgroup).expect("opening the job's cgroup");
        bpf::attach(dir.as_fd(), prog.as_fd(), hook).expect("attaching the empty program");
    }

    pub fn stats(prog: &OwnedFd) -> RunStats {
        let info = bpf::prog_info(prog.as_fd()).expect("reading the empty program");
        RunStats {
            run_time_ns: info.run_time_ns,
            run_count: info.run_count,
        }
    }
}
