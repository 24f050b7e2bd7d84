//! `ffrtmp status`: what is governed right now, read from the cgroup tree.
//!
//! Read-only: it creates, changes and garbage-collects nothing, so it needs
//! no daemon and is safe next to a running `ffrtmp watch` or `ffrtmp run`.
//! The limits shown are read back from the control files, not remembered.

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::cgroup::dynmods;
use crate::cgroup::files;
use crate::cgroup::fs;
use crate::cgroup::limits::IoClass;
use crate::cgroup::{CgroupRoot, Controller, ExistingJob, Governor, Hierarchy, Version};
use crate::events::scan;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where job cgroups live: absolute (/ffrtmp) or relative to ffrtmp's own cgroup
    #[arg(long, value_name = "PATH", env = "FFRTMP_CGROUP_ROOT", default_value = "/ffrtmp", value_parser = CgroupRoot::parse)]
    pub cgroup_root: CgroupRoot,
    /// Print one JSON document instead of the table (schema version 1, described in operations.md)
    #[arg(long)]
    pub json: bool,
}

/// The schema version of the `--json` document. Fields may be added within
/// a version; none is removed or changes meaning.
const SCHEMA_VERSION: u32 = 1;

/// v1 shows "no memory limit" as the page counter's maximum
/// (9223372036854771712 on 4 KiB pages): anything this large is none.
const V1_NO_LIMIT: u64 = 1 << 62;

pub fn execute(args: StatusArgs) -> anyhow::Result<i32> {
    let hierarchy = Hierarchy::detect().context("detecting the cgroup hierarchy")?;
    // Governor::new, not job::governor: that one also collects garbage.
    let governor = Governor::new(hierarchy, args.cgroup_root);
    let mut report = Report::read(&governor, SystemTime::now());
    report.favordynmods = dynmods::detect().ok().map(|d| FavorDynmodsNow::new(&d));
    let text = if args.json {
        serde_json::to_string_pretty(&report).context("encoding the status as JSON")? + "\n"
    } else {
        report.table()
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")?;
    Ok(0)
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Report {
    version: u32,
    cgroup_root: String,
    /// "v1" (legacy or hybrid) or "v2" (unified).
    cgroup_version: &'static str,
    /// The root's directory in each hierarchy read.
    root_dirs: Vec<PathBuf>,
    jobs: Vec<JobStatus>,
    /// Whether moving a process into a job waits for an RCU grace period
    /// (`null` when it could not be read).
    favordynmods: Option<FavorDynmodsNow>,
}

/// The cgroup mount option favordynmods (see `ffrtmp watch --favor-dynmods`).
#[derive(Debug, Serialize)]
struct FavorDynmodsNow {
    /// The kernel knows it (/sys/kernel/cgroup/features lists it).
    supported: bool,
    /// It is on: moves into job cgroups do not wait for a grace period.
    on: bool,
    /// The cgroup2 mount a remount turns it on with; `null` on a cgroup v1
    /// only host.
    cgroup2_mount: Option<PathBuf>,
    /// What it means, in one line (the table's last line).
    #[serde(skip)]
    line: String,
}

impl FavorDynmodsNow {
    fn new(detected: &dynmods::Detected) -> FavorDynmodsNow {
        FavorDynmodsNow {
            supported: detected.supported,
            on: detected.state() == dynmods::State::On,
            cgroup2_mount: detected.cgroup2.as_ref().map(|m| m.mount_point.clone()),
            line: detected.describe("ffrtmp watch --favor-dynmods"),
        }
    }
}

#[derive(Debug, Serialize)]
struct JobStatus {
    job_id: String,
    /// "watch" for the daemon's `auto-…` jobs, else "run/attach".
    mode: &'static str,
    /// Processes in the job cgroup, ascending; empty when none is left.
    pids: Vec<u32>,
    /// comm of the first pid (`None` when the job is empty or it just exited).
    command: Option<String>,
    /// Since the job cgroup was created.
    age_seconds: Option<f64>,
    cgroup_paths: Vec<PathBuf>,
    usage: UsageNow,
    /// The limits in effect for the job's processes: a limit in a
    /// directory that does not hold all of them is left out here and listed
    /// in `not_in_effect`.
    limits: LimitsInPlace,
    /// cgroup v1: processes of the job missing from one of its hierarchies
    /// (a move cut short by a crash, until the daemon completes it).
    not_in_effect: Vec<NotInEffect>,
}

#[derive(Debug, Serialize)]
struct NotInEffect {
    pid: u32,
    /// The job's directory the process is not in.
    cgroup_path: PathBuf,
    /// The controllers of that hierarchy: their limits do not apply to it.
    controllers: Vec<&'static str>,
}

#[derive(Debug, Default, PartialEq, Serialize)]
struct UsageNow {
    cpu_seconds: Option<f64>,
    memory_current_bytes: Option<u64>,
    memory_peak_bytes: Option<u64>,
    throttled_periods: Option<u64>,
    throttled_seconds: Option<f64>,
    oom_kills: Option<u64>,
    /// The network programs' counters (a job with a network limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<crate::net::NetUsage>,
}

/// Limits read back from the control files; `None`/empty means no limit.
#[derive(Debug, Default, PartialEq, Serialize)]
struct LimitsInPlace {
    cpu_max: Option<CpuMaxNow>,
    /// `None` at the kernel default (v2 weight 100, v1 1024 shares).
    cpu_weight: Option<u64>,
    memory_max_bytes: Option<u64>,
    /// v2 `memory.high`; `None` at "max" (and always on v1, which has none).
    memory_high_bytes: Option<u64>,
    /// v2 `memory.swap.max`; `None` at "max" (and always on v1).
    memory_swap_max_bytes: Option<u64>,
    io_max: Vec<IoMaxNow>,
    /// `pids.max`; `None` at "max".
    pids_max: Option<u64>,
    /// `cpuset.cpus` as the kernel lists it; `None` when empty (v2: all
    /// of the parent's). A v1 cpuset cgroup always lists its CPUs.
    cpus: Option<String>,
    /// `cpuset.mems`, like `cpus`.
    mems: Option<String>,
    /// v2: the "default N" of `io.weight` (else `io.bfq.weight`), `None` at
    /// 100; v1: `blkio.bfq.weight` (else `blkio.weight`) as is, 10..=1000.
    io_weight: Option<u64>,
    /// The IO class of the job's first process (`ioprio_get`); `None` when
    /// it has none (it follows its nice value).
    io_class: Option<String>,
    /// The rate in the job's network bucket (`8mbit`), read from the
    /// programs attached to its cgroup2 directory.
    net_egress_max: Option<String>,
    net_ingress_max: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct CpuMaxNow {
    quota_us: u64,
    period_us: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
struct IoMaxNow {
    device: String,
    rbps: Option<u64>,
    wbps: Option<u64>,
    riops: Option<u64>,
    wiops: Option<u64>,
}

impl Report {
    fn read(governor: &Governor, now: SystemTime) -> Report {
        let version = governor.version();
        Report {
            version: SCHEMA_VERSION,
            cgroup_root: governor.root().to_string(),
            cgroup_version: match version {
                Version::V1 => "v1",
                Version::V2 => "v2",
            },
            root_dirs: governor.root_dirs(),
            jobs: governor
                .existing_jobs()
                .iter()
                .map(|job| JobStatus::read(job, version, now))
                .collect(),
            favordynmods: None,
        }
    }

    /// The table for people (or one line saying there is nothing), then
    /// one line on favordynmods.
    fn table(&self) -> String {
        let mut out = self.jobs_table();
        if let Some(f) = &self.favordynmods {
            out.push_str(&f.line);
            out.push('\n');
        }
        out
    }

    fn jobs_table(&self) -> String {
        if self.jobs.is_empty() {
            let dir = self
                .root_dirs
                .first()
                .map(|d| format!(" ({})", d.display()))
                .unwrap_or_default();
            return format!("no governed jobs under {}{dir}\n", self.cgroup_root);
        }
        let header = [
            "JOB",
            "MODE",
            "PIDS",
            "COMMAND",
            "AGE",
            "CPU",
            "MEMORY",
            "PEAK",
            "THROTTLED",
            "CPU MAX",
            "WEIGHT",
            "MEMORY MAX",
            "MEMORY HIGH",
            "SWAP MAX",
            "IO MAX",
            "PIDS MAX",
            "CPUS",
            "MEMS",
            "IO WEIGHT",
            "IO CLASS",
            "NET OUT",
            "NET IN",
        ];
        let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
            .chain(self.jobs.iter().map(JobStatus::row))
            .collect();
        let mut out = align(&rows);
        for job in &self.jobs {
            for n in &job.not_in_effect {
                out.push_str(&format!(
                    "warning: job {}: PID {} is not in {} — its {} limits do not apply to it\n",
                    job.job_id,
                    n.pid,
                    n.cgroup_path.display(),
                    n.controllers.join("/")
                ));
            }
        }
        out
    }
}

impl JobStatus {
    fn read(job: &ExistingJob, version: Version, now: SystemTime) -> JobStatus {
        let pids = job.pids();
        let io_class = io_class_of(pids.first().copied());
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
                throttled_periods: usage.throttled_periods,
                throttled_seconds: usage.throttled_seconds,
                oom_kills: usage.oom_kills,
                network: usage.network,
            },
            limits: LimitsInPlace {
                io_class,
                net_egress_max,
                net_ingress_max,
                ..read_limits(version, |c, f| if partial(c) { None } else { job.read(c, f) })
            },
            not_in_effect,
        }
    }

    /// One table row, in the header's column order.
    fn row(&self) -> Vec<String> {
        let dash = || "-".to_string();
        let u = &self.usage;
        let l = &self.limits;
        vec![
            self.job_id.clone(),
            self.mode.to_string(),
            pid_list(&self.pids),
            self.command.clone().unwrap_or_else(dash),
            self.age_seconds.map_or_else(dash, human_seconds),
            u.cpu_seconds.map_or_else(dash, human_seconds),
            u.memory_current_bytes.map_or_else(dash, human_bytes),
            u.memory_peak_bytes.map_or_else(dash, human_bytes),
            match (u.throttled_periods, u.throttled_seconds) {
                (Some(n), Some(s)) => format!("{n} ({})", human_seconds(s)),
                (Some(n), None) => n.to_string(),
                _ => dash(),
            },
            l.cpu_max.map_or_else(dash, |c| cpu_percent(c.quota_us, c.period_us)),
            l.cpu_weight.map_or_else(dash, |w| w.to_string()),
            l.memory_max_bytes.map_or_else(dash, human_bytes),
            l.memory_high_bytes.map_or_else(dash, human_bytes),
            l.memory_swap_max_bytes.map_or_else(dash, human_bytes),
            if l.io_max.is_empty() {
                dash()
            } else {
                l.io_max.iter().map(IoMaxNow::human).collect::<Vec<_>>().join("; ")
            },
            l.pids_max.map_or_else(dash, |n| n.to_string()),
            l.cpus.clone().unwrap_or_else(dash),
            l.mems.clone().unwrap_or_else(dash),
            l.io_weight.map_or_else(dash, |w| w.to_string()),
            l.io_class.clone().unwrap_or_else(dash),
            l.net_egress_max.clone().unwrap_or_else(dash),
            l.net_ingress_max.clone().unwrap_or_else(dash),
        ]
    }
}

impl IoMaxNow {
    /// "8:0 rbps=20 MiB/s riops=100".
    fn human(&self) -> String {
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
fn mode_of(job_id: &str) -> &'static str {
    if job_id.starts_with("auto-") {
        "watch"
    } else {
        "run/attach"
    }
}

/// The limits in place, from the control files `read(controller, file)`
/// returns (`None`: the file is absent or unreadable).
fn read_limits(version: Version, read: impl Fn(Controller, &str) -> Option<String>) -> LimitsInPlace {
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
fn pid_list(pids: &[u32]) -> String {
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
fn cpu_percent(quota_us: u64, period_us: u64) -> String {
    if period_us == 0 {
        return format!("{quota_us}/0");
    }
    trim_point_zero(format!("{:.1}", quota_us as f64 * 100.0 / period_us as f64)) + "%"
}

/// Binary units: "512 B", "1.5 GiB", "64 MiB".
fn human_bytes(bytes: u64) -> String {
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
fn human_seconds(seconds: f64) -> String {
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

fn trim_point_zero(s: String) -> String {
    match s.strip_suffix(".0") {
        Some(t) => t.to_owned(),
        None => s,
    }
}

/// Left-aligned columns two spaces apart, no trailing spaces.
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
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

    fn job(id: &str, pids: Vec<u32>, limits: LimitsInPlace) -> JobStatus {
        JobStatus {
            job_id: id.into(),
            mode: mode_of(id),
            command: pids.first().map(|_| "ffmpeg".to_string()),
            pids,
            age_seconds: Some(12.3),
            cgroup_paths: vec![PathBuf::from(format!("/sys/fs/cgroup/ffrtmp/{id}"))],
            usage: UsageNow {
                cpu_seconds: Some(17.9),
                memory_current_bytes: Some(201 << 20),
                memory_peak_bytes: Some(3 << 29),
                throttled_periods: Some(112),
                throttled_seconds: Some(3.1),
                oom_kills: Some(0),
                network: None,
            },
            limits,
            not_in_effect: Vec::new(),
        }
    }

    fn report(jobs: Vec<JobStatus>) -> Report {
        Report {
            version: SCHEMA_VERSION,
            cgroup_root: "/ffrtmp".into(),
            cgroup_version: "v2",
            root_dirs: vec![PathBuf::from("/sys/fs/cgroup/ffrtmp")],
            jobs,
            favordynmods: None,
        }
    }

    #[test]
    fn table_is_aligned_with_human_units() {
        let limited = LimitsInPlace {
            cpu_max: Some(CpuMaxNow {
                quota_us: 150_000,
                period_us: 100_000,
            }),
            cpu_weight: None,
            memory_max_bytes: Some(2 << 30),
            memory_high_bytes: None,
            memory_swap_max_bytes: None,
            io_max: vec![IoMaxNow {
                device: "8:0".into(),
                wbps: Some(20 << 20),
                ..IoMaxNow::default()
            }],
            pids_max: Some(20),
            cpus: Some("0-3,6".into()),
            mems: None,
            io_weight: Some(500),
            io_class: Some("idle".into()),
            net_egress_max: Some("20mbit".into()),
            net_ingress_max: None,
        };
        let table = report(vec![
            job("cam-1", vec![4242], limited),
            job("auto-ffmpeg-77", vec![], LimitsInPlace::default()),
        ])
        .table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        let cam = lines[1]
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>();
        assert_eq!(
            cam,
            [
                "cam-1",
                "run/attach",
                "4242",
                "ffmpeg",
                "12 s",
                "18 s",
                "201 MiB",
                "1.5 GiB",
                "112 (3.1 s)",
                "150%",
                "-",
                "2 GiB",
                "-",
                "-",
                "8:0 wbps=20 MiB/s",
                "20",
                "0-3,6",
                "-",
                "500",
                "idle",
                "20mbit",
                "-"
            ]
        );
        assert!(
            lines[2].starts_with("auto-ffmpeg-77  watch       (empty)  -  "),
            "{table}"
        );
        // Every column starts at the same offset on every line.
        for header in [
            "MODE",
            "PIDS",
            "COMMAND",
            "CPU MAX",
            "MEMORY MAX",
            "MEMORY HIGH",
            "SWAP MAX",
            "IO MAX",
            "PIDS MAX",
            "CPUS",
            "IO CLASS",
            "NET OUT",
        ] {
            let at = lines[0].find(header).unwrap();
            for line in &lines[1..] {
                assert_eq!(&line[at - 2..at], "  ", "column {header} misaligned:\n{table}");
                assert_ne!(&line[at..at + 1], " ", "column {header} misaligned:\n{table}");
            }
        }
        assert!(table.lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn no_jobs_says_so() {
        assert_eq!(
            report(Vec::new()).table(),
            "no governed jobs under /ffrtmp (/sys/fs/cgroup/ffrtmp)\n"
        );
    }

    #[test]
    fn favordynmods_is_the_last_line_and_a_json_object() {
        let detected = dynmods::Detected::parse(
            Some("nsdelegate\nfavordynmods\n"),
            "35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        let mut r = report(Vec::new());
        r.favordynmods = Some(FavorDynmodsNow::new(&detected));
        assert_eq!(
            r.table(),
            "no governed jobs under /ffrtmp (/sys/fs/cgroup/ffrtmp)\n\
             favordynmods: off (supported): each move may wait an RCU grace period, 5-40 ms; ffrtmp watch --favor-dynmods turns it on\n"
        );
        let doc = serde_json::to_value(&r).unwrap();
        assert_eq!(
            doc["favordynmods"],
            serde_json::json!({"supported": true, "on": false, "cgroup2_mount": "/sys/fs/cgroup"})
        );
        assert_eq!(
            serde_json::to_value(report(Vec::new())).unwrap()["favordynmods"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn json_document_shape() {
        let doc = serde_json::to_value(report(vec![job("cam-1", vec![4242, 4250], LimitsInPlace::default())])).unwrap();
        assert_eq!(doc["version"], 1);
        assert_eq!(doc["cgroup_root"], "/ffrtmp");
        assert_eq!(doc["cgroup_version"], "v2");
        let job = &doc["jobs"][0];
        assert_eq!(job["job_id"], "cam-1");
        assert_eq!(job["mode"], "run/attach");
        assert_eq!(job["pids"], serde_json::json!([4242, 4250]));
        assert_eq!(job["command"], "ffmpeg");
        assert_eq!(job["usage"]["memory_peak_bytes"], 3u64 << 29);
        assert_eq!(job["usage"]["throttled_periods"], 112);
        assert_eq!(
            job["limits"],
            serde_json::json!({"cpu_max": null, "cpu_weight": null, "memory_max_bytes": null, "memory_high_bytes": null, "memory_swap_max_bytes": null, "io_max": [], "pids_max": null, "cpus": null, "mems": null, "io_weight": null, "io_class": null, "net_egress_max": null, "net_ingress_max": null})
        );
        let mut keys: Vec<&str> = job.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "age_seconds",
                "cgroup_paths",
                "command",
                "job_id",
                "limits",
                "mode",
                "not_in_effect",
                "pids",
                "usage"
            ]
        );
    }
}
