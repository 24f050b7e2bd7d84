//! Prometheus metrics of `ffrtmp watch`. The names are a public interface,
//! documented in docs/metrics.md: rename nothing without saying so there.
//!
//! The daemon reports what happens through [`Metrics`]; the per-job usage
//! series are read from each job's cgroup when scraped, so they are exact at
//! scrape time and cost nothing between scrapes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::cgroup::{Usage, UsageReader};
use crate::report::Ending;

/// Labels of a family with one label.
type Label1 = [(&'static str, String); 1];
/// Labels of a family with two labels.
type Label2 = [(&'static str, String); 2];
/// Labels of a family with three labels.
type Label3 = [(&'static str, String); 3];

/// Reconcile triggers and reload results, exported at 0 from the start so
/// that `rate()` sees their first increment.
const TRIGGERS: [&str; 5] = ["startup", "loss", "poll", "reload", "retry"];

/// Every metric of the daemon. Cheap to clone; all clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    events: Family<Label1, Counter>,
    kernel_drops: Counter,
    foreign_datagrams: Counter,
    lost: Family<Label1, Counter>,
    reconcile_scans: Family<Label1, Counter>,
    scan_failures: Counter,
    check_failures: Counter,
    adoption_latency: Histogram,
    adoption_before_move: Histogram,
    adoption_move: Histogram,
    adoptions: Family<Label2, Counter>,
    adoption_retries: Counter,
    filtered: Family<Label2, Counter>,
    limit_failures: Family<Label1, Counter>,
    governed: Gauge,
    jobs: Family<Label3, Counter>,
    reloads: Family<Label1, Counter>,
    reload_ok: Gauge,
    reattached: Counter,
    events_dropped: Counter,
    build_info: Family<Label2, Gauge>,
    favordynmods: Gauge,
    favordynmods_supported: Gauge,
    favordynmods_reapplied: Counter,
    running: Arc<JobsCollector>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ffrtmp");
        let events = Family::default();
        registry.register(
            "events",
            "Process events received, by event source (ebpf, netlink, poll, scan)",
            events.clone(),
        );
        let kernel_drops = Counter::default();
        registry.register(
            "kernel_drops",
            "Process events the kernel dropped before the daemon could read them (eBPF ring buffer full)",
            kernel_drops.clone(),
        );
        let foreign_datagrams = Counter::default();
        registry.register(
            "foreign_datagrams",
            "Proc connector datagrams dropped because the kernel did not send them (sender port id not 0)",
            foreign_datagrams.clone(),
        );
        let lost = Family::default();
        registry.register(
            "events_lost",
            "Process events known to be lost, by event source; each loss triggers a /proc reconcile scan",
            lost.clone(),
        );
        let reconcile_scans: Family<Label1, Counter> = Family::default();
        registry.register(
            "reconcile_scans",
            "Full /proc scans started, by trigger (startup, loss, poll, reload)",
            reconcile_scans.clone(),
        );
        for trigger in TRIGGERS {
            reconcile_scans
                .get_or_create(&[("trigger", trigger.to_owned())])
                .inc_by(0);
        }
        let scan_failures = Counter::default();
        registry.register("scan_failures", "/proc scans that failed", scan_failures.clone());
        let check_failures = Counter::default();
        registry.register(
            "check_failures",
            "Reads of a possible target in /proc that failed for another reason than the process being gone (e.g. EMFILE); each is read again or found by a later scan",
            check_failures.clone(),
        );
        // 100 µs doubling up to 13 s: exec → limits in place is well under a
        // millisecond when healthy, seconds when the machine is struggling.
        let adoption_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register_with_unit(
            "adoption_latency",
            "Time from a target's exec to its cgroup limits being in place",
            Unit::Seconds,
            adoption_latency.clone(),
        );
        // 25 µs doubling up to 13 s: the split of the latency above, where
        // ffrtmp's own part should be a fraction of a millisecond.
        let adoption_before_move = Histogram::new(exponential_buckets(0.000025, 2.0, 20));
        registry.register_with_unit(
            "adoption_before_move",
            "Time from a target's exec to the start of the write that moves it into its job cgroup: ffrtmp's own work (reading the process, making the cgroup, writing the limits) and scheduling waits",
            Unit::Seconds,
            adoption_before_move.clone(),
        );
        let adoption_move = Histogram::new(exponential_buckets(0.000025, 2.0, 20));
        registry.register_with_unit(
            "adoption_move",
            "Time the kernel took to move a target into its job cgroup (the cgroup.procs or tasks write; the global migration lock's wait included)",
            Unit::Seconds,
            adoption_move.clone(),
        );
        let adoptions = Family::default();
        registry.register(
            "adoptions",
            "Adoptions of target processes into job cgroups, by command and result (ok, failed, exited: it ended before it could be governed)",
            adoptions.clone(),
        );
        let adoption_retries = Counter::default();
        registry.register(
            "adoption_retries",
            "Adoption attempts that failed transiently and were retried",
            adoption_retries.clone(),
        );
        let filtered = Family::default();
        registry.register(
            "filtered",
            "Target processes left alone by a filter, by command and filter",
            filtered.clone(),
        );
        let limit_failures = Family::default();
        registry.register(
            "limit_failures",
            "Requested limits that could not be applied to an adopted job, by limit",
            limit_failures.clone(),
        );
        let governed = Gauge::default();
        registry.register(
            "governed_processes",
            "Processes currently governed in job cgroups",
            governed.clone(),
        );
        let jobs = Family::default();
        registry.register(
            "jobs",
            "Governed jobs that ended, by command, SLA reason and exit (code, signal_N or unknown)",
            jobs.clone(),
        );
        let reloads: Family<Label1, Counter> = Family::default();
        registry.register(
            "config_reloads",
            "Configuration reloads on SIGHUP or a change of the file, by result (ok, failed)",
            reloads.clone(),
        );
        for result in ["ok", "failed"] {
            reloads.get_or_create(&[("result", result.to_owned())]).inc_by(0);
        }
        let reload_ok = Gauge::default();
        reload_ok.set(1);
        registry.register(
            "config_last_reload_successful",
            "0 while the last reload was refused (the daemon runs the configuration before it), else 1",
            reload_ok.clone(),
        );
        let reattached = Counter::default();
        registry.register(
            "reattached",
            "Jobs of an earlier run re-adopted at start",
            reattached.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "watch_events_dropped",
            "Watch events (the --events stream, the library's queue) dropped because their reader fell behind",
            events_dropped.clone(),
        );
        let build_info = Family::default();
        registry.register(
            "build_info",
            "Always 1; labels carry the version and the event backend in use",
            build_info.clone(),
        );
        let favordynmods = Gauge::default();
        registry.register(
            "cgroup_favordynmods",
            "1 while the cgroup mount option favordynmods is on (moves into job cgroups do not wait for an RCU grace period), else 0; read at start and every minute",
            favordynmods.clone(),
        );
        let favordynmods_supported = Gauge::default();
        registry.register(
            "cgroup_favordynmods_supported",
            "1 when the kernel supports favordynmods (/sys/kernel/cgroup/features lists it), else 0",
            favordynmods_supported.clone(),
        );
        let favordynmods_reapplied = Counter::default();
        registry.register(
            "cgroup_favordynmods_reapplied",
            "Times --favor-dynmods found favordynmods turned off by someone else (a remount or a new cgroup2 mount) and turned it on again",
            favordynmods_reapplied.clone(),
        );
        let running = Arc::new(JobsCollector::default());
        registry.register_collector(Box::new(Arc::clone(&running)));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                events,
                kernel_drops,
                foreign_datagrams,
                lost,
                reconcile_scans,
                scan_failures,
                check_failures,
                adoption_latency,
                adoption_before_move,
                adoption_move,
                adoptions,
                adoption_retries,
                filtered,
                limit_failures,
                governed,
                jobs,
                reloads,
                reload_ok,
                reattached,
                events_dropped,
                build_info,
                favordynmods,
                favordynmods_supported,
                favordynmods_reapplied,
                running,
            }),
        }
    }

    /// `n` events read from `source` (ebpf, netlink, poll, scan).
    pub fn events(&self, source: &str, n: u64) {
        self.inner
            .events
            .get_or_create(&[("source", source.to_owned())])
            .inc_by(n);
    }

    /// `n` more events dropped in the kernel.
    pub fn kernel_drops(&self, n: u64) {
        self.inner.kernel_drops.inc_by(n);
    }

    /// `n` more datagrams dropped because another process sent them.
    pub fn foreign_datagrams(&self, n: u64) {
        self.inner.foreign_datagrams.inc_by(n);
    }

    /// `n` events from `source` known to be lost.
    pub fn lost(&self, source: &str, n: u64) {
        self.inner
            .lost
            .get_or_create(&[("source", source.to_owned())])
            .inc_by(n);
    }

    /// A /proc scan started; `trigger` is startup, loss, poll or reload.
    pub fn reconcile_scan(&self, trigger: &str) {
        self.inner
            .reconcile_scans
            .get_or_create(&[("trigger", trigger.to_owned())])
            .inc();
    }

    pub fn scan_failed(&self) {
        self.inner.scan_failures.inc();
    }

    /// Reading a possible target failed (not because it was gone).
    pub fn check_failed(&self) {
        self.inner.check_failures.inc();
    }

    /// A target of `command` exited before it could be governed.
    pub fn exited_ungoverned(&self, command: &str) {
        self.adoption_result(command, "exited");
    }

    /// A `command` process is governed; `latency` when the exec time is
    /// known.
    pub fn adopted(&self, command: &str, latency: Option<&crate::watch::event::AdoptionLatency>) {
        self.adoption_result(command, "ok");
        if let Some(l) = latency {
            let seconds = |us: u64| us as f64 / 1e6;
            self.inner.adoption_latency.observe(seconds(l.total_us));
            self.inner.adoption_before_move.observe(seconds(l.before_move_us));
            self.inner.adoption_move.observe(seconds(l.move_us));
        }
    }

    /// An adoption of a `command` process failed. A `transient` failure is
    /// retried: it counts as a retry, and the adoption's result is counted
    /// once the retries are over, so every adopted process counts once in
    /// `ffrtmp_adoptions_total`.
    pub fn adoption_failed(&self, command: &str, transient: bool) {
        if transient {
            self.adoption_retry();
        } else {
            self.adoption_result(command, "failed");
        }
    }

    /// A failed adoption is tried again.
    pub fn adoption_retry(&self) {
        self.inner.adoption_retries.inc();
    }

    fn adoption_result(&self, command: &str, result: &str) {
        self.inner
            .adoptions
            .get_or_create(&[("command", command.to_owned()), ("result", result.to_owned())])
            .inc();
    }

    /// A `command` process was left alone by `filter`.
    pub fn filtered(&self, command: &str, filter: &str) {
        self.inner
            .filtered
            .get_or_create(&[("command", command.to_owned()), ("filter", filter.to_owned())])
            .inc();
    }

    /// A requested `limit` (e.g. "memory_max") could not be applied.
    pub fn limit_failed(&self, limit: &str) {
        self.inner
            .limit_failures
            .get_or_create(&[("limit", limit.to_owned())])
            .inc();
    }

    pub fn set_governed(&self, n: usize) {
        self.inner.governed.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A job ended; `reason` is [`crate::report::Reason::as_str`], `exit` is
    /// [`exit_label`].
    pub fn job_ended(&self, command: &str, reason: &str, exit: &str) {
        self.inner
            .jobs
            .get_or_create(&[
                ("command", command.to_owned()),
                ("reason", reason.to_owned()),
                ("exit", exit.to_owned()),
            ])
            .inc();
    }

    /// A reload (SIGHUP or a change of the file) succeeded or failed.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.inner.reloads.get_or_create(&[("result", result.to_owned())]).inc();
        self.inner.reload_ok.set(i64::from(ok));
    }

    /// `n` jobs of an earlier run were re-adopted at start.
    pub fn reattached(&self, n: u64) {
        self.inner.reattached.inc_by(n);
    }

    /// The event backend in use; replaces the previous one (after a fallback).
    /// A watch event was dropped: its reader is not keeping up.
    pub fn event_dropped(&self) {
        self.inner.events_dropped.inc();
    }

    pub fn set_backend(&self, backend: &str) {
        self.inner.build_info.clear();
        self.inner
            .build_info
            .get_or_create(&[
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("backend", backend.to_owned()),
            ])
            .set(1);
    }

    /// What the last look at favordynmods found.
    pub fn set_favordynmods(&self, supported: bool, on: bool) {
        self.inner.favordynmods_supported.set(i64::from(supported));
        self.inner.favordynmods.set(i64::from(on));
    }

    /// `--favor-dynmods` turned favordynmods on again after someone turned it off.
    pub fn favordynmods_reapplied(&self) {
        self.inner.favordynmods_reapplied.inc();
    }

    /// Export the usage of a job's cgroup until [`Metrics::job_finished`].
    pub fn job_started(&self, job_id: &str, command: &str, reader: UsageReader) {
        self.inner.running.insert(job_id, command, reader);
    }

    /// The job's series disappear from the next scrape on.
    pub fn job_finished(&self, job_id: &str) {
        self.inner.running.remove(job_id);
    }

    /// The OpenMetrics text exposition. Reads every running job's cgroup
    /// files, so async callers run it on a blocking thread.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)?;
        Ok(text)
    }
}

/// The `exit` label of `ffrtmp_jobs_total`: the exit status ("0", "1"),
/// "signal_N" when killed by signal N, "unknown" when the status could not
/// be seen, "detached" when ffrtmp stopped watching a running process.
pub fn exit_label(ending: Ending) -> String {
    match ending {
        Ending::Exited(code) => code.to_string(),
        Ending::Signaled(signal) => format!("signal_{signal}"),
        Ending::ExitedUnknown => "unknown".to_owned(),
        Ending::Detached => "detached".to_owned(),
    }
}

/// A governed job whose cgroup is read at scrape time.
#[derive(Debug)]
struct RunningJob {
    command: String,
    reader: UsageReader,
}

/// The per-job series, read from the cgroups of the running jobs.
#[derive(Debug, Default)]
struct JobsCollector {
    jobs: Mutex<BTreeMap<String, RunningJob>>,
}

/// One job's usage as read for one scrape.
struct JobSample {
    labels: Label2,
    usage: Usage,
    memory_bytes: Option<u64>,
}

impl JobsCollector {
    // A panic while the lock is held cannot leave the map half-updated (every
    // change is one insert or remove), so a poisoned lock is still usable.
    fn insert(&self, job_id: &str, command: &str, reader: UsageReader) {
        let job = RunningJob {
            command: command.to_owned(),
            reader,
        };
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job_id.to_owned(), job);
    }

    fn remove(&self, job_id: &str) {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).remove(job_id);
    }

    /// Read every job's cgroup. The lock is released first so that a slow
    /// cgroup read never delays the daemon registering or removing a job.
    fn sample(&self) -> Vec<JobSample> {
        let jobs: Vec<(String, String, UsageReader)> = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, job)| (id.clone(), job.command.clone(), job.reader.clone()))
            .collect();
        jobs.into_iter()
            .map(|(job_id, command, reader)| JobSample {
                labels: [("job_id", job_id), ("command", command)],
                usage: reader.read(),
                memory_bytes: reader.memory_current(),
            })
            .collect()
    }
}

impl Collector for JobsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self.sample();
        let e = &mut encoder;
        let s = &samples;
        counters(
            e,
            "job_cpu",
            "CPU time used by the job's processes.",
            Some(Unit::Seconds),
            s,
            |j| j.usage.cpu_seconds,
        )?;
        counters(
            e,
            "job_throttled",
            "Time the job's processes were throttled by its CPU limit.",
            Some(Unit::Seconds),
            s,
            |j| j.usage.throttled_seconds,
        )?;
        counters(
            e,
            "job_throttled_periods",
            "CPU limit periods in which the job was throttled.",
            None,
            s,
            |j| j.usage.throttled_periods,
        )?;
        counters(
            e,
            "job_oom_kills",
            "Processes of the job killed by the OOM killer.",
            None,
            s,
            |j| j.usage.oom_kills,
        )?;
        gauges(e, "job_memory", "Memory the job uses now.", Some(Unit::Bytes), s, |j| {
            j.memory_bytes
        })?;
        let egress = |j: &JobSample| j.usage.network.and_then(|n| n.egress);
        let ingress = |j: &JobSample| j.usage.network.and_then(|n| n.ingress);
        counters(
            e,
            "job_net_egress",
            "Bytes the job's network limit let it send.",
            Some(Unit::Bytes),
            s,
            |j| egress(j).map(|d| d.passed_bytes),
        )?;
        counters(
            e,
            "job_net_egress_delayed_packets",
            "Packets the job sent that its network limit paced (gave a later departure time).",
            None,
            s,
            |j| egress(j).map(|d| d.delayed_packets),
        )?;
        counters(
            e,
            "job_net_egress_dropped_packets",
            "Packets the job sent that its network limit dropped.",
            None,
            s,
            |j| egress(j).map(|d| d.dropped_packets),
        )?;
        counters(
            e,
            "job_net_ingress",
            "Bytes the job's network limit let it receive.",
            Some(Unit::Bytes),
            s,
            |j| ingress(j).map(|d| d.passed_bytes),
        )?;
        counters(
            e,
            "job_net_ingress_dropped_packets",
            "Packets for the job that its network limit dropped.",
            None,
            s,
            |j| ingress(j).map(|d| d.dropped_packets),
        )?;
        gauges(
            e,
            "job_memory_peak",
            "Most memory the job has used at once.",
            Some(Unit::Bytes),
            s,
            |j| j.usage.memory_peak_bytes,
        )
    }
}

/// One counter family: a series per job whose cgroup offers the value. A
/// family no job offers is left out entirely.
fn counters<N: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    samples: &[JobSample],
    value: impl Fn(&JobSample) -> Option<N>,
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, unit, MetricType::Counter, samples, |j| {
        value(j).map(ConstCounter::new)
    })
}

/// One gauge family, like [`counters`].
fn gauges<N: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    samples: &[JobSample],
    value: impl Fn(&JobSample) -> Option<N>,
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, unit, MetricType::Gauge, samples, |j| {
        value(j).map(ConstGauge::new)
    })
}

fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric_type: MetricType,
    samples: &[JobSample],
    metric: impl Fn(&JobSample) -> Option<M>,
) -> Result<(), std::fmt::Error> {
    let series: Vec<(&Label2, M)> = samples
        .iter()
        .filter_map(|j| metric(j).map(|m| (&j.labels, m)))
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), metric_type)?;
    for (labels, m) in series {
        m.encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cgroup::{Controller, Version};

    /// The value of the sample `series` (name and labels as exposed).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap_or_else(|e| panic!("{series}: bad value {v:?}: {e}")))
    }

    fn has_family(text: &str, name: &str, kind: &str) -> bool {
        text.lines().any(|l| l == format!("# TYPE {name} {kind}"))
    }

    #[test]
    fn every_family_is_exposed_and_counts() {
        let m = Metrics::new();
        m.events("ebpf", 3);
        m.events("ebpf", 2);
        m.events("scan", 1);
        m.kernel_drops(4);
        m.lost("ebpf", 7);
        m.reconcile_scan("loss");
        m.reconcile_scan("loss");
        m.scan_failed();
        m.adopted(
            "ffmpeg",
            Some(&crate::watch::event::AdoptionLatency {
                total_us: 300,
                before_move_us: 40,
                move_us: 250,
            }),
        );
        m.adopted("ffmpeg", None);
        m.adoption_failed("ffmpeg", true);
        m.adoption_failed("gst-launch-1.0", false);
        m.adoption_retry();
        m.filtered("ffmpeg", "parent");
        m.limit_failed("memory_max");
        m.set_governed(2);
        m.job_ended("ffmpeg", "observed_to_completion", &exit_label(Ending::Signaled(9)));
        m.reload(false);
        m.reload(true);
        m.reattached(3);
        m.event_dropped();
        m.event_dropped();
        m.set_backend("ebpf");
        m.set_favordynmods(true, true);
        m.favordynmods_reapplied();
        let text = m.encode().unwrap();

        let expect = [
            ("ffrtmp_cgroup_favordynmods", 1.0),
            ("ffrtmp_cgroup_favordynmods_supported", 1.0),
            ("ffrtmp_cgroup_favordynmods_reapplied_total", 1.0),
            ("ffrtmp_watch_events_dropped_total", 2.0),
            ("ffrtmp_events_total{source=\"ebpf\"}", 5.0),
            ("ffrtmp_events_total{source=\"scan\"}", 1.0),
            ("ffrtmp_kernel_drops_total", 4.0),
            ("ffrtmp_events_lost_total{source=\"ebpf\"}", 7.0),
            ("ffrtmp_reconcile_scans_total{trigger=\"loss\"}", 2.0),
            ("ffrtmp_reconcile_scans_total{trigger=\"startup\"}", 0.0),
            ("ffrtmp_scan_failures_total", 1.0),
            ("ffrtmp_adoption_latency_seconds_count", 1.0),
            ("ffrtmp_adoption_latency_seconds_sum", 0.0003),
            ("ffrtmp_adoption_latency_seconds_bucket{le=\"0.0001\"}", 0.0),
            ("ffrtmp_adoption_latency_seconds_bucket{le=\"0.0004\"}", 1.0),
            ("ffrtmp_adoption_before_move_seconds_count", 1.0),
            ("ffrtmp_adoption_before_move_seconds_bucket{le=\"0.000025\"}", 0.0),
            ("ffrtmp_adoption_before_move_seconds_bucket{le=\"0.00005\"}", 1.0),
            ("ffrtmp_adoption_move_seconds_count", 1.0),
            ("ffrtmp_adoption_move_seconds_bucket{le=\"0.0002\"}", 0.0),
            ("ffrtmp_adoption_move_seconds_bucket{le=\"0.0004\"}", 1.0),
            ("ffrtmp_adoptions_total{command=\"ffmpeg\",result=\"ok\"}", 2.0),
            (
                "ffrtmp_adoptions_total{command=\"gst-launch-1.0\",result=\"failed\"}",
                1.0,
            ),
            ("ffrtmp_adoption_retries_total", 2.0),
            ("ffrtmp_filtered_total{command=\"ffmpeg\",filter=\"parent\"}", 1.0),
            ("ffrtmp_limit_failures_total{limit=\"memory_max\"}", 1.0),
            ("ffrtmp_governed_processes", 2.0),
            (
                "ffrtmp_jobs_total{command=\"ffmpeg\",reason=\"observed_to_completion\",exit=\"signal_9\"}",
                1.0,
            ),
            ("ffrtmp_config_reloads_total{result=\"ok\"}", 1.0),
            ("ffrtmp_config_reloads_total{result=\"failed\"}", 1.0),
            ("ffrtmp_config_last_reload_successful", 1.0),
            ("ffrtmp_reattached_total", 3.0),
            (
                &format!(
                    "ffrtmp_build_info{{version=\"{}\",backend=\"ebpf\"}}",
                    env!("CARGO_PKG_VERSION")
                ),
                1.0,
            ),
        ];
        for (series, want) in expect {
            assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
        }
        // The transient failure was counted as a retry, not as a result.
        assert_eq!(
            value(&text, "ffrtmp_adoptions_total{command=\"ffmpeg\",result=\"failed\"}"),
            None
        );
        assert!(has_family(&text, "ffrtmp_adoption_latency_seconds", "histogram"));
        assert!(has_family(&text, "ffrtmp_governed_processes", "gauge"));
        assert!(text.ends_with("# EOF\n"), "{text}");

        // Counters move between scrapes.
        m.events("ebpf", 1);
        m.set_governed(0);
        m.set_favordynmods(true, false);
        let text = m.encode().unwrap();
        assert_eq!(value(&text, "ffrtmp_cgroup_favordynmods"), Some(0.0));
        assert!(has_family(&text, "ffrtmp_cgroup_favordynmods", "gauge"));
        assert_eq!(value(&text, "ffrtmp_events_total{source=\"ebpf\"}"), Some(6.0));
        assert_eq!(value(&text, "ffrtmp_governed_processes"), Some(0.0));
    }

    #[test]
    fn a_backend_change_replaces_the_build_info_series() {
        let m = Metrics::new();
        m.set_backend("ebpf");
        m.set_backend("netlink");
        let text = m.encode().unwrap();
        let info: Vec<&str> = text.lines().filter(|l| l.starts_with("ffrtmp_build_info{")).collect();
        assert_eq!(info.len(), 1, "{text}");
        assert!(info[0].contains("backend=\"netlink\""), "{text}");
    }

    #[test]
    fn exit_labels() {
        assert_eq!(exit_label(Ending::Exited(0)), "0");
        assert_eq!(exit_label(Ending::Exited(1)), "1");
        assert_eq!(exit_label(Ending::Signaled(9)), "signal_9");
        assert_eq!(exit_label(Ending::ExitedUnknown), "unknown");
        assert_eq!(exit_label(Ending::Detached), "detached");
    }

    fn write(dir: &Path, file: &str, content: &str) {
        std::fs::write(dir.join(file), content).unwrap();
    }

    /// A fake v2 job cgroup: the files UsageReader reads.
    fn fake_cgroup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "cpu.stat",
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 750000\n",
        );
        write(dir.path(), "memory.current", "1048576\n");
        write(dir.path(), "memory.peak", "4194304\n");
        write(dir.path(), "memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n");
        dir
    }

    #[test]
    fn job_series_are_read_at_scrape_time_and_go_with_the_job() {
        let cgroup = fake_cgroup();
        let reader = UsageReader::for_dirs(Version::V2, vec![(Controller::ALL.to_vec(), cgroup.path().to_owned())]);
        let m = Metrics::new();
        assert!(!m.encode().unwrap().contains("job_id="));

        m.job_started("auto-ffmpeg-42", "ffmpeg", reader);
        let text = m.encode().unwrap();
        let labels = "{job_id=\"auto-ffmpeg-42\",command=\"ffmpeg\"}";
        let expect = [
            ("ffrtmp_job_cpu_seconds_total", 2.5),
            ("ffrtmp_job_throttled_seconds_total", 0.75),
            ("ffrtmp_job_throttled_periods_total", 4.0),
            ("ffrtmp_job_oom_kills_total", 1.0),
            ("ffrtmp_job_memory_bytes", 1048576.0),
            ("ffrtmp_job_memory_peak_bytes", 4194304.0),
        ];
        for (name, want) in expect {
            assert_eq!(
                value(&text, &format!("{name}{labels}")),
                Some(want),
                "{name} in\n{text}"
            );
        }
        assert!(has_family(&text, "ffrtmp_job_cpu_seconds", "counter"), "{text}");
        assert!(has_family(&text, "ffrtmp_job_memory_bytes", "gauge"), "{text}");

        // Each scrape reads the files again.
        write(cgroup.path(), "memory.current", "2097152\n");
        let text = m.encode().unwrap();
        assert_eq!(
            value(&text, &format!("ffrtmp_job_memory_bytes{labels}")),
            Some(2097152.0)
        );

        m.job_finished("auto-ffmpeg-42");
        let text = m.encode().unwrap();
        assert!(!text.contains("job_id="), "{text}");
        assert!(!text.contains("ffrtmp_job_"), "{text}");
    }

    #[test]
    fn values_a_cgroup_does_not_offer_are_left_out() {
        let cgroup = tempfile::tempdir().unwrap();
        // A kernel before 5.19 has no memory.peak; cpu.stat without throttling.
        write(cgroup.path(), "cpu.stat", "usage_usec 1000000\n");
        write(cgroup.path(), "memory.current", "4096\n");
        let m = Metrics::new();
        let dirs = vec![(Controller::ALL.to_vec(), cgroup.path().to_owned())];
        m.job_started("j1", "ffmpeg", UsageReader::for_dirs(Version::V2, dirs));
        let text = m.encode().unwrap();
        assert_eq!(
            value(&text, "ffrtmp_job_cpu_seconds_total{job_id=\"j1\",command=\"ffmpeg\"}"),
            Some(1.0)
        );
        assert!(!text.contains("ffrtmp_job_memory_peak"), "{text}");
        assert!(!text.contains("ffrtmp_job_throttled"), "{text}");
        assert!(!text.contains("ffrtmp_job_oom_kills"), "{text}");
    }

    #[test]
    fn metrics_are_shared_between_clones_and_threads() {
        let m = Metrics::new();
        let clone = m.clone();
        std::thread::spawn(move || clone.scan_failed()).join().unwrap();
        assert_eq!(value(&m.encode().unwrap(), "ffrtmp_scan_failures_total"), Some(1.0));
    }

    #[test]
    fn a_refused_reload_shows_until_one_succeeds() {
        let m = Metrics::new();
        let ok = |m: &Metrics| value(&m.encode().unwrap(), "ffrtmp_config_last_reload_successful");
        assert_eq!(
            ok(&m),
            Some(1.0),
            "no reload yet: the configuration in use is the one asked for"
        );
        m.reload(false);
        assert_eq!(ok(&m), Some(0.0));
        m.reload(true);
        assert_eq!(ok(&m), Some(1.0));
    }
}
