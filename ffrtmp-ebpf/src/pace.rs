//! ffrtmp's TCP pacing program: a `sock_ops` program that gives every TCP
//! connection a job opens (`connect()`) the job's egress rate as its
//! `SO_MAX_PACING_RATE`, so TCP paces itself at the rate (its own pacing
//! needs no qdisc) instead of bursting into the job's bucket and backing off
//! from drops. The bucket (`net.rs`) still holds the job's total.
//!
//! One copy is loaded per job, with the rate written into `PACE_RATE` at
//! load time: a `sock_ops` program cannot tell which job a socket belongs to
//! on every kernel (`bpf_get_current_cgroup_id` is refused there on 6.1),
//! but the copy attached to a job's cgroup runs only for that job's sockets.
//!
//! Build with `cargo xtask build-ebpf` from the repository root.

#![no_std]
#![no_main]

use aya_ebpf::{bindings::BPF_SOCK_OPS_TCP_CONNECT_CB, helpers::bpf_setsockopt, macros::sock_ops, programs::SockOpsContext};

/// The job's egress rate in bytes per second; written by user space when it
/// loads this copy (`EbpfLoader::set_global`). 0 leaves sockets alone.
#[unsafe(no_mangle)]
static PACE_RATE: u32 = 0;

/// `SOL_SOCKET` and `SO_MAX_PACING_RATE` (`include/uapi/asm-generic/socket.h`).
const SOL_SOCKET: i32 = 1;
const SO_MAX_PACING_RATE: i32 = 47;

#[sock_ops]
pub fn ffrtmp_pace(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_TCP_CONNECT_CB {
        return 1;
    }
    // SAFETY: a read of this program's own read-only global.
    let mut rate = unsafe { core::ptr::read_volatile(&PACE_RATE) };
    if rate == 0 {
        return 1;
    }
    // SAFETY: `ctx.ops` is the program's context; the option value is a
    // local of the size given (an int: what bpf_setsockopt takes for
    // SOL_SOCKET options on every kernel). A failure leaves the socket
    // unpaced, and so policed by the bucket.
    unsafe {
        bpf_setsockopt(
            ctx.ops.cast(),
            SOL_SOCKET,
            SO_MAX_PACING_RATE,
            core::ptr::from_mut(&mut rate).cast(),
            size_of::<u32>() as i32,
        );
    }
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program (see main.rs).
    loop {}
}
