//! `cargo xtask fuzz [--target NAME]… [--seconds N] [--list] [--minimize]`:
//! build the cargo-fuzz targets in `fuzz/` and run each on its corpus for a
//! fixed time; fail if one crashes (docs/fuzzing.md).
//!
//! What it installs when missing, under `target/` so a warm run reuses it:
//! 1. the nightly named in `fuzz/rust-toolchain.toml` (rustup; the same one
//!    `cargo xtask build-ebpf` installs);
//! 2. cargo-fuzz [`CARGO_FUZZ_VERSION`], built with that nightly into
//!    `target/tools/cargo-fuzz/`.
//!
//! Each target runs on four corpus directories: its working copy
//! `target/fuzz/corpus/<target>/` (where libFuzzer writes what it finds, so
//! the committed files stay as they are), the committed, minimized
//! `fuzz/corpus/<target>/`, the hand-made seeds `fuzz/seeds/<target>/` and
//! the inputs of crashes fixed since, `fuzz/regressions/<target>/`; with
//! `fuzz/dicts/<target>.dict` as its libFuzzer dictionary when there is one.
//! `--minimize` then merges all of them with `cargo fuzz cmin` (a set cover
//! of the edges they reach) and writes the result to `fuzz/corpus/<target>/`,
//! to be committed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::ebpf::{pinned_toolchain, repo_root, run, rustup_run, sysroot};

/// Exactly this cargo-fuzz (its own Cargo.lock: `--locked`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const FUZZ_DIR: &str = "fuzz";
const DEFAULT_SECONDS: u64 = 20;
/// libFuzzer's limit for one input: a hang shows as a crash ("timeout").
const INPUT_TIMEOUT_SECONDS: u64 = 10;

const USAGE: &str =
    "usage: cargo xtask fuzz [--target NAME]... [--seconds N] [--jobs N] [--opt-level N] [--list] [--minimize]

Builds the fuzz targets in fuzz/ (pinned nightly + cargo-fuzz, installed under target/ if missing)
and runs each for N seconds on its corpus; fails if any target crashes.
  --target NAME  run only this target (repeatable; default: all, see --list)
  --seconds N    libFuzzer's -max_total_time per target (default 20)
  --jobs N       run N targets at a time, each on its own core (default 1; libFuzzer
                 runs one process per target, so more jobs than cores only share them)
  --opt-level N  build the targets at this opt-level (0-3; default: cargo's release
                 profile, 3); CI's short runs use 1, which compiles in less time
  --list         print the targets and exit
  --minimize     afterwards, merge each target's corpora with `cargo fuzz cmin` into
                 fuzz/corpus/<target>/ (commit the result)";

#[derive(Debug, PartialEq)]
struct Opts {
    targets: Vec<String>,
    seconds: u64,
    jobs: usize,
    opt_level: Option<u8>,
    list: bool,
    minimize: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Opts>> {
    let mut opts = Opts {
        targets: Vec::new(),
        seconds: DEFAULT_SECONDS,
        jobs: 1,
        opt_level: None,
        list: false,
        minimize: false,
    };
    let mut args = args.iter();
    while let Some(a) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match a.as_str() {
            "--target" => opts.targets.push(value("--target")?),
            "--seconds" => {
                let v = value("--seconds")?;
                opts.seconds = match v.parse() {
                    Ok(n) if n > 0 => n,
                    _ => bail!("--seconds takes a whole number of seconds above 0, not '{v}'\n\n{USAGE}"),
                };
            }
            "--jobs" => {
                let v = value("--jobs")?;
                opts.jobs = match v.parse() {
                    Ok(n) if n > 0 => n,
                    _ => bail!("--jobs takes a whole number of targets above 0, not '{v}'\n\n{USAGE}"),
                };
            }
            "--opt-level" => {
                let v = value("--opt-level")?;
                opts.opt_level = match v.parse() {
                    Ok(n @ 0..=3) => Some(n),
                    _ => bail!("--opt-level takes 0, 1, 2 or 3, not '{v}'\n\n{USAGE}"),
                };
            }
            "--list" => opts.list = true,
            "--minimize" => opts.minimize = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument '{other}'\n\n{USAGE}"),
        }
    }
    Ok(Some(opts))
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let Some(opts) = parse(args)? else { return Ok(()) };
    let root = repo_root();
    let fuzz_dir = root.join(FUZZ_DIR);
    let all = targets(&fuzz_dir)?;
    if opts.list {
        for t in &all {
            println!("{t}");
        }
        return Ok(());
    }
    let selected = if opts.targets.is_empty() {
        all.clone()
    } else {
        for t in &opts.targets {
            if !all.contains(t) {
                bail!("no fuzz target '{t}' (targets: {})", all.join(", "));
            }
        }
        opts.targets.clone()
    };

    let started = Instant::now();
    let toolchain = pinned_toolchain(&fuzz_dir)?;
    ensure_toolchain(&toolchain)?;
    let cargo_fuzz = ensure_cargo_fuzz(&toolchain, &root.join("target/tools/cargo-fuzz"))?;
    let fuzz = Fuzz {
        toolchain,
        cargo_fuzz,
        fuzz_dir,
        target_dir: root.join("target/fuzz"),
        opt_level: opts.opt_level,
    };

    let t = Instant::now();
    let mut build = fuzz.command("build");
    if let [only] = selected.as_slice() {
        build.arg(only);
    }
    eprintln!("fuzz: building {} target(s) with {}", selected.len(), fuzz.toolchain);
    run(&mut build, "building the fuzz targets")?;
    eprintln!("fuzz: built ({:.1}s)", t.elapsed().as_secs_f64());

    // `jobs` targets at a time: each libFuzzer run is one single-threaded
    // process, so on a machine with cores to spare they run side by side.
    let mut results = Vec::new();
    for batch in selected.chunks(opts.jobs) {
        let batch_results: Vec<anyhow::Result<RunResult>> = std::thread::scope(|s| {
            let runs: Vec<_> = batch
                .iter()
                .map(|target| s.spawn(|| fuzz.run(target, opts.seconds)))
                .collect();
            runs.into_iter()
                .map(|run| run.join().unwrap_or_else(|_| bail!("a fuzz run's thread panicked")))
                .collect()
        });
        for result in batch_results {
            let result = result?;
            println!("{}", result.line());
            results.push(result);
        }
    }
    if opts.minimize {
        for target in selected
            .iter()
            .filter(|t| results.iter().any(|r| &r.target == *t && r.crash.is_none()))
        {
            fuzz.minimize(target)?;
        }
    }
    println!(
        "fuzz: {} target(s), {} s each, {} at a time, {:.0}s in all",
        results.len(),
        opts.seconds,
        opts.jobs,
        started.elapsed().as_secs_f64()
    );
    let crashed: Vec<&RunResult> = results.iter().filter(|r| r.crash.is_some()).collect();
    if !crashed.is_empty() {
        for r in &crashed {
            eprintln!(
                "fuzz: {} failed: {} (log: {}); reproduce with `cargo xtask fuzz --target {} --seconds 1` \
                 after copying the input into fuzz/regressions/{}/",
                r.target,
                r.crash.as_deref().unwrap_or("?"),
                r.log.display(),
                r.target,
                r.target
            );
        }
        bail!(
            "{} fuzz target(s) failed (a crash, or libFuzzer could not run): {}",
            crashed.len(),
            crashed.iter().map(|r| r.target.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// The targets: `fuzz/fuzz_targets/<name>.rs`, sorted.
fn targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_string))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(names)
}

/// Installs the pinned nightly unless it is already there (no component
/// beyond the minimal profile: the sanitizer runtimes are in rust-std).
fn ensure_toolchain(toolchain: &str) -> anyhow::Result<()> {
    if sysroot(toolchain).is_ok() {
        return Ok(());
    }
    eprintln!("fuzz: installing {toolchain}");
    let t = Instant::now();
    let mut cmd = Command::new("rustup");
    cmd.args(["toolchain", "install", toolchain, "--profile", "minimal"]);
    run(&mut cmd, &format!("installing {toolchain}"))?;
    sysroot(toolchain)?;
    eprintln!("fuzz: {toolchain} installed ({:.1}s)", t.elapsed().as_secs_f64());
    Ok(())
}

/// cargo-fuzz [`CARGO_FUZZ_VERSION`] under `tools_dir`, built with the
/// pinned nightly unless that version is already there.
fn ensure_cargo_fuzz(toolchain: &str, tools_dir: &Path) -> anyhow::Result<PathBuf> {
    let bin = tools_dir.join("bin/cargo-fuzz");
    let installed = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if installed.as_deref() == Some(format!("cargo-fuzz {CARGO_FUZZ_VERSION}").as_str()) {
        return Ok(bin);
    }
    eprintln!(
        "fuzz: building cargo-fuzz {CARGO_FUZZ_VERSION} into {}",
        tools_dir.display()
    );
    let t = Instant::now();
    let mut cmd = rustup_run(toolchain, "cargo");
    // `--debug`: cargo-fuzz only drives cargo and the fuzzers, so its own
    // speed does not matter, and a debug build compiles in less time.
    cmd.args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--debug",
        "--force",
        "--version",
        &format!("={CARGO_FUZZ_VERSION}"),
        "--root",
    ])
    .arg(tools_dir)
    .env("CARGO_TARGET_DIR", tools_dir.join("build"));
    run(&mut cmd, "building cargo-fuzz")?;
    eprintln!("fuzz: cargo-fuzz built ({:.1}s)", t.elapsed().as_secs_f64());
    Ok(bin)
}

struct Fuzz {
    toolchain: String,
    cargo_fuzz: PathBuf,
    fuzz_dir: PathBuf,
    target_dir: PathBuf,
    /// cargo-fuzz builds with the release profile; this overrides its level.
    opt_level: Option<u8>,
}

/// One target's run: libFuzzer's final figures.
#[derive(Debug, Default, PartialEq)]
struct RunResult {
    target: String,
    seconds: f64,
    stats: Stats,
    /// The input that crashed it (libFuzzer's artifact), if it did.
    crash: Option<String>,
    log: PathBuf,
}

impl RunResult {
    fn line(&self) -> String {
        let s = &self.stats;
        let or_dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        format!(
            "fuzz: {:<15} {} execs ({} exec/s) in {:.0}s, cov {}, ft {}, corpus {} inputs / {} bytes{}",
            self.target,
            or_dash(s.execs),
            or_dash(s.execs_per_sec),
            self.seconds,
            or_dash(s.cov),
            or_dash(s.ft),
            or_dash(s.corpus_inputs),
            or_dash(s.corpus_bytes),
            match &self.crash {
                Some(file) => format!(", FAILED: {file}"),
                None => String::new(),
            }
        )
    }
}

impl Fuzz {
    /// `cargo fuzz <subcommand> --fuzz-dir fuzz --target-dir target/fuzz`
    /// with the pinned nightly.
    fn command(&self, subcommand: &str) -> Command {
        let mut cmd = rustup_run(&self.toolchain, &self.cargo_fuzz);
        cmd.args(["fuzz", subcommand, "--fuzz-dir"])
            .arg(&self.fuzz_dir)
            .arg("--target-dir")
            .arg(&self.target_dir)
            .current_dir(&self.fuzz_dir);
        if let Some(level) = self.opt_level {
            cmd.env("CARGO_PROFILE_RELEASE_OPT_LEVEL", level.to_string());
        }
        cmd
    }

    /// The committed and hand-made corpora of `target` that exist.
    fn read_only_corpora(&self, target: &str) -> Vec<PathBuf> {
        ["corpus", "seeds", "regressions"]
            .iter()
            .map(|d| self.fuzz_dir.join(d).join(target))
            .filter(|d| d.is_dir())
            .collect()
    }

    fn run(&self, target: &str, seconds: u64) -> anyhow::Result<RunResult> {
        let work = self.target_dir.join("corpus").join(target);
        let artifacts = self.target_dir.join("artifacts").join(target);
        let logs = self.target_dir.join("logs");
        for d in [&work, &artifacts, &logs] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let log = logs.join(format!("{target}.log"));
        let log_file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;

        let mut cmd = self.command("run");
        cmd.arg(target)
            .arg(&work)
            .args(self.read_only_corpora(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        let dict = self.fuzz_dir.join("dicts").join(format!("{target}.dict"));
        if dict.is_file() {
            cmd.arg(format!("-dict={}", dict.display()));
        }
        cmd.stdout(log_file.try_clone().context("duplicating the log file")?)
            .stderr(log_file);
        eprintln!("fuzz: running {target} for {seconds}s (log: {})", log.display());
        let t = Instant::now();
        let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
        let text = fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        let stats = Stats::parse(&text);
        let crash = if status.success() {
            None
        } else {
            // The tail shows the panic or the sanitizer's report.
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("fuzz: {target} failed ({status}); the end of its log:");
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("  {l}");
            }
            Some(artifact(&text).unwrap_or_else(|| format!("no input recorded ({status}); see the log")))
        };
        Ok(RunResult {
            target: target.to_string(),
            seconds: t.elapsed().as_secs_f64(),
            stats,
            crash,
            log,
        })
    }

    /// `cargo fuzz cmin` over every corpus of `target`, into `fuzz/corpus/<target>/`.
    fn minimize(&self, target: &str) -> anyhow::Result<()> {
        let merged = self.target_dir.join("cmin").join(target);
        if merged.exists() {
            fs::remove_dir_all(&merged).with_context(|| format!("removing {}", merged.display()))?;
        }
        fs::create_dir_all(&merged).with_context(|| format!("creating {}", merged.display()))?;
        let mut sources = vec![self.target_dir.join("corpus").join(target)];
        sources.extend(self.read_only_corpora(target));
        let mut before = 0;
        for dir in &sources {
            for file in files(dir)? {
                let to = merged.join(file.file_name().context("a corpus file without a name")?);
                if !to.exists() {
                    fs::copy(&file, &to).with_context(|| format!("copying {}", file.display()))?;
                    before += 1;
                }
            }
        }
        let log = self.target_dir.join("logs").join(format!("{target}.cmin.log"));
        let log_file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // A set cover of the edges, not of every hit count: the committed
        // corpus stays small (a tenth of a plain merge for mountinfo) and
        // reaches the same code; the working corpus keeps the rest.
        let mut cmd = self.command("cmin");
        cmd.arg(target)
            .arg(&merged)
            .arg("--")
            .arg("-set_cover_merge=1")
            .arg("-use_counters=0")
            .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
            .stdout(log_file.try_clone().context("duplicating the log file")?)
            .stderr(log_file);
        run(
            &mut cmd,
            &format!("minimizing the corpus of {target} (log: {})", log.display()),
        )?;
        let kept = files(&merged)?;
        if kept.is_empty() {
            bail!(
                "cargo fuzz cmin left nothing of {before} inputs of {target} (log: {})",
                log.display()
            );
        }
        let committed = self.fuzz_dir.join("corpus").join(target);
        if committed.exists() {
            fs::remove_dir_all(&committed).with_context(|| format!("removing {}", committed.display()))?;
        }
        fs::create_dir_all(&committed).with_context(|| format!("creating {}", committed.display()))?;
        let mut bytes = 0;
        for file in &kept {
            let to = committed.join(file.file_name().context("a corpus file without a name")?);
            bytes += fs::copy(file, &to).with_context(|| format!("copying {} to {}", file.display(), to.display()))?;
        }
        println!(
            "fuzz: {target:<15} minimized: {before} inputs -> {} inputs / {bytes} bytes in fuzz/corpus/{target}/",
            kept.len()
        );
        Ok(())
    }
}

/// The regular files in `dir`.
fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// libFuzzer's figures at the end of a run: the last status line (`#N DONE
/// cov: C ft: F corp: U/SIZE … exec/s: E`) and the `-print_final_stats` lines.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    execs: Option<u64>,
    execs_per_sec: Option<u64>,
    cov: Option<u64>,
    ft: Option<u64>,
    corpus_inputs: Option<u64>,
    corpus_bytes: Option<u64>,
}

impl Stats {
    fn parse(log: &str) -> Stats {
        let mut s = Stats::default();
        let word_after = |line: &str, key: &str| -> Option<String> {
            let mut words = line.split_whitespace();
            words.find(|w| *w == key)?;
            words.next().map(str::to_string)
        };
        for line in log.lines() {
            let line = line.trim();
            let status_execs = line
                .strip_prefix('#')
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(execs) = status_execs
                && line.contains(" cov: ")
            {
                s.execs = Some(execs);
                s.cov = word_after(line, "cov:").and_then(|v| v.parse().ok()).or(s.cov);
                s.ft = word_after(line, "ft:").and_then(|v| v.parse().ok()).or(s.ft);
                if let Some((units, size)) = word_after(line, "corp:").as_deref().and_then(|c| c.split_once('/')) {
                    s.corpus_inputs = units.parse().ok();
                    s.corpus_bytes = parse_size(size);
                }
                s.execs_per_sec = word_after(line, "exec/s:")
                    .and_then(|v| v.parse().ok())
                    .or(s.execs_per_sec);
            } else if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
                s.execs = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
                s.execs_per_sec = v.trim().parse().ok();
            }
        }
        s
    }
}

/// libFuzzer's sizes: `123b`, `12Kb`, `3Mb`.
fn parse_size(s: &str) -> Option<u64> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "b" => n,
        "Kb" => n << 10,
        "Mb" => n << 20,
        "Gb" => n << 30,
        _ => return None,
    })
}

/// The crashing input libFuzzer wrote: `Test unit written to PATH`.
fn artifact(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find_map(|l| l.split_once("Test unit written to "))
        .map(|(_, path)| path.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn parses_flags() {
        let o = parse(&s(&["--target", "btf", "--target", "limits", "--seconds", "5"]))
            .unwrap()
            .unwrap();
        assert_eq!(o.targets, ["btf", "limits"]);
        assert_eq!(o.seconds, 5);
        assert_eq!(o.jobs, 1);
        assert!(!o.list && !o.minimize);
        assert_eq!(parse(&s(&["--jobs", "2"])).unwrap().unwrap().jobs, 2);
        assert_eq!(parse(&s(&[])).unwrap().unwrap().seconds, DEFAULT_SECONDS);
        assert!(parse(&s(&["--list"])).unwrap().unwrap().list);
        for bad in [
            &["--seconds", "0"][..],
            &["--seconds"],
            &["--target"],
            &["--jobs", "0"],
            &["--bogus"],
        ] {
            assert!(parse(&s(bad)).is_err(), "{bad:?} accepted");
        }
        assert!(parse(&s(&["--help"])).unwrap().is_none());
    }

    #[test]
    fn reads_libfuzzer_final_figures() {
        let log = "\
INFO: Seed: 1234
#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb
#4096\tpulse  cov: 100 ft: 150 corp: 20/900b lim: 4096 exec/s: 2048 rss: 40Mb
#52377\tNEW    cov: 120 ft: 190 corp: 31/2Kb lim: 4096 exec/s: 2619 rss: 45Mb L: 7/9 MS: 1 ChangeBit-
#60000\tDONE   cov: 121 ft: 195 corp: 32/2Kb lim: 4096 exec/s: 2857 rss: 46Mb
Done 60000 runs in 21 second(s)
stat::number_of_executed_units: 60000
stat::average_exec_per_sec:     2857
stat::new_units_added:          31
";
        assert_eq!(
            Stats::parse(log),
            Stats {
                execs: Some(60000),
                execs_per_sec: Some(2857),
                cov: Some(121),
                ft: Some(195),
                corpus_inputs: Some(32),
                corpus_bytes: Some(2048),
            }
        );
        assert_eq!(Stats::parse(""), Stats::default());
        let crash =
            "==1== ERROR: libFuzzer: deadly signal\nartifact_prefix='/t/'; Test unit written to /t/crash-ab12\n";
        assert_eq!(artifact(crash).as_deref(), Some("/t/crash-ab12"));
    }

    #[test]
    fn lists_the_targets() {
        let t = targets(&repo_root().join(FUZZ_DIR)).unwrap();
        assert!(t.contains(&"config_yaml".to_string()), "{t:?}");
        assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
    }

    /// libFuzzer refuses a dictionary with a bad line, and the run fails at
    /// once: every entry is `"…"` with only `\\`, `\"` and `\xNN` escapes.
    #[test]
    fn dictionaries_are_in_libfuzzer_syntax() {
        let dir = repo_root().join(FUZZ_DIR).join("dicts");
        let all = targets(&repo_root().join(FUZZ_DIR)).unwrap();
        for file in files(&dir).unwrap() {
            let name = file.file_stem().unwrap().to_str().unwrap().to_string();
            assert!(all.contains(&name), "{} is for no target", file.display());
            let text = fs::read_to_string(&file).unwrap();
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let body = line.strip_prefix('"').and_then(|l| l.strip_suffix('"'));
                let body = body.unwrap_or_else(|| panic!("{}: {line} is not \"…\"", file.display()));
                let mut chars = body.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some('\\' | '"') => {}
                            Some('x') => {
                                let hex: String = chars.by_ref().take(2).collect();
                                assert!(u8::from_str_radix(&hex, 16).is_ok(), "{}: {line}", file.display());
                            }
                            _ => panic!("{}: {line}: libFuzzer knows only \\\\, \\\" and \\xNN", file.display()),
                        },
                        '"' => panic!("{}: {line}: an unescaped quote", file.display()),
                        _ => {}
                    }
                }
            }
        }
    }

    /// CI installs one nightly for both: `build-ebpf --check` runs first.
    #[test]
    fn fuzz_and_ebpf_share_the_nightly() {
        let root = repo_root();
        assert_eq!(
            pinned_toolchain(&root.join(FUZZ_DIR)).unwrap(),
            pinned_toolchain(&root.join("ffrtmp-ebpf")).unwrap(),
            "fuzz/rust-toolchain.toml and ffrtmp-ebpf/rust-toolchain.toml name different nightlies; \
             CI would install both (or drop this test and budget for it)"
        );
    }
}
