//! Where decisions, events and shared state go: the `StateStore` and `EventSink` traits.
//!
//! The in-memory implementation ([`memory`]) is the embedded default and the tests' fake; it
//! persists the safety state atomically under `--state-dir` so a restarted operator does not
//! forget cooldowns and breakers. With Redis, [`fallback::FallbackStore`] keeps a local copy
//! and serves it while Redis is unreachable.

pub mod envelope;
pub mod fallback;
pub mod memory;

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

pub use crate::model::audit::AuditRecord;
use prometheus_client::metrics::counter::Counter;

pub use envelope::{Envelope, EventType};

use crate::model::safety::SafetyState;

/// A boxed error from a transport, so that [`BusError`] names none.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of a store or sink.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
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
    /// The Redis settings are unusable (never contains the password).
    #[error("redis configuration: {reason}")]
    RedisConfig {
        /// What is wrong.
        reason: String,
    },
}

impl BusError {
    /// Redis is unreachable (connection refused, dropped, timed out): the outage path applies.
    /// An error *reply* (`WRONGTYPE`, `ERR`…) is not an outage: Redis answered, and falling
    /// back to a local view then would let two operators act on one failure.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Persist { .. } => "state_persist",
            Self::Corrupt { .. } => "state_corrupt",
            Self::Unavailable { .. } | Self::Refused { .. } => "redis",
            Self::RedisConfig { .. } => "redis_config",
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
pub fn report_bad_value(key: &str, problem: &str, handling: &str) {
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
pub type Result<T, E = BusError> = std::result::Result<T, E>;

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

/// Where envelopes are published.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Publishes one envelope; never blocks the caller on a slow consumer.
    async fn publish(&self, envelope: Envelope);
    /// The newest envelopes, newest last, optionally of one type.
    async fn recent(&self, event_type: Option<EventType>, limit: usize) -> Vec<Envelope>;
    /// Publishes a container's latest metrics (the original's `hemostat:stats:<container>`);
    /// sinks without such a key ignore it.
    async fn put_stats(&self, _container: &str, _node: &str, _stats: serde_json::Value) {}
    /// Live envelopes from now on, for in-process consumers (alerts, the dashboard's event
    /// stream). A receiver that falls behind misses envelopes (`RecvError::Lagged`) rather
    /// than slowing HemoStat down.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Envelope>;
}

/// How many envelopes a live subscriber may fall behind before it misses some.
pub const LIVE_CAPACITY: usize = 1024;
