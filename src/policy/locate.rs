//! Maps paths inside a YAML document (`spec.probes.cpu.abovePercent`) to their line and column.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A 1-based line and column in a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

impl Position {
    /// A position from 1-based line and column.
    pub const fn new(line: u64, column: u64) -> Self {
        Self { line, column }
    }
}

/// The location of every key and value of one YAML document, by path.
///
/// Paths join mapping keys with `.` and sequence indexes with `[i]`:
/// `spec.remediation.actions[1]`. The empty path is the document root.
#[derive(Debug, Default)]
pub(crate) struct PathIndex {
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

impl PathIndex {
    /// Indexes a document; `None` when it is not valid YAML (the typed parse reports why).
    pub(crate) fn build(yaml: &str, options: serde_saphyr::Options) -> Option<Self> {
        let root = tree(yaml, options)?;
        let mut index = Self::default();
        index.walk(String::new(), &root);
        Some(index)
    }

    /// Where the value at `path` starts.
    pub(crate) fn value(&self, path: &str) -> Option<Position> {
        self.values.get(path).copied()
    }

    /// Where the key of `path` stands (the start of the line a person reads as "this field").
    pub(crate) fn key(&self, path: &str) -> Option<Position> {
        self.keys.get(path).copied()
    }

    /// The best position for a problem at `path`: the key, else the value, else the nearest
    /// ancestor that exists, else the document start.
    pub(crate) fn best(&self, path: &str) -> Position {
        let mut current = path;
        loop {
            if let Some(p) = self.key(current).or_else(|| self.value(current)) {
                return p;
            }
            match current.rfind(['.', '[']) {
                Some(i) => current = &current[..i],
                None => return self.value("").unwrap_or(Position::new(1, 1)),
            }
        }
    }

    fn walk(&mut self, path: String, node: &Spanned<Node>) {
        self.values.insert(path.clone(), position_of(node));
        match &node.value {
            Node::Scalar => {}
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk(format!("{path}[{i}]"), item);
                }
            }
            Node::Map(entries) => {
                for (key, value) in entries {
                    let child = if path.is_empty() {
                        key.value.clone()
                    } else {
                        format!("{path}.{}", key.value)
                    };
                    self.keys.insert(child.clone(), position_of(key));
                    self.walk(child, value);
                }
            }
        }
    }
}

/// The document's node tree with the position of every key and value; `None` when it is not
/// valid YAML (the typed parse reports why).
pub(crate) fn tree(yaml: &str, mut options: serde_saphyr::Options) -> Option<Spanned<Node>> {
    // Non-finite numbers are kept so that the rule that refuses them can point at them.
    options.non_finite_float_policy = serde_saphyr::options::NonFiniteFloatPolicy::PassThrough;
    serde_saphyr::from_str_with_options(yaml, options).ok()
}

pub(crate) fn position_of<T>(spanned: &Spanned<T>) -> Position {
    Position::new(spanned.referenced.line(), spanned.referenced.column())
}

/// A YAML node with spans on every key and child, and nothing else kept.
pub(crate) enum Node {
    /// Any scalar (its value is not kept).
    Scalar,
    /// A sequence.
    Seq(Vec<Spanned<Node>>),
    /// A mapping, its keys as text, in document order.
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i128<E>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            let key = Spanned {
                value: key.value.0,
                referenced: key.referenced,
                defined: key.defined,
            };
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key as text, whatever scalar type YAML gave it.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyText, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(KeyText("<sequence>".to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyText, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(KeyText("<mapping>".to_owned()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_finds_keys_values_and_sequence_items() {
        let yaml = "a: 1\nspec:\n  probes:\n    cpu: {abovePercent: 120}\n  actions:\n    - restart\n    - reboot\n";
        let index = PathIndex::build(yaml, serde_saphyr::Options::default()).unwrap();
        assert_eq!(index.key("a"), Some(Position::new(1, 1)));
        assert_eq!(
            index.key("spec.probes.cpu.abovePercent"),
            Some(Position::new(4, 11))
        );
        assert_eq!(index.value("spec.actions[1]"), Some(Position::new(7, 7)));
        assert_eq!(index.best("spec.probes.cpu.for"), Position::new(4, 5));
    }
}
