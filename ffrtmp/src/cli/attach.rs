//! `ffrtmp attach --pid N [limits]`: adopt a running process, never signal it.

use std::os::fd::AsFd;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::Args;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::args::GovernArgs;
use super::job;
use crate::job::{self as lifecycle, Created, Finish};
use crate::process::identity::{self, ProcError, ProcessInfo};
use crate::process::nice::renice_all_threads;
use crate::process::{PidFd, ProcessId};
use crate::report::{Ending, Mode};

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The process to adopt
    #[arg(long, value_name = "PID", value_parser = parse_pid)]
    pub pid: u32,
    /// Also move the process's descendants that were forked before the move
    #[arg(long)]
    pub tree: bool,
    #[command(flatten)]
    pub govern: GovernArgs,
}

fn parse_pid(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(p) if p > 0 && p <= 4_194_304 => Ok(p),
        _ => Err("expected a process id, 1..=4194304".into()),
    }
}

/// Identify the target: checks, then a pidfd, then the same start time again.
fn adopt_identity(pid: u32) -> anyhow::Result<(ProcessInfo, PidFd)> {
    let info = ProcessInfo::read(pid)?;
    info.check_governable()?;
    let euid = nix::unistd::geteuid().as_raw();
    let (ruid, _) = identity::read_status(pid)?;
    if euid != 0 && ruid != euid {
        return Err(ProcError::PermissionDenied {
            pid,
            reason: format!("it belongs to uid {ruid} and ffrtmp runs as uid {euid} (run as root)"),
        }
        .into());
    }
    let pidfd = PidFd::open(pid).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => anyhow::Error::new(ProcError::NotFound { pid }),
        _ => anyhow::Error::new(e).context(format!("pidfd_open({pid})")),
    })?;
    let again = ProcessInfo::read(pid)?;
    if again.id != info.id {
        return Err(ProcError::Replaced { pid }.into());
    }
    if pidfd.has_exited()? {
        return Err(ProcError::Zombie { pid }.into());
    }
    Ok((again, pidfd))
}

pub fn execute(args: AttachArgs) -> anyhow::Result<i32> {
    let limits = args.govern.limits.limits();
    let (info, pidfd) = adopt_identity(args.pid)?;
    let target = info.id;

    if let Some(mem) = limits.memory_max
        && let (_, Some(rss)) = identity::read_status(target.pid)?
        && rss > mem.bytes()
    {
        let msg = format!(
            "pid {} uses {rss} bytes, more than the memory limit {}: the kernel will reclaim and may OOM-kill it",
            target.pid,
            mem.bytes()
        );
        if args.govern.strict {
            bail!("--strict: {msg}");
        }
        tracing::warn!("{msg}");
    }

    // SIGINT/SIGTERM mean "detach"; read them from a signalfd.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block().context("blocking signals")?;
    let signals =
        SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).context("creating a signalfd")?;

    let governor = lifecycle::governor(args.govern.cgroup_root.clone())?;
    let job_id = job::job_id(&args.govern);
    tracing::info!("Attaching to PID {} ({}) as {job_id}", target.pid, info.comm);
    let mut created = lifecycle::create(&governor, &job_id, &limits, args.govern.strict)?;
    let started = SystemTime::now();
    if let Err(e) = move_in(&created, &pidfd, target) {
        created.discard();
        return Err(e);
    }
    let mut moved = vec![target.pid];
    if args.tree && created.job().is_some() {
        moved.extend(move_descendants(&created, target.pid));
    }
    if let Some(nice) = limits.nice {
        let errors: Vec<String> = moved
            .iter()
            .filter_map(|&pid| match renice_all_threads(pid, nice.get()) {
                Ok(n) => {
                    tracing::debug!("reniced {n} thread(s) of pid {pid} to {}", nice.get());
                    None
                }
                Err(e) => Some(e.to_string()),
            })
            .collect();
        if args.govern.strict && !errors.is_empty() {
            tracing::error!("--strict: {}; the process stays in its cgroup", errors.join("; "));
        }
        created.record(lifecycle::nice_outcome(
            nice.get(),
            (!errors.is_empty()).then(|| errors.join("; ")),
        ));
    }
    tracing::info!("✓ Attached to PID {} (job: {job_id})", target.pid);

    let ending = wait_or_detach(&pidfd, &signals, target)?;
    let process_seconds = (ending != Ending::Detached).then(|| target.age().as_secs_f64());
    match ending {
        Ending::Detached => tracing::info!("⊗ Detached from PID {} (job: {job_id})", target.pid),
        _ => tracing::info!("Process {} exited (job {job_id})", target.pid),
    }
    let result = lifecycle::finish(
        created,
        Finish {
            job_id,
            pid: target.pid,
            mode: Mode::Attach,
            started,
            ending,
            joined_by: Some("moved"),
            process_seconds,
        },
    );
    job::emit(&result, &args.govern)?;
    Ok(0)
}

/// Move the target into the job cgroup, checking it is still the same
/// process before and after.
fn move_in(created: &Created, pidfd: &PidFd, target: ProcessId) -> anyhow::Result<()> {
    let Some(job) = created.job() else { return Ok(()) };
    if pidfd.has_exited()? {
        bail!("pid {} exited before it could be moved", target.pid);
    }
    job.add_process(target.pid).map_err(|e| match e.io().raw_os_error() {
        Some(libc::ESRCH) => anyhow::anyhow!("pid {} exited before it could be moved", target.pid),
        _ => anyhow::Error::new(e).context(format!("moving pid {} into the job cgroup", target.pid)),
    })?;
    // The pid number could only have been reused if the process exited in
    // between, which the pidfd tells us; check identity to be sure.
    match ProcessInfo::read(target.pid) {
        Ok(now) if now.id == target => Ok(()),
        Ok(_) => Err(ProcError::Replaced { pid: target.pid }.into()),
        Err(ProcError::NotFound { .. }) => Ok(()), // exited after the move: we watch it end
        Err(e) => Err(e.into()),
    }
}

/// `--tree`: move descendants forked before the move (later ones are born inside).
fn move_descendants(created: &Created, root: u32) -> Vec<u32> {
    let Some(job) = created.job() else { return Vec::new() };
    let mut moved = Vec::new();
    for p in identity::descendants(root, &identity::all_processes()) {
        match job.add_process(p.id.pid) {
            Ok(()) => moved.push(p.id.pid),
            Err(e) if e.io().raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => tracing::warn!("descendant pid {} not moved: {e}", p.id.pid),
        }
    }
    tracing::info!("moved {} descendant process(es) of pid {root}", moved.len());
    moved
}

/// Block until the process exits (pidfd readable) or we are told to detach.
fn wait_or_detach(pidfd: &PidFd, signals: &SignalFd, target: ProcessId) -> anyhow::Result<Ending> {
    loop {
        let mut fds = [
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for the process"),
            Ok(_) => {}
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            return Ok(pidfd
                .status_after_exit(target)
                .map_or(Ending::ExitedUnknown, Ending::from_wait_status));
        }
        if let Some(info) = signals.read_signal().context("reading the signalfd")? {
            tracing::info!(
                "received signal {}, detaching (the process keeps its limits)",
                info.ssi_signo
            );
            return Ok(Ending::Detached);
        }
    }
}
