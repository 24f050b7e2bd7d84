//! /proc/self/mountinfo, a NUL, /proc/self/cgroup: the cgroup hierarchy detected from them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ffrtmp_fuzz::hierarchy(data));
