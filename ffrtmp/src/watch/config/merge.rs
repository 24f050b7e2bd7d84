//! Merging the file with the command line and the built-in defaults.

use super::*;

pub(super) fn merge(file: FileConfig, path: Option<&Path>, overrides: &Overrides) -> (WatchConfig, Vec<String>) {
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
        favor_dynmods: overrides.favor_dynmods.or(file.favor_dynmods).unwrap_or(false),
        scan_interval: (overrides.scan_interval)
            .or(file.scan_interval.and_then(|s| s.0))
            .unwrap_or(DEFAULT_SCAN_INTERVAL),
        ring_bytes: overrides.ring_bytes.unwrap_or(WatchConfig::DEFAULT_RING_BYTES),
        netlink_rcvbuf: overrides.netlink_rcvbuf.unwrap_or(WatchConfig::DEFAULT_NETLINK_RCVBUF),
        config_file: path.map(Path::to_owned),
        follow_config_file: true,
        state,
        retry: RetryConfig { max_attempts },
        metrics_listen: overrides.metrics_listen.or(file.metrics.listen.and_then(|l| l.0)),
        overrides: overrides.clone(),
    };
    (config, warnings)
}
