//! The one `Limits` model: parsed and validated once, translated per hierarchy.
//!
//! Every parser returns an [`InvalidLimit`] that says what is accepted; clap
//! puts the flag name and the bad value in front of it.

use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde::Serialize;

use super::files;
use super::hierarchy::Controller;
use crate::net::NetRate;

/// A limit value that does not parse or is out of range; the message says
/// what is accepted (the caller names the flag or key and the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidLimit(pub String);

impl From<&str> for InvalidLimit {
    fn from(s: &str) -> InvalidLimit {
        InvalidLimit(s.to_string())
    }
}

impl From<String> for InvalidLimit {
    fn from(s: String) -> InvalidLimit {
        InvalidLimit(s)
    }
}

/// The default CFS period, in microseconds (the kernel's default too).
pub const DEFAULT_PERIOD_US: u64 = 100_000;
const MIN_QUOTA_US: u64 = 1_000;
const PERIOD_RANGE_US: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
const MIN_MEMORY_BYTES: u64 = 4096;
/// `--cpu-quota`: 1% to 1000 cores.
const PERCENT_RANGE: std::ops::RangeInclusive<u64> = 1..=100_000;

/// `cpu.max`: a quota (µs per period) or no quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    /// `None` is "max" (no quota).
    pub quota_us: Option<u64>,
    pub period_us: u64,
}

impl CpuMax {
    /// `--cpu-quota PCT`: percent of one core (100 = one core, 250 = 2.5 cores).
    pub fn parse_percent(s: &str) -> Result<CpuMax, InvalidLimit> {
        let pct: u64 = s
            .trim()
            .parse()
            .map_err(|_| "expected a whole percentage of one core, 1..=100000 (100 = one core)".to_string())?;
        if !PERCENT_RANGE.contains(&pct) {
            return Err("expected a whole percentage of one core, 1..=100000 (100 = one core)".into());
        }
        Ok(CpuMax {
            quota_us: Some(pct * DEFAULT_PERIOD_US / 100),
            period_us: DEFAULT_PERIOD_US,
        })
    }

    /// The `--cpu-quota` percentage that gives exactly this limit, if one
    /// does (the default period, a whole percent in the accepted range).
    pub fn percent(&self) -> Option<u64> {
        const PER_PERCENT: u64 = DEFAULT_PERIOD_US / 100;
        let quota = self.quota_us?;
        let pct = quota / PER_PERCENT;
        (self.period_us == DEFAULT_PERIOD_US && quota % PER_PERCENT == 0 && PERCENT_RANGE.contains(&pct)).then_some(pct)
    }

    /// `--cpu-max "QUOTA PERIOD"`, `"QUOTA"`, `"max"` or `"max PERIOD"` (µs).
    pub fn parse(s: &str) -> Result<CpuMax, InvalidLimit> {
        const EXPECTED: &str = "expected \"QUOTA PERIOD\", \"QUOTA\" or \"max [PERIOD]\" in microseconds, QUOTA >= 1000, PERIOD 1000..=1000000";
        let mut words = s.split_whitespace();
        let quota = words.next().ok_or(EXPECTED)?;
        let period_us = match words.next() {
            Some(p) => p.parse().map_err(|_| EXPECTED)?,
            None => DEFAULT_PERIOD_US,
        };
        if words.next().is_some() || !PERIOD_RANGE_US.contains(&period_us) {
            return Err(EXPECTED.into());
        }
        let quota_us = match quota {
            "max" => None,
            q => {
                let q: u64 = q.parse().map_err(|_| EXPECTED)?;
                if q < MIN_QUOTA_US {
                    return Err(EXPECTED.into());
                }
                Some(q)
            }
        };
        Ok(CpuMax { quota_us, period_us })
    }
}

impl fmt::Display for CpuMax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.quota_us {
            Some(q) => write!(f, "{q} {}", self.period_us),
            None => write!(f, "max {}", self.period_us),
        }
    }
}

/// `cpu.weight`, 1..=10000 (100 is the kernel default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuWeight(u16);

impl CpuWeight {
    pub fn parse(s: &str) -> Result<CpuWeight, InvalidLimit> {
        match s.trim().parse::<u16>() {
            Ok(w) if (1..=10_000).contains(&w) => Ok(CpuWeight(w)),
            _ => Err("expected an integer 1..=10000 (100 is the default share)".into()),
        }
    }
    pub fn get(self) -> u16 {
        self.0
    }
    /// v1 `cpu.shares`: weight×1024/100, the original tool's mapping.
    pub fn v1_shares(self) -> u64 {
        (u64::from(self.0) * 1024 / 100).max(2)
    }
}

/// `pids.max`: the most tasks (processes and threads) the job may hold at
/// once, like systemd's `TasksMax=`; 1 up to the kernel's `PID_MAX_LIMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidsMax(u32);

/// `memory.swap.max` in bytes: 0 is "no swap at all" (unlike the memory
/// limits, where 0 means none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapMax(u64);

impl SwapMax {
    /// Bytes with an optional K/M/G/T suffix, `0` = no swap; `max` = no
    /// limit (`None`).
    pub fn parse(s: &str) -> Result<Option<SwapMax>, InvalidLimit> {
        const EXPECTED: &str = "expected bytes with an optional K, M, G or T suffix (0 = no swap), or max for no limit";
        let s = s.trim();
        if s == "max" {
            return Ok(None);
        }
        parse_size(s).map(|b| Some(SwapMax(b))).map_err(|_| EXPECTED.into())
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Why `--memory-swap-max` cannot apply on a v1 memory hierarchy.
const SWAP_MAX_ON_V1: &str =
    "memory.swap.max needs cgroup v2: v1's memory.memsw.limit_in_bytes limits memory and swap together";

/// Why `--memory-high` cannot apply on a v1 memory hierarchy.
const MEMORY_HIGH_ON_V1: &str = "memory.high needs cgroup v2: v1 has no throttle below the hard limit (memory.soft_limit_in_bytes only steers reclaim under global pressure)";

/// `PID_MAX_LIMIT` on 64-bit kernels (include/linux/threads.h): 2^22.
const PIDS_MAX_LIMIT: u32 = 4_194_304;

impl PidsMax {
    pub fn parse(s: &str) -> Result<PidsMax, InvalidLimit> {
        match s.trim().parse::<u32>() {
            Ok(n) if (1..=PIDS_MAX_LIMIT).contains(&n) => Ok(PidsMax(n)),
            _ => Err(format!("expected a whole number of tasks, 1 to {PIDS_MAX_LIMIT}").into()),
        }
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A memory limit in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMax(u64);

impl MemoryMax {
    /// `--memory-limit MB`. `0` means no limit (the old tool's default).
    pub fn parse_mb(s: &str) -> Result<Option<MemoryMax>, InvalidLimit> {
        const EXPECTED: &str = "expected a whole number of MiB, 0 (no limit) to 17592186044415";
        let mb: u64 = s.trim().parse().map_err(|_| EXPECTED)?;
        if mb == 0 {
            return Ok(None);
        }
        let bytes = mb.checked_mul(1024 * 1024).ok_or(EXPECTED)?;
        Ok(Some(MemoryMax(bytes)))
    }

    /// `--memory-max BYTES` with an optional K/M/G/T suffix; `0` or `max` means no limit.
    pub fn parse_bytes(s: &str) -> Result<Option<MemoryMax>, InvalidLimit> {
        const EXPECTED: &str = "expected bytes >= 4096 with an optional K, M, G or T suffix, or 0/max for no limit";
        let s = s.trim();
        if s == "max" {
            return Ok(None);
        }
        let bytes = parse_size(s).map_err(|_| EXPECTED)?;
        match bytes {
            0 => Ok(None),
            b if b < MIN_MEMORY_BYTES => Err(EXPECTED.into()),
            b => Ok(Some(MemoryMax(b))),
        }
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Per-process niceness, -20..=19.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nice(i8);

impl Nice {
    pub fn parse(s: &str) -> Result<Nice, InvalidLimit> {
        match s.trim().parse::<i8>() {
            Ok(n) if (-20..=19).contains(&n) => Ok(Nice(n)),
            _ => Err("expected an integer -20..=19".into()),
        }
    }
    pub fn get(self) -> i8 {
        self.0
    }
}

/// `/proc/<pid>/oom_score_adj`, -1000..=1000: how much more (or less)
/// readily the OOM killer picks the job's process (-1000: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomScoreAdj(i16);

impl OomScoreAdj {
    pub fn parse(s: &str) -> Result<OomScoreAdj, InvalidLimit> {
        match s.trim().parse::<i16>() {
            Ok(n) if (-1000..=1000).contains(&n) => Ok(OomScoreAdj(n)),
            _ => Err("expected an integer -1000..=1000 (-1000: never OOM-killed)".into()),
        }
    }
    pub fn get(self) -> i16 {
        self.0
    }
}

/// A list of CPU or memory-node numbers in the kernel's list format
/// (`cpulist_parse`), as `cpuset.cpus` and `cpuset.mems` take it: numbers
/// and ranges, ascending, e.g. `0-3,6`. Kept as the ranges it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(Vec<(u32, u32)>);

/// The largest CPU or node number accepted (the kernel's `NR_CPUS` is at
/// most 8192); the kernel checks the real set when the file is written.
const CPU_LIST_MAX: u32 = 8191;

impl CpuList {
    /// `what` names the numbers in the message ("CPU", "memory node").
    pub fn parse(s: &str, what: &str) -> Result<CpuList, InvalidLimit> {
        let expected = || {
            InvalidLimit(format!(
                "expected {what} numbers 0..={CPU_LIST_MAX} and ranges in ascending order, like 0-3,6"
            ))
        };
        let number = |n: &str| n.parse::<u32>().ok().filter(|n| *n <= CPU_LIST_MAX);
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for item in s.trim().split(',') {
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (number(a), number(b)),
                None => (number(item), number(item)),
            };
            let (Some(first), Some(last)) = (first, last) else {
                return Err(expected());
            };
            let after_previous = ranges.last().is_none_or(|&(_, end)| first > end);
            if first > last || !after_previous {
                return Err(expected());
            }
            ranges.push((first, last));
        }
        Ok(CpuList(ranges))
    }

    pub fn parse_cpus(s: &str) -> Result<CpuList, InvalidLimit> {
        CpuList::parse(s, "CPU")
    }

    pub fn parse_mems(s: &str) -> Result<CpuList, InvalidLimit> {
        CpuList::parse(s, "memory node")
    }

    /// Is every number of `self` in `other`?
    pub fn is_subset_of(&self, other: &CpuList) -> bool {
        self.0
            .iter()
            .all(|&(a, b)| (a..=b).all(|n| other.0.iter().any(|&(c, d)| (c..=d).contains(&n))))
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (first, last)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match first == last {
                true => write!(f, "{first}")?,
                false => write!(f, "{first}-{last}")?,
            }
        }
        Ok(())
    }
}

/// The IO weight, 1..=10000 like systemd's `IOWeight=` (100 is the
/// kernel's default). Files of other ranges get it mapped the way systemd
/// maps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoWeight(u16);

impl IoWeight {
    pub const DEFAULT: IoWeight = IoWeight(100);

    pub fn parse(s: &str) -> Result<IoWeight, InvalidLimit> {
        match s.trim().parse::<u16>() {
            Ok(w) if (1..=10_000).contains(&w) => Ok(IoWeight(w)),
            _ => Err("expected an integer 1..=10000 (100 is the default share)".into()),
        }
    }
    pub fn get(self) -> u16 {
        self.0
    }
    /// `io.bfq.weight` (1..=1000, default 100): systemd's `BFQ_WEIGHT()`,
    /// linear on each side of the default, so 1..=100 stay as they are and
    /// 100..=10000 become 100..=1000.
    pub fn bfq(self) -> u64 {
        let w = u64::from(self.0);
        match w <= 100 {
            true => 100 - (100 - w) * (100 - 1) / (100 - 1),
            false => 100 + (w - 100) * (1000 - 100) / (10_000 - 100),
        }
    }
    /// v1 `blkio.weight` and `blkio.bfq.weight` (10..=1000, default 500):
    /// systemd's `cgroup_weight_io_to_blkio()`, weight×500/100 clamped.
    pub fn v1_blkio(self) -> u64 {
        (u64::from(self.0) * 500 / 100).clamp(10, 1000)
    }
}

/// The IO scheduling class of the job's threads (`ioprio_set`), like
/// `ionice`: `idle`, `best-effort[:0-7]`, `realtime[:0-7]` (0 is the
/// highest priority; 4 is the kernel's default level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    Idle,
    BestEffort(u8),
    Realtime(u8),
}

/// The level a class without one gets: the kernel's `IOPRIO_NORM`.
const IOPRIO_NORM: u8 = 4;
/// `IOPRIO_CLASS_SHIFT` (include/uapi/linux/ioprio.h).
const IOPRIO_CLASS_SHIFT: u16 = 13;

impl IoClass {
    pub fn parse(s: &str) -> Result<IoClass, InvalidLimit> {
        const EXPECTED: &str = "expected idle, best-effort[:0-7] or realtime[:0-7] (0 = highest, 4 = default level)";
        let (class, level) = match s.trim().split_once(':') {
            Some((c, l)) => (c, Some(l)),
            None => (s.trim(), None),
        };
        let level = match level.map(str::parse::<u8>) {
            None => IOPRIO_NORM,
            Some(Ok(l)) if l <= 7 => l,
            Some(_) => return Err(EXPECTED.into()),
        };
        match (class, level) {
            ("idle", _) if s.contains(':') => Err(EXPECTED.into()),
            ("idle", _) => Ok(IoClass::Idle),
            ("best-effort", l) => Ok(IoClass::BestEffort(l)),
            ("realtime", l) => Ok(IoClass::Realtime(l)),
            _ => Err(EXPECTED.into()),
        }
    }

    /// The `ioprio` value for `ioprio_set`: class << 13 | level
    /// (`IOPRIO_PRIO_VALUE`; classes RT = 1, BE = 2, IDLE = 3).
    pub fn ioprio(self) -> u16 {
        let (class, level) = match self {
            IoClass::Realtime(l) => (1, l),
            IoClass::BestEffort(l) => (2, l),
            IoClass::Idle => (3, 0),
        };
        (class << IOPRIO_CLASS_SHIFT) | u16::from(level)
    }

    /// The class an `ioprio_get` value names. Class 0 (none: the thread
    /// follows its nice value) is best-effort at the level the kernel derives.
    pub fn from_ioprio(raw: u16) -> Option<IoClass> {
        let level = (raw & 0x7) as u8;
        match raw >> IOPRIO_CLASS_SHIFT {
            1 => Some(IoClass::Realtime(level)),
            2 => Some(IoClass::BestEffort(level)),
            3 => Some(IoClass::Idle),
            _ => None,
        }
    }

    /// More than the kernel grants by default: realtime can starve every
    /// other process's IO (and needs CAP_SYS_ADMIN).
    pub fn is_grant(self) -> bool {
        matches!(self, IoClass::Realtime(_))
    }
}

impl fmt::Display for IoClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoClass::Idle => f.write_str("idle"),
            IoClass::BestEffort(l) => write!(f, "best-effort:{l}"),
            IoClass::Realtime(l) => write!(f, "realtime:{l}"),
        }
    }
}

/// A block device number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceNumber {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// One `io.max` line: a whole disk and at least one of the four limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoMax {
    pub device: DeviceNumber,
    pub rbps: Option<u64>,
    pub wbps: Option<u64>,
    pub riops: Option<u64>,
    pub wiops: Option<u64>,
}

const IO_EXPECTED: &str = "expected \"MAJ:MIN|PATH rbps=N wbps=N riops=N wiops=N\" (at least one key; N takes K/M/G)";

impl IoMax {
    /// Parse `--io-max`, resolving a path to its filesystem's whole disk
    /// under `/sys` (the kernel rejects partitions).
    pub fn parse(s: &str) -> Result<IoMax, InvalidLimit> {
        Self::parse_with_sys(s, Path::new("/sys"))
    }

    pub fn parse_with_sys(s: &str, sys: &Path) -> Result<IoMax, InvalidLimit> {
        let mut words = s.split_whitespace();
        let target = words.next().ok_or(IO_EXPECTED)?;
        let device = match parse_device_number(target) {
            Some(dev) => dev,
            None if target.starts_with('/') || target.starts_with('.') => resolve_whole_disk(Path::new(target), sys)?,
            None => return Err(IO_EXPECTED.into()),
        };
        let mut io = IoMax {
            device,
            rbps: None,
            wbps: None,
            riops: None,
            wiops: None,
        };
        for word in words {
            let (key, value) = word.split_once('=').ok_or(IO_EXPECTED)?;
            let value = parse_size(value).map_err(|_| format!("bad value in {word:?}: {IO_EXPECTED}"))?;
            if value == 0 {
                return Err(format!("{word:?}: a limit of 0 would stop all IO; {IO_EXPECTED}").into());
            }
            let slot = match key {
                "rbps" => &mut io.rbps,
                "wbps" => &mut io.wbps,
                "riops" => &mut io.riops,
                "wiops" => &mut io.wiops,
                _ => return Err(format!("unknown key {key:?}: {IO_EXPECTED}").into()),
            };
            *slot = Some(value);
        }
        if io.entries().next().is_none() {
            return Err(IO_EXPECTED.into());
        }
        Ok(io)
    }

    /// The limits that are set, as (v2 key, v1 file, value).
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> {
        [
            ("rbps", files::BLKIO_READ_BPS, self.rbps),
            ("wbps", files::BLKIO_WRITE_BPS, self.wbps),
            ("riops", files::BLKIO_READ_IOPS, self.riops),
            ("wiops", files::BLKIO_WRITE_IOPS, self.wiops),
        ]
        .into_iter()
        .filter_map(|(k, f, v)| v.map(|v| (k, f, v)))
    }
}

impl fmt::Display for IoMax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.device)?;
        for (key, _, value) in self.entries() {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

fn parse_device_number(s: &str) -> Option<DeviceNumber> {
    let (major, minor) = s.split_once(':')?;
    Some(DeviceNumber {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
    })
}

/// The whole disk holding `path` (or `path` itself when it is a block device).
fn resolve_whole_disk(path: &Path, sys: &Path) -> Result<DeviceNumber, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    let dev = if meta.file_type().is_block_device() {
        meta.rdev()
    } else {
        meta.dev()
    };
    let dev = DeviceNumber {
        major: libc::major(dev),
        minor: libc::minor(dev),
    };
    let node = sys.join("dev/block").join(dev.to_string());
    if !node.exists() {
        return Err(format!(
            "{} is on device {dev}, which is not a block device (tmpfs, overlay or network filesystem?); give MAJ:MIN of a disk",
            path.display()
        ));
    }
    if !node.join("partition").exists() {
        return Ok(dev);
    }
    // A partition's sysfs directory sits inside its disk's directory.
    let disk_dev = node.join("../dev");
    let text = std::fs::read_to_string(&disk_dev).map_err(|e| format!("reading {}: {e}", disk_dev.display()))?;
    parse_device_number(text.trim()).ok_or_else(|| format!("unexpected content {text:?} in {}", disk_dev.display()))
}

/// A size that did not parse (callers say what is expected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSize;

/// A non-negative integer with an optional binary K/M/G/T suffix.
pub fn parse_size(s: &str) -> Result<u64, InvalidSize> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(InvalidSize),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = digits.parse().map_err(|_| InvalidSize)?;
    n.checked_mul(1u64 << shift).ok_or(InvalidSize)
}

/// Everything a job may be limited by. Build it with the setters so the
/// documented precedence holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpu_max: Option<CpuMax>,
    pub cpu_weight: Option<CpuWeight>,
    pub memory_max: Option<MemoryMax>,
    /// `memory.high` (v2): above it the job is throttled and reclaimed
    /// hard, before `memory_max` would OOM-kill it.
    pub memory_high: Option<MemoryMax>,
    /// `memory.swap.max` (v2): `Some(0)` keeps the job out of swap.
    pub memory_swap_max: Option<SwapMax>,
    pub io_max: Vec<IoMax>,
    pub pids_max: Option<PidsMax>,
    /// `cpuset.cpus`: the CPUs the job may run on (systemd's `AllowedCPUs=`).
    pub cpus: Option<CpuList>,
    /// `cpuset.mems`: the memory nodes it may allocate from (`AllowedMemoryNodes=`).
    pub mems: Option<CpuList>,
    /// `io.weight` / `io.bfq.weight` (v1: `blkio.weight` / `blkio.bfq.weight`).
    pub io_weight: Option<IoWeight>,
    pub nice: Option<Nice>,
    /// Per process, like nice: the main process's `oom_score_adj`
    /// (children inherit it at fork).
    pub oom_score_adj: Option<OomScoreAdj>,
    /// Network rates, enforced by eBPF programs on the job's cgroup2
    /// directory (not control files: see [`crate::net`]).
    pub net_egress_max: Option<NetRate>,
    pub net_ingress_max: Option<NetRate>,
    /// Per thread, like nice: the IO scheduling class (`ioprio_set`).
    pub io_class: Option<IoClass>,
}

/// Which kind of limit a setting is; the name used in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    CpuMax,
    CpuWeight,
    MemoryMax,
    MemoryHigh,
    MemorySwapMax,
    IoMax,
    PidsMax,
    Cpus,
    Mems,
    IoWeight,
    Nice,
    OomScoreAdj,
    NetEgressMax,
    NetIngressMax,
    IoClass,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::CpuMax => "cpu_max",
            LimitKind::CpuWeight => "cpu_weight",
            LimitKind::MemoryMax => "memory_max",
            LimitKind::MemoryHigh => "memory_high",
            LimitKind::MemorySwapMax => "memory_swap_max",
            LimitKind::IoMax => "io_max",
            LimitKind::PidsMax => "pids_max",
            LimitKind::Cpus => "cpus",
            LimitKind::Mems => "mems",
            LimitKind::IoWeight => "io_weight",
            LimitKind::Nice => "nice",
            LimitKind::OomScoreAdj => "oom_score_adj",
            LimitKind::NetEgressMax => "net_egress_max",
            LimitKind::NetIngressMax => "net_ingress_max",
            LimitKind::IoClass => "io_class",
        })
    }
}

/// One control-file write in one controller's hierarchy (v2: all the same dir).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    pub controller: Controller,
    pub file: &'static str,
    pub value: String,
    pub mode: WriteMode,
}

/// How a [`FileWrite`] is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// The file must be there; a failed write fails the setting.
    Required,
    /// Written where the kernel offers the file (e.g. `io.bfq.weight` only
    /// with BFQ); the setting fails when none of its files is there.
    IfPresent,
    /// v1 cpuset: the parent cgroup's value of the same file (`value` is
    /// unused): an empty `cpuset.cpus` would refuse every task.
    CopyParent,
}

/// One requested limit and the files that carry it on this hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub kind: LimitKind,
    /// The requested value, as a person would write it.
    pub value: String,
    pub writes: Vec<FileWrite>,
    /// This hierarchy has no file for it (e.g. `memory.high` on v1): why,
    /// reported as the outcome's error; nothing is written.
    pub unsupported: Option<&'static str>,
}

/// Which file layout to translate to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// The controllers the cgroup limits need (nice needs none).
    pub fn controllers(&self) -> Vec<Controller> {
        let mut c = Vec::new();
        if self.cpu_max.is_some() || self.cpu_weight.is_some() {
            c.push(Controller::Cpu);
        }
        if self.memory_max.is_some() || self.memory_high.is_some() || self.memory_swap_max.is_some() {
            c.push(Controller::Memory);
        }
        if !self.io_max.is_empty() {
            c.push(Controller::Io);
        }
        if self.pids_max.is_some() {
            c.push(Controller::Pids);
        }
        if self.net_egress_max.is_some() || self.net_ingress_max.is_some() {
            c.push(Controller::Net);
        }
        if self.cpus.is_some() || self.mems.is_some() {
            c.push(Controller::Cpuset);
        }
        if self.io_weight.is_some() && !c.contains(&Controller::Io) {
            c.push(Controller::Io);
        }
        c
    }

    /// The cgroup settings (nice excluded: it is applied to the process).
    /// "cpu_max=50000 100000, memory_max=67108864, nice=4", or "none":
    /// what a log line says applies.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .settings(Version::V2)
            .into_iter()
            .map(|s| format!("{}={}", s.kind, s.value))
            .collect();
        if let Some(nice) = self.nice {
            parts.push(format!("nice={}", nice.get()));
        }
        if let Some(adj) = self.oom_score_adj {
            parts.push(format!("oom_score_adj={}", adj.get()));
        }
        if let Some(rate) = self.net_egress_max {
            parts.push(format!("net_egress_max={rate}"));
        }
        if let Some(rate) = self.net_ingress_max {
            parts.push(format!("net_ingress_max={rate}"));
        }
        if let Some(class) = self.io_class {
            parts.push(format!("io_class={class}"));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    /// The network limits, each with its kind (applied by
    /// [`crate::net`], not by control files).
    pub fn net_limits(&self) -> Vec<(LimitKind, NetRate)> {
        let egress = self.net_egress_max.map(|r| (LimitKind::NetEgressMax, r));
        let ingress = self.net_ingress_max.map(|r| (LimitKind::NetIngressMax, r));
        egress.into_iter().chain(ingress).collect()
    }

    pub fn settings(&self, version: Version) -> Vec<Setting> {
        let mut out = Vec::new();
        let w = |controller, file, value: String| FileWrite {
            controller,
            file,
            value,
            mode: WriteMode::Required,
        };
        if let Some(cpu) = self.cpu_max {
            let writes = match version {
                Version::V2 => vec![w(Controller::Cpu, files::CPU_MAX, cpu.to_string())],
                // Period first: the quota is validated against it.
                Version::V1 => vec![
                    w(Controller::Cpu, files::CFS_PERIOD_US, cpu.period_us.to_string()),
                    w(
                        Controller::Cpu,
                        files::CFS_QUOTA_US,
                        cpu.quota_us.map_or("-1".to_string(), |q| q.to_string()),
                    ),
                ],
            };
            out.push(Setting {
                kind: LimitKind::CpuMax,
                value: cpu.to_string(),
                writes,
                unsupported: None,
            });
        }
        if let Some(weight) = self.cpu_weight {
            let write = match version {
                Version::V2 => w(Controller::Cpu, files::CPU_WEIGHT, weight.get().to_string()),
                Version::V1 => w(Controller::Cpu, files::CPU_SHARES, weight.v1_shares().to_string()),
            };
            out.push(Setting {
                kind: LimitKind::CpuWeight,
                value: weight.get().to_string(),
                writes: vec![write],
                unsupported: None,
            });
        }
        if let Some(mem) = self.memory_max {
            let file = match version {
                Version::V2 => files::MEMORY_MAX,
                Version::V1 => files::MEMORY_LIMIT_IN_BYTES,
            };
            out.push(Setting {
                kind: LimitKind::MemoryMax,
                value: mem.bytes().to_string(),
                writes: vec![w(Controller::Memory, file, mem.bytes().to_string())],
                unsupported: None,
            });
        }
        // Limits only v2 has a file for; v1 reports them unsupported.
        let v2_only = |kind, file, bytes: u64, on_v1| Setting {
            kind,
            value: bytes.to_string(),
            writes: match version {
                Version::V2 => vec![w(Controller::Memory, file, bytes.to_string())],
                Version::V1 => Vec::new(),
            },
            unsupported: (version == Version::V1).then_some(on_v1),
        };
        if let Some(high) = self.memory_high {
            out.push(v2_only(
                LimitKind::MemoryHigh,
                files::MEMORY_HIGH,
                high.bytes(),
                MEMORY_HIGH_ON_V1,
            ));
        }
        if let Some(swap) = self.memory_swap_max {
            out.push(v2_only(
                LimitKind::MemorySwapMax,
                files::MEMORY_SWAP_MAX,
                swap.bytes(),
                SWAP_MAX_ON_V1,
            ));
        }
        for io in &self.io_max {
            let writes = match version {
                Version::V2 => vec![w(Controller::Io, files::IO_MAX, io.to_string())],
                Version::V1 => io
                    .entries()
                    .map(|(_, file, value)| w(Controller::Io, file, format!("{} {value}", io.device)))
                    .collect(),
            };
            out.push(Setting {
                kind: LimitKind::IoMax,
                value: io.to_string(),
                writes,
                unsupported: None,
            });
        }
        if let Some(pids) = self.pids_max {
            // The same file in v2 and in v1's pids hierarchy.
            out.push(Setting {
                kind: LimitKind::PidsMax,
                value: pids.get().to_string(),
                writes: vec![w(Controller::Pids, files::PIDS_MAX, pids.get().to_string())],
                unsupported: None,
            });
        }
        // The same files in v2 and in v1's cpuset hierarchy; a v1 job dir
        // is filled from its parent before these are written.
        for (kind, list, file) in [
            (LimitKind::Cpus, &self.cpus, files::CPUSET_CPUS),
            (LimitKind::Mems, &self.mems, files::CPUSET_MEMS),
        ] {
            if let Some(list) = list {
                out.push(Setting {
                    kind,
                    value: list.to_string(),
                    writes: vec![w(Controller::Cpuset, file, list.to_string())],
                    unsupported: None,
                });
            }
        }
        if let Some(weight) = self.io_weight {
            out.push(Setting {
                kind: LimitKind::IoWeight,
                value: weight.get().to_string(),
                writes: io_weight_writes(weight, version),
                unsupported: None,
            });
        }
        out
    }
}

/// The weight files of each version, each written where present: iocost's
/// `io.weight` and BFQ's `io.bfq.weight` on v2; on v1 BFQ's
/// `blkio.bfq.weight` and CFQ's `blkio.weight` (kernels before 5.0).
fn io_weight_writes(weight: IoWeight, version: Version) -> Vec<FileWrite> {
    let w = |file, value: String| FileWrite {
        controller: Controller::Io,
        file,
        value,
        mode: WriteMode::IfPresent,
    };
    match version {
        Version::V2 => vec![
            w(files::IO_WEIGHT, format!("default {}", weight.get())),
            w(files::IO_BFQ_WEIGHT, weight.bfq().to_string()),
        ],
        Version::V1 => vec![
            w(files::BLKIO_BFQ_WEIGHT, weight.v1_blkio().to_string()),
            w(files::BLKIO_WEIGHT, weight.v1_blkio().to_string()),
        ],
    }
}

/// The settings that turn a live cgroup's `old` limits into `new`: a changed
/// limit is written, a removed one is put back to the kernel's "no limit".
/// Unchanged limits are not written (a `memory.max` write can reclaim).
/// `old: None` (not known, e.g. a job taken over after a restart) writes
/// every limit of `new` and resets the cpu and memory limits it lacks.
pub fn update_settings(old: Option<&Limits>, new: &Limits, version: Version) -> Vec<Setting> {
    let unknown = Limits::default();
    let known = old.is_some();
    let changed = |a: bool| !known || a;
    let old = old.unwrap_or(&unknown);
    let mut out = Vec::new();
    let wanted = new.settings(version);
    let take = |kind: LimitKind| wanted.iter().filter(move |s| s.kind == kind).cloned();
    let reset = |kind: LimitKind, controller: Controller, writes: &[(&'static str, &str)]| Setting {
        kind,
        value: "default".into(),
        writes: writes
            .iter()
            .map(|(file, value)| FileWrite {
                controller,
                file,
                value: (*value).to_string(),
                mode: WriteMode::Required,
            })
            .collect(),
        unsupported: None,
    };
    if changed(old.cpu_max != new.cpu_max) {
        match new.cpu_max {
            Some(_) => out.extend(take(LimitKind::CpuMax)),
            None => out.push(match version {
                Version::V2 => reset(LimitKind::CpuMax, Controller::Cpu, &[(files::CPU_MAX, "max 100000")]),
                Version::V1 => reset(LimitKind::CpuMax, Controller::Cpu, &[(files::CFS_QUOTA_US, "-1")]),
            }),
        }
    }
    if changed(old.cpu_weight != new.cpu_weight) {
        match new.cpu_weight {
            Some(_) => out.extend(take(LimitKind::CpuWeight)),
            None => out.push(match version {
                Version::V2 => reset(LimitKind::CpuWeight, Controller::Cpu, &[(files::CPU_WEIGHT, "100")]),
                Version::V1 => reset(LimitKind::CpuWeight, Controller::Cpu, &[(files::CPU_SHARES, "1024")]),
            }),
        }
    }
    if changed(old.memory_max != new.memory_max) {
        match new.memory_max {
            Some(_) => out.extend(take(LimitKind::MemoryMax)),
            None => out.push(match version {
                Version::V2 => reset(LimitKind::MemoryMax, Controller::Memory, &[(files::MEMORY_MAX, "max")]),
                Version::V1 => reset(
                    LimitKind::MemoryMax,
                    Controller::Memory,
                    &[(files::MEMORY_LIMIT_IN_BYTES, "-1")],
                ),
            }),
        }
    }
    // Limits set only when asked for: written when they change, put back to
    // the kernel's "max" when removed (where this version has the file), and
    // — unlike cpu and memory — not reset when the old limits are unknown: a
    // job made without one may lack its file (v1: a whole pids cgroup).
    let mut optional =
        |kind: LimitKind, changed: bool, wanted: bool, reset_file: Option<(Controller, &'static str)>| {
            if !changed && (known || !wanted) {
                return;
            }
            if wanted {
                out.extend(take(kind));
            } else if let Some((controller, file)) = reset_file {
                out.push(reset(kind, controller, &[(file, "max")]));
            }
        };
    let on_v2 = |controller, file| (version == Version::V2).then_some((controller, file));
    optional(
        LimitKind::MemoryHigh,
        old.memory_high != new.memory_high,
        new.memory_high.is_some(),
        on_v2(Controller::Memory, files::MEMORY_HIGH),
    );
    optional(
        LimitKind::MemorySwapMax,
        old.memory_swap_max != new.memory_swap_max,
        new.memory_swap_max.is_some(),
        on_v2(Controller::Memory, files::MEMORY_SWAP_MAX),
    );
    optional(
        LimitKind::PidsMax,
        old.pids_max != new.pids_max,
        new.pids_max.is_some(),
        Some((Controller::Pids, files::PIDS_MAX)),
    );
    // cpuset: removed means "all of the parent's" again — v2's empty value,
    // v1's copy of the parent's list (v1 refuses an empty one).
    for (kind, old_list, new_list, file) in [
        (LimitKind::Cpus, &old.cpus, &new.cpus, files::CPUSET_CPUS),
        (LimitKind::Mems, &old.mems, &new.mems, files::CPUSET_MEMS),
    ] {
        if old_list == new_list && (known || new_list.is_none()) {
            continue;
        }
        if new_list.is_some() {
            out.extend(take(kind));
        } else if known {
            let mut setting = reset(kind, Controller::Cpuset, &[(file, "\n")]);
            if version == Version::V1 {
                setting.writes[0].mode = WriteMode::CopyParent;
            }
            out.push(setting);
        }
    }
    if old.io_weight != new.io_weight || (!known && new.io_weight.is_some()) {
        match new.io_weight {
            Some(_) => out.extend(take(LimitKind::IoWeight)),
            None if known => out.push(Setting {
                kind: LimitKind::IoWeight,
                value: "default".into(),
                writes: io_weight_writes(IoWeight::DEFAULT, version),
                unsupported: None,
            }),
            None => {}
        }
    }
    // io: a device whose line changed or went away is reset first (a v2
    // write leaves unnamed keys as they were), then written anew.
    for io in &old.io_max {
        if new.io_max.contains(io) {
            continue;
        }
        let dev = io.device.to_string();
        let mut setting = match version {
            Version::V2 => reset(LimitKind::IoMax, Controller::Io, &[(files::IO_MAX, "")]),
            Version::V1 => reset(
                LimitKind::IoMax,
                Controller::Io,
                &[
                    (files::BLKIO_READ_BPS, ""),
                    (files::BLKIO_WRITE_BPS, ""),
                    (files::BLKIO_READ_IOPS, ""),
                    (files::BLKIO_WRITE_IOPS, ""),
                ],
            ),
        };
        for w in &mut setting.writes {
            w.value = match version {
                Version::V2 => format!("{dev} rbps=max wbps=max riops=max wiops=max"),
                Version::V1 => format!("{dev} 0"),
            };
        }
        setting.value = format!("{dev} default");
        out.push(setting);
    }
    for (io, setting) in new
        .io_max
        .iter()
        .zip(wanted.iter().filter(|s| s.kind == LimitKind::IoMax))
    {
        if !old.io_max.contains(io) {
            out.push(setting.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quota_percent() {
        assert_eq!(CpuMax::parse_percent("50").unwrap().to_string(), "50000 100000");
        assert_eq!(CpuMax::parse_percent("250").unwrap().to_string(), "250000 100000");
        for bad in ["0", "-5", "abc", "1.5", "100001", ""] {
            assert!(CpuMax::parse_percent(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn percent_is_what_parse_percent_reads() {
        for pct in ["1", "50", "250", "100000"] {
            let cpu = CpuMax::parse_percent(pct).unwrap();
            assert_eq!(cpu.percent().map(|p| p.to_string()).as_deref(), Some(pct));
        }
        // Not a whole percent, not the default period, beyond 1000 cores, no quota.
        for raw in [
            "1500 100000",
            "50000 50000",
            "100001000 100000",
            "200000000 100000",
            "max",
        ] {
            assert_eq!(CpuMax::parse(raw).unwrap().percent(), None, "{raw}");
        }
    }

    #[test]
    fn cpu_max_raw() {
        assert_eq!(CpuMax::parse("200000 100000").unwrap().to_string(), "200000 100000");
        assert_eq!(CpuMax::parse("max").unwrap().to_string(), "max 100000");
        assert_eq!(CpuMax::parse("max 50000").unwrap().to_string(), "max 50000");
        assert_eq!(CpuMax::parse("30000").unwrap().to_string(), "30000 100000");
        for bad in [
            "",
            "500 100000",
            "1000 999",
            "1000 2000000",
            "a b",
            "1000 1000 1000",
            "-1 100000",
        ] {
            assert!(CpuMax::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn memory_high_is_v2_only_and_said_so_on_v1() {
        let limits = Limits {
            memory_high: MemoryMax::parse_bytes("64M").unwrap(),
            ..Limits::default()
        };
        assert_eq!(limits.controllers(), [Controller::Memory]);
        let v2 = limits.settings(Version::V2);
        assert_eq!(v2[0].kind, LimitKind::MemoryHigh);
        assert_eq!(v2[0].writes[0].file, files::MEMORY_HIGH);
        assert_eq!(v2[0].writes[0].value, "67108864");
        assert_eq!(v2[0].unsupported, None);
        let v1 = limits.settings(Version::V1);
        assert!(v1[0].writes.is_empty());
        assert!(
            v1[0]
                .unsupported
                .is_some_and(|why| why.starts_with("memory.high needs cgroup v2"))
        );
        let reset = update_settings(Some(&limits), &Limits::default(), Version::V2);
        assert_eq!((reset.len(), reset[0].writes[0].value.as_str()), (1, "max"));
        assert!(update_settings(Some(&limits), &Limits::default(), Version::V1).is_empty());
    }

    #[test]
    fn swap_max_zero_is_no_swap_and_v2_only() {
        assert_eq!(SwapMax::parse("0").unwrap().map(SwapMax::bytes), Some(0));
        assert_eq!(SwapMax::parse("1G").unwrap().map(SwapMax::bytes), Some(1 << 30));
        assert_eq!(SwapMax::parse("max").unwrap(), None);
        for bad in ["-1", "lots", "", "1.5G"] {
            assert!(SwapMax::parse(bad).is_err(), "{bad:?} accepted");
        }
        let limits = Limits {
            memory_swap_max: SwapMax::parse("0").unwrap(),
            ..Limits::default()
        };
        let v2 = limits.settings(Version::V2);
        assert_eq!(
            (v2[0].writes[0].file, v2[0].writes[0].value.as_str()),
            (files::MEMORY_SWAP_MAX, "0")
        );
        let v1 = limits.settings(Version::V1);
        assert!(v1[0].writes.is_empty() && v1[0].unsupported.is_some());
        let reset = update_settings(Some(&limits), &Limits::default(), Version::V2);
        assert_eq!(reset[0].writes[0].value, "max");
    }

    #[test]
    fn pids_max_range_and_files() {
        assert_eq!(PidsMax::parse("20").unwrap().get(), 20);
        assert_eq!(PidsMax::parse("4194304").unwrap().get(), 4_194_304);
        for bad in ["0", "-1", "4194305", "max", "1.5", "", "20 tasks"] {
            assert!(PidsMax::parse(bad).is_err(), "{bad:?} accepted");
        }
        let limits = Limits {
            pids_max: Some(PidsMax::parse("20").unwrap()),
            ..Limits::default()
        };
        assert_eq!(limits.controllers(), [Controller::Pids]);
        for version in [Version::V1, Version::V2] {
            let settings = limits.settings(version);
            assert_eq!(settings.len(), 1);
            assert_eq!(settings[0].kind, LimitKind::PidsMax);
            assert_eq!(
                settings[0].writes,
                [FileWrite {
                    controller: Controller::Pids,
                    file: files::PIDS_MAX,
                    value: "20".into(),
                    mode: WriteMode::Required,
                }]
            );
        }
        assert_eq!(limits.describe(), "pids_max=20");
        // Removed on reload: back to the kernel's "max".
        let reset = update_settings(Some(&limits), &Limits::default(), Version::V2);
        assert_eq!(reset.len(), 1);
        assert_eq!(reset[0].writes[0].value, "max");
    }

    #[test]
    fn cpu_weight_range_and_v1_shares() {
        assert_eq!(CpuWeight::parse("100").unwrap().v1_shares(), 1024);
        assert_eq!(CpuWeight::parse("50").unwrap().v1_shares(), 512);
        assert_eq!(CpuWeight::parse("10000").unwrap().v1_shares(), 102_400);
        assert_eq!(CpuWeight::parse("1").unwrap().v1_shares(), 10);
        for bad in ["0", "10001", "-1", "x"] {
            assert!(CpuWeight::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(MemoryMax::parse_mb("512").unwrap().unwrap().bytes(), 512 << 20);
        assert_eq!(MemoryMax::parse_mb("0").unwrap(), None);
        assert!(MemoryMax::parse_mb("-1").is_err());
        assert!(MemoryMax::parse_mb("99999999999999999").is_err());
        assert_eq!(MemoryMax::parse_bytes("1G").unwrap().unwrap().bytes(), 1 << 30);
        assert_eq!(MemoryMax::parse_bytes("8192").unwrap().unwrap().bytes(), 8192);
        assert_eq!(MemoryMax::parse_bytes("max").unwrap(), None);
        for bad in ["100", "1X", "", "-4096"] {
            assert!(MemoryMax::parse_bytes(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn nice_range() {
        assert_eq!(Nice::parse("-20").unwrap().get(), -20);
        assert_eq!(Nice::parse("19").unwrap().get(), 19);
        assert!(Nice::parse("20").is_err());
        assert!(Nice::parse("-21").is_err());
    }

    #[test]
    fn io_max_by_device_number() {
        let io = IoMax::parse("8:0 rbps=1M wiops=100").unwrap();
        assert_eq!(io.device, DeviceNumber { major: 8, minor: 0 });
        assert_eq!(io.rbps, Some(1 << 20));
        assert_eq!(io.wiops, Some(100));
        assert_eq!(io.to_string(), "8:0 rbps=1048576 wiops=100");
        for bad in [
            "8:0",
            "8:0 rbps",
            "8:0 xbps=1",
            "8:0 rbps=0",
            "8:0 rbps=1Q",
            "sda rbps=1",
            "",
        ] {
            assert!(IoMax::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn io_max_path_resolves_partition_to_whole_disk() {
        // A fake /sys where the file's device is a partition of disk 254:0.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, "x").unwrap();
        let dev = std::fs::metadata(&file).unwrap().dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let sys = dir.path().join("sys");
        let disk = sys.join("devices/virtual/block/fakedisk");
        let part = disk.join("fakedisk1");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(disk.join("dev"), "254:0\n").unwrap();
        std::fs::write(part.join("partition"), "1\n").unwrap();
        std::fs::create_dir_all(sys.join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&part, sys.join(format!("dev/block/{major}:{minor}"))).unwrap();

        let io = IoMax::parse_with_sys(&format!("{} wbps=2M", file.display()), &sys).unwrap();
        assert_eq!(io.device, DeviceNumber { major: 254, minor: 0 });

        // Not a block device at all: a clear error, not a guess.
        let err = IoMax::parse_with_sys(&format!("{} wbps=2M", file.display()), dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a block device"), "{err}");
    }

    #[test]
    fn cpu_lists_are_ascending_numbers_and_ranges() {
        for (given, canonical) in [("0-3,6", "0-3,6"), ("5", "5"), (" 0,2-2,4 ", "0,2,4"), ("8191", "8191")] {
            assert_eq!(CpuList::parse_cpus(given).unwrap().to_string(), canonical, "{given:?}");
        }
        for bad in [
            "", "3-1", "0-3,2", "1,1", "a", "0-", "-1", "0,,1", "8192", "0-3 6", "0;1",
        ] {
            let e = CpuList::parse_cpus(bad).unwrap_err();
            assert!(e.0.starts_with("expected CPU numbers"), "{bad:?}: {e}");
        }
        assert!(
            CpuList::parse_mems("x")
                .unwrap_err()
                .0
                .starts_with("expected memory node numbers")
        );
        let list = |s| CpuList::parse_cpus(s).unwrap();
        assert!(list("1,3").is_subset_of(&list("0-3")));
        assert!(!list("1-4").is_subset_of(&list("0-3")));
    }

    #[test]
    fn cpus_and_mems_go_to_cpuset_and_are_reset_on_reload() {
        let limits = Limits {
            cpus: Some(CpuList::parse_cpus("0-1").unwrap()),
            mems: Some(CpuList::parse_mems("0").unwrap()),
            ..Limits::default()
        };
        assert_eq!(limits.controllers(), [Controller::Cpuset]);
        for version in [Version::V1, Version::V2] {
            assert_eq!(
                files(&limits.settings(version)),
                [
                    (Controller::Cpuset, "cpuset.cpus", "0-1"),
                    (Controller::Cpuset, "cpuset.mems", "0")
                ]
            );
        }
        assert_eq!(limits.describe(), "cpus=0-1, mems=0");
        // Removed: v2 empties the list (all of the parent's), v1 copies the
        // parent's (it refuses an empty one).
        let v2 = update_settings(Some(&limits), &Limits::default(), Version::V2);
        assert_eq!(
            files(&v2),
            [
                (Controller::Cpuset, "cpuset.cpus", "\n"),
                (Controller::Cpuset, "cpuset.mems", "\n")
            ]
        );
        let v1 = update_settings(Some(&limits), &Limits::default(), Version::V1);
        assert!(v1.iter().all(|s| s.writes[0].mode == WriteMode::CopyParent), "{v1:?}");
        // Unknown old limits: of cpuset, only what is wanted is written.
        let only_cpus = Limits {
            mems: None,
            ..limits.clone()
        };
        let taken_over = update_settings(None, &only_cpus, Version::V1);
        let cpuset: Vec<_> = files(&taken_over)
            .into_iter()
            .filter(|f| f.0 == Controller::Cpuset)
            .collect();
        assert_eq!(cpuset, [(Controller::Cpuset, "cpuset.cpus", "0-1")]);
        assert!(update_settings(Some(&limits), &limits, Version::V2).is_empty());
    }

    #[test]
    fn io_weight_range_and_systemds_mappings() {
        for bad in ["0", "10001", "-1", "x", ""] {
            assert!(IoWeight::parse(bad).is_err(), "{bad:?} accepted");
        }
        let w = |n: &str| IoWeight::parse(n).unwrap();
        // BFQ: 1..=100 as is, 100..=10000 onto 100..=1000.
        assert_eq!(
            [
                w("1").bfq(),
                w("50").bfq(),
                w("100").bfq(),
                w("5050").bfq(),
                w("10000").bfq()
            ],
            [1, 50, 100, 550, 1000]
        );
        // v1 blkio: ×5, clamped to 10..=1000.
        assert_eq!(
            [
                w("1").v1_blkio(),
                w("100").v1_blkio(),
                w("150").v1_blkio(),
                w("10000").v1_blkio()
            ],
            [10, 500, 750, 1000]
        );
        let limits = Limits {
            io_weight: Some(w("200")),
            ..Limits::default()
        };
        assert_eq!(limits.controllers(), [Controller::Io]);
        let v2 = limits.settings(Version::V2);
        assert_eq!(
            files(&v2),
            [
                (Controller::Io, "io.weight", "default 200"),
                (Controller::Io, "io.bfq.weight", "109")
            ]
        );
        assert!(v2[0].writes.iter().all(|w| w.mode == WriteMode::IfPresent));
        assert_eq!(
            files(&limits.settings(Version::V1)),
            [
                (Controller::Io, "blkio.bfq.weight", "1000"),
                (Controller::Io, "blkio.weight", "1000")
            ]
        );
        let reset = update_settings(Some(&limits), &Limits::default(), Version::V1);
        assert_eq!(
            files(&reset),
            [
                (Controller::Io, "blkio.bfq.weight", "500"),
                (Controller::Io, "blkio.weight", "500")
            ]
        );
        // With io_max too, Io is needed once.
        let both = Limits {
            io_max: vec![IoMax::parse("8:0 rbps=1M").unwrap()],
            ..limits
        };
        assert_eq!(both.controllers(), [Controller::Io]);
    }

    #[test]
    fn io_class_parses_like_ionice_and_encodes_the_ioprio() {
        assert_eq!(IoClass::parse("idle").unwrap(), IoClass::Idle);
        assert_eq!(IoClass::parse("best-effort").unwrap(), IoClass::BestEffort(4));
        assert_eq!(IoClass::parse("best-effort:7").unwrap(), IoClass::BestEffort(7));
        assert_eq!(IoClass::parse("realtime:0").unwrap(), IoClass::Realtime(0));
        for bad in [
            "",
            "rt",
            "idle:3",
            "best-effort:8",
            "realtime:-1",
            "best-effort:",
            "Idle",
            "none",
        ] {
            let e = IoClass::parse(bad).unwrap_err();
            assert!(
                e.0.starts_with("expected idle, best-effort[:0-7] or realtime[:0-7]"),
                "{bad:?}: {e}"
            );
        }
        // IOPRIO_PRIO_VALUE(class, level) = class << 13 | level.
        assert_eq!(IoClass::Realtime(3).ioprio(), (1 << 13) | 3);
        assert_eq!(IoClass::BestEffort(7).ioprio(), (2 << 13) | 7);
        assert_eq!(IoClass::Idle.ioprio(), 3 << 13);
        for class in [IoClass::Idle, IoClass::BestEffort(0), IoClass::Realtime(7)] {
            assert_eq!(IoClass::from_ioprio(class.ioprio()), Some(class));
            assert_eq!(IoClass::parse(&class.to_string()).unwrap(), class);
        }
        assert_eq!(IoClass::from_ioprio(0), None);
        assert!(IoClass::Realtime(4).is_grant() && !IoClass::Idle.is_grant());
        let limits = Limits {
            io_class: Some(IoClass::Idle),
            ..Limits::default()
        };
        assert!(limits.controllers().is_empty() && limits.settings(Version::V2).is_empty());
        assert_eq!(limits.describe(), "io_class=idle");
    }

    fn full_limits() -> Limits {
        Limits {
            cpu_max: Some(CpuMax::parse_percent("50").unwrap()),
            cpu_weight: Some(CpuWeight::parse("200").unwrap()),
            memory_max: MemoryMax::parse_mb("256").unwrap(),
            memory_high: None,
            memory_swap_max: None,
            io_max: vec![IoMax::parse("254:0 rbps=1M wbps=2M").unwrap()],
            pids_max: None,
            nice: Some(Nice::parse("5").unwrap()),
            oom_score_adj: None,
            ..Limits::default()
        }
    }

    fn files(settings: &[Setting]) -> Vec<(Controller, &str, &str)> {
        settings
            .iter()
            .flat_map(|s| s.writes.iter().map(|w| (w.controller, w.file, w.value.as_str())))
            .collect()
    }

    #[test]
    fn translate_v2() {
        let s = full_limits().settings(Version::V2);
        assert_eq!(
            files(&s),
            vec![
                (Controller::Cpu, "cpu.max", "50000 100000"),
                (Controller::Cpu, "cpu.weight", "200"),
                (Controller::Memory, "memory.max", "268435456"),
                (Controller::Io, "io.max", "254:0 rbps=1048576 wbps=2097152"),
            ]
        );
    }

    #[test]
    fn translate_v1_puts_memory_in_the_memory_hierarchy() {
        let s = full_limits().settings(Version::V1);
        assert_eq!(
            files(&s),
            vec![
                (Controller::Cpu, "cpu.cfs_period_us", "100000"),
                (Controller::Cpu, "cpu.cfs_quota_us", "50000"),
                (Controller::Cpu, "cpu.shares", "2048"),
                (Controller::Memory, "memory.limit_in_bytes", "268435456"),
                (Controller::Io, "blkio.throttle.read_bps_device", "254:0 1048576"),
                (Controller::Io, "blkio.throttle.write_bps_device", "254:0 2097152"),
            ]
        );
        let unlimited = Limits {
            cpu_max: Some(CpuMax::parse("max").unwrap()),
            ..Limits::default()
        };
        assert_eq!(
            files(&unlimited.settings(Version::V1))[1],
            (Controller::Cpu, "cpu.cfs_quota_us", "-1")
        );
    }
}
