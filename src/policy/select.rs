//! Which policy governs a container: selectors, globs, priority, protection and explicit binding.

use std::collections::BTreeMap;

use super::builtin::{POLICY_LABEL, PROTECTED_LABEL};
use super::types::{HealthPolicy, Selector};

/// What the selector needs to know of a container.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    /// Container name, without the leading `/`.
    pub name: &'a str,
    /// Image reference.
    pub image: &'a str,
    /// Container labels.
    pub labels: &'a BTreeMap<String, String>,
}

impl<'a> From<&'a crate::model::container::ContainerInfo> for Target<'a> {
    fn from(info: &'a crate::model::container::ContainerInfo) -> Self {
        Target {
            name: &info.name,
            image: &info.image,
            labels: &info.labels,
        }
    }
}

/// The operator's `--label-filter`: `key` or `key=value`; containers without it are not observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LabelFilter {
    key: String,
    value: String,
}

impl LabelFilter {
    /// Parses `key` or `key=value`.
    pub(crate) fn parse(filter: &str) -> Self {
        let (key, value) = filter.split_once('=').unwrap_or((filter, ""));
        Self {
            key: key.to_owned(),
            value: value.to_owned(),
        }
    }

    /// True when `labels` carry the key (with the value, when one is given).
    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        labels
            .get(&self.key)
            .is_some_and(|v| self.value.is_empty() || *v == self.value)
    }
}

/// True when every term the selector gives matches.
pub(crate) fn selector_matches(selector: &Selector, target: Target<'_>) -> bool {
    if selector.match_all {
        return true;
    }
    let has_terms = !selector.match_labels.is_empty()
        || !selector.match_names.is_empty()
        || !selector.match_images.is_empty();
    has_terms
        && selector
            .match_labels
            .iter()
            .all(|(k, v)| target.labels.get(k) == Some(v))
        && (selector.match_names.is_empty()
            || selector
                .match_names
                .iter()
                .any(|g| glob_matches(g, target.name)))
        && (selector.match_images.is_empty()
            || selector
                .match_images
                .iter()
                .any(|g| glob_matches(g, target.image)))
}

/// True when the container carries `io.hemostat.protected=true`.
pub(crate) fn is_protected(labels: &BTreeMap<String, String>) -> bool {
    labels
        .get(PROTECTED_LABEL)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The policy that governs `target`: the one named by `io.hemostat.policy` if the container
/// carries it (and nothing else, even if that policy does not exist), else the matching policy
/// with the highest priority, ties broken by name. Protection is checked by the responder, not
/// here, so that protected containers are still observed and reported.
pub(crate) fn governing_policy<'p, I>(policies: I, target: Target<'_>) -> Option<&'p HealthPolicy>
where
    I: IntoIterator<Item = &'p HealthPolicy>,
{
    if let Some(bound) = target.labels.get(POLICY_LABEL) {
        return policies.into_iter().find(|p| &p.metadata.name == bound);
    }
    policies
        .into_iter()
        .filter(|p| selector_matches(&p.spec.selector, target))
        .min_by(|a, b| {
            b.spec
                .priority
                .cmp(&a.spec.priority)
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
}

/// Glob match with `*` (any run) and `?` (one character), on characters.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin::default_policy;

    #[test]
    fn globs_match_like_a_shell() {
        let cases = [
            ("web-*", "web-1", true),
            ("web-*", "web-", true),
            ("web-*", "api-1", false),
            ("*-sidecar", "log-sidecar", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*", "", true),
            (
                "registry.example.com/batch/*",
                "registry.example.com/batch/job:1",
                true,
            ),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*a*b*", "xxaxxbxx", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob_matches(pattern, text), expected, "{pattern} ~ {text}");
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn policy(name: &str, priority: i32, selector: Selector) -> HealthPolicy {
        let mut p = default_policy();
        p.metadata.name = name.into();
        p.spec.priority = priority;
        p.spec.selector = selector;
        p
    }

    #[test]
    fn all_given_terms_must_match() {
        let selector = Selector {
            match_labels: labels(&[("app", "web")]),
            match_names: vec!["web-*".into()],
            ..Selector::default()
        };
        let l = labels(&[("app", "web")]);
        let t = |name| Target {
            name,
            image: "img",
            labels: &l,
        };
        assert!(selector_matches(&selector, t("web-1")));
        assert!(!selector_matches(&selector, t("api-1")));
        let other = labels(&[("app", "api")]);
        assert!(!selector_matches(
            &selector,
            Target {
                name: "web-1",
                image: "img",
                labels: &other
            }
        ));
        assert!(
            !selector_matches(&Selector::default(), t("web-1")),
            "an empty selector matches nothing"
        );
    }

    #[test]
    fn highest_priority_wins_and_ties_go_by_name() {
        let all = Selector {
            match_all: true,
            ..Selector::default()
        };
        let policies = [
            policy("zeta", 5, all.clone()),
            policy("alpha", 5, all.clone()),
            policy("low", 1, all),
        ];
        let l = labels(&[]);
        let t = Target {
            name: "x",
            image: "i",
            labels: &l,
        };
        assert_eq!(
            governing_policy(&policies, t).unwrap().metadata.name,
            "alpha"
        );
    }

    #[test]
    fn an_explicit_binding_beats_priority_and_an_unknown_binding_selects_nothing() {
        let all = Selector {
            match_all: true,
            ..Selector::default()
        };
        let policies = [
            policy("high", 100, all.clone()),
            policy("chosen", -5, Selector::default()),
        ];
        let bound = labels(&[(POLICY_LABEL, "chosen")]);
        let t = Target {
            name: "x",
            image: "i",
            labels: &bound,
        };
        assert_eq!(
            governing_policy(&policies, t).unwrap().metadata.name,
            "chosen"
        );
        let missing = labels(&[(POLICY_LABEL, "nope")]);
        assert!(
            governing_policy(
                &policies,
                Target {
                    name: "x",
                    image: "i",
                    labels: &missing
                }
            )
            .is_none()
        );
    }

    #[test]
    fn protection_is_read_from_the_label() {
        assert!(is_protected(&labels(&[(PROTECTED_LABEL, "true")])));
        assert!(is_protected(&labels(&[(PROTECTED_LABEL, "TRUE")])));
        assert!(!is_protected(&labels(&[(PROTECTED_LABEL, "false")])));
        assert!(!is_protected(&labels(&[])));
    }
}
