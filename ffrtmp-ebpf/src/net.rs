//! ffrtmp's network programs: one `cgroup_skb` egress and one ingress
//! program, attached (with `BPF_F_ALLOW_MULTI`, beside whatever systemd or a
//! container runtime attached) only to the cgroups of jobs that have a
//! network limit. A job without one has no program in its path.
//!
//! Both look the packet's socket cgroup up in `NET_BUCKETS` and apply
//! [`ffrtmp_common::net::admit`]: the arithmetic is shared with user space
//! and unit tested there. Egress in pace mode sets `skb->tstamp` (writable
//! from `cgroup_skb` since Linux 5.0), which the `fq` qdisc honours as the
//! earliest departure time, as Cilium's bandwidth manager does; police mode
//! and ingress drop what exceeds the bucket.
//!
//! The bucket clock is read and written without a lock, like Cilium's: two
//! CPUs sending for one job at the same instant can both start from the same
//! clock, so the job can briefly exceed its rate by a packet per CPU. A
//! `bpf_spin_lock` would need BTF for the map, which this object does not
//! carry; docs/network.md says what was measured.
//!
//! Build with `cargo xtask build-ebpf` from the repository root.

#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_skb_cgroup_id},
    macros::{cgroup_skb, map},
    maps::{HashMap, PerCpuHashMap},
    programs::SkBuffContext,
};
use ffrtmp_common::net::{self, NetBucket, NetCounters, NetKey, Verdict};

#[map]
static NET_BUCKETS: HashMap<NetKey, NetBucket> = HashMap::with_max_entries(net::MAX_ENTRIES, 0);

#[map]
static NET_COUNTERS: PerCpuHashMap<NetKey, NetCounters> = PerCpuHashMap::with_max_entries(net::MAX_ENTRIES, 0);

/// `cgroup_skb` return codes (`__cgroup_bpf_run_filter_skb`): 1 passes,
/// 0 drops. Egress only: bit 1 adds a congestion notification, so 3
/// passes and 2 drops with one (the stack returns `NET_XMIT_CN` /
/// `NET_XMIT_DROP` to TCP, which enters CWR and shrinks its window rather
/// than treat the drop as a local error), the way the kernel's own
/// `samples/bpf/hbm` does.
const DROP: i32 = 0;
const PASS: i32 = 1;
const DROP_CN: i32 = 2;
const PASS_CN: i32 = 3;

#[cgroup_skb(egress)]
pub fn ffrtmp_egress(ctx: SkBuffContext) -> i32 {
    match shape(&ctx, net::EGRESS) {
        Outcome::Pass => PASS,
        Outcome::PassMarked => PASS_CN,
        Outcome::Drop => DROP_CN,
    }
}

#[cgroup_skb(ingress)]
pub fn ffrtmp_ingress(ctx: SkBuffContext) -> i32 {
    match shape(&ctx, net::INGRESS) {
        Outcome::Pass | Outcome::PassMarked => PASS,
        Outcome::Drop => DROP,
    }
}

enum Outcome {
    Pass,
    PassMarked,
    Drop,
}

/// What becomes of the packet, after pacing or counting it.
fn shape(ctx: &SkBuffContext, direction: u32) -> Outcome {
    let skb = ctx.skb.skb;
    // SAFETY: the helper reads the cgroup of the packet's full socket; it
    // returns 0 for a packet without one (then nothing matches).
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let key = NetKey {
        cgroup_id,
        direction,
        _pad: 0,
    };
    let Some(bucket) = NET_BUCKETS.get_ptr_mut(&key) else {
        return Outcome::Pass;
    };
    // SAFETY: bpf_ktime_get_ns only reads the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    let len = u64::from(ctx.len());
    // SAFETY: `bucket` points at this map value for the program's run;
    // `skb` is the program's context, whose tstamp field it may read.
    let verdict = unsafe { net::admit(&*bucket, now, (*skb).tstamp, len) };
    let counters = NET_COUNTERS.get_ptr_mut(&key);
    match verdict {
        Verdict::Pass { tat_ns } => {
            // SAFETY: as above (a racy store, see the module comment).
            unsafe { (*bucket).tat_ns = tat_ns };
            count(counters, len, false, false);
            Outcome::Pass
        }
        Verdict::Mark { tat_ns } => {
            // SAFETY: as above.
            unsafe { (*bucket).tat_ns = tat_ns };
            count(counters, len, false, false);
            Outcome::PassMarked
        }
        Verdict::Delay { tat_ns, at_ns } => {
            // SAFETY: as above; the verifier allows cgroup_skb to write
            // `tstamp`.
            unsafe {
                (*bucket).tat_ns = tat_ns;
                (*skb).tstamp = at_ns;
            }
            count(counters, len, true, false);
            Outcome::Pass
        }
        Verdict::Drop => {
            count(counters, len, false, true);
            Outcome::Drop
        }
    }
}

/// Counts on this CPU's copy: a program runs with preemption (migration)
/// disabled, so a plain increment is exact per CPU.
fn count(counters: Option<*mut NetCounters>, len: u64, delayed: bool, dropped: bool) {
    let Some(c) = counters else { return };
    // SAFETY: this CPU's slot of a map value.
    unsafe {
        if dropped {
            (*c).dropped_bytes += len;
            (*c).dropped_packets += 1;
        } else {
            (*c).passed_bytes += len;
            (*c).passed_packets += 1;
            if delayed {
                (*c).delayed_packets += 1;
            }
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program (see main.rs).
    loop {}
}
