//! cpuset's two rules that plain file writes do not cover:
//!
//! - v1: a new cpuset cgroup starts with empty `cpuset.cpus` and
//!   `cpuset.mems` and refuses tasks (ENOSPC) until both are set, unless its
//!   parent has `cgroup.clone_children` — which is not ours to rely on. So
//!   every cpuset directory ffrtmp creates is filled from its parent first.
//! - v2: `cpuset.cpus` accepts CPUs outside the parent's set and grants only
//!   the intersection (`cpuset.cpus.effective`); v1 refuses them. Both are
//!   reported as a failed limit, with what the parent allows.

use std::path::{Path, PathBuf};

use super::files;
use super::fs::{self, FsError};
use super::limits::CpuList;

/// Is `file` one of the lists ffrtmp writes?
pub fn is_cpuset_file(file: &str) -> bool {
    file == files::CPUSET_CPUS || file == files::CPUSET_MEMS
}

/// The effective-list files for `file`: the v2 name, then the v1 one.
fn effective_names(file: &str) -> [&'static str; 2] {
    if file == files::CPUSET_MEMS {
        [files::CPUSET_MEMS_EFFECTIVE, files::CPUSET_EFFECTIVE_MEMS]
    } else {
        [files::CPUSET_CPUS_EFFECTIVE, files::CPUSET_EFFECTIVE_CPUS]
    }
}

/// The effective list of the cgroup at `dir` for `file`, as the kernel
/// writes it (`None` when neither name is there).
fn effective(dir: &Path, file: &str) -> Option<String> {
    effective_names(file)
        .iter()
        .find_map(|name| fs::read_file(&dir.join(name)).ok())
        .map(|s| s.trim().to_string())
}

fn split(path: &Path) -> (PathBuf, &str) {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    (dir, file)
}

/// The parent cgroup's value of the file at `path`.
pub fn parent_value(path: &Path) -> Result<String, FsError> {
    let (dir, file) = split(path);
    let parent = dir.parent().unwrap_or(&dir).join(file);
    Ok(fs::read_file(&parent)?.trim().to_string())
}

/// Why the kernel may have refused a list: what the parent allows.
pub fn explain_refusal(path: &Path) -> String {
    let (dir, file) = split(path);
    let parent = dir.parent().unwrap_or(&dir);
    match effective(parent, file) {
        Some(allowed) => format!("{file} must be within the parent's effective set \"{allowed}\""),
        None => format!("{file} must be within the parent's effective set"),
    }
}

/// After a write of `requested`: did the kernel grant all of it?
pub fn check_granted(path: &Path, requested: &str) -> Result<(), String> {
    let (dir, file) = split(path);
    let Some(granted) = effective(&dir, file) else {
        return Ok(());
    };
    granted_covers(requested, &granted).map_err(|granted| {
        format!(
            "{} accepted \"{requested}\" but the job gets only \"{granted}\"; {}",
            path.display(),
            explain_refusal(path)
        )
    })
}

/// `Err(granted)` when `granted` lacks part of `requested`; lists that do
/// not parse are not judged.
fn granted_covers<'a>(requested: &str, granted: &'a str) -> Result<(), &'a str> {
    match (CpuList::parse_cpus(requested), CpuList::parse_cpus(granted)) {
        (Ok(want), Ok(got)) if !want.is_subset_of(&got) => Err(granted),
        _ => Ok(()),
    }
}

/// v1: give the new cpuset cgroup at `dir` its parent's CPUs and memory
/// nodes where it has none, so a task can join it.
pub fn fill_from_parent(dir: &Path) -> Result<(), FsError> {
    for file in [files::CPUSET_CPUS, files::CPUSET_MEMS] {
        let path = dir.join(file);
        if fs::read_file(&path)?.trim().is_empty() {
            fs::write_file(&path, &parent_value(&path)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_must_cover_the_request() {
        assert_eq!(granted_covers("0-1", "0-3"), Ok(()));
        assert_eq!(granted_covers("1,3", "0-1"), Err("0-1"));
        assert_eq!(granted_covers("2", ""), Ok(()), "an unreadable list is not judged");
    }

    #[test]
    fn fills_an_empty_v1_dir_from_its_parent_and_keeps_a_set_one() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join(files::CPUSET_CPUS), "0-1\n").unwrap();
        std::fs::write(root.path().join(files::CPUSET_MEMS), "0\n").unwrap();
        let job = root.path().join("job");
        std::fs::create_dir(&job).unwrap();
        std::fs::write(job.join(files::CPUSET_CPUS), "\n").unwrap();
        std::fs::write(job.join(files::CPUSET_MEMS), "1\n").unwrap();
        fill_from_parent(&job).unwrap();
        assert_eq!(std::fs::read_to_string(job.join(files::CPUSET_CPUS)).unwrap(), "0-1");
        assert_eq!(std::fs::read_to_string(job.join(files::CPUSET_MEMS)).unwrap(), "1\n");
    }

    #[test]
    fn a_refusal_names_what_the_parent_allows() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join(files::CPUSET_EFFECTIVE_CPUS), "0-1\n").unwrap();
        let why = explain_refusal(&root.path().join("job").join(files::CPUSET_CPUS));
        assert_eq!(why, "cpuset.cpus must be within the parent's effective set \"0-1\"");
    }
}
