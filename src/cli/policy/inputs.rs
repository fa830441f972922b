//! The `-f PATH` inputs of `apply` and `diff`: files, directories or stdin, as one text.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::policy::load_paths;

/// Reads the given paths: one text (source name, text) per path; a directory is read as
/// one text of all its YAML files. Every problem is printed; `None` when there was any.
pub(super) fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<Option<(String, String)>> {
    let mut files = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read stdin")?;
            files.push(("<stdin>".to_owned(), text));
            continue;
        }
        let report = load_paths(std::slice::from_ref(path));
        if !report.is_clean() {
            for d in &report.diagnostics {
                eprintln!("{d}");
            }
            return Ok(None);
        }
        // The same walk as the loader's (regular files only, loops detected); it just ran clean.
        let (paths_found, _) = crate::policy::load::yaml_files(std::slice::from_ref(path));
        for file in paths_found {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            files.push((file.display().to_string(), text));
        }
    }
    if let [(source, text)] = files.as_slice() {
        return Ok(Some((source.clone(), text.clone())));
    }
    Ok(Some((joined_names(paths), combined(&files))))
}

/// Several files as one multi-document text, so the whole set is validated (duplicates across
/// files) and sent at once.
fn combined(files: &[(String, String)]) -> String {
    let mut combined = String::new();
    for (_, text) in files {
        combined.push_str(text);
        if !combined.ends_with('\n') {
            combined.push('\n');
        }
        combined.push_str("---\n");
    }
    combined
}

fn joined_names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_files_become_one_text_of_documents() {
        let files = [
            ("a".to_owned(), "x: 1".to_owned()),
            ("b".to_owned(), "y: 2\n".to_owned()),
        ];
        assert_eq!(combined(&files), "x: 1\n---\ny: 2\n---\n");
        assert_eq!(joined_names(&["a".into(), "d/b".into()]), "a,d/b");
    }
}
