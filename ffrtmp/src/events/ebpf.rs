//! The eBPF event source: loads the committed `ffrtmp-ebpf` object, attaches
//! its exec and exit raw tracepoints, and reads [`Event`]s from its ring
//! buffer under tokio.
//!
//! The kernel does the filtering: only execs whose comm is a target, and only
//! the final exit of processes user space has [`govern`](EbpfSource::govern)ed,
//! ever reach the ring buffer (see `ffrtmp-ebpf/src/main.rs`). Ring-buffer
//! overflow is counted per CPU ([`EbpfSource::drops`]); a rising count means
//! events were lost and the caller must reconcile.
//!
//! The object is built by `cargo xtask build-ebpf` (pinned nightly +
//! bpf-linker) and committed next to this file, so building ffrtmp needs only
//! stable Rust; `cargo xtask build-ebpf --check` proves it matches its source.

use std::collections::HashSet;
use std::time::Instant;

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::{ProgramError, RawTracePoint};
use aya::{Ebpf, EbpfLoader};
pub use ffrtmp_common::{ARGV0_LEN, Event};
use ffrtmp_common::{CommKey, Offsets, errors, limits, names};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::btf::{self, BtfError};

/// The object `cargo xtask build-ebpf` writes (path: `xtask/src/ebpf.rs`).
static OBJECT: &[u8] = aya::include_bytes_aligned!("ffrtmp-ebpf.bpf.o");

/// A sensible ring size: 256 KiB holds ~4,600 events.
pub const DEFAULT_RING_BYTES: u32 = 256 * 1024;
/// The kernel caps a BPF ring buffer below 4 GiB; 1 GiB is plenty.
const MAX_RING_BYTES: u32 = 1 << 30;

/// The raw tracepoints the two programs attach to.
const ATTACH: [(&str, &str); 2] = [
    // Exit first: once exec events flow, exits of governed pids must too.
    (names::PROG_EXIT, "sched_process_exit"),
    (names::PROG_EXEC, "sched_process_exec"),
];

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("finding kernel struct offsets: {0}")]
    Offsets(#[from] BtfError),
    #[error("the eBPF source needs a Tokio runtime with IO enabled")]
    NoRuntime,
    #[error("ring buffer size {0} bytes: must be at most {MAX_RING_BYTES}")]
    RingSize(u32),
    #[error("{count} distinct target names, the kernel filter holds at most {max}")]
    TooManyTargets { count: usize, max: u32 },
    #[error("loading the embedded eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the embedded eBPF object has no {kind} {name}")]
    Missing { kind: &'static str, name: &'static str },
    #[error("eBPF map {map}: {what}: {source}")]
    Map {
        map: &'static str,
        what: String,
        #[source]
        source: MapError,
    },
    #[error("eBPF program {program}: {what}: {source}")]
    Program {
        program: &'static str,
        what: String,
        #[source]
        source: ProgramError,
    },
    #[error("polling the eBPF ring buffer: {0}")]
    Poll(#[source] std::io::Error),
}

fn map_err(map: &'static str, what: impl Into<String>) -> impl FnOnce(MapError) -> EbpfError {
    let what = what.into();
    move |source| EbpfError::Map { map, what, source }
}

/// Why the programs gave events up, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelErrors {
    /// Events skipped because `OFFSETS` was not set (never, after [`EbpfSource::load`]).
    pub no_offsets: u64,
    /// Kernel field reads that failed.
    pub read_failed: u64,
}

/// The loaded and attached programs, their maps, and the ring buffer reader.
/// Dropping it detaches the programs and frees the maps.
pub struct EbpfSource {
    // Boxed: the aya handles add up to ~850 bytes, and callers keep the
    // source in an enum next to much smaller backends.
    inner: Box<Inner>,
}

struct Inner {
    // Owns the programs and their links. Declared first so it drops first:
    // the programs are detached before the map fds below are closed.
    _ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    targets: HashMap<MapData, CommKey, u8>,
    governed: HashMap<MapData, u32, u8>,
    drops: PerCpuArray<MapData, u64>,
    errors: PerCpuArray<MapData, u64>,
    decode_errors: u64,
    ring_bytes: u32,
}

impl std::fmt::Debug for EbpfSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfSource")
            .field("ring_bytes", &self.inner.ring_bytes)
            .field("decode_errors", &self.inner.decode_errors)
            .finish_non_exhaustive()
    }
}

impl EbpfSource {
    /// Loads the programs, writes the kernel offsets from BTF, fills the
    /// target filter with `targets` (each cut to the kernel's 15-byte comm)
    /// and attaches both raw tracepoints (no tracefs needed).
    ///
    /// `ring_bytes` is rounded up to a power-of-two number of pages, as the
    /// kernel requires. Must be called inside a Tokio runtime with IO enabled.
    pub fn load(targets: &[&str], ring_bytes: u32) -> Result<EbpfSource, EbpfError> {
        let started = Instant::now();
        let offsets = btf::kernel_offsets()?;
        let source = EbpfSource::load_with(targets, ring_bytes, Some(offsets))?;
        tracing::info!(
            "eBPF: exec/exit raw tracepoints loaded and attached in {:.1} ms (ring buffer {} KiB, {} target(s))",
            started.elapsed().as_secs_f64() * 1e3,
            source.inner.ring_bytes / 1024,
            targets.len()
        );
        Ok(source)
    }

    /// [`load`](Self::load) with explicit offsets; `None` leaves `OFFSETS`
    /// unset, which makes the programs fail closed (tests use it).
    /// [`load`](Self::load) with explicit offsets; `None` leaves the kernel
    /// programs without them (they then emit nothing). For tests.
    #[doc(hidden)]
    pub fn load_with(targets: &[&str], ring_bytes: u32, offsets: Option<Offsets>) -> Result<EbpfSource, EbpfError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EbpfError::NoRuntime);
        }
        let ring_bytes = ring_size(ring_bytes, page_size())?;
        // The object has no BTF relocations (tested below), so the loader
        // never reads the kernel's BTF: the workspace's aya is patched to
        // parse it only for objects that do (vendor/aya/PATCHED.md). Stock
        // aya 0.14 parsed all of it in `EbpfLoader::new()`, ~17 MiB of heap
        // at once, the daemon's whole peak (docs/BENCHMARKS.md).
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::EVENTS, ring_bytes)
            .load(OBJECT)
            .map_err(EbpfError::Load)?;
        let take =
            |ebpf: &mut Ebpf, name: &'static str| ebpf.take_map(name).ok_or(EbpfError::Missing { kind: "map", name });

        // Every map stays open until the programs are loaded below: their
        // relocated instructions name the maps by fd.
        let mut offsets_map: Array<MapData, Offsets> =
            Array::try_from(take(&mut ebpf, names::OFFSETS)?).map_err(map_err(names::OFFSETS, "opening"))?;
        if let Some(offsets) = offsets {
            offsets_map
                .set(0, offsets, 0)
                .map_err(map_err(names::OFFSETS, format!("writing {offsets:?}")))?;
        }
        let targets_map =
            HashMap::try_from(take(&mut ebpf, names::TARGETS)?).map_err(map_err(names::TARGETS, "opening"))?;
        let governed =
            HashMap::try_from(take(&mut ebpf, names::GOVERNED)?).map_err(map_err(names::GOVERNED, "opening"))?;
        let drops = PerCpuArray::try_from(take(&mut ebpf, names::DROPS)?).map_err(map_err(names::DROPS, "opening"))?;
        let errors =
            PerCpuArray::try_from(take(&mut ebpf, names::ERRORS)?).map_err(map_err(names::ERRORS, "opening"))?;
        let ring = RingBuf::try_from(take(&mut ebpf, names::EVENTS)?).map_err(map_err(names::EVENTS, "opening"))?;
        // SAFETY: the RingBuf owns its map's fd (MapData holds an OwnedFd)
        // until it is dropped with the AsyncFd, and its as_raw_fd() always
        // returns that fd; the inner value is never swapped out.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| EbpfError::Poll(e.into_parts().1))?;

        let mut source = EbpfSource {
            inner: Box::new(Inner {
                _ebpf: ebpf,
                ring,
                targets: targets_map,
                governed,
                drops,
                errors,
                decode_errors: 0,
                ring_bytes,
            }),
        };
        source.set_targets(targets)?;
        for (program, tracepoint) in ATTACH {
            let prog: &mut RawTracePoint = source
                .inner
                ._ebpf
                .program_mut(program)
                .ok_or(EbpfError::Missing {
                    kind: "program",
                    name: program,
                })?
                .try_into()
                .map_err(|source| EbpfError::Program {
                    program,
                    what: "not a raw tracepoint".into(),
                    source,
                })?;
            prog.load().map_err(|source| EbpfError::Program {
                program,
                what: "loading into the kernel".into(),
                source,
            })?;
            prog.attach(tracepoint).map_err(|source| EbpfError::Program {
                program,
                what: format!("attaching to raw tracepoint {tracepoint}"),
                source,
            })?;
        }
        Ok(source)
    }

    /// Replaces the kernel's target filter with `targets` (each cut to 15
    /// bytes, as the kernel cuts comm; empty names are ignored).
    pub fn set_targets(&mut self, targets: &[&str]) -> Result<(), EbpfError> {
        let wanted: HashSet<CommKey> = targets
            .iter()
            .map(|n| CommKey::new(n.as_bytes()))
            .filter(|k| !k.name().is_empty())
            .collect();
        if wanted.len() > limits::MAX_TARGETS as usize {
            return Err(EbpfError::TooManyTargets {
                count: wanted.len(),
                max: limits::MAX_TARGETS,
            });
        }
        let present: Vec<CommKey> = self
            .inner
            .targets
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(names::TARGETS, "listing keys"))?;
        for key in present.iter().filter(|k| !wanted.contains(k)) {
            match self.inner.targets.remove(key) {
                Ok(()) => {}
                Err(e) if is_enoent(&e) => {}
                Err(e) => return Err(map_err(names::TARGETS, format!("removing {key:?}"))(e)),
            }
        }
        for key in wanted.iter().filter(|k| !present.contains(k)) {
            self.inner
                .targets
                .insert(key, 1, 0)
                .map_err(map_err(names::TARGETS, format!("inserting {key:?}")))?;
        }
        Ok(())
    }

    /// Asks for the EXIT event of process `pid` (a tgid): the kernel reports
    /// it once, when the last thread exits, and then forgets the pid itself.
    pub fn govern(&mut self, pid: u32) -> Result<(), EbpfError> {
        self.inner
            .governed
            .insert(pid, 1, 0)
            .map_err(map_err(names::GOVERNED, format!("inserting pid {pid}")))
    }

    /// Stops watching `pid`'s exit. Not an error if the kernel already
    /// reported (and removed) it.
    pub fn forget(&mut self, pid: u32) -> Result<(), EbpfError> {
        match self.inner.governed.remove(&pid) {
            Ok(()) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            Err(e) => Err(map_err(names::GOVERNED, format!("removing pid {pid}"))(e)),
        }
    }

    /// Whether `pid` is still waiting for its EXIT event.
    pub fn is_governed(&self, pid: u32) -> Result<bool, EbpfError> {
        match self.inner.governed.get(&pid, 0) {
            Ok(_) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(map_err(names::GOVERNED, format!("looking up pid {pid}"))(e)),
        }
    }

    /// Events lost because the ring buffer was full, summed over CPUs, since
    /// load. 0 if the counter cannot be read (logged; it never fails in
    /// practice: it is a lookup in an array map this process owns).
    pub fn drops(&self) -> u64 {
        match sum_per_cpu(&self.inner.drops, names::DROPS, 0) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("eBPF: reading the drop counter: {e}");
                0
            }
        }
    }

    /// Events the programs gave up for other reasons (see [`KernelErrors`]).
    pub fn kernel_errors(&self) -> Result<KernelErrors, EbpfError> {
        Ok(KernelErrors {
            no_offsets: sum_per_cpu(&self.inner.errors, names::ERRORS, errors::NO_OFFSETS)?,
            read_failed: sum_per_cpu(&self.inner.errors, names::ERRORS, errors::READ_FAILED)?,
        })
    }

    /// Ring-buffer records that did not decode (an object/loader mismatch).
    pub fn decode_errors(&self) -> u64 {
        self.inner.decode_errors
    }

    /// The ring buffer's size after rounding.
    pub fn ring_bytes(&self) -> u32 {
        self.inner.ring_bytes
    }

    /// Waits until events are available, then appends up to `max` of them
    /// to `out` and returns how many records it consumed (≥ 1 unless `max`
    /// is 0). Bounded so one busy source cannot starve the caller's loop:
    /// if more remain, the next call returns at once.
    pub async fn next(&mut self, out: &mut Vec<Event>, max: usize) -> Result<usize, EbpfError> {
        if max == 0 {
            return Ok(0);
        }
        loop {
            let mut guard = self.inner.ring.readable_mut().await.map_err(EbpfError::Poll)?;
            let ring = guard.get_inner_mut();
            let mut taken = 0;
            while taken < max {
                let Some(item) = ring.next() else {
                    // Drained: wait for the next wake-up. clear_ready() is a
                    // no-op if new readiness arrived since readable_mut().
                    guard.clear_ready();
                    break;
                };
                taken += 1;
                match Event::from_bytes(&item) {
                    Ok(event) => out.push(event),
                    Err(e) => {
                        self.inner.decode_errors += 1;
                        tracing::warn!("eBPF: dropping a ring buffer record: {e}");
                    }
                }
            }
            if taken > 0 {
                return Ok(taken);
            }
        }
    }
}

fn sum_per_cpu(map: &PerCpuArray<MapData, u64>, name: &'static str, index: u32) -> Result<u64, EbpfError> {
    let values = map
        .get(&index, 0)
        .map_err(map_err(name, format!("reading index {index}")))?;
    Ok(values.iter().fold(0u64, |sum, v| sum.saturating_add(*v)))
}

fn is_enoent(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

fn page_size() -> u32 {
    u32::try_from(rustix::param::page_size()).unwrap_or(4096)
}

/// The kernel wants a power-of-two multiple of the page size.
fn ring_size(bytes: u32, page: u32) -> Result<u32, EbpfError> {
    if bytes > MAX_RING_BYTES {
        return Err(EbpfError::RingSize(bytes));
    }
    let pages = bytes.div_ceil(page).max(1).next_power_of_two();
    Ok(pages * page)
}

#[cfg(test)]
mod tests {
    //! Unprivileged tests; the privileged ones (real kernel, root, BPF) are
    //! in the `tests` crate: tests/tests/ebpf.rs.

    use super::*;

    #[test]
    fn ring_size_rounds_to_a_power_of_two_of_pages() {
        assert_eq!(ring_size(0, 4096).unwrap(), 4096);
        assert_eq!(ring_size(1, 4096).unwrap(), 4096);
        assert_eq!(ring_size(4096, 4096).unwrap(), 4096);
        assert_eq!(ring_size(4097, 4096).unwrap(), 8192);
        assert_eq!(ring_size(3 * 4096, 4096).unwrap(), 4 * 4096);
        assert_eq!(ring_size(MAX_RING_BYTES, 4096).unwrap(), MAX_RING_BYTES);
        assert!(ring_size(MAX_RING_BYTES + 1, 4096).is_err());
    }

    /// The loader parses the kernel's BTF (peak memory several times its
    /// 5-6 MB) only for an object with BTF relocations; this one has no BTF
    /// sections at all. If a rebuilt object gains them (CO-RE), loading
    /// still works, but the daemon's peak memory goes back up: measure it.
    #[test]
    fn object_has_no_btf_so_the_loader_skips_the_kernel_btf() {
        assert!(
            !OBJECT.windows(4).any(|w| w == b".BTF"),
            "the eBPF object has .BTF/.BTF.ext sections now"
        );
    }

    #[test]
    fn load_outside_a_runtime_is_an_error_not_a_panic() {
        assert!(matches!(
            EbpfSource::load_with(&[], 4096, None),
            Err(EbpfError::NoRuntime)
        ));
    }
}
