//! The policy corpora (`tests/corpus/<name>/`) and their `<name>.expect` tables, for the tests
//! that check each document fails where its table says. Included with
//! `#[path = "support/corpus.rs"] mod corpus;` (no engine needed, unlike `support`).

use std::path::{Path, PathBuf};

/// The directory of corpus `name`.
pub fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name)
}

/// The table of corpus `name`: `(file, line, column, message fragment)` per line of
/// `tests/corpus/<name>.expect` (`file<TAB>line:col<TAB>fragment`; blank and `#` lines skipped).
pub fn expectations(name: &str) -> Vec<(String, u64, u64, String)> {
    let table =
        std::fs::read_to_string(dir(name).with_file_name(format!("{name}.expect"))).unwrap();
    table
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.splitn(3, '\t');
            let file = parts.next().unwrap().to_owned();
            let (line, col) = parts.next().unwrap().split_once(':').unwrap();
            let fragment = parts.next().unwrap().to_owned();
            (file, line.parse().unwrap(), col.parse().unwrap(), fragment)
        })
        .collect()
}
