//! The few `bpf(2)` commands aya 0.14 does not offer in the form needed
//! here: a *legacy* cgroup attach (`BPF_PROG_ATTACH`, which outlives the
//! process that made it), its detach, and finding the programs attached to
//! a cgroup (`BPF_PROG_QUERY`) with their maps.
//!
//! aya attaches cgroup programs with `bpf_link_create` on 5.7+, and a link
//! goes when its last file descriptor closes: a job's limit would end with
//! the `ffrtmp run` wrapper or a daemon restart, while the workload lives
//! on. A legacy attachment stays until it is detached or the cgroup is
//! removed, and the kernel frees the program and its maps then.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use aya_obj::generated::{bpf_attach_type, bpf_cmd, bpf_prog_info};

/// `BPF_F_ALLOW_MULTI`: beside other programs, never the exclusive mode
/// (which would refuse or break systemd's and a runtime's own programs).
const ALLOW_MULTI: u32 = aya_obj::generated::BPF_F_ALLOW_MULTI;

/// Which cgroup_skb hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Egress,
    Ingress,
    /// `sock_ops`, attached with egress (TCP pacing).
    SockOps,
}

impl Hook {
    fn attach_type(self) -> u32 {
        match self {
            Hook::Egress => bpf_attach_type::BPF_CGROUP_INET_EGRESS as u32,
            Hook::Ingress => bpf_attach_type::BPF_CGROUP_INET_INGRESS as u32,
            Hook::SockOps => bpf_attach_type::BPF_CGROUP_SOCK_OPS as u32,
        }
    }
}

/// `union bpf_attr` for BPF_PROG_ATTACH / BPF_PROG_DETACH (the leading
/// fields; the kernel reads the rest as zero).
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `union bpf_attr` for BPF_PROG_QUERY.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// `union bpf_attr` for BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn bpf<T>(cmd: bpf_cmd, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a `#[repr(C)]` prefix of `union bpf_attr` for `cmd`,
    // valid for `size_of::<T>()` bytes; the kernel copies it in (and out
    // for queries) and checks every field.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn raw(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd() as u32
}

/// Attach `prog` to the cgroup `cgroup` (a directory fd) at `hook`.
pub fn attach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, hook: Hook) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: raw(cgroup),
        attach_bpf_fd: raw(prog),
        attach_type: hook.attach_type(),
        attach_flags: ALLOW_MULTI,
        ..AttachAttr::default()
    };
    bpf(bpf_cmd::BPF_PROG_ATTACH, &mut attr).map(drop)
}

/// Detach `prog` from `cgroup` at `hook` (a multi attachment is named by
/// its program).
pub fn detach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, hook: Hook) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: raw(cgroup),
        attach_bpf_fd: raw(prog),
        attach_type: hook.attach_type(),
        ..AttachAttr::default()
    };
    bpf(bpf_cmd::BPF_PROG_DETACH, &mut attr).map(drop)
}

/// The ids of the programs attached directly to `cgroup` at `hook` (not
/// those inherited from its ancestors).
pub fn query(cgroup: BorrowedFd<'_>, hook: Hook) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; 64];
    let mut attr = QueryAttr {
        target_fd: raw(cgroup),
        attach_type: hook.attach_type(),
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..QueryAttr::default()
    };
    bpf(bpf_cmd::BPF_PROG_QUERY, &mut attr)?;
    let n = (attr.prog_cnt as usize).min(ids.len());
    Ok(ids[..n].to_vec())
}

/// A file descriptor for the program with `id`.
pub fn prog_fd(id: u32) -> io::Result<OwnedFd> {
    let mut attr = IdAttr {
        id,
        ..IdAttr::default()
    };
    let fd = bpf(bpf_cmd::BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: the kernel just returned this new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// What the kernel says of a loaded program.
pub struct ProgInfo {
    /// As the kernel keeps it: at most 15 bytes.
    pub name: String,
    /// The ids of the maps it uses.
    pub map_ids: Vec<u32>,
    /// Time spent running it and how many times it ran, counted only while
    /// `kernel.bpf_stats_enabled` is on (zero otherwise).
    pub run_time_ns: u64,
    pub run_count: u64,
}

pub fn prog_info(prog: BorrowedFd<'_>) -> io::Result<ProgInfo> {
    let mut map_ids = [0u32; 16];
    // SAFETY: bpf_prog_info is plain integers and arrays: all zeroes is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    info.nr_map_ids = map_ids.len() as u32;
    info.map_ids = map_ids.as_mut_ptr() as u64;
    let mut attr = InfoAttr {
        bpf_fd: raw(prog),
        info_len: size_of::<bpf_prog_info>() as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let name: Vec<u8> = info.name.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
    let n = (info.nr_map_ids as usize).min(map_ids.len());
    Ok(ProgInfo {
        name: String::from_utf8_lossy(&name).into_owned(),
        map_ids: map_ids[..n].to_vec(),
        run_time_ns: info.run_time_ns,
        run_count: info.run_cnt,
    })
}
