//! Pure: silences mute notifications (never repairs) for containers or policies, for a while.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Alert, AlertKind};
use crate::policy::select::glob_matches;

/// One silence: every given matcher must match; at least a container glob or a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Its id (what `silence expire` takes).
    pub id: String,
    /// Glob (`*`, `?`) on the container name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The governing policy's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The node; any node when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// From when.
    pub starts_at: DateTime<Utc>,
    /// Until when (expiring sets it to now).
    pub ends_at: DateTime<Utc>,
    /// Why, for the people who will wonder.
    pub comment: String,
    /// Who.
    pub created_by: String,
}

/// Why a silence cannot be made.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    /// Neither a container nor a policy was given.
    #[error("a silence needs --container GLOB or --policy NAME (it would silence everything)")]
    NoMatcher,
    /// A zero or negative duration.
    #[error("--for must be longer than 0s (e.g. --for 2h)")]
    NoDuration,
    /// No comment.
    #[error("--comment is required: say why, for the people who will wonder")]
    NoComment,
}

impl Silence {
    /// A new silence from `now` for `duration`.
    pub fn new(
        container: Option<String>,
        policy: Option<String>,
        node: Option<String>,
        duration: std::time::Duration,
        comment: String,
        created_by: String,
        now: DateTime<Utc>,
    ) -> Result<Self, SilenceError> {
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|v| v.trim().is_empty());
        if blank(&container) && blank(&policy) {
            return Err(SilenceError::NoMatcher);
        }
        if duration.is_zero() {
            return Err(SilenceError::NoDuration);
        }
        if comment.trim().is_empty() {
            return Err(SilenceError::NoComment);
        }
        let ends_at = now + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
        Ok(Self {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            container: container.filter(|s| !s.trim().is_empty()),
            policy: policy.filter(|s| !s.trim().is_empty()),
            node: node.filter(|s| !s.trim().is_empty()),
            starts_at: now,
            ends_at,
            comment,
            created_by,
        })
    }

    /// In force at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// True when it is in force and every given matcher matches the alert. Test notifications
    /// are never silenced.
    pub(crate) fn matches(&self, alert: &Alert, now: DateTime<Utc>) -> bool {
        alert.kind != AlertKind::Test
            && self.matches_target(&alert.node, &alert.container, &alert.policy, now)
    }

    /// True when it is in force and matches this container (on `node`, governed by `policy`).
    pub(crate) fn matches_target(
        &self,
        node: &str,
        container: &str,
        policy: &str,
        now: DateTime<Utc>,
    ) -> bool {
        self.is_active(now)
            && self
                .container
                .as_deref()
                .is_none_or(|g| glob_matches(g, container))
            && self.policy.as_deref().is_none_or(|p| p == policy)
            && self.node.as_deref().is_none_or(|n| n == node)
    }
}

/// The first silence that mutes `alert` at `now`.
pub(crate) fn silenced_by<'a>(
    silences: &'a [Silence],
    alert: &Alert,
    now: DateTime<Utc>,
) -> Option<&'a Silence> {
    silences.iter().find(|s| s.matches(alert, now))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn alert(container: &str, policy: &str, node: &str) -> Alert {
        let mut a = Alert::test(node);
        a.kind = AlertKind::Outcome;
        a.container = container.into();
        a.policy = policy.into();
        a
    }

    fn silence(container: Option<&str>, policy: Option<&str>, node: Option<&str>) -> Silence {
        Silence::new(
            container.map(Into::into),
            policy.map(Into::into),
            node.map(Into::into),
            Duration::from_secs(7200),
            "maintenance".into(),
            "ops".into(),
            Utc::now() - chrono::Duration::seconds(1),
        )
        .unwrap()
    }

    #[test]
    fn every_given_matcher_must_match() {
        let now = Utc::now();
        let cases = [
            (
                "glob on the name",
                silence(Some("web-*"), None, None),
                alert("web-1", "p", "n1"),
                true,
            ),
            (
                "another name",
                silence(Some("web-*"), None, None),
                alert("db-1", "p", "n1"),
                false,
            ),
            (
                "policy",
                silence(None, Some("p"), None),
                alert("db-1", "p", "n1"),
                true,
            ),
            (
                "another policy",
                silence(None, Some("q"), None),
                alert("db-1", "p", "n1"),
                false,
            ),
            (
                "node too",
                silence(Some("web-*"), None, Some("n1")),
                alert("web-1", "p", "n1"),
                true,
            ),
            (
                "other node",
                silence(Some("web-*"), None, Some("n2")),
                alert("web-1", "p", "n1"),
                false,
            ),
            (
                "name and policy",
                silence(Some("web-1"), Some("q"), None),
                alert("web-1", "p", "n1"),
                false,
            ),
        ];
        for (what, s, a, want) in cases {
            assert_eq!(s.matches(&a, now), want, "{what}");
        }
    }

    #[test]
    fn an_expired_silence_and_a_test_notification_are_never_muted() {
        let mut s = silence(Some("*"), None, None);
        let now = Utc::now();
        assert!(s.matches(&alert("x", "p", "n"), now));
        assert!(!s.matches(&Alert::test("n"), now), "tests always go out");
        s.ends_at = now;
        assert!(!s.matches(&alert("x", "p", "n"), now));
    }

    #[test]
    fn a_silence_without_matcher_duration_or_comment_is_refused() {
        let mk = |c: Option<&str>, d: u64, comment: &str| {
            Silence::new(
                c.map(Into::into),
                None,
                None,
                Duration::from_secs(d),
                comment.into(),
                "me".into(),
                Utc::now(),
            )
            .map(|_| ())
        };
        assert_eq!(mk(None, 60, "x"), Err(SilenceError::NoMatcher));
        assert_eq!(mk(Some("a"), 0, "x"), Err(SilenceError::NoDuration));
        assert_eq!(mk(Some("a"), 60, " "), Err(SilenceError::NoComment));
        assert_eq!(mk(Some("a"), 60, "x"), Ok(()));
    }
}
