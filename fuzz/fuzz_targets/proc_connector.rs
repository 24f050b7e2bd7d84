//! A proc connector datagram (netlink): decoded without a panic, fields at their offsets.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ffrtmp_fuzz::proc_connector(data));
