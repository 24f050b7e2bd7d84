//! Values, validated while they are read: newtypes that call the flag parsers.

use super::*;

/// An integer (YAML plain scalar or TOML integer), nothing else.
pub(super) struct IntVisitor(pub(super) &'static str);

impl Visitor<'_> for IntVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("{v} is out of range: expected {}", self.0)))
    }
}

/// A scalar read as text: a string, or an integer in its decimal form.
pub(super) struct TextVisitor(pub(super) &'static str);

impl Visitor<'_> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

pub(super) fn int<'de, D: Deserializer<'de>>(d: D, expected: &'static str) -> Result<i64, D::Error> {
    d.deserialize_any(IntVisitor(expected))
}

pub(super) fn text<'de, D: Deserializer<'de>>(d: D, expected: &'static str) -> Result<String, D::Error> {
    d.deserialize_any(TextVisitor(expected))
}

/// An integer through one of the flag parsers.
pub(super) fn out_of_range<T, W: fmt::Display, E: de::Error>(value: i64, parsed: Result<T, W>) -> Result<T, E> {
    parsed.map_err(|why| E::custom(format!("{value} is out of range: {why}")))
}

/// Text through one of the flag parsers.
pub(super) fn invalid_text<T, W: fmt::Display, E: de::Error>(value: &str, parsed: Result<T, W>) -> Result<T, E> {
    parsed.map_err(|why| E::custom(format!("{value:?} is invalid: {why}")))
}

/// `cpu_quota`: percent of one core; 0 = not set.
#[derive(Debug)]
pub(super) struct CpuQuota(pub(super) Option<CpuMax>);

impl<'de> Deserialize<'de> for CpuQuota {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pct = int(d, "an integer percent of one core (100 = one core, 0 = not set)")?;
        if pct == 0 {
            return Ok(CpuQuota(None));
        }
        out_of_range(pct, CpuMax::parse_percent(&pct.to_string())).map(|c| CpuQuota(Some(c)))
    }
}

/// `cpu_weight`: 1..=10000; 0 = not set.
#[derive(Debug)]
pub(super) struct Weight(pub(super) Option<CpuWeight>);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let weight = int(d, "an integer 1..=10000 (0 = not set)")?;
        if weight == 0 {
            return Ok(Weight(None));
        }
        out_of_range(weight, CpuWeight::parse(&weight.to_string())).map(|w| Weight(Some(w)))
    }
}

/// `oom_score_adj`: -1000..=1000.
#[derive(Debug)]
pub(super) struct OomScoreAdjValue(pub(super) OomScoreAdj);

impl<'de> Deserialize<'de> for OomScoreAdjValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = int(d, "an integer -1000..=1000")?;
        out_of_range(n, OomScoreAdj::parse(&n.to_string())).map(OomScoreAdjValue)
    }
}

/// `pids_max`: 1..=4194304 tasks.
#[derive(Debug)]
pub(super) struct PidsMaxValue(pub(super) PidsMax);

impl<'de> Deserialize<'de> for PidsMaxValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = int(d, "an integer number of tasks, 1..=4194304")?;
        out_of_range(n, PidsMax::parse(&n.to_string())).map(PidsMaxValue)
    }
}

/// `net_egress_max` / `net_ingress_max`: a tc rate string (`8mbit`).
#[derive(Debug)]
pub(super) struct NetRateValue(pub(super) crate::net::NetRate);

impl<'de> Deserialize<'de> for NetRateValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a rate in bits per second with a unit, e.g. \"8mbit\"")?;
        invalid_text(&s, crate::net::NetRate::parse(&s)).map(NetRateValue)
    }
}

/// `cpus`: a CPU list such as "0-3,6" (a single CPU may be an integer).
#[derive(Debug)]
pub(super) struct CpuListValue(pub(super) CpuList);

impl<'de> Deserialize<'de> for CpuListValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a CPU list such as \"0-3,6\"")?;
        invalid_text(&s, CpuList::parse_cpus(&s)).map(CpuListValue)
    }
}

/// `mems`: a memory-node list such as "0" or "0-1".
#[derive(Debug)]
pub(super) struct MemListValue(pub(super) CpuList);

impl<'de> Deserialize<'de> for MemListValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a memory-node list such as \"0-1\"")?;
        invalid_text(&s, CpuList::parse_mems(&s)).map(MemListValue)
    }
}

/// `io_weight`: 1..=10000.
#[derive(Debug)]
pub(super) struct IoWeightValue(pub(super) IoWeight);

impl<'de> Deserialize<'de> for IoWeightValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = int(d, "an integer 1..=10000")?;
        out_of_range(n, IoWeight::parse(&n.to_string())).map(IoWeightValue)
    }
}

/// `io_class`: idle, best-effort[:0-7] or realtime[:0-7].
#[derive(Debug)]
pub(super) struct IoClassValue(pub(super) IoClass);

impl<'de> Deserialize<'de> for IoClassValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "idle, best-effort[:0-7] or realtime[:0-7]")?;
        invalid_text(&s, IoClass::parse(&s)).map(IoClassValue)
    }
}

/// `memory_limit`: MiB; 0 = not set.
#[derive(Debug)]
pub(super) struct MemoryMib(pub(super) Option<MemoryMax>);

impl<'de> Deserialize<'de> for MemoryMib {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mib = int(d, "an integer number of MiB (0 = not set)")?;
        out_of_range(mib, MemoryMax::parse_mb(&mib.to_string())).map(MemoryMib)
    }
}

/// `cpu_max`: `"QUOTA PERIOD"`, `"QUOTA"` or `"max [PERIOD]"`.
#[derive(Debug)]
pub(super) struct CpuMaxValue(pub(super) CpuMax);

impl<'de> Deserialize<'de> for CpuMaxValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a string \"QUOTA PERIOD\", \"QUOTA\" or \"max\"")?;
        invalid_text(&s, CpuMax::parse(&s)).map(CpuMaxValue)
    }
}

/// `memory_max`: bytes with an optional K/M/G suffix; `0`/`max` = no limit.
#[derive(Debug)]
pub(super) struct MemoryBytes(pub(super) Option<MemoryMax>);

impl<'de> Deserialize<'de> for MemoryBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "bytes (an integer or a string with a K, M or G suffix, or max)")?;
        invalid_text(&s, MemoryMax::parse_bytes(&s)).map(MemoryBytes)
    }
}

/// `memory_swap_max`: bytes with an optional K/M/G suffix; `0` = no swap,
/// `max` = no limit.
#[derive(Debug)]
pub(super) struct SwapBytes(pub(super) Option<SwapMax>);

impl<'de> Deserialize<'de> for SwapBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(
            d,
            "bytes (an integer or a string with a K, M or G suffix; 0 = no swap, max = no limit)",
        )?;
        invalid_text(&s, SwapMax::parse(&s)).map(SwapBytes)
    }
}

/// One `io_max` entry.
#[derive(Debug)]
pub(super) struct IoMaxValue(pub(super) IoMax);

impl<'de> Deserialize<'de> for IoMaxValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a string \"MAJ:MIN|PATH rbps=N wbps=N riops=N wiops=N\"")?;
        invalid_text(&s, IoMax::parse(&s)).map(IoMaxValue)
    }
}

#[derive(Debug)]
pub(super) struct NiceValue(pub(super) Nice);

impl<'de> Deserialize<'de> for NiceValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = int(d, "an integer -20..=19")?;
        out_of_range(n, Nice::parse(&n.to_string())).map(NiceValue)
    }
}

/// `scan_interval`; `""` = the default.
#[derive(Debug)]
pub(super) struct ScanInterval(pub(super) Option<Duration>);

impl<'de> Deserialize<'de> for ScanInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a duration string such as \"10s\"")?;
        if s.is_empty() {
            return Ok(ScanInterval(None));
        }
        invalid_text(&s, parse_scan_interval(&s)).map(|i| ScanInterval(Some(i)))
    }
}

/// `state.flush_interval`; `""` = the default.
#[derive(Debug)]
pub(super) struct FlushInterval(pub(super) Option<Duration>);

impl<'de> Deserialize<'de> for FlushInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a duration string such as \"30s\"")?;
        if s.is_empty() {
            return Ok(FlushInterval(None));
        }
        invalid_text(&s, parse_flush_interval(&s)).map(|i| FlushInterval(Some(i)))
    }
}

/// `min_runtime` / `max_runtime`; `""` and zero = not set (the old tool's
/// meaning of its zero duration).
#[derive(Debug)]
pub(super) struct Runtime(pub(super) Option<Duration>);

impl<'de> Deserialize<'de> for Runtime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a duration string such as \"5s\" or \"24h\" (\"\" = not set)")?;
        if s.is_empty() {
            return Ok(Runtime(None));
        }
        let d = invalid_text(&s, parse_duration(&s))?;
        Ok(Runtime((!d.is_zero()).then_some(d)))
    }
}

#[derive(Debug)]
pub(super) struct RetryAttempts(pub(super) u32);

impl<'de> Deserialize<'de> for RetryAttempts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = int(d, "an integer 0..=100")?;
        out_of_range(n, parse_retry_attempts(&n.to_string())).map(RetryAttempts)
    }
}

/// A target name (in `target_commands` and as a `commands` key).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct CommandName(pub(super) String);

impl<'de> Deserialize<'de> for CommandName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a command name")?;
        invalid_text(&s, parse_target(&s)).map(CommandName)
    }
}

#[derive(Debug)]
pub(super) struct CgroupRootValue(pub(super) CgroupRoot);

impl<'de> Deserialize<'de> for CgroupRootValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a cgroup path such as \"/ffrtmp\"")?;
        invalid_text(&s, CgroupRoot::parse(&s)).map(CgroupRootValue)
    }
}

/// `metrics.listen`; `""` = no metrics endpoint.
#[derive(Debug)]
pub(super) struct ListenValue(pub(super) Option<SocketAddr>);

impl<'de> Deserialize<'de> for ListenValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a port or \"ADDR:PORT\"")?;
        if s.is_empty() {
            return Ok(ListenValue(None));
        }
        invalid_text(&s, parse_listen(&s)).map(|a| ListenValue(Some(a)))
    }
}

/// `state.path`; `""` = the default.
#[derive(Debug)]
pub(super) struct PathValue(pub(super) Option<PathBuf>);

impl<'de> Deserialize<'de> for PathValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a file path")?;
        Ok(PathValue((!s.is_empty()).then(|| PathBuf::from(s))))
    }
}

/// A directory in `allowed_dirs` / `blocked_dirs`: compared with a
/// process's working directory, which is always absolute.
#[derive(Debug)]
pub(super) struct AbsolutePath(pub(super) PathBuf);

impl<'de> Deserialize<'de> for AbsolutePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "an absolute directory path")?;
        let path = PathBuf::from(&s);
        if path.is_absolute() {
            Ok(AbsolutePath(path))
        } else {
            Err(de::Error::custom(format!(
                "{s:?} is invalid: expected an absolute directory path (a working directory never is relative)"
            )))
        }
    }
}
