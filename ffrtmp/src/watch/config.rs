//! `--watch-config FILE`: the old Go tool's YAML schema, accepted unchanged,
//! the same schema in TOML (a file name ending in `.toml`), the extended
//! keys, and the merge with the command line.
//!
//! Precedence: command-line flags (and `FFRTMP_CGROUP_ROOT`) over the file,
//! the file over the built-in defaults. A limit flag overrides that limit in
//! `default_limits` and in every `commands.<name>.limits`; a command's limits
//! are merged key by key over `default_limits`.
//!
//! The file is strict: an unknown key, a wrong type or an out-of-range value
//! is an error naming the file, the line, the column and the key path. Every
//! value is therefore validated while it is deserialized (the newtypes
//! below call the same parsers as the flags), so the YAML or TOML parser can
//! attach the location, and `serde_path_to_error` the key path.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::rules::{CommandRule, DirMatch, Filters, ParentMatch, Rules};
use super::{Backend, RetryConfig, StateConfig, WatchConfig};
use crate::cgroup::CgroupRoot;
use crate::cgroup::limits::{CpuMax, CpuWeight, DEFAULT_PERIOD_US, IoMax, Limits, MemoryMax, Nice};
use crate::events::scan::Targets;

/// The commands governed when neither the file nor `--target` names any.
pub const DEFAULT_TARGETS: [&str; 2] = ["ffmpeg", "gst-launch-1.0"];
/// The poll backend's period when neither the file nor the flag sets one.
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(10);
/// A shorter scan period would make the poll backend a busy loop.
pub const MIN_SCAN_INTERVAL: Duration = Duration::from_millis(10);
/// The most retries `retry.max_attempts` / `--max-retry-attempts` accept.
pub const MAX_RETRY_ATTEMPTS: u32 = 100;

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Public API

/// Limits one layer (a `limits` block of the file, or the command line)
/// sets; `None` leaves the layer below in place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartialLimits {
    pub cpu_max: Option<CpuMax>,
    pub cpu_weight: Option<CpuWeight>,
    /// `Some(None)` sets "no memory limit" explicitly (`memory_max: max`,
    /// `--memory-limit 0`), which also removes a limit from below.
    pub memory_max: Option<Option<MemoryMax>>,
    /// A list given replaces the one below, even when it is empty.
    pub io_max: Option<Vec<IoMax>>,
    pub nice: Option<Nice>,
}

impl PartialLimits {
    /// These limits laid over `base`.
    pub fn over(&self, base: &Limits) -> Limits {
        Limits {
            cpu_max: self.cpu_max.or(base.cpu_max),
            cpu_weight: self.cpu_weight.or(base.cpu_weight),
            memory_max: self.memory_max.unwrap_or(base.memory_max),
            io_max: self.io_max.clone().unwrap_or_else(|| base.io_max.clone()),
            nice: self.nice.or(base.nice),
        }
    }
}

/// What the command line set explicitly; `None` (or empty limits) leaves
/// the file's value, or the built-in default, in place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--target` (repeatable): replaces `target_commands`.
    pub targets: Option<Vec<String>>,
    /// The limit flags: each overrides that limit in `default_limits` and in
    /// every `commands.<name>.limits`.
    pub limits: PartialLimits,
    pub backend: Option<Backend>,
    pub scan_interval: Option<Duration>,
    /// `--cgroup-root` or `FFRTMP_CGROUP_ROOT`.
    pub cgroup_root: Option<CgroupRoot>,
    pub metrics_listen: Option<SocketAddr>,
    /// `--enable-state`.
    pub state_enabled: Option<bool>,
    pub state_path: Option<PathBuf>,
    pub state_flush_interval: Option<Duration>,
    /// `--enable-retry` (the old tool's flag; retry is on by default).
    pub retry_enabled: Option<bool>,
    pub max_retry_attempts: Option<u32>,
    /// The hidden tuning flags (not file keys).
    pub ring_bytes: Option<u32>,
    pub netlink_rcvbuf: Option<usize>,
}

/// The configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the watch configuration {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// A syntax error, an unknown key, a wrong type or a bad value.
    #[error("{}", describe_invalid(file, *location, key.as_deref(), message))]
    Invalid {
        file: PathBuf,
        /// 1-based line and column, when the parser knows them.
        location: Option<(usize, usize)>,
        /// The key path, e.g. `commands.ffmpeg.limits.cpu_weight`.
        key: Option<String>,
        message: String,
    },
}

fn describe_invalid(file: &Path, location: Option<(usize, usize)>, key: Option<&str>, message: &str) -> String {
    let mut out = file.display().to_string();
    if let Some((line, column)) = location {
        out.push_str(&format!(":{line}:{column}"));
    }
    out.push_str(": ");
    if let Some(key) = key {
        out.push_str(key);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

/// Read `file` (when given), merge it with the command line and the
/// defaults. Also called on SIGHUP to re-read the file. The strings
/// returned are warnings for the log (a `commands.<name>` that is not a
/// target).
pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<(WatchConfig, Vec<String>), ConfigError> {
    let parsed = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: path.to_owned(),
                error,
            })?;
            parse(&text, path)?
        }
        None => FileConfig::default(),
    };
    Ok(merge(parsed, file, overrides))
}

/// `--metrics-listen` / `metrics.listen`: a bare port binds 127.0.0.1;
/// `ADDR:PORT` and `[IPv6]:PORT` are taken as given.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    const EXPECTED: &str = "expected a port (bound on 127.0.0.1), ADDR:PORT or [IPv6]:PORT";
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse().map_err(|_| EXPECTED.to_string())
}

/// A target command name: the exact basename of argv[0].
pub fn parse_target(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('/') || s.contains('\0') {
        Err("expected a command name (the basename of argv[0]), without '/'".into())
    } else {
        Ok(s.to_owned())
    }
}

/// A duration as the old tool wrote them (Go: `10s`, `1m30s`, `500ms`,
/// `1.5h`); humantime's longer forms (`2days`) are accepted too.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|_| "expected a duration such as 10s, 1m30s, 500ms or 24h".to_string())
}

/// `scan_interval` / `--scan-interval`: at least 10ms.
pub fn parse_scan_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Ok(d) if d >= MIN_SCAN_INTERVAL => Ok(d),
        _ => Err("expected a duration of at least 10ms such as 10s, 500ms or 1m".into()),
    }
}

/// `state.flush_interval` / `--state-flush-interval`: more than zero.
pub fn parse_flush_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err("expected a duration above zero such as 30s or 5m".into()),
    }
}

/// `retry.max_attempts` / `--max-retry-attempts`: 0 (never retry) to 100.
pub fn parse_retry_attempts(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n <= MAX_RETRY_ATTEMPTS => Ok(n),
        _ => Err(format!(
            "expected an integer 0..={MAX_RETRY_ATTEMPTS} (0 = never retry)"
        )),
    }
}

/// The effective configuration as YAML in the file's schema, each
/// command's merged limits spelled out, the warnings as comments: what
/// `--check-config` prints. Loading the output gives the same rules.
pub fn render(config: &WatchConfig, warnings: &[String]) -> String {
    let rules = &config.rules;
    let mut commands: BTreeMap<&str, CommandView> = BTreeMap::new();
    let names = rules.targets.names().iter().chain(rules.commands.keys());
    for name in names {
        commands.insert(
            name,
            CommandView {
                limits: LimitsView::new(rules.limits_for(name), Some(&rules.default_limits)),
                filters: (rules.commands.get(name.as_str()))
                    .map(|c| FiltersView::new(&c.filters))
                    .filter(|f| !f.is_empty()),
            },
        );
    }
    let view = EffectiveView {
        scan_interval: format_duration(config.scan_interval),
        target_commands: rules.targets.names(),
        cgroup_root: config.cgroup_root.to_string(),
        backend: config.backend,
        default_limits: LimitsView::new(&rules.default_limits, None),
        filters: FiltersView::new(&rules.filters),
        commands,
        metrics: MetricsView {
            listen: config.metrics_listen.map(|a| a.to_string()),
        },
        state: StateView {
            enabled: config.state.enabled,
            path: config.state.path.display().to_string(),
            flush_interval: format_duration(config.state.flush_interval),
        },
        retry: RetryView {
            enabled: config.retry.max_attempts > 0,
            max_attempts: config.retry.max_attempts,
        },
    };
    let source = match &config.config_file {
        Some(file) => format!("{} merged with the command line", file.display()),
        None => "built-in defaults merged with the command line".to_string(),
    };
    let mut out = format!("# ffrtmp watch: effective configuration ({source})\n");
    // Plain data (strings, integers, string-keyed maps) always serializes.
    out.push_str(&serde_norway::to_string(&view).expect("the effective configuration is plain data"));
    for warning in warnings {
        out.push_str(&format!("# warning: {warning}\n"));
    }
    out
}

// ---------------------------------------------------------------------------
// Parsing

/// Parse the text of `file`: TOML when its name ends in `.toml`, else YAML.
fn parse(text: &str, file: &Path) -> Result<FileConfig, ConfigError> {
    let is_toml = file
        .extension()
        .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("toml"));
    if is_toml {
        parse_toml(text, file)
    } else {
        parse_yaml(text, file)
    }
}

fn parse_yaml(text: &str, file: &Path) -> Result<FileConfig, ConfigError> {
    serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(text)).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let location = inner.location().map(|l| (l.line(), l.column()));
        let message = yaml_message(&inner, &key);
        invalid(file, location, &key, &message)
    })
}

/// serde_norway's message without what we print ourselves: the location
/// (at its end, or before a syntax error's context) and its own key path
/// (sometimes the parent's) in front.
fn yaml_message(error: &serde_norway::Error, key: &str) -> String {
    let mut full = error.to_string();
    if let Some(l) = error.location() {
        full = full.replacen(&format!(" at line {} column {}", l.line(), l.column()), "", 1);
    }
    let message = full.as_str();
    // The key and each of its ancestors, longest first.
    let cuts = key
        .char_indices()
        .filter(|&(_, c)| c == '.' || c == '[')
        .map(|(i, _)| i);
    let mut prefixes: Vec<&str> = cuts.map(|i| &key[..i]).collect();
    prefixes.push(key);
    for prefix in prefixes.iter().rev().filter(|p| !p.is_empty()) {
        if let Some(rest) = message.strip_prefix(prefix).and_then(|r| r.strip_prefix(": ")) {
            return rest.to_string();
        }
    }
    message.to_string()
}

fn parse_toml(text: &str, file: &Path) -> Result<FileConfig, ConfigError> {
    let located = |e: &toml::de::Error, key: &str| {
        let location = e.span().map(|span| line_column(text, span.start));
        invalid(file, location, key, e.message())
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| located(&e, ""))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        located(e.inner(), &key)
    })
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

fn invalid(file: &Path, location: Option<(usize, usize)>, key: &str, message: &str) -> ConfigError {
    // serde_path_to_error writes "." for the document itself and "?" for a
    // key a syntax error stopped it from reading.
    let key = key.trim_end_matches(".?");
    let key = (!key.is_empty() && key != "." && key != "?").then(|| key.to_string());
    ConfigError::Invalid {
        file: file.to_owned(),
        location,
        key,
        message: message.replace('\n', " "),
    }
}

// ---------------------------------------------------------------------------
// Merging

fn merge(file: FileConfig, path: Option<&Path>, overrides: &Overrides) -> (WatchConfig, Vec<String>) {
    let target_names = overrides
        .targets
        .clone()
        .or_else(|| {
            let names: Vec<String> = file.target_commands.into_iter().flatten().map(|n| n.0).collect();
            (!names.is_empty()).then_some(names)
        })
        .unwrap_or_else(|| DEFAULT_TARGETS.map(String::from).to_vec());
    let targets = Targets::new(target_names);

    let file_defaults = file.default_limits.0.over(&Limits::default());
    let commands: BTreeMap<String, CommandRule> = (file.commands.unwrap_or_default().0)
        .into_iter()
        .map(|(name, command)| {
            let limits = command.limits.unwrap_or_default().0.over(&file_defaults);
            let rule = CommandRule {
                limits: overrides.limits.over(&limits),
                filters: command.filters.unwrap_or_default().into_filters(),
            };
            (name.0, rule)
        })
        .collect();
    let warnings = commands
        .keys()
        .filter(|name| !targets.names().contains(name))
        .map(|name| {
            format!(
                "commands.{name} is configured but {name} is not a target ({}); its settings are unused",
                targets.names().join(", ")
            )
        })
        .collect();
    let rules = Rules {
        default_limits: overrides.limits.over(&file_defaults),
        filters: file.filters.into_filters(),
        commands,
        targets,
    };

    let state_default = StateConfig::default();
    let state = StateConfig {
        enabled: overrides.state_enabled.or(file.state.enabled).unwrap_or(false),
        path: (overrides.state_path.clone())
            .or(file.state.path.and_then(|p| p.0))
            .unwrap_or(state_default.path),
        flush_interval: (overrides.state_flush_interval)
            .or(file.state.flush_interval.and_then(|d| d.0))
            .unwrap_or(state_default.flush_interval),
    };

    // `retry.enabled: false` means no retries unless the command line asks
    // for a number of attempts.
    let retry_enabled = overrides.retry_enabled.or(file.retry.enabled).unwrap_or(true);
    let file_attempts = file.retry.max_attempts.map(|a| a.0);
    let max_attempts = match overrides.max_retry_attempts {
        Some(n) => n,
        None if !retry_enabled => 0,
        None => file_attempts.unwrap_or(RetryConfig::default().max_attempts),
    };

    let config = WatchConfig {
        rules,
        cgroup_root: (overrides.cgroup_root.clone())
            .or(file.cgroup_root.map(|r| r.0))
            .unwrap_or_default(),
        backend: overrides.backend.or(file.backend).unwrap_or(Backend::Auto),
        scan_interval: (overrides.scan_interval)
            .or(file.scan_interval.and_then(|s| s.0))
            .unwrap_or(DEFAULT_SCAN_INTERVAL),
        ring_bytes: overrides.ring_bytes.unwrap_or(WatchConfig::DEFAULT_RING_BYTES),
        netlink_rcvbuf: overrides.netlink_rcvbuf.unwrap_or(WatchConfig::DEFAULT_NETLINK_RCVBUF),
        config_file: path.map(Path::to_owned),
        state,
        retry: RetryConfig { max_attempts },
        metrics_listen: overrides.metrics_listen.or(file.metrics.listen.and_then(|l| l.0)),
        overrides: overrides.clone(),
    };
    (config, warnings)
}

// ---------------------------------------------------------------------------
// The file's schema

/// The whole file. Every key is optional; null (an empty YAML value) is
/// the same as an absent key, as it was for the old tool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping of watch settings")]
struct FileConfig {
    scan_interval: Option<ScanInterval>,
    target_commands: Option<Vec<CommandName>>,
    default_limits: FileLimits,
    filters: FileFilters,
    commands: Option<Commands>,
    cgroup_root: Option<CgroupRootValue>,
    backend: Option<Backend>,
    metrics: FileMetrics,
    state: FileState,
    retry: FileRetry,
}

/// `commands`: a command named twice is an error, not "the last one wins".
#[derive(Debug, Default)]
struct Commands(BTreeMap<CommandName, FileCommand>);

impl<'de> Deserialize<'de> for Commands {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CommandsVisitor;

        impl<'de> Visitor<'de> for CommandsVisitor {
            type Value = Commands;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping from command names to their limits and filters")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Commands, A::Error> {
                let mut commands = BTreeMap::new();
                while let Some((name, command)) = map.next_entry::<CommandName, FileCommand>()? {
                    if commands.contains_key(&name) {
                        return Err(de::Error::custom(format!("{:?} is configured twice", name.0)));
                    }
                    commands.insert(name, command);
                }
                Ok(Commands(commands))
            }
        }

        d.deserialize_map(CommandsVisitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping with limits and filters")]
struct FileCommand {
    limits: Option<FileLimits>,
    filters: Option<FileFilters>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping with listen")]
struct FileMetrics {
    listen: Option<ListenValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with enabled, path and flush_interval"
)]
struct FileState {
    enabled: Option<bool>,
    path: Option<PathValue>,
    flush_interval: Option<FlushInterval>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping with enabled and max_attempts")]
struct FileRetry {
    enabled: Option<bool>,
    max_attempts: Option<RetryAttempts>,
}

/// A `limits` block as written; checked for conflicts into [`FileLimits`].
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping of limits (cpu_quota, cpu_max, cpu_weight, memory_limit, memory_max, io_max, nice)"
)]
struct RawLimits {
    cpu_quota: Option<CpuQuota>,
    cpu_max: Option<CpuMaxValue>,
    cpu_weight: Option<Weight>,
    memory_limit: Option<MemoryMib>,
    memory_max: Option<MemoryBytes>,
    io_max: Option<Vec<IoMaxValue>>,
    nice: Option<NiceValue>,
}

/// A `limits` block: what it sets, over `default_limits` (or over nothing).
#[derive(Debug, Default, Deserialize)]
#[serde(try_from = "RawLimits")]
struct FileLimits(PartialLimits);

impl TryFrom<RawLimits> for FileLimits {
    type Error = String;

    fn try_from(raw: RawLimits) -> Result<FileLimits, String> {
        // The old schema's 0 ("not set") counts as absent here.
        let quota = raw.cpu_quota.and_then(|q| q.0);
        let memory_mib = raw.memory_limit.and_then(|m| m.0);
        if quota.is_some() && raw.cpu_max.is_some() {
            return Err("cpu_quota and cpu_max both set the CPU limit: keep one".into());
        }
        if memory_mib.is_some() && raw.memory_max.is_some() {
            return Err("memory_limit and memory_max both set the memory limit: keep one".into());
        }
        Ok(FileLimits(PartialLimits {
            cpu_max: quota.or(raw.cpu_max.map(|c| c.0)),
            cpu_weight: raw.cpu_weight.and_then(|w| w.0),
            memory_max: memory_mib.map(Some).or(raw.memory_max.map(|m| m.0)),
            io_max: raw.io_max.map(|list| list.into_iter().map(|io| io.0).collect()),
            nice: raw.nice.map(|n| n.0),
        }))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping of filters")]
struct FileFilters {
    allowed_users: Option<Vec<String>>,
    blocked_users: Option<Vec<String>>,
    allowed_uids: Option<Vec<u32>>,
    blocked_uids: Option<Vec<u32>>,
    allowed_parents: Option<Vec<u32>>,
    blocked_parents: Option<Vec<u32>>,
    parent_match: Option<ParentMatch>,
    min_runtime: Option<Runtime>,
    max_runtime: Option<Runtime>,
    allowed_dirs: Option<Vec<AbsolutePath>>,
    blocked_dirs: Option<Vec<AbsolutePath>>,
    dir_match: Option<DirMatch>,
}

impl FileFilters {
    fn into_filters(self) -> Filters {
        let paths = |list: Option<Vec<AbsolutePath>>| list.into_iter().flatten().map(|p| p.0).collect();
        Filters {
            allowed_users: self.allowed_users.unwrap_or_default(),
            blocked_users: self.blocked_users.unwrap_or_default(),
            allowed_uids: self.allowed_uids.unwrap_or_default(),
            blocked_uids: self.blocked_uids.unwrap_or_default(),
            allowed_parents: self.allowed_parents.unwrap_or_default(),
            blocked_parents: self.blocked_parents.unwrap_or_default(),
            parent_match: self.parent_match.unwrap_or_default(),
            min_runtime: self.min_runtime.and_then(|r| r.0),
            max_runtime: self.max_runtime.and_then(|r| r.0),
            allowed_dirs: paths(self.allowed_dirs),
            blocked_dirs: paths(self.blocked_dirs),
            dir_match: self.dir_match.unwrap_or_default(),
        }
    }
}

// ---------------------------------------------------------------------------
// Values, validated while they are read

/// An integer (YAML plain scalar or TOML integer), nothing else.
struct IntVisitor(&'static str);

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
struct TextVisitor(&'static str);

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

fn int<'de, D: Deserializer<'de>>(d: D, expected: &'static str) -> Result<i64, D::Error> {
    d.deserialize_any(IntVisitor(expected))
}

fn text<'de, D: Deserializer<'de>>(d: D, expected: &'static str) -> Result<String, D::Error> {
    d.deserialize_any(TextVisitor(expected))
}

/// An integer through one of the flag parsers.
fn out_of_range<T, E: de::Error>(value: i64, parsed: Result<T, String>) -> Result<T, E> {
    parsed.map_err(|why| E::custom(format!("{value} is out of range: {why}")))
}

/// Text through one of the flag parsers.
fn invalid_text<T, E: de::Error>(value: &str, parsed: Result<T, String>) -> Result<T, E> {
    parsed.map_err(|why| E::custom(format!("{value:?} is invalid: {why}")))
}

/// `cpu_quota`: percent of one core; 0 = not set.
#[derive(Debug)]
struct CpuQuota(Option<CpuMax>);

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
struct Weight(Option<CpuWeight>);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let weight = int(d, "an integer 1..=10000 (0 = not set)")?;
        if weight == 0 {
            return Ok(Weight(None));
        }
        out_of_range(weight, CpuWeight::parse(&weight.to_string())).map(|w| Weight(Some(w)))
    }
}

/// `memory_limit`: MiB; 0 = not set.
#[derive(Debug)]
struct MemoryMib(Option<MemoryMax>);

impl<'de> Deserialize<'de> for MemoryMib {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mib = int(d, "an integer number of MiB (0 = not set)")?;
        out_of_range(mib, MemoryMax::parse_mb(&mib.to_string())).map(MemoryMib)
    }
}

/// `cpu_max`: `"QUOTA PERIOD"`, `"QUOTA"` or `"max [PERIOD]"`.
#[derive(Debug)]
struct CpuMaxValue(CpuMax);

impl<'de> Deserialize<'de> for CpuMaxValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a string \"QUOTA PERIOD\", \"QUOTA\" or \"max\"")?;
        invalid_text(&s, CpuMax::parse(&s)).map(CpuMaxValue)
    }
}

/// `memory_max`: bytes with an optional K/M/G suffix; `0`/`max` = no limit.
#[derive(Debug)]
struct MemoryBytes(Option<MemoryMax>);

impl<'de> Deserialize<'de> for MemoryBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "bytes (an integer or a string with a K, M or G suffix, or max)")?;
        invalid_text(&s, MemoryMax::parse_bytes(&s)).map(MemoryBytes)
    }
}

/// One `io_max` entry.
#[derive(Debug)]
struct IoMaxValue(IoMax);

impl<'de> Deserialize<'de> for IoMaxValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a string \"MAJ:MIN|PATH rbps=N wbps=N riops=N wiops=N\"")?;
        invalid_text(&s, IoMax::parse(&s)).map(IoMaxValue)
    }
}

#[derive(Debug)]
struct NiceValue(Nice);

impl<'de> Deserialize<'de> for NiceValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = int(d, "an integer -20..=19")?;
        out_of_range(n, Nice::parse(&n.to_string())).map(NiceValue)
    }
}

/// `scan_interval`; `""` = the default.
#[derive(Debug)]
struct ScanInterval(Option<Duration>);

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
struct FlushInterval(Option<Duration>);

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
struct Runtime(Option<Duration>);

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
struct RetryAttempts(u32);

impl<'de> Deserialize<'de> for RetryAttempts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = int(d, "an integer 0..=100")?;
        out_of_range(n, parse_retry_attempts(&n.to_string())).map(RetryAttempts)
    }
}

/// A target name (in `target_commands` and as a `commands` key).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct CommandName(String);

impl<'de> Deserialize<'de> for CommandName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a command name")?;
        invalid_text(&s, parse_target(&s)).map(CommandName)
    }
}

#[derive(Debug)]
struct CgroupRootValue(CgroupRoot);

impl<'de> Deserialize<'de> for CgroupRootValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a cgroup path such as \"/ffrtmp\"")?;
        invalid_text(&s, CgroupRoot::parse(&s)).map(CgroupRootValue)
    }
}

/// `metrics.listen`; `""` = no metrics endpoint.
#[derive(Debug)]
struct ListenValue(Option<SocketAddr>);

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
struct PathValue(Option<PathBuf>);

impl<'de> Deserialize<'de> for PathValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d, "a file path")?;
        Ok(PathValue((!s.is_empty()).then(|| PathBuf::from(s))))
    }
}

/// A directory in `allowed_dirs` / `blocked_dirs`: compared with a
/// process's working directory, which is always absolute.
#[derive(Debug)]
struct AbsolutePath(PathBuf);

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

// ---------------------------------------------------------------------------
// What --check-config prints

#[derive(Serialize)]
struct EffectiveView<'a> {
    scan_interval: String,
    target_commands: &'a [String],
    cgroup_root: String,
    backend: Backend,
    default_limits: LimitsView,
    #[serde(skip_serializing_if = "FiltersView::is_empty")]
    filters: FiltersView,
    commands: BTreeMap<&'a str, CommandView>,
    metrics: MetricsView,
    state: StateView,
    retry: RetryView,
}

#[derive(Serialize)]
struct CommandView {
    limits: LimitsView,
    #[serde(skip_serializing_if = "Option::is_none")]
    filters: Option<FiltersView>,
}

#[derive(Serialize)]
struct MetricsView {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
}

#[derive(Serialize)]
struct StateView {
    enabled: bool,
    path: String,
    flush_interval: String,
}

#[derive(Serialize)]
struct RetryView {
    enabled: bool,
    max_attempts: u32,
}

/// Limits in the file's own keys: `cpu_quota` and `memory_limit` where the
/// value is a whole percent / MiB, `cpu_max` and `memory_max` otherwise.
#[derive(Serialize, Default)]
struct LimitsView {
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_quota: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_max: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_weight: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_max: Option<String>,
    /// `None`: not printed; `Some(empty)`: printed as `[]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    io_max: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nice: Option<i8>,
}

impl LimitsView {
    /// `limits`; for a command, `defaults` are what an absent key would
    /// inherit, so a limit the command removed is printed as its "none".
    fn new(limits: &Limits, defaults: Option<&Limits>) -> LimitsView {
        let mut view = LimitsView::default();
        match limits.cpu_max {
            Some(CpuMax {
                quota_us: Some(q),
                period_us: DEFAULT_PERIOD_US,
            }) if q % 1000 == 0 => view.cpu_quota = Some(q / 1000),
            Some(cpu) => view.cpu_max = Some(cpu.to_string()),
            None => {}
        }
        view.cpu_weight = limits.cpu_weight.map(CpuWeight::get);
        match limits.memory_max {
            Some(m) if m.bytes() % MIB == 0 => view.memory_limit = Some(m.bytes() / MIB),
            Some(m) => view.memory_max = Some(m.bytes().to_string()),
            None if defaults.is_some_and(|d| d.memory_max.is_some()) => view.memory_max = Some("max".into()),
            None => {}
        }
        let removed_io = defaults.is_some_and(|d| !d.io_max.is_empty());
        if !limits.io_max.is_empty() || removed_io {
            view.io_max = Some(limits.io_max.iter().map(IoMax::to_string).collect());
        }
        view.nice = limits.nice.map(Nice::get);
        view
    }
}

/// Filters with only the keys that are set.
#[derive(Serialize)]
struct FiltersView {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_users: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocked_users: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_uids: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocked_uids: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_parents: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocked_parents: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_match: Option<ParentMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_runtime: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_dirs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocked_dirs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dir_match: Option<DirMatch>,
}

impl FiltersView {
    fn new(f: &Filters) -> FiltersView {
        let dirs = |list: &[PathBuf]| list.iter().map(|p| p.display().to_string()).collect();
        FiltersView {
            allowed_users: f.allowed_users.clone(),
            blocked_users: f.blocked_users.clone(),
            allowed_uids: f.allowed_uids.clone(),
            blocked_uids: f.blocked_uids.clone(),
            allowed_parents: f.allowed_parents.clone(),
            blocked_parents: f.blocked_parents.clone(),
            parent_match: (f.parent_match != ParentMatch::default()).then_some(f.parent_match),
            min_runtime: f.min_runtime.map(format_duration),
            max_runtime: f.max_runtime.map(format_duration),
            allowed_dirs: dirs(&f.allowed_dirs),
            blocked_dirs: dirs(&f.blocked_dirs),
            dir_match: (f.dir_match != DirMatch::default()).then_some(f.dir_match),
        }
    }

    fn is_empty(&self) -> bool {
        self.allowed_users.is_empty()
            && self.blocked_users.is_empty()
            && self.allowed_uids.is_empty()
            && self.blocked_uids.is_empty()
            && self.allowed_parents.is_empty()
            && self.blocked_parents.is_empty()
            && self.parent_match.is_none()
            && self.min_runtime.is_none()
            && self.max_runtime.is_none()
            && self.allowed_dirs.is_empty()
            && self.blocked_dirs.is_empty()
            && self.dir_match.is_none()
    }
}

/// Go style, as the old tool's file has them: `1m30s`, `500ms`.
fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old Go tool's own example, verbatim.
    const OLD_EXAMPLE: &str = r#"scan_interval: "10s"
target_commands:
  - ffmpeg
  - gst-launch-1.0
default_limits:
  cpu_quota: 200
  cpu_weight: 100
  memory_limit: 4096
filters:
  allowed_users: []
  blocked_users: []
  allowed_uids: []
  blocked_uids: []
  allowed_parents: []
  blocked_parents: []
  min_runtime: "5s"
  max_runtime: ""
  allowed_dirs: []
  blocked_dirs:
    - /tmp
    - /home/test
commands:
  ffmpeg:
    limits:
      cpu_quota: 300
      memory_limit: 8192
    filters:
      allowed_users:
        - ffmpeg
        - video
      min_runtime: "10s"
  gst-launch-1.0:
    limits:
      cpu_quota: 150
      memory_limit: 2048
    filters:
      min_runtime: "30s"
"#;

    /// The same in TOML.
    const OLD_EXAMPLE_TOML: &str = r#"scan_interval = "10s"
target_commands = ["ffmpeg", "gst-launch-1.0"]

[default_limits]
cpu_quota = 200
cpu_weight = 100
memory_limit = 4096

[filters]
allowed_users = []
blocked_users = []
allowed_uids = []
blocked_uids = []
allowed_parents = []
blocked_parents = []
min_runtime = "5s"
max_runtime = ""
allowed_dirs = []
blocked_dirs = ["/tmp", "/home/test"]

[commands.ffmpeg.limits]
cpu_quota = 300
memory_limit = 8192

[commands.ffmpeg.filters]
allowed_users = ["ffmpeg", "video"]
min_runtime = "10s"

[commands."gst-launch-1.0".limits]
cpu_quota = 150
memory_limit = 2048

[commands."gst-launch-1.0".filters]
min_runtime = "30s"
"#;

    /// Parse `text` as the file `name` and merge it, without touching disk.
    fn from_str(name: &str, text: &str, overrides: &Overrides) -> Result<(WatchConfig, Vec<String>), ConfigError> {
        let path = Path::new(name);
        parse(text, path).map(|file| merge(file, Some(path), overrides))
    }

    fn config(name: &str, text: &str) -> WatchConfig {
        from_str(name, text, &Overrides::default()).unwrap().0
    }

    fn error(name: &str, text: &str) -> String {
        from_str(name, text, &Overrides::default()).unwrap_err().to_string()
    }

    fn pct(p: u64) -> Option<CpuMax> {
        Some(CpuMax::parse_percent(&p.to_string()).unwrap())
    }
    fn weight(w: u16) -> Option<CpuWeight> {
        Some(CpuWeight::parse(&w.to_string()).unwrap())
    }
    fn mib(m: u64) -> Option<MemoryMax> {
        MemoryMax::parse_mb(&m.to_string()).unwrap()
    }
    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }
    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn old_example_rules() -> Rules {
        let limits = |cpu, mem| Limits {
            cpu_max: pct(cpu),
            cpu_weight: weight(100),
            memory_max: mib(mem),
            ..Limits::default()
        };
        Rules {
            targets: Targets::new(strings(&["ffmpeg", "gst-launch-1.0"])),
            default_limits: limits(200, 4096),
            filters: Filters {
                min_runtime: secs(5),
                blocked_dirs: vec!["/tmp".into(), "/home/test".into()],
                ..Filters::default()
            },
            commands: BTreeMap::from([
                (
                    "ffmpeg".to_string(),
                    CommandRule {
                        limits: limits(300, 8192),
                        filters: Filters {
                            allowed_users: strings(&["ffmpeg", "video"]),
                            min_runtime: secs(10),
                            ..Filters::default()
                        },
                    },
                ),
                (
                    "gst-launch-1.0".to_string(),
                    CommandRule {
                        limits: limits(150, 2048),
                        filters: Filters {
                            min_runtime: secs(30),
                            ..Filters::default()
                        },
                    },
                ),
            ]),
        }
    }

    #[test]
    fn old_example_parses_to_the_expected_rules() {
        let (config, warnings) = from_str("watch.yaml", OLD_EXAMPLE, &Overrides::default()).unwrap();
        assert_eq!(config.rules, old_example_rules());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.scan_interval, Duration::from_secs(10));
        assert_eq!(config.rules.min_runtime_for("ffmpeg"), Duration::from_secs(10));
        assert_eq!(config.rules.min_runtime_for("gst-launch-1.0"), Duration::from_secs(30));
        // Not in the old schema: the built-in defaults.
        assert_eq!(config.cgroup_root, CgroupRoot::default());
        assert_eq!(config.backend, Backend::Auto);
        assert_eq!(config.state, StateConfig::default());
        assert_eq!(config.retry, RetryConfig::default());
        assert_eq!(config.metrics_listen, None);
        assert_eq!(config.config_file.as_deref(), Some(Path::new("watch.yaml")));
    }

    #[test]
    fn toml_is_the_same_schema() {
        assert_eq!(config("watch.toml", OLD_EXAMPLE_TOML).rules, old_example_rules());
        // The name decides the format: YAML text in a .toml file is a TOML error.
        assert!(from_str("watch.toml", OLD_EXAMPLE, &Overrides::default()).is_err());
        assert_eq!(config("watch.conf", OLD_EXAMPLE).rules, old_example_rules());
    }

    #[test]
    fn every_old_filter_key_is_read() {
        let yaml = r#"
filters:
  allowed_users: [alice]
  blocked_users: [mallory]
  allowed_uids: [1000, 1001]
  blocked_uids: [0]
  allowed_parents: [1]
  blocked_parents: [42]
  min_runtime: "1m30s"
  max_runtime: "24h"
  allowed_dirs: [/srv/media]
  blocked_dirs: [/tmp]
commands:
  ffmpeg:
    filters:
      allowed_users: [video]
      blocked_users: [guest]
      min_runtime: 500ms
      max_runtime: 1.5h
"#;
        let rules = config("watch.yaml", yaml).rules;
        assert_eq!(
            rules.filters,
            Filters {
                allowed_users: strings(&["alice"]),
                blocked_users: strings(&["mallory"]),
                allowed_uids: vec![1000, 1001],
                blocked_uids: vec![0],
                allowed_parents: vec![1],
                blocked_parents: vec![42],
                parent_match: ParentMatch::Immediate,
                min_runtime: secs(90),
                max_runtime: secs(24 * 3600),
                allowed_dirs: vec!["/srv/media".into()],
                blocked_dirs: vec!["/tmp".into()],
                dir_match: DirMatch::Exact,
            }
        );
        assert_eq!(
            rules.commands["ffmpeg"].filters,
            Filters {
                allowed_users: strings(&["video"]),
                blocked_users: strings(&["guest"]),
                min_runtime: Some(Duration::from_millis(500)),
                max_runtime: secs(5400),
                ..Filters::default()
            }
        );
        // No limits block: the command inherits the defaults (none here).
        assert_eq!(rules.commands["ffmpeg"].limits, Limits::default());
    }

    #[test]
    fn old_zero_and_empty_values_mean_not_set() {
        let yaml = r#"
scan_interval: ""
target_commands: []
default_limits: {cpu_quota: 0, cpu_weight: 0, memory_limit: 0}
filters:
  min_runtime: ""
  max_runtime: "0s"
  allowed_users: ~
  blocked_dirs:
commands:
  ffmpeg:
    limits: {cpu_quota: 0, cpu_max: "50000 100000"}
"#;
        let config = config("watch.yaml", yaml);
        assert_eq!(config.scan_interval, DEFAULT_SCAN_INTERVAL);
        assert_eq!(config.rules.targets, Targets::new(DEFAULT_TARGETS.map(String::from)));
        assert_eq!(config.rules.default_limits, Limits::default());
        assert_eq!(config.rules.filters, Filters::default());
        // cpu_quota: 0 is "not set", so it does not conflict with cpu_max.
        assert_eq!(
            config.rules.limits_for("ffmpeg").cpu_max,
            Some(CpuMax::parse("50000 100000").unwrap())
        );
    }

    #[test]
    fn extended_keys() {
        let yaml = r#"
cgroup_root: media-jobs
backend: netlink
scan_interval: 1m30s
default_limits:
  cpu_max: "max 50000"
  memory_max: 1G
  io_max: ["8:0 rbps=1M", "8:16 wiops=100"]
  nice: -5
filters:
  parent_match: ancestor
  dir_match: prefix
  allowed_parents: [1]
commands:
  ffmpeg:
    limits:
      memory_max: 6000000
      io_max: []
      nice: 10
metrics: {listen: "9464"}
state: {enabled: true, path: /run/ffrtmp/state.json, flush_interval: 5s}
retry: {enabled: true, max_attempts: 7}
"#;
        let toml = r#"
cgroup_root = "media-jobs"
backend = "netlink"
scan_interval = "1m30s"
[default_limits]
cpu_max = "max 50000"
memory_max = "1G"
io_max = ["8:0 rbps=1M", "8:16 wiops=100"]
nice = -5
[filters]
parent_match = "ancestor"
dir_match = "prefix"
allowed_parents = [1]
[commands.ffmpeg.limits]
memory_max = 6000000
io_max = []
nice = 10
[metrics]
listen = "9464"
[state]
enabled = true
path = "/run/ffrtmp/state.json"
flush_interval = "5s"
[retry]
enabled = true
max_attempts = 7
"#;
        let from_yaml = config("watch.yaml", yaml);
        let from_toml = config("watch.toml", toml);
        for c in [&from_yaml, &from_toml] {
            assert_eq!(c.cgroup_root, CgroupRoot::parse("media-jobs").unwrap());
            assert_eq!(c.backend, Backend::Netlink);
            assert_eq!(c.scan_interval, Duration::from_secs(90));
            let defaults = &c.rules.default_limits;
            assert_eq!(defaults.cpu_max, Some(CpuMax::parse("max 50000").unwrap()));
            assert_eq!(defaults.memory_max, MemoryMax::parse_bytes("1G").unwrap());
            assert_eq!(defaults.io_max.len(), 2);
            assert_eq!(defaults.nice, Some(Nice::parse("-5").unwrap()));
            assert_eq!(c.rules.filters.parent_match, ParentMatch::Ancestor);
            assert_eq!(c.rules.filters.dir_match, DirMatch::Prefix);
            let ffmpeg = c.rules.limits_for("ffmpeg");
            assert_eq!(ffmpeg.cpu_max, defaults.cpu_max, "inherited");
            assert_eq!(ffmpeg.memory_max, MemoryMax::parse_bytes("6000000").unwrap());
            assert!(ffmpeg.io_max.is_empty(), "an empty list given replaces the default");
            assert_eq!(ffmpeg.nice, Some(Nice::parse("10").unwrap()));
            assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
            assert_eq!(
                c.state,
                StateConfig {
                    enabled: true,
                    path: "/run/ffrtmp/state.json".into(),
                    flush_interval: Duration::from_secs(5),
                }
            );
            assert_eq!(c.retry.max_attempts, 7);
        }
        assert_eq!(from_yaml.rules, from_toml.rules);
    }

    #[test]
    fn command_limits_merge_key_by_key_over_the_defaults() {
        let yaml = r#"
default_limits: {cpu_quota: 200, cpu_weight: 100, memory_limit: 4096, nice: 5}
commands:
  ffmpeg:
    limits: {cpu_weight: 300}
  gst-launch-1.0:
    limits: {memory_max: max, cpu_max: "20000 50000"}
"#;
        let rules = config("watch.yaml", yaml).rules;
        let ffmpeg = rules.limits_for("ffmpeg");
        assert_eq!(ffmpeg.cpu_max, pct(200));
        assert_eq!(ffmpeg.cpu_weight, weight(300));
        assert_eq!(ffmpeg.memory_max, mib(4096));
        assert_eq!(ffmpeg.nice, Some(Nice::parse("5").unwrap()));
        let gst = rules.limits_for("gst-launch-1.0");
        assert_eq!(gst.cpu_max, Some(CpuMax::parse("20000 50000").unwrap()));
        assert_eq!(gst.cpu_weight, weight(100));
        assert_eq!(gst.memory_max, None, "memory_max: max removes the default limit");
    }

    #[test]
    fn yaml_errors_name_file_line_column_and_key() {
        let cases = [
            // Unknown key.
            (
                "commands:\n  ffmpeg:\n    limits:\n      cpu_wieght: 2\n",
                "watch.yaml:4:7: commands.ffmpeg.limits.cpu_wieght: unknown field `cpu_wieght`, expected one of",
            ),
            (
                "scan_intervall: 10s\n",
                "watch.yaml:1:1: scan_intervall: unknown field `scan_intervall`",
            ),
            // Wrong type.
            (
                "default_limits:\n  memory_limit: lots\n",
                "watch.yaml:2:17: default_limits.memory_limit: invalid type: string \"lots\", expected an integer number of MiB",
            ),
            (
                "filters:\n  allowed_users: alice\n",
                "watch.yaml:2:18: filters.allowed_users: invalid type: string \"alice\", expected a sequence",
            ),
            // Out of range.
            (
                "commands:\n  ffmpeg:\n    limits:\n      cpu_weight: 20000\n",
                "watch.yaml:4:7: commands.ffmpeg.limits.cpu_weight: 20000 is out of range: expected an integer 1..=10000 (100 is the default share)",
            ),
            (
                "default_limits:\n  nice: 20\n",
                "watch.yaml:2:3: default_limits.nice: 20 is out of range: expected an integer -20..=19",
            ),
            (
                "scan_interval: 5ms\n",
                "watch.yaml:1:1: scan_interval: \"5ms\" is invalid: expected a duration of at least 10ms",
            ),
            (
                "default_limits:\n  io_max:\n    - 8:0 rbps=1M\n    - 8:0 rbps=0\n",
                "watch.yaml:3:5: default_limits.io_max[1]: \"8:0 rbps=0\" is invalid:",
            ),
            (
                "commands:\n  ffmpeg: {}\n  ffmpeg: {}\n",
                "watch.yaml:2:3: commands: \"ffmpeg\" is configured twice",
            ),
            // Syntax.
            (
                "filters:\n\tmin_runtime: 5s\n",
                "watch.yaml:2:1: filters: found character that cannot start any token, while scanning for the next token",
            ),
        ];
        for (text, expected) in cases {
            let e = error("watch.yaml", text);
            assert!(e.starts_with(expected), "{text:?}\n got: {e}\nwant: {expected}");
            assert!(!e.contains('\n'), "{e:?}");
        }
    }

    #[test]
    fn toml_errors_name_file_line_column_and_key() {
        let cases = [
            (
                "[commands.ffmpeg.limits]\ncpu_wieght = 2\n",
                "watch.toml:2:1: commands.ffmpeg.limits.cpu_wieght: unknown field `cpu_wieght`, expected one of",
            ),
            (
                "[default_limits]\nmemory_limit = \"lots\"\n",
                "watch.toml:2:16: default_limits.memory_limit: invalid type: string \"lots\", expected an integer number of MiB",
            ),
            (
                "[commands.ffmpeg.limits]\ncpu_weight = 20000\n",
                "watch.toml:2:14: commands.ffmpeg.limits.cpu_weight: 20000 is out of range: expected an integer 1..=10000 (100 is the default share)",
            ),
            (
                "[filters]\nblocked_dirs = [\"/tmp\", \"media\"]\n",
                "watch.toml:2:16: filters.blocked_dirs[1]: \"media\" is invalid: expected an absolute directory path",
            ),
            ("scan_interval = 10s\n", "watch.toml:1:17: "),
        ];
        for (text, expected) in cases {
            let e = error("watch.toml", text);
            assert!(e.starts_with(expected), "{text:?}\n got: {e}\nwant: {expected}");
            assert!(!e.contains('\n'), "{e:?}");
        }
    }

    #[test]
    fn both_forms_of_one_limit_in_a_block_conflict() {
        let e = error(
            "watch.yaml",
            "commands:\n  ffmpeg:\n    limits:\n      cpu_quota: 100\n      cpu_max: \"50000 100000\"\n",
        );
        assert!(
            e.starts_with("watch.yaml:3:5: commands.ffmpeg.limits: cpu_quota and cpu_max both set the CPU limit"),
            "{e}"
        );
        let e = error(
            "watch.toml",
            "[default_limits]\nmemory_limit = 1\nmemory_max = \"1G\"\n",
        );
        assert!(
            e.starts_with("watch.toml:") && e.contains("default_limits: memory_limit and memory_max both set"),
            "{e}"
        );
        // The same limit in different blocks is a merge, not a conflict.
        let c = config(
            "watch.yaml",
            "default_limits: {cpu_quota: 100}\ncommands: {ffmpeg: {limits: {cpu_max: max}}}\n",
        );
        assert_eq!(
            c.rules.limits_for("ffmpeg").cpu_max,
            Some(CpuMax::parse("max").unwrap())
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let overrides = Overrides {
            limits: PartialLimits {
                cpu_max: pct(50),
                memory_max: Some(None),
                ..PartialLimits::default()
            },
            scan_interval: Some(Duration::from_secs(2)),
            backend: Some(Backend::Poll),
            cgroup_root: Some(CgroupRoot::parse("/elsewhere").unwrap()),
            state_enabled: Some(true),
            max_retry_attempts: Some(9),
            ..Overrides::default()
        };
        let (config, _) = from_str("watch.yaml", OLD_EXAMPLE, &overrides).unwrap();
        // A limit flag replaces that limit in the defaults and in every command.
        for name in ["ffmpeg", "gst-launch-1.0", "not-configured"] {
            let limits = config.rules.limits_for(name);
            assert_eq!(limits.cpu_max, pct(50), "{name}");
            assert_eq!(
                limits.memory_max, None,
                "{name}: --memory-limit 0 removes the file's limit"
            );
            assert_eq!(limits.cpu_weight, weight(100), "{name}: untouched by the flags");
        }
        assert_eq!(config.scan_interval, Duration::from_secs(2));
        assert_eq!(config.backend, Backend::Poll);
        assert_eq!(config.cgroup_root, CgroupRoot::parse("/elsewhere").unwrap());
        assert!(config.state.enabled);
        assert_eq!(config.retry.max_attempts, 9);
        assert_eq!(config.overrides, overrides, "kept for the SIGHUP re-merge");
        // Filters come from the file only.
        assert_eq!(config.rules.filters, old_example_rules().filters);
    }

    #[test]
    fn target_flag_replaces_target_commands() {
        let overrides = Overrides {
            targets: Some(strings(&["my-encoder", "ffmpeg"])),
            ..Overrides::default()
        };
        let (config, warnings) = from_str("watch.yaml", OLD_EXAMPLE, &overrides).unwrap();
        assert_eq!(config.rules.targets.names(), ["ffmpeg", "my-encoder"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("commands.gst-launch-1.0 is configured but gst-launch-1.0 is not a target"),
            "{warnings:?}"
        );
        assert_eq!(config.rules.limits_for("my-encoder"), &config.rules.default_limits);
    }

    #[test]
    fn a_command_that_is_not_a_target_is_a_warning() {
        let (config, warnings) = from_str(
            "watch.yaml",
            "target_commands: [ffmpeg]\ncommands:\n  ffprobe:\n    limits: {cpu_quota: 10}\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.rules.targets.names(), ["ffmpeg"]);
        assert_eq!(
            warnings,
            ["commands.ffprobe is configured but ffprobe is not a target (ffmpeg); its settings are unused"]
        );
    }

    #[test]
    fn no_file_gives_the_defaults_and_the_flags() {
        let (config, warnings) = load(None, &Overrides::default()).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(
            config.rules,
            Rules::simple(Targets::new(DEFAULT_TARGETS.map(String::from)), Limits::default())
        );
        assert_eq!(config.scan_interval, DEFAULT_SCAN_INTERVAL);
        assert_eq!(config.ring_bytes, WatchConfig::DEFAULT_RING_BYTES);
        assert_eq!(config.netlink_rcvbuf, WatchConfig::DEFAULT_NETLINK_RCVBUF);
        assert_eq!(config.config_file, None);
    }

    #[test]
    fn load_reads_the_file_and_names_it_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watch.yaml");
        std::fs::write(&path, OLD_EXAMPLE).unwrap();
        let (config, _) = load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(config.rules, old_example_rules());
        assert_eq!(config.config_file.as_deref(), Some(path.as_path()));

        let missing = dir.path().join("missing.yaml");
        let e = load(Some(&missing), &Overrides::default()).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("reading the watch configuration {}: ", missing.display())),
            "{e}"
        );
    }

    #[test]
    fn retry_settings() {
        let attempts =
            |text: &str, overrides: Overrides| from_str("watch.yaml", text, &overrides).unwrap().0.retry.max_attempts;
        assert_eq!(attempts("", Overrides::default()), 3);
        assert_eq!(attempts("retry: {max_attempts: 0}", Overrides::default()), 0);
        assert_eq!(
            attempts("retry: {enabled: false, max_attempts: 5}", Overrides::default()),
            0
        );
        let enable = Overrides {
            retry_enabled: Some(true),
            ..Overrides::default()
        };
        assert_eq!(attempts("retry: {enabled: false, max_attempts: 5}", enable), 5);
        let flag = Overrides {
            max_retry_attempts: Some(1),
            ..Overrides::default()
        };
        assert_eq!(attempts("retry: {enabled: false}", flag), 1);
        assert!(error("watch.yaml", "retry: {max_attempts: 101}").contains("retry.max_attempts: 101 is out of range"));
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("9464").unwrap(), "127.0.0.1:9464".parse().unwrap());
        assert_eq!(parse_listen("0.0.0.0:9464").unwrap(), "0.0.0.0:9464".parse().unwrap());
        assert_eq!(parse_listen("[::1]:9464").unwrap(), "[::1]:9464".parse().unwrap());
        for bad in ["", "localhost:9464", "70000", "1.2.3.4", "::1:9464"] {
            assert!(parse_listen(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_in_go_style() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m15s"), Ok(Duration::from_secs(5415)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_scan_interval("9ms").is_err());
        assert!(parse_flush_interval("0s").is_err());
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    /// Per target: the limits and the filter sets that are not empty.
    fn effective(rules: &Rules) -> Vec<(String, Limits, Vec<Filters>)> {
        rules
            .targets
            .names()
            .iter()
            .map(|name| {
                let filters = rules.filters_for(name).filter(|f| **f != Filters::default()).cloned();
                (name.clone(), rules.limits_for(name).clone(), filters.collect())
            })
            .collect()
    }

    #[test]
    fn the_printed_configuration_loads_back_to_the_same() {
        let yaml = r#"
target_commands: [ffmpeg, gst-launch-1.0, x264]
backend: poll
cgroup_root: jobs
default_limits: {cpu_max: "max 50000", memory_limit: 100, io_max: ["8:0 wbps=2M"], nice: 3}
filters: {parent_match: ancestor, allowed_parents: [1], max_runtime: 90m}
commands:
  ffmpeg:
    limits: {cpu_quota: 150, memory_max: max, io_max: []}
    filters: {dir_match: prefix, blocked_dirs: [/tmp], blocked_uids: [7]}
  gst-launch-1.0:
    limits: {memory_max: 5000000, cpu_weight: 50}
metrics: {listen: "[::1]:9000"}
state: {enabled: true, flush_interval: 1m30s}
retry: {enabled: false}
"#;
        let (original, warnings) = from_str("watch.yaml", yaml, &Overrides::default()).unwrap();
        let printed = render(&original, &warnings);
        let reloaded = config("printed.yaml", &printed);
        assert_eq!(effective(&reloaded.rules), effective(&original.rules), "{printed}");
        assert_eq!(reloaded.rules.targets, original.rules.targets);
        assert_eq!(reloaded.scan_interval, original.scan_interval);
        assert_eq!(reloaded.cgroup_root, original.cgroup_root);
        assert_eq!(reloaded.backend, original.backend);
        assert_eq!(reloaded.metrics_listen, original.metrics_listen);
        assert_eq!(reloaded.state, original.state);
        assert_eq!(reloaded.retry, original.retry);
        // Spelled out per command, in the file's own keys.
        assert!(
            printed.contains(
                "  ffmpeg:\n    limits:\n      cpu_quota: 150\n      memory_max: max\n      io_max: []\n      nice: 3\n"
            ),
            "{printed}"
        );
        assert!(
            printed.contains("  x264:\n    limits:\n      cpu_max: max 50000\n"),
            "{printed}"
        );
    }

    #[test]
    fn render_shows_the_warnings() {
        let (config, warnings) = from_str(
            "watch.yaml",
            "target_commands: [ffmpeg]\ncommands: {ffprobe: {}}\n",
            &Overrides::default(),
        )
        .unwrap();
        let printed = render(&config, &warnings);
        assert!(
            printed.starts_with("# ffrtmp watch: effective configuration (watch.yaml merged with the command line)\n")
        );
        assert!(printed.ends_with("# warning: commands.ffprobe is configured but ffprobe is not a target (ffmpeg); its settings are unused\n"), "{printed}");
    }

    #[test]
    fn the_example_files_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
        let (yaml, warnings) = load(Some(&dir.join("watch-config.yaml")), &Overrides::default()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let (toml, warnings) = load(Some(&dir.join("watch-config.toml")), &Overrides::default()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        // The YAML example is the old tool's, plus commented-out keys.
        assert_eq!(yaml.rules, old_example_rules());
        assert_eq!(toml.rules, yaml.rules);
        assert_eq!(toml.scan_interval, yaml.scan_interval);
    }
}
