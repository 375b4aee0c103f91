#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opsdata::fuzz::paging_token(data));
