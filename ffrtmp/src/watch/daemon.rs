//! The watch loop: one task owns all state; blocking work (reading `/proc`,
//! writing cgroup files, name-service lookups) runs on tokio's blocking pool
//! through [`super::adopt`], so events keep flowing while it happens.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::WatchConfig;
use super::adopt::{self, Adopted, Finished, Reattached, Takeover, job_id_for};
use super::event::WatchEvent;
use super::health::Health;
use super::metrics::{self, Metrics};
use super::rules::Rules;
use super::source::Source;
use super::state::{STATE_VERSION, StateFile, StateJob, unix_ms};
use crate::cgroup::{Governor, JobCgroup, JobId, LimitOutcome, Limits};
use crate::events::scan::{self, Candidate};
use crate::events::source::SourceEvent;
use crate::job as lifecycle;
use crate::process::identity::ProcessInfo;
use crate::process::{PidFd, ProcessId};

/// Requests to a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the configuration file (SIGHUP).
    Reload,
    /// Stop; governed processes keep their cgroups. The text says why.
    Stop(&'static str),
}

/// Where [`WatchEvent`]s go: a bounded queue that never blocks the daemon.
/// When the reader falls behind, events are dropped and counted.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<WatchEvent>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// A sink holding up to `capacity` events, and its receiving end.
    pub fn new(capacity: usize) -> (EventSink, mpsc::Receiver<WatchEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            EventSink {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Events dropped so far because the reader was not keeping up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A shared counter of the events dropped.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }

    /// Queue `event` without waiting; false (and counted) when it was dropped.
    fn send(&self, event: WatchEvent) -> bool {
        let queued = self.tx.try_send(event).is_ok();
        if !queued {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }
}

/// A configuration re-read on the blocking pool, and its warnings.
type Loading = JoinHandle<anyhow::Result<(WatchConfig, Vec<String>)>>;

/// A governed process.
struct Tracked {
    id: ProcessId,
    job_id: JobId,
    command: String,
    cgroup: JobCgroup,
    attached: SystemTime,
    /// The limits last asked for (a reload diffs against these).
    limits: Limits,
}

/// The outcome of one adoption attempt on the blocking pool.
struct Adoption {
    candidate: Candidate,
    job_id: JobId,
    attempt: u32,
    exec_ns: Option<u64>,
    /// The limits the adoption wrote (the rules of its start: a reload may
    /// have come meanwhile).
    limits: Limits,
    outcome: Adopted,
}

/// A candidate whose time has come: its `min_runtime` passed, or a retry is due.
struct Due {
    candidate: Candidate,
    attempt: u32,
    exec_ns: Option<u64>,
}

/// How long an exited process waits for the source's report of its exit
/// status when its pidfd could not tell it. Both sources can report after
/// the pidfd wakes: the proc connector sends after exit_notify() (6.1), and
/// the BPF ring buffer wakes its reader through irq_work, later still on a
/// slow (emulated) CPU. Only a job whose status never comes pays it.
const EXIT_STATUS_GRACE: Duration = Duration::from_secs(1);

/// Retry backoff: 100 ms, 200 ms, 400 ms, … at most 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

struct Daemon {
    config: WatchConfig,
    rules: Arc<Rules>,
    governor: Arc<Governor>,
    source: Source,
    tracked: HashMap<u32, Tracked>,
    /// Pids with an adoption in flight or a retry scheduled: never adopted twice.
    adopting: HashSet<u32>,
    /// Processes waiting for their `min_runtime`.
    pending: HashMap<u32, ProcessId>,
    /// Processes a filter rejected (forgotten when a scan no longer sees them).
    rejected: HashMap<u32, ProcessId>,
    /// Exit statuses reported by the source, until the pidfd says "exited".
    statuses: HashMap<u32, i32>,
    /// Exited processes whose status the source has yet to report.
    awaiting_status: HashMap<u32, Tracked>,
    adoptions: JoinSet<Adoption>,
    finishing: JoinSet<Finished>,
    updating: JoinSet<(ProcessId, JobId, Vec<LimitOutcome>)>,
    scanning: Option<(JoinHandle<std::io::Result<Vec<Candidate>>>, &'static str)>,
    rescan: Option<&'static str>,
    reloading: Option<Loading>,
    /// A reload was asked for while one was in flight.
    reload_again: bool,
    saving: Option<JoinHandle<()>>,
    state_dirty: bool,
    /// The source's kernel-side drop count when last looked at.
    kernel_drops: u64,
    /// Exited processes, with the status their pidfd knew (6.15+).
    exits_tx: mpsc::UnboundedSender<(ProcessId, Option<i32>)>,
    due_tx: mpsc::UnboundedSender<Due>,
    metrics: Metrics,
    health: Health,
    sink: Option<EventSink>,
    systemd_notify: bool,
}

/// The leaf a delegated daemon moves into.
const DAEMON_LEAF: &str = "daemon";

/// Run the daemon until SIGINT or SIGTERM; SIGHUP reloads the configuration.
/// Governed processes are left in their cgroups with their limits and never
/// signalled. Events go to `events` when given (`--events`).
pub async fn run(config: WatchConfig) -> anyhow::Result<()> {
    run_with(super::WatchService::new(config).without_events(), |_| {}).await
}

/// [`run`] for a prepared service; `with_handle` sees the running service
/// first (e.g. to take its events).
pub async fn run_with(
    service: super::WatchService,
    with_handle: impl FnOnce(&mut super::WatchHandle),
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Before anything is logged: a signal sent as soon as the daemon looks
    // ready must stop it cleanly, not kill it.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut handle = service.start().await?;
    with_handle(&mut handle);
    let control = handle.controller();
    tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                _ = sigint.recv() => Control::Stop("SIGINT"),
                _ = sigterm.recv() => Control::Stop("SIGTERM"),
                _ = sighup.recv() => Control::Reload,
            };
            if control.send(request).await.is_err() {
                break;
            }
        }
    });
    handle.wait().await
}

/// The daemon itself, driven by `control`; events go to `sink`.
pub async fn serve(
    config: WatchConfig,
    control: mpsc::Receiver<Control>,
    sink: Option<EventSink>,
) -> anyhow::Result<()> {
    start(config, sink, StartOptions::default()).await?.run(control).await
}

/// How the daemon fits into the process that runs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// Tell systemd (`Type=notify`) when it is ready, reloading, stopping.
    pub systemd_notify: bool,
    /// Running in a delegated cgroup (`Delegate=yes`): live in its leaf
    /// `daemon` (see [`crate::cgroup::enter_delegated_leaf`]).
    pub delegated: bool,
}

/// A started daemon: subscribed to process events, earlier jobs taken over,
/// the catch-up scan under way. [`Started::run`] drives it.
pub struct Started {
    d: Daemon,
    exits_rx: mpsc::UnboundedReceiver<(ProcessId, Option<i32>)>,
    due_rx: mpsc::UnboundedReceiver<Due>,
}

/// Start the daemon: everything that can fail at start fails here.
pub async fn start(config: WatchConfig, sink: Option<EventSink>, options: StartOptions) -> anyhow::Result<Started> {
    if !nix::unistd::geteuid().is_root() {
        bail!("ffrtmp watch must run as root: it creates cgroups and subscribes to kernel process events");
    }
    tracing::info!("Starting auto-attach service...");
    tracing::info!("Scan interval: {:?}", config.scan_interval);
    tracing::info!("Target commands: {:?}", config.rules.targets.names());

    let leaf = options.delegated.then_some(DAEMON_LEAF);
    let governor = Arc::new(lifecycle::delegated_governor(config.cgroup_root.clone(), leaf)?);
    let metrics = Metrics::new();
    let health = Health::new();
    let listener = match config.metrics_listen {
        Some(addr) => Some(super::http::bind(addr).await?),
        None => None,
    };

    // Subscribe first, then catch up: a target started in between is seen
    // by both and adopted once.
    let (source, why) = Source::open(config.backend, &config).context("opening an event source")?;
    tracing::info!("Event source: {} ({why})", source.name());
    metrics.set_backend(source.name());

    let (exits_tx, exits_rx) = mpsc::unbounded_channel();
    let (due_tx, due_rx) = mpsc::unbounded_channel();
    let mut d = Daemon {
        rules: Arc::new(config.rules.clone()),
        config,
        governor,
        source,
        tracked: HashMap::new(),
        adopting: HashSet::new(),
        pending: HashMap::new(),
        rejected: HashMap::new(),
        statuses: HashMap::new(),
        awaiting_status: HashMap::new(),
        adoptions: JoinSet::new(),
        finishing: JoinSet::new(),
        updating: JoinSet::new(),
        scanning: None,
        rescan: None,
        reloading: None,
        reload_again: false,
        saving: None,
        state_dirty: false,
        kernel_drops: 0,
        exits_tx,
        due_tx,
        metrics,
        health,
        sink,
        systemd_notify: options.systemd_notify,
    };
    d.emit(WatchEvent::Started {
        backend: d.source.name().to_string(),
        reason: why,
        targets: d.rules.targets.names().to_vec(),
    });
    d.take_over().await;
    d.start_scan("startup");
    if let Some(listener) = listener {
        tracing::info!("Serving /metrics and /healthz on http://{}", listener.local_addr()?);
        tokio::spawn(super::http::serve(listener, d.metrics.clone(), d.health.clone()));
    }
    d.notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("governing with {}", d.source.name())),
    ]);
    Ok(Started { d, exits_rx, due_rx })
}

impl Started {
    /// Run until `control` says stop (or is dropped). Governed processes
    /// keep their cgroups and limits.
    pub async fn run(self, mut control: mpsc::Receiver<Control>) -> anyhow::Result<()> {
        let Started {
            d,
            mut exits_rx,
            mut due_rx,
        } = self;
        d.main_loop(&mut control, &mut exits_rx, &mut due_rx).await
    }
}

impl Daemon {
    async fn main_loop(
        mut self,
        control: &mut mpsc::Receiver<Control>,
        exits_rx: &mut mpsc::UnboundedReceiver<(ProcessId, Option<i32>)>,
        due_rx: &mut mpsc::UnboundedReceiver<Due>,
    ) -> anyhow::Result<()> {
        let d = &mut self;
        let mut flush = tokio::time::interval(d.config.state.flush_interval.max(Duration::from_millis(100)));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let mut batch = Vec::new();
        let reason = loop {
            tokio::select! {
                biased;
                request = control.recv() => match request {
                    Some(Control::Reload) => d.start_reload(),
                    Some(Control::Stop(why)) => break why,
                    None => break "the controlling handle was dropped",
                },
                next = d.source.next(&mut batch) => {
                    let scan_due = match next {
                        Ok(due) => due,
                        Err(e) => {
                            d.health.source_failed(&e.to_string());
                            self.shutdown().await;
                            return Err(anyhow::Error::new(e).context("reading process events"));
                        }
                    };
                    d.handle_events(&mut batch);
                    if scan_due {
                        d.start_scan("poll");
                    }
                }
                Some(done) = d.adoptions.join_next() => match done {
                    Ok(adoption) => d.adopted(adoption),
                    Err(e) => tracing::error!("adoption task failed: {e}"),
                },
                Some((id, status)) = exits_rx.recv() => d.exited(id, status),
                Some(due) = due_rx.recv() => d.due(due),
                found = async { (&mut d.scanning.as_mut().expect("guarded").0).await }, if d.scanning.is_some() => {
                    let (_, trigger) = d.scanning.take().expect("guarded");
                    match found {
                        Ok(result) => d.scanned(trigger, result),
                        Err(e) => tracing::error!("scan task failed: {e}"),
                    }
                }
                loaded = async { d.reloading.as_mut().expect("guarded").await }, if d.reloading.is_some() => {
                    d.reloading = None;
                    match loaded {
                        Ok(result) => d.reloaded(result),
                        Err(e) => tracing::error!("reload task failed: {e}"),
                    }
                    if std::mem::take(&mut d.reload_again) {
                        d.start_reload();
                    }
                }
                Some(done) = d.finishing.join_next() => match done {
                    Ok(finished) => d.finished(finished),
                    Err(e) => tracing::error!("finishing task failed: {e}"),
                },
                Some(done) = d.updating.join_next() => match done {
                    Ok((id, job_id, outcomes)) => d.updated(id, &job_id, outcomes),
                    Err(e) => tracing::error!("limit update task failed: {e}"),
                },
                _ = flush.tick(), if d.config.state.enabled => d.flush_state(),
            }
        };
        tracing::info!("Received signal {reason}, shutting down...");
        self.shutdown().await;
        tracing::info!("Service stopped gracefully");
        Ok(())
    }
}

impl Daemon {
    /// Tell systemd about a state change (`Type=notify`), when asked to.
    fn notify(&self, states: &[sd_notify::NotifyState]) {
        if self.systemd_notify
            && let Err(e) = sd_notify::notify(states)
        {
            tracing::warn!("notifying systemd: {e}");
        }
    }

    fn emit(&self, event: WatchEvent) {
        if let Some(sink) = &self.sink
            && !sink.send(event)
        {
            self.metrics.event_dropped();
        }
    }

    fn handle_events(&mut self, batch: &mut Vec<SourceEvent>) {
        let source = self.source.name();
        self.metrics.events(source, batch.len() as u64);
        let mut lost = 0;
        for event in batch.drain(..) {
            match event {
                SourceEvent::Exec { pid, time_ns } => self.consider(pid, time_ns),
                SourceEvent::Exit { pid, status } => {
                    if let Some(t) = self.awaiting_status.remove(&pid) {
                        self.finish_job(t, Some(status));
                    } else if self.tracked.contains_key(&pid) {
                        self.statuses.insert(pid, status);
                    }
                }
                SourceEvent::Lost { count } => lost += count,
            }
        }
        // Kernel-side drops (eBPF ring buffer full) are a running total.
        let dropped = self.source.drops();
        let kernel = dropped.saturating_sub(self.kernel_drops);
        self.kernel_drops = dropped;
        self.metrics.kernel_drops(kernel);
        lost += kernel;
        if lost > 0 {
            tracing::warn!("{lost} process event(s) lost; reconciling with a /proc scan");
            self.metrics.lost(source, lost);
            self.health.events_lost(lost);
            self.emit(WatchEvent::EventsLost {
                source: source.to_string(),
                count: lost,
            });
            self.start_scan("loss");
        }
    }

    /// Is this process already governed, being adopted, waiting or rejected?
    fn known(&self, id: ProcessId) -> bool {
        self.adopting.contains(&id.pid)
            || self.tracked.get(&id.pid).is_some_and(|t| t.id == id)
            || self.pending.get(&id.pid) == Some(&id)
            || self.rejected.get(&id.pid) == Some(&id)
    }

    /// An exec: adopt it if it is a target we do not govern yet.
    fn consider(&mut self, pid: u32, exec_ns: Option<u64>) {
        if self.adopting.contains(&pid) {
            return;
        }
        let Some(candidate) = scan::check(pid, &self.rules.targets) else {
            return;
        };
        if self.known(candidate.info.id) || !self.governable(&candidate) {
            return;
        }
        self.schedule(candidate, exec_ns);
    }

    /// ffrtmp never governs itself, its children, or a process already in
    /// an ffrtmp job (such as the child of `ffrtmp run`).
    fn governable(&self, candidate: &Candidate) -> bool {
        let pid = candidate.info.id.pid;
        if scan::is_self_or_descendant(&candidate.info) {
            return false;
        }
        if self.governor.in_job_cgroup(pid) {
            tracing::debug!("PID {pid} is already in an ffrtmp job cgroup; leaving it there");
            return false;
        }
        true
    }

    /// Adopt now, or when the process has run for its `min_runtime`.
    fn schedule(&mut self, candidate: Candidate, exec_ns: Option<u64>) {
        let min = self.rules.min_runtime_for(&candidate.command);
        let age = candidate.info.id.age();
        if age < min {
            let wait = min - age;
            tracing::debug!(
                "PID {} ({}): adopting in {wait:?}, when it has run for min_runtime {min:?}",
                candidate.info.id.pid,
                candidate.command
            );
            self.pending.insert(candidate.info.id.pid, candidate.info.id);
            self.later(
                wait,
                Due {
                    candidate,
                    attempt: 0,
                    exec_ns: None,
                },
            );
            return;
        }
        self.adopt(candidate, 0, exec_ns);
    }

    /// One timer task per waiting process: free while nothing happens.
    fn later(&self, wait: Duration, due: Due) {
        let tx = self.due_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = tx.send(due);
        });
    }

    fn due(&mut self, due: Due) {
        let id = due.candidate.info.id;
        if due.attempt == 0 {
            if self.pending.get(&id.pid) != Some(&id) {
                return;
            }
            self.pending.remove(&id.pid);
        } else {
            self.adopting.remove(&id.pid);
        }
        // Still the same process, still running?
        match ProcessInfo::read(id.pid) {
            Ok(now) if now.id == id && !now.is_zombie() => self.adopt(due.candidate, due.attempt, due.exec_ns),
            _ => tracing::info!(
                "PID {} exited before it was adopted ({})",
                id.pid,
                due.candidate.command
            ),
        }
    }

    fn adopt(&mut self, candidate: Candidate, attempt: u32, exec_ns: Option<u64>) {
        let pid = candidate.info.id.pid;
        self.adopting.insert(pid);
        let job_id = job_id_for(&candidate.command, pid);
        let governor = Arc::clone(&self.governor);
        let rules = Arc::clone(&self.rules);
        self.adoptions.spawn_blocking(move || {
            let outcome = adopt::adopt(&governor, &rules, &candidate, &job_id, attempt == 0);
            Adoption {
                limits: rules.limits_for(&candidate.command).clone(),
                candidate,
                job_id,
                attempt,
                exec_ns,
                outcome,
            }
        });
    }

    fn adopted(&mut self, adoption: Adoption) {
        let Adoption {
            candidate,
            job_id,
            attempt,
            exec_ns,
            limits,
            outcome,
        } = adoption;
        let id = candidate.info.id;
        self.adopting.remove(&id.pid);
        match outcome {
            Adopted::Governed { cgroup, pidfd } => {
                // exec (the kernel's timestamp) → limits in place.
                let latency = exec_ns.map(|at| Duration::from_nanos(monotonic_ns().saturating_sub(at)));
                self.metrics.adopted(&candidate.command, latency);
                self.health.attach_ok();
                self.log_failed_limits(id.pid, cgroup.outcomes());
                tracing::info!("✓ Attached to PID {} (job: {job_id})", id.pid);
                self.emit(WatchEvent::Attached {
                    job_id: job_id.to_string(),
                    pid: id.pid,
                    start_time: id.start_time,
                    command: candidate.command.clone(),
                    reattached: false,
                    limits: cgroup.outcomes().to_vec(),
                });
                self.track(
                    Tracked {
                        id,
                        job_id,
                        command: candidate.command,
                        cgroup,
                        attached: SystemTime::now(),
                        limits,
                    },
                    pidfd,
                );
                // A reload while it was being adopted: catch up now.
                self.update_job(id.pid);
            }
            Adopted::Filtered(rejected) => {
                tracing::info!("PID {} ({}) not governed: {rejected}", id.pid, candidate.command);
                self.metrics.filtered(&candidate.command, rejected.filter);
                self.emit(WatchEvent::Filtered {
                    pid: id.pid,
                    command: candidate.command,
                    filter: rejected.filter.to_string(),
                    detail: rejected.detail,
                });
                self.rejected.insert(id.pid, id);
            }
            Adopted::Gone => {
                tracing::info!("PID {} exited before it was adopted ({})", id.pid, candidate.command);
            }
            Adopted::Failed { error, transient } => {
                let retry = transient && attempt < self.config.retry.max_attempts;
                // Counted once as failed, or as a retry when one follows.
                self.metrics.adoption_failed(&candidate.command, retry);
                self.health.attach_failed(&format!("{error:#}"));
                let retry_in = retry.then(|| backoff(attempt));
                match retry_in {
                    Some(wait) => {
                        tracing::warn!(
                            "could not attach to PID {} ({}): {error:#}; retrying in {wait:?} (attempt {} of {})",
                            id.pid,
                            candidate.command,
                            attempt + 2,
                            self.config.retry.max_attempts + 1
                        );
                    }
                    None => tracing::warn!("could not attach to PID {} ({}): {error:#}", id.pid, candidate.command),
                }
                self.emit(WatchEvent::AttachFailed {
                    pid: id.pid,
                    command: candidate.command.clone(),
                    error: format!("{error:#}"),
                    retry_in_ms: retry_in.map(|d| d.as_millis() as u64),
                });
                if let Some(wait) = retry_in {
                    // Held in `adopting` until the retry: never adopted twice.
                    self.adopting.insert(id.pid);
                    self.later(
                        wait,
                        Due {
                            candidate,
                            attempt: attempt + 1,
                            exec_ns,
                        },
                    );
                }
            }
        }
    }

    fn log_failed_limits(&self, pid: u32, outcomes: &[LimitOutcome]) {
        for o in outcomes.iter().filter(|o| !o.applied()) {
            tracing::warn!(
                "PID {pid}: {} not applied: {}",
                o.limit,
                o.error.as_deref().unwrap_or("")
            );
            self.metrics.limit_failed(&o.limit.to_string());
        }
    }

    /// Start governing: exit watcher, kernel exit reports, metrics, state.
    fn track(&mut self, tracked: Tracked, pidfd: PidFd) {
        let id = tracked.id;
        self.source.govern(id.pid);
        self.watch_exit(id, pidfd);
        self.metrics
            .job_started(tracked.job_id.as_str(), &tracked.command, tracked.cgroup.usage_reader());
        self.tracked.insert(id.pid, tracked);
        self.metrics.set_governed(self.tracked.len());
        self.state_dirty = true;
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

    /// The exit watcher saw `id` exit; or, for a process already waiting
    /// for its status, the wait is over.
    fn exited(&mut self, id: ProcessId, pidfd_status: Option<i32>) {
        if self.awaiting_status.get(&id.pid).is_some_and(|t| t.id == id) {
            let t = self.awaiting_status.remove(&id.pid).expect("just seen");
            self.finish_job(t, None);
            return;
        }
        let Some(t) = self.tracked.remove(&id.pid).filter(|t| t.id == id) else {
            return;
        };
        self.metrics.set_governed(self.tracked.len());
        self.state_dirty = true;
        // The source's status (eBPF: computed like wait(2)) first, then what
        // the pidfd or the zombie's /proc/<pid>/stat told the exit watcher.
        let status = self.statuses.remove(&id.pid).or(pidfd_status);
        if status.is_none() && self.source.reports_exit_status() {
            // Before 6.15 a pidfd cannot tell the status of a reaped process,
            // and the proc connector sends its exit event only after the
            // pidfd wakes (v6.1 kernel/exit.c do_exit(): exit_notify(), then
            // proc_exit_connector()): give that event a moment to arrive.
            self.awaiting_status.insert(id.pid, t);
            let tx = self.exits_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(EXIT_STATUS_GRACE).await;
                let _ = tx.send((id, None));
            });
            return;
        }
        self.finish_job(t, status);
    }

    /// Usage, removal and the summary line, on the blocking pool.
    fn finish_job(&mut self, t: Tracked, status: Option<i32>) {
        self.finishing
            .spawn_blocking(move || adopt::finish(t.id, t.job_id, t.command, t.cgroup, t.attached, status));
    }

    fn finished(&mut self, f: Finished) {
        tracing::info!(
            "Process {} exited (job {}, duration: {:.2}s)",
            f.id.pid,
            f.job_id,
            f.result.processing_seconds
        );
        tracing::info!("{}", f.result.summary_line());
        tracing::info!("⊗ Detached from PID {} (job: {})", f.id.pid, f.job_id);
        self.metrics.job_finished(f.job_id.as_str());
        self.metrics.job_ended(
            &f.command,
            f.result.platform_sla_reason.as_str(),
            &metrics::exit_label(f.ending),
        );
        self.emit(WatchEvent::Detached {
            command: f.command,
            result: Box::new(f.result),
        });
    }

    fn start_scan(&mut self, trigger: &'static str) {
        if self.scanning.is_some() {
            self.rescan = Some(trigger);
            return;
        }
        self.metrics.reconcile_scan(trigger);
        let targets = self.rules.targets.clone();
        self.scanning = Some((tokio::task::spawn_blocking(move || scan::scan(&targets)), trigger));
    }

    fn scanned(&mut self, trigger: &'static str, result: std::io::Result<Vec<Candidate>>) {
        let candidates = match result {
            Ok(c) => {
                self.health.scan_ok();
                c
            }
            Err(e) => {
                tracing::warn!("reconcile scan ({trigger}) failed: {e}");
                self.health.scan_failed(&e.to_string());
                self.metrics.scan_failed();
                Vec::new()
            }
        };
        // Forget rejections of processes that are gone.
        let present: HashSet<ProcessId> = candidates.iter().map(|c| c.info.id).collect();
        self.rejected.retain(|_, id| present.contains(id));
        let new: Vec<Candidate> = candidates
            .into_iter()
            .filter(|c| !self.known(c.info.id) && self.governable(c))
            .collect();
        if !new.is_empty() {
            tracing::info!("Discovered {} new process(es)", new.len());
        }
        self.emit(WatchEvent::Reconciled {
            trigger: trigger.to_string(),
            found: new.len(),
        });
        for c in new {
            self.schedule(c, None);
        }
        if let Some(trigger) = self.rescan.take() {
            self.start_scan(trigger);
        }
    }

    /// Take over the jobs an earlier daemon left under the root.
    async fn take_over(&mut self) {
        let state = self.load_state();
        let governor = Arc::clone(&self.governor);
        let rules = Arc::clone(&self.rules);
        let takeover = tokio::task::spawn_blocking(move || adopt::take_over(&governor, &rules, &state)).await;
        let Takeover {
            reattached,
            removed,
            failed,
        } = match takeover {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("taking over earlier jobs failed: {e}");
                return;
            }
        };
        for job in removed {
            tracing::info!("removed the empty job cgroup {job} of an earlier run");
        }
        for (job, why) in failed {
            tracing::warn!("could not take over job {job}: {why}");
        }
        self.metrics.reattached(reattached.len() as u64);
        for r in reattached {
            self.reattached(r);
        }
    }

    fn reattached(&mut self, r: Reattached) {
        tracing::info!("↻ Re-attached to PID {} (job: {}, {})", r.id.pid, r.job_id, r.command);
        self.log_failed_limits(r.id.pid, &r.outcomes);
        self.emit(WatchEvent::Attached {
            job_id: r.job_id.to_string(),
            pid: r.id.pid,
            start_time: r.id.start_time,
            command: r.command.clone(),
            reattached: true,
            limits: r.outcomes,
        });
        let tracked = Tracked {
            id: r.id,
            job_id: r.job_id,
            command: r.command,
            cgroup: r.cgroup,
            attached: r.attached,
            limits: r.limits,
        };
        self.track(tracked, r.pidfd);
    }

    fn load_state(&self) -> Vec<StateJob> {
        if !self.config.state.enabled {
            return Vec::new();
        }
        match StateFile::load(&self.config.state.path) {
            Ok(state) => state.jobs,
            Err(e) => {
                tracing::warn!("{e}; relying on the cgroup tree alone");
                Vec::new()
            }
        }
    }

    fn state_now(&self) -> StateFile {
        let mut jobs: Vec<StateJob> = self
            .tracked
            .values()
            .map(|t| StateJob {
                job_id: t.job_id.to_string(),
                pid: t.id.pid,
                start_time: t.id.start_time,
                command: t.command.clone(),
                attached_unix_ms: unix_ms(t.attached),
            })
            .collect();
        jobs.sort_by_key(|j| j.pid);
        StateFile {
            version: STATE_VERSION,
            jobs,
        }
    }

    /// Write the state file on the blocking pool if it changed (one write
    /// at a time; a change meanwhile is written at the next tick).
    fn flush_state(&mut self) {
        if !self.state_dirty || self.saving.as_ref().is_some_and(|s| !s.is_finished()) {
            return;
        }
        self.state_dirty = false;
        let state = self.state_now();
        let path = self.config.state.path.clone();
        self.saving = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = state.save(&path) {
                tracing::warn!("{e}");
            }
        }));
    }

    fn start_reload(&mut self) {
        let Some(file) = self.config.config_file.clone() else {
            tracing::info!("SIGHUP: no --watch-config file to re-read; nothing to reload");
            return;
        };
        if self.reloading.is_some() {
            // The file may have changed again since that read began.
            self.reload_again = true;
            return;
        }
        tracing::info!("Reloading configuration from {}", file.display());
        let mut states = vec![sd_notify::NotifyState::Reloading];
        states.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        self.notify(&states);
        let overrides = self.config.overrides.clone();
        self.reloading = Some(tokio::task::spawn_blocking(move || {
            super::config::load(Some(&file), &overrides).map_err(anyhow::Error::new)
        }));
    }

    fn reloaded(&mut self, result: anyhow::Result<(WatchConfig, Vec<String>)>) {
        self.notify(&[sd_notify::NotifyState::Ready]);
        let (new, warnings) = match result {
            Ok(loaded) => loaded,
            Err(e) => {
                let error = format!("{e:#}");
                tracing::error!("configuration reload failed, keeping the running configuration: {error}");
                self.metrics.reload(false);
                self.emit(WatchEvent::Reloaded {
                    ok: false,
                    error: Some(error),
                });
                return;
            }
        };
        for w in warnings {
            tracing::warn!("{w}");
        }
        self.warn_restart_only(&new);
        let rules = Arc::new(new.rules.clone());
        if rules.targets != self.rules.targets {
            let names: Vec<&str> = rules.targets.names().iter().map(String::as_str).collect();
            if let Err(e) = self.source.set_targets(&names) {
                tracing::error!("updating the kernel's target list: {e}; new targets are found by scans only");
            }
            tracing::info!("Target commands: {:?}", rules.targets.names());
        }
        if new.scan_interval != self.config.scan_interval {
            self.source.set_scan_interval(new.scan_interval);
        }
        self.rules = rules;
        self.config.rules = new.rules;
        self.config.scan_interval = new.scan_interval;
        self.config.retry = new.retry;
        self.update_running_jobs();
        // Filters may have changed: decide again about every running target.
        self.rejected.clear();
        self.start_scan("reload");
        self.metrics.reload(true);
        self.emit(WatchEvent::Reloaded { ok: true, error: None });
        tracing::info!("Configuration reloaded");
    }

    /// Settings that only take effect at start.
    fn warn_restart_only(&self, new: &WatchConfig) {
        let old = &self.config;
        let changed = [
            ("cgroup_root", old.cgroup_root != new.cgroup_root),
            ("backend", old.backend != new.backend),
            ("state", old.state != new.state),
            ("metrics.listen", old.metrics_listen != new.metrics_listen),
        ];
        for (key, _) in changed.iter().filter(|(_, c)| *c) {
            tracing::warn!("{key} changed in the configuration; it takes effect at the next start");
        }
    }

    /// Apply each running job's new limits (limits are live-adjustable).
    fn update_running_jobs(&mut self) {
        let pids: Vec<u32> = self.tracked.keys().copied().collect();
        for pid in pids {
            self.update_job(pid);
        }
    }

    /// Bring one job's limits to the current rules, if they differ.
    fn update_job(&mut self, pid: u32) {
        let Some(t) = self.tracked.get_mut(&pid) else {
            return;
        };
        let new = self.rules.limits_for(&t.command).clone();
        if new == t.limits {
            return;
        }
        let old = std::mem::replace(&mut t.limits, new.clone());
        let writer = t.cgroup.limit_writer();
        let procs = t.cgroup.procs_files();
        let (id, job_id) = (t.id, t.job_id.clone());
        self.updating.spawn_blocking(move || {
            let pids = procs
                .first()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|s| {
                    s.split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .collect::<Vec<u32>>()
                })
                .unwrap_or_default();
            let outcomes = adopt::update_limits(&writer, id.pid, &pids, Some(&old), &new);
            (id, job_id, outcomes)
        });
    }

    fn updated(&mut self, id: ProcessId, job_id: &JobId, outcomes: Vec<LimitOutcome>) {
        let applied: Vec<String> = outcomes
            .iter()
            .filter(|o| o.applied())
            .map(|o| format!("{}={}", o.limit, o.value))
            .collect();
        if !applied.is_empty() {
            tracing::info!("PID {} (job: {job_id}): limits updated: {}", id.pid, applied.join(", "));
        }
        self.log_failed_limits(id.pid, &outcomes);
        self.emit(WatchEvent::LimitsUpdated {
            job_id: job_id.to_string(),
            pid: id.pid,
            limits: outcomes,
        });
    }

    async fn shutdown(mut self) {
        self.notify(&[sd_notify::NotifyState::Stopping]);
        // Let adoptions in flight complete so no half-made cgroup is left.
        while let Some(done) = self.adoptions.join_next().await {
            if let Ok(adoption) = done {
                self.adopted(adoption);
            }
        }
        for (_, t) in std::mem::take(&mut self.awaiting_status) {
            self.finish_job(t, None);
        }
        while let Some(done) = self.finishing.join_next().await {
            if let Ok(finished) = done {
                self.finished(finished);
            }
        }
        while self.updating.join_next().await.is_some() {}
        if self.config.state.enabled {
            if let Some(saving) = self.saving.take() {
                let _ = saving.await;
            }
            // Synchronously: the next start reads exactly this.
            let state = self.state_now();
            let path = self.config.state.path.clone();
            match tokio::task::spawn_blocking(move || state.save(&path)).await {
                Ok(Ok(())) => tracing::info!("State saved to {}", self.config.state.path.display()),
                Ok(Err(e)) => tracing::warn!("{e}"),
                Err(e) => tracing::warn!("saving the state failed: {e}"),
            }
        }
        for t in self.tracked.values() {
            tracing::info!("⊗ Detached from PID {} (job: {})", t.id.pid, t.job_id);
        }
        self.emit(WatchEvent::Stopped {
            governed: self.tracked.len(),
        });
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock of the kernel's event
/// timestamps).
fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_doubles_and_is_bounded() {
        let waits: Vec<u64> = (0..10).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(&waits[..6], &[100, 200, 400, 800, 1600, 3200]);
        assert!(waits[6..].iter().all(|&w| w == 5000), "{waits:?}");
    }

    #[test]
    fn a_full_event_queue_drops_and_counts_instead_of_waiting() {
        let (sink, mut rx) = EventSink::new(2);
        let queued: Vec<bool> = (0..5)
            .map(|governed| sink.send(WatchEvent::Stopped { governed }))
            .collect();
        assert_eq!(queued, [true, true, false, false, false]);
        assert_eq!(sink.dropped(), 3);
        assert_eq!(rx.try_recv().unwrap(), WatchEvent::Stopped { governed: 0 });
        assert_eq!(rx.try_recv().unwrap(), WatchEvent::Stopped { governed: 1 });
        assert!(rx.try_recv().is_err());
    }
}
