#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opsdata_io::fuzz::spool_recovery(data));
