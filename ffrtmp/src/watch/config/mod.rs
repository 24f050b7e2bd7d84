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
use crate::cgroup::limits::{
    CpuList, CpuMax, CpuWeight, IoClass, IoMax, IoWeight, Limits, MemoryMax, Nice, OomScoreAdj, PidsMax, SwapMax,
};
use crate::events::scan::Targets;
use crate::net::NetRate;

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
    /// Like `memory_max`: `Some(None)` removes one from below.
    pub memory_high: Option<Option<MemoryMax>>,
    /// `Some(None)`: `max`, no swap limit (removes one from below).
    pub memory_swap_max: Option<Option<SwapMax>>,
    /// A list given replaces the one below, even when it is empty.
    pub io_max: Option<Vec<IoMax>>,
    pub pids_max: Option<PidsMax>,
    pub cpus: Option<CpuList>,
    pub mems: Option<CpuList>,
    pub io_weight: Option<IoWeight>,
    pub nice: Option<Nice>,
    pub oom_score_adj: Option<OomScoreAdj>,
    pub net_egress_max: Option<NetRate>,
    pub net_ingress_max: Option<NetRate>,
    pub io_class: Option<IoClass>,
}

impl PartialLimits {
    /// These limits laid over `base`.
    pub fn over(&self, base: &Limits) -> Limits {
        Limits {
            cpu_max: self.cpu_max.or(base.cpu_max),
            cpu_weight: self.cpu_weight.or(base.cpu_weight),
            memory_max: self.memory_max.unwrap_or(base.memory_max),
            memory_high: self.memory_high.unwrap_or(base.memory_high),
            memory_swap_max: self.memory_swap_max.unwrap_or(base.memory_swap_max),
            io_max: self.io_max.clone().unwrap_or_else(|| base.io_max.clone()),
            pids_max: self.pids_max.or(base.pids_max),
            cpus: self.cpus.clone().or_else(|| base.cpus.clone()),
            mems: self.mems.clone().or_else(|| base.mems.clone()),
            io_weight: self.io_weight.or(base.io_weight),
            nice: self.nice.or(base.nice),
            oom_score_adj: self.oom_score_adj.or(base.oom_score_adj),
            net_egress_max: self.net_egress_max.or(base.net_egress_max),
            net_ingress_max: self.net_ingress_max.or(base.net_ingress_max),
            io_class: self.io_class.or(base.io_class),
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
    /// `--favor-dynmods`: keep the cgroup2 mount option favordynmods on.
    pub favor_dynmods: Option<bool>,
    /// The hidden tuning flags (not file keys).
    pub ring_bytes: Option<u32>,
    pub netlink_rcvbuf: Option<usize>,
    /// `--allow-insecure-config`: read a configuration file that others
    /// than root may change (warned about at every load).
    pub allow_insecure_config: bool,
}

/// The configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the watch configuration {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// Nothing but whitespace and comments: most likely a file truncated or
    /// not yet written by whatever deploys it, so it must not silently turn
    /// into the defaults (on SIGHUP the running configuration is kept).
    #[error("{} is empty: refusing to replace the configuration with defaults", path.display())]
    Empty { path: PathBuf },
    /// Someone other than root may change the file, and with it what the
    /// root daemon does to which processes.
    #[error(
        "refusing the watch configuration {}: {reason}; whoever can change it decides which processes the root daemon throttles, starves or renices. Fix: make it and its directories owned by root and writable only by root (chown root:root, chmod go-w), or start with --allow-insecure-config",
        path.display()
    )]
    Insecure { path: PathBuf, reason: String },
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
/// target). A file with nothing but whitespace and comments is an error
/// ([`ConfigError::Empty`]); `{}` (YAML) states the defaults on purpose.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<(WatchConfig, Vec<String>), ConfigError> {
    let mut insecure = None;
    // (A missing file is the read's error, below.)
    if let Some(path) = file
        && path.exists()
        && let Err(reason) = trust::check(path, rustix::process::geteuid().as_raw())
    {
        if !overrides.allow_insecure_config {
            return Err(ConfigError::Insecure {
                path: path.to_owned(),
                reason,
            });
        }
        insecure = Some(format!(
            "--allow-insecure-config: reading {} although {reason}: anyone who can change it steers this root daemon",
            path.display()
        ));
    }
    let Some(path) = file else {
        let (config, mut warnings) = merge(FileConfig::default(), None, overrides);
        warnings.extend(grants_without_filter(&config.rules));
        return Ok((config, warnings));
    };
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    let (config, mut warnings) = load_text(&text, path, overrides)?;
    warnings.extend(insecure);
    Ok((config, warnings))
}

/// [`load`] of a file whose text is `text`, without reading it or checking
/// who may change it: TOML when `file`'s name ends in `.toml`, else YAML;
/// `file` is only named in errors and in the configuration's `config_file`.
pub fn load_text(text: &str, file: &Path, overrides: &Overrides) -> Result<(WatchConfig, Vec<String>), ConfigError> {
    if is_blank(text) {
        return Err(ConfigError::Empty { path: file.to_owned() });
    }
    let (config, mut warnings) = merge(parse(text, file)?, Some(file), overrides);
    warnings.extend(grants_without_filter(&config.rules));
    Ok((config, warnings))
}

/// Limits that give a process more than the kernel would by default
/// (a negative nice, a weight above 100), for a target no user or uid
/// filter restricts: any local user gets them by naming a program so.
fn grants_without_filter(rules: &Rules) -> Vec<String> {
    rules
        .targets
        .names()
        .iter()
        .filter_map(|command| {
            let limits = rules.limits_for(command);
            let mut grants = Vec::new();
            if let Some(nice) = limits.nice.filter(|n| n.get() < 0) {
                grants.push(format!("nice {}", nice.get()));
            }
            if let Some(weight) = limits.cpu_weight.filter(|w| w.get() > 100) {
                grants.push(format!("cpu_weight {}", weight.get()));
            }
            if let Some(weight) = limits.io_weight.filter(|w| w.get() > 100) {
                grants.push(format!("io_weight {}", weight.get()));
            }
            if let Some(class) = limits.io_class.filter(|c| c.is_grant()) {
                grants.push(format!("io_class {class}"));
            }
            let restricted = rules
                .filters_for(command)
                .any(|f| !f.allowed_users.is_empty() || !f.allowed_uids.is_empty());
            (!grants.is_empty() && !restricted).then(|| {
                format!(
                    "{command} gets {} (more than the kernel's default) and no allowed_users or allowed_uids restricts it: any local user can get this by naming a program {command}; add allowed_users",
                    grants.join(" and ")
                )
            })
        })
        .collect()
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
    const EXPECTED: &str = "expected a duration such as 10s, 1m30s, 500ms or 24h";
    if s.trim().starts_with('-') {
        return Err(format!("a duration cannot be negative; {EXPECTED}"));
    }
    humantime::parse_duration(s.trim()).map_err(|_| EXPECTED.to_string())
}

/// `scan_interval` / `--scan-interval`: at least 10ms.
pub fn parse_scan_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Ok(d) if d >= MIN_SCAN_INTERVAL => Ok(d),
        Err(e) if e.starts_with("a duration cannot be negative") => Err(e),
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
        favor_dynmods: config.favor_dynmods,
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
    let mut out = format!("# ffrtmp watch: effective configuration ({})\n", comment_text(&source));
    // Plain data (strings, integers, string-keyed maps) always serializes.
    out.push_str(&serde_norway::to_string(&view).expect("the effective configuration is plain data"));
    for warning in warnings {
        out.push_str(&format!("# warning: {}\n", comment_text(warning)));
    }
    out
}

/// `text` as the rest of one YAML comment line. A target name (in a
/// warning) or a file name may hold any character but NUL: a line break
/// would end the comment, and libyaml refuses control characters and a few
/// others anywhere in the stream, so those are written escaped (`\r`).
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            let refused = c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}');
            if refused {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

mod merge;
mod parse;
mod render;
mod schema;
pub mod trust;
mod values;

use merge::*;
use parse::*;
use render::*;
use schema::*;
use values::*;

#[cfg(test)]
mod tests;
