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

use super::jobs_now::{IoMaxNow, JobStatus, cpu_percent, human_bytes, human_seconds, pid_list, read_jobs};
use crate::cgroup::dynmods;
use crate::cgroup::{CgroupRoot, Governor, Hierarchy, Version};

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
            jobs: read_jobs(governor, now),
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
            "OOM ADJ",
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
            l.oom_score_adj.map_or_else(dash, |a| a.to_string()),
            l.net_egress_max.clone().unwrap_or_else(dash),
            l.net_ingress_max.clone().unwrap_or_else(dash),
        ]
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
    use super::super::jobs_now::{CpuMaxNow, LimitsInPlace, UsageNow, mode_of};
    use super::*;

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
                cpu_periods: Some(160),
                throttled_periods: Some(112),
                throttled_seconds: Some(3.1),
                oom_kills: Some(0),
                io_bytes: Vec::new(),
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
            oom_score_adj: Some(-500),
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
                "-500",
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
            "OOM ADJ",
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
            serde_json::json!({"cpu_max": null, "cpu_weight": null, "memory_max_bytes": null, "memory_high_bytes": null, "memory_swap_max_bytes": null, "io_max": [], "pids_max": null, "cpus": null, "mems": null, "io_weight": null, "io_class": null, "oom_score_adj": null, "net_egress_max": null, "net_ingress_max": null})
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
