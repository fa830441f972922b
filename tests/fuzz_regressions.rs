//! Replays every committed fuzz seed and crash regression (`fuzz/seeds/<target>/`,
//! `fuzz/regressions/<target>/`) through the fuzz targets' own property checks, so the
//! properties hold in `cargo test` without libFuzzer or a nightly toolchain (docs/FUZZING.md).

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::Path;

/// Runs `check` on every file of the target's seed and regression directories; returns how
/// many inputs were replayed.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["seeds", "regressions"] {
        let dir = root.join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{} breaks a property", file.display());
            count += 1;
        }
    }
    count
}

#[test]
fn policy_load_seeds_and_regressions_keep_their_properties() {
    assert!(replay("policy_load", checks::policy_load) >= 50);
}

#[test]
fn redis_policy_seeds_and_regressions_keep_their_properties() {
    assert!(replay("redis_policy", checks::redis_policy) >= 10);
}

#[test]
fn external_request_seeds_and_regressions_keep_their_properties() {
    assert!(replay("external_request", checks::external_request) >= 10);
}

#[test]
fn ai_answer_seeds_and_regressions_keep_their_properties() {
    assert!(replay("ai_answer", checks::ai_answer) >= 10);
}
