//! Per-job network bandwidth: rates, the egress mode, and the eBPF
//! `cgroup_skb` programs that enforce them (see docs/network.md).

/// The raw `bpf(2)` commands the shaper uses (legacy cgroup attach, query,
/// program info); public for tools that inspect or attach beside it.
pub mod bpf;
mod qdisc;
mod rate;
mod shaper;

pub use bpf::Hook;
pub use qdisc::{EgressChoice, egress_choice};
pub use rate::NetRate;
pub use shaper::{DirectionUsage, EgressMode, JobSocketCgroup, NetError, NetShaper, NetUsage, RunStats, bucket};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::cgroup::LimitOutcome;
use crate::cgroup::limits::{LimitKind, Limits};

/// One [`NetShaper`] shared by a governor's jobs, loaded at first use.
#[derive(Clone, Default)]
pub struct SharedShaper(Arc<Mutex<Option<NetShaper>>>);

impl std::fmt::Debug for SharedShaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedShaper")
    }
}

impl SharedShaper {
    /// Make the network limits of the job whose cgroup2 directory is `dir`
    /// (or why there is none) those of `new`; `old`, when known, says which
    /// were set before, so one removed is detached. One outcome per limit of
    /// `new`.
    pub fn apply(&self, dir: Result<PathBuf, String>, new: &Limits, old: Option<&Limits>) -> Vec<LimitOutcome> {
        let wanted = new.net_limits();
        let had = old.is_none_or(|o| !o.net_limits().is_empty());
        if wanted.is_empty() && !had {
            return Vec::new();
        }
        // The qdisc dump only when there is a directory to apply it to.
        let egress = new.net_egress_max.filter(|_| dir.is_ok()).map(|_| egress_choice());
        let mut outcomes = Vec::new();
        for (hook, kind, rate) in [
            (Hook::Egress, LimitKind::NetEgressMax, new.net_egress_max),
            (Hook::Ingress, LimitKind::NetIngressMax, new.net_ingress_max),
        ] {
            let (mode, note) = match (hook, &egress) {
                (Hook::Egress, Some(choice)) => (choice.mode, choice.reason.clone()),
                _ => (
                    EgressMode::Police,
                    "policing: packets beyond the rate are dropped".to_string(),
                ),
            };
            let result = dir.clone().and_then(|d| {
                self.set(&d, hook, rate.map(|r| bucket(r, mode)))
                    .map_err(|e| e.to_string())
            });
            if let Some(rate) = rate {
                let note = match &result {
                    Ok(Some(unpaced)) => {
                        tracing::warn!("{kind}: TCP connections will not pace themselves: {unpaced}");
                        format!("{note}; TCP connections are not paced ({unpaced})")
                    }
                    _ => note,
                };
                outcomes.push(LimitOutcome {
                    limit: kind,
                    value: rate.to_string(),
                    files: dir.iter().cloned().collect(),
                    error: result.err(),
                    note: Some(note),
                });
            } else if let (Ok(_), Err(e)) = (&dir, &result) {
                tracing::warn!("removing the {kind} limit: {e}");
            }
        }
        outcomes
    }

    fn set(
        &self,
        dir: &Path,
        hook: Hook,
        bucket: Option<ffrtmp_common::net::NetBucket>,
    ) -> Result<Option<String>, NetError> {
        let cgroup = JobSocketCgroup::open(dir)?;
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if bucket.is_none() {
            // Nothing to attach: no need to load the object just to detach.
            return NetShaper::unset(&cgroup, hook).map(|()| None);
        }
        if guard.is_none() {
            *guard = Some(NetShaper::load()?);
        }
        let shaper = guard.as_mut().expect("loaded above");
        shaper.set(&cgroup, hook, bucket)
    }
}
