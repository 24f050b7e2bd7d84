//! Per-job network limits: the `ffrtmp-net` object, its buckets and
//! counters, attached to a job's cgroup2 directory.
//!
//! Every operation works per direction and finds what serves a job by
//! asking the kernel which of our programs are attached to its cgroup
//! ([`bpf::query`]), then reaching that program's maps by id. So a job
//! limited by an earlier `ffrtmp run`, `attach` or daemon (whose process
//! may be gone: legacy attachments outlive it) is read, changed and
//! released exactly like one limited by this process.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, Map, MapData, PerCpuHashMap, PerCpuValues};
use aya::programs::{CgroupSkb, SockOps};
use aya::util::nr_cpus;
use ffrtmp_common::net::{self as common, NetBucket, NetCounters, NetKey};
use serde::Serialize;

use super::bpf::{self, Hook};
use super::rate::NetRate;

static OBJECT: &[u8] = aya::include_bytes_aligned!("ffrtmp-net.bpf.o");
static PACE_OBJECT: &[u8] = aya::include_bytes_aligned!("ffrtmp-pace.bpf.o");

/// A failed network-limit operation, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct NetError {
    what: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn err<E: std::error::Error + Send + Sync + 'static>(what: impl Into<String>) -> impl FnOnce(E) -> NetError {
    move |e| NetError {
        what: what.into(),
        source: Box::new(e),
    }
}

/// How egress is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressMode {
    /// Departure times, honoured by the `fq` qdisc: TCP is slowed, not
    /// dropped.
    Pace,
    /// Packets beyond a bounded burst are dropped (with a congestion
    /// notification to the sender).
    Police,
}

/// Pacing: how far ahead a departure time may be before the packet is
/// dropped instead (Cilium's bandwidth manager uses 2 s too).
const PACE_HORIZON_NS: u64 = 2_000_000_000;
/// Policing: the burst, as time at the rate, and at least this many bytes
/// (two 64 KiB GSO/GRO packets must fit, or a slow job could send nothing).
const POLICE_BURST_NS: u64 = 250_000_000;
const POLICE_MIN_BURST_BYTES: u64 = 128 * 1024;

/// The bucket for `rate` in `mode`.
pub fn bucket(rate: NetRate, mode: EgressMode) -> NetBucket {
    let bytes_per_sec = rate.bytes_per_sec();
    let horizon_ns = match mode {
        EgressMode::Pace => PACE_HORIZON_NS,
        EgressMode::Police => {
            let min = POLICE_MIN_BURST_BYTES * 1_000_000_000 / bytes_per_sec;
            POLICE_BURST_NS.max(min)
        }
    };
    NetBucket {
        bytes_per_sec,
        horizon_ns,
        tat_ns: 0,
        mode: match mode {
            EgressMode::Pace => common::MODE_PACE,
            EgressMode::Police => common::MODE_POLICE,
        },
        _pad: 0,
    }
}

/// One direction's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirectionUsage {
    pub passed_bytes: u64,
    pub passed_packets: u64,
    pub delayed_packets: u64,
    pub dropped_bytes: u64,
    pub dropped_packets: u64,
}

impl DirectionUsage {
    fn sum(values: &PerCpuValues<NetCounters>) -> DirectionUsage {
        values.iter().fold(DirectionUsage::default(), |a, c| DirectionUsage {
            passed_bytes: a.passed_bytes + c.passed_bytes,
            passed_packets: a.passed_packets + c.passed_packets,
            delayed_packets: a.delayed_packets + c.delayed_packets,
            dropped_bytes: a.dropped_bytes + c.dropped_bytes,
            dropped_packets: a.dropped_packets + c.dropped_packets,
        })
    }
}

/// A job's network counters (a direction without a limit is `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NetUsage {
    pub egress: Option<DirectionUsage>,
    pub ingress: Option<DirectionUsage>,
}

impl NetUsage {
    pub fn is_empty(&self) -> bool {
        self.egress.is_none() && self.ingress.is_none()
    }
}

/// A program's run-time statistics (`kernel.bpf_stats_enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    pub run_time_ns: u64,
    pub run_count: u64,
}

/// A job's cgroup2 directory, open, with its cgroup id.
pub struct JobSocketCgroup {
    dir: File,
    path: PathBuf,
    id: u64,
}

impl JobSocketCgroup {
    pub fn open(path: &Path) -> Result<JobSocketCgroup, NetError> {
        let dir = File::open(path).map_err(err(format!("opening {}", path.display())))?;
        // The cgroup id the programs see (bpf_skb_cgroup_id) is the kernfs
        // node id, which is the directory's inode number.
        let id = dir
            .metadata()
            .map_err(err(format!("reading {}", path.display())))?
            .ino();
        Ok(JobSocketCgroup {
            dir,
            path: path.to_path_buf(),
            id,
        })
    }

    fn key(&self, hook: Hook) -> NetKey {
        NetKey {
            cgroup_id: self.id,
            direction: match hook {
                Hook::Egress | Hook::SockOps => common::EGRESS,
                Hook::Ingress => common::INGRESS,
            },
            _pad: 0,
        }
    }

    /// Our program attached here at `hook`: a descriptor and what the
    /// kernel says of it.
    fn ours(&self, hook: Hook) -> Result<Option<(OwnedFd, bpf::ProgInfo)>, NetError> {
        let ids = bpf::query(self.dir.as_fd(), hook)
            .map_err(err(format!("listing the programs attached to {}", self.path.display())))?;
        for id in ids {
            let Ok(fd) = bpf::prog_fd(id) else { continue };
            let Ok(info) = bpf::prog_info(fd.as_fd()) else {
                continue;
            };
            if info.name == prog_name(hook) {
                return Ok(Some((fd, info)));
            }
        }
        Ok(None)
    }

    /// Run time and run count of our program at `hook`, if one is attached
    /// (zero unless `kernel.bpf_stats_enabled` is on). The program may
    /// serve other jobs too: the figures are the program's, not the job's.
    pub fn run_stats(&self, hook: Hook) -> Result<Option<RunStats>, NetError> {
        Ok(self.ours(hook)?.map(|(_, info)| RunStats {
            run_time_ns: info.run_time_ns,
            run_count: info.run_count,
        }))
    }

    /// Our program attached here at `hook`, and its maps.
    fn attached(&self, hook: Hook) -> Result<Option<Attached>, NetError> {
        match self.ours(hook)? {
            Some((fd, info)) => Attached::open(fd, &info.map_ids).map(Some),
            None => Ok(None),
        }
    }

    /// The rate in force at each direction that has our program (bit/s).
    pub fn rates(&self) -> Result<(Option<NetRate>, Option<NetRate>), NetError> {
        let mut rates = (None, None);
        for (hook, slot) in [(Hook::Egress, &mut rates.0), (Hook::Ingress, &mut rates.1)] {
            if let Some(attached) = self.attached(hook)? {
                *slot = attached
                    .maps
                    .buckets
                    .get(&self.key(hook), 0)
                    .ok()
                    .map(|b| NetRate::from_bytes_per_sec(b.bytes_per_sec));
            }
        }
        Ok(rates)
    }

    /// The counters of every direction that has our program.
    pub fn usage(&self) -> Result<NetUsage, NetError> {
        let mut usage = NetUsage::default();
        for (hook, slot) in [(Hook::Egress, &mut usage.egress), (Hook::Ingress, &mut usage.ingress)] {
            if let Some(attached) = self.attached(hook)? {
                *slot = attached.counters(&self.key(hook))?;
            }
        }
        Ok(usage)
    }
}

fn prog_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Egress => common::PROG_EGRESS,
        Hook::Ingress => common::PROG_INGRESS,
        Hook::SockOps => common::PROG_PACE,
    }
}

/// Maps of one loaded object.
struct Maps {
    buckets: HashMap<MapData, NetKey, NetBucket>,
    counters: PerCpuHashMap<MapData, NetKey, NetCounters>,
}

impl Maps {
    fn set(&mut self, key: &NetKey, bucket: NetBucket) -> Result<(), NetError> {
        // Counters first: a bucket without them would shape uncounted.
        if self.counters.get(key, 0).is_err() {
            let zero = PerCpuValues::try_from(vec![
                NetCounters::default();
                nr_cpus().map_err(|(_, e)| e).map_err(err("counting CPUs"))?
            ])
            .map_err(err("sizing the counters"))?;
            self.counters
                .insert(key, zero, 0)
                .map_err(err("adding the job's counters"))?;
        }
        self.buckets
            .insert(key, bucket, 0)
            .map_err(err("writing the job's rate"))
    }

    fn remove(&mut self, key: &NetKey) {
        // Gone already is fine: the cgroup's removal frees the whole object.
        let _ = self.buckets.remove(key);
        let _ = self.counters.remove(key);
    }

    fn counters(&self, key: &NetKey) -> Result<Option<DirectionUsage>, NetError> {
        match self.counters.get(key, 0) {
            Ok(values) => Ok(Some(DirectionUsage::sum(&values))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(err("reading the job's counters")(e)),
        }
    }
}

/// A program of ours found on a cgroup, and the maps it uses.
struct Attached {
    prog: OwnedFd,
    maps: Maps,
}

impl Attached {
    fn open(prog: OwnedFd, map_ids: &[u32]) -> Result<Attached, NetError> {
        let mut buckets = None;
        let mut counters = None;
        for &id in map_ids {
            let data = MapData::from_id(id).map_err(err(format!("opening map {id}")))?;
            let name = data.info().ok().and_then(|i| i.name_as_str().map(str::to_owned));
            match name.as_deref() {
                Some(common::BUCKETS) => {
                    buckets = Some(HashMap::try_from(Map::HashMap(data)).map_err(err("NET_BUCKETS"))?)
                }
                Some(common::COUNTERS) => {
                    counters = Some(PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).map_err(err("NET_COUNTERS"))?)
                }
                _ => {}
            }
        }
        match (buckets, counters) {
            (Some(buckets), Some(counters)) => Ok(Attached {
                prog,
                maps: Maps { buckets, counters },
            }),
            _ => Err(err("an attached ffrtmp network program")(std::io::Error::other(
                "its maps are missing (an ffrtmp of another version?)",
            ))),
        }
    }

    fn counters(&self, key: &NetKey) -> Result<Option<DirectionUsage>, NetError> {
        self.maps.counters(key)
    }
}

/// This process's loaded `ffrtmp-net` object: the programs it attaches to
/// jobs that have none of ours yet.
pub struct NetShaper {
    object: aya::Ebpf,
    maps: Maps,
}

impl NetShaper {
    /// Load and verify both programs (nothing is attached yet).
    pub fn load() -> Result<NetShaper, NetError> {
        let what = "loading the network eBPF object";
        let missing = |thing: String| err(what)(std::io::Error::other(format!("it has no {thing}")));
        let mut object = aya::EbpfLoader::new().load(OBJECT).map_err(err(what))?;
        for name in [common::PROG_EGRESS, common::PROG_INGRESS] {
            let program = object
                .program_mut(name)
                .ok_or_else(|| missing(format!("program {name}")))?;
            let prog: &mut CgroupSkb = program
                .try_into()
                .map_err(err(format!("{name} is not a cgroup_skb program")))?;
            prog.load()
                .map_err(err(format!("loading {name} (refused by the kernel's verifier?)")))?;
        }
        let mut map = |name: &str| object.take_map(name).ok_or_else(|| missing(format!("map {name}")));
        let buckets = HashMap::try_from(map(common::BUCKETS)?).map_err(err(common::BUCKETS))?;
        let counters = PerCpuHashMap::try_from(map(common::COUNTERS)?).map_err(err(common::COUNTERS))?;
        Ok(NetShaper {
            object,
            maps: Maps { buckets, counters },
        })
    }

    fn prog(&self, hook: Hook) -> Result<BorrowedFd<'_>, NetError> {
        let name = prog_name(hook);
        let what = "the loaded network program";
        let program = self
            .object
            .program(name)
            .ok_or_else(|| err(what)(std::io::Error::other(format!("{name} is missing"))))?;
        let prog = <&CgroupSkb>::try_from(program).map_err(err(what))?;
        prog.fd().map(|fd| fd.as_fd()).map_err(err(what))
    }

    /// Detach our program from `cgroup` at `hook` (and with egress its TCP
    /// pacing), if one is attached.
    pub fn unset(cgroup: &JobSocketCgroup, hook: Hook) -> Result<(), NetError> {
        if hook == Hook::Egress {
            pace(cgroup, None)?;
        }
        let Some(mut found) = cgroup.attached(hook)? else {
            return Ok(());
        };
        detach(cgroup, hook, &found.prog)?;
        found.maps.remove(&cgroup.key(hook));
        Ok(())
    }

    /// Make `cgroup`'s limit at `hook` be `bucket` (`None`: no limit, and
    /// no program of ours attached there). `Ok(Some(why))`: applied, but
    /// its TCP connections do not pace themselves (the bucket polices them).
    pub fn set(
        &mut self,
        cgroup: &JobSocketCgroup,
        hook: Hook,
        bucket: Option<NetBucket>,
    ) -> Result<Option<String>, NetError> {
        let key = cgroup.key(hook);
        let Some(bucket) = bucket else {
            return NetShaper::unset(cgroup, hook).map(|()| None);
        };
        match cgroup.attached(hook)? {
            Some(mut found) => found.maps.set(&key, bucket)?,
            None => {
                // The rate first: an attached program without it passes all.
                self.maps.set(&key, bucket)?;
                let attach = bpf::attach(cgroup.dir.as_fd(), self.prog(hook)?, hook);
                attach.map_err(|e| {
                    self.maps.remove(&key);
                    err(format!("attaching to {}", cgroup.path.display()))(e)
                })?;
            }
        }
        if hook != Hook::Egress {
            return Ok(None);
        }
        // TCP pacing at the rate; without it the bucket alone still holds
        // the job, so a refusal is reported, not failed.
        Ok(pace(cgroup, Some(bucket.bytes_per_sec)).err().map(|e| e.to_string()))
    }
}

fn detach(cgroup: &JobSocketCgroup, hook: Hook, prog: &OwnedFd) -> Result<(), NetError> {
    bpf::detach(cgroup.dir.as_fd(), prog.as_fd(), hook)
        .map_err(err(format!("detaching from {}", cgroup.path.display())))
}

/// Replace the job's TCP pacing program with one for `bytes_per_sec`
/// (`None`: remove it). A copy per job, its rate fixed at load time (see
/// `ffrtmp-ebpf/src/pace.rs`).
fn pace(cgroup: &JobSocketCgroup, bytes_per_sec: Option<u64>) -> Result<(), NetError> {
    if let Some((old, _)) = cgroup.ours(Hook::SockOps)? {
        detach(cgroup, Hook::SockOps, &old)?;
    }
    let Some(rate) = bytes_per_sec else { return Ok(()) };
    let what = "loading the TCP pacing program";
    let rate = u32::try_from(rate).unwrap_or(u32::MAX - 1);
    let mut object = aya::EbpfLoader::new()
        .override_global(common::PACE_RATE, &rate, true)
        .load(PACE_OBJECT)
        .map_err(err(what))?;
    let program = object.program_mut(common::PROG_PACE).ok_or_else(|| {
        err(what)(std::io::Error::other(format!(
            "it has no program {}",
            common::PROG_PACE
        )))
    })?;
    let prog: &mut SockOps = program.try_into().map_err(err(what))?;
    prog.load().map_err(err(what))?;
    let fd = prog.fd().map_err(err(what))?;
    // The attachment keeps the program once this object is dropped.
    bpf::attach(cgroup.dir.as_fd(), fd.as_fd(), Hook::SockOps).map_err(err(format!(
        "attaching the TCP pacing program to {}",
        cgroup.path.display()
    )))
}
