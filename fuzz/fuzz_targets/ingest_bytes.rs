#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opsdata::fuzz::ingest_bytes(data));
