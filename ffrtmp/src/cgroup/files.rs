//! Every cgroup control file ffrtmp reads or writes, named once.
//!
//! v2 names are from Documentation/admin-guide/cgroup-v2.rst, v1 names from
//! Documentation/admin-guide/cgroup-v1/ (cpu: sched-design-CFS.rst, memory:
//! memory.rst, blkio: blkio-controller.rst).

// Both versions.
pub const PROCS: &str = "cgroup.procs";
/// v1: one thread per write. Writing `0` moves the writing thread without
/// the global `cgroup_threadgroup_rwsem` (`cgroup_procs_write_start()`,
/// kernel/cgroup/cgroup.c: the lock is taken only for a pid or a whole
/// thread group), so no RCU grace period is waited for.
pub const TASKS: &str = "tasks";

// v2, the hierarchy itself.
pub const EVENTS: &str = "cgroup.events";
pub const CONTROLLERS: &str = "cgroup.controllers";
pub const SUBTREE_CONTROL: &str = "cgroup.subtree_control";

// v2 limits and usage.
pub const CPU_MAX: &str = "cpu.max";
pub const CPU_WEIGHT: &str = "cpu.weight";
/// Both versions: usage_usec and throttling (v2), nr_throttled and throttled_time (v1).
pub const CPU_STAT: &str = "cpu.stat";
pub const MEMORY_MAX: &str = "memory.max";
/// The throttle below `memory.max` (v2 only).
pub const MEMORY_HIGH: &str = "memory.high";
/// The swap the job may use (v2 only; v1's memsw counts memory plus swap).
pub const MEMORY_SWAP_MAX: &str = "memory.swap.max";
pub const MEMORY_CURRENT: &str = "memory.current";
pub const MEMORY_PEAK: &str = "memory.peak";
pub const MEMORY_EVENTS: &str = "memory.events";
pub const IO_MAX: &str = "io.max";
/// Bytes and IOs per device (rbytes=, wbytes=, …).
pub const IO_STAT: &str = "io.stat";
/// The same name in v1's pids hierarchy.
pub const PIDS_MAX: &str = "pids.max";
/// The same names in v1's cpuset hierarchy (without its `noprefix` option).
pub const CPUSET_CPUS: &str = "cpuset.cpus";
pub const CPUSET_MEMS: &str = "cpuset.mems";
/// What the job really gets: its list within its parent's (v2 names).
pub const CPUSET_CPUS_EFFECTIVE: &str = "cpuset.cpus.effective";
pub const CPUSET_MEMS_EFFECTIVE: &str = "cpuset.mems.effective";
/// iocost's weight ("default N", 1..=10000).
pub const IO_WEIGHT: &str = "io.weight";
/// BFQ's weight (1..=1000), present when BFQ is loaded.
pub const IO_BFQ_WEIGHT: &str = "io.bfq.weight";

// v1 limits and usage.
pub const CFS_QUOTA_US: &str = "cpu.cfs_quota_us";
pub const CFS_PERIOD_US: &str = "cpu.cfs_period_us";
pub const CPU_SHARES: &str = "cpu.shares";
pub const CPUACCT_USAGE: &str = "cpuacct.usage";
pub const MEMORY_LIMIT_IN_BYTES: &str = "memory.limit_in_bytes";
pub const MEMORY_USAGE_IN_BYTES: &str = "memory.usage_in_bytes";
pub const MEMORY_MAX_USAGE_IN_BYTES: &str = "memory.max_usage_in_bytes";
pub const MEMORY_OOM_CONTROL: &str = "memory.oom_control";
pub const BLKIO_READ_BPS: &str = "blkio.throttle.read_bps_device";
pub const BLKIO_WRITE_BPS: &str = "blkio.throttle.write_bps_device";
pub const BLKIO_READ_IOPS: &str = "blkio.throttle.read_iops_device";
pub const BLKIO_WRITE_IOPS: &str = "blkio.throttle.write_iops_device";
/// Bytes per device and operation, as the throttling layer counted them.
pub const BLKIO_IO_SERVICE_BYTES: &str = "blkio.throttle.io_service_bytes";
/// v1 weights (10..=1000): BFQ's, and CFQ's on kernels before 5.0.
pub const BLKIO_BFQ_WEIGHT: &str = "blkio.bfq.weight";
pub const BLKIO_WEIGHT: &str = "blkio.weight";
/// v1 cpuset's names for what the job really gets.
pub const CPUSET_EFFECTIVE_CPUS: &str = "cpuset.effective_cpus";
pub const CPUSET_EFFECTIVE_MEMS: &str = "cpuset.effective_mems";
