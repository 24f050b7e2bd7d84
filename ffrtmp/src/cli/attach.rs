//! `ffrtmp attach --pid N [limits]`: adopt a running process, never signal it.

use std::os::fd::AsFd;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::Args;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::args::GovernArgs;
use super::output;
use crate::lifecycle::{self, Finish};
use crate::process::identity::{self, ProcError, ProcessInfo};
use crate::process::{PidFd, Pinned, ProcessId};
use crate::report::{Ending, Mode};

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The process to adopt
    #[arg(long, value_name = "PID", value_parser = parse_pid)]
    pub pid: u32,
    /// Also move the process's descendants that were forked before the move
    #[arg(long)]
    pub tree: bool,
    /// Adopt it even if it is init (PID 1) or already in another ffrtmp job
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub govern: GovernArgs,
}

fn parse_pid(s: &str) -> Result<u32, String> {
    // Any positive pid: one above pid_max simply does not exist, which the
    // lookup says in the words scripts for the old tool look for.
    match s.trim().parse::<i32>() {
        Ok(p) if p > 0 => Ok(p as u32),
        _ => Err("expected a process id, a positive integer".into()),
    }
}

/// Identify the target: checks, then pin it (a pidfd, the same start time
/// before and after it was opened).
fn adopt_identity(pid: u32) -> anyhow::Result<Pinned> {
    let info = ProcessInfo::read(pid)?;
    info.check_governable()?;
    // /proc/<tid> of a thread exists too (unlisted): it is not a process.
    let tgid = identity::thread_group(pid)?;
    if tgid != pid {
        return Err(ProcError::Thread { tid: pid, pid: tgid }.into());
    }
    let euid = nix::unistd::geteuid().as_raw();
    let (ruid, _) = identity::read_status(pid)?;
    if euid != 0 && ruid != euid {
        return Err(ProcError::PermissionDenied {
            pid,
            reason: format!("it belongs to uid {ruid} and ffrtmp runs as uid {euid} (run as root)"),
        }
        .into());
    }
    Ok(crate::process::pin(pid, Some(info.id))?)
}

/// What `attach` refuses unless `--force`: init, whose every child would be
/// born in the job, and a process another ffrtmp job governs.
fn refusal(pid: u32, governor: &crate::cgroup::Governor) -> Option<String> {
    if pid == 1 {
        return Some(
            "pid 1 is init of this PID namespace: everything it starts afterwards would be born in the job (--force to do it anyway)"
                .into(),
        );
    }
    governor.job_of(pid).map(|(job, dir)| {
        format!(
            "pid {pid} is already governed by job {job} ({}); attaching would take it from that job (--force to do it anyway)",
            dir.display()
        )
    })
}

pub fn execute(args: AttachArgs) -> anyhow::Result<i32> {
    let limits = args.govern.limits.limits();
    let pinned = adopt_identity(args.pid)?;
    let target = pinned.id();

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

    // Refused before anything is touched (the governor below also tidies
    // leftovers of earlier jobs).
    let hierarchy = crate::cgroup::Hierarchy::detect().context("detecting the cgroup hierarchy")?;
    match refusal(
        target.pid,
        &crate::cgroup::Governor::new(hierarchy, args.govern.cgroup_root.clone()),
    ) {
        Some(why) if !args.force => bail!("{why}"),
        Some(why) => tracing::warn!("--force: {why}"),
        None => {}
    }
    let governor = lifecycle::governor(args.govern.cgroup_root.clone())?;
    let job_id = output::job_id(&args.govern);
    tracing::info!("Attaching to PID {} ({}) as {job_id}", target.pid, pinned.info.comm);
    let mut created = lifecycle::create(&governor, &job_id, &limits, args.govern.strict)?;
    if let lifecycle::Created::Job(job) = &mut created {
        job.note_adoption();
    }
    let started = SystemTime::now();
    let moved = match created
        .job()
        .map(|job| lifecycle::move_in(job, &pinned, args.tree, None))
    {
        Some(Ok(moved)) => moved,
        Some(Err(e)) => {
            created.discard();
            return Err(e.into());
        }
        // No cgroup (--strict off and it could not be made): nothing moved.
        None => lifecycle::Moved {
            pids: vec![target.pid],
            ..Default::default()
        },
    };
    if args.tree {
        tracing::info!(
            "moved {} descendant process(es) of pid {}",
            moved.pids.len() - 1,
            target.pid
        );
    }
    for (pid, why) in &moved.missed {
        tracing::warn!("descendant pid {pid} not moved: {why}");
    }
    if let Some(nice) = limits.nice {
        let outcome = lifecycle::renice(target.pid, &moved.pids, nice);
        if let (true, Some(error)) = (args.govern.strict, &outcome.error) {
            tracing::error!("--strict: {error}; the process stays in its cgroup");
        }
        created.record(outcome);
    }
    if let Some(adj) = limits.oom_score_adj {
        let outcome = lifecycle::set_oom_score_adj(target.pid, &moved.pids, adj);
        if let (true, Some(error)) = (args.govern.strict, &outcome.error) {
            tracing::error!("--strict: {error}; the process stays in its cgroup");
        }
        created.record(outcome);
    }
    if let Some(class) = limits.io_class {
        let outcome = lifecycle::set_io_class(target.pid, &moved.pids, class);
        if let (true, Some(error)) = (args.govern.strict, &outcome.error) {
            tracing::error!("--strict: {error}; the process stays in its cgroup");
        }
        created.record(outcome);
    }
    tracing::info!("✓ Attached to PID {} (job: {job_id})", target.pid);

    let ending = wait_or_detach(&pinned.pidfd, &signals, target)?;
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
    output::emit(&result, &args.govern)?;
    Ok(0)
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
