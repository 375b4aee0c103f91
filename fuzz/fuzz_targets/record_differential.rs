#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opsdata::fuzz::record_differential(data));
