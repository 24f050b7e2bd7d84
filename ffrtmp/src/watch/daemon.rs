//! The watch loop: the I/O shell around [`Tracker`], which makes every
//! decision. One task owns the tracker; blocking calls (reading `/proc`,
//! writing cgroup files, name-service lookups, the state file) run on
//! tokio's blocking pool through [`super::adopt`], so events keep flowing
//! while they happen — all but the adoption of an eBPF exec without filters
//! or network limits, which runs on the loop to reach the move sooner
//! (docs/architecture.md, "The hot path").

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::adopt::{self, Finished, Governed, Takeover};
use super::event::{AdoptionLatency, WatchEvent};
use super::follow;
use super::health::Health;
use super::metrics::{self, Metrics};
use super::source::Source;
use super::state::{STATE_VERSION, StateFile, StateJob, unix_ms};
use super::tracker::{self, Action, Adopted, Checked, Job, Note, ScanResult, Timer, Tracker};
use super::{WatchConfig, WatchError};
use crate::cgroup::dynmods::{self, Ensured, Outcome};
use crate::cgroup::{Governor, JobCgroup, JobId, LimitOutcome, Limits};
use crate::events::scan::Candidate;
use crate::events::source::SourceEvent;
use crate::lifecycle::{self, MoveSpan};
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

/// The result of a piece of blocking work, handed back to the loop.
#[expect(
    clippy::large_enum_variant,
    reason = "one value per finished task, moved once out of the JoinSet"
)]
enum Done {
    Checked {
        pid: u32,
        start_time: Option<u64>,
        exec_ns: Option<u64>,
        attempt: u32,
        result: Checked,
    },
    Adopted(Box<Adoption>),
    /// A read that could adopt what it found.
    Fused {
        pid: u32,
        start_time: Option<u64>,
        exec_ns: Option<u64>,
        result: Box<tracker::FusedCheck<Governed>>,
    },
    Scanned {
        trigger: &'static str,
        result: Result<ScanResult, String>,
    },
    Finished(Box<Finished>),
    Updated {
        id: ProcessId,
        job_id: JobId,
        outcomes: Vec<LimitOutcome>,
    },
    Reloaded(Result<(WatchConfig, Vec<String>), super::config::ConfigError>),
    Saved(Result<(), String>),
    /// A check of favordynmods (and, when it is kept on, its re-application).
    Dynmods(Result<Ensured, String>),
    /// Spares made for the jobs that took one (awaited at stop like all
    /// work, so no spare is made after the stop removed them).
    SparesMade,
}

/// One adoption attempt and what it came to.
struct Adoption {
    candidate: Candidate,
    job_id: JobId,
    limits: Limits,
    attempt: u32,
    outcome: Adopted<Governed>,
}

/// What the daemon's own async tasks report: a timer fired, a pidfd woke.
enum Wake {
    Timer(Timer),
    Exited(ProcessId, Option<i32>),
    /// The configuration file's directory saw a change of the file.
    Followed(follow::Notice),
}

/// The I/O shell around the [`Tracker`]: it turns kernel events and the
/// results of blocking work into calls of the tracker, and carries out the
/// actions the tracker returns. It owns no decisions of its own beyond
/// "one scan, one reload, one state write at a time".
struct Daemon {
    config: WatchConfig,
    governor: Arc<Governor>,
    source: Source,
    tracker: Tracker<JobCgroup>,
    /// pidfds of governed processes until [`Action::Watch`] takes them.
    pidfds: HashMap<ProcessId, PidFd>,
    /// When each adoption's move ran, from its end until it is announced.
    moves: HashMap<ProcessId, MoveSpan>,
    /// Every piece of blocking work in flight (reads, adoptions, cgroup
    /// writes, scans, reloads, state writes).
    work: JoinSet<Done>,
    wake_tx: mpsc::UnboundedSender<Wake>,
    scanning: bool,
    rescan: Option<&'static str>,
    reloading: bool,
    /// A reload was asked for while one was in flight.
    reload_again: bool,
    saving: bool,
    state_dirty: bool,
    /// Stopping: no new adoptions, reads or timers; work in flight finishes.
    stopping: bool,
    /// argv[0] of the exec event being handled, when it carried one
    /// (eBPF): its read takes it instead of reading `/proc/<pid>/cmdline`.
    exec_argv0: Option<(u32, String)>,
    /// The source's kernel-side drop count when last looked at.
    kernel_drops: u64,
    /// The source's count of datagrams from other senders, when last looked at.
    foreign: u64,
    metrics: Metrics,
    health: Health,
    sink: Option<EventSink>,
    systemd_notify: bool,
    dynmods: DynmodsWatch,
    /// Follows the configuration file (stops when dropped).
    follower: Option<follow::Follower>,
    /// Held while the daemon runs: one daemon per cgroup root.
    _root_lock: super::lock::RootLock,
}

/// The leaf a delegated daemon moves into.
const DAEMON_LEAF: &str = "daemon";

/// How often favordynmods is looked at again (and, with `--favor-dynmods`,
/// turned on again when something turned it off); SIGHUP looks at once.
pub const DYNMODS_RECHECK: Duration = Duration::from_secs(60);

/// The flag that turns favordynmods on, as the log names it.
const FAVOR_DYNMODS_FLAG: &str = "--favor-dynmods";

/// What the daemon knows of favordynmods between checks.
#[derive(Debug, Default)]
struct DynmodsWatch {
    /// The state the last check found (after any remount).
    last: Option<dynmods::State>,
    /// A check is running on the blocking pool.
    checking: bool,
    /// Another check was asked for meanwhile.
    again: bool,
    /// The last failure logged, so that a lasting one is logged once.
    last_error: Option<String>,
}

/// Run the daemon until SIGINT or SIGTERM; SIGHUP reloads the configuration.
/// Governed processes are left in their cgroups with their limits and never
/// signalled. Events go to `events` when given (`--events`).
pub async fn run(config: WatchConfig) -> Result<(), WatchError> {
    run_with(super::WatchService::new(config).without_events(), |_| {}).await
}

/// [`run`] for a prepared service; `with_handle` sees the running service
/// first (e.g. to take its events).
pub async fn run_with(
    service: super::WatchService,
    with_handle: impl FnOnce(&mut super::WatchHandle),
) -> Result<(), WatchError> {
    use tokio::signal::unix::{SignalKind, signal};
    let handler = |kind, signal_name| {
        signal(kind).map_err(|source| WatchError::Signal {
            signal: signal_name,
            source,
        })
    };
    // Before anything is logged: a signal sent as soon as the daemon looks
    // ready must stop it cleanly, not kill it.
    let mut sigint = handler(SignalKind::interrupt(), "SIGINT")?;
    let mut sigterm = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut sighup = handler(SignalKind::hangup(), "SIGHUP")?;
    let mut handle = service.start().await?;
    with_handle(&mut handle);
    let control = handle.controller();
    tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                // As Go prints the signal (`Received signal interrupt`).
                _ = sigint.recv() => Control::Stop("interrupt"),
                _ = sigterm.recv() => Control::Stop("terminated"),
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
) -> Result<(), WatchError> {
    start(config, sink, StartOptions::default()).await?.run(control).await
}

/// How the daemon fits into the process that runs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// Tell systemd (`Type=notify`) when it is ready, reloading, stopping.
    pub systemd_notify: bool,
    /// Running in a delegated cgroup (`Delegate=yes`): live in its leaf
    /// `daemon` when systemd started it there (see [`crate::cgroup::delegated_place`]).
    pub delegated: bool,
}

/// The old daemon's start-up lines, and where jobs go with which limits.
fn log_what_is_governed(config: &WatchConfig, governor: &Governor, backend: &str) {
    if backend == "poll" {
        tracing::info!("Scan interval: {}", humantime::format_duration(config.scan_interval));
    } else {
        tracing::info!(
            "Scan interval: none ({backend} reports every exec; /proc is scanned at start, after a loss and on reload)"
        );
    }
    tracing::info!("Target commands: {}", go_list(config.rules.targets.names()));
    let dirs: Vec<String> = governor.root_dirs().iter().map(|d| d.display().to_string()).collect();
    tracing::info!("Job cgroups: auto-<command>-<pid> under {}", dirs.join(", "));
    tracing::info!("Limits: {}", config.rules.default_limits.describe());
    for (command, rule) in &config.rules.commands {
        tracing::info!("Limits for {command}: {}", rule.limits.describe());
    }
    for command in config.rules.targets.names() {
        let wait = config.rules.min_runtime_for(command);
        if !wait.is_zero() {
            tracing::info!(
                "{command} is adopted once it has run for {} (min_runtime)",
                humantime::format_duration(wait)
            );
        }
    }
}

/// A list as Go's `%v` prints a slice: `[ffmpeg gst-launch-1.0]`.
fn go_list(names: &[String]) -> String {
    format!("[{}]", names.join(" "))
}

/// Look at favordynmods once at start and log what it means; with
/// `keep_on` (`--favor-dynmods`), turn it on, or fail the start with the
/// reason it cannot be. What is true afterwards, when it could be read.
async fn start_dynmods(keep_on: bool) -> Result<Option<dynmods::Detected>, WatchError> {
    let ensured = match tokio::task::spawn_blocking(move || dynmods::ensure(keep_on)).await? {
        Ok(ensured) => ensured,
        Err(e) if keep_on => return Err(WatchError::FavorDynmods(e)),
        Err(e) => {
            tracing::warn!("favordynmods: {e}");
            return Ok(None);
        }
    };
    match &ensured.outcome {
        Outcome::Nothing => tracing::info!("{}", ensured.before.describe(FAVOR_DYNMODS_FLAG)),
        Outcome::Remounted { remount, after } if after.state() == dynmods::State::On => {
            tracing::info!(
                "favordynmods: turned on (remounted {remount}): moves into job cgroups no longer wait for an RCU grace period; every fork and exit on the host pays a little for it"
            );
            tracing::warn!("{}", dynmods::irreversibility_warning(&kernel_release()));
        }
        Outcome::Remounted { remount, .. } => {
            return Err(WatchError::FavorDynmods(format!(
                "remounted {remount}, but /proc/self/mountinfo does not show favordynmods"
            )));
        }
        Outcome::Failed { error, .. } => return Err(WatchError::FavorDynmods(error.clone())),
        Outcome::Refused(why) => return Err(WatchError::FavorDynmods(why.clone())),
    }
    Ok(Some(ensured.now().clone()))
}

/// `uname -r`.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "unknown".into(), |r| r.trim().to_owned())
}

/// A started daemon: subscribed to process events, earlier jobs taken over,
/// the catch-up scan under way. [`Started::run`] drives it.
pub struct Started {
    d: Daemon,
    wake_rx: mpsc::UnboundedReceiver<Wake>,
}

/// Start the daemon: everything that can fail at start fails here.
pub async fn start(config: WatchConfig, sink: Option<EventSink>, options: StartOptions) -> Result<Started, WatchError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(WatchError::NotRoot);
    }
    if config.state.enabled {
        StateFile::check_location(&config.state.path)?;
    }
    tracing::info!("Starting auto-attach service...");
    // Before any cgroup is touched: a refusal leaves nothing behind.
    let favordynmods = start_dynmods(config.favor_dynmods).await?;

    let leaf = options.delegated.then_some(DAEMON_LEAF);
    let root = config.cgroup_root.clone();
    // The root stays while the daemon runs: each adoption then makes one
    // directory per hierarchy, not two, on the way to the move.
    let governor = tokio::task::spawn_blocking(move || lifecycle::delegated_governor(root, leaf))
        .await??
        .keeping_spares();
    // One daemon per root. (By now a second daemon has only tidied garbage
    // and, delegated, entered its leaf: both harmless to the first.)
    let root_dir = governor.root_dirs().into_iter().next().unwrap_or_default();
    let root_lock = super::lock::lock_root(Path::new(super::lock::LOCK_DIR), &root_dir)?;
    let metrics = Metrics::new();
    if let Some(detected) = &favordynmods {
        metrics.set_favordynmods(detected.supported, detected.state() == dynmods::State::On);
    }
    let health = Health::new();
    let listener = match config.metrics_listen {
        Some(addr) => Some(super::http::bind(addr).await.map_err(WatchError::Listen)?),
        None => None,
    };

    // Subscribe first, then catch up: a target started in between is seen
    // by both and adopted once.
    let (source, why) = Source::open(config.backend, &config).map_err(WatchError::Source)?;
    tracing::info!("Event source: {} ({why})", source.name());
    metrics.set_backend(source.name());
    log_what_is_governed(&config, &governor, source.name());

    // Last, once nothing else at start can fail (a refusal leaves nothing
    // behind), and only by the daemon that holds the root.
    let governor = Arc::new(governor);
    let (spares_for, rules) = (Arc::clone(&governor), config.rules.clone());
    tokio::task::spawn_blocking(move || {
        for limits in std::iter::once(&rules.default_limits).chain(rules.commands.values().map(|c| &c.limits)) {
            spares_for.prepare_spares(limits);
        }
    })
    .await?;
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    let tracker = Tracker::new(
        Arc::new(config.rules.clone()),
        config.retry,
        source.reports_exit_status(),
    );
    let mut d = Daemon {
        config,
        governor,
        source,
        tracker,
        pidfds: HashMap::new(),
        moves: HashMap::new(),
        work: JoinSet::new(),
        wake_tx,
        scanning: false,
        rescan: None,
        reloading: false,
        reload_again: false,
        saving: false,
        state_dirty: false,
        stopping: false,
        exec_argv0: None,
        kernel_drops: 0,
        foreign: 0,
        metrics,
        health,
        sink,
        systemd_notify: options.systemd_notify,
        dynmods: DynmodsWatch {
            last: favordynmods.as_ref().map(dynmods::Detected::state),
            ..DynmodsWatch::default()
        },
        follower: None,
        _root_lock: root_lock,
    };
    d.follow_config_file();
    d.emit(WatchEvent::Started {
        backend: d.source.name().to_string(),
        reason: why,
        targets: d.tracker.rules().targets.names().to_vec(),
    });
    d.take_over().await;
    d.start_scan("startup");
    if let Some(listener) = listener {
        let addr = listener.local_addr().map_err(WatchError::Listen)?;
        tracing::info!("Serving /metrics and /healthz on http://{addr}");
        tokio::spawn(super::http::serve(listener, d.metrics.clone(), d.health.clone()));
    }
    d.notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("governing with {}", d.source.name())),
    ]);
    Ok(Started { d, wake_rx })
}

impl Started {
    /// Run until `control` says stop (or is dropped). Governed processes
    /// keep their cgroups and limits.
    pub async fn run(self, mut control: mpsc::Receiver<Control>) -> Result<(), WatchError> {
        let Started { d, mut wake_rx } = self;
        d.main_loop(&mut control, &mut wake_rx).await
    }
}

impl Daemon {
    /// The loop hands events to the tracker and work to the blocking pool;
    /// the only blocking I/O it does itself is the hot path (see [`act`]).
    ///
    /// [`act`]: Daemon::act
    async fn main_loop(
        mut self,
        control: &mut mpsc::Receiver<Control>,
        wake_rx: &mut mpsc::UnboundedReceiver<Wake>,
    ) -> Result<(), WatchError> {
        let mut flush = tokio::time::interval(self.config.state.flush_interval.max(Duration::from_millis(100)));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dynmods_tick = tokio::time::interval_at(tokio::time::Instant::now() + DYNMODS_RECHECK, DYNMODS_RECHECK);
        dynmods_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::new();
        let reason = loop {
            tokio::select! {
                biased;
                request = control.recv() => match request {
                    Some(Control::Reload) => {
                        self.start_reload();
                        self.check_dynmods();
                    }
                    Some(Control::Stop(why)) => break why,
                    None => break "the controlling handle was dropped",
                },
                Some(done) = self.work.join_next() => match done {
                    Ok(done) => self.done(done),
                    Err(e) => tracing::error!("a blocking task of the daemon failed: {e}"),
                },
                Some(wake) = wake_rx.recv() => self.wake(wake),
                next = self.source.next(&mut batch) => {
                    let scan_due = match next {
                        Ok(due) => due,
                        Err(e) => {
                            self.health.source_failed(&e.to_string());
                            self.shutdown().await;
                            return Err(WatchError::Events(e));
                        }
                    };
                    self.handle_events(&mut batch);
                    if scan_due {
                        self.start_scan("poll");
                    }
                }
                _ = flush.tick(), if self.config.state.enabled => self.flush_state(),
                _ = dynmods_tick.tick() => self.check_dynmods(),
            }
        };
        tracing::info!("Received signal {reason}, shutting down...");
        self.shutdown().await;
        tracing::info!("Service stopped gracefully");
        Ok(())
    }

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
            let actions = match event {
                SourceEvent::Exec {
                    pid,
                    start_time,
                    time_ns,
                    argv0,
                } => {
                    // For the read of this exec, if the tracker asks for one
                    // now (a retry later reads /proc/<pid>/cmdline).
                    self.exec_argv0 = argv0.map(|a| (pid, a));
                    self.tracker.exec(pid, start_time, time_ns)
                }
                SourceEvent::Exit {
                    pid,
                    start_time,
                    status,
                    time_ns,
                } => self.tracker.source_exit(pid, start_time, status, time_ns),
                SourceEvent::Lost { count } => {
                    lost += count;
                    Vec::new()
                }
            };
            self.act(actions);
            self.exec_argv0 = None;
        }
        // Kernel-side drops (eBPF ring buffer full) are a running total.
        let dropped = self.source.drops();
        let kernel = dropped.saturating_sub(self.kernel_drops);
        self.kernel_drops = dropped;
        self.metrics.kernel_drops(kernel);
        lost += kernel;
        let foreign = self.source.foreign();
        if foreign > self.foreign {
            tracing::warn!(
                "dropped {} proc connector datagram(s) that the kernel did not send ({foreign} so far)",
                foreign - self.foreign
            );
            self.metrics.foreign_datagrams(foreign - self.foreign);
            self.foreign = foreign;
        }
        if lost > 0 {
            tracing::warn!("{lost} process event(s) lost; reconciling with a /proc scan");
            self.metrics.lost(source, lost);
            self.health.events_lost(lost);
            self.emit(WatchEvent::EventsLost {
                source: source.to_string(),
                count: lost,
            });
            let actions = self.tracker.lost(adopt::monotonic_ns());
            self.act(actions);
        }
    }

    fn wake(&mut self, wake: Wake) {
        let actions = match wake {
            Wake::Timer(timer) => self.tracker.timer(timer),
            Wake::Exited(id, status) => self.tracker.pidfd_exit(id, status),
            Wake::Followed(notice) => {
                self.followed(notice);
                return;
            }
        };
        self.act(actions);
    }

    fn done(&mut self, done: Done) {
        let actions = match done {
            Done::Checked {
                pid,
                start_time,
                exec_ns,
                attempt,
                result,
            } => {
                log_skipped(&result);
                self.tracker.checked(pid, start_time, exec_ns, attempt, result)
            }
            Done::Adopted(adoption) => {
                let Adoption {
                    candidate,
                    job_id,
                    limits,
                    attempt,
                    outcome,
                } = *adoption;
                let outcome = self.keep_governed(candidate.info.id, outcome);
                self.tracker.adopted(candidate, job_id, limits, attempt, outcome)
            }
            Done::Fused {
                pid,
                start_time,
                exec_ns,
                result,
            } => {
                let result = match *result {
                    tracker::FusedCheck::Checked(result) => {
                        log_skipped(&result);
                        tracker::FusedCheck::Checked(result)
                    }
                    tracker::FusedCheck::Adopted {
                        found,
                        job_id,
                        limits,
                        outcome,
                    } => tracker::FusedCheck::Adopted {
                        outcome: self.keep_governed(found.id(), outcome),
                        found,
                        job_id,
                        limits,
                    },
                };
                self.tracker.fused_checked(pid, start_time, exec_ns, result)
            }
            Done::Scanned { trigger, result } => {
                self.scanning = false;
                let actions = self.tracker.scanned(trigger, result);
                if let Some(trigger) = self.rescan.take() {
                    self.start_scan(trigger);
                }
                actions
            }
            Done::Finished(f) => {
                self.finished(*f);
                Vec::new()
            }
            Done::Updated { id, job_id, outcomes } => {
                self.updated(id, &job_id, outcomes);
                Vec::new()
            }
            Done::Reloaded(result) => {
                self.reloading = false;
                let actions = self.reloaded(result);
                if std::mem::take(&mut self.reload_again) {
                    self.start_reload();
                }
                actions
            }
            Done::Saved(result) => {
                self.saving = false;
                if let Err(e) = result {
                    tracing::warn!("{e}");
                }
                Vec::new()
            }
            Done::SparesMade => Vec::new(),
            Done::Dynmods(result) => {
                self.dynmods.checking = false;
                self.dynmods_checked(result);
                if std::mem::take(&mut self.dynmods.again) {
                    self.check_dynmods();
                }
                Vec::new()
            }
        };
        self.act(actions);
    }

    /// Carry out what the tracker decided.
    fn act(&mut self, actions: Vec<Action<JobCgroup>>) {
        let mut on_loop_done = Vec::new();
        for action in actions {
            match action {
                Action::Note(note) => self.note(note),
                Action::Watch(id) => self.watch(id),
                Action::Finish { id, job, status } => self.finish(id, job, status),
                Action::UpdateLimits { id, old, new } => self.update_limits(id, old, new),
                // While stopping, nothing new starts.
                _ if self.stopping => {}
                Action::Check {
                    pid,
                    start_time,
                    exec_ns,
                    attempt,
                    adopt: false,
                } => {
                    let (targets, governor) = (self.tracker.rules().targets.clone(), Arc::clone(&self.governor));
                    self.work.spawn_blocking(move || Done::Checked {
                        pid,
                        start_time,
                        exec_ns,
                        attempt,
                        result: adopt::inspect(pid, &targets, &governor),
                    });
                }
                Action::Check {
                    pid,
                    start_time,
                    exec_ns,
                    adopt: true,
                    ..
                } => {
                    let (rules, governor) = (Arc::clone(self.tracker.rules()), Arc::clone(&self.governor));
                    let argv0 = self.exec_argv0.take().filter(|(p, _)| *p == pid).map(|(_, a)| a);
                    // Here unless a filter may look users up (`getent` can
                    // take seconds) or a limit is a network one (rtnetlink, and
                    // loading eBPF programs the first time): a hand-off to a
                    // blocking thread costs a wake-up (~80 µs on a VM) on the
                    // path to the move, and how soon the move is written
                    // decides how many grace periods it waits
                    // (docs/architecture.md, "The hot path").
                    let fused = move |result| Done::Fused {
                        pid,
                        start_time,
                        exec_ns,
                        result: Box::new(result),
                    };
                    // A job may have taken a spare: replace it, off the path.
                    let adopted =
                        |result: &tracker::FusedCheck<Governed>| matches!(result, tracker::FusedCheck::Adopted { .. });
                    if rules.adopts_on_loop() {
                        let read = std::panic::AssertUnwindSafe(|| {
                            adopt::inspect_and_adopt(&governor, &rules, pid, start_time, argv0.as_deref())
                        });
                        let result = std::panic::catch_unwind(read).unwrap_or_else(|panic| {
                            // As a panic on the blocking pool is logged and
                            // survived, so is one here: the read failed.
                            let error = format!("reading and adopting it panicked: {}", panic_message(&panic));
                            tracker::FusedCheck::Checked(tracker::Checked::Failed { error })
                        });
                        if adopted(&result) {
                            self.work.spawn_blocking(move || {
                                governor.refill_spares();
                                Done::SparesMade
                            });
                        }
                        on_loop_done.push(fused(result));
                    } else {
                        self.work.spawn_blocking(move || {
                            let result = adopt::inspect_and_adopt(&governor, &rules, pid, start_time, argv0.as_deref());
                            if adopted(&result) {
                                governor.refill_spares();
                            }
                            fused(result)
                        });
                    }
                }
                Action::Adopt {
                    candidate,
                    job_id,
                    limits,
                    attempt,
                    announce,
                } => {
                    let (rules, governor) = (Arc::clone(self.tracker.rules()), Arc::clone(&self.governor));
                    self.work.spawn_blocking(move || {
                        let outcome = adopt::adopt(&governor, &rules, &candidate, &job_id, &limits, announce);
                        Done::Adopted(Box::new(Adoption {
                            candidate,
                            job_id,
                            limits,
                            attempt,
                            outcome,
                        }))
                    });
                }
                Action::Scan(trigger) => self.start_scan(trigger),
                Action::Timer { after, timer } => {
                    let tx = self.wake_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = tx.send(Wake::Timer(timer));
                    });
                }
            }
        }
        self.metrics.set_governed(self.tracker.governed());
        // Their results, as if they came back from the pool. done() acts
        // again, but a fused result never asks for another fused read.
        for done in on_loop_done {
            self.done(done);
        }
    }

    /// The daemon keeps a governed process's pidfd and move span itself;
    /// the tracker keeps the job cgroup.
    fn keep_governed(&mut self, id: ProcessId, outcome: Adopted<Governed>) -> Adopted<JobCgroup> {
        match outcome {
            Adopted::Governed { payload, attached } => {
                self.pidfds.insert(id, payload.pidfd);
                self.moves.insert(id, payload.moved);
                Adopted::Governed {
                    payload: payload.cgroup,
                    attached,
                }
            }
            Adopted::Filtered(r) => Adopted::Filtered(r),
            Adopted::Gone => Adopted::Gone,
            Adopted::Failed {
                error,
                transient,
                announced,
            } => Adopted::Failed {
                error,
                transient,
                announced,
            },
        }
    }

    /// Log, count and publish what the tracker decided.
    fn note(&mut self, note: Note) {
        match note {
            Note::Governed {
                id,
                exec_ns,
                reattached,
            } => self.governed(id, exec_ns, reattached),
            Note::Filtered { id, command, rejected } => {
                tracing::info!("PID {} ({command}) not governed: {rejected}", id.pid);
                self.metrics.filtered(&command, rejected.filter);
                self.emit(WatchEvent::Filtered {
                    pid: id.pid,
                    command,
                    filter: rejected.filter.to_string(),
                    detail: rejected.detail,
                });
            }
            Note::Waiting { id, command, wait } => tracing::info!(
                "PID {} ({command}): adopting in {}, when it has run for its min_runtime",
                id.pid,
                humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
            ),
            Note::ExitedUngoverned { id, command } => {
                tracing::info!("PID {} exited before it was adopted ({command})", id.pid);
                self.metrics.exited_ungoverned(&command);
            }
            Note::AttachFailed {
                id,
                command,
                error,
                attempt,
                retry_in,
            } => {
                // Counted once as failed, or as a retry when one follows.
                self.metrics.adoption_failed(&command, retry_in.is_some());
                self.health.attach_failed(&error);
                match retry_in {
                    Some(wait) => tracing::warn!(
                        "could not attach to PID {} ({command}): {error}; retrying in {wait:?} (attempt {} of {})",
                        id.pid,
                        attempt + 2,
                        self.config.retry.max_attempts + 1
                    ),
                    None => tracing::warn!("could not attach to PID {} ({command}): {error}", id.pid),
                }
                self.emit(WatchEvent::AttachFailed {
                    pid: id.pid,
                    command,
                    error,
                    retry_in_ms: retry_in.map(|d| d.as_millis() as u64),
                });
            }
            Note::CheckFailed {
                pid,
                error,
                attempt,
                retry_in,
            } => {
                self.metrics.check_failed();
                match retry_in {
                    Some(wait) => tracing::warn!(
                        "could not check PID {pid}: {error}; reading it again in {wait:?} (attempt {} of {})",
                        attempt + 2,
                        self.config.retry.max_attempts + 1
                    ),
                    None => tracing::warn!(
                        "could not check PID {pid}: {error}; a scan in {:?} looks for it again",
                        tracker::RESCAN_AFTER_GIVING_UP
                    ),
                }
            }
            Note::Discovered { found } => tracing::info!("Discovered {found} new process(es)"),
            Note::Reconciled { trigger, found } => {
                self.health.scan_ok();
                if found > 0 {
                    tracing::info!("Discovered {found} new process(es)");
                }
                self.emit(WatchEvent::Reconciled {
                    trigger: trigger.to_string(),
                    found,
                });
            }
            Note::ScanFailed { trigger, error } => {
                tracing::warn!("reconcile scan ({trigger}) failed: {error}");
                self.health.scan_failed(&error);
                self.metrics.scan_failed();
            }
            Note::ScanIncomplete { trigger, failed } => {
                for (pid, error) in failed.iter().take(3) {
                    tracing::warn!("reconcile scan ({trigger}): could not check PID {pid}: {error}");
                }
                tracing::warn!(
                    "reconcile scan ({trigger}): {} process(es) could not be checked; another scan in {:?}",
                    failed.len(),
                    tracker::RESCAN_AFTER_GIVING_UP
                );
                for _ in &failed {
                    self.metrics.check_failed();
                }
            }
        }
    }

    fn governed(&mut self, id: ProcessId, exec_ns: Option<u64>, reattached: bool) {
        let moved = self.moves.remove(&id);
        let Some(job) = self.tracker.job(id) else { return };
        let outcomes = job.payload.outcomes().to_vec();
        let (job_id, command) = (job.job_id.clone(), job.command.clone());
        self.log_failed_limits(id.pid, &outcomes);
        let mut latency = None;
        if reattached {
            tracing::info!("↻ Re-attached to PID {} (job: {job_id}, {command})", id.pid);
        } else {
            latency = exec_ns.map(|at| adoption_latency(at, moved, adopt::monotonic_ns()));
            self.metrics.adopted(&command, latency.as_ref());
            self.health.attach_ok();
            tracing::info!("✓ Attached to PID {} (job: {job_id})", id.pid);
        }
        self.metrics
            .job_started(job_id.as_str(), &command, job.payload.usage_reader());
        self.emit(WatchEvent::Attached {
            job_id: job_id.to_string(),
            pid: id.pid,
            start_time: id.start_time,
            command,
            reattached,
            limits: outcomes,
            latency,
        });
        self.state_dirty = true;
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

    /// Start governing: kernel exit reports and a task per governed process
    /// that waits for its pidfd to become readable (exact, once per
    /// process, free while nothing happens).
    fn watch(&mut self, id: ProcessId) {
        let Some(pidfd) = self.pidfds.remove(&id) else {
            tracing::error!("PID {}: no pidfd to watch its exit", id.pid);
            return;
        };
        if self.stopping {
            return;
        }
        self.source.govern(id.pid);
        let tx = self.wake_tx.clone();
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
            let _ = tx.send(Wake::Exited(id, status));
        });
    }

    /// Usage, removal and the summary line, on the blocking pool.
    fn finish(&mut self, id: ProcessId, job: Job<JobCgroup>, status: Option<i32>) {
        self.state_dirty = true;
        self.work.spawn_blocking(move || {
            let finished = adopt::finish(id, job.job_id, job.command, job.payload, job.attached, status);
            Done::Finished(Box::new(finished))
        });
    }

    fn finished(&mut self, f: Finished) {
        // The old tool's order: the summary, then these two.
        f.result.log_summary();
        tracing::info!(
            "Process {} exited (job {}, duration: {:.2}s)",
            f.id.pid,
            f.job_id,
            f.result.processing_seconds
        );
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
        if self.stopping {
            return;
        }
        if self.scanning {
            self.rescan = Some(trigger);
            return;
        }
        self.scanning = true;
        self.metrics.reconcile_scan(trigger);
        match trigger {
            // The old tool's lines for its first and its periodic scans.
            "startup" => tracing::info!("Performing initial scan..."),
            "poll" => tracing::info!("Scanning for processes..."),
            _ => tracing::debug!("scanning /proc ({trigger})"),
        }
        let (targets, governor) = (self.tracker.rules().targets.clone(), Arc::clone(&self.governor));
        self.work.spawn_blocking(move || Done::Scanned {
            trigger,
            result: adopt::scan_targets(&targets, &governor),
        });
    }

    /// Take over the jobs an earlier daemon left under the root.
    async fn take_over(&mut self) {
        let state = self.load_state().await;
        let governor = Arc::clone(&self.governor);
        let rules = Arc::clone(self.tracker.rules());
        let takeover = tokio::task::spawn_blocking(move || adopt::take_over(&governor, &rules, &state)).await;
        let Takeover {
            reattached,
            removed,
            failed,
            completed,
            claimed,
        } = match takeover {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("taking over earlier jobs failed: {e}");
                return;
            }
        };
        for dir in claimed {
            tracing::warn!(
                "{} had no job mark (an earlier daemon was killed while creating it); marked it, taking it over or removing it",
                dir.display()
            );
        }
        for job in removed {
            tracing::info!("removed the empty job cgroup {job} of an earlier run");
        }
        for (job, why) in failed {
            tracing::warn!("could not take over job {job}: {why}");
        }
        for (job, c) in completed {
            match c.result {
                Ok(()) => tracing::warn!(
                    "job {job}: PID {} was not in {}; completed the move an earlier run did not finish",
                    c.pid,
                    c.dir.display()
                ),
                Err(e) => tracing::error!(
                    "job {job}: PID {} is not in {} and could not be moved there ({e}): its limits there do not apply to it",
                    c.pid,
                    c.dir.display()
                ),
            }
        }
        self.metrics.reattached(reattached.len() as u64);
        for r in reattached {
            let id = r.found.id();
            let job = Job {
                job_id: r.cgroup.id().clone(),
                command: r.found.candidate.command.clone(),
                limits: r.limits,
                attached: r.attached,
                payload: r.cgroup,
            };
            self.pidfds.insert(id, r.pidfd);
            let actions = self.tracker.reattached(r.found, job);
            self.act(actions);
        }
    }

    async fn load_state(&self) -> Vec<StateJob> {
        if !self.config.state.enabled {
            return Vec::new();
        }
        let path = self.config.state.path.clone();
        match tokio::task::spawn_blocking(move || StateFile::load(&path)).await {
            Ok(Ok(state)) => state.jobs,
            Ok(Err(e)) => {
                tracing::warn!("{e}; relying on the cgroup tree alone");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!("reading the state file failed: {e}; relying on the cgroup tree alone");
                Vec::new()
            }
        }
    }

    fn state_now(&self) -> StateFile {
        let mut jobs: Vec<StateJob> = self
            .tracker
            .jobs()
            .map(|(id, job)| StateJob {
                job_id: job.job_id.to_string(),
                pid: id.pid,
                start_time: id.start_time,
                command: job.command.clone(),
                attached_unix_ms: unix_ms(job.attached),
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
        if !self.state_dirty || self.saving {
            return;
        }
        self.state_dirty = false;
        self.saving = true;
        let state = self.state_now();
        let path = self.config.state.path.clone();
        self.work
            .spawn_blocking(move || Done::Saved(state.save(&path).map_err(|e| e.to_string())));
    }

    /// The configuration file changed: reload as SIGHUP does.
    fn followed(&mut self, notice: follow::Notice) {
        let file = self.config.config_file.as_deref().unwrap_or(Path::new("")).display();
        match notice {
            follow::Notice::Changed(what) => {
                tracing::info!("Configuration file {file} changed ({what}): reloading");
                self.start_reload();
            }
            follow::Notice::Stopped(why) => {
                self.follower = None;
                tracing::warn!("no longer following {file} ({why}): only SIGHUP reloads it now");
            }
        }
    }

    /// Follow the configuration file, when there is one; without inotify
    /// (e.g. `fs.inotify.max_user_instances` reached) SIGHUP still works.
    fn follow_config_file(&mut self) {
        let Some(file) = self
            .config
            .config_file
            .clone()
            .filter(|_| self.config.follow_config_file)
        else {
            return;
        };
        let tx = self.wake_tx.clone();
        match follow::Follower::start(&file, move |notice| tx.send(Wake::Followed(notice)).is_ok()) {
            Ok(follower) => {
                tracing::info!(
                    "Following {}: a change of the file (or of a ConfigMap's ..data in {}) reloads it, as SIGHUP does",
                    file.display(),
                    follower.dir().display()
                );
                self.follower = Some(follower);
            }
            Err(e) => tracing::warn!("{e}: only SIGHUP reloads the configuration"),
        }
    }

    fn start_reload(&mut self) {
        let Some(file) = self.config.config_file.clone() else {
            tracing::info!("SIGHUP: no --watch-config file to re-read; nothing to reload");
            return;
        };
        if self.reloading {
            // The file may have changed again since that read began.
            self.reload_again = true;
            return;
        }
        tracing::info!("Reloading configuration from {}", file.display());
        let mut states = vec![sd_notify::NotifyState::Reloading];
        states.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        self.notify(&states);
        self.reloading = true;
        let overrides = self.config.overrides.clone();
        self.work
            .spawn_blocking(move || Done::Reloaded(super::config::load(Some(&file), &overrides)));
    }

    fn reloaded(
        &mut self,
        result: Result<(WatchConfig, Vec<String>), super::config::ConfigError>,
    ) -> Vec<Action<JobCgroup>> {
        self.notify(&[sd_notify::NotifyState::Ready]);
        let (new, warnings) = match result {
            Ok(loaded) => loaded,
            Err(e) => {
                let error = format!("{e:#}");
                tracing::error!("configuration reload failed, keeping the running configuration: {error}");
                self.metrics.reload(false);
                self.health.config_failed(&error);
                self.emit(WatchEvent::Reloaded {
                    ok: false,
                    error: Some(error),
                });
                return Vec::new();
            }
        };
        for w in warnings {
            tracing::warn!("{w}");
        }
        self.warn_restart_only(&new);
        let rules = Arc::new(new.rules.clone());
        if rules.targets != self.tracker.rules().targets {
            let names: Vec<&str> = rules.targets.names().iter().map(String::as_str).collect();
            if let Err(e) = self.source.set_targets(&names) {
                tracing::error!("updating the kernel's target list: {e}; new targets are found by scans only");
            }
            tracing::info!("Target commands: {}", go_list(rules.targets.names()));
        }
        if new.scan_interval != self.config.scan_interval {
            self.source.set_scan_interval(new.scan_interval);
        }
        if new.favor_dynmods != self.config.favor_dynmods {
            self.config.favor_dynmods = new.favor_dynmods;
            if new.favor_dynmods {
                tracing::info!("favor_dynmods is now on: favordynmods is kept on from now on");
                self.check_dynmods();
            } else {
                tracing::info!(
                    "favor_dynmods is now off: favordynmods is no longer turned on again (the kernel keeps it as it is)"
                );
            }
        }
        self.config.rules = new.rules;
        self.config.scan_interval = new.scan_interval;
        self.config.retry = new.retry;
        let actions = self.tracker.reload(rules, new.retry);
        self.metrics.reload(true);
        self.health.config_ok();
        self.emit(WatchEvent::Reloaded { ok: true, error: None });
        tracing::info!("Configuration reloaded");
        actions
    }

    /// Look at favordynmods again on the blocking pool (reading two files);
    /// with `favor_dynmods`, turn it on again if it is off.
    fn check_dynmods(&mut self) {
        if self.stopping {
            return;
        }
        if self.dynmods.checking {
            self.dynmods.again = true;
            return;
        }
        self.dynmods.checking = true;
        let keep_on = self.config.favor_dynmods;
        self.work
            .spawn_blocking(move || Done::Dynmods(dynmods::ensure(keep_on)));
    }

    fn dynmods_checked(&mut self, result: Result<Ensured, String>) {
        let ensured = match result {
            Ok(ensured) => ensured,
            Err(e) => {
                self.dynmods_failed(format!("favordynmods: {e}"));
                return;
            }
        };
        let now = ensured.now();
        let state = now.state();
        self.metrics
            .set_favordynmods(now.supported, state == dynmods::State::On);
        let was = self.dynmods.last.replace(state);
        match &ensured.outcome {
            Outcome::Nothing => {
                self.dynmods.last_error = None;
                if was.is_some_and(|was| was != state) {
                    tracing::info!("{} (changed since the last check)", now.describe(FAVOR_DYNMODS_FLAG));
                }
            }
            Outcome::Remounted { remount, .. } if state == dynmods::State::On => {
                self.dynmods.last_error = None;
                if was == Some(dynmods::State::On) {
                    // Off since the last check, and nobody but a remount or
                    // a new cgroup2 mount can have done that.
                    tracing::warn!(
                        "favordynmods was turned off since the last check (by a remount, or a new cgroup2 mount, without it); turned it on again (remounted {remount})"
                    );
                    self.metrics.favordynmods_reapplied();
                } else {
                    tracing::info!(
                        "favordynmods: turned on (remounted {remount}): moves into job cgroups no longer wait for an RCU grace period"
                    );
                    tracing::warn!("{}", dynmods::irreversibility_warning(&kernel_release()));
                }
            }
            Outcome::Remounted { remount, .. } => {
                self.dynmods_failed(format!(
                    "favordynmods: remounted {remount}, but /proc/self/mountinfo does not show it"
                ));
            }
            Outcome::Failed { error, .. } => {
                self.dynmods_failed(format!("favordynmods is off and could not be turned on again: {error}"));
            }
            Outcome::Refused(why) => {
                self.dynmods_failed(format!("favordynmods is not kept on: {why}"));
            }
        }
    }

    /// Log a failure of the favordynmods check once, not every minute.
    fn dynmods_failed(&mut self, error: String) {
        if self.dynmods.last_error.as_ref() != Some(&error) {
            tracing::error!("{error}");
            self.dynmods.last_error = Some(error);
        }
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

    /// Write a running job's new limits (limits are live-adjustable).
    fn update_limits(&mut self, id: ProcessId, old: Limits, new: Limits) {
        let Some(job) = self.tracker.job(id) else { return };
        let writer = job.payload.limit_writer();
        let procs = job.payload.procs_files();
        let job_id = job.job_id.clone();
        self.work.spawn_blocking(move || {
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
            Done::Updated { id, job_id, outcomes }
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

    /// Let the work in flight complete (so no half-made cgroup is left and
    /// every finished job is reported), then write the state.
    async fn shutdown(mut self) {
        self.notify(&[sd_notify::NotifyState::Stopping]);
        self.stopping = true;
        let actions = self.tracker.stop();
        self.act(actions);
        while let Some(done) = self.work.join_next().await {
            match done {
                Ok(done) => self.done(done),
                Err(e) => tracing::error!("a blocking task of the daemon failed: {e}"),
            }
        }
        if self.config.state.enabled {
            // Synchronously: the next start reads exactly this.
            let state = self.state_now();
            let path = self.config.state.path.clone();
            match tokio::task::spawn_blocking(move || state.save(&path)).await {
                Ok(Ok(())) => tracing::info!("State saved to {}", self.config.state.path.display()),
                Ok(Err(e)) => tracing::warn!("{e}"),
                Err(e) => tracing::warn!("saving the state failed: {e}"),
            }
        }
        let governed: Vec<(u32, JobId)> = self.tracker.jobs().map(|(id, j)| (id.pid, j.job_id.clone())).collect();
        for (pid, job_id) in &governed {
            tracing::info!("⊗ Detached from PID {pid} (job: {job_id})");
        }
        // (Still governed jobs keep the root in place.)
        let governor = Arc::clone(&self.governor);
        if let Err(e) = tokio::task::spawn_blocking(move || governor.remove_kept_root()).await {
            tracing::warn!("removing the empty cgroup root failed: {e}");
        }
        self.emit(WatchEvent::Stopped {
            governed: governed.len(),
        });
    }
}

fn log_skipped(result: &Checked) {
    if let Checked::Skipped { pid, why } = result {
        tracing::debug!("PID {pid} is a target, left alone: {why}");
    }
}

/// The message of a caught panic (a `&str` or `String` payload).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// Split exec (`exec_ns`, the kernel's timestamp) → now at the move. A
/// clock read before the exec's own timestamp (an event source's clock
/// that runs ahead) counts as zero rather than wrapping.
fn adoption_latency(exec_ns: u64, moved: Option<MoveSpan>, now_ns: u64) -> AdoptionLatency {
    let us = |from: u64, to: u64| to.saturating_sub(from) / 1000;
    let total_us = us(exec_ns, now_ns);
    match moved {
        Some(m) => AdoptionLatency {
            total_us,
            before_move_us: us(exec_ns, m.started_ns),
            move_us: us(m.started_ns.max(exec_ns), m.finished_ns),
        },
        None => AdoptionLatency {
            total_us,
            before_move_us: total_us,
            move_us: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_latency_is_split_at_the_move() {
        let moved = MoveSpan {
            started_ns: 1_400_000,
            finished_ns: 6_900_000,
        };
        let split = adoption_latency(1_000_000, Some(moved), 7_000_000);
        assert_eq!(
            split,
            AdoptionLatency {
                total_us: 6000,
                before_move_us: 400,
                move_us: 5500,
            }
        );
        // No move recorded: all of it is before the move.
        assert_eq!(adoption_latency(1_000_000, None, 3_000_000).before_move_us, 2000);
        // A source clock ahead of ours never wraps around.
        let ahead = adoption_latency(9_000_000, Some(moved), 7_000_000);
        assert_eq!((ahead.total_us, ahead.before_move_us, ahead.move_us), (0, 0, 0));
    }
}
