//! ffrtmp: put media workloads under Linux cgroup limits.
//!
//! One governor ([`cgroup::Governor`]) and its front doors: `run` spawns a
//! child born inside its job cgroup, `attach` adopts a running process, and
//! the watch service ([`watch::WatchService`]) adopts every target the
//! moment it execs. The watch service is also a library: embed it in an
//! agent and receive typed [`watch::WatchEvent`]s (see `docs/library.md` and
//! `examples/embed_watch.rs`).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = ffrtmp::watch::WatchConfig::for_targets(["ffmpeg"]);
//! let mut watch = ffrtmp::watch::WatchService::new(config).start().await?;
//! while let Some(event) = watch.next_event().await {
//!     println!("{}", serde_json::to_string(&event)?);
//! }
//! # Ok(())
//! # }
//! ```

pub mod cgroup;
/// The command line of the `ffrtmp` binary (feature `cli`, on by default);
/// not part of the library's API.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
pub mod events;
#[doc(hidden)]
pub mod fault;
mod fsutil;
pub mod lifecycle;
pub mod net;
pub mod process;
pub mod report;
pub mod watch;
