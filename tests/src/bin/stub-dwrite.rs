//! Test stub: direct (O_DIRECT) writes, timed.
//!
//! `stub-dwrite PATH BYTES [BLOCK]` writes BYTES (a multiple of BLOCK,
//! default 64 KiB) of zeros to PATH (an existing block device, or a file it
//! creates) with `O_DIRECT` from a page-aligned buffer, block by block from
//! offset 0, and prints `bytes=<n> secs=<s> bps=<bytes per second>`. Direct
//! IO bypasses the page cache, so every write is a bio that the block
//! layer's throttling (cgroup `io.max`) sees at once.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::Instant;

const ALIGN: usize = 4096;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: stub-dwrite PATH BYTES [BLOCK]");
        std::process::exit(2);
    }
    let path = &args[1];
    let bytes: u64 = args[2].parse().expect("BYTES: a number");
    let block: usize = args.get(3).map_or(64 << 10, |b| b.parse().expect("BLOCK: a number"));
    assert!(
        block > 0 && block.is_multiple_of(ALIGN) && bytes.is_multiple_of(block as u64),
        "BLOCK must be a multiple of {ALIGN} and divide BYTES"
    );
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {path} with O_DIRECT: {e}"));
    let layout = Layout::from_size_align(block, ALIGN).expect("a valid layout");
    // SAFETY: the layout has a non-zero size; freed below with the same layout.
    let buf = unsafe { alloc_zeroed(layout) };
    assert!(!buf.is_null(), "out of memory");
    // SAFETY: `buf` points to `block` initialised (zeroed) bytes we own.
    let data = unsafe { std::slice::from_raw_parts(buf, block) };
    let start = Instant::now();
    let mut offset = 0u64;
    while offset < bytes {
        file.write_all_at(data, offset)
            .unwrap_or_else(|e| panic!("O_DIRECT write at {offset} of {path}: {e}"));
        offset += block as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    // SAFETY: allocated above with this layout, not used after this.
    unsafe { dealloc(buf, layout) };
    println!("bytes={bytes} secs={secs:.3} bps={:.0}", bytes as f64 / secs);
}
