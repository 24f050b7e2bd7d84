//! The cgroup namespace the daemon works in.
//!
//! A container runtime gives a container a cgroup namespace of its own
//! (podman and containerd do on cgroup v2, privileged containers included).
//! From there the host's cgroups read as `/../…` in `/proc/<pid>/cgroup`,
//! and on a cgroup2 mount with `nsdelegate` (systemd's default) the kernel
//! refuses to move a process unless both its cgroup and the destination lie
//! inside the writer's namespace (`cgroup_procs_write_permission`: ENOENT).
//! A daemon that governs host processes (the DaemonSet: privileged, the
//! host's PID namespace, the host's cgroup tree) therefore joins the cgroup
//! namespace of PID 1 — the host's init when it shares the host's PID
//! namespace — before it starts any thread ([`join_pid1`]).
//!
//! [`plan`] decides (pure); [`join_pid1`] acts and remembers where the
//! process started ([`started_in_initial`]): `--favor-dynmods` is refused
//! for a daemon that was started in a container's namespace even after it
//! joined the host's.

use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use super::dynmods::is_initial_cgroup_ns;

const OWN: &str = "/proc/self/ns/cgroup";
const PID1: &str = "/proc/1/ns/cgroup";

/// What to do, from the inodes of our cgroup namespace and PID 1's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Already in the initial namespace (or the kernel has none): nothing.
    Stay,
    /// PID 1 is in another namespace (`inode`): join it.
    Join(u64),
    /// PID 1 shares our namespace, which is not the initial one: a
    /// container without the host's PID namespace. Nothing to join.
    Alone,
    /// PID 1's namespace could not be read (the reason).
    Unknown(String),
}

/// `own`: our namespace's inode (`None`: no cgroup namespaces); `pid1`:
/// PID 1's, or why it could not be read.
pub fn plan(own: Option<u64>, pid1: Result<u64, String>) -> Plan {
    if is_initial_cgroup_ns(own) {
        return Plan::Stay;
    }
    match pid1 {
        Ok(ino) if Some(ino) == own => Plan::Alone,
        Ok(ino) => Plan::Join(ino),
        Err(why) => Plan::Unknown(why),
    }
}

/// What [`join_pid1`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// Nothing to do: already in the initial namespace.
    Initial,
    /// Joined PID 1's namespace (`to`), leaving `from`.
    Joined { from: u64, to: u64, initial: bool },
    /// Stayed in a namespace of its own; the reason, for a warning.
    Stayed(String),
}

/// The inode of the namespace the process started in, recorded by the
/// first [`join_pid1`] that left it.
static STARTED_IN: OnceLock<u64> = OnceLock::new();

/// Join PID 1's cgroup namespace when ours is not the initial one. Call it
/// before any thread is started: `setns` moves the calling thread only, and
/// threads started later inherit its namespace.
pub fn join_pid1() -> Joined {
    let own = match inode(OWN) {
        Ok(own) => own,
        Err(e) => return Joined::Stayed(e),
    };
    let pid1 = inode(PID1).and_then(|ino| ino.ok_or_else(|| format!("{PID1} does not exist")));
    match plan(own, pid1) {
        Plan::Stay => Joined::Initial,
        Plan::Alone => {
            Joined::Stayed("PID 1 shares it (no host PID namespace): only processes inside it can be governed".into())
        }
        Plan::Unknown(why) => Joined::Stayed(why),
        Plan::Join(to) => match setns(PID1) {
            Ok(()) => {
                let from = own.unwrap_or_default();
                let _ = STARTED_IN.set(from);
                Joined::Joined {
                    from,
                    to,
                    initial: is_initial_cgroup_ns(Some(to)),
                }
            }
            Err(e) => Joined::Stayed(format!("joining PID 1's ({PID1}): {e}")),
        },
    }
}

/// Was the process started in the initial cgroup namespace (whatever it
/// joined since)?
pub fn started_in_initial() -> Result<bool, String> {
    match STARTED_IN.get() {
        Some(&ino) => Ok(is_initial_cgroup_ns(Some(ino))),
        None => inode(OWN).map(is_initial_cgroup_ns),
    }
}

/// The inode of a namespace link; `None` when it does not exist.
fn inode(link: &str) -> Result<Option<u64>, String> {
    match std::fs::metadata(link) {
        Ok(meta) => Ok(Some(meta.ino())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && link == OWN => Ok(None),
        Err(e) => Err(format!("reading {link}: {e}")),
    }
}

fn setns(link: &str) -> std::io::Result<()> {
    let file = std::fs::File::open(link)?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::dynmods::INIT_CGROUP_NS_INO;

    #[test]
    fn a_container_with_the_hosts_pids_joins_pid_1s_namespace() {
        let own = Some(0xF000_0123);
        assert_eq!(plan(own, Ok(INIT_CGROUP_NS_INO)), Plan::Join(INIT_CGROUP_NS_INO));
        // Nested: PID 1 is itself in a container's namespace; still its.
        assert_eq!(plan(own, Ok(0xF000_0042)), Plan::Join(0xF000_0042));
    }

    #[test]
    fn the_initial_namespace_and_a_container_of_its_own_stay() {
        assert_eq!(plan(Some(INIT_CGROUP_NS_INO), Ok(0xF000_0042)), Plan::Stay);
        assert_eq!(plan(None, Err("no /proc/1".into())), Plan::Stay);
        assert_eq!(plan(Some(0xF000_0123), Ok(0xF000_0123)), Plan::Alone);
        assert_eq!(
            plan(
                Some(0xF000_0123),
                Err("reading /proc/1/ns/cgroup: Permission denied".into())
            ),
            Plan::Unknown("reading /proc/1/ns/cgroup: Permission denied".into())
        );
    }
}
