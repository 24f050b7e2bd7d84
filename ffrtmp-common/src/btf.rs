//! Kernel structure offsets from the running kernel's BTF.
//!
//! The eBPF programs read a few `task_struct`/`signal_struct` fields with
//! `bpf_probe_read_kernel`. Rust eBPF has no CO-RE relocations and the
//! offsets differ between kernel builds (6.18 here, 6.1 in the test VM), so
//! user space looks them up in `/sys/kernel/btf/vmlinux` and hands them to the
//! programs through the `OFFSETS` map.
//!
//! aya's BTF parser does not expose struct members, so this is a small parser
//! of its own: the format is `include/uapi/linux/btf.h` and
//! `Documentation/bpf/btf.rst`. Member lookup walks anonymous nested structs
//! and unions (e.g. `task_struct`'s `randomized_struct_fields_start` block).
//!
//! It lives in this crate, not in `ffrtmp`, so that debug builds can
//! compile it optimized (`[profile.dev.package.ffrtmp-common]` in the
//! workspace's Cargo.toml): unoptimized, its scan of ~127k types took 1.7 s
//! of a debug daemon's 3 s start in the emulated test VMs.
//!
//! Memory (issue 17): this parse sets the eBPF daemon's peak memory, so the
//! kernel's BTF (5-6 MB) is never held whole. It is read with `pread`
//! through two one-page windows, one over the type section and one over the
//! strings (sysfs serves any offset and returns a page per read, so this
//! takes fewer syscalls than reading the file whole: 1,269 against 1,347 on
//! 6.18). What stays is 4 bytes per type (~0.5 MB for 127k types) and the
//! structs' name offsets: 0.8 MB of heap at the peak, where reading the
//! file whole and copying its sections, as this parser first did, took
//! ~15 MB (heaptrack; docs/BENCHMARKS.md).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::Offsets;

/// Where the kernel exposes its own BTF (`CONFIG_DEBUG_INFO_BTF`).
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_MIN: usize = 24;
const TYPE_HEADER: usize = 12;

/// Bytes each window reads at a time: one page, what a sysfs read returns.
const WINDOW: usize = 4096;

// BTF_KIND_* (include/uapi/linux/btf.h).
const KIND_INT: u8 = 1;
const KIND_PTR: u8 = 2;
const KIND_ARRAY: u8 = 3;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_ENUM: u8 = 6;
const KIND_FWD: u8 = 7;
const KIND_TYPEDEF: u8 = 8;
const KIND_VOLATILE: u8 = 9;
const KIND_CONST: u8 = 10;
const KIND_RESTRICT: u8 = 11;
const KIND_FUNC: u8 = 12;
const KIND_FUNC_PROTO: u8 = 13;
const KIND_VAR: u8 = 14;
const KIND_DATASEC: u8 = 15;
const KIND_FLOAT: u8 = 16;
const KIND_DECL_TAG: u8 = 17;
const KIND_TYPE_TAG: u8 = 18;
const KIND_ENUM64: u8 = 19;

/// Nesting allowed when resolving modifiers or anonymous members: real
/// kernels need a handful; a cycle in a corrupt file must not recurse forever.
const MAX_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading kernel BTF from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(String),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("kernel BTF: {strukt}.{member} is a bitfield or not byte-aligned (bit offset {bit_offset})")]
    NotByteAligned {
        strukt: String,
        member: String,
        bit_offset: u32,
    },
    #[error("kernel BTF: {strukt}.{member} is {size} bytes, expected {expected}")]
    UnexpectedSize {
        strukt: String,
        member: String,
        size: u32,
        expected: u32,
    },
}

fn malformed(what: impl Into<String>) -> BtfError {
    BtfError::Malformed(what.into())
}

/// A member of a struct or union, as found by [`Btf::member`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the outermost struct.
    pub offset: u32,
    /// Size in bytes of the member's type (pointers: 8).
    pub size: u32,
}

/// One type record: where it starts in the type section and its header.
#[derive(Debug, Clone, Copy)]
struct TypeRec {
    at: usize,
    kind: u8,
    kind_flag: bool,
    vlen: usize,
    size_or_type: u32,
}

/// Where the raw BTF is: a copy in memory ([`Btf::parse`]) or an open file.
enum Blob {
    Bytes(Vec<u8>),
    File { file: File, path: PathBuf },
}

impl Blob {
    /// Fills `buf` from absolute offset `at` (within the length checked at
    /// parse time; a file that shrank since is a read error).
    fn read_exact_at(&self, at: usize, buf: &mut [u8]) -> Result<(), BtfError> {
        match self {
            Blob::Bytes(b) => {
                let src = at
                    .checked_add(buf.len())
                    .and_then(|end| b.get(at..end))
                    .ok_or_else(|| malformed(format!("read past the end at byte {at}")))?;
                buf.copy_from_slice(src);
                Ok(())
            }
            Blob::File { file, path } => file.read_exact_at(buf, at as u64).map_err(|source| BtfError::Read {
                path: path.clone(),
                source,
            }),
        }
    }
}

/// A section of the blob: absolute start and length.
#[derive(Debug, Clone, Copy)]
struct Section {
    start: usize,
    len: usize,
}

/// The bytes `[start, start + len)` of a section, as last read.
struct Window {
    start: usize,
    len: usize,
    buf: Vec<u8>,
}

impl Window {
    fn new(size: usize) -> RefCell<Window> {
        RefCell::new(Window {
            start: 0,
            len: 0,
            buf: vec![0; size],
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Sec {
    Types,
    Strings,
}

/// A parsed BTF blob (native endianness only, like the kernel's own).
pub struct Btf {
    blob: Blob,
    types: Section,
    strings: Section,
    type_window: RefCell<Window>,
    string_window: RefCell<Window>,
    /// Index = type id: where its record starts in the type section. Id 0
    /// is `void` (a placeholder here).
    offsets: Vec<u32>,
    /// `(name offset, id)` of every struct, sorted: [`Btf::struct_id`]
    /// reads their names in string-section order, so its window only moves
    /// forward (~570 page reads for a 2.3 MB section, not one per struct).
    structs: Vec<(u32, u32)>,
    /// The last struct found, as `offsets()` asks for each one several times.
    last_struct: RefCell<Option<(String, u32)>>,
}

impl Btf {
    /// Parses the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        Btf::from_file(Path::new(VMLINUX_BTF))
    }

    /// Parses the BTF in `path`, reading it a page at a time and keeping
    /// the file open for the lookups.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let read_err = |source| BtfError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        // Sysfs gives bin attributes their real size (the kernel's BTF image).
        let len = file.metadata().map_err(read_err)?.len();
        let len = usize::try_from(len).map_err(|_| malformed(format!("{len} bytes")))?;
        Btf::from_blob(
            Blob::File {
                file,
                path: path.to_path_buf(),
            },
            len,
            WINDOW,
        )
    }

    /// Parses a raw BTF blob. Never panics on malformed input.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        Btf::from_blob(Blob::Bytes(data.to_vec()), data.len(), WINDOW)
    }

    /// `window`: bytes per window read (tests make it tiny so that records
    /// and names straddle windows).
    fn from_blob(blob: Blob, len: usize, window: usize) -> Result<Btf, BtfError> {
        if len < HEADER_MIN {
            return Err(malformed(format!("{len} bytes, shorter than the header")));
        }
        let mut header = [0u8; HEADER_MIN];
        blob.read_exact_at(0, &mut header)?;
        let magic = u16::from_ne_bytes([header[0], header[1]]);
        if magic != BTF_MAGIC {
            return Err(if magic.swap_bytes() == BTF_MAGIC {
                malformed("foreign byte order")
            } else {
                malformed(format!("bad magic {magic:#06x}"))
            });
        }
        let word =
            |at: usize| u32::from_ne_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]) as usize;
        let (hdr_len, type_off, type_len, str_off, str_len) = (word(4), word(8), word(12), word(16), word(20));
        if hdr_len < HEADER_MIN {
            return Err(malformed(format!("header length {hdr_len}")));
        }
        let section = |off: usize, sec_len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .filter(|start| start.checked_add(sec_len).is_some_and(|end| end <= len))
                .map(|start| Section { start, len: sec_len })
                .ok_or_else(|| malformed(format!("{what} section out of bounds")))
        };
        let types = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?;
        let mut btf = Btf {
            blob,
            types,
            strings,
            type_window: Window::new(window.max(TYPE_HEADER)),
            string_window: Window::new(window.max(1)),
            offsets: vec![0],
            structs: Vec::new(),
            last_struct: RefCell::new(None),
        };
        let mut at = 0;
        while at < types.len {
            let [name_off, info, _] = btf.words3(at)?;
            let kind = ((info >> 24) & 0x1f) as u8;
            let vlen = (info & 0xffff) as usize;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC
                | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                other => return Err(malformed(format!("unknown kind {other} at type offset {at}"))),
            };
            let id = u32::try_from(btf.offsets.len()).map_err(|_| malformed("too many types"))?;
            // `at` < the section's length, which the header holds in a u32.
            btf.offsets
                .push(u32::try_from(at).map_err(|_| malformed("type section too long"))?);
            if kind == KIND_STRUCT {
                btf.structs.push((name_off, id));
            }
            at += TYPE_HEADER + extra;
        }
        if at != types.len {
            return Err(malformed("type section ends inside a type"));
        }
        btf.structs.sort_unstable();
        Ok(btf)
    }

    /// Calls `f` with the `len` bytes at `off` in section `sec`, reading
    /// them into its window first if they are not there (`len` ≤ the
    /// window's size).
    fn bytes<R>(&self, sec: Sec, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R, BtfError> {
        let (section, window) = match sec {
            Sec::Types => (self.types, &self.type_window),
            Sec::Strings => (self.strings, &self.string_window),
        };
        let end = off
            .checked_add(len)
            .filter(|&end| end <= section.len)
            .ok_or_else(|| malformed(format!("read past the end at byte {off}")))?;
        let mut w = window.borrow_mut();
        if off < w.start || end > w.start + w.len {
            let n = w.buf.len().min(section.len - off);
            debug_assert!(n >= len, "a read larger than the window");
            self.blob.read_exact_at(section.start + off, &mut w.buf[..n])?;
            w.start = off;
            w.len = n;
        }
        let from = off - w.start;
        Ok(f(&w.buf[from..from + len]))
    }

    /// Three words at `at` in the type section (a type's header, a member).
    fn words3(&self, at: usize) -> Result<[u32; 3], BtfError> {
        self.bytes(Sec::Types, at, 12, |b| {
            let w = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            [w(0), w(4), w(8)]
        })
    }

    fn type_word(&self, at: usize) -> Result<u32, BtfError> {
        self.bytes(Sec::Types, at, 4, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Whether the name at string offset `off` is `name`.
    fn name_is(&self, off: u32, name: &[u8]) -> Result<bool, BtfError> {
        let off = off as usize;
        if off >= self.strings.len {
            return Err(malformed(format!("string offset {off} out of bounds")));
        }
        if name.contains(&0) {
            return Ok(false);
        }
        // `name` and its NUL, compared a window at a time.
        let want = |i: usize| name.get(i).copied().unwrap_or(0);
        let chunk = self.string_window.borrow().buf.len();
        let mut done = 0;
        while done <= name.len() {
            let n = (name.len() + 1 - done).min(chunk).min(self.strings.len - (off + done));
            if n == 0 {
                // All of it so far was `name`, so no NUL: the last string
                // of a corrupt section (the kernel's ends in a NUL).
                return Err(malformed(format!("string at {off} not terminated")));
            }
            let same = self.bytes(Sec::Strings, off + done, n, |b| {
                b.iter().enumerate().all(|(i, &c)| c == want(done + i))
            })?;
            if !same {
                return Ok(false);
            }
            done += n;
        }
        Ok(true)
    }

    fn ty(&self, id: u32) -> Result<TypeRec, BtfError> {
        let at = self
            .offsets
            .get(id as usize)
            .filter(|_| id != 0)
            .ok_or_else(|| malformed(format!("type id {id} out of range")))?;
        let at = *at as usize;
        let [_name_off, info, size_or_type] = self.words3(at)?;
        Ok(TypeRec {
            at,
            kind: ((info >> 24) & 0x1f) as u8,
            kind_flag: info >> 31 == 1,
            vlen: (info & 0xffff) as usize,
            size_or_type,
        })
    }

    /// The id of the struct named `name` (a full definition, not a forward
    /// declaration); the lowest, should several have that name.
    pub fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        if let Some((last, id)) = &*self.last_struct.borrow()
            && last == name
        {
            return Ok(*id);
        }
        let mut found: Option<u32> = None;
        let mut previous: Option<(u32, bool)> = None;
        for &(name_off, id) in &self.structs {
            let same = match previous {
                Some((off, same)) if off == name_off => same,
                _ => self.name_is(name_off, name.as_bytes())?,
            };
            previous = Some((name_off, same));
            if same {
                found = Some(found.map_or(id, |f| f.min(id)));
            }
        }
        let id = found.ok_or_else(|| BtfError::NoStruct(name.to_string()))?;
        *self.last_struct.borrow_mut() = Some((name.to_string(), id));
        Ok(id)
    }

    /// `(name_off, type, bit_offset, bitfield_size)` of each member of a
    /// struct or union.
    fn members(&self, t: &TypeRec) -> Result<Vec<(u32, u32, u32, u32)>, BtfError> {
        (0..t.vlen)
            .map(|i| {
                let [name_off, type_id, raw] = self.words3(t.at + TYPE_HEADER + 12 * i)?;
                // With kind_flag, the offset word is bitfield_size << 24 | bit_offset.
                let (bit_offset, bitfield_size) = if t.kind_flag {
                    (raw & 0x00ff_ffff, raw >> 24)
                } else {
                    (raw, 0)
                };
                Ok((name_off, type_id, bit_offset, bitfield_size))
            })
            .collect()
    }

    /// Skips typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Result<TypeRec, BtfError> {
        for _ in 0..MAX_DEPTH {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = t.size_or_type,
                _ => return Ok(t),
            }
        }
        Err(malformed(format!("type chain from id {id} too deep")))
    }

    fn size_of(&self, id: u32) -> Result<u32, BtfError> {
        self.size_of_nested(id, 0)
    }

    /// `depth`: arrays of arrays so far (an array of itself in a corrupt
    /// file must not recurse until the stack overflows).
    fn size_of_nested(&self, id: u32, depth: usize) -> Result<u32, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed(format!("array type {id} nests too deep")));
        }
        let t = self.resolve(id)?;
        match t.kind {
            KIND_PTR => Ok(8),
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => Ok(t.size_or_type),
            KIND_ARRAY => {
                let at = t.at + TYPE_HEADER;
                let elem = self.type_word(at)?;
                let n = self.type_word(at + 8)?;
                self.size_of_nested(elem, depth + 1)?
                    .checked_mul(n)
                    .ok_or_else(|| malformed("array size overflows"))
            }
            k => Err(malformed(format!("type of kind {k} has no size"))),
        }
    }

    /// Finds `member` in struct `strukt`, descending into anonymous struct
    /// and union members; the offset is from the start of `strukt`.
    pub fn member(&self, strukt: &str, member: &str) -> Result<Member, BtfError> {
        let id = self.struct_id(strukt)?;
        let found = self.find_member(id, member.as_bytes(), 0, 0, &mut HashSet::new())?;
        let (bit_offset, type_id, bitfield_size) = found.ok_or_else(|| BtfError::NoMember {
            strukt: strukt.to_string(),
            member: member.to_string(),
        })?;
        if bitfield_size != 0 || bit_offset % 8 != 0 {
            return Err(BtfError::NotByteAligned {
                strukt: strukt.to_string(),
                member: member.to_string(),
                bit_offset,
            });
        }
        Ok(Member {
            offset: bit_offset / 8,
            size: self.size_of(type_id)?,
        })
    }

    /// `(bit offset from the outermost struct, member type id, bitfield size)`.
    ///
    /// `searched`: the types already searched in vain during this lookup.
    /// Whether `name` is inside a type does not depend on where the type
    /// is, so each is searched once: a corrupt file whose anonymous members
    /// share types (two members of the next type, 32 levels deep) would
    /// otherwise take 2^32 steps.
    fn find_member(
        &self,
        id: u32,
        name: &[u8],
        base_bits: u32,
        depth: usize,
        searched: &mut HashSet<usize>,
    ) -> Result<Option<(u32, u32, u32)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed("anonymous members nest too deep"));
        }
        let t = self.resolve(id)?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION || searched.contains(&t.at) {
            return Ok(None);
        }
        let members = self.members(&t)?;
        let offset = |bits: u32| {
            base_bits
                .checked_add(bits)
                .ok_or_else(|| malformed("member offset overflows"))
        };
        // Named members of this level first, then anonymous ones: a name is
        // never shadowed by a deeper one.
        for &(name_off, type_id, bits, bitfield_size) in &members {
            if name_off != 0 && self.name_is(name_off, name)? {
                return Ok(Some((offset(bits)?, type_id, bitfield_size)));
            }
        }
        for &(name_off, type_id, bits, bitfield_size) in &members {
            if name_off == 0
                && bitfield_size == 0
                && let Some(found) = self.find_member(type_id, name, offset(bits)?, depth + 1, searched)?
            {
                return Ok(Some(found));
            }
        }
        searched.insert(t.at);
        Ok(None)
    }
}

/// The offsets the eBPF programs need, from `btf`, each checked against the
/// size the programs read.
pub fn offsets(btf: &Btf) -> Result<Offsets, BtfError> {
    let field = |strukt: &str, member: &str, expected: u32| -> Result<u32, BtfError> {
        let m = btf.member(strukt, member)?;
        if m.size != expected {
            return Err(BtfError::UnexpectedSize {
                strukt: strukt.to_string(),
                member: member.to_string(),
                size: m.size,
                expected,
            });
        }
        Ok(m.offset)
    };
    Ok(Offsets {
        magic: Offsets::MAGIC,
        task_tgid: field("task_struct", "tgid", 4)?,
        task_real_parent: field("task_struct", "real_parent", 8)?,
        task_group_leader: field("task_struct", "group_leader", 8)?,
        task_start_boottime: field("task_struct", "start_boottime", 8)?,
        task_exit_code: field("task_struct", "exit_code", 4)?,
        task_signal: field("task_struct", "signal", 8)?,
        signal_live: field("signal_struct", "live", 4)?,
        signal_flags: field("signal_struct", "flags", 4)?,
        signal_group_exit_code: field("signal_struct", "group_exit_code", 4)?,
        task_mm: field("task_struct", "mm", 8)?,
        mm_arg_start: field("mm_struct", "arg_start", 8)?,
    })
}

/// [`offsets`] of the running kernel.
pub fn kernel_offsets() -> Result<Offsets, BtfError> {
    offsets(&Btf::from_sys_fs()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from (name, info, size_or_type, extra words) records.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        fn new() -> Builder {
            Builder {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn ty(&mut self, name: &str, kind: u8, vlen: u32, size_or_type: u32, extra: &[u32]) {
            let name = self.s(name);
            for w in [name, (u32::from(kind) << 24) | vlen, size_or_type] {
                self.types.extend_from_slice(&w.to_ne_bytes());
            }
            for w in extra {
                self.types.extend_from_slice(&w.to_ne_bytes());
            }
        }
        /// Struct or union with (name, type, bit offset) members.
        fn aggregate(&mut self, kind: u8, name: &str, size: u32, members: &[(&str, u32, u32)]) {
            let mut extra = Vec::new();
            for (n, t, off) in members {
                extra.extend([self.s(n), *t, *off]);
            }
            self.ty(name, kind, members.len() as u32, size, &extra);
        }
        fn build(&self) -> Vec<u8> {
            let mut b = Vec::new();
            let hdr = [
                u32::from(BTF_MAGIC) | (1 << 16), // magic, version 1, flags 0
                24,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ];
            for w in hdr {
                b.extend_from_slice(&w.to_ne_bytes());
            }
            b.extend_from_slice(&self.types);
            b.extend_from_slice(&self.strings);
            b
        }
    }

    /// ids: 1 int, 2 long, 3 ptr->void, 4 anon union {a: int, b: long},
    /// 5 anon struct {inner: int @0, u: union(4) @64}, 6 typedef T = 5,
    /// 7 struct outer { x: int @0, <anon T> @64, p: ptr @256 }
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        b.ty("int", KIND_INT, 0, 4, &[32]);
        b.ty("long", KIND_INT, 0, 8, &[64]);
        b.ty("", KIND_PTR, 0, 0, &[]);
        b.aggregate(KIND_UNION, "", 8, &[("a", 1, 0), ("b", 2, 0)]);
        b.aggregate(KIND_STRUCT, "", 16, &[("inner", 1, 0), ("", 4, 64)]);
        b.ty("T", KIND_TYPEDEF, 0, 5, &[]);
        b.aggregate(KIND_STRUCT, "outer", 40, &[("x", 1, 0), ("", 6, 64), ("p", 3, 256)]);
        b.build()
    }

    #[test]
    fn finds_direct_and_nested_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member("outer", "x").unwrap(), Member { offset: 0, size: 4 });
        assert_eq!(btf.member("outer", "inner").unwrap(), Member { offset: 8, size: 4 });
        assert_eq!(btf.member("outer", "a").unwrap(), Member { offset: 16, size: 4 });
        assert_eq!(btf.member("outer", "b").unwrap(), Member { offset: 16, size: 8 });
        assert_eq!(btf.member("outer", "p").unwrap(), Member { offset: 32, size: 8 });
        assert!(matches!(btf.member("outer", "nope"), Err(BtfError::NoMember { .. })));
        assert!(matches!(btf.member("missing", "x"), Err(BtfError::NoStruct(_))));
    }

    fn lookups(btf: &Btf) -> Vec<Result<Member, String>> {
        ["x", "inner", "a", "b", "p", "nope"]
            .iter()
            .map(|m| btf.member("outer", m).map_err(|e| e.to_string()))
            .collect()
    }

    /// Records and names that straddle windows, down to one byte for the
    /// strings (the type window is never smaller than a type's header).
    #[test]
    fn any_window_size_finds_the_same_members() {
        let data = sample();
        let expected = lookups(&Btf::parse(&data).unwrap());
        assert_eq!(expected[2], Ok(Member { offset: 16, size: 4 }));
        for window in 1..=data.len() + 1 {
            let btf = Btf::from_blob(Blob::Bytes(data.clone()), data.len(), window).unwrap();
            assert_eq!(lookups(&btf), expected, "window of {window} bytes");
        }
    }

    /// The file-backed path (pread through the windows) reads what the
    /// in-memory one does.
    #[test]
    fn a_file_reads_like_its_bytes() {
        let data = sample();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, &data).unwrap();
        let btf = Btf::from_file(file.path()).unwrap();
        assert_eq!(lookups(&btf), lookups(&Btf::parse(&data).unwrap()));
        let missing = Btf::from_file(Path::new("/nonexistent/btf"));
        assert!(matches!(missing, Err(BtfError::Read { .. })));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = sample();
        for len in 0..good.len() {
            // Every truncation either parses (a shorter string section can
            // still hold the names) or errors; none panics.
            if let Ok(btf) = Btf::parse(&good[..len]) {
                let _ = btf.member("outer", "a");
            }
        }
        for i in 0..good.len() {
            for bit in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= bit;
                if let Ok(btf) = Btf::parse(&bad) {
                    let _ = btf.member("outer", "a");
                    let _ = btf.member("outer", "p");
                }
            }
        }
        let mut swapped = good.clone();
        swapped.swap(0, 1);
        assert!(matches!(Btf::parse(&swapped), Err(BtfError::Malformed(m)) if m.contains("byte order")));
    }

    #[test]
    fn self_referencing_typedef_is_rejected() {
        let mut b = Builder::new();
        b.ty("loop", KIND_TYPEDEF, 0, 1, &[]);
        b.aggregate(KIND_STRUCT, "s", 8, &[("", 1, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(matches!(btf.member("s", "x"), Err(BtfError::Malformed(_))));
    }

    /// Found by the btf fuzz target (the input is in fuzz/regressions/btf/):
    /// a member whose type is an array of itself recursed in `size_of`
    /// until the stack overflowed.
    #[test]
    fn self_referencing_array_is_rejected() {
        let mut b = Builder::new();
        b.ty("int", KIND_INT, 0, 4, &[32]);
        b.ty("", KIND_ARRAY, 0, 0, &[2, 1, 4]);
        b.aggregate(KIND_STRUCT, "s", 8, &[("a", 2, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(matches!(btf.member("s", "a"), Err(BtfError::Malformed(m)) if m.contains("too deep")));
        let fuzzed = include_bytes!("../../fuzz/regressions/btf/crash-c736efaaa6780c0aa8c21d81e5da8d6ae282a1f9");
        let btf = Btf::parse(fuzzed).unwrap();
        assert!(offsets(&btf).is_err());
    }

    /// Anonymous members that share their types, two of the next at each
    /// of 32 levels: found while writing the btf fuzz target, which timed
    /// out on it (fuzz/regressions/btf/anonymous-members-dag). Each type is
    /// now searched once per lookup.
    #[test]
    fn shared_anonymous_members_are_searched_once() {
        let mut b = Builder::new();
        b.ty("int", KIND_INT, 0, 4, &[32]);
        for level in 0..32u32 {
            let next = 3 + level;
            if level == 31 {
                b.aggregate(KIND_STRUCT, "", 4, &[("x", 1, 0)]);
            } else {
                b.aggregate(KIND_STRUCT, "", 4, &[("", next, 0), ("", next, 0)]);
            }
        }
        b.aggregate(KIND_STRUCT, "s", 4, &[("", 2, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(btf.member("s", "nope"), Err(BtfError::NoMember { .. })));
        assert_eq!(btf.member("s", "x").unwrap(), Member { offset: 0, size: 4 });
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let fuzzed = include_bytes!("../../fuzz/regressions/btf/anonymous-members-dag");
        assert!(matches!(
            Btf::parse(fuzzed).unwrap().member("task_struct", "pid"),
            Err(BtfError::NoMember { .. })
        ));
    }

    /// The host's real BTF: every offset the programs need is found, and
    /// fields the kernel declares next to each other are where they must be.
    #[test]
    fn host_kernel_offsets() {
        if !Path::new(VMLINUX_BTF).exists() {
            let reason = format!("{VMLINUX_BTF} does not exist (kernel without CONFIG_DEBUG_INFO_BTF)");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{reason}");
            }
            eprintln!("skipping: {reason}");
            return;
        }
        let started = std::time::Instant::now();
        let btf = Btf::from_sys_fs().expect("parsing the host's BTF");
        let off = offsets(&btf).expect("offsets from the host's BTF");
        eprintln!("host offsets ({:?}): {off:?}", started.elapsed());
        assert_eq!(off.magic, Offsets::MAGIC);
        // Read whole into memory, the same blob gives the same offsets.
        let whole = Btf::parse(&std::fs::read(VMLINUX_BTF).unwrap()).unwrap();
        assert_eq!(offsets(&whole).unwrap(), off);
        // `pid_t pid; pid_t tgid;` and `real_parent; parent;` are adjacent
        // in every kernel since 2.6 (include/linux/sched.h).
        assert_eq!(btf.member("task_struct", "pid").unwrap().offset + 4, off.task_tgid);
        assert_eq!(
            off.task_real_parent + 8,
            btf.member("task_struct", "parent").unwrap().offset
        );
        // `atomic_t live;` precedes `int nr_threads;` in signal_struct.
        assert_eq!(
            off.signal_live + 4,
            btf.member("signal_struct", "nr_threads").unwrap().offset
        );
        let task_size = btf.size_of(btf.struct_id("task_struct").unwrap()).unwrap();
        for o in [
            off.task_tgid,
            off.task_real_parent,
            off.task_group_leader,
            off.task_start_boottime,
            off.task_exit_code,
            off.task_signal,
            off.task_mm,
        ] {
            assert!(o > 0 && o < task_size, "{o} outside task_struct ({task_size} bytes)");
        }
        // `arg_start, arg_end, env_start, env_end` are adjacent unsigned
        // longs in mm_struct (include/linux/mm_types.h, since 2.6).
        assert_eq!(off.mm_arg_start + 8, btf.member("mm_struct", "arg_end").unwrap().offset);
    }
}
