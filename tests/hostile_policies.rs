//! Hostile policy values (the probe's corpus in `tests/corpus/hostile/`): each is refused with
//! `file:line:col` and a message saying what the limit is, never accepted to fail at run time.

#[path = "support/corpus.rs"]
mod corpus;

use std::path::PathBuf;

use hemostat::policy::load_bytes;

fn corpus_dir() -> PathBuf {
    corpus::dir("hostile")
}

/// `file<TAB>line:col<TAB>message fragment` per line.
fn expectations() -> Vec<(String, u64, u64, String)> {
    corpus::expectations("hostile")
}

#[test]
fn every_hostile_policy_is_refused_at_its_line_and_column() {
    for (file, line, column, fragment) in expectations() {
        let bytes = std::fs::read(corpus_dir().join(&file)).unwrap();
        let report = load_bytes(&file, &bytes);
        assert!(
            report.diagnostics.iter().any(|d| d.file == file
                && d.line == line
                && d.column == column
                && d.message.contains(fragment.as_str())),
            "{file}: expected {line}:{column} containing {fragment:?}, got {:#?}",
            report.diagnostics
        );
    }
}

#[test]
fn every_hostile_policy_file_has_an_expectation() {
    let listed: Vec<String> = expectations().into_iter().map(|e| e.0).collect();
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            listed.contains(&name),
            "{name} has no line in hostile.expect"
        );
    }
}

/// The same values arriving through Redis (`hemostat:policies`) go through the same validation.
#[test]
fn every_hostile_policy_stored_in_redis_is_refused_at_the_same_place() {
    for (file, line, column, fragment) in expectations() {
        let bytes = std::fs::read(corpus_dir().join(&file)).unwrap();
        let diagnostics = hemostat::adapters::redis::policies::validate_stored("hostile", &bytes)
            .expect_err(&file);
        assert!(
            diagnostics.iter().any(|d| d.line == line
                && d.column == column
                && d.message.contains(fragment.as_str())),
            "{file} via Redis: expected {line}:{column} containing {fragment:?}, got {diagnostics:#?}"
        );
    }
}
