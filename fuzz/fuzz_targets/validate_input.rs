#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo_tenancy::fuzz::validate_input(data));
