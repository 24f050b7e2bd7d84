//! What `--check-config` prints: the effective configuration.

use super::*;

#[derive(Serialize)]
pub(super) struct EffectiveView<'a> {
    pub(super) scan_interval: String,
    pub(super) target_commands: &'a [String],
    pub(super) cgroup_root: String,
    pub(super) backend: Backend,
    pub(super) favor_dynmods: bool,
    pub(super) default_limits: LimitsView,
    #[serde(skip_serializing_if = "FiltersView::is_empty")]
    pub(super) filters: FiltersView,
    pub(super) commands: BTreeMap<&'a str, CommandView>,
    pub(super) metrics: MetricsView,
    pub(super) state: StateView,
    pub(super) retry: RetryView,
}

#[derive(Serialize)]
pub(super) struct CommandView {
    pub(super) limits: LimitsView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) filters: Option<FiltersView>,
}

#[derive(Serialize)]
pub(super) struct MetricsView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) listen: Option<String>,
}

#[derive(Serialize)]
pub(super) struct StateView {
    pub(super) enabled: bool,
    pub(super) path: String,
    pub(super) flush_interval: String,
}

#[derive(Serialize)]
pub(super) struct RetryView {
    pub(super) enabled: bool,
    pub(super) max_attempts: u32,
}

/// Limits in the file's own keys: `cpu_quota` and `memory_limit` where the
/// value is a whole percent / MiB, `cpu_max` and `memory_max` otherwise.
#[derive(Serialize, Default)]
pub(super) struct LimitsView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cpu_quota: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cpu_max: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cpu_weight: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) memory_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) memory_max: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) memory_high: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) memory_swap_max: Option<String>,
    /// `None`: not printed; `Some(empty)`: printed as `[]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) io_max: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) pids_max: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cpus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) mems: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) io_weight: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) nice: Option<i8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) oom_score_adj: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) net_egress_max: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) net_ingress_max: Option<String>,
    pub(super) io_class: Option<String>,
}

impl LimitsView {
    /// `limits`; for a command, `defaults` are what an absent key would
    /// inherit, so a limit the command removed is printed as its "none".
    pub(super) fn new(limits: &Limits, defaults: Option<&Limits>) -> LimitsView {
        let mut view = LimitsView::default();
        if let Some(cpu) = limits.cpu_max {
            match cpu.percent() {
                Some(pct) => view.cpu_quota = Some(pct),
                None => view.cpu_max = Some(cpu.to_string()),
            }
        }
        view.cpu_weight = limits.cpu_weight.map(CpuWeight::get);
        match limits.memory_max {
            Some(m) if m.bytes() % MIB == 0 => view.memory_limit = Some(m.bytes() / MIB),
            Some(m) => view.memory_max = Some(m.bytes().to_string()),
            None if defaults.is_some_and(|d| d.memory_max.is_some()) => view.memory_max = Some("max".into()),
            None => {}
        }
        match limits.memory_high {
            Some(m) => view.memory_high = Some(m.bytes().to_string()),
            None if defaults.is_some_and(|d| d.memory_high.is_some()) => view.memory_high = Some("max".into()),
            None => {}
        }
        match limits.memory_swap_max {
            Some(s) => view.memory_swap_max = Some(s.bytes().to_string()),
            None if defaults.is_some_and(|d| d.memory_swap_max.is_some()) => view.memory_swap_max = Some("max".into()),
            None => {}
        }
        let removed_io = defaults.is_some_and(|d| !d.io_max.is_empty());
        if !limits.io_max.is_empty() || removed_io {
            view.io_max = Some(limits.io_max.iter().map(IoMax::to_string).collect());
        }
        view.pids_max = limits.pids_max.map(PidsMax::get);
        view.cpus = limits.cpus.as_ref().map(CpuList::to_string);
        view.mems = limits.mems.as_ref().map(CpuList::to_string);
        view.io_weight = limits.io_weight.map(IoWeight::get);
        view.nice = limits.nice.map(Nice::get);
        view.oom_score_adj = limits.oom_score_adj.map(OomScoreAdj::get);
        view.net_egress_max = limits.net_egress_max.map(|r| r.to_string());
        view.net_ingress_max = limits.net_ingress_max.map(|r| r.to_string());
        view.io_class = limits.io_class.map(|c| c.to_string());
        view
    }
}

/// Filters with only the keys that are set.
#[derive(Serialize)]
pub(super) struct FiltersView {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) allowed_users: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) blocked_users: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) allowed_uids: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) blocked_uids: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) allowed_parents: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) blocked_parents: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parent_match: Option<ParentMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) min_runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_runtime: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) allowed_dirs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) blocked_dirs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) dir_match: Option<DirMatch>,
}

impl FiltersView {
    pub(super) fn new(f: &Filters) -> FiltersView {
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

    pub(super) fn is_empty(&self) -> bool {
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
pub(super) fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}
