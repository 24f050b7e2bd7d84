//! Helpers for ffrtmp's privileged integration tests (`tests/tests/*.rs`).
//!
//! The tests drive the real `ffrtmp` binary against the host's real cgroups.
//! Safety rules every helper keeps:
//!
//! - Every test uses its own **relative** cgroup root ([`TestRoot`]), so no
//!   process is ever moved out of the subtree the test process runs in, and
//!   tests can run in parallel.
//! - [`TestRoot`]'s `Drop` removes the root's directory tree bottom-up in every
//!   mounted hierarchy (v1 and v2), with `rmdir` only: no cgroup file is written.
//! - Processes are ended only by PID, only if we started them (directly, or as
//!   the workload of an ffrtmp we started), and only while their start time
//!   still matches ([`Spawned`], [`PidGuard`]).
//!
//! Hierarchy-aware: on cgroup v1 (legacy or hybrid) each controller is read
//! from its own mount; on a unified (v2) host from the cgroup2 mount, so the
//! same tests can run in a v2 VM.

use std::borrow::BorrowMut;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
pub use serde_json::Value;

/// How long an ffrtmp invocation that should end on its own may take.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for a state change we are polling for (a process joining
/// a cgroup, a line of output).
pub const POLL_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Skipping

/// A privileged precondition is missing: print `skipping: <reason>` (to the
/// real stderr, past the test harness's capture) and let the test return;
/// under `CI=true` panic instead, because CI never skips.
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and a privileged test cannot run: {reason}");
    }
    // `writeln!` to the stderr handle is not captured by libtest (only the
    // print macros are), so the line shows even for a passing test.
    let test = std::thread::current()
        .name()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    let _ = writeln!(std::io::stderr(), "skipping: {reason}{test}");
}

/// The host, when privileged cgroup tests can run here; `None` (after
/// [`skip`]) when they cannot.
pub fn privileged() -> Option<&'static Host> {
    static CHECK: OnceLock<Result<Host, String>> = OnceLock::new();
    match CHECK.get_or_init(check_privileged) {
        Ok(host) => Some(host),
        Err(reason) => {
            skip(reason);
            None
        }
    }
}

fn check_privileged() -> Result<Host, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root: the privileged cgroup tests need root".into());
    }
    let host = Host::detect()?;
    let needed: &[Controller] = match host.version {
        Version::V1 => &[Controller::Cpu, Controller::Cpuacct, Controller::Memory],
        Version::V2 => &[Controller::Cpu, Controller::Memory],
    };
    for &c in needed {
        if host.mount_for(c).is_none() {
            return Err(format!("the {} controller is not mounted", c.v1_name()));
        }
    }
    if host.version == Version::V2 {
        // Relative roots sit below our own cgroup. Unless that is the root
        // cgroup, it holds our processes and so cannot hand controllers to
        // children it does not already delegate (no internal processes).
        let mount = host.mount(Controller::Cpu);
        let dir = &mount.own_dir;
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let (available, delegated) = (read("cgroup.controllers"), read("cgroup.subtree_control"));
        let is_root = mount.own_cgroup == Path::new("/");
        for name in ["cpu", "memory"] {
            if !available.split_whitespace().any(|c| c == name) {
                return Err(format!("cgroup v2: {name} is not available in {}", dir.display()));
            }
            if !is_root && !delegated.split_whitespace().any(|c| c == name) {
                return Err(format!(
                    "cgroup v2: {} holds this process and does not delegate {name} in cgroup.subtree_control, so no relative cgroup root can get it",
                    dir.display()
                ));
            }
        }
    }
    Ok(host)
}

/// `let host = require_privileged!();` — the host, or return from the test
/// after printing why it is skipped (a panic under `CI=true`).
#[macro_export]
macro_rules! require_privileged {
    () => {
        match $crate::privileged() {
            Some(host) => host,
            None => return,
        }
    };
}

// ---------------------------------------------------------------------------
// The binary

/// Copy the executable `from` to `to`, to be exec'd later. The copy is
/// written by a `cp` child, never by this process: a test thread that forks
/// while this process holds the new file open for writing would hand the
/// open file to its child until that child execs, and exec'ing the copy in
/// that window fails with ETXTBSY ("Text file busy").
#[track_caller]
pub fn copy_executable(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("--")
        .arg(from)
        .arg(to)
        .status()
        .unwrap_or_else(|e| panic!("running cp: {e}"));
    assert!(status.success(), "cp {} {}: {status}", from.display(), to.display());
}

/// The `ffrtmp` binary next to this test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/ffrtmp`), or
/// `$FFRTMP_BIN`. Panics when it is missing or older than the sources.
pub fn ffrtmp_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("FFRTMP_BIN") {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "FFRTMP_BIN={} does not exist", bin.display());
            return bin;
        }
        let exe = std::env::current_exe().expect("the path of the test executable");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("unexpected test executable location {}", exe.display()));
        let bin = profile_dir.join("ffrtmp");
        assert!(
            bin.is_file(),
            "{} not found: build it first: cargo build -p ffrtmp",
            bin.display()
        );
        // `cargo test -p tests` does not build the binary: refuse a stale one
        // rather than test old code. Cargo's dep-info lists its sources.
        if let Some(source) = newer_source(&bin) {
            panic!(
                "{} is older than {}: build it first: cargo build -p ffrtmp (or set FFRTMP_BIN to test it anyway)",
                bin.display(),
                source.display()
            );
        }
        bin
    })
}

/// A source file of `bin` changed after `bin` was built, per the dep-info
/// file cargo writes next to it (`target/<profile>/ffrtmp.d`).
fn newer_source(bin: &Path) -> Option<PathBuf> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let built = modified(bin)?;
    let dep_info = std::fs::read_to_string(bin.with_extension("d")).ok()?;
    let (_, sources) = dep_info.lines().next()?.split_once(": ")?;
    // Make spaces escaped as "\ " survive the split.
    let sources = sources.replace("\\ ", "\0");
    sources
        .split_whitespace()
        .map(|s| PathBuf::from(s.replace('\0', " ")))
        .find(|s| modified(s).is_some_and(|m| m > built))
}

/// A stub program of this package (`tests/src/bin/<name>.rs`), next to
/// ffrtmp (`target/<profile>/<name>`; in the VM `/t/<profile>/<name>`).
/// `cargo test -p tests` builds the package's bins before its tests.
#[track_caller]
pub fn stub_bin(name: &str) -> PathBuf {
    let dir = ffrtmp_bin().parent().expect("ffrtmp is in a directory");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "the stub {} is missing: build it first: cargo build -p tests --bins",
        bin.display()
    );
    bin
}

/// A `Command` for ffrtmp with `args`; the environment is inherited except
/// `FFRTMP_CGROUP_ROOT` (every test passes its root explicitly).
pub fn ffrtmp(args: &[&str]) -> Command {
    let mut cmd = Command::new(ffrtmp_bin());
    cmd.args(args).env_remove("FFRTMP_CGROUP_ROOT");
    cmd
}

/// Run ffrtmp to completion (stdin closed), with a deadline.
pub fn run_ffrtmp(args: &[&str]) -> Output {
    Spawned::start_with_stdin(ffrtmp(args), Stdio::null()).wait(EXIT_TIMEOUT)
}

/// A seccomp filter that answers `clone3` with `errno` and allows every
/// other system call: a container runtime's default profile. moby's and
/// containers-common's answer ENOSYS to a container without
/// `CAP_SYS_ADMIN` (so that glibc falls back to `clone`); Docker's before
/// 20.10.10 answered EPERM. It checks for x86_64 system calls only and
/// allows everything else.
#[derive(Debug, Clone, Copy)]
pub struct Clone3Refused {
    pub errno: i32,
}

impl Clone3Refused {
    /// Install the filter in the calling thread, for good: every process
    /// the thread starts from now on inherits it. Only `prctl` calls, so it
    /// is safe between fork and exec.
    pub fn install(self) -> std::io::Result<()> {
        const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
        const ARCH_OFFSET: u32 = 4; // seccomp_data.arch
        const NR_OFFSET: u32 = 0; // seccomp_data.nr
        let stmt = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let jump_eq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        };
        let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        let ret = libc::BPF_RET | libc::BPF_K;
        let program = [
            stmt(load, ARCH_OFFSET),
            jump_eq(AUDIT_ARCH_X86_64, 0, 2), // another ABI: allow
            stmt(load, NR_OFFSET),
            jump_eq(libc::SYS_clone3 as u32, 1, 0),
            stmt(ret, libc::SECCOMP_RET_ALLOW),
            stmt(
                ret,
                libc::SECCOMP_RET_ERRNO | (self.errno as u32 & libc::SECCOMP_RET_DATA),
            ),
        ];
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr().cast_mut(),
        };
        // SAFETY: plain prctl calls; `fprog` points at `program`, alive
        // through the call (the kernel copies it).
        let rc = unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                -1
            } else {
                libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog)
            }
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Start `cmd` under the filter (installed in its child before exec).
    pub fn apply(self, cmd: &mut Command) -> &mut Command {
        use std::os::unix::process::CommandExt;
        // SAFETY: `install` makes only async-signal-safe calls (prctl).
        unsafe { cmd.pre_exec(move || self.install()) }
    }

    /// What `clone3` answers under the filter, asked from a thread of its
    /// own that then ends (and its filter with it): the proof that the
    /// filter refuses it here. Without a filter the answer is EINVAL (no
    /// arguments).
    pub fn answer(self) -> std::io::Result<i32> {
        std::thread::spawn(move || {
            self.install()?;
            // SAFETY: clone3 with size 0 creates nothing: it is refused
            // (EINVAL) before any argument is read.
            let rc = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
            Ok(if rc == -1 {
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
            } else {
                0
            })
        })
        .join()
        .expect("the clone3 probe thread panicked")
    }
}

// ---------------------------------------------------------------------------
// Hierarchies

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Legacy or hybrid: the controllers we use are v1 mounts.
    V1,
    /// Unified: one cgroup2 mount holds every controller.
    V2,
}

/// A controller ffrtmp uses. On v2 `Cpuacct` means the cpu controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Cpu,
    Cpuacct,
    Memory,
    Io,
    Pids,
    Cpuset,
}

impl Controller {
    pub fn v1_name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Memory => "memory",
            Controller::Io => "blkio",
            Controller::Pids => "pids",
            Controller::Cpuset => "cpuset",
        }
    }
}

/// One mounted cgroup hierarchy and where this test process sits in it.
#[derive(Debug, Clone)]
pub struct Mount {
    pub mount_point: PathBuf,
    /// v1: the hierarchy's options (controllers, `name=…`); empty for cgroup2.
    pub options: Vec<String>,
    pub v2: bool,
    /// This process's cgroup in the hierarchy, from `/proc/self/cgroup`.
    pub own_cgroup: PathBuf,
    /// The directory of `own_cgroup`.
    pub own_dir: PathBuf,
}

/// The host's cgroup layout, read from `/proc/self/mountinfo` and
/// `/proc/self/cgroup`.
#[derive(Debug, Clone)]
pub struct Host {
    pub version: Version,
    /// Every cgroup mount, v1 and v2 (one per hierarchy).
    pub mounts: Vec<Mount>,
}

impl Host {
    pub fn detect() -> Result<Host, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let cgroup =
            std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
        Host::parse(&mountinfo, &cgroup)
    }

    pub fn parse(mountinfo: &str, self_cgroup: &str) -> Result<Host, String> {
        let membership = parse_cgroup_file(self_cgroup);
        let mut mounts: Vec<Mount> = Vec::new();
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            let (mount_root, mount_point) = (pre[3], unescape(pre[4]));
            let v2 = match post[0] {
                "cgroup2" => true,
                "cgroup" => false,
                _ => continue,
            };
            let options: Vec<String> = if v2 {
                Vec::new()
            } else {
                post[2]
                    .split(',')
                    .filter(|o| *o != "rw" && *o != "ro")
                    .map(str::to_owned)
                    .collect()
            };
            // The /proc/self/cgroup entry of this hierarchy.
            let entry = membership.iter().find(|e| {
                if v2 {
                    e.id == "0" && e.controllers.is_empty()
                } else {
                    !e.controllers.is_empty() && e.controllers.iter().all(|c| options.contains(c))
                }
            });
            let Some(entry) = entry else { continue };
            // A bind mount of the same hierarchy repeats it: keep the first.
            if mounts.iter().any(|m| m.v2 == v2 && m.options == options) {
                continue;
            }
            let own_cgroup = PathBuf::from(&entry.path);
            let inside = own_cgroup.strip_prefix(mount_root).unwrap_or(&own_cgroup);
            let own_dir = PathBuf::from(&mount_point).join(inside.strip_prefix("/").unwrap_or(inside));
            mounts.push(Mount {
                mount_point: mount_point.into(),
                options,
                v2,
                own_cgroup,
                own_dir,
            });
        }
        let has_v1 = mounts
            .iter()
            .any(|m| !m.v2 && m.options.iter().any(|o| o == "cpu" || o == "memory"));
        let version = if has_v1 {
            Version::V1
        } else if mounts.iter().any(|m| m.v2) {
            Version::V2
        } else {
            return Err("no cgroup hierarchy is mounted".into());
        };
        Ok(Host { version, mounts })
    }

    /// The mount holding `c` (v1), or the cgroup2 mount (v2).
    pub fn mount_for(&self, c: Controller) -> Option<&Mount> {
        match self.version {
            Version::V1 => self
                .mounts
                .iter()
                .find(|m| !m.v2 && m.options.iter().any(|o| o == c.v1_name())),
            Version::V2 => self.mounts.iter().find(|m| m.v2),
        }
    }

    fn mount(&self, c: Controller) -> &Mount {
        self.mount_for(c)
            .unwrap_or_else(|| panic!("the {} controller is not mounted", c.v1_name()))
    }

    /// This process's cgroup directory in `c`'s hierarchy.
    pub fn own_dir(&self, c: Controller) -> PathBuf {
        self.mount(c).own_dir.clone()
    }

    /// The cgroup path (as in `/proc/<pid>/cgroup`) of `cgroup_file`'s
    /// entry for `c`'s hierarchy. `cgroup_file` is `/proc/<pid>/cgroup` or
    /// `/proc/<pid>/task/<tid>/cgroup`; `None` when unreadable (gone).
    pub fn cgroup_in(&self, cgroup_file: &Path, c: Controller) -> Option<String> {
        let text = std::fs::read_to_string(cgroup_file).ok()?;
        let entries = parse_cgroup_file(&text);
        match self.version {
            Version::V1 => entries
                .into_iter()
                .find(|e| e.controllers.iter().any(|n| n == c.v1_name())),
            Version::V2 => entries.into_iter().find(|e| e.id == "0" && e.controllers.is_empty()),
        }
        .map(|e| e.path)
    }

    /// The cgroup of process `pid` in `c`'s hierarchy.
    pub fn cgroup_of(&self, pid: u32, c: Controller) -> Option<String> {
        self.cgroup_in(&PathBuf::from(format!("/proc/{pid}/cgroup")), c)
    }

    /// The controllers whose hierarchies every job uses, per version.
    pub fn job_controllers(&self) -> Vec<Controller> {
        match self.version {
            Version::V1 => vec![Controller::Cpu, Controller::Cpuacct, Controller::Memory],
            Version::V2 => vec![Controller::Cpu],
        }
    }
}

struct CgroupEntry {
    id: String,
    controllers: Vec<String>,
    path: String,
}

fn parse_cgroup_file(text: &str) -> Vec<CgroupEntry> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.to_owned();
            let controllers = parts.next()?;
            let path = parts.next()?.to_owned();
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            Some(CgroupEntry { id, controllers, path })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        match u8::from_str_radix(rest.get(i + 1..i + 4).unwrap_or(""), 8) {
            Ok(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            Err(_) => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------
// A test's cgroup root

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for something a test creates: `ffrtmp-test-<pid>-<n>`.
pub fn unique_name() -> String {
    format!(
        "ffrtmp-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A unique relative `--cgroup-root` for one test. Dropping it removes the
/// root's directory tree in every hierarchy, with `rmdir` only.
pub struct TestRoot {
    host: &'static Host,
    name: String,
}

impl TestRoot {
    pub fn new(host: &'static Host) -> TestRoot {
        let root = TestRoot {
            host,
            name: unique_name(),
        };
        let existing = root.existing_dirs();
        assert!(existing.is_empty(), "test cgroup root already exists: {existing:?}");
        root
    }

    /// The value for `--cgroup-root`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn host(&self) -> &'static Host {
        self.host
    }

    /// The root's directory in `c`'s hierarchy.
    pub fn dir(&self, c: Controller) -> PathBuf {
        self.host.own_dir(c).join(&self.name)
    }

    /// A job's directory in `c`'s hierarchy.
    pub fn job_dir(&self, c: Controller, job: &str) -> PathBuf {
        self.dir(c).join(job)
    }

    /// A job's cgroup path as `/proc/<pid>/cgroup` shows it in `c`'s hierarchy.
    pub fn job_cgroup(&self, c: Controller, job: &str) -> String {
        let own = &self.host.mount(c).own_cgroup;
        own.join(&self.name).join(job).to_string_lossy().into_owned()
    }

    /// The root's directory in every mounted hierarchy, v1 and v2, whether
    /// or not ffrtmp uses it.
    pub fn all_dirs(&self) -> Vec<PathBuf> {
        self.host.mounts.iter().map(|m| m.own_dir.join(&self.name)).collect()
    }

    pub fn existing_dirs(&self) -> Vec<PathBuf> {
        self.all_dirs().into_iter().filter(|d| d.exists()).collect()
    }

    /// Nothing at all was created under this root, in any hierarchy.
    #[track_caller]
    pub fn assert_nothing_created(&self) {
        let existing = self.existing_dirs();
        assert!(existing.is_empty(), "cgroups were created: {existing:?}");
    }

    /// The job's directory is absent from every hierarchy.
    #[track_caller]
    pub fn assert_job_gone(&self, job: &str) {
        let left: Vec<PathBuf> = self
            .all_dirs()
            .into_iter()
            .map(|d| d.join(job))
            .filter(|d| d.exists())
            .collect();
        assert!(left.is_empty(), "job cgroup {job} left behind: {left:?}");
    }

    /// A job's control file, trimmed. Panics (with the path) when unreadable.
    #[track_caller]
    pub fn read(&self, c: Controller, job: &str, file: &str) -> String {
        let path = self.job_dir(c, job).join(file);
        match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().to_owned(),
            Err(e) => panic!("reading {}: {e}", path.display()),
        }
    }

    /// The processes in a job's cgroup in `c`'s hierarchy (empty if absent).
    pub fn procs(&self, c: Controller, job: &str) -> Vec<u32> {
        std::fs::read_to_string(self.job_dir(c, job).join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Does every thread of `pid` sit in `job`'s cgroup in every hierarchy a
    /// job uses?
    pub fn holds_all_threads(&self, pid: u32, job: &str) -> bool {
        let tids = threads(pid);
        !tids.is_empty()
            && tids.iter().all(|tid| {
                let file = PathBuf::from(format!("/proc/{pid}/task/{tid}/cgroup"));
                self.host
                    .job_controllers()
                    .into_iter()
                    .all(|c| self.host.cgroup_in(&file, c) == Some(self.job_cgroup(c, job)))
            })
    }

    /// Wait until the job's cgroup holds a process that has exec'd `comm`
    /// (so everything ffrtmp does before exec, such as nice, is done); its pid.
    #[track_caller]
    pub fn wait_for_process(&self, job: &str, comm: &str) -> u32 {
        let mut pid = None;
        let found = wait_until(POLL_TIMEOUT, || {
            pid = self
                .procs(Controller::Cpu, job)
                .into_iter()
                .find(|&p| self::comm(p).as_deref() == Some(comm));
            pid.is_some()
        });
        assert!(found, "no {comm} process in job {job} within {POLL_TIMEOUT:?}");
        pid.unwrap_or_default()
    }

    /// Leave job `job` behind as a crash would: `ffrtmp run --job-id JOB --
    /// sleep 30`, its wrapper killed by SIGKILL, then its workload ended. The
    /// job's cgroup is marked and empty; nobody removes it.
    #[track_caller]
    pub fn leave_empty_job(&self, job: &str) {
        let run = Spawned::start(ffrtmp(&[
            "run",
            "--cgroup-root",
            self.name(),
            "--job-id",
            job,
            "--",
            "sleep",
            "30",
        ]));
        let workload = PidGuard::new(self.wait_for_process(job, "sleep"));
        run.kill();
        drop(workload);
        assert!(
            wait_until(Duration::from_secs(5), || self.procs(Controller::Cpu, job).is_empty()),
            "job {job} still holds processes"
        );
    }

    /// The CPU limit as `"QUOTA PERIOD"` (`max` for none), whatever the version:
    /// v1 `cpu.cfs_quota_us` + `cpu.cfs_period_us`, v2 `cpu.max`.
    #[track_caller]
    pub fn cpu_max(&self, job: &str) -> String {
        match self.host.version {
            Version::V1 => {
                let quota = self.read(Controller::Cpu, job, "cpu.cfs_quota_us");
                let period = self.read(Controller::Cpu, job, "cpu.cfs_period_us");
                let quota = if quota == "-1" { "max".to_owned() } else { quota };
                format!("{quota} {period}")
            }
            Version::V2 => self.read(Controller::Cpu, job, "cpu.max"),
        }
    }

    /// The CPU weight file's raw content: v1 `cpu.shares`, v2 `cpu.weight`.
    #[track_caller]
    pub fn cpu_weight_file(&self, job: &str) -> String {
        match self.host.version {
            Version::V1 => self.read(Controller::Cpu, job, "cpu.shares"),
            Version::V2 => self.read(Controller::Cpu, job, "cpu.weight"),
        }
    }

    /// The memory limit in bytes, `None` for no limit: v1
    /// `memory.limit_in_bytes` (the kernel shows "none" as a huge number), v2 `memory.max`.
    #[track_caller]
    pub fn memory_max(&self, job: &str) -> Option<u64> {
        let raw = match self.host.version {
            Version::V1 => self.read(Controller::Memory, job, "memory.limit_in_bytes"),
            Version::V2 => self.read(Controller::Memory, job, "memory.max"),
        };
        match raw.parse::<u64>() {
            Ok(b) if b < (1 << 62) => Some(b),
            _ => None,
        }
    }

    /// The read-bandwidth limit for device `dev` ("MAJ:MIN"): v1
    /// `blkio.throttle.read_bps_device`, v2 the `rbps=` of `io.max`.
    #[track_caller]
    pub fn io_rbps(&self, job: &str, dev: &str) -> Option<u64> {
        match self.host.version {
            Version::V1 => self
                .read(Controller::Io, job, "blkio.throttle.read_bps_device")
                .lines()
                .find_map(|l| l.strip_prefix(dev)?.strip_prefix(' ')?.trim().parse().ok()),
            Version::V2 => self
                .read(Controller::Io, job, "io.max")
                .lines()
                .find(|l| l.split_whitespace().next() == Some(dev))?
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("rbps=")?.parse().ok()),
        }
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        // Never act on anything but our own unique root.
        if !self.name.starts_with("ffrtmp-test-") || self.name.contains('/') {
            return;
        }
        for dir in self.all_dirs() {
            if let Err(e) = remove_tree(&dir, Duration::from_secs(15)) {
                let _ = writeln!(std::io::stderr(), "warning: test cgroup left behind: {e}");
            }
        }
    }
}

/// Remove a cgroup directory and every cgroup below it, bottom-up, with
/// `rmdir` only (cgroupfs lets `rmdir` remove a cgroup's control files with
/// it). EBUSY (a process not yet reaped) is retried until `patience` runs out.
pub fn remove_tree(dir: &Path, patience: Duration) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    let children: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("listing {}: {e}", dir.display()))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    for child in children {
        remove_tree(&child, patience)?;
    }
    let deadline = Instant::now() + patience;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                let tasks = std::fs::read_to_string(dir.join("tasks")).unwrap_or_default();
                let tasks: Vec<&str> = tasks.split_whitespace().collect();
                return Err(format!("rmdir {}: {e} (tasks: {tasks:?})", dir.display()));
            }
        }
    }
}

/// Directories a test must make sure do not exist (e.g. where a malicious
/// `--cgroup-root` would point); removed with [`remove_tree`] on drop in
/// case the code under test created them.
pub struct ForbiddenDirs(pub Vec<PathBuf>);

impl ForbiddenDirs {
    #[track_caller]
    pub fn assert_absent(&self) {
        let present: Vec<&PathBuf> = self.0.iter().filter(|d| d.exists()).collect();
        assert!(present.is_empty(), "created where it must not be: {present:?}");
    }
}

impl Drop for ForbiddenDirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = remove_tree(dir, Duration::from_secs(5));
        }
    }
}

// ---------------------------------------------------------------------------
// Processes

/// Poll `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The output of a finished process.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The exit code; panics (showing the output) if it died of a signal.
    #[track_caller]
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }

    /// stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    /// The `JOB <id> | …` summary line on stderr.
    #[track_caller]
    /// The `JOB …` summary line on stderr, without the old tool's
    /// `2006/01/02 15:04:05 ` timestamp in front of it.
    pub fn summary_line(&self) -> &str {
        self.stderr
            .lines()
            .find_map(|l| without_go_time(l).strip_prefix("JOB ").map(|_| without_go_time(l)))
            .unwrap_or_else(|| panic!("no JOB summary line on stderr: {self:?}"))
    }
}

/// `line` without the Go log timestamp `2006/01/02 15:04:05 ` it starts
/// with (if it does).
pub fn without_go_time(line: &str) -> &str {
    let b = line.as_bytes();
    let stamped = b.len() > 20
        && b[4] == b'/'
        && b[7] == b'/'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b' '
        && b[..4].iter().all(u8::is_ascii_digit);
    if stamped { &line[20..] } else { line }
}

/// A process we started, with stdout and stderr captured by reader threads.
/// Dropping it unreaped SIGKILLs and reaps it.
pub struct Spawned {
    child: Child,
    reaped: bool,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout_eof: Arc<AtomicBool>,
    stderr_eof: Arc<AtomicBool>,
}

impl Spawned {
    /// Start with stdin piped (see [`Spawned::close_stdin`]).
    #[track_caller]
    pub fn start(cmd: impl BorrowMut<Command>) -> Spawned {
        Spawned::start_with_stdin(cmd, Stdio::piped())
    }

    #[track_caller]
    pub fn start_with_stdin(mut cmd: impl BorrowMut<Command>, stdin: Stdio) -> Spawned {
        let cmd = cmd.borrow_mut();
        cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let (stdout, stdout_eof) = capture(child.stdout.take().expect("piped stdout"));
        let (stderr, stderr_eof) = capture(child.stderr.take().expect("piped stderr"));
        Spawned {
            stdin: child.stdin.take(),
            child,
            reaped: false,
            stdout,
            stderr,
            stdout_eof,
            stderr_eof,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `sig`. Safe by PID: the process is our unreaped child, so its
    /// number cannot have been reused.
    #[track_caller]
    pub fn signal(&self, sig: Signal) {
        assert!(!self.reaped, "signal to a reaped process");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig)
            .unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid()));
    }

    /// Write to its stdin.
    #[track_caller]
    pub fn write_stdin(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is piped and open");
        stdin
            .write_all(data)
            .and_then(|()| stdin.flush())
            .expect("writing to stdin");
    }

    /// Close its stdin (a `cat` workload then exits).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn stdout_now(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("stdout buffer")).into_owned()
    }

    pub fn stderr_now(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr buffer")).into_owned()
    }

    /// Wait until stdout contains `needle`; panics after [`POLL_TIMEOUT`].
    #[track_caller]
    pub fn wait_for_stdout(&self, needle: &str) {
        let ok = wait_until(POLL_TIMEOUT, || self.stdout_now().contains(needle));
        assert!(
            ok,
            "{needle:?} not on stdout within {POLL_TIMEOUT:?}; stdout: {:?}; stderr: {:?}",
            self.stdout_now(),
            self.stderr_now()
        );
    }

    /// Is it still running (not exited)? Does not reap.
    pub fn running(&self) -> bool {
        !self.reaped && proc_state(self.pid()).is_some_and(|s| s != 'Z')
    }

    /// Wait for it to exit, at most `timeout`; on timeout SIGKILL it and panic
    /// with what it printed. Output written after exit by descendants that
    /// still hold the pipes is not waited for beyond one second.
    #[track_caller]
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        self.stdin = None;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    self.reaped = true;
                    panic!(
                        "{} did not exit within {timeout:?} (killed); stdout: {:?}; stderr: {:?}",
                        self.pid(),
                        self.stdout_now(),
                        self.stderr_now()
                    );
                }
                Err(e) => panic!("waiting for {}: {e}", self.pid()),
            }
        };
        self.reaped = true;
        wait_until(Duration::from_secs(1), || {
            self.stdout_eof.load(Ordering::Acquire) && self.stderr_eof.load(Ordering::Acquire)
        });
        Output {
            status,
            stdout: self.stdout_now(),
            stderr: self.stderr_now(),
        }
    }

    /// SIGKILL and reap it now.
    pub fn kill(mut self) {
        self.kill_and_reap();
    }

    fn kill_and_reap(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

fn capture(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, Arc<AtomicBool>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let eof = Arc::new(AtomicBool::new(false));
    let (b, e) = (buf.clone(), eof.clone());
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => b.lock().expect("output buffer").extend_from_slice(&chunk[..n]),
            }
        }
        e.store(true, Ordering::Release);
    });
    (buf, eof)
}

/// A process that is not our child (a workload orphaned by a killed ffrtmp,
/// a descendant of our child), remembered by PID and start time. Dropping it
/// SIGKILLs it if it is still the same process and waits until it is gone.
pub struct PidGuard {
    pid: u32,
    start_time: u64,
}

impl PidGuard {
    #[track_caller]
    pub fn new(pid: u32) -> PidGuard {
        let start_time = start_time(pid).unwrap_or_else(|| panic!("pid {pid} does not exist"));
        PidGuard { pid, start_time }
    }

    /// `None` when `pid` has already gone.
    pub fn try_new(pid: u32) -> Option<PidGuard> {
        Some(PidGuard {
            pid,
            start_time: start_time(pid)?,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Still the same process, and not a zombie.
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time) && proc_state(self.pid).is_some_and(|s| s != 'Z')
    }

    fn same(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        if self.same() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            // Its parent (or init, for an orphan) reaps it.
            if !wait_until(Duration::from_secs(5), || !self.same()) {
                let _ = writeln!(std::io::stderr(), "warning: pid {} not reaped after SIGKILL", self.pid);
            }
        }
    }
}

/// `/proc/<pid>/stat` fields from field 3 (state) on: comm is in
/// parentheses and may contain spaces and `)`, so split after the last `)`.
pub fn stat_fields(stat_file: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(stat_file).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Field `n` (1-based, as in proc(5)) of a stat file.
pub fn stat_field(stat_file: &Path, n: usize) -> Option<String> {
    stat_fields(stat_file)?.get(n.checked_sub(3)?).cloned()
}

pub fn proc_state(pid: u32) -> Option<char> {
    stat_field(&PathBuf::from(format!("/proc/{pid}/stat")), 3)?
        .chars()
        .next()
}

pub fn start_time(pid: u32) -> Option<u64> {
    stat_field(&PathBuf::from(format!("/proc/{pid}/stat")), 22)?
        .parse()
        .ok()
}

pub fn ppid(pid: u32) -> Option<u32> {
    stat_field(&PathBuf::from(format!("/proc/{pid}/stat")), 4)?.parse().ok()
}

/// The nice value of thread `tid` of process `pid` (stat field 19).
/// The raw IO priority of one thread, `ioprio_get(IOPRIO_WHO_PROCESS, tid)`:
/// class << 13 | level (class 1 realtime, 2 best-effort, 3 idle, 0 none).
pub fn ioprio_of(tid: u32) -> Option<u16> {
    // SAFETY: ioprio_get takes two integers and returns one.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, tid as libc::c_int) };
    u16::try_from(rc).ok()
}

/// The CPUs a thread may run on, `Cpus_allowed_list` of its status.
pub fn cpus_allowed(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
}

pub fn nice_of(pid: u32, tid: u32) -> Option<i32> {
    stat_field(&PathBuf::from(format!("/proc/{pid}/task/{tid}/stat")), 19)?
        .parse()
        .ok()
}

pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// The thread ids of `pid`.
pub fn threads(pid: u32) -> Vec<u32> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    tids
}

/// Every live descendant of `pid` (children, grandchildren, …).
pub fn descendants(pid: u32) -> Vec<u32> {
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| Some((p, ppid(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = BTreeSet::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &all {
            if pp == parent && found.insert(p) {
                frontier.push(p);
            }
        }
    }
    found.into_iter().collect()
}

/// The whole disk ("MAJ:MIN") holding `path`'s filesystem, from
/// `/sys/dev/block`: a partition's sysfs directory sits inside its disk's.
/// `None` when the filesystem is not on a block device (tmpfs, overlay…).
pub fn whole_disk_of(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let node = PathBuf::from(format!("/sys/dev/block/{}:{}", libc::major(dev), libc::minor(dev)));
    if !node.exists() {
        return None;
    }
    let disk = if node.join("partition").exists() {
        node.join("..")
    } else {
        node
    };
    Some(std::fs::read_to_string(disk.join("dev")).ok()?.trim().to_owned())
}

/// A whole disk the IO tests can put limits on.
#[derive(Debug, Clone)]
pub struct TestDisk {
    /// "MAJ:MIN" of the whole disk.
    pub dev: String,
    /// A path on it for `--io-max PATH …`: `/` when `/` is on a disk, else
    /// the scratch disk's device node.
    pub path: PathBuf,
    /// The scratch disk of `cargo xtask vm-test` (`$FFRTMP_VM_DISK`): its
    /// contents may be overwritten.
    pub scratch: bool,
}

/// The disk holding `/`; where `/` is not on a block device (the VM's
/// initramfs), the scratch disk named by `$FFRTMP_VM_DISK` (a whole disk).
/// `None` when there is neither.
pub fn test_disk() -> Option<TestDisk> {
    if let Some(dev) = whole_disk_of(Path::new("/")) {
        return Some(TestDisk {
            dev,
            path: PathBuf::from("/"),
            scratch: false,
        });
    }
    scratch_disk()
}

/// The scratch disk of `cargo xtask vm-test` (`$FFRTMP_VM_DISK`), if set
/// and a whole disk. Panics when it is set but is not one.
pub fn scratch_disk() -> Option<TestDisk> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let path = PathBuf::from(std::env::var_os("FFRTMP_VM_DISK")?);
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("FFRTMP_VM_DISK={}: {e}", path.display()));
    assert!(
        meta.file_type().is_block_device(),
        "FFRTMP_VM_DISK={} is not a block device",
        path.display()
    );
    let dev = format!("{}:{}", libc::major(meta.rdev()), libc::minor(meta.rdev()));
    let node = Path::new("/sys/dev/block").join(&dev);
    assert!(
        node.exists() && !node.join("partition").exists(),
        "FFRTMP_VM_DISK={} ({dev}) is not a whole disk",
        path.display()
    );
    Some(TestDisk {
        dev,
        path,
        scratch: true,
    })
}

/// Is this the `cargo xtask vm-test` guest? Every sign must agree: the
/// variables its `/init` exports (`FFRTMP_VM_TEST=1`, `FFRTMP_VM_DISK`), the
/// hostname it sets (`ffrtmp-vm`) and the kernel command line the host
/// boots it with (`cgroup_no_v1=all`). Only there may a test change what is
/// shared by the whole machine, such as the cgroup2 mount's options: the
/// guest is thrown away after the run.
pub fn in_vm_guest() -> bool {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    std::env::var("FFRTMP_VM_TEST").is_ok_and(|v| v == "1")
        && std::env::var_os("FFRTMP_VM_DISK").is_some()
        && read("/proc/sys/kernel/hostname").trim() == "ffrtmp-vm"
        && read("/proc/cmdline")
            .split_whitespace()
            .any(|a| a == "cgroup_no_v1=all")
}

/// For a test that changes what the whole machine shares: true in the
/// vm-test guest; elsewhere false, after a `note:` line saying what it
/// would have changed (`what`).
pub fn vm_guest_only(what: &str) -> bool {
    if in_vm_guest() {
        return true;
    }
    let _ = writeln!(std::io::stderr(), "note: not in the vm-test guest: this test {what}");
    false
}

/// Start `cmd`'s process in a cgroup namespace of its own (unshare before
/// exec), as a container runtime does.
pub fn in_new_cgroup_namespace(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: unshare(2) in the forked child before exec; no allocation.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWCGROUP) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// A block device number ("MAJ:MIN") that does not exist on this host.
pub fn missing_block_device() -> String {
    (999..)
        .map(|minor| format!("259:{minor}"))
        .find(|d| !Path::new("/sys/dev/block").join(d).exists())
        .expect("some minor number is free")
}

/// Is `program` on PATH?
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const CGROUP: &str = "9:name=systemd:/\n7:blkio:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn hybrid_host() {
        let host = Host::parse(MOUNTINFO, CGROUP).unwrap();
        assert_eq!(host.version, Version::V1);
        assert_eq!(host.mounts.len(), 6);
        assert_eq!(
            host.own_dir(Controller::Memory),
            Path::new("/sys/fs/cgroup/memory/process_api/abc")
        );
        assert_eq!(host.own_dir(Controller::Cpu), Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(host.own_dir(Controller::Io), Path::new("/sys/fs/cgroup/blkio"));
        assert!(
            host.mounts
                .iter()
                .any(|m| m.v2 && m.mount_point == Path::new("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn unified_host() {
        let host = Host::parse(
            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
            "0::/user.slice/test\n",
        )
        .unwrap();
        assert_eq!(host.version, Version::V2);
        assert_eq!(
            host.own_dir(Controller::Io),
            Path::new("/sys/fs/cgroup/user.slice/test")
        );
        assert_eq!(
            host.own_dir(Controller::Cpuacct),
            Path::new("/sys/fs/cgroup/user.slice/test")
        );
    }

    #[test]
    fn stat_with_odd_comm() {
        let dir = std::env::temp_dir().join(unique_name());
        std::fs::create_dir(&dir).unwrap();
        let stat = dir.join("stat");
        std::fs::write(
            &stat,
            "42 (a b) c)) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 7 1 0 99 0\n",
        )
        .unwrap();
        assert_eq!(stat_field(&stat, 3).as_deref(), Some("S"));
        assert_eq!(stat_field(&stat, 4).as_deref(), Some("1"));
        assert_eq!(stat_field(&stat, 19).as_deref(), Some("7"));
        assert_eq!(stat_field(&stat, 22).as_deref(), Some("99"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/a\b"), r"/a\b");
    }
}
