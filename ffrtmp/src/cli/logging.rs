//! Where and how the log is written.
//!
//! By default the old Go tool's format, so parsers written for it keep
//! working: `[watch] 2006/01/02 15:04:05 message` for the daemon's lines
//! (its `log.New(os.Stdout, "[watch] ", log.LstdFlags)`), and `2006/01/02
//! 15:04:05 JOB …` for summary lines (it wrote them with Go's standard
//! logger, without the prefix). Warnings and errors start with `warning:` /
//! `error:` after the time. Under systemd (`JOURNAL_STREAM` names stderr)
//! the log goes to the journal natively, with the job fields as journal
//! fields; `--log-format json` writes one JSON object per line.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::report::SUMMARY_TARGET;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// The old Go tool's lines: `[watch] 2006/01/02 15:04:05 message`
    Go,
    /// One JSON object per line (timestamp, level, message, the job's fields)
    Json,
    /// Timestamp (UTC, RFC 3339), level, message
    Text,
}

/// Set up logging to stderr for `command` (`watch` gets the `[watch] `
/// prefix of the old daemon). `format`: `--log-format`; without it, the
/// journal when systemd connected stderr to it, else [`LogFormat::Go`].
/// Returns a warning to log once logging works (a bad `FFRTMP_LOG`).
pub fn init(format: Option<LogFormat>, command: Option<&str>) {
    let (filter, warning) = log_filter(std::env::var("FFRTMP_LOG").ok().as_deref());
    let filter = || EnvFilter::new(&filter);
    let journal = format.is_none() && stderr_is_the_journal();
    let done = if journal {
        match tracing_journald::layer() {
            Ok(layer) => tracing_subscriber::registry()
                .with(layer.with_field_prefix(None).with_syslog_identifier("ffrtmp".into()))
                .with(filter())
                .try_init()
                .is_ok(),
            Err(_) => false,
        }
    } else {
        false
    };
    if !done {
        match format.unwrap_or(LogFormat::Go) {
            LogFormat::Go => {
                let prefix = (command == Some("watch")).then_some("[watch] ");
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter())
                    .with_writer(std::io::stderr)
                    .event_format(GoFormat { prefix })
                    .try_init();
            }
            LogFormat::Json => {
                let _ = tracing_subscriber::fmt()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_env_filter(filter())
                    .with_writer(std::io::stderr)
                    .try_init();
            }
            LogFormat::Text => {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter())
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .try_init();
            }
        }
    }
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
}

unsafe extern "C" {
    fn tzset();
}

/// systemd sets `JOURNAL_STREAM=<dev>:<inode>` of the journal's stream;
/// it is ours only if stderr is that very file (not redirected since).
fn stderr_is_the_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let Ok(meta) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.st_dev) && ino.parse::<u64>().ok() == Some(meta.st_ino)
}

/// The log filter for `FFRTMP_LOG`, and a warning when the value is not
/// one: each comma-separated part must be a level (`debug`), or name a
/// module with a level (`ffrtmp::watch=debug`, `ffrtmp=trace`). A bare word
/// such as `bogus` would otherwise be read as a module name and turn all
/// of ffrtmp's logging off. Summary lines (`JOB …`) are written at any
/// level, as the old tool did, unless the filter names them.
pub fn log_filter(value: Option<&str>) -> (String, Option<String>) {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let with_summary = |f: &str| {
        if f.contains(SUMMARY_TARGET) {
            f.to_string()
        } else {
            format!("{f},{SUMMARY_TARGET}=info")
        }
    };
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return (with_summary("info"), None);
    };
    let valid = value.split(',').all(|part| {
        let part = part.trim();
        let level = part.rsplit_once('=').map_or(part, |(_, level)| level);
        let target = part.split_once('=').map(|(target, _)| target);
        LEVELS.contains(&level.to_ascii_lowercase().as_str())
            && target.is_none_or(|t| t.starts_with("ffrtmp") || t.starts_with("aya"))
            || part.starts_with("ffrtmp")
    });
    if valid && EnvFilter::try_new(value).is_ok() {
        (with_summary(value), None)
    } else {
        (
            with_summary("info"),
            Some(format!(
                "FFRTMP_LOG={value:?} is not a log level (off, error, warn, info, debug, trace) nor a list of module=level; logging at info"
            )),
        )
    }
}

/// The Go tool's line: `[prefix]2006/01/02 15:04:05 message`.
struct GoFormat {
    prefix: Option<&'static str>,
}

impl<S, N> FormatEvent<S, N> for GoFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        // Summary lines came from Go's standard logger: no prefix.
        if meta.target() != SUMMARY_TARGET
            && let Some(prefix) = self.prefix
        {
            writer.write_str(prefix)?;
        }
        write!(writer, "{} ", go_time(std::time::SystemTime::now()))?;
        match *meta.level() {
            Level::ERROR => writer.write_str("error: ")?,
            Level::WARN => writer.write_str("warning: ")?,
            Level::DEBUG => writer.write_str("debug: ")?,
            Level::TRACE => writer.write_str("trace: ")?,
            Level::INFO => {}
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        writeln!(writer, "{}", message.0)
    }
}

/// Only the event's message (its other fields are for the journal and JSON).
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}

/// Go's `log.LstdFlags`: local date and time, `2006/01/02 15:04:05`.
pub fn go_time(at: std::time::SystemTime) -> String {
    // The time zone is read at the first line, not at start: a `run`
    // without limits logs its first line after its child started, so
    // reading /etc/localtime (7 system calls) is not on the way to the
    // child's exec (with limits, the `applied …` lines come before it).
    static TZ: std::sync::Once = std::sync::Once::new();
    // SAFETY: tzset only reads TZ and /etc/localtime into libc's globals,
    // under libc's own lock; the Once makes every caller wait for it, so no
    // localtime_r runs before the zone is known.
    TZ.call_once(|| unsafe { tzset() });
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as libc::time_t);
    // SAFETY: localtime_r writes into the tm we own and reads the time_t we
    // pass; it is the thread-safe variant.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = !unsafe { libc::localtime_r(&secs, &mut tm) }.is_null();
    if !ok {
        return "0000/00/00 00:00:00".into();
    }
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_has_the_lstdflags_shape() {
        let t = go_time(std::time::SystemTime::now());
        let b = t.as_bytes();
        assert_eq!(t.len(), 19, "{t}");
        assert!(
            b[4] == b'/' && b[7] == b'/' && b[10] == b' ' && b[13] == b':' && b[16] == b':',
            "{t}"
        );
    }

    #[test]
    fn a_log_filter_that_means_nothing_is_warned_about() {
        assert_eq!(log_filter(None), ("info,ffrtmp::summary=info".to_string(), None));
        assert_eq!(
            log_filter(Some("debug")),
            ("debug,ffrtmp::summary=info".to_string(), None)
        );
        assert_eq!(
            log_filter(Some("off")).0,
            "off,ffrtmp::summary=info",
            "summary lines are written whatever the level, as before"
        );
        assert_eq!(
            log_filter(Some("info,ffrtmp::summary=off")).0,
            "info,ffrtmp::summary=off"
        );
        let (filter, warning) = log_filter(Some("bogus"));
        assert_eq!(filter, "info,ffrtmp::summary=info");
        assert!(warning.unwrap().starts_with("FFRTMP_LOG=\"bogus\" is not a log level"));
    }
}
