//! Where decisions, events and shared state go: the `StateStore` and `EventSink` traits.
//!
//! The in-memory implementation ([`memory`]) is the embedded default and the tests' fake; it
//! persists the safety state atomically under `--state-dir` so a restarted operator does not
//! forget cooldowns and breakers. With Redis, [`fallback::FallbackStore`] keeps a local copy
//! and serves it while Redis is unreachable.

pub mod envelope;
pub mod fallback;
pub mod memory;
pub mod redis;

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

pub use envelope::{Envelope, EventType};

use crate::respond::safety::SafetyState;

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
    /// A Redis command failed (Redis unreachable, refused, or answered with an error).
    #[error("redis {op}: {source}")]
    Redis {
        /// What was being done.
        op: &'static str,
        /// Why.
        #[source]
        source: ::redis::RedisError,
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
        matches!(self, Self::Redis { source, .. } if self::redis::is_connection_error(source))
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Persist { .. } => "state_persist",
            Self::Corrupt { .. } => "state_corrupt",
            Self::Redis { .. } => "redis",
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
            key = %crate::policy::remote::printable(key),
            problem = %crate::policy::remote::printable(problem),
            handling,
            "a value in the shared store is not HemoStat's (reported once per key): delete or fix the key"
        );
    } else {
        tracing::debug!(key = %crate::policy::remote::printable(key), problem, "bad value in the shared store, again");
    }
}

/// The result type of this module.
pub type Result<T, E = BusError> = std::result::Result<T, E>;

/// One audited responder outcome (what `remediation_complete` announces).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The decision it belongs to.
    pub decision_id: String,
    /// When it ended.
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// The node that acted.
    pub node: String,
    /// Container name.
    pub container: String,
    /// Container id.
    pub container_id: String,
    /// The governing policy.
    pub policy: String,
    /// The action.
    pub action: String,
    /// `success`, `failed`, `rejected` or `dry_run`.
    pub status: String,
    /// Why it was decided.
    pub reason: String,
    /// What happened, or why it was refused.
    pub details: String,
    /// When the call to the engine started (for actions that ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Which gate refused it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
}

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
