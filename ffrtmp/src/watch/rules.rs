//! The effective watch rules: which commands are targets, the limits each
//! one gets, and the filters a process must pass before it is adopted.
//!
//! Built from the command line and the `--watch-config` file (flags win);
//! replaced as a whole on SIGHUP.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::cgroup::Limits;
use crate::events::scan::Targets;

/// Everything that decides whether and how a process is governed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub targets: Targets,
    /// Limits for a target without its own `commands.<name>.limits`.
    pub default_limits: Limits,
    /// Filters every target must pass.
    pub filters: Filters,
    /// Per-command overrides, keyed by target name.
    pub commands: BTreeMap<String, CommandRule>,
}

/// `commands.<name>` of the configuration, already merged.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRule {
    /// The command's limits merged over the defaults (and the command-line
    /// limit flags over both).
    pub limits: Limits,
    /// Filters this command must pass in addition to the global ones.
    pub filters: Filters,
}

/// How `allowed_dirs` / `blocked_dirs` match a process's working directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirMatch {
    /// The working directory is exactly the listed one (the old tool's rule).
    #[default]
    Exact,
    /// The working directory is the listed one or below it.
    Prefix,
}

/// How `allowed_parents` / `blocked_parents` match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParentMatch {
    /// The listed pid is the process's parent (the old tool's rule).
    #[default]
    Immediate,
    /// The listed pid is the parent or any further ancestor.
    Ancestor,
}

/// One set of include/exclude rules. Empty lists and `None` allow everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filters {
    /// User names, resolved through the system's name service (NSS, asked
    /// with `getent`: see `watch::user_names`).
    pub allowed_users: Vec<String>,
    pub blocked_users: Vec<String>,
    /// Real uids (from `/proc/<pid>/status`).
    pub allowed_uids: Vec<u32>,
    pub blocked_uids: Vec<u32>,
    pub allowed_parents: Vec<u32>,
    pub blocked_parents: Vec<u32>,
    pub parent_match: ParentMatch,
    /// Adoption waits until the process has run this long (a timer per
    /// pending process); one that exits sooner is never governed.
    pub min_runtime: Option<Duration>,
    /// A process older than this when seen is not adopted.
    pub max_runtime: Option<Duration>,
    pub allowed_dirs: Vec<PathBuf>,
    pub blocked_dirs: Vec<PathBuf>,
    pub dir_match: DirMatch,
}

impl Filters {
    /// Whether `filter::check` has anything to check in this set, i.e.
    /// whether a process's facts must be read for it (`min_runtime` is a
    /// timer in the daemon, not a check).
    pub fn checks_process(&self) -> bool {
        !(self.allowed_users.is_empty()
            && self.blocked_users.is_empty()
            && self.allowed_uids.is_empty()
            && self.blocked_uids.is_empty()
            && self.allowed_parents.is_empty()
            && self.blocked_parents.is_empty()
            && self.allowed_dirs.is_empty()
            && self.blocked_dirs.is_empty()
            && self.max_runtime.is_none())
    }
}

impl Rules {
    /// Whether a process of `command` must pass `filter::check` (some filter
    /// set of it checks something), so its facts are worth reading.
    pub fn checks_process_for(&self, command: &str) -> bool {
        self.filters_for(command).any(Filters::checks_process)
    }

    /// Does any target's adoption read the process for its filters?
    pub fn checks_any_process(&self) -> bool {
        std::iter::once(&self.filters)
            .chain(self.commands.values().map(|c| &c.filters))
            .any(Filters::checks_process)
    }

    /// May the daemon adopt on its loop (docs/architecture.md, "The hot
    /// path")? Not when a filter may look users up (`getent` can take seconds)
    /// or a limit is a network one (rtnetlink dumps, and loading eBPF
    /// programs the first time).
    pub fn adopts_on_loop(&self) -> bool {
        let mut limits = std::iter::once(&self.default_limits).chain(self.commands.values().map(|c| &c.limits));
        !self.checks_any_process() && limits.all(|l| l.net_limits().is_empty())
    }

    /// Rules that govern `targets` with `limits` and filter nothing.
    pub fn simple(targets: Targets, limits: Limits) -> Rules {
        Rules {
            targets,
            default_limits: limits,
            filters: Filters::default(),
            commands: BTreeMap::new(),
        }
    }

    /// The limits a process of `command` gets.
    pub fn limits_for(&self, command: &str) -> &Limits {
        self.commands.get(command).map_or(&self.default_limits, |c| &c.limits)
    }

    /// The filter sets a process of `command` must all pass: global first.
    pub fn filters_for(&self, command: &str) -> impl Iterator<Item = &Filters> {
        std::iter::once(&self.filters).chain(self.commands.get(command).map(|c| &c.filters))
    }

    /// How long a process of `command` must have run before it is adopted
    /// (the longest `min_runtime` of its filter sets).
    pub fn min_runtime_for(&self, command: &str) -> Duration {
        self.filters_for(command)
            .filter_map(|f| f.min_runtime)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}
