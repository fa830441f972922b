//! Fuzz target `policy_load`: see `hemostat_fuzz::checks::policy_load` for the properties asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hemostat_fuzz::checks::policy_load(data));
