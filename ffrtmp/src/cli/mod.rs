//! The command line: clap types and one module per subcommand.

mod args;
mod attach;
mod completions;
mod jobs_now;
mod logging;
mod output;
mod run;
mod status;
mod top;
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
Logging: FFRTMP_LOG=debug|info|warn|error (default info), to stderr, in the old tool's format \
(`[watch] 2006/01/02 15:04:05 …`; --log-format json|text for others); under systemd, to the journal."
)]
pub struct Cli {
    /// Log format: go (the old tool's lines, the default), json, or text; under systemd the journal is used unless this is given
    #[arg(long, global = true, value_name = "FORMAT", env = "FFRTMP_LOG_FORMAT")]
    pub log_format: Option<logging::LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

/// `defer`: a subcommand's arguments are built only when it is the one
/// used (or for help, completions and man pages, which build them all).
/// Building every subcommand's arguments at each start cost `run` about a
/// fifth of a millisecond (docs/BENCHMARKS.md).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Spawn a command inside its own cgroup, limits in place before it starts.
    #[command(
        after_help = "Examples:\n  ffrtmp run --job-id cam-1 --cpu-quota 150 --memory-limit 2048 -- ffmpeg -i in.mp4 out.mp4\n  \
ffrtmp run --cgroup-root jobs --cpu-max \"50000 100000\" --json -- gst-launch-1.0 videotestsrc num-buffers=300 ! fakesink"
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
        after_help = "A process is a target when its comm (the exec'd file's name, cut to 15 bytes) and the basename of its argv[0] both match a target name. Each is moved into <cgroup-root>/auto-<cmd>-<pid> with the limits given here, and reported when it exits. SIGINT/SIGTERM stop the daemon; governed processes keep their cgroups and limits and are never signalled.

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
    /// A live view of the jobs against their limits: CPU, throttling, memory, IO, network.
    #[command(
        after_help = "A full-screen view, redrawn every --interval, one row per job under --cgroup-root: \
CPU% is the share of one core used over the last interval, CPU/QUOTA the same against the job's \
quota (a full bar: held back by it), THR% the share of the interval's CFS periods in which the job \
was throttled, MEM/LIMIT memory in use against memory.high (else the hard limit), OOM the processes \
OOM-killed (red: in the last interval); IO (bytes/s) and NET (bits/s) show rates, against the \
limit where one is set. A job that ends disappears, one that starts appears. It reads the cgroup \
tree only, like `ffrtmp status`; no daemon is needed.\n\n\
Keys: q (or Esc, Ctrl-C) quits; c t m o i n j a sort by CPU, throttling, memory, OOM kills, IO, \
network, job id or age; r reverses the order. SIGINT, SIGTERM, SIGHUP and the terminal going away \
quit too; the terminal is always restored.\n\n\
On a terminal narrower than the columns, the less important ones are left out (80 columns show \
job, command, CPU, quota, throttling, memory and OOM kills). NO_COLOR (non-empty) turns colors off. \
When stdout is not a terminal, it prints one snapshot, with the rates over one --interval, and a \
line saying so.\n\n\
Examples:\n  ffrtmp top\n  ffrtmp top --interval 2s\n  \
ffrtmp top --cgroup-root /system.slice/ffrtmp-watch.service/jobs"
    )]
    Top(top::TopArgs),
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
    let name = match &cli.command {
        Command::Watch(_) => "watch",
        Command::Run(_) => "run",
        Command::Attach(_) => "attach",
        Command::Status(_) => "status",
        Command::Top(_) => "top",
        Command::Completions(_) => "completions",
    };
    logging::init(cli.log_format, Some(name));
    let result = match cli.command {
        Command::Run(args) => run::execute(args),
        Command::Attach(args) => attach::execute(args),
        Command::Watch(args) => watch::execute(args),
        Command::Status(args) => status::execute(args),
        Command::Top(args) => top::execute(args),
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
/// stderr naming the flag, the bad value and what is accepted (and clap's
/// suggestion, if it has one), status 125.
fn clap_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        // `ffrtmp` alone: the help, on stderr, as the usage error it is.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprint!("{}", e.render());
            EXIT_FFRTMP_FAILED
        }
        _ => {
            eprintln!("ffrtmp: error: {}", usage_line(&e, std::env::args().nth(1).as_deref()));
            EXIT_FFRTMP_FAILED
        }
    }
}

/// clap's message on one line: its first line, then what the lines below
/// it said (the missing arguments, the usage, the value expected, the
/// suggestion). `subcommand`: the first argument, to find the flag's parser.
fn usage_line(e: &clap::Error, subcommand: Option<&str>) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    let mut line = first
        .strip_prefix("error: ")
        .unwrap_or(first)
        .trim_end_matches(':')
        .to_string();
    let context = |kind| e.get(kind);
    match e.kind() {
        ErrorKind::MissingRequiredArgument => {
            if let Some(ContextValue::Strings(missing)) = context(ContextKind::InvalidArg) {
                line.push_str(&format!(": {}", missing.join(", ")));
            }
            if let Some(ContextValue::StyledStr(usage)) = context(ContextKind::Usage) {
                let usage = usage.to_string();
                line.push_str(&format!(" ({})", usage.trim().replacen("Usage: ", "usage: ", 1)));
            }
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation if !line.contains("expected") => {
            let valid = match context(ContextKind::ValidValue) {
                Some(ContextValue::Strings(values)) if !values.is_empty() => {
                    Some(format!("expected one of {}", values.join(", ")))
                }
                _ => None,
            };
            let flag = match context(ContextKind::InvalidArg) {
                Some(ContextValue::String(flag)) => flag.split_whitespace().next().map(str::to_owned),
                _ => None,
            };
            if let Some(expected) = valid.or_else(|| flag.and_then(|f| expected_value(subcommand, &f))) {
                line.push_str(&format!(": {expected}"));
            }
        }
        ErrorKind::UnknownArgument => {
            if let Some(ContextValue::String(similar)) = context(ContextKind::SuggestedArg) {
                line.push_str(&format!("; did you mean '{similar}'?"));
            } else if let Some(ContextValue::String(arg)) = context(ContextKind::InvalidArg)
                && arg.starts_with("--")
            {
                line.push_str(&format!(" (to pass '{arg}' to the command, put it after --)"));
            }
        }
        _ => {}
    }
    line
}

/// What `flag` of `subcommand` accepts, from its own parser's message for
/// an empty value ("expected a process id, a positive integer").
fn expected_value(subcommand: Option<&str>, flag: &str) -> Option<String> {
    use clap::CommandFactory;
    let probe = Cli::command()
        .try_get_matches_from(["ffrtmp", subcommand?, flag, ""])
        .err()?;
    let rendered = probe.render().to_string();
    let first = rendered.lines().find(|l| !l.trim().is_empty())?;
    let (_, expected) = first.split_once("': ")?;
    expected.starts_with("expected").then(|| expected.to_string())
}

/// An error chain on one line: "context: cause: cause". A cause whose text
/// its outer message already carries (typed errors often print their
/// source) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if line.contains(&cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one line `ffrtmp <args>` prints after `ffrtmp: error: `.
    fn line(args: &[&str]) -> String {
        let argv: Vec<&str> = std::iter::once("ffrtmp").chain(args.iter().copied()).collect();
        let e = Cli::try_parse_from(argv).expect_err("a usage error");
        usage_line(&e, args.first().copied())
    }

    #[test]
    fn usage_errors_name_what_is_missing_expected_or_meant() {
        assert_eq!(
            line(&["run"]),
            "the following required arguments were not provided: <CMD>... (usage: ffrtmp run <CMD>...)"
        );
        assert_eq!(
            line(&["run", "--job-id", "x", "--"]),
            "the following required arguments were not provided: <CMD>... (usage: ffrtmp run --job-id <ID> <CMD>...)"
        );
        assert_eq!(
            line(&["attach"]),
            "the following required arguments were not provided: --pid <PID> (usage: ffrtmp attach --pid <PID>)"
        );
        assert_eq!(
            line(&["attach", "--pid"]),
            "a value is required for '--pid <PID>' but none was supplied: expected a process id, a positive integer"
        );
        assert_eq!(
            line(&["watch", "--target"]),
            "a value is required for '--target <NAME>' but none was supplied: expected a command name (the basename of argv[0]), without '/'"
        );
        assert_eq!(
            line(&["watch", "--backend", "x"]),
            "invalid value 'x' for '--backend <BACKEND>': expected one of auto, ebpf, netlink, poll"
        );
        assert_eq!(
            line(&["run", "--cpu-qouta", "5", "--", "true"]),
            "unexpected argument '--cpu-qouta' found; did you mean '--cpu-quota'?"
        );
        assert_eq!(
            line(&["run", "--backend", "x", "--", "true"]),
            "unexpected argument '--backend' found (to pass '--backend' to the command, put it after --)"
        );
    }

    #[test]
    fn bad_values_say_what_is_wrong_with_them() {
        assert_eq!(
            line(&["watch", "--scan-interval", "-5s"]),
            "invalid value '-5s' for '--scan-interval <DURATION>': a duration cannot be negative; expected a duration such as 10s, 1m30s, 500ms or 24h"
        );
        assert_eq!(
            line(&["run", "--memory-limit", "17592186044416", "--", "true"]),
            "invalid value '17592186044416' for '--memory-limit <MB>': expected a whole number of MiB, 0 (no limit) to 17592186044415"
        );
        assert!(
            line(&["run", "--cgroup-root", "a b", "--", "true"])
                .starts_with("invalid value 'a b' for '--cgroup-root <PATH>': ' ' is not allowed in a cgroup name"),
        );
        // T is accepted, and the help says so.
        let cli = Cli::try_parse_from(["ffrtmp", "run", "--memory-max", "5T", "--", "true"]).unwrap();
        let Command::Run(run) = cli.command else { panic!() };
        assert_eq!(run.govern.limits.limits().memory_max.map(|m| m.bytes()), Some(5 << 40));
    }

    #[test]
    fn conflicting_flags_are_warned_about() {
        let cli = Cli::try_parse_from([
            "ffrtmp",
            "run",
            "--memory-limit",
            "0",
            "--memory-max",
            "1G",
            "--cpu-quota",
            "50",
            "--cpu-max",
            "20000 100000",
            "--",
            "true",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else { panic!() };
        assert_eq!(
            run.govern.limits.conflicts(),
            [
                "--cpu-quota and --cpu-max both given: --cpu-quota wins (cpu.max \"50000 100000\"), --cpu-max \"20000 100000\" is ignored",
                "--memory-limit and --memory-max both given: --memory-limit wins (no limit), --memory-max (1073741824 bytes) is ignored",
            ]
        );
        let limits = run.govern.limits.limits();
        assert_eq!(
            (limits.cpu_max.unwrap().quota_us, limits.memory_max),
            (Some(50_000), None)
        );
    }

    #[test]
    fn an_error_chain_does_not_repeat_itself() {
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        let inner = crate::cgroup::fs::FsError::Create {
            path: "/sys/fs/cgroup/cpu/x".into(),
            source: io,
        };
        let e = anyhow::Error::new(inner).context("--strict: creating the cgroup for job j");
        assert_eq!(
            one_line(&e),
            "--strict: creating the cgroup for job j: creating /sys/fs/cgroup/cpu/x: Permission denied (os error 13)"
        );
    }
}
