//! `cargo xtask healthz-abuse --addr ADDR`: how long `GET /healthz` takes on
//! a running `ffrtmp watch --metrics-listen ADDR` while other clients abuse
//! the port: idle connections, endless oversize request heads, a `/metrics`
//! flood. Prints one table row per scenario; docs/RELIABILITY.md has the
//! figures.
//!
//! Loopback only: the address must be 127.0.0.1 or ::1. Every abuse client
//! is a thread or socket of this process, closed before the next scenario.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// A probe that takes longer is reported as not answered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time the abuse gets to reach its full force before the first probe.
const RAMP_UP: Duration = Duration::from_millis(500);
/// Between two probes of one scenario.
const PROBE_GAP: Duration = Duration::from_millis(200);

struct Options {
    addr: SocketAddr,
    probes: usize,
    idle: usize,
    oversize: usize,
    flood: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        addr: "127.0.0.1:0".parse().expect("a valid address"),
        probes: 5,
        idle: 100,
        oversize: 4,
        flood: 64,
    };
    let mut addr = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        let count = |v: &String| {
            v.parse::<usize>()
                .with_context(|| format!("{flag} {v}: expected a count"))
        };
        match flag.as_str() {
            "--addr" => {
                addr = Some(
                    value()?
                        .parse()
                        .context("--addr: expected 127.0.0.1:PORT or [::1]:PORT")?,
                )
            }
            "--probes" => options.probes = count(value()?)?,
            "--idle" => options.idle = count(value()?)?,
            "--oversize" => options.oversize = count(value()?)?,
            "--flood" => options.flood = count(value()?)?,
            _ => bail!(
                "unknown argument {flag}; usage: cargo xtask healthz-abuse --addr 127.0.0.1:PORT [--probes N] [--idle N] [--oversize N] [--flood N]"
            ),
        }
    }
    options.addr = addr.context("--addr 127.0.0.1:PORT (the daemon's --metrics-listen) is required")?;
    ensure!(options.addr.ip().is_loopback(), "--addr must be a loopback address");
    ensure!(options.probes > 0, "--probes must be at least 1");
    Ok(options)
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args)?;
    let addr = options.addr;
    probe(addr)
        .with_context(|| format!("no /healthz answer from {addr}: is ffrtmp watch --metrics-listen {addr} running?"))?;
    println!("| abuse | first /healthz | p50 | max | answered |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    row("none", &options, Abuse::start_none());
    row(
        &format!("{} idle connections", options.idle),
        &options,
        Abuse::start_idle(addr, options.idle),
    );
    row(
        &format!("{} idle connections, each reopened when closed", options.idle),
        &options,
        Abuse::start_idle_reopened(addr, options.idle),
    );
    row(
        &format!("{} clients sending endless oversize heads", options.oversize),
        &options,
        Abuse::start_oversize(addr, options.oversize),
    );
    row(
        &format!("{} clients flooding /metrics", options.flood),
        &options,
        Abuse::start_flood(addr, options.flood),
    );
    Ok(())
}

/// Probe `options.probes` times under `abuse`, print the row, end the abuse.
fn row(name: &str, options: &Options, abuse: anyhow::Result<Abuse>) {
    let abuse = match abuse {
        Ok(abuse) => abuse,
        Err(e) => {
            println!("| {name} | setting up failed: {e:#} | | | |");
            return;
        }
    };
    std::thread::sleep(RAMP_UP);
    let mut times = Vec::new();
    let mut failures = Vec::new();
    let mut first = None;
    for i in 0..options.probes {
        if i > 0 {
            std::thread::sleep(PROBE_GAP);
        }
        let result = probe(options.addr);
        if i == 0 {
            first = Some(result.as_ref().map_or_else(|_| "no answer".to_string(), |t| ms(*t)));
        }
        match result {
            Ok(t) => times.push(t),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let flood = abuse.stop();
    times.sort();
    let first = first.unwrap_or_default();
    let (p50, max) = match (times.get(times.len() / 2), times.last()) {
        (Some(p50), Some(max)) => (ms(*p50), ms(*max)),
        _ => ("—".into(), "—".into()),
    };
    let mut name = name.to_string();
    if let Some(rate) = flood {
        name.push_str(&format!(" ({rate:.0} answers/s)"));
    }
    println!(
        "| {name} | {first} | {p50} | {max} | {}/{} |",
        times.len(),
        options.probes
    );
    for f in failures {
        eprintln!("healthz-abuse: {name}: {f}");
    }
    // Let the daemon close what the abuse left before the next scenario.
    std::thread::sleep(Duration::from_secs(1));
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One `GET /healthz` on a new connection: connect to the last byte.
fn probe(addr: SocketAddr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: healthz-abuse\r\n\r\n")?;
    let mut reply = Vec::new();
    match stream.read_to_end(&mut reply) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            bail!("no answer within {PROBE_TIMEOUT:?}")
        }
        Err(e) => return Err(e.into()),
    }
    let took = started.elapsed();
    ensure!(
        reply.starts_with(b"HTTP/1.1 200 ") || reply.starts_with(b"HTTP/1.1 503 "),
        "unexpected reply: {:?}",
        String::from_utf8_lossy(&reply[..reply.len().min(80)])
    );
    Ok(took)
}

/// Running abuse: its sockets and threads, ended by [`Abuse::stop`].
struct Abuse {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    idle: Vec<TcpStream>,
    /// For a flood: answers counted, and since when.
    served: Option<(Arc<AtomicU64>, Instant)>,
}

impl Abuse {
    fn new() -> Abuse {
        Abuse {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            idle: Vec::new(),
            served: None,
        }
    }

    fn start_none() -> anyhow::Result<Abuse> {
        Ok(Abuse::new())
    }

    /// `n` connections that send nothing.
    fn start_idle(addr: SocketAddr, n: usize) -> anyhow::Result<Abuse> {
        let mut abuse = Abuse::new();
        for _ in 0..n {
            abuse
                .idle
                .push(TcpStream::connect(addr).context("opening an idle connection")?);
        }
        Ok(abuse)
    }

    /// `n` connections that send nothing, each opened again (by one
    /// thread) as soon as the daemon closes it.
    fn start_idle_reopened(addr: SocketAddr, n: usize) -> anyhow::Result<Abuse> {
        let mut abuse = Abuse::new();
        let mut idle = Vec::new();
        for _ in 0..n {
            let stream = TcpStream::connect(addr).context("opening an idle connection")?;
            stream.set_nonblocking(true)?;
            idle.push(stream);
        }
        let stop = Arc::clone(&abuse.stop);
        abuse.threads.push(std::thread::spawn(move || {
            let mut byte = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                for stream in &mut idle {
                    let closed = match stream.read(&mut byte) {
                        Ok(_) => true,
                        Err(e) => e.kind() != ErrorKind::WouldBlock,
                    };
                    if closed && let Ok(new) = TcpStream::connect(addr) {
                        let _ = new.set_nonblocking(true);
                        *stream = new;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
        Ok(abuse)
    }

    /// `n` threads, each sending a request head that never ends, on one
    /// connection after another, as fast as the daemon reads it.
    fn start_oversize(addr: SocketAddr, n: usize) -> anyhow::Result<Abuse> {
        let mut abuse = Abuse::new();
        for _ in 0..n {
            let stop = Arc::clone(&abuse.stop);
            abuse.threads.push(std::thread::spawn(move || {
                let filler = [b'a'; 16 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut stream) = TcpStream::connect(addr) else {
                        continue;
                    };
                    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                    if stream.write_all(b"GET /metrics HTTP/1.1\r\nX-Filler: ").is_err() {
                        continue;
                    }
                    while !stop.load(Ordering::Relaxed) && stream.write_all(&filler).is_ok() {}
                }
            }));
        }
        Ok(abuse)
    }

    /// `n` threads, each getting `/metrics` in a loop, a new connection each.
    fn start_flood(addr: SocketAddr, n: usize) -> anyhow::Result<Abuse> {
        let mut abuse = Abuse::new();
        let served = Arc::new(AtomicU64::new(0));
        for _ in 0..n {
            let (stop, served) = (Arc::clone(&abuse.stop), Arc::clone(&served));
            abuse.threads.push(std::thread::spawn(move || {
                let mut sink = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut stream) = TcpStream::connect(addr) else {
                        continue;
                    };
                    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
                    sink.clear();
                    let done = stream
                        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                        .and_then(|()| stream.read_to_end(&mut sink));
                    if done.is_ok() && sink.starts_with(b"HTTP/1.1 200 ") {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        abuse.served = Some((served, Instant::now()));
        Ok(abuse)
    }

    /// End the abuse; for a flood, the answers per second it got.
    fn stop(self) -> Option<f64> {
        self.stop.store(true, Ordering::Relaxed);
        for stream in &self.idle {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        self.served
            .map(|(served, since)| served.load(Ordering::Relaxed) as f64 / since.elapsed().as_secs_f64())
    }
}
