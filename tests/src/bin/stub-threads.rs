//! Test stub: a multi-threaded target for the privileged tests.
//!
//! `stub-threads [THREADS [EXIT]]` starts THREADS (default 4) parked threads,
//! prints `ready` once they all exist, waits for a line (or EOF) on stdin and
//! exits with status EXIT (default 0). The threads stay alive until then, so
//! the process has THREADS + 1 threads while it waits.

use std::io::{BufRead, Write};
use std::sync::{Arc, Barrier};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(4, |a| a.parse().expect("THREADS: a number"));
    let exit: i32 = args.next().map_or(0, |a| a.parse().expect("EXIT: a number"));
    let started = Arc::new(Barrier::new(threads + 1));
    for _ in 0..threads {
        let started = started.clone();
        std::thread::spawn(move || {
            started.wait();
            loop {
                std::thread::park();
            }
        });
    }
    started.wait();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .expect("writing ready");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    std::process::exit(exit);
}
