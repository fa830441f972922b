//! The embedded state store: in memory, with the safety state persisted atomically to disk.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::atomic_file::{read_json_or_default, write_bytes_atomic};
use super::{AuditRecord, Result, StateStore, StoreError};
use crate::model::safety::SafetyState;

/// How many audit records (and, in the bus, envelopes) are kept in memory.
pub(crate) const RETAINED: usize = 1000;

/// What is written to `<state-dir>/state.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Durable {
    safety: BTreeMap<String, SafetyState>,
    audit: VecDeque<AuditRecord>,
}

/// The in-memory state store. With a state directory, every change is written to
/// `state.json.tmp`, synced, then renamed over `state.json`, so a crash at any moment leaves
/// either the old or the new state, never a torn one.
///
/// A change returns once it is on disk. Changes made while a write is under way are written
/// together by the next one (a group commit): a storm of 200 decisions costs a few writes of
/// the file, not 400 in a row.
#[derive(Debug)]
pub struct MemoryStore {
    /// A std mutex: held only for in-memory work and serialising a snapshot, never across an
    /// await (the file is written outside it).
    durable: Mutex<Versioned>,
    /// The last version on disk; held while one snapshot is written.
    written: tokio::sync::Mutex<u64>,
    locks: Mutex<HashMap<String, (String, Instant)>>,
    budgets: Mutex<HashMap<String, VecDeque<Instant>>>,
    path: Option<PathBuf>,
}

/// The durable state and how many changes it has seen.
#[derive(Debug, Default)]
struct Versioned {
    state: Durable,
    version: u64,
}

impl MemoryStore {
    /// A store that forgets everything when the process ends.
    pub fn ephemeral() -> Self {
        Self {
            durable: Mutex::new(Versioned::default()),
            written: tokio::sync::Mutex::new(0),
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
            durable: Mutex::new(Versioned {
                state: durable,
                version: 0,
            }),
            written: tokio::sync::Mutex::new(0),
            locks: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
            path: Some(path),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Versioned> {
        self.durable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns once version `version` (or a later one) is on disk: writes a snapshot of
    /// everything changed so far unless a write that began after the change already did.
    async fn commit(&self, version: u64) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut written = self.written.lock().await;
        if *written >= version {
            return Ok(());
        }
        let (bytes, upto) = {
            let durable = self.lock();
            let bytes = serde_json::to_vec(&durable.state).map_err(|e| StoreError::Persist {
                path: path.display().to_string(),
                source: std::io::Error::other(e),
            })?;
            (bytes, durable.version)
        };
        let target = path.clone();
        let wrote = tokio::task::spawn_blocking(move || write_bytes_atomic(&target, &bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        wrote.map_err(|source| StoreError::Persist {
            path: path.display().to_string(),
            source,
        })?;
        *written = upto;
        Ok(())
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    async fn safety(&self, key: &str) -> Result<SafetyState> {
        Ok(self
            .lock()
            .state
            .safety
            .get(key)
            .cloned()
            .unwrap_or_default())
    }

    async fn update_safety(
        &self,
        key: &str,
        update: &mut (dyn for<'s> FnMut(&'s mut SafetyState) + Send),
    ) -> Result<SafetyState> {
        let (state, previous, version) = {
            let mut durable = self.lock();
            let mut state = durable.state.safety.get(key).cloned().unwrap_or_default();
            update(&mut state);
            let previous = durable.state.safety.insert(key.to_owned(), state.clone());
            durable.version += 1;
            (state, previous, durable.version)
        };
        if let Err(e) = self.commit(version).await {
            // Nothing half-done: the change is not kept in memory either (unless another
            // change of the same key came after it, which then stands).
            let mut durable = self.lock();
            if durable.state.safety.get(key) == Some(&state) {
                match previous {
                    Some(p) => durable.state.safety.insert(key.to_owned(), p),
                    None => durable.state.safety.remove(key),
                };
            }
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
        let version = {
            let mut durable = self.lock();
            durable.state.audit.push_back(record);
            while durable.state.audit.len() > RETAINED {
                durable.state.audit.pop_front();
            }
            durable.version += 1;
            durable.version
        };
        self.commit(version).await
    }

    async fn audit_tail(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        let durable = self.lock();
        let skip = durable.state.audit.len().saturating_sub(limit);
        Ok(durable.state.audit.iter().skip(skip).cloned().collect())
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_changes_are_written_together_and_each_is_on_disk_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(MemoryStore::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let key = format!("c{i}");
                    store
                        .update_safety(&key, &mut |s| s.actions.push(record(&key)))
                        .await
                        .unwrap();
                    // Returned: it is in the file now, whatever the others do.
                    let on_disk: Durable =
                        read_json_or_default(&store.path.clone().unwrap()).unwrap();
                    assert!(on_disk.safety.contains_key(&key), "{key} not on disk");
                    store.append_audit(audit(&key)).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let reopened = MemoryStore::open(dir.path()).unwrap();
        for i in 0..200 {
            let state = reopened.safety(&format!("c{i}")).await.unwrap();
            assert_eq!(state.actions.len(), 1, "c{i}");
        }
        assert_eq!(reopened.audit_tail(1000).await.unwrap().len(), 200);
    }

    fn audit(container: &str) -> AuditRecord {
        serde_json::from_value(serde_json::json!({
            "timestamp": chrono::Utc::now(), "container": container, "container_id": container,
            "policy": "p", "action": "restart", "status": "success", "details": "",
            "reason": "", "decision_id": container, "node": "n"
        }))
        .expect("an audit record")
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
