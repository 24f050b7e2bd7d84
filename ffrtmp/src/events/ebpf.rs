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
pub use ffrtmp_common::Event;
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
    fn load_with(targets: &[&str], ring_bytes: u32, offsets: Option<Offsets>) -> Result<EbpfSource, EbpfError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EbpfError::NoRuntime);
        }
        let ring_bytes = ring_size(ring_bytes, page_size())?;
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
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
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
    //! Privileged tests against the real kernel (root, BTF, BPF). They skip
    //! with `skipping: <reason>` when that is missing, and fail under CI=true.
    //! Each test uses its own target name so tests running in parallel never
    //! see each other's processes.

    use super::*;
    use std::io::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);
    /// How long "nothing more arrives" is watched for.
    const QUIET: Duration = Duration::from_millis(300);
    /// Env var that turns the `probe_helper` test into a workload.
    const PROBE_ENV: &str = "FFRTMP_EBPF_PROBE";

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

    #[test]
    fn load_outside_a_runtime_is_an_error_not_a_panic() {
        assert!(matches!(
            EbpfSource::load_with(&[], 4096, None),
            Err(EbpfError::NoRuntime)
        ));
    }

    /// `skipping: <reason>` and `false`, or a panic under CI=true.
    fn privileged() -> bool {
        // SAFETY: geteuid has no preconditions.
        let reason = if unsafe { libc::geteuid() } != 0 {
            "not root: loading eBPF programs needs CAP_BPF and CAP_PERFMON"
        } else if !Path::new(btf::VMLINUX_BTF).exists() {
            "no kernel BTF at /sys/kernel/btf/vmlinux"
        } else {
            return true;
        };
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and a privileged test cannot run: {reason}");
        }
        let _ = writeln!(std::io::stderr(), "skipping: {reason}");
        false
    }

    /// A copy of `from` at `dir/name` (exec'ing it gives comm `name`).
    fn probe(dir: &Path, name: &str, from: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("creating the probe dir");
        let to = dir.join(name);
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
        to
    }

    /// Reads events until one satisfies `found`; returns it and everything read.
    async fn wait_for(source: &mut EbpfSource, what: &str, found: impl Fn(&Event) -> bool) -> (Event, Vec<Event>) {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let from = seen.len();
            match tokio::time::timeout_at(deadline, source.next(&mut seen, 64)).await {
                Ok(r) => {
                    r.expect("reading the ring buffer");
                }
                Err(_) => panic!("no {what} within {WAIT:?}; saw {seen:?}"),
            }
            if let Some(e) = seen[from..].iter().find(|e| found(e)) {
                return (*e, seen);
            }
        }
    }

    /// Everything that arrives within [`QUIET`].
    async fn collect_quiet(source: &mut EbpfSource) -> Vec<Event> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + QUIET;
        while let Ok(r) = tokio::time::timeout_at(deadline, source.next(&mut seen, 1024)).await {
            r.expect("reading the ring buffer");
        }
        seen
    }

    /// `/proc/<pid>/stat` field 22 (starttime, clock ticks since boot).
    fn proc_start_ticks(pid: u32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/<pid>/stat");
        // comm may hold spaces and ')': the fields resume after the last ')'.
        let rest = &stat[stat.rfind(')').expect("')' in stat") + 1..];
        // rest starts at field 3 (state): field 22 is index 19.
        rest.split_whitespace()
            .nth(19)
            .expect("field 22")
            .parse()
            .expect("numeric starttime")
    }

    fn clk_tck() -> u64 {
        // SAFETY: sysconf has no preconditions.
        u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).expect("_SC_CLK_TCK")
    }

    fn exits_of(events: &[Event], pid: u32) -> Vec<Event> {
        events
            .iter()
            .filter(|e| e.kind == Event::EXIT && e.pid == pid)
            .copied()
            .collect()
    }

    #[tokio::test]
    async fn exec_and_exit_events() {
        if !privileged() {
            return;
        }
        const TARGET: &str = "ffrtmp-probe-x";
        let tmp = tempfile::tempdir().expect("tempdir");
        let sleep = probe(tmp.path(), TARGET, Path::new("/bin/sleep"));
        let sh = probe(&tmp.path().join("sh"), TARGET, Path::new("/bin/sh"));
        let other = probe(tmp.path(), "ffrtmp-probe-y", Path::new("/bin/true"));
        let helper = probe(
            &tmp.path().join("threads"),
            TARGET,
            &std::env::current_exe().expect("the test binary"),
        );

        let started = Instant::now();
        let mut source = EbpfSource::load(&[TARGET], 64 * 1024).expect("loading the eBPF source");
        eprintln!("load + attach: {:?}", started.elapsed());

        // 1. A target exec: pid, tid, ppid, uid, comm, start time.
        let mut child = Command::new(&sleep).arg("30").spawn().expect("spawning the probe");
        let pid = child.id();
        let (exec, _) = wait_for(&mut source, "EXEC of the sleep probe", |e| {
            e.kind == Event::EXEC && e.pid == pid
        })
        .await;
        assert_eq!(exec.comm_name(), TARGET.as_bytes());
        assert_eq!(exec.tid, pid);
        assert_eq!(exec.ppid, std::process::id());
        // SAFETY: getuid has no preconditions.
        assert_eq!(exec.uid, unsafe { libc::getuid() });
        assert_eq!(exec.exit_status, 0);
        assert_eq!(exec.start_time_ticks(clk_tck()), proc_start_ticks(pid), "{exec:?}");
        child.kill().expect("killing the sleep probe");
        child.wait().expect("reaping the sleep probe");

        // 2. Non-target execs, and the exit of a pid nobody governs: nothing.
        let other_pid = {
            let mut c = Command::new(&other).spawn().expect("spawning the non-target");
            let p = c.id();
            c.wait().expect("reaping the non-target");
            p
        };
        Command::new("/bin/true").status().expect("running /bin/true");
        let quiet = collect_quiet(&mut source).await;
        assert!(
            !quiet.iter().any(|e| e.pid == other_pid || e.pid == pid),
            "non-target exec or ungoverned exit reported: {quiet:?}"
        );

        // 3. A governed target exits with status 3: exactly one EXIT.
        let mut shell = Command::new(&sh)
            .args(["-c", "read line; exit 3"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawning the sh probe");
        let pid = shell.id();
        let (exec, _) = wait_for(&mut source, "EXEC of the sh probe", |e| {
            e.kind == Event::EXEC && e.pid == pid
        })
        .await;
        source.govern(pid).expect("govern");
        assert!(source.is_governed(pid).unwrap());
        drop(shell.stdin.take()); // EOF: `read` returns, `exit 3` runs
        let (exit, mut seen) = wait_for(&mut source, "EXIT of the sh probe", |e| {
            e.kind == Event::EXIT && e.pid == pid
        })
        .await;
        seen.extend(collect_quiet(&mut source).await);
        assert_eq!(exits_of(&seen, pid).len(), 1, "{seen:?}");
        assert_eq!(exit.exit_status, 3 << 8, "{exit:?}");
        assert_eq!(exit.tid, pid);
        assert_eq!(exit.start_time_ns, exec.start_time_ns);
        assert_eq!(exit.ppid, std::process::id());
        assert_eq!(exit.comm_name(), TARGET.as_bytes());
        assert_eq!(shell.wait().expect("reaping the sh probe").code(), Some(3));
        assert!(!source.is_governed(pid).unwrap(), "the kernel removes a reported pid");
        source.forget(pid).expect("forgetting an already reported pid is fine");

        // 4. Multi-threaded, the leader exits first: still exactly one EXIT,
        //    from the last thread, with the group's status.
        let mut threads = Command::new(&helper)
            .args([
                "--exact",
                "events::ebpf::tests::probe_helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PROBE_ENV, "leader-exits-first")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawning the threaded probe");
        let pid = threads.id();
        wait_for(&mut source, "EXEC of the threaded probe", |e| {
            e.kind == Event::EXEC && e.pid == pid
        })
        .await;
        source.govern(pid).expect("govern");
        drop(threads.stdin.take());
        let (exit, mut seen) = wait_for(&mut source, "EXIT of the threaded probe", |e| {
            e.kind == Event::EXIT && e.pid == pid
        })
        .await;
        seen.extend(collect_quiet(&mut source).await);
        assert_eq!(exits_of(&seen, pid).len(), 1, "{seen:?}");
        assert_ne!(exit.tid, pid, "the last thread is not the leader: {exit:?}");
        assert_eq!(exit.exit_status, 5 << 8, "{exit:?}");
        assert_eq!(threads.wait().expect("reaping the threaded probe").code(), Some(5));

        assert_eq!(source.drops(), 0);
        assert_eq!(source.kernel_errors().unwrap(), KernelErrors::default());
        assert_eq!(source.decode_errors(), 0);
    }

    /// The workload of step 4 above, when run with [`PROBE_ENV`] set (a no-op
    /// test otherwise): waits for EOF on stdin, makes the thread group leader
    /// exit alone (`SYS_exit` from a signal handler on the leader), then
    /// exits the group with status 5 from another thread.
    #[test]
    fn probe_helper() {
        if std::env::var(PROBE_ENV).as_deref() != Ok("leader-exits-first") {
            return;
        }
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        extern "C" fn leader_exit(_: libc::c_int) {
            // SAFETY: exits only the calling thread (the leader); async-signal-safe.
            unsafe { libc::syscall(libc::SYS_exit, 0) };
        }
        let last = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: exit_group(5): ends the process, which is the point.
            unsafe { libc::_exit(5) }
        });
        // SAFETY: installs a handler and signals the leader thread (tid == pid).
        unsafe {
            let handler: extern "C" fn(libc::c_int) = leader_exit;
            libc::signal(libc::SIGUSR1, handler as libc::sighandler_t);
            let pid = libc::getpid();
            libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGUSR1);
        }
        let _ = last.join();
    }

    #[tokio::test]
    async fn a_full_ring_counts_drops() {
        if !privileged() {
            return;
        }
        const TARGET: &str = "ffrtmp-probe-d";
        const EXECS: u64 = 200;
        let tmp = tempfile::tempdir().expect("tempdir");
        let exe = probe(tmp.path(), TARGET, Path::new("/bin/true"));
        let mut source = EbpfSource::load(&[TARGET], 4096).expect("loading the eBPF source");
        assert_eq!(source.ring_bytes(), 4096.max(page_size()));
        for _ in 0..EXECS {
            Command::new(&exe).status().expect("running the probe");
        }
        let drops = source.drops();
        let received = collect_quiet(&mut source).await;
        let ours = received.iter().filter(|e| e.comm_name() == TARGET.as_bytes()).count() as u64;
        eprintln!(
            "{EXECS} execs into a {} byte ring: {ours} received, {drops} dropped",
            source.ring_bytes()
        );
        assert!(drops > 0, "a 4 KiB ring cannot hold {EXECS} events");
        assert_eq!(ours + drops, EXECS, "every exec is either delivered or counted");
        assert_eq!(source.kernel_errors().unwrap(), KernelErrors::default());
    }

    #[tokio::test]
    async fn without_offsets_nothing_is_emitted_and_it_is_counted() {
        if !privileged() {
            return;
        }
        const TARGET: &str = "ffrtmp-probe-n";
        let tmp = tempfile::tempdir().expect("tempdir");
        let exe = probe(tmp.path(), TARGET, Path::new("/bin/true"));
        let mut source = EbpfSource::load_with(&[TARGET], 4096, None).expect("loading the eBPF source");
        Command::new(&exe).status().expect("running the probe");
        let received = collect_quiet(&mut source).await;
        assert!(received.is_empty(), "{received:?}");
        assert!(source.kernel_errors().unwrap().no_offsets >= 1);
    }

    #[tokio::test]
    async fn set_targets_replaces_the_filter() {
        if !privileged() {
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = probe(tmp.path(), "ffrtmp-probe-a", Path::new("/bin/true"));
        let b = probe(tmp.path(), "ffrtmp-probe-b", Path::new("/bin/true"));
        let mut source = EbpfSource::load(&["ffrtmp-probe-a"], 4096).expect("loading the eBPF source");
        source
            .set_targets(&["ffrtmp-probe-b", "ffrtmp-probe-b-but-longer-than-15"])
            .expect("set_targets");
        Command::new(&a).status().expect("running probe a");
        Command::new(&b).status().expect("running probe b");
        let received = collect_quiet(&mut source).await;
        let names: Vec<&[u8]> = received.iter().map(|e| e.comm_name()).collect();
        assert_eq!(names, [b"ffrtmp-probe-b".as_slice()], "{received:?}");
    }
}
