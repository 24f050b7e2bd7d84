//! The governed jobs as the cgroup tree shows them now: each job's
//! processes, usage counters and the limits read back from its control
//! files. Shared by `ffrtmp status` (one table or JSON document) and
//! `ffrtmp top` (a live view); read-only, no daemon needed.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use crate::cgroup::files;
use crate::cgroup::fs;
use crate::cgroup::limits::IoClass;
use crate::cgroup::{Controller, ExistingJob, Governor, Version};
use crate::events::scan;

/// v1 shows "no memory limit" as the page counter's maximum
/// (9223372036854771712 on 4 KiB pages): anything this large is none.
const V1_NO_LIMIT: u64 = 1 << 62;

#[derive(Debug, Clone, Serialize)]
pub(super) struct JobStatus {
    pub(super) job_id: String,
    /// "watch" for the daemon's `auto-…` jobs, else "run/attach".
    pub(super) mode: &'static str,
    /// Processes in the job cgroup, ascending; empty when none is left.
    pub(super) pids: Vec<u32>,
    /// comm of the first pid (`None` when the job is empty or it just exited).
    pub(super) command: Option<String>,
    /// Since the job cgroup was created.
    pub(super) age_seconds: Option<f64>,
    pub(super) cgroup_paths: Vec<PathBuf>,
    pub(super) usage: UsageNow,
    /// The limits in effect for the job's processes: a limit in a
    /// directory that does not hold all of them is left out here and listed
    /// in `not_in_effect`.
    pub(super) limits: LimitsInPlace,
    /// cgroup v1: processes of the job missing from one of its hierarchies
    /// (a move cut short by a crash, until the daemon completes it).
    pub(super) not_in_effect: Vec<NotInEffect>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct NotInEffect {
    pub(super) pid: u32,
    /// The job's directory the process is not in.
    pub(super) cgroup_path: PathBuf,
    /// The controllers of that hierarchy: their limits do not apply to it.
    pub(super) controllers: Vec<&'static str>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(super) struct UsageNow {
    pub(super) cpu_seconds: Option<f64>,
    pub(super) memory_current_bytes: Option<u64>,
    pub(super) memory_peak_bytes: Option<u64>,
    /// CFS periods that have elapsed with a quota in place (`nr_periods`
    /// of `cpu.stat`): `throttled_periods` of these were throttled.
    pub(super) cpu_periods: Option<u64>,
    pub(super) throttled_periods: Option<u64>,
    pub(super) throttled_seconds: Option<f64>,
    pub(super) oom_kills: Option<u64>,
    /// Bytes read and written per device since the job was created (v2
    /// `io.stat`, v1 `blkio.throttle.io_service_bytes`); devices with no
    /// traffic are left out.
    pub(super) io_bytes: Vec<IoBytesNow>,
    /// The network programs' counters (a job with a network limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) network: Option<crate::net::NetUsage>,
}

/// Limits read back from the control files; `None`/empty means no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(super) struct LimitsInPlace {
    pub(super) cpu_max: Option<CpuMaxNow>,
    /// `None` at the kernel default (v2 weight 100, v1 1024 shares).
    pub(super) cpu_weight: Option<u64>,
    pub(super) memory_max_bytes: Option<u64>,
    /// v2 `memory.high`; `None` at "max" (and always on v1, which has none).
    pub(super) memory_high_bytes: Option<u64>,
    /// v2 `memory.swap.max`; `None` at "max" (and always on v1).
    pub(super) memory_swap_max_bytes: Option<u64>,
    pub(super) io_max: Vec<IoMaxNow>,
    /// `pids.max`; `None` at "max".
    pub(super) pids_max: Option<u64>,
    /// `cpuset.cpus` as the kernel lists it; `None` when empty (v2: all
    /// of the parent's). A v1 cpuset cgroup always lists its CPUs.
    pub(super) cpus: Option<String>,
    /// `cpuset.mems`, like `cpus`.
    pub(super) mems: Option<String>,
    /// v2: the "default N" of `io.weight` (else `io.bfq.weight`), `None` at
    /// 100; v1: `blkio.bfq.weight` (else `blkio.weight`) as is, 10..=1000.
    pub(super) io_weight: Option<u64>,
    /// The IO class of the job's first process (`ioprio_get`); `None` when
    /// it has none (it follows its nice value).
    pub(super) io_class: Option<String>,
    /// `oom_score_adj` of the job's first process; `None` at 0 (the
    /// kernel's default, and what `--oom-score-adj` leaves alone).
    pub(super) oom_score_adj: Option<i16>,
    /// The rate in the job's network bucket (`8mbit`), read from the
    /// programs attached to its cgroup2 directory.
    pub(super) net_egress_max: Option<String>,
    pub(super) net_ingress_max: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(super) struct CpuMaxNow {
    pub(super) quota_us: u64,
    pub(super) period_us: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(super) struct IoMaxNow {
    pub(super) device: String,
    pub(super) rbps: Option<u64>,
    pub(super) wbps: Option<u64>,
    pub(super) riops: Option<u64>,
    pub(super) wiops: Option<u64>,
}

/// One device's IO counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(super) struct IoBytesNow {
    pub(super) device: String,
    pub(super) read_bytes: u64,
    pub(super) write_bytes: u64,
}

/// Every job under the governor's root, read now.
pub(super) fn read_jobs(governor: &Governor, now: SystemTime) -> Vec<JobStatus> {
    let version = governor.version();
    governor
        .existing_jobs()
        .iter()
        .map(|job| JobStatus::read(job, version, now))
        .collect()
}

impl JobStatus {
    pub(super) fn read(job: &ExistingJob, version: Version, now: SystemTime) -> JobStatus {
        let pids = job.pids();
        let io_class = io_class_of(pids.first().copied());
        let oom_score_adj = pids
            .first()
            .and_then(|&pid| crate::process::oom::get(pid).ok())
            .filter(|&adj| adj != 0);
        let not_in_effect: Vec<NotInEffect> = job
            .outside()
            .into_iter()
            .map(|(pid, dir, controllers)| NotInEffect {
                pid,
                cgroup_path: dir,
                controllers: controllers.iter().map(|c| c.v1_name()).collect(),
            })
            .collect();
        let partial = |c: Controller| not_in_effect.iter().any(|n| n.controllers.contains(&c.v1_name()));
        let reader = job.usage_reader();
        let usage = reader.read();
        let (net_egress_max, net_ingress_max) = net_rates(job);
        JobStatus {
            job_id: job.id.as_str().to_owned(),
            mode: mode_of(job.id.as_str()),
            command: pids.first().and_then(|&pid| scan::comm(pid)),
            pids,
            age_seconds: job
                .created()
                .and_then(|t| now.duration_since(t).ok())
                .map(|d| d.as_secs_f64()),
            cgroup_paths: job.dirs().into_iter().map(PathBuf::from).collect(),
            usage: UsageNow {
                cpu_seconds: usage.cpu_seconds,
                memory_current_bytes: reader.memory_current(),
                memory_peak_bytes: usage.memory_peak_bytes,
                cpu_periods: job
                    .read(Controller::Cpu, files::CPU_STAT)
                    .and_then(|s| fs::keyed_value(&s, "nr_periods")),
                throttled_periods: usage.throttled_periods,
                throttled_seconds: usage.throttled_seconds,
                oom_kills: usage.oom_kills,
                io_bytes: read_io_bytes(version, |f| job.read(Controller::Io, f)),
                network: usage.network,
            },
            limits: LimitsInPlace {
                io_class,
                oom_score_adj,
                net_egress_max,
                net_ingress_max,
                ..read_limits(version, |c, f| if partial(c) { None } else { job.read(c, f) })
            },
            not_in_effect,
        }
    }
}

impl IoMaxNow {
    /// "8:0 rbps=20 MiB/s riops=100".
    pub(super) fn human(&self) -> String {
        let mut s = self.device.clone();
        for (key, value) in [("rbps", self.rbps), ("wbps", self.wbps)] {
            if let Some(v) = value {
                s.push_str(&format!(" {key}={}/s", human_bytes(v)));
            }
        }
        for (key, value) in [("riops", self.riops), ("wiops", self.wiops)] {
            if let Some(v) = value {
                s.push_str(&format!(" {key}={v}"));
            }
        }
        s
    }

    fn is_empty(&self) -> bool {
        self.rbps.is_none() && self.wbps.is_none() && self.riops.is_none() && self.wiops.is_none()
    }
}

/// The network rates in force, from the programs on the job's cgroup2
/// directory (none without one, or without our programs).
fn net_rates(job: &ExistingJob) -> (Option<String>, Option<String>) {
    let Some(dir) = job.dir_of(Controller::Net) else {
        return (None, None);
    };
    match crate::net::JobSocketCgroup::open(dir).and_then(|c| c.rates()) {
        Ok((egress, ingress)) => (egress.map(|r| r.to_string()), ingress.map(|r| r.to_string())),
        Err(e) => {
            tracing::debug!("network limits of {}: {e}", dir.display());
            (None, None)
        }
    }
}

/// `auto-<cmd>-<pid>` is the daemon's naming; run and attach take any id.
pub(super) fn mode_of(job_id: &str) -> &'static str {
    if job_id.starts_with("auto-") {
        "watch"
    } else {
        "run/attach"
    }
}

/// The limits in place, from the control files `read(controller, file)`
/// returns (`None`: the file is absent or unreadable).
pub(super) fn read_limits(version: Version, read: impl Fn(Controller, &str) -> Option<String>) -> LimitsInPlace {
    match version {
        Version::V2 => LimitsInPlace {
            cpu_max: read(Controller::Cpu, files::CPU_MAX).and_then(|s| parse_cpu_max(&s)),
            cpu_weight: read(Controller::Cpu, files::CPU_WEIGHT).and_then(|s| parse_weight(&s)),
            memory_max_bytes: read(Controller::Memory, files::MEMORY_MAX).and_then(|s| parse_memory_max(&s)),
            memory_high_bytes: read(Controller::Memory, files::MEMORY_HIGH).and_then(|s| parse_memory_max(&s)),
            memory_swap_max_bytes: read(Controller::Memory, files::MEMORY_SWAP_MAX).and_then(|s| s.trim().parse().ok()),
            io_max: read(Controller::Io, files::IO_MAX)
                .map(|s| parse_io_max(&s))
                .unwrap_or_default(),
            pids_max: read(Controller::Pids, files::PIDS_MAX).and_then(|s| s.trim().parse().ok()),
            cpus: read(Controller::Cpuset, files::CPUSET_CPUS).and_then(|s| non_empty(&s)),
            mems: read(Controller::Cpuset, files::CPUSET_MEMS).and_then(|s| non_empty(&s)),
            io_weight: read(Controller::Io, files::IO_WEIGHT)
                .and_then(|s| fs::keyed_value(&s, "default"))
                .or_else(|| read(Controller::Io, files::IO_BFQ_WEIGHT).and_then(|s| fs::keyed_value(&s, "default")))
                .filter(|&w| w != 100),
            io_class: None,
            oom_score_adj: None,
            net_egress_max: None,
            net_ingress_max: None,
        },
        Version::V1 => LimitsInPlace {
            cpu_max: match (
                read(Controller::Cpu, files::CFS_QUOTA_US),
                read(Controller::Cpu, files::CFS_PERIOD_US),
            ) {
                (Some(quota), Some(period)) => parse_cfs(&quota, &period),
                _ => None,
            },
            cpu_weight: read(Controller::Cpu, files::CPU_SHARES).and_then(|s| parse_shares(&s)),
            memory_max_bytes: read(Controller::Memory, files::MEMORY_LIMIT_IN_BYTES).and_then(|s| parse_memory_max(&s)),
            memory_high_bytes: None,
            memory_swap_max_bytes: None,
            io_max: parse_blkio(|file| read(Controller::Io, file)),
            pids_max: read(Controller::Pids, files::PIDS_MAX).and_then(|s| s.trim().parse().ok()),
            cpus: read(Controller::Cpuset, files::CPUSET_CPUS).and_then(|s| non_empty(&s)),
            mems: read(Controller::Cpuset, files::CPUSET_MEMS).and_then(|s| non_empty(&s)),
            io_weight: read(Controller::Io, files::BLKIO_BFQ_WEIGHT)
                .or_else(|| read(Controller::Io, files::BLKIO_WEIGHT))
                .and_then(|s| s.trim().parse().ok()),
            io_class: None,
            oom_score_adj: None,
            net_egress_max: None,
            net_ingress_max: None,
        },
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The IO class of `pid`'s main thread, as `--io-class` writes it.
fn io_class_of(pid: Option<u32>) -> Option<String> {
    let raw = crate::process::ioprio::thread_ioprio(pid?).ok()?;
    IoClass::from_ioprio(raw).map(|c| c.to_string())
}

/// v2 `cpu.max`: "QUOTA PERIOD", or "max PERIOD" for none.
fn parse_cpu_max(s: &str) -> Option<CpuMaxNow> {
    let mut words = s.split_whitespace();
    let quota = words.next()?.parse().ok()?;
    let period = words.next()?.parse().ok()?;
    Some(CpuMaxNow {
        quota_us: quota,
        period_us: period,
    })
}

/// v1 `cpu.cfs_quota_us` (-1 for none) and `cpu.cfs_period_us`.
fn parse_cfs(quota: &str, period: &str) -> Option<CpuMaxNow> {
    let quota: i64 = quota.trim().parse().ok()?;
    Some(CpuMaxNow {
        quota_us: u64::try_from(quota).ok()?,
        period_us: period.trim().parse().ok()?,
    })
}

/// v2 `cpu.weight`; the default 100 is no preference.
fn parse_weight(s: &str) -> Option<u64> {
    s.trim().parse().ok().filter(|&w| w != 100)
}

/// v1 `cpu.shares` back to a weight (ffrtmp writes weight×1024/100, so
/// rounding recovers the weight); the default 1024 is no preference.
fn parse_shares(s: &str) -> Option<u64> {
    let shares: u64 = s.trim().parse().ok()?;
    (shares != 1024).then(|| ((shares * 100 + 512) / 1024).max(1))
}

/// v2 `memory.max` ("max" for none), v1 `memory.limit_in_bytes`.
fn parse_memory_max(s: &str) -> Option<u64> {
    s.trim().parse().ok().filter(|&b| b < V1_NO_LIMIT)
}

/// v2 `io.max`: "MAJ:MIN rbps=N wbps=max riops=N wiops=max" per device.
fn parse_io_max(s: &str) -> Vec<IoMaxNow> {
    s.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let mut io = IoMaxNow {
                device: words.next()?.to_owned(),
                ..IoMaxNow::default()
            };
            for word in words {
                let Some((key, value)) = word.split_once('=') else {
                    continue;
                };
                let value = value.parse().ok();
                match key {
                    "rbps" => io.rbps = value,
                    "wbps" => io.wbps = value,
                    "riops" => io.riops = value,
                    "wiops" => io.wiops = value,
                    _ => {}
                }
            }
            (!io.is_empty()).then_some(io)
        })
        .collect()
}

/// The IO counters of a job, from `read(file)` of its io (v1 blkio) hierarchy.
fn read_io_bytes(version: Version, read: impl Fn(&str) -> Option<String>) -> Vec<IoBytesNow> {
    match version {
        Version::V2 => read(files::IO_STAT).map(|s| parse_io_stat(&s)),
        Version::V1 => read(files::BLKIO_IO_SERVICE_BYTES).map(|s| parse_io_service_bytes(&s)),
    }
    .unwrap_or_default()
}

/// v2 `io.stat`: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N"
/// per device.
fn parse_io_stat(s: &str) -> Vec<IoBytesNow> {
    s.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let mut io = IoBytesNow {
                device: words.next()?.to_owned(),
                ..IoBytesNow::default()
            };
            for (key, value) in words.filter_map(|w| w.split_once('=')) {
                match (key, value.parse()) {
                    ("rbytes", Ok(v)) => io.read_bytes = v,
                    ("wbytes", Ok(v)) => io.write_bytes = v,
                    _ => {}
                }
            }
            (io.read_bytes > 0 || io.write_bytes > 0).then_some(io)
        })
        .collect()
}

/// v1 `blkio.throttle.io_service_bytes`: "MAJ:MIN Read N", "MAJ:MIN Write
/// N", … per device, then "Total N".
fn parse_io_service_bytes(s: &str) -> Vec<IoBytesNow> {
    let mut out: Vec<IoBytesNow> = Vec::new();
    for line in s.lines() {
        let mut words = line.split_whitespace();
        let (Some(device), Some(op), Some(Ok(value))) =
            (words.next(), words.next(), words.next().map(str::parse::<u64>))
        else {
            continue;
        };
        let write = match op {
            "Read" => false,
            "Write" => true,
            _ => continue,
        };
        if value == 0 {
            continue;
        }
        let index = match out.iter().position(|io| io.device == device) {
            Some(i) => i,
            None => {
                out.push(IoBytesNow {
                    device: device.to_owned(),
                    ..IoBytesNow::default()
                });
                out.len() - 1
            }
        };
        let io = &mut out[index];
        if write {
            io.write_bytes = value;
        } else {
            io.read_bytes = value;
        }
    }
    out
}

/// The field of an [`IoMaxNow`] a v1 blkio file fills.
type IoField = fn(&mut IoMaxNow) -> &mut Option<u64>;

/// v1 `blkio.throttle.*_device` files ("MAJ:MIN N" per line), one entry per
/// device in the order first seen.
fn parse_blkio(read: impl Fn(&str) -> Option<String>) -> Vec<IoMaxNow> {
    let mut out: Vec<IoMaxNow> = Vec::new();
    let files: [(&str, IoField); 4] = [
        (files::BLKIO_READ_BPS, |io| &mut io.rbps),
        (files::BLKIO_WRITE_BPS, |io| &mut io.wbps),
        (files::BLKIO_READ_IOPS, |io| &mut io.riops),
        (files::BLKIO_WRITE_IOPS, |io| &mut io.wiops),
    ];
    for (file, slot) in files {
        let Some(content) = read(file) else { continue };
        for line in content.lines() {
            let mut words = line.split_whitespace();
            let (Some(device), Some(Ok(value))) = (words.next(), words.next().map(str::parse::<u64>)) else {
                continue;
            };
            let index = match out.iter().position(|io| io.device == device) {
                Some(i) => i,
                None => {
                    out.push(IoMaxNow {
                        device: device.to_owned(),
                        ..IoMaxNow::default()
                    });
                    out.len() - 1
                }
            };
            *slot(&mut out[index]) = Some(value);
        }
    }
    out
}

/// "4242", "4242,4250", or for many "4242,4250,4251,+5"; "(empty)" for none.
pub(super) fn pid_list(pids: &[u32]) -> String {
    const SHOWN: usize = 3;
    if pids.is_empty() {
        return "(empty)".into();
    }
    let mut s = pids
        .iter()
        .take(SHOWN)
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if pids.len() > SHOWN {
        s.push_str(&format!(",+{}", pids.len() - SHOWN));
    }
    s
}

/// A quota as percent of one core, like `--cpu-quota`: "50%", "33.3%".
pub(super) fn cpu_percent(quota_us: u64, period_us: u64) -> String {
    if period_us == 0 {
        return format!("{quota_us}/0");
    }
    trim_point_zero(format!("{:.1}", quota_us as f64 * 100.0 / period_us as f64)) + "%"
}

/// Binary units: "512 B", "1.5 GiB", "64 MiB".
pub(super) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    // Move up a unit before one decimal would print "1024.0".
    while value >= 1023.95 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{} {}", trim_point_zero(format!("{value:.1}")), UNITS[unit])
}

/// "0.4 s", "12 s", "5 min 3 s", "2 h 5 min", "3 d 4 h".
pub(super) fn human_seconds(seconds: f64) -> String {
    if seconds < 9.95 {
        return format!("{seconds:.1} s");
    }
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

pub(super) fn trim_point_zero(s: String) -> String {
    match s.strip_suffix(".0") {
        Some(t) => t.to_owned(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn reader(files: &[(Controller, &str, &str)]) -> impl Fn(Controller, &str) -> Option<String> {
        let map: HashMap<(Controller, String), String> = files
            .iter()
            .map(|(c, f, v)| ((*c, f.to_string()), v.to_string()))
            .collect();
        move |c, f| map.get(&(c, f.to_string())).cloned()
    }

    #[test]
    fn v2_limits_read_back() {
        let read = reader(&[
            (Controller::Cpu, "cpu.max", "150000 100000\n"),
            (Controller::Cpu, "cpu.weight", "250\n"),
            (Controller::Memory, "memory.max", "2147483648\n"),
            (Controller::Memory, "memory.high", "1073741824\n"),
            (Controller::Memory, "memory.swap.max", "0\n"),
            (Controller::Pids, "pids.max", "64\n"),
            (Controller::Cpuset, "cpuset.cpus", "0-1\n"),
            (Controller::Cpuset, "cpuset.mems", "\n"),
            (Controller::Io, "io.weight", "default 50\n8:0 200\n"),
            (
                Controller::Io,
                "io.max",
                "8:0 rbps=20971520 wbps=max riops=max wiops=120\n259:0 rbps=max wbps=max riops=max wiops=max\n",
            ),
        ]);
        let limits = read_limits(Version::V2, read);
        assert_eq!(
            limits,
            LimitsInPlace {
                cpu_max: Some(CpuMaxNow {
                    quota_us: 150_000,
                    period_us: 100_000
                }),
                cpu_weight: Some(250),
                memory_max_bytes: Some(2_147_483_648),
                memory_high_bytes: Some(1_073_741_824),
                memory_swap_max_bytes: Some(0),
                io_max: vec![IoMaxNow {
                    device: "8:0".into(),
                    rbps: Some(20_971_520),
                    wiops: Some(120),
                    ..IoMaxNow::default()
                }],
                pids_max: Some(64),
                cpus: Some("0-1".into()),
                mems: None,
                io_weight: Some(50),
                io_class: None,
                oom_score_adj: None,
                net_egress_max: None,
                net_ingress_max: None,
            }
        );
    }

    #[test]
    fn v2_no_limits_are_none() {
        let read = reader(&[
            (Controller::Cpu, "cpu.max", "max 100000\n"),
            (Controller::Cpu, "cpu.weight", "100\n"),
            (Controller::Memory, "memory.max", "max\n"),
            (Controller::Io, "io.max", ""),
            (Controller::Io, "io.weight", "default 100\n"),
            (Controller::Cpuset, "cpuset.cpus", "\n"),
        ]);
        assert_eq!(read_limits(Version::V2, read), LimitsInPlace::default());
        // Files that cannot be read (controller not enabled) are no limit too.
        assert_eq!(read_limits(Version::V2, reader(&[])), LimitsInPlace::default());
    }

    #[test]
    fn v1_limits_read_back() {
        let read = reader(&[
            (Controller::Cpu, "cpu.cfs_quota_us", "50000\n"),
            (Controller::Cpu, "cpu.cfs_period_us", "100000\n"),
            (Controller::Cpu, "cpu.shares", "337\n"),
            (Controller::Memory, "memory.limit_in_bytes", "67108864\n"),
            (
                Controller::Io,
                "blkio.throttle.read_bps_device",
                "8:0 1048576\n8:16 2048\n",
            ),
            (Controller::Io, "blkio.throttle.write_iops_device", "8:16 50\n"),
            (Controller::Io, "blkio.throttle.write_bps_device", ""),
        ]);
        let limits = read_limits(Version::V1, read);
        assert_eq!(
            limits.cpu_max,
            Some(CpuMaxNow {
                quota_us: 50_000,
                period_us: 100_000
            })
        );
        // --cpu-weight 33 was written as 33*1024/100 = 337 shares.
        assert_eq!(limits.cpu_weight, Some(33));
        assert_eq!(limits.memory_max_bytes, Some(67_108_864));
        assert_eq!(
            limits.io_max,
            vec![
                IoMaxNow {
                    device: "8:0".into(),
                    rbps: Some(1_048_576),
                    ..IoMaxNow::default()
                },
                IoMaxNow {
                    device: "8:16".into(),
                    rbps: Some(2048),
                    wiops: Some(50),
                    ..IoMaxNow::default()
                },
            ]
        );
    }

    #[test]
    fn v1_no_limits_are_none() {
        let read = reader(&[
            (Controller::Cpu, "cpu.cfs_quota_us", "-1\n"),
            (Controller::Cpu, "cpu.cfs_period_us", "100000\n"),
            (Controller::Cpu, "cpu.shares", "1024\n"),
            (Controller::Memory, "memory.limit_in_bytes", "9223372036854771712\n"),
        ]);
        assert_eq!(read_limits(Version::V1, read), LimitsInPlace::default());
    }

    #[test]
    fn io_counters_read_back() {
        let v2 = "8:0 rbytes=1048576 wbytes=4096 rios=3 wios=1 dbytes=0 dios=0\n259:0 rbytes=0 wbytes=0 rios=0 wios=0 dbytes=0 dios=0\n";
        let expected = vec![IoBytesNow {
            device: "8:0".into(),
            read_bytes: 1_048_576,
            write_bytes: 4096,
        }];
        assert_eq!(
            read_io_bytes(Version::V2, |f| (f == "io.stat").then(|| v2.into())),
            expected
        );
        let v1 = "8:0 Read 1048576\n8:0 Write 4096\n8:0 Sync 0\n8:0 Async 1052672\n8:0 Total 1052672\n8:16 Read 0\nTotal 1052672\n";
        assert_eq!(
            read_io_bytes(Version::V1, |f| (f == "blkio.throttle.io_service_bytes")
                .then(|| v1.into())),
            expected
        );
        assert_eq!(read_io_bytes(Version::V2, |_| None), Vec::new());
    }

    #[test]
    fn shares_round_trip_every_weight() {
        for weight in 1..=10_000u64 {
            let shares = (weight * 1024 / 100).max(2);
            let expected = (weight != 100).then_some(weight);
            assert_eq!(parse_shares(&shares.to_string()), expected, "weight {weight}");
        }
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes((1 << 20) - 1), "1 MiB");
        assert_eq!(human_seconds(0.0), "0.0 s");
        assert_eq!(human_seconds(2.54), "2.5 s");
        assert_eq!(human_seconds(12.4), "12 s");
        assert_eq!(human_seconds(303.0), "5 min 3 s");
        assert_eq!(human_seconds(7500.0), "2 h 5 min");
        assert_eq!(human_seconds(273_600.0), "3 d 4 h");
        assert_eq!(cpu_percent(50_000, 100_000), "50%");
        assert_eq!(cpu_percent(250_000, 100_000), "250%");
        assert_eq!(cpu_percent(33_333, 100_000), "33.3%");
        assert_eq!(pid_list(&[]), "(empty)");
        assert_eq!(pid_list(&[7, 9]), "7,9");
        assert_eq!(pid_list(&[1, 2, 3, 4, 5]), "1,2,3,+2");
        assert_eq!(mode_of("auto-ffmpeg-4242"), "watch");
        assert_eq!(mode_of("cam-1"), "run/attach");
    }
}
