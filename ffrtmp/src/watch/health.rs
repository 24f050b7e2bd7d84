//! The daemon's health as `/healthz` reports it. The thresholds are those of
//! the Go tool this replaces, so existing probes and alerts keep working.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// This many consecutive failed /proc scans make the daemon unhealthy: it
/// no longer catches targets whose exec events were lost.
pub const SCAN_FAILURES_UNHEALTHY: u32 = 5;
/// Half of that makes it degraded.
pub const SCAN_FAILURES_DEGRADED: u32 = SCAN_FAILURES_UNHEALTHY / 2;
/// This many consecutive failed adoptions make it degraded.
pub const ATTACH_FAILURES_DEGRADED: u32 = 10;
/// Lost events make it degraded for this long after the last loss.
pub const LOSS_DEGRADED_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

/// The `/healthz` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    pub status: HealthStatus,
    /// Why the status is not healthy, one sentence per cause.
    pub reasons: Vec<String>,
    pub consecutive_scan_failures: u32,
    pub consecutive_attach_failures: u32,
    pub total_scan_failures: u64,
    pub total_attach_failures: u64,
    /// The most recent error of any kind, even when since recovered.
    pub last_error: Option<String>,
    /// Why the last reload of the configuration file was refused, while the
    /// daemon runs the configuration it had before; none once one succeeds.
    pub config_error: Option<String>,
    /// Seconds the daemon has been in this status.
    pub since_seconds: f64,
}

/// Fed by the daemon, read by `/healthz`. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Health {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    consecutive_scan_failures: u32,
    consecutive_attach_failures: u32,
    total_scan_failures: u64,
    total_attach_failures: u64,
    last_scan_error: Option<String>,
    last_attach_error: Option<String>,
    source_error: Option<String>,
    config_error: Option<String>,
    last_error: Option<String>,
    /// Events lost since the current loss window opened, and the last loss.
    lost: u64,
    last_loss: Option<Instant>,
    /// The status last settled, and since when.
    status: HealthStatus,
    since: Instant,
}

/// What changed the status: an event now, or only time passing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cause {
    Event,
    Time,
}

impl Default for Health {
    fn default() -> Health {
        Health::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health::new_at(Instant::now())
    }

    fn new_at(now: Instant) -> Health {
        Health {
            state: Arc::new(Mutex::new(State {
                consecutive_scan_failures: 0,
                consecutive_attach_failures: 0,
                total_scan_failures: 0,
                total_attach_failures: 0,
                last_scan_error: None,
                last_attach_error: None,
                source_error: None,
                config_error: None,
                last_error: None,
                lost: 0,
                last_loss: None,
                status: HealthStatus::Healthy,
                since: now,
            })),
        }
    }

    pub fn scan_ok(&self) {
        self.update(Instant::now(), |s| s.consecutive_scan_failures = 0);
    }

    pub fn scan_failed(&self, error: &str) {
        self.update(Instant::now(), |s| {
            s.consecutive_scan_failures += 1;
            s.total_scan_failures += 1;
            s.last_scan_error = Some(error.to_owned());
            s.last_error = Some(error.to_owned());
        });
    }

    pub fn attach_ok(&self) {
        self.update(Instant::now(), |s| s.consecutive_attach_failures = 0);
    }

    pub fn attach_failed(&self, error: &str) {
        self.update(Instant::now(), |s| {
            s.consecutive_attach_failures += 1;
            s.total_attach_failures += 1;
            s.last_attach_error = Some(error.to_owned());
            s.last_error = Some(error.to_owned());
        });
    }

    /// The event source broke: unhealthy until [`Health::source_ok`].
    pub fn source_failed(&self, error: &str) {
        self.update(Instant::now(), |s| {
            s.source_error = Some(error.to_owned());
            s.last_error = Some(error.to_owned());
        });
    }

    /// An event source works again (e.g. after falling back to another).
    pub fn source_ok(&self) {
        self.update(Instant::now(), |s| s.source_error = None);
    }

    /// A reload of the configuration was refused: degraded until one
    /// succeeds (the daemon governs, but not as its file now says).
    pub fn config_failed(&self, error: &str) {
        self.update(Instant::now(), |s| {
            s.config_error = Some(error.to_owned());
            s.last_error = Some(error.to_owned());
        });
    }

    /// A reload of the configuration succeeded.
    pub fn config_ok(&self) {
        self.update(Instant::now(), |s| s.config_error = None);
    }

    /// `n` process events were lost: degraded for [`LOSS_DEGRADED_FOR`].
    pub fn events_lost(&self, n: u64) {
        self.events_lost_at(n, Instant::now());
    }

    fn events_lost_at(&self, n: u64, now: Instant) {
        self.update(now, |s| {
            if !s.loss_recent(now) {
                s.lost = 0;
            }
            s.lost += n;
            s.last_loss = Some(now);
        });
    }

    pub fn report(&self) -> HealthReport {
        self.report_at(Instant::now())
    }

    /// The report as of `now` (injectable for tests).
    pub fn report_at(&self, now: Instant) -> HealthReport {
        let mut s = self.lock();
        s.settle(now, Cause::Time);
        HealthReport {
            status: s.status,
            reasons: s.reasons(now),
            consecutive_scan_failures: s.consecutive_scan_failures,
            consecutive_attach_failures: s.consecutive_attach_failures,
            total_scan_failures: s.total_scan_failures,
            total_attach_failures: s.total_attach_failures,
            last_error: s.last_error.clone(),
            config_error: s.config_error.clone(),
            since_seconds: now.saturating_duration_since(s.since).as_secs_f64(),
        }
    }

    /// Apply `change` at `now`, keeping the time of the status's last change.
    fn update(&self, now: Instant, change: impl FnOnce(&mut State)) {
        let mut s = self.lock();
        // First what time alone changed (a loss window ending), so that
        // change is dated correctly; then the event's own.
        s.settle(now, Cause::Time);
        change(&mut s);
        s.settle(now, Cause::Event);
    }

    // Every change is a few plain assignments that cannot panic halfway, so
    // the state behind a poisoned lock is consistent and still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn loss_recent(&self, now: Instant) -> bool {
        self.loss_window_end().is_some_and(|end| now < end)
    }

    fn loss_window_end(&self) -> Option<Instant> {
        self.last_loss.map(|at| at + LOSS_DEGRADED_FOR)
    }

    /// One sentence per cause of a non-healthy status, with its severity.
    fn causes(&self, now: Instant) -> Vec<(HealthStatus, String)> {
        let mut causes = Vec::new();
        if let Some(error) = &self.source_error {
            causes.push((
                HealthStatus::Unhealthy,
                format!("the process event source failed: {error}"),
            ));
        }
        let scans = self.consecutive_scan_failures;
        if scans >= SCAN_FAILURES_DEGRADED {
            let severity = if scans >= SCAN_FAILURES_UNHEALTHY {
                HealthStatus::Unhealthy
            } else {
                HealthStatus::Degraded
            };
            let last = self.last_scan_error.as_deref().unwrap_or("unknown");
            causes.push((
                severity,
                format!("{scans} consecutive /proc scan failures (last: {last})"),
            ));
        }
        if let Some(error) = &self.config_error {
            causes.push((
                HealthStatus::Degraded,
                format!("the configuration file's last change was refused, the one before it is in use: {error}"),
            ));
        }
        let attaches = self.consecutive_attach_failures;
        if attaches >= ATTACH_FAILURES_DEGRADED {
            let last = self.last_attach_error.as_deref().unwrap_or("unknown");
            causes.push((
                HealthStatus::Degraded,
                format!("{attaches} consecutive attach failures (last: {last})"),
            ));
        }
        if let Some(at) = self.last_loss.filter(|_| self.loss_recent(now)) {
            let ago = now.saturating_duration_since(at).as_secs();
            causes.push((
                HealthStatus::Degraded,
                format!(
                    "{} process events lost, the last {ago} s ago (degraded for {} s after a loss)",
                    self.lost,
                    LOSS_DEGRADED_FOR.as_secs()
                ),
            ));
        }
        causes
    }

    fn reasons(&self, now: Instant) -> Vec<String> {
        self.causes(now).into_iter().map(|(_, reason)| reason).collect()
    }

    fn status_at(&self, now: Instant) -> HealthStatus {
        self.causes(now)
            .iter()
            .map(|(severity, _)| *severity)
            .max()
            .unwrap_or(HealthStatus::Healthy)
    }

    /// Record a change of status. Without an event, only the end of the
    /// loss window can change it: date the change to that end rather than
    /// to whenever somebody asked.
    fn settle(&mut self, now: Instant, cause: Cause) {
        let status = self.status_at(now);
        if status == self.status {
            return;
        }
        let window_end = self.loss_window_end().filter(|end| *end <= now && *end > self.since);
        self.since = match (cause, window_end) {
            (Cause::Time, Some(end)) => end,
            _ => now,
        };
        self.status = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail_scans(health: &Health, n: u32) {
        for i in 0..n {
            health.scan_failed(&format!("reading /proc: error {i}"));
        }
    }

    #[test]
    fn starts_healthy() {
        let r = Health::new().report();
        assert_eq!(r.status, HealthStatus::Healthy);
        assert!(r.reasons.is_empty());
        assert_eq!(r.last_error, None);
    }

    #[test]
    fn one_scan_failure_is_tolerated() {
        let health = Health::new();
        fail_scans(&health, 1);
        let r = health.report();
        assert_eq!(r.status, HealthStatus::Healthy);
        assert_eq!(r.consecutive_scan_failures, 1);
        assert_eq!(r.last_error.as_deref(), Some("reading /proc: error 0"));
    }

    #[test]
    fn scan_failures_degrade_then_make_unhealthy_and_scan_ok_recovers() {
        let health = Health::new();
        fail_scans(&health, 2);
        assert_eq!(health.report().status, HealthStatus::Degraded);
        fail_scans(&health, 2);
        let r = health.report();
        assert_eq!(r.status, HealthStatus::Degraded);
        assert_eq!(
            r.reasons,
            ["4 consecutive /proc scan failures (last: reading /proc: error 1)"]
        );
        fail_scans(&health, 1);
        let r = health.report();
        assert_eq!(r.status, HealthStatus::Unhealthy);
        assert_eq!(r.consecutive_scan_failures, 5);
        assert!(
            r.reasons[0].starts_with("5 consecutive /proc scan failures"),
            "{:?}",
            r.reasons
        );

        health.scan_ok();
        let r = health.report();
        assert_eq!(r.status, HealthStatus::Healthy);
        assert_eq!(r.consecutive_scan_failures, 0);
        assert_eq!(r.total_scan_failures, 5);
        // The error stays visible after recovery, for whoever investigates.
        assert_eq!(r.last_error.as_deref(), Some("reading /proc: error 0"));
    }

    #[test]
    fn ten_attach_failures_degrade_and_attach_ok_recovers() {
        let health = Health::new();
        for _ in 0..9 {
            health.attach_failed("EACCES");
        }
        assert_eq!(health.report().status, HealthStatus::Healthy);
        health.attach_failed("ENOSPC");
        let r = health.report();
        assert_eq!(r.status, HealthStatus::Degraded);
        assert_eq!(r.reasons, ["10 consecutive attach failures (last: ENOSPC)"]);
        health.attach_ok();
        let r = health.report();
        assert_eq!(r.status, HealthStatus::Healthy);
        assert_eq!((r.consecutive_attach_failures, r.total_attach_failures), (0, 10));
    }

    #[test]
    fn source_failure_is_unhealthy_until_a_source_works() {
        let health = Health::new();
        health.source_failed("netlink socket closed");
        let r = health.report();
        assert_eq!(r.status, HealthStatus::Unhealthy);
        assert_eq!(r.reasons, ["the process event source failed: netlink socket closed"]);
        health.source_ok();
        assert_eq!(health.report().status, HealthStatus::Healthy);
    }

    #[test]
    fn a_refused_configuration_degrades_until_a_reload_succeeds() {
        let health = Health::new();
        health.config_failed("/etc/ffrtmp/watch.yaml: line 3: unknown field `cpu_quot`");
        let r = health.report();
        assert_eq!(r.status, HealthStatus::Degraded);
        assert_eq!(
            r.config_error.as_deref(),
            Some("/etc/ffrtmp/watch.yaml: line 3: unknown field `cpu_quot`")
        );
        assert!(
            r.reasons[0].starts_with("the configuration file's last change was refused"),
            "{r:?}"
        );
        health.config_ok();
        let r = health.report();
        assert_eq!((r.status, r.config_error), (HealthStatus::Healthy, None));
    }

    #[test]
    fn loss_degrades_for_sixty_seconds_after_the_last_loss() {
        let t0 = Instant::now();
        let health = Health::new_at(t0);
        health.events_lost_at(3, t0);
        let r = health.report_at(t0 + Duration::from_secs(30));
        assert_eq!(r.status, HealthStatus::Degraded);
        assert_eq!(r.since_seconds, 30.0);
        assert_eq!(r.reasons.len(), 1);
        assert!(
            r.reasons[0].starts_with("3 process events lost, the last 30 s ago"),
            "{:?}",
            r.reasons
        );

        // A second loss extends the window and adds to the count.
        health.events_lost_at(2, t0 + Duration::from_secs(40));
        let r = health.report_at(t0 + Duration::from_secs(99));
        assert_eq!(r.status, HealthStatus::Degraded);
        assert!(
            r.reasons[0].starts_with("5 process events lost, the last 59 s ago"),
            "{:?}",
            r.reasons
        );

        let r = health.report_at(t0 + Duration::from_secs(110));
        assert_eq!(r.status, HealthStatus::Healthy);
        assert!(r.reasons.is_empty());
        // Healthy since the window closed at 100 s, not since it was asked.
        assert_eq!(r.since_seconds, 10.0);

        // A loss after the window closed starts a new count.
        health.events_lost_at(1, t0 + Duration::from_secs(200));
        let r = health.report_at(t0 + Duration::from_secs(201));
        assert!(r.reasons[0].starts_with("1 process events lost"), "{:?}", r.reasons);
    }

    #[test]
    fn worst_cause_wins_and_every_cause_is_listed() {
        let health = Health::new();
        for _ in 0..10 {
            health.attach_failed("EPERM");
        }
        fail_scans(&health, 5);
        let r = health.report();
        assert_eq!(r.status, HealthStatus::Unhealthy);
        assert_eq!(r.reasons.len(), 2, "{:?}", r.reasons);
    }

    #[test]
    fn status_serializes_lowercase() {
        let health = Health::new();
        fail_scans(&health, 2);
        let json = serde_json::to_value(health.report()).unwrap();
        assert_eq!(json["status"], "degraded");
        assert_eq!(json["consecutive_scan_failures"], 2);
        assert!(json["since_seconds"].is_number());
    }
}
