//! Which cgroup hierarchy this host runs, read from `/proc/self/mountinfo`.
//!
//! - **Unified** (v2): one cgroup2 mount holds every controller.
//! - **Legacy** (v1): one mount per controller (or per group of co-mounted
//!   controllers), no cgroup2 mount.
//! - **Hybrid**: v1 controller mounts plus a cgroup2 mount (systemd's
//!   `/sys/fs/cgroup/unified`) that holds none of the controllers we use.
//!
//! On legacy and hybrid hosts the controllers we use live in the v1 mounts,
//! so both are driven by the v1 backend.

use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use procfs::FromBufRead;
use procfs::ProcessCGroups;
use procfs::process::MountInfos;

/// A controller ffrtmp uses, named as on v2. On v1, `Io` is `blkio` and
/// `Cpuacct` is a hierarchy of its own (CPU usage lives there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    Cpu,
    Cpuacct,
    Memory,
    Io,
    Pids,
    /// Not a kernel controller: the cgroup2 directory the network programs
    /// attach to (sockets record their cgroup2 cgroup). On v2 it is the job
    /// directory; on a hybrid host a directory in the unified mount.
    Net,
    Cpuset,
}

impl Controller {
    pub const ALL: [Controller; 7] = [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Memory,
        Controller::Io,
        Controller::Pids,
        Controller::Net,
        Controller::Cpuset,
    ];

    /// The name in a v1 mount's super options and in `/proc/self/cgroup`.
    /// [`Controller::Net`] lives in cgroup2, whose `/proc/self/cgroup` line
    /// (`0::/path`) names no controller: the empty name.
    pub fn v1_name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Memory => "memory",
            Controller::Io => "blkio",
            Controller::Pids => "pids",
            Controller::Net => "",
            Controller::Cpuset => "cpuset",
        }
    }

    /// A v1 hierarchy of its own (every one but [`Controller::Net`]).
    pub fn is_v1(self) -> bool {
        self != Controller::Net
    }

    /// The name in v2 `cgroup.controllers` / `cgroup.subtree_control`
    /// (v2 has no separate cpuacct: CPU usage is in `cpu.stat` everywhere).
    pub fn v2_name(self) -> Option<&'static str> {
        match self {
            Controller::Cpu => Some("cpu"),
            Controller::Cpuacct => None,
            Controller::Memory => Some("memory"),
            Controller::Io => Some("io"),
            Controller::Pids => Some("pids"),
            Controller::Net => None,
            Controller::Cpuset => Some("cpuset"),
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Controller::Net => f.write_str("cgroup2 (network)"),
            c => f.write_str(c.v1_name()),
        }
    }
}

/// One mounted hierarchy: where it is mounted, and where ffrtmp itself sits
/// in it (the path from `/proc/self/cgroup`, relative to the mount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub own_cgroup: PathBuf,
}

impl Mount {
    /// The directory of a cgroup given by its path inside this hierarchy.
    pub fn dir(&self, cgroup: &Path) -> PathBuf {
        self.mount_point.join(cgroup.strip_prefix("/").unwrap_or(cgroup))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    Unified(Mount),
    Legacy {
        controllers: BTreeMap<Controller, Mount>,
    },
    Hybrid {
        controllers: BTreeMap<Controller, Mount>,
        /// The cgroup2 mount: no controllers, but sockets record their
        /// cgroup here, so a job with a network limit gets a directory in it.
        unified: Mount,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("reading {path}: {source}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Parse { path: &'static str, message: String },
    #[error("no cgroup filesystem is mounted (neither cgroup2 nor a v1 cpu/memory hierarchy in /proc/self/mountinfo)")]
    NotMounted,
    #[error("{controller} hierarchy is mounted at {} but /proc/self/cgroup has no entry for it", mount.display())]
    NotMember { controller: Controller, mount: PathBuf },
}

impl Hierarchy {
    /// Detect from the live system.
    pub fn detect() -> Result<Hierarchy, DetectError> {
        let open = |path: &'static str| {
            std::fs::File::open(path)
                .map(std::io::BufReader::new)
                .map_err(|source| DetectError::Read { path, source })
        };
        Self::from_readers(open("/proc/self/mountinfo")?, open("/proc/self/cgroup")?)
    }

    /// Detect from the contents of `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn from_readers(mountinfo: impl BufRead, cgroup: impl BufRead) -> Result<Self, DetectError> {
        let mounts = MountInfos::from_buf_read(mountinfo).map_err(|e| DetectError::Parse {
            path: "/proc/self/mountinfo",
            message: e.to_string(),
        })?;
        let membership = ProcessCGroups::from_buf_read(cgroup).map_err(|e| DetectError::Parse {
            path: "/proc/self/cgroup",
            message: e.to_string(),
        })?;
        let own_path = |v1: Option<&str>| {
            membership.0.iter().find_map(|entry| match v1 {
                None if entry.hierarchy == 0 && entry.controllers.is_empty() => Some(PathBuf::from(&entry.pathname)),
                Some(name) if entry.controllers.iter().any(|c| c == name) => Some(PathBuf::from(&entry.pathname)),
                _ => None,
            })
        };

        let mut unified = None;
        let mut controllers = BTreeMap::new();
        for mount in mounts.0 {
            match mount.fs_type.as_str() {
                // The first cgroup2 mount wins; bind mounts of it repeat it.
                "cgroup2" if unified.is_none() => unified = Some(mount.mount_point),
                "cgroup" => {
                    for controller in Controller::ALL.into_iter().filter(|c| c.is_v1()) {
                        let name = controller.v1_name();
                        if !mount.super_options.contains_key(name) || controllers.contains_key(&controller) {
                            continue;
                        }
                        let own_cgroup = own_path(Some(name)).ok_or_else(|| DetectError::NotMember {
                            controller,
                            mount: mount.mount_point.clone(),
                        })?;
                        controllers.insert(
                            controller,
                            Mount {
                                mount_point: mount.mount_point.clone(),
                                own_cgroup,
                            },
                        );
                    }
                }
                _ => {}
            }
        }

        let has_v1 = controllers.contains_key(&Controller::Cpu) || controllers.contains_key(&Controller::Memory);
        match (has_v1, unified) {
            (true, None) => Ok(Hierarchy::Legacy { controllers }),
            // Without a `0::` line the cgroup2 mount is not ours to use.
            (true, Some(mount_point)) => Ok(match own_path(None) {
                Some(own_cgroup) => Hierarchy::Hybrid {
                    controllers,
                    unified: Mount {
                        mount_point,
                        own_cgroup,
                    },
                },
                None => Hierarchy::Legacy { controllers },
            }),
            (false, Some(mount_point)) => {
                let own_cgroup = own_path(None).ok_or_else(|| DetectError::NotMember {
                    controller: Controller::Cpu,
                    mount: mount_point.clone(),
                })?;
                Ok(Hierarchy::Unified(Mount {
                    mount_point,
                    own_cgroup,
                }))
            }
            (false, None) => Err(DetectError::NotMounted),
        }
    }

    /// Where sockets record their cgroup, for the network programs: the
    /// unified mount (v2 and hybrid hosts); none on a legacy host.
    pub fn socket_mount(&self) -> Option<&Mount> {
        match self {
            Hierarchy::Unified(m) | Hierarchy::Hybrid { unified: m, .. } => Some(m),
            Hierarchy::Legacy { .. } => None,
        }
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Hierarchy::Unified(_))
    }

    /// The v1 controller mounts (empty on a unified host).
    pub fn v1_controllers(&self) -> Option<&BTreeMap<Controller, Mount>> {
        match self {
            Hierarchy::Unified(_) => None,
            Hierarchy::Legacy { controllers } | Hierarchy::Hybrid { controllers, .. } => Some(controllers),
        }
    }

    /// One line for the log: which hierarchy and where.
    pub fn describe(&self) -> String {
        match self {
            Hierarchy::Unified(m) => format!("cgroup v2 (unified) at {}", m.mount_point.display()),
            Hierarchy::Legacy { controllers } => {
                format!("cgroup v1 (legacy): {}", describe_v1(controllers))
            }
            Hierarchy::Hybrid { controllers, unified } => format!(
                "cgroup v1 (hybrid, cgroup2 at {} without our controllers): {}",
                unified.mount_point.display(),
                describe_v1(controllers)
            ),
        }
    }
}

fn describe_v1(controllers: &BTreeMap<Controller, Mount>) -> String {
    controllers
        .iter()
        .map(|(c, m)| format!("{c}={}", m.mount_point.display()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
35 30 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
37 30 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn detects_hybrid_with_per_controller_own_paths() {
        let h = Hierarchy::from_readers(HYBRID_MOUNTINFO.as_bytes(), HYBRID_CGROUP.as_bytes()).unwrap();
        let Hierarchy::Hybrid { controllers, unified } = &h else {
            panic!("expected hybrid, got {h:?}")
        };
        assert_eq!(unified.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(unified.own_cgroup, Path::new("/"));
        assert_eq!(
            controllers[&Controller::Memory].own_cgroup,
            Path::new("/process_api/abc")
        );
        assert_eq!(
            controllers[&Controller::Memory].mount_point,
            Path::new("/sys/fs/cgroup/memory")
        );
        assert_eq!(
            controllers[&Controller::Io].mount_point,
            Path::new("/sys/fs/cgroup/blkio")
        );
        assert_eq!(controllers[&Controller::Cpu].own_cgroup, Path::new("/"));
        assert!(!h.is_v2());
    }

    #[test]
    fn detects_legacy_with_comounted_cpu_cpuacct() {
        let mountinfo = "\
31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let cgroup = "3:cpu,cpuacct:/a\n4:memory:/b\n";
        let h = Hierarchy::from_readers(mountinfo.as_bytes(), cgroup.as_bytes()).unwrap();
        let Hierarchy::Legacy { controllers } = &h else {
            panic!("expected legacy, got {h:?}")
        };
        assert_eq!(controllers[&Controller::Cpu], controllers[&Controller::Cpuacct]);
        assert_eq!(controllers[&Controller::Cpu].own_cgroup, Path::new("/a"));
        assert!(!controllers.contains_key(&Controller::Io));
    }

    #[test]
    fn detects_unified() {
        let mountinfo = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let cgroup = "0::/system.slice/ffrtmp.service\n";
        let h = Hierarchy::from_readers(mountinfo.as_bytes(), cgroup.as_bytes()).unwrap();
        assert_eq!(
            h,
            Hierarchy::Unified(Mount {
                mount_point: "/sys/fs/cgroup".into(),
                own_cgroup: "/system.slice/ffrtmp.service".into()
            })
        );
        assert!(h.is_v2());
    }

    #[test]
    fn no_cgroup_mount_is_an_error() {
        let mountinfo = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n";
        let err = Hierarchy::from_readers(mountinfo.as_bytes(), "0::/\n".as_bytes()).unwrap_err();
        assert!(matches!(err, DetectError::NotMounted));
    }

    #[test]
    fn mount_dir_joins_absolute_cgroup_paths() {
        let m = Mount {
            mount_point: "/sys/fs/cgroup/memory".into(),
            own_cgroup: "/a".into(),
        };
        assert_eq!(m.dir(Path::new("/a/b")), Path::new("/sys/fs/cgroup/memory/a/b"));
    }
}
