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

use std::path::{Path, PathBuf};

use ffrtmp_common::Offsets;

/// Where the kernel exposes its own BTF (`CONFIG_DEBUG_INFO_BTF`).
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_MIN: usize = 24;
const TYPE_HEADER: usize = 12;

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
    name_off: u32,
    kind: u8,
    kind_flag: bool,
    vlen: usize,
    size_or_type: u32,
}

/// A parsed BTF blob (native endianness only, like the kernel's own).
pub struct Btf {
    types_data: Vec<u8>,
    strings: Vec<u8>,
    /// Index = type id; id 0 is `void` (a placeholder here).
    types: Vec<TypeRec>,
}

impl Btf {
    /// Parses the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        Btf::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Btf::parse(&data)
    }

    /// Parses a raw BTF blob. Never panics on malformed input.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < HEADER_MIN {
            return Err(malformed(format!("{} bytes, shorter than the header", data.len())));
        }
        let magic = u16::from_ne_bytes([data[0], data[1]]);
        if magic != BTF_MAGIC {
            return Err(if magic.swap_bytes() == BTF_MAGIC {
                malformed("foreign byte order")
            } else {
                malformed(format!("bad magic {magic:#06x}"))
            });
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        if hdr_len < HEADER_MIN {
            return Err(malformed(format!("header length {hdr_len}")));
        }
        let section = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some((start, start.checked_add(len)?)))
                .filter(|&(_, end)| end <= data.len())
                .map(|(start, end)| data[start..end].to_vec())
                .ok_or_else(|| malformed(format!("{what} section out of bounds")))
        };
        let types_data = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?;

        let placeholder = TypeRec {
            at: 0,
            name_off: 0,
            kind: 0,
            kind_flag: false,
            vlen: 0,
            size_or_type: 0,
        };
        let mut types = vec![placeholder];
        let mut at = 0;
        while at < types_data.len() {
            let name_off = u32_at(&types_data, at)?;
            let info = u32_at(&types_data, at + 4)?;
            let size_or_type = u32_at(&types_data, at + 8)?;
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
            types.push(TypeRec {
                at,
                name_off,
                kind,
                kind_flag: info >> 31 == 1,
                vlen,
                size_or_type,
            });
            at += TYPE_HEADER + extra;
        }
        if at != types_data.len() {
            return Err(malformed("type section ends inside a type"));
        }
        Ok(Btf {
            types_data,
            strings,
            types,
        })
    }

    fn name(&self, off: u32) -> Result<&[u8], BtfError> {
        let rest = self
            .strings
            .get(off as usize..)
            .ok_or_else(|| malformed(format!("string offset {off} out of bounds")))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed(format!("string at {off} not terminated")))?;
        Ok(&rest[..end])
    }

    fn ty(&self, id: u32) -> Result<&TypeRec, BtfError> {
        self.types
            .get(id as usize)
            .filter(|_| id != 0)
            .ok_or_else(|| malformed(format!("type id {id} out of range")))
    }

    /// The id of the struct named `name` (a full definition, not a forward
    /// declaration).
    pub fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        for (id, t) in self.types.iter().enumerate().skip(1) {
            if t.kind == KIND_STRUCT && self.name(t.name_off)? == name.as_bytes() {
                return u32::try_from(id).map_err(|_| malformed("too many types"));
            }
        }
        Err(BtfError::NoStruct(name.to_string()))
    }

    /// `(name_off, type, bit_offset, bitfield_size)` of each member of a
    /// struct or union.
    fn members(&self, t: &TypeRec) -> Result<Vec<(u32, u32, u32, u32)>, BtfError> {
        (0..t.vlen)
            .map(|i| {
                let at = t.at + TYPE_HEADER + 12 * i;
                let raw = u32_at(&self.types_data, at + 8)?;
                // With kind_flag, the offset word is bitfield_size << 24 | bit_offset.
                let (bit_offset, bitfield_size) = if t.kind_flag {
                    (raw & 0x00ff_ffff, raw >> 24)
                } else {
                    (raw, 0)
                };
                Ok((
                    u32_at(&self.types_data, at)?,
                    u32_at(&self.types_data, at + 4)?,
                    bit_offset,
                    bitfield_size,
                ))
            })
            .collect()
    }

    /// Skips typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Result<&TypeRec, BtfError> {
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
        let t = self.resolve(id)?;
        match t.kind {
            KIND_PTR => Ok(8),
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => Ok(t.size_or_type),
            KIND_ARRAY => {
                let at = t.at + TYPE_HEADER;
                let elem = u32_at(&self.types_data, at)?;
                let n = u32_at(&self.types_data, at + 8)?;
                self.size_of(elem)?
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
        let found = self.find_member(id, member.as_bytes(), 0, 0)?;
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
    fn find_member(
        &self,
        id: u32,
        name: &[u8],
        base_bits: u32,
        depth: usize,
    ) -> Result<Option<(u32, u32, u32)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed("anonymous members nest too deep"));
        }
        let t = *self.resolve(id)?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
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
            if name_off != 0 && self.name(name_off)? == name {
                return Ok(Some((offset(bits)?, type_id, bitfield_size)));
            }
        }
        for &(name_off, type_id, bits, bitfield_size) in &members {
            if name_off == 0
                && bitfield_size == 0
                && let Some(found) = self.find_member(type_id, name, offset(bits)?, depth + 1)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    at.checked_add(4)
        .and_then(|end| b.get(at..end))
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| malformed(format!("read past the end at byte {at}")))
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
        ] {
            assert!(o > 0 && o < task_size, "{o} outside task_struct ({task_size} bytes)");
        }
    }
}
