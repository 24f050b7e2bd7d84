//! Embed the watch service in your own program: govern every process of a
//! command as it starts and follow each attach and detach.
//!
//! ```text
//! sudo cargo run -p ffrtmp --example embed_watch -- ffmpeg --cpu-quota 150 --memory-limit 2048 --cgroup-root ffrtmp-try
//! ```
//!
//! The jobs go under `--cgroup-root` (or `FFRTMP_CGROUP_ROOT`), like
//! `ffrtmp watch`; without either, under `/ffrtmp`. Prints each event as one JSON object per line on stdout; stops after
//! `--detaches N` jobs have ended (default: run until Ctrl-C).

use anyhow::{Context, bail};
use ffrtmp::cgroup::CgroupRoot;
use ffrtmp::cgroup::limits::{CpuMax, MemoryMax};
use ffrtmp::watch::{WatchConfig, WatchEvent, WatchService};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;

    // The same settings `ffrtmp watch --target … --cpu-quota … --memory-limit …` makes.
    let mut config = WatchConfig::for_targets(args.targets);
    if let Some(pct) = args.cpu_quota {
        config.rules.default_limits.cpu_max = Some(CpuMax::parse_percent(&pct).map_err(anyhow::Error::msg)?);
    }
    if let Some(mb) = args.memory_limit {
        config.rules.default_limits.memory_max = MemoryMax::parse_mb(&mb).map_err(anyhow::Error::msg)?;
    }
    // The flag, else the same environment variable as `ffrtmp watch`.
    if let Some(root) = args.cgroup_root.or_else(|| std::env::var("FFRTMP_CGROUP_ROOT").ok()) {
        config.cgroup_root = CgroupRoot::parse(&root).map_err(anyhow::Error::msg)?;
    }

    let mut watch = WatchService::new(config).start().await?;
    let mut detaches = 0;
    loop {
        let event = tokio::select! {
            event = watch.next_event() => event,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(event) = event else { break };
        println!("{}", serde_json::to_string(&event)?);
        if let WatchEvent::Detached { .. } = event {
            detaches += 1;
            if args.detaches.is_some_and(|n| detaches >= n) {
                break;
            }
        }
    }
    // Governed processes keep their cgroups and limits.
    watch.stop().await?;
    Ok(())
}

struct Args {
    targets: Vec<String>,
    cpu_quota: Option<String>,
    memory_limit: Option<String>,
    cgroup_root: Option<String>,
    detaches: Option<u32>,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> anyhow::Result<Args> {
        let mut args = Args {
            targets: Vec::new(),
            cpu_quota: None,
            memory_limit: None,
            cgroup_root: None,
            detaches: None,
        };
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--cpu-quota" => args.cpu_quota = Some(value()?),
                "--memory-limit" => args.memory_limit = Some(value()?),
                "--cgroup-root" => args.cgroup_root = Some(value()?),
                "--detaches" => args.detaches = Some(value()?.parse().context("--detaches: expected a number")?),
                flag if flag.starts_with("--") => bail!("unknown flag {flag}"),
                target => args.targets.push(target.to_string()),
            }
        }
        if args.targets.is_empty() {
            bail!(
                "usage: embed_watch TARGET… [--cpu-quota PCT] [--memory-limit MB] [--cgroup-root PATH] [--detaches N]"
            );
        }
        Ok(args)
    }
}
