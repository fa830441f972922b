//! Fuzz target `external_request`: see `hemostat_fuzz::checks::external_request` for the properties asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hemostat_fuzz::checks::external_request(data));
