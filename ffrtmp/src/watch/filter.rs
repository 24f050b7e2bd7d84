//! The process filters of `ffrtmp watch`: users, uids, parents, working
//! directories and age. A process is adopted only when it passes every
//! filter set of its command (the global one and the command's own).
//!
//! The old tool's semantics, with its defects fixed: the uid is the real
//! uid, user names come from the system's name service (not `/etc/passwd`
//! parsing), and `prefix` dir matching is by path component. `min_runtime`
//! is not checked here: the daemon delays adoption by it.
//!
//! [`check`] may ask the name service (`getent passwd`, see
//! [`super::user_names`]), so it runs on a blocking thread.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::rules::{DirMatch, Filters, ParentMatch};
use crate::process::identity::{ProcError, ProcessInfo, read_status};

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
        let age = info.id.age();
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

/// The real system: the name service for names (through `getent`, kept a
/// minute), `/proc/<pid>/stat` for parents.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemEnv;

impl FilterEnv for SystemEnv {
    fn user_name(&self, uid: u32) -> Option<String> {
        super::user_names::name_of(uid)
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
                return reject(
                    "allowed_dirs",
                    format!("working directory {} is not listed", cwd.display()),
                );
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
    use std::cell::Cell;
    use std::collections::HashMap;

    use super::*;

    /// Names and a process tree made up for the test; counts its lookups.
    #[derive(Default)]
    struct FakeEnv {
        names: HashMap<u32, String>,
        parents: HashMap<u32, u32>,
        name_lookups: Cell<usize>,
        parent_lookups: Cell<usize>,
    }

    impl FilterEnv for FakeEnv {
        fn user_name(&self, uid: u32) -> Option<String> {
            self.name_lookups.set(self.name_lookups.get() + 1);
            self.names.get(&uid).cloned()
        }
        fn parent_of(&self, pid: u32) -> Option<u32> {
            self.parent_lookups.set(self.parent_lookups.get() + 1);
            self.parents.get(&pid).copied()
        }
    }

    /// alice = 1000, bob = 1001, uid 1234 has no name; the tree is
    /// 1 → 100 → 200 → 300 (the process's parent).
    fn env() -> FakeEnv {
        FakeEnv {
            names: HashMap::from([(1000, "alice".into()), (1001, "bob".into())]),
            parents: HashMap::from([(300, 200), (200, 100), (100, 1), (1, 0)]),
            ..FakeEnv::default()
        }
    }

    fn facts() -> ProcessFacts {
        ProcessFacts {
            pid: 400,
            uid: 1000,
            ppid: 300,
            cwd: Some("/srv/media/jobs".into()),
            age: Duration::from_secs(60),
        }
    }

    /// The filter that rejected, or `None` when the process passes.
    fn verdict<'a>(filters: impl IntoIterator<Item = &'a Filters>, facts: &ProcessFacts) -> Option<&'static str> {
        check(filters, facts, &env()).err().map(|r| r.filter)
    }

    fn one(filters: Filters, facts: &ProcessFacts) -> Option<&'static str> {
        verdict([&filters], facts)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_filters_pass_everything() {
        let env = env();
        assert_eq!(check([&Filters::default()], &facts(), &env), Ok(()));
        assert_eq!(check([], &facts(), &env), Ok(()));
        assert_eq!(
            env.name_lookups.get() + env.parent_lookups.get(),
            0,
            "nothing was looked up"
        );
    }

    #[test]
    fn users() {
        let allowed = |list: &[&str]| Filters {
            allowed_users: names(list),
            ..Filters::default()
        };
        let blocked = |list: &[&str]| Filters {
            blocked_users: names(list),
            ..Filters::default()
        };
        let f = facts();
        assert_eq!(one(allowed(&["alice", "bob"]), &f), None);
        assert_eq!(one(allowed(&["bob"]), &f), Some("allowed_users"));
        assert_eq!(one(blocked(&["alice"]), &f), Some("blocked_users"));
        assert_eq!(one(blocked(&["bob"]), &f), None);
        // A uid without a name matches no entry, in either list.
        let nameless = ProcessFacts { uid: 1234, ..facts() };
        assert_eq!(one(allowed(&["alice", "1234"]), &nameless), Some("allowed_users"));
        assert_eq!(one(blocked(&["alice", "1234"]), &nameless), None);

        let e = check([&blocked(&["alice"])], &f, &env()).unwrap_err();
        assert_eq!(e.to_string(), r#"blocked_users: user "alice" (uid 1000)"#);
        let e = check([&allowed(&["bob"])], &nameless, &env()).unwrap_err();
        assert_eq!(e.to_string(), "allowed_users: uid 1234 has no user name");
    }

    #[test]
    fn uids() {
        let f = facts();
        let allowed = |uids: Vec<u32>| Filters {
            allowed_uids: uids,
            ..Filters::default()
        };
        let blocked = |uids: Vec<u32>| Filters {
            blocked_uids: uids,
            ..Filters::default()
        };
        assert_eq!(one(allowed(vec![0, 1000]), &f), None);
        assert_eq!(one(allowed(vec![0]), &f), Some("allowed_uids"));
        assert_eq!(one(blocked(vec![1000]), &f), Some("blocked_uids"));
        assert_eq!(one(blocked(vec![0]), &f), None);
    }

    #[test]
    fn parents_immediate_and_ancestor() {
        let f = facts();
        let set = |allowed: Vec<u32>, blocked: Vec<u32>, parent_match| Filters {
            allowed_parents: allowed,
            blocked_parents: blocked,
            parent_match,
            ..Filters::default()
        };
        use ParentMatch::{Ancestor, Immediate};
        assert_eq!(one(set(vec![300], vec![], Immediate), &f), None);
        assert_eq!(one(set(vec![100], vec![], Immediate), &f), Some("allowed_parents"));
        assert_eq!(one(set(vec![100], vec![], Ancestor), &f), None);
        assert_eq!(one(set(vec![1], vec![], Ancestor), &f), None, "pid 1 is an ancestor");
        assert_eq!(one(set(vec![999], vec![], Ancestor), &f), Some("allowed_parents"));
        assert_eq!(one(set(vec![], vec![300], Immediate), &f), Some("blocked_parents"));
        assert_eq!(one(set(vec![], vec![200], Immediate), &f), None);
        assert_eq!(one(set(vec![], vec![200], Ancestor), &f), Some("blocked_parents"));

        // Immediate never walks the tree; ancestor walks it once for all sets.
        let env = env();
        let sets = [
            set(vec![], vec![7], Immediate),
            set(vec![], vec![8], Ancestor),
            set(vec![], vec![9], Ancestor),
        ];
        assert_eq!(check(&sets, &f, &env), Ok(()));
        assert_eq!(env.parent_lookups.get(), 3, "300 → 200 → 100 → 1, once");
        let env = FakeEnv::default();
        assert_eq!(check([&set(vec![], vec![9], Immediate)], &f, &env), Ok(()));
        assert_eq!(env.parent_lookups.get(), 0);

        // A process whose parent vanished: only the known part is compared.
        let orphaned = ProcessFacts { ppid: 555, ..facts() };
        assert_eq!(one(set(vec![555], vec![], Ancestor), &orphaned), None);
        assert_eq!(one(set(vec![1], vec![], Ancestor), &orphaned), Some("allowed_parents"));
    }

    #[test]
    fn a_loop_in_the_tree_ends() {
        let env = FakeEnv {
            parents: HashMap::from([(300, 200), (200, 300)]),
            ..FakeEnv::default()
        };
        let filters = Filters {
            allowed_parents: vec![1],
            parent_match: ParentMatch::Ancestor,
            ..Filters::default()
        };
        assert_eq!(check([&filters], &facts(), &env).unwrap_err().filter, "allowed_parents");
        assert!(env.parent_lookups.get() <= MAX_ANCESTORS);
    }

    #[test]
    fn dirs_exact_and_prefix() {
        let set = |allowed: &[&str], blocked: &[&str], dir_match| Filters {
            allowed_dirs: allowed.iter().map(PathBuf::from).collect(),
            blocked_dirs: blocked.iter().map(PathBuf::from).collect(),
            dir_match,
            ..Filters::default()
        };
        use DirMatch::{Exact, Prefix};
        let f = facts(); // cwd /srv/media/jobs
        assert_eq!(one(set(&["/srv/media/jobs/"], &[], Exact), &f), None);
        assert_eq!(one(set(&["/srv/media"], &[], Exact), &f), Some("allowed_dirs"));
        assert_eq!(one(set(&["/srv/media"], &[], Prefix), &f), None);
        assert_eq!(one(set(&[], &["/srv/media/jobs"], Exact), &f), Some("blocked_dirs"));
        assert_eq!(one(set(&[], &["/srv"], Exact), &f), None);
        assert_eq!(one(set(&[], &["/srv"], Prefix), &f), Some("blocked_dirs"));

        // By component: /tmp is not a prefix of /tmpfoo.
        let tmpfoo = ProcessFacts {
            cwd: Some("/tmpfoo/x".into()),
            ..facts()
        };
        assert_eq!(one(set(&[], &["/tmp"], Prefix), &tmpfoo), None);
        assert_eq!(one(set(&["/tmp"], &[], Prefix), &tmpfoo), Some("allowed_dirs"));
        assert_eq!(one(set(&["/tmpfoo"], &[], Prefix), &tmpfoo), None);

        // An unreadable cwd fails an allow list and passes a block list.
        let unreadable = ProcessFacts { cwd: None, ..facts() };
        assert_eq!(one(set(&["/"], &[], Prefix), &unreadable), Some("allowed_dirs"));
        assert_eq!(one(set(&[], &["/"], Prefix), &unreadable), None);
    }

    #[test]
    fn max_runtime_rejects_older_processes() {
        let limit = |secs| Filters {
            max_runtime: Some(Duration::from_secs(secs)),
            min_runtime: Some(Duration::from_secs(3600)),
            ..Filters::default()
        };
        // Age 60s; min_runtime is the daemon's timer, never checked here.
        assert_eq!(one(limit(60), &facts()), None);
        assert_eq!(one(limit(59), &facts()), Some("max_runtime"));
        let e = check([&limit(30)], &facts(), &env()).unwrap_err();
        assert_eq!(e.to_string(), "max_runtime: running for 1m, longer than 30s");
    }

    #[test]
    fn every_set_must_pass() {
        let global = Filters {
            blocked_dirs: vec!["/tmp".into()],
            allowed_users: names(&["alice", "bob"]),
            ..Filters::default()
        };
        let command = Filters {
            allowed_users: names(&["bob"]),
            ..Filters::default()
        };
        let alice = facts();
        let bob = ProcessFacts { uid: 1001, ..facts() };
        let bob_in_tmp = ProcessFacts {
            uid: 1001,
            cwd: Some("/tmp".into()),
            ..facts()
        };
        assert_eq!(verdict([&global], &alice), None);
        assert_eq!(verdict([&global, &command], &alice), Some("allowed_users"));
        assert_eq!(verdict([&global, &command], &bob), None);
        assert_eq!(verdict([&global, &command], &bob_in_tmp), Some("blocked_dirs"));

        // The name is looked up once for both sets.
        let env = env();
        assert_eq!(check([&global, &command], &bob, &env), Ok(()));
        assert_eq!(env.name_lookups.get(), 1);
    }

    #[test]
    fn works_with_rules_filters_for() {
        use crate::cgroup::Limits;
        use crate::events::scan::Targets;
        use crate::watch::rules::{CommandRule, Rules};
        let mut rules = Rules::simple(Targets::new(["ffmpeg".to_string()]), Limits::default());
        assert!(!rules.checks_process_for("ffmpeg"));
        assert!(!rules.checks_any_process());
        assert!(rules.adopts_on_loop());
        // A network limit (rtnetlink, eBPF programs) keeps adoptions off the loop.
        let mut net = rules.clone();
        net.default_limits.net_egress_max = Some(crate::net::NetRate::parse("8mbit").unwrap());
        assert!(!net.adopts_on_loop());
        rules.commands.insert(
            "ffmpeg".into(),
            CommandRule {
                limits: Limits::default(),
                filters: Filters {
                    blocked_uids: vec![1000],
                    ..Filters::default()
                },
            },
        );
        assert!(rules.checks_process_for("ffmpeg"));
        assert!(!rules.checks_process_for("other"));
        // One command's filters send every fused adoption to the blocking pool.
        assert!(rules.checks_any_process());
        assert!(!rules.adopts_on_loop());
        assert_eq!(
            check(rules.filters_for("ffmpeg"), &facts(), &env()).unwrap_err().filter,
            "blocked_uids"
        );
    }

    #[test]
    fn reads_the_facts_of_a_live_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .current_dir("/")
            .spawn()
            .unwrap();
        let info = ProcessInfo::read(child.id()).unwrap();
        let facts = ProcessFacts::read(&info);
        child.kill().unwrap();
        child.wait().unwrap();
        let facts = facts.unwrap();
        assert_eq!(facts.pid, child.id());
        assert_eq!(facts.uid, nix::unistd::getuid().as_raw());
        assert_eq!(facts.ppid, std::process::id());
        assert_eq!(facts.cwd.as_deref(), Some(Path::new("/")));
        assert!(facts.age < Duration::from_secs(5), "{:?}", facts.age);

        let me = ProcessInfo::read(std::process::id()).unwrap();
        let parent = SystemEnv.parent_of(std::process::id());
        assert_eq!(parent, Some(me.ppid));
        assert_eq!(SystemEnv.user_name(0).as_deref(), Some("root"));
    }
}
