//! What the loop, the watcher, the sampler and the HTTP server share.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::queue::WorkQueue;
use crate::bus::EventSink;
use crate::engine::ContainerEngine;
use crate::observe::acting::Acting;
use crate::observe::store::ObservedStore;
use crate::policy::registry::PolicyRegistry;
use crate::respond::Responder;
use crate::store::StateStore;

/// Settings of the loop.
#[derive(Clone, Debug)]
pub(crate) struct ControllerConfig {
    /// This node's name, in every payload and safety key.
    pub node: String,
    /// Full re-list period: the engine's list (no inspections) is compared with the last
    /// inspections every `resync`, and what differs is inspected and reconciled at once.
    pub resync: Duration,
    /// Resource sampling period.
    pub sample_interval: Duration,
    /// Reconciles running at once.
    pub max_concurrent: usize,
    /// Only containers with this label (`key=value`) are observed.
    pub label_filter: Option<String>,
}

/// A container is inspected and reconciled at least every this many resyncs (30 min at the
/// default 30 s), even when no event and no list shows a change. A list shows a change of
/// state, health or name, and a restart whose events were lost (its uptime is not the
/// inspected run's, [`crate::model::container::ContainerSummary::differs_from`]); an `update`
/// event tells of new limits. This bound is for what none of them can tell.
pub const REINSPECT_EVERY_RESYNCS: u32 = 60;

impl ControllerConfig {
    /// The longest a container goes without an inspection and a reconcile.
    pub fn reinspect(&self) -> Duration {
        self.resync.saturating_mul(REINSPECT_EVERY_RESYNCS)
    }

    /// True when the container carries the operator's `--label-filter` (or there is none).
    pub(crate) fn in_scope(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.label_filter
            .as_deref()
            .is_none_or(|f| crate::policy::select::LabelFilter::parse(f).matches(labels))
    }
}

/// What was last decided and announced for a container, so a persisting problem is announced
/// once, and acted on again only when a gate's wait is over.
#[derive(Clone, Debug, Default)]
pub(crate) struct Handled {
    /// Identifies the problem: finding, action, and the container's life.
    pub signature: super::announce::Signature,
    /// When the same problem may be acted on again.
    pub retry_at: Option<DateTime<Utc>>,
    /// Consecutive failed reconciles (for `error_policy`).
    pub failures: u32,
    /// A transient spike's container went below its thresholds then: the spike episode lasts
    /// until it has stayed there for [`super::announce::SPIKE_EPISODE_QUIET`].
    pub quiet_since: Option<DateTime<Utc>>,
}

/// The newest decision ids this process produced, so that its own `remediation_needed`
/// envelopes, read back from Redis, are recognised and never acted on twice.
#[derive(Debug, Default)]
pub(crate) struct OwnDecisions {
    inner: Mutex<(VecDeque<String>, HashSet<String>)>,
}

impl OwnDecisions {
    /// How many ids are remembered.
    pub(crate) const CAPACITY: usize = 4096;

    /// Remembers an id (forgetting the oldest beyond [`Self::CAPACITY`]).
    pub(crate) fn insert(&self, id: &str) {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (order, set) = &mut *guard;
        if set.insert(id.to_owned()) {
            order.push_back(id.to_owned());
        }
        while order.len() > Self::CAPACITY {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }

    /// Whether this process produced `id`.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .contains(id)
    }
}

/// Shared by every part of the running operator.
pub(crate) struct Context {
    /// The engine.
    pub docker: Arc<dyn ContainerEngine>,
    /// Shared state.
    pub store: Arc<dyn StateStore>,
    /// Where envelopes go.
    pub sink: Arc<dyn EventSink>,
    /// The policies in force.
    pub policies: Arc<PolicyRegistry>,
    /// The observed containers.
    pub observed: Arc<ObservedStore>,
    /// Carries out decisions.
    pub responder: Responder,
    /// Which containers HemoStat is acting on.
    pub acting: Arc<Acting>,
    /// The work queue, keyed by container id.
    pub queue: WorkQueue<String>,
    /// True after the first full container list.
    pub ready: Arc<AtomicBool>,
    /// Settings.
    pub config: ControllerConfig,
    /// Last handled problem per container id. A std mutex: never held across an await.
    pub handled: Mutex<HashMap<String, Handled>>,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Decision ids this process produced.
    pub own_decisions: OwnDecisions,
    /// The LLM analyzer for `analysis.mode: ai`, when a model is configured.
    pub ai: Option<Arc<crate::analyze::llm::AiAnalyzer>>,
}
