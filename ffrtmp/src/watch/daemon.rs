//! The watch loop: one task owns all state; blocking cgroup work runs on
//! tokio's blocking pool so a slow `memory.max` write never stalls events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, bail};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::WatchConfig;
use super::source::Source;
use crate::cgroup::{Governor, JobCgroup, JobId};
use crate::events::scan::{self, Candidate};
use crate::events::source::SourceEvent;
use crate::job::{self as lifecycle, Created, Finish};
use crate::process::ProcError;
use crate::process::identity::{ProcessInfo, boot_time_now, clock_ticks, descendants_of};
use crate::process::nice::{NiceError, renice_all_threads};
use crate::process::{PidFd, ProcessId};
use crate::report::{Ending, Mode};

/// A governed process.
struct Tracked {
    id: ProcessId,
    job_id: JobId,
    cgroup: JobCgroup,
    attached: SystemTime,
}

/// The outcome of one adoption on the blocking pool.
struct Adoption {
    candidate: Candidate,
    job_id: JobId,
    result: anyhow::Result<(JobCgroup, PidFd)>,
}

/// Counters reported at shutdown (and, later, as metrics).
#[derive(Debug, Default)]
struct Counters {
    events: u64,
    lost: u64,
    reconcile_scans: u64,
    adopted: u64,
    adopt_failures: u64,
    exited: u64,
}

struct Daemon {
    config: WatchConfig,
    governor: Arc<Governor>,
    source: Source,
    tracked: HashMap<u32, Tracked>,
    /// Pids with an adoption in flight: never adopted twice.
    adopting: HashSet<u32>,
    /// Exit statuses reported by the source, until the pidfd says "exited".
    statuses: HashMap<u32, i32>,
    adoptions: JoinSet<Adoption>,
    finishing: JoinSet<()>,
    scanning: Option<tokio::task::JoinHandle<Vec<Candidate>>>,
    rescan: bool,
    /// The source's kernel-side drop count when last looked at.
    kernel_drops: u64,
    /// Exited processes, with the status their pidfd knew (6.15+).
    exits_tx: mpsc::UnboundedSender<(ProcessId, Option<i32>)>,
    counters: Counters,
}

/// Run the daemon until SIGINT or SIGTERM. Governed processes are left in
/// their cgroups with their limits and never signalled.
pub async fn run(config: WatchConfig) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("ffrtmp watch must run as root: it creates cgroups and subscribes to kernel process events");
    }
    // Before anything is logged: a signal sent as soon as the daemon looks
    // ready must stop it cleanly, not kill it.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tracing::info!("Starting auto-attach service...");
    tracing::info!("Scan interval: {:?}", config.scan_interval);
    tracing::info!("Target commands: {:?}", config.rules.targets.names());

    let governor = Arc::new(lifecycle::governor(config.cgroup_root.clone())?);

    // Subscribe first, then catch up: a target started in between is seen
    // by both and adopted once.
    let (source, why) = Source::open(config.backend, &config).context("opening an event source")?;
    tracing::info!("Event source: {} ({why})", source.name());

    let (exits_tx, mut exits_rx) = mpsc::unbounded_channel();
    let mut d = Daemon {
        config,
        governor,
        source,
        tracked: HashMap::new(),
        adopting: HashSet::new(),
        statuses: HashMap::new(),
        adoptions: JoinSet::new(),
        finishing: JoinSet::new(),
        scanning: None,
        rescan: false,
        kernel_drops: 0,
        exits_tx,
        counters: Counters::default(),
    };
    d.start_scan();

    let mut batch = Vec::new();
    let signal_name = loop {
        tokio::select! {
            biased;
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            next = d.source.next(&mut batch) => {
                let scan_due = next.context("reading process events")?;
                d.handle_events(&mut batch);
                if scan_due {
                    d.start_scan();
                }
            }
            Some(done) = d.adoptions.join_next() => match done {
                Ok(adoption) => d.adopted(adoption),
                Err(e) => tracing::error!("adoption task failed: {e}"),
            },
            Some((id, status)) = exits_rx.recv() => d.exited(id, status),
            found = async { d.scanning.as_mut().expect("guarded").await }, if d.scanning.is_some() => {
                d.scanning = None;
                match found {
                    Ok(candidates) => d.scanned(candidates),
                    Err(e) => tracing::error!("scan task failed: {e}"),
                }
            }
            Some(_) = d.finishing.join_next() => {}
        }
    };
    tracing::info!("Received signal {signal_name}, shutting down...");
    d.shutdown().await;
    tracing::info!("Service stopped gracefully");
    Ok(())
}

impl Daemon {
    fn handle_events(&mut self, batch: &mut Vec<SourceEvent>) {
        let mut lost = 0;
        for event in batch.drain(..) {
            self.counters.events += 1;
            match event {
                SourceEvent::Exec { pid } => self.consider(pid),
                SourceEvent::Exit { pid, status } => {
                    if self.tracked.contains_key(&pid) {
                        self.statuses.insert(pid, status);
                    }
                }
                SourceEvent::Lost { count } => lost += count,
            }
        }
        // Kernel-side drops (eBPF ring buffer full) are a running total.
        let dropped = self.source.drops();
        lost += dropped.saturating_sub(self.kernel_drops);
        self.kernel_drops = dropped;
        if lost > 0 {
            tracing::warn!("{lost} process event(s) lost; reconciling with a /proc scan");
            self.counters.lost += lost;
            self.start_scan();
        }
    }

    /// An exec: adopt it if it is a target we do not govern yet.
    fn consider(&mut self, pid: u32) {
        if self.adopting.contains(&pid) {
            return;
        }
        let Some(candidate) = scan::check(pid, &self.config.rules.targets) else {
            return;
        };
        if self.tracked.get(&pid).is_some_and(|t| t.id == candidate.info.id) {
            return;
        }
        if scan::is_self_or_descendant(&candidate.info) {
            return;
        }
        if self.governor.in_job_cgroup(pid) {
            tracing::debug!("PID {pid} is already in an ffrtmp job cgroup; leaving it there");
            return;
        }
        self.adopt(candidate);
    }

    fn adopt(&mut self, candidate: Candidate) {
        let pid = candidate.info.id.pid;
        self.adopting.insert(pid);
        let job_id = JobId::parse(&format!("auto-{}-{pid}", candidate.command)).unwrap_or_else(|_| JobId::unnamed(pid));
        tracing::info!("Attaching to PID {pid} ({}) as {job_id}", candidate.command);
        let governor = Arc::clone(&self.governor);
        let limits = self.config.rules.limits_for(&candidate.command).clone();
        self.adoptions.spawn_blocking(move || {
            let result = adopt_blocking(&governor, &candidate, &job_id, &limits);
            Adoption {
                candidate,
                job_id,
                result,
            }
        });
    }

    fn adopted(&mut self, adoption: Adoption) {
        let id = adoption.candidate.info.id;
        self.adopting.remove(&id.pid);
        match adoption.result {
            Ok((cgroup, pidfd)) => {
                self.counters.adopted += 1;
                for o in cgroup.outcomes().iter().filter(|o| !o.applied()) {
                    tracing::warn!(
                        "PID {}: {} not applied: {}",
                        id.pid,
                        o.limit,
                        o.error.as_deref().unwrap_or("")
                    );
                }
                tracing::info!("✓ Attached to PID {} (job: {})", id.pid, adoption.job_id);
                self.source.govern(id.pid);
                self.watch_exit(id, pidfd);
                self.tracked.insert(
                    id.pid,
                    Tracked {
                        id,
                        job_id: adoption.job_id,
                        cgroup,
                        attached: SystemTime::now(),
                    },
                );
            }
            Err(e) => {
                self.counters.adopt_failures += 1;
                tracing::warn!(
                    "could not attach to PID {} ({}): {e:#}",
                    id.pid,
                    adoption.candidate.command
                );
            }
        }
    }

    /// A task per governed process waits for its pidfd to become readable:
    /// exact, once per process, and free while nothing happens.
    fn watch_exit(&self, id: ProcessId, pidfd: PidFd) {
        let tx = self.exits_tx.clone();
        tokio::spawn(async move {
            // SAFETY: PidFd owns its fd, which stays open while the AsyncFd
            // that owns the PidFd exists.
            let status = match unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
                .map_err(std::io::Error::from)
            {
                Ok(fd) => {
                    let _ = fd.readable().await;
                    fd.get_ref().status_after_exit(id)
                }
                Err(e) => {
                    tracing::warn!("watching PID {} for exit: {e}", id.pid);
                    None
                }
            };
            let _ = tx.send((id, status));
        });
    }

    fn exited(&mut self, id: ProcessId, pidfd_status: Option<i32>) {
        let Some(tracked) = self.tracked.remove(&id.pid).filter(|t| t.id == id) else {
            return;
        };
        self.counters.exited += 1;
        // The source's status (eBPF: computed like wait(2)) first, then what
        // the pidfd or the zombie's /proc/<pid>/stat told the exit watcher.
        let status = self.statuses.remove(&id.pid).or(pidfd_status);
        self.finishing.spawn_blocking(move || finish_blocking(tracked, status));
    }

    fn start_scan(&mut self) {
        if self.scanning.is_some() {
            self.rescan = true;
            return;
        }
        self.counters.reconcile_scans += 1;
        let targets = self.config.rules.targets.clone();
        self.scanning = Some(tokio::task::spawn_blocking(move || scan::scan(&targets)));
    }

    fn scanned(&mut self, candidates: Vec<Candidate>) {
        let new: Vec<Candidate> = candidates
            .into_iter()
            .filter(|c| {
                let pid = c.info.id.pid;
                !self.adopting.contains(&pid)
                    && self.tracked.get(&pid).is_none_or(|t| t.id != c.info.id)
                    && !scan::is_self_or_descendant(&c.info)
                    && !self.governor.in_job_cgroup(pid)
            })
            .collect();
        if !new.is_empty() {
            tracing::info!("Discovered {} new process(es)", new.len());
        }
        for c in new {
            self.adopt(c);
        }
        if std::mem::take(&mut self.rescan) {
            self.start_scan();
        }
    }

    async fn shutdown(mut self) {
        // Let adoptions in flight complete so no half-made cgroup is left.
        while let Some(done) = self.adoptions.join_next().await {
            if let Ok(adoption) = done {
                self.adopted(adoption);
            }
        }
        while self.finishing.join_next().await.is_some() {}
        for t in self.tracked.values() {
            tracing::info!("⊗ Detached from PID {} (job: {})", t.id.pid, t.job_id);
        }
        tracing::debug!("counters: {:?}", self.counters);
    }
}

/// Identity check, job cgroup, move, nice — all on the blocking pool.
fn adopt_blocking(
    governor: &Governor,
    candidate: &Candidate,
    job_id: &JobId,
    limits: &crate::cgroup::Limits,
) -> anyhow::Result<(JobCgroup, PidFd)> {
    let id = candidate.info.id;
    let pidfd = PidFd::open(id.pid).with_context(|| format!("pidfd_open({})", id.pid))?;
    if ProcessInfo::read(id.pid)?.id != id {
        bail!("pid {} was reused before it could be adopted", id.pid);
    }
    let mut cgroup = match lifecycle::create(governor, job_id, limits, false)? {
        Created::Job(cg) => cg,
        Created::Failed { error, .. } => bail!("creating its cgroup: {error}"),
    };
    if let Err(e) = cgroup.add_process(id.pid) {
        cgroup.discard();
        return Err(anyhow::Error::new(e).context("moving it into its cgroup"));
    }
    // Children it forked before the move stayed behind (later ones are born
    // inside): they belong to the same job.
    let mut moved = vec![id.pid];
    for child in descendants_of(id.pid) {
        match cgroup.add_process(child) {
            Ok(()) => moved.push(child),
            Err(e) if e.io().raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => tracing::warn!("PID {}: child {child} not moved: {e}", id.pid),
        }
    }
    if let Some(nice) = limits.nice {
        let errors: Vec<String> = moved
            .iter()
            .filter_map(|&pid| match renice_all_threads(pid, nice.get()) {
                // A child that exited meanwhile needs no nice value.
                Err(NiceError::Proc(ProcError::NotFound { .. })) if pid != id.pid => None,
                other => other.err().map(|e| e.to_string()),
            })
            .collect();
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        cgroup.record(lifecycle::nice_outcome(nice.get(), error));
    }
    Ok((cgroup, pidfd))
}

/// Usage, removal and the summary line of one exited process.
fn finish_blocking(tracked: Tracked, status: Option<i32>) {
    let id = tracked.id;
    let ending = status.map_or(Ending::ExitedUnknown, Ending::from_wait_status);
    let process_seconds = boot_time_now() - id.start_time as f64 / clock_ticks() as f64;
    let result = lifecycle::finish(
        Created::Job(tracked.cgroup),
        Finish {
            job_id: tracked.job_id.clone(),
            pid: id.pid,
            mode: Mode::Watch,
            started: tracked.attached,
            ending,
            joined_by: Some("moved"),
            process_seconds: Some(process_seconds),
        },
    );
    tracing::info!(
        "Process {} exited (job {}, duration: {:.2}s)",
        id.pid,
        tracked.job_id,
        result.processing_seconds
    );
    tracing::info!("{}", result.summary_line());
}
