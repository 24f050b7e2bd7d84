//! A real Prometheus against a real `ffrtmp watch` (issue 13): Debian's
//! `prometheus` and `promtool`, as an operator would run them.
//!
//! - `promtool check rules` and `promtool test rules` accept the shipped
//!   alerting rules and their unit tests (deploy/prometheus);
//! - Prometheus, configured with those rules and a 1 s scrape of the daemon
//!   on loopback (the configuration passes `promtool check config`), sees
//!   the target up and every rule loaded and evaluated without error;
//! - with a CPU-burning target governed under a CPU limit (so it is
//!   throttled) and a governed job that ended, every query of the shipped
//!   Grafana dashboard (deploy/grafana) and every PromQL expression in
//!   docs/metrics.md returns data: a non-empty result that is not all NaN.
//!
//! The host only: the `cargo xtask vm-test` guest has no Prometheus (that
//! suite is about kernels), so there the test returns at once with a note.
//! Under `CI=true` a missing `prometheus` or `promtool` fails
//! (scripts/test-all installs the package); elsewhere the test is skipped
//! with a note. Same rules as the other privileged tests: a relative cgroup
//! root ([`TestRoot`]), a unique target name, every process we start killed
//! by PID (Prometheus too, when dropped), network on 127.0.0.1 only.

mod support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use tests::{EXIT_TIMEOUT, Output, POLL_TIMEOUT, Signal, Spawned, TestRoot, Value, skip, wait_until};

/// The scrape job's name, as in docs/metrics.md.
const JOB: &str = "ffrtmp-watch";
/// What the dashboard's `$__rate_interval` stands for here: Grafana's floor
/// would be 4 scrapes (4 s), but the adoptions must stay in the window until
/// every query has run, retries included ([`DATA_TIMEOUT`]).
const RATE_INTERVAL: &str = "1m";
/// How long every query may take to have data once the workload runs.
const DATA_TIMEOUT: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}

const RULES: &str = "deploy/prometheus/ffrtmp-alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/ffrtmp-alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/ffrtmp-dashboard.json";
const METRICS_DOC: &str = "docs/metrics.md";

/// In the VM guest: a note, and `true` (the caller returns).
fn host_only() -> bool {
    if tests::in_vm_guest() {
        let _ = writeln!(
            std::io::stderr(),
            "note: the Prometheus check runs on the host only (prometheus is not copied into the VM guest)"
        );
        return true;
    }
    false
}

/// Are `prometheus` and `promtool` installed? If not, [`skip`] (a panic under CI=true).
fn tools_installed() -> bool {
    let missing: Vec<&str> = ["prometheus", "promtool"]
        .into_iter()
        .filter(|p| !tests::on_path(p))
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip(&format!(
        "{} not installed (Debian package prometheus; scripts/test-all installs it)",
        missing.join(" and ")
    ));
    false
}

/// Run `promtool args` in the repository; it must exit 0.
#[track_caller]
fn promtool(args: &[&str]) -> Output {
    let mut cmd = Command::new("promtool");
    cmd.args(args).current_dir(repo());
    let out = Spawned::start_with_stdin(cmd, Stdio::null()).wait(EXIT_TIMEOUT);
    assert_eq!(out.code(), 0, "promtool {}: {out:?}", args.join(" "));
    out
}

/// The alert names of the shipped rules file (`- alert: Name` lines).
fn alert_names() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(RULES)).expect("reading the rules file");
    let names: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect();
    assert!(!names.is_empty(), "no `- alert:` in {RULES}");
    names
}

/// The shipped rules and their unit tests pass promtool. Needs no root.
#[test]
fn promtool_accepts_the_shipped_rules_and_their_tests() {
    if host_only() || !tools_installed() {
        return;
    }
    let out = promtool(&["check", "rules", RULES]);
    let rules = alert_names().len();
    assert!(
        out.stdout.contains(&format!("SUCCESS: {rules} rules found")),
        "{rules} alerting rules: {out:?}"
    );
    let out = promtool(&["test", "rules", RULE_TESTS]);
    assert!(out.stdout.contains("SUCCESS"), "{out:?}");
    // Every alert has a unit test.
    let tests = std::fs::read_to_string(repo().join(RULE_TESTS)).expect("reading the rule tests");
    for name in alert_names() {
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{name} has no test in {RULE_TESTS}"
        );
    }
}

// ---------------------------------------------------------------------------
// Prometheus

/// A `prometheus` we started, on 127.0.0.1, with its own storage. Dropping
/// it SIGKILLs and reaps it (by PID: [`Spawned`]), then removes the dir.
struct Prometheus {
    proc: Spawned,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Start it with the configuration `config` and wait until it is ready.
    #[track_caller]
    fn start(config: &Path) -> Prometheus {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("a temp dir for the TSDB");
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut cmd = Command::new("prometheus");
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().display()))
                .arg(format!("--web.listen-address={addr}"))
                .current_dir(dir.path());
            let proc = Spawned::start_with_stdin(cmd, Stdio::null());
            let ready = || http10_get(addr, "/-/ready").is_ok_and(|r| r.status == 200);
            wait_until(Duration::from_secs(30), || ready() || !proc.running());
            if ready() {
                return Prometheus { proc, addr, _dir: dir };
            }
            let log = proc.stderr_now();
            if !proc.running() && log.contains("address already in use") {
                continue;
            }
            panic!(
                "prometheus not ready on {addr} within 30 s (running: {}); log:\n{}",
                proc.running(),
                tail(&log)
            );
        }
        panic!("no free port for prometheus after 5 tries");
    }

    /// `GET path` (an API call): its JSON.
    #[track_caller]
    fn get(&self, path: &str) -> Value {
        let reply = http10_get(self.addr, path).unwrap_or_else(|e| panic!("GET {path} from prometheus: {e}"));
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", reply.body))
    }

    /// `/api/v1/query` of `expr` now: the whole answer, an error included.
    #[track_caller]
    fn query(&self, expr: &str) -> Value {
        let reply = http10_post_form(self.addr, "/api/v1/query", &[("query", expr)])
            .unwrap_or_else(|e| panic!("query {expr:?}: {e}"));
        serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("query {expr:?}: {e}: HTTP {} {}", reply.status, reply.body))
    }

    /// The one value of a query expected to give one sample, if it does.
    fn scalar(&self, expr: &str) -> Option<f64> {
        let answer = self.query(expr);
        let result = answer["data"]["result"].as_array()?;
        match &result[..] {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// SIGTERM; it must exit 0.
    #[track_caller]
    fn stop(self) {
        let Prometheus { proc, _dir, .. } = self;
        proc.signal(Signal::SIGTERM);
        let out = proc.wait(EXIT_TIMEOUT);
        assert_eq!(out.code(), 0, "prometheus after SIGTERM: {}", tail(&out.stderr));
    }
}

/// Why `answer` (from `/api/v1/query`) is not data, if it is not: an error,
/// an empty result, or nothing but NaN.
fn no_data(answer: &Value) -> Option<String> {
    if answer["status"] != "success" {
        return Some(format!("{}: {}", answer["errorType"], answer["error"]));
    }
    let data = &answer["data"];
    let values: Vec<&str> = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["value"][1].as_str())
            .collect(),
        Some("scalar") => data["result"][1].as_str().into_iter().collect(),
        other => return Some(format!("result type {other:?}, not an instant vector")),
    };
    if values.is_empty() {
        return Some("empty result".into());
    }
    if values.iter().all(|v| v.eq_ignore_ascii_case("nan")) {
        return Some(format!("only NaN: {}", data["result"]));
    }
    None
}

// ---------------------------------------------------------------------------
// The queries under test

/// Every query of the dashboard: (where, PromQL with its variables
/// replaced). Checks on the way what a Grafana import relies on: the
/// datasource variable on every panel and query, `$__rate_interval` as the
/// window of every range selector.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join(DASHBOARD)).expect("reading the dashboard");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion");
    let variables: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        variables.contains(&"datasource"),
        "a datasource variable: {variables:?}"
    );
    let mut queries = Vec::new();
    let mut stack: Vec<&Value> = dash["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "datasource of {title:?}");
        let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "datasource of a query of {title:?}"
            );
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a query of {title:?} has no expr"));
            for window in expr.split('[').skip(1) {
                assert!(
                    window.starts_with("$__rate_interval]"),
                    "{title:?}: range selectors use $__rate_interval: {expr}"
                );
            }
            let expr = expr
                .replace("$__rate_interval", RATE_INTERVAL)
                .replace("${instance}", ".*")
                .replace("$instance", ".*");
            assert!(
                !expr.contains('$'),
                "{title:?}: a variable this test does not replace: {expr}"
            );
            queries.push((format!("dashboard panel {title:?} ({})", target["refId"]), expr));
        }
    }
    queries.reverse();
    queries
}

/// The PromQL expressions docs/metrics.md recommends: its inline code spans
/// (outside fenced blocks) that name an `ffrtmp_` metric inside a function
/// or aggregation. Alert thresholds (a comparison) live in the rules file
/// and are left to promtool.
fn doc_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join(METRICS_DOC)).expect("reading docs/metrics.md");
    let mut fenced = false;
    let mut queries = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for span in line.split('`').skip(1).step_by(2) {
            let comparison = [" > ", " < ", " >= ", " <= ", " == ", " != "]
                .iter()
                .any(|op| span.contains(op));
            if span.contains("ffrtmp_") && span.contains('(') && !comparison {
                queries.push((format!("{METRICS_DOC}: `{span}`"), span.to_owned()));
            }
        }
    }
    assert!(
        queries.len() >= 5,
        "docs/metrics.md recommends at least 5 queries; found {queries:?}"
    );
    queries
}

// ---------------------------------------------------------------------------

/// Prometheus scrapes a governing daemon, loads the shipped rules, and every
/// shipped query has data (see the file's head).
#[test]
fn prometheus_scrapes_the_daemon_and_every_shipped_query_has_data() {
    if host_only() || !tools_installed() {
        return;
    }
    let Some(host) = setup(Backend::Ebpf) else { return };
    let started = Instant::now();
    let root = TestRoot::new(host);
    let stubs = Stubs::new();
    let name = unique_target();
    let sh = stubs.sh(&name);
    let (daemon, metrics) = start_with_metrics_and(
        &root,
        Backend::Ebpf,
        &name,
        &["--cpu-quota", "20", "--memory-limit", "64"],
    );

    let config_dir = tempfile::tempdir().expect("a temp dir for prometheus.yml");
    let config = config_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [\"{metrics}\"]\n",
            rules = repo().join(RULES).display()
        ),
    )
    .expect("writing prometheus.yml");
    let config_arg = config.to_str().expect("a UTF-8 temp path");
    promtool(&["check", "config", config_arg]);
    let prom = Prometheus::start(&config);

    // The target is up.
    let scrape_url = format!("http://{metrics}/metrics");
    let target_health = || -> Option<String> {
        let targets = prom.get("/api/v1/targets?state=active");
        targets["data"]["activeTargets"]
            .as_array()?
            .iter()
            .find(|t| t["labels"]["job"] == JOB && t["scrapeUrl"] == scrape_url.as_str())
            .map(|t| format!("{} {}", t["health"], t["lastError"]))
    };
    wait_until(POLL_TIMEOUT, || {
        target_health().is_some_and(|h| h.starts_with("\"up\""))
    });
    let health = target_health();
    assert!(
        health.as_deref().is_some_and(|h| h.starts_with("\"up\"")),
        "target {scrape_url} of job {JOB}: {health:?}; /api/v1/targets: {}",
        prom.get("/api/v1/targets")
    );

    // Every rule of the shipped file is loaded and evaluates without error.
    let names = alert_names();
    let rule_states = || -> Vec<(String, String)> {
        let rules = prom.get("/api/v1/rules?type=alert");
        rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or("?").to_owned(),
                    format!("{} {}", r["health"], r["lastError"]),
                )
            })
            .collect()
    };
    let all_ok = |states: &[(String, String)]| {
        names
            .iter()
            .all(|n| states.iter().any(|(m, h)| m == n && h.starts_with("\"ok\"")))
    };
    wait_until(POLL_TIMEOUT, || all_ok(&rule_states()));
    let states = rule_states();
    assert!(all_ok(&states), "rules {names:?} loaded with health ok: {states:?}");
    assert_eq!(states.len(), names.len(), "exactly the shipped rules: {states:?}");

    // Scraped at least twice before any target runs, so that rates over the
    // adoptions below have a sample from before them.
    let scrapes = format!("count_over_time(ffrtmp_adoption_latency_seconds_count{{job=\"{JOB}\"}}[1m])");
    wait_until(POLL_TIMEOUT, || prom.scalar(&scrapes).is_some_and(|n| n >= 2.0));
    let n = prom.scalar(&scrapes);
    assert!(n.is_some_and(|n| n >= 2.0), "{scrapes}: {n:?}");

    // A target that burns CPU under its 20 % limit (throttled), and one that
    // ends when its stdin closes (a job ended).
    let burner = Target::spawn(
        Command::new(&sh)
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null()),
    );
    let mut reader = Target::spawn(
        Command::new(&sh)
            .args(["-c", "read line; exit 0"])
            .stdin(Stdio::piped()),
    );
    daemon.wait_governed(&root, &name, &[burner.pid(), reader.pid()], POLL_TIMEOUT);
    assert_eq!(root.cpu_max(&job_of(&name, burner.pid())), "20000 100000");
    drop(reader.stdin());
    let status = reader.reap(POLL_TIMEOUT);
    assert!(status.success(), "{status}");
    let ended = format!("sum(ffrtmp_jobs_total{{command=\"{name}\"}})");
    wait_until(POLL_TIMEOUT, || prom.scalar(&ended) == Some(1.0));
    assert_eq!(prom.scalar(&ended), Some(1.0), "{ended}");
    // About 5 s of scrapes of the throttled job.
    let throttled = format!("count_over_time(ffrtmp_job_throttled_seconds_total{{command=\"{name}\"}}[1m])");
    wait_until(POLL_TIMEOUT, || prom.scalar(&throttled).is_some_and(|n| n >= 5.0));
    let n = prom.scalar(&throttled);
    assert!(n.is_some_and(|n| n >= 5.0), "{throttled}: {n:?}");

    // Every query has data.
    let mut queries = dashboard_queries();
    queries.extend(doc_queries());
    let failing = || -> Vec<(String, String, String)> {
        queries
            .iter()
            .filter_map(|(at, expr)| no_data(&prom.query(expr)).map(|why| (at.clone(), expr.clone(), why)))
            .collect()
    };
    wait_until(DATA_TIMEOUT, || failing().is_empty());
    let failed = failing();
    assert!(
        failed.is_empty(),
        "{} of {} queries without data:\n{}",
        failed.len(),
        queries.len(),
        failed
            .iter()
            .map(|(at, expr, why)| format!("- {at}\n  {expr}\n  {why}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let _ = writeln!(
        std::io::stderr(),
        "prometheus: {} queries with data ({} from the dashboard), {} rules loaded, in {:.1?}",
        queries.len(),
        dashboard_queries().len(),
        names.len(),
        started.elapsed()
    );

    prom.stop();
    drop(config_dir);
    drop(burner);
    daemon.stop();
}
