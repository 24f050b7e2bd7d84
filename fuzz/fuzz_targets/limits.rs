//! The limit parsers (and the other value flags): a parsed value printed parses back to itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ffrtmp_fuzz::limit_value(data));
