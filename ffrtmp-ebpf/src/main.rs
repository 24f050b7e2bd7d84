//! ffrtmp's kernel side: two raw tracepoints feeding one ring buffer.
//!
//! - `sched_process_exec`: if the new image's comm is in `TARGETS`, emit an
//!   EXEC event (with argv[0], so user space need not read
//!   `/proc/<pid>/cmdline`, which waits on the target's mmap lock). Any
//!   other exec emits nothing and never wakes user space.
//! - `sched_process_exit`: fires per *thread*; for a tgid in `GOVERNED`,
//!   emit one EXIT event when the last thread of the group exits, and drop
//!   the tgid from `GOVERNED`.
//!
//! Raw tracepoints need neither tracefs nor the tracepoint format files;
//! their arguments are the tracepoint's `TP_PROTO`. Kernel structure fields
//! are read at the offsets user space found in the kernel's BTF and wrote into
//! `OFFSETS` (Rust eBPF has no CO-RE). Without them the programs emit nothing.
//!
//! Build with `cargo xtask build-ebpf` from the repository root.

#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_probe_read_user_str;
use ffrtmp_common::{ARGV0_LEN, CommKey, Event, Offsets, errors, limits};

/// Comm names whose exec is reported; filled by user space.
#[map]
static TARGETS: HashMap<CommKey, u8> = HashMap::with_max_entries(limits::MAX_TARGETS, 0);

/// Tgids whose exit is reported; user space inserts, the exit program removes.
#[map]
static GOVERNED: HashMap<u32, u8> = HashMap::with_max_entries(limits::MAX_GOVERNED, 0);

/// The event stream. User space sets the real size before loading
/// (`EbpfLoader::set_max_entries`); this is the default.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Ring-buffer reserve failures (ring full), per CPU.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Other reasons an event was given up, per CPU: indexes in `errors`.
#[map]
static ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(errors::COUNT, 0);

/// Kernel field offsets, one entry, written by user space before attaching.
#[map]
static OFFSETS: Array<Offsets> = Array::with_max_entries(1, 0);

/// `SIGNAL_GROUP_EXIT` in `include/linux/sched/signal.h` (0x00000004 in
/// both v6.1 and v6.18, unchanged since 2.6): the group is exiting as a whole
/// (`exit_group(2)`, a fatal signal) and `signal->group_exit_code` holds its
/// status.
const SIGNAL_GROUP_EXIT: u32 = 0x0000_0004;

/// `sched_process_exec`: `TP_PROTO(struct task_struct *p, pid_t old_pid,
/// struct linux_binprm *bprm)` (`include/trace/events/sched.h`, v6.1 and
/// v6.18). It fires in the exec'ing task after the new image is committed:
/// `current == p`, `pid == tgid` (`de_thread()` made it the leader), and
/// `comm` is already the basename of the new path (`begin_new_exec()`).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn ffrtmp_exec(ctx: RawTracePointContext) -> u32 {
    match try_exec(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// `sched_process_exit`: `TP_PROTO(struct task_struct *p)` in v6.1,
/// `TP_PROTO(struct task_struct *p, bool group_dead)` in newer kernels (a
/// 2025 change; v6.18 has it). Only argument 0 is read, so one program
/// attaches to both: a raw tracepoint program that read argument 1 would be
/// refused on kernels without it.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn ffrtmp_exit(ctx: RawTracePointContext) -> u32 {
    match try_exit(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_exec(ctx: &RawTracePointContext) -> Result<(), ()> {
    let comm = bpf_get_current_comm().map_err(|_| ())?;
    // The kernel NUL-pads comm (strscpy_pad), exactly like CommKey::new.
    // SAFETY: the value is only tested for presence, never read.
    if unsafe { TARGETS.get(CommKey { comm }) }.is_none() {
        return Ok(());
    }
    let off = offsets()?;
    let task: u64 = ctx.arg(0);
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut event = Event {
        kind: Event::EXEC,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        ppid: parent_tgid(task, &off)?,
        uid: bpf_get_current_uid_gid() as u32,
        exit_status: 0,
        start_time_ns: leader_start_time(task, &off)?,
        time_ns: now_ns(),
        comm,
        argv0_len: 0,
        argv0: [0; ARGV0_LEN],
    };
    event.argv0_len = read_argv0(task, &off, &mut event.argv0);
    emit(&event)
}

/// Copies argv[0] of the new image into `buf` and returns its length
/// without the NUL; 0 (unknown: user space reads `/proc/<pid>/cmdline`)
/// when it cannot be read, is empty or does not fit. At this tracepoint
/// `create_elf_tables()` has set `mm->arg_start` and the strings are in
/// pages `copy_strings()` faulted in, and `current == task`, so a read of
/// user memory (which cannot fault here) finds them.
fn read_argv0(task: u64, off: &Offsets, buf: &mut [u8; ARGV0_LEN]) -> u32 {
    let Ok(mm) = read::<u64>(task, off.task_mm) else { return 0 };
    let Ok(arg_start) = read::<u64>(mm, off.mm_arg_start) else { return 0 };
    // SAFETY: the helper checks the user address and writes at most
    // ARGV0_LEN bytes, always NUL-terminated, into `buf`.
    let len = unsafe {
        bpf_probe_read_user_str(buf.as_mut_ptr().cast(), ARGV0_LEN as u32, arg_start as *const c_void)
    };
    // The length with the NUL; ARGV0_LEN when the string was cut there.
    if len > 1 && len < ARGV0_LEN as i64 {
        (len - 1) as u32
    } else {
        *buf = [0; ARGV0_LEN];
        0
    }
}

fn try_exit(ctx: &RawTracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: presence test only.
    if unsafe { GOVERNED.get(tgid) }.is_none() {
        return Ok(());
    }
    let off = offsets()?;
    let task: u64 = ctx.arg(0);
    let signal: u64 = read(task, off.task_signal)?;

    // Is the whole group dead? do_exit() decrements signal->live *before*
    // the tracepoint fires:
    //   v6.1  kernel/exit.c do_exit(): `group_dead =
    //         atomic_dec_and_test(&tsk->signal->live);` (line 840 of Debian's
    //         6.1.192 source), then `tsk->exit_code = code;` (862), then
    //         `trace_sched_process_exit(tsk);` (878).
    //   v6.18 kernel/exit.c do_exit(): the same atomic_dec_and_test(), then
    //         `tsk->exit_code = code; taskstats_exit(tsk, group_dead);
    //         trace_sched_process_exit(tsk, group_dead);` (the 2025
    //         change that added group_dead moved the tracepoint up, before
    //         exit_mm(), still after the decrement; the 6.18 host's BTF has
    //         `btf_trace_sched_process_exit(void *, struct task_struct *,
    //         bool)`).
    // So live == 0 here means every thread has passed the decrement: no
    // thread of the process will run user code again. Only the last
    // decrementer has group_dead, but a thread that decremented earlier and
    // reaches its tracepoint later also sees 0; removing the GOVERNED entry
    // (atomic: only one delete succeeds) picks exactly one reporter.
    let live: i32 = read(signal, off.signal_live)?;
    if live != 0 {
        return Ok(());
    }
    // The wait(2) status, as wait_task_zombie() (kernel/exit.c) computes it
    // for the group leader `p`: `(p->signal->flags & SIGNAL_GROUP_EXIT) ?
    // p->signal->group_exit_code : p->exit_code`.
    let flags: u32 = read(signal, off.signal_flags)?;
    let leader: u64 = read(task, off.task_group_leader)?;
    let exit_status: i32 = if flags & SIGNAL_GROUP_EXIT != 0 {
        read(signal, off.signal_group_exit_code)?
    } else {
        read(leader, off.task_exit_code)?
    };
    let start_time_ns: u64 = read(leader, off.task_start_boottime)?;
    let ppid = parent_tgid(task, &off)?;
    let comm = bpf_get_current_comm().map_err(|_| ())?;

    if GOVERNED.remove(tgid).is_err() {
        // Another thread of this process already reported it.
        return Ok(());
    }
    emit(&Event {
        kind: Event::EXIT,
        pid: tgid,
        tid: pid_tgid as u32,
        ppid,
        uid: bpf_get_current_uid_gid() as u32,
        exit_status: exit_status as u32,
        start_time_ns,
        time_ns: now_ns(),
        comm,
        argv0_len: 0,
        argv0: [0; ARGV0_LEN],
    })
}

/// CLOCK_MONOTONIC in nanoseconds: when the event fired.
fn now_ns() -> u64 {
    // SAFETY: bpf_ktime_get_ns takes no arguments and only reads the clock.
    unsafe { bpf_ktime_get_ns() }
}

/// The offsets, if user space wrote them; otherwise count and give up.
fn offsets() -> Result<Offsets, ()> {
    match OFFSETS.get(0) {
        Some(off) if off.magic == Offsets::MAGIC => Ok(*off),
        _ => {
            bump(&ERRORS, errors::NO_OFFSETS);
            Err(())
        }
    }
}

/// `task->real_parent->tgid`.
fn parent_tgid(task: u64, off: &Offsets) -> Result<u32, ()> {
    let parent: u64 = read(task, off.task_real_parent)?;
    read(parent, off.task_tgid)
}

/// `task->group_leader->start_boottime`: what /proc/<pid>/stat field 22 shows
/// for the process (after a non-leader exec, de_thread() copies the old
/// leader's start times, so the value never changes across exec).
fn leader_start_time(task: u64, off: &Offsets) -> Result<u64, ()> {
    let leader: u64 = read(task, off.task_group_leader)?;
    read(leader, off.task_start_boottime)
}

/// Reads a `T` at `base + offset` in kernel memory; a failure is counted.
fn read<T>(base: u64, offset: u32) -> Result<T, ()> {
    let src = base.wrapping_add(u64::from(offset)) as *const T;
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel(src) }.map_err(|_| bump(&ERRORS, errors::READ_FAILED))
}

fn emit(event: &Event) -> Result<(), ()> {
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            entry.write(*event);
            entry.submit(0);
            Ok(())
        }
        None => {
            bump(&DROPS, 0);
            Err(())
        }
    }
}

/// Adds one to a per-CPU counter. Tracepoint programs run with preemption
/// disabled and a program never re-enters itself on one CPU (the kernel's
/// per-program recursion guard), so a plain increment is exact.
fn bump(counters: &PerCpuArray<u64>, index: u32) {
    if let Some(count) = counters.get_ptr_mut(index) {
        // SAFETY: the pointer is this CPU's slot of a map value.
        unsafe { *count += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects loops it
    // cannot bound, so a reachable panic fails the load rather than hang.
    loop {}
}
