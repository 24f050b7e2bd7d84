//! The watch service as a library: build it from a [`WatchConfig`], start
//! it on a tokio runtime, receive [`WatchEvent`]s, reload or stop it.
//! `ffrtmp watch` is this same service with signals and a log.
//!
//! ```no_run
//! use ffrtmp::watch::{WatchConfig, WatchEvent, WatchService};
//! use ffrtmp::cgroup::limits::{CpuMax, MemoryMax};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! // Govern ffmpeg with 1.5 cores and 2 GiB, like the old agent's
//! // --enable-auto-attach --auto-attach-cpu-quota 150 --auto-attach-memory-limit 2048.
//! let mut config = WatchConfig::for_targets(["ffmpeg"]);
//! config.rules.default_limits.cpu_max = Some(CpuMax::parse_percent("150").map_err(anyhow::Error::msg)?);
//! config.rules.default_limits.memory_max = MemoryMax::parse_mb("2048").map_err(anyhow::Error::msg)?;
//!
//! let mut watch = WatchService::new(config).start().await?;
//! while let Some(event) = watch.next_event().await {
//!     match event {
//!         WatchEvent::Attached { job_id, pid, .. } => println!("governing {pid} as {job_id}"),
//!         WatchEvent::Detached { result, .. } => println!("{}", result.summary_line()),
//!         _ => {}
//!     }
//! }
//! watch.stop().await?;
//! # Ok(())
//! # }
//! ```

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::daemon::{self, Control, EventSink, StartOptions};
use super::{WatchConfig, WatchError, WatchEvent, config};

/// How many events wait for the reader before new ones are dropped.
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// A watch service not yet started.
#[derive(Debug, Clone)]
pub struct WatchService {
    config: WatchConfig,
    event_capacity: usize,
    events: bool,
    options: StartOptions,
}

impl WatchService {
    pub fn new(config: WatchConfig) -> WatchService {
        WatchService {
            config,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            events: true,
            options: StartOptions::default(),
        }
    }

    /// The service configured from a `--watch-config` file (YAML or TOML).
    pub fn from_file(path: &Path) -> Result<WatchService, WatchError> {
        let (config, warnings) = config::load(Some(path), &config::Overrides::default())?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        Ok(WatchService::new(config))
    }

    /// Events queued for the reader at most; beyond that, new events are
    /// dropped (and counted) rather than slowing the service down.
    pub fn event_capacity(mut self, capacity: usize) -> WatchService {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Do not produce events at all (nobody reads them).
    pub fn without_events(mut self) -> WatchService {
        self.events = false;
        self
    }

    /// Send systemd `Type=notify` readiness, reload and stop notifications
    /// (`ffrtmp watch` does; an embedding program usually has its own).
    pub fn notify_systemd(mut self, yes: bool) -> WatchService {
        self.options.systemd_notify = yes;
        self
    }

    /// The process runs in a delegated cgroup (`Delegate=yes`). On cgroup v2,
    /// started in its leaf `daemon` (`DelegateSubgroup=daemon`), a relative
    /// `cgroup_root` lives beside it in the delegated cgroup; started in the
    /// delegated cgroup itself (systemd before 254), a relative
    /// `cgroup_root` is replaced by `/ffrtmp`, so that later starts in that
    /// cgroup are not refused while jobs run (see
    /// [`crate::cgroup::delegated_place`]).
    pub fn delegated(mut self, yes: bool) -> WatchService {
        self.options.delegated = yes;
        self
    }

    /// Start on the current tokio runtime. Returns once the service is
    /// subscribed to process events and has taken over the jobs of an
    /// earlier run; any start-up failure (not root, no cgroup hierarchy,
    /// no event source, the metrics address in use) is returned here.
    pub async fn start(self) -> Result<WatchHandle, WatchError> {
        let (sink, events) = if self.events {
            let (sink, rx) = EventSink::new(self.event_capacity);
            (Some(sink), Some(rx))
        } else {
            (None, None)
        };
        let dropped = sink
            .as_ref()
            .map_or_else(|| Arc::new(AtomicU64::new(0)), EventSink::dropped_counter);
        let started = daemon::start(self.config, sink, self.options).await?;
        let (control, control_rx) = mpsc::channel(8);
        let task = tokio::spawn(started.run(control_rx));
        Ok(WatchHandle {
            events,
            control,
            task,
            dropped,
        })
    }
}

/// A running watch service.
#[derive(Debug)]
pub struct WatchHandle {
    events: Option<mpsc::Receiver<WatchEvent>>,
    control: mpsc::Sender<Control>,
    task: JoinHandle<Result<(), WatchError>>,
    dropped: Arc<AtomicU64>,
}

impl WatchHandle {
    /// The next event; `None` once the service has stopped (or was started
    /// without events).
    pub async fn next_event(&mut self) -> Option<WatchEvent> {
        self.events.as_mut()?.recv().await
    }

    /// Take the event receiver, e.g. to read it in another task.
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<WatchEvent>> {
        self.events.take()
    }

    /// Call `callback` for every event, in a task of its own, until the
    /// service stops.
    pub fn on_event(&mut self, mut callback: impl FnMut(WatchEvent) + Send + 'static) {
        if let Some(mut rx) = self.events.take() {
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    callback(event);
                }
            });
        }
    }

    /// Events dropped so far because the reader was not keeping up.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A shared counter of the dropped events (for writers of the stream).
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }

    /// Re-read the configuration file (what SIGHUP does).
    pub async fn reload(&self) {
        let _ = self.control.send(Control::Reload).await;
    }

    /// A sender of control requests, e.g. for a signal handler task.
    pub fn controller(&self) -> mpsc::Sender<Control> {
        self.control.clone()
    }

    /// Stop the service; governed processes keep their cgroups and limits.
    pub async fn stop(self) -> Result<(), WatchError> {
        self.stop_because("stop requested").await
    }

    /// Stop, logging `why` ("Received signal <why>, shutting down...").
    pub async fn stop_because(self, why: &'static str) -> Result<(), WatchError> {
        let _ = self.control.send(Control::Stop(why)).await;
        self.wait().await
    }

    /// Wait until the service ends by itself (an event source failure) or
    /// a [`Control::Stop`] sent through [`WatchHandle::controller`].
    pub async fn wait(self) -> Result<(), WatchError> {
        self.task.await?
    }
}
