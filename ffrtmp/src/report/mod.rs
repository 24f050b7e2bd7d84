//! Job results: the SLA reason, the summary line, the text block and the
//! JSON document (field names kept from the original tool; durations in
//! seconds as floats).

use std::path::PathBuf;
use std::time::SystemTime;

/// The tracing target of summary lines (`JOB … | sla=… | …`): always
/// written, whatever the log level, and in the Go format without the
/// `[watch]` prefix, as the old tool wrote them.
pub const SUMMARY_TARGET: &str = "ffrtmp::summary";

use serde::Serialize;

use crate::cgroup::{LimitOutcome, Removal, Usage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Run,
    Attach,
    Watch,
}

/// Why a job ended the way it did, and whether the platform kept its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// run: exited 0 with every limit in place.
    CompletedSuccessfully,
    /// run: the workload failed on its own (non-zero exit or a signal).
    WorkloadFailedPlatformOk,
    /// attach/watch: seen to exit with every limit in place.
    ObservedToCompletion,
    /// attach: ffrtmp stopped watching; the process runs on, governed.
    DetachedWorkloadContinues,
    /// The job cgroup could not be created: the workload ran ungoverned.
    CgroupCreationFailed,
    /// At least one requested limit was not applied.
    LimitApplyFailed,
    /// The kernel OOM-killed a process of the job (memory limit reached).
    OomKilled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CompletedSuccessfully => "completed_successfully",
            Reason::WorkloadFailedPlatformOk => "workload_failed_platform_ok",
            Reason::ObservedToCompletion => "observed_to_completion",
            Reason::DetachedWorkloadContinues => "detached_workload_continues",
            Reason::CgroupCreationFailed => "cgroup_creation_failed",
            Reason::LimitApplyFailed => "limit_apply_failed",
            Reason::OomKilled => "oom_killed",
        }
    }

    /// Violations are the platform's failures, not the workload's.
    pub fn compliant(self) -> bool {
        !matches!(
            self,
            Reason::CgroupCreationFailed | Reason::LimitApplyFailed | Reason::OomKilled
        )
    }
}

/// How the process ended, as far as we could see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signaled(i32),
    /// It exited but its status was not visible to us (not our child and
    /// already reaped by its parent).
    ExitedUnknown,
    /// We stopped watching; it still runs.
    Detached,
}

impl Ending {
    /// Shell-style code: the exit status, or 128+N for signal N.
    pub fn exit_code(self) -> Option<i32> {
        match self {
            Ending::Exited(c) => Some(c),
            Ending::Signaled(n) => Some(128 + n),
            Ending::ExitedUnknown | Ending::Detached => None,
        }
    }

    /// From a wait(2) status word (also `/proc/<pid>/stat` field 52).
    pub fn from_wait_status(status: i32) -> Ending {
        if libc::WIFSIGNALED(status) {
            Ending::Signaled(libc::WTERMSIG(status))
        } else {
            Ending::Exited(libc::WEXITSTATUS(status))
        }
    }
}

/// Facts the reason is derived from.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub mode: Mode,
    pub cgroup_created: bool,
    pub all_limits_applied: bool,
    pub oom_kills: Option<u64>,
    pub ending: Ending,
}

/// The SLA reason: the platform's failures first, then the workload's own.
pub fn classify(f: Facts) -> Reason {
    if f.ending == Ending::Detached {
        return Reason::DetachedWorkloadContinues;
    }
    if !f.cgroup_created {
        return Reason::CgroupCreationFailed;
    }
    if !f.all_limits_applied {
        return Reason::LimitApplyFailed;
    }
    if f.oom_kills.unwrap_or(0) > 0 {
        return Reason::OomKilled;
    }
    match (f.mode, f.ending) {
        (Mode::Run, Ending::Exited(0)) => Reason::CompletedSuccessfully,
        (Mode::Run, _) => Reason::WorkloadFailedPlatformOk,
        _ => Reason::ObservedToCompletion,
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestedLimit {
    pub limit: crate::cgroup::limits::LimitKind,
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LimitsReport {
    pub requested: Vec<RequestedLimit>,
    pub applied: Vec<LimitOutcome>,
    pub failed: Vec<LimitOutcome>,
}

impl LimitsReport {
    pub fn from_outcomes(outcomes: &[LimitOutcome]) -> LimitsReport {
        LimitsReport {
            requested: outcomes
                .iter()
                .map(|o| RequestedLimit {
                    limit: o.limit,
                    value: o.value.clone(),
                })
                .collect(),
            applied: outcomes.iter().filter(|o| o.applied()).cloned().collect(),
            failed: outcomes.iter().filter(|o| !o.applied()).cloned().collect(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CgroupReport {
    /// The job's cgroup directories (one per hierarchy on v1).
    pub paths: Vec<PathBuf>,
    /// How the process got in: `clone_into_cgroup`, `pre_exec_write`, `moved`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub removed: bool,
    /// Directories left behind and why (descendants still running, detach).
    pub left: Vec<LeftCgroup>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LeftCgroup {
    pub path: PathBuf,
    pub reason: String,
}

impl CgroupReport {
    pub fn record_removal(&mut self, removal: Removal) {
        self.removed = removal.left.is_empty();
        self.left = removal
            .left
            .into_iter()
            .map(|(path, reason)| LeftCgroup { path, reason })
            .collect();
    }
}

/// One job's final, immutable result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobResult {
    pub job_id: String,
    pub pid: u32,
    pub mode: Mode,
    pub start_time: String,
    pub end_time: String,
    /// Seconds from start (spawn or attach) to end, as a float.
    pub processing_seconds: f64,
    /// Shell-style: exit status, or 128+N when killed by signal N; null when
    /// not known (attach to a process whose status we could not see).
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub platform_sla_compliant: bool,
    pub platform_sla_reason: Reason,
    /// Whether this result counts for platform SLA statistics: false when
    /// the end of the job was not observed (detached).
    pub sla_eligible: bool,
    /// attach: seconds from the process's own start to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_seconds: Option<f64>,
    pub limits: LimitsReport,
    pub usage: Usage,
    pub cgroup: CgroupReport,
}

/// Inputs for a [`JobResult`].
pub struct JobRecord {
    pub job_id: String,
    pub pid: u32,
    pub mode: Mode,
    pub started: SystemTime,
    pub ended: SystemTime,
    pub ending: Ending,
    pub outcomes: Vec<LimitOutcome>,
    pub usage: Usage,
    pub cgroup: CgroupReport,
    pub cgroup_created: bool,
    pub process_seconds: Option<f64>,
}

impl JobResult {
    pub fn new(r: JobRecord) -> JobResult {
        let reason = classify(Facts {
            mode: r.mode,
            cgroup_created: r.cgroup_created,
            all_limits_applied: r.outcomes.iter().all(LimitOutcome::applied),
            oom_kills: r.usage.oom_kills,
            ending: r.ending,
        });
        let seconds = r.ended.duration_since(r.started).unwrap_or_default().as_secs_f64();
        JobResult {
            job_id: r.job_id,
            pid: r.pid,
            mode: r.mode,
            start_time: humantime::format_rfc3339_nanos(r.started).to_string(),
            end_time: humantime::format_rfc3339_nanos(r.ended).to_string(),
            processing_seconds: seconds,
            exit_code: r.ending.exit_code(),
            signal: match r.ending {
                Ending::Signaled(n) => Some(n),
                _ => None,
            },
            platform_sla_compliant: reason.compliant(),
            platform_sla_reason: reason,
            sla_eligible: reason != Reason::DetachedWorkloadContinues,
            process_seconds: r.process_seconds,
            limits: LimitsReport::from_outcomes(&r.outcomes),
            usage: r.usage,
            cgroup: r.cgroup,
        }
    }

    fn exit_text(&self) -> String {
        self.exit_code.map_or("unknown".to_string(), |c| c.to_string())
    }

    /// `JOB <id> | sla=COMPLIANT|VIOLATION | reason=<r> | runtime=<N>s | exit=<code> | pid=<pid>`
    /// Log the summary line as a tracing event of [`SUMMARY_TARGET`], the
    /// job's fields alongside (for the journal and JSON logs).
    pub fn log_summary(&self) {
        tracing::info!(
            target: SUMMARY_TARGET,
            job_id = %self.job_id,
            pid = self.pid,
            sla = if self.platform_sla_compliant { "COMPLIANT" } else { "VIOLATION" },
            reason = self.platform_sla_reason.as_str(),
            runtime_seconds = self.processing_seconds,
            exit_code = self.exit_code,
            "{}",
            self.summary_line()
        );
    }

    pub fn summary_line(&self) -> String {
        format!(
            "JOB {} | sla={} | reason={} | runtime={:.0}s | exit={} | pid={}",
            self.job_id,
            if self.platform_sla_compliant {
                "COMPLIANT"
            } else {
                "VIOLATION"
            },
            self.platform_sla_reason.as_str(),
            self.processing_seconds,
            // The old tool's -1 when the status is not known, so its
            // parsers read an integer.
            self.exit_code.map_or(-1, |c| c),
            self.pid
        )
    }

    /// The original tool's text block.
    pub fn text_block(&self) -> String {
        let mut s = format!("Job: {}\nPID: {}\n", self.job_id, self.pid);
        if self.mode == Mode::Run || self.exit_code.is_some() {
            s.push_str(&format!("Exit Code: {}\n", self.exit_text()));
        }
        s.push_str(&format!(
            "Duration: {:.2}s\nPlatform SLA: {} ({})\n",
            self.processing_seconds,
            self.platform_sla_compliant,
            self.platform_sla_reason.as_str()
        ));
        s
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a JobResult always serializes")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn facts(ending: Ending) -> Facts {
        Facts {
            mode: Mode::Run,
            cgroup_created: true,
            all_limits_applied: true,
            oom_kills: Some(0),
            ending,
        }
    }

    #[test]
    fn reasons() {
        assert_eq!(classify(facts(Ending::Exited(0))), Reason::CompletedSuccessfully);
        assert_eq!(classify(facts(Ending::Exited(3))), Reason::WorkloadFailedPlatformOk);
        assert_eq!(classify(facts(Ending::Signaled(15))), Reason::WorkloadFailedPlatformOk);
        assert_eq!(
            classify(Facts {
                oom_kills: Some(1),
                ..facts(Ending::Signaled(9))
            }),
            Reason::OomKilled
        );
        assert_eq!(
            classify(Facts {
                all_limits_applied: false,
                ..facts(Ending::Exited(0))
            }),
            Reason::LimitApplyFailed
        );
        assert_eq!(
            classify(Facts {
                cgroup_created: false,
                all_limits_applied: false,
                ..facts(Ending::Exited(0))
            }),
            Reason::CgroupCreationFailed
        );
        assert_eq!(
            classify(Facts {
                mode: Mode::Attach,
                ..facts(Ending::ExitedUnknown)
            }),
            Reason::ObservedToCompletion
        );
        assert_eq!(
            classify(Facts {
                mode: Mode::Attach,
                ..facts(Ending::Detached)
            }),
            Reason::DetachedWorkloadContinues
        );
        assert!(!Reason::OomKilled.compliant());
        assert!(Reason::WorkloadFailedPlatformOk.compliant());
    }

    #[test]
    fn wait_status_and_exit_codes() {
        assert_eq!(Ending::from_wait_status(42 << 8), Ending::Exited(42));
        assert_eq!(Ending::from_wait_status(15), Ending::Signaled(15));
        assert_eq!(Ending::Signaled(15).exit_code(), Some(143));
        assert_eq!(Ending::ExitedUnknown.exit_code(), None);
    }

    fn result(ending: Ending) -> JobResult {
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        JobResult::new(JobRecord {
            job_id: "job-1".into(),
            pid: 4242,
            mode: Mode::Run,
            started,
            ended: started + Duration::from_millis(1500),
            ending,
            outcomes: Vec::new(),
            usage: Usage::default(),
            cgroup: CgroupReport::default(),
            cgroup_created: true,
            process_seconds: None,
        })
    }

    #[test]
    fn summary_line_and_text_block() {
        let r = result(Ending::Exited(0));
        assert_eq!(
            r.summary_line(),
            "JOB job-1 | sla=COMPLIANT | reason=completed_successfully | runtime=2s | exit=0 | pid=4242"
        );
        assert_eq!(
            r.text_block(),
            "Job: job-1\nPID: 4242\nExit Code: 0\nDuration: 1.50s\nPlatform SLA: true (completed_successfully)\n"
        );
    }

    #[test]
    fn json_keeps_the_old_field_names_in_seconds() {
        let v: serde_json::Value = serde_json::from_str(&result(Ending::Signaled(15)).to_json()).unwrap();
        for key in [
            "job_id",
            "pid",
            "mode",
            "start_time",
            "end_time",
            "processing_seconds",
            "exit_code",
            "platform_sla_compliant",
            "platform_sla_reason",
            "signal",
            "sla_eligible",
            "limits",
            "usage",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["processing_seconds"], 1.5);
        assert_eq!(v["exit_code"], 143);
        assert_eq!(v["signal"], 15);
        assert_eq!(v["mode"], "run");
        assert_eq!(v["start_time"], "2023-11-14T22:13:20.000000000Z");
        assert_eq!(v["platform_sla_reason"], "workload_failed_platform_ok");
    }
}
