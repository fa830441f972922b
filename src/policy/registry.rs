//! The set of policies in force, swapped whole when a new valid set is loaded.

use std::sync::{Arc, RwLock};

use super::select::{Target, governing_policy};
use super::types::HealthPolicy;

/// The policies in force. Readers get a cheap snapshot; a reload replaces the whole set.
#[derive(Debug, Default)]
pub struct PolicyRegistry {
    current: RwLock<Arc<Vec<HealthPolicy>>>,
}

impl PolicyRegistry {
    /// A registry holding `policies`.
    pub fn new(policies: Vec<HealthPolicy>) -> Self {
        Self {
            current: RwLock::new(Arc::new(policies)),
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
    }

    /// The policy governing a container now, if any.
    pub fn governing(&self, target: Target<'_>) -> Option<HealthPolicy> {
        let snapshot = self.snapshot();
        governing_policy(snapshot.iter(), target).cloned()
    }
}
