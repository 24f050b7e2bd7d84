//! `ffrtmp run [limits] -- CMD ARGS…`

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::Args;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::args::GovernArgs;
use super::output;
use crate::cgroup::Version;
use crate::lifecycle::{self, Finish};
use crate::process::spawn::{self, JoinedBy, Placement, Spawn};
use crate::report::{Ending, Mode};

/// Signals forwarded to the child's process group.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// What INT, TERM and HUP sent to `ffrtmp run` do (`--on-signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnSignal {
    /// Forward the signal to the command's process group (as cgexec, systemd-run --scope and timeout do)
    Forward,
    /// Stop waiting: report detached_workload_continues, exit 0, leave the command running under its limits (the old tool's behaviour)
    Detach,
}

/// The signals `--on-signal detach` detaches on.
const DETACHING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub govern: GovernArgs,
    /// What SIGINT, SIGTERM and SIGHUP to ffrtmp do: forward them to the command, or detach and leave it running
    #[arg(
        long,
        value_name = "ACTION",
        value_enum,
        default_value = "forward",
        env = "FFRTMP_ON_SIGNAL",
        help_heading = "Options"
    )]
    pub on_signal: OnSignal,
    /// Working directory for the command
    #[arg(long, value_name = "DIR", help_heading = "Options")]
    pub workdir: Option<PathBuf>,
    /// The old tool's flag, accepted so its scripts keep working: whether a
    /// result counts for SLA statistics is now decided from how the job
    /// ended (`sla_eligible` in the result)
    #[arg(long, hide = true)]
    pub sla_eligible: bool,
    /// The command to run and its arguments (after --)
    #[arg(
        required = true,
        trailing_var_arg = true,
        value_name = "CMD",
        help_heading = "Arguments"
    )]
    pub command: Vec<OsString>,
}

pub fn execute(args: RunArgs) -> anyhow::Result<i32> {
    if args.sla_eligible {
        tracing::warn!(
            "--sla-eligible is accepted for compatibility and changes nothing: sla_eligible in the result says whether the job counts for SLA statistics"
        );
    }
    let limits = args.govern.limits.limits();
    if let Some(dir) = &args.workdir
        && !dir.is_dir()
    {
        bail!(
            "invalid value '{}' for '--workdir <DIR>': expected an existing directory",
            dir.display()
        );
    }
    // Not found / not executable are known before anything is created.
    if let Err(e) = spawn::resolve_program(&args.command[0]) {
        eprintln!("ffrtmp: error: {e}");
        return Ok(e.exit_code());
    }

    // Block the forwarded signals before the child exists, so none is lost
    // or acted on by default; they are read from a signalfd.
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.thread_block().context("blocking signals")?;
    let signals =
        SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).context("creating a signalfd")?;

    // Only what the child's start needs comes before it (docs/architecture.md).
    let (governor, mut housekeeping) = lifecycle::governor_for_run(args.govern.cgroup_root.clone())?;
    let job_id = output::job_id(&args.govern);
    let mut created = match lifecycle::create(&governor, &job_id, &limits, args.govern.strict) {
        Ok(created) => created,
        Err(e) => {
            housekeeping.done(&governor);
            return Err(e.into());
        }
    };
    let placement = match created.job() {
        None => Placement::None,
        // A cpuset job is joined by a write instead: before Linux 6.3
        // (and its stable backports; 5.10 still has it) a child cloned
        // into a cpuset cgroup kept its parent's CPUs and memory nodes
        // (cpuset_fork() ignored CLONE_INTO_CGROUP), while a write runs
        // cpuset_attach(), which sets them, on every kernel.
        Some(j) if j.version() == Version::V2 && (limits.cpus.is_some() || limits.mems.is_some()) => Placement::V1 {
            tasks: j.procs_files(),
            moves_memory: true,
        },
        Some(j) if j.version() == Version::V2 => Placement::V2 {
            dir: j.dirs()[0].to_path_buf(),
            procs: j.procs_files()[0].clone(),
        },
        Some(j) => Placement::V1 {
            tasks: j.tasks_files(),
            moves_memory: j.has_cpuset(),
        },
    };
    let foreground = in_terminal_foreground();
    let request = Spawn {
        program: args.command[0].clone(),
        args: args.command[1..].to_vec(),
        workdir: args.workdir.clone(),
        nice: limits.nice.map(|n| n.get()),
        oom_score_adj: limits.oom_score_adj.map(|a| a.get()),
        io_class: limits.io_class,
        strict: args.govern.strict,
        foreground,
        placement,
    };
    let started = SystemTime::now();
    let child = match spawn::spawn(&request) {
        Ok(child) => child,
        Err(e) => {
            created.discard();
            housekeeping.done(&governor);
            eprintln!("ffrtmp: error: {e}");
            return Ok(e.exit_code());
        }
    };
    housekeeping.log_hierarchy();
    if let Some(nice) = limits.nice {
        created.record(lifecycle::nice_outcome(
            nice.get(),
            child.nice_error.as_ref().map(|e| format!("setpriority: {e}")),
        ));
    }
    if let Some(adj) = limits.oom_score_adj {
        created.record(lifecycle::oom_score_adj_outcome(
            child.pid,
            adj.get(),
            child
                .oom_error
                .as_ref()
                .map(|e| format!("writing /proc/self/oom_score_adj: {e}")),
        ));
    }
    if let Some(class) = limits.io_class {
        created.record(lifecycle::io_class_outcome(
            class,
            child
                .ioprio_error
                .as_ref()
                .map(|e| format!("ioprio_set: {e}{}", crate::process::ioprio::hint(class, e))),
        ));
    }
    let joined_by = match child.joined_by {
        JoinedBy::CloneIntoCgroup => Some("clone_into_cgroup"),
        JoinedBy::PreExecWrite => Some("pre_exec_write"),
        JoinedBy::NotPlaced => None,
    };
    match created.job() {
        Some(j) => tracing::info!(
            "started pid {} for job {job_id} in {} ({})",
            child.pid,
            j.dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            joined_by.unwrap_or("")
        ),
        None => tracing::warn!("started pid {} for job {job_id} without a cgroup", child.pid),
    }
    housekeeping.done(&governor);

    let waited = wait_forwarding(&child, &signals, args.on_signal)?;
    if foreground {
        reclaim_terminal();
    }
    let ending = match waited {
        Waited::Exited(WaitStatus::Exited(_, code)) => Ending::Exited(code),
        Waited::Exited(WaitStatus::Signaled(_, sig, _)) => Ending::Signaled(sig as i32),
        Waited::Exited(other) => bail!("unexpected wait status {other:?}"),
        Waited::Detached(sig) => {
            tracing::info!(
                "received {sig}, detaching: pid {} keeps running in job {job_id} with its limits",
                child.pid
            );
            Ending::Detached
        }
    };
    let result = lifecycle::finish(
        created,
        Finish {
            job_id,
            pid: child.pid,
            mode: Mode::Run,
            started,
            ending,
            joined_by,
            process_seconds: None,
        },
    );
    output::emit(&result, &args.govern)?;
    Ok(match ending {
        Ending::Detached => 0,
        _ => ending.exit_code().unwrap_or(super::EXIT_FFRTMP_FAILED),
    })
}

/// How waiting for the child ended.
enum Waited {
    Exited(WaitStatus),
    /// `--on-signal detach` and this signal came.
    Detached(Signal),
}

/// Wait for the child to exit, forwarding signals to its process group
/// (with `--on-signal detach`, INT/TERM/HUP end the wait instead).
/// Forwarding never escalates: the child decides what a signal means.
fn wait_forwarding(child: &spawn::Child, signals: &SignalFd, on_signal: OnSignal) -> anyhow::Result<Waited> {
    let pid = Pid::from_raw(child.pid as i32);
    loop {
        let mut fds = [
            PollFd::new(child.pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for the child"),
            Ok(_) => {}
        }
        let exited = fds[0].revents().is_some_and(|r| !r.is_empty());
        let signalled = fds[1].revents().is_some_and(|r| !r.is_empty());
        if signalled {
            while let Some(info) = signals.read_signal().context("reading the signalfd")? {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                if on_signal == OnSignal::Detach && DETACHING.contains(&sig) && !exited {
                    return Ok(Waited::Detached(sig));
                }
                tracing::info!("forwarding {sig} to process group {pid}");
                match killpg(pid, sig) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                    Err(e) => tracing::warn!("forwarding {sig} to process group {pid}: {e}"),
                }
            }
        }
        if exited {
            return waitpid(pid, None).context("reaping the child").map(Waited::Exited);
        }
    }
}

/// Is stdin a terminal whose foreground process group is ours?
fn in_terminal_foreground() -> bool {
    let stdin = std::io::stdin();
    nix::unistd::isatty(stdin.as_fd()).unwrap_or(false)
        && nix::unistd::tcgetpgrp(stdin.as_fd()).ok() == Some(nix::unistd::getpgrp())
}

/// Take the terminal back after the child (which had it) exits.
fn reclaim_terminal() {
    // SAFETY: signal/tcsetpgrp are plain libc calls; SIGTTOU is ignored
    // around tcsetpgrp because we are a background group at this point.
    unsafe {
        let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::tcsetpgrp(0, libc::getpgrp());
        libc::signal(libc::SIGTTOU, old);
    }
}
