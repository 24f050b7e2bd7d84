//! The one `Limits` model: parsed and validated once, translated per hierarchy.
//!
//! Every parser returns `Err(String)` that says what is accepted; clap puts the
//! flag name and the bad value in front of it.

use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde::Serialize;

use super::hierarchy::Controller;

/// The default CFS period, in microseconds (the kernel's default too).
pub const DEFAULT_PERIOD_US: u64 = 100_000;
const MIN_QUOTA_US: u64 = 1_000;
const PERIOD_RANGE_US: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
const MIN_MEMORY_BYTES: u64 = 4096;

/// `cpu.max`: a quota (µs per period) or no quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    /// `None` is "max" (no quota).
    pub quota_us: Option<u64>,
    pub period_us: u64,
}

impl CpuMax {
    /// `--cpu-quota PCT`: percent of one core (100 = one core, 250 = 2.5 cores).
    pub fn parse_percent(s: &str) -> Result<CpuMax, String> {
        let pct: u64 = s
            .trim()
            .parse()
            .map_err(|_| "expected a whole percentage of one core, 1..=100000 (100 = one core)".to_string())?;
        if !(1..=100_000).contains(&pct) {
            return Err("expected a whole percentage of one core, 1..=100000 (100 = one core)".into());
        }
        Ok(CpuMax {
            quota_us: Some(pct * DEFAULT_PERIOD_US / 100),
            period_us: DEFAULT_PERIOD_US,
        })
    }

    /// `--cpu-max "QUOTA PERIOD"`, `"QUOTA"`, `"max"` or `"max PERIOD"` (µs).
    pub fn parse(s: &str) -> Result<CpuMax, String> {
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
    pub fn parse(s: &str) -> Result<CpuWeight, String> {
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

/// A memory limit in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMax(u64);

impl MemoryMax {
    /// `--memory-limit MB`. `0` means no limit (the old tool's default).
    pub fn parse_mb(s: &str) -> Result<Option<MemoryMax>, String> {
        const EXPECTED: &str = "expected a whole number of MiB (0 = no limit)";
        let mb: u64 = s.trim().parse().map_err(|_| EXPECTED)?;
        if mb == 0 {
            return Ok(None);
        }
        let bytes = mb.checked_mul(1024 * 1024).ok_or(EXPECTED)?;
        Ok(Some(MemoryMax(bytes)))
    }

    /// `--memory-max BYTES` with an optional K/M/G suffix; `0` or `max` means no limit.
    pub fn parse_bytes(s: &str) -> Result<Option<MemoryMax>, String> {
        const EXPECTED: &str = "expected bytes >= 4096 with an optional K, M or G suffix, or 0/max for no limit";
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
    pub fn parse(s: &str) -> Result<Nice, String> {
        match s.trim().parse::<i8>() {
            Ok(n) if (-20..=19).contains(&n) => Ok(Nice(n)),
            _ => Err("expected an integer -20..=19".into()),
        }
    }
    pub fn get(self) -> i8 {
        self.0
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
    pub fn parse(s: &str) -> Result<IoMax, String> {
        Self::parse_with_sys(s, Path::new("/sys"))
    }

    pub fn parse_with_sys(s: &str, sys: &Path) -> Result<IoMax, String> {
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
                return Err(format!("{word:?}: a limit of 0 would stop all IO; {IO_EXPECTED}"));
            }
            let slot = match key {
                "rbps" => &mut io.rbps,
                "wbps" => &mut io.wbps,
                "riops" => &mut io.riops,
                "wiops" => &mut io.wiops,
                _ => return Err(format!("unknown key {key:?}: {IO_EXPECTED}")),
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
            ("rbps", "blkio.throttle.read_bps_device", self.rbps),
            ("wbps", "blkio.throttle.write_bps_device", self.wbps),
            ("riops", "blkio.throttle.read_iops_device", self.riops),
            ("wiops", "blkio.throttle.write_iops_device", self.wiops),
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
    pub io_max: Vec<IoMax>,
    pub nice: Option<Nice>,
}

/// Which kind of limit a setting is; the name used in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    CpuMax,
    CpuWeight,
    MemoryMax,
    IoMax,
    Nice,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::CpuMax => "cpu_max",
            LimitKind::CpuWeight => "cpu_weight",
            LimitKind::MemoryMax => "memory_max",
            LimitKind::IoMax => "io_max",
            LimitKind::Nice => "nice",
        })
    }
}

/// One control-file write in one controller's hierarchy (v2: all the same dir).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    pub controller: Controller,
    pub file: &'static str,
    pub value: String,
}

/// One requested limit and the files that carry it on this hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub kind: LimitKind,
    /// The requested value, as a person would write it.
    pub value: String,
    pub writes: Vec<FileWrite>,
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
        if self.memory_max.is_some() {
            c.push(Controller::Memory);
        }
        if !self.io_max.is_empty() {
            c.push(Controller::Io);
        }
        c
    }

    /// The cgroup settings (nice excluded: it is applied to the process).
    pub fn settings(&self, version: Version) -> Vec<Setting> {
        let mut out = Vec::new();
        let w = |controller, file, value: String| FileWrite {
            controller,
            file,
            value,
        };
        if let Some(cpu) = self.cpu_max {
            let writes = match version {
                Version::V2 => vec![w(Controller::Cpu, "cpu.max", cpu.to_string())],
                // Period first: the quota is validated against it.
                Version::V1 => vec![
                    w(Controller::Cpu, "cpu.cfs_period_us", cpu.period_us.to_string()),
                    w(
                        Controller::Cpu,
                        "cpu.cfs_quota_us",
                        cpu.quota_us.map_or("-1".to_string(), |q| q.to_string()),
                    ),
                ],
            };
            out.push(Setting {
                kind: LimitKind::CpuMax,
                value: cpu.to_string(),
                writes,
            });
        }
        if let Some(weight) = self.cpu_weight {
            let write = match version {
                Version::V2 => w(Controller::Cpu, "cpu.weight", weight.get().to_string()),
                Version::V1 => w(Controller::Cpu, "cpu.shares", weight.v1_shares().to_string()),
            };
            out.push(Setting {
                kind: LimitKind::CpuWeight,
                value: weight.get().to_string(),
                writes: vec![write],
            });
        }
        if let Some(mem) = self.memory_max {
            let file = match version {
                Version::V2 => "memory.max",
                Version::V1 => "memory.limit_in_bytes",
            };
            out.push(Setting {
                kind: LimitKind::MemoryMax,
                value: mem.bytes().to_string(),
                writes: vec![w(Controller::Memory, file, mem.bytes().to_string())],
            });
        }
        for io in &self.io_max {
            let writes = match version {
                Version::V2 => vec![w(Controller::Io, "io.max", io.to_string())],
                Version::V1 => io
                    .entries()
                    .map(|(_, file, value)| w(Controller::Io, file, format!("{} {value}", io.device)))
                    .collect(),
            };
            out.push(Setting {
                kind: LimitKind::IoMax,
                value: io.to_string(),
                writes,
            });
        }
        out
    }
}

/// The settings that turn a live cgroup's `old` limits into `new`: a changed
/// limit is written, a removed one is put back to the kernel's "no limit".
/// Unchanged limits are not written (a `memory.max` write can reclaim).
/// `old: None` (not known, e.g. a job taken over after a restart) writes
/// every limit of `new` and resets the cpu and memory limits it lacks.
pub fn update_settings(old: Option<&Limits>, new: &Limits, version: Version) -> Vec<Setting> {
    let unknown = Limits::default();
    let changed = |a: bool| old.is_none() || a;
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
            })
            .collect(),
    };
    if changed(old.cpu_max != new.cpu_max) {
        match new.cpu_max {
            Some(_) => out.extend(take(LimitKind::CpuMax)),
            None => out.push(match version {
                Version::V2 => reset(LimitKind::CpuMax, Controller::Cpu, &[("cpu.max", "max 100000")]),
                Version::V1 => reset(LimitKind::CpuMax, Controller::Cpu, &[("cpu.cfs_quota_us", "-1")]),
            }),
        }
    }
    if changed(old.cpu_weight != new.cpu_weight) {
        match new.cpu_weight {
            Some(_) => out.extend(take(LimitKind::CpuWeight)),
            None => out.push(match version {
                Version::V2 => reset(LimitKind::CpuWeight, Controller::Cpu, &[("cpu.weight", "100")]),
                Version::V1 => reset(LimitKind::CpuWeight, Controller::Cpu, &[("cpu.shares", "1024")]),
            }),
        }
    }
    if changed(old.memory_max != new.memory_max) {
        match new.memory_max {
            Some(_) => out.extend(take(LimitKind::MemoryMax)),
            None => out.push(match version {
                Version::V2 => reset(LimitKind::MemoryMax, Controller::Memory, &[("memory.max", "max")]),
                Version::V1 => reset(
                    LimitKind::MemoryMax,
                    Controller::Memory,
                    &[("memory.limit_in_bytes", "-1")],
                ),
            }),
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
            Version::V2 => reset(LimitKind::IoMax, Controller::Io, &[("io.max", "")]),
            Version::V1 => reset(
                LimitKind::IoMax,
                Controller::Io,
                &[
                    ("blkio.throttle.read_bps_device", ""),
                    ("blkio.throttle.write_bps_device", ""),
                    ("blkio.throttle.read_iops_device", ""),
                    ("blkio.throttle.write_iops_device", ""),
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
        assert!(err.contains("not a block device"), "{err}");
    }

    fn full_limits() -> Limits {
        Limits {
            cpu_max: Some(CpuMax::parse_percent("50").unwrap()),
            cpu_weight: Some(CpuWeight::parse("200").unwrap()),
            memory_max: MemoryMax::parse_mb("256").unwrap(),
            io_max: vec![IoMax::parse("254:0 rbps=1M wbps=2M").unwrap()],
            nice: Some(Nice::parse("5").unwrap()),
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
