//! `cargo xtask vm-systemd`: the Debian package under systemd as PID 1.
//!
//! Builds (once, cached in `target/vm/systemd/<release>/rootfs`) a minimal
//! Debian root file system with debootstrap, its own cloud kernel and
//! systemd; per run copies it, adds the `.deb` that `packaging/build-deb`
//! builds, the suite (xtask/vm/systemd-suite.sh) and a unit that starts the
//! suite once the system is up, makes an ext4 image of it and boots it under
//! qemu (TCG) on a pure cgroup v2 hierarchy. The suite prints vm-test's
//! console markers, so the same reader ([`Console`]) follows it. See
//! docs/vm-test.md.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use super::{QemuBoot, Run, prereq, run_qemu};
use crate::bench_common::{script_output_path, target_dir, workspace_root};

const USAGE: &str = "\
usage: cargo xtask vm-systemd [--release bookworm|trixie] [options]

Boots a Debian root file system with systemd as PID 1 (bookworm: systemd 252,
trixie: systemd 257) and Debian's cloud kernel, on a pure cgroup v2 hierarchy,
under qemu (software emulation); installs the .deb that packaging/build-deb
builds and runs the operator suite (xtask/vm/systemd-suite.sh) there:
enable --now, workloads from another unit and from a shell governed, reload,
restart, kill -9, upgrade with dpkg -i, stop, the journal. Prints
`vm-systemd: PASS on Debian <release>, systemd <N>, kernel <K>: N passed`.
The root file system is built once with debootstrap (installed with apt-get
when missing, root) into target/vm/systemd/<release>/. See docs/vm-test.md.

  --release R      bookworm (default) or trixie
  --deb PATH       the package to install (default: build it)
  --oci PATH       the OCI image archive podman runs (default: build it with
                   packaging/build-oci-image)
  --timeout SECS   kill the VM and fail after SECS seconds (default 900)
  --memory MIB     guest memory (default 2048)
  --keep           keep the run's disk image and print the qemu command line
  --prepare        only build (or check) the cached root file system, then
                   exit: scripts/test-all does this while other stages run
";

const DEFAULT_TIMEOUT_SECS: u64 = 900;
const DEFAULT_MEMORY_MIB: u64 = 2048;
const SMP: u64 = 2;
/// Packages beyond debootstrap's minbase: systemd as init, dbus for
/// systemctl, udev for /dev, the kernel and its initramfs, ps/kill, and
/// podman with crun (the container runtime check).
const PACKAGES: &str = "systemd,systemd-sysv,dbus,udev,linux-image-cloud-amd64,procps,kmod,podman,crun,conmon,netavark";
const MIRROR: &str = "http://deb.debian.org/debian";
/// The cached root file system is complete when this file holds [`PACKAGES`].
const STAMP: &str = ".ffrtmp-vm-systemd";
const SUITE: &str = include_str!("../../vm/systemd-suite.sh");
const SUITE_UNIT: &str = "\
[Unit]
Description=ffrtmp vm-systemd suite

[Service]
# Not oneshot, and not ordered after the targets: the boot finishes while it
# runs, and the suite waits for that (systemctl is-system-running --wait).
Type=exec
ExecStart=/usr/local/sbin/ffrtmp-vm-suite
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=default.target
";
const CMDLINE: &str = "root=/dev/vda rw console=ttyS0 panic=-1 quiet systemd.show_status=0 \
                       systemd.unified_cgroup_hierarchy=1 systemd.default_timeout_start_sec=120";

struct Options {
    release: String,
    deb: Option<PathBuf>,
    oci: Option<PathBuf>,
    timeout: Duration,
    memory_mib: u64,
    keep: bool,
    prepare: bool,
}

fn parse_args(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut o = Options {
        release: "bookworm".into(),
        deb: None,
        oci: None,
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        memory_mib: DEFAULT_MEMORY_MIB,
        keep: false,
        prepare: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().with_context(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| -> anyhow::Result<u64> {
            v.parse()
                .with_context(|| format!("invalid value '{v}' for {name}: expected a whole number"))
        };
        match a.as_str() {
            "--release" => o.release = value("--release")?,
            "--deb" => o.deb = Some(PathBuf::from(value("--deb")?)),
            "--oci" => o.oci = Some(PathBuf::from(value("--oci")?)),
            "--timeout" => o.timeout = Duration::from_secs(number("--timeout", value("--timeout")?)?),
            "--memory" => o.memory_mib = number("--memory", value("--memory")?)?,
            "--keep" => o.keep = true,
            "--prepare" => o.prepare = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            _ => bail!("unknown argument '{a}'\n\n{USAGE}"),
        }
    }
    ensure!(
        matches!(o.release.as_str(), "bookworm" | "trixie"),
        "invalid value '{}' for --release: expected bookworm or trixie",
        o.release
    );
    ensure!(o.memory_mib >= 512, "--memory must be at least 512 (MiB)");
    ensure!(
        o.timeout >= Duration::from_secs(60),
        "--timeout must be at least 60 seconds"
    );
    Ok(Some(o))
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let Some(opts) = parse_args(args)? else {
        return Ok(());
    };
    ensure!(
        prereq::is_root(),
        "vm-systemd needs root (debootstrap, and files owned by root in the image)"
    );
    let t0 = Instant::now();
    let root = workspace_root();
    let dir = target_dir(&root).join("vm").join("systemd");
    if opts.prepare {
        let rootfs = ensure_rootfs(&dir, &opts.release)?;
        eprintln!(
            "vm-systemd: the Debian {} root file system is ready: {} ({:.0} s)",
            opts.release,
            rootfs.display(),
            t0.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let tools = prereq::ensure_tools()?;
    let rootfs = ensure_rootfs(&dir, &opts.release)?;
    let boot = Boot::find(&rootfs)?;
    let deb = match &opts.deb {
        Some(d) => d.clone(),
        None => script_output_path(&root, "packaging/build-deb", "vm-systemd")?,
    };
    let oci = match &opts.oci {
        Some(o) => o.clone(),
        None => script_output_path(&root, "packaging/build-oci-image", "vm-systemd")?,
    };
    let configmap = configmap_watch_config(&root)?;
    eprintln!("vm-systemd: package {}, image {}", deb.display(), oci.display());

    let run_dir = dir.join(format!("run-{}", std::process::id()));
    let _ = fs::remove_dir_all(&run_dir);
    fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let payload = Payload {
        deb: &deb,
        oci: &oci,
        configmap: &configmap,
    };
    let result = make_disk(&rootfs, &payload, &run_dir).and_then(|disk| {
        let cmd = qemu_command(&tools.qemu, &boot, &disk, opts.memory_mib);
        eprintln!(
            "vm-systemd: booting Debian {} (kernel {}) under qemu (TCG, {} MiB, {SMP} CPUs, timeout {} s)",
            opts.release,
            boot.release,
            opts.memory_mib,
            opts.timeout.as_secs()
        );
        if opts.keep {
            eprintln!("vm-systemd: the qemu command line: {}", super::shown(&cmd));
        }
        run_qemu(cmd, opts.timeout)
    });
    if opts.keep {
        eprintln!("vm-systemd: kept {}", run_dir.display());
    } else {
        let _ = fs::remove_dir_all(&run_dir);
    }
    report(&result?, &opts.release, &boot, t0.elapsed(), opts.timeout)
}

/// The cached root file system of `release`, built with debootstrap when
/// missing or made with another package list.
fn ensure_rootfs(dir: &Path, release: &str) -> anyhow::Result<PathBuf> {
    let rootfs = dir.join(release).join("rootfs");
    if fs::read_to_string(rootfs.join(STAMP)).is_ok_and(|s| s.trim() == PACKAGES) {
        return Ok(rootfs);
    }
    if prereq::find_in_path("debootstrap").is_none() {
        prereq::apt_install(&["debootstrap"]).context("vm-systemd builds its root file system with debootstrap")?;
    }
    let partial = dir.join(release).join("rootfs.partial");
    let _ = fs::remove_dir_all(&partial);
    let _ = fs::remove_dir_all(&rootfs);
    fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    eprintln!("vm-systemd: building the Debian {release} root file system with debootstrap (once; about a minute)");
    let t = Instant::now();
    let log = dir.join(release).join("debootstrap.log");
    let out = fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={PACKAGES}"), release])
        .arg(&partial)
        .arg(MIRROR)
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .context("cannot run debootstrap")?;
    if !status.success() {
        bail!("debootstrap {release} failed ({status}); its log: {}", log.display());
    }
    // apt's downloaded packages are not needed in the image.
    let _ = fs::remove_dir_all(partial.join("var/cache/apt/archives"));
    fs::write(partial.join(STAMP), PACKAGES)?;
    fs::rename(&partial, &rootfs).with_context(|| format!("cannot rename {}", partial.display()))?;
    eprintln!(
        "vm-systemd: root file system ready in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(rootfs)
}

/// The kernel and initramfs the root file system installed.
struct Boot {
    vmlinuz: PathBuf,
    initrd: PathBuf,
    release: String,
}

impl Boot {
    fn find(rootfs: &Path) -> anyhow::Result<Boot> {
        let boot = rootfs.join("boot");
        let mut kernels: Vec<String> = fs::read_dir(&boot)
            .with_context(|| format!("cannot read {}", boot.display()))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("vmlinuz-").map(str::to_owned))
            .collect();
        kernels.sort();
        let release = kernels
            .pop()
            .with_context(|| format!("no vmlinuz-* in {}", boot.display()))?;
        let initrd = boot.join(format!("initrd.img-{release}"));
        ensure!(initrd.is_file(), "{} is missing", initrd.display());
        Ok(Boot {
            vmlinuz: boot.join(format!("vmlinuz-{release}")),
            initrd,
            release,
        })
    }
}

/// The `watch-config.yaml` of the shipped ConfigMap
/// (deploy/kubernetes/configmap.yaml), as kubelet would write it.
fn configmap_watch_config(root: &Path) -> anyhow::Result<String> {
    let file = root.join("deploy/kubernetes/configmap.yaml");
    let text = fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    block_scalar(&text, "watch-config.yaml")
        .with_context(|| format!("{}: no data.watch-config.yaml block", file.display()))
}

/// The literal block scalar (`key: |`) under `key`: its lines with their
/// common indentation removed.
fn block_scalar(yaml: &str, key: &str) -> Option<String> {
    let mut lines = yaml.lines();
    let header = lines.by_ref().find(|l| l.trim() == format!("{key}: |"))?;
    let outer = header.len() - header.trim_start().len();
    let mut indent = None;
    let mut out = String::new();
    for line in lines {
        if line.trim().is_empty() {
            out.push('\n');
            continue;
        }
        let this = line.len() - line.trim_start().len();
        if this <= outer {
            break;
        }
        let cut = *indent.get_or_insert(this);
        out.push_str(line.get(cut..).unwrap_or(line.trim_start()));
        out.push('\n');
    }
    (!out.trim().is_empty()).then(|| format!("{}\n", out.trim_end()))
}

/// What the run's image gets besides the root file system.
struct Payload<'a> {
    deb: &'a Path,
    oci: &'a Path,
    configmap: &'a str,
}

/// The run's disk: a copy of the root file system with the package, the
/// suite and its unit, as an ext4 image (mkfs.ext4 -d: no loop mount).
fn make_disk(rootfs: &Path, payload: &Payload, run_dir: &Path) -> anyhow::Result<PathBuf> {
    let t = Instant::now();
    let tree = run_dir.join("root");
    run(
        Command::new("cp").arg("-a").arg(rootfs).arg(&tree),
        "copying the root file system",
    )?;
    fs::copy(payload.deb, tree.join("root/ffrtmp.deb")).context("copying the package")?;
    fs::copy(payload.oci, tree.join("root/ffrtmp.oci.tar")).context("copying the image")?;
    fs::write(tree.join("root/configmap-watch-config.yaml"), payload.configmap)?;
    let suite = tree.join("usr/local/sbin/ffrtmp-vm-suite");
    fs::write(&suite, SUITE)?;
    fs::set_permissions(&suite, fs::Permissions::from_mode(0o755))?;
    // The workloads: sleep under a name of its own (comm and argv[0]), and
    // under one of the ConfigMap's targets.
    for name in ["vmtgt-sleep", "ffmpeg"] {
        fs::copy(tree.join("usr/bin/sleep"), tree.join("usr/local/bin").join(name)).context("copying sleep")?;
    }
    let units = tree.join("etc/systemd/system");
    fs::write(units.join("ffrtmp-vm-suite.service"), SUITE_UNIT)?;
    let wants = units.join("default.target.wants");
    fs::create_dir_all(&wants)?;
    symlink("../ffrtmp-vm-suite.service", wants.join("ffrtmp-vm-suite.service"))?;
    // No login prompt on the console the suite reports to.
    symlink("/dev/null", units.join("serial-getty@ttyS0.service"))?;
    symlink("/dev/null", units.join("getty@tty1.service"))?;
    fs::write(tree.join("etc/hostname"), "ffrtmp-vm\n")?;
    fs::write(tree.join("etc/fstab"), "/dev/vda / ext4 rw,relatime 0 1\n")?;

    let disk = run_dir.join("disk.img");
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-d"])
            .arg(&tree)
            .arg(&disk)
            .arg("3G"),
        "making the ext4 image",
    )?;
    fs::remove_dir_all(&tree).ok();
    eprintln!("vm-systemd: disk image ready in {:.1} s", t.elapsed().as_secs_f64());
    Ok(disk)
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot run {}", super::shown(cmd)))?;
    ensure!(status.success(), "{what}: {} failed ({status})", super::shown(cmd));
    Ok(())
}

fn qemu_command(qemu: &Path, boot: &Boot, disk: &Path, memory_mib: u64) -> Command {
    QemuBoot {
        kernel: &boot.vmlinuz,
        initrd: &boot.initrd,
        cmdline: CMDLINE,
        disk,
        memory_mib,
        smp: SMP,
    }
    .command(qemu)
}

fn report(run: &Run, release: &str, boot: &Boot, total: Duration, timeout: Duration) -> anyhow::Result<()> {
    let c = &run.console;
    println!();
    let systemd = c.boot_field("systemd").unwrap_or("?");
    let started = match &c.boot {
        Some((host, _)) => format!("the suite started {:.1} s after qemu", host.as_secs_f64()),
        None => "the suite never started".into(),
    };
    eprintln!(
        "vm-systemd: Debian {release}, systemd {systemd}, kernel {}; {started}; VM ran {:.1} s; whole command {:.1} s",
        boot.release,
        run.elapsed.as_secs_f64(),
        total.as_secs_f64()
    );
    for info in &c.info {
        eprintln!("vm-systemd: {info}");
    }
    for f in &c.failures {
        eprintln!("vm-systemd:   FAILED {f}");
    }
    if run.timed_out {
        bail!(
            "TIMED OUT: no result after {} s; killed qemu (pid {})",
            timeout.as_secs(),
            run.pid
        );
    }
    let Some(result) = &c.result else {
        bail!("the guest printed no VM-TEST-RESULT line; see the console output above");
    };
    if !result.pass || c.failed > 0 || c.passed == 0 {
        bail!(
            "vm-systemd: FAIL on Debian {release}, systemd {systemd}, kernel {}: {} passed, {} failed",
            boot.release,
            c.passed,
            c.failed
        );
    }
    eprintln!(
        "vm-systemd: PASS on Debian {release}, systemd {systemd}, kernel {}: {} passed",
        boot.release, c.passed
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configmaps_file_is_its_block_unindented() {
        let yaml = "data:\n  watch-config.yaml: |\n    # a comment\n    cgroup_root: /ffrtmp\n\n    default_limits:\n      cpu_quota: 200\nother: 1\n";
        assert_eq!(
            block_scalar(yaml, "watch-config.yaml").as_deref(),
            Some("# a comment\ncgroup_root: /ffrtmp\n\ndefault_limits:\n  cpu_quota: 200\n")
        );
        assert_eq!(block_scalar(yaml, "missing.yaml"), None);
    }

    #[test]
    fn the_shipped_configmap_has_a_watch_configuration() {
        let text = configmap_watch_config(&workspace_root()).expect("the shipped ConfigMap");
        assert!(text.contains("target_commands:"), "{text}");
        assert!(text.contains("cgroup_root: /ffrtmp"), "{text}");
    }
}
