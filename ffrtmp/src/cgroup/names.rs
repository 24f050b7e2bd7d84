//! Validated names: the cgroup root and job ids. Both end up as path
//! components under `/sys/fs/cgroup`, so nothing that could climb out of it
//! (`..`, `/`, NUL) gets through.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::hierarchy::Mount;

/// A cgroup root or job id that is not accepted; the message says what is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(String);

impl From<&str> for InvalidName {
    fn from(s: &str) -> InvalidName {
        InvalidName(s.to_string())
    }
}

/// Why `name` is not a valid cgroup name component, said precisely.
fn name_problem(name: &str) -> Option<String> {
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "{c:?} is not allowed in a cgroup name (only A-Z a-z 0-9 . _ -)"
        ));
    }
    match name {
        "" => Some("an empty name".into()),
        "." | ".." => Some(format!("{name:?} is not a name")),
        _ if name.len() > 128 => Some(format!("{} characters, at most 128 are allowed", name.len())),
        _ => None,
    }
}

/// `--cgroup-root`: absolute inside each hierarchy, or relative to the
/// cgroup ffrtmp itself runs in (per hierarchy on v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupRoot {
    Absolute(PathBuf),
    Relative(PathBuf),
}

pub const DEFAULT_CGROUP_ROOT: &str = "/ffrtmp";

impl CgroupRoot {
    pub fn parse(s: &str) -> Result<CgroupRoot, InvalidName> {
        const EXPECTED: &str = "expected a cgroup path such as /ffrtmp (absolute) or ffrtmp-jobs (relative to ffrtmp's own cgroup), without . or .. components";
        let path = Path::new(s);
        let mut parts = PathBuf::new();
        for component in path.components() {
            match component {
                Component::RootDir => {}
                Component::Normal(name) => {
                    if let Some(problem) = name_problem(name.to_str().ok_or(EXPECTED)?) {
                        return Err(format!("{problem}; {EXPECTED}").as_str().into());
                    }
                    parts.push(name)
                }
                _ => return Err(EXPECTED.into()),
            }
        }
        // `/` alone would put jobs (and garbage collection) at the top of the
        // hierarchy, next to the system's own cgroups.
        if parts.as_os_str().is_empty() || s.contains("//") || s.contains("/./") {
            return Err(EXPECTED.into());
        }
        Ok(if path.has_root() {
            CgroupRoot::Absolute(Path::new("/").join(parts))
        } else {
            CgroupRoot::Relative(parts)
        })
    }

    /// The root's cgroup path inside one hierarchy (absolute, from its mount).
    pub fn resolve(&self, mount: &Mount) -> PathBuf {
        match self {
            CgroupRoot::Absolute(p) => p.clone(),
            CgroupRoot::Relative(p) => mount.own_cgroup.join(p),
        }
    }
}

impl Default for CgroupRoot {
    fn default() -> Self {
        CgroupRoot::Absolute(DEFAULT_CGROUP_ROOT.into())
    }
}

impl fmt::Display for CgroupRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgroupRoot::Absolute(p) | CgroupRoot::Relative(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A job id: `[A-Za-z0-9._-]`, 1–128 characters, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    pub fn parse(s: &str) -> Result<JobId, InvalidName> {
        match name_problem(s) {
            None => Ok(JobId(s.to_owned())),
            Some(problem) => Err(format!(
                "{problem}; expected 1-128 characters from [A-Za-z0-9._-], not \".\" or \"..\""
            )
            .as_str()
            .into()),
        }
    }

    /// `unnamed-<pid>`, the original tool's default.
    pub fn unnamed(pid: u32) -> JobId {
        JobId(format!("unnamed-{pid}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        for good in ["a", "job-001", "x.y_z", "A9", &"a".repeat(128), "..a", "a.."] {
            assert!(JobId::parse(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a b",
            "é",
            &"a".repeat(129),
            "a\0b",
            "/abs",
        ] {
            assert!(JobId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cgroup_roots() {
        assert_eq!(
            CgroupRoot::parse("/ffrtmp").unwrap(),
            CgroupRoot::Absolute("/ffrtmp".into())
        );
        assert_eq!(CgroupRoot::parse("/a/b/").unwrap(), CgroupRoot::Absolute("/a/b".into()));
        assert_eq!(CgroupRoot::parse("jobs").unwrap(), CgroupRoot::Relative("jobs".into()));
        assert_eq!(
            CgroupRoot::parse("t/jobs").unwrap(),
            CgroupRoot::Relative("t/jobs".into())
        );
        for bad in ["", "/", "..", "/a/../b", "./a", "a//b", "a b", "/a/./b"] {
            assert!(CgroupRoot::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn relative_roots_resolve_per_hierarchy() {
        let root = CgroupRoot::parse("jobs").unwrap();
        let memory = Mount {
            mount_point: "/sys/fs/cgroup/memory".into(),
            own_cgroup: "/process_api/abc".into(),
        };
        let cpu = Mount {
            mount_point: "/sys/fs/cgroup/cpu".into(),
            own_cgroup: "/".into(),
        };
        assert_eq!(root.resolve(&memory), Path::new("/process_api/abc/jobs"));
        assert_eq!(root.resolve(&cpu), Path::new("/jobs"));
        assert_eq!(CgroupRoot::default().resolve(&memory), Path::new("/ffrtmp"));
    }
}
