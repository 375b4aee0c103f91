#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opsdata::fuzz::sealed_open(data));
