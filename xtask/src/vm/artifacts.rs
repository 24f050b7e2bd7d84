//! Builds what runs in the guest and finds it in cargo's JSON messages: the
//! `ffrtmp` binary, the `[[bin]]` stubs of the `tests` package, and every test
//! executable of the `tests` package.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;

pub struct Artifacts {
    pub ffrtmp: PathBuf,
    /// `[[bin]]` executables of the tests package (stub programs).
    pub stubs: Vec<PathBuf>,
    /// Test executables of the tests package (`target/<profile>/deps/<name>-<hash>`).
    pub tests: Vec<PathBuf>,
    /// The tests package root: the tests' working directory under cargo.
    pub tests_dir: PathBuf,
}

struct Artifact {
    manifest: PathBuf,
    name: String,
    kinds: Vec<String>,
    test: bool,
    executable: PathBuf,
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs cargo with `--message-format=json-render-diagnostics` (diagnostics go
/// to stderr as usual) and returns the executables it reports.
fn cargo_json(root: &Path, args: &[&str]) -> anyhow::Result<Vec<Artifact>> {
    let shown = format!("cargo {}", args.join(" "));
    eprintln!("vm-test: {shown}");
    let mut child = cargo()
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    let mut found = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line?;
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let kinds = v["target"]["kind"]
            .as_array()
            .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        found.push(Artifact {
            manifest: PathBuf::from(v["manifest_path"].as_str().unwrap_or_default()),
            name: v["target"]["name"].as_str().unwrap_or_default().to_string(),
            kinds,
            test: v["profile"]["test"].as_bool().unwrap_or(false),
            executable: PathBuf::from(exe),
        });
    }
    let st = child.wait()?;
    if !st.success() {
        bail!("`{shown}` failed ({st})");
    }
    Ok(found)
}

/// `with_tests: false` skips the test executables (for `--exec`).
pub fn build(root: &Path, with_tests: bool) -> anyhow::Result<Artifacts> {
    let tests_manifest = root.join("tests/Cargo.toml");
    let ffrtmp_manifest = root.join("ffrtmp/Cargo.toml");

    let built = cargo_json(root, &["build", "-p", "ffrtmp", "-p", "tests", "--bins"])?;
    let ffrtmp = built
        .iter()
        .find(|a| a.manifest == ffrtmp_manifest && a.name == "ffrtmp" && a.kinds.iter().any(|k| k == "bin"))
        .map(|a| a.executable.clone())
        .context("`cargo build -p ffrtmp` reported no ffrtmp executable")?;
    let mut stubs: Vec<PathBuf> = built
        .iter()
        .filter(|a| a.manifest == tests_manifest && !a.test && a.kinds.iter().any(|k| k == "bin"))
        .map(|a| a.executable.clone())
        .collect();
    stubs.sort();
    stubs.dedup();

    let built = match with_tests {
        true => cargo_json(root, &["test", "-p", "tests", "--no-run"])?,
        false => Vec::new(),
    };
    let mut tests: Vec<PathBuf> = built
        .iter()
        .filter(|a| a.manifest == tests_manifest && a.test)
        .map(|a| a.executable.clone())
        .collect();
    tests.sort();
    tests.dedup();

    let profile_dir = ffrtmp.parent().context("ffrtmp has no parent directory")?;
    for t in &tests {
        if t.parent().and_then(Path::parent) != Some(profile_dir) {
            bail!(
                "test executable {} is not in {}/deps: the tests could not find ffrtmp next to them",
                t.display(),
                profile_dir.display()
            );
        }
    }
    for s in &stubs {
        if s.parent() != Some(profile_dir) {
            bail!("stub {} is not next to {}", s.display(), ffrtmp.display());
        }
    }
    Ok(Artifacts {
        ffrtmp,
        stubs,
        tests,
        tests_dir: root.join("tests"),
    })
}
