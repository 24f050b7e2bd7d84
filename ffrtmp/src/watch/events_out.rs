//! `ffrtmp watch --events FILE|-`: every [`WatchEvent`] as one JSON object
//! per line, for programs in other languages (schema: docs/events.md).
//!
//! The writer is a thread of its own reading a bounded queue the daemon
//! fills without ever waiting: a slow or absent reader blocks only this
//! thread; once the queue is full, new events are dropped, counted, and
//! reported in the stream as an `events_dropped` line.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::WatchEvent;

/// The version of the line format; bumped on an incompatible change.
pub const EVENTS_SCHEMA: u32 = 1;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsTarget {
    Stdout,
    /// A file (appended to, created if missing) or a named pipe.
    Path(PathBuf),
}

impl EventsTarget {
    /// `-` is standard output, anything else a path.
    pub fn parse(s: &str) -> Result<EventsTarget, String> {
        match s {
            "" => Err("expected a file path, a named pipe, or - for standard output".into()),
            "-" => Ok(EventsTarget::Stdout),
            path => Ok(EventsTarget::Path(PathBuf::from(path))),
        }
    }
}

/// An opened event stream, ready for its writer thread.
pub struct EventsOutput {
    target: EventsTarget,
    /// A regular file is opened at start, so a bad path fails at start; a
    /// named pipe by the writer, as opening one waits for its reader.
    file: Option<File>,
}

impl EventsOutput {
    pub fn open(target: EventsTarget) -> io::Result<EventsOutput> {
        let file =
            match &target {
                EventsTarget::Stdout => None,
                EventsTarget::Path(p) if std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo()) => None,
                EventsTarget::Path(p) => {
                    Some(File::options().create(true).append(true).open(p).map_err(|e| {
                        io::Error::new(e.kind(), format!("opening the event stream {}: {e}", p.display()))
                    })?)
                }
            };
        Ok(EventsOutput { target, file })
    }

    /// Start the writer thread; it ends when `events` closes (the service
    /// stopped) after reporting any last drops.
    pub fn spawn(
        self,
        mut events: mpsc::Receiver<WatchEvent>,
        dropped: Arc<AtomicU64>,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("ffrtmp-events".into()).spawn(move || {
            let out: Box<dyn Write> = match (self.file, &self.target) {
                (Some(file), _) => Box::new(file),
                (None, EventsTarget::Stdout) => Box::new(io::stdout()),
                (None, EventsTarget::Path(p)) => match File::options().append(true).open(p) {
                    Ok(f) => Box::new(f),
                    Err(e) => {
                        tracing::error!("opening the event stream {}: {e}; events are dropped", p.display());
                        return;
                    }
                },
            };
            let mut writer = LineWriter::new(out, dropped);
            while let Some(event) = events.blocking_recv() {
                if let Err(e) = writer.write_event(&event) {
                    tracing::warn!("writing the event stream: {e}; further events are dropped");
                    return;
                }
            }
            let _ = writer.report_drops();
        })
    }
}

/// Turns events into numbered lines and reports drops in between.
pub struct LineWriter<W: Write> {
    out: BufWriter<W>,
    seq: u64,
    dropped: Arc<AtomicU64>,
    reported: u64,
}

impl<W: Write> LineWriter<W> {
    pub fn new(out: W, dropped: Arc<AtomicU64>) -> LineWriter<W> {
        LineWriter {
            out: BufWriter::new(out),
            seq: 0,
            dropped,
            reported: 0,
        }
    }

    /// Write one event (after an `events_dropped` line if events were
    /// dropped since the last one), flushed so the reader sees it now.
    pub fn write_event(&mut self, event: &WatchEvent) -> io::Result<()> {
        self.write_drops()?;
        let body = serde_json::to_value(event).map_err(io::Error::other)?;
        self.write_line(body)?;
        self.out.flush()
    }

    /// Write an `events_dropped` line now if anything was dropped.
    pub fn report_drops(&mut self) -> io::Result<()> {
        self.write_drops()?;
        self.out.flush()
    }

    fn write_drops(&mut self) -> io::Result<()> {
        let total = self.dropped.load(Ordering::Relaxed);
        if total > self.reported {
            let body = serde_json::json!({
                "event": "events_dropped",
                "count": total - self.reported,
                "total": total,
            });
            self.reported = total;
            self.write_line(body)?;
        }
        Ok(())
    }

    /// `{"schema":1,"seq":N,"ts":"<RFC 3339>", …the event's fields}`.
    fn write_line(&mut self, body: Value) -> io::Result<()> {
        self.seq += 1;
        let mut line = Map::new();
        line.insert("schema".into(), EVENTS_SCHEMA.into());
        line.insert("seq".into(), self.seq.into());
        line.insert(
            "ts".into(),
            humantime::format_rfc3339_micros(SystemTime::now()).to_string().into(),
        );
        if let Value::Object(fields) = body {
            line.extend(fields);
        }
        serde_json::to_writer(&mut self.out, &Value::Object(line)).map_err(io::Error::other)?;
        self.out.write_all(b"\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(buf: &[u8]) -> Vec<Value> {
        std::str::from_utf8(buf)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn one_numbered_object_per_line_with_drops_reported() {
        let dropped = Arc::new(AtomicU64::new(0));
        let mut buf = Vec::new();
        {
            let mut w = LineWriter::new(&mut buf, Arc::clone(&dropped));
            w.write_event(&WatchEvent::EventsLost {
                source: "ebpf".into(),
                count: 3,
            })
            .unwrap();
            dropped.store(5, Ordering::Relaxed);
            w.write_event(&WatchEvent::Stopped { governed: 2 }).unwrap();
            w.report_drops().unwrap();
        }
        let l = lines(&buf);
        assert_eq!(l.len(), 3, "{l:?}");
        assert_eq!(l[0]["schema"], 1);
        assert_eq!(l[0]["seq"], 1);
        assert_eq!(l[0]["event"], "events_lost");
        assert_eq!(l[0]["count"], 3);
        assert!(l[0]["ts"].as_str().unwrap().ends_with('Z'));
        assert_eq!(l[1]["event"], "events_dropped");
        assert_eq!(l[1]["count"], 5);
        assert_eq!(l[2]["event"], "stopped");
        assert_eq!(l[2]["seq"], 3);
    }

    #[test]
    fn targets() {
        assert_eq!(EventsTarget::parse("-").unwrap(), EventsTarget::Stdout);
        assert_eq!(
            EventsTarget::parse("/run/ffrtmp.events").unwrap(),
            EventsTarget::Path("/run/ffrtmp.events".into())
        );
        assert!(EventsTarget::parse("").is_err());
    }
}
