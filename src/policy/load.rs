//! Loads HealthPolicy documents from files, directories and strings, with `file:line:col` errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::documents::{Chunk, bare, lines_inclusive, split_documents};
use super::locate::{PathIndex, Position};
use super::types::HealthPolicy;
use super::validate::{Violation, validate};

/// The largest policy file read; larger ones are refused with an error (split them).
pub(crate) const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// One problem found while loading, with where it is and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file (or source name, e.g. `redis:hemostat:policies`) the problem is in.
    pub file: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong and what was expected.
    pub message: String,
    /// The policy the problem belongs to, when its name could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl Diagnostic {
    /// `file:line:col: warning: message`, for a [`LoadReport::warnings`] entry.
    pub fn as_warning(&self) -> String {
        format!(
            "{}:{}:{}: warning: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// A valid policy and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedPolicy {
    /// The policy.
    pub policy: HealthPolicy,
    /// The file or source it was read from.
    pub source: String,
    /// Where its document starts.
    pub position: Position,
    /// Where its `metadata.name` is, for duplicate reports.
    pub name_position: Position,
}

/// What a load found: every valid policy, and every problem.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// The valid policies, in file and document order.
    pub policies: Vec<LoadedPolicy>,
    /// Every problem, in file and line order.
    pub diagnostics: Vec<Diagnostic>,
    /// Fields of valid policies that are accepted but not acted on yet
    /// ([`super::unimplemented`]).
    pub warnings: Vec<Diagnostic>,
    /// How many files were read.
    pub files: usize,
}

impl LoadReport {
    /// True when nothing was wrong.
    pub fn is_clean(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// The policies by name (names are unique once duplicates have been reported).
    pub fn by_name(&self) -> BTreeMap<String, HealthPolicy> {
        self.policies
            .iter()
            .map(|p| (p.policy.metadata.name.clone(), p.policy.clone()))
            .collect()
    }
}

/// Loads every `*.yaml` / `*.yml` under the given files and directories (recursively).
/// Files named explicitly are read whatever their extension. Duplicate names across the
/// whole set are errors; the first definition stays valid.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> LoadReport {
    let (files, diagnostics) = yaml_files(paths);
    let mut report = LoadReport {
        diagnostics,
        ..LoadReport::default()
    };
    for file in files {
        report.files += 1;
        let name = file.display().to_string();
        match read_text(&file) {
            Ok(text) => load_into(&name, &text, &mut report),
            Err(d) => report.diagnostics.push(d),
        }
    }
    reject_duplicates(&mut report);
    report
}

/// Loads the documents of one text (a file's contents, or a document received from Redis).
pub fn load_str(source: &str, text: &str) -> LoadReport {
    let mut report = LoadReport {
        files: 1,
        ..LoadReport::default()
    };
    load_into(source, text, &mut report);
    reject_duplicates(&mut report);
    report
}

/// Loads raw bytes: refuses non-UTF-8 input with the position of the first bad byte.
pub fn load_bytes(source: &str, bytes: &[u8]) -> LoadReport {
    match decode(source, bytes) {
        Ok(text) => load_str(source, &text),
        Err(d) => LoadReport {
            diagnostics: vec![d],
            files: 1,
            ..LoadReport::default()
        },
    }
}

/// The policy files under the given files and directories: every `*.yaml` / `*.yml` found
/// recursively (sorted, hidden entries skipped, a symlink loop read once), and files named
/// explicitly whatever their extension; plus a diagnostic for each path that cannot be used
/// (unreadable, not a regular file, nested too deep). The one walk for every command that reads
/// policy files.
pub(crate) fn yaml_files<P: AsRef<Path>>(paths: &[P]) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    let mut walk = Walk::default();
    for path in paths {
        collect_files(path.as_ref(), true, &mut walk, &mut files, &mut diagnostics);
    }
    (files, diagnostics)
}

/// What a directory walk has seen: directories by device and inode, so a symlink loop (three
/// links to `.` would otherwise make the walk exponential) is read once and reported.
#[derive(Default)]
pub(crate) struct Walk {
    dirs: std::collections::HashSet<(u64, u64)>,
    depth: usize,
}

/// How deep directories are followed at most.
const MAX_DEPTH: usize = 32;

pub(crate) fn collect_files(
    path: &Path,
    explicit: bool,
    walk: &mut Walk,
    files: &mut Vec<PathBuf>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            diagnostics.push(file_error(path, format!("cannot read: {e}")));
            return;
        }
    };
    if meta.is_dir() {
        if !walk.dirs.insert((meta.dev(), meta.ino())) {
            diagnostics.push(file_error(
                path,
                "directory already read through another path (a symlink loop?): remove the link"
                    .to_owned(),
            ));
            return;
        }
        if walk.depth >= MAX_DEPTH {
            diagnostics.push(file_error(
                path,
                format!("directories nested more than {MAX_DEPTH} deep are not read"),
            ));
            return;
        }
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                diagnostics.push(file_error(path, format!("cannot list directory: {e}")));
                return;
            }
        };
        entries.sort();
        for entry in entries {
            let hidden = entry
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !hidden {
                walk.depth += 1;
                collect_files(&entry, false, walk, files, diagnostics);
                walk.depth -= 1;
            }
        }
    } else if explicit || is_yaml(path) {
        if meta.is_file() {
            files.push(path.to_path_buf());
        } else {
            // A FIFO would block the read forever, a device like /dev/zero never end.
            diagnostics.push(file_error(
                path,
                "not a regular file (a FIFO, socket or device): policies are read from regular files only".to_owned(),
            ));
        }
    }
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn file_error(path: &Path, message: String) -> Diagnostic {
    Diagnostic {
        file: path.display().to_string(),
        line: 1,
        column: 1,
        message,
        policy: None,
    }
}

pub(crate) fn read_text(path: &Path) -> Result<String, Diagnostic> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: std::io::Error| file_error(path, format!("cannot read: {e}"));
    // Non-blocking open: a FIFO swapped in after the walk does not hang the read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(file_error(
            path,
            "not a regular file (a FIFO, socket or device): policies are read from regular files only".to_owned(),
        ));
    }
    let size = meta.len();
    if size > MAX_FILE_BYTES {
        return Err(file_error(
            path,
            format!(
                "file is {:.1} MiB; a policy file may be at most {} MiB: split it into several files",
                size as f64 / 1_048_576.0,
                MAX_FILE_BYTES / 1_048_576
            ),
        ));
    }
    // Bounded even if the file grows while it is read.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(file_error(
            path,
            format!(
                "file grew beyond {} MiB while read",
                MAX_FILE_BYTES / 1_048_576
            ),
        ));
    }
    decode(&path.display().to_string(), &bytes)
}

fn decode(source: &str, bytes: &[u8]) -> Result<String, Diagnostic> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_owned()),
        Err(e) => {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            let lines: Vec<&str> = lines_inclusive(valid).collect();
            // Lines counted as the parser counts them (LF, CRLF or a lone CR).
            let (line, column) = match lines.last() {
                None => (1, 1),
                Some(last) if bare(last).len() < last.len() => (lines.len() as u64 + 1, 1),
                Some(last) => (lines.len() as u64, last.chars().count() as u64 + 1),
            };
            Err(Diagnostic {
                file: source.to_owned(),
                line,
                column,
                message: "not UTF-8 text: policy files must be UTF-8 encoded YAML".to_owned(),
                policy: None,
            })
        }
    }
}

fn load_into(source: &str, text: &str, report: &mut LoadReport) {
    let chunks = split_documents(text);
    if chunks.is_empty() {
        report.diagnostics.push(Diagnostic {
            file: source.to_owned(),
            line: 1,
            column: 1,
            message: "no YAML document found: expected at least one HealthPolicy".to_owned(),
            policy: None,
        });
        return;
    }
    for chunk in chunks {
        match load_document(source, &chunk, &mut report.warnings) {
            Ok(loaded) => report.policies.push(loaded),
            Err(mut diagnostics) => report.diagnostics.append(&mut diagnostics),
        }
    }
}

fn parse_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 32,
            max_nodes: 100_000,
            max_aliases: 100,
            max_anchors: 100,
            max_documents: 1,
        },
        with_snippet: false,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    }
}

pub(crate) fn load_document(
    source: &str,
    chunk: &Chunk<'_>,
    warnings: &mut Vec<Diagnostic>,
) -> Result<LoadedPolicy, Vec<Diagnostic>> {
    let offset = chunk.first_line - 1;
    let at = |p: Position, message: String, policy: Option<String>| Diagnostic {
        file: source.to_owned(),
        line: p.line + offset,
        column: p.column,
        message,
        policy,
    };
    let policy: HealthPolicy = serde_saphyr::from_str_with_options(chunk.text, parse_options())
        .map_err(|e| {
            let position = e
                .location()
                .filter(|l| l.line() > 0)
                .map(|l| Position::new(l.line(), l.column().max(1)))
                .unwrap_or_else(|| first_content_position(chunk.text));
            let parse = at(position, describe_parse_error(&e), None);
            // The typed parse stops at the first unknown field: report every one of them, and
            // the parse error too unless it is about one of them.
            let unknown = super::unknown::unknown_fields(chunk.text, parse_options());
            let raw = e.without_snippet().to_string();
            let explained = unknown.iter().any(|u| {
                raw.contains(&format!("unknown field `{}`", u.name))
                    || raw.contains(&format!("unknown variant `{}`", u.name))
            });
            let mut out: Vec<Diagnostic> = unknown
                .into_iter()
                .map(|u| at(u.position, u.message, None))
                .collect();
            if !explained {
                out.push(parse);
            }
            out.sort_by_key(|d| (d.line, d.column));
            out
        })?;
    let index = PathIndex::build(chunk.text, parse_options()).unwrap_or_default();
    let violations = validate(&policy);
    let name = Some(policy.metadata.name.clone()).filter(|n| !n.is_empty());
    if !violations.is_empty() {
        return Err(violations
            .into_iter()
            .map(|Violation { path, message }| at(index.best(&path), message, name.clone()))
            .collect());
    }
    for (path, message) in super::unimplemented::warnings(&policy) {
        warnings.push(at(index.best(path), message, name.clone()));
    }
    let shift = |p: Position| Position::new(p.line + offset, p.column);
    Ok(LoadedPolicy {
        position: shift(
            index
                .value("")
                .unwrap_or_else(|| first_content_position(chunk.text)),
        ),
        name_position: shift(index.best("metadata.name")),
        source: source.to_owned(),
        policy,
    })
}

fn first_content_position(text: &str) -> Position {
    for (i, line) in lines_inclusive(text).map(bare).enumerate() {
        let t = line.trim_start();
        if !t.is_empty() && !t.starts_with('#') && t != "---" {
            let indent = line[..line.len() - t.len()].chars().count();
            return Position::new(i as u64 + 1, indent as u64 + 1);
        }
    }
    Position::new(1, 1)
}

/// The parser's message, without the location it already carries and with a hint where useful.
fn describe_parse_error(e: &serde_saphyr::Error) -> String {
    let raw = e.without_snippet().to_string();
    let mut message = plain_words(strip_location_suffix(&raw).trim());
    if message.is_empty() {
        message = "invalid YAML".to_owned();
    }
    if message.contains("missing field") && message.contains("apiVersion") {
        message.push_str(
            ": every document needs apiVersion: hemostat.io/v1alpha1 and kind: HealthPolicy",
        );
    }
    message
}

/// Replaces the parser's terse phrases with what a person needs to read.
fn plain_words(message: &str) -> String {
    const PHRASES: [(&str, &str); 9] = [
        (
            "expected sequence start",
            "expected a list (like [a, b] or lines starting with '- ')",
        ),
        (
            "expected mapping start",
            "expected a mapping of key: value pairs",
        ),
        (
            "invalid u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("invalid u64", "expected a whole number of at least 0"),
        ("invalid i32", "expected a whole number"),
        ("invalid floating point", "expected a number"),
        ("invalid boolean", "expected true or false"),
        (
            ", set DuplicateKeyPolicy in Options if acceptable",
            ": each key may appear only once",
        ),
        (
            "tabs disallowed within this context (block indentation)",
            "tabs are not allowed for indentation: indent with spaces",
        ),
    ];
    if let Some(limit) = message.strip_prefix("budget breached: ") {
        return format!(
            "refused: the document exceeds a safety limit of the YAML reader ({limit}); a policy never needs that much nesting, aliasing or size"
        );
    }
    let mut out = message.to_owned();
    for (terse, plain) in PHRASES {
        out = out.replace(terse, plain);
    }
    out
}

fn strip_location_suffix(message: &str) -> &str {
    // The parser appends " at line L column C"; the diagnostic carries the position itself.
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

fn reject_duplicates(report: &mut LoadReport) {
    let mut first: BTreeMap<String, (String, Position)> = BTreeMap::new();
    let mut kept = Vec::new();
    for loaded in std::mem::take(&mut report.policies) {
        let name = loaded.policy.metadata.name.clone();
        if let Some((file, p)) = first.get(&name) {
            report.diagnostics.push(Diagnostic {
                file: loaded.source.clone(),
                line: loaded.name_position.line,
                column: loaded.name_position.column,
                message: format!(
                    "duplicate policy name {name:?}: already defined at {file}:{}:{}; names must be unique across the set",
                    p.line, p.column
                ),
                policy: Some(name),
            });
        } else {
            first.insert(name, (loaded.source.clone(), loaded.name_position));
            kept.push(loaded);
        }
    }
    report.policies = kept;
    report
        .diagnostics
        .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bad_byte_is_located_on_the_lines_the_parser_counts() {
        // Found by the policy_load fuzz target: a lone CR ends a line for the parser, so the
        // position of a non-UTF-8 byte after one was a column past the end of its line.
        let cases: [(&[u8], (u64, u64)); 6] = [
            (&b"\xff"[..], (1, 1)),
            (&b"ab\xff"[..], (1, 3)),
            (&b"a\n\xff"[..], (2, 1)),
            (&b"a\r\xff"[..], (2, 1)),
            (&b"a\r\nb\rc\xe9d"[..], (3, 2)),
            (&b"\xc3\xa9t\xc3\xa9: \xff"[..], (1, 6)),
        ];
        for (bytes, want) in cases {
            let d = decode("f", bytes).unwrap_err();
            assert_eq!((d.line, d.column), want, "{bytes:?}");
        }
    }

    #[test]
    fn the_walk_finds_yaml_sorted_skips_hidden_and_takes_named_files_whatever_their_extension() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/.hidden")).unwrap();
        for file in [
            "b.yaml",
            "a.yml",
            "notes.txt",
            "sub/c.yaml",
            "sub/.hidden/d.yaml",
            ".e.yaml",
        ] {
            std::fs::write(root.join(file), "").unwrap();
        }
        std::fs::write(root.join("named.conf"), "").unwrap();
        let (files, diagnostics) = yaml_files(&[root.to_path_buf(), root.join("named.conf")]);
        let names: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.yml", "b.yaml", "sub/c.yaml", "named.conf"]);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let (files, diagnostics) = yaml_files(&[root.join("missing")]);
        assert!(files.is_empty());
        assert!(
            diagnostics[0].message.starts_with("cannot read"),
            "{diagnostics:?}"
        );
    }
}
