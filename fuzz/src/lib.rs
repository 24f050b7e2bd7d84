//! The bodies of the fuzz targets in `fuzz_targets/`: each feeds the input
//! to ffrtmp's own parser or decoder and checks what must hold of the
//! result. Nothing here parses: the oracles only re-render, re-parse and
//! compare.

use std::path::Path;

use ffrtmp::cgroup::limits::{self, CpuMax, CpuWeight, IoMax, Limits, MemoryMax, Nice, Version};
use ffrtmp::cgroup::{CgroupRoot, Hierarchy, JobId};
use ffrtmp::events::btf::{self, Btf};
use ffrtmp::events::netlink::{self, SequenceTracker};
use ffrtmp::process::ProcessInfo;
use ffrtmp::watch::config::{self, Overrides};
use ffrtmp::watch::{Filters, Rules, WatchConfig};
use ffrtmp_common::{CommKey, DecodeError, Event};

/// A `--watch-config` file's text, named `name` (its extension picks YAML
/// or TOML). When it loads, the effective configuration that
/// `--check-config` prints must load back to the same configuration, and
/// print the same again.
pub fn watch_config(data: &[u8], name: &str) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok((original, warnings)) = config::load_text(text, Path::new(name), &Overrides::default()) else {
        return;
    };
    let printed = config::render(&original, &warnings);
    let (reloaded, warnings_again) = config::load_text(&printed, Path::new("printed.yaml"), &Overrides::default())
        .unwrap_or_else(|e| {
            panic!("--check-config output does not load: {e}\n--- input\n{text}\n--- printed\n{printed}")
        });
    let same = |what: &str, equal: bool| {
        assert!(
            equal,
            "{what} changed through --check-config\n--- input\n{text}\n--- printed\n{printed}"
        );
    };
    same("the rules", effective(&reloaded.rules) == effective(&original.rules));
    same("the targets", reloaded.rules.targets == original.rules.targets);
    same("scan_interval", reloaded.scan_interval == original.scan_interval);
    same("cgroup_root", reloaded.cgroup_root == original.cgroup_root);
    same("backend", reloaded.backend == original.backend);
    same("metrics", reloaded.metrics_listen == original.metrics_listen);
    same("state", reloaded.state == original.state);
    same("retry", reloaded.retry == original.retry);
    // Printing is a fixed point: the same text but for the first line
    // (which names the file).
    let body = |s: &str| s.split_once('\n').map(|(_, rest)| rest.to_string()).unwrap_or_default();
    let reprinted = config::render(&reloaded, &warnings_again);
    assert_eq!(
        body(&reprinted),
        body(&printed),
        "--check-config output is not stable\n--- input\n{text}"
    );
    settings_are_consistent(&original);
}

/// Per configured command (targets and `commands` keys): its limits and
/// its filter sets that are not empty.
fn effective(rules: &Rules) -> Vec<(String, Limits, Vec<Filters>)> {
    let mut names: Vec<&String> = rules.targets.names().iter().chain(rules.commands.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let filters = rules.filters_for(name).filter(|f| **f != Filters::default()).cloned();
            (name.clone(), rules.limits_for(name).clone(), filters.collect())
        })
        .collect()
}

fn settings_are_consistent(config: &WatchConfig) {
    let rules = &config.rules;
    for name in rules.targets.names() {
        limits_translate(rules.limits_for(name));
    }
    limits_translate(&rules.default_limits);
}

/// What must hold of any `Limits` on both hierarchies: an update to the
/// same limits writes nothing; an update from "unknown" writes at least
/// every setting.
fn limits_translate(l: &Limits) {
    for version in [Version::V1, Version::V2] {
        let settings = l.settings(version);
        assert!(
            limits::update_settings(Some(l), l, version).is_empty(),
            "{l:?}: an unchanged limit is written"
        );
        let from_unknown = limits::update_settings(None, l, version);
        for s in &settings {
            assert!(from_unknown.contains(s), "{l:?}: {s:?} not written after a restart");
            assert!(!s.writes.is_empty(), "{l:?}: {s:?} writes no file");
        }
        let none = limits::update_settings(Some(l), &Limits::default(), version);
        assert!(
            settings.is_empty() || !none.is_empty(),
            "{l:?}: removing every limit resets nothing"
        );
    }
}

/// The parsers behind the limit flags, the file's limit keys and the other
/// value flags. The first byte picks the parser; the rest is the value.
/// A value that parses, printed the way ffrtmp prints it (in a cgroup
/// file, `--check-config` or a report), parses back to the same value.
pub fn limit_value(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else { return };
    let round_trip = |printed: String, again: bool| {
        assert!(
            again,
            "{s:?} printed as {printed:?} does not parse back to the same value"
        );
    };
    match which % 16 {
        0 => {
            if let Ok(c) = CpuMax::parse_percent(s) {
                let quota = c.quota_us.expect("a percentage always sets a quota");
                let pct = (quota / 1000).to_string();
                round_trip(pct.clone(), CpuMax::parse_percent(&pct) == Ok(c));
                round_trip(c.to_string(), CpuMax::parse(&c.to_string()) == Ok(c));
                limits_translate(&Limits {
                    cpu_max: Some(c),
                    ..Limits::default()
                });
            }
        }
        1 => {
            if let Ok(c) = CpuMax::parse(s) {
                round_trip(c.to_string(), CpuMax::parse(&c.to_string()) == Ok(c));
                limits_translate(&Limits {
                    cpu_max: Some(c),
                    ..Limits::default()
                });
            }
        }
        2 => {
            if let Ok(w) = CpuWeight::parse(s) {
                let printed = w.get().to_string();
                round_trip(printed.clone(), CpuWeight::parse(&printed) == Ok(w));
                assert!(
                    (2..=102_400).contains(&w.v1_shares()),
                    "{w:?}: cpu.shares out of the kernel's range"
                );
                limits_translate(&Limits {
                    cpu_weight: Some(w),
                    ..Limits::default()
                });
            }
        }
        3 => {
            if let Ok(m) = MemoryMax::parse_mb(s) {
                let printed = m.map_or(0, |m| m.bytes() >> 20).to_string();
                round_trip(printed.clone(), MemoryMax::parse_mb(&printed) == Ok(m));
                memory_translates(m);
            }
        }
        4 => {
            if let Ok(m) = MemoryMax::parse_bytes(s) {
                let printed = m.map_or("max".to_string(), |m| m.bytes().to_string());
                round_trip(printed.clone(), MemoryMax::parse_bytes(&printed) == Ok(m));
                memory_translates(m);
            }
        }
        5 => {
            // The path form (`/var/media wbps=1M`) stats the path and reads
            // /sys: it depends on this machine's file systems, so it is
            // left to the unit test with a fake /sys.
            if s.split_whitespace().next().is_some_and(|w| w.starts_with(['/', '.'])) {
                return;
            }
            if let Ok(io) = IoMax::parse(s) {
                round_trip(io.to_string(), IoMax::parse(&io.to_string()) == Ok(io.clone()));
                limits_translate(&Limits {
                    io_max: vec![io],
                    ..Limits::default()
                });
            }
        }
        6 => {
            if let Ok(n) = Nice::parse(s) {
                let printed = n.get().to_string();
                round_trip(printed.clone(), Nice::parse(&printed) == Ok(n));
            }
        }
        7 => {
            if let Ok(n) = limits::parse_size(s) {
                round_trip(n.to_string(), limits::parse_size(&n.to_string()) == Ok(n));
            }
        }
        8 => {
            if let Ok(root) = CgroupRoot::parse(s) {
                round_trip(
                    root.to_string(),
                    CgroupRoot::parse(&root.to_string()) == Ok(root.clone()),
                );
            }
        }
        9 => {
            if let Ok(id) = JobId::parse(s) {
                round_trip(id.to_string(), JobId::parse(id.as_str()) == Ok(id.clone()));
                assert!(!id.as_str().contains('/'), "job id {id:?} can leave its directory");
            }
        }
        10 => {
            if let Ok(addr) = config::parse_listen(s) {
                round_trip(addr.to_string(), config::parse_listen(&addr.to_string()) == Ok(addr));
            }
        }
        11 => {
            if let Ok(t) = config::parse_target(s) {
                round_trip(t.clone(), config::parse_target(&t) == Ok(t.clone()));
            }
        }
        12 => {
            if let Ok(d) = config::parse_scan_interval(s) {
                assert!(
                    d >= config::MIN_SCAN_INTERVAL,
                    "{s:?}: scan interval {d:?} below the minimum"
                );
            }
        }
        13 => {
            if let Ok(d) = config::parse_flush_interval(s) {
                assert!(!d.is_zero(), "{s:?}: flush interval of zero accepted");
            }
        }
        14 => {
            if let Ok(n) = config::parse_retry_attempts(s) {
                assert!(n <= config::MAX_RETRY_ATTEMPTS, "{s:?}: {n} retries accepted");
            }
        }
        _ => {
            let _ = config::parse_duration(s);
        }
    }
}

fn memory_translates(m: Option<MemoryMax>) {
    limits_translate(&Limits {
        memory_max: m,
        ..Limits::default()
    });
}

/// One datagram from the proc connector socket.
pub fn proc_connector(data: &[u8]) {
    let results = netlink::decode_datagram(data);
    // Every message takes a 16-byte header; at most one error ends it.
    assert!(
        results.len() <= data.len() / 16 + 1,
        "{} results from {} bytes",
        results.len(),
        data.len()
    );
    assert_eq!(
        results.is_empty(),
        data.is_empty(),
        "bytes without a result, or a result without bytes"
    );
    let mut tracker = SequenceTracker::default();
    for msg in results.iter().flatten() {
        tracker.observe(msg.cpu, msg.seq);
    }
    let first = netlink::decode_message(data);
    if let Ok(msg) = &first {
        // `cn_msg.seq` at 16 + 8, `proc_event.cpu` at 16 + 20 + 4.
        assert_eq!(msg.seq, u32_at(data, 24));
        assert_eq!(msg.cpu, u32_at(data, 40));
    }
    // A datagram holding exactly one message decodes as that message.
    if data.len() >= 16 && u32_at(data, 0) as usize == data.len() {
        assert_eq!(
            results[0], first,
            "the datagram and its only message decode differently"
        );
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// One ring buffer record (and the input's first [`Event::SIZE`] bytes as
/// one): decoded, it re-encodes to exactly its bytes.
pub fn ring_event(data: &[u8]) {
    match Event::from_bytes(data) {
        Ok(e) => assert_eq!(&e.to_bytes()[..], data, "{e:?} does not re-encode to its record"),
        Err(DecodeError::Length { len, need }) => {
            assert_eq!((len, need), (data.len(), Event::SIZE));
            assert_ne!(len, need);
        }
        Err(DecodeError::UnknownKind(k)) => assert!(k != Event::EXEC && k != Event::EXIT),
    }
    let Some(record) = data.get(..Event::SIZE) else { return };
    if let Ok(e) = Event::from_bytes(record) {
        assert_eq!(&e.to_bytes()[..], record, "{e:?} does not re-encode to its record");
        let _ = format!("{e:?}");
        let clk_tck = data.get(Event::SIZE).copied().map_or(100, u64::from);
        let ticks = e.start_time_ticks(clk_tck);
        assert!(ticks <= e.start_time_ns, "{ticks} ticks from {} ns", e.start_time_ns);
        let name = e.comm_name();
        assert!(!name.contains(&0), "comm {name:?} holds its NUL");
        // The key for this comm is the kernel's padding of it.
        let key = CommKey::new(name);
        assert!(name.starts_with(key.name()) && key.name().len() <= 15);
    }
}

/// A BTF blob: parsing and every lookup the eBPF loader does (and one of
/// an array member, `comm`, for the array size path).
pub fn btf(data: &[u8]) {
    let Ok(btf) = Btf::parse(data) else { return };
    const LOOKUPS: [(&str, &str); 12] = [
        ("task_struct", "comm"),
        ("task_struct", "pid"),
        ("task_struct", "tgid"),
        ("task_struct", "real_parent"),
        ("task_struct", "parent"),
        ("task_struct", "group_leader"),
        ("task_struct", "start_boottime"),
        ("task_struct", "exit_code"),
        ("task_struct", "signal"),
        ("signal_struct", "live"),
        ("signal_struct", "flags"),
        ("signal_struct", "group_exit_code"),
    ];
    for (strukt, member) in LOOKUPS {
        if btf.member(strukt, member).is_ok() {
            assert!(
                btf.struct_id(strukt).is_ok(),
                "{strukt}.{member} found without {strukt}"
            );
        }
    }
    if let Ok(offsets) = btf::offsets(&btf) {
        assert_eq!(offsets.magic, ffrtmp_common::Offsets::MAGIC);
        let tgid = btf.member("task_struct", "tgid").expect("offsets() found it");
        assert_eq!(offsets.task_tgid, tgid.offset);
    }
}

/// `/proc/self/mountinfo`, a NUL, then `/proc/self/cgroup`.
pub fn hierarchy(data: &[u8]) {
    let (mountinfo, cgroup) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(h) = Hierarchy::from_readers(mountinfo, cgroup) else {
        return;
    };
    let _ = h.describe();
    let mounts: Vec<_> = match &h {
        Hierarchy::Unified(m) => vec![m],
        Hierarchy::Legacy { controllers } | Hierarchy::Hybrid { controllers, .. } => {
            assert!(
                controllers.contains_key(&ffrtmp::cgroup::Controller::Cpu)
                    || controllers.contains_key(&ffrtmp::cgroup::Controller::Memory),
                "a v1 hierarchy without cpu and memory: {h:?}"
            );
            controllers.values().collect()
        }
    };
    for m in mounts {
        // A job's directory is always inside its hierarchy's mount.
        let own = m.dir(&m.own_cgroup);
        assert!(own.starts_with(&m.mount_point), "{own:?} outside {:?}", m.mount_point);
        let root = CgroupRoot::default().resolve(m);
        assert!(m.dir(&root).starts_with(&m.mount_point));
    }
}

/// `/proc/<pid>/stat`.
pub fn proc_stat(data: &[u8]) {
    let Ok(info) = ProcessInfo::parse_stat(data, Path::new("/proc/fuzz/stat")) else {
        return;
    };
    // comm is what stands between the first '(' and the last ')'.
    let text = String::from_utf8_lossy(data);
    assert!(
        text.contains(&format!("({})", info.comm)),
        "comm {:?} not in {text:?}",
        info.comm
    );
    let _ = info.is_kernel_thread();
    let _ = info.is_zombie();
}
