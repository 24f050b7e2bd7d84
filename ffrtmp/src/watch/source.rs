//! The event source behind one interface: eBPF, the proc connector, or a
//! periodic `/proc` scan; `auto` tries them in that order.

use std::io;
use std::time::Duration;

use crate::events::ebpf::{EbpfSource, Event};
use crate::events::netlink::NetlinkSource;
use crate::events::source::SourceEvent;

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// eBPF, else the proc connector, else polling
    Auto,
    /// eBPF exec/exit tracepoints (in-kernel target filter)
    Ebpf,
    /// the netlink proc connector
    Netlink,
    /// a /proc scan every --scan-interval
    Poll,
}

/// Datagrams or ring records handled per wake-up, so one busy source cannot
/// starve the rest of the loop.
const DRAIN_BATCH: usize = 256;

pub enum Source {
    Ebpf { source: EbpfSource, buf: Vec<Event> },
    Netlink(NetlinkSource),
    Poll(tokio::time::Interval),
}

impl Source {
    pub fn name(&self) -> &'static str {
        match self {
            Source::Ebpf { .. } => "ebpf",
            Source::Netlink(_) => "netlink",
            Source::Poll(_) => "poll",
        }
    }

    /// Subscribe to the requested backend (falling back when `auto`).
    /// Returns the source and why it was chosen.
    pub fn open(backend: Backend, config: &super::WatchConfig) -> io::Result<(Source, String)> {
        let mut why = Vec::new();
        if matches!(backend, Backend::Auto | Backend::Ebpf) {
            let names: Vec<&str> = config.rules.targets.names().iter().map(String::as_str).collect();
            match EbpfSource::load(&names, config.ring_bytes) {
                Ok(source) => {
                    // Loading freed what it used (the BTF index, ~0.6 MB,
                    // aya's parse of the object); give the heap's free
                    // pages back: ~0.1 MiB of RSS (RssAnon 616 -> 516 kB,
                    // docs/BENCHMARKS.md). The peak (VmHWM) was set before.
                    // SAFETY: malloc_trim only releases free heap memory.
                    unsafe { libc::malloc_trim(0) };
                    why.push(format!(
                        "eBPF exec/exit tracepoints attached, {} KiB ring buffer",
                        source.ring_bytes() / 1024
                    ));
                    return Ok((
                        Source::Ebpf {
                            source,
                            buf: Vec::new(),
                        },
                        why.join("; "),
                    ));
                }
                Err(e) if backend == Backend::Ebpf => return Err(io::Error::other(format!("eBPF: {e}"))),
                Err(e) => why.push(format!("ebpf unavailable ({e})")),
            }
        }
        if matches!(backend, Backend::Auto | Backend::Netlink) {
            match NetlinkSource::subscribe(config.netlink_rcvbuf) {
                Ok(s) => {
                    why.push("proc connector subscribed".into());
                    return Ok((Source::Netlink(s), why.join("; ")));
                }
                Err(e) if backend == Backend::Netlink => {
                    return Err(io::Error::new(e.kind(), format!("proc connector: {e}")));
                }
                Err(e) => why.push(format!("netlink unavailable ({e})")),
            }
        }
        let interval = poll_interval(config.scan_interval);
        why.push(format!("scanning /proc every {:?}", config.scan_interval));
        Ok((Source::Poll(interval), why.join("; ")))
    }

    /// Wait for the next events. `Ok(true)` asks for a `/proc` scan (the
    /// poll backend's tick).
    pub async fn next(&mut self, out: &mut Vec<SourceEvent>) -> io::Result<bool> {
        match self {
            Source::Ebpf { source, buf } => {
                source.next(buf, DRAIN_BATCH).await.map_err(io::Error::other)?;
                let clk_tck = crate::process::identity::clock_ticks();
                out.extend(buf.drain(..).map(|e| {
                    let start_time = Some(e.start_time_ticks(clk_tck));
                    match e.kind {
                        Event::EXIT => SourceEvent::Exit {
                            pid: e.pid,
                            start_time,
                            status: e.exit_status as i32,
                            time_ns: Some(e.time_ns),
                        },
                        _ => SourceEvent::Exec {
                            pid: e.pid,
                            start_time,
                            time_ns: Some(e.time_ns),
                            argv0: e.argv0().map(|a| String::from_utf8_lossy(a).into_owned()),
                        },
                    }
                }));
                Ok(false)
            }
            Source::Netlink(s) => s.next(out, DRAIN_BATCH).await.map(|()| false),
            Source::Poll(interval) => {
                interval.tick().await;
                Ok(true)
            }
        }
    }

    /// Tell the source a pid is governed (eBPF reports exits only for those).
    pub fn govern(&mut self, pid: u32) {
        if let Source::Ebpf { source, .. } = self
            && let Err(e) = source.govern(pid)
        {
            tracing::warn!("PID {pid}: its exit will be seen through its pidfd only: {e}");
        }
    }

    /// Replace the target list the kernel filters on (eBPF only; the other
    /// sources read every exec).
    pub fn set_targets(&mut self, names: &[&str]) -> io::Result<()> {
        match self {
            Source::Ebpf { source, .. } => source.set_targets(names).map_err(io::Error::other),
            _ => Ok(()),
        }
    }

    /// The poll backend's scan period.
    pub fn set_scan_interval(&mut self, period: Duration) {
        if let Source::Poll(interval) = self {
            *interval = poll_interval(period);
        }
    }

    /// Does this source report exit statuses (so one missing when the
    /// pidfd wakes may still come)?
    pub fn reports_exit_status(&self) -> bool {
        !matches!(self, Source::Poll(_))
    }

    /// Datagrams dropped so far because the kernel did not send them
    /// (proc connector only).
    pub fn foreign(&self) -> u64 {
        match self {
            Source::Netlink(s) => s.foreign_datagrams(),
            _ => 0,
        }
    }

    /// Events lost inside the source so far (kernel-side drops).
    pub fn drops(&self) -> u64 {
        match self {
            Source::Ebpf { source, .. } => source.drops(),
            _ => 0,
        }
    }
}

fn poll_interval(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period.max(Duration::from_millis(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}
