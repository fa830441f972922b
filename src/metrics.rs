//! HemoStat's Prometheus metrics (`hemostat_*`), recorded by the loop and served on `/metrics`.
//!
//! Beside them: the standard `process_*` metrics ([`process`]), `hemostat_build_info`, and the
//! state of the Redis outbox and outage store, read at every scrape through
//! [`Metrics::set_store_reader`]. `/metrics` answers OpenMetrics or the Prometheus text format
//! 0.0.4, as the scraper's `Accept` asks ([`Format::negotiate`]).

pub(crate) mod process;

use std::sync::OnceLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::model::decision::ActionKind;
use crate::model::wire::EventType;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `Content-Type` of the Prometheus text format.
pub(crate) const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition formats `/metrics` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    PrometheusText,
}

impl Format {
    /// The format an `Accept` header prefers (by q-value; OpenMetrics on a tie, when the header
    /// names neither, or when there is none).
    pub(crate) fn negotiate(accept: &str) -> Self {
        let (mut open, mut text) = (0.0f64, 0.0f64);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f64>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => open = open.max(q),
                "text/plain" => text = text.max(q),
                _ => {}
            }
        }
        if text > open {
            Self::PrometheusText
        } else {
            Self::OpenMetrics
        }
    }

    /// The `Content-Type` of the answer.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Self::PrometheusText => PROMETHEUS_TEXT_CONTENT_TYPE,
        }
    }
}

/// Rewrites an OpenMetrics text exposition into the Prometheus text format 0.0.4: counters are
/// described under their `_total` sample name, `# UNIT` lines and `# EOF` go.
pub(crate) fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].into_iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        match described {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// What the Redis outbox and the outage store report at a scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StoreReading {
    /// Envelopes waiting in the Redis outbox.
    pub outbox_length: usize,
    /// Envelopes dropped since start (outbox full, or Redis kept refusing them).
    pub outbox_dropped: u64,
    /// Redis is unreachable and the local view serves the safety state.
    pub outage: bool,
    /// Safety keys changed locally during an outage, not yet merged into Redis.
    pub dirty_keys: usize,
}

/// Reads the store's state at a scrape.
pub(crate) type StoreReader = Box<dyn Fn() -> StoreReading + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    arch: String,
    os: String,
}

/// The prefix of every metric.
pub(crate) const PREFIX: &str = "hemostat";

/// What triggers a rescan of the policy files, the `trigger` label of
/// `hemostat_policy_reloads_total` (the file source's `Trigger` names).
pub(crate) const POLICY_RELOAD_TRIGGERS: [&str; 3] = ["watch", "rescan", "sighup"];

/// The responder's outcomes, the `status` label of `hemostat_actions_total`.
pub(crate) const ACTION_STATUSES: [&str; 4] = ["success", "failed", "rejected", "dry_run"];

/// Buckets of the responder's actions: a restart waits for a graceful stop (10 s by default)
/// and then for the container to come back (30 s by default).
const ACTION_BUCKETS: [f64; 11] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionStatusLabels {
    action: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    gate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderResultLabels {
    provider: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderKindLabels {
    provider: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

/// Buckets of a model's answer time: 50 ms to 2 min.
const AI_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

fn ai_buckets() -> Histogram {
    Histogram::new(AI_BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_buckets() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn reconcile_buckets() -> Histogram {
    // 1 ms to about 65 s: a reconcile that repairs waits for the 30 s verification window.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn action_buckets() -> Histogram {
    Histogram::new(ACTION_BUCKETS)
}

/// Every HemoStat metric, and the registry that exposes them. Shared (`Arc<Metrics>`) by the
/// reconcile loop, the sampler, the watcher and the HTTP server; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    /// Owns a handle to every metric below (the handles are shared `Arc`s inside).
    registry: Registry,
    reconciles: Counter,
    reconcile_errors: Family<ErrorLabels, Counter>,
    decisions: Family<TypeLabels, Counter>,
    actions: Family<ActionStatusLabels, Counter>,
    refusals: Family<GateLabels, Counter>,
    external_requests: Family<ResultLabels, Counter>,
    docker_events: Family<ActionLabels, Counter>,
    watch_restarts: Counter,
    exits_decided_from_events: Counter,
    containers_observed: Gauge,
    queue_depth: Gauge,
    in_flight: Gauge,
    ready: Gauge,
    breakers_open: Gauge,
    policy_reloads: Family<TriggerLabels, Counter>,
    policy_problems: Counter,
    policies_last_good: Gauge,
    /// Safety keys whose breaker was last seen open. A std mutex: never held across an await.
    open_breakers: std::sync::Mutex<std::collections::HashSet<String>>,
    reconcile_duration: Histogram,
    sample_pass_duration: Histogram,
    action_duration: HistogramFamily<ActionLabels>,
    build_info: Family<BuildLabels, Gauge>,
    redis_outbox_length: Gauge,
    redis_outbox_dropped: Counter,
    redis_outage: Gauge,
    fallback_dirty_keys: Gauge,
    /// Read at every scrape; set once by `hemostat run` when Redis is configured.
    store_reader: ReaderSlot,
    /// The `process_*` metrics (not under the `hemostat_` prefix).
    process: Registry,
    ai_requests: Family<ProviderResultLabels, Counter>,
    ai_tokens: Family<ProviderKindLabels, Counter>,
    ai_latency: HistogramFamily<ProviderLabels>,
}

/// Holds the [`StoreReader`] (a closure, hence the hand-written `Debug`).
#[derive(Default)]
struct ReaderSlot(OnceLock<StoreReader>);

impl std::fmt::Debug for ReaderSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "StoreReader"
        } else {
            "None"
        })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under `hemostat_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let mut m = Self {
            reconciles: Counter::default(),
            reconcile_errors: Family::default(),
            decisions: Family::default(),
            actions: Family::default(),
            refusals: Family::default(),
            external_requests: Family::default(),
            docker_events: Family::default(),
            watch_restarts: Counter::default(),
            exits_decided_from_events: Counter::default(),
            containers_observed: Gauge::default(),
            queue_depth: Gauge::default(),
            in_flight: Gauge::default(),
            ready: Gauge::default(),
            breakers_open: Gauge::default(),
            policy_reloads: Family::default(),
            policy_problems: Counter::default(),
            policies_last_good: Gauge::default(),
            open_breakers: Default::default(),
            reconcile_duration: reconcile_buckets(),
            sample_pass_duration: duration_buckets(),
            action_duration: Family::new_with_constructor(action_buckets),
            build_info: Family::default(),
            redis_outbox_length: Gauge::default(),
            redis_outbox_dropped: Counter::default(),
            redis_outage: Gauge::default(),
            fallback_dirty_keys: Gauge::default(),
            store_reader: ReaderSlot::default(),
            process: Registry::default(),
            ai_requests: Family::default(),
            ai_tokens: Family::default(),
            ai_latency: Family::new_with_constructor(ai_buckets),
            registry: Registry::default(),
        };
        m.process
            .register_collector(Box::new(process::ProcessCollector));
        m.register_counters(&mut registry);
        m.register_gauges(&mut registry);
        m.register_histograms(&mut registry);
        m.register_build_and_store(&mut registry);
        m.zero_series();
        m.registry = registry;
        m
    }

    /// `hemostat_build_info`, and the Redis outbox and outage store (read at every scrape).
    fn register_build_and_store(&self, registry: &mut Registry) {
        registry.register(
            "build_info",
            "Always 1; the labels tell the HemoStat version and platform",
            self.build_info.clone(),
        );
        self.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                arch: std::env::consts::ARCH.to_owned(),
                os: std::env::consts::OS.to_owned(),
            })
            .set(1);
        registry.register(
            "redis_outbox_length",
            "Envelopes waiting in the Redis outbox (0 without Redis)",
            self.redis_outbox_length.clone(),
        );
        registry.register(
            "redis_outbox_dropped",
            "Envelopes the Redis outbox dropped (full, or refused by Redis)",
            self.redis_outbox_dropped.clone(),
        );
        registry.register(
            "redis_outage",
            "1 while Redis is unreachable and this node's local view serves the safety state",
            self.redis_outage.clone(),
        );
        registry.register(
            "fallback_dirty_keys",
            "Safety keys changed locally during a Redis outage, not yet merged into Redis",
            self.fallback_dirty_keys.clone(),
        );
    }

    /// Counters (their `_total` suffix comes from the encoder).
    fn register_counters(&self, registry: &mut Registry) {
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "reconciles",
            "Reconciles of one container",
            self.reconciles.clone(),
        );
        registry.register(
            "store_bad_values",
            "Keys of the shared store holding something that is not HemoStat's (wrong type, junk), each reported once",
            crate::store::BAD_VALUES.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "decisions",
            "Analyzer outcomes, by envelope type",
            self.decisions.clone(),
        );
        registry.register(
            "actions",
            "Responder outcomes, by action and status (success, failed, rejected, dry_run)",
            self.actions.clone(),
        );
        registry.register(
            "refusals",
            "Actions refused by a safety gate, by gate",
            self.refusals.clone(),
        );
        registry.register(
            "ai_requests",
            "LLM analyses, by provider and result (ok, cached, busy, circuit_open, timeout, \
             http_error, unreachable, refusal, truncated, malformed, invalid, not_allowed, \
             low_confidence)",
            self.ai_requests.clone(),
        );
        registry.register(
            "ai_tokens",
            "Tokens billed by the LLM provider, by kind (input, output)",
            self.ai_tokens.clone(),
        );
        registry.register(
            "external_requests",
            "Remediation requests received from other tools (--accept-external-requests), by \
             result (accepted, refused_<reason>, ignored_<reason>)",
            self.external_requests.clone(),
        );
        registry.register(
            "docker_events",
            "Docker container events received, by action",
            self.docker_events.clone(),
        );
        registry.register(
            "watch_restarts",
            "Times the Docker watch broke and was restarted (re-list, then events)",
            self.watch_restarts.clone(),
        );
        registry.register(
            "exits_decided_from_events",
            "Exits decided from the die event's exit code, before any inspection confirmed them",
            self.exits_decided_from_events.clone(),
        );
    }

    /// Gauges.
    fn register_gauges(&self, registry: &mut Registry) {
        registry.register(
            "containers_observed",
            "Containers in the observed store",
            self.containers_observed.clone(),
        );
        registry.register(
            "queue_depth",
            "Containers waiting in the work queue",
            self.queue_depth.clone(),
        );
        registry.register(
            "in_flight",
            "Reconciles running now",
            self.in_flight.clone(),
        );
        registry.register(
            "ready",
            "1 once the first full container list was taken in, else 0",
            self.ready.clone(),
        );
        registry.register(
            "breakers_open",
            "Containers whose circuit breaker is open",
            self.breakers_open.clone(),
        );
        registry.register(
            "policy_reloads",
            "Rescans of the --policies files, by trigger (watch, rescan, sighup)",
            self.policy_reloads.clone(),
        );
        registry.register(
            "policy_problems",
            "Problems (file:line:col) found in the --policies files, each counted once, when first found",
            self.policy_problems.clone(),
        );
        registry.register(
            "policies_last_good",
            "Policies enforced from their last good version because their file is invalid now",
            self.policies_last_good.clone(),
        );
    }

    /// Histograms.
    fn register_histograms(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "reconcile_duration",
            "Time taken by one reconcile",
            Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        registry.register_with_unit(
            "sample_pass_duration",
            "Time taken by one pass of the resource sampler over every running container",
            Unit::Seconds,
            self.sample_pass_duration.clone(),
        );
        registry.register_with_unit(
            "action_duration",
            "Time taken by an executed action (success or failed), verification included",
            Unit::Seconds,
            self.action_duration.clone(),
        );
        registry.register_with_unit(
            "ai_request_duration",
            "Time the LLM took to answer (or to fail)",
            Unit::Seconds,
            self.ai_latency.clone(),
        );
    }

    /// The analyzer's outcomes, every action's outcomes and accepted external requests at 0.
    fn zero_series(&self) {
        // The analyzer's three outcomes and every action's outcomes show as 0 before the first
        // one, so rates and alerts on them are defined from the start.
        for t in [
            EventType::HealthAlert,
            EventType::RemediationNeeded,
            EventType::FalseAlarm,
        ] {
            let _ = self.decisions.get_or_create(&TypeLabels {
                r#type: t.as_str().to_owned(),
            });
        }
        for action in ActionKind::ALL {
            for status in ACTION_STATUSES {
                let _ = self.actions.get_or_create(&ActionStatusLabels {
                    action: action.as_str().to_owned(),
                    status: status.to_owned(),
                });
            }
        }
        for trigger in POLICY_RELOAD_TRIGGERS {
            let _ = self.policy_reloads.get_or_create(&TriggerLabels {
                trigger: trigger.to_owned(),
            });
        }
        let _ = self.external_requests.get_or_create(&ResultLabels {
            result: "accepted".to_owned(),
        });
    }

    /// The registry, for subsystems that register their own metrics under `hemostat_`
    /// (alerts) before the metrics are shared.
    pub(crate) fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Counts one reconcile and returns a guard that records its duration when dropped.
    #[must_use = "the duration is recorded when the timer is dropped"]
    pub(crate) fn reconcile_timer(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            histogram: self.reconcile_duration.clone(),
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile; `error` is a short label such as `Error::metric_label()`.
    pub fn reconcile_error(&self, error: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                error: error.to_owned(),
            })
            .inc();
    }

    /// Counts an envelope published by the analyzer (`health_alert`, `remediation_needed`,
    /// `false_alarm`).
    pub(crate) fn decision(&self, event_type: EventType) {
        self.decisions
            .get_or_create(&TypeLabels {
                r#type: event_type.as_str().to_owned(),
            })
            .inc();
    }

    /// Counts a responder outcome. `status` is `success`, `failed`, `rejected` or `dry_run`;
    /// `secs` (the time the action took) is recorded only for `success` and `failed`, the
    /// outcomes where something was executed.
    pub fn action(&self, action: &str, status: &str, secs: f64) {
        self.actions
            .get_or_create(&ActionStatusLabels {
                action: action.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        if matches!(status, "success" | "failed") {
            self.action_duration
                .get_or_create(&ActionLabels {
                    action: action.to_owned(),
                })
                .observe(secs);
        }
    }

    /// Counts an action refused by a gate (`Refusal::gate()`).
    pub fn refusal(&self, gate: &str) {
        self.refusals
            .get_or_create(&GateLabels {
                gate: gate.to_owned(),
            })
            .inc();
    }

    /// Counts a remediation request received from another tool, by result (`accepted`,
    /// `refused_<reason>`, `ignored_<reason>`).
    pub fn external_request(&self, result: &str) {
        self.external_requests
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts a Docker event received, by its action (`start`, `die`, `oom`, …).
    pub fn docker_event(&self, action: &str) {
        self.docker_events
            .get_or_create(&ActionLabels {
                action: action.to_owned(),
            })
            .inc();
    }

    /// Counts a restart of the Docker watch.
    pub(crate) fn watch_restart(&self) {
        self.watch_restarts.inc();
    }

    /// Counts an exit decided from its `die` event, without an inspection.
    pub(crate) fn decided_from_event(&self) {
        self.exits_decided_from_events.inc();
    }

    /// Records how long one sampler pass took, in seconds.
    pub fn sample_pass(&self, secs: f64) {
        self.sample_pass_duration.observe(secs);
    }

    /// Sets the number of observed containers (the HTTP server does it at every scrape).
    pub(crate) fn set_containers_observed(&self, n: usize) {
        self.containers_observed.set(gauge_value(n));
    }

    /// Sets the number of keys waiting in the work queue.
    pub(crate) fn set_queue_depth(&self, n: usize) {
        self.queue_depth.set(gauge_value(n));
    }

    /// Counts one reconcile as running until the guard is dropped (`hemostat_in_flight`).
    #[must_use = "the reconcile counts as running until the guard is dropped"]
    pub(crate) fn running(&self) -> RunningGuard {
        self.in_flight.inc();
        RunningGuard {
            gauge: self.in_flight.clone(),
        }
    }

    /// Sets how the Redis outbox and the outage store are read at every scrape (once; later
    /// calls are ignored).
    pub(crate) fn set_store_reader(&self, reader: StoreReader) {
        let _ = self.store_reader.0.set(reader);
    }

    fn read_store(&self) {
        let Some(reader) = self.store_reader.0.get() else {
            return;
        };
        let r = reader();
        self.redis_outbox_length.set(gauge_value(r.outbox_length));
        let seen = self.redis_outbox_dropped.get();
        if r.outbox_dropped > seen {
            self.redis_outbox_dropped.inc_by(r.outbox_dropped - seen);
        }
        self.redis_outage.set(i64::from(r.outage));
        self.fallback_dirty_keys.set(gauge_value(r.dirty_keys));
    }

    /// Sets readiness (the HTTP server does it at every scrape).
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Sets the number of containers whose circuit breaker is open.
    pub(crate) fn set_breakers_open(&self, n: usize) {
        self.breakers_open.set(gauge_value(n));
    }

    /// Counts one rescan of the policy files.
    pub(crate) fn policy_reload(&self, trigger: &str) {
        self.policy_reloads
            .get_or_create(&TriggerLabels {
                trigger: trigger.to_owned(),
            })
            .inc();
    }

    /// Counts problems found in the policy files (each once, when first found).
    pub(crate) fn policy_problems(&self, count: usize) {
        self.policy_problems.inc_by(count as u64);
    }

    /// Sets the number of policies enforced from a last good version.
    pub(crate) fn set_policies_last_good(&self, count: usize) {
        self.policies_last_good.set(gauge_value(count));
    }

    /// Notes whether the breaker of one container (its safety key) is open now, and sets
    /// `hemostat_breakers_open` to the number of open ones.
    pub(crate) fn note_breaker(&self, key: &str, open: bool) {
        let mut keys = self
            .open_breakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = if open {
            keys.insert(key.to_owned())
        } else {
            keys.remove(key)
        };
        if changed {
            self.set_breakers_open(keys.len());
        }
    }

    /// Counts one LLM analysis by provider and result; `latency` when the model was asked.
    pub(crate) fn ai_request(
        &self,
        provider: &str,
        result: &str,
        latency: Option<std::time::Duration>,
    ) {
        self.ai_requests
            .get_or_create(&ProviderResultLabels {
                provider: provider.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        if let Some(latency) = latency {
            self.ai_latency
                .get_or_create(&ProviderLabels {
                    provider: provider.to_owned(),
                })
                .observe(latency.as_secs_f64());
        }
    }

    /// Counts tokens billed by an LLM provider (`kind` = `input` or `output`).
    pub(crate) fn ai_tokens(&self, provider: &str, kind: &str, n: u64) {
        self.ai_tokens
            .get_or_create(&ProviderKindLabels {
                provider: provider.to_owned(),
                kind: kind.to_owned(),
            })
            .inc_by(n);
    }

    /// The OpenMetrics text exposition of every metric, `# EOF` included.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        self.read_store();
        let mut out = String::new();
        encode_registry(&mut out, &self.registry).expect("writing to a String never fails");
        encode_registry(&mut out, &self.process).expect("writing to a String never fails");
        encode_eof(&mut out).expect("writing to a String never fails");
        out
    }

    /// The exposition in `format`.
    pub(crate) fn encode_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.encode(),
            Format::PrometheusText => to_prometheus_text(&self.encode()),
        }
    }
}

/// Counts a reconcile in `hemostat_in_flight` while it lives.
#[derive(Debug)]
pub(crate) struct RunningGuard {
    gauge: Gauge,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Records the time since [`Metrics::reconcile_timer`] in `hemostat_reconcile_duration_seconds`
/// when dropped, whichever way the reconcile ends.
#[derive(Debug)]
pub(crate) struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split(' ').next()?.parse().ok())
    }

    #[test]
    fn every_metric_is_exposed_under_the_hemostat_prefix() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(line_value(&text, "hemostat_reconciles_total"), Some(0.0));
        assert_eq!(
            line_value(&text, r#"hemostat_decisions_total{type="false_alarm"}"#),
            Some(0.0),
            "the analyzer's outcomes are exposed before the first one"
        );
        assert_eq!(
            line_value(
                &text,
                r#"hemostat_actions_total{action="exec",status="failed"}"#
            ),
            Some(0.0),
            "every action's outcomes are exposed before the first one"
        );
        // Families with a free-form label appear with their first series.
        m.reconcile_error("docker");
        m.refusal("cooldown");
        m.docker_event("start");
        m.action("restart", "success", 1.0);
        m.external_request("refused_not_json");
        let text = m.encode();
        for name in [
            "hemostat_reconciles",
            "hemostat_reconcile_errors",
            "hemostat_decisions",
            "hemostat_actions",
            "hemostat_refusals",
            "hemostat_external_requests",
            "hemostat_docker_events",
            "hemostat_watch_restarts",
            "hemostat_exits_decided_from_events",
            "hemostat_containers_observed",
            "hemostat_queue_depth",
            "hemostat_in_flight",
            "hemostat_ready",
            "hemostat_breakers_open",
            "hemostat_reconcile_duration_seconds",
            "hemostat_sample_pass_duration_seconds",
            "hemostat_action_duration_seconds",
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} in\n{text}"
            );
        }
    }

    #[test]
    fn the_reconcile_timer_counts_and_measures_when_dropped() {
        let m = Metrics::new();
        {
            let _timer = m.reconcile_timer();
            let _again = m.reconcile_timer();
        }
        m.reconcile_error("docker");
        let text = m.encode();
        assert_eq!(line_value(&text, "hemostat_reconciles_total"), Some(2.0));
        assert_eq!(
            line_value(&text, "hemostat_reconcile_duration_seconds_count"),
            Some(2.0)
        );
        assert_eq!(
            line_value(&text, r#"hemostat_reconcile_errors_total{error="docker"}"#),
            Some(1.0)
        );
    }

    #[test]
    fn actions_count_every_outcome_but_time_only_executed_ones() {
        let m = Metrics::new();
        m.action("restart", "success", 3.0);
        m.action("restart", "failed", 5.0);
        m.action("restart", "rejected", 0.0);
        m.action("restart", "dry_run", 0.0);
        m.refusal("cooldown");
        m.external_request("accepted");
        m.external_request("refused_too_large");
        m.external_request("refused_too_large");
        let text = m.encode();
        assert_eq!(
            line_value(
                &text,
                r#"hemostat_external_requests_total{result="accepted"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            line_value(
                &text,
                r#"hemostat_external_requests_total{result="refused_too_large"}"#
            ),
            Some(2.0)
        );
        for status in ["success", "failed", "rejected", "dry_run"] {
            assert_eq!(
                line_value(
                    &text,
                    &format!(r#"hemostat_actions_total{{action="restart",status="{status}"}}"#)
                ),
                Some(1.0),
                "{status}"
            );
        }
        assert_eq!(
            line_value(
                &text,
                r#"hemostat_action_duration_seconds_count{action="restart"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            line_value(
                &text,
                r#"hemostat_action_duration_seconds_sum{action="restart"}"#
            ),
            Some(8.0)
        );
        assert_eq!(
            line_value(&text, r#"hemostat_refusals_total{gate="cooldown"}"#),
            Some(1.0)
        );
    }

    #[test]
    fn decisions_events_and_gauges_are_recorded() {
        let m = Metrics::new();
        m.decision(EventType::RemediationNeeded);
        m.decision(EventType::RemediationNeeded);
        m.docker_event("die");
        m.watch_restart();
        m.sample_pass(0.02);
        m.set_containers_observed(7);
        m.set_queue_depth(3);
        let _one = m.running();
        let _two = m.running();
        m.set_ready(true);
        m.set_breakers_open(1);
        let text = m.encode();
        let expect = [
            (
                r#"hemostat_decisions_total{type="remediation_needed"}"#,
                2.0,
            ),
            (r#"hemostat_decisions_total{type="health_alert"}"#, 0.0),
            (r#"hemostat_docker_events_total{action="die"}"#, 1.0),
            ("hemostat_watch_restarts_total", 1.0),
            ("hemostat_sample_pass_duration_seconds_count", 1.0),
            ("hemostat_containers_observed", 7.0),
            ("hemostat_queue_depth", 3.0),
            ("hemostat_in_flight", 2.0),
            ("hemostat_ready", 1.0),
            ("hemostat_breakers_open", 1.0),
        ];
        for (series, value) in expect {
            assert_eq!(
                line_value(&text, series),
                Some(value),
                "{series} in\n{text}"
            );
        }
        m.set_ready(false);
        assert_eq!(line_value(&m.encode(), "hemostat_ready"), Some(0.0));
    }

    #[test]
    fn in_flight_counts_running_reconciles_and_reads_zero_when_idle() {
        let m = Metrics::new();
        assert_eq!(line_value(&m.encode(), "hemostat_in_flight"), Some(0.0));
        {
            let _a = m.running();
            let _b = m.running();
            assert_eq!(line_value(&m.encode(), "hemostat_in_flight"), Some(2.0));
        }
        assert_eq!(line_value(&m.encode(), "hemostat_in_flight"), Some(0.0));
    }

    #[test]
    fn the_reconcile_histogram_covers_the_verification_window() {
        let text = Metrics::new().encode();
        let top = text
            .lines()
            .filter_map(|l| l.strip_prefix("hemostat_reconcile_duration_seconds_bucket{le=\""))
            .filter_map(|l| l.split('"').next()?.parse::<f64>().ok())
            .fold(0.0, f64::max);
        assert!(top >= 30.0, "largest finite bucket {top}");
    }

    #[test]
    fn build_info_process_and_store_metrics_are_exposed() {
        let m = Metrics::new();
        let text = m.encode();
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!("hemostat_build_info{{version=\"{version}\"")),
            "{text}"
        );
        assert!(
            text.contains("# TYPE process_cpu_seconds counter"),
            "{text}"
        );
        assert!(line_value(&text, "process_resident_memory_bytes").unwrap() > 0.0);
        assert_eq!(line_value(&text, "hemostat_redis_outage"), Some(0.0));
        let reading = std::sync::Arc::new(std::sync::Mutex::new(StoreReading {
            outbox_length: 5,
            outbox_dropped: 3,
            outage: true,
            dirty_keys: 2,
        }));
        let r = reading.clone();
        m.set_store_reader(Box::new(move || *r.lock().unwrap()));
        let text = m.encode();
        assert_eq!(line_value(&text, "hemostat_redis_outbox_length"), Some(5.0));
        assert_eq!(
            line_value(&text, "hemostat_redis_outbox_dropped_total"),
            Some(3.0)
        );
        assert_eq!(line_value(&text, "hemostat_redis_outage"), Some(1.0));
        assert_eq!(line_value(&text, "hemostat_fallback_dirty_keys"), Some(2.0));
        reading.lock().unwrap().outbox_dropped = 10;
        reading.lock().unwrap().outage = false;
        let text = m.encode();
        assert_eq!(
            line_value(&text, "hemostat_redis_outbox_dropped_total"),
            Some(10.0)
        );
        assert_eq!(line_value(&text, "hemostat_redis_outage"), Some(0.0));
        assert!(text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1);
    }

    #[test]
    fn the_accept_header_picks_the_format() {
        use Format::{OpenMetrics, PrometheusText};
        let prometheus_2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            ("", OpenMetrics),
            ("*/*", OpenMetrics),
            (prometheus_2, OpenMetrics),
            ("text/plain;version=0.0.4", PrometheusText),
            (
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5",
                PrometheusText,
            ),
            ("application/openmetrics-text; version=1.0.0", OpenMetrics),
            ("application/json", OpenMetrics),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept}");
        }
    }

    #[test]
    fn the_prometheus_text_format_names_counters_by_their_samples_and_has_no_eof() {
        let m = Metrics::new();
        m.action("restart", "success", 1.0);
        let text = m.encode_as(Format::PrometheusText);
        assert!(
            text.contains("# TYPE hemostat_actions_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP hemostat_actions_total "), "{text}");
        assert!(text.contains("# TYPE hemostat_in_flight gauge\n"));
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.reconcile_error("bad\"label\nvalue");
        let text = m.encode();
        assert!(
            text.contains(r#"hemostat_reconcile_errors_total{error="bad\"label\nvalue"} 1"#),
            "{text}"
        );
    }
}
