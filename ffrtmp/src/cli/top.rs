//! `ffrtmp top`: a live view of the governed jobs against their limits.
//!
//! Read-only like `ffrtmp status`, whose reading of the cgroup tree it
//! shares (`jobs_now`). The parts that decide are pure and tested without a
//! terminal or root: a [`Snapshot`] is the jobs read at one instant, two of
//! them make the [`Row`]s (each job with its [`Rates`] over the interval),
//! and [`render`] draws rows into a ratatui [`Buffer`] of any size. Only
//! [`execute`] touches the terminal: raw mode, the alternate screen and the
//! cursor are restored on every way out (q, Ctrl-C, a signal, an error, a
//! panic). When stdout is not a terminal it prints one snapshot instead.

use std::cmp::Ordering;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Args;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};

use super::jobs_now::{JobStatus, cpu_percent, pid_list, read_jobs};
use crate::cgroup::{CgroupRoot, Governor, Hierarchy, Version};
use crate::net::NetRate;
use crate::watch::config::parse_duration;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Where job cgroups live: absolute (/ffrtmp) or relative to ffrtmp's own cgroup
    #[arg(long, value_name = "PATH", env = "FFRTMP_CGROUP_ROOT", default_value = "/ffrtmp", value_parser = CgroupRoot::parse)]
    pub cgroup_root: CgroupRoot,
    /// How often the view is read and redrawn; rates are over this interval (at least 100ms)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval, allow_hyphen_values = true)]
    pub interval: Duration,
}

/// The shortest `--interval`: below it the counters move too little
/// between two reads for a rate to mean much, and the reads cost.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// `--interval`: a duration as `--scan-interval` takes them, at least
/// [`MIN_INTERVAL`].
fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Ok(d) if d >= MIN_INTERVAL => Ok(d),
        Err(e) if e.starts_with("a duration cannot be negative") => Err(e),
        _ => Err("expected a duration of at least 100ms such as 1s, 500ms or 5s".into()),
    }
}

// ---------------------------------------------------------------------------
// Snapshots and rates (pure)

/// The jobs under the root as read at one instant.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub(super) at: Instant,
    pub(super) jobs: Vec<JobStatus>,
}

impl Snapshot {
    fn read(governor: &Governor) -> Snapshot {
        let jobs = read_jobs(governor, SystemTime::now());
        Snapshot {
            at: Instant::now(),
            jobs,
        }
    }
}

/// A flow against its limit, both per second in the same unit (`limit`:
/// `None` when there is none).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Flow {
    pub(super) rate: f64,
    pub(super) limit: Option<f64>,
}

/// What moved in one job between two snapshots. A `None` is a counter this
/// kernel or job does not offer (or one that went backwards: a new job of
/// the same id).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Rates {
    /// CPU used, in cores (1.0 = one core busy the whole interval).
    pub(super) cpu_cores: Option<f64>,
    /// Share of the interval's CFS periods in which the job was throttled
    /// (0..=1); `None` without a quota (no periods elapse).
    pub(super) throttled_share: Option<f64>,
    /// Processes OOM-killed in the interval.
    pub(super) oom_kills: u64,
    /// Bytes per second. Against a limit: the devices that have one.
    pub(super) io_read: Option<Flow>,
    pub(super) io_write: Option<Flow>,
    /// Bits per second through the network programs (jobs with a network limit).
    pub(super) net_out: Option<Flow>,
    pub(super) net_in: Option<Flow>,
}

/// One job as the view shows it: its latest reading and, from the second
/// reading on, its rates.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) job: JobStatus,
    pub(super) rates: Option<Rates>,
}

/// The rows for `now`: one per job in it (a job that ended is gone, one
/// that started is there, without rates until its second reading).
pub(super) fn rows(prev: Option<&Snapshot>, now: &Snapshot) -> Vec<Row> {
    now.jobs
        .iter()
        .map(|job| {
            let rates = prev.and_then(|p| {
                let before = p.jobs.iter().find(|j| j.job_id == job.job_id)?;
                Rates::between(before, job, now.at.saturating_duration_since(p.at))
            });
            Row {
                job: job.clone(),
                rates,
            }
        })
        .collect()
}

impl Rates {
    /// From two readings of one job `elapsed` apart; `None` when no time passed.
    pub(super) fn between(before: &JobStatus, now: &JobStatus, elapsed: Duration) -> Option<Rates> {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let (b, n) = (&before.usage, &now.usage);
        let delta = |a: Option<u64>, z: Option<u64>| z?.checked_sub(a?);
        let cpu_cores = match (b.cpu_seconds, n.cpu_seconds) {
            (Some(a), Some(z)) if z >= a => Some((z - a) / secs),
            _ => None,
        };
        let throttled_share = match (
            delta(b.cpu_periods, n.cpu_periods),
            delta(b.throttled_periods, n.throttled_periods),
        ) {
            (Some(periods), Some(throttled)) if periods > 0 => Some((throttled as f64 / periods as f64).min(1.0)),
            // Under a quota, an idle job lets no period elapse: not throttled.
            (Some(0), Some(0)) if now.limits.cpu_max.is_some() => Some(0.0),
            _ => None,
        };
        let io = |write: bool| -> Option<Flow> {
            let bytes = |usage: &super::jobs_now::UsageNow, device: Option<&str>| -> u64 {
                usage
                    .io_bytes
                    .iter()
                    .filter(|io| device.is_none_or(|d| d == io.device))
                    .map(|io| if write { io.write_bytes } else { io.read_bytes })
                    .sum()
            };
            let limited: Vec<(&str, u64)> = now
                .limits
                .io_max
                .iter()
                .filter_map(|l| Some((l.device.as_str(), if write { l.wbps } else { l.rbps }?)))
                .collect();
            if limited.is_empty() {
                if n.io_bytes.is_empty() {
                    return None;
                }
                let moved = bytes(n, None).checked_sub(bytes(b, None))?;
                return Some(Flow {
                    rate: moved as f64 / secs,
                    limit: None,
                });
            }
            let mut moved = 0;
            for (device, _) in &limited {
                moved += bytes(n, Some(device)).checked_sub(bytes(b, Some(device)))?;
            }
            Some(Flow {
                rate: moved as f64 / secs,
                limit: Some(limited.iter().map(|(_, l)| *l as f64).sum()),
            })
        };
        let net = |out: bool| -> Option<Flow> {
            let passed = |u: &super::jobs_now::UsageNow| {
                let net = u.network?;
                Some(if out { net.egress } else { net.ingress }?.passed_bytes)
            };
            let moved = passed(n)?.checked_sub(passed(b)?)?;
            let limit = if out {
                &now.limits.net_egress_max
            } else {
                &now.limits.net_ingress_max
            };
            Some(Flow {
                rate: moved as f64 * 8.0 / secs,
                limit: limit
                    .as_deref()
                    .and_then(|l| NetRate::parse(l).ok())
                    .map(|r| r.bits_per_sec() as f64),
            })
        };
        Some(Rates {
            cpu_cores,
            throttled_share,
            oom_kills: delta(b.oom_kills, n.oom_kills).unwrap_or(0),
            io_read: io(false),
            io_write: io(true),
            net_out: net(true),
            net_in: net(false),
        })
    }
}

// ---------------------------------------------------------------------------
// Sorting

/// What the rows are sorted by; each has a key in the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SortKey {
    Cpu,
    Throttled,
    Memory,
    Oom,
    Io,
    Net,
    Job,
    Age,
}

impl SortKey {
    /// (key, what the footer calls it, the sort key).
    const KEYS: [(char, &'static str, SortKey); 8] = [
        ('c', "cpu", SortKey::Cpu),
        ('t', "thr", SortKey::Throttled),
        ('m', "mem", SortKey::Memory),
        ('o', "oom", SortKey::Oom),
        ('i', "io", SortKey::Io),
        ('n', "net", SortKey::Net),
        ('j', "job", SortKey::Job),
        ('a', "age", SortKey::Age),
    ];

    fn from_key(c: char) -> Option<SortKey> {
        SortKey::KEYS.iter().find(|(k, _, _)| *k == c).map(|(_, _, s)| *s)
    }

    fn name(self) -> &'static str {
        SortKey::KEYS
            .iter()
            .find(|(_, _, s)| *s == self)
            .map_or("", |(_, n, _)| n)
    }

    /// The column this key sorts (its header is marked).
    fn column(self) -> Col {
        match self {
            SortKey::Cpu => Col::Cpu,
            SortKey::Throttled => Col::Thr,
            SortKey::Memory => Col::Mem,
            SortKey::Oom => Col::Oom,
            SortKey::Io => Col::Io,
            SortKey::Net => Col::Net,
            SortKey::Job => Col::Job,
            SortKey::Age => Col::Age,
        }
    }
}

/// The sort in force: by `key`, highest first unless `reverse` (the job id,
/// alone, goes A to Z first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sort {
    pub(super) key: SortKey,
    pub(super) reverse: bool,
}

impl Default for Sort {
    fn default() -> Sort {
        Sort {
            key: SortKey::Cpu,
            reverse: false,
        }
    }
}

impl Sort {
    /// Rows in this order; ties (and rows without the value, last) by job id.
    fn apply(self, rows: &[Row]) -> Vec<&Row> {
        let mut sorted: Vec<&Row> = rows.iter().collect();
        let flow_sum =
            |flows: [Option<Flow>; 2]| -> Option<f64> { flows.iter().flatten().map(|f| f.rate).reduce(|a, b| a + b) };
        let value = |r: &Row| -> Option<f64> {
            let rates = r.rates.as_ref();
            match self.key {
                SortKey::Cpu => rates?.cpu_cores,
                SortKey::Throttled => rates?.throttled_share,
                SortKey::Memory => r.job.usage.memory_current_bytes.map(|b| b as f64),
                SortKey::Oom => r.job.usage.oom_kills.map(|n| n as f64),
                SortKey::Io => flow_sum([rates?.io_read, rates?.io_write]),
                SortKey::Net => flow_sum([rates?.net_out, rates?.net_in]),
                SortKey::Age => r.job.age_seconds,
                SortKey::Job => None,
            }
        };
        sorted.sort_by(|a, b| {
            let by_id = a.job.job_id.cmp(&b.job.job_id);
            if self.key == SortKey::Job {
                return if self.reverse { by_id.reverse() } else { by_id };
            }
            let order = match (value(a), value(b)) {
                (Some(x), Some(y)) => {
                    let highest_first = y.partial_cmp(&x).unwrap_or(Ordering::Equal);
                    if self.reverse {
                        highest_first.reverse()
                    } else {
                        highest_first
                    }
                }
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            order.then(by_id)
        });
        sorted
    }
}

// ---------------------------------------------------------------------------
// Rendering (pure)

/// Everything one frame shows.
#[derive(Debug)]
pub(super) struct View<'a> {
    pub(super) cgroup_root: &'a str,
    pub(super) version: Version,
    /// The root's directory (in the cpu hierarchy on v1), for "no jobs".
    pub(super) root_dir: Option<PathBuf>,
    pub(super) rows: &'a [Row],
    pub(super) sort: Sort,
    pub(super) interval: Duration,
    /// Colors (off with NO_COLOR); bold and reverse video are kept.
    pub(super) color: bool,
    /// The full-screen view (title, keys in a footer); off for the one
    /// snapshot printed when stdout is not a terminal.
    pub(super) interactive: bool,
}

/// The table's columns, in screen order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Job,
    Mode,
    Pids,
    Cmd,
    Age,
    Cpu,
    Quota,
    CpuBar,
    Thr,
    Mem,
    Peak,
    MemBar,
    Limit,
    Oom,
    Io,
    Net,
}

/// Cells a bar takes (the percentage follows it).
const BAR: usize = 8;
/// A bar cell: the bar, a space, "100%".
const BAR_CELL: usize = BAR + 5;

impl Col {
    const ALL: [Col; 16] = [
        Col::Job,
        Col::Mode,
        Col::Pids,
        Col::Cmd,
        Col::Age,
        Col::Cpu,
        Col::Quota,
        Col::CpuBar,
        Col::Thr,
        Col::Mem,
        Col::Peak,
        Col::MemBar,
        Col::Limit,
        Col::Oom,
        Col::Io,
        Col::Net,
    ];

    /// Dropped first to last when the terminal is too narrow; the others
    /// (job, CPU, its bar, throttled, memory, its bar, OOM kills) always show.
    const DROP_ORDER: [Col; 9] = [
        Col::Peak,
        Col::Mode,
        Col::Age,
        Col::Pids,
        Col::Limit,
        Col::Net,
        Col::Io,
        Col::Quota,
        Col::Cmd,
    ];

    fn header(self) -> &'static str {
        match self {
            Col::Job => "JOB",
            Col::Mode => "MODE",
            Col::Pids => "PIDS",
            Col::Cmd => "COMMAND",
            Col::Age => "AGE",
            Col::Cpu => "CPU%",
            Col::Quota => "QUOTA",
            Col::CpuBar => "CPU/QUOTA",
            Col::Thr => "THR%",
            Col::Mem => "MEM",
            Col::Peak => "PEAK",
            Col::MemBar => "MEM/LIMIT",
            Col::Limit => "LIMIT",
            Col::Oom => "OOM",
            Col::Io => "IO B/s",
            Col::Net => "NET bit/s",
        }
    }

    /// Numbers are right-aligned.
    fn right_aligned(self) -> bool {
        matches!(
            self,
            Col::Age | Col::Cpu | Col::Quota | Col::Thr | Col::Mem | Col::Peak | Col::Oom
        )
    }

    /// The widest a cell may make the column, and the narrowest it may be
    /// squeezed to when even the essential columns do not fit.
    fn widths(self) -> (usize, usize) {
        match self {
            Col::Job => (24, 8),
            Col::Cmd => (15, 6),
            Col::Pids => (16, 4),
            Col::CpuBar | Col::MemBar => (BAR_CELL, BAR_CELL),
            Col::Io | Col::Net => (24, 6),
            _ => (12, 3),
        }
    }
}

/// How close to its limit a value is: the color of its cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Normal,
    Warn,
    Hot,
}

impl Level {
    fn of(share: f64, warn: f64, hot: f64) -> Level {
        if share >= hot {
            Level::Hot
        } else if share >= warn {
            Level::Warn
        } else {
            Level::Normal
        }
    }

    fn style(self, color: bool) -> Style {
        match (self, color) {
            (_, false) | (Level::Normal, true) => Style::default(),
            (Level::Warn, true) => Style::default().fg(Color::Yellow),
            (Level::Hot, true) => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        }
    }
}

/// One cell: its text, or a bar filled to `bar` (0..=1) with the text after it.
#[derive(Debug, Clone)]
struct Cell {
    text: String,
    bar: Option<f64>,
    level: Level,
}

impl Cell {
    fn text(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            bar: None,
            level: Level::Normal,
        }
    }

    fn level(mut self, level: Level) -> Cell {
        self.level = level;
        self
    }

    /// A bar of `used` against `limit`, its percentage after it.
    fn bar(used: f64, limit: f64, warn: f64, hot: f64) -> Cell {
        let share = if limit > 0.0 { used / limit } else { 0.0 };
        Cell {
            text: format!("{:>3.0}%", (share * 100.0).min(999.0)),
            bar: Some(share.clamp(0.0, 1.0)),
            level: Level::of(share, warn, hot),
        }
    }

    fn width(&self) -> usize {
        match self.bar {
            Some(_) => BAR_CELL,
            None => self.text.chars().count(),
        }
    }
}

/// The text of a rate cell before the first rates are in.
const PENDING: &str = "…";

fn cell(col: Col, row: &Row) -> Cell {
    let job = &row.job;
    let (u, l) = (&job.usage, &job.limits);
    let rates = row.rates.as_ref();
    let dash = || Cell::text("-");
    let pending = || Cell::text(PENDING);
    match col {
        Col::Job => Cell::text(job.job_id.clone()),
        Col::Mode => Cell::text(job.mode),
        Col::Pids => Cell::text(pid_list(&job.pids)),
        Col::Cmd => Cell::text(job.command.clone().unwrap_or_else(|| "-".into())),
        Col::Age => job.age_seconds.map_or_else(dash, |s| Cell::text(short_age(s))),
        Col::Cpu => match rates {
            None => pending(),
            Some(r) => r.cpu_cores.map_or_else(dash, |c| Cell::text(short_percent(c * 100.0))),
        },
        Col::Quota => l
            .cpu_max
            .map_or_else(dash, |c| Cell::text(cpu_percent(c.quota_us, c.period_us))),
        Col::CpuBar => match (l.cpu_max, rates) {
            (None, _) => Cell::text("no quota"),
            (Some(_), None) => pending(),
            (Some(q), Some(r)) => match r.cpu_cores {
                Some(cores) if q.period_us > 0 => Cell::bar(cores, q.quota_us as f64 / q.period_us as f64, 0.7, 0.9),
                _ => dash(),
            },
        },
        Col::Thr => match rates {
            None => pending(),
            Some(r) => r.throttled_share.map_or_else(dash, |s| {
                Cell::text(format!("{:.0}", s * 100.0)).level(Level::of(s, 0.05, 0.5))
            }),
        },
        Col::Mem => u.memory_current_bytes.map_or_else(dash, |b| Cell::text(short_bytes(b))),
        Col::Peak => u.memory_peak_bytes.map_or_else(dash, |b| Cell::text(short_bytes(b))),
        Col::MemBar => match (u.memory_current_bytes, l.memory_high_bytes.or(l.memory_max_bytes)) {
            (_, None) => Cell::text("no limit"),
            (Some(current), Some(limit)) => Cell::bar(current as f64, limit as f64, 0.75, 0.9),
            (None, Some(_)) => dash(),
        },
        Col::Limit => match (l.memory_high_bytes, l.memory_max_bytes) {
            (Some(h), Some(m)) => Cell::text(format!("h{} m{}", short_bytes(h), short_bytes(m))),
            (Some(h), None) => Cell::text(format!("high {}", short_bytes(h))),
            (None, Some(m)) => Cell::text(format!("max {}", short_bytes(m))),
            (None, None) => dash(),
        },
        Col::Oom => match u.oom_kills {
            None => dash(),
            Some(n) => {
                let new = rates.map_or(0, |r| r.oom_kills);
                let level = match (new, n) {
                    (1.., _) => Level::Hot,
                    (0, 1..) => Level::Warn,
                    _ => Level::Normal,
                };
                Cell::text(n.to_string()).level(level)
            }
        },
        Col::Io => match rates {
            None if l.io_max.is_empty() && u.io_bytes.is_empty() => dash(),
            None => pending(),
            Some(r) => flows_cell(&[("r", r.io_read), ("w", r.io_write)], short_bytes_f),
        },
        Col::Net => match rates {
            None if l.net_egress_max.is_none() && l.net_ingress_max.is_none() => dash(),
            None => pending(),
            Some(r) => flows_cell(&[("out", r.net_out), ("in", r.net_in)], short_bits),
        },
    }
}

/// "r 1.2M w 19M/20M": each flow that has a counter, its limit after a
/// slash; a flow without a limit that did not move is left out ("0" when
/// none is left).
fn flows_cell(flows: &[(&str, Option<Flow>)], unit: fn(f64) -> String) -> Cell {
    let mut parts = Vec::new();
    let mut level = Level::Normal;
    let counted = flows.iter().any(|(_, f)| f.is_some());
    for (name, flow) in flows {
        let Some(f) = flow else { continue };
        match f.limit {
            None if f.rate == 0.0 => {}
            Some(limit) => {
                parts.push(format!("{name} {}/{}", unit(f.rate), unit(limit)));
                if limit > 0.0 {
                    level = level.max_with(Level::of(f.rate / limit, 0.7, 0.9));
                }
            }
            None => parts.push(format!("{name} {}", unit(f.rate))),
        }
    }
    if parts.is_empty() {
        return Cell::text(if counted { "0" } else { "-" });
    }
    Cell::text(parts.join(" ")).level(level)
}

impl Level {
    fn max_with(self, other: Level) -> Level {
        let rank = |l: Level| match l {
            Level::Normal => 0,
            Level::Warn => 1,
            Level::Hot => 2,
        };
        if rank(other) > rank(self) { other } else { self }
    }
}

/// The columns shown in `width` cells and each one's width.
fn layout(rows: &[&Row], width: usize) -> Vec<(Col, usize)> {
    let has = |f: &dyn Fn(&Row) -> bool| rows.iter().any(|r| f(r));
    let io_used = has(&|r| !r.job.limits.io_max.is_empty() || !r.job.usage.io_bytes.is_empty());
    let net_used = has(&|r| r.job.limits.net_egress_max.is_some() || r.job.limits.net_ingress_max.is_some());
    let mut cols: Vec<(Col, usize)> = Col::ALL
        .iter()
        .filter(|c| match c {
            Col::Io => io_used,
            Col::Net => net_used,
            _ => true,
        })
        .map(|&c| {
            let (max, _) = c.widths();
            let content = rows.iter().map(|r| cell(c, r).width()).max().unwrap_or(0);
            (c, content.min(max).max(c.header().chars().count()))
        })
        .collect();
    let total = |cols: &[(Col, usize)]| cols.iter().map(|(_, w)| w + 1).sum::<usize>().saturating_sub(1);
    // Narrow the job id and the command to `least` (at most) to make room.
    let squeeze = |cols: &mut Vec<(Col, usize)>, least: &dyn Fn(Col) -> usize| {
        for col in [Col::Job, Col::Cmd] {
            let over = total(cols).saturating_sub(width);
            if over == 0 {
                break;
            }
            if let Some((c, w)) = cols.iter_mut().find(|(c, _)| *c == col) {
                *w = (*w).saturating_sub(over).max(least(*c).min(*w));
            }
        }
    };
    let (first, quota_and_command) = Col::DROP_ORDER.split_at(Col::DROP_ORDER.len() - 2);
    for drop in first {
        if total(&cols) <= width {
            break;
        }
        cols.retain(|(c, _)| c != drop);
    }
    // Before the quota and the command go, a long job id gives way (to 16).
    squeeze(&mut cols, &|_| 16);
    for drop in quota_and_command {
        if total(&cols) <= width {
            break;
        }
        cols.retain(|(c, _)| c != drop);
    }
    squeeze(&mut cols, &|c| c.widths().1);
    cols
}

/// Draw the view into `area` of `buf`. Never panics, however small the area.
pub(super) fn render(view: &View, area: Rect, buf: &mut Buffer) {
    let area = area.intersection(buf.area);
    if area.width == 0 || area.height == 0 {
        return;
    }
    let width = usize::from(area.width);
    let bottom = area.y + area.height;
    let mut y = area.y;
    let rows = view.sort.apply(view.rows);
    let put = |buf: &mut Buffer, y: u16, x: u16, text: &str, max: usize, style: Style| {
        if y < bottom && x < area.x + area.width {
            let room = usize::from(area.x + area.width - x);
            buf.set_stringn(x, y, text, max.min(room), style);
        }
    };
    let version = match view.version {
        Version::V1 => "v1",
        Version::V2 => "v2",
    };
    // The footer takes the last line; the rest is the title and the table.
    let table_bottom = if view.interactive && area.height > 2 {
        bottom - 1
    } else {
        bottom
    };
    if view.interactive {
        let shown = usize::from(table_bottom.saturating_sub(area.y + 2)).min(rows.len());
        let count = if shown < rows.len() {
            format!("{shown} of {} jobs shown", rows.len())
        } else if rows.len() == 1 {
            "1 job".to_string()
        } else {
            format!("{} jobs", rows.len())
        };
        // Job ids go A to Z first, every other key highest first.
        let ascending = (view.sort.key == SortKey::Job) != view.sort.reverse;
        let order = if ascending { "▲" } else { "▼" };
        let title = format!(
            "ffrtmp top · {} (cgroup {version}) · {count} · every {} · sort: {} {order}",
            view.cgroup_root,
            humantime::format_duration(view.interval),
            view.sort.key.name()
        );
        put(
            buf,
            y,
            area.x,
            &title,
            width,
            Style::default().add_modifier(Modifier::BOLD),
        );
        y += 1;
        if area.height > 2 {
            put(buf, bottom - 1, area.x, &footer(view.sort), width, Style::default());
        }
    }
    if rows.is_empty() {
        let dir = view
            .root_dir
            .as_ref()
            .map(|d| format!(" ({})", d.display()))
            .unwrap_or_default();
        let line = format!("no governed jobs under {}{dir}", view.cgroup_root);
        put(buf, y, area.x, &line, width, Style::default());
        return;
    }
    let cols = layout(&rows, width);
    let header_style = Style::default().add_modifier(Modifier::REVERSED);
    if y < table_bottom {
        buf.set_style(Rect::new(area.x, y, area.width, 1), header_style);
        let mut x = area.x;
        for &(col, w) in &cols {
            let style = if col == view.sort.key.column() {
                header_style.add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
            } else {
                header_style
            };
            put(buf, y, x, &align(col.header(), w, col.right_aligned()), w, style);
            x = x.saturating_add(w as u16 + 1);
        }
        y += 1;
    }
    for row in rows {
        if y >= table_bottom {
            break;
        }
        let mut x = area.x;
        for &(col, w) in &cols {
            let c = cell(col, row);
            let style = c.level.style(view.color);
            match c.bar {
                Some(share) => {
                    let (filled, empty) = bar(share, BAR);
                    put(buf, y, x, &filled, w, style);
                    let x_empty = x.saturating_add(filled.chars().count() as u16);
                    let dim = if view.color {
                        Style::default().fg(Color::DarkGray)
                    } else {
                        Style::default()
                    };
                    put(buf, y, x_empty, &empty, w.saturating_sub(filled.chars().count()), dim);
                    let x_text = x.saturating_add(BAR as u16 + 1);
                    put(buf, y, x_text, &c.text, w.saturating_sub(BAR + 1), style);
                }
                None => put(buf, y, x, &align(&c.text, w, col.right_aligned()), w, style),
            }
            x = x.saturating_add(w as u16 + 1);
        }
        y += 1;
    }
}

/// The keys, the current sort's underlined in spirit by brackets.
fn footer(sort: Sort) -> String {
    let keys: Vec<String> = SortKey::KEYS
        .iter()
        .map(|(k, name, key)| {
            if *key == sort.key {
                format!("[{k} {name}]")
            } else {
                format!("{k} {name}")
            }
        })
        .collect();
    format!("q quit  sort: {}  r reverse", keys.join(" "))
}

/// `text` in `width` cells: cut with "…" when longer, padded to the left
/// when right-aligned.
fn align(text: &str, width: usize, right: bool) -> String {
    let len = text.chars().count();
    if len > width {
        if width == 0 {
            return String::new();
        }
        return text.chars().take(width - 1).chain(std::iter::once('…')).collect();
    }
    if right {
        format!("{text:>width$}")
    } else {
        text.to_string()
    }
}

/// A bar `cells` wide filled to `share` (0..=1) in eighths: the filled
/// part and the empty part.
fn bar(share: f64, cells: usize) -> (String, String) {
    const PARTS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    let eighths = (share.clamp(0.0, 1.0) * (cells * 8) as f64).round() as usize;
    let full = eighths / 8;
    let mut filled = "█".repeat(full);
    let mut used = full;
    if full < cells && !eighths.is_multiple_of(8) {
        filled.push_str(PARTS[eighths % 8]);
        used += 1;
    }
    (filled, "░".repeat(cells - used))
}

/// Percent in at most 5 characters: "19.8", "150".
fn short_percent(p: f64) -> String {
    if p < 99.95 {
        format!("{p:.1}")
    } else {
        format!("{p:.0}")
    }
}

/// Bytes in at most 5 characters: "512B", "1.5M", "201M", "2.0G".
fn short_bytes(bytes: u64) -> String {
    short_unit(bytes as f64, 1024.0, &["B", "K", "M", "G", "T", "P"])
}

fn short_bytes_f(bytes: f64) -> String {
    short_unit(bytes, 1024.0, &["B", "K", "M", "G", "T", "P"])
}

/// Bits per second as tc's units go (decimal): "800k", "7.9M", "1.0G".
fn short_bits(bits: f64) -> String {
    short_unit(bits, 1000.0, &["", "k", "M", "G", "T", "P"])
}

fn short_unit(value: f64, step: f64, units: &[&str]) -> String {
    let mut v = value.max(0.0);
    let mut unit = 0;
    while v >= step * 0.9995 && unit < units.len() - 1 {
        v /= step;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0}{}", units[0])
    } else if v < 9.95 {
        format!("{v:.1}{}", units[unit])
    } else {
        format!("{v:.0}{}", units[unit])
    }
}

/// "42s", "5m03s", "2h05m", "3d04h".
fn short_age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The buffer's lines, trailing spaces cut.
fn buffer_text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in area.y..area.y + area.height {
        let mut line = String::new();
        for x in area.x..area.x + area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `NO_COLOR` set to anything but the empty string turns colors off (no-color.org).
fn color_wanted(no_color: Option<std::ffi::OsString>) -> bool {
    no_color.is_none_or(|v| v.is_empty())
}

// ---------------------------------------------------------------------------
// The terminal

pub fn execute(args: TopArgs) -> anyhow::Result<i32> {
    let hierarchy = Hierarchy::detect().context("detecting the cgroup hierarchy")?;
    // Governor::new, not job::governor: that one also collects garbage.
    let governor = Governor::new(hierarchy, args.cgroup_root);
    let color = color_wanted(std::env::var_os("NO_COLOR"));
    if !std::io::stdout().is_terminal() {
        return print_snapshot(&governor, args.interval);
    }
    live(&governor, args.interval, color)
}

fn view<'a>(
    governor: &'a Governor,
    root: &'a str,
    rows: &'a [Row],
    sort: Sort,
    interval: Duration,
    color: bool,
    interactive: bool,
) -> View<'a> {
    View {
        cgroup_root: root,
        version: governor.version(),
        root_dir: governor.root_dirs().into_iter().next(),
        rows,
        sort,
        interval,
        color,
        interactive,
    }
}

/// Not a terminal: two readings `interval` apart, one table, and a line
/// saying so.
fn print_snapshot(governor: &Governor, interval: Duration) -> anyhow::Result<i32> {
    let first = Snapshot::read(governor);
    std::thread::sleep(interval);
    let second = Snapshot::read(governor);
    let rows = rows(Some(&first), &second);
    let root = governor.root().to_string();
    let v = view(governor, &root, &rows, Sort::default(), interval, false, false);
    let text = snapshot_text(&v);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "ffrtmp top: stdout is not a terminal, so one snapshot (rates over {}); ffrtmp status --json is for scripts",
        humantime::format_duration(interval)
    )
    .and_then(|()| out.write_all(text.as_bytes()))
    .and_then(|()| out.flush())
    .context("writing to stdout")?;
    Ok(0)
}

/// The table as text, every column that has room in a wide line.
fn snapshot_text(view: &View) -> String {
    let height = u16::try_from(view.rows.len() + 1).unwrap_or(u16::MAX);
    let mut buf = Buffer::empty(Rect::new(0, 0, 250, height));
    render(view, buf.area, &mut buf);
    buffer_text(&buf)
}

/// Set by SIGINT, SIGTERM and SIGHUP: leave the loop and restore the terminal.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, AtomicOrdering::SeqCst);
}

fn catch_stop_signals() -> anyhow::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &action) }.with_context(|| format!("catching {signal}"))?;
    }
    Ok(())
}

/// Raw mode off, the alternate screen left, the cursor shown. Safe to call
/// twice (the panic hook, then the guard's drop).
fn restore_terminal() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::cursor::Show,
        crossterm::terminal::LeaveAlternateScreen
    );
}

/// What the terminal's input had for us.
enum Input {
    None,
    Ready,
    HungUp,
}

/// Wait up to `wait` for input on the terminal `fd`.
fn terminal_input(fd: std::os::fd::BorrowedFd, wait: Duration) -> std::io::Result<Input> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(Input::None),
        Err(e) => return Err(e.into()),
    }
    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
    Ok(
        if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            Input::HungUp
        } else if revents.contains(PollFlags::POLLIN) {
            Input::Ready
        } else {
            Input::None
        },
    )
}

/// What a key does.
#[derive(Debug, PartialEq, Eq)]
enum KeyOutcome {
    Quit,
    Redraw,
    Nothing,
}

/// `q`, Esc and Ctrl-C quit; `r` reverses the sort; a sort key sorts by
/// its column (highest first again).
fn on_event(event: crossterm::event::Event, sort: &mut Sort) -> KeyOutcome {
    use crossterm::event::{Event, KeyCode, KeyEventKind, KeyModifiers};
    let Event::Key(key) = event else {
        return match event {
            Event::Resize(..) => KeyOutcome::Redraw,
            _ => KeyOutcome::Nothing,
        };
    };
    if key.kind == KeyEventKind::Release {
        return KeyOutcome::Nothing;
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc => KeyOutcome::Quit,
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => KeyOutcome::Quit,
        KeyCode::Char('r') => {
            sort.reverse = !sort.reverse;
            KeyOutcome::Redraw
        }
        KeyCode::Char(c) => match SortKey::from_key(c.to_ascii_lowercase()) {
            Some(key) => {
                *sort = Sort { key, reverse: false };
                KeyOutcome::Redraw
            }
            None => KeyOutcome::Nothing,
        },
        _ => KeyOutcome::Nothing,
    }
}

/// Restores the terminal when dropped: on return, on `?`, on unwinding.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn live(governor: &Governor, interval: Duration, color: bool) -> anyhow::Result<i32> {
    use std::os::fd::AsFd;

    use crossterm::event;

    catch_stop_signals()?;
    // Restore before the panic message is printed, so it lands on the
    // normal screen; the guard below covers every other way out.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
    let _guard = TerminalGuard;
    crossterm::terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
    crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::EnterAlternateScreen,
        crossterm::cursor::Hide
    )
    .context("entering the alternate screen")?;
    let mut terminal = ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))
        .context("setting up the terminal")?;
    let root = governor.root().to_string();
    let mut sort = Sort::default();
    let mut previous: Option<Snapshot> = None;
    let mut rows_now: Vec<Row> = Vec::new();
    let mut next_read = Instant::now();
    let mut dirty = true;
    let mut drawn_size = ratatui::layout::Size::default();
    // Where crossterm reads keys from: stdin when it is the terminal, else
    // /dev/tty.
    let (stdin, tty);
    stdin = std::io::stdin();
    let input = if stdin.is_terminal() {
        stdin.as_fd()
    } else {
        tty = std::fs::File::open("/dev/tty").context("opening /dev/tty for the keyboard")?;
        tty.as_fd()
    };
    loop {
        if STOP.load(AtomicOrdering::SeqCst) {
            break;
        }
        let now = Instant::now();
        if now >= next_read {
            let snapshot = Snapshot::read(governor);
            rows_now = rows(previous.as_ref(), &snapshot);
            previous = Some(snapshot);
            next_read += interval;
            if next_read <= now {
                next_read = now + interval;
            }
            dirty = true;
        }
        if dirty {
            let v = view(governor, &root, &rows_now, sort, interval, color, true);
            let frame = terminal
                .draw(|frame| render(&v, frame.area(), frame.buffer_mut()))
                .context("drawing the view")?;
            drawn_size = frame.area.as_size();
            dirty = false;
            crate::fault::point(crate::fault::Point::TopDrawn);
        }
        let wait = next_read
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        // Our own wait on the terminal, not crossterm's: on a terminal
        // that hung up (its window closed, tmux killed), crossterm's reader
        // spins on the end of input forever, a process at full CPU that no
        // signal stops. A hang-up quits like SIGHUP does.
        match terminal_input(input.as_fd(), wait).context("waiting for the keyboard")? {
            Input::HungUp => break,
            Input::None => {}
            Input::Ready => {
                while event::poll(Duration::ZERO).context("reading the keyboard")? {
                    match on_event(event::read().context("reading the keyboard")?, &mut sort) {
                        KeyOutcome::Quit => return Ok(0),
                        KeyOutcome::Redraw => dirty = true,
                        KeyOutcome::Nothing => {}
                    }
                }
            }
        }
        // A resize: crossterm reports it only among key events.
        if terminal.size().ok() != Some(drawn_size) {
            dirty = true;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::super::jobs_now::{CpuMaxNow, IoBytesNow, IoMaxNow, LimitsInPlace, UsageNow, mode_of};
    use super::*;

    /// A job as read from the tree, its counters at `cpu` seconds and so on.
    fn job(id: &str, pid: u32, cpu: f64, periods: u64, throttled: u64, limits: LimitsInPlace) -> JobStatus {
        JobStatus {
            job_id: id.into(),
            mode: mode_of(id),
            pids: vec![pid],
            command: Some("ffmpeg".into()),
            age_seconds: Some(303.0),
            cgroup_paths: vec![PathBuf::from(format!("/sys/fs/cgroup/ffrtmp/{id}"))],
            usage: UsageNow {
                cpu_seconds: Some(cpu),
                memory_current_bytes: Some(201 << 20),
                memory_peak_bytes: Some(300 << 20),
                cpu_periods: Some(periods),
                throttled_periods: Some(throttled),
                throttled_seconds: Some(1.0),
                oom_kills: Some(0),
                io_bytes: Vec::new(),
                network: None,
            },
            limits,
            not_in_effect: Vec::new(),
        }
    }

    fn quota(percent: u64) -> LimitsInPlace {
        LimitsInPlace {
            cpu_max: Some(CpuMaxNow {
                quota_us: percent * 1000,
                period_us: 100_000,
            }),
            ..LimitsInPlace::default()
        }
    }

    /// Two snapshots one second apart: cam-1 at its 20 % quota and
    /// throttled in 8 of 10 periods, enc-2 using 1.5 of its 2 cores with a
    /// memory limit, idle without limits.
    fn fixture() -> Vec<Row> {
        let t0 = Instant::now();
        let limited = LimitsInPlace {
            memory_max_bytes: Some(256 << 20),
            ..quota(200)
        };
        let before = Snapshot {
            at: t0,
            jobs: vec![
                job("cam-1", 4242, 10.0, 100, 50, quota(20)),
                job("enc-2", 5150, 40.0, 100, 0, limited.clone()),
                job("idle", 6000, 1.0, 0, 0, LimitsInPlace::default()),
            ],
        };
        let mut enc = job("enc-2", 5150, 41.5, 110, 1, limited);
        enc.usage.oom_kills = Some(1);
        let after = Snapshot {
            at: t0 + Duration::from_secs(1),
            jobs: vec![
                job("cam-1", 4242, 10.2, 110, 58, quota(20)),
                enc,
                job("idle", 6000, 1.0, 0, 0, LimitsInPlace::default()),
            ],
        };
        rows(Some(&before), &after)
    }

    fn test_view(rows: &[Row], sort: Sort) -> View<'_> {
        View {
            cgroup_root: "/ffrtmp",
            version: Version::V2,
            root_dir: Some(PathBuf::from("/sys/fs/cgroup/ffrtmp")),
            rows,
            sort,
            interval: Duration::from_secs(1),
            color: false,
            interactive: true,
        }
    }

    /// The screen `view` draws at `width`×`height`, as text.
    fn screen(view: &View, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|frame| render(view, frame.area(), frame.buffer_mut()))
            .unwrap();
        buffer_text(terminal.backend().buffer())
    }

    /// The cell under `header` on the line starting with `id`.
    fn column(screen: &str, rows: &[Row], width: usize, header: &str, id: &str) -> String {
        let cols = layout(&rows.iter().collect::<Vec<_>>(), width);
        let mut x = 0;
        let mut span = None;
        for (col, w) in cols {
            if col.header() == header {
                span = Some((x, w));
            }
            x += w + 1;
        }
        let (x, w) = span.unwrap_or_else(|| panic!("no column {header} at width {width}:\n{screen}"));
        let line = screen
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no row {id}:\n{screen}"));
        line.chars().skip(x).take(w).collect::<String>().trim().to_string()
    }

    #[test]
    fn rates_come_from_two_snapshots() {
        let rows = fixture();
        let cam = rows.iter().find(|r| r.job.job_id == "cam-1").unwrap();
        let rates = cam.rates.as_ref().unwrap();
        assert!((rates.cpu_cores.unwrap() - 0.2).abs() < 1e-9, "{rates:?}");
        assert!((rates.throttled_share.unwrap() - 0.8).abs() < 1e-9, "{rates:?}");
        let idle = rows.iter().find(|r| r.job.job_id == "idle").unwrap();
        // No quota, no periods: no throttled share.
        assert_eq!(idle.rates.as_ref().unwrap().throttled_share, None);
        // A quota but no period elapsed (the job slept): not throttled.
        let asleep = job("asleep", 1, 3.0, 40, 2, quota(20));
        let rates = Rates::between(&asleep, &asleep, Duration::from_secs(1)).unwrap();
        assert_eq!((rates.cpu_cores, rates.throttled_share), (Some(0.0), Some(0.0)));
        let enc = rows.iter().find(|r| r.job.job_id == "enc-2").unwrap();
        assert_eq!(enc.rates.as_ref().unwrap().oom_kills, 1);
        // The first reading has no rates; a counter that went back (a new
        // job of the same id) has none either.
        assert!(rows_first().iter().all(|r| r.rates.is_none()));
        let t0 = Instant::now();
        let old = Snapshot {
            at: t0,
            jobs: vec![job("cam-1", 1, 99.0, 100, 0, quota(20))],
        };
        let new = Snapshot {
            at: t0 + Duration::from_secs(1),
            jobs: vec![job("cam-1", 2, 0.1, 1, 0, quota(20))],
        };
        let again = super::rows(Some(&old), &new);
        let rates = again[0].rates.as_ref().unwrap();
        assert_eq!((rates.cpu_cores, rates.throttled_share), (None, None));
    }

    fn rows_first() -> Vec<Row> {
        let now = Snapshot {
            at: Instant::now(),
            jobs: vec![job("cam-1", 4242, 10.0, 100, 50, quota(20))],
        };
        rows(None, &now)
    }

    #[test]
    fn io_and_net_rates_against_their_limits() {
        let limits = LimitsInPlace {
            io_max: vec![IoMaxNow {
                device: "8:0".into(),
                wbps: Some(20 << 20),
                ..IoMaxNow::default()
            }],
            net_egress_max: Some("8mbit".into()),
            ..LimitsInPlace::default()
        };
        let mut before = job("up", 1, 0.0, 0, 0, limits.clone());
        let mut after = job("up", 1, 0.0, 0, 0, limits);
        let io = |r: u64, w: u64| {
            vec![
                IoBytesNow {
                    device: "8:0".into(),
                    read_bytes: r,
                    write_bytes: w,
                },
                IoBytesNow {
                    device: "8:16".into(),
                    read_bytes: r,
                    write_bytes: w,
                },
            ]
        };
        before.usage.io_bytes = io(0, 0);
        after.usage.io_bytes = io(2 << 20, 38 << 20);
        let net = |bytes: u64| crate::net::NetUsage {
            egress: Some(crate::net::DirectionUsage {
                passed_bytes: bytes,
                ..Default::default()
            }),
            ingress: None,
        };
        before.usage.network = Some(net(0));
        after.usage.network = Some(net(1_980_000));
        let rates = Rates::between(&before, &after, Duration::from_secs(2)).unwrap();
        // Reads have no limit: both devices count. Writes: the limited one.
        assert_eq!(
            rates.io_read,
            Some(Flow {
                rate: (2 << 20) as f64,
                limit: None
            })
        );
        assert_eq!(
            rates.io_write,
            Some(Flow {
                rate: (19 << 20) as f64,
                limit: Some((20 << 20) as f64)
            })
        );
        assert_eq!(
            rates.net_out,
            Some(Flow {
                rate: 7_920_000.0,
                limit: Some(8_000_000.0)
            })
        );
        assert_eq!(rates.net_in, None);
        let rows = vec![Row {
            job: after,
            rates: Some(rates),
        }];
        let s = screen(&test_view(&rows, Sort::default()), 200, 6);
        assert_eq!(column(&s, &rows, 200, "IO B/s", "up"), "r 2.0M w 19M/20M", "{s}");
        assert_eq!(column(&s, &rows, 200, "NET bit/s", "up"), "out 7.9M/8.0M", "{s}");
    }

    #[test]
    fn an_80_by_24_screen_shows_the_essential_columns() {
        let rows = fixture();
        let s = screen(&test_view(&rows, Sort::default()), 80, 24);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 24);
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{s}");
        assert_eq!(
            lines[0],
            "ffrtmp top · /ffrtmp (cgroup v2) · 3 jobs · every 1s · sort: cpu ▼"
        );
        for header in [
            "JOB",
            "COMMAND",
            "CPU%",
            "QUOTA",
            "CPU/QUOTA",
            "THR%",
            "MEM",
            "MEM/LIMIT",
            "OOM",
        ] {
            assert!(lines[1].contains(header), "{header} missing:\n{s}");
        }
        // Sorted by CPU, highest first.
        assert!(lines[2].starts_with("enc-2"), "{s}");
        assert!(lines[3].starts_with("cam-1"), "{s}");
        assert!(lines[4].starts_with("idle"), "{s}");
        assert_eq!(column(&s, &rows, 80, "CPU%", "cam-1"), "20.0", "{s}");
        assert_eq!(column(&s, &rows, 80, "QUOTA", "cam-1"), "20%", "{s}");
        assert_eq!(column(&s, &rows, 80, "CPU/QUOTA", "cam-1"), "████████ 100%", "{s}");
        assert_eq!(column(&s, &rows, 80, "CPU/QUOTA", "enc-2"), "██████░░  75%", "{s}");
        assert_eq!(column(&s, &rows, 80, "CPU/QUOTA", "idle"), "no quota", "{s}");
        assert_eq!(column(&s, &rows, 80, "THR%", "cam-1"), "80", "{s}");
        assert_eq!(column(&s, &rows, 80, "THR%", "idle"), "-", "{s}");
        assert_eq!(column(&s, &rows, 80, "MEM", "enc-2"), "201M", "{s}");
        assert_eq!(column(&s, &rows, 80, "MEM/LIMIT", "enc-2"), "██████▎░  79%", "{s}");
        assert_eq!(column(&s, &rows, 80, "MEM/LIMIT", "cam-1"), "no limit", "{s}");
        assert_eq!(column(&s, &rows, 80, "OOM", "enc-2"), "1", "{s}");
        assert_eq!(
            lines[23],
            "q quit  sort: [c cpu] t thr m mem o oom i io n net j job a age  r reverse"
        );
    }

    #[test]
    fn a_wider_screen_shows_more() {
        let rows = fixture();
        let s = screen(&test_view(&rows, Sort::default()), 100, 30);
        for header in ["PIDS", "AGE", "LIMIT"] {
            assert!(s.lines().nth(1).unwrap().contains(header), "{header} missing:\n{s}");
        }
        assert_eq!(column(&s, &rows, 100, "PIDS", "cam-1"), "4242", "{s}");
        assert_eq!(column(&s, &rows, 100, "AGE", "cam-1"), "5m03s", "{s}");
        assert_eq!(column(&s, &rows, 100, "LIMIT", "enc-2"), "max 256M", "{s}");
        let wide = screen(&test_view(&rows, Sort::default()), 160, 10);
        for header in ["MODE", "PEAK"] {
            assert!(
                wide.lines().nth(1).unwrap().contains(header),
                "{header} missing:\n{wide}"
            );
        }
        assert_eq!(column(&wide, &rows, 160, "MODE", "cam-1"), "run/attach", "{wide}");
    }

    #[test]
    fn sorting_follows_the_keys() {
        let rows = fixture();
        let order = |sort: Sort| -> Vec<String> { sort.apply(&rows).iter().map(|r| r.job.job_id.clone()).collect() };
        let by = |key| Sort { key, reverse: false };
        assert_eq!(order(by(SortKey::Cpu)), ["enc-2", "cam-1", "idle"]);
        assert_eq!(order(by(SortKey::Throttled)), ["cam-1", "enc-2", "idle"]);
        assert_eq!(order(by(SortKey::Oom)), ["enc-2", "cam-1", "idle"]);
        assert_eq!(order(by(SortKey::Job)), ["cam-1", "enc-2", "idle"]);
        assert_eq!(
            order(Sort {
                key: SortKey::Job,
                reverse: true
            }),
            ["idle", "enc-2", "cam-1"]
        );
        assert_eq!(
            order(Sort {
                key: SortKey::Cpu,
                reverse: true
            }),
            ["idle", "cam-1", "enc-2"]
        );
        let s = screen(&test_view(&rows, by(SortKey::Throttled)), 80, 24);
        assert!(s.lines().nth(2).unwrap().starts_with("cam-1"), "{s}");
        assert!(s.contains("[t thr]") && s.contains("sort: thr ▼"), "{s}");
        let title = |sort| {
            screen(&test_view(&rows, sort), 80, 24)
                .lines()
                .next()
                .unwrap()
                .to_string()
        };
        assert!(title(by(SortKey::Job)).ends_with("sort: job ▲"));
        let reversed = |key| Sort { key, reverse: true };
        assert!(title(reversed(SortKey::Job)).ends_with("sort: job ▼"));
        assert!(title(reversed(SortKey::Cpu)).ends_with("sort: cpu ▲"));
        for (k, _, key) in SortKey::KEYS {
            assert_eq!(SortKey::from_key(k), Some(key));
        }
        assert_eq!(SortKey::from_key('x'), None);
    }

    #[test]
    fn the_first_frame_waits_for_rates_and_no_jobs_says_so() {
        let rows = rows_first();
        let s = screen(&test_view(&rows, Sort::default()), 80, 24);
        assert_eq!(column(&s, &rows, 80, "CPU%", "cam-1"), PENDING, "{s}");
        assert_eq!(column(&s, &rows, 80, "CPU/QUOTA", "cam-1"), PENDING, "{s}");
        let none = screen(&test_view(&[], Sort::default()), 80, 24);
        assert_eq!(
            none.lines().nth(1).unwrap(),
            "no governed jobs under /ffrtmp (/sys/fs/cgroup/ffrtmp)"
        );
        assert!(none.contains("0 jobs"), "{none}");
    }

    #[test]
    fn tiny_and_crowded_screens_do_not_panic() {
        let mut rows = fixture();
        for n in 0..40 {
            let mut r = rows[0].clone();
            r.job.job_id = format!("a-very-long-job-identifier-number-{n}");
            rows.push(r);
        }
        for (w, h) in [(0, 0), (1, 1), (10, 2), (20, 3), (40, 5), (80, 24), (300, 80)] {
            let s = screen(&test_view(&rows, Sort::default()), w, h);
            assert_eq!(s.lines().count(), usize::from(h));
        }
        let s = screen(&test_view(&rows, Sort::default()), 80, 24);
        assert!(s.lines().next().unwrap().contains("21 of 43 jobs shown"), "{s}");
        // A long id is cut with an ellipsis, the columns stay in place.
        assert!(s.contains("a-very-long-job-"), "{s}");
        assert!(s.contains("…"), "{s}");
        assert!(s.lines().all(|l| l.chars().count() <= 80), "{s}");
    }

    #[test]
    fn colors_only_without_no_color() {
        assert!(color_wanted(None));
        assert!(color_wanted(Some("".into())));
        assert!(!color_wanted(Some("1".into())));
        let rows = fixture();
        let cell_style = |color: bool| {
            let mut view = test_view(&rows, Sort::default());
            view.color = color;
            let mut buf = Buffer::empty(Rect::new(0, 0, 80, 24));
            render(&view, buf.area, &mut buf);
            // cam-1's full CPU bar (third line: enc-2, then cam-1).
            let line = buffer_text(&buf).lines().nth(3).unwrap().to_string();
            let x = line.chars().position(|c| c == '█').unwrap() as u16;
            buf[(x, 3)].style()
        };
        assert_eq!(cell_style(true).fg, Some(Color::Red));
        assert!(matches!(cell_style(false).fg, None | Some(Color::Reset)));
    }

    #[test]
    fn the_snapshot_for_a_pipe_has_every_column_and_no_keys() {
        let rows = fixture();
        let mut view = test_view(&rows, Sort::default());
        view.interactive = false;
        let text = snapshot_text(&view);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("JOB "), "{text}");
        for header in ["MODE", "PIDS", "AGE", "PEAK", "LIMIT", "CPU/QUOTA"] {
            assert!(lines[0].contains(header), "{header} missing:\n{text}");
        }
        assert!(!text.contains("q quit"), "{text}");
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    /// A fake cgroup v2 mount in a temporary directory, one job under
    /// /ffrtmp whose counters move between two readings.
    #[test]
    fn a_fixture_cgroup_tree_is_read_and_drawn() {
        use crate::cgroup::governor::JOB_XATTR;
        use crate::cgroup::hierarchy::Mount;
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().to_path_buf();
        let dir = mnt.join("ffrtmp").join("cam-1");
        std::fs::create_dir_all(&dir).unwrap();
        rustix::fs::setxattr(&dir, JOB_XATTR, b"cam-1", rustix::fs::XattrFlags::empty()).unwrap();
        // A directory without the mark is no job.
        std::fs::create_dir_all(mnt.join("ffrtmp").join("stranger")).unwrap();
        let write = |file: &str, content: &str| std::fs::write(dir.join(file), content).unwrap();
        let counters = |usage_usec: u64, periods: u64, throttled: u64, wbytes: u64| {
            write(
                "cpu.stat",
                &format!(
                    "usage_usec {usage_usec}\nuser_usec 0\nsystem_usec 0\nnr_periods {periods}\nnr_throttled {throttled}\nthrottled_usec 0\n"
                ),
            );
            write(
                "io.stat",
                &format!("8:0 rbytes=0 wbytes={wbytes} rios=0 wios=1 dbytes=0 dios=0\n"),
            );
        };
        write("cgroup.procs", "");
        write("cpu.max", "50000 100000\n");
        write("memory.current", "104857600\n");
        write("memory.peak", "209715200\n");
        write("memory.high", "134217728\n");
        write("memory.max", "268435456\n");
        write("memory.events", "low 0\nhigh 3\nmax 0\noom 0\noom_kill 0\n");
        write("io.max", "8:0 rbps=max wbps=10485760 riops=max wiops=max\n");
        counters(1_000_000, 100, 10, 0);
        let mount = Mount {
            mount_point: mnt.clone(),
            own_cgroup: "/".into(),
        };
        let governor = Governor::new(Hierarchy::Unified(mount), CgroupRoot::parse("/ffrtmp").unwrap());
        let t0 = Instant::now();
        let first = Snapshot {
            at: t0,
            jobs: read_jobs(&governor, SystemTime::now()),
        };
        assert_eq!(first.jobs.len(), 1, "{:?}", first.jobs);
        // Two seconds later: 0.9 CPU s (45 % of a core, 90 % of the quota),
        // 20 periods of which 15 throttled, 16 MiB written.
        counters(1_900_000, 120, 25, 16 << 20);
        let second = Snapshot {
            at: t0 + Duration::from_secs(2),
            jobs: read_jobs(&governor, SystemTime::now()),
        };
        let rows = rows(Some(&first), &second);
        let root = governor.root().to_string();
        let mut v = view(
            &governor,
            &root,
            &rows,
            Sort::default(),
            Duration::from_secs(2),
            false,
            true,
        );
        let s = screen(&v, 80, 24);
        assert!(
            s.starts_with("ffrtmp top · /ffrtmp (cgroup v2) · 1 job · every 2s"),
            "{s}"
        );
        assert_eq!(column(&s, &rows, 80, "CPU%", "cam-1"), "45.0", "{s}");
        assert_eq!(column(&s, &rows, 80, "QUOTA", "cam-1"), "50%", "{s}");
        assert_eq!(column(&s, &rows, 80, "CPU/QUOTA", "cam-1"), "███████▎  90%", "{s}");
        assert_eq!(column(&s, &rows, 80, "THR%", "cam-1"), "75", "{s}");
        assert_eq!(column(&s, &rows, 80, "MEM", "cam-1"), "100M", "{s}");
        // Against memory.high, the throttle below memory.max.
        assert_eq!(column(&s, &rows, 80, "MEM/LIMIT", "cam-1"), "██████▎░  78%", "{s}");
        assert_eq!(column(&s, &rows, 80, "OOM", "cam-1"), "0", "{s}");
        // The IO column needs more room than 80 columns leave.
        let wide = screen(&v, 160, 10);
        assert_eq!(column(&wide, &rows, 160, "IO B/s", "cam-1"), "w 8.0M/10M", "{wide}");
        assert_eq!(column(&wide, &rows, 160, "LIMIT", "cam-1"), "h128M m256M", "{wide}");
        assert_eq!(column(&wide, &rows, 160, "PIDS", "cam-1"), "(empty)", "{wide}");
        assert_eq!(column(&wide, &rows, 160, "PEAK", "cam-1"), "200M", "{wide}");
        assert!(!s.contains("stranger") && !wide.contains("stranger"));
        // Not a terminal: the same reading as one table.
        v.interactive = false;
        let text = snapshot_text(&v);
        assert!(text.starts_with("JOB "), "{text}");
        assert!(text.lines().nth(1).unwrap().starts_with("cam-1 "), "{text}");
    }

    #[test]
    fn keys_quit_and_sort() {
        use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
        let key = |code, modifiers| Event::Key(KeyEvent::new(code, modifiers));
        let mut sort = Sort::default();
        for quit in [
            key(KeyCode::Char('q'), KeyModifiers::NONE),
            key(KeyCode::Esc, KeyModifiers::NONE),
            key(KeyCode::Char('c'), KeyModifiers::CONTROL),
        ] {
            assert_eq!(on_event(quit, &mut sort), KeyOutcome::Quit);
        }
        assert_eq!(
            on_event(key(KeyCode::Char('m'), KeyModifiers::NONE), &mut sort),
            KeyOutcome::Redraw
        );
        assert_eq!(
            sort,
            Sort {
                key: SortKey::Memory,
                reverse: false
            }
        );
        assert_eq!(
            on_event(key(KeyCode::Char('r'), KeyModifiers::NONE), &mut sort),
            KeyOutcome::Redraw
        );
        assert!(sort.reverse);
        assert_eq!(
            on_event(key(KeyCode::Char('J'), KeyModifiers::SHIFT), &mut sort),
            KeyOutcome::Redraw
        );
        assert_eq!(
            sort,
            Sort {
                key: SortKey::Job,
                reverse: false
            }
        );
        assert_eq!(
            on_event(key(KeyCode::Char('x'), KeyModifiers::NONE), &mut sort),
            KeyOutcome::Nothing
        );
        assert_eq!(on_event(Event::Resize(80, 24), &mut sort), KeyOutcome::Redraw);
    }

    #[test]
    fn interval_must_be_a_duration_of_100ms_or_more() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["0", "abc", "50ms", ""] {
            assert_eq!(
                parse_interval(bad),
                Err("expected a duration of at least 100ms such as 1s, 500ms or 5s".into()),
                "{bad}"
            );
        }
        assert!(
            parse_interval("-1s")
                .unwrap_err()
                .starts_with("a duration cannot be negative")
        );
    }

    #[test]
    fn units_fit_their_columns() {
        assert_eq!(short_bytes(512), "512B");
        assert_eq!(short_bytes(1536), "1.5K");
        assert_eq!(short_bytes(201 << 20), "201M");
        assert_eq!(short_bytes(2 << 30), "2.0G");
        assert_eq!(short_bytes((1 << 20) - 1), "1.0M");
        assert_eq!(short_bits(8_000_000.0), "8.0M");
        assert_eq!(short_bits(800.0), "800");
        assert_eq!(short_percent(19.84), "19.8");
        assert_eq!(short_percent(150.0), "150");
        assert_eq!(short_age(42.0), "42s");
        assert_eq!(short_age(303.0), "5m03s");
        assert_eq!(short_age(7500.0), "2h05m");
        assert_eq!(short_age(273_600.0), "3d04h");
        assert_eq!(bar(0.0, 4), (String::new(), "░░░░".into()));
        assert_eq!(bar(1.0, 4), ("████".into(), String::new()));
        assert_eq!(bar(0.5625, 4), ("██▎".into(), "░".into()));
        assert_eq!(align("abcdef", 4, false), "abc…");
        assert_eq!(align("7", 3, true), "  7");
    }
}
