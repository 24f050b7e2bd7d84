//! The guest kernel: a Debian cloud kernel package of one of the series the
//! project supports (5.10 from bullseye, 6.1 and 6.12 from bookworm),
//! fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
//! `target/vm/kernel/<package>/`, plus the modules the guest must load.
//!
//! The packages are looked up through a package-source list of the
//! harness's own (`target/vm/apt/`, used for this download only): the
//! machine's own apt configuration is neither read for it nor changed.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::prereq::{find_in_path, is_root};

/// A kernel series the suite runs on, and where Debian ships it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// Debian 11 (bullseye): `linux-image-5.10.0-N-cloud-amd64`.
    V5_10,
    /// Debian 12 (bookworm): `linux-image-6.1.0-N-cloud-amd64`.
    V6_1,
    /// Debian 12 (bookworm, from 12.10): `linux-image-6.12.N+deb12-cloud-amd64`.
    V6_12,
}

impl Series {
    pub fn parse(s: &str) -> Option<Series> {
        match s {
            "5.10" => Some(Series::V5_10),
            "6.1" => Some(Series::V6_1),
            "6.12" => Some(Series::V6_12),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Series::V5_10 => "5.10",
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }

    /// The sort key of `package` if it is a signed cloud image of this
    /// series (not -dbg, not -unsigned): newer is greater.
    fn key(self, package: &str) -> Option<Vec<u32>> {
        let rest = package.strip_prefix("linux-image-")?.strip_suffix("-cloud-amd64")?;
        let numbers = |s: &str| -> Option<Vec<u32>> { s.split(['.', '-', '+']).map(|p| p.parse().ok()).collect() };
        match self {
            Series::V5_10 => numbers(rest.strip_prefix("5.10.0-")?),
            Series::V6_1 => numbers(rest.strip_prefix("6.1.0-")?),
            // 6.12.N+deb12 or 6.12.N+deb12.M
            Series::V6_12 => {
                let (version, debian) = rest.strip_prefix("6.12.")?.split_once("+deb12")?;
                let mut key = numbers(version)?;
                key.push(debian.strip_prefix('.').map_or(Some(0), |m| m.parse().ok())?);
                Some(key)
            }
        }
    }
}

/// The package-source list of the kernel download: Debian's archive for
/// bullseye and bookworm, with their security updates.
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
";

/// apt (`apt-get`, `apt-cache`) on the harness's own lists in `vm_dir/apt`.
fn apt(vm_dir: &Path, tool: &str) -> anyhow::Result<Command> {
    let dir = vm_dir.join("apt");
    for sub in ["lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(dir.join(sub)).with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    let list = dir.join("sources.list");
    if fs::read_to_string(&list).ok().as_deref() != Some(SOURCES) {
        fs::write(&list, SOURCES).with_context(|| format!("cannot write {}", list.display()))?;
    }
    let mut cmd = Command::new(tool);
    let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
    cmd.args(["-o", &opt("Dir::Etc::SourceList", &list)])
        .args(["-o", "Dir::Etc::SourceParts=/dev/null"])
        .args(["-o", &opt("Dir::State::Lists", &dir.join("lists"))])
        .args(["-o", &opt("Dir::Cache", &dir.join("cache"))])
        .args(["-o", "Dir::State::status=/dev/null"]);
    if is_root() {
        // apt's download user `_apt` cannot write into target/; avoid its warning.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    Ok(cmd)
}

fn apt_update(vm_dir: &Path) -> anyhow::Result<()> {
    eprintln!(
        "vm-test: apt-get update (the harness's own package lists, {})",
        vm_dir.join("apt").display()
    );
    super::prereq::run_apt_update(apt(vm_dir, "apt-get")?, " of the kernel package lists")
}

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

/// Finds (or downloads once) the kernel: `wanted` is a series (`5.10`,
/// `6.1`, `6.12`: its newest package) or a package name; default 6.1.
pub fn obtain(vm_dir: &Path, wanted: Option<&str>) -> anyhow::Result<Kernel> {
    let dir = vm_dir.join("kernel");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let series = match wanted {
        None => Series::V6_1,
        Some(s) => match Series::parse(s) {
            Some(series) => series,
            None if s.starts_with("linux-image-") => {
                if !is_cached(&dir, s) {
                    download_retrying(vm_dir, &dir, s)?;
                }
                return load(&dir, s);
            }
            None => bail!("invalid value '{s}' for --kernel: expected 5.10, 6.1, 6.12 or a package name linux-image-…"),
        },
    };

    let cached = cached_packages(&dir, series);
    let mut candidates = apt_candidates(vm_dir, series).unwrap_or_default();
    if candidates.is_empty() && find_in_path("apt-get").is_some() {
        match apt_update(vm_dir) {
            Ok(()) => candidates = apt_candidates(vm_dir, series)?,
            Err(e) => eprintln!("vm-test: warning: {e:#}"),
        }
    }
    let Some(newest) = candidates.first() else {
        if let Some(pkg) = cached.first() {
            eprintln!("vm-test: no {} package listed; using the cached {pkg}", series.name());
            return load(&dir, pkg);
        }
        bail!(
            "cannot obtain a {} guest kernel: the package lists in {} name none, and nothing is cached in {}",
            series.name(),
            vm_dir.join("apt").display(),
            dir.display()
        );
    };
    if is_cached(&dir, newest) {
        return load(&dir, newest);
    }
    match download_retrying(vm_dir, &dir, newest) {
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

/// Packages of `series` in the harness's package lists, newest first.
fn apt_candidates(vm_dir: &Path, series: Series) -> anyhow::Result<Vec<String>> {
    if find_in_path("apt-cache").is_none() {
        bail!("cannot obtain the guest kernel: apt-cache is not installed (a Debian host is needed)");
    }
    let out = apt(vm_dir, "apt-cache")?
        .args(["search", "--names-only", "^linux-image-[0-9.]+.*-cloud-amd64$"])
        .stderr(Stdio::null())
        .output()
        .context("cannot run apt-cache search")?;
    Ok(newest_first(
        series,
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next()),
    ))
}

fn newest_first<'a>(series: Series, names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut pkgs: Vec<(Vec<u32>, String)> = names
        .filter_map(|name| series.key(name).map(|k| (k, name.to_string())))
        .collect();
    pkgs.sort_by(|a, b| b.0.cmp(&a.0));
    pkgs.dedup();
    pkgs.into_iter().map(|(_, p)| p).collect()
}

fn cached_packages(dir: &Path, series: Series) -> Vec<String> {
    let names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_cached(dir, n))
        .collect();
    newest_first(series, names.iter().map(String::as_str))
}

fn is_cached(dir: &Path, pkg: &str) -> bool {
    dir.join(pkg).join("version").is_file() && find_vmlinuz(&dir.join(pkg).join("root")).is_ok()
}

fn download_retrying(vm_dir: &Path, dir: &Path, pkg: &str) -> anyhow::Result<()> {
    match download(vm_dir, dir, pkg) {
        Ok(()) => Ok(()),
        Err(e) if find_in_path("apt-get").is_some() => {
            eprintln!("vm-test: {e:#}; updating the package lists and retrying");
            apt_update(vm_dir)?;
            download(vm_dir, dir, pkg)
        }
        Err(e) => Err(e),
    }
}

fn download(vm_dir: &Path, dir: &Path, pkg: &str) -> anyhow::Result<()> {
    for tool in ["apt-get", "dpkg-deb"] {
        if find_in_path(tool).is_none() {
            bail!("cannot obtain the guest kernel {pkg}: {tool} is not installed (a Debian host is needed)");
        }
    }
    let tmp = dir.join(format!("{pkg}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = download_into(vm_dir, dir, pkg, &tmp);
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn download_into(vm_dir: &Path, dir: &Path, pkg: &str, tmp: &Path) -> anyhow::Result<()> {
    eprintln!("vm-test: downloading {pkg} (apt-get download) into {}", dir.display());
    let mut cmd = apt(vm_dir, "apt-get")?;
    cmd.arg("download").arg("-q");
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

/// What the network-limit tests need (tests/tests/network.rs): a veth
/// pair between namespaces, and the fq qdisc that pacing relies on.
const NETWORK: &[(&str, &str)] = &[("VETH", "veth"), ("NET_SCH_FQ", "sch_fq")];

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
        for &(name, module) in NETWORK {
            match self.opt(name) {
                "y" => builtin.push(name),
                "m" => {
                    as_module.push(format!("{name}=m"));
                    wanted.push(module);
                }
                v => bail!(
                    "kernel {}: CONFIG_{name}={v}: the network-limit tests need it",
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
    let path = plain_module(path, ext)?;
    let bytes = fs::read(&path)?;
    for dep in modinfo_depends(&bytes) {
        visit(&dep, index, seen, order, depth + 1)?;
    }
    seen.push(name.to_string());
    order.push(Module {
        name: name.to_string(),
        path,
    });
    Ok(())
}

/// The uncompressed form of the module at `path` (its name ends in `.ko`
/// followed by `ext`). busybox insmod loads plain `.ko` files only, and
/// Debian compresses its modules from 6.12 on (`.ko.xz`): those are
/// unpacked once with `xz -dc` beside the package, in `plain-modules/`.
fn plain_module(path: &Path, ext: &str) -> anyhow::Result<PathBuf> {
    let tool = match ext {
        "" => return Ok(path.to_path_buf()),
        ".xz" => "xz",
        ".zst" => "zstd",
        ".gz" => "gzip",
        _ => bail!(
            "module {} is compressed in an unknown format (.ko{ext})",
            path.display()
        ),
    };
    let stem = path.file_name().and_then(|n| n.to_str()).context("module file name")?;
    let stem = stem.strip_suffix(ext).context("module file name")?;
    // <package>/root/lib/modules/<release>/kernel/…: keep them beside root/.
    let package = path
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "root"))
        .and_then(Path::parent)
        .context("module outside an unpacked package")?;
    let out_dir = package.join("plain-modules");
    let out = out_dir.join(stem);
    if out.exists() {
        return Ok(out);
    }
    if find_in_path(tool).is_none() {
        bail!(
            "module {} is compressed (.ko{ext}) and `{tool}` is not on PATH to unpack it (Debian package: {})",
            path.display(),
            if tool == "xz" { "xz-utils" } else { tool }
        );
    }
    fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let output = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {tool}"))?;
    if !output.status.success() {
        bail!("{tool} -dc {} failed: {}", path.display(), output.status);
    }
    // Write then rename, so an interrupted run leaves no half module.
    let partial = out_dir.join(format!("{stem}.partial"));
    fs::write(&partial, &output.stdout).with_context(|| format!("cannot write {}", partial.display()))?;
    fs::rename(&partial, &out)?;
    Ok(out)
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
    fn series_pick_their_newest_signed_cloud_image() {
        let listed = [
            "linux-image-5.10.0-45-cloud-amd64",
            "linux-image-5.10.0-46-cloud-amd64",
            "linux-image-5.10.0-46-cloud-amd64-unsigned",
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-57-cloud-amd64",
            "linux-image-6.1.0-57-cloud-amd64-dbg",
            "linux-image-6.12.90+deb12-cloud-amd64",
            "linux-image-6.12.90+deb12.1-cloud-amd64",
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12-cloud-amd64",
            "linux-image-6.1.0-57-rt-amd64",
        ];
        let newest = |s: Series| newest_first(s, listed.iter().copied());
        assert_eq!(newest(Series::V5_10)[0], "linux-image-5.10.0-46-cloud-amd64");
        assert_eq!(
            newest(Series::V6_1),
            ["linux-image-6.1.0-57-cloud-amd64", "linux-image-6.1.0-9-cloud-amd64"]
        );
        assert_eq!(
            newest(Series::V6_12),
            [
                "linux-image-6.12.117+deb12-cloud-amd64",
                "linux-image-6.12.90+deb12.1-cloud-amd64",
                "linux-image-6.12.90+deb12-cloud-amd64"
            ]
        );
        assert_eq!(Series::parse("6.12"), Some(Series::V6_12));
        assert_eq!(Series::parse("6.2"), None);
    }

    #[test]
    fn only_the_signed_cloud_image() {
        let key = |p| Series::V6_1.key(p);
        assert_eq!(key("linux-image-6.1.0-56-cloud-amd64"), Some(vec![56]));
        assert_eq!(key("linux-image-6.1.0-56-cloud-amd64-dbg"), None);
        assert_eq!(key("linux-image-6.1.0-56-cloud-amd64-unsigned"), None);
        assert_eq!(key("linux-image-6.1.0-56-amd64"), None);
    }

    #[test]
    fn modinfo_depends_is_read_from_the_modinfo_strings() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=virtio,virtio_ring\0intree=Y\0";
        assert_eq!(modinfo_depends(ko), ["virtio", "virtio_ring"]);
        assert!(modinfo_depends(b"\0depends=\0name=x\0").is_empty());
        assert!(modinfo_depends(b"xdepends=a\0").is_empty());
    }
}
