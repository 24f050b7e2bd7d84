//! User names for the `*_users` filters, asked of the system's name service
//! through `getent passwd <uid>`, in a process of its own.
//!
//! Why not `getpwuid_r` here: the shipped build of ffrtmp is linked
//! statically (static-pie, packaging/release-build; a shorter start for
//! `ffrtmp run`, see docs/BENCHMARKS.md), and a statically linked glibc
//! cannot load the NSS modules a host's `nsswitch.conf` names (`systemd`,
//! `sss`, `ldap`): it crashes in them. `getent` is the system's own,
//! dynamically linked client of the same name service, so every backend
//! keeps working. Every build (debug and tests included) takes this path,
//! so they behave alike; packaging/release-build fails if the shipped
//! binary links a glibc name-service function after all.
//!
//! Answers are kept for [`TTL`], so a lookup process is started at most once
//! a minute per uid however many processes that uid starts.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an answer (a name, no name, or a failed lookup) is kept.
pub const TTL: Duration = Duration::from_secs(60);

/// What one lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The uid's user name.
    Name(String),
    /// The name service has no user with this uid.
    NoName,
    /// The lookup itself failed (no `getent`, a crash, a bad answer).
    Failed(String),
}

/// The name of `uid`, from the cache or a fresh `getent` lookup. A failed
/// lookup is logged once per [`TTL`] and counts as no name. The cache is not
/// held during a lookup: a slow name service (LDAP) delays only the lookups
/// that need it. Lookups of one uid take turns (a lock per uid, of
/// [`LANES`]), so a burst of processes of a new uid starts one `getent`,
/// and the others read its answer.
pub fn name_of(uid: u32) -> Option<String> {
    static CACHE: Mutex<Option<Cache>> = Mutex::new(None);
    static LANE: [Mutex<()>; LANES] = [const { Mutex::new(()) }; LANES];
    let cache = || CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let cached = || cache().get_or_insert_with(Cache::default).get(uid, Instant::now());
    if let Some(answer) = cached() {
        return answer.into_name();
    }
    let _turn = LANE[uid as usize % LANES]
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Another thread may have looked it up while this one waited its turn.
    if let Some(answer) = cached() {
        return answer.into_name();
    }
    let answer = lookup(uid);
    if let Answer::Failed(error) = &answer {
        tracing::warn!("looking up the user name of uid {uid}: {error}; treating it as a uid without a name");
    }
    cache()
        .get_or_insert_with(Cache::default)
        .put(uid, answer.clone(), Instant::now());
    answer.into_name()
}

/// How many uids can be looked up at once.
const LANES: usize = 16;

impl Answer {
    fn into_name(self) -> Option<String> {
        match self {
            Answer::Name(name) => Some(name),
            Answer::NoName | Answer::Failed(_) => None,
        }
    }
}

/// Answers by uid, each with the time it was fetched.
#[derive(Debug, Default)]
struct Cache {
    answers: HashMap<u32, (Answer, Instant)>,
}

impl Cache {
    /// The answer kept for `uid`, if it is younger than [`TTL`] at `now`.
    fn get(&self, uid: u32, now: Instant) -> Option<Answer> {
        let (answer, at) = self.answers.get(&uid)?;
        fresh(*at, now).then(|| answer.clone())
    }

    /// Keep `answer`, fetched at `at`. Expired answers of other uids go: the
    /// map stays as small as the set of uids seen in the last TTL.
    fn put(&mut self, uid: u32, answer: Answer, at: Instant) {
        self.answers.retain(|_, (_, kept)| fresh(*kept, at));
        self.answers.insert(uid, (answer, at));
    }
}

fn fresh(fetched: Instant, now: Instant) -> bool {
    now.saturating_duration_since(fetched) < TTL
}

/// Run `getent passwd <uid>` and read its answer.
fn lookup(uid: u32) -> Answer {
    let output = Command::new("getent")
        .args(["passwd", &uid.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Err(e) => Answer::Failed(format!("running getent: {e}")),
        Ok(out) => read_answer(uid, out.status.code(), &String::from_utf8_lossy(&out.stdout)),
    }
}

/// `getent`'s answer for `uid`: exit status 0 and a `passwd(5)` line, or
/// exit status 2 for "no such entry" (getent(1)). The line's uid must be the
/// one asked for: a user *named* with digits would otherwise answer.
fn read_answer(uid: u32, status: Option<i32>, stdout: &str) -> Answer {
    match status {
        Some(0) => {}
        Some(2) => return Answer::NoName,
        Some(code) => return Answer::Failed(format!("getent passwd {uid} exited with status {code}")),
        None => return Answer::Failed(format!("getent passwd {uid} was killed by a signal")),
    }
    for line in stdout.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_password), Some(line_uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if line_uid.parse() == Ok(uid) && !name.is_empty() {
            return Answer::Name(name.to_owned());
        }
    }
    Answer::Failed(format!(
        "getent passwd {uid} printed no entry for uid {uid}: {:?}",
        stdout.trim_end()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_gives_its_name_and_status_2_gives_none() {
        let root = "root:x:0:0:root:/root:/bin/bash\n";
        assert_eq!(read_answer(0, Some(0), root), Answer::Name("root".into()));
        assert_eq!(read_answer(4242, Some(2), ""), Answer::NoName);
    }

    #[test]
    fn an_entry_for_another_uid_or_a_bad_status_is_a_failure() {
        // A user named "1000" whose uid is 1001 answers `getent passwd 1000`.
        let named_with_digits = "1000:x:1001:1001::/home/x:/bin/sh\n";
        assert!(matches!(
            read_answer(1000, Some(0), named_with_digits),
            Answer::Failed(_)
        ));
        assert!(matches!(read_answer(0, Some(0), "garbage\n"), Answer::Failed(_)));
        assert!(matches!(read_answer(0, Some(1), ""), Answer::Failed(_)));
        assert!(matches!(read_answer(0, None, ""), Answer::Failed(_)));
    }

    #[test]
    fn answers_are_kept_for_the_ttl() {
        let mut cache = Cache::default();
        let t0 = Instant::now();
        assert_eq!(cache.get(7, t0), None);
        cache.put(7, Answer::Name("user7".into()), t0);
        cache.put(8, Answer::Failed("no getent".into()), t0);
        let almost = t0 + TTL - Duration::from_millis(1);
        assert_eq!(cache.get(7, almost), Some(Answer::Name("user7".into())));
        assert_eq!(
            cache.get(8, almost),
            Some(Answer::Failed("no getent".into())),
            "failures are kept too"
        );
        assert_eq!(cache.get(7, t0 + TTL), None, "an answer TTL old is fetched again");
    }

    #[test]
    fn expired_answers_of_other_uids_are_dropped() {
        let mut cache = Cache::default();
        let t0 = Instant::now();
        cache.put(1, Answer::NoName, t0);
        cache.put(2, Answer::NoName, t0 + TTL - Duration::from_millis(1));
        cache.put(3, Answer::NoName, t0 + TTL);
        let mut kept: Vec<u32> = cache.answers.keys().copied().collect();
        kept.sort();
        assert_eq!(kept, vec![2, 3]);
    }

    /// The real lookup, through the system's `getent`.
    #[test]
    fn getent_names_root_and_knows_no_uid_near_the_top() {
        assert_eq!(lookup(0), Answer::Name("root".into()));
        assert_eq!(lookup(u32::MAX - 7), Answer::NoName);
    }
}
