//! Flags shared by `run` and `attach`: limits, cgroup root, job id, output.

use std::path::PathBuf;

use clap::Args;

use crate::cgroup::limits::{
    CpuList, CpuMax, CpuWeight, IoClass, IoMax, IoWeight, Limits, MemoryMax, Nice, OomScoreAdj, PidsMax, SwapMax,
};
use crate::cgroup::names::{CgroupRoot, JobId};
use crate::net::NetRate;

/// A memory flag's value: a limit, or explicitly none (`0`/`max`). A
/// newtype because clap reads `Option<Option<T>>` as "flag with optional value".
#[derive(Debug, Clone, Copy)]
pub struct MemoryArg(pub Option<MemoryMax>);

/// `--memory-swap-max`: a limit (0 = no swap), or explicitly none (`max`).
#[derive(Debug, Clone, Copy)]
pub struct SwapArg(pub Option<SwapMax>);

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// CPU quota in percent of one core (100 = one core, 250 = 2.5 cores); wins over --cpu-max
    #[arg(long, value_name = "PCT", value_parser = CpuMax::parse_percent, allow_negative_numbers = true)]
    pub cpu_quota: Option<CpuMax>,
    /// Raw cpu.max: "QUOTA PERIOD" in µs, "QUOTA", or "max"
    #[arg(long, value_name = "\"QUOTA PERIOD\"|max", value_parser = CpuMax::parse, allow_negative_numbers = true)]
    pub cpu_max: Option<CpuMax>,
    /// CPU weight 1..10000 (100 = default share; v1: cpu.shares = weight*1024/100)
    #[arg(long, value_name = "WEIGHT", value_parser = CpuWeight::parse, allow_negative_numbers = true)]
    pub cpu_weight: Option<CpuWeight>,
    /// Memory limit in MiB (0 = none); wins over --memory-max
    #[arg(long, value_name = "MB", value_parser = |s: &str| MemoryMax::parse_mb(s).map(MemoryArg), allow_negative_numbers = true)]
    pub memory_limit: Option<MemoryArg>,
    /// Memory limit in bytes, K/M/G/T suffixes accepted (0 or max = none)
    #[arg(long, value_name = "BYTES", value_parser = |s: &str| MemoryMax::parse_bytes(s).map(MemoryArg), allow_negative_numbers = true)]
    pub memory_max: Option<MemoryArg>,
    /// Throttle the job above this much memory, before the hard limit: bytes with K/M/G/T suffixes (0 or max = none); cgroup v2 memory.high (v1 has none: reported not applied)
    #[arg(long, value_name = "BYTES", value_parser = |s: &str| MemoryMax::parse_bytes(s).map(MemoryArg), allow_negative_numbers = true)]
    pub memory_high: Option<MemoryArg>,
    /// The swap the job may use: bytes with K/M/G/T suffixes, 0 = no swap, max = no limit; cgroup v2 memory.swap.max (v1 has none: reported not applied)
    #[arg(long, value_name = "BYTES", value_parser = |s: &str| SwapMax::parse(s).map(SwapArg), allow_negative_numbers = true)]
    pub memory_swap_max: Option<SwapArg>,
    /// IO limit: "MAJ:MIN|PATH rbps=N wbps=N riops=N wiops=N" (repeatable; a PATH means its filesystem's whole disk)
    #[arg(long, value_name = "SPEC", value_parser = IoMax::parse)]
    pub io_max: Vec<IoMax>,
    /// The most tasks (processes and threads) the job may hold at once, 1..4194304 (pids.max; systemd's TasksMax): a fork bomb stops there
    #[arg(long, value_name = "N", value_parser = PidsMax::parse, allow_negative_numbers = true)]
    pub pids_max: Option<PidsMax>,
    /// The CPUs the job may run on, e.g. "0-3,6" (cpuset.cpus; systemd's AllowedCPUs): within the parent cgroup's set
    #[arg(long, value_name = "LIST", value_parser = CpuList::parse_cpus)]
    pub cpus: Option<CpuList>,
    /// The memory (NUMA) nodes the job may allocate from, e.g. "0" (cpuset.mems; systemd's AllowedMemoryNodes)
    #[arg(long, value_name = "LIST", value_parser = CpuList::parse_mems)]
    pub mems: Option<CpuList>,
    /// IO weight 1..10000 (100 = default share; io.weight and io.bfq.weight where present; v1: blkio weight = weight*5, 10..1000)
    #[arg(long, value_name = "N", value_parser = IoWeight::parse, allow_negative_numbers = true)]
    pub io_weight: Option<IoWeight>,
    /// Nice value -20..19, applied to every thread
    #[arg(long, value_name = "N", value_parser = Nice::parse, allow_negative_numbers = true)]
    pub nice: Option<Nice>,
    /// The OOM killer's preference -1000..1000 for the job's processes (oom_score_adj; -1000 = never, 1000 = first); children inherit it
    #[arg(long, value_name = "N", value_parser = OomScoreAdj::parse, allow_negative_numbers = true)]
    pub oom_score_adj: Option<OomScoreAdj>,
    /// Network send rate, in bits per second as tc writes it (500kbit, 8mbit, 1gbit): eBPF on the job's cgroup2 directory; paced where the device has the fq qdisc, policed elsewhere
    #[arg(long, value_name = "RATE", value_parser = NetRate::parse)]
    pub net_egress_max: Option<NetRate>,
    /// Network receive rate, as --net-egress-max: packets beyond the rate are dropped (policing)
    #[arg(long, value_name = "RATE", value_parser = NetRate::parse)]
    pub net_ingress_max: Option<NetRate>,
    /// IO scheduling class of every thread: idle, best-effort[:0-7] or realtime[:0-7] (like ionice; realtime needs CAP_SYS_ADMIN)
    #[arg(long, value_name = "CLASS[:LEVEL]", value_parser = IoClass::parse)]
    pub io_class: Option<IoClass>,
}

impl LimitArgs {
    /// Flags given together where one wins (the documented precedence), as
    /// warnings: the one that is ignored would otherwise go unnoticed.
    pub fn conflicts(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let (Some(quota), Some(max)) = (self.cpu_quota, self.cpu_max) {
            out.push(format!(
                "--cpu-quota and --cpu-max both given: --cpu-quota wins (cpu.max \"{quota}\"), --cpu-max \"{max}\" is ignored"
            ));
        }
        if let (Some(MemoryArg(limit)), Some(MemoryArg(max))) = (self.memory_limit, self.memory_max) {
            let show = |m: Option<MemoryMax>| m.map_or("no limit".to_string(), |m| format!("{} bytes", m.bytes()));
            out.push(format!(
                "--memory-limit and --memory-max both given: --memory-limit wins ({}), --memory-max ({}) is ignored",
                show(limit),
                show(max)
            ));
        }
        out
    }

    /// The limits, with the documented precedence applied (see
    /// [`LimitArgs::conflicts`]: each conflict is logged as a warning).
    pub fn limits(&self) -> Limits {
        for warning in self.conflicts() {
            tracing::warn!("{warning}");
        }
        Limits {
            cpu_max: self.cpu_quota.or(self.cpu_max),
            cpu_weight: self.cpu_weight,
            memory_max: match (self.memory_limit, self.memory_max) {
                (Some(MemoryArg(mb)), _) => mb,
                (None, Some(MemoryArg(bytes))) => bytes,
                (None, None) => None,
            },
            memory_high: self.memory_high.and_then(|MemoryArg(m)| m),
            memory_swap_max: self.memory_swap_max.and_then(|SwapArg(s)| s),
            io_max: self.io_max.clone(),
            pids_max: self.pids_max,
            cpus: self.cpus.clone(),
            mems: self.mems.clone(),
            io_weight: self.io_weight,
            nice: self.nice,
            oom_score_adj: self.oom_score_adj,
            net_egress_max: self.net_egress_max,
            net_ingress_max: self.net_ingress_max,
            io_class: self.io_class,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct GovernArgs {
    /// Job identifier: [A-Za-z0-9._-], 1-128 characters, not auto-… (default: unnamed-<ffrtmp pid>)
    #[arg(long, value_name = "ID", value_parser = parse_job_id)]
    pub job_id: Option<JobId>,
    /// Where job cgroups live: absolute (/ffrtmp) or relative to ffrtmp's own cgroup
    #[arg(long, value_name = "PATH", env = "FFRTMP_CGROUP_ROOT", default_value = "/ffrtmp", value_parser = CgroupRoot::parse)]
    pub cgroup_root: CgroupRoot,
    /// Fail (exit 125, nothing left behind) instead of going on when a limit cannot be applied
    #[arg(long)]
    pub strict: bool,
    /// Print the result as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON result to this file, replacing it atomically (a new file, mode 0644; a symlink there is replaced, not followed)
    #[arg(long, value_name = "PATH")]
    pub result_file: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `--job-id` of `run` and `attach`: a valid id outside the `auto-` names of
/// `ffrtmp watch`, whose restarted daemon takes over every populated `auto-*`
/// job under its root.
fn parse_job_id(s: &str) -> Result<JobId, String> {
    let id = JobId::parse(s).map_err(|e| e.to_string())?;
    if id.as_str().starts_with("auto-") {
        return Err("ids starting with auto- are reserved for the jobs of ffrtmp watch; choose another id".into());
    }
    Ok(id)
}
