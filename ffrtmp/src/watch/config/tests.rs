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
    load_text(text, Path::new(name), overrides)
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
favor_dynmods: true
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
favor_dynmods = true
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
        assert!(c.favor_dynmods);
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
fn oom_score_adj_is_a_per_process_limit_like_nice() {
    let loaded = config("watch.yaml", "default_limits: {oom_score_adj: -500, nice: 5}\n");
    let limits = loaded.rules.limits_for("ffmpeg");
    assert_eq!(limits.oom_score_adj.map(|a| a.get()), Some(-500));
    assert!(limits.controllers().is_empty(), "no cgroup controller for it");
    let rendered = render(&loaded, &[]);
    assert!(rendered.contains("oom_score_adj: -500"), "{rendered}");
    let e = error("watch.yaml", "default_limits:\n  oom_score_adj: 1001\n");
    assert!(
        e.contains("default_limits.oom_score_adj: 1001 is out of range: expected an integer -1000..=1000"),
        "{e}"
    );
}

#[test]
fn memory_swap_max_zero_means_no_swap_and_max_removes_it() {
    let yaml = "default_limits: {memory_swap_max: 0}\ncommands:\n  ffmpeg:\n    limits: {memory_swap_max: max}\n";
    let loaded = config("watch.yaml", yaml);
    let swap = |name: &str| loaded.rules.limits_for(name).memory_swap_max.map(|s| s.bytes());
    assert_eq!(swap("gst-launch-1.0"), Some(0), "0 is no swap, not \"unset\"");
    assert_eq!(swap("ffmpeg"), None, "max removes the default's limit");
    let rendered = render(&loaded, &[]);
    let again = config("again.yaml", &rendered).rules;
    for name in ["ffmpeg", "gst-launch-1.0"] {
        assert_eq!(
            again.limits_for(name),
            loaded.rules.limits_for(name),
            "{name}: {rendered}"
        );
    }
}

#[test]
fn pids_max_is_a_limit_like_the_others() {
    let yaml = "default_limits: {pids_max: 256}
commands:
  ffmpeg:
    limits: {pids_max: 64}
";
    let loaded = config("watch.yaml", yaml);
    let pids = |n: &str| Some(crate::cgroup::limits::PidsMax::parse(n).unwrap());
    assert_eq!(loaded.rules.limits_for("ffmpeg").pids_max, pids("64"));
    assert_eq!(loaded.rules.limits_for("gst-launch-1.0").pids_max, pids("256"));
    // --check-config prints it and reads its own output back the same.
    let rendered = render(&loaded, &[]);
    assert!(rendered.contains("pids_max: 256"), "{rendered}");
    let again = config("again.yaml", &rendered).rules;
    for name in ["ffmpeg", "gst-launch-1.0"] {
        assert_eq!(again.limits_for(name), loaded.rules.limits_for(name), "{name}");
    }
    for (value, expected) in [
        ("0", "0 is out of range: expected a whole number of tasks, 1 to 4194304"),
        (
            "max",
            "invalid type: string \"max\", expected an integer number of tasks, 1..=4194304",
        ),
    ] {
        let text = format!("default_limits:\n  pids_max: {value}\n");
        let e = error("watch.yaml", &text);
        assert!(e.contains("default_limits.pids_max: ") && e.contains(expected), "{e}");
    }
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
    assert!(!config.favor_dynmods, "off unless asked for");
    assert_eq!(config.overrides, overrides, "kept for the SIGHUP re-merge");
    // --favor-dynmods wins over `favor_dynmods: false`.
    let flag = Overrides {
        favor_dynmods: Some(true),
        ..Overrides::default()
    };
    let (flagged, _) = from_str("watch.yaml", "favor_dynmods: false\n", &flag).unwrap();
    assert!(flagged.favor_dynmods);
    let (from_file, _) = from_str("watch.yaml", "favor_dynmods: true\n", &Overrides::default()).unwrap();
    assert!(from_file.favor_dynmods);
    assert!(error("watch.yaml", "favor_dynmods: 1\n").contains("favor_dynmods: "));
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
fn an_empty_or_comment_only_file_is_an_error_not_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let blank = [
        "",
        "\n",
        "  \n\t\n   ",
        "\r\n\r\n",
        "# everything commented out\n# target_commands: [ffmpeg]\n",
        "  # indented comment\n\n",
        "---\n# nothing\n...\n",
        "--- # a marker and a comment\n",
        "\u{feff}# with a byte order mark\n",
    ];
    for (i, text) in blank.iter().enumerate() {
        for ext in ["yaml", "toml"] {
            let path = dir.path().join(format!("watch-{i}.{ext}"));
            std::fs::write(&path, text).unwrap();
            let e = load(Some(&path), &Overrides::default()).unwrap_err();
            assert!(matches!(e, ConfigError::Empty { .. }), "{text:?} as {ext}: {e}");
            assert_eq!(
                e.to_string(),
                format!(
                    "{} is empty: refusing to replace the configuration with defaults",
                    path.display()
                )
            );
        }
    }
    // Saying "the defaults" on purpose, or one key after the comments, loads.
    for (name, text) in [
        ("explicit.yaml", "{}\n"),
        ("one.yaml", "# c\nscan_interval: 5s\n"),
        ("one.toml", "# c\nscan_interval = \"5s\"\n"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        load(Some(&path), &Overrides::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn retry_settings() {
    let attempts =
        |text: &str, overrides: Overrides| from_str("watch.yaml", text, &overrides).unwrap().0.retry.max_attempts;
    assert_eq!(attempts("{}", Overrides::default()), 3);
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
favor_dynmods: true
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
    assert!(reloaded.favor_dynmods);
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

/// Found by the config_yaml fuzz target's round trip (the input is in
/// fuzz/regressions/config_yaml/): a whole-percent quota beyond
/// cpu_quota's 100000 was printed as `cpu_quota: 200000`, which does
/// not load.
#[test]
fn a_quota_beyond_cpu_quota_range_is_printed_as_cpu_max() {
    let yaml = include_str!("../../../../fuzz/regressions/config_yaml/cpu-max-beyond-cpu-quota.yaml");
    let (original, warnings) = from_str("watch.yaml", yaml, &Overrides::default()).unwrap();
    let printed = render(&original, &warnings);
    assert!(printed.contains("  cpu_max: 200000000 100000\n"), "{printed}");
    let reloaded = config("printed.yaml", &printed);
    assert_eq!(reloaded.rules.default_limits, original.rules.default_limits);
}

/// Found by the config_yaml and config_toml fuzz targets (the inputs
/// are in fuzz/regressions/): a target name with a carriage return
/// ended its warning's comment line in --check-config's output, and the
/// rest of the line made the output fail to load.
#[test]
fn warnings_with_line_breaks_stay_comments() {
    let yaml = "target_commands: [\"a\\rb\", \"c\\u2028d\", \"e\\x01f\"]\ncommands: {\"x\\ny\": {}}\n";
    let (original, warnings) = from_str("watch.yaml", yaml, &Overrides::default()).unwrap();
    assert_eq!(original.rules.targets.names(), ["a\rb", "c\u{2028}d", "e\u{1}f"]);
    let printed = render(&original, &warnings);
    assert!(
        printed.ends_with(
            "# warning: commands.x\\ny is configured but x\\ny is not a target (a\\rb, c\\u{2028}d, e\\u{1}f); its settings are unused\n"
        ),
        "{printed}"
    );
    let reloaded = config("printed.yaml", &printed);
    assert_eq!(reloaded.rules.targets, original.rules.targets);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    for (name, file) in [
        (
            "watch.yaml",
            "config_yaml/crash-1799ee1bbd25454e509f036c75f330fa024c2021",
        ),
        (
            "watch.toml",
            "config_toml/crash-7645b11953a5c8ed41eea09b7a049e5c71faacd5",
        ),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let (original, warnings) = from_str(name, &text, &Overrides::default()).unwrap();
        let reloaded = config("printed.yaml", &render(&original, &warnings));
        assert_eq!(reloaded.rules.targets, original.rules.targets, "{file}");
    }
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
    assert!(printed.starts_with("# ffrtmp watch: effective configuration (watch.yaml merged with the command line)\n"));
    assert!(
        printed.ends_with(
            "# warning: commands.ffprobe is configured but ffprobe is not a target (ffmpeg); its settings are unused\n"
        ),
        "{printed}"
    );
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

#[test]
fn cpuset_io_weight_and_io_class_are_limits_like_the_others() {
    let yaml = r#"default_limits: {cpus: "0-1", mems: 0, io_weight: 50, io_class: idle}
commands:
  ffmpeg:
    limits: {cpus: 1, io_weight: 20, io_class: "best-effort:6"}
    filters: {allowed_users: [root]}
"#;
    let loaded = config("watch.yaml", yaml);
    let ffmpeg = loaded.rules.limits_for("ffmpeg");
    let gst = loaded.rules.limits_for("gst-launch-1.0");
    assert_eq!(ffmpeg.cpus.as_ref().map(ToString::to_string).as_deref(), Some("1"));
    assert_eq!(ffmpeg.mems.as_ref().map(ToString::to_string).as_deref(), Some("0"));
    assert_eq!(ffmpeg.io_weight.map(IoWeight::get), Some(20));
    assert_eq!(ffmpeg.io_class, Some(IoClass::BestEffort(6)));
    assert_eq!(gst.cpus.as_ref().map(ToString::to_string).as_deref(), Some("0-1"));
    assert_eq!(gst.io_class, Some(IoClass::Idle));
    let rendered = render(&loaded, &[]);
    for line in ["cpus: 0-1", "io_weight: 50", "io_class: best-effort:6"] {
        assert!(rendered.contains(line), "{line:?} not in {rendered}");
    }
    let again = config("again.yaml", &rendered).rules;
    for name in ["ffmpeg", "gst-launch-1.0"] {
        assert_eq!(again.limits_for(name), loaded.rules.limits_for(name), "{name}");
    }
    for (key, value, expected) in [
        ("cpus", "\"3-1\"", "\"3-1\" is invalid: expected CPU numbers"),
        ("mems", "\"0,0\"", "\"0,0\" is invalid: expected memory node numbers"),
        ("io_weight", "0", "0 is out of range: expected an integer 1..=10000"),
        (
            "io_class",
            "rt",
            "\"rt\" is invalid: expected idle, best-effort[:0-7] or realtime[:0-7]",
        ),
    ] {
        let e = error("watch.yaml", &format!("default_limits:\n  {key}: {value}\n"));
        assert!(
            e.contains(&format!("default_limits.{key}: ")) && e.contains(expected),
            "{e}"
        );
    }
}

#[test]
fn realtime_io_class_without_a_user_filter_is_warned_about() {
    let (_, warnings) = from_str(
        "watch.yaml",
        "commands:\n  ffmpeg:\n    limits: {io_class: \"realtime:2\", io_weight: 500}\n",
        &Overrides::default(),
    )
    .unwrap();
    assert!(
        warnings.iter().any(|w| w.starts_with("ffmpeg gets io_weight 500 and io_class realtime:2")
            && w.contains("any local user")),
        "{warnings:?}"
    );
    // A user filter, or a class that grants nothing, is no warning.
    for yaml in [
        "commands:\n  ffmpeg:\n    limits: {io_class: realtime}\n    filters: {allowed_users: [root]}\n",
        "commands:\n  ffmpeg:\n    limits: {io_class: idle}\n",
    ] {
        let (_, warnings) = from_str("watch.yaml", yaml, &Overrides::default()).unwrap();
        assert!(warnings.iter().all(|w| !w.contains("io_class")), "{yaml}: {warnings:?}");
    }
}
