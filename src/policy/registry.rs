//! The set of policies in force, swapped whole when a new valid set is loaded.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::select::{Target, governing_policy};
use super::types::HealthPolicy;

/// The policies in force. Readers get a cheap snapshot; a reload replaces the whole set and
/// wakes every [`PolicyRegistry::changed`] receiver.
#[derive(Debug, Default)]
pub struct PolicyRegistry {
    current: RwLock<Arc<Vec<HealthPolicy>>>,
    /// Where each policy in force was read, and what is wrong with its current text (set by
    /// the file source; empty for the built-in policy and for policies applied through Redis).
    provenance: RwLock<Arc<BTreeMap<String, Provenance>>>,
    /// How many times the set was replaced; [`PolicyRegistry::changed`] watches it.
    generation: watch::Sender<u64>,
    /// What the file source last did (see [`ReloadStatus`]).
    reload: RwLock<Arc<ReloadStatus>>,
    /// How many times the reload status changed in more than its scan time;
    /// [`PolicyRegistry::reload_changed`] watches it.
    reload_generation: watch::Sender<u64>,
}

impl PolicyRegistry {
    /// A registry holding `policies`.
    pub fn new(policies: Vec<HealthPolicy>) -> Self {
        Self {
            current: RwLock::new(Arc::new(policies)),
            provenance: RwLock::default(),
            generation: watch::Sender::new(0),
            reload: RwLock::default(),
            reload_generation: watch::Sender::new(0),
        }
    }

    /// The policies in force now.
    pub fn snapshot(&self) -> Arc<Vec<HealthPolicy>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the set.
    pub fn replace(&self, policies: Vec<HealthPolicy>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policies);
        self.generation.send_modify(|g| *g += 1);
    }

    /// A receiver that wakes each time the set is replaced (its value: how many times).
    pub(crate) fn changed(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The policy governing a container now, if any.
    pub(crate) fn governing(&self, target: Target<'_>) -> Option<HealthPolicy> {
        let snapshot = self.snapshot();
        governing_policy(snapshot.iter(), target).cloned()
    }
}

/// Where a policy in force was read, and whether its current text is broken.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Provenance {
    /// `file:line:col` of the document the version below was read from.
    pub source: String,
    /// The version the source holds: when the policy in force differs (a policy applied
    /// through Redis wins over a file's), this provenance is not the policy's.
    pub policy: HealthPolicy,
    /// The problems of the document's current text, as `file:line:col: error: message`; when
    /// any, the version in force is the last good one.
    pub problems: Vec<String>,
}

impl PolicyRegistry {
    /// Replaces what is known about where the policies come from.
    pub(crate) fn set_provenance(&self, provenance: BTreeMap<String, Provenance>) {
        *self.provenance.write().expect("registry lock") = Arc::new(provenance);
    }

    /// Where each policy in force was read, by name.
    pub(crate) fn provenance(&self) -> Arc<BTreeMap<String, Provenance>> {
        self.provenance.read().expect("registry lock").clone()
    }

    /// Where `policy` (one in force) was read, if it is the version a source holds.
    pub(crate) fn provenance_of(&self, policy: &HealthPolicy) -> Option<Provenance> {
        self.provenance()
            .get(&policy.metadata.name)
            .filter(|p| p.policy == *policy)
            .cloned()
    }
}

/// What the `--policies` file source last did: served on `/api/v1/reload` and shown by the
/// dashboard's policies view. Empty when no file source runs (the built-in policy, or policies
/// applied through Redis only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReloadStatus {
    /// The `--policies` paths read.
    pub paths: Vec<String>,
    /// When the files were last read.
    pub last_scan: Option<DateTime<Utc>>,
    /// What made that read: `start`, `watch`, `rescan` or `sighup`.
    pub trigger: Option<String>,
    /// When the policies in force or the problems last changed (the last reload that did something).
    pub last_change: Option<DateTime<Utc>>,
    /// When the version in force of each file policy was read, by name.
    pub loaded_at: BTreeMap<String, DateTime<Utc>>,
    /// Every problem of the last read, as `file:line:col: error: message`: a broken document
    /// whose policy keeps its last good version, and a file that holds no policy at all.
    pub problems: Vec<String>,
}

impl ReloadStatus {
    /// Whether `other` says something else than this one, scan time and trigger aside.
    fn differs(&self, other: &Self) -> bool {
        (
            &self.paths,
            &self.last_change,
            &self.loaded_at,
            &self.problems,
        ) != (
            &other.paths,
            &other.last_change,
            &other.loaded_at,
            &other.problems,
        )
    }
}

impl PolicyRegistry {
    /// Replaces the reload status; wakes [`PolicyRegistry::reload_changed`] receivers when it
    /// says something new (not for a scan that found nothing new).
    pub(crate) fn set_reload(&self, status: ReloadStatus) {
        let mut current = self
            .reload
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let news = current.differs(&status);
        *current = Arc::new(status);
        drop(current);
        if news {
            self.reload_generation.send_modify(|g| *g += 1);
        }
    }

    /// The reload status now.
    pub(crate) fn reload(&self) -> Arc<ReloadStatus> {
        self.reload
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A receiver that wakes each time the reload status says something new.
    pub(crate) fn reload_changed(&self) -> watch::Receiver<u64> {
        self.reload_generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_replace_wakes_every_changed_receiver_and_counts() {
        let registry = PolicyRegistry::new(vec![]);
        let mut a = registry.changed();
        let mut b = registry.changed();
        assert!(!a.has_changed().unwrap());
        registry.replace(vec![crate::policy::builtin::default_policy()]);
        a.changed().await.unwrap();
        b.changed().await.unwrap();
        assert_eq!(*a.borrow_and_update(), 1);
        registry.replace(vec![]);
        assert!(a.has_changed().unwrap());
        assert_eq!(*a.borrow_and_update(), 2);
        assert!(!a.has_changed().unwrap());
    }

    #[test]
    fn the_reload_status_wakes_its_receivers_only_when_it_says_something_new() {
        let registry = PolicyRegistry::new(vec![]);
        let rx = registry.reload_changed();
        let t = |s: i64| DateTime::<Utc>::from_timestamp(1_700_000_000 + s, 0);
        let status = ReloadStatus {
            paths: vec!["/p".into()],
            last_scan: t(0),
            trigger: Some("start".into()),
            last_change: t(0),
            ..ReloadStatus::default()
        };
        registry.set_reload(status.clone());
        assert!(rx.has_changed().unwrap(), "the first status is news");
        let mut rx = registry.reload_changed();
        let rescanned = ReloadStatus {
            last_scan: t(5),
            trigger: Some("rescan".into()),
            ..status.clone()
        };
        registry.set_reload(rescanned.clone());
        assert!(!rx.has_changed().unwrap(), "a scan that found nothing new");
        assert_eq!(registry.reload().last_scan, t(5));
        registry.set_reload(ReloadStatus {
            problems: vec!["/p/x.yaml:1:1: error: bad".into()],
            ..rescanned
        });
        assert!(rx.has_changed().unwrap(), "a new problem");
        rx.borrow_and_update();
    }
}
