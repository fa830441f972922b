//! Fuzz target `redis_policy`: see `hemostat_fuzz::checks::redis_policy` for the properties asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hemostat_fuzz::checks::redis_policy(data));
