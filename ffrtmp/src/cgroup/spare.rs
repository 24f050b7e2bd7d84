//! Job cgroups made ahead of their jobs (cgroup v1): the watch daemon renames
//! a spare into place at a target's exec instead of making the job's
//! directories then.
//!
//! Why: a `mkdir` in a cgroup hierarchy starts an RCU grace period, and the
//! write that moves the process right after it (which waits for a grace
//! period of its own, see docs/BENCHMARKS.md) then waits for that one to end
//! first. Measured with `scripts/move-timing mkdir`: a move 20 ms after the
//! spawn took 5.4-7.9 ms p50 into a cgroup made 100 ms before, 12.7-13.7 ms
//! into one made right before, and 6.7-7.8 ms into one renamed right before
//! (limits written after the rename included). Only cgroup v1 can rename a
//! cgroup (cgroup2 has no `rename`), so v2 jobs are still made at the exec.
//!
//! This module holds the pool's bookkeeping; [`super::Governor`] does the
//! file system work.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::hierarchy::{Controller, Mount};

/// Name prefix of a spare directory: `.ffrtmp-spare-<pid>-<n>`. It is never
/// marked as a job, so status, garbage collection and take-over skip it.
pub(super) const SPARE_PREFIX: &str = ".ffrtmp-spare-";

/// Spares kept ready per hierarchy set: two absorb a burst of two targets
/// between refills.
const PER_PLAN: usize = 2;

/// The hierarchies a job spans, with the directory its jobs go in.
pub(super) type Plan = Vec<(Mount, Vec<Controller>)>;

/// The job-root directories of a plan: what tells one plan from another.
pub(super) type PlanKey = Vec<PathBuf>;

/// The spares ready and the plans they are wanted for.
#[derive(Debug, Default)]
pub(super) struct Pool {
    plans: BTreeMap<PlanKey, Wanted>,
    /// The next spare's number (names are unique within this daemon).
    next: u64,
}

#[derive(Debug)]
struct Wanted {
    plan: Plan,
    /// Each spare: one directory per plan entry, in plan order.
    ready: Vec<Vec<PathBuf>>,
    /// Spares being made now (by a refill that let go of the lock).
    making: usize,
}

impl Pool {
    /// Does it want spares for any plan yet?
    pub(super) fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// Record that jobs of `plan` want spares; true the first time.
    pub(super) fn want(&mut self, key: PlanKey, plan: &Plan) -> bool {
        let mut first = false;
        self.plans.entry(key).or_insert_with(|| {
            first = true;
            Wanted {
                plan: plan.clone(),
                ready: Vec::new(),
                making: 0,
            }
        });
        first
    }

    /// A ready spare of `key`, taken out of the pool.
    pub(super) fn take(&mut self, key: &PlanKey) -> Option<Vec<PathBuf>> {
        self.plans.get_mut(key)?.ready.pop()
    }

    /// The spares to make now: (key, plan, name) each, counted as being made
    /// until [`Pool::made`] hands them back.
    pub(super) fn start_making(&mut self, pid: u32) -> Vec<(PlanKey, Plan, String)> {
        let mut out = Vec::new();
        for (key, wanted) in &mut self.plans {
            while wanted.ready.len() + wanted.making < PER_PLAN {
                wanted.making += 1;
                self.next += 1;
                out.push((
                    key.clone(),
                    wanted.plan.clone(),
                    format!("{SPARE_PREFIX}{pid}-{}", self.next),
                ));
            }
        }
        out
    }

    /// A spare of `key` is made (`Some`) or could not be (`None`).
    pub(super) fn made(&mut self, key: &PlanKey, spare: Option<Vec<PathBuf>>) {
        if let Some(wanted) = self.plans.get_mut(key) {
            wanted.making = wanted.making.saturating_sub(1);
            wanted.ready.extend(spare);
        }
    }

    /// Every ready spare, taken out of the pool (for removal).
    pub(super) fn drain(&mut self) -> Vec<Vec<PathBuf>> {
        self.plans
            .values_mut()
            .flat_map(|w| std::mem::take(&mut w.ready))
            .collect()
    }
}

/// The pid in a spare's name, if `name` is one.
pub(super) fn owner(name: &str) -> Option<u32> {
    name.strip_prefix(SPARE_PREFIX)?.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> PlanKey {
        vec![PathBuf::from(s)]
    }

    #[test]
    fn a_wanted_plan_is_filled_to_two_and_refilled_after_a_take() {
        let mut pool = Pool::default();
        assert!(pool.want(key("/a"), &Vec::new()));
        assert!(!pool.want(key("/a"), &Vec::new()), "only the first want is new");
        let make = pool.start_making(7);
        let names: Vec<&str> = make.iter().map(|(_, _, n)| n.as_str()).collect();
        assert_eq!(names, [".ffrtmp-spare-7-1", ".ffrtmp-spare-7-2"]);
        assert!(
            pool.start_making(7).is_empty(),
            "spares being made count as wanted ones"
        );
        assert_eq!(pool.take(&key("/a")), None, "none is ready before it is made");
        pool.made(&key("/a"), Some(vec![PathBuf::from("/a/s1")]));
        pool.made(&key("/a"), None);
        assert_eq!(pool.start_making(7).len(), 1, "a failed spare is made again");
        assert_eq!(pool.take(&key("/a")), Some(vec![PathBuf::from("/a/s1")]));
        assert_eq!(pool.take(&key("/b")), None, "an unknown plan has none");
    }

    #[test]
    fn drain_empties_the_pool_and_owner_reads_the_name() {
        let mut pool = Pool::default();
        pool.want(key("/a"), &Vec::new());
        let _ = pool.start_making(1);
        pool.made(&key("/a"), Some(vec![PathBuf::from("/a/s")]));
        assert_eq!(pool.drain(), vec![vec![PathBuf::from("/a/s")]]);
        assert_eq!(pool.take(&key("/a")), None);
        assert_eq!(owner(".ffrtmp-spare-42-3"), Some(42));
        assert_eq!(owner("ffmpeg-42"), None);
        assert_eq!(owner(".ffrtmp-spare-x-1"), None);
    }
}
