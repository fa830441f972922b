//! Last good wins per document: merges a fresh scan of policy files into the set in force.
//!
//! A valid document replaces its policy. An invalid one keeps the last good version of the
//! policy it held: found by `metadata.name` when that can still be read, else by its place
//! (same file, same document index); a file that cannot be read at all keeps every policy it
//! held. A policy no document speaks for any more (file or document deleted) is removed.
//! Every problem is returned once, on the scan that first finds it.

use std::collections::{BTreeMap, BTreeSet};

use crate::policy::HealthPolicy;
use crate::policy::load::{Diagnostic, LoadedPolicy};
use crate::policy::registry::Provenance;

/// Where a document sits: its file and its index among that file's documents.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Place {
    /// The file, as named in diagnostics.
    pub file: String,
    /// 0-based index among the file's non-blank documents.
    pub index: usize,
}

/// What one document of a scan holds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Document {
    /// A valid policy (boxed: a policy is large beside a problem list).
    Valid(Box<LoadedPolicy>),
    /// An invalid document.
    Invalid {
        /// Its policy's name, when it could be read.
        name: Option<String>,
        /// Every problem, with `file:line:col`.
        diagnostics: Vec<Diagnostic>,
    },
}

/// One file of a scan.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FileScan {
    /// Its documents, in order.
    Read(Vec<Document>),
    /// The file as a whole could not be read (too large, not UTF-8, no document...).
    Unreadable(Diagnostic),
}

/// Every policy file found, in load order.
pub(crate) type Scan = Vec<(String, FileScan)>;

/// A policy in force and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct InForce {
    /// The version enforced.
    pub policy: HealthPolicy,
    /// The document that speaks for it now.
    pub place: Place,
    /// `file:line:col` of the document the enforced version was read from.
    pub source: String,
    /// The problems of its document's current text: when any, `policy` is the last good one.
    pub problems: Vec<Diagnostic>,
}

/// What the file source holds between scans.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LastGood {
    /// The policies in force, by name.
    pub in_force: BTreeMap<String, InForce>,
    /// Every problem of the last scan (`file:line:col: error: message`), so an unchanged one is
    /// reported once.
    pub reported: BTreeSet<String>,
}

/// How the set in force changed for one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A new policy.
    Added(String),
    /// A new valid version replaced the one in force.
    Updated(String),
    /// Its document became invalid: the last good version stays in force.
    KeptLastGood(String),
    /// Its document is valid again.
    Fixed(String),
    /// No document defines it any more.
    Removed(String),
}

/// The outcome of [`merge`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Merged {
    /// The new state.
    pub next: LastGood,
    /// Problems not reported before: log each once.
    pub new_problems: Vec<Diagnostic>,
    /// What changed, by policy name.
    pub changes: Vec<Change>,
}

impl LastGood {
    /// The policies in force, by name.
    pub(crate) fn policies(&self) -> Vec<HealthPolicy> {
        self.in_force.values().map(|p| p.policy.clone()).collect()
    }

    /// Where each policy in force comes from, for the registry and the API.
    pub(crate) fn provenance(&self) -> BTreeMap<String, Provenance> {
        self.in_force
            .iter()
            .map(|(name, p)| {
                let provenance = Provenance {
                    source: p.source.clone(),
                    policy: p.policy.clone(),
                    problems: p.problems.iter().map(ToString::to_string).collect(),
                };
                (name.clone(), provenance)
            })
            .collect()
    }

    /// How many policies are enforced from a last good version.
    pub(crate) fn stale(&self) -> usize {
        self.in_force
            .values()
            .filter(|p| !p.problems.is_empty())
            .count()
    }
}

/// Merges `scan` into `prev` (see the module doc).
pub(crate) fn merge(prev: &LastGood, scan: &Scan) -> Merged {
    let Sorted {
        mut next,
        problems,
        named,
        anonymous,
        unreadable,
    } = sort(scan);
    keep_last_good(prev, &mut next, named, anonymous, unreadable);
    let changes = changes(&prev.in_force, &next);
    let reported: BTreeSet<String> = problems.iter().map(ToString::to_string).collect();
    Merged {
        next: LastGood {
            in_force: next,
            reported,
        },
        new_problems: unreported(prev, problems),
        changes,
    }
}

/// A scan sorted by what its documents hold: the first pass of [`merge`].
#[derive(Default)]
struct Sorted<'a> {
    /// The valid documents' policies, by name (the first definition of a name wins).
    next: BTreeMap<String, InForce>,
    /// Every problem, in scan order.
    problems: Vec<Diagnostic>,
    /// Invalid documents whose policy name could be read.
    named: Vec<(&'a str, Place, &'a [Diagnostic])>,
    /// Invalid documents without a readable name.
    anonymous: Vec<(Place, &'a [Diagnostic])>,
    /// Files that could not be read at all.
    unreadable: Vec<(&'a str, &'a Diagnostic)>,
}

/// Sorts every document of `scan`, valid ones put in force.
fn sort(scan: &Scan) -> Sorted<'_> {
    let mut sorted = Sorted::default();
    for (file, content) in scan {
        let docs = match content {
            FileScan::Unreadable(d) => {
                sorted.problems.push(d.clone());
                sorted.unreadable.push((file.as_str(), d));
                continue;
            }
            FileScan::Read(docs) => docs,
        };
        for (index, doc) in docs.iter().enumerate() {
            let place = Place {
                file: file.clone(),
                index,
            };
            sorted.add(place, doc);
        }
    }
    sorted
}

impl<'a> Sorted<'a> {
    /// Sorts the document at `place`.
    fn add(&mut self, place: Place, doc: &'a Document) {
        match doc {
            Document::Valid(loaded) => {
                if let Some(d) = take_valid(&mut self.next, loaded, place) {
                    self.problems.push(d);
                }
            }
            Document::Invalid { name, diagnostics } => {
                self.problems.extend(diagnostics.iter().cloned());
                match name {
                    Some(name) => self.named.push((name.as_str(), place, diagnostics)),
                    None => self.anonymous.push((place, diagnostics)),
                }
            }
        }
    }
}

/// Keeps in `next` the last good version of each policy whose document is invalid (found by
/// name, else by place) or whose file is unreadable, unless another document claims its name.
fn keep_last_good(
    prev: &LastGood,
    next: &mut BTreeMap<String, InForce>,
    named: Vec<(&str, Place, &[Diagnostic])>,
    anonymous: Vec<(Place, &[Diagnostic])>,
    unreadable: Vec<(&str, &Diagnostic)>,
) {
    // Names some document of this scan speaks for: no other document may keep them.
    let claimed: BTreeSet<String> = next
        .keys()
        .cloned()
        .chain(named.iter().map(|(n, _, _)| (*n).to_owned()))
        .collect();
    for (name, place, diagnostics) in named {
        if let (false, Some(old)) = (next.contains_key(name), prev.in_force.get(name)) {
            next.insert(name.to_owned(), kept(old, place, diagnostics.to_vec()));
        }
    }
    for (place, diagnostics) in anonymous {
        let held = prev
            .in_force
            .iter()
            .find(|(n, old)| old.place == place && !claimed.contains(*n) && !next.contains_key(*n));
        if let Some((name, old)) = held {
            next.insert(name.clone(), kept(old, place, diagnostics.to_vec()));
        }
    }
    for (file, d) in unreadable {
        let held: Vec<(&String, &InForce)> = prev
            .in_force
            .iter()
            .filter(|(n, old)| old.place.file == file && !claimed.contains(*n))
            .collect();
        for (name, old) in held {
            next.insert(name.clone(), kept(old, old.place.clone(), vec![d.clone()]));
        }
    }
}

/// The problems `prev` did not report, each once.
fn unreported(prev: &LastGood, problems: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut seen = BTreeSet::new();
    problems
        .into_iter()
        .filter(|d| {
            let key = d.to_string();
            !prev.reported.contains(&key) && seen.insert(key)
        })
        .collect()
}

/// Puts a valid document in force, or returns the duplicate-name problem when an earlier
/// document of the scan already defines its name (the first definition wins).
fn take_valid(
    next: &mut BTreeMap<String, InForce>,
    loaded: &LoadedPolicy,
    place: Place,
) -> Option<Diagnostic> {
    let name = loaded.policy.metadata.name.clone();
    if let Some(first) = next.get(&name) {
        return Some(Diagnostic {
            file: loaded.source.clone(),
            line: loaded.name_position.line,
            column: loaded.name_position.column,
            message: format!(
                "duplicate policy name {name:?}: already defined at {}; names must be unique across the set",
                first.source
            ),
            policy: Some(name),
        });
    }
    let source = format!(
        "{}:{}:{}",
        loaded.source, loaded.position.line, loaded.position.column
    );
    next.insert(
        name,
        InForce {
            policy: loaded.policy.clone(),
            place,
            source,
            problems: Vec::new(),
        },
    );
    None
}

fn kept(old: &InForce, place: Place, problems: Vec<Diagnostic>) -> InForce {
    InForce {
        policy: old.policy.clone(),
        place,
        source: old.source.clone(),
        problems,
    }
}

fn changes(prev: &BTreeMap<String, InForce>, next: &BTreeMap<String, InForce>) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, now) in next {
        let Some(before) = prev.get(name) else {
            out.push(Change::Added(name.clone()));
            continue;
        };
        if before.policy != now.policy {
            out.push(Change::Updated(name.clone()));
        }
        match (before.problems.is_empty(), now.problems.is_empty()) {
            (true, false) => out.push(Change::KeptLastGood(name.clone())),
            (false, true) => out.push(Change::Fixed(name.clone())),
            _ => {}
        }
    }
    for name in prev.keys().filter(|n| !next.contains_key(*n)) {
        out.push(Change::Removed(name.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ranked as policy;
    use crate::policy::locate::Position;

    fn valid(file: &str, line: u64, name: &str, priority: i32) -> Document {
        Document::Valid(Box::new(LoadedPolicy {
            policy: policy(name, priority),
            source: file.to_owned(),
            position: Position::new(line, 1),
            name_position: Position::new(line + 3, 9),
        }))
    }

    fn problem(file: &str, line: u64, name: Option<&str>) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            line,
            column: 7,
            message: "unknown field `probs`".to_owned(),
            policy: name.map(str::to_owned),
        }
    }

    fn invalid(file: &str, line: u64, name: Option<&str>) -> Document {
        Document::Invalid {
            name: name.map(str::to_owned),
            diagnostics: vec![problem(file, line, name)],
        }
    }

    fn read(file: &str, docs: Vec<Document>) -> (String, FileScan) {
        (file.to_owned(), FileScan::Read(docs))
    }

    /// Enforced priority of each policy in force, and whether it is a last good version.
    fn enforced(state: &LastGood) -> Vec<(String, i32, bool)> {
        state
            .in_force
            .iter()
            .map(|(n, p)| (n.clone(), p.policy.spec.priority, !p.problems.is_empty()))
            .collect()
    }

    fn row(name: &str, priority: i32, stale: bool) -> (String, i32, bool) {
        (name.to_owned(), priority, stale)
    }

    fn start() -> LastGood {
        merge(
            &LastGood::default(),
            &vec![read(
                "a.yaml",
                vec![valid("a.yaml", 1, "web", 1), valid("a.yaml", 20, "db", 1)],
            )],
        )
        .next
    }

    #[test]
    fn each_document_keeps_its_last_good_version_on_its_own() {
        use Change::*;
        let unreadable = |file: &str| {
            (
                file.to_owned(),
                FileScan::Unreadable(problem(file, 1, None)),
            )
        };
        // (what happened, the scan, what is enforced after, the changes)
        type Case = (&'static str, Scan, Vec<(String, i32, bool)>, Vec<Change>);
        let cases: Vec<Case> = vec![
            (
                "nothing changed",
                vec![read(
                    "a.yaml",
                    vec![valid("a.yaml", 1, "web", 1), valid("a.yaml", 20, "db", 1)],
                )],
                vec![row("db", 1, false), row("web", 1, false)],
                vec![],
            ),
            (
                "one document edited",
                vec![read(
                    "a.yaml",
                    vec![valid("a.yaml", 1, "web", 5), valid("a.yaml", 20, "db", 1)],
                )],
                vec![row("db", 1, false), row("web", 5, false)],
                vec![Updated("web".into())],
            ),
            (
                "a broken edit whose name is readable keeps that policy only",
                vec![read(
                    "a.yaml",
                    vec![
                        invalid("a.yaml", 4, Some("web")),
                        valid("a.yaml", 20, "db", 9),
                    ],
                )],
                vec![row("db", 9, false), row("web", 1, true)],
                vec![Updated("db".into()), KeptLastGood("web".into())],
            ),
            (
                "a syntax error keeps the policy that held the same place",
                vec![read(
                    "a.yaml",
                    vec![valid("a.yaml", 1, "web", 1), invalid("a.yaml", 22, None)],
                )],
                vec![row("db", 1, true), row("web", 1, false)],
                vec![KeptLastGood("db".into())],
            ),
            (
                "a document deleted from its file",
                vec![read("a.yaml", vec![valid("a.yaml", 1, "web", 1)])],
                vec![row("web", 1, false)],
                vec![Removed("db".into())],
            ),
            (
                "the file deleted",
                vec![],
                vec![],
                vec![Removed("db".into()), Removed("web".into())],
            ),
            (
                "the file unreadable keeps all it held",
                vec![unreadable("a.yaml")],
                vec![row("db", 1, true), row("web", 1, true)],
                vec![KeptLastGood("db".into()), KeptLastGood("web".into())],
            ),
            (
                "a policy moved to another file",
                vec![
                    read("a.yaml", vec![valid("a.yaml", 1, "web", 1)]),
                    read("b.yaml", vec![valid("b.yaml", 1, "db", 2)]),
                ],
                vec![row("db", 2, false), row("web", 1, false)],
                vec![Updated("db".into())],
            ),
            (
                "a new broken policy is not enforced",
                vec![
                    read(
                        "a.yaml",
                        vec![valid("a.yaml", 1, "web", 1), valid("a.yaml", 20, "db", 1)],
                    ),
                    read("b.yaml", vec![invalid("b.yaml", 3, Some("new"))]),
                ],
                vec![row("db", 1, false), row("web", 1, false)],
                vec![],
            ),
            (
                "a duplicate name: the first definition wins",
                vec![
                    read(
                        "a.yaml",
                        vec![valid("a.yaml", 1, "web", 1), valid("a.yaml", 20, "db", 1)],
                    ),
                    read("b.yaml", vec![valid("b.yaml", 1, "web", 7)]),
                ],
                vec![row("db", 1, false), row("web", 1, false)],
                vec![],
            ),
            (
                "a syntax error does not keep a name another document now claims",
                vec![
                    read(
                        "a.yaml",
                        vec![valid("a.yaml", 1, "web", 1), invalid("a.yaml", 22, None)],
                    ),
                    read("b.yaml", vec![invalid("b.yaml", 3, Some("db"))]),
                ],
                vec![row("db", 1, true), row("web", 1, false)],
                vec![KeptLastGood("db".into())],
            ),
        ];
        let prev = start();
        for (what, scan, want, want_changes) in cases {
            let merged = merge(&prev, &scan);
            assert_eq!(enforced(&merged.next), want, "{what}");
            assert_eq!(merged.changes, want_changes, "{what}");
        }
    }

    #[test]
    fn a_broken_edit_is_reported_once_and_a_fix_is_noticed() {
        let broken = vec![read(
            "a.yaml",
            vec![
                invalid("a.yaml", 4, Some("web")),
                valid("a.yaml", 20, "db", 1),
            ],
        )];
        let first = merge(&start(), &broken);
        assert_eq!(
            first
                .new_problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["a.yaml:4:7: error: unknown field `probs`"]
        );
        let again = merge(&first.next, &broken);
        assert!(again.new_problems.is_empty(), "{:?}", again.new_problems);
        assert!(again.changes.is_empty());
        assert_eq!(again.next.stale(), 1);
        assert_eq!(
            again.next.provenance()["web"],
            Provenance {
                source: "a.yaml:1:1".into(),
                policy: policy("web", 1),
                problems: vec!["a.yaml:4:7: error: unknown field `probs`".into()],
            }
        );
        let fixed = merge(
            &again.next,
            &vec![read(
                "a.yaml",
                vec![valid("a.yaml", 1, "web", 3), valid("a.yaml", 20, "db", 1)],
            )],
        );
        assert_eq!(
            fixed.changes,
            [Change::Updated("web".into()), Change::Fixed("web".into())]
        );
        assert_eq!(fixed.next.stale(), 0);
        // Broken the same way again after the fix: reported again.
        assert_eq!(merge(&fixed.next, &broken).new_problems.len(), 1);
    }

    #[test]
    fn a_duplicate_is_reported_at_its_name() {
        let merged = merge(
            &LastGood::default(),
            &vec![
                read("a.yaml", vec![valid("a.yaml", 1, "web", 1)]),
                read("b.yaml", vec![valid("b.yaml", 10, "web", 2)]),
            ],
        );
        assert_eq!(
            merged.new_problems[0].to_string(),
            "b.yaml:13:9: error: duplicate policy name \"web\": already defined at a.yaml:1:1; names must be unique across the set"
        );
        assert_eq!(merged.next.policies()[0].spec.priority, 1);
    }
}
