//! `ffrtmp top` against the host's real cgroups (root only; each test has its
//! own relative cgroup root). The live view runs in a real terminal: a tmux
//! session on a private socket, driven with `send-keys` and read with
//! `capture-pane`. Those tests are named `top_tmux_…`, and the VM suite skips
//! them (`--skip top_tmux_`): its guest has no tmux (docs/vm-test.md). The
//! others (the snapshot of a pipe, a bad interval) run there too, on v2.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::{
    PidGuard, Signal, Spawned, TestRoot, ffrtmp, ffrtmp_bin, on_path, require_privileged, run_ffrtmp, skip,
    unique_name, wait_until,
};

/// A tmux server of our own (`tmux -L <unique>`, no configuration file),
/// killed by its socket when dropped, and the socket file removed (tmux
/// leaves it behind).
struct Tmux {
    socket: String,
    socket_path: Option<std::path::PathBuf>,
}

impl Tmux {
    /// A detached session `width`×`height` running `command` (through sh).
    #[track_caller]
    fn start(width: u16, height: u16, command: &str) -> Tmux {
        let mut tmux = Tmux {
            socket: unique_name(),
            socket_path: None,
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        tmux.socket_path = Some(tmux.pane("#{socket_path}").into())
            .filter(|p: &std::path::PathBuf| p.file_name().is_some_and(|n| *n == *tmux.socket));
        tmux
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running tmux")
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p"]).stdout).into_owned()
    }

    /// A pane format variable (`#{alternate_on}`, …).
    fn pane(&self, format: &str) -> String {
        let out = self.run(&["display-message", "-p", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn send_keys(&self, keys: &str) {
        let out = self.run(&["send-keys", keys]);
        assert!(out.status.success(), "tmux send-keys {keys}: {out:?}");
    }

    /// After `ffrtmp top` ended in the pane (its command echoes
    /// `top-returned` next): the shell went on, the normal screen is back
    /// with the cursor shown and the view gone. The last screen.
    #[track_caller]
    fn assert_top_returned(&self) -> String {
        let (ok, screen) = self.wait_for(Duration::from_secs(10), |s| s.contains("top-returned"));
        assert!(ok, "the shell did not go on after top:\n{screen}");
        assert_eq!(
            self.pane("#{alternate_on}"),
            "0",
            "still on the alternate screen:\n{screen}"
        );
        assert_eq!(self.pane("#{cursor_flag}"), "1", "the cursor is still hidden");
        assert!(
            !screen.contains("ffrtmp top · "),
            "the view is still on the screen:\n{screen}"
        );
        screen
    }

    /// Wait until the screen satisfies `cond`; the last screen either way.
    fn wait_for(&self, timeout: Duration, mut cond: impl FnMut(&str) -> bool) -> (bool, String) {
        let mut last = String::new();
        let ok = wait_until(timeout, || {
            last = self.screen();
            cond(&last)
        });
        (ok, last)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Files that a pane's shell command fills around `ffrtmp top`: the
/// terminal's settings before and after (`stty -g`) and top's exit status.
struct Watched {
    exit: std::path::PathBuf,
    before: std::path::PathBuf,
    after: std::path::PathBuf,
}

impl Watched {
    fn new(dir: &Path) -> Watched {
        Watched {
            exit: dir.join("exit"),
            before: dir.join("stty-before"),
            after: dir.join("stty-after"),
        }
    }

    /// `top` (a shell command line running ffrtmp top) wrapped: the
    /// settings before and after, its exit status, then a marker and a
    /// shell that keeps the pane open to be read.
    fn command(&self, top: &str) -> String {
        format!(
            "stty -g > {before}; {top}; echo exit=$? > {exit}; stty -g > {after}; echo top-returned; exec sleep 600",
            before = self.before.display(),
            after = self.after.display(),
            exit = self.exit.display(),
        )
    }
}

/// The cell of the right-aligned column `header` on the row of `job`: the
/// word that ends where the header ends.
fn right_aligned_cell(screen: &str, header: &str, job: &str) -> Option<String> {
    let head = screen.lines().find(|l| l.starts_with("JOB "))?;
    let end = head.find(header)? + header.len();
    // The header is ASCII up to there; the row may have bars after it.
    let end_chars = head[..end].chars().count();
    let row = screen.lines().find(|l| l.split_whitespace().next() == Some(job))?;
    let before: String = row.chars().take(end_chars).collect();
    before.split_whitespace().last().map(str::to_owned)
}

/// The percentage after the bar of the first bar column on `job`'s row
/// (`CPU/QUOTA`): "████████ 100%" → 100.
fn first_bar_percent(screen: &str, job: &str) -> Option<f64> {
    let row = screen.lines().find(|l| l.split_whitespace().next() == Some(job))?;
    let bar = |c: char| "█▉▊▋▌▍▎▏░".contains(c);
    let after = &row[row.find(bar)?..];
    let after = after.trim_start_matches(bar);
    after.split_whitespace().next()?.strip_suffix('%')?.parse().ok()
}

/// Does `screen` (captured with escape sequences, `capture-pane -e`) set a
/// color, foreground or background? The defaults (39, 49) are no color.
fn has_color(screen: &str) -> bool {
    screen.split('\x1b').filter_map(|s| s.strip_prefix('[')).any(|seq| {
        let Some(end) = seq.find('m') else { return false };
        seq[..end]
            .split(';')
            .filter_map(|p| p.parse::<u32>().ok())
            .any(|p| matches!(p, 30..=38 | 40..=48 | 90..=97 | 100..=107))
    })
}

fn needs(program: &str, package: &str) -> bool {
    if on_path(program) {
        return true;
    }
    skip(&format!("{program} is not on PATH (apt-get install {package})"));
    false
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn top_tmux_shows_a_throttled_ffmpeg_at_its_quota_and_q_restores_the_terminal() {
    let host = require_privileged!();
    if !needs("ffmpeg", "ffmpeg") || !needs("tmux", "tmux") {
        return;
    }
    let root = TestRoot::new(host);
    // CPU-bound (a 720p test pattern, encoded to nothing) and held at 20 %
    // of one core.
    let run = Spawned::start_with_stdin(
        ffrtmp(&[
            "run",
            "--cgroup-root",
            root.name(),
            "--job-id",
            "top-cam",
            "--cpu-quota",
            "20",
            "--",
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=1280x720:rate=30",
            "-t",
            "600",
            "-f",
            "null",
            "-",
        ]),
        Stdio::null(),
    );
    let pid = root.wait_for_process("top-cam", "ffmpeg");
    // Dropped before `root`: if the test fails, ffmpeg is killed.
    let _workload = PidGuard::new(pid);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let watched = Watched::new(dir.path());
    let command = watched.command(&format!(
        "{} top --cgroup-root {} --interval 1s",
        ffrtmp_bin().display(),
        root.name()
    ));
    let tmux = Tmux::start(100, 30, &command);

    // The row appears, first without rates, then with them.
    let (ok, screen) = tmux.wait_for(Duration::from_secs(15), |s| {
        right_aligned_cell(s, "CPU%", "top-cam").is_some_and(|c| c.parse::<f64>().is_ok())
    });
    assert!(ok, "no CPU% for top-cam on the screen:\n{screen}");
    assert_eq!(tmux.pane("#{alternate_on}"), "1", "top is not on the alternate screen");
    assert!(screen.starts_with("ffrtmp top · "), "{screen}");
    assert_eq!(
        right_aligned_cell(&screen, "QUOTA", "top-cam").as_deref(),
        Some("20%"),
        "{screen}"
    );
    // Five refreshes: the CPU used over each interval, in % of one core
    // (the median is judged: one interval on a loaded machine may fall short).
    let mut samples = Vec::new();
    let mut last = screen;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1100));
        last = tmux.screen();
        if let Some(cpu) = right_aligned_cell(&last, "CPU%", "top-cam").and_then(|c| c.parse::<f64>().ok()) {
            samples.push(cpu);
        }
    }
    eprintln!("top-cam CPU% shown against a 20% quota: {samples:?}");
    assert_eq!(samples.len(), 5, "{last}");
    samples.sort_by(f64::total_cmp);
    let median = samples[2];
    assert!(
        (10.0..=30.0).contains(&median),
        "CPU% {samples:?} is not near the 20% quota:\n{last}"
    );
    assert!(
        samples.iter().all(|&c| c <= 30.0),
        "above the quota: {samples:?}\n{last}"
    );
    let row = last.lines().find(|l| l.starts_with("top-cam ")).unwrap_or_default();
    assert!(row.contains('█'), "no CPU/QUOTA bar on the row {row:?}");
    let of_quota = first_bar_percent(&last, "top-cam");
    eprintln!("top-cam CPU/QUOTA: {of_quota:?}%");
    assert!(
        of_quota.is_some_and(|p| (50.0..=150.0).contains(&p)),
        "the CPU/QUOTA bar is not near full: {of_quota:?}\n{last}"
    );
    let colored = String::from_utf8_lossy(&tmux.run(&["capture-pane", "-e", "-p"]).stdout).into_owned();
    assert!(has_color(&colored), "no colors without NO_COLOR: {colored:?}");

    // A job that starts appears; one that ends disappears.
    let late = Spawned::start(ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "top-late",
        "--",
        "sleep",
        "60",
    ]));
    let late_pid = root.wait_for_process("top-late", "sleep");
    let late_workload = PidGuard::new(late_pid);
    let (ok, screen) = tmux.wait_for(Duration::from_secs(10), |s| {
        s.lines().any(|l| l.starts_with("top-late "))
    });
    assert!(ok, "the new job did not appear:\n{screen}");
    late.signal(Signal::SIGTERM);
    let out = late.wait(Duration::from_secs(10));
    assert_eq!(out.code(), 128 + 15, "{out:?}");
    drop(late_workload);
    let (ok, screen) = tmux.wait_for(Duration::from_secs(10), |s| {
        !s.lines().any(|l| l.starts_with("top-late "))
    });
    assert!(ok, "the ended job is still shown:\n{screen}");

    // q: exit status 0, the normal screen back, the cursor shown, the
    // terminal's settings (raw mode off) as they were.
    tmux.send_keys("q");
    assert!(
        wait_until(Duration::from_secs(10), || read(&watched.exit).trim() == "exit=0"),
        "top did not exit 0 on q: {:?}\n{}",
        read(&watched.exit),
        tmux.screen()
    );
    tmux.assert_top_returned();
    assert_eq!(
        read(&watched.before),
        read(&watched.after),
        "the terminal settings were not restored"
    );
    assert!(!read(&watched.before).is_empty());
    drop(tmux);

    // NO_COLOR: the same view without a color.
    let plain = Tmux::start(
        100,
        30,
        &format!(
            "NO_COLOR=1 {bin} top --cgroup-root {root} --interval 1s; exec sleep 600",
            bin = ffrtmp_bin().display(),
            root = root.name()
        ),
    );
    let (ok, screen) = plain.wait_for(Duration::from_secs(15), |s| {
        right_aligned_cell(s, "CPU%", "top-cam").is_some_and(|c| c.parse::<f64>().is_ok())
    });
    assert!(ok, "no CPU% for top-cam with NO_COLOR:\n{screen}");
    let escaped = String::from_utf8_lossy(&plain.run(&["capture-pane", "-e", "-p"]).stdout).into_owned();
    assert!(!has_color(&escaped), "colors despite NO_COLOR: {escaped:?}");
    plain.send_keys("q");
    assert!(
        wait_until(Duration::from_secs(10), || plain.pane("#{alternate_on}") == "0"),
        "NO_COLOR top did not quit on q"
    );
    drop(plain);

    // ffrtmp run forwards SIGTERM to ffmpeg (which exits 255 on it),
    // reports and removes the cgroup.
    run.signal(Signal::SIGTERM);
    let out = run.wait(Duration::from_secs(20));
    assert_eq!(out.code(), 255, "{out:?}");
    root.assert_job_gone("top-cam");
}

/// A panic (made by the fault-injection point after the first frame) leaves
/// the terminal as it was, and its message on the normal screen.
#[test]
fn top_tmux_restores_the_terminal_after_a_panic() {
    let host = require_privileged!();
    if !needs("tmux", "tmux") {
        return;
    }
    let root = TestRoot::new(host);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let watched = Watched::new(dir.path());
    let command = watched.command(&format!(
        "FFRTMP_FAULT=panic-in-top {} top --cgroup-root {} 2>&1",
        ffrtmp_bin().display(),
        root.name()
    ));
    let tmux = Tmux::start(100, 30, &command);
    assert!(
        wait_until(Duration::from_secs(10), || !read(&watched.exit).is_empty()),
        "top did not panic and end (is {} built with the fault-injection feature, as `cargo build --workspace` builds it?):\n{}",
        ffrtmp_bin().display(),
        tmux.screen()
    );
    // Rust's exit status for a panic in main.
    assert_eq!(read(&watched.exit).trim(), "exit=101", "{}", tmux.screen());
    let screen = tmux.assert_top_returned();
    assert!(
        screen.contains("FFRTMP_FAULT=panic-in-top"),
        "no panic message:\n{screen}"
    );
    assert_eq!(
        read(&watched.before),
        read(&watched.after),
        "raw mode was not turned off"
    );
    root.assert_nothing_created();
}

/// SIGTERM quits like q (status 0, the terminal restored), and so does the
/// terminal going away (tmux killed): no `ffrtmp top` is left behind, let
/// alone one spinning on a dead terminal.
#[test]
fn top_tmux_quits_on_sigterm_and_when_its_terminal_goes_away() {
    let host = require_privileged!();
    if !needs("tmux", "tmux") {
        return;
    }
    let root = TestRoot::new(host);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exit_file = dir.path().join("exit");
    let bin = ffrtmp_bin().display().to_string();
    let started = |tmux: &Tmux| {
        let (ok, screen) = tmux.wait_for(Duration::from_secs(10), |s| s.starts_with("ffrtmp top · "));
        assert!(ok, "top did not start:\n{screen}");
    };

    // The pane's shell runs top as its child, found by its parent's pid.
    let tmux = Tmux::start(
        80,
        24,
        &format!(
            "{bin} top --cgroup-root {root}; echo exit=$? > {exit}; echo top-returned; exec sleep 600",
            root = root.name(),
            exit = exit_file.display()
        ),
    );
    started(&tmux);
    let shell: u32 = tmux.pane("#{pane_pid}").parse().expect("the pane's pid");
    let top = tests::descendants(shell)
        .into_iter()
        .find(|&p| tests::comm(p).as_deref() == Some("ffrtmp"))
        .expect("ffrtmp top under the pane's shell");
    let top = PidGuard::new(top);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(top.pid() as i32), Signal::SIGTERM).expect("SIGTERM to top");
    assert!(
        wait_until(Duration::from_secs(10), || read(&exit_file).trim() == "exit=0"),
        "top did not exit 0 on SIGTERM: {:?}\n{}",
        read(&exit_file),
        tmux.screen()
    );
    tmux.assert_top_returned();
    drop(top);
    drop(tmux);

    // top is the pane's process itself; the server goes away under it.
    let tmux = Tmux::start(
        80,
        24,
        &format!("exec {bin} top --cgroup-root {root}", root = root.name()),
    );
    started(&tmux);
    let top = PidGuard::new(tmux.pane("#{pane_pid}").parse().expect("the pane's pid"));
    assert_eq!(tests::comm(top.pid()).as_deref(), Some("ffrtmp"));
    drop(tmux);
    assert!(
        wait_until(Duration::from_secs(5), || !top.alive()),
        "ffrtmp top (pid {}) kept running after its terminal went away",
        top.pid()
    );
    root.assert_nothing_created();
}

#[test]
fn top_prints_one_snapshot_when_stdout_is_not_a_terminal() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let run = Spawned::start(ffrtmp(&[
        "run",
        "--cgroup-root",
        root.name(),
        "--job-id",
        "top-pipe",
        "--cpu-quota",
        "50",
        "--memory-limit",
        "64",
        "--",
        "sleep",
        "30",
    ]));
    let pid = root.wait_for_process("top-pipe", "sleep");
    let _workload = PidGuard::new(pid);

    // stdout is a pipe here.
    let out = run_ffrtmp(&["top", "--cgroup-root", root.name(), "--interval", "200ms"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ffrtmp top: stdout is not a terminal, so one snapshot (rates over 200ms)"),
        "{out:?}"
    );
    assert!(lines[1].starts_with("JOB "), "{out:?}");
    let row = lines
        .iter()
        .find(|l| l.starts_with("top-pipe "))
        .unwrap_or_else(|| panic!("no row for top-pipe: {out:?}"));
    for cell in [pid.to_string().as_str(), "sleep", "50%", "max 64M", "0.0"] {
        assert!(row.contains(cell), "{cell:?} missing from the row {row:?}");
    }
    assert!(!out.stdout.contains('\x1b'), "escape sequences in a pipe: {out:?}");

    run.signal(Signal::SIGTERM);
    let out = run.wait(Duration::from_secs(10));
    assert_eq!(out.code(), 128 + 15, "{out:?}");
    root.assert_job_gone("top-pipe");
}

#[test]
fn top_rejects_a_bad_interval_in_one_line() {
    for bad in ["0", "abc"] {
        let out = run_ffrtmp(&["top", "--interval", bad]);
        assert_eq!(out.code(), 125, "{out:?}");
        assert_eq!(
            out.stderr,
            format!(
                "ffrtmp: error: invalid value '{bad}' for '--interval <DURATION>': expected a duration of at least 100ms such as 1s, 500ms or 5s\n"
            ),
            "{out:?}"
        );
    }
}
