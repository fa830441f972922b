//! The dependency rules of `ARCHITECTURE.md`, checked: every `crate::<module>` a module's
//! production code names must be one it may depend on. Test code (`#[cfg(test)]` modules,
//! the fixtures and the fake engine) may use anything.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A module, and the modules it may name besides itself. `metrics` and `util` are leaves that
/// anything below the composition root may use.
const RULES: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("util", &[]),
    ("policy", &["model"]),
    ("engine", &["model", "util"]),
    ("analyze", &["model", "policy"]),
    // `util` for the open-file budget of the cgroup files it holds open.
    ("observe", &["model", "policy", "engine", "util"]),
    ("store", &["model", "util"]),
    ("bus", &["model"]),
    (
        "respond",
        // `observe` for the acting marks the claim holds (observe/acting.rs).
        &[
            "model", "policy", "engine", "store", "bus", "observe", "metrics",
        ],
    ),
    (
        "http",
        &["model", "policy", "observe", "store", "bus", "metrics"],
    ),
    // Decisions to people: reads envelopes (bus) and the policies' alert settings.
    ("alert", &["model", "policy", "bus"]),
    // `bus` (or `store`) for the bad-values counter the stores report into.
    ("metrics.rs", &["model", "store", "bus"]),
    // `alert` for the Notifier and AlertState traits the Slack, webhook, Alertmanager and
    // Redis silence adapters implement; `analyze` for the `LlmClient` port adapters/llm.rs
    // implements (analyze::llm::client).
    (
        "adapters",
        &[
            "model", "policy", "store", "bus", "util", "alert", "analyze",
        ],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_owned());
        return;
    }
    for entry in std::fs::read_dir(path).unwrap() {
        files(&entry.unwrap().path(), out);
    }
}

/// The production text of a file: everything before its `#[cfg(test)]` module, comments
/// dropped. Test-only files are skipped entirely.
fn production(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    if text.contains("#![cfg(test)]") || path.ends_with("fake.rs") || path.ends_with("fixtures.rs")
    {
        return String::new();
    }
    let body = text.split("#[cfg(test)]\nmod ").next().unwrap_or_default();
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::<name>` in `text`.
fn named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let before = text[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = text[at + 7..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

#[test]
fn every_module_names_only_the_modules_it_may_depend_on() {
    let mut broken = Vec::new();
    for (module, allowed) in RULES {
        let mut list = Vec::new();
        files(&src().join(module), &mut list);
        assert!(!list.is_empty(), "no files for {module}");
        let own = module.trim_end_matches(".rs");
        for file in list {
            for name in named(&production(&file)) {
                if name != own && !allowed.contains(&name.as_str()) {
                    broken.push(format!(
                        "{} names crate::{name}, which {own} may not depend on",
                        file.strip_prefix(src()).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn the_checker_sees_a_forbidden_import() {
    let text =
        "use crate::model::x;\nfn f() { crate::controller::run(); }\n// crate::http in a comment\n";
    let production: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        named(&production),
        BTreeSet::from(["model".to_owned(), "controller".to_owned()])
    );
}
