//! `ffrtmp watch`: the event-driven daemon.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::args::LimitArgs;
use crate::cgroup::CgroupRoot;
use crate::events::scan::Targets;
use crate::watch::{self, Backend, RetryConfig, Rules, StateConfig, WatchConfig};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// A command to govern, matched on the exact basename of argv[0] (repeatable)
    #[arg(long = "target", value_name = "NAME", value_parser = parse_target,
          default_values = ["ffmpeg", "gst-launch-1.0"])]
    pub targets: Vec<String>,
    /// Where processes are learned of: auto tries ebpf, then netlink, then poll
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: Backend,
    /// How often the poll backend scans /proc (e.g. 10s, 500ms)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_interval)]
    pub scan_interval: Duration,
    /// Where job cgroups live: absolute (/ffrtmp) or relative to ffrtmp's own cgroup
    #[arg(long, value_name = "PATH", env = "FFRTMP_CGROUP_ROOT", default_value = "/ffrtmp", value_parser = CgroupRoot::parse)]
    pub cgroup_root: CgroupRoot,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// eBPF ring buffer size in bytes (testing and tuning)
    #[arg(long, hide = true, default_value_t = WatchConfig::DEFAULT_RING_BYTES)]
    pub ebpf_ring_bytes: u32,
    /// Proc connector receive buffer in bytes (testing and tuning)
    #[arg(long, hide = true, default_value_t = WatchConfig::DEFAULT_NETLINK_RCVBUF)]
    pub netlink_rcvbuf: usize,
}

fn parse_target(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('/') || s.contains('\0') {
        Err("expected a command name (the basename of argv[0]), without '/'".into())
    } else {
        Ok(s.to_owned())
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d >= Duration::from_millis(10) => Ok(d),
        _ => Err("expected a duration of at least 10ms such as 10s, 500ms or 1m".into()),
    }
}

pub fn execute(args: WatchArgs) -> anyhow::Result<i32> {
    let config = WatchConfig {
        rules: Rules::simple(Targets::new(args.targets), args.limits.limits()),
        cgroup_root: args.cgroup_root,
        backend: args.backend,
        scan_interval: args.scan_interval,
        ring_bytes: args.ebpf_ring_bytes,
        netlink_rcvbuf: args.netlink_rcvbuf,
        config_file: None,
        state: StateConfig::default(),
        retry: RetryConfig::default(),
        metrics_listen: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(watch::run(config))?;
    Ok(0)
}
