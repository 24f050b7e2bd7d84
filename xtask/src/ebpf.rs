//! `cargo xtask build-ebpf [--check [--allow-missing-toolchain]]`: build the
//! eBPF objects that `ffrtmp` embeds, with a pinned toolchain, and write them to
//! their committed paths ([`OBJECTS`]).
//!
//! The recipe (KERNEL.md "Building the eBPF object"):
//! 1. the nightly named in `ffrtmp-ebpf/rust-toolchain.toml`, with rust-src
//!    (installed with rustup if missing);
//! 2. bpf-linker [`BPF_LINKER_VERSION`], built against *that* toolchain's
//!    libLLVM, installed under `target/ebpf-tools/`;
//! 3. `cargo build --release` in `ffrtmp-ebpf/` (its `.cargo/config.toml`
//!    sets `--target bpfel-unknown-none` and `-Z build-std=core`), with a
//!    clean environment and remapped source paths so the bytes depend only on
//!    the sources and the pinned tools, not on where they live.
//!
//! `--check` builds into a fresh directory and fails if the result differs
//! from the committed object. If the toolchain or bpf-linker cannot be
//! installed it fails saying so; with `--allow-missing-toolchain` it prints
//! `SKIPPED: …` and succeeds instead (for machines without network).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

/// Each object the crate builds (a cargo bin of `ffrtmp-ebpf`) and where it
/// is committed, relative to the repository root. The `ffrtmp` crate embeds
/// them with `include_bytes_aligned!`.
pub const OBJECTS: [(&str, &str); 3] = [
    ("ffrtmp-ebpf", "ffrtmp/src/events/ffrtmp-ebpf.bpf.o"),
    ("ffrtmp-net", "ffrtmp/src/net/ffrtmp-net.bpf.o"),
    ("ffrtmp-pace", "ffrtmp/src/net/ffrtmp-pace.bpf.o"),
];
/// Exactly this bpf-linker (its own Cargo.lock is used: `--locked`).
const BPF_LINKER_VERSION: &str = "=0.13.0";
const EBPF_CRATE: &str = "ffrtmp-ebpf";
const BPF_TARGET: &str = "bpfel-unknown-none";

const USAGE: &str = "usage: cargo xtask build-ebpf [--check [--allow-missing-toolchain]]

Builds ffrtmp-ebpf with the pinned nightly and bpf-linker and writes its objects to
ffrtmp/src/events/ffrtmp-ebpf.bpf.o, ffrtmp/src/net/ffrtmp-net.bpf.o and
ffrtmp/src/net/ffrtmp-pace.bpf.o (commit them with their sources).
  --check                    rebuild in a temporary directory; fail if one differs from its committed object
  --allow-missing-toolchain  with --check: print SKIPPED and succeed if the pinned tools cannot be installed";

struct Opts {
    check: bool,
    allow_missing_toolchain: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Opts>> {
    let mut opts = Opts {
        check: false,
        allow_missing_toolchain: false,
    };
    for a in args {
        match a.as_str() {
            "--check" => opts.check = true,
            "--allow-missing-toolchain" => opts.allow_missing_toolchain = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument '{other}'\n\n{USAGE}"),
        }
    }
    if opts.allow_missing_toolchain && !opts.check {
        bail!("--allow-missing-toolchain only makes sense with --check\n\n{USAGE}");
    }
    Ok(Some(opts))
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let Some(opts) = parse(args)? else { return Ok(()) };
    let root = repo_root();
    let crate_dir = root.join(EBPF_CRATE);
    let toolchain = pinned_toolchain(&crate_dir)?;
    let tools_dir = root.join("target/ebpf-tools");

    let started = Instant::now();
    let linker = match ensure_toolchain(&toolchain).and_then(|()| ensure_bpf_linker(&toolchain, &tools_dir)) {
        Ok(linker) => linker,
        Err(e) if opts.allow_missing_toolchain => {
            println!(
                "SKIPPED: cannot verify the committed eBPF objects: the pinned eBPF toolchain ({toolchain} + bpf-linker \
                 {BPF_LINKER_VERSION}) could not be installed: {e:#}"
            );
            return Ok(());
        }
        Err(e) => {
            return Err(e.context(format!(
                "the pinned eBPF toolchain ({toolchain} + bpf-linker {BPF_LINKER_VERSION}) could not be installed"
            )));
        }
    };

    if opts.check {
        let scratch = root.join(format!("target/ebpf-check-{}", std::process::id()));
        let _cleanup = RemoveOnDrop(scratch.clone());
        let built = build(&root, &crate_dir, &toolchain, &linker, &scratch)?;
        for (bin, committed) in OBJECTS {
            check_object(&root, &built.join(bin), committed)?;
        }
        println!("build-ebpf --check: done in {:.1}s", started.elapsed().as_secs_f64());
    } else {
        let target_dir = root.join("target/ebpf");
        let built = build(&root, &crate_dir, &toolchain, &linker, &target_dir)?;
        for (bin, committed) in OBJECTS {
            let from = built.join(bin);
            let to = root.join(committed);
            fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            let bytes = fs::read(&to).with_context(|| format!("reading {}", to.display()))?;
            println!(
                "build-ebpf: wrote {committed} ({} bytes, fnv1a {:016x}; {:.1}s); commit it with its sources",
                bytes.len(),
                fnv1a(&bytes),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Fails unless the freshly built `fresh` equals the committed object.
fn check_object(root: &Path, fresh: &Path, committed: &str) -> anyhow::Result<()> {
    let new = fs::read(fresh).with_context(|| format!("reading {}", fresh.display()))?;
    let old = match fs::read(root.join(committed)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{committed} does not exist: run `cargo xtask build-ebpf` and commit it")
        }
        Err(e) => return Err(e).with_context(|| format!("reading {committed}")),
    };
    if new != old {
        bail!(
            "{committed} is stale: rebuilding {EBPF_CRATE} gives {} bytes (fnv1a {:016x}), the committed object \
             is {} bytes (fnv1a {:016x}); run `cargo xtask build-ebpf` and commit the result",
            new.len(),
            fnv1a(&new),
            old.len(),
            fnv1a(&old)
        );
    }
    println!(
        "build-ebpf --check: {committed} matches its source ({} bytes, fnv1a {:016x})",
        new.len(),
        fnv1a(&new)
    );
    Ok(())
}

/// The repository root: xtask lives in `<root>/xtask`.
pub(crate) fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The `channel = "…"` of `<crate_dir>/rust-toolchain.toml`: the one place
/// a crate's nightly is named (`ffrtmp-ebpf/`, `fuzz/`).
pub(crate) fn pinned_toolchain(crate_dir: &Path) -> anyhow::Result<String> {
    let path = crate_dir.join("rust-toolchain.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .find(|v| !v.is_empty())
        .with_context(|| format!("no `channel = \"…\"` in {}", path.display()))
}

/// A `rustup run <toolchain> <program>` command with a clean environment:
/// nothing the calling cargo set (RUSTUP_TOOLCHAIN, RUSTC, RUSTFLAGS, …)
/// leaks into the pinned build.
pub(crate) fn rustup_run(toolchain: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", toolchain]).arg(program);
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let leaks = key == "RUSTUP_TOOLCHAIN"
            || key == "RUSTC"
            || key == "RUSTDOC"
            || key.starts_with("RUSTC_")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
            || key == "CARGO_ENCODED_RUSTFLAGS"
            || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_TARGET_")
            || key.starts_with("CARGO_PROFILE_")
            || key == "CARGO_INCREMENTAL"
            || key == "CARGO_MAKEFLAGS"
            || key.starts_with("CARGO_PKG_")
            || key == "CARGO_MANIFEST_DIR"
            || key == "CARGO_MANIFEST_PATH"
            || key == "CARGO_PRIMARY_PACKAGE"
            || key == "CARGO_CRATE_NAME"
            || key == "CARGO_BIN_NAME"
            || key == "CARGO";
        if leaks {
            cmd.env_remove(key);
        }
    }
    cmd
}

pub(crate) fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("{what}: starting {cmd:?}"))?;
    if !status.success() {
        bail!("{what}: {cmd:?} failed ({status})");
    }
    Ok(())
}

pub(crate) fn sysroot(toolchain: &str) -> anyhow::Result<PathBuf> {
    let out = rustup_run(toolchain, "rustc")
        .args(["--print", "sysroot"])
        .output()
        .with_context(|| format!("running rustc +{toolchain} --print sysroot"))?;
    if !out.status.success() {
        bail!(
            "rustc +{toolchain} --print sysroot failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Installs the pinned nightly with rust-src unless it is already there.
fn ensure_toolchain(toolchain: &str) -> anyhow::Result<()> {
    let have_src = |sysroot: &Path| sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml").is_file();
    if let Ok(s) = sysroot(toolchain)
        && have_src(&s)
    {
        return Ok(());
    }
    eprintln!("build-ebpf: installing {toolchain} with rust-src");
    let t = Instant::now();
    let mut cmd = Command::new("rustup");
    cmd.args([
        "toolchain",
        "install",
        toolchain,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]);
    run(&mut cmd, &format!("installing {toolchain}"))?;
    let s = sysroot(toolchain)?;
    if !have_src(&s) {
        bail!("{toolchain} installed but rust-src is missing under {}", s.display());
    }
    eprintln!("build-ebpf: {toolchain} installed ({:.1}s)", t.elapsed().as_secs_f64());
    Ok(())
}

/// bpf-linker built against the toolchain's own libLLVM, under `tools_dir`.
/// A stamp file records what it was built for; a mismatch rebuilds it.
fn ensure_bpf_linker(toolchain: &str, tools_dir: &Path) -> anyhow::Result<PathBuf> {
    let sysroot = sysroot(toolchain)?;
    let libdir = sysroot.join("lib");
    let libllvm = fs::read_dir(&libdir)
        .with_context(|| format!("listing {}", libdir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter_map(|n| n.into_string().ok())
        // The real library (`libLLVM.so.23.1-rust-…`), not the
        // `libLLVM-23-rust-….so` linker script next to it.
        .filter(|n| n.starts_with("libLLVM.so."))
        .min()
        .with_context(|| format!("{toolchain} ships no libLLVM in {}", libdir.display()))?;

    // LLVM_PREFIX/lib/libLLVM.so -> the toolchain's libLLVM, for bpf-linker's
    // build to link against; bpf-linker records LLVM_PREFIX/lib as its
    // RUNPATH, so the library's SONAME must resolve there too.
    let prefix = tools_dir.join(format!("llvm-{toolchain}"));
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib).with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in ["libLLVM.so", libllvm.as_str()] {
        let link = prefix_lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(libdir.join(&libllvm), &link)
            .with_context(|| format!("linking {} to {}", link.display(), libdir.join(&libllvm).display()))?;
    }

    let stamp_text = format!("bpf-linker {BPF_LINKER_VERSION}\ntoolchain {toolchain}\nllvm {libllvm}\n");
    let bin = tools_dir.join("bin/bpf-linker");
    let stamp = tools_dir.join("bpf-linker.stamp");
    if bin.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(stamp_text.as_str()) {
        return Ok(bin);
    }

    eprintln!("build-ebpf: building bpf-linker {BPF_LINKER_VERSION} against {libllvm} (about a minute)");
    let t = Instant::now();
    let mut cmd = rustup_run(toolchain, "cargo");
    cmd.args([
        "install",
        "bpf-linker",
        "--locked",
        "--force",
        "--version",
        BPF_LINKER_VERSION,
        "--root",
    ])
    .arg(tools_dir)
    .env("LLVM_PREFIX", &prefix)
    .env("CARGO_TARGET_DIR", tools_dir.join("build"));
    run(&mut cmd, "building bpf-linker")?;
    let mut check = Command::new(&bin);
    check.arg("--version");
    run(&mut check, "running the freshly built bpf-linker")?;
    fs::write(&stamp, stamp_text).with_context(|| format!("writing {}", stamp.display()))?;
    eprintln!("build-ebpf: bpf-linker built ({:.1}s)", t.elapsed().as_secs_f64());
    Ok(bin)
}

/// Builds the eBPF crate into `target_dir`; returns the directory holding
/// its objects (one file per bin).
fn build(root: &Path, crate_dir: &Path, toolchain: &str, linker: &Path, target_dir: &Path) -> anyhow::Result<PathBuf> {
    let sysroot = sysroot(toolchain)?;
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    // Source paths end up in the object (panic locations, symbol hashes):
    // map every machine-specific prefix to a fixed one.
    let remaps = [
        (sysroot.join("lib/rustlib/src/rust"), "/rustc/src"),
        (home.join("registry/src"), "/cargo/registry/src"),
        (home.join("git/checkouts"), "/cargo/git"),
        (root.to_path_buf(), "/ffrtmp"),
    ];
    let mut flags: Vec<String> = Vec::new();
    for (from, to) in &remaps {
        flags.push(format!("--remap-path-prefix={}={to}", from.display()));
    }
    let encoded = flags.join("\x1f");

    let linker_dir = linker.parent().context("bpf-linker path has no parent")?;
    let mut path = OsString::from(linker_dir);
    if let Some(p) = std::env::var_os("PATH") {
        path.push(":");
        path.push(p);
    }

    eprintln!(
        "build-ebpf: building {EBPF_CRATE} with {toolchain} into {}",
        target_dir.display()
    );
    let t = Instant::now();
    let mut cmd = rustup_run(toolchain, "cargo");
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--target",
        BPF_TARGET,
        "-Z",
        "build-std=core",
    ])
    .current_dir(crate_dir)
    .env("CARGO_TARGET_DIR", target_dir)
    .env("CARGO_ENCODED_RUSTFLAGS", encoded)
    .env("PATH", path)
    .env("SOURCE_DATE_EPOCH", "0");
    run(&mut cmd, &format!("building {EBPF_CRATE}"))?;
    eprintln!("build-ebpf: {EBPF_CRATE} built ({:.1}s)", t.elapsed().as_secs_f64());
    let out = target_dir.join(BPF_TARGET).join("release");
    for (bin, _) in OBJECTS {
        if !out.join(bin).is_file() {
            bail!("the build succeeded but {} is missing", out.join(bin).display());
        }
    }
    Ok(out)
}

/// FNV-1a 64: a short fingerprint for messages (not a security hash).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pinned_channel() {
        let dir = repo_root().join(EBPF_CRATE);
        let t = pinned_toolchain(&dir).expect("rust-toolchain.toml");
        assert!(t.starts_with("nightly-"), "{t}");
    }

    #[test]
    fn parses_flags() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert!(parse(&s(&["--check"])).unwrap().unwrap().check);
        assert!(parse(&s(&["--allow-missing-toolchain"])).is_err());
        assert!(parse(&s(&["--bogus"])).is_err());
        assert!(parse(&s(&["--help"])).unwrap().is_none());
    }
}
