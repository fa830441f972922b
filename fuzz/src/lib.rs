//! The fuzz targets' property checks, shared with `tests/fuzz_regressions.rs` (which replays
//! every committed seed and regression through them without libFuzzer).

pub mod checks;
