//! A BTF blob: parsed, and every member lookup the eBPF loader does.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ffrtmp_fuzz::btf(data));
