//! The configuration file followed: a change to it reloads the daemon as
//! SIGHUP does.
//!
//! The watch is on the file's *directory*, not on the file, because the
//! ways a file is replaced leave a watch on the old file behind:
//! - kubelet updates a ConfigMap volume by writing a new `..<timestamp>`
//!   directory and renaming a `..data_tmp` symlink over `..data`; the file
//!   (`watch.yaml -> ..data/watch.yaml`) itself never changes;
//! - editors and `sed -i` write a temporary file and rename it over the file;
//! - `cat > watch.yaml` rewrites it in place.
//!
//! Which events count is decided by [`relevant`] (pure); [`Follower`] is the
//! I/O. Events close together are merged ([`SETTLE`]) so one update, made of
//! several steps, reloads once, after its last step.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

/// How long the directory must be quiet after a relevant event before the
/// reload: kubelet's swap and an editor's save are each a few steps within
/// microseconds to milliseconds.
pub const SETTLE: Duration = Duration::from_millis(100);

/// The name kubelet renames over to publish a ConfigMap's new contents.
const KUBELET_DATA: &str = "..data";

/// What one inotify event in the directory means for the file named `file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The file (or what it resolves to) may have changed: reload.
    Changed(OsString),
    /// The kernel dropped events (its queue overflowed): reload to be sure.
    Overflow,
    /// The directory itself went away or was moved: nothing more will come.
    Gone,
    /// Another file of the directory.
    Other,
}

/// Classify an event: its mask and the name it carries (none for events
/// about the directory itself).
pub fn relevant(file: &OsStr, mask: AddWatchFlags, name: Option<&OsStr>) -> Seen {
    if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
        return Seen::Overflow;
    }
    if mask.intersects(AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_IGNORED) {
        return Seen::Gone;
    }
    match name {
        Some(name) if name == file || name == KUBELET_DATA => Seen::Changed(name.to_owned()),
        _ => Seen::Other,
    }
}

/// The events subscribed to: a file written and closed, renamed in or out,
/// created (a new symlink) or removed; the directory going away.
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// The inotify instance as tokio's reactor needs it (`AsRawFd`).
struct Watch(Inotify);

impl std::os::fd::AsRawFd for Watch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// Why the file cannot be followed.
#[derive(Debug, thiserror::Error)]
#[error("watching {dir} for changes of {file}: {source}")]
pub struct FollowError {
    dir: PathBuf,
    file: String,
    #[source]
    source: std::io::Error,
}

/// What the follower tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The file changed (the name of the last entry that changed: the file
    /// itself or kubelet's `..data`), or events were lost.
    Changed(String),
    /// The directory is gone: changes are no longer seen.
    Stopped(String),
}

/// A running follower; dropping it stops it.
#[derive(Debug)]
pub struct Follower {
    task: JoinHandle<()>,
    dir: PathBuf,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    /// Follow `path`: `notify` is called once per settled change, on the
    /// runtime's thread; it returns false to stop following.
    pub fn start(
        path: &Path,
        mut notify: impl FnMut(Notice) -> bool + Send + 'static,
    ) -> Result<Follower, FollowError> {
        let (dir, file) = split(path);
        let error = |source: std::io::Error| FollowError {
            dir: dir.clone(),
            file: file.to_string_lossy().into_owned(),
            source,
        };
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| error(e.into()))?;
        inotify.add_watch(&dir, mask()).map_err(|e| error(e.into()))?;
        // SAFETY: the Inotify owns its fd and keeps it open for as long as
        // the AsyncFd (which owns the Inotify) exists.
        let fd = unsafe { AsyncFd::register_with_interest(Watch(inotify), Interest::READABLE) }
            .map_err(|e| error(e.into()))?;
        let task = tokio::spawn(async move {
            loop {
                let notice = match next_settled(&fd, &file).await {
                    Ok(notice) => notice,
                    Err(e) => Notice::Stopped(format!("reading inotify events: {e}")),
                };
                let stopped = matches!(notice, Notice::Stopped(_));
                if !notify(notice) || stopped {
                    break;
                }
            }
        });
        Ok(Follower { task, dir })
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The directory to watch and the file's name in it.
fn split(path: &Path) -> (PathBuf, OsString) {
    let file = path.file_name().map(OsStr::to_owned).unwrap_or_default();
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    (dir, file)
}

/// Wait for a relevant event, then until the directory has been quiet for
/// [`SETTLE`].
async fn next_settled(fd: &AsyncFd<Watch>, file: &OsStr) -> std::io::Result<Notice> {
    let mut changed: Option<String> = None;
    loop {
        let events = match changed {
            None => read(fd).await?,
            Some(_) => match tokio::time::timeout(SETTLE, read(fd)).await {
                Ok(events) => events?,
                Err(_quiet) => return Ok(Notice::Changed(changed.unwrap_or_default())),
            },
        };
        for event in events {
            match relevant(file, event.mask, event.name.as_deref()) {
                Seen::Changed(name) => changed = Some(name.to_string_lossy().into_owned()),
                Seen::Overflow => changed = Some("(inotify queue overflow)".into()),
                Seen::Gone => return Ok(Notice::Stopped("the directory was removed or moved".into())),
                Seen::Other => {}
            }
        }
    }
}

async fn read(fd: &AsyncFd<Watch>) -> std::io::Result<Vec<InotifyEvent>> {
    loop {
        let mut ready = fd.readable().await?;
        match ready.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(mask: AddWatchFlags, name: Option<&str>) -> Seen {
        relevant(OsStr::new("watch.yaml"), mask, name.map(OsStr::new))
    }

    #[test]
    fn the_file_and_kubelets_data_link_count_others_do_not() {
        let changed = |n: &str| Seen::Changed(n.into());
        assert_eq!(
            seen(AddWatchFlags::IN_CLOSE_WRITE, Some("watch.yaml")),
            changed("watch.yaml")
        );
        assert_eq!(
            seen(AddWatchFlags::IN_MOVED_TO, Some("watch.yaml")),
            changed("watch.yaml")
        );
        assert_eq!(
            seen(AddWatchFlags::IN_DELETE, Some("watch.yaml")),
            changed("watch.yaml")
        );
        assert_eq!(seen(AddWatchFlags::IN_MOVED_TO, Some("..data")), changed("..data"));
        // kubelet's other steps, an editor's temporary file, a neighbour.
        assert_eq!(seen(AddWatchFlags::IN_CREATE, Some("..data_tmp")), Seen::Other);
        assert_eq!(
            seen(AddWatchFlags::IN_CREATE, Some("..2026_12_01_13_00_00.1")),
            Seen::Other
        );
        assert_eq!(
            seen(AddWatchFlags::IN_CLOSE_WRITE, Some(".watch.yaml.swp")),
            Seen::Other
        );
        assert_eq!(seen(AddWatchFlags::IN_CLOSE_WRITE, Some("watch.yaml~")), Seen::Other);
        assert_eq!(seen(AddWatchFlags::IN_CLOSE_WRITE, Some("other.yaml")), Seen::Other);
    }

    #[test]
    fn overflow_and_the_directory_going_away() {
        assert_eq!(seen(AddWatchFlags::IN_Q_OVERFLOW, None), Seen::Overflow);
        assert_eq!(seen(AddWatchFlags::IN_DELETE_SELF, None), Seen::Gone);
        assert_eq!(seen(AddWatchFlags::IN_MOVE_SELF, None), Seen::Gone);
        assert_eq!(seen(AddWatchFlags::IN_IGNORED, None), Seen::Gone);
    }

    #[test]
    fn a_bare_file_name_is_watched_in_the_current_directory() {
        assert_eq!(
            split(Path::new("watch.yaml")),
            (PathBuf::from("."), "watch.yaml".into())
        );
        assert_eq!(
            split(Path::new("/etc/ffrtmp/watch.yaml")),
            (PathBuf::from("/etc/ffrtmp"), "watch.yaml".into())
        );
    }

    /// The follower itself, on a temporary directory (no root needed): a
    /// kubelet-style swap is one notice, a neighbour's write none.
    #[tokio::test(flavor = "current_thread")]
    async fn a_kubelet_swap_is_one_notice() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path();
        let publish = |stamp: &str, text: &str| {
            let data = root.join(stamp);
            std::fs::create_dir(&data).expect("mkdir");
            std::fs::write(data.join("watch.yaml"), text).expect("write");
            symlink(stamp, root.join("..data_tmp")).expect("symlink");
            std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("rename");
        };
        publish("..1", "targets: [a]\n");
        symlink("..data/watch.yaml", root.join("watch.yaml")).expect("symlink");

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let follower = Follower::start(&root.join("watch.yaml"), move |n| tx.send(n).is_ok()).expect("following");
        assert_eq!(follower.dir(), root);

        std::fs::write(root.join("neighbour.yaml"), "x").expect("write");
        publish("..2", "targets: [b]\n");
        std::fs::remove_dir_all(root.join("..1")).expect("removing the old data");
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(
            first.expect("a notice").expect("open"),
            Notice::Changed("..data".into())
        );
        let again = tokio::time::timeout(SETTLE * 3, rx.recv()).await;
        assert!(again.is_err(), "one swap, one notice: {again:?}");
    }
}
