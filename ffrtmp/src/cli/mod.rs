//! The command line: clap types and one module per subcommand.

mod args;
mod attach;
mod completions;
mod job;
mod run;
mod status;
mod watch;

use clap::{Parser, Subcommand};

pub use args::{GovernArgs, LimitArgs};

/// Exit status when ffrtmp itself fails (bad input, cgroup errors with
/// --strict, …), as `env`, `timeout` and `nohup` do.
pub const EXIT_FFRTMP_FAILED: i32 = 125;

#[derive(Debug, Parser)]
#[command(
    name = "ffrtmp",
    version,
    about = "Put media workloads (ffmpeg, gst-launch-1.0, any command) under Linux cgroup limits",
    long_about = "Put media workloads (ffmpeg, gst-launch-1.0, any command) under Linux cgroup limits.\n\n\
ffrtmp governs, it does not execute: it never kills a workload, workloads \
keep running when ffrtmp dies, and every limit that could not be applied is \
reported. cgroup v2 and v1 (including hybrid) hosts are supported.",
    after_help = "Exit status of `run`: the child's; 128+N if it died of signal N; 125 if ffrtmp failed; \
126 if the command cannot be executed; 127 if it was not found.\n\
Logging: FFRTMP_LOG=debug|info|warn|error (default info), to stderr."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Spawn a command inside its own cgroup, limits in place before it starts.
    #[command(
        after_help = "Examples:\n  ffrtmp run --job-id cam-1 --cpu-quota 150 --memory-limit 2048 -- ffmpeg -i in.mp4 out.mp4\n  \
ffrtmp run --cgroup-root jobs --cpu-max \"50000 100000\" --json -- gst-launch-1.0 videotestsrc ! fakesink"
    )]
    Run(run::RunArgs),
    /// Adopt a running process: move it into a job cgroup and watch it to exit.
    #[command(
        after_help = "attach never signals the process. SIGINT/SIGTERM detach: the process keeps its cgroup \
and limits, and ffrtmp exits 0 with reason detached_workload_continues.\n\
On cgroup v2, memory the process has already charged stays with its old cgroup; a new memory limit \
bites on new allocations.\n\nExample:\n  ffrtmp attach --pid 12345 --job-id stream-001 --cpu-quota 200 --nice 5"
    )]
    Attach(attach::AttachArgs),
    /// Daemon: govern every target process the moment it starts.
    #[command(
        after_help = "Targets are matched on the exact basename of argv[0]. Each is moved into <cgroup-root>/auto-<cmd>-<pid> with the limits given here, and reported when it exits. SIGINT/SIGTERM stop the daemon; governed processes keep their cgroups and limits and are never signalled.

Example:
  sudo ffrtmp watch --target ffmpeg --cpu-quota 200 --memory-limit 4096"
    )]
    Watch(watch::WatchArgs),
    /// Show what is governed now: jobs, processes, usage and the limits in place.
    #[command(
        after_help = "Reads the cgroup tree under --cgroup-root and changes nothing; no daemon is needed. \
Mode is `watch` for the daemon's auto-<cmd>-<pid> jobs, else `run/attach`. A dash means no limit \
(or a counter this kernel does not offer).\n\n\
The jobs of the systemd unit ffrtmp-watch.service live under /system.slice/ffrtmp-watch.service/jobs.\n\n\
Examples:\n  ffrtmp status\n  ffrtmp status --json\n  \
ffrtmp status --cgroup-root /system.slice/ffrtmp-watch.service/jobs"
    )]
    Status(status::StatusArgs),
    /// Write a shell completion script to stdout.
    #[command(
        after_help = "Examples:\n  ffrtmp completions bash > /etc/bash_completion.d/ffrtmp\n  \
ffrtmp completions zsh > ~/.zfunc/_ffrtmp    # with fpath+=(~/.zfunc) before compinit\n  \
ffrtmp completions fish > ~/.config/fish/completions/ffrtmp.fish"
    )]
    Completions(completions::CompletionsArgs),
}

/// Parse the command line, run, and return the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    init_logging();
    let result = match cli.command {
        Command::Run(args) => run::execute(args),
        Command::Attach(args) => attach::execute(args),
        Command::Watch(args) => watch::execute(args),
        Command::Status(args) => status::execute(args),
        Command::Completions(args) => completions::execute(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ffrtmp: error: {}", one_line(&e));
            EXIT_FFRTMP_FAILED
        }
    }
}

/// Help and version go to stdout with status 0; a usage error is one line on
/// stderr naming the flag, the bad value and what is accepted, status 125.
fn clap_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                2
            } else {
                0
            }
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            // A value-enum flag lists what it accepts on a line of its own.
            let expected = match e.get(clap::error::ContextKind::ValidValue) {
                Some(clap::error::ContextValue::Strings(values)) if !first.contains("expected") => {
                    format!(": expected one of {}", values.join(", "))
                }
                _ => String::new(),
            };
            eprintln!("ffrtmp: error: {first}{expected}");
            EXIT_FFRTMP_FAILED
        }
    }
}

/// An error chain on one line: "context: cause: cause".
fn one_line(e: &anyhow::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FFRTMP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}
