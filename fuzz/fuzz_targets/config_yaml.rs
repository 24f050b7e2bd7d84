//! A `--watch-config` file in YAML: loads, and `--check-config`'s output loads back to the same.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ffrtmp_fuzz::watch_config(data, "watch.yaml"));
