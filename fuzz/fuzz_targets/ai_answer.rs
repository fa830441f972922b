//! Fuzz target `ai_answer`: see `hemostat_fuzz::checks::ai_answer` for the properties asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hemostat_fuzz::checks::ai_answer(data));
