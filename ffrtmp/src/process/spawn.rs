//! Spawn a child that is inside its job cgroup before its first instruction.
//!
//! - cgroup v2: `clone3(CLONE_INTO_CGROUP)` (5.7+) creates the child directly
//!   in the job cgroup: no migration, no ungoverned window.
//! - cgroup v1: the child writes `0` to each hierarchy's already-open
//!   `tasks` before `execve`. It has one thread then, so moving that thread
//!   moves the process, and a thread moving itself through `tasks` skips the
//!   global `cgroup_threadgroup_rwsem` (`cgroup_procs_write_start()`,
//!   kernel/cgroup/cgroup.c, 5.x-6.18): no RCU grace period is waited for
//!   (measured here: 0.03 ms instead of 5.5 ms for each `cgroup.procs` write).
//! - v2 kernels without `CLONE_INTO_CGROUP`: the child writes `0` to the
//!   job's `cgroup.procs` before `execve` (v2's `cgroup.threads` cannot move a
//!   thread into another domain cgroup).
//!
//! We fork with a raw `clone3` instead of `std::process::Command` because
//! std cannot pass `CLONE_INTO_CGROUP`. Between fork and exec the child only
//! makes async-signal-safe calls on memory prepared by the parent; failures
//! there are reported through a close-on-exec pipe as `(stage, errno)`.

use std::ffi::{CString, OsStr, OsString};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::pidfd::PidFd;
use crate::cgroup::limits::IoClass;

/// `CLONE_INTO_CGROUP` from `include/uapi/linux/sched.h` (5.7+).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` from `include/uapi/linux/sched.h` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Where the child must be born.
#[derive(Debug, Clone)]
pub enum Placement {
    /// No cgroup (it could not be created; best effort goes on without one).
    None,
    /// v2: the job directory (for `CLONE_INTO_CGROUP`) and its `cgroup.procs`
    /// (the fallback on kernels without it).
    V2 { dir: PathBuf, procs: PathBuf },
    /// The child writes `0` to each of these files before exec: v1, the
    /// job's `tasks` in every hierarchy used (see the module docs); v2, the
    /// `cgroup.procs` of a job that `CLONE_INTO_CGROUP` would not place
    /// fully (a cpuset job, see `cli/run.rs`).
    ///
    /// `moves_memory`: a join acts on the joiner's memory (cpuset's attach
    /// rebinds and migrates its mm), so the child must not share ours
    /// until its exec: it is forked, not started vfork-style.
    V1 { tasks: Vec<PathBuf>, moves_memory: bool },
}

/// What to run, and how.
#[derive(Debug, Clone)]
pub struct Spawn {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub workdir: Option<PathBuf>,
    pub nice: Option<i8>,
    /// The child's `oom_score_adj`, written before exec.
    pub oom_score_adj: Option<i16>,
    /// The child's IO class (`ioprio_set` on itself), set before exec while
    /// it has one thread: every thread it starts inherits it.
    pub io_class: Option<IoClass>,
    /// Fail (do not exec) when the nice value, `oom_score_adj` or the IO class cannot be set.
    pub strict: bool,
    /// Make the child's process group the terminal's foreground group, so an
    /// interactive child (ffmpeg reads keys) is not stopped by SIGTTIN.
    pub foreground: bool,
    pub placement: Placement,
}

/// How the child joined its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinedBy {
    CloneIntoCgroup,
    PreExecWrite,
    NotPlaced,
}

#[derive(Debug)]
pub struct Child {
    pub pid: u32,
    pub pidfd: PidFd,
    pub joined_by: JoinedBy,
    /// Set when the nice value could not be applied (best effort).
    pub nice_error: Option<io::Error>,
    /// Set when `oom_score_adj` could not be written (best effort).
    pub oom_error: Option<io::Error>,
    /// Set when the IO class could not be set (best effort).
    pub ioprio_error: Option<io::Error>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{}: command not found", program.to_string_lossy())]
    NotFound { program: OsString },
    #[error("{}: cannot execute: {source}", program.display())]
    NotExecutable {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("child setup failed while {stage}: {source}")]
    Setup {
        stage: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl SpawnError {
    /// The exit status `run` reports (the conventions of env, timeout, nohup).
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::NotFound { .. } => 127,
            SpawnError::NotExecutable { .. } => 126,
            SpawnError::Setup { .. } | SpawnError::Os { .. } => 125,
        }
    }
}

const STAGE_CGROUP: i32 = 1;
const STAGE_NICE: i32 = 2;
const STAGE_CHDIR: i32 = 3;
const STAGE_EXEC: i32 = 4;
const STAGE_TTY: i32 = 5;
const STAGE_OOM: i32 = 6;
const STAGE_IOPRIO: i32 = 7;

/// Everything the child touches, prepared before the fork.
struct ChildPlan {
    path: CString,
    /// Owns the strings `argv_ptrs` points into.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    workdir: Option<CString>,
    procs_fds: Vec<OwnedFd>,
    nice: Option<i8>,
    /// `oom_score_adj` as the bytes to write, and their length.
    oom: Option<([u8; 8], usize)>,
    /// The `ioprio_set` value.
    ioprio: Option<u16>,
    strict: bool,
    foreground: bool,
    report_fd: RawFd,
    /// Set by [`clone3_vfork`] and [`clone_vfork`]: the child shares our
    /// memory until exec.
    shares_memory: bool,
}

/// Find `program` like `execvp` would: a name with `/` is used as is,
/// otherwise the first executable match in `PATH`.
pub fn resolve_program(program: &OsStr) -> Result<PathBuf, SpawnError> {
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return match std::fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SpawnError::NotFound {
                program: program.to_owned(),
            }),
            Ok(m) if m.is_dir() || m.permissions().mode() & 0o111 == 0 => Err(SpawnError::NotExecutable {
                program: path,
                source: io::Error::from_raw_os_error(libc::EACCES),
            }),
            // Anything else (including EACCES on a parent directory) is left
            // for execve to report.
            _ => Ok(path),
        };
    }
    if program.is_empty() {
        return Err(SpawnError::NotFound {
            program: program.to_owned(),
        });
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut not_executable = None;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(candidate),
            Ok(m) if m.is_file() => {
                not_executable.get_or_insert(candidate);
            }
            _ => {}
        }
    }
    match not_executable {
        Some(candidate) => Err(SpawnError::NotExecutable {
            program: candidate,
            source: io::Error::from_raw_os_error(libc::EACCES),
        }),
        None => Err(SpawnError::NotFound {
            program: program.to_owned(),
        }),
    }
}

fn cstring(s: &OsStr, what: &'static str) -> Result<CString, SpawnError> {
    CString::new(s.as_bytes()).map_err(|_| SpawnError::Os {
        what,
        source: io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"),
    })
}

fn open_procs(path: &Path) -> Result<OwnedFd, SpawnError> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| SpawnError::Setup {
            stage: "opening the job's cgroup.procs or tasks",
            source,
        })
}

/// Spawn the child. Returns once it has exec'd (or failed to).
pub fn spawn(req: &Spawn) -> Result<Child, SpawnError> {
    let path = resolve_program(&req.program)?;
    let mut argv = vec![cstring(&req.program, "program name")?];
    for a in &req.args {
        argv.push(cstring(a, "argument")?);
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());

    let (dir_fd, procs_fds) = match &req.placement {
        Placement::None => (None, Vec::new()),
        Placement::V2 { dir, .. } => {
            let dir = std::fs::File::open(dir).map_err(|source| SpawnError::Setup {
                stage: "opening the job cgroup directory",
                source,
            })?;
            (Some(OwnedFd::from(dir)), Vec::new())
        }
        Placement::V1 { tasks, .. } => (None, tasks.iter().map(|p| open_procs(p)).collect::<Result<_, _>>()?),
    };

    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Os {
        what: "creating the exec status pipe",
        source: e.into(),
    })?;

    let mut plan = ChildPlan {
        path: cstring(path.as_os_str(), "program path")?,
        _argv: argv,
        argv_ptrs,
        workdir: req
            .workdir
            .as_ref()
            .map(|w| cstring(w.as_os_str(), "workdir"))
            .transpose()?,
        procs_fds,
        nice: req.nice,
        oom: req.oom_score_adj.map(oom_bytes),
        ioprio: req.io_class.map(IoClass::ioprio),
        strict: req.strict,
        foreground: req.foreground,
        report_fd: report_w.as_raw_fd(),
        shares_memory: false,
    };

    let mut joined_by = match req.placement {
        Placement::None => JoinedBy::NotPlaced,
        Placement::V2 { .. } => JoinedBy::CloneIntoCgroup,
        Placement::V1 { .. } => JoinedBy::PreExecWrite,
    };
    let forked = match (&dir_fd, &req.placement) {
        (Some(dir), Placement::V2 { procs, .. }) => match clone3_vfork(Some(dir.as_raw_fd()), &mut plan) {
            // Kernels before 5.7 (E2BIG: clone_args too big, or EINVAL: an
            // unknown flag) or a seccomp profile refusing clone3 (ENOSYS,
            // EPERM; a cgroup refusing the child says EACCES, ENOENT or
            // EBUSY): join by writing cgroup.procs instead.
            Err(e) if matches!(e.raw_os_error(), Some(libc::E2BIG | libc::EINVAL)) || clone3_refused(&e) => {
                tracing::debug!("clone3(CLONE_INTO_CGROUP) unavailable ({e}); joining through cgroup.procs");
                plan.procs_fds = vec![open_procs(procs)?];
                joined_by = JoinedBy::PreExecWrite;
                start_shared(&mut plan)
            }
            other => other,
        },
        (_, Placement::V1 { moves_memory: true, .. }) => start_forked(&plan),
        _ => start_shared(&mut plan),
    };
    let (pid, pidfd) = forked.map_err(|source| SpawnError::Os {
        what: "forking the child",
        source,
    })?;
    drop(report_w);
    drop(plan);

    let reports = read_reports(report_r);
    let mut nice_error = None;
    let mut oom_error = None;
    let mut ioprio_error = None;
    for (stage, errno) in reports {
        let source = io::Error::from_raw_os_error(errno);
        let fatal = match stage {
            STAGE_NICE if !req.strict => {
                nice_error = Some(source);
                continue;
            }
            STAGE_OOM if !req.strict => {
                oom_error = Some(source);
                continue;
            }
            STAGE_IOPRIO if !req.strict => {
                ioprio_error = Some(source);
                continue;
            }
            STAGE_EXEC => match errno {
                libc::ENOENT => SpawnError::NotFound {
                    program: req.program.clone(),
                },
                _ => SpawnError::NotExecutable {
                    program: path.clone(),
                    source,
                },
            },
            STAGE_CGROUP => SpawnError::Setup {
                stage: "joining the job cgroup",
                source,
            },
            STAGE_NICE => SpawnError::Setup {
                stage: "setting the nice value",
                source,
            },
            STAGE_OOM => SpawnError::Setup {
                stage: "writing /proc/self/oom_score_adj",
                source,
            },
            STAGE_IOPRIO => SpawnError::Setup {
                stage: "setting the IO class (ioprio_set)",
                source,
            },
            STAGE_CHDIR => SpawnError::Setup {
                stage: "changing to the working directory",
                source,
            },
            _ => SpawnError::Setup {
                stage: "handing over the terminal",
                source,
            },
        };
        // The child has exited (it only reports and exits); reap it.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
        return Err(fatal);
    }
    Ok(Child {
        pid,
        pidfd,
        joined_by,
        nice_error,
        oom_error,
        ioprio_error,
    })
}

/// `adj` in decimal, as `/proc/self/oom_score_adj` takes it ("-1000" is
/// the longest).
fn oom_bytes(adj: i16) -> ([u8; 8], usize) {
    let text = adj.to_string();
    let mut buf = [0u8; 8];
    buf[..text.len()].copy_from_slice(text.as_bytes());
    (buf, text.len())
}

/// Read `(stage, errno)` records until the pipe closes (at exec or exit).
fn read_reports(fd: OwnedFd) -> Vec<(i32, i32)> {
    let mut file = std::fs::File::from(fd);
    let mut buf = Vec::new();
    let _ = io::Read::read_to_end(&mut file, &mut buf);
    buf.chunks_exact(8)
        .map(|c| {
            (
                i32::from_ne_bytes([c[0], c[1], c[2], c[3]]),
                i32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect()
}

/// Fork with clone3, optionally straight into the cgroup given by `cgroup_fd`.
/// Returns the child's pid and pidfd in the parent; never returns in the child.
fn clone3(cgroup_fd: Option<RawFd>, plan: &ChildPlan) -> io::Result<(u32, PidFd)> {
    #[cfg(test)]
    if tests::REFUSE_CLONE3.get() {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup_fd {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: clone3 without CLONE_VM behaves like fork: the child gets a
    // copy of this address space and runs `child_exec`, which only makes
    // async-signal-safe calls and never returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        // SAFETY: we are the freshly forked child.
        0 => unsafe { child_exec(plan) },
        // SAFETY: CLONE_PIDFD stored a new fd that only we own.
        pid => Ok((pid as u32, PidFd::from_owned(unsafe { OwnedFd::from_raw_fd(pidfd) }))),
    }
}

/// Bytes of stack for the child of [`clone3_vfork`]: `child_exec` needs a
/// few hundred; glibc's `execv` and `tcsetpgrp` little more.
const VFORK_STACK: usize = 64 * 1024;

/// Start the child the way glibc's `posix_spawn` does: `CLONE_VM |
/// CLONE_VFORK`, on a stack of its own, through `clone3` so that
/// `CLONE_INTO_CGROUP` can be given too (`cgroup_fd`). The child shares this
/// address space until its `execve` (or exit), and this thread waits until
/// then, so no page table is copied and no page is copied on write
/// afterwards (a `run` on the host of docs/BENCHMARKS.md spent ~0.2 ms in
/// a fork-like `clone3`). Signals are blocked around the call: a handler
/// must not run in the child on memory it shares with us.
///
/// glibc has no `clone3` wrapper, and the child of a raw `clone3` with a new
/// stack cannot return from the system call into Rust (nothing it would
/// return to is on that stack), so a few instructions of assembly start it:
/// the kernel gives the child `rax` = 0 and every other register as the
/// parent had it; the child sets `rsp` to the top of its stack itself (the
/// kernel does too since "clone3: validate stack arguments", 5.5 and the
/// 5.3/5.4 stable releases; before it, x86 started the child at the
/// *bottom*) and calls [`vfork_entry`] with the plan, which never returns.
#[cfg(target_arch = "x86_64")]
fn clone3_vfork(cgroup_fd: Option<RawFd>, plan: &mut ChildPlan) -> io::Result<(u32, PidFd)> {
    #[cfg(test)]
    if tests::REFUSE_CLONE3.get() {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    plan.shares_memory = true;
    let plan: &ChildPlan = plan;
    let mut stack = ChildStack::new();
    let (base, top) = (stack.base() as u64, stack.top() as u64);
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: base,
        stack_size: top - base,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup_fd {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: the parent only makes the system call (which clobbers rcx and
    // r11) and reads rax. The child runs on `stack`, which outlives its
    // exec because the parent is suspended until then, calls `vfork_entry`
    // with `plan` (alive as long) and never comes back to this code (`ud2`
    // would trap if it did). `args` is read by the kernel before either
    // returns, and CLONE_PIDFD stores the pidfd before the child runs.
    let ret = with_all_signals_blocked(|| unsafe {
        let ret: i64;
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rsp, r14",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") plan as *const ChildPlan,
            in("r13") vfork_entry as unsafe extern "C" fn(*const ChildPlan) -> !,
            in("r14") top,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
        ret
    });
    drop(stack);
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    // SAFETY: CLONE_PIDFD stored a new fd that only we own.
    Ok((ret as u32, PidFd::from_owned(unsafe { OwnedFd::from_raw_fd(pidfd) })))
}

/// Elsewhere no trampoline is written: a fork-like `clone3` where the child
/// joins by `CLONE_INTO_CGROUP`, else glibc's `clone` (see [`start_shared`]).
#[cfg(not(target_arch = "x86_64"))]
fn clone3_vfork(cgroup_fd: Option<RawFd>, plan: &mut ChildPlan) -> io::Result<(u32, PidFd)> {
    match cgroup_fd {
        Some(_) => clone3(cgroup_fd, plan),
        None => Err(io::Error::from_raw_os_error(libc::ENOSYS)),
    }
}

/// A vfork-style start of a child that joins no cgroup by `clone3`:
/// [`clone3_vfork`], or [`clone_vfork`] where `clone3` is refused.
fn start_shared(plan: &mut ChildPlan) -> io::Result<(u32, PidFd)> {
    match clone3_vfork(None, plan) {
        Err(e) if clone3_refused(&e) => clone_vfork(plan),
        other => other,
    }
}

/// A fork-like start (the child must not share our memory): `clone3`, or
/// glibc's `fork` and `pidfd_open` where `clone3` is refused.
fn start_forked(plan: &ChildPlan) -> io::Result<(u32, PidFd)> {
    match clone3(None, plan) {
        Err(e) if clone3_refused(&e) => {
            // SAFETY: the child runs `child_exec`, which only makes
            // async-signal-safe calls and never returns.
            match unsafe { libc::fork() } {
                -1 => Err(io::Error::last_os_error()),
                // SAFETY: we are the freshly forked child.
                0 => unsafe { child_exec(plan) },
                // Our child cannot be reaped before we wait for it, so the
                // pid names it still.
                pid => Ok((pid as u32, PidFd::open(pid as u32)?)),
            }
        }
        other => other,
    }
}

/// `clone3` refused as such, not failed: ENOSYS (what moby's and
/// containers-common's default seccomp profiles answer in a container
/// without `CAP_SYS_ADMIN`, so that glibc falls back to `clone`), or EPERM
/// (Docker's profiles before 20.10.10).
fn clone3_refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM))
}

/// [`clone3_vfork`] through glibc's `clone` (which cannot pass
/// `CLONE_INTO_CGROUP`): where `clone3` is refused (see [`clone3_refused`]),
/// and on
/// architectures without the trampoline. Signals are blocked around the
/// call, as there.
fn clone_vfork(plan: &mut ChildPlan) -> io::Result<(u32, PidFd)> {
    plan.shares_memory = true;
    let plan: &ChildPlan = plan;
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&ChildPlan` below, alive while we run (the
        // parent is suspended until our exec or exit).
        unsafe { child_exec(&*arg.cast::<ChildPlan>()) }
    }
    let mut stack = ChildStack::new();
    let top = stack.top();
    let mut pidfd: libc::c_int = -1;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: `entry` only makes async-signal-safe calls on `plan`, which
    // outlives the call, and on its own stack; CLONE_PIDFD stores the pidfd
    // through the parent_tid argument (clone(2)).
    let (ret, err) = with_all_signals_blocked(|| unsafe {
        let ret = libc::clone(
            entry,
            top as *mut libc::c_void,
            flags,
            (plan as *const ChildPlan).cast_mut().cast(),
            &mut pidfd as *mut libc::c_int,
        );
        (ret, io::Error::last_os_error())
    });
    drop(stack);
    match ret {
        -1 => Err(err),
        // A kernel before 5.2 ignores CLONE_PIDFD (an old, unused bit) and
        // gives no pidfd; the child is our child still, so pidfd_open (5.3)
        // cannot name another process. ffrtmp needs 5.3 in any case.
        pid if pidfd < 0 => Ok((pid as u32, PidFd::open(pid as u32)?)),
        // SAFETY: CLONE_PIDFD stored a new fd that only we own.
        pid => Ok((pid as u32, PidFd::from_owned(unsafe { OwnedFd::from_raw_fd(pidfd) }))),
    }
}

/// Where the child of [`clone3_vfork`] starts, on its own stack.
///
/// # Safety
/// `plan` points to the parent's `ChildPlan`, alive while the child runs
/// (the parent is suspended until its exec or exit).
#[cfg(target_arch = "x86_64")]
unsafe extern "C" fn vfork_entry(plan: *const ChildPlan) -> ! {
    // SAFETY: as this function's contract says.
    unsafe { child_exec(&*plan) }
}

/// The stack of a child that shares our memory until its exec.
struct ChildStack(Vec<u8>);

impl ChildStack {
    fn new() -> ChildStack {
        ChildStack(vec![0u8; VFORK_STACK])
    }

    /// Through `as_mut_ptr`: the child writes to it.
    fn base(&mut self) -> usize {
        self.0.as_mut_ptr() as usize
    }

    /// Where the child starts: the stack grows down, and the ABI wants it
    /// 16-byte aligned before a call.
    fn top(&mut self) -> usize {
        (self.base() + self.0.len()) & !15
    }
}

/// `f` with every signal blocked in this thread, glibc's own two (32, 33:
/// cancellation, setxid) too, which its sigfillset leaves out (so the raw
/// call, as posix_spawn): no handler of ours may run in a child that shares
/// our memory before it resets them. The old mask is back afterwards.
fn with_all_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    let all: u64 = !0;
    let mut old: u64 = 0;
    set_mask(&all, Some(&mut old));
    let out = f();
    set_mask(&old, None);
    out
}

/// This thread's signal mask (the kernel's 64-bit set), the old one kept.
fn set_mask(mask: &u64, old: Option<&mut u64>) {
    let old = old.map_or(std::ptr::null_mut(), |o| o as *mut u64);
    // SAFETY: both pointers are valid for the 8 bytes the kernel's set has.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            mask as *const u64,
            old,
            8usize,
        )
    };
}

/// In a child that shares our memory: every caught signal back to its
/// default before the mask is opened, so no handler of ours runs in it
/// (a signal that came while it was blocked is delivered then). Ignored
/// ones stay ignored, as exec keeps them.
unsafe fn reset_handlers() {
    for sig in 1..libc::SIGRTMAX() + 1 {
        // SAFETY: sigaction reads and writes only the structs given.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut sa) == 0
                && sa.sa_sigaction != libc::SIG_DFL
                && sa.sa_sigaction != libc::SIG_IGN
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
}

/// The child between fork and exec. Async-signal-safe calls only: no
/// allocation, no locks, no Rust std I/O.
unsafe fn child_exec(plan: &ChildPlan) -> ! {
    let report = |stage: i32| {
        // SAFETY: errno is thread-local; write(2) is async-signal-safe.
        unsafe {
            let errno = *libc::__errno_location();
            let mut rec = [0u8; 8];
            rec[..4].copy_from_slice(&stage.to_ne_bytes());
            rec[4..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(plan.report_fd, rec.as_ptr().cast(), rec.len());
        }
    };
    // SAFETY: each call below is async-signal-safe and gets valid pointers
    // into memory prepared by the parent before the fork.
    unsafe {
        // A process group of its own: signals for the wrapper's group (a
        // terminal's Ctrl-C) do not hit it twice, and `run` forwards to it.
        libc::setpgid(0, 0);
        if plan.foreground {
            // tcsetpgrp from a background group raises SIGTTOU: ignore it here.
            libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            if libc::tcsetpgrp(0, libc::getpid()) != 0 {
                report(STAGE_TTY);
                libc::_exit(125);
            }
            libc::signal(libc::SIGTTOU, libc::SIG_DFL);
        }
        // Rust ignores SIGPIPE in its own processes; children expect the default.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        for fd in &plan.procs_fds {
            if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                report(STAGE_CGROUP);
                libc::_exit(125);
            }
        }
        if let Some(nice) = plan.nice
            && libc::setpriority(libc::PRIO_PROCESS, 0, i32::from(nice)) != 0
        {
            report(STAGE_NICE);
            if plan.strict {
                libc::_exit(125);
            }
        }
        if let Some((bytes, len)) = &plan.oom {
            let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, bytes.as_ptr().cast(), *len) != *len as isize {
                report(STAGE_OOM);
                if plan.strict {
                    libc::_exit(125);
                }
            }
            if fd >= 0 {
                libc::close(fd);
            }
        }
        if let Some(ioprio) = plan.ioprio
            && libc::syscall(
                libc::SYS_ioprio_set,
                crate::process::ioprio::IOPRIO_WHO_PROCESS,
                0,
                libc::c_int::from(ioprio),
            ) != 0
        {
            report(STAGE_IOPRIO);
            if plan.strict {
                libc::_exit(125);
            }
        }
        if let Some(dir) = &plan.workdir
            && libc::chdir(dir.as_ptr()) != 0
        {
            report(STAGE_CHDIR);
            libc::_exit(125);
        }
        if plan.shares_memory {
            reset_handlers();
        }
        // The parent blocks the signals it forwards; the workload must not
        // inherit that mask.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execv(plan.path.as_ptr(), plan.argv_ptrs.as_ptr());
        report(STAGE_EXEC);
        libc::_exit(127);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Makes this thread's `clone3_vfork` and `clone3` fail as seccomp
        /// profiles without clone3 make them (ENOSYS, EPERM), to test the
        /// fallbacks.
        pub(super) static REFUSE_CLONE3: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    #[test]
    fn resolves_like_execvp() {
        assert!(resolve_program(OsStr::new("sh")).unwrap().ends_with("sh"));
        assert!(matches!(
            resolve_program(OsStr::new("no-such-command-ffrtmp")),
            Err(SpawnError::NotFound { .. })
        ));
        assert!(matches!(
            resolve_program(OsStr::new("./no-such-x")),
            Err(SpawnError::NotFound { .. })
        ));
        assert!(matches!(
            resolve_program(OsStr::new("/")),
            Err(SpawnError::NotExecutable { .. })
        ));
        assert_eq!(
            resolve_program(OsStr::new("/bin/sh")).unwrap(),
            PathBuf::from("/bin/sh")
        );
    }

    /// `program args…` with nothing but defaults: no cgroup, no limits.
    fn plain(program: &str, args: &[&str]) -> Spawn {
        Spawn {
            program: program.into(),
            args: args.iter().map(|a| a.into()).collect(),
            workdir: None,
            nice: None,
            oom_score_adj: None,
            io_class: None,
            strict: false,
            foreground: false,
            placement: Placement::None,
        }
    }

    /// The `SigBlk` mask of a thread, from its `status` file.
    fn blocked(status: &str) -> String {
        let text = std::fs::read_to_string(status).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The vfork-style start blocks every signal around the clone: this
    /// thread gets its own mask back, the workload starts with none blocked.
    #[test]
    fn the_signal_mask_is_restored_here_and_empty_in_the_child() {
        let me = format!("/proc/self/task/{}/status", nix::unistd::gettid());
        let mut usr1 = nix::sys::signal::SigSet::empty();
        usr1.add(nix::sys::signal::Signal::SIGUSR1);
        let before = usr1.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK).unwrap();
        let mine = blocked(&me);
        let child = spawn(&plain("sleep", &["5"])).unwrap();
        let after = blocked(&me);
        let theirs = blocked(&format!("/proc/{}/status", child.pid));
        let pid = nix::unistd::Pid::from_raw(child.pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        before.thread_set_mask().unwrap();
        assert_eq!(after, mine, "this thread's mask changed");
        assert_ne!(mine, "0000000000000000", "SIGUSR1 was not blocked here");
        assert_eq!(theirs, "0000000000000000", "the child inherited a blocked signal");
    }

    /// Where clone3 is refused, glibc's clone (and, for a child that must
    /// not share our memory, glibc's fork) starts the child: it runs with
    /// no signal blocked, its exit status and exec errors come back, and
    /// this thread's mask is as it was.
    #[test]
    fn without_clone3_the_child_starts_through_glibc_clone_or_fork() {
        let me = format!("/proc/self/task/{}/status", nix::unistd::gettid());
        let mine = blocked(&me);
        // Exit status 4 only if nothing is blocked in the workload.
        let check = "grep -q '^SigBlk:[[:space:]]*0000000000000000$' /proc/self/status && exit 4; exit 5";
        let forked = |mut req: Spawn| {
            req.placement = Placement::V1 {
                tasks: Vec::new(),
                moves_memory: true,
            };
            req
        };
        REFUSE_CLONE3.set(true);
        let shared = spawn(&plain("sh", &["-c", check]));
        let own = spawn(&forked(plain("sh", &["-c", check])));
        let missing = spawn(&plain("/no/such/file", &[]));
        let missing_forked = spawn(&forked(plain("/no/such/file", &[])));
        REFUSE_CLONE3.set(false);
        for child in [shared.unwrap(), own.unwrap()] {
            let pid = nix::unistd::Pid::from_raw(child.pid as i32);
            let status = nix::sys::wait::waitpid(pid, None).unwrap();
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 4));
        }
        assert_eq!(blocked(&me), mine, "this thread's mask changed");
        assert_eq!(missing.unwrap_err().exit_code(), 127);
        assert_eq!(missing_forked.unwrap_err().exit_code(), 127);
    }

    #[test]
    fn spawns_without_a_cgroup_and_reports_exec_errors() {
        let req = |program: &str| plain(program, &["-c", "exit 3"]);
        let child = spawn(&req("sh")).unwrap();
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child.pid as i32), None).unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(child.pid as i32), 3)
        );

        let err = spawn(&req("/no/such/file")).unwrap_err();
        assert_eq!(err.exit_code(), 127, "{err}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("noexec");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let err = spawn(&req(script.to_str().unwrap())).unwrap_err();
        assert_eq!(err.exit_code(), 126, "{err}");
        let mut bad_dir = req("sh");
        bad_dir.workdir = Some(dir.path().join("missing"));
        let err = spawn(&bad_dir).unwrap_err();
        assert_eq!(err.exit_code(), 125, "{err}");
    }
}
