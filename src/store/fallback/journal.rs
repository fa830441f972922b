//! What an outage leaves for Redis (the dirty keys, the audit backlog) and its copy in
//! `<state-dir>/fallback.json`, so an operator restarted during an outage still merges it.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::model::audit::AuditRecord;
use crate::store::Result;
use crate::store::atomic_file::{read_json_or_default, write_json_atomic};
use crate::store::memory::RETAINED;

/// The journal's file name under the state directory.
pub(crate) const JOURNAL_FILE: &str = "fallback.json";

/// What waits for Redis, as written to the journal.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    dirty: BTreeSet<String>,
    audit_backlog: VecDeque<AuditRecord>,
}

/// What waits for Redis, in memory, written to the journal file (when there is one) whenever
/// it changes.
#[derive(Debug, Default)]
pub(super) struct Journal {
    /// Keys changed locally during an outage, not yet merged into the remote.
    dirty: Mutex<HashSet<String>>,
    /// Audit records appended locally during an outage, oldest first.
    backlog: Mutex<VecDeque<AuditRecord>>,
    /// Where the dirty keys and the audit backlog are persisted, if anywhere.
    path: Option<PathBuf>,
    /// Serialises journal writes.
    write: Mutex<()>,
}

/// A std mutex held for in-memory work only; a poisoned one is still used (its data is plain).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Journal {
    /// Persists to `<dir>/fallback.json` from now on, first loading what an earlier run left.
    pub(super) fn open(&mut self, dir: impl Into<PathBuf>) -> Result<()> {
        let path = dir.into().join(JOURNAL_FILE);
        let saved: Saved = read_json_or_default(&path)?;
        if !saved.dirty.is_empty() || !saved.audit_backlog.is_empty() {
            tracing::info!(
                dirty = saved.dirty.len(),
                audit_backlog = saved.audit_backlog.len(),
                "an earlier run left changes for redis; they are merged when it answers"
            );
        }
        self.dirty
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(saved.dirty);
        self.backlog
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(saved.audit_backlog);
        self.path = Some(path);
        Ok(())
    }

    /// Writes the journal (temp file, fsync, rename); a failure is logged, not returned: the
    /// local state itself is already durable.
    fn save(&self) {
        let Some(path) = &self.path else {
            return;
        };
        let _one = lock(&self.write);
        let saved = Saved {
            dirty: lock(&self.dirty).iter().cloned().collect(),
            audit_backlog: lock(&self.backlog).clone(),
        };
        if let Err(e) = write_json_atomic(path, &saved) {
            tracing::warn!(path = %path.display(), error = %e, "could not write the fallback journal");
        }
    }

    /// Marks `key` as changed locally.
    pub(super) fn mark_dirty(&self, key: &str) {
        let added = lock(&self.dirty).insert(key.to_owned());
        if added {
            self.save();
        }
    }

    /// `key` was merged into the remote.
    pub(super) fn clear_dirty(&self, key: &str) {
        let removed = lock(&self.dirty).remove(key);
        if removed {
            self.save();
        }
    }

    pub(super) fn is_dirty(&self, key: &str) -> bool {
        lock(&self.dirty).contains(key)
    }

    /// Keys changed locally and not yet merged into the remote, sorted.
    pub(super) fn dirty_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = lock(&self.dirty).iter().cloned().collect();
        keys.sort();
        keys
    }

    /// Queues an audit record for the remote; past [`RETAINED`] the oldest is dropped.
    pub(super) fn push_audit(&self, record: AuditRecord) {
        {
            let mut backlog = lock(&self.backlog);
            backlog.push_back(record);
            while backlog.len() > RETAINED {
                backlog.pop_front();
                tracing::warn!(
                    "audit backlog full: dropped its oldest record (it stays in the local trail)"
                );
            }
        }
        self.save();
    }

    /// The oldest audit record waiting for the remote.
    pub(super) fn oldest_audit(&self) -> Option<AuditRecord> {
        lock(&self.backlog).front().cloned()
    }

    /// The oldest audit record reached the remote.
    pub(super) fn pop_audit(&self) {
        lock(&self.backlog).pop_front();
        self.save();
    }

    /// Audit records waiting for the remote.
    pub(super) fn backlog_len(&self) -> usize {
        lock(&self.backlog).len()
    }

    /// Whether anything waits for the remote.
    pub(super) fn has_pending(&self) -> bool {
        !lock(&self.dirty).is_empty() || self.backlog_len() > 0
    }
}
