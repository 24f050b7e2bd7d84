//! Process events from the kernel: the eBPF ring buffer, the proc connector
//! (netlink), and `/proc` scans; all reduced to [`source::SourceEvent`].

pub use ffrtmp_common::btf;
pub mod ebpf;
pub mod netlink;
pub mod scan;
pub mod source;
