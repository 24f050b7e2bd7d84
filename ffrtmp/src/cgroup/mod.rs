//! Cgroup hierarchy detection, the limits model and job cgroups (v1 and v2).

pub mod cpuset;
pub mod dynmods;
pub mod existing;
pub mod files;
pub mod fs;
pub mod governor;
pub mod hierarchy;
pub mod limits;
pub mod names;
pub mod namespace;
mod spare;

pub use existing::{Delegation, ExistingJob, LimitWriter, delegated_place};
pub use governor::{CgroupError, Governor, JobCgroup, LimitOutcome, ProcCgroups, Removal, Usage, UsageReader};
pub use hierarchy::{Controller, Hierarchy};
pub use limits::{Limits, Version};
pub use names::{CgroupRoot, JobId};
