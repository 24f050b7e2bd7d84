//! `ffrtmp watch --check-config`: the real binary validates a configuration
//! file and prints the effective configuration. Needs no root and touches
//! nothing, so these tests always run.

use std::path::{Path, PathBuf};

use tests::{Output, ffrtmp, run_ffrtmp};

/// The old Go tool's own example file, verbatim.
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

/// `text` written to `name` in a fresh temp dir (kept while the guard lives).
fn config_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("writing the config file");
    (dir, path)
}

fn check_config(path: &Path, flags: &[&str]) -> Output {
    let path = path.to_str().expect("a UTF-8 temp path");
    let mut args = vec!["watch", "--check-config", path];
    args.extend_from_slice(flags);
    run_ffrtmp(&args)
}

/// `ffrtmp watch --check-config` of `text` fails with exit 125 and one
/// stderr line that starts with `FILE:expected`.
#[track_caller]
fn assert_rejected(name: &str, text: &str, expected: &str) {
    let (_dir, path) = config_file(name, text);
    let out = check_config(&path, &[]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
    let want = format!("ffrtmp: error: {}:{expected}", path.display());
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
    assert!(out.stderr.starts_with(&want), "got: {}want: {want}", out.stderr);
}

#[test]
fn check_config_prints_the_merged_configuration() {
    let (_dir, path) = config_file("watch.yaml", OLD_EXAMPLE);
    let out = check_config(&path, &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stderr, "", "no warnings: {out:?}");
    // Each command's limits, merged over default_limits (cpu_weight is inherited).
    for block in [
        "default_limits:\n  cpu_quota: 200\n  cpu_weight: 100\n  memory_limit: 4096\n",
        "  ffmpeg:\n    limits:\n      cpu_quota: 300\n      cpu_weight: 100\n      memory_limit: 8192\n",
        "  gst-launch-1.0:\n    limits:\n      cpu_quota: 150\n      cpu_weight: 100\n      memory_limit: 2048\n",
        "filters:\n  min_runtime: 5s\n  blocked_dirs:\n  - /tmp\n  - /home/test\n",
        "scan_interval: 10s\n",
    ] {
        assert!(out.stdout.contains(block), "{block:?} not in:\n{}", out.stdout);
    }
}

#[test]
fn check_config_reads_toml() {
    let toml =
        "target_commands = [\"ffmpeg\"]\n[default_limits]\ncpu_quota = 120\n[commands.ffmpeg.limits]\nnice = 5\n";
    let (_dir, path) = config_file("watch.toml", toml);
    let out = check_config(&path, &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout
            .contains("  ffmpeg:\n    limits:\n      cpu_quota: 120\n      nice: 5\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_typo_key_is_refused_with_file_line_and_key() {
    let typo = OLD_EXAMPLE.replace("      memory_limit: 8192", "      memroy_limit: 8192");
    assert_rejected(
        "watch.yaml",
        &typo,
        "26:7: commands.ffmpeg.limits.memroy_limit: unknown field `memroy_limit`",
    );
}

#[test]
fn a_wrong_type_is_refused_with_file_line_and_key() {
    let wrong = OLD_EXAMPLE.replace("  cpu_quota: 200", "  cpu_quota: two cores");
    assert_rejected(
        "watch.yaml",
        &wrong,
        "6:14: default_limits.cpu_quota: invalid type: string \"two cores\", expected an integer percent",
    );
    assert_rejected(
        "watch.toml",
        "[filters]\nallowed_uids = \"1000\"\n",
        "2:16: filters.allowed_uids: invalid type: string \"1000\", expected a sequence",
    );
}

#[test]
fn an_out_of_range_value_is_refused_with_file_line_and_key() {
    let range = OLD_EXAMPLE.replace("      cpu_quota: 150", "      cpu_quota: 150\n      cpu_weight: 20000");
    assert_rejected(
        "watch.yaml",
        &range,
        "34:7: commands.gst-launch-1.0.limits.cpu_weight: 20000 is out of range: expected an integer 1..=10000 (100 is the default share)",
    );
    assert_rejected(
        "watch.toml",
        "[commands.ffmpeg.limits]\nnice = -30\n",
        "2:8: commands.ffmpeg.limits.nice: -30 is out of range: expected an integer -20..=19",
    );
}

#[test]
fn a_limit_flag_overrides_the_file_everywhere() {
    let (_dir, path) = config_file("watch.yaml", OLD_EXAMPLE);
    let out = check_config(&path, &["--cpu-quota", "50", "--scan-interval", "2s"]);
    assert_eq!(out.code(), 0, "{out:?}");
    for block in [
        "default_limits:\n  cpu_quota: 50\n  cpu_weight: 100\n  memory_limit: 4096\n",
        "  ffmpeg:\n    limits:\n      cpu_quota: 50\n      cpu_weight: 100\n      memory_limit: 8192\n",
        "  gst-launch-1.0:\n    limits:\n      cpu_quota: 50\n      cpu_weight: 100\n      memory_limit: 2048\n",
        "scan_interval: 2s\n",
    ] {
        assert!(out.stdout.contains(block), "{block:?} not in:\n{}", out.stdout);
    }
}

#[test]
fn target_flag_replaces_the_targets_and_warns_about_unused_commands() {
    let (_dir, path) = config_file("watch.yaml", OLD_EXAMPLE);
    let out = check_config(&path, &["--target", "ffmpeg"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout.contains("target_commands:\n- ffmpeg\ncgroup_root"),
        "{}",
        out.stdout
    );
    let warning = "commands.gst-launch-1.0 is configured but gst-launch-1.0 is not a target (ffmpeg)";
    assert!(out.stderr.contains(warning), "{out:?}");
    assert!(out.stdout.contains(&format!("# warning: {warning}")), "{}", out.stdout);
    // The old tool's --target took a comma-separated list too.
    let out = check_config(&path, &["--target", "ffmpeg,gst-launch-1.0"]);
    assert!(
        out.stdout
            .contains("target_commands:\n- ffmpeg\n- gst-launch-1.0\ncgroup_root"),
        "{}",
        out.stdout
    );
    assert!(!out.stderr.contains("not a target"), "{out:?}");
}

#[test]
fn the_cgroup_root_variable_overrides_the_file() {
    let (_dir, path) = config_file("watch.yaml", "cgroup_root: /from-file\n");
    let path = path.to_str().expect("a UTF-8 temp path");
    let out = run_ffrtmp(&["watch", "--check-config", path]);
    assert!(out.stdout.contains("cgroup_root: /from-file\n"), "{out:?}");
    let out = ffrtmp(&["watch", "--check-config", path])
        .env("FFRTMP_CGROUP_ROOT", "from-env")
        .output()
        .expect("running ffrtmp");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cgroup_root: from-env\n"),
        "{out:?}"
    );
}

#[test]
fn a_missing_file_is_one_line_and_exit_125() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("missing.yaml");
    let out = check_config(&path, &[]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains(&path.display().to_string()), "{out:?}");
}

/// A file anyone may write is refused, in one line naming it, its mode and
/// the fix; `--allow-insecure-config` reads it with a warning.
#[test]
fn a_configuration_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = config_file(
        "watch.yaml",
        "target_commands: [sshd]\ndefault_limits:\n  memory_limit: 1\n",
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = check_config(&path, &[]);
    assert_eq!(out.code(), 125, "{out:?}");
    let line = out.stderr.lines().last().unwrap_or_default();
    assert!(
        line.starts_with(&format!(
            "ffrtmp: error: refusing the watch configuration {}: it {}",
            path.display(),
            path.display()
        )),
        "{out:?}"
    );
    assert!(
        line.contains("is writable by anyone (mode 0666)") && line.contains("chmod go-w"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    let out = check_config(&path, &["--allow-insecure-config"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("warning: --allow-insecure-config: reading"),
        "{out:?}"
    );
}

/// Limits that grant more than the kernel's default to a target nobody
/// restricts are warned about, at load (and so at start and on reload).
#[test]
fn granting_more_than_the_default_to_anyone_is_warned_about() {
    let yaml = "target_commands: [ffmpeg, gst-launch-1.0]\ndefault_limits:\n  cpu_weight: 500\ncommands:\n  ffmpeg:\n    filters:\n      allowed_users: [video]\n";
    let (_dir, path) = config_file("watch.yaml", yaml);
    let out = check_config(&path, &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("more than the kernel's default"))
        .collect();
    assert_eq!(warnings.len(), 1, "only the unrestricted target: {out:?}");
    assert!(
        warnings[0].contains("gst-launch-1.0 gets cpu_weight 500") && warnings[0].contains("add allowed_users"),
        "{out:?}"
    );
}
