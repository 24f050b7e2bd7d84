//! Cgroup hierarchy detection, the limits model and job cgroups (v1 and v2).

pub mod existing;
pub mod fs;
pub mod hierarchy;
pub mod job;
pub mod limits;
pub mod names;

pub use existing::{Delegation, ExistingJob, LimitWriter, enter_delegated_leaf};
pub use hierarchy::{Controller, Hierarchy};
pub use job::{CgroupError, Governor, JobCgroup, LimitOutcome, Removal, Usage, UsageReader};
pub use limits::{Limits, Version};
pub use names::{CgroupRoot, JobId};
