//! Types shared by the `ffrtmp-ebpf` programs and the `ffrtmp` user side.
//!
//! Every type here is `#[repr(C)]`, made of plain integers and byte arrays,
//! and laid out with no implicit padding (checked at compile time below), so
//! the kernel and user space agree on it byte for byte and no uninitialised
//! padding byte ever leaves the kernel. With the `user` feature each type is
//! also an [`aya::Pod`], usable as a map key or value.
//!
//! The crate is `no_std` (it is in the eBPF object too), but with `user` (`btf` reads a file).

#![cfg_attr(not(feature = "user"), no_std)]

#[cfg(test)]
extern crate std;

use core::fmt;
use core::mem::{offset_of, size_of};

/// `TASK_COMM_LEN` in `include/linux/sched.h`: a task's `comm` is 16 bytes,
/// at most 15 of them name bytes, NUL-padded.
pub const TASK_COMM_LEN: usize = 16;

/// Bytes of argv[0] an EXEC event has room for, its NUL included. An
/// argv[0] of up to `ARGV0_LEN - 2` bytes is carried: the kernel's string
/// read returns the same length for one that fills the room exactly and
/// for one it cut, so neither is (user space reads `/proc/<pid>/cmdline`
/// instead). 124 keeps [`Event`] a multiple of 8 bytes without padding.
pub const ARGV0_LEN: usize = 124;

/// Map and program names in the eBPF object, so both sides spell them alike.
pub mod names {
    /// `HashMap<CommKey, u8>`: the comm names whose exec is reported.
    pub const TARGETS: &str = "TARGETS";
    /// `HashMap<u32, u8>`: tgids whose exit is reported (once, then removed).
    pub const GOVERNED: &str = "GOVERNED";
    /// `RingBuf` of [`Event`](super::Event) records.
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<u64>`, one entry: ring-buffer reserve failures.
    pub const DROPS: &str = "DROPS";
    /// `PerCpuArray<u64>`, [`errors::COUNT`](super::errors::COUNT) entries: see [`errors`](super::errors).
    pub const ERRORS: &str = "ERRORS";
    /// `Array<Offsets>`, one entry, written by user space before attaching.
    pub const OFFSETS: &str = "OFFSETS";
    /// Raw tracepoint program for `sched_process_exec`.
    pub const PROG_EXEC: &str = "ffrtmp_exec";
    /// Raw tracepoint program for `sched_process_exit`.
    pub const PROG_EXIT: &str = "ffrtmp_exit";
}

/// Entry counts of the fixed-size maps.
pub mod limits {
    /// Target comm names ([`names::TARGETS`](super::names::TARGETS)).
    pub const MAX_TARGETS: u32 = 256;
    /// Governed processes ([`names::GOVERNED`](super::names::GOVERNED)).
    pub const MAX_GOVERNED: u32 = 8192;
}

/// The network programs (a second object, `ffrtmp-net`, loaded only for jobs
/// with a network limit): map and program names, keys, values, and the
/// admission arithmetic both sides share.
pub mod net {
    /// `HashMap<NetKey, NetBucket>`: the rate and state of each limited
    /// job and direction; user space inserts, the programs update `tat_ns`.
    pub const BUCKETS: &str = "NET_BUCKETS";
    /// `PerCpuHashMap<NetKey, NetCounters>`: per job and direction;
    /// user space inserts zeroed entries, the programs count.
    pub const COUNTERS: &str = "NET_COUNTERS";
    /// `cgroup_skb/egress` program.
    pub const PROG_EGRESS: &str = "ffrtmp_egress";
    /// `cgroup_skb/ingress` program.
    pub const PROG_INGRESS: &str = "ffrtmp_ingress";
    /// `sock_ops` program of the `ffrtmp-pace` object: paces the job's TCP
    /// connections at its egress rate.
    pub const PROG_PACE: &str = "ffrtmp_pace";
    /// Its global: the rate in bytes per second, set at load time.
    pub const PACE_RATE: &str = "PACE_RATE";
    /// Limited jobs per loaded object (both directions count).
    pub const MAX_ENTRIES: u32 = 4096;

    /// [`NetKey::direction`] values.
    pub const EGRESS: u32 = 0;
    pub const INGRESS: u32 = 1;

    /// [`NetBucket::mode`]: set `skb->tstamp` (needs the `fq` qdisc on the
    /// device); otherwise drop what exceeds the bucket.
    pub const MODE_PACE: u32 = 1;
    pub const MODE_POLICE: u32 = 2;

    const NSEC_PER_SEC: u64 = 1_000_000_000;

    /// The key: the job's cgroup v2 id (the inode number of its directory in
    /// the unified hierarchy) and a direction.
    #[repr(C)]
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
    pub struct NetKey {
        pub cgroup_id: u64,
        pub direction: u32,
        pub _pad: u32,
    }

    /// A virtual-clock bucket (GCRA): `tat_ns` is when everything admitted
    /// so far would have left at `bytes_per_sec`. A packet is admitted when
    /// the backlog it would make, `max(tat, now) + its own time - now`, is at
    /// most `horizon_ns`; pacing then gives it a departure time instead of
    /// letting it leave at once.
    #[repr(C)]
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
    pub struct NetBucket {
        pub bytes_per_sec: u64,
        pub horizon_ns: u64,
        pub tat_ns: u64,
        pub mode: u32,
        pub _pad: u32,
    }

    /// Per job and direction, per CPU (user space sums them).
    #[repr(C)]
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
    pub struct NetCounters {
        pub passed_bytes: u64,
        pub passed_packets: u64,
        /// Passed with a later departure time (pacing).
        pub delayed_packets: u64,
        pub dropped_bytes: u64,
        pub dropped_packets: u64,
    }

    /// What to do with one packet.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Verdict {
        /// Pass now; the bucket's clock moves to `tat_ns`.
        Pass { tat_ns: u64 },
        /// Pass with departure time `at_ns` (pacing only).
        Delay { tat_ns: u64, at_ns: u64 },
        /// Pass, but tell the sender it met congestion (policing, once the
        /// backlog is past half the horizon): on egress TCP then shrinks
        /// its window before anything is dropped.
        Mark { tat_ns: u64 },
        /// Over the horizon: drop, the clock stays.
        Drop,
    }

    /// The decision for a packet of `len` bytes at `now_ns` (CLOCK_MONOTONIC,
    /// the clock `fq` and `bpf_ktime_get_ns` use); `tstamp_ns` is the
    /// departure time the stack already set (TCP's own pacing), or 0.
    pub fn admit(bucket: &NetBucket, now_ns: u64, tstamp_ns: u64, len: u64) -> Verdict {
        if bucket.bytes_per_sec == 0 {
            return Verdict::Pass { tat_ns: bucket.tat_ns };
        }
        let earliest = if tstamp_ns > now_ns { tstamp_ns } else { now_ns };
        let start = if bucket.tat_ns > earliest {
            bucket.tat_ns
        } else {
            earliest
        };
        // len < 2^32 and NSEC_PER_SEC < 2^30: no overflow.
        let own = len.saturating_mul(NSEC_PER_SEC) / bucket.bytes_per_sec;
        let tat_ns = start.saturating_add(own);
        if tat_ns - now_ns > bucket.horizon_ns {
            return Verdict::Drop;
        }
        if bucket.mode == MODE_PACE {
            if start > earliest {
                return Verdict::Delay { tat_ns, at_ns: start };
            }
        } else if tat_ns - now_ns > bucket.horizon_ns / 2 {
            return Verdict::Mark { tat_ns };
        }
        Verdict::Pass { tat_ns }
    }
}

/// Indexes into the per-CPU `ERRORS` counters: events the programs had to
/// give up on. Each is a reason a process may have been missed, so user space
/// exports them and treats a change like a loss (reconcile).
pub mod errors {
    /// `OFFSETS` not written (or written by a mismatched loader): the
    /// programs emit nothing rather than read kernel memory at guessed offsets.
    pub const NO_OFFSETS: u32 = 0;
    /// A `bpf_probe_read_kernel` of a `task_struct`/`signal_struct` field failed.
    pub const READ_FAILED: u32 = 1;
    /// Number of counters.
    pub const COUNT: u32 = 2;
}

/// A target's comm name, the key of the `TARGETS` map.
///
/// Compared byte for byte with the kernel's `comm` of the task that just
/// exec'd (the basename of the exec'd path cut to 15 bytes), so it must be
/// NUL-padded exactly like the kernel pads it: build it with [`CommKey::new`].
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CommKey {
    pub comm: [u8; TASK_COMM_LEN],
}

impl CommKey {
    /// The key for `name`: its first 15 bytes (the kernel keeps no more),
    /// NUL-padded to 16. A name containing a NUL is cut there, as the kernel
    /// would cut it.
    pub const fn new(name: &[u8]) -> CommKey {
        let mut comm = [0u8; TASK_COMM_LEN];
        let mut i = 0;
        while i < name.len() && i < TASK_COMM_LEN - 1 && name[i] != 0 {
            comm[i] = name[i];
            i += 1;
        }
        CommKey { comm }
    }

    /// The name bytes, up to the first NUL.
    pub fn name(&self) -> &[u8] {
        comm_name(&self.comm)
    }
}

impl fmt::Debug for CommKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CommKey").field(&EscapedComm(self.name())).finish()
    }
}

/// The name part of a NUL-padded `comm` buffer.
pub fn comm_name(comm: &[u8; TASK_COMM_LEN]) -> &[u8] {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(TASK_COMM_LEN);
    &comm[..end]
}

struct EscapedComm<'a>(&'a [u8]);

impl fmt::Debug for EscapedComm<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                fmt::Display::fmt(&c.escape_debug(), f)?;
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

/// One process event, as the eBPF programs write it into the ring buffer.
///
/// Fields are `u32`/`u64` rather than `pid_t`/`bool`/enums so that every bit
/// pattern is a valid value and the layout has no padding.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// [`Event::EXEC`] or [`Event::EXIT`]. A `u32`, not a Rust enum, so an
    /// unexpected value from the kernel is a decode error, not UB.
    pub kind: u32,
    /// The process id (the kernel's tgid).
    pub pid: u32,
    /// The thread that triggered the event: the exec'ing thread (== pid after
    /// exec), or for EXIT the thread whose exit found the group dead.
    pub tid: u32,
    /// The tgid of the process's real parent.
    pub ppid: u32,
    /// Real uid, in the initial user namespace.
    pub uid: u32,
    /// EXIT only (0 for EXEC): the wait(2)-style status word, computed like
    /// `wait_task_zombie()` does: the group exit code when the process exited
    /// as a group (`exit_group(2)`, a fatal signal), else the leader's exit
    /// code. `WEXITSTATUS = (s >> 8) & 0xff`, `WTERMSIG = s & 0x7f`, core
    /// dumped = `s & 0x80`.
    pub exit_status: u32,
    /// The thread group leader's `start_boottime` in nanoseconds since boot
    /// (CLOCK_BOOTTIME). `/proc/<pid>/stat` field 22 is this value divided by
    /// `1e9 / sysconf(_SC_CLK_TCK)`: see [`Event::start_time_ticks`].
    pub start_time_ns: u64,
    /// When the event fired, in nanoseconds of CLOCK_MONOTONIC
    /// (`bpf_ktime_get_ns()`): user space measures exec → limits in place
    /// from it.
    pub time_ns: u64,
    /// The task's comm (for EXEC: the new image's basename, 15 bytes max).
    pub comm: [u8; TASK_COMM_LEN],
    /// EXEC only: the length of argv[0] in `argv0`, without its NUL, read
    /// from the new image's memory at the exec. 0 when it is unknown: not
    /// read, empty, or longer than `argv0` has room for.
    pub argv0_len: u32,
    /// EXEC only: argv[0]'s bytes (the first `argv0_len`), then NULs.
    pub argv0: [u8; ARGV0_LEN],
}

impl Event {
    /// `kind` of an exec event (`sched_process_exec`).
    pub const EXEC: u32 = 1;
    /// `kind` of a process exit event (the last thread of a governed process).
    pub const EXIT: u32 = 2;
    /// Size of one record in the ring buffer.
    pub const SIZE: usize = size_of::<Event>();

    /// Decodes one ring-buffer record. Never panics: a record of the wrong
    /// length or with an unknown `kind` is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Event, DecodeError> {
        let Ok(b) = <&[u8; Event::SIZE]>::try_from(bytes) else {
            return Err(DecodeError::Length {
                len: bytes.len(),
                need: Event::SIZE,
            });
        };
        let u32_at = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let kind = u32_at(offset_of!(Event, kind));
        if kind != Event::EXEC && kind != Event::EXIT {
            return Err(DecodeError::UnknownKind(kind));
        }
        let u64_at = |at: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[at..at + 8]);
            u64::from_ne_bytes(v)
        };
        let c = offset_of!(Event, comm);
        let mut comm = [0u8; TASK_COMM_LEN];
        comm.copy_from_slice(&b[c..c + TASK_COMM_LEN]);
        let a = offset_of!(Event, argv0);
        let mut argv0 = [0u8; ARGV0_LEN];
        argv0.copy_from_slice(&b[a..a + ARGV0_LEN]);
        Ok(Event {
            kind,
            pid: u32_at(offset_of!(Event, pid)),
            tid: u32_at(offset_of!(Event, tid)),
            ppid: u32_at(offset_of!(Event, ppid)),
            uid: u32_at(offset_of!(Event, uid)),
            exit_status: u32_at(offset_of!(Event, exit_status)),
            start_time_ns: u64_at(offset_of!(Event, start_time_ns)),
            time_ns: u64_at(offset_of!(Event, time_ns)),
            comm,
            argv0_len: u32_at(offset_of!(Event, argv0_len)),
            argv0,
        })
    }

    /// The record as the kernel writes it (native endianness).
    pub fn to_bytes(&self) -> [u8; Event::SIZE] {
        let mut b = [0u8; Event::SIZE];
        let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        put(offset_of!(Event, kind), &self.kind.to_ne_bytes());
        put(offset_of!(Event, pid), &self.pid.to_ne_bytes());
        put(offset_of!(Event, tid), &self.tid.to_ne_bytes());
        put(offset_of!(Event, ppid), &self.ppid.to_ne_bytes());
        put(offset_of!(Event, uid), &self.uid.to_ne_bytes());
        put(offset_of!(Event, exit_status), &self.exit_status.to_ne_bytes());
        put(offset_of!(Event, start_time_ns), &self.start_time_ns.to_ne_bytes());
        put(offset_of!(Event, time_ns), &self.time_ns.to_ne_bytes());
        put(offset_of!(Event, comm), &self.comm);
        put(offset_of!(Event, argv0_len), &self.argv0_len.to_ne_bytes());
        put(offset_of!(Event, argv0), &self.argv0);
        b
    }

    /// argv[0] as the exec event carried it, or None when it is unknown
    /// (see [`Event::argv0_len`]; a length past the array is unknown too).
    pub fn argv0(&self) -> Option<&[u8]> {
        match self.argv0_len as usize {
            0 => None,
            n => self.argv0.get(..n),
        }
    }

    /// The comm name bytes, up to the first NUL.
    pub fn comm_name(&self) -> &[u8] {
        comm_name(&self.comm)
    }

    /// `start_time_ns` in clock ticks, as `/proc/<pid>/stat` field 22 shows
    /// it (`nsec_to_clock_t()` in `kernel/time/time.c`: a truncating
    /// division). `clk_tck` is `sysconf(_SC_CLK_TCK)` (`USER_HZ`, 100 on
    /// Linux); 0 yields 0.
    pub fn start_time_ticks(&self, clk_tck: u64) -> u64 {
        if clk_tck == 0 {
            return 0;
        }
        self.start_time_ns / (1_000_000_000 / clk_tck).max(1)
    }
}

impl Default for Event {
    fn default() -> Event {
        Event {
            kind: 0,
            pid: 0,
            tid: 0,
            ppid: 0,
            uid: 0,
            exit_status: 0,
            start_time_ns: 0,
            time_ns: 0,
            comm: [0; TASK_COMM_LEN],
            argv0_len: 0,
            argv0: [0; ARGV0_LEN],
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("kind", &self.kind)
            .field("pid", &self.pid)
            .field("tid", &self.tid)
            .field("ppid", &self.ppid)
            .field("uid", &self.uid)
            .field("exit_status", &self.exit_status)
            .field("start_time_ns", &self.start_time_ns)
            .field("time_ns", &self.time_ns)
            .field("comm", &EscapedComm(self.comm_name()))
            .field("argv0", &self.argv0().map(EscapedComm))
            .finish()
    }
}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is not exactly one [`Event`] long.
    Length { len: usize, need: usize },
    /// `kind` is neither [`Event::EXEC`] nor [`Event::EXIT`].
    UnknownKind(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Length { len, need } => {
                write!(f, "eBPF event record is {len} bytes, expected {need}")
            }
            DecodeError::UnknownKind(k) => write!(f, "eBPF event record has unknown kind {k}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Byte offsets of the kernel fields the programs read, found by user space
/// in the running kernel's BTF (`/sys/kernel/btf/vmlinux`): Rust eBPF has no
/// CO-RE relocations, and these offsets differ between kernel builds.
///
/// The single entry of the `OFFSETS` array is all zeroes until user space
/// writes it; the programs check [`Offsets::MAGIC`] and emit nothing without
/// it (fail closed, counted in `ERRORS[NO_OFFSETS]`).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Offsets {
    /// [`Offsets::MAGIC`] once user space has filled the entry.
    pub magic: u32,
    /// `task_struct.tgid` (`pid_t`).
    pub task_tgid: u32,
    /// `task_struct.real_parent` (`struct task_struct *`).
    pub task_real_parent: u32,
    /// `task_struct.group_leader` (`struct task_struct *`).
    pub task_group_leader: u32,
    /// `task_struct.start_boottime` (`u64`, ns).
    pub task_start_boottime: u32,
    /// `task_struct.exit_code` (`int`).
    pub task_exit_code: u32,
    /// `task_struct.signal` (`struct signal_struct *`).
    pub task_signal: u32,
    /// `signal_struct.live` (`atomic_t`: an `int counter`).
    pub signal_live: u32,
    /// `signal_struct.flags` (`unsigned int`).
    pub signal_flags: u32,
    /// `signal_struct.group_exit_code` (`int`).
    pub signal_group_exit_code: u32,
    /// `task_struct.mm` (`struct mm_struct *`).
    pub task_mm: u32,
    /// `mm_struct.arg_start` (`unsigned long`): where argv[0] begins in the
    /// process's memory.
    pub mm_arg_start: u32,
}

impl Offsets {
    /// Marks a filled entry ("ffru" in ASCII, "ffrt" before `task_mm`). Bump it if the struct changes,
    /// so an object and a loader of different versions fail closed.
    pub const MAGIC: u32 = 0x6666_7275;
}

// Layout checks: sizes are sums of the fields (no implicit padding) and the
// 64-bit field is 8-aligned on every target.
const _: () = {
    assert!(size_of::<CommKey>() == TASK_COMM_LEN);
    assert!(size_of::<Event>() == 6 * 4 + 2 * 8 + TASK_COMM_LEN + 4 + ARGV0_LEN);
    assert!(size_of::<Event>().is_multiple_of(8));
    assert!(offset_of!(Event, start_time_ns) == 24);
    assert!(offset_of!(Event, time_ns) == 32);
    assert!(offset_of!(Event, comm) == 40);
    assert!(offset_of!(Event, argv0_len) == 56);
    assert!(offset_of!(Event, argv0) == 60);
    assert!(size_of::<Offsets>() == 12 * 4);
    assert!(size_of::<net::NetKey>() == 16);
    assert!(size_of::<net::NetBucket>() == 4 * 8);
    assert!(size_of::<net::NetCounters>() == 5 * 8);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, only integer and byte-array fields, no padding
    // (see the layout checks above): every bit pattern is a valid value.
    unsafe impl aya::Pod for super::CommKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Offsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::net::NetKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::net::NetBucket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::net::NetCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::format;
    use std::vec::Vec;

    fn sample() -> Event {
        Event {
            kind: Event::EXIT,
            pid: 4242,
            tid: 4243,
            ppid: 1,
            uid: 1000,
            exit_status: 3 << 8,
            start_time_ns: 123_456_789_012,
            time_ns: 223_456_789_012,
            comm: CommKey::new(b"ffmpeg").comm,
            ..Event::default()
        }
    }

    #[test]
    fn comm_key_truncates_to_15_bytes_and_pads() {
        let k = CommKey::new(b"gst-launch-1.0");
        assert_eq!(k.name(), b"gst-launch-1.0");
        assert_eq!(&k.comm[14..], &[0, 0]);
        let long = CommKey::new(b"a-very-long-command-name");
        assert_eq!(long.name(), b"a-very-long-com");
        assert_eq!(long.comm[15], 0);
        assert_eq!(CommKey::new(b"ab\0cd"), CommKey::new(b"ab"));
        assert_eq!(CommKey::new(b"").comm, [0; 16]);
    }

    #[test]
    fn round_trip() {
        let e = sample();
        assert_eq!(Event::from_bytes(&e.to_bytes()), Ok(e));
    }

    #[test]
    fn layout_matches_the_struct() {
        let e = sample();
        // SAFETY: Event is repr(C) with no padding; viewing it as bytes is sound.
        let raw = unsafe { core::slice::from_raw_parts((&e as *const Event).cast::<u8>(), Event::SIZE) };
        assert_eq!(raw, &e.to_bytes()[..]);
    }

    #[test]
    fn rejects_short_long_and_unknown() {
        let b = sample().to_bytes();
        assert_eq!(
            Event::from_bytes(&b[..183]),
            Err(DecodeError::Length { len: 183, need: 184 })
        );
        assert_eq!(Event::from_bytes(&[]), Err(DecodeError::Length { len: 0, need: 184 }));
        // The record before argv[0] was carried (an older object).
        assert_eq!(
            Event::from_bytes(&b[..56]),
            Err(DecodeError::Length { len: 56, need: 184 })
        );
        let mut long = Vec::from(&b[..]);
        long.push(0);
        assert_eq!(
            Event::from_bytes(&long),
            Err(DecodeError::Length { len: 185, need: 184 })
        );
        let mut bad = b;
        bad[..4].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(Event::from_bytes(&bad), Err(DecodeError::UnknownKind(7)));
        assert_eq!(
            format!("{}", DecodeError::UnknownKind(7)),
            "eBPF event record has unknown kind 7"
        );
    }

    #[test]
    fn start_time_ticks_truncates_like_the_kernel() {
        let e = Event {
            start_time_ns: 1_239_999_999,
            ..sample()
        };
        assert_eq!(e.start_time_ticks(100), 123);
        assert_eq!(e.start_time_ticks(0), 0);
    }

    #[test]
    fn debug_escapes_comm() {
        let e = Event {
            comm: CommKey::new(b"a\"b\xff").comm,
            ..sample()
        };
        assert!(format!("{e:?}").contains(r#"comm: "a\"b\xff""#), "{e:?}");
    }

    #[test]
    fn argv0_is_known_only_when_it_fits() {
        let mut e = sample();
        assert_eq!(e.argv0(), None, "0: unknown");
        e.argv0[..15].copy_from_slice(b"/usr/bin/ffmpeg");
        e.argv0_len = 15;
        assert_eq!(e.argv0(), Some(&b"/usr/bin/ffmpeg"[..]));
        assert_eq!(
            Event::from_bytes(&e.to_bytes()).map(|d| d.argv0().map(<[u8]>::to_vec)),
            Ok(Some(b"/usr/bin/ffmpeg".to_vec()))
        );
        e.argv0_len = ARGV0_LEN as u32;
        assert_eq!(e.argv0().map(<[u8]>::len), Some(ARGV0_LEN));
        e.argv0_len = ARGV0_LEN as u32 + 1;
        assert_eq!(e.argv0(), None, "a length past the array");
        assert!(format!("{e:?}").contains("argv0: None"), "{e:?}");
    }

    fn any_event() -> impl Strategy<Value = Event> {
        (
            prop_oneof![Just(Event::EXEC), Just(Event::EXIT)],
            any::<(u32, u32, u32, u32, u32)>(),
            any::<(u64, u64)>(),
            any::<[u8; 16]>(),
            (any::<u32>(), proptest::collection::vec(any::<u8>(), ARGV0_LEN)),
        )
            .prop_map(
                |(kind, (pid, tid, ppid, uid, exit_status), (start_time_ns, time_ns), comm, (argv0_len, bytes))| {
                    let mut argv0 = [0u8; ARGV0_LEN];
                    argv0.copy_from_slice(&bytes);
                    Event {
                        kind,
                        pid,
                        tid,
                        ppid,
                        uid,
                        exit_status,
                        start_time_ns,
                        time_ns,
                        comm,
                        argv0_len,
                        argv0,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            match Event::from_bytes(&bytes) {
                Ok(e) => {
                    prop_assert_eq!(bytes.len(), Event::SIZE);
                    prop_assert!(e.kind == Event::EXEC || e.kind == Event::EXIT);
                    prop_assert_eq!(&e.to_bytes()[..], &bytes[..]);
                }
                Err(DecodeError::Length { len, need }) => {
                    prop_assert_eq!(len, bytes.len());
                    prop_assert_eq!(need, Event::SIZE);
                    prop_assert_ne!(len, need);
                }
                Err(DecodeError::UnknownKind(k)) => prop_assert!(k != Event::EXEC && k != Event::EXIT),
            }
        }

        #[test]
        fn valid_events_round_trip(e in any_event()) {
            prop_assert_eq!(Event::from_bytes(&e.to_bytes()), Ok(e));
        }

        #[test]
        fn truncated_or_extended_records_are_rejected(e in any_event(), cut in 0usize..Event::SIZE, extra in 1usize..64) {
            let b = e.to_bytes();
            let short = Event::from_bytes(&b[..cut]);
            prop_assert_eq!(short, Err(DecodeError::Length { len: cut, need: Event::SIZE }));
            let mut long = Vec::from(&b[..]);
            long.resize(Event::SIZE + extra, 0);
            prop_assert!(Event::from_bytes(&long).is_err());
        }

        #[test]
        fn comm_key_is_kernel_shaped(name in proptest::collection::vec(any::<u8>(), 0..40)) {
            let k = CommKey::new(&name);
            let n = k.name();
            prop_assert!(n.len() <= 15);
            prop_assert!(name.starts_with(n));
            prop_assert!(k.comm[n.len()..].iter().all(|&b| b == 0));
        }
    }

    mod net_admit {
        use crate::net::*;

        fn bucket(bytes_per_sec: u64, horizon_ns: u64, mode: u32) -> NetBucket {
            NetBucket {
                bytes_per_sec,
                horizon_ns,
                mode,
                ..NetBucket::default()
            }
        }

        #[test]
        fn pacing_spaces_packets_at_the_rate() {
            // 1 MB/s: a 1000-byte packet takes 1 ms.
            let mut b = bucket(1_000_000, 2_000_000_000, MODE_PACE);
            let now = 5_000_000_000;
            assert_eq!(
                admit(&b, now, 0, 1000),
                Verdict::Pass {
                    tat_ns: now + 1_000_000
                }
            );
            b.tat_ns = now + 1_000_000;
            assert_eq!(
                admit(&b, now, 0, 1000),
                Verdict::Delay {
                    tat_ns: now + 2_000_000,
                    at_ns: now + 1_000_000
                }
            );
        }

        #[test]
        fn beyond_the_horizon_is_dropped_and_the_clock_stays() {
            let mut b = bucket(1_000_000, 10_000_000, MODE_POLICE);
            let now = 1_000_000_000;
            b.tat_ns = now + 9_500_000;
            assert_eq!(admit(&b, now, 0, 1000), Verdict::Drop);
            // Policing never delays: within the bucket it passes at once.
            b.tat_ns = now + 3_000_000;
            assert_eq!(
                admit(&b, now, 0, 1000),
                Verdict::Pass {
                    tat_ns: now + 4_000_000
                }
            );
            // Past half the horizon: passed, with a congestion mark.
            b.tat_ns = now + 8_000_000;
            assert_eq!(
                admit(&b, now, 0, 1000),
                Verdict::Mark {
                    tat_ns: now + 9_000_000
                }
            );
        }

        #[test]
        fn an_idle_bucket_does_not_bank_credit() {
            // The clock far in the past: the packet starts now, not earlier.
            let b = NetBucket {
                tat_ns: 10,
                ..bucket(1_000_000, 1_000_000, MODE_PACE)
            };
            assert_eq!(
                admit(&b, 1_000_000_000, 0, 500),
                Verdict::Pass { tat_ns: 1_000_500_000 }
            );
        }

        #[test]
        fn the_stacks_own_departure_time_is_kept() {
            let b = bucket(1_000_000, 2_000_000_000, MODE_PACE);
            let now = 1_000_000_000;
            assert_eq!(
                admit(&b, now, now + 50, 1000),
                Verdict::Pass {
                    tat_ns: now + 50 + 1_000_000
                }
            );
        }

        #[test]
        fn a_zero_rate_passes_everything() {
            let b = bucket(0, 0, MODE_POLICE);
            assert_eq!(admit(&b, 1, 0, 65_536), Verdict::Pass { tat_ns: 0 });
        }

        #[test]
        fn long_run_rate_equals_the_bucket_rate() {
            // Offer 3x the rate for 1 s in 1500-byte packets: what passes is
            // the rate times the second plus at most the horizon's worth.
            let rate = 250_000; // 2 mbit/s
            let horizon = 100_000_000;
            let mut b = bucket(rate, horizon, MODE_POLICE);
            let mut passed = 0u64;
            let step = 1500 * 1_000_000_000 / (3 * rate);
            let mut now = 1_000_000_000;
            while now < 2_000_000_000 {
                if let Verdict::Pass { tat_ns } | Verdict::Mark { tat_ns } = admit(&b, now, 0, 1500) {
                    b.tat_ns = tat_ns;
                    passed += 1500;
                }
                now += step;
            }
            let max = rate + rate * horizon / 1_000_000_000 + 1500;
            assert!(
                passed <= max && passed >= rate - 1500,
                "{passed} bytes passed, rate {rate}"
            );
        }
    }
}

/// Reading [`Offsets`] from the running kernel's BTF (user space only).
#[cfg(feature = "user")]
pub mod btf;
