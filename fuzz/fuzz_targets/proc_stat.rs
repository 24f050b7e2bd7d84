//! /proc/<pid>/stat: parsed into a process identity.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ffrtmp_fuzz::proc_stat(data));
