//! An eBPF ring buffer record: decoded only when exactly one event, re-encoded to its bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ffrtmp_fuzz::ring_event(data));
