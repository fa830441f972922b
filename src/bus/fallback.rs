//! A state store that keeps protecting containers through a Redis outage: Redis first, the local persisted view when Redis is unreachable, merged back when it answers again.
//!
//! [`FallbackStore`] wraps a remote store (the [`RedisBus`](super::redis::RedisBus)) and a
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
//! Redis is asked at most once per probe period (default 1 s, [`DEFAULT_PROBE_EVERY`]); the other
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
//! holds, never overwritten ([`merge_safety`]): actions are united by `decision_id` (an action
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

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::memory::{MemoryStore, RETAINED};
use super::{AuditRecord, BusError, Result, StateStore};
use crate::model::safety::SafetyState;
pub use crate::model::safety::merge_safety;

/// The journal's file name under the state directory.
pub const JOURNAL_FILE: &str = "fallback.json";

/// What waits for Redis, as written to the journal.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Journal {
    dirty: BTreeSet<String>,
    audit_backlog: VecDeque<AuditRecord>,
}

/// During an outage, Redis is asked at most once per this period.
pub const DEFAULT_PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long a probe in flight keeps other calls on the local view (a little more than the
/// Redis client's 5 s response timeout). A partition blackholes packets: a probe then waits for
/// the whole timeout, and without this every call of a reconcile would become a probe in turn.
pub const PROBE_IN_FLIGHT: Duration = Duration::from_secs(6);

/// The default period of the background re-sync task.
pub const DEFAULT_RESYNC_EVERY: Duration = Duration::from_secs(5);

/// Redis is unreachable: only then does the local view stand in. An error reply (a key of the
/// wrong type…) is passed on, never taken for an outage (two operators would both act).
fn is_redis(e: &BusError) -> bool {
    e.is_outage()
}

/// Redis first, the local view during an outage; see the module documentation.
pub struct FallbackStore {
    remote: Arc<dyn StateStore>,
    local: MemoryStore,
    /// Keys changed locally during an outage, not yet merged into the remote.
    dirty: Mutex<HashSet<String>>,
    /// Audit records appended locally during an outage, oldest first.
    backlog: Mutex<VecDeque<AuditRecord>>,
    /// Serialises the work on one key (so a push and an update never interleave).
    key_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One re-sync at a time.
    syncing: tokio::sync::Mutex<()>,
    /// One audit drain at a time.
    draining: tokio::sync::Mutex<()>,
    outage: AtomicBool,
    /// Where the dirty keys and the audit backlog are persisted, if anywhere.
    journal: Option<PathBuf>,
    /// Serialises journal writes.
    journal_write: Mutex<()>,
    /// During an outage, how often Redis is asked.
    probe_every: Duration,
    /// How long a probe in flight keeps the other calls local ([`PROBE_IN_FLIGHT`]).
    probe_in_flight: Duration,
    /// During an outage, when Redis may be asked next.
    next_probe: Mutex<std::time::Instant>,
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
            dirty: Mutex::new(HashSet::new()),
            backlog: Mutex::new(VecDeque::new()),
            key_locks: Mutex::new(HashMap::new()),
            syncing: tokio::sync::Mutex::new(()),
            draining: tokio::sync::Mutex::new(()),
            outage: AtomicBool::new(false),
            journal: None,
            journal_write: Mutex::new(()),
            probe_every: DEFAULT_PROBE_EVERY,
            probe_in_flight: PROBE_IN_FLIGHT,
            next_probe: Mutex::new(std::time::Instant::now()),
        }
    }

    /// During an outage, asks Redis at most once per `every` after the last probe ended
    /// (zero: on every call, and no hold while a probe is in flight).
    pub fn with_probe_every(mut self, every: Duration) -> Self {
        self.probe_every = every;
        if every.is_zero() {
            self.probe_in_flight = Duration::ZERO;
        }
        self
    }

    /// Whether this call should go straight to the local view: an outage is on and another
    /// call is probing Redis or did less than a probe period ago. Otherwise this call is the
    /// probe (held for at most [`PROBE_IN_FLIGHT`]; its failure restarts the period).
    fn skip_remote(&self) -> bool {
        if !self.in_outage() {
            return false;
        }
        let mut next = self
            .next_probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if now < *next {
            return true;
        }
        *next = now + self.probe_every + self.probe_in_flight;
        false
    }

    fn outage_error(op: &'static str) -> BusError {
        BusError::Unavailable {
            op,
            source: "redis unreachable (outage in progress)".into(),
        }
    }

    /// Applies an update on the local view and marks the key dirty.
    async fn update_local(
        &self,
        key: &str,
        update: &mut (dyn for<'s> FnMut(&'s mut SafetyState) + Send),
    ) -> Result<SafetyState> {
        let state = self.local.update_safety(key, update).await?;
        let added = self
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_owned());
        if added {
            self.save_journal();
        }
        Ok(state)
    }

    /// Appends an audit record locally and to the backlog.
    async fn append_local(&self, record: AuditRecord) -> Result<()> {
        self.local.append_audit(record.clone()).await?;
        {
            let mut backlog = self
                .backlog
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            backlog.push_back(record);
            while backlog.len() > RETAINED {
                backlog.pop_front();
                tracing::warn!(
                    "audit backlog full: dropped its oldest record (it stays in the local trail)"
                );
            }
        }
        self.save_journal();
        Ok(())
    }

    /// Persists the dirty keys and the audit backlog to `<dir>/fallback.json` from now on,
    /// first loading what an earlier run left there (to be pushed when Redis answers).
    pub fn with_journal(mut self, dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| BusError::Persist {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join(JOURNAL_FILE);
        let journal: Journal = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| BusError::Corrupt {
                path: path.display().to_string(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Journal::default(),
            Err(source) => {
                return Err(BusError::Persist {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        if !journal.dirty.is_empty() || !journal.audit_backlog.is_empty() {
            tracing::info!(
                dirty = journal.dirty.len(),
                audit_backlog = journal.audit_backlog.len(),
                "an earlier run left changes for redis; they are merged when it answers"
            );
        }
        self.dirty
            .get_mut()
            .expect("dirty mutex")
            .extend(journal.dirty);
        self.backlog
            .get_mut()
            .expect("backlog mutex")
            .extend(journal.audit_backlog);
        self.journal = Some(path);
        Ok(self)
    }

    /// Writes the journal (temp file, fsync, rename); a failure is logged, not returned: the
    /// local state itself is already durable.
    fn save_journal(&self) {
        let Some(path) = &self.journal else {
            return;
        };
        let _one = self
            .journal_write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let journal = Journal {
            dirty: self
                .dirty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .cloned()
                .collect(),
            audit_backlog: self
                .backlog
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        };
        let bytes = serde_json::to_vec(&journal).expect("the journal is always serialisable");
        let tmp = path.with_extension("json.tmp");
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not write the fallback journal");
        }
    }

    /// The local store (the view used during an outage).
    pub fn local(&self) -> &MemoryStore {
        &self.local
    }

    /// Whether the last call to the remote failed with a Redis error.
    pub fn in_outage(&self) -> bool {
        self.outage.load(Ordering::SeqCst)
    }

    /// Keys changed locally and not yet merged into the remote, sorted.
    pub fn dirty_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// Audit records waiting for the remote.
    pub fn audit_backlog_len(&self) -> usize {
        self.backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn has_pending(&self) -> bool {
        !self
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
            || self.audit_backlog_len() > 0
    }

    fn is_dirty(&self, key: &str) -> bool {
        self.dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(key)
    }

    fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.key_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    fn note_failure(&self, op: &'static str, e: &BusError) {
        // The probe (or the call that found the outage) is over: the next one a period later.
        *self
            .next_probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            std::time::Instant::now() + self.probe_every;
        if !self.outage.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                op,
                error = %e,
                "redis unreachable: serving safety state, locks and audit from this node's local view until it answers again (fleet budgets are refused meanwhile)"
            );
        }
    }

    fn note_success(&self) {
        if self.outage.swap(false, Ordering::SeqCst) {
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
        if self.has_pending() {
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
            if self.is_dirty(&key) {
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
                if is_redis(&e) {
                    self.note_failure("merge safety state", &e);
                }
                return Err(e);
            }
        };
        self.note_success();
        self.mirror(key, &merged).await;
        let removed = self
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
        if removed {
            self.save_journal();
        }
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
            let Some(record) = self
                .backlog
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .front()
                .cloned()
            else {
                return Ok(());
            };
            match self.remote.append_audit(record).await {
                Ok(()) => {
                    self.note_success();
                    self.backlog
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .pop_front();
                    self.save_journal();
                }
                Err(e) => {
                    if is_redis(&e) {
                        self.note_failure("append audit backlog", &e);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Spawns the task that re-syncs every `every` while something waits for the remote;
    /// it ends with `shutdown` or when the store is dropped.
    pub fn spawn_resync(
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
                if store.has_pending() {
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
            if self.skip_remote() {
                return self.local.safety(key).await;
            }
            if self.is_dirty(key) {
                // Redis must not serve this key before it knows the outage's changes.
                match self.push_key(key).await {
                    Ok(merged) => Ok(merged),
                    Err(e) if is_redis(&e) => return self.local.safety(key).await,
                    Err(e) => Err(e),
                }
            } else {
                match self.remote.safety(key).await {
                    Err(e) if is_redis(&e) => {
                        self.note_failure("read safety state", &e);
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
            let pushed = if self.skip_remote() {
                Err(Self::outage_error("update safety state"))
            } else if self.is_dirty(key) {
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
                Err(e) if is_redis(&e) => {
                    self.note_failure("update safety state", &e);
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
        if self.skip_remote() {
            return self.local.try_lock(key, owner, ttl).await;
        }
        match self.remote.try_lock(key, owner, ttl).await {
            Ok(took) => {
                self.after_success().await;
                Ok(took)
            }
            Err(e) if is_redis(&e) => {
                self.note_failure("take lock", &e);
                // This node alone: another node may hold Redis's lock or its own local one.
                self.local.try_lock(key, owner, ttl).await
            }
            Err(e) => Err(e),
        }
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<()> {
        self.local.unlock(key, owner).await?;
        if self.skip_remote() {
            // A lock taken in Redis before the outage expires with its TTL.
            return Ok(());
        }
        match self.remote.unlock(key, owner).await {
            Ok(()) => {
                self.after_success().await;
                Ok(())
            }
            Err(e) if is_redis(&e) => {
                // A lock taken in Redis before the outage expires with its TTL.
                self.note_failure("release lock", &e);
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
        if self.skip_remote() {
            // Refused: the fleet-wide budget cannot be checked without the shared store.
            return Err(Self::outage_error("take fleet budget"));
        }
        match self.remote.take_fleet_budget(budget, max, per, id).await {
            Ok(took) => {
                self.after_success().await;
                Ok(took)
            }
            Err(e) => {
                // Refused: the fleet-wide budget cannot be checked without the shared store.
                if is_redis(&e) {
                    self.note_failure("take fleet budget", &e);
                }
                Err(e)
            }
        }
    }

    async fn append_audit(&self, record: AuditRecord) -> Result<()> {
        if self.skip_remote() {
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
                Err(e) if is_redis(&e) => self.note_failure("append audit", &e),
                Err(e) => return Err(e),
            }
        }
        self.append_local(record).await
    }

    async fn audit_tail(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        if self.skip_remote() {
            return self.local.audit_tail(limit).await;
        }
        // A backlog that cannot be drained means Redis is still away: do not wait on it twice.
        if self.audit_backlog_len() > 0
            && let Err(e) = self.drain_audit().await
            && is_redis(&e)
        {
            return self.local.audit_tail(limit).await;
        }
        match self.remote.audit_tail(limit).await {
            Ok(tail) => {
                self.after_success().await;
                Ok(tail)
            }
            Err(e) if is_redis(&e) => {
                self.note_failure("read audit", &e);
                self.local.audit_tail(limit).await
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decision::ActionKind;
    use crate::model::safety::{ActionRecord, Outcome};
    use chrono::{DateTime, Utc};

    /// A remote that can be switched to fail with a Redis (I/O) error; state in memory.
    #[derive(Debug)]
    struct Switchable {
        inner: MemoryStore,
        down: AtomicBool,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Switchable {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                inner: MemoryStore::ephemeral(),
                down: AtomicBool::new(false),
                calls: Default::default(),
            })
        }

        fn set_down(&self, down: bool) {
            self.down.store(down, Ordering::SeqCst);
        }

        fn check(&self) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(BusError::Unavailable {
                    op: "fake",
                    source: "redis is down".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl StateStore for Switchable {
        async fn safety(&self, key: &str) -> Result<SafetyState> {
            self.check()?;
            self.inner.safety(key).await
        }
        async fn update_safety(
            &self,
            key: &str,
            update: &mut (dyn for<'s> FnMut(&'s mut SafetyState) + Send),
        ) -> Result<SafetyState> {
            self.check()?;
            self.inner.update_safety(key, update).await
        }
        async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
            self.check()?;
            self.inner.try_lock(key, owner, ttl).await
        }
        async fn unlock(&self, key: &str, owner: &str) -> Result<()> {
            self.check()?;
            self.inner.unlock(key, owner).await
        }
        async fn take_fleet_budget(
            &self,
            budget: &str,
            max: u32,
            per: Duration,
            id: &str,
        ) -> Result<bool> {
            self.check()?;
            self.inner.take_fleet_budget(budget, max, per, id).await
        }
        async fn append_audit(&self, record: AuditRecord) -> Result<()> {
            self.check()?;
            self.inner.append_audit(record).await
        }
        async fn audit_tail(&self, limit: usize) -> Result<Vec<AuditRecord>> {
            self.check()?;
            self.inner.audit_tail(limit).await
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn rec(id: &str, at: i64, outcome: Outcome) -> ActionRecord {
        ActionRecord {
            decision_id: id.into(),
            at: t(at),
            action: ActionKind::Restart,
            finding: "exited".into(),
            outcome,
        }
    }

    fn actions(state: &SafetyState) -> Vec<(String, Outcome)> {
        state
            .actions
            .iter()
            .map(|a| (a.decision_id.clone(), a.outcome))
            .collect()
    }

    fn fixture() -> (Arc<Switchable>, FallbackStore) {
        let remote = Switchable::new();
        let store = FallbackStore::new(remote.clone(), MemoryStore::ephemeral())
            .with_probe_every(Duration::ZERO);
        (remote, store)
    }

    fn audit(id: &str) -> AuditRecord {
        AuditRecord {
            decision_id: id.into(),
            timestamp: t(0),
            node: "n1".into(),
            container: "web".into(),
            container_id: "abc".into(),
            policy: "default".into(),
            action: "restart".into(),
            status: "success".into(),
            reason: "exited".into(),
            details: String::new(),
            action_started_at: None,
            gate: None,
        }
    }

    #[test]
    fn merge_rules() {
        use Outcome::{Failed, Pending, Succeeded};
        let state = |acts: Vec<ActionRecord>,
                     failures: Vec<i64>,
                     open: Option<i64>,
                     gave: Option<i64>| SafetyState {
            actions: acts,
            failures: failures.into_iter().map(t).collect(),
            open_until: open.map(t),
            gave_up_at: gave.map(t),
        };
        let empty = SafetyState::default();
        type Case = (&'static str, SafetyState, SafetyState, SafetyState);
        let cases: Vec<Case> = vec![
            (
                "empty with empty",
                empty.clone(),
                empty.clone(),
                empty.clone(),
            ),
            (
                "disjoint actions are united, oldest first",
                state(vec![rec("b", 20, Succeeded)], vec![], None, None),
                state(
                    vec![rec("a", 10, Pending), rec("c", 30, Pending)],
                    vec![],
                    None,
                    None,
                ),
                state(
                    vec![
                        rec("a", 10, Pending),
                        rec("b", 20, Succeeded),
                        rec("c", 30, Pending),
                    ],
                    vec![],
                    None,
                    None,
                ),
            ),
            (
                "same decision once; pending then succeeded is succeeded",
                state(vec![rec("a", 10, Pending)], vec![], None, None),
                state(vec![rec("a", 10, Succeeded)], vec![], None, None),
                state(vec![rec("a", 10, Succeeded)], vec![], None, None),
            ),
            (
                "failed on the left stays failed",
                state(vec![rec("a", 10, Failed)], vec![], None, None),
                state(vec![rec("a", 10, Succeeded)], vec![], None, None),
                state(vec![rec("a", 10, Failed)], vec![], None, None),
            ),
            (
                "failed on the right stays failed",
                state(vec![rec("a", 10, Pending)], vec![], None, None),
                state(vec![rec("a", 10, Failed)], vec![], None, None),
                state(vec![rec("a", 10, Failed)], vec![], None, None),
            ),
            (
                "failures united, equal timestamps once",
                state(vec![], vec![5, 10], None, None),
                state(vec![], vec![10, 7], None, None),
                state(vec![], vec![5, 7, 10], None, None),
            ),
            (
                "the later open_until and gave_up_at win",
                state(vec![], vec![], Some(100), Some(1)),
                state(vec![], vec![], Some(200), Some(0)),
                state(vec![], vec![], Some(200), Some(1)),
            ),
            (
                "a breaker known on one side only is kept",
                state(vec![], vec![], None, None),
                state(vec![], vec![], Some(50), Some(2)),
                state(vec![], vec![], Some(50), Some(2)),
            ),
        ];
        for (name, a, b, expected) in cases {
            assert_eq!(merge_safety(&a, &b), expected, "{name}");
            assert_eq!(merge_safety(&b, &a), expected, "{name} (commutative)");
            assert_eq!(merge_safety(&expected, &b), expected, "{name} (idempotent)");
        }
    }

    /// A Redis behind a partition: every call waits `delay`, then times out.
    #[derive(Debug)]
    struct Blackhole {
        delay: Duration,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Blackhole {
        async fn fail<T>(&self) -> Result<T> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            Err(BusError::Unavailable {
                op: "fake",
                source: "timed out".into(),
            })
        }
    }

    #[async_trait::async_trait]
    impl StateStore for Blackhole {
        async fn safety(&self, _: &str) -> Result<SafetyState> {
            self.fail().await
        }
        async fn update_safety(
            &self,
            _: &str,
            _: &mut (dyn for<'s> FnMut(&'s mut SafetyState) + Send),
        ) -> Result<SafetyState> {
            self.fail().await
        }
        async fn try_lock(&self, _: &str, _: &str, _: Duration) -> Result<bool> {
            self.fail().await
        }
        async fn unlock(&self, _: &str, _: &str) -> Result<()> {
            self.fail().await
        }
        async fn take_fleet_budget(&self, _: &str, _: u32, _: Duration, _: &str) -> Result<bool> {
            self.fail().await
        }
        async fn append_audit(&self, _: AuditRecord) -> Result<()> {
            self.fail().await
        }
        async fn audit_tail(&self, _: usize) -> Result<Vec<AuditRecord>> {
            self.fail().await
        }
    }

    #[tokio::test]
    async fn behind_a_partition_only_one_call_at_a_time_waits_for_redis() {
        let remote = Arc::new(Blackhole {
            delay: Duration::from_millis(600),
            calls: Default::default(),
        });
        let store = Arc::new(
            FallbackStore::new(remote.clone(), MemoryStore::ephemeral())
                .with_probe_every(Duration::from_millis(100)),
        );
        // The first call finds the outage (it waits the timeout once).
        store.safety("n1/web").await.unwrap();
        assert!(store.in_outage());
        tokio::time::sleep(Duration::from_millis(150)).await;
        // A probe starts and hangs; a reconcile's calls meanwhile are served locally at once.
        let probe = tokio::spawn({
            let store = store.clone();
            async move { store.safety("n1/probe").await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        for i in 0..5 {
            store
                .update_safety(&format!("n1/c{i}"), &mut |s| {
                    s.actions.push(rec("d", 0, Outcome::Pending))
                })
                .await
                .unwrap();
            store
                .try_lock(&format!("n1/c{i}"), "me", Duration::from_secs(1))
                .await
                .unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "calls during a probe waited for Redis: {:?}",
            started.elapsed()
        );
        probe.await.unwrap().unwrap();
        assert_eq!(
            remote.calls.load(Ordering::SeqCst),
            2,
            "one detection, one probe"
        );
        // After the probe failed, the next call a period later probes again.
        tokio::time::sleep(Duration::from_millis(150)).await;
        store.safety("n1/web").await.unwrap();
        assert_eq!(remote.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn while_redis_answers_updates_go_to_it_and_are_mirrored_locally() {
        let (remote, store) = fixture();
        store
            .update_safety("n1/web", &mut |s| {
                s.actions.push(rec("d1", 0, Outcome::Pending))
            })
            .await
            .unwrap();
        assert_eq!(
            actions(&remote.inner.safety("n1/web").await.unwrap()).len(),
            1
        );
        assert_eq!(
            store.local().safety("n1/web").await.unwrap(),
            remote.inner.safety("n1/web").await.unwrap()
        );
        assert!(store.dirty_keys().is_empty());
        assert!(!store.in_outage());
        // A state written before this store existed is mirrored when it is first read.
        remote
            .inner
            .update_safety("n1/old", &mut |s| s.open_until = Some(t(99)))
            .await
            .unwrap();
        store.safety("n1/old").await.unwrap();
        assert_eq!(
            store.local().safety("n1/old").await.unwrap().open_until,
            Some(t(99))
        );
    }

    #[tokio::test]
    async fn during_an_outage_reads_and_updates_use_the_local_view_and_mark_the_key_dirty() {
        let (remote, store) = fixture();
        store
            .update_safety("n1/web", &mut |s| {
                s.actions.push(rec("d1", 0, Outcome::Succeeded))
            })
            .await
            .unwrap();
        remote.set_down(true);
        let read = store.safety("n1/web").await.unwrap();
        assert_eq!(
            read.actions.last().unwrap().decision_id,
            "d1",
            "cooldown input still known"
        );
        assert!(store.in_outage());
        let after = store
            .update_safety("n1/web", &mut |s| {
                s.actions.push(rec("d2", 60, Outcome::Pending))
            })
            .await
            .unwrap();
        assert_eq!(after.actions.len(), 2);
        assert_eq!(store.dirty_keys(), ["n1/web"]);
        assert_eq!(store.safety("n1/web").await.unwrap().actions.len(), 2);
        assert_eq!(
            remote.inner.safety("n1/web").await.unwrap().actions.len(),
            1
        );
    }

    #[tokio::test]
    async fn the_first_successful_call_after_an_outage_merges_dirty_keys_into_the_remote() {
        let (remote, store) = fixture();
        store
            .update_safety("n1/web", &mut |s| {
                s.actions.push(rec("d1", 0, Outcome::Pending))
            })
            .await
            .unwrap();
        remote.set_down(true);
        store
            .update_safety("n1/web", &mut |s| {
                s.finish("d1", Outcome::Failed, t(30));
                s.actions.push(rec("d2", 60, Outcome::Pending));
            })
            .await
            .unwrap();
        // Meanwhile the remote learnt something else (another writer, or an update that
        // reached Redis before the connection broke).
        remote
            .inner
            .update_safety("n1/web", &mut |s| {
                s.actions[0].outcome = Outcome::Succeeded;
                s.actions.push(rec("d2", 60, Outcome::Pending));
                s.open_until = Some(t(500));
            })
            .await
            .unwrap();
        remote.set_down(false);
        // Any successful call pushes, here a lock on another key.
        assert!(
            store
                .try_lock("n1/other", "me", Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert!(store.dirty_keys().is_empty());
        let merged = remote.inner.safety("n1/web").await.unwrap();
        assert_eq!(
            actions(&merged),
            [
                ("d1".to_owned(), Outcome::Failed),
                ("d2".to_owned(), Outcome::Pending)
            ]
        );
        assert_eq!(merged.failures, [t(30)]);
        assert_eq!(merged.open_until, Some(t(500)));
        assert_eq!(store.local().safety("n1/web").await.unwrap(), merged);
    }

    #[tokio::test]
    async fn a_dirty_key_is_merged_before_the_remote_serves_or_updates_it() {
        for via_update in [false, true] {
            let (remote, store) = fixture();
            store
                .update_safety("k", &mut |s| s.actions.push(rec("d1", 0, Outcome::Pending)))
                .await
                .unwrap();
            remote.set_down(true);
            store
                .update_safety("k", &mut |s| {
                    s.actions.push(rec("d2", 10, Outcome::Pending))
                })
                .await
                .unwrap();
            remote.set_down(false);
            let state = if via_update {
                store
                    .update_safety("k", &mut |s| {
                        s.actions.push(rec("d3", 20, Outcome::Pending))
                    })
                    .await
                    .unwrap()
            } else {
                store.safety("k").await.unwrap()
            };
            let expected: &[&str] = if via_update {
                &["d1", "d2", "d3"]
            } else {
                &["d1", "d2"]
            };
            let ids: Vec<_> = state
                .actions
                .iter()
                .map(|a| a.decision_id.as_str())
                .collect();
            assert_eq!(ids, expected, "via_update={via_update}");
            assert_eq!(remote.inner.safety("k").await.unwrap(), state);
            assert!(store.dirty_keys().is_empty());
        }
    }

    #[tokio::test]
    async fn the_background_resync_pushes_without_any_call() {
        let remote = Switchable::new();
        let store = Arc::new(FallbackStore::new(remote.clone(), MemoryStore::ephemeral()));
        remote.set_down(true);
        store
            .update_safety("k", &mut |s| s.actions.push(rec("d1", 0, Outcome::Pending)))
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let task = store.spawn_resync(Duration::from_millis(10), shutdown.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.dirty_keys(), ["k"], "nothing pushed while down");
        remote.set_down(false);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !store.dirty_keys().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "re-synced in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(remote.inner.safety("k").await.unwrap().actions.len(), 1);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn an_operator_restarted_during_an_outage_still_merges_what_it_did() {
        let dir = tempfile::tempdir().unwrap();
        let remote = Switchable::new();
        remote.set_down(true);
        {
            let store = FallbackStore::new(remote.clone(), MemoryStore::open(dir.path()).unwrap())
                .with_journal(dir.path())
                .unwrap();
            store
                .update_safety("k", &mut |s| s.actions.push(rec("d1", 0, Outcome::Pending)))
                .await
                .unwrap();
            store.append_audit(audit("a1")).await.unwrap();
        }
        let store = FallbackStore::new(remote.clone(), MemoryStore::open(dir.path()).unwrap())
            .with_journal(dir.path())
            .unwrap();
        assert_eq!(store.dirty_keys(), ["k"]);
        assert_eq!(store.audit_backlog_len(), 1);
        remote.set_down(false);
        store.resync().await.unwrap();
        assert_eq!(remote.inner.safety("k").await.unwrap().actions.len(), 1);
        assert_eq!(remote.inner.audit_tail(10).await.unwrap().len(), 1);
        let reopened = FallbackStore::new(remote.clone(), MemoryStore::ephemeral())
            .with_journal(dir.path())
            .unwrap();
        assert!(reopened.dirty_keys().is_empty(), "the journal was emptied");
        assert_eq!(reopened.audit_backlog_len(), 0);
        assert!(!dir.path().join("fallback.json.tmp").exists());
    }

    #[tokio::test]
    async fn during_an_outage_redis_is_asked_once_per_probe_period() {
        let remote = Switchable::new();
        let store = FallbackStore::new(remote.clone(), MemoryStore::ephemeral())
            .with_probe_every(Duration::from_secs(3600));
        remote.set_down(true);
        store.safety("k").await.unwrap();
        let asked = remote.calls.load(Ordering::SeqCst);
        store
            .update_safety("k", &mut |s| s.actions.push(rec("d1", 0, Outcome::Pending)))
            .await
            .unwrap();
        assert!(
            store
                .try_lock("k", "me", Duration::from_secs(5))
                .await
                .unwrap()
        );
        store.unlock("k", "me").await.unwrap();
        store.append_audit(audit("a1")).await.unwrap();
        assert!(store.audit_tail(5).await.is_ok());
        assert!(
            store
                .take_fleet_budget("p", 5, Duration::from_secs(60), "x")
                .await
                .is_err()
        );
        assert_eq!(
            remote.calls.load(Ordering::SeqCst),
            asked,
            "not asked again"
        );
        assert_eq!(store.safety("k").await.unwrap().actions.len(), 1);
        // The re-sync always asks, and ends the outage.
        remote.set_down(false);
        store.resync().await.unwrap();
        assert!(!store.in_outage());
        assert_eq!(remote.inner.safety("k").await.unwrap().actions.len(), 1);
        assert_eq!(remote.inner.audit_tail(5).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn locks_fall_back_to_this_node_and_unlock_releases_both() {
        let (remote, store) = fixture();
        let ttl = Duration::from_secs(60);
        remote.set_down(true);
        assert!(store.try_lock("k", "a", ttl).await.unwrap());
        assert!(
            !store.try_lock("k", "b", ttl).await.unwrap(),
            "held locally"
        );
        store.unlock("k", "a").await.unwrap();
        assert!(store.try_lock("k", "b", ttl).await.unwrap());
        store.unlock("k", "b").await.unwrap();
        remote.set_down(false);
        assert!(store.try_lock("k", "a", ttl).await.unwrap());
        assert!(
            !remote.inner.try_lock("k", "b", ttl).await.unwrap(),
            "held in the remote"
        );
        store.unlock("k", "a").await.unwrap();
        assert!(remote.inner.try_lock("k", "b", ttl).await.unwrap());
    }

    #[tokio::test]
    async fn the_fleet_budget_is_refused_during_an_outage() {
        let (remote, store) = fixture();
        let per = Duration::from_secs(60);
        assert!(store.take_fleet_budget("p", 5, per, "a").await.unwrap());
        remote.set_down(true);
        let err = store.take_fleet_budget("p", 5, per, "b").await.unwrap_err();
        assert!(matches!(err, BusError::Unavailable { .. }), "{err}");
        remote.set_down(false);
        assert!(store.take_fleet_budget("p", 5, per, "c").await.unwrap());
    }

    #[tokio::test]
    async fn audit_records_of_an_outage_are_kept_locally_then_appended_in_order() {
        let (remote, store) = fixture();
        store.append_audit(audit("a1")).await.unwrap();
        remote.set_down(true);
        store.append_audit(audit("a2")).await.unwrap();
        store.append_audit(audit("a3")).await.unwrap();
        assert_eq!(store.audit_backlog_len(), 2);
        let local: Vec<_> = store
            .audit_tail(10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.decision_id)
            .collect();
        assert_eq!(local, ["a2", "a3"]);
        remote.set_down(false);
        store.append_audit(audit("a4")).await.unwrap();
        assert_eq!(store.audit_backlog_len(), 0);
        let tail: Vec<_> = remote
            .inner
            .audit_tail(10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.decision_id)
            .collect();
        assert_eq!(tail, ["a1", "a2", "a3", "a4"]);
    }
}
