//! Test stub: uses a known amount of memory.
//!
//! `stub-mem MIB` locks its memory (`mlockall`, so it cannot be swapped out
//! and a memory limit bites even on a host with swap), then allocates MIB
//! MiB and writes to every page of it, printing `touched <bytes>` after each
//! MiB, and finally `done <bytes>`; it exits 0. Under a smaller memory limit
//! the kernel OOM-kills it part way. First it prints `memory.peak yes` or
//! `memory.peak no`: whether its own cgroup v2 offers that file (5.19+), so
//! a test can tell the kernel's feature from ffrtmp's report.

use std::io::Write;

const MIB: usize = 1 << 20;

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: stub-mem MIB");
    // SAFETY: mlockall only changes how this process's pages are kept.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if rc != 0 {
        eprintln!("stub-mem: mlockall: {} (continuing)", std::io::Error::last_os_error());
    }
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut out = std::io::stdout().lock();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let peak = own.lines().find_map(|l| l.strip_prefix("0::")).is_some_and(|path| {
        std::path::Path::new("/sys/fs/cgroup")
            .join(path.trim_start_matches('/'))
            .join("memory.peak")
            .exists()
    });
    let _ = writeln!(out, "memory.peak {}", if peak { "yes" } else { "no" });
    let mut chunks: Vec<Vec<u8>> = Vec::with_capacity(mib);
    for i in 1..=mib {
        // Uninitialised capacity: the pages are first touched below.
        let mut chunk: Vec<u8> = Vec::with_capacity(MIB);
        let base = chunk.as_mut_ptr();
        for offset in (0..MIB).step_by(page) {
            // SAFETY: `offset` < MIB = the capacity; a volatile write makes
            // sure the page is really faulted in.
            unsafe { std::ptr::write_volatile(base.add(offset), 1) };
        }
        chunks.push(chunk);
        let _ = writeln!(out, "touched {}", i * MIB);
        let _ = out.flush();
    }
    let _ = writeln!(out, "done {}", mib * MIB);
    let _ = out.flush();
    drop(chunks);
}
