//! A minimal writer for the `newc` cpio format the kernel unpacks as an
//! initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! Entries are collected first and written sorted by path, so every directory
//! comes before what it contains; missing parent directories are added. File
//! contents are streamed from disk when the archive is written.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

enum Kind {
    Dir,
    /// A host file copied with the given permission bits.
    File {
        src: PathBuf,
        mode: u32,
    },
    /// Literal contents.
    Data {
        bytes: Vec<u8>,
        mode: u32,
    },
    CharDev {
        major: u32,
        minor: u32,
        mode: u32,
    },
}

#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Kind>,
}

fn normalize(path: &str) -> anyhow::Result<String> {
    let p = path.trim_start_matches('/').trim_end_matches('/');
    if p.is_empty() || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        bail!("invalid initramfs path '{path}'");
    }
    Ok(p.to_string())
}

impl Archive {
    fn insert(&mut self, path: &str, kind: Kind) -> anyhow::Result<()> {
        let p = normalize(path)?;
        let mut parent = Path::new(&p).parent().map(Path::to_path_buf);
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            let d = dir.to_string_lossy().into_owned();
            match self.entries.get(&d) {
                None => {
                    self.entries.insert(d, Kind::Dir);
                }
                Some(Kind::Dir) => {}
                Some(_) => bail!("initramfs: '{d}' is not a directory (needed for '{p}')"),
            }
            parent = dir.parent().map(Path::to_path_buf);
        }
        if let Some(old) = self.entries.get(&p) {
            match (old, &kind) {
                (Kind::Dir, Kind::Dir) => return Ok(()),
                (Kind::File { src: a, .. }, Kind::File { src: b, .. }) if a == b => return Ok(()),
                _ => bail!("initramfs: '{p}' added twice"),
            }
        }
        self.entries.insert(p, kind);
        Ok(())
    }

    pub fn dir(&mut self, path: &str) -> anyhow::Result<()> {
        self.insert(path, Kind::Dir)
    }

    /// Copies the host file `src` (following symlinks) to `path`, keeping its
    /// permission bits.
    pub fn file(&mut self, path: &str, src: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(src).with_context(|| format!("initramfs: cannot read {}", src.display()))?;
        if !meta.is_file() {
            bail!("initramfs: {} is not a regular file", src.display());
        }
        let mode = meta.permissions().mode() & 0o7777;
        self.insert(
            path,
            Kind::File {
                src: src.to_path_buf(),
                mode,
            },
        )
    }

    pub fn data(&mut self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> anyhow::Result<()> {
        self.insert(
            path,
            Kind::Data {
                bytes: bytes.into(),
                mode,
            },
        )
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> anyhow::Result<()> {
        self.insert(path, Kind::CharDev { major, minor, mode })
    }

    /// Writes the archive (uncompressed: the guest unpacks it faster than a
    /// gzip one under software emulation) and returns its size in bytes.
    pub fn write_to(&self, out: &Path) -> anyhow::Result<u64> {
        let f = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut w = Counter {
            inner: BufWriter::with_capacity(1 << 20, f),
            n: 0,
        };
        for (ino, (path, kind)) in self.entries.iter().enumerate() {
            let ino = ino as u32 + 1;
            match kind {
                Kind::Dir => header(&mut w, ino, 0o040755, 2, 0, (0, 0), path)?,
                Kind::File { src, mode } => {
                    let mut file = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
                    let size = file.metadata()?.len();
                    let size32 =
                        u32::try_from(size).with_context(|| format!("{} is too large for cpio", src.display()))?;
                    header(&mut w, ino, 0o100000 | mode, 1, size32, (0, 0), path)?;
                    let copied = io::copy(&mut file, &mut w)?;
                    if copied != size {
                        bail!("{} changed size while being archived", src.display());
                    }
                    pad(&mut w)?;
                }
                Kind::Data { bytes, mode } => {
                    header(&mut w, ino, 0o100000 | mode, 1, bytes.len() as u32, (0, 0), path)?;
                    w.write_all(bytes)?;
                    pad(&mut w)?;
                }
                Kind::CharDev { major, minor, mode } => {
                    header(&mut w, ino, 0o020000 | mode, 1, 0, (*major, *minor), path)?
                }
            }
        }
        header(&mut w, 0, 0, 1, 0, (0, 0), "TRAILER!!!")?;
        w.inner.flush()?;
        Ok(w.n)
    }
}

struct Counter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(w: &mut Counter<W>) -> io::Result<()> {
    let rem = (4 - (w.n % 4) as usize) % 4;
    w.write_all(&[0u8; 3][..rem])
}

fn header<W: Write>(
    w: &mut Counter<W>,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) -> io::Result<()> {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime: fixed, so the archive depends only on its contents
        size,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    let mut h = String::with_capacity(110);
    h.push_str("070701");
    for f in fields {
        h.push_str(&format!("{f:08x}"));
    }
    w.write_all(h.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout_parents_first_and_aligned() {
        let dir = std::env::temp_dir().join(format!("vm-cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("a.cpio");
        let mut a = Archive::default();
        a.data("etc/x/conf", "hello", 0o644).unwrap();
        a.char_dev("dev/console", 5, 1, 0o600).unwrap();
        assert!(a.data("etc/x/conf", "again", 0o644).is_err());
        assert!(a.dir("../up").is_err());
        let n = a.write_to(&out).unwrap();
        let b = std::fs::read(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(n as usize, b.len());
        assert_eq!(b.len() % 4, 0);
        // Walk the entries: names in order, each header at a 4-byte boundary.
        let mut names = Vec::new();
        let mut off = 0;
        loop {
            assert_eq!(&b[off..off + 6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[off + 6 + 8 * i..off + 14 + 8 * i]).unwrap(), 16).unwrap()
            };
            let (size, namesize) = (field(6) as usize, field(11) as usize);
            let name = std::str::from_utf8(&b[off + 110..off + 110 + namesize - 1])
                .unwrap()
                .to_string();
            off = (off + 110 + namesize).next_multiple_of(4);
            off = (off + size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                break;
            }
            names.push(name);
        }
        assert_eq!(off, b.len());
        assert_eq!(names, ["dev", "dev/console", "etc", "etc/x", "etc/x/conf"]);
    }
}
