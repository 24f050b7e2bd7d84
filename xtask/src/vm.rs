//! `cargo xtask vm-test`: the privileged integration tests on a real cgroup v2
//! kernel.
//!
//! The build machines run cgroup v1 (hybrid), so this boots a Debian 6.1
//! cloud kernel under qemu with software emulation (TCG; KVM hung on these
//! machines, see KERNEL.md) and an initramfs holding busybox, ffrtmp, the
//! stub programs and every test executable of the `tests` package. The
//! guest's /init (xtask/vm/init.sh) mounts a pure cgroup v2 hierarchy, runs
//! each test executable and prints `VM-TEST-RESULT: PASS|FAIL …`; the serial
//! console is streamed here live, and that line becomes the exit status.
//! See docs/vm-test.md.

mod artifacts;
mod console;
mod cpio;
mod initramfs;
mod kernel;
mod prereq;
pub mod systemd;

pub use initramfs::quote;
pub use prereq::elf_interp;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::bench_common::{target_dir, workspace_root};
use console::{Console, short};

const DEFAULT_TIMEOUT_SECS: u64 = 600;
/// The guest unpacks the whole initramfs (the debug test executables, ~100
/// MiB each, plus ffmpeg and its libraries) into RAM while the archive
/// itself is still held there: 2048 MiB failed with "Initramfs unpacking
/// failed: write error" at ~750 MiB of archive, and 4096 MiB did at 1329
/// MiB (17 test executables, `ffrtmp top` among them). qemu touches guest
/// pages lazily, so the host pays only what the guest uses.
const DEFAULT_MEMORY_MIB: u64 = 6144;
const DEFAULT_SMP: u64 = 2;
const DISK_MIB: u64 = 64;
/// How long qemu may take to power off after the result line.
const POWEROFF_GRACE: Duration = Duration::from_secs(20);
const INITRD: &str = "initramfs.cpio";
const DISK: &str = "disk.img";
const QBOOT: &str = "/usr/share/qemu/qboot.rom";
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 cgroup_no_v1=all";

const USAGE: &str = "\
usage: cargo xtask vm-test [options] [-- test-args…]

Boots a Debian cloud kernel (6.1 unless --kernel) under qemu (software emulation) with a pure
cgroup v2 hierarchy and runs every test executable of the `tests` package in
it, one test at a time (--test-threads=1). The result is the exit status.
Downloads the kernel package once into target/vm/ and installs qemu-system-x86
and busybox-static with apt-get when missing (root). See docs/vm-test.md.

  --filter NAME    only tests whose name contains NAME (passed to each test binary)
  --timeout SECS   kill the VM and fail after SECS seconds (default 600)
  --keep           keep target/vm/initramfs.cpio and print the qemu command line
  --kernel K       the kernel: 5.10 (Debian bullseye), 6.1 (bookworm, the
                   default) or 6.12 (bookworm), each its newest cloud image;
                   or a package name (linux-image-…-cloud-amd64)
  --memory MIB     guest memory (default 6144)
  --smp N          guest CPUs (default 2)
  --include PATH   also copy this host program (and its libraries) into the
                   guest, at the same path; may be repeated
  --exec CMD       run the shell command CMD in the guest instead of the tests
                   (a debugging aid: builds no tests; PASS when it exits 0)
  --prepare        only obtain the kernel (download it once into target/vm/)
                   and the host tools, then exit: boots nothing
  -- ARGS          further arguments for every test binary (e.g. --nocapture)
";

struct Options {
    filter: Option<String>,
    timeout: Duration,
    keep: bool,
    kernel: Option<String>,
    memory_mib: u64,
    smp: u64,
    include: Vec<PathBuf>,
    exec: Option<String>,
    prepare: bool,
    test_args: Vec<String>,
}

fn parse_args(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut o = Options {
        filter: None,
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        keep: false,
        kernel: None,
        memory_mib: DEFAULT_MEMORY_MIB,
        smp: DEFAULT_SMP,
        include: Vec::new(),
        exec: None,
        prepare: false,
        test_args: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            o.test_args.extend(it.by_ref().cloned());
            break;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| -> anyhow::Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it.next().cloned().with_context(|| format!("{name} needs a value")),
            }
        };
        let number = |name: &str, v: String| -> anyhow::Result<u64> {
            v.parse()
                .with_context(|| format!("invalid value '{v}' for {name}: expected a whole number"))
        };
        match flag {
            "--filter" => o.filter = Some(value("--filter")?),
            "--timeout" => o.timeout = Duration::from_secs(number("--timeout", value("--timeout")?)?),
            "--keep" if inline.is_none() => o.keep = true,
            "--kernel" => o.kernel = Some(value("--kernel")?),
            "--memory" => o.memory_mib = number("--memory", value("--memory")?)?,
            "--smp" => o.smp = number("--smp", value("--smp")?)?,
            "--include" => {
                let p = PathBuf::from(value("--include")?);
                let p = if p.is_absolute() {
                    p
                } else {
                    prereq::find_in_path(&p.to_string_lossy())
                        .with_context(|| format!("--include {}: not found on PATH", p.display()))?
                };
                o.include.push(p);
            }
            "--exec" => o.exec = Some(value("--exec")?),
            "--prepare" if inline.is_none() => o.prepare = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            _ => bail!("unknown argument '{a}'\n\n{USAGE}"),
        }
    }
    ensure!(
        o.timeout >= Duration::from_secs(10),
        "--timeout must be at least 10 seconds"
    );
    ensure!(o.memory_mib >= 256, "--memory must be at least 256 (MiB)");
    ensure!((1..=64).contains(&o.smp), "--smp must be between 1 and 64");
    Ok(Some(o))
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let Some(opts) = parse_args(args)? else {
        return Ok(());
    };
    ensure!(
        cfg!(target_arch = "x86_64"),
        "vm-test boots an amd64 kernel with the host's test binaries: it needs an x86_64 host"
    );
    let t0 = Instant::now();
    let root = workspace_root();
    let vm_dir = target_dir(&root).join("vm");
    fs::create_dir_all(&vm_dir).with_context(|| format!("cannot create {}", vm_dir.display()))?;

    let tools = prereq::ensure_tools()?;
    let kernel = kernel::obtain(&vm_dir, opts.kernel.as_deref())?;
    let check = kernel.check()?;
    eprintln!(
        "vm-test: kernel {} ({} {})",
        kernel.release, kernel.package, kernel.version
    );
    for f in &check.facts {
        eprintln!("vm-test: kernel config {f}");
    }
    if opts.prepare {
        eprintln!("vm-test: prepared in {:.1} s", t0.elapsed().as_secs_f64());
        return Ok(());
    }

    let artifacts = artifacts::build(&root, opts.exec.is_none())?;
    if artifacts.tests.is_empty() && opts.exec.is_none() {
        bail!("the tests package has no test executables (nothing to run; --exec CMD runs a command instead)");
    }

    let mut test_args = vec!["--test-threads=1".to_string()];
    test_args.extend(opts.test_args.iter().cloned());
    test_args.extend(opts.filter.iter().cloned());
    // Per-run files: concurrent runs sharing target/ (two terminals, parallel
    // CI jobs) must not trip over each other's disk lock.
    sweep_stale_runs(&vm_dir);
    let run_dir = vm_dir.join(format!("run-{}", std::process::id()));
    let _ = fs::remove_dir_all(&run_dir);
    fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let result = boot_and_test(&opts, &tools, &kernel, &check, &artifacts, &run_dir, &test_args);
    if opts.keep {
        let kept = vm_dir.join("kept");
        let _ = fs::remove_dir_all(&kept);
        fs::rename(&run_dir, &kept).with_context(|| format!("cannot rename {}", run_dir.display()))?;
        eprintln!(
            "vm-test: kept the initramfs and disk in {}; boot it again with:",
            kept.display()
        );
        eprintln!("  {}", shown(&qemu_command(&opts, &tools, &kernel, &kept)));
    } else {
        let _ = fs::remove_dir_all(&run_dir);
    }
    let (run, built) = result?;
    report(&run, &built, &kernel, t0.elapsed(), opts.timeout, opts.exec.is_some())
}

fn boot_and_test(
    opts: &Options,
    tools: &prereq::Tools,
    kernel: &kernel::Kernel,
    check: &kernel::ConfigCheck,
    artifacts: &artifacts::Artifacts,
    run_dir: &Path,
    test_args: &[String],
) -> anyhow::Result<(Run, initramfs::Built)> {
    let t_initrd = Instant::now();
    let built = initramfs::build(
        &initramfs::Plan {
            busybox: &tools.busybox,
            modules: &check.modules,
            artifacts,
            include: &opts.include,
            test_args,
            exec: opts.exec.as_deref(),
        },
        &run_dir.join(INITRD),
    )?;
    eprintln!(
        "vm-test: initramfs {} MiB ({} files with libraries) in {:.1} s; {} test executables: {}",
        built.bytes >> 20,
        built.files,
        t_initrd.elapsed().as_secs_f64(),
        built.tests.len(),
        built
            .tests
            .iter()
            .map(|t| short(t.rsplit('/').next().unwrap_or(t)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !built.host_programs.is_empty() {
        eprintln!("vm-test: host programs in the guest: {}", built.host_programs.join(" "));
    }
    let disk = run_dir.join(DISK);
    let f = fs::File::create(&disk).with_context(|| format!("cannot create {}", disk.display()))?;
    f.set_len(DISK_MIB << 20)?;
    drop(f);

    eprintln!(
        "vm-test: booting {} under qemu (TCG, {} MiB, {} CPUs, timeout {} s)",
        kernel.release,
        opts.memory_mib,
        opts.smp,
        opts.timeout.as_secs()
    );
    let run = run_qemu(qemu_command(opts, tools, kernel, run_dir), opts.timeout)?;
    Ok((run, built))
}

fn qemu_command(opts: &Options, tools: &prereq::Tools, kernel: &kernel::Kernel, dir: &Path) -> Command {
    QemuBoot {
        kernel: &kernel.vmlinuz,
        initrd: &dir.join(INITRD),
        cmdline: CMDLINE,
        disk: &dir.join(DISK),
        memory_mib: opts.memory_mib,
        smp: opts.smp,
    }
    .command(&tools.qemu)
}

/// What qemu boots: a kernel and initramfs with a command line, and one
/// raw virtio disk.
struct QemuBoot<'a> {
    kernel: &'a Path,
    initrd: &'a Path,
    cmdline: &'a str,
    disk: &'a Path,
    memory_mib: u64,
    smp: u64,
}

impl QemuBoot<'_> {
    fn command(&self, qemu: &Path) -> Command {
        let mut cmd = Command::new(qemu);
        // The default CPU model (qemu64): with `-cpu max` glibc picks AVX code
        // paths that TCG emulates slowly (memcpy-heavy work ran 16x slower).
        // One host thread for all vCPUs (`thread=single`): with one thread
        // per vCPU, qemu 7.2 let a vCPU run kernel code another vCPU was
        // patching (a static key flipped by a cgroup_skb attach): an
        // `int3` oops in ip_finish_output killed a 6.12 guest in CI. Single
        // threaded, a guest also takes no more than one host core, so two
        // can run side by side (scripts/test-all does).
        cmd.args(["-machine", "pc", "-accel", "tcg,thread=single"])
            .args(["-m", &self.memory_mib.to_string(), "-smp", &self.smp.to_string()])
            .args(["-nographic", "-no-reboot", "-nic", "none"])
            .arg("-kernel")
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initrd)
            .args(["-append", self.cmdline])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", self.disk.display()));
        // qboot (qemu-system-data) starts the kernel directly and, unlike
        // SeaBIOS, writes no terminal-clearing escapes to the console.
        if Path::new(QBOOT).is_file() {
            cmd.args(["-bios", QBOOT]);
        }
        cmd
    }
}

/// Removes `target/vm/run-<pid>` directories whose process is gone.
fn sweep_stale_runs(vm_dir: &Path) {
    for e in fs::read_dir(vm_dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("run-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

struct Run {
    console: Console,
    elapsed: Duration,
    timed_out: bool,
    /// qemu did not exit by itself after the result line and was killed.
    killed_after_result: bool,
    status: Option<std::process::ExitStatus>,
    pid: u32,
}

fn run_qemu(mut cmd: Command, timeout: Duration) -> anyhow::Result<Run> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    // SAFETY: prctl is async-signal-safe; this only asks the kernel to kill
    // qemu if this process dies, so no VM outlives an interrupted run.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().context("cannot start qemu-system-x86_64")?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || stream(stdout, tx));

    let deadline = start + timeout;
    let mut console = Console::default();
    let mut result_at: Option<Instant> = None;
    let mut timed_out = false;
    let mut killed_after_result = false;
    loop {
        let limit = match result_at {
            Some(t) => deadline.min(t + POWEROFF_GRACE),
            None => deadline,
        };
        let now = Instant::now();
        if now >= limit {
            if result_at.is_some() {
                killed_after_result = true;
            } else {
                timed_out = true;
            }
            kill(&mut child);
            break;
        }
        match rx.recv_timeout(limit - now) {
            Ok(line) => {
                console.line(&line, start.elapsed());
                if console.result.is_some() && result_at.is_none() {
                    result_at = Some(Instant::now());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // The console closed (or qemu was killed): qemu exits right after.
    let mut status = None;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Some(s) = child.try_wait()? {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if status.is_none() {
        kill(&mut child);
        status = child.wait().ok();
    }
    let _ = reader.join();
    for line in rx.try_iter() {
        console.line(&line, start.elapsed());
    }
    Ok(Run {
        console,
        elapsed: start.elapsed(),
        timed_out,
        killed_after_result,
        status,
        pid: child.id(),
    })
}

/// Kills qemu by its pid (SIGKILL) and reaps it.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Copies the console to stdout as it arrives and sends each complete line.
fn stream(mut from: impl Read, tx: mpsc::Sender<String>) {
    let mut buf = [0u8; 8192];
    let mut line = Vec::new();
    let out = std::io::stdout();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut o = out.lock();
        let _ = o.write_all(&buf[..n]);
        let _ = o.flush();
        drop(o);
        for &b in &buf[..n] {
            if b == b'\n' {
                let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                line.clear();
            } else {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
    }
}

fn report(
    run: &Run,
    built: &initramfs::Built,
    kernel: &kernel::Kernel,
    total: Duration,
    timeout: Duration,
    exec: bool,
) -> anyhow::Result<()> {
    let c = &run.console;
    println!();
    let boot = match &c.boot {
        Some((host, guest)) => format!("booted in {:.1} s (guest uptime {guest} s)", host.as_secs_f64()),
        None => "never reached /init's boot marker".to_string(),
    };
    eprintln!(
        "vm-test: kernel {} ({}); {boot}; VM ran {:.1} s; whole command {:.1} s",
        kernel.release,
        kernel.version,
        run.elapsed.as_secs_f64(),
        total.as_secs_f64()
    );
    for b in &c.binaries {
        eprintln!("vm-test:   {}", short_binary_line(b));
    }
    eprintln!(
        "vm-test: tests: {} passed, {} failed, {} ignored",
        c.passed, c.failed, c.ignored
    );
    for f in &c.failures {
        eprintln!("vm-test:   FAILED {f}");
    }
    if run.timed_out {
        let during = match c.running() {
            Some(b) => format!(" while {} was running", short(b)),
            None => String::new(),
        };
        bail!(
            "TIMED OUT: no result after {} s{during}; killed qemu (pid {}); raise the limit with --timeout SECS",
            timeout.as_secs(),
            run.pid
        );
    }
    if c.initramfs_failed {
        bail!(
            "the guest kernel could not unpack the whole initramfs (\"Initramfs unpacking failed\"): files are missing in the guest; give it more memory with --memory MIB"
        );
    }
    if let Some(e) = &c.setup_error {
        bail!("the guest could not set up: {e}");
    }
    let Some(result) = &c.result else {
        bail!(
            "the guest printed no VM-TEST-RESULT line (qemu exited: {}); see the console output above",
            run.status.map_or("killed".to_string(), |s| s.to_string())
        );
    };
    if run.killed_after_result {
        eprintln!("vm-test: note: the guest did not power off; qemu was killed after the result line");
    }
    let expected = if exec { 1 } else { built.tests.len() };
    if let Some(n) = result.binaries
        && n != expected
    {
        bail!(
            "the guest ran {n} test executables, {expected} were packed: {}",
            result.line
        );
    }
    if !result.pass {
        bail!("FAIL: {}", result.line);
    }
    eprintln!("vm-test: PASS");
    Ok(())
}

/// "integration-0123456789abcdef rc=0 secs=1.2" → "integration rc=0 secs=1.2"
fn short_binary_line(line: &str) -> String {
    match line.split_once(' ') {
        Some((name, rest)) => format!("{} {rest}", short(name)),
        None => line.to_string(),
    }
}

fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.contains(' ') {
                format!("'{s}'")
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
