//! The guest's initramfs: busybox, `/init`, the kernel modules, ffrtmp with
//! the test executables in cargo's layout, and the shared libraries they load.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::artifacts::Artifacts;
use super::cpio::Archive;
use super::kernel::Module;
use super::prereq::elf_interp;

const INIT: &str = include_str!("../../vm/init.sh");

/// Where cargo's `target/` lives in the guest: `target/debug/deps/x` on the
/// host is `/t/debug/deps/x` in the guest, `target/debug/ffrtmp` is
/// `/t/debug/ffrtmp`, so tests find ffrtmp relative to their own executable.
const GUEST_TARGET: &str = "/t";

/// Host programs the guest gets instead of busybox applets (`busybox
/// --install` leaves existing files alone), because the tests assume them:
/// `sh -c` scripts are written on Debian, where sh is dash, and tests copy
/// `/bin/sleep` under a new name, which a busybox symlink does not survive.
/// `busybox sh` and the other applets stay available. ffrtmp itself runs
/// `getent passwd <uid>` for the user filters of `watch`
/// (`ffrtmp/src/watch/user_names.rs`).
const HOST_PROGRAMS: &[(&str, &str)] = &[
    ("bin/sh", "/usr/bin/dash"),
    ("bin/sleep", "/usr/bin/sleep"),
    ("bin/true", "/usr/bin/true"),
    ("bin/false", "/usr/bin/false"),
    ("usr/bin/getent", "/usr/bin/getent"),
];

pub struct Plan<'a> {
    pub busybox: &'a Path,
    pub modules: &'a [Module],
    pub artifacts: &'a Artifacts,
    /// Extra host programs, copied to the same path in the guest.
    pub include: &'a [PathBuf],
    /// Arguments for every test executable.
    pub test_args: &'a [String],
    /// Run this shell command instead of the tests.
    pub exec: Option<&'a str>,
}

pub struct Built {
    pub bytes: u64,
    pub files: usize,
    /// Guest paths of the test executables, in run order.
    pub tests: Vec<String>,
    /// `guest=host` for each of HOST_PROGRAMS copied in.
    pub host_programs: Vec<String>,
}

pub fn build(plan: &Plan, out: &Path) -> anyhow::Result<Built> {
    let mut a = Archive::default();
    a.data("init", INIT, 0o755)?;
    a.file("bin/busybox", plan.busybox)?;
    let mut elves: Vec<PathBuf> = Vec::new();
    let mut host_programs = Vec::new();
    for &(guest, host) in HOST_PROGRAMS {
        let host = Path::new(host);
        if matches!(elf_interp(host), Ok(Some(_))) {
            a.file(guest, host)?;
            elves.push(host.to_path_buf());
            host_programs.push(format!("/{guest}={}", host.display()));
        }
    }
    for d in [
        "dev", "proc", "sys", "tmp", "run", "root", "etc", "sbin", "usr/bin", "usr/sbin",
    ] {
        a.dir(d)?;
    }
    a.char_dev("dev/console", 5, 1, 0o600)?;
    a.char_dev("dev/null", 1, 3, 0o666)?;
    a.data(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    )?;
    a.data("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)?;
    a.data("etc/hosts", "127.0.0.1 localhost ffrtmp-vm\n::1 localhost\n", 0o644)?;

    for m in plan.modules {
        a.file(&format!("lib/modules/{}.ko", m.name), &m.path)?;
    }

    let art = plan.artifacts;
    let profile_dir = art.ffrtmp.parent().context("ffrtmp has no parent")?;
    let profile = file_name(profile_dir)?;
    let target_dir = profile_dir.parent().context("no target directory")?;
    let stripped_dir = out
        .parent()
        .and_then(Path::parent)
        .context("the initramfs has no run directory")?
        .join("stripped");
    let strip = |exe: &Path| without_debug_info(exe, &stripped_dir);
    elves.push(art.ffrtmp.clone());
    a.file(&format!("{GUEST_TARGET}/{profile}/ffrtmp"), &strip(&art.ffrtmp)?)?;
    for s in &art.stubs {
        a.file(&format!("{GUEST_TARGET}/{profile}/{}", file_name(s)?), &strip(s)?)?;
        elves.push(s.clone());
    }
    let mut tests = Vec::new();
    for t in &art.tests {
        let guest = format!("{GUEST_TARGET}/{profile}/deps/{}", file_name(t)?);
        a.file(&guest, &strip(t)?)?;
        elves.push(t.clone());
        tests.push(guest);
    }
    // env!("CARGO_TARGET_TMPDIR") of integration tests: exists, and writable.
    a.dir(&target_dir.join("tmp").to_string_lossy())?;
    for p in plan.include {
        a.file(&p.to_string_lossy(), p)?;
        elves.push(p.clone());
    }

    let mut libs = BTreeSet::new();
    for e in &elves {
        if matches!(elf_interp(e)?, Some(Some(_))) {
            libs.extend(shared_libs(e)?);
        }
    }
    for l in &libs {
        a.file(&l.to_string_lossy(), l)?;
    }

    let mut conf = String::from("# written by `cargo xtask vm-test`\n");
    let names: Vec<&str> = plan.modules.iter().map(|m| m.name.as_str()).collect();
    conf.push_str(&format!("VM_MODULES={}\n", quote(&names.join(" "))));
    conf.push_str(&format!("VM_TESTS={}\n", quote(&tests.join(" "))));
    conf.push_str(&format!("VM_WORKDIR={}\n", quote(&art.tests_dir.to_string_lossy())));
    if let Some(cmd) = plan.exec {
        conf.push_str(&format!("VM_EXEC={}\n", quote(cmd)));
    }
    conf.push_str("set --");
    for arg in plan.test_args {
        conf.push(' ');
        conf.push_str(&quote(arg));
    }
    conf.push('\n');
    a.data("etc/vm-test.conf", conf, 0o644)?;

    let files = elves.len() + libs.len() + plan.modules.len() + 1;
    let bytes = a.write_to(out)?;
    Ok(Built {
        bytes,
        files,
        tests,
        host_programs,
    })
}

/// A copy of the executable `exe` without its DWARF debug information
/// (`objcopy --strip-debug`: symbols stay, so backtraces keep function
/// names; panic locations are compiled in), kept in `cache` for the next
/// boot. The debug builds' test executables are ~110 MB each, nearly all
/// DWARF: packed whole, the initramfs was 1.4 GB, took 50-60 s to write
/// when two lanes built theirs at once, and was unpacked at every boot.
/// Without objcopy, the executable itself.
fn without_debug_info(exe: &Path, cache: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(exe).with_context(|| format!("initramfs: cannot read {}", exe.display()))?;
    let name = file_name(exe)?;
    let copy = cache.join(format!("{name}-{}-{}.{}", meta.len(), meta.mtime(), meta.mtime_nsec()));
    if copy.is_file() {
        // Marked as in use, so that another run does not prune it (below).
        if let Err(e) = std::fs::File::open(&copy).and_then(|f| f.set_modified(std::time::SystemTime::now())) {
            eprintln!("vm-test: note: cannot mark {} as in use: {e}", copy.display());
        }
        return Ok(copy);
    }
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    // Concurrent runs (two lanes) may strip the same file: each writes its
    // own temporary copy and renames it into place.
    let tmp = cache.join(format!(".{name}.{}", std::process::id()));
    match Command::new("objcopy").arg("--strip-debug").arg(exe).arg(&tmp).status() {
        Ok(status) if status.success() => {}
        Ok(status) => bail!("objcopy --strip-debug {} failed: {status}", exe.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "vm-test: note: no objcopy (binutils): {} is packed with its debug information",
                exe.display()
            );
            return Ok(exe.to_path_buf());
        }
        Err(e) => bail!("cannot run objcopy: {e}"),
    }
    // Older copies of the same executable are of no further use once no run
    // reads them. (Not this one: another run may have put it there and be
    // about to read it; the rename below replaces it atomically with the same
    // bytes.) Another lane may have built and stripped a different version of
    // the same executable a moment ago and be packing it now, so only copies
    // nobody has used for PRUNE_AFTER go: one that was found and removed
    // here between its strip and its packing failed a CI run ("cannot open
    // …/stripped/<name>-…").
    const PRUNE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);
    let current = copy.file_name().map(|n| n.to_os_string());
    if let Ok(entries) = std::fs::read_dir(cache) {
        for e in entries.flatten() {
            let entry = e.file_name();
            let unused = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= PRUNE_AFTER);
            let old = entry.to_string_lossy().starts_with(&format!("{name}-")) && Some(&entry) != current.as_ref();
            if old
                && unused
                && let Err(err) = std::fs::remove_file(e.path())
            {
                eprintln!("vm-test: note: old copy {} left in place: {err}", e.path().display());
            }
        }
    }
    std::fs::rename(&tmp, &copy).with_context(|| format!("renaming {} to {}", tmp.display(), copy.display()))?;
    Ok(copy)
}

fn file_name(p: &Path) -> anyhow::Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no usable file name", p.display()))
}

/// The shared libraries (and the dynamic loader) `ldd` reports for `exe`.
fn shared_libs(exe: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .context("cannot run ldd (from libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "ldd {} failed: {}{}",
            exe.display(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", "/lib64/ld-linux-x86-64.so.2 (0x…)",
        // "linux-vdso.so.1 (0x…)" (provided by the kernel), "libfoo.so => not found".
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("ldd {}: {} not found", exe.display(), name.trim());
                }
                rest.split(" (").next().unwrap_or_default().trim()
            }
            None => line.split(" (").next().unwrap_or_default().trim(),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Quotes `s` for a POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test executable (a debug build, with DWARF): the copy is
    /// smaller, still an ELF executable, and the second call finds it.
    #[test]
    fn debug_information_is_stripped_once() {
        let exe = std::env::current_exe().unwrap();
        let cache = std::env::temp_dir().join(format!("xtask-stripped-{}", std::process::id()));
        let first = without_debug_info(&exe, &cache).unwrap();
        let second = without_debug_info(&exe, &cache).unwrap();
        let sizes = (
            std::fs::metadata(&exe).unwrap().len(),
            std::fs::metadata(&first).map(|m| m.len()),
        );
        let interp = elf_interp(&first);
        std::fs::remove_dir_all(&cache).unwrap();
        assert_ne!(
            first, exe,
            "stripped (objcopy, from binutils, is on every machine with gcc)"
        );
        assert_eq!(first, second, "the copy is reused");
        let (original, copy) = (sizes.0, sizes.1.unwrap());
        assert!(copy < original, "{copy} bytes, not fewer than the original {original}");
        assert!(
            matches!(interp, Ok(Some(_))),
            "the copy is an ELF executable: {interp:?}"
        );
    }
}
