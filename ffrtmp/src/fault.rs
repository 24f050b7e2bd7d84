//! Fault-injection points for the crash-consistency tests.
//!
//! With the cargo feature `fault-injection` (the `tests` package turns it
//! on, so the workspace's debug build has it; `packaging/build-deb` builds
//! `-p ffrtmp` alone, so released binaries do not), the environment
//! variable `FFRTMP_FAULT=crash-after-move:N` makes the process kill itself
//! with SIGKILL — no destructor, no flush, exactly like `kill -9` — right
//! after it has written a process into the N-th hierarchy of a job. Without
//! the feature every point compiles to nothing.

/// A place where the process can be made to crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// A process was written into the `cgroup.procs` of the N-th (1-based)
    /// hierarchy of a job; on cgroup v1 more may follow.
    AfterMoveInto(usize),
    /// `ffrtmp top` has drawn its first frame on the terminal: it panics.
    TopDrawn,
}

#[cfg(feature = "fault-injection")]
pub fn point(at: Point) {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<Point>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var("FFRTMP_FAULT").ok()?;
        if spec == "panic-in-top" {
            return Some(Point::TopDrawn);
        }
        let n = spec.strip_prefix("crash-after-move:")?.parse().ok()?;
        Some(Point::AfterMoveInto(n))
    });
    match *armed {
        Some(Point::TopDrawn) if at == Point::TopDrawn => panic!("FFRTMP_FAULT=panic-in-top"),
        Some(armed) if armed == at => {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        _ => {}
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_at: Point) {}
