//! `ffrtmp watch`: the event-driven daemon.
//!
//! Every setting flag is an `Option` without a clap default, so that a flag
//! given wins over `--watch-config` and one not given leaves the file's
//! value; the defaults (shown in --help) are applied by `config::load`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::args::{LimitArgs, MemoryArg};
use crate::cgroup::CgroupRoot;
use crate::process::rlimit;
use crate::watch::config::{self, Overrides, PartialLimits};
use crate::watch::events_out::{EventsOutput, EventsTarget};
use crate::watch::{self, Backend, WatchService};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Read the settings from this YAML file (TOML when it ends in .toml); flags given here win over it. SIGHUP re-reads it, and so does a change of the file (a write, a rename over it, a Kubernetes ConfigMap update)
    #[arg(long, value_name = "FILE", conflicts_with = "check_config")]
    pub watch_config: Option<PathBuf>,
    /// Re-read the --watch-config file on SIGHUP only, not when it changes
    #[arg(long)]
    pub no_follow_config: bool,
    /// Validate FILE, print the effective configuration (FILE merged with the other flags) and exit; touches nothing
    #[arg(long, value_name = "FILE")]
    pub check_config: Option<PathBuf>,
    /// A command to govern: its exec'd file name (comm, 15 bytes) and argv[0]'s basename must both match (repeatable or comma-separated; replaces the file's target_commands) [default: ffmpeg gst-launch-1.0]
    #[arg(long = "target", value_name = "NAME", value_parser = config::parse_target, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// Where processes are learned of: auto tries ebpf, then netlink, then poll [default: auto]
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// How often the poll backend scans /proc (e.g. 10s, 500ms) [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_scan_interval, allow_hyphen_values = true)]
    pub scan_interval: Option<Duration>,
    /// Where job cgroups live: absolute (/ffrtmp) or relative to ffrtmp's own cgroup [default: /ffrtmp]
    #[arg(long, value_name = "PATH", env = "FFRTMP_CGROUP_ROOT", value_parser = CgroupRoot::parse)]
    pub cgroup_root: Option<CgroupRoot>,
    /// Serve /metrics and /healthz here: a port (on 127.0.0.1), ADDR:PORT or [IPv6]:PORT
    #[arg(long, value_name = "ADDR", value_parser = config::parse_listen)]
    pub metrics_listen: Option<SocketAddr>,
    /// Keep the governed jobs in a state file, so a restarted daemon takes them back
    #[arg(long)]
    pub enable_state: bool,
    /// The state file [default: /var/lib/ffrtmp/watch-state.json]
    #[arg(long, value_name = "PATH")]
    pub state_path: Option<PathBuf>,
    /// How often the state file is written [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = config::parse_flush_interval, allow_hyphen_values = true)]
    pub state_flush_interval: Option<Duration>,
    /// Retry adoptions that failed for a transient reason (accepted for compatibility: on by default)
    #[arg(long)]
    pub enable_retry: bool,
    /// Retries after a failed adoption, 0..100 (0 = never retry) [default: 3]
    #[arg(long, value_name = "N", value_parser = config::parse_retry_attempts)]
    pub max_retry_attempts: Option<u32>,
    /// Write every attach, detach and event as one JSON object per line to FILE (appended; a named pipe works), or - for stdout. Never slows adoption: a reader that falls behind costs dropped lines, counted in the stream
    #[arg(long, value_name = "FILE|-", value_parser = EventsTarget::parse)]
    pub events: Option<EventsTarget>,
    /// Read a --watch-config file that others than root could change (refused without it: they would steer this root daemon)
    #[arg(long)]
    pub allow_insecure_config: bool,
    /// Keep the cgroup2 mount option favordynmods on, so moving a process into its job never waits for an RCU grace period (5-40 ms); it makes every fork and exit on the host a little slower, and on Linux 6.18+ cannot be undone before a reboot. Remounts the cgroup2 mount with its current options plus favordynmods at start, and again when a check (every minute, and on SIGHUP) finds it reset
    #[arg(long)]
    pub favor_dynmods: bool,
    /// Run in a delegated cgroup (systemd Delegate=yes, DelegateSubgroup=daemon): on cgroup v2, when started in the leaf `daemon`, a relative --cgroup-root sits beside it in the unit's cgroup; when started in the unit's cgroup itself (systemd before 254), jobs go to /ffrtmp instead, so restarts keep working while they run
    #[arg(long)]
    pub delegated: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Events queued for the --events writer before new ones are dropped (testing and tuning)
    #[arg(long, hide = true, default_value_t = watch::DEFAULT_EVENT_CAPACITY)]
    pub events_buffer: usize,
    /// eBPF ring buffer size in bytes (testing and tuning)
    #[arg(long, hide = true)]
    pub ebpf_ring_bytes: Option<u32>,
    /// Proc connector receive buffer in bytes (testing and tuning)
    #[arg(long, hide = true)]
    pub netlink_rcvbuf: Option<usize>,
}

impl WatchArgs {
    /// What the command line set explicitly.
    fn overrides(&self) -> Overrides {
        Overrides {
            targets: self.targets.clone(),
            limits: limit_overrides(&self.limits),
            backend: self.backend,
            scan_interval: self.scan_interval,
            cgroup_root: self.cgroup_root.clone(),
            metrics_listen: self.metrics_listen,
            state_enabled: self.enable_state.then_some(true),
            state_path: self.state_path.clone(),
            state_flush_interval: self.state_flush_interval,
            retry_enabled: self.enable_retry.then_some(true),
            max_retry_attempts: self.max_retry_attempts,
            favor_dynmods: self.favor_dynmods.then_some(true),
            ring_bytes: self.ebpf_ring_bytes,
            netlink_rcvbuf: self.netlink_rcvbuf,
            allow_insecure_config: self.allow_insecure_config,
        }
    }
}

/// The limit flags given, with the precedence `LimitArgs::limits` documents
/// (`--cpu-quota` over `--cpu-max`, `--memory-limit` over `--memory-max`).
fn limit_overrides(args: &LimitArgs) -> PartialLimits {
    for warning in args.conflicts() {
        tracing::warn!("{warning}");
    }
    PartialLimits {
        cpu_max: args.cpu_quota.or(args.cpu_max),
        cpu_weight: args.cpu_weight,
        memory_max: args.memory_limit.or(args.memory_max).map(|MemoryArg(m)| m),
        memory_high: args.memory_high.map(|MemoryArg(m)| m),
        memory_swap_max: args.memory_swap_max.map(|super::args::SwapArg(s)| s),
        io_max: (!args.io_max.is_empty()).then(|| args.io_max.clone()),
        pids_max: args.pids_max,
        cpus: args.cpus.clone(),
        mems: args.mems.clone(),
        io_weight: args.io_weight,
        nice: args.nice,
        oom_score_adj: args.oom_score_adj,
        net_egress_max: args.net_egress_max,
        net_ingress_max: args.net_ingress_max,
        io_class: args.io_class,
    }
}

pub fn execute(args: WatchArgs) -> anyhow::Result<i32> {
    let overrides = args.overrides();
    let file = args.check_config.as_deref().or(args.watch_config.as_deref());
    let (mut config, warnings) = config::load(file, &overrides)?;
    config.follow_config_file = !args.no_follow_config;
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    if args.check_config.is_some() {
        print!("{}", config::render(&config, &warnings));
        return Ok(0);
    }
    // Not root: the service refuses to start, with one line; say nothing before it.
    if nix::unistd::geteuid().is_root() {
        // Before the runtime starts any thread (setns moves one thread).
        join_host_cgroup_namespace();
        raise_open_file_limit();
    }
    let service = WatchService::new(config)
        .event_capacity(args.events_buffer)
        .notify_systemd(true)
        .delegated(args.delegated);
    let service = if args.events.is_some() {
        service
    } else {
        service.without_events()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let output = args.events.map(EventsOutput::open).transpose()?;
    let mut writer = None;
    runtime.block_on(watch::run_with(service, |handle| {
        if let (Some(output), Some(events)) = (output, handle.take_events()) {
            writer = Some(output.spawn(events, handle.dropped_counter()));
        }
    }))?;
    if let Some(writer) = writer {
        finish_writer(writer.context("starting the event stream writer")?);
    }
    Ok(0)
}

/// In a container with a cgroup namespace of its own, join PID 1's (the
/// host's, with the host's PID namespace): see [`crate::cgroup::namespace`].
fn join_host_cgroup_namespace() {
    use crate::cgroup::namespace::{Joined, join_pid1};
    match join_pid1() {
        Joined::Initial => {}
        Joined::Joined { from, to, initial } => {
            let whose = if initial { "the host's" } else { "PID 1's" };
            tracing::info!(
                "Joined {whose} cgroup namespace (inode {to:#x}): ffrtmp was started in one of its own ({from:#x}), where the host's cgroups read as /../… and the kernel refuses moves of processes outside it (nsdelegate)"
            );
        }
        Joined::Stayed(why) => {
            tracing::warn!("ffrtmp runs in a cgroup namespace of its own: {why}");
        }
    }
}

/// Every governed process costs the daemon a pidfd: take the whole hard
/// limit (the administrator's, systemd's `LimitNOFILE=`). Failing is not
/// fatal: the daemon then governs fewer processes at once.
fn raise_open_file_limit() {
    match rlimit::raise_nofile() {
        Ok((old, new)) if old == new => tracing::info!("the open-file limit already is at the hard limit ({old})"),
        Ok((old, new)) => tracing::info!("raised the open-file limit from {old} to {new}"),
        Err(e) => tracing::warn!("{e}; going on with the current limit"),
    }
}

/// Give the event writer a moment to write the last lines (it sees the
/// queue close); a writer stuck on a reader that never reads is left behind.
fn finish_writer(writer: std::thread::JoinHandle<()>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !writer.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if writer.is_finished() {
        let _ = writer.join();
    } else {
        tracing::warn!("the event stream reader is not reading; its last lines are lost");
    }
}
