//! The guest kernel: a Debian `linux-image-6.1.0-N-cloud-amd64` package,
//! fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
//! `target/vm/kernel/<package>/`, plus the modules the guest must load.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::prereq::{apt_update, find_in_path, is_root};

const PREFIX: &str = "linux-image-6.1.0-";
const SUFFIX: &str = "-cloud-amd64";

pub struct Kernel {
    pub package: String,
    /// The package version, e.g. `6.1.192-2`.
    pub version: String,
    /// `uname -r` in the guest, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    pub config: BTreeMap<String, String>,
    modules_dir: PathBuf,
}

/// Finds (or downloads once) the kernel package: `pinned` if given, else the
/// newest 6.1 cloud image apt knows about.
pub fn obtain(vm_dir: &Path, pinned: Option<&str>) -> anyhow::Result<Kernel> {
    let dir = vm_dir.join("kernel");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Some(pkg) = pinned {
        if !is_cached(&dir, pkg) {
            download_retrying(&dir, pkg)?;
        }
        return load(&dir, pkg);
    }

    let mut candidates = apt_candidates()?;
    if candidates.is_empty() && is_root() && find_in_path("apt-get").is_some() {
        apt_update()?;
        candidates = apt_candidates()?;
    }
    let cached = cached_packages(&dir);
    let Some(newest) = candidates.first() else {
        if let Some(pkg) = cached.first() {
            eprintln!("vm-test: apt knows no {PREFIX}N{SUFFIX} package; using the cached {pkg}");
            return load(&dir, pkg);
        }
        bail!(
            "cannot obtain the guest kernel: `apt-cache search --names-only '^{PREFIX}[0-9]+{SUFFIX}$'` \
             finds no package (a Debian bookworm apt source is needed), and nothing is cached in {}",
            dir.display()
        );
    };
    if is_cached(&dir, newest) {
        return load(&dir, newest);
    }
    match download_retrying(&dir, newest) {
        Ok(()) => load(&dir, newest),
        Err(e) => match cached.first() {
            Some(pkg) => {
                eprintln!("vm-test: warning: {e:#}; using the cached {pkg}");
                load(&dir, pkg)
            }
            None => Err(e),
        },
    }
}

/// Package names of 6.1 cloud kernels known to apt, newest ABI first.
fn apt_candidates() -> anyhow::Result<Vec<String>> {
    if find_in_path("apt-cache").is_none() {
        bail!("cannot obtain the guest kernel: apt-cache is not installed (a Debian host is needed)");
    }
    let out = Command::new("apt-cache")
        .args(["search", "--names-only", &format!("^{PREFIX}[0-9]+{SUFFIX}$")])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run apt-cache search")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut pkgs: Vec<(u32, String)> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| abi(name).map(|n| (n, name.to_string())))
        .collect();
    pkgs.sort_by_key(|p| std::cmp::Reverse(p.0));
    pkgs.dedup();
    Ok(pkgs.into_iter().map(|(_, p)| p).collect())
}

/// The ABI number N of `linux-image-6.1.0-N-cloud-amd64` (not -dbg, not -unsigned).
fn abi(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?.parse().ok()
}

fn cached_packages(dir: &Path) -> Vec<String> {
    let mut v: Vec<(u32, String)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_cached(dir, n))
        .map(|n| (abi(&n).unwrap_or(0), n))
        .collect();
    v.sort_by(|a, b| b.cmp(a));
    v.into_iter().map(|(_, n)| n).collect()
}

fn is_cached(dir: &Path, pkg: &str) -> bool {
    dir.join(pkg).join("version").is_file() && find_vmlinuz(&dir.join(pkg).join("root")).is_ok()
}

fn download_retrying(dir: &Path, pkg: &str) -> anyhow::Result<()> {
    match download(dir, pkg) {
        Ok(()) => Ok(()),
        Err(e) if is_root() && find_in_path("apt-get").is_some() => {
            eprintln!("vm-test: {e:#}; updating the package lists and retrying");
            apt_update()?;
            download(dir, pkg)
        }
        Err(e) => Err(e),
    }
}

fn download(dir: &Path, pkg: &str) -> anyhow::Result<()> {
    for tool in ["apt-get", "dpkg-deb"] {
        if find_in_path(tool).is_none() {
            bail!("cannot obtain the guest kernel {pkg}: {tool} is not installed (a Debian host is needed)");
        }
    }
    let tmp = dir.join(format!("{pkg}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = download_into(dir, pkg, &tmp);
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn download_into(dir: &Path, pkg: &str, tmp: &Path) -> anyhow::Result<()> {
    eprintln!("vm-test: downloading {pkg} (apt-get download) into {}", dir.display());
    let mut cmd = Command::new("apt-get");
    cmd.arg("download").arg("-q");
    if is_root() {
        // apt's download user `_apt` cannot write into target/; avoid its warning.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    let st = cmd
        .arg(pkg)
        .current_dir(tmp)
        .stdout(Stdio::null())
        .status()
        .context("cannot run apt-get download")?;
    if !st.success() {
        bail!("cannot obtain the guest kernel: `apt-get download {pkg}` failed ({st})");
    }
    let deb = fs::read_dir(tmp)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("`apt-get download {pkg}` produced no .deb"))?;
    let version = Command::new("dpkg-deb")
        .arg("-f")
        .arg(&deb)
        .arg("Version")
        .output()
        .context("cannot run dpkg-deb -f")?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let root = tmp.join("root");
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .context("cannot run dpkg-deb -x")?;
    if !st.success() {
        bail!("`dpkg-deb -x {}` failed ({st})", deb.display());
    }
    find_vmlinuz(&root).with_context(|| format!("{pkg} has no usable kernel image"))?;
    fs::remove_file(&deb)?;
    fs::write(tmp.join("version"), format!("{version}\n"))?;
    let dest = dir.join(pkg);
    if is_cached(dir, pkg) {
        // A concurrent run finished the same download first.
        let _ = fs::remove_dir_all(tmp);
        return Ok(());
    }
    let _ = fs::remove_dir_all(&dest);
    fs::rename(tmp, &dest).with_context(|| format!("cannot rename {} to {}", tmp.display(), dest.display()))?;
    Ok(())
}

fn find_vmlinuz(root: &Path) -> anyhow::Result<(PathBuf, String)> {
    let boot = root.join("boot");
    for e in fs::read_dir(&boot).with_context(|| format!("no {}", boot.display()))? {
        let e = e?;
        if let Some(release) = e.file_name().to_str().and_then(|n| n.strip_prefix("vmlinuz-")) {
            return Ok((e.path(), release.to_string()));
        }
    }
    bail!("no boot/vmlinuz-* in {}", root.display())
}

fn load(dir: &Path, pkg: &str) -> anyhow::Result<Kernel> {
    let base = dir.join(pkg);
    let root = base.join("root");
    let (vmlinuz, release) = find_vmlinuz(&root)?;
    let version = fs::read_to_string(base.join("version"))?.trim().to_string();
    let cfg_path = root.join("boot").join(format!("config-{release}"));
    let text = fs::read_to_string(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?;
    let config = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .map(|(k, v)| (k.trim_start_matches("CONFIG_").to_string(), v.to_string()))
        .collect();
    Ok(Kernel {
        package: pkg.to_string(),
        version,
        modules_dir: root.join("lib/modules").join(&release),
        release,
        vmlinuz,
        config,
    })
}

/// Options the guest needs. `boot`: without it the harness cannot work at all.
const REQUIRED: &[(&str, bool)] = &[
    ("BLK_DEV_INITRD", true),
    ("DEVTMPFS", true),
    ("SERIAL_8250_CONSOLE", true),
    ("CGROUPS", true),
    ("MEMCG", false),
    ("BLK_CGROUP", false),
    ("BLK_DEV_THROTTLING", false),
    ("CGROUP_SCHED", false),
    ("FAIR_GROUP_SCHED", false),
    ("CFS_BANDWIDTH", false),
    ("CGROUP_PIDS", false),
    ("CPUSETS", false),
    ("PSI", false),
    ("BPF_SYSCALL", false),
    ("BPF_JIT", false),
    ("BPF_EVENTS", false),
    ("DEBUG_INFO_BTF", false),
    ("CONNECTOR", false),
    ("PROC_EVENTS", false),
    ("FTRACE", false),
    ("DEBUG_FS", false),
];

/// Drivers the guest needs, built in or as a module: (option, module name).
const DRIVERS: &[(&str, &str)] = &[("VIRTIO_PCI", "virtio_pci"), ("VIRTIO_BLK", "virtio_blk")];

pub struct Module {
    pub name: String,
    pub path: PathBuf,
}

pub struct ConfigCheck {
    /// One-line summaries for the log.
    pub facts: Vec<String>,
    /// Modules to load in the guest, dependencies first.
    pub modules: Vec<Module>,
}

impl Kernel {
    fn opt(&self, name: &str) -> &str {
        self.config.get(name).map(String::as_str).unwrap_or("n")
    }

    pub fn check(&self) -> anyhow::Result<ConfigCheck> {
        let mut builtin = Vec::new();
        let mut missing = Vec::new();
        for &(name, boot) in REQUIRED {
            match self.opt(name) {
                "y" => builtin.push(name),
                v if boot => bail!(
                    "kernel {}: CONFIG_{name}={v}, the VM test needs it built in",
                    self.release
                ),
                v => missing.push(format!("{name}={v}")),
            }
        }
        let mut wanted = Vec::new();
        let mut as_module = Vec::new();
        for &(name, module) in DRIVERS {
            match self.opt(name) {
                "y" => builtin.push(name),
                "m" => {
                    as_module.push(format!("{name}=m"));
                    wanted.push(module);
                }
                v => bail!(
                    "kernel {}: CONFIG_{name}={v}: the guest cannot see its virtio disk",
                    self.release
                ),
            }
        }
        let modules = if wanted.is_empty() {
            Vec::new()
        } else {
            resolve_modules(&self.modules_dir, &wanted)?
        };
        let mut facts = vec![format!("built in: {}", builtin.join(" "))];
        if !as_module.is_empty() {
            facts.push(format!(
                "modules: {} -> insmod {}",
                as_module.join(" "),
                modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(" ")
            ));
        }
        if !missing.is_empty() {
            facts.push(format!("warning: not built in: {}", missing.join(" ")));
        }
        Ok(ConfigCheck { facts, modules })
    }
}

/// `wanted` and everything they depend on (from each module's `.modinfo`
/// `depends=`), in load order. The package has no modules.dep (depmod runs at
/// install time), so the dependencies are read from the modules themselves.
fn resolve_modules(dir: &Path, wanted: &[&str]) -> anyhow::Result<Vec<Module>> {
    let mut index = HashMap::new();
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str())
                && let Some((stem, ext)) = n.split_once(".ko")
            {
                index.insert(stem.replace('-', "_"), (p.clone(), ext.to_string()));
            }
        }
    }
    let mut order = Vec::new();
    let mut seen = Vec::new();
    for w in wanted {
        visit(w, &index, &mut seen, &mut order, 0)?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    index: &HashMap<String, (PathBuf, String)>,
    seen: &mut Vec<String>,
    order: &mut Vec<Module>,
    depth: usize,
) -> anyhow::Result<()> {
    if seen.iter().any(|s| s == name) {
        return Ok(());
    }
    if depth > 32 {
        bail!("module dependency loop at {name}");
    }
    let (path, ext) = index
        .get(name)
        .with_context(|| format!("module {name}.ko not found in the kernel package"))?;
    if !ext.is_empty() {
        bail!(
            "module {} is compressed (.ko{ext}); busybox insmod needs plain .ko files",
            path.display()
        );
    }
    let bytes = fs::read(path)?;
    for dep in modinfo_depends(&bytes) {
        visit(&dep, index, seen, order, depth + 1)?;
    }
    seen.push(name.to_string());
    order.push(Module {
        name: name.to_string(),
        path: path.clone(),
    });
    Ok(())
}

fn modinfo_depends(bytes: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"depends=";
    let mut i = 0;
    while let Some(pos) = bytes[i..].windows(KEY.len()).position(|w| w == KEY) {
        let at = i + pos;
        if at == 0 || bytes[at - 1] == 0 {
            let start = at + KEY.len();
            let end = bytes[start..]
                .iter()
                .position(|&b| b == 0)
                .map_or(bytes.len(), |e| start + e);
            return String::from_utf8_lossy(&bytes[start..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect();
        }
        i = at + 1;
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_only_for_the_signed_cloud_image() {
        assert_eq!(abi("linux-image-6.1.0-56-cloud-amd64"), Some(56));
        assert_eq!(abi("linux-image-6.1.0-56-cloud-amd64-dbg"), None);
        assert_eq!(abi("linux-image-6.1.0-56-cloud-amd64-unsigned"), None);
        assert_eq!(abi("linux-image-6.1.0-56-amd64"), None);
    }

    #[test]
    fn modinfo_depends_is_read_from_the_modinfo_strings() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=virtio,virtio_ring\0intree=Y\0";
        assert_eq!(modinfo_depends(ko), ["virtio", "virtio_ring"]);
        assert!(modinfo_depends(b"\0depends=\0name=x\0").is_empty());
        assert!(modinfo_depends(b"xdepends=a\0").is_empty());
    }
}
