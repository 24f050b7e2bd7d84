//! A TCP sender and receiver for the network-limit tests.
//!
//! `net-blast send ADDR:PORT SECS`: connect, write as fast as allowed for
//! SECS seconds, shut the sending side and wait for the receiver to close,
//! so every byte was delivered before this process exits (a job's counters
//! read at its exit then cover all of them).
//! `net-blast recv PORT`: accept one connection, read to its end, print
//! `{"bytes": N, "secs": S, "rate_bps": R}` where R is the rate from one
//! second after the first byte to the last (the start, before a limit's
//! burst is spent, is left out).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("send") if args.len() == 4 => send(&args[2], args[3].parse().expect("SECS")),
        Some("recv") if args.len() == 3 => recv(args[2].parse().expect("PORT")),
        _ => {
            eprintln!("usage: net-blast send ADDR:PORT SECS | net-blast recv PORT");
            std::process::exit(2);
        }
    }
}

fn send(addr: &str, secs: f64) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let buf = vec![0x5au8; 64 * 1024];
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        stream.write_all(&buf).expect("sending");
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutting down the sending side");
    let mut rest = [0u8; 64];
    while stream.read(&mut rest).expect("waiting for the receiver to close") > 0 {}
}

fn recv(port: u16) {
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("binding");
    // Say we listen, so the sender can be started.
    println!("listening");
    let (mut stream, _) = listener.accept().expect("accepting");
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut first: Option<Instant> = None;
    let mut mark: Option<(Instant, u64)> = None;
    let mut last = Instant::now();
    loop {
        let n = stream.read(&mut buf).expect("receiving");
        if n == 0 {
            break;
        }
        let now = Instant::now();
        let start = *first.get_or_insert(now);
        total += n as u64;
        last = now;
        if mark.is_none() && now.duration_since(start) >= Duration::from_secs(1) {
            mark = Some((now, total));
        }
    }
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let rate = mark.map_or(0.0, |(at, bytes)| {
        let span = last.duration_since(at).as_secs_f64();
        if span > 0.0 {
            (total - bytes) as f64 * 8.0 / span
        } else {
            0.0
        }
    });
    println!("{{\"bytes\": {total}, \"secs\": {secs:.3}, \"rate_bps\": {rate:.0}}}");
}
