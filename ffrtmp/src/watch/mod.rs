//! `ffrtmp watch`: kernel process events → match a target → adopt it into
//! a job cgroup immediately → report the job when it exits.

mod adopt;
pub mod config;
mod daemon;
pub mod event;
pub mod events_out;
pub mod filter;
pub mod follow;
pub mod health;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod rules;
mod service;
mod source;
pub mod state;
mod tracker;
mod user_names;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use daemon::{Control, EventSink, run, run_with, serve};

pub use event::{AdoptionLatency, WatchEvent};
pub use rules::{CommandRule, DirMatch, Filters, ParentMatch, Rules};
pub use service::{DEFAULT_EVENT_CAPACITY, WatchHandle, WatchService};
pub use source::Backend;

use crate::cgroup::CgroupRoot;

/// Why the watch service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("ffrtmp watch must run as root: it creates cgroups and subscribes to kernel process events")]
    NotRoot,
    #[error(transparent)]
    Cgroups(#[from] crate::lifecycle::JobError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The state file's place is not the daemon's alone.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// Another daemon governs this cgroup root.
    #[error(transparent)]
    Locked(#[from] lock::LockError),
    /// The metrics address could not be bound (the message names it).
    #[error("{0}")]
    Listen(#[source] std::io::Error),
    #[error("opening an event source: {0}")]
    Source(#[source] std::io::Error),
    #[error("reading process events: {0}")]
    Events(#[source] std::io::Error),
    #[error("installing the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `--favor-dynmods`: favordynmods cannot be turned on (the reason).
    #[error("--favor-dynmods: {0}")]
    FavorDynmods(String),
    #[error("a task of the watch service failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Everything the daemon needs.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub rules: Rules,
    pub cgroup_root: CgroupRoot,
    pub backend: Backend,
    /// Keep the cgroup2 mount option `favordynmods` on (`--favor-dynmods`):
    /// turn it on at start, and again whenever a check finds it off (every
    /// minute and on SIGHUP). See [`crate::cgroup::dynmods`].
    pub favor_dynmods: bool,
    /// The poll backend's scan period.
    pub scan_interval: Duration,
    /// eBPF ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Proc connector receive buffer in bytes.
    pub netlink_rcvbuf: usize,
    /// The `--watch-config` file, re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// Re-read `config_file` also when it changes (see [`follow`]); off
    /// with `--no-follow-config`.
    pub follow_config_file: bool,
    pub state: StateConfig,
    pub retry: RetryConfig,
    /// `--metrics-listen`: serve `/metrics` and `/healthz` here.
    pub metrics_listen: Option<SocketAddr>,
    /// What the command line set explicitly: re-applied over the file when
    /// it is re-read on SIGHUP.
    pub overrides: config::Overrides,
}

/// `--enable-state`, `--state-path`, `--state-flush-interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    pub enabled: bool,
    pub path: PathBuf,
    pub flush_interval: Duration,
}

impl Default for StateConfig {
    fn default() -> StateConfig {
        StateConfig {
            enabled: false,
            path: PathBuf::from("/var/lib/ffrtmp/watch-state.json"),
            flush_interval: Duration::from_secs(30),
        }
    }
}

/// Transient adoption failures are retried with bounded exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts after the first one (0 = never retry).
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        RetryConfig { max_attempts: 3 }
    }
}

impl WatchConfig {
    pub const DEFAULT_RING_BYTES: u32 = 256 * 1024;
    pub const DEFAULT_NETLINK_RCVBUF: usize = 8 * 1024 * 1024;

    /// The defaults of `ffrtmp watch` (root `/ffrtmp`, backend `auto`, no
    /// limits, no filters) for these target commands.
    pub fn for_targets<S: Into<String>>(targets: impl IntoIterator<Item = S>) -> WatchConfig {
        WatchConfig {
            rules: Rules::simple(
                crate::events::scan::Targets::new(targets.into_iter().map(Into::into)),
                crate::cgroup::Limits::default(),
            ),
            cgroup_root: CgroupRoot::default(),
            backend: Backend::Auto,
            favor_dynmods: false,
            scan_interval: Duration::from_secs(10),
            ring_bytes: Self::DEFAULT_RING_BYTES,
            netlink_rcvbuf: Self::DEFAULT_NETLINK_RCVBUF,
            config_file: None,
            follow_config_file: true,
            state: StateConfig::default(),
            retry: RetryConfig::default(),
            metrics_listen: None,
            overrides: config::Overrides::default(),
        }
    }
}
