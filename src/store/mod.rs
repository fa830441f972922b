//! Shared state: the `StateStore` trait (safety state, in-flight locks, fleet budgets, the audit
//! trail), its error, and the stores that are not an adapter.
//!
//! The in-memory store ([`memory`]) is the embedded default and the tests' fake; it persists
//! the safety state atomically ([`atomic_file`]) under `--state-dir` so a restarted operator
//! does not forget cooldowns and breakers. With Redis, [`fallback::FallbackStore`] keeps a
//! local copy and serves it while Redis is unreachable.

pub(crate) mod atomic_file;
pub(crate) mod dir_lock;
pub mod fallback;
pub mod memory;

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use crate::model::audit::AuditRecord;
use crate::model::safety::SafetyState;

/// A boxed error from a transport, so that [`StoreError`] names none.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of a state store. It names no transport: an adapter boxes its own error into
/// [`StoreError::Unavailable`] or [`StoreError::Refused`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state file could not be read or written.
    #[error("state file {path}: {source}")]
    Persist {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state file holds something that is not HemoStat state.
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The shared store is unreachable (connection refused, dropped, timed out): the outage
    /// path applies.
    #[error("redis {op}: {source}")]
    Unavailable {
        /// What was being done.
        op: &'static str,
        /// Why (the transport's error; this type names no transport).
        #[source]
        source: BoxError,
    },
    /// The shared store answered with an error (a key of the wrong type, a script error…):
    /// not an outage.
    #[error("redis {op}: {source}")]
    Refused {
        /// What was being done.
        op: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Redis is unreachable (connection refused, dropped, timed out): the outage path applies.
    /// An error *reply* (`WRONGTYPE`, `ERR`…) is not an outage: Redis answered, and falling
    /// back to a local view then would let two operators act on one failure.
    pub(crate) fn is_outage(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Persist { .. } => "state_persist",
            Self::Corrupt { .. } => "state_corrupt",
            Self::Unavailable { .. } | Self::Refused { .. } => "redis",
        }
    }
}

/// Values found in the shared store that are not HemoStat's (a key of the wrong type, an entry
/// that is not JSON of the expected shape): each key is reported once, logged and counted in
/// `hemostat_store_bad_values_total`; the value is skipped or replaced, never acted on twice.
pub static BAD_VALUES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Keys already reported (bounded).
static REPORTED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// Reports a bad value at `key` once: a warning with what was done, and the counter.
pub(crate) fn report_bad_value(key: &str, problem: &str, handling: &str) {
    let first = {
        let mut reported = REPORTED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if reported.len() >= 4096 {
            reported.clear();
        }
        reported.insert(key.to_owned())
    };
    if first {
        BAD_VALUES.inc();
        tracing::warn!(
            key = %crate::util::printable::printable(key),
            problem = %crate::util::printable::printable(problem),
            handling,
            "a value in the shared store is not HemoStat's (reported once per key): delete or fix the key"
        );
    } else {
        tracing::debug!(key = %crate::util::printable::printable(key), problem, "bad value in the shared store, again");
    }
}

/// The result type of this module.
pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Shared state: per-container safety state, in-flight locks and the audit trail.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The safety state of a container (empty when none is known).
    async fn safety(&self, key: &str) -> Result<SafetyState>;
    /// Changes the safety state of a container atomically and makes it durable before returning.
    async fn update_safety(
        &self,
        key: &str,
        update: &mut (dyn for<'s> FnMut(&'s mut SafetyState) + Send),
    ) -> Result<SafetyState>;
    /// Takes the in-flight lock of a container for `ttl`; false when someone else holds it.
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool>;
    /// Releases the lock if `owner` holds it.
    async fn unlock(&self, key: &str, owner: &str) -> Result<()>;
    /// Takes one action from the fleet-wide budget `budget` (a policy name): true when fewer
    /// than `max` actions were taken in the last `per`, in which case this one is counted,
    /// atomically across every operator sharing the store.
    async fn take_fleet_budget(
        &self,
        budget: &str,
        max: u32,
        per: Duration,
        id: &str,
    ) -> Result<bool>;
    /// Appends to the audit trail.
    async fn append_audit(&self, record: AuditRecord) -> Result<()>;
    /// The newest audit records, newest last.
    async fn audit_tail(&self, limit: usize) -> Result<Vec<AuditRecord>>;
}
