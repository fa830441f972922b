//! Finds every unknown field of a HealthPolicy document at once (the typed parse stops at the
//! first), walking the YAML tree against the JSON Schema, each with the closest valid name.

use std::sync::OnceLock;

use serde_json::Value;
use serde_saphyr::Spanned;

use super::locate::{Node, Position, position_of, tree};
use super::types::HealthPolicy;

/// A field the schema does not know where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UnknownField {
    /// Where its key stands, relative to the document's text.
    pub position: Position,
    /// The key as written.
    pub name: String,
    /// The closest valid name, when one is close enough to be a likely typo.
    pub suggestion: Option<String>,
    /// What is wrong and what would be right.
    pub message: String,
}

/// The most alias-replayed YAML events the walk reads.
const MAX_REPLAYED_EVENTS: usize = 10_000;

/// The schema every document is checked against, as JSON (built once).
fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::to_value(schemars::schema_for!(HealthPolicy)).expect("a schema is JSON")
    })
}

/// Every unknown field of one document, in document order; empty when there is none or when
/// the text is not valid YAML (the typed parse reports why).
pub(crate) fn unknown_fields(yaml: &str, mut options: serde_saphyr::Options) -> Vec<UnknownField> {
    // The typed parse stopped at the first unknown field, before expanding any alias bomb
    // further down; this walk reads everything, so it stops early on one (a policy never
    // needs this many replayed events) and leaves the report to the typed parse.
    options.alias_limits.max_total_replayed_events = MAX_REPLAYED_EVENTS;
    let Some(root) = tree(yaml, options) else {
        return Vec::new();
    };
    let schema = schema();
    let mut out = Vec::new();
    walk(schema, schema, &root, "", &mut out);
    out
}

/// Follows `$ref`s (a bounded number: the schema is ours, but a loop must not hang).
fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(pointer) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        else {
            return schema;
        };
        schema = root.pointer(pointer).unwrap_or(&Value::Null);
    }
    schema
}

/// The alternatives a value may take (`anyOf` / `oneOf` / `allOf` flattened, refs resolved).
fn alternatives<'a>(root: &'a Value, schema: &'a Value, out: &mut Vec<&'a Value>) {
    let schema = resolve(root, schema);
    let mut nested = false;
    for key in ["anyOf", "oneOf", "allOf"] {
        for alt in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            nested = true;
            alternatives(root, alt, out);
        }
    }
    if !nested {
        out.push(schema);
    }
}

fn walk(
    root: &Value,
    schema: &Value,
    node: &Spanned<Node>,
    path: &str,
    out: &mut Vec<UnknownField>,
) {
    let mut alts = Vec::new();
    alternatives(root, schema, &mut alts);
    match &node.value {
        Node::Scalar => {}
        Node::Seq(items) => {
            if let Some(item_schema) = alts.iter().find_map(|a| a.get("items")) {
                for (i, item) in items.iter().enumerate() {
                    walk(root, item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Node::Map(entries) => {
            let objects: Vec<&Value> = alts
                .into_iter()
                .filter(|a| {
                    a.get("type").and_then(Value::as_str) == Some("object")
                        || a.get("properties").is_some()
                })
                .collect();
            if objects.is_empty() {
                // A mapping where a scalar or list belongs: the typed parse says so.
                return;
            }
            for (key, value) in entries {
                let child = if path.is_empty() {
                    key.value.clone()
                } else {
                    format!("{path}.{}", key.value)
                };
                let property = objects
                    .iter()
                    .find_map(|o| o.get("properties").and_then(|p| p.get(&key.value)));
                let extra = objects
                    .iter()
                    .find_map(|o| match o.get("additionalProperties") {
                        None | Some(Value::Bool(true)) => Some(&Value::Bool(true)),
                        Some(Value::Bool(false)) => None,
                        Some(schema) => Some(schema),
                    });
                match (property, extra) {
                    (Some(schema), _) => walk(root, schema, value, &child, out),
                    (None, Some(schema)) => walk(root, schema, value, &child, out),
                    (None, None) => out.push(unknown(key, path, &objects)),
                }
            }
        }
    }
}

fn unknown(key: &Spanned<String>, parent: &str, objects: &[&Value]) -> UnknownField {
    let mut known: Vec<&str> = objects
        .iter()
        .filter_map(|o| o.get("properties").and_then(Value::as_object))
        .flat_map(|p| p.keys().map(String::as_str))
        .collect();
    known.sort_unstable();
    known.dedup();
    let name = key.value.as_str();
    let suggestion = closest(name, &known).map(str::to_owned);
    let place = if parent.is_empty() {
        String::new()
    } else {
        format!(" in {parent}")
    };
    let message = match (&suggestion, known.is_empty()) {
        (Some(s), _) => format!(
            "unknown field `{name}`{place}: did you mean `{s}`? (expected one of {})",
            known.join(", ")
        ),
        (None, true) => format!("unknown field `{name}`{place}, which takes no fields: write {{}}"),
        (None, false) => format!(
            "unknown field `{name}`{place}, expected one of {}",
            known.join(", ")
        ),
    };
    UnknownField {
        position: position_of(key),
        name: name.to_owned(),
        suggestion,
        message,
    }
}

/// The valid name `name` most likely meant: the nearest by edit distance (ignoring case, `_` and
/// `-`, so `match_labels` finds `matchLabels`) when it is within a third of the name's length
/// (at least 2 edits), or a valid name it is the start of (`webhookUrl` for `webhookUrlFrom`).
pub(crate) fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = fold(name);
    if wanted.is_empty() {
        return None;
    }
    let limit = (wanted.chars().count() / 3).max(2);
    let nearest = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&wanted, &fold(k)), *k))
        .min_by_key(|(d, _)| *d)
        .filter(|(d, _)| *d <= limit)
        .map(|(_, k)| k);
    nearest.or_else(|| {
        (wanted.chars().count() >= 4)
            .then(|| known.iter().find(|k| fold(k).starts_with(&wanted)).copied())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: p\n";

    /// Line, column, name and suggestion of one unknown field.
    type Found = (u64, u64, String, Option<String>);

    fn found(body: &str) -> Vec<Found> {
        unknown_fields(&format!("{HEAD}{body}"), serde_saphyr::Options::default())
            .into_iter()
            .map(|u| (u.position.line, u.position.column, u.name, u.suggestion))
            .collect()
    }

    fn f(line: u64, col: u64, name: &str, s: Option<&str>) -> Found {
        (line, col, name.to_owned(), s.map(str::to_owned))
    }

    #[test]
    fn every_unknown_field_is_found_with_its_position_and_the_closest_valid_name() {
        let cases: Vec<(&str, &str, Vec<Found>)> = vec![
            (
                "a valid document has none",
                "spec:\n  selector: {matchLabels: {app: web}}\n  probes: {exit: {}}\n",
                vec![],
            ),
            (
                "a typo in the selector, one in a probe and one at the top, all at once",
                "spec:\n  selector:\n    matchLabel: {app: web}\n  probes:\n    cpu: {abovePercnt: 90, sustained: 2m}\nextra: 1\n",
                vec![
                    f(7, 5, "matchLabel", Some("matchLabels")),
                    f(9, 11, "abovePercnt", Some("abovePercent")),
                    f(9, 28, "sustained", None),
                    f(10, 1, "extra", None),
                ],
            ),
            (
                "snake_case for camelCase",
                "spec:\n  selector: {match_labels: {app: web}}\n  probes: {exit: {}}\n",
                vec![f(6, 14, "match_labels", Some("matchLabels"))],
            ),
            (
                "label keys and values are free-form, never unknown",
                "metadataX: 1\nspec:\n  selector: {matchLabels: {matchLabel: web, anything.goes/x: y}}\n  probes: {exit: {}}\n",
                vec![f(5, 1, "metadataX", Some("metadata"))],
            ),
            (
                "inside a list item and a channel variant",
                "spec:\n  selector: {matchAll: true}\n  probes: {exit: {}}\n  alerts:\n    channels:\n      - slack: {webhookUrl: x}\n      - slak: {}\n",
                vec![
                    f(10, 17, "webhookUrl", Some("webhookUrlFrom")),
                    f(11, 9, "slak", Some("slack")),
                ],
            ),
            (
                "a secret reference variant",
                "spec:\n  selector: {matchAll: true}\n  probes: {exit: {}}\n  alerts:\n    channels:\n      - webhook: {urlFrom: {envv: URL}}\n",
                vec![f(10, 29, "envv", Some("env"))],
            ),
            (
                "a probe that takes no fields",
                "spec:\n  selector: {matchAll: true}\n  probes: {oomKilled: {after: 1s}}\n",
                vec![f(7, 24, "after", None)],
            ),
            (
                "nothing close: no suggestion",
                "spec:\n  selector: {matchAll: true}\n  replicas: 3\n  probes: {exit: {}}\n",
                vec![f(7, 3, "replicas", None)],
            ),
        ];
        for (what, body, want) in cases {
            assert_eq!(found(body), want, "{what}");
        }
    }

    #[test]
    fn the_message_names_the_field_where_it_is_and_what_was_meant() {
        let u = unknown_fields(
            &format!("{HEAD}spec:\n  selector: {{matchLabel: {{app: web}}}}\n"),
            serde_saphyr::Options::default(),
        );
        assert_eq!(
            u[0].message,
            "unknown field `matchLabel` in spec.selector: did you mean `matchLabels`? (expected one of matchAll, matchImages, matchLabels, matchNames)"
        );
        let u = unknown_fields(
            &format!("{HEAD}extra: 1\n"),
            serde_saphyr::Options::default(),
        );
        assert_eq!(
            u[0].message,
            "unknown field `extra`, expected one of apiVersion, kind, metadata, spec, status"
        );
    }

    #[test]
    fn the_closest_name_is_a_likely_typo_or_nothing() {
        let known = ["matchAll", "matchImages", "matchLabels", "matchNames"];
        let cases = [
            ("matchLabel", Some("matchLabels")),
            ("MatchLabels", Some("matchLabels")),
            ("match-names", Some("matchNames")),
            ("matchImage", Some("matchImages")),
            ("matchALL", Some("matchAll")),
            ("labels", None),
            ("x", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(closest(name, &known), want, "{name}");
        }
    }

    #[test]
    fn an_alias_bomb_is_not_expanded() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
        for (name, prev) in [("b", "a"), ("c", "b"), ("d", "c"), ("e", "d"), ("f", "e")] {
            bomb.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 9].join(", ")
            ));
        }
        let started = std::time::Instant::now();
        assert!(unknown_fields(&bomb, serde_saphyr::Options::default()).is_empty());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn text_that_is_not_yaml_has_no_unknown_field_to_report() {
        assert!(unknown_fields("a: [", serde_saphyr::Options::default()).is_empty());
    }
}
