//! Bench helper: what the cgroup2 mount option favordynmods costs and what
//! it saves, measured in the `cargo xtask vm-test` guest (docs/BENCHMARKS.md).
//!
//! `dynmods-bench [ROUNDS [FORKS [WRITES [GAP_MS]]]]` (defaults 2, 2000, 60,
//! 100) measures ROUNDS times, with favordynmods off and then on — it
//! remounts the cgroup2 mount itself, keeping its other options, and
//! refuses to anywhere but in the VM guest:
//!
//! - `fork`, `_exit` in the child, `waitpid`, FORKS times: fork and exit take
//!   `cgroup_threadgroup_rwsem` for reading (`cgroup_css_set_fork`,
//!   `exit_signals`), on its slow path while favordynmods is on;
//! - a thread spawned and joined, FORKS times (the same, for threads);
//! - a sleeping child's pid written to `cgroup.procs`, alternately of two
//!   cgroups: WRITES times GAP_MS apart (a move after a quiet spell, as an
//!   adoption is; the write takes the semaphore for writing, which without
//!   favordynmods waits for an RCU grace period once the last writer is a
//!   grace period or two ago), and WRITES times back to back.
//!
//! The order alternates (odd rounds off then on, even rounds on then off),
//! so a drift of the host's load does not favour one state. One line per
//! round and state, then for each measurement the ratio on/off of the two
//! medians of each round, and the median (and range) of those ratios over
//! the rounds. The guest is emulated (TCG): absolute times are inflated,
//! the ratios are what to read.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use ffrtmp::cgroup::dynmods::{self, State};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().expect("a number"));
    let rounds = args.next().unwrap_or(2);
    let forks = args.next().unwrap_or(2000) as usize;
    let writes = args.next().unwrap_or(60) as usize;
    let gap = Duration::from_millis(args.next().unwrap_or(100));
    if !tests::in_vm_guest() {
        eprintln!("dynmods-bench: not in the cargo xtask vm-test guest: refusing to remount the cgroup2 mount here");
        std::process::exit(2);
    }
    let detected = dynmods::detect().expect("reading the features file and mountinfo");
    assert!(detected.supported, "this kernel does not support favordynmods");
    let mount = detected.cgroup2.clone().expect("a cgroup2 mount").mount_point;
    say(&format!(
        "dynmods-bench: kernel {}, {} CPUs, cgroup2 at {}, favordynmods {} at the start; {rounds} rounds of {forks} forks, {forks} threads, {writes} writes {}ms apart and {writes} back to back",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mount.display(),
        detected.state(),
        gap.as_millis(),
    ));

    let a = mount.join("dynmods-bench-a");
    let b = mount.join("dynmods-bench-b");
    for dir in [&a, &b] {
        std::fs::create_dir_all(dir).expect("creating a bench cgroup");
    }
    let child = sleeping_child();
    // (round, on, what was measured)
    let mut results: Vec<(u64, bool, Measured)> = Vec::new();
    for round in 1..=rounds {
        let order = if round % 2 == 1 { [false, true] } else { [true, false] };
        for on in order {
            set_favordynmods(on);
            let m = measure(forks, writes, gap, child, &a, &b);
            say(&format!(
                "round {round} favordynmods {}: {}",
                if on { "on " } else { "off" },
                m.line()
            ));
            results.push((round, on, m));
        }
    }
    set_favordynmods(false);
    // Back where it came from, then gone: our child, ended by its pid.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .to_owned();
    let _ = std::fs::write(
        mount.join(own.trim_start_matches('/')).join("cgroup.procs"),
        child.to_string(),
    );
    // SAFETY: kill and waitpid on the child this process forked.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    for dir in [&a, &b] {
        let _ = std::fs::remove_dir(dir);
    }

    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratio = |name: &str, pick: fn(&Measured) -> f64| {
        let of = |round: u64, on: bool| {
            results
                .iter()
                .find(|(r, o, _)| *r == round && *o == on)
                .map(|(_, _, m)| pick(m))
                .expect("both states measured in every round")
        };
        let ratios: Vec<f64> = (1..=rounds).map(|r| of(r, true) / of(r, false)).collect();
        let (low, high) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        let off = median((1..=rounds).map(|r| of(r, false)).collect());
        let on = median((1..=rounds).map(|r| of(r, true)).collect());
        format!(
            "{name} {:.3}x (rounds {low:.3}x..{high:.3}x; p50 {} off, {} on)",
            median(ratios),
            us(off),
            us(on)
        )
    };
    say(&format!(
        "dynmods-bench ratios on/off of the p50s (median over rounds of each round's ratio): {}; {}; {}; {}",
        ratio("fork+exit+wait", |m| m.fork.p50),
        ratio("thread spawn+join", |m| m.thread.p50),
        ratio("cgroup.procs write after a quiet spell", |m| m.spaced.p50),
        ratio("cgroup.procs write back to back", |m| m.back_to_back.p50),
    ));
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Remount the cgroup2 mount with its current options, favordynmods added
/// or taken out, and check mountinfo agrees.
fn set_favordynmods(on: bool) {
    let detected = dynmods::detect().expect("mountinfo");
    if (detected.state() == State::On) == on {
        return;
    }
    let mount = detected.cgroup2.expect("a cgroup2 mount");
    let mut remount = dynmods::remount_for(&mount).expect("a remount keeping every option");
    if !on {
        remount.data = remount
            .data
            .split(',')
            .filter(|o| *o != dynmods::OPTION)
            .collect::<Vec<_>>()
            .join(",");
    }
    dynmods::remount(&remount).unwrap_or_else(|e| panic!("remounting {remount}: {e}"));
    let now = dynmods::detect().expect("mountinfo").state();
    assert_eq!(now == State::On, on, "favordynmods is {now} after remounting {remount}");
}

/// A child that sleeps until killed.
fn sleeping_child() -> libc::pid_t {
    // SAFETY: the child only calls async-signal-safe functions.
    match unsafe { libc::fork() } {
        0 => loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        },
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        pid => pid,
    }
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    p50: f64,
    p90: f64,
    max: f64,
    mean: f64,
}

impl Stats {
    /// Of durations in seconds.
    fn of(mut samples: Vec<f64>) -> Stats {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Stats {
            p50: at(0.5),
            p90: at(0.9),
            max: at(1.0),
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }

    fn show(&self) -> String {
        format!(
            "p50 {} p90 {} max {} mean {}",
            us(self.p50),
            us(self.p90),
            us(self.max),
            us(self.mean)
        )
    }
}

fn us(seconds: f64) -> String {
    format!("{:.1}us", seconds * 1e6)
}

struct Measured {
    fork: Stats,
    thread: Stats,
    spaced: Stats,
    back_to_back: Stats,
}

impl Measured {
    fn line(&self) -> String {
        format!(
            "fork+exit+wait {} | thread spawn+join {} | cgroup.procs write after a quiet spell {} | back to back {}",
            self.fork.show(),
            self.thread.show(),
            self.spaced.show(),
            self.back_to_back.show()
        )
    }
}

fn measure(forks: usize, writes: usize, gap: Duration, child: libc::pid_t, a: &Path, b: &Path) -> Measured {
    let warm = (forks / 20).max(5);
    let mut fork = Vec::with_capacity(forks);
    for i in 0..forks + warm {
        let t = Instant::now();
        // SAFETY: the child calls only _exit; the parent reaps it.
        match unsafe { libc::fork() } {
            0 => unsafe { libc::_exit(0) },
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            pid => unsafe {
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            },
        }
        if i >= warm {
            fork.push(t.elapsed().as_secs_f64());
        }
    }
    let mut thread = Vec::with_capacity(forks);
    for i in 0..forks + warm {
        let t = Instant::now();
        std::thread::spawn(|| {}).join().expect("an empty thread");
        if i >= warm {
            thread.push(t.elapsed().as_secs_f64());
        }
    }
    let procs = |dir: &Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .expect("opening cgroup.procs")
    };
    let (mut to_a, mut to_b) = (procs(a), procs(b));
    let pid = child.to_string();
    let mut move_once = |n: usize| {
        let file = if n.is_multiple_of(2) { &mut to_a } else { &mut to_b };
        let t = Instant::now();
        file.write_all(pid.as_bytes()).expect("writing cgroup.procs");
        t.elapsed().as_secs_f64()
    };
    let mut spaced = Vec::with_capacity(writes);
    for n in 0..writes {
        std::thread::sleep(gap);
        spaced.push(move_once(n));
    }
    let mut back_to_back = Vec::with_capacity(writes);
    for n in 0..writes + 2 {
        let t = move_once(n);
        if n >= 2 {
            back_to_back.push(t);
        }
    }
    Measured {
        fork: Stats::of(fork),
        thread: Stats::of(thread),
        spaced: Stats::of(spaced),
        back_to_back: Stats::of(back_to_back),
    }
}
