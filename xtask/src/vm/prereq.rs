//! Host tools the VM test needs, installed from Debian packages when missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

pub struct Tools {
    pub qemu: PathBuf,
    /// A statically linked busybox: the whole guest userland besides the tests.
    pub busybox: PathBuf,
}

const QEMU: &str = "qemu-system-x86_64";

pub fn ensure_tools() -> anyhow::Result<Tools> {
    let mut install = Vec::new();
    let qemu = find_in_path(QEMU);
    if qemu.is_none() {
        install.push("qemu-system-x86");
    }
    let busybox = static_busybox();
    if busybox.is_none() {
        install.push("busybox-static");
    }
    if !install.is_empty() {
        let why = format!("vm-test needs {} ({})", install.join(" and "), what(&install));
        if !is_root() || find_in_path("apt-get").is_none() {
            bail!(
                "{why}; installing needs root and apt-get: run `apt-get install {}` as root",
                install.join(" ")
            );
        }
        apt_install(&install).with_context(|| why.clone())?;
    }
    let qemu = match qemu.or_else(|| find_in_path(QEMU)) {
        Some(q) => q,
        None => bail!("{QEMU} is still not on PATH after installing qemu-system-x86"),
    };
    let busybox = match busybox.or_else(static_busybox) {
        Some(b) => b,
        None => bail!("no statically linked busybox at /bin/busybox after installing busybox-static"),
    };
    Ok(Tools { qemu, busybox })
}

fn what(pkgs: &[&str]) -> String {
    pkgs.iter()
        .map(|p| match *p {
            "qemu-system-x86" => format!("{QEMU} is not on PATH"),
            "busybox-static" => "no statically linked busybox at /bin/busybox".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn static_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p) && matches!(elf_interp(p), Ok(Some(None))))
}

/// `Ok(None)`: not an ELF file; `Ok(Some(None))`: an ELF file without a
/// program interpreter (static); `Ok(Some(Some(path)))`: its interpreter.
pub fn elf_interp(p: &Path) -> anyhow::Result<Option<Option<String>>> {
    let b = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    if b.len() < 64 || &b[..4] != b"\x7fELF" {
        return Ok(None);
    }
    if b[4] != 2 || b[5] != 1 {
        bail!("{}: not a 64-bit little-endian ELF file", p.display());
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64_at = |o: usize| -> usize { u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize };
    let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54), u16_at(56));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if ph + 56 > b.len() {
            bail!("{}: truncated ELF program headers", p.display());
        }
        let p_type = u32::from_le_bytes(b[ph..ph + 4].try_into().unwrap());
        if p_type == 3 {
            // PT_INTERP
            let (off, size) = (u64_at(ph + 8), u64_at(ph + 32));
            let raw = b.get(off..off + size).context("bad PT_INTERP")?;
            let s = String::from_utf8_lossy(raw).trim_end_matches('\0').to_string();
            return Ok(Some(Some(s)));
        }
    }
    Ok(Some(None))
}

/// `apt-get install` (root only), with one `apt-get update` and retry when the
/// first attempt fails (stale package lists).
pub fn apt_install(pkgs: &[&str]) -> anyhow::Result<()> {
    if !is_root() || find_in_path("apt-get").is_none() {
        bail!("cannot install {}: that needs root and apt-get", pkgs.join(" "));
    }
    eprintln!("vm-test: installing {} (apt-get)", pkgs.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .context("cannot run apt-get")
    };
    if install()?.success() {
        return Ok(());
    }
    apt_update()?;
    let st = install()?;
    if !st.success() {
        bail!("`apt-get install {}` failed ({st})", pkgs.join(" "));
    }
    Ok(())
}

pub fn apt_update() -> anyhow::Result<()> {
    eprintln!("vm-test: apt-get update");
    run_apt_update(Command::new("apt-get"), "")
}

/// `apt-get update` with `apt_get` (the machine's, or one with options of
/// its own); `lists` names the package lists in the error.
pub fn run_apt_update(mut apt_get: Command, lists: &str) -> anyhow::Result<()> {
    let st = apt_get
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .context("cannot run apt-get update")?;
    if !st.success() {
        bail!("`apt-get update`{lists} failed ({st})");
    }
    Ok(())
}
