//! Project tasks: `cargo xtask <task> [args…]`.

mod bench;
mod bench_common;
mod bench_vm;
mod bench_watch;
mod cdf_plot;
mod ebpf;
mod fuzz;
mod healthz_abuse;
mod man;
mod reliability;
mod vm;

use std::process::ExitCode;

/// A task: its name, a one-line description, and its entry point.
struct Task {
    name: &'static str,
    about: &'static str,
    run: fn(&[String]) -> anyhow::Result<()>,
}

const TASKS: &[Task] = &[
    Task {
        name: "bench",
        about: "measure `ffrtmp run` overhead against a plain spawn (root; --iterations N, --write)",
        run: bench::main,
    },
    Task {
        name: "bench-watch",
        about: "measure `ffrtmp watch` spawn-to-governed latency vs cgrulesengd (root; --spawns N, --write)",
        run: bench_watch::main,
    },
    Task {
        name: "bench-vm",
        about: "bench-watch and bench in the cgroup v2 VM, favordynmods off and on (root; --kernel K, --write)",
        run: bench_vm::main,
    },
    Task {
        name: "build-ebpf",
        about: "rebuild the committed eBPF object with the pinned nightly (--check: verify it)",
        run: ebpf::main,
    },
    Task {
        name: "fuzz",
        about: "build the cargo-fuzz targets with the pinned nightly and run each for N s (--seconds, --target, --list)",
        run: fuzz::main,
    },
    Task {
        name: "healthz-abuse",
        about: "time GET /healthz on a running `ffrtmp watch --metrics-listen ADDR` under abuse (--addr ADDR, --probes N)",
        run: healthz_abuse::main,
    },
    Task {
        name: "man",
        about: "write the manual pages (ffrtmp.1, ffrtmp-<subcommand>.1) into target/man (--out DIR)",
        run: man::main,
    },
    Task {
        name: "reliability",
        about: "soak, chaos and fault scenarios against a real `ffrtmp watch` (root; soak|chaos|faults, --help)",
        run: reliability::main,
    },
    Task {
        name: "vm-systemd",
        about: "install the .deb on Debian with systemd as PID 1 in a qemu VM and run the operator suite (root; --release bookworm|trixie)",
        run: vm::systemd::main,
    },
    Task {
        name: "vm-test",
        about: "run the privileged tests in a qemu VM on a real cgroup v2 kernel (--filter, --timeout, --keep)",
        run: vm::main,
    },
];

fn usage() -> String {
    let mut s = String::from("usage: cargo xtask <task> [args…]\n\navailable tasks:\n");
    for t in TASKS {
        s.push_str(&format!("  {:<14} {}\n", t.name, t.about));
    }
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        eprint!("{}", usage());
        return ExitCode::from(2);
    };
    if matches!(name.as_str(), "-h" | "--help" | "help") {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let Some(task) = TASKS.iter().find(|t| t.name == name) else {
        eprint!("xtask: unknown task '{name}'\n\n{}", usage());
        return ExitCode::from(2);
    };
    match (task.run)(&args[1..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {}: error: {e:#}", task.name);
            ExitCode::FAILURE
        }
    }
}
