//! The alert router: a task consuming `EventSink::subscribe()`. Each envelope is classified
//! per channel of its policy (and the operator-wide channel), checked against the silences
//! and the de-duplication window, and pushed onto the channel's queue (never waiting). A
//! successful repair schedules a "resolved" follow-up, cancelled by a new problem.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::Alert;
use super::channels::{ChannelConfig, ChannelSpec, policy_channels};
use super::classify::{Noted, classify, note, resolved, wants_resolve};
use super::dedup::{Dedup, Verdict};
use super::metrics::AlertMetrics;
use super::notify::{Channel, Delivery, Notifier};
use super::secret::SecretError;
use super::silence::{Silence, silenced_by};
use super::state::AlertState;
use crate::model::wire::Envelope;
use crate::policy::registry::PolicyRegistry;

/// Builds the notifier of a channel (reads its secrets): `adapters::notifier_for` in the
/// operator, a fake in tests.
pub type BuildNotifier =
    dyn Fn(&ChannelSpec) -> Result<Arc<dyn Notifier>, SecretError> + Send + Sync;

/// Silences are read from the state store at most this often.
pub(crate) const SILENCE_REFRESH: Duration = Duration::from_secs(1);
/// How many routing records `/api/v1/alerts` keeps.
pub(crate) const HISTORY: usize = 500;
/// How many `health_alert` findings are kept waiting for their decision's outcome.
const NOTED: usize = 4096;

/// What the router did with one alert for one channel (served by `/api/v1/alerts`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Routed {
    /// When.
    pub at: DateTime<Utc>,
    /// The channel.
    pub channel: String,
    /// `queued` (for delivery), `silenced`, `deduplicated`, or `no_channel` (its secret is missing).
    pub result: &'static str,
    /// The silence that muted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silence: Option<String>,
    /// The alert, without its envelope.
    pub alert: Alert,
}

/// The newest routing records, shared with the HTTP API.
#[derive(Debug, Default)]
pub struct History(Mutex<VecDeque<Routed>>);

impl History {
    fn push(&self, r: Routed) {
        let mut q = self.0.lock().expect("history lock");
        if q.len() >= HISTORY {
            q.pop_front();
        }
        q.push_back(r);
    }

    /// The newest `limit` records, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<Routed> {
        let q = self.0.lock().expect("history lock");
        q.iter()
            .skip(q.len().saturating_sub(limit))
            .cloned()
            .collect()
    }
}

/// Tunables of the router's channels (tests shorten them).
#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// One delivery attempt's timeout.
    pub timeout: Duration,
    /// Alerts queued per channel at most.
    pub queue_capacity: usize,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            queue_capacity: 1000,
        }
    }
}

struct PendingResolve {
    due: Instant,
    alert: Alert,
    config: ChannelConfig,
}

/// The routing task's state.
pub struct AlertRouter {
    policies: Arc<PolicyRegistry>,
    operator: Option<ChannelConfig>,
    build: Arc<BuildNotifier>,
    state: Arc<dyn AlertState>,
    metrics: AlertMetrics,
    history: Arc<History>,
    options: RouterOptions,
    shutdown: CancellationToken,
    channels: HashMap<String, Channel>,
    broken: HashMap<String, Instant>,
    dedup: HashMap<String, Dedup>,
    noted: HashMap<String, Noted>,
    noted_order: VecDeque<String>,
    resolves: HashMap<(String, String, String), PendingResolve>,
    silences: Vec<Silence>,
    silences_read: Option<Instant>,
    silences_failing: bool,
}

impl AlertRouter {
    /// A router for the policies in `policies` plus the operator-wide channel.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        policies: Arc<PolicyRegistry>,
        operator: Option<ChannelConfig>,
        build: Arc<BuildNotifier>,
        state: Arc<dyn AlertState>,
        metrics: AlertMetrics,
        history: Arc<History>,
        options: RouterOptions,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            policies,
            operator,
            build,
            state,
            metrics,
            history,
            options,
            shutdown,
            channels: HashMap::new(),
            broken: HashMap::new(),
            dedup: HashMap::new(),
            noted: HashMap::new(),
            noted_order: VecDeque::new(),
            resolves: HashMap::new(),
            silences: Vec::new(),
            silences_read: None,
            silences_failing: false,
        }
    }

    /// Routes envelopes from `rx` until shutdown.
    pub(crate) async fn run(mut self, mut rx: broadcast::Receiver<Envelope>) {
        loop {
            let next = self.resolves.values().map(|p| p.due).min();
            tokio::select! {
                got = rx.recv() => match got {
                    Ok(envelope) => self.handle(&envelope).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "the alert router fell behind the live envelopes and missed some");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = async { tokio::time::sleep_until(next.expect("due").into()).await }, if next.is_some() => {
                    self.fire_resolves().await;
                }
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Routes one envelope (public for tests and benchmarks).
    pub async fn handle(&mut self, envelope: &Envelope) {
        if let Some((id, noted)) = note(envelope) {
            let node = envelope.data["node"].as_str().unwrap_or_default();
            let container = envelope.data["container"].as_str().unwrap_or_default();
            self.resolves
                .retain(|(_, n, c), _| !(n == node && c == container));
            if self.noted.insert(id.clone(), noted).is_none() {
                self.noted_order.push_back(id);
                if self.noted_order.len() > NOTED
                    && let Some(old) = self.noted_order.pop_front()
                {
                    self.noted.remove(&old);
                }
            }
            return;
        }
        let decision = envelope.data["decision_id"].as_str().unwrap_or_default();
        let noted = self.noted.get(decision).cloned();
        for config in self.targets(envelope) {
            let Some(alert) = classify(envelope, noted.as_ref(), &config.alerts) else {
                continue;
            };
            if wants_resolve(&alert) && !config.alerts.resolve_after.is_zero() {
                let key = (
                    config.name.clone(),
                    alert.node.clone(),
                    alert.container.clone(),
                );
                self.resolves.insert(
                    key,
                    PendingResolve {
                        due: Instant::now() + config.alerts.resolve_after.get(),
                        alert: alert.clone(),
                        config: config.clone(),
                    },
                );
            }
            self.dispatch(alert, &config).await;
        }
    }

    async fn fire_resolves(&mut self) {
        let now = Instant::now();
        let due: Vec<_> = self
            .resolves
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(p) = self.resolves.remove(&key) {
                let alert = resolved(&p.alert, Utc::now());
                self.dispatch(alert, &p.config).await;
            }
        }
    }

    fn targets(&self, envelope: &Envelope) -> Vec<ChannelConfig> {
        let policy = envelope.data["policy"].as_str().unwrap_or_default();
        let snapshot = self.policies.snapshot();
        let mut out: Vec<ChannelConfig> = snapshot
            .iter()
            .find(|p| p.metadata.name == policy)
            .map(policy_channels)
            .unwrap_or_default();
        if let Some(op) = &self.operator {
            out.push(op.clone());
        }
        // Two policies naming one destination share its channel: route once.
        let mut seen = Vec::new();
        out.retain(|c| {
            let id = c.spec.identity();
            let fresh = !seen.contains(&id);
            seen.push(id);
            fresh
        });
        out
    }

    async fn dispatch(&mut self, alert: Alert, config: &ChannelConfig) {
        let now = Utc::now();
        self.refresh_silences().await;
        let mut routed = Routed {
            at: now,
            channel: String::new(),
            result: "queued",
            silence: None,
            alert: Alert {
                envelope: None,
                ..alert.clone()
            },
        };
        let Some(channel) = self.channel(config) else {
            routed.channel = config.name.clone();
            routed.result = "no_channel";
            self.metrics.count(&config.name, "failed", 1);
            self.history.push(routed);
            return;
        };
        let name = channel.name().to_owned();
        routed.channel = name.clone();
        if let Some(s) = silenced_by(&self.silences, &alert, now) {
            debug!(channel = %name, container = %alert.container, silence = %s.id, "alert silenced");
            routed.result = "silenced";
            routed.silence = Some(s.id.clone());
            self.metrics.count(&name, "silenced", 1);
        } else if self.dedup.entry(name.clone()).or_default().check(
            &alert.fingerprint(),
            config.alerts.dedupe_for.get(),
            Instant::now(),
        ) == Verdict::Suppress
        {
            routed.result = "deduplicated";
            self.metrics.count(&name, "deduplicated", 1);
        } else {
            channel.push(alert);
        }
        self.history.push(routed);
    }

    fn channel(&mut self, config: &ChannelConfig) -> Option<Channel> {
        let id = config.spec.identity();
        if let Some(c) = self.channels.get(&id) {
            return Some(c.clone());
        }
        if self
            .broken
            .get(&id)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(30))
        {
            return None;
        }
        match (self.build)(&config.spec) {
            Ok(notifier) => {
                let delivery = Delivery {
                    timeout: self.options.timeout,
                    queue_capacity: self.options.queue_capacity,
                    ..Delivery::new(
                        config.name.clone(),
                        config.alerts.group_wait.get(),
                        config.spec.per_second(),
                    )
                };
                let channel = Channel::spawn(
                    delivery,
                    notifier,
                    self.metrics.clone(),
                    self.shutdown.child_token(),
                );
                self.broken.remove(&id);
                self.channels.insert(id, channel.clone());
                Some(channel)
            }
            Err(e) => {
                error!(channel = %config.name, error = %e, "alert channel unusable: its alerts are not sent (retried every 30s)");
                self.broken.insert(id, Instant::now());
                None
            }
        }
    }

    async fn refresh_silences(&mut self) {
        if self
            .silences_read
            .is_some_and(|t| t.elapsed() < SILENCE_REFRESH)
        {
            return;
        }
        self.silences_read = Some(Instant::now());
        match self.state.silences().await {
            Ok(s) => {
                self.silences = s;
                self.silences_failing = false;
            }
            Err(e) => {
                if !self.silences_failing {
                    warn!(error = %e, "cannot read the silences; using the last ones read");
                }
                self.silences_failing = true;
            }
        }
    }
}
