//! The open-file limit (`RLIMIT_NOFILE`) of `ffrtmp watch`: the daemon holds
//! a pidfd for every governed process, plus a few descriptors per adoption
//! in flight, so the usual soft limit of 1024 caps how many it can govern.
//! The soft limit is raised to the hard limit at start (the hard limit is
//! the administrator's: systemd's `LimitNOFILE=`). The daemon waits with
//! epoll, never select(2), so descriptors above 1024 are safe for it.

use std::io;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Where the kernel caps `RLIMIT_NOFILE` when the hard limit says unlimited:
/// `setrlimit` refuses more than `fs.nr_open` (`fs/file.c`, `sysctl_nr_open`).
const NR_OPEN: &str = "/proc/sys/fs/nr_open";
/// `fs.nr_open`'s default (`include/linux/fs.h`, `INR_OPEN_MAX` 1024 × 1024).
const DEFAULT_NR_OPEN: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("raising the open-file limit (RLIMIT_NOFILE) from {old} to {new}: {source}")]
pub struct RaiseError {
    pub old: u64,
    pub new: u64,
    #[source]
    pub source: io::Error,
}

/// Raise this process's soft open-file limit to its hard limit; returns the
/// soft limit before and after (equal when it already was at the hard
/// limit). Unlimited is `u64::MAX`.
pub fn raise_nofile() -> Result<(u64, u64), RaiseError> {
    let limit = getrlimit(Resource::Nofile);
    let old = limit.current.unwrap_or(u64::MAX);
    let Some(new) = raised_soft_limit(limit, nr_open) else {
        return Ok((old, old));
    };
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(new),
            maximum: limit.maximum,
        },
    )
    .map_err(|e| RaiseError {
        old,
        new,
        source: e.into(),
    })?;
    Ok((old, new))
}

/// The soft limit to set, or `None` when it already is as high as allowed.
/// An unlimited hard limit means `fs.nr_open` (read only when needed).
fn raised_soft_limit(limit: Rlimit, nr_open: impl FnOnce() -> u64) -> Option<u64> {
    let soft = limit.current?;
    let ceiling = limit.maximum.unwrap_or_else(nr_open);
    (soft < ceiling).then_some(ceiling)
}

fn nr_open() -> u64 {
    std::fs::read_to_string(NR_OPEN)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_NR_OPEN)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Set for the copy of the test binary that `raises_the_soft_limit_…`
    /// starts with a lowered soft limit.
    const CHILD: &str = "FFRTMP_TEST_RAISE_NOFILE_CHILD";

    fn rlimit(current: Option<u64>, maximum: Option<u64>) -> Rlimit {
        Rlimit { current, maximum }
    }

    #[test]
    fn the_soft_limit_goes_to_the_hard_one_or_nr_open() {
        let never = || panic!("fs.nr_open read although the hard limit is finite");
        assert_eq!(
            raised_soft_limit(rlimit(Some(1024), Some(524_288)), never),
            Some(524_288)
        );
        assert_eq!(raised_soft_limit(rlimit(Some(524_288), Some(524_288)), never), None);
        assert_eq!(raised_soft_limit(rlimit(None, None), never), None);
        assert_eq!(
            raised_soft_limit(rlimit(Some(1024), None), || 1_048_576),
            Some(1_048_576)
        );
        assert_eq!(raised_soft_limit(rlimit(Some(1_048_576), None), || 1_048_576), None);
    }

    /// In a child whose soft limit `sh` lowered to 64 (`ulimit -S -n 64`:
    /// the hard limit stays), `raise_nofile` puts the soft limit at the hard
    /// one. A child, because the limit is per process and the other tests
    /// run on threads of this one.
    #[test]
    fn raises_the_soft_limit_to_the_hard_one_in_a_child() {
        let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
        assert!(hard > 64, "the hard limit {hard} leaves nothing to raise");
        let exe = std::env::current_exe().expect("the test binary's path");
        let out = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -S -n 64 && exec "$0" --exact process::rlimit::tests::child_raises_its_limit --nocapture --test-threads=1"#)
            .arg(&exe)
            .env(CHILD, "1")
            .output()
            .expect("running sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        let expected = match getrlimit(Resource::Nofile).maximum {
            Some(hard) => hard,
            None => nr_open(),
        };
        // libtest prints the test's name in front of its output, on the same line.
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("raise_nofile: ").map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("the child ran the test: {stdout}"));
        assert_eq!(
            line,
            format!("returned 64 -> {expected}, soft limit now {expected}, hard {hard}")
        );
    }

    /// The child's half of the test above; does nothing in a normal run.
    #[test]
    fn child_raises_its_limit() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        assert_eq!(
            getrlimit(Resource::Nofile).current,
            Some(64),
            "sh lowered the soft limit"
        );
        let (old, new) = raise_nofile().expect("raising to the hard limit needs no privilege");
        let after = getrlimit(Resource::Nofile);
        println!(
            "raise_nofile: returned {old} -> {new}, soft limit now {}, hard {}",
            after.current.unwrap_or(u64::MAX),
            after.maximum.unwrap_or(u64::MAX)
        );
    }
}
