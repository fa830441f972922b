//! The set of policies in force, swapped whole when a new valid set is loaded.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

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
}

impl PolicyRegistry {
    /// A registry holding `policies`.
    pub fn new(policies: Vec<HealthPolicy>) -> Self {
        Self {
            current: RwLock::new(Arc::new(policies)),
            provenance: RwLock::default(),
            generation: watch::Sender::new(0),
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
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The policy governing a container now, if any.
    pub fn governing(&self, target: Target<'_>) -> Option<HealthPolicy> {
        let snapshot = self.snapshot();
        governing_policy(snapshot.iter(), target).cloned()
    }
}

/// Where a policy in force was read, and whether its current text is broken.
#[derive(Clone, Debug, PartialEq)]
pub struct Provenance {
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
    pub fn set_provenance(&self, provenance: BTreeMap<String, Provenance>) {
        *self.provenance.write().expect("registry lock") = Arc::new(provenance);
    }

    /// Where each policy in force was read, by name.
    pub fn provenance(&self) -> Arc<BTreeMap<String, Provenance>> {
        self.provenance.read().expect("registry lock").clone()
    }

    /// Where `policy` (one in force) was read, if it is the version a source holds.
    pub fn provenance_of(&self, policy: &HealthPolicy) -> Option<Provenance> {
        self.provenance()
            .get(&policy.metadata.name)
            .filter(|p| p.policy == *policy)
            .cloned()
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
}
