//! The file's schema: the old tool's keys and the extended ones, as serde types.

use super::*;

/// The whole file. Every key is optional; null (an empty YAML value) is
/// the same as an absent key, as it was for the old tool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping of watch settings")]
pub(super) struct FileConfig {
    pub(super) scan_interval: Option<ScanInterval>,
    pub(super) target_commands: Option<Vec<CommandName>>,
    pub(super) default_limits: FileLimits,
    pub(super) filters: FileFilters,
    pub(super) commands: Option<Commands>,
    pub(super) cgroup_root: Option<CgroupRootValue>,
    pub(super) backend: Option<Backend>,
    pub(super) favor_dynmods: Option<bool>,
    pub(super) metrics: FileMetrics,
    pub(super) state: FileState,
    pub(super) retry: FileRetry,
}

/// `commands`: a command named twice is an error, not "the last one wins".
#[derive(Debug, Default)]
pub(super) struct Commands(pub(super) BTreeMap<CommandName, FileCommand>);

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
pub(super) struct FileCommand {
    pub(super) limits: Option<FileLimits>,
    pub(super) filters: Option<FileFilters>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping with listen")]
pub(super) struct FileMetrics {
    pub(super) listen: Option<ListenValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with enabled, path and flush_interval"
)]
pub(super) struct FileState {
    pub(super) enabled: Option<bool>,
    pub(super) path: Option<PathValue>,
    pub(super) flush_interval: Option<FlushInterval>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping with enabled and max_attempts")]
pub(super) struct FileRetry {
    pub(super) enabled: Option<bool>,
    pub(super) max_attempts: Option<RetryAttempts>,
}

/// A `limits` block as written; checked for conflicts into [`FileLimits`].
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping of limits (cpu_quota, cpu_max, cpu_weight, memory_limit, memory_max, memory_high, memory_swap_max, io_max, pids_max, cpus, mems, io_weight, nice, oom_score_adj, io_class, net_egress_max, net_ingress_max)"
)]
pub(super) struct RawLimits {
    pub(super) cpu_quota: Option<CpuQuota>,
    pub(super) cpu_max: Option<CpuMaxValue>,
    pub(super) cpu_weight: Option<Weight>,
    pub(super) memory_limit: Option<MemoryMib>,
    pub(super) memory_max: Option<MemoryBytes>,
    pub(super) memory_high: Option<MemoryBytes>,
    pub(super) memory_swap_max: Option<SwapBytes>,
    pub(super) io_max: Option<Vec<IoMaxValue>>,
    pub(super) pids_max: Option<PidsMaxValue>,
    pub(super) cpus: Option<CpuListValue>,
    pub(super) mems: Option<MemListValue>,
    pub(super) io_weight: Option<IoWeightValue>,
    pub(super) nice: Option<NiceValue>,
    pub(super) oom_score_adj: Option<OomScoreAdjValue>,
    pub(super) net_egress_max: Option<NetRateValue>,
    pub(super) net_ingress_max: Option<NetRateValue>,
    pub(super) io_class: Option<IoClassValue>,
}

/// A `limits` block: what it sets, over `default_limits` (or over nothing).
#[derive(Debug, Default, Deserialize)]
#[serde(try_from = "RawLimits")]
pub(super) struct FileLimits(pub(super) PartialLimits);

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
            memory_high: raw.memory_high.map(|m| m.0),
            memory_swap_max: raw.memory_swap_max.map(|m| m.0),
            io_max: raw.io_max.map(|list| list.into_iter().map(|io| io.0).collect()),
            pids_max: raw.pids_max.map(|p| p.0),
            cpus: raw.cpus.map(|c| c.0),
            mems: raw.mems.map(|m| m.0),
            io_weight: raw.io_weight.map(|w| w.0),
            nice: raw.nice.map(|n| n.0),
            oom_score_adj: raw.oom_score_adj.map(|n| n.0),
            net_egress_max: raw.net_egress_max.map(|r| r.0),
            net_ingress_max: raw.net_ingress_max.map(|r| r.0),
            io_class: raw.io_class.map(|c| c.0),
        }))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping of filters")]
pub(super) struct FileFilters {
    pub(super) allowed_users: Option<Vec<String>>,
    pub(super) blocked_users: Option<Vec<String>>,
    pub(super) allowed_uids: Option<Vec<u32>>,
    pub(super) blocked_uids: Option<Vec<u32>>,
    pub(super) allowed_parents: Option<Vec<u32>>,
    pub(super) blocked_parents: Option<Vec<u32>>,
    pub(super) parent_match: Option<ParentMatch>,
    pub(super) min_runtime: Option<Runtime>,
    pub(super) max_runtime: Option<Runtime>,
    pub(super) allowed_dirs: Option<Vec<AbsolutePath>>,
    pub(super) blocked_dirs: Option<Vec<AbsolutePath>>,
    pub(super) dir_match: Option<DirMatch>,
}

impl FileFilters {
    pub(super) fn into_filters(self) -> Filters {
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
