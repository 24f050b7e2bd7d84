//! favordynmods (`ffrtmp watch --favor-dynmods`, docs/operations.md).
//!
//! Turning the option on is done only in the `cargo xtask vm-test` guest
//! ([`tests::in_vm_guest`]): on any other machine it is shared, and on Linux
//! 6.18+ it cannot be undone before a reboot. There the tests check what
//! the daemon and `ffrtmp status` *detect*, and that the flag is refused
//! where it cannot work (a new cgroup namespace), which happens before
//! anything is touched.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use support::{Backend, Daemon, sample, scrape, tail, unique_target};
use tests::{POLL_TIMEOUT, Signal, Spawned, TestRoot, Value, ffrtmp, in_vm_guest, require_privileged, wait_until};

/// The cgroup2 line of /proc/self/mountinfo, read here without ffrtmp's
/// parser: (mount point, per-mount options, super options).
fn cgroup2_mount() -> Option<(String, String, String)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let before: Vec<&str> = before.split(' ').collect();
        let after: Vec<&str> = after.split(' ').collect();
        (after.first() == Some(&"cgroup2")).then(|| (before[4].to_owned(), before[5].to_owned(), after[2].to_owned()))
    })
}

fn options(list: &str) -> Vec<&str> {
    list.split(',').collect()
}

/// What the kernel says: (supported, on).
fn kernel_favordynmods() -> (bool, bool) {
    let supported =
        std::fs::read_to_string("/sys/kernel/cgroup/features").is_ok_and(|f| f.lines().any(|l| l == "favordynmods"));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    let on = mountinfo.lines().any(|l| {
        l.split_once(" - ").is_some_and(|(_, after)| {
            let after: Vec<&str> = after.split(' ').collect();
            after[0].starts_with("cgroup") && after.get(2).is_some_and(|o| options(o).contains(&"favordynmods"))
        })
    });
    (supported, on)
}

/// The start-up line ffrtmp must log for what the kernel says.
fn expected_line(supported: bool, on: bool) -> &'static str {
    match (supported, on, cgroup2_mount().is_some()) {
        (_, true, _) => "favordynmods: on (",
        (false, false, _) => {
            "favordynmods: not supported by this kernel (Linux 6.0+): each move may wait an RCU grace period"
        }
        (true, false, true) => {
            "favordynmods: off (supported): each move may wait an RCU grace period, 5-40 ms; --favor-dynmods turns it on"
        }
        (true, false, false) => "favordynmods: off (supported, but no cgroup2 mount",
    }
}

/// `ffrtmp watch` (poll backend, a target nothing runs) serving metrics,
/// with `flags`; ready.
#[track_caller]
fn start(root: &TestRoot, flags: &[&str]) -> (Daemon, SocketAddr) {
    support::start_with_metrics_and(root, Backend::Poll, &unique_target(), flags)
}

// ---------------------------------------------------------------------------

/// Without `--favor-dynmods` the daemon changes nothing and says, in one
/// start-up line and in its gauges, what the kernel says.
#[test]
fn favordynmods_as_the_daemon_reports_it() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let before = cgroup2_mount();
    let (supported, on) = kernel_favordynmods();
    let (daemon, addr) = start(&root, &[]);
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("favordynmods")).collect();
    assert_eq!(lines.len(), 1, "one favordynmods line at start; log:\n{}", tail(&log));
    let want = expected_line(supported, on);
    assert!(lines[0].contains(want), "expected {want:?} in {:?}", lines[0]);
    assert!(
        lines[0].starts_with("[watch] "),
        "the Go format of the other start-up lines: {:?}",
        lines[0]
    );
    let metrics = scrape(addr);
    assert_eq!(
        sample(&metrics, "ffrtmp_cgroup_favordynmods"),
        Some(f64::from(u8::from(on))),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "ffrtmp_cgroup_favordynmods_supported"),
        Some(f64::from(u8::from(supported))),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "ffrtmp_cgroup_favordynmods_reapplied_total"),
        Some(0.0),
        "{metrics}"
    );
    daemon.stop();
    assert_eq!(cgroup2_mount(), before, "the cgroup2 mount is unchanged");
}

/// `ffrtmp status` says the same, in the table and in the JSON document.
#[test]
fn favordynmods_as_status_reports_it() {
    let host = require_privileged!();
    let root = TestRoot::new(host);
    let (supported, on) = kernel_favordynmods();
    let out = tests::run_ffrtmp(&["status", "--cgroup-root", root.name(), "--json"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["favordynmods"]["supported"], supported, "{doc}");
    assert_eq!(doc["favordynmods"]["on"], on, "{doc}");
    match cgroup2_mount() {
        Some((mount_point, ..)) => assert_eq!(doc["favordynmods"]["cgroup2_mount"], mount_point.as_str(), "{doc}"),
        None => assert_eq!(doc["favordynmods"]["cgroup2_mount"], Value::Null, "{doc}"),
    }
    let out = tests::run_ffrtmp(&["status", "--cgroup-root", root.name()]);
    assert_eq!(out.code(), 0, "{out:?}");
    let last = out.stdout.lines().last().unwrap_or_default();
    let want = expected_line(supported, on).replace("--favor-dynmods", "ffrtmp watch --favor-dynmods");
    assert!(
        last.contains(&want),
        "expected {want:?} as the last line of:\n{}",
        out.stdout
    );
    root.assert_nothing_created();
}

/// `ffrtmp watch --favor-dynmods` refused: exit 125 before it started,
/// nothing created, the cgroup2 mount unchanged. `new_cgroupns`: started in
/// a cgroup namespace of its own. The output, for its error line.
#[track_caller]
fn refused_favor_dynmods(host: &'static tests::Host, new_cgroupns: bool) -> tests::Output {
    let root = TestRoot::new(host);
    let before = cgroup2_mount();
    let mut cmd = ffrtmp(&[
        "watch",
        "--favor-dynmods",
        "--cgroup-root",
        root.name(),
        "--backend",
        "poll",
        "--target",
        &unique_target(),
    ]);
    if new_cgroupns {
        tests::in_new_cgroup_namespace(&mut cmd);
    }
    let out = Spawned::start_with_stdin(cmd, Stdio::null()).wait(tests::EXIT_TIMEOUT);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(!out.stderr.contains("Event source:"), "it did not start: {out:?}");
    root.assert_nothing_created();
    assert_eq!(cgroup2_mount(), before, "the cgroup2 mount is unchanged");
    out
}

/// Outside the initial cgroup namespace the kernel ignores cgroup2 root
/// options (`apply_cgroup_root_flags`): `--favor-dynmods` refuses to start,
/// in one line, before it touches any cgroup or mount — also after joining
/// the host's namespace (it was not started there).
#[test]
fn favor_dynmods_is_refused_in_a_cgroup_namespace() {
    let host = require_privileged!();
    let out = refused_favor_dynmods(host, true);
    let error = out.stderr.lines().last().unwrap_or_default();
    // A kernel without the option (5.10) is refused for that first.
    let expected = if kernel_favordynmods().0 {
        "ffrtmp: error: --favor-dynmods: ffrtmp is not in the initial cgroup namespace"
    } else {
        UNSUPPORTED
    };
    assert!(error.starts_with(expected), "{out:?}");
}

/// The one-line refusal on a kernel without favordynmods (before 6.0).
const UNSUPPORTED: &str = "ffrtmp: error: --favor-dynmods: this kernel does not support favordynmods \
                           (/sys/kernel/cgroup/features does not list it; Linux 6.0 or later does)";

/// The cgroup2 mount's options as they were, put back when dropped (VM only).
struct RestoreMount {
    mount_point: String,
    super_options: String,
}

impl Drop for RestoreMount {
    fn drop(&mut self) {
        let data: Vec<&str> = options(&self.super_options)
            .into_iter()
            .filter(|o| *o != "rw" && *o != "ro")
            .collect();
        if let Err(e) = remount(&self.mount_point, &data.join(",")) {
            eprintln!("restoring {}: {e}", self.mount_point);
        }
    }
}

/// Remount the cgroup2 mount (mount(2), `MS_REMOUNT`) with exactly these
/// cgroup2 options and its per-mount flags as they are. Only ever called in
/// the VM guest.
fn remount(mount_point: &str, data: &str) -> std::io::Result<()> {
    use ffrtmp::cgroup::dynmods;
    assert!(in_vm_guest(), "remounting outside the VM guest");
    let detected = dynmods::detect().map_err(std::io::Error::other)?;
    let mount = detected
        .cgroup2
        .ok_or_else(|| std::io::Error::other("no cgroup2 mount"))?;
    assert_eq!(mount.mount_point, std::path::Path::new(mount_point));
    let mut remount = dynmods::remount_for(&mount).map_err(std::io::Error::other)?;
    remount.data = data.to_owned();
    dynmods::remount(&remount)
}

/// `--favor-dynmods` remounts the cgroup2 mount with favordynmods and
/// every other option kept, and turns it on again when something turned it
/// off (here: a remount without it, then SIGHUP). In the VM guest only;
/// elsewhere the flag is only parsed (`--check-config`, which touches
/// nothing) and the detection is checked.
#[test]
fn favor_dynmods_turns_it_on_and_keeps_it_on() {
    let host = require_privileged!();
    if !in_vm_guest() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = dir.path().join("watch.yaml");
        std::fs::write(&file, "{}\n").expect("writing the configuration");
        let file = file.to_str().expect("a UTF-8 path");
        let out = tests::run_ffrtmp(&["watch", "--check-config", file, "--favor-dynmods"]);
        assert_eq!(out.code(), 0, "{out:?}");
        assert!(out.stdout.contains("\nfavor_dynmods: true\n"), "{out:?}");
        let _ = writeln!(
            std::io::stderr(),
            "note: not in the vm-test guest: favordynmods is not turned on here (the host is shared); detection checked instead"
        );
        let (supported, on) = kernel_favordynmods();
        assert_eq!(
            tests::run_ffrtmp(&["status", "--json"]).json()["favordynmods"]["on"],
            on
        );
        assert_eq!(
            tests::run_ffrtmp(&["status", "--json"]).json()["favordynmods"]["supported"],
            supported
        );
        return;
    }
    let (supported, _) = kernel_favordynmods();
    if !supported {
        // 5.10 in the VM matrix: a one-line refusal that changes nothing.
        let out = refused_favor_dynmods(host, false);
        assert_eq!(out.stderr.lines().last(), Some(UNSUPPORTED), "{out:?}");
        assert!(!kernel_favordynmods().1, "still off");
        return;
    }
    let (mount_point, mount_options, super_options) = cgroup2_mount().expect("the guest mounts cgroup2");
    let _restore = RestoreMount {
        mount_point: mount_point.clone(),
        super_options: super_options.clone(),
    };
    // Options for the daemon to keep: two root flags besides favordynmods.
    remount(&mount_point, "nsdelegate,memory_recursiveprot").expect("setting nsdelegate,memory_recursiveprot");
    remount(&mount_point, "nsdelegate,memory_recursiveprot").expect("idempotent");
    let (_, _, set) = cgroup2_mount().expect("cgroup2");
    assert_eq!(options(&set), ["rw", "nsdelegate", "memory_recursiveprot"], "{set}");
    assert!(!kernel_favordynmods().1, "off before the daemon starts");

    let root = TestRoot::new(host);
    let (daemon, addr) = start(&root, &["--favor-dynmods"]);
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "favordynmods: turned on (remounted {mount_point} with nsdelegate,memory_recursiveprot,favordynmods)"
        )),
        "log:\n{}",
        tail(&log)
    );
    assert!(
        log.contains("warning: favordynmods: this kernel ("),
        "the 6.18 warning; log:\n{}",
        tail(&log)
    );
    // What the kernel says now: on, the other options kept, the mount's own
    // flags untouched.
    let (_, now_mount, now_super) = cgroup2_mount().expect("cgroup2");
    assert_eq!(
        options(&now_super),
        ["rw", "nsdelegate", "favordynmods", "memory_recursiveprot"],
        "{now_super}"
    );
    assert_eq!(now_mount, mount_options, "the per-mount options");
    let metrics = scrape(addr);
    assert_eq!(sample(&metrics, "ffrtmp_cgroup_favordynmods"), Some(1.0), "{metrics}");

    // Someone remounts without it; the next check (SIGHUP here, else within
    // a minute) turns it on again.
    remount(&mount_point, "nsdelegate,memory_recursiveprot").expect("turning favordynmods off");
    assert!(!kernel_favordynmods().1, "off after the remount without it");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log(POLL_TIMEOUT, "the re-applied line", |log| {
        log.contains("favordynmods was turned off since the last check")
    });
    assert!(
        wait_until(Duration::from_secs(5), || kernel_favordynmods().1),
        "favordynmods is on again"
    );
    let (_, _, again) = cgroup2_mount().expect("cgroup2");
    assert_eq!(
        options(&again),
        ["rw", "nsdelegate", "favordynmods", "memory_recursiveprot"]
    );
    let metrics = scrape(addr);
    assert_eq!(
        sample(&metrics, "ffrtmp_cgroup_favordynmods_reapplied_total"),
        Some(1.0),
        "{metrics}"
    );
    daemon.stop();
}
