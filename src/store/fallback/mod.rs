//! A state store that keeps protecting containers through a Redis outage: Redis first, the local persisted view when Redis is unreachable, merged back when it answers again.
//!
//! [`FallbackStore`] wraps a remote store (the Redis adapter's `RedisBus`) and a
//! local [`MemoryStore`] persisted under the state directory.
//!
//! # While Redis answers
//!
//! Every call goes to Redis. Each safety update's resulting state, and each safety state read
//! that differs from the local one, is also mirrored into the local store, so the local view is
//! a warm copy of this node's safety state (cooldowns, action windows, breakers) when an outage
//! begins.
//!
//! # During a Redis outage
//!
//! A call that fails with a Redis error is served locally instead; the outage is logged once
//! at warn when it begins and once at info when it ends, not per call. While the outage lasts,
//! Redis is asked at most once per probe period (default 1 s, [`DEFAULT_PROBE_EVERY`](outage::DEFAULT_PROBE_EVERY)); the other
//! calls go straight to the local view, so an unreachable host (connection timeouts) does not
//! slow every decision down.
//!
//! - **Safety state** is read from, and updated in, the local store; updated keys are marked
//!   dirty.
//! - **Locks** fall back to the local lock, which only this node sees. **Two nodes may both act
//!   on the same container during a Redis outage**: each is still bound by its own local
//!   cooldown, action window and circuit breaker, but not by the other node's. Safety keys are
//!   per node (`<node>/<container>`), so this only matters for a container that two nodes both
//!   govern.
//! - **The fleet-wide budget is refused**: it cannot be checked without the shared store, so
//!   [`StateStore::take_fleet_budget`] returns the Redis error and the responder does not act
//!   on containers whose policy has a fleet budget until Redis answers again (conservative).
//! - **Audit records** go to the local store and to an in-memory backlog;
//!   [`StateStore::audit_tail`] serves the local trail.
//!
//! # When Redis answers again
//!
//! On the first successful call (or the background task of [`FallbackStore::spawn_resync`]),
//! dirty keys are pushed to Redis through its atomic `update_safety`, **merged** with what Redis
//! holds, never overwritten ([`merge_safety`]); the dirty keys and the backlog are the [`journal`]: actions are united by `decision_id` (an action
//! Failed on either side stays Failed), failures are united (equal timestamps once), and the
//! later `open_until` / `gave_up_at` wins. The merge is idempotent, so an update that reached
//! Redis just before the connection broke and was then applied locally too is not counted
//! twice. A dirty key is always pushed before Redis serves that key again, so a read never
//! misses what happened during the outage. The audit backlog is then appended in order
//! (at least once: a record whose append reached Redis but whose reply was lost is sent
//! again).
//!
//! # Restarts
//!
//! With [`FallbackStore::with_journal`] (as `hemostat run` does), the dirty keys and the audit
//! backlog are written atomically to `<state-dir>/fallback.json` whenever they change, so an
//! operator restarted during an outage still merges what it did into Redis afterwards. Without
//! a journal they live in memory only.

mod journal;
mod outage;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::memory::MemoryStore;
use super::{AuditRecord, Result, StateStore};
use crate::model::safety::{SafetyState, merge_safety};
use journal::Journal;
use outage::{Outage, is_outage, outage_error};

/// The default period of the background re-sync task.
pub(crate) const DEFAULT_RESYNC_EVERY: Duration = Duration::from_secs(5);

/// Redis first, the local view during an outage; see the module documentation.
pub struct FallbackStore {
    remote: Arc<dyn StateStore>,
    local: MemoryStore,
    /// What the outage left for the remote (dirty keys, audit backlog), and its journal file.
    journal: Journal,
    /// Serialises the work on one key (so a push and an update never interleave).
    key_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One re-sync at a time.
    syncing: tokio::sync::Mutex<()>,
    /// One audit drain at a time.
    draining: tokio::sync::Mutex<()>,
    /// Whether Redis is taken as unreachable, and when to probe it.
    outage: Outage,
}

impl std::fmt::Debug for FallbackStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackStore")
            .field("local", &self.local)
            .field("dirty", &self.dirty_keys())
            .field("audit_backlog", &self.audit_backlog_len())
            .field("outage", &self.in_outage())
            .finish_non_exhaustive()
    }
}

impl FallbackStore {
    /// `remote` first, `local` when it fails with a Redis error.
    pub fn new(remote: Arc<dyn StateStore>, local: MemoryStore) -> Self {
        Self {
            remote,
            local,
            journal: Journal::default(),
            key_locks: Mutex::new(HashMap::new()),
            syncing: tokio::sync::Mutex::new(()),
            draining: tokio::sync::Mutex::new(()),
            outage: Outage::default(),
        }
    }

    /// During an outage, asks Redis at most once per `every` (zero: on every call).
    #[cfg(test)]
    pub(crate) fn with_probe_every(mut self, every: Duration) -> Self {
        self.outage.set_probe_every(every);
        self
    }

    /// Persists the dirty keys and the audit backlog to `<dir>/fallback.json` from now on,
    /// first loading what an earlier run left there (to be pushed when Redis answers).
    pub(crate) fn with_journal(mut self, dir: impl Into<PathBuf>) -> Result<Self> {
        self.journal.open(dir)?;
        Ok(self)
    }

    /// Applies an update on the local view and marks the key dirty.
    async fn update_local(
        &self,
        key: &str,
        update: &mut (dyn for<'s> FnMut(&'s mut SafetyState) + Send),
    ) -> Result<SafetyState> {
        let state = self.local.update_safety(key, update).await?;
        self.journal.mark_dirty(key);
        Ok(state)
    }

    /// Appends an audit record locally and to the backlog.
    async fn append_local(&self, record: AuditRecord) -> Result<()> {
        self.local.append_audit(record.clone()).await?;
        self.journal.push_audit(record);
        Ok(())
    }

    /// The local store (the view used during an outage).
    pub fn local(&self) -> &MemoryStore {
        &self.local
    }

    /// Whether the last call to the remote failed with a Redis error.
    pub fn in_outage(&self) -> bool {
        self.outage.is_on()
    }

    /// Keys changed locally and not yet merged into the remote, sorted.
    pub fn dirty_keys(&self) -> Vec<String> {
        self.journal.dirty_keys()
    }

    /// Audit records waiting for the remote.
    pub fn audit_backlog_len(&self) -> usize {
        self.journal.backlog_len()
    }

    fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.key_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    fn note_success(&self) {
        if self.outage.end() {
            tracing::info!(
                dirty = self.dirty_keys().len(),
                audit_backlog = self.audit_backlog_len(),
                "redis answers again: merging the local changes into it"
            );
        }
    }

    /// After a successful remote call: push what the outage left, if anything.
    async fn after_success(&self) {
        self.note_success();
        if self.journal.has_pending() {
            let _ = self.try_resync().await;
        }
    }

    /// Pushes every dirty key (merged) and the audit backlog (in order) to the remote; stops
    /// at the first Redis error. Returns the error, if any.
    pub async fn resync(&self) -> Result<()> {
        let _one = self.syncing.lock().await;
        self.resync_locked().await
    }

    /// Like [`Self::resync`], but returns at once when another re-sync is running.
    async fn try_resync(&self) -> Result<()> {
        let Ok(_one) = self.syncing.try_lock() else {
            return Ok(());
        };
        self.resync_locked().await
    }

    async fn resync_locked(&self) -> Result<()> {
        for key in self.dirty_keys() {
            let lock = self.key_lock(&key);
            let _key = lock.lock().await;
            if self.journal.is_dirty(&key) {
                self.push_key(&key).await?;
            }
        }
        self.drain_audit().await
    }

    /// Merges the local state of `key` into the remote, mirrors the merge locally and clears
    /// the dirty mark. The caller holds the key's lock.
    async fn push_key(&self, key: &str) -> Result<SafetyState> {
        let local = self.local.safety(key).await?;
        let pushed = self
            .remote
            .update_safety(key, &mut |remote| *remote = merge_safety(remote, &local))
            .await;
        let merged = match pushed {
            Ok(merged) => merged,
            Err(e) => {
                if is_outage(&e) {
                    self.outage.note_failure("merge safety state", &e);
                }
                return Err(e);
            }
        };
        self.note_success();
        self.mirror(key, &merged).await;
        self.journal.clear_dirty(key);
        tracing::debug!(
            key,
            actions = merged.actions.len(),
            "merged local safety state into redis"
        );
        Ok(merged)
    }

    async fn mirror(&self, key: &str, state: &SafetyState) {
        if let Err(e) = self
            .local
            .update_safety(key, &mut |local| *local = state.clone())
            .await
        {
            tracing::warn!(key, error = %e, "could not mirror the safety state locally");
        }
    }

    /// Appends the audit backlog to the remote, oldest first.
    async fn drain_audit(&self) -> Result<()> {
        let _one = self.draining.lock().await;
        loop {
            let Some(record) = self.journal.oldest_audit() else {
                return Ok(());
            };
            match self.remote.append_audit(record).await {
                Ok(()) => {
                    self.note_success();
                    self.journal.pop_audit();
                }
                Err(e) => {
                    if is_outage(&e) {
                        self.outage.note_failure("append audit backlog", &e);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Spawns the task that re-syncs every `every` while something waits for the remote;
    /// it ends with `shutdown` or when the store is dropped.
    pub(crate) fn spawn_resync(
        self: &Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let Some(store) = weak.upgrade() else {
                    return;
                };
                if store.journal.has_pending() {
                    let _ = store.try_resync().await;
                }
            }
        })
    }
}

#[async_trait::async_trait]
impl StateStore for FallbackStore {
    async fn safety(&self, key: &str) -> Result<SafetyState> {
        let read = {
            let lock = self.key_lock(key);
            let _key = lock.lock().await;
            if self.outage.skip_remote() {
                return self.local.safety(key).await;
            }
            if self.journal.is_dirty(key) {
                // Redis must not serve this key before it knows the outage's changes.
                match self.push_key(key).await {
                    Ok(merged) => Ok(merged),
                    Err(e) if is_outage(&e) => return self.local.safety(key).await,
                    Err(e) => Err(e),
                }
            } else {
                match self.remote.safety(key).await {
                    Err(e) if is_outage(&e) => {
                        self.outage.note_failure("read safety state", &e);
                        return self.local.safety(key).await;
                    }
                    Ok(state) => {
                        // Keeps the local copy warm for containers not updated since startup.
                        if self.local.safety(key).await.ok().as_ref() != Some(&state) {
                            self.mirror(key, &state).await;
                        }
                        Ok(state)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if read.is_ok() {
            self.after_success().await;
        }
        read
    }

    async fn update_safety(
        &self,
        key: &str,
        update: &mut (dyn for<'s> FnMut(&'s mut SafetyState) + Send),
    ) -> Result<SafetyState> {
        let updated = {
            let lock = self.key_lock(key);
            let _key = lock.lock().await;
            let pushed = if self.outage.skip_remote() {
                Err(outage_error("update safety state"))
            } else if self.journal.is_dirty(key) {
                self.push_key(key).await.map(|_| ())
            } else {
                Ok(())
            };
            let remote = match pushed {
                Ok(()) => self.remote.update_safety(key, &mut *update).await,
                Err(e) => Err(e),
            };
            match remote {
                Ok(state) => {
                    self.mirror(key, &state).await;
                    Ok(state)
                }
                Err(e) if is_outage(&e) => {
                    self.outage.note_failure("update safety state", &e);
                    return self.update_local(key, update).await;
                }
                Err(e) => Err(e),
            }
        };
        if updated.is_ok() {
            self.after_success().await;
        }
        updated
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        if self.outage.skip_remote() {
            return self.local.try_lock(key, owner, ttl).await;
        }
        match self.remote.try_lock(key, owner, ttl).await {
            Ok(took) => {
                self.after_success().await;
                Ok(took)
            }
            Err(e) if is_outage(&e) => {
                self.outage.note_failure("take lock", &e);
                // This node alone: another node may hold Redis's lock or its own local one.
                self.local.try_lock(key, owner, ttl).await
            }
            Err(e) => Err(e),
        }
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<()> {
        self.local.unlock(key, owner).await?;
        if self.outage.skip_remote() {
            // A lock taken in Redis before the outage expires with its TTL.
            return Ok(());
        }
        match self.remote.unlock(key, owner).await {
            Ok(()) => {
                self.after_success().await;
                Ok(())
            }
            Err(e) if is_outage(&e) => {
                // A lock taken in Redis before the outage expires with its TTL.
                self.outage.note_failure("release lock", &e);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn take_fleet_budget(
        &self,
        budget: &str,
        max: u32,
        per: Duration,
        id: &str,
    ) -> Result<bool> {
        if self.outage.skip_remote() {
            // Refused: the fleet-wide budget cannot be checked without the shared store.
            return Err(outage_error("take fleet budget"));
        }
        match self.remote.take_fleet_budget(budget, max, per, id).await {
            Ok(took) => {
                self.after_success().await;
                Ok(took)
            }
            Err(e) => {
                // Refused: the fleet-wide budget cannot be checked without the shared store.
                if is_outage(&e) {
                    self.outage.note_failure("take fleet budget", &e);
                }
                Err(e)
            }
        }
    }

    async fn append_audit(&self, record: AuditRecord) -> Result<()> {
        if self.outage.skip_remote() {
            return self.append_local(record).await;
        }
        if self.audit_backlog_len() > 0 {
            let _ = self.drain_audit().await;
        }
        if self.audit_backlog_len() == 0 {
            match self.remote.append_audit(record.clone()).await {
                Ok(()) => {
                    self.after_success().await;
                    return Ok(());
                }
                Err(e) if is_outage(&e) => self.outage.note_failure("append audit", &e),
                Err(e) => return Err(e),
            }
        }
        self.append_local(record).await
    }

    async fn audit_tail(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        if self.outage.skip_remote() {
            return self.local.audit_tail(limit).await;
        }
        // A backlog that cannot be drained means Redis is still away: do not wait on it twice.
        if self.audit_backlog_len() > 0
            && let Err(e) = self.drain_audit().await
            && is_outage(&e)
        {
            return self.local.audit_tail(limit).await;
        }
        match self.remote.audit_tail(limit).await {
            Ok(tail) => {
                self.after_success().await;
                Ok(tail)
            }
            Err(e) if is_outage(&e) => {
                self.outage.note_failure("read audit", &e);
                self.local.audit_tail(limit).await
            }
            Err(e) => Err(e),
        }
    }
}
