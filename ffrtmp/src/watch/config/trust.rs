//! Who may steer the root daemon through its configuration file.
//!
//! The file decides which processes the daemon throttles, starves of memory
//! or renices, so only root (or the daemon's own uid) may be able to change
//! it — like sshd's `StrictModes` and cron. The file and every directory on
//! its path are checked, both as written and after symlinks are resolved
//! (a Kubernetes ConfigMap mount is root-owned and `0644` behind its
//! `..data` links, and passes): each must be owned by root or us and not
//! writable by group (unless the group is root) or others. A directory
//! others may write to is accepted only with the sticky bit set and the
//! entry below it owned by root or us: then no one else can replace it
//! (`/tmp/<root's dir>/…`).

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Why a path is not trustworthy, or `Ok`.
pub fn check(path: &Path, euid: u32) -> Result<(), String> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("resolving {}: {e}", path.display()))?
            .join(path)
    };
    check_chain(&absolute, euid, false)?;
    let real = std::fs::canonicalize(&absolute).map_err(|e| format!("resolving {}: {e}", absolute.display()))?;
    if real != absolute {
        check_chain(&real, euid, true)?;
    }
    Ok(())
}

/// Check every directory from `/` down to `path`, and `path` itself.
/// `follow`: `path` is already resolved (use stat, not lstat).
fn check_chain(path: &Path, euid: u32, follow: bool) -> Result<(), String> {
    let mut chain = vec![PathBuf::from("/")];
    let mut at = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(name) => {
                at.push(name);
                chain.push(at.clone());
            }
            // `a/../b` is `b`: the directories walked are those of the
            // path as the kernel resolves it lexically.
            Component::ParentDir => {
                if at.pop() {
                    chain.pop();
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let owner_ok = |uid: u32| uid == 0 || uid == euid;
    let meta = |p: &Path, last: bool| {
        let m = if last && !follow {
            std::fs::metadata(p)
        } else {
            std::fs::symlink_metadata(p).and_then(|m| {
                if m.file_type().is_symlink() {
                    std::fs::metadata(p)
                } else {
                    Ok(m)
                }
            })
        };
        m.map_err(|e| format!("{}: {e}", p.display()))
    };
    for (i, dir) in chain.iter().enumerate() {
        let last = i + 1 == chain.len();
        let m = meta(dir, last)?;
        let (uid, gid, mode) = (m.uid(), m.gid(), m.mode());
        let what = if last { "it" } else { "its directory" };
        if !owner_ok(uid) {
            return Err(format!(
                "{what} {} is owned by uid {uid} (mode {:04o}), not by root",
                dir.display(),
                mode & 0o7777
            ));
        }
        let group_writable = mode & 0o020 != 0 && gid != 0;
        let other_writable = mode & 0o002 != 0;
        if !(group_writable || other_writable) {
            continue;
        }
        // A sticky directory protects entries owned by root or us.
        let sticky = mode & 0o1000 != 0 && m.is_dir();
        let next_ok = chain
            .get(i + 1)
            .and_then(|next| std::fs::symlink_metadata(next).ok())
            .is_some_and(|n| owner_ok(n.uid()));
        if sticky && next_ok {
            continue;
        }
        let by = if other_writable {
            "anyone".to_string()
        } else {
            format!("group {gid}")
        };
        return Err(format!(
            "{what} {} is writable by {by} (mode {:04o})",
            dir.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A private dir (mode 0700, ours) with a config file in it.
    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("watch.yaml");
        std::fs::write(&file, "target_commands: [x]\n").unwrap();
        chmod(&file, 0o644);
        (dir, file)
    }

    fn euid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    #[test]
    fn a_file_only_its_owner_can_write_is_trusted() {
        let (_dir, file) = setup();
        // Under /tmp (sticky, 1777): the temp dir below it is ours.
        assert_eq!(check(&file, euid()), Ok(()));
    }

    #[test]
    fn a_world_or_group_writable_file_is_not() {
        let (_dir, file) = setup();
        chmod(&file, 0o666);
        let why = check(&file, euid()).unwrap_err();
        assert!(why.contains("is writable by anyone (mode 0666)"), "{why}");
        chmod(&file, 0o664);
        // Group-writable is fine when the group is root; here it is ours.
        let gid = std::fs::metadata(&file).unwrap().gid();
        assert_eq!(check(&file, euid()).is_ok(), gid == 0);
    }

    #[test]
    fn a_writable_directory_on_the_path_is_not() {
        let (dir, file) = setup();
        chmod(dir.path(), 0o777);
        let why = check(&file, euid()).unwrap_err();
        assert!(why.contains("its directory") && why.contains("(mode 0777)"), "{why}");
        // Sticky: others cannot replace our file.
        chmod(dir.path(), 0o1777);
        assert_eq!(check(&file, euid()), Ok(()));
    }

    #[test]
    fn a_file_of_another_user_is_not() {
        let (_dir, file) = setup();
        if euid() != 0 {
            eprintln!("skipping: chown needs root");
            return;
        }
        std::os::unix::fs::chown(&file, Some(1234), None).unwrap();
        let why = check(&file, 0).unwrap_err();
        assert!(why.contains("is owned by uid 1234"), "{why}");
    }

    #[test]
    fn symlinks_are_followed_and_both_paths_checked() {
        // A ConfigMap: the link in a safe dir, the file behind `..data`.
        let (dir, file) = setup();
        let data = dir.path().join("..2026_12_01");
        std::fs::create_dir(&data).unwrap();
        std::fs::rename(&file, data.join("watch.yaml")).unwrap();
        symlink("..2026_12_01", dir.path().join("..data")).unwrap();
        symlink("..data/watch.yaml", &file).unwrap();
        assert_eq!(check(&file, euid()), Ok(()));
        // The file behind the links writable by anyone: refused.
        chmod(&data.join("watch.yaml"), 0o666);
        assert!(check(&file, euid()).unwrap_err().contains("mode 0666"));
        chmod(&data.join("watch.yaml"), 0o644);
        // The link in a directory anyone may write: refused, though the
        // file behind it is safe (the link can be pointed elsewhere).
        let open = tempfile::tempdir().unwrap();
        chmod(open.path(), 0o777);
        let link = open.path().join("watch.yaml");
        symlink(data.join("watch.yaml"), &link).unwrap();
        assert!(check(&link, euid()).unwrap_err().contains("(mode 0777)"));
    }
}
