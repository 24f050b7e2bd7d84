//! `cargo xtask bench-vm`: `bench-watch` and `bench` inside the cgroup v2
//! guest of `vm-test`, with favordynmods off and on in the same boot.
//!
//! The build machines are cgroup v1 (hybrid) and shared, so favordynmods must
//! not be turned on there (on 6.18 it cannot be turned off before a reboot).
//! The guest is ours: its /init mounts a pure cgroup2 hierarchy, and a
//! remount turns the option on and off again (the guest kernels are 6.12 at
//! most). The host compiles the C helpers and builds ffrtmp; the guest runs
//! this same xtask binary with `--prebuilt` (it has no C compiler) and prints
//! each rendered section, and each plot, between marker lines on the serial
//! console, which `vm-test --exec` streams here.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail, ensure};

use crate::bench_common::{
    Flags, Machine, TREE_ENV, c_helper, ffrtmp_binary, target_dir, workspace_root, write_section,
};
use crate::bench_watch::find_cgrulesengd;
use crate::vm::quote;

const TAG: &str = "bench-vm";
const MARK_START: &str = "<!-- bench:vm:start -->";
const MARK_END: &str = "<!-- bench:vm:end -->";
/// Console markers around what the guest hands back.
const BEGIN: &str = "BENCH-VM-BEGIN";
const END: &str = "BENCH-VM-END";
/// The prefix of every line of a piece: a kernel message on the console
/// has none.
const LINE: &str = "BENCH-VM| ";

const USAGE: &str = "\
usage: cargo xtask bench-vm [options] [--write]

Runs `cargo xtask bench-watch` (floor, ffrtmp ebpf and netlink, cgrulesengd) and
`cargo xtask bench` (`run` overhead, back to back and 50 ms apart) inside the
cgroup v2 guest of `cargo xtask vm-test` (qemu, software emulation), once with
favordynmods off and once on, in the same boot (a round; even rounds run on
first). Needs root. Builds ffrtmp (packaging/release-build) and compiles the C helpers on the
host; installs cgroup-tools when cgrulesengd is missing.

  --kernel K        the guest kernel, as vm-test's --kernel (default 6.12)
  --rounds N        rounds of off + on (default 1); even rounds run on first
  --spawns N        bench-watch measured spawns per governor (default 100)
  --iterations N    bench measured rounds (default 100)
  --storm           also the exec-storm runs (emulated, the guest reaches a
                    fraction of the 1,000 execs/s asked for)
  --ffrtmp PATH     use this ffrtmp binary instead of building one
  --also PATH       also measure `PATH run` in the `bench` runs (another
                    build of ffrtmp, in the same rounds); repeatable
  --timeout SECS    give up on the guest after SECS (default 3600)
  --write           write the sections into the vm section of
                    docs/BENCHMARKS.md and the plots beside it
";

struct Options {
    kernel: String,
    rounds: u64,
    spawns: u64,
    iterations: u64,
    storm: bool,
    ffrtmp: Option<PathBuf>,
    also: Vec<PathBuf>,
    timeout_secs: u64,
    write: bool,
}

fn parse_args(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut o = Options {
        kernel: "6.12".into(),
        rounds: 1,
        spawns: 100,
        iterations: 100,
        storm: false,
        ffrtmp: None,
        also: Vec::new(),
        timeout_secs: 3600,
        write: false,
    };
    let mut flags = Flags::new(args);
    while let Some((a, flag)) = flags.next_flag() {
        match flag {
            "--kernel" => o.kernel = flags.text(flag)?,
            "--rounds" => o.rounds = flags.number(flag)?,
            "--spawns" => o.spawns = flags.number(flag)?,
            "--iterations" => o.iterations = flags.number(flag)?,
            "--storm" if !flags.has_inline() => o.storm = true,
            "--ffrtmp" => o.ffrtmp = Some(PathBuf::from(flags.text(flag)?)),
            "--also" => o.also.push(PathBuf::from(flags.text(flag)?)),
            "--timeout" => o.timeout_secs = flags.number(flag)?,
            "--write" if !flags.has_inline() => o.write = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            _ => bail!("unknown argument '{a}'\n\n{USAGE}"),
        }
    }
    ensure!((1..=10).contains(&o.rounds), "--rounds {}: expected 1 to 10", o.rounds);
    ensure!(o.spawns >= 1, "--spawns {}: expected at least 1", o.spawns);
    ensure!(o.iterations >= 1, "--iterations {}: expected at least 1", o.iterations);
    Ok(Some(o))
}

/// Copies the `--also` builds into `dir` (the target directory is in the
/// guest at the same path; a host path such as /tmp may not be: the guest
/// mounts its own), each as `<n>-<file name>`; returns the copies. A build
/// already in `dir` (an earlier run's copy) is used where it is.
fn copy_into(dir: &Path, builds: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    if builds.is_empty() {
        return Ok(Vec::new());
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
    let mut copies = Vec::new();
    for (n, build) in builds.iter().enumerate() {
        let build = fs::canonicalize(build).with_context(|| format!("--also {}", build.display()))?;
        if build.parent() == Some(dir.as_path()) {
            copies.push(build);
            continue;
        }
        let name = build
            .file_name()
            .with_context(|| format!("--also {}: no file name", build.display()))?;
        let copy = dir.join(format!("{}-{}", n + 1, name.to_string_lossy()));
        fs::copy(&build, &copy)
            .with_context(|| format!("--also {}: copying it to {}", build.display(), copy.display()))?;
        copies.push(copy);
    }
    Ok(copies)
}

/// The favordynmods states of each round, in the order they are measured.
fn states(rounds: u64) -> Vec<(u64, &'static str)> {
    (1..=rounds)
        .flat_map(|r| {
            let order = if r % 2 == 1 { ["off", "on"] } else { ["on", "off"] };
            order.map(|s| (r, s))
        })
        .collect()
}

/// What the guest runs: for each state, remount (and check it took), then
/// each bench with its output to a file, then the file between markers,
/// every line of it prefixed (the console also carries kernel messages)
/// and counted. A failed bench is reported and the others still run; the
/// script fails at the end.
fn guest_script(o: &Options, xtask: &Path, ffrtmp: &Path, target: &Path, tree: &str) -> String {
    let q = |p: &Path| quote(&p.to_string_lossy());
    let watch = format!(
        "bench-watch --prebuilt --no-install --ffrtmp {} --only floor,ebpf,netlink,cgrulesengd --spawns {} \
         --idle-secs 5{}",
        q(ffrtmp),
        o.spawns,
        if o.storm { "" } else { " --no-storm" }
    );
    let also: String = o.also.iter().map(|p| format!(" --also {}", q(p))).collect();
    let run = format!(
        "bench --prebuilt --ffrtmp {} --iterations {} --warmup 10{also}",
        q(ffrtmp),
        o.iterations
    );
    let mut s = String::new();
    let _ = writeln!(s, "export CARGO_TARGET_DIR={}", q(target));
    let _ = writeln!(s, "export {TREE_ENV}={}", quote(tree));
    let _ = writeln!(s, "X={}", q(xtask));
    let _ = writeln!(s, "failed=0");
    // cgrulesengd binds its socket in /var/run and exits without it; the
    // initramfs has /run only.
    let _ = writeln!(s, "mkdir -p /var && [ -e /var/run ] || ln -s /run /var/run");
    // A remount rewrites every root flag of cgroup2: without the option it
    // turns favordynmods off again (possible before 6.18). A state that did
    // not take makes the rest meaningless: stop.
    let _ = writeln!(
        s,
        "state() {{ grep -q ' - cgroup2 .*favordynmods' /proc/self/mountinfo && echo on || echo off; }}"
    );
    let _ = writeln!(
        s,
        "turn() {{ if [ \"$1\" = on ]; then mount -o remount,favordynmods none /sys/fs/cgroup; \
         else mount -o remount none /sys/fs/cgroup; fi; \
         [ \"$(state)\" = \"$1\" ] || {{ echo \"{TAG}: favordynmods did not turn $1\"; exit 1; }}; }}"
    );
    let _ = writeln!(
        s,
        "hand() {{ echo \"{BEGIN} $1\"; awk '{{print \"{LINE}\" $0}}' \"$2\"; \
         echo \"{END} $1 $(awk 'END {{print NR}}' \"$2\")\"; }}"
    );
    let _ = writeln!(
        s,
        "one() {{ k=$1; shift; if \"$X\" \"$@\" > /tmp/out.md; then hand \"$k\" /tmp/out.md; \
         else echo \"{TAG}: $k failed\"; failed=1; fi; }}"
    );
    let plots = target.join("bench-watch");
    for (round, state) in states(o.rounds) {
        let k = format!("{round}-{state}");
        let _ = writeln!(s, "turn {state}");
        let _ = writeln!(s, "one watch-{k} {watch}");
        for name in ["bench-watch-quiet.svg", "bench-watch-storm.svg"] {
            let p = q(&plots.join(name));
            let _ = writeln!(s, "[ -f {p} ] && hand plot-{k}-{name} {p}; rm -f {p}");
        }
        let _ = writeln!(s, "one run-{k} {run}");
        let _ = writeln!(s, "one run-gap-{k} {run} --gap-ms 50");
    }
    let _ = writeln!(s, "exit $failed");
    s
}

/// The pieces between the markers, by key, in the order they came: only
/// the prefixed lines, and as many as the end marker counted.
fn handed_back(console: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut open: Option<(String, String, usize)> = None;
    for line in console.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(k) = line.strip_prefix(BEGIN).and_then(|r| r.strip_prefix(' ')) {
            ensure!(open.is_none(), "{BEGIN} {k} inside another piece");
            open = Some((k.to_string(), String::new(), 0));
        } else if let Some(rest) = line.strip_prefix(END).and_then(|r| r.strip_prefix(' ')) {
            let (k, count) = rest.rsplit_once(' ').context("an end marker without its line count")?;
            let count: usize = count.trim().parse().with_context(|| format!("{END} {k}: line count"))?;
            match open.take() {
                Some((key, text, lines)) if key == k => {
                    ensure!(
                        lines == count,
                        "piece {k}: {lines} lines came back, the guest sent {count} (a console line was cut)"
                    );
                    out.push((key, text.trim_end().to_string() + "\n"));
                }
                _ => bail!("{END} {k} without its {BEGIN}"),
            }
        } else if let Some((_, text, lines)) = &mut open
            && let Some(l) = line.strip_prefix(LINE)
        {
            text.push_str(l);
            text.push('\n');
            *lines += 1;
        }
    }
    ensure!(open.is_none(), "the console ended inside a piece");
    Ok(out)
}

/// A guest section made a part of the vm section: its markers dropped, its
/// `## ` title replaced by `title` (a `### ` heading), every other heading
/// one level down, and its plots renamed.
fn nest(section: &str, title: &str, plots: &[(String, String)]) -> String {
    let mut out = String::new();
    for line in section.lines() {
        if line.starts_with("<!-- bench:") {
            continue;
        }
        if line.starts_with("## ") {
            let _ = writeln!(out, "### {title}");
        } else if line.starts_with("###") {
            let _ = writeln!(out, "#{line}");
        } else {
            let mut l = line.to_string();
            for (from, to) in plots {
                l = l.replace(&format!("({from})"), &format!("({to})"));
            }
            let _ = writeln!(out, "{l}");
        }
    }
    out
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let Some(mut o) = parse_args(args)? else {
        return Ok(());
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "must run as root: vm-test boots a VM as root"
    );
    let root = workspace_root();
    let target = fs::canonicalize(target_dir(&root)).context("the target directory")?;
    let ffrtmp = ffrtmp_binary(o.ffrtmp.as_deref(), &root, TAG)?;
    o.also = copy_into(&target.join("bench-vm/also"), &o.also)?;
    let (watch_probe, _) = c_helper(
        &target.join("bench-watch"),
        "probe",
        crate::bench_watch::PROBE_C,
        false,
        TAG,
    )?;
    let (storm, _) = c_helper(
        &target.join("bench-watch"),
        "storm",
        crate::bench_common::STORM_C,
        false,
        TAG,
    )?;
    let (run_probe, _) = c_helper(&target.join("bench"), "probe", crate::bench::PROBE_C, false, TAG)?;
    let (wrapper, _) = c_helper(
        &target.join("bench"),
        "wrapfloor",
        crate::bench::WRAPFLOOR_C,
        false,
        TAG,
    )?;
    let cgred = find_cgrulesengd(true).map_err(anyhow::Error::msg)?;
    let xtask = std::env::current_exe().context("this program's path")?;

    // The host and its tree as the binary was taken, before the long boot.
    let host = Machine::collect(&root, "static", TAG, args);
    let script = guest_script(&o, &xtask, &ffrtmp, &target, &host.commit);
    let mut cmd = Command::new(&xtask);
    cmd.args([
        "vm-test",
        "--kernel",
        &o.kernel,
        "--timeout",
        &o.timeout_secs.to_string(),
    ]);
    for p in [&xtask, &ffrtmp, &watch_probe, &storm, &run_probe, &wrapper, &cgred]
        .into_iter()
        .chain(&o.also)
    {
        cmd.arg("--include").arg(p);
    }
    cmd.arg("--exec").arg(&script);
    eprintln!("{TAG}: booting the {} guest; the console follows", o.kernel);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting vm-test")?;
    let mut console = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("reading the console")?;
        eprintln!("{line}");
        console.push_str(&line);
        console.push('\n');
    }
    let status = child.wait().context("waiting for vm-test")?;
    // Kept whatever happened: a failed bench still handed the others back.
    let kept = target.join("bench-vm");
    fs::create_dir_all(&kept)?;
    fs::write(kept.join("console.txt"), &console).context("writing the console")?;
    let pieces = handed_back(&console)
        .with_context(|| format!("reading the console (kept in {})", kept.join("console.txt").display()))?;
    ensure!(
        status.success(),
        "vm-test failed ({status}) after {} pieces came back; the console is above and in {}",
        pieces.len(),
        kept.join("console.txt").display()
    );
    ensure!(!pieces.is_empty(), "the guest handed nothing back");

    let out_dir = if o.write { root.join("docs") } else { kept };
    fs::create_dir_all(&out_dir)?;
    let mut plots = Vec::new();
    for (key, text) in &pieces {
        if let Some(plot) = Plot::of(key) {
            fs::write(out_dir.join(&plot.to), text).with_context(|| format!("writing {}", plot.to))?;
            plots.push(plot);
        }
    }
    // Plots of an earlier run with more rounds (or --storm) would be left
    // beside the section that no longer shows them.
    for e in fs::read_dir(&out_dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("bench-vm-") && name.ends_with(".svg") && !plots.iter().any(|p| p.to == name) {
            fs::remove_file(e.path()).with_context(|| format!("removing the old plot {name}"))?;
        }
    }
    let section = render(&o, &pieces, &plots, &host);
    print!("{section}");
    if o.write {
        write_section(&root, &section, MARK_START, MARK_END, TAG)?;
    }
    Ok(())
}

/// A plot the guest handed back as `plot-<round>-<state>-<name>`: written
/// beside BENCHMARKS.md as `to`.
struct Plot {
    /// `<round>-<state>`, as in the key of its bench-watch section.
    run: String,
    /// The file name the guest's section refers to.
    name: String,
    to: String,
}

impl Plot {
    fn of(key: &str) -> Option<Plot> {
        let rest = key.strip_prefix("plot-")?;
        let at = rest.find("-bench-watch-")?;
        let (run, name) = (&rest[..at], &rest[at + 1..]);
        Some(Plot {
            run: run.to_string(),
            name: name.to_string(),
            to: format!("bench-vm-{run}-{}", name.strip_prefix("bench-watch-")?),
        })
    }
}

fn render(o: &Options, pieces: &[(String, String)], plots: &[Plot], host: &Machine) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{MARK_START}");
    let _ = writeln!(s, "## In the cgroup v2 VM: favordynmods off and on (issue 17)\n");
    let _ = writeln!(
        s,
        "Written by `{}` (as root on the host). It boots the `cargo xtask vm-test` guest (qemu, **software emulation**: every absolute \
         time below is inflated, compare the rows of one table) with a pure cgroup2 hierarchy and runs \
         `bench-watch` and `bench` there, with the guest's cgroup2 mount remounted without and with \
         `favordynmods` in the same boot, each state checked in mountinfo before its runs. The guest runs \
         the host's ffrtmp binary, this xtask and cgrulesengd, and the C helpers compiled on the \
         host (`--prebuilt`). In the v2 guest cgrulesengd's rule names the cpu controller, so its group is a \
         cgroup2 directory, as ffrtmp's job is. Each part below names the guest's kernel and cgroups.\n",
        host.command
    );
    let _ = writeln!(
        s,
        "- host: {} (UTC), kernel {}, {} CPUs ({}), cgroups {}; ffrtmp {}\n",
        host.date, host.kernel, host.nproc, host.cpu, host.cgroups, host.commit
    );
    for (key, text) in pieces {
        let (what, rest) = key.split_once('-').unwrap_or((key, ""));
        let title = match what {
            "watch" => format!("`watch`, favordynmods {}", state_of(rest)),
            "run" if rest.starts_with("gap-") => {
                format!("`run` overhead, 50 ms apart, favordynmods {}", state_of(rest))
            }
            "run" => format!("`run` overhead, back to back, favordynmods {}", state_of(rest)),
            _ => continue,
        };
        let plots: Vec<(String, String)> = plots
            .iter()
            .filter(|p| what == "watch" && p.run == rest)
            .map(|p| (p.name.clone(), p.to.clone()))
            .collect();
        let round = if o.rounds > 1 {
            format!(
                " (round {})",
                rest.trim_start_matches("gap-").split('-').next().unwrap_or("?")
            )
        } else {
            String::new()
        };
        s.push_str(&nest(text, &format!("{title}{round}"), &plots));
        s.push('\n');
    }
    let _ = writeln!(s, "{MARK_END}");
    s
}

/// "1-on" / "gap-2-off" → "on" / "off".
fn state_of(key_rest: &str) -> &str {
    key_rest.rsplit('-').next().unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_the_order() {
        assert_eq!(states(1), [(1, "off"), (1, "on")]);
        assert_eq!(states(2), [(1, "off"), (1, "on"), (2, "on"), (2, "off")]);
    }

    #[test]
    fn pieces_are_read_between_markers() {
        let console = "boot\r\nBENCH-VM-BEGIN watch-1-off\r\nBENCH-VM| ## t\r\n[ 9.1] a kernel message\r\n\
                       BENCH-VM| row\r\nBENCH-VM| \r\nBENCH-VM-END watch-1-off 3\r\nnoise\n";
        let p = handed_back(console).unwrap();
        assert_eq!(p, [("watch-1-off".to_string(), "## t\nrow\n".to_string())]);
        // A line cut by a kernel message is missing from the count.
        assert!(handed_back("BENCH-VM-BEGIN a\nBENCH-VM| x\nBENCH-VM-END a 2\n").is_err());
        assert!(handed_back("BENCH-VM-BEGIN a\nBENCH-VM| x\n").is_err());
        assert!(handed_back("BENCH-VM-BEGIN a\nBENCH-VM-END b 0\n").is_err());
        assert!(handed_back("BENCH-VM-BEGIN a\nBENCH-VM-BEGIN b\n").is_err());
    }

    #[test]
    fn a_guest_section_is_nested_one_level_down() {
        let section = "<!-- bench:watch-latency:start -->\n## `watch`: x\n\n### Quiet host\n\
                       ![q](bench-watch-quiet.svg)\n<!-- bench:watch-latency:end -->\n";
        let plots = [(
            "bench-watch-quiet.svg".to_string(),
            "bench-vm-1-on-quiet.svg".to_string(),
        )];
        assert_eq!(
            nest(section, "`watch`, favordynmods on", &plots),
            "### `watch`, favordynmods on\n\n#### Quiet host\n![q](bench-vm-1-on-quiet.svg)\n"
        );
    }

    #[test]
    fn the_script_checks_each_state_and_hands_back_each_bench() {
        let o = parse_args(&["--rounds".into(), "2".into()]).unwrap().unwrap();
        let s = guest_script(&o, Path::new("/x"), Path::new("/f"), Path::new("/t"), "abc1234");
        assert!(s.contains("export FFRTMP_BENCH_TREE='abc1234'\n"));
        assert_eq!(s.matches("turn on\n").count(), 2);
        assert_eq!(s.matches("turn off\n").count(), 2);
        assert!(s.contains("one watch-2-on bench-watch --prebuilt --no-install --ffrtmp '/f' "));
        assert!(
            s.contains("one run-gap-1-off bench --prebuilt --ffrtmp '/f' --iterations 100 --warmup 10 --gap-ms 50\n")
        );
        assert!(s.contains("X='/x'\n"));
        assert!(s.ends_with("exit $failed\n"));
        assert!(parse_args(&["--rounds".into(), "0".into()]).is_err());
    }

    #[test]
    fn also_builds_join_every_run_bench() {
        let args = ["--also", "/a", "--also", "/b"].map(String::from);
        let o = parse_args(&args).unwrap().unwrap();
        let s = guest_script(&o, Path::new("/x"), Path::new("/f"), Path::new("/t"), "abc1234");
        let with_both = " --warmup 10 --also '/a' --also '/b'";
        assert_eq!(
            s.matches(with_both).count(),
            4,
            "back to back and 50 ms apart, off and on:\n{s}"
        );
        assert!(!s.contains("bench-watch --prebuilt --no-install --ffrtmp '/f' --also"));
    }

    #[test]
    fn plots_are_renamed_by_their_run() {
        let p = Plot::of("plot-2-on-bench-watch-quiet.svg").unwrap();
        assert_eq!((p.run.as_str(), p.name.as_str()), ("2-on", "bench-watch-quiet.svg"));
        assert_eq!(p.to, "bench-vm-2-on-quiet.svg");
        assert!(Plot::of("watch-2-on").is_none());
    }

    #[test]
    fn states_are_read_from_keys() {
        assert_eq!(state_of("1-on"), "on");
        assert_eq!(state_of("gap-2-off"), "off");
    }
}
