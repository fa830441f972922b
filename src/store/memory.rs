//! The embedded state store: in memory, with the safety state persisted atomically to disk.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::atomic_file::{read_json_or_default, write_json_atomic};
use super::{AuditRecord, Result, StateStore, StoreError};
use crate::model::safety::SafetyState;

/// How many audit records (and, in the bus, envelopes) are kept in memory.
pub const RETAINED: usize = 1000;

/// What is written to `<state-dir>/state.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Durable {
    safety: BTreeMap<String, SafetyState>,
    audit: VecDeque<AuditRecord>,
}

/// The in-memory state store. With a state directory, every change is written to
/// `state.json.tmp`, synced, then renamed over `state.json`, so a crash at any moment leaves
/// either the old or the new state, never a torn one.
#[derive(Debug)]
pub struct MemoryStore {
    /// A std mutex: held only for in-memory work and one small synchronous file write, never
    /// across an await.
    durable: Mutex<Durable>,
    locks: Mutex<HashMap<String, (String, Instant)>>,
    budgets: Mutex<HashMap<String, VecDeque<Instant>>>,
    path: Option<PathBuf>,
}

impl MemoryStore {
    /// A store that forgets everything when the process ends.
    pub fn ephemeral() -> Self {
        Self {
            durable: Mutex::new(Durable::default()),
            locks: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
            path: None,
        }
    }

    /// A store persisted under `dir` (created if missing), loading what an earlier run left.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let path = dir.join("state.json");
        let durable = read_json_or_default(&path)?;
        Ok(Self {
            durable: Mutex::new(durable),
            locks: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
            path: Some(path),
        })
    }

    fn persist(&self, durable: &Durable) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        write_json_atomic(path, durable).map_err(|source| StoreError::Persist {
            path: path.display().to_string(),
            source,
        })
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    async fn safety(&self, key: &str) -> Result<SafetyState> {
        let durable = self
            .durable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(durable.safety.get(key).cloned().unwrap_or_default())
    }

    async fn update_safety(
        &self,
        key: &str,
        update: &mut (dyn for<'s> FnMut(&'s mut SafetyState) + Send),
    ) -> Result<SafetyState> {
        let mut durable = self
            .durable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut state = durable.safety.get(key).cloned().unwrap_or_default();
        update(&mut state);
        let previous = durable.safety.insert(key.to_owned(), state.clone());
        if let Err(e) = self.persist(&durable) {
            // Nothing half-done: the change is not kept in memory either.
            match previous {
                Some(p) => durable.safety.insert(key.to_owned(), p),
                None => durable.safety.remove(key),
            };
            return Err(e);
        }
        Ok(state)
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match locks.get(key) {
            Some((holder, until)) if holder != owner && *until > now => Ok(false),
            _ => {
                // A TTL too large for the clock holds "for good" (a year) rather than panicking.
                let until = now
                    .checked_add(ttl)
                    .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
                    .unwrap_or(now);
                locks.insert(key.to_owned(), (owner.to_owned(), until));
                Ok(true)
            }
        }
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<()> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if locks.get(key).is_some_and(|(holder, _)| holder == owner) {
            locks.remove(key);
        }
        Ok(())
    }

    async fn take_fleet_budget(
        &self,
        budget: &str,
        max: u32,
        per: Duration,
        _id: &str,
    ) -> Result<bool> {
        let mut budgets = self
            .budgets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let taken = budgets.entry(budget.to_owned()).or_default();
        let now = Instant::now();
        while taken.front().is_some_and(|t| now.duration_since(*t) >= per) {
            taken.pop_front();
        }
        if taken.len() as u32 >= max {
            return Ok(false);
        }
        taken.push_back(now);
        Ok(true)
    }

    async fn append_audit(&self, record: AuditRecord) -> Result<()> {
        let mut durable = self
            .durable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        durable.audit.push_back(record);
        while durable.audit.len() > RETAINED {
            durable.audit.pop_front();
        }
        self.persist(&durable)
    }

    async fn audit_tail(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        let durable = self
            .durable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let skip = durable.audit.len().saturating_sub(limit);
        Ok(durable.audit.iter().skip(skip).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::safety::{ActionRecord, Outcome};

    fn record(id: &str) -> ActionRecord {
        ActionRecord {
            decision_id: id.into(),
            at: chrono::Utc::now(),
            action: crate::model::decision::ActionKind::Restart,
            finding: "exited".into(),
            outcome: Outcome::Pending,
        }
    }

    #[tokio::test]
    async fn safety_state_survives_a_reopen_of_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = MemoryStore::open(dir.path()).unwrap();
            store
                .update_safety("web", &mut |s| s.actions.push(record("d1")))
                .await
                .unwrap();
        }
        let store = MemoryStore::open(dir.path()).unwrap();
        assert_eq!(
            store.safety("web").await.unwrap().actions[0].decision_id,
            "d1"
        );
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[tokio::test]
    async fn a_corrupt_state_file_is_an_error_not_a_silent_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), b"{not json").unwrap();
        let err = MemoryStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }

    #[tokio::test]
    async fn a_lock_has_one_holder_until_it_expires_or_is_released() {
        let store = MemoryStore::ephemeral();
        assert!(
            store
                .try_lock("c", "a", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(
            !store
                .try_lock("c", "b", Duration::from_secs(60))
                .await
                .unwrap()
        );
        store.unlock("c", "b").await.unwrap();
        assert!(
            !store
                .try_lock("c", "b", Duration::from_secs(60))
                .await
                .unwrap()
        );
        store.unlock("c", "a").await.unwrap();
        assert!(
            store
                .try_lock("c", "b", Duration::from_millis(1))
                .await
                .unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            store
                .try_lock("c", "a", Duration::from_secs(1))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn the_fleet_budget_allows_max_actions_per_window() {
        let store = MemoryStore::ephemeral();
        let per = Duration::from_millis(50);
        assert!(store.take_fleet_budget("p", 2, per, "a").await.unwrap());
        assert!(store.take_fleet_budget("p", 2, per, "b").await.unwrap());
        assert!(!store.take_fleet_budget("p", 2, per, "c").await.unwrap());
        assert!(store.take_fleet_budget("other", 2, per, "d").await.unwrap());
        std::thread::sleep(Duration::from_millis(60));
        assert!(store.take_fleet_budget("p", 2, per, "e").await.unwrap());
    }

    #[tokio::test]
    async fn a_lock_ttl_too_large_for_the_clock_holds_instead_of_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::open(dir.path()).unwrap();
        assert!(store.try_lock("k", "a", Duration::MAX).await.unwrap());
        assert!(!store.try_lock("k", "b", Duration::MAX).await.unwrap());
        store.unlock("k", "a").await.unwrap();
        assert!(
            store
                .try_lock("k", "b", Duration::from_secs(1))
                .await
                .unwrap()
        );
    }
}
