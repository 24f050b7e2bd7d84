//! `favordynmods`: whether moving a process into a cgroup waits for an RCU
//! grace period.
//!
//! Every write of a pid to `cgroup.procs` (v1 and v2) takes the global
//! `cgroup_threadgroup_rwsem` for writing (`cgroup_procs_write_start` →
//! `cgroup_attach_lock`). `percpu_down_write` begins with `rcu_sync_enter`,
//! which waits for a full RCU grace period (5–40 ms on the hosts measured in
//! docs/BENCHMARKS.md) unless another migration entered it a moment earlier.
//! The cgroup2 mount option `favordynmods` (Linux 6.0) keeps that `rcu_sync`
//! entered for good (`cgroup_favor_dynmods`:
//! `rcu_sync_enter(&cgroup_threadgroup_rwsem.rss)`), so a writer never waits
//! for a grace period; the price is that every reader of the semaphore —
//! fork, exit and exec's de-threading (`cgroup_threadgroup_change_begin`) —
//! takes its slow path. Since 6.18 turning it on also switches
//! `cgroup.procs` writes to a per-thread-group rwsem
//! (`cgroup_enable_per_threadgroup_rwsem = true` in `cgroup_favor_dynmods`),
//! which is never switched back before a reboot: turning the option off
//! again only logs "per threadgroup rwsem mechanism can't be disabled".
//!
//! What this module relies on, from kernel/cgroup/cgroup.c (read in 6.1 and
//! 6.18):
//!
//! - `features_show`: `/sys/kernel/cgroup/features` lists `favordynmods`
//!   when the kernel knows the option (6.0+).
//! - `cgroup_show_options`: the cgroup2 super options in
//!   `/proc/self/mountinfo` include `favordynmods` while it is on.
//! - `cgroup2_parse_param` and `cgroup_reconfigure` →
//!   `apply_cgroup_root_flags`: a remount sets **every** root flag from the
//!   options it is given (`nsdelegate`, `favordynmods`,
//!   `memory_localevents`, `memory_recursiveprot`,
//!   `memory_hugetlb_accounting`, `pids_localevents`): one left out is
//!   turned off. That happens only when the caller is in the initial cgroup
//!   namespace (`current->nsproxy->cgroup_ns == &init_cgroup_ns`); from any
//!   other namespace the remount succeeds and changes nothing.
//! - `cgroup_get_tree` applies the same flags on every new cgroup2 mount, so
//!   a later `mount -t cgroup2` in the initial namespace without the option
//!   turns it off again (`cgroup_init_fs_context` adds it by default only
//!   when the kernel was booted with `cgroup_favordynmods=true` or built with
//!   `CONFIG_CGROUP_FAVOR_DYNMODS`).
//! - cgroup v1 refuses changed flags on remount (`cgroup1_reconfigure`:
//!   "option or name mismatch"), but the semaphore is global: on a hybrid
//!   host, remounting the cgroup2 (unified) mount spares the v1 writes too.
//!
//! The decisions (parsing the features file and mountinfo, the remount's
//! flags and option string, refuse / remount / nothing) are pure functions;
//! [`detect`], [`in_initial_cgroup_ns`] and [`remount`] are the I/O.

use std::fmt;
use std::path::{Path, PathBuf};

/// Lists `favordynmods` when the kernel supports it.
pub const FEATURES_FILE: &str = "/sys/kernel/cgroup/features";
/// The mount option.
pub const OPTION: &str = "favordynmods";
/// The inode of the initial cgroup namespace: `CGROUP_NS_INIT_INO` in
/// include/uapi/linux/nsfs.h (6.18), `PROC_CGROUP_INIT_INO` in
/// include/linux/proc_ns.h before; the same number since cgroup namespaces
/// exist (4.6). Namespaces created later get inodes from 0xF0000000 up.
pub const INIT_CGROUP_NS_INO: u64 = 0xEFFF_FFFB;
/// What a move can cost while favordynmods is off.
const WAIT: &str = "each move may wait an RCU grace period, 5-40 ms";

/// The cgroup2 mount as `/proc/self/mountinfo` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub mount_point: PathBuf,
    /// The per-mount options (`rw,nosuid,nodev,noexec,relatime`).
    pub mount_options: Vec<String>,
    /// The superblock's options (`rw,nsdelegate,memory_recursiveprot`).
    pub super_options: Vec<String>,
}

impl Cgroup2Mount {
    pub fn favordynmods(&self) -> bool {
        self.super_options.iter().any(|o| o == OPTION)
    }
}

/// What the kernel says about favordynmods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// `/sys/kernel/cgroup/features` lists it.
    pub supported: bool,
    /// The first cgroup2 mount: the unified hierarchy ffrtmp uses, or a
    /// hybrid host's empty cgroup2 mount (`/sys/fs/cgroup/unified`).
    pub cgroup2: Option<Cgroup2Mount>,
    /// A cgroup mount (v2, or v1 after `cgroup_favordynmods=true`) whose
    /// super options show it on: the semaphore is global, one is enough.
    pub on_at: Option<PathBuf>,
}

/// favordynmods in one word, for the log, `ffrtmp status` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    On,
    /// Supported, and there is a cgroup2 mount to turn it on with.
    Off,
    /// Supported, but no cgroup2 mount (cgroup v1 only).
    OffNoCgroup2,
    /// The kernel does not know the option (before 6.0).
    Unsupported,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::On => "on",
            State::Off | State::OffNoCgroup2 => "off",
            State::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Detected {
    /// From the contents of the features file (`None`: it does not exist)
    /// and of `/proc/self/mountinfo`.
    pub fn parse(features: Option<&str>, mountinfo: &str) -> Detected {
        let (cgroup2, on_at) = parse_mountinfo(mountinfo);
        Detected {
            supported: features.is_some_and(supported),
            cgroup2,
            on_at,
        }
    }

    pub fn state(&self) -> State {
        if self.on_at.is_some() {
            State::On
        } else if !self.supported {
            State::Unsupported
        } else if self.cgroup2.is_none() {
            State::OffNoCgroup2
        } else {
            State::Off
        }
    }

    /// One line on what favordynmods means for moving processes in;
    /// `how_to_turn_on` names the flag (or key) that turns it on.
    pub fn describe(&self, how_to_turn_on: &str) -> String {
        match self.state() {
            State::On => format!(
                "favordynmods: on ({}): moves into job cgroups do not wait for an RCU grace period; every fork and exit on the host pays a little for it",
                self.on_at.as_deref().unwrap_or(Path::new("?")).display()
            ),
            State::Off => format!("favordynmods: off (supported): {WAIT}; {how_to_turn_on} turns it on"),
            State::OffNoCgroup2 => format!(
                "favordynmods: off (supported, but no cgroup2 mount to turn it on with; cgroup v1 takes the boot parameter cgroup_favordynmods=true): {WAIT}"
            ),
            State::Unsupported => format!("favordynmods: not supported by this kernel (Linux 6.0+): {WAIT}"),
        }
    }
}

/// Does the features file list favordynmods?
pub fn supported(features: &str) -> bool {
    features.lines().any(|l| l.trim() == OPTION)
}

/// The first cgroup2 mount of `mountinfo`, and the first cgroup mount (v1
/// or v2) whose super options include favordynmods. The first cgroup2
/// mount is also the one the hierarchy detection uses.
pub fn parse_mountinfo(mountinfo: &str) -> (Option<Cgroup2Mount>, Option<PathBuf>) {
    let mut cgroup2 = None;
    let mut on_at = None;
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNT_POINT MOUNT_OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER_OPTIONS
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let before: Vec<&str> = before.split(' ').collect();
        let after: Vec<&str> = after.split(' ').collect();
        if before.len() < 6 || after.len() < 3 {
            continue;
        }
        let fs_type = after[0];
        if fs_type != "cgroup2" && fs_type != "cgroup" {
            continue;
        }
        let mount_point = PathBuf::from(unescape(before[4]));
        let options = |field: &str| field.split(',').map(str::to_owned).collect::<Vec<_>>();
        let super_options = options(after[2]);
        if on_at.is_none() && super_options.iter().any(|o| o == OPTION) {
            on_at = Some(mount_point.clone());
        }
        if fs_type == "cgroup2" && cgroup2.is_none() {
            cgroup2 = Some(Cgroup2Mount {
                mount_point,
                mount_options: options(before[5]),
                super_options,
            });
        }
    }
    (cgroup2, on_at)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Is the namespace whose `/proc/self/ns/cgroup` has inode `ino` the
/// initial one? `None`: the link does not exist (a kernel without cgroup
/// namespaces, where every process is in the initial one).
///
/// Neither of the obvious alternatives is reliable: `/proc/self/cgroup`
/// shows `0::/` at the root of any namespace, and `/proc/1/ns/cgroup` is
/// the namespace of *our* pid namespace's init (a container's own), when it
/// is readable at all (it is not, on some hosts, even for root).
pub fn is_initial_cgroup_ns(ino: Option<u64>) -> bool {
    ino.is_none_or(|ino| ino == INIT_CGROUP_NS_INO)
}

/// A per-mount or superblock flag of mount(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MountFlag {
    ReadOnly,
    NoSuid,
    NoDev,
    NoExec,
    NoAtime,
    NoDirAtime,
    RelAtime,
    NoSymFollow,
    Synchronous,
    DirSync,
    LazyTime,
    MandLock,
}

/// `mount(NULL, target, NULL, MS_REMOUNT | flags, data)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remount {
    pub target: PathBuf,
    pub flags: Vec<MountFlag>,
    /// The cgroup2 options, comma-separated: every current one plus
    /// favordynmods.
    pub data: String,
}

impl fmt::Display for Remount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} with {}", self.target.display(), self.data)
    }
}

/// The remount that turns favordynmods on at `mount` and changes nothing
/// else. mount(2) with `MS_REMOUNT` replaces the mount's own flags (nosuid,
/// nodev, noexec, the atime mode…) with the ones passed and the
/// superblock's ro/sync/lazytime with the ones passed, and the cgroup2
/// root flags with the options in `data`: all of them are carried over.
/// An option this function does not know could be lost, so it refuses.
pub fn remount_for(mount: &Cgroup2Mount) -> Result<Remount, String> {
    let mut flags = Vec::new();
    let mut read_only = (false, false);
    for option in &mount.mount_options {
        let flag = match option.as_str() {
            "rw" => continue,
            "ro" => {
                read_only.0 = true;
                MountFlag::ReadOnly
            }
            "nosuid" => MountFlag::NoSuid,
            "nodev" => MountFlag::NoDev,
            "noexec" => MountFlag::NoExec,
            "noatime" => MountFlag::NoAtime,
            "nodiratime" => MountFlag::NoDirAtime,
            "relatime" => MountFlag::RelAtime,
            "nosymfollow" => MountFlag::NoSymFollow,
            other => {
                return Err(format!(
                    "{} has the mount option {other:?}, which a remount could drop; refusing to remount it",
                    mount.mount_point.display()
                ));
            }
        };
        flags.push(flag);
    }
    let mut data: Vec<&str> = Vec::new();
    for option in &mount.super_options {
        let flag = match option.as_str() {
            "rw" => continue,
            "ro" => {
                read_only.1 = true;
                continue;
            }
            "sync" => MountFlag::Synchronous,
            "dirsync" => MountFlag::DirSync,
            "lazytime" => MountFlag::LazyTime,
            "mand" => MountFlag::MandLock,
            // A cgroup2 option (or a security module's): kept as it is.
            cgroup2 => {
                if !cgroup2.is_empty() && !data.contains(&cgroup2) {
                    data.push(cgroup2);
                }
                continue;
            }
        };
        flags.push(flag);
    }
    if read_only.0 != read_only.1 {
        return Err(format!(
            "{} is read-only {} but not {}: a remount cannot keep both",
            mount.mount_point.display(),
            if read_only.0 { "as a mount" } else { "in its superblock" },
            if read_only.0 { "in its superblock" } else { "as a mount" },
        ));
    }
    if !data.contains(&OPTION) {
        data.push(OPTION);
    }
    flags.sort_unstable();
    flags.dedup();
    Ok(Remount {
        target: mount.mount_point.clone(),
        flags,
        data: data.join(","),
    })
}

/// What to do about favordynmods when ffrtmp is asked to keep it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It is on already.
    Nothing,
    Remount(Remount),
    /// It cannot be turned on from here; the one-line reason.
    Refuse(String),
}

/// Decide how to turn favordynmods on, given what the kernel says and
/// whether ffrtmp runs in the initial cgroup namespace.
pub fn decide(detected: &Detected, initial_ns: bool) -> Decision {
    if !detected.supported {
        return Decision::Refuse(format!(
            "this kernel does not support favordynmods ({FEATURES_FILE} does not list it; Linux 6.0 or later does)"
        ));
    }
    let Some(mount) = &detected.cgroup2 else {
        return Decision::Refuse(
            "no cgroup2 is mounted (a cgroup v1 only host), and cgroup v1 does not change its options on remount: boot with cgroup_favordynmods=true instead".into(),
        );
    };
    if !initial_ns {
        return Decision::Refuse(format!(
            "ffrtmp is not in the initial cgroup namespace (/proc/self/ns/cgroup is not inode {INIT_CGROUP_NS_INO}), where the kernel ignores cgroup2 root options: turn it on from the host"
        ));
    }
    if mount.favordynmods() {
        return Decision::Nothing;
    }
    match remount_for(mount) {
        Ok(remount) => Decision::Remount(remount),
        Err(why) => Decision::Refuse(why),
    }
}

/// Does turning favordynmods on last until the next boot on the kernel
/// with this release (`uname -r`)? True from 6.18 on; `None` when the
/// release does not parse.
pub fn irreversible(release: &str) -> Option<bool> {
    let mut parts = release.split(['.', '-', '+']);
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some((major, minor) >= (6, 18))
}

/// The warning logged when ffrtmp turns favordynmods on.
pub fn irreversibility_warning(release: &str) -> String {
    match irreversible(release) {
        Some(true) => format!(
            "favordynmods: on Linux 6.18 and later (this is {release}) it also switches moves to a per-thread-group lock that cannot be turned off again before a reboot"
        ),
        _ => format!(
            "favordynmods: this kernel ({release}) can turn it off again with a remount without it; on Linux 6.18 and later that is no longer possible before a reboot"
        ),
    }
}

// ---------------------------------------------------------------------------
// The I/O

/// Read the features file and `/proc/self/mountinfo`.
pub fn detect() -> Result<Detected, String> {
    let features = match std::fs::read_to_string(FEATURES_FILE) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading {FEATURES_FILE}: {e}")),
    };
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    Ok(Detected::parse(features.as_deref(), &mountinfo))
}

/// Was this process started in the initial cgroup namespace? One started
/// in a container's and joined to the host's since
/// ([`super::namespace::join_pid1`]) was not: the container should not
/// change the host's mount options.
pub fn in_initial_cgroup_ns() -> Result<bool, String> {
    super::namespace::started_in_initial()
}

/// Carry out `remount`.
pub fn remount(remount: &Remount) -> std::io::Result<()> {
    use rustix::mount::MountFlags;
    let flags = remount.flags.iter().fold(MountFlags::empty(), |all, flag| {
        all | match flag {
            MountFlag::ReadOnly => MountFlags::RDONLY,
            MountFlag::NoSuid => MountFlags::NOSUID,
            MountFlag::NoDev => MountFlags::NODEV,
            MountFlag::NoExec => MountFlags::NOEXEC,
            MountFlag::NoAtime => MountFlags::NOATIME,
            MountFlag::NoDirAtime => MountFlags::NODIRATIME,
            MountFlag::RelAtime => MountFlags::RELATIME,
            MountFlag::NoSymFollow => MountFlags::NOSYMFOLLOW,
            MountFlag::Synchronous => MountFlags::SYNCHRONOUS,
            MountFlag::DirSync => MountFlags::DIRSYNC,
            MountFlag::LazyTime => MountFlags::LAZYTIME,
            MountFlag::MandLock => MountFlags::PERMIT_MANDATORY_FILE_LOCKING,
        }
    });
    rustix::mount::mount_remount(&remount.target, flags, remount.data.as_str()).map_err(std::io::Error::from)
}

/// What [`ensure`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    /// Before anything was done.
    pub before: Detected,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It was on (or ffrtmp was not asked to keep it on).
    Nothing,
    /// Remounted; `after` is what mountinfo says then.
    Remounted { remount: Remount, after: Detected },
    /// The remount failed.
    Failed { remount: Remount, error: String },
    /// It cannot be turned on from here.
    Refused(String),
}

impl Ensured {
    /// What is true now.
    pub fn now(&self) -> &Detected {
        match &self.outcome {
            Outcome::Remounted { after, .. } => after,
            _ => &self.before,
        }
    }
}

/// Detect favordynmods and, when `keep_on`, turn it on if it is off.
pub fn ensure(keep_on: bool) -> Result<Ensured, String> {
    let before = detect()?;
    if !keep_on {
        return Ok(Ensured {
            before,
            outcome: Outcome::Nothing,
        });
    }
    let outcome = match decide(&before, in_initial_cgroup_ns()?) {
        Decision::Nothing => Outcome::Nothing,
        Decision::Refuse(why) => Outcome::Refused(why),
        Decision::Remount(remount) => match self::remount(&remount) {
            Ok(()) => Outcome::Remounted {
                after: detect()?,
                remount,
            },
            Err(e) => Outcome::Failed {
                error: format!("remounting {remount}: {e}"),
                remount,
            },
        },
    };
    Ok(Ensured { before, outcome })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEATURES_6_1: &str = "nsdelegate\nfavordynmods\nmemory_localevents\nmemory_recursiveprot\n";
    const FEATURES_5_10: &str = "nsdelegate\nmemory_localevents\nmemory_recursiveprot\n";

    const UNIFIED: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const LEGACY: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";

    fn mount(mount_options: &str, super_options: &str) -> Cgroup2Mount {
        let split = |s: &str| s.split(',').map(str::to_owned).collect();
        Cgroup2Mount {
            mount_point: "/sys/fs/cgroup".into(),
            mount_options: split(mount_options),
            super_options: split(super_options),
        }
    }

    #[test]
    fn the_features_file_says_whether_it_is_supported() {
        assert!(supported(FEATURES_6_1));
        assert!(!supported(FEATURES_5_10));
        assert!(!supported(""));
        assert!(!supported("favordynmodsx\nnofavordynmods\n"));
        assert!(Detected::parse(Some(FEATURES_6_1), UNIFIED).supported);
        assert!(!Detected::parse(None, UNIFIED).supported);
    }

    #[test]
    fn mountinfo_gives_the_first_cgroup2_mount_with_both_option_fields() {
        let (m, on) = parse_mountinfo(UNIFIED);
        assert_eq!(
            m,
            Some(mount(
                "rw,nosuid,nodev,noexec,relatime",
                "rw,nsdelegate,memory_recursiveprot"
            ))
        );
        assert_eq!(on, None);

        let (m, _) = parse_mountinfo(HYBRID);
        let m = m.unwrap();
        assert_eq!(m.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m.super_options, ["rw"]);

        assert_eq!(parse_mountinfo(LEGACY), (None, None));
        assert_eq!(parse_mountinfo(""), (None, None));
        assert_eq!(parse_mountinfo("garbage\n1 2 3 - cgroup2\n"), (None, None));

        // A second cgroup2 mount (a bind mount in a container) does not win.
        let two = format!("{UNIFIED}50 35 0:30 /x /srv/cg rw - cgroup2 cgroup2 rw,nsdelegate,favordynmods\n");
        let (m, on) = parse_mountinfo(&two);
        assert_eq!(m.unwrap().mount_point, Path::new("/sys/fs/cgroup"));
        assert_eq!(
            on.as_deref(),
            Some(Path::new("/srv/cg")),
            "the option is global: one mount showing it is enough"
        );

        let escaped = "35 24 0:30 / /mnt/a\\040b rw - cgroup2 none rw,favordynmods\n";
        let (m, on) = parse_mountinfo(escaped);
        assert_eq!(m.unwrap().mount_point, Path::new("/mnt/a b"));
        assert_eq!(on.as_deref(), Some(Path::new("/mnt/a b")));
    }

    #[test]
    fn the_state_in_one_word_and_one_line() {
        let on = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,favordynmods\n";
        let d = Detected::parse(Some(FEATURES_6_1), on);
        assert_eq!(d.state(), State::On);
        assert!(
            d.describe("--favor-dynmods")
                .starts_with("favordynmods: on (/sys/fs/cgroup): ")
        );

        let d = Detected::parse(Some(FEATURES_6_1), UNIFIED);
        assert_eq!(d.state(), State::Off);
        assert_eq!(
            d.describe("--favor-dynmods"),
            "favordynmods: off (supported): each move may wait an RCU grace period, 5-40 ms; --favor-dynmods turns it on"
        );

        let d = Detected::parse(Some(FEATURES_6_1), LEGACY);
        assert_eq!(d.state(), State::OffNoCgroup2);
        assert!(
            d.describe("x").contains("cgroup_favordynmods=true"),
            "{}",
            d.describe("x")
        );

        // cgroup_favordynmods=true on a v1 host: the v1 mounts show it.
        let v1_on = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,favordynmods\n";
        assert_eq!(Detected::parse(Some(FEATURES_6_1), v1_on).state(), State::On);

        let d = Detected::parse(None, UNIFIED);
        assert_eq!(d.state(), State::Unsupported);
        assert_eq!(
            d.describe("x"),
            "favordynmods: not supported by this kernel (Linux 6.0+): each move may wait an RCU grace period, 5-40 ms"
        );
        assert_eq!(State::OffNoCgroup2.as_str(), "off");
    }

    #[test]
    fn the_initial_cgroup_namespace_is_known_by_its_inode() {
        assert!(is_initial_cgroup_ns(Some(4026531835)));
        assert!(!is_initial_cgroup_ns(Some(4026532400)));
        assert!(
            is_initial_cgroup_ns(None),
            "no cgroup namespaces: every process is in the initial one"
        );
    }

    #[test]
    fn the_remount_keeps_every_option_and_adds_favordynmods() {
        let r = remount_for(&mount(
            "rw,nosuid,nodev,noexec,relatime",
            "rw,nsdelegate,memory_recursiveprot",
        ))
        .unwrap();
        assert_eq!(r.target, Path::new("/sys/fs/cgroup"));
        assert_eq!(
            r.flags,
            [
                MountFlag::NoSuid,
                MountFlag::NoDev,
                MountFlag::NoExec,
                MountFlag::RelAtime
            ]
        );
        assert_eq!(r.data, "nsdelegate,memory_recursiveprot,favordynmods");
        assert_eq!(
            r.to_string(),
            "/sys/fs/cgroup with nsdelegate,memory_recursiveprot,favordynmods"
        );

        // The hybrid host's unified mount: nothing but rw,relatime.
        let r = remount_for(&mount("rw,relatime", "rw")).unwrap();
        assert_eq!(r.flags, [MountFlag::RelAtime]);
        assert_eq!(r.data, "favordynmods");

        // Every cgroup2 option there is, and one from a security module.
        let every =
            "rw,nsdelegate,memory_localevents,memory_recursiveprot,memory_hugetlb_accounting,pids_localevents,seclabel";
        let r = remount_for(&mount(
            "ro,noatime,nodiratime,nosymfollow",
            &every.replace("rw,", "ro,"),
        ))
        .unwrap();
        assert_eq!(
            r.flags,
            [
                MountFlag::ReadOnly,
                MountFlag::NoAtime,
                MountFlag::NoDirAtime,
                MountFlag::NoSymFollow
            ]
        );
        assert_eq!(
            r.data,
            "nsdelegate,memory_localevents,memory_recursiveprot,memory_hugetlb_accounting,pids_localevents,seclabel,favordynmods"
        );
        // Superblock flags travel as flags, not as options.
        let r = remount_for(&mount("rw", "rw,sync,dirsync,lazytime,mand,nsdelegate")).unwrap();
        assert_eq!(
            r.flags,
            [
                MountFlag::Synchronous,
                MountFlag::DirSync,
                MountFlag::LazyTime,
                MountFlag::MandLock
            ]
        );
        assert_eq!(r.data, "nsdelegate,favordynmods");
        // Already listed: not twice.
        assert_eq!(
            remount_for(&mount("rw", "rw,favordynmods")).unwrap().data,
            "favordynmods"
        );
    }

    #[test]
    fn a_remount_that_would_lose_something_is_refused() {
        let e = remount_for(&mount("rw,idmapped", "rw")).unwrap_err();
        assert!(e.contains("\"idmapped\""), "{e}");
        let e = remount_for(&mount("ro", "rw")).unwrap_err();
        assert!(e.contains("read-only as a mount but not in its superblock"), "{e}");
        let e = remount_for(&mount("rw", "ro")).unwrap_err();
        assert!(e.contains("read-only in its superblock but not as a mount"), "{e}");
    }

    #[test]
    fn decide_refuses_remounts_or_does_nothing() {
        let off = Detected::parse(Some(FEATURES_6_1), UNIFIED);
        match decide(&off, true) {
            Decision::Remount(r) => assert_eq!(r.data, "nsdelegate,memory_recursiveprot,favordynmods"),
            other => panic!("{other:?}"),
        }
        let Decision::Refuse(why) = decide(&off, false) else {
            panic!("outside the initial cgroup namespace")
        };
        assert!(
            why.starts_with("ffrtmp is not in the initial cgroup namespace"),
            "{why}"
        );

        let hybrid = Detected::parse(Some(FEATURES_6_1), HYBRID);
        assert!(
            matches!(decide(&hybrid, true), Decision::Remount(r) if r.target == Path::new("/sys/fs/cgroup/unified")),
            "a hybrid host's unified mount is remounted: the lock is global"
        );

        let Decision::Refuse(why) = decide(&Detected::parse(Some(FEATURES_6_1), LEGACY), true) else {
            panic!("v1 only")
        };
        assert!(why.contains("cgroup_favordynmods=true"), "{why}");

        let Decision::Refuse(why) = decide(&Detected::parse(None, UNIFIED), true) else {
            panic!("unsupported")
        };
        assert!(why.starts_with("this kernel does not support favordynmods"), "{why}");
        // Unsupported wins over everything else.
        assert!(
            matches!(decide(&Detected::parse(None, LEGACY), false), Decision::Refuse(w) if w.starts_with("this kernel"))
        );

        let on = Detected::parse(
            Some(FEATURES_6_1),
            "35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,favordynmods\n",
        );
        assert_eq!(decide(&on, true), Decision::Nothing);
        assert!(
            matches!(decide(&on, false), Decision::Refuse(_)),
            "outside the initial namespace ffrtmp could not keep it on, so it refuses even while it is on"
        );
    }

    #[test]
    fn from_6_18_on_it_cannot_be_undone() {
        assert_eq!(irreversible("6.18.44-fc-v669"), Some(true));
        assert_eq!(irreversible("6.18"), Some(true));
        assert_eq!(irreversible("7.0.1"), Some(true));
        assert_eq!(irreversible("6.17.9-arch1-1"), Some(false));
        assert_eq!(irreversible("6.1.0-27-cloud-amd64"), Some(false));
        assert_eq!(irreversible("5.10.0-30-cloud-amd64"), Some(false));
        assert_eq!(irreversible("garbage"), None);
        assert!(irreversibility_warning("6.18.44").contains("cannot be turned off again before a reboot"));
        assert!(irreversibility_warning("6.1.0").contains("can turn it off again"));
    }
}
