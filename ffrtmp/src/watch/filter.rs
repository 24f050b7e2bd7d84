//! The process filters of `ffrtmp watch`: users, uids, parents, working
//! directories and age. A process is adopted only when it passes every
//! filter set of its command (the global one and the command's own).
//!
//! The old tool's semantics, with its defects fixed: the uid is the real
//! uid, user names come from the system's name service (not `/etc/passwd`
//! parsing), and `prefix` dir matching is by path component. `min_runtime`
//! is not checked here: the daemon delays adoption by it.
//!
//! [`check`] may call into NSS (`getpwuid_r`), so it runs on a blocking
//! thread.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::rules::{DirMatch, Filters, ParentMatch};
use crate::process::identity::{ProcError, ProcessInfo, boot_time_now, clock_ticks, read_status};

/// What the filters look at, read once per candidate process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFacts {
    pub pid: u32,
    /// The real uid (`/proc/<pid>/status`).
    pub uid: u32,
    pub ppid: u32,
    /// The working directory; `None` when it cannot be read.
    pub cwd: Option<PathBuf>,
    /// How long the process has run.
    pub age: Duration,
}

impl ProcessFacts {
    /// Read the facts of the process `info` describes.
    pub fn read(info: &ProcessInfo) -> Result<ProcessFacts, ProcError> {
        let pid = info.id.pid;
        let (uid, _rss) = read_status(pid)?;
        // Unreadable (gone, or no ptrace access) is an answer the dir
        // filters handle: `None`.
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        let started = info.id.start_time as f64 / clock_ticks() as f64;
        let age = Duration::from_secs_f64((boot_time_now() - started).max(0.0));
        Ok(ProcessFacts {
            pid,
            uid,
            ppid: info.ppid,
            cwd,
            age,
        })
    }
}

/// What [`check`] asks the system, so tests can answer instead.
pub trait FilterEnv {
    /// The user name of `uid` from the name service, if it has one.
    fn user_name(&self, uid: u32) -> Option<String>;
    /// The parent pid of `pid`, if it still runs.
    fn parent_of(&self, pid: u32) -> Option<u32>;
}

/// The real system: NSS for names, `/proc/<pid>/stat` for parents.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemEnv;

impl FilterEnv for SystemEnv {
    fn user_name(&self, uid: u32) -> Option<String> {
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(user) => user.map(|u| u.name),
            Err(e) => {
                tracing::warn!("looking up the user name of uid {uid}: {e}; treating it as a uid without a name");
                None
            }
        }
    }

    fn parent_of(&self, pid: u32) -> Option<u32> {
        ProcessInfo::read(pid).ok().map(|info| info.ppid)
    }
}

/// Why a process was not adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The filter key that rejected it, e.g. `blocked_users`.
    pub filter: &'static str,
    pub detail: String,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.filter, self.detail)
    }
}

impl std::error::Error for Rejected {}

/// Pass `facts` through every filter set; the first rejection is returned.
pub fn check<'a>(
    filters: impl IntoIterator<Item = &'a Filters>,
    facts: &ProcessFacts,
    env: &dyn FilterEnv,
) -> Result<(), Rejected> {
    let mut lookups = Lookups {
        facts,
        env,
        user_name: None,
        ancestors: None,
    };
    for set in filters {
        check_one(set, &mut lookups)?;
    }
    Ok(())
}

/// The facts that cost a lookup, fetched once and only when a filter needs them.
struct Lookups<'a> {
    facts: &'a ProcessFacts,
    env: &'a dyn FilterEnv,
    user_name: Option<Option<String>>,
    ancestors: Option<Vec<u32>>,
}

/// A chain longer than this is a loop in the answers, not a process tree.
const MAX_ANCESTORS: usize = 4096;

impl Lookups<'_> {
    fn user_name(&mut self) -> Option<&str> {
        let (env, uid) = (self.env, self.facts.uid);
        self.user_name.get_or_insert_with(|| env.user_name(uid)).as_deref()
    }

    /// The parent pids `mode` compares: the parent alone, or the parent and
    /// its ancestors up to pid 1 (walked once, on first use).
    fn parents(&mut self, mode: ParentMatch) -> Vec<u32> {
        let ppid = self.facts.ppid;
        match mode {
            ParentMatch::Immediate => [ppid].into_iter().filter(|&p| p != 0).collect(),
            ParentMatch::Ancestor => {
                let env = self.env;
                self.ancestors.get_or_insert_with(|| ancestors(ppid, env)).clone()
            }
        }
    }
}

/// `ppid`, its parent, … up to and including pid 1 (0 means no parent).
fn ancestors(ppid: u32, env: &dyn FilterEnv) -> Vec<u32> {
    let mut chain = Vec::new();
    let mut pid = ppid;
    while pid != 0 && chain.len() < MAX_ANCESTORS {
        chain.push(pid);
        if pid == 1 {
            break;
        }
        match env.parent_of(pid) {
            Some(parent) => pid = parent,
            None => break,
        }
    }
    chain
}

fn check_one(f: &Filters, l: &mut Lookups<'_>) -> Result<(), Rejected> {
    let reject = |filter, detail: String| Err(Rejected { filter, detail });
    let facts = l.facts;
    let uid = facts.uid;

    if !f.allowed_uids.is_empty() && !f.allowed_uids.contains(&uid) {
        return reject("allowed_uids", format!("uid {uid} is not listed"));
    }
    if f.blocked_uids.contains(&uid) {
        return reject("blocked_uids", format!("uid {uid}"));
    }

    if !f.allowed_users.is_empty() || !f.blocked_users.is_empty() {
        let name = l.user_name().map(str::to_owned);
        let listed = |list: &[String]| name.as_ref().is_some_and(|n| list.contains(n));
        if !f.allowed_users.is_empty() && !listed(&f.allowed_users) {
            let detail = match &name {
                Some(n) => format!("user {n:?} (uid {uid}) is not listed"),
                None => format!("uid {uid} has no user name"),
            };
            return reject("allowed_users", detail);
        }
        if let Some(n) = name.as_ref().filter(|_| listed(&f.blocked_users)) {
            return reject("blocked_users", format!("user {n:?} (uid {uid})"));
        }
    }

    if !f.allowed_parents.is_empty() || !f.blocked_parents.is_empty() {
        let what = match f.parent_match {
            ParentMatch::Immediate => "parent",
            ParentMatch::Ancestor => "ancestors",
        };
        let parents = l.parents(f.parent_match);
        if !f.allowed_parents.is_empty() && !parents.iter().any(|p| f.allowed_parents.contains(p)) {
            return reject("allowed_parents", format!("{what} {parents:?} not listed"));
        }
        if let Some(p) = parents.iter().find(|p| f.blocked_parents.contains(p)) {
            return reject("blocked_parents", format!("{what} include pid {p}"));
        }
    }

    if !f.allowed_dirs.is_empty() {
        match &facts.cwd {
            None => return reject("allowed_dirs", "working directory unreadable".into()),
            Some(cwd) if !f.allowed_dirs.iter().any(|d| dir_matches(cwd, d, f.dir_match)) => {
                return reject("allowed_dirs", format!("working directory {} is not listed", cwd.display()));
            }
            Some(_) => {}
        }
    }
    if let Some(cwd) = &facts.cwd
        && let Some(d) = f.blocked_dirs.iter().find(|d| dir_matches(cwd, d, f.dir_match))
    {
        return reject(
            "blocked_dirs",
            format!("working directory {} matches {}", cwd.display(), d.display()),
        );
    }

    if let Some(max) = f.max_runtime
        && facts.age > max
    {
        return reject(
            "max_runtime",
            format!(
                "running for {}, longer than {}",
                humantime::format_duration(Duration::from_secs(facts.age.as_secs())),
                humantime::format_duration(max)
            ),
        );
    }
    Ok(())
}

/// Path comparison is by component: `/tmp` is not a prefix of `/tmpfoo`,
/// and `/tmp/` equals `/tmp`.
fn dir_matches(cwd: &Path, dir: &Path, mode: DirMatch) -> bool {
    match mode {
        DirMatch::Exact => cwd == dir,
        DirMatch::Prefix => cwd.starts_with(dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
}
