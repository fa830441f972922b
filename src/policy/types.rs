//! The `HealthPolicy` document (`hemostat.io/v1alpha1`): types, defaults and JSON Schema.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;
use crate::model::decision::{ActionKind, Severity};

/// The only `apiVersion` this build understands.
pub(crate) const API_VERSION: &str = "hemostat.io/v1alpha1";
/// The only `kind` this build understands.
pub(crate) const KIND: &str = "HealthPolicy";

/// How healthy the selected containers must be, and how far automatic repair may go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "HealthPolicy")]
pub struct HealthPolicy {
    /// Always `hemostat.io/v1alpha1`.
    #[schemars(extend("const" = "hemostat.io/v1alpha1"))]
    pub api_version: String,
    /// Always `HealthPolicy`.
    #[schemars(extend("const" = "HealthPolicy"))]
    pub kind: String,
    /// Name and labels of the policy.
    pub metadata: Metadata,
    /// What the policy asks for.
    pub spec: PolicySpec,
    /// Written by the operator only; ignored when a policy is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PolicyStatus>,
}

/// Identity of a policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// DNS-style name (lowercase letters, digits and `-`, at most 63 characters), unique in a set.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Free-form labels, for people and tools.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations, for people and tools.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The desired state: which containers, what counts as sick, what may be done about it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Which containers the policy governs; every given term must match.
    pub selector: Selector,
    /// When several policies match a container, the highest priority wins (ties: by name).
    #[serde(default)]
    pub priority: i32,
    /// What counts as unhealthy. A probe left out is not checked.
    #[serde(default)]
    pub probes: Probes,
    /// What may be done, and within which limits.
    #[serde(default)]
    pub remediation: Remediation,
    /// How findings are turned into decisions.
    #[serde(default)]
    pub analysis: Analysis,
    /// Where decisions are announced.
    #[serde(default)]
    pub alerts: Alerts,
}

/// Selects containers. Terms are ANDed. An empty selector is an error: say `matchAll: true`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    /// Container labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Globs (`*`, `?`) on the container name; one of them must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_names: Vec<String>,
    /// Globs on the image reference; one of them must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_images: Vec<String>,
    /// Select every container (protected ones are still never touched).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub match_all: bool,
}

/// The probes a policy runs. Each is optional; an absent probe is not checked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probes {
    /// The container exited (never after a manual `docker stop` or `docker kill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitProbe>,
    /// Docker's healthcheck reports unhealthy (`starting` is never unhealthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthcheckProbe>,
    /// The kernel OOM-killed the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<OomKilledProbe>,
    /// The container keeps restarting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_loop: Option<RestartLoopProbe>,
    /// CPU use above a share of the container's CPU limit (or of all host cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuProbe>,
    /// Memory use above a share of the container's memory limit (or of host memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryProbe>,
    /// Memory keeps growing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_leak: Option<MemoryLeakProbe>,
}

/// See [`Probes::exit`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExitProbe {
    /// Only a non-zero exit code counts (default true).
    #[serde(default = "yes")]
    pub non_zero_only: bool,
}

impl Default for ExitProbe {
    fn default() -> Self {
        Self {
            non_zero_only: true,
        }
    }
}

/// See [`Probes::healthcheck`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthcheckProbe {
    /// How long the container must stay unhealthy before it counts (default 0s: at once).
    #[serde(default)]
    pub unhealthy_for: HumanDuration,
}

/// See [`Probes::oom_killed`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OomKilledProbe {}

/// See [`Probes::restart_loop`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartLoopProbe {
    /// How many restarts (Docker's and HemoStat's) make a loop (default 5).
    #[serde(default = "default_loop_restarts")]
    pub restarts: u32,
    /// Within how long (default 10m).
    #[serde(default = "default_loop_within")]
    pub within: HumanDuration,
}

impl Default for RestartLoopProbe {
    fn default() -> Self {
        Self {
            restarts: default_loop_restarts(),
            within: default_loop_within(),
        }
    }
}

/// CPU use above a share of the container's CPU limit for a sustained time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpuProbe {
    /// Percent of the CPU limit, or of all host cores when unlimited (0 < p <= 100, default 85).
    #[serde(default = "default_cpu_percent")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub above_percent: f64,
    /// How long it must stay above (default 2m; 0s means one sample is enough).
    #[serde(rename = "for", default = "default_cpu_for")]
    pub for_: HumanDuration,
}

impl Default for CpuProbe {
    fn default() -> Self {
        Self {
            above_percent: default_cpu_percent(),
            for_: default_cpu_for(),
        }
    }
}

/// Memory use above a share of the container's memory limit for a sustained time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryProbe {
    /// Percent of the memory limit, or of host memory when unlimited (0 < p <= 100, default 80).
    #[serde(default = "default_memory_percent")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub above_percent: f64,
    /// How long it must stay above (default 1m; 0s means one sample is enough).
    #[serde(rename = "for", default = "default_memory_for")]
    pub for_: HumanDuration,
}

impl Default for MemoryProbe {
    fn default() -> Self {
        Self {
            above_percent: default_memory_percent(),
            for_: default_memory_for(),
        }
    }
}

/// See [`Probes::memory_leak`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryLeakProbe {
    /// Growth of used memory per hour, in percent of the limit, that counts as a leak (default 20).
    #[serde(default = "default_leak_growth")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub growth_percent_per_hour: f64,
    /// How long the trend must hold (default 30m).
    #[serde(rename = "for", default = "default_leak_for")]
    pub for_: HumanDuration,
}

impl Default for MemoryLeakProbe {
    fn default() -> Self {
        Self {
            growth_percent_per_hour: default_leak_growth(),
            for_: default_leak_for(),
        }
    }
}

/// What may be done, and the hard limits around it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Remediation {
    /// Allowed actions, in escalation order (default `[restart]`). Empty: observe and alert only.
    #[serde(default = "default_actions")]
    pub actions: Vec<ActionKind>,
    /// The only commands `exec` may run; required when `exec` is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecPolicy>,
    /// How long Docker waits for a graceful stop before killing (default 10s).
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: HumanDuration,
    /// Quiet time after an action on a container before another (default 1h).
    #[serde(default = "default_cooldown")]
    pub cooldown: HumanDuration,
    /// At most this many actions per container per window (default 3 per 1h).
    #[serde(default)]
    pub max_actions: MaxActions,
    /// Stops repairing a container that keeps failing after repairs.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    /// What to do when the breaker opens (default `leave`).
    #[serde(default)]
    pub on_give_up: GiveUp,
    /// Decisions below this confidence are false alarms (default 0.7).
    #[serde(default = "default_min_confidence")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_confidence: f64,
    /// Decide and record, but never touch a container (default false).
    #[serde(default)]
    pub dry_run: bool,
    /// How long a repaired container has to come back running and healthy (default 30s).
    #[serde(default = "default_verify_within")]
    pub verify_within: HumanDuration,
    /// At most this many actions of this policy across the whole fleet per window (like a
    /// PodDisruptionBudget); enforced atomically in the shared store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_budget: Option<FleetBudget>,
}

impl Remediation {
    /// The windows and counts the safety state is kept against.
    pub(crate) fn limits(&self) -> crate::model::safety::Limits {
        crate::model::safety::Limits {
            cooldown: self.cooldown.get(),
            max_actions_per: self.max_actions.per.get(),
            breaker_within: self.circuit_breaker.within.get(),
            breaker_failures: self.circuit_breaker.failures,
            breaker_open_for: self.circuit_breaker.open_for.get(),
        }
    }
}

/// A fleet-wide limit on disruptive actions of one policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetBudget {
    /// Actions allowed across all nodes in the window.
    pub max_actions: u32,
    /// The window (default 1h).
    #[serde(default = "default_window")]
    pub per: HumanDuration,
}

impl Default for Remediation {
    fn default() -> Self {
        Self {
            actions: default_actions(),
            exec: None,
            stop_timeout: default_stop_timeout(),
            cooldown: default_cooldown(),
            max_actions: MaxActions::default(),
            circuit_breaker: CircuitBreaker::default(),
            on_give_up: GiveUp::default(),
            min_confidence: default_min_confidence(),
            dry_run: false,
            verify_within: default_verify_within(),
            fleet_budget: None,
        }
    }
}

/// The exec allow-list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecPolicy {
    /// Exact argument vectors that may be run; nothing else ever is.
    pub allowed: Vec<Vec<String>>,
    /// How long one exec may take (default 30s).
    #[serde(default = "default_exec_timeout")]
    pub timeout: HumanDuration,
}

/// A count per time window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaxActions {
    /// How many (default 3).
    #[serde(default = "default_max_actions")]
    pub count: u32,
    /// Per how long (default 1h).
    #[serde(default = "default_window")]
    pub per: HumanDuration,
}

impl Default for MaxActions {
    fn default() -> Self {
        Self {
            count: default_max_actions(),
            per: default_window(),
        }
    }
}

/// Opens after repeated failed repairs; while open, nothing is done but `onGiveUp`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Failed repairs that open the breaker (default 3). A repair followed by the same failure
    /// within `within` is a failure, even if the container was running for a moment.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// The window in which failures count (default 1h).
    #[serde(default = "default_window")]
    pub within: HumanDuration,
    /// How long the breaker stays open (default 1h).
    #[serde(default = "default_window")]
    pub open_for: HumanDuration,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            failures: default_breaker_failures(),
            within: default_window(),
            open_for: default_window(),
        }
    }
}

/// What happens to a container when its breaker opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GiveUp {
    /// Leave it as it is, and alert.
    #[default]
    Leave,
    /// Stop it, and alert (requires `stop` among the allowed actions).
    Stop,
}

/// How findings become decisions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Analysis {
    /// `rules` (default) or `ai`; `ai` always falls back to the rules.
    #[serde(default)]
    pub mode: AnalysisMode,
    /// `ai` only: how long the model may take to answer before the rules decide (default 10s).
    #[serde(default = "default_analysis_timeout")]
    pub timeout: HumanDuration,
    /// `ai` only: how many of the container's last log lines may be sent to the model, with
    /// obvious secrets redacted (default 0: none).
    #[serde(default)]
    #[schemars(range(max = 1000))]
    pub include_logs: u32,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            mode: AnalysisMode::default(),
            timeout: default_analysis_timeout(),
            include_logs: 0,
        }
    }
}

/// The most log lines `analysis.includeLogs` may ask for.
pub(crate) const MAX_INCLUDE_LOGS: u32 = 1000;

fn default_analysis_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// See [`Analysis::mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnalysisMode {
    /// Deterministic rules only.
    #[default]
    Rules,
    /// An LLM chooses among the allowed actions; its answer is validated; rules on any doubt.
    Ai,
}

/// Alerting: what is sent, where, and how often.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Alerts {
    /// Lowest severity of a finding that is sent when nothing is done about it (default
    /// `medium`). Repair outcomes and important refusals are always sent.
    #[serde(default)]
    pub min_severity: Severity,
    /// Where alerts go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<Channel>,
    /// How long a channel waits for more alerts before sending what arrived together as one
    /// message (default 3s, at most 5m). The first alert of a quiet period waits no longer.
    #[serde(default = "default_group_wait")]
    pub group_wait: HumanDuration,
    /// The same alert (node, container, finding, outcome) is sent at most once per this window
    /// (default 60s, the original's ALERT_DEDUPE_TTL).
    #[serde(default = "default_dedupe_for")]
    pub dedupe_for: HumanDuration,
    /// Also send the analyzer's false alarms (default false).
    #[serde(default)]
    pub false_alarms: bool,
    /// Send a "resolved" follow-up when a repaired container showed no new problem for this
    /// long (default 30s; 0s: never).
    #[serde(default = "default_resolve_after")]
    pub resolve_after: HumanDuration,
}

impl Default for Alerts {
    fn default() -> Self {
        Self {
            min_severity: Severity::default(),
            channels: Vec::new(),
            group_wait: default_group_wait(),
            dedupe_for: default_dedupe_for(),
            false_alarms: false,
            resolve_after: default_resolve_after(),
        }
    }
}

/// One alert destination; exactly one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Channel {
    /// A Slack incoming webhook.
    Slack(SlackChannel),
    /// A generic JSON webhook.
    Webhook(WebhookChannel),
    /// A Prometheus Alertmanager (`POST /api/v2/alerts`).
    Alertmanager(AlertmanagerChannel),
}

/// A Slack incoming webhook; the URL is a secret and is read from the environment or a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlackChannel {
    /// Where the webhook URL comes from.
    pub webhook_url_from: SecretRef,
}

/// A generic webhook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookChannel {
    /// Where the URL comes from.
    pub url_from: SecretRef,
    /// Where the HMAC-SHA256 signing key comes from; when given, every request carries
    /// `X-Hemostat-Signature: sha256=<hex of HMAC(key, "<X-Hemostat-Timestamp>.<body>")>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_from: Option<SecretRef>,
}

/// A Prometheus Alertmanager; alerts are posted to `<url>/api/v2/alerts` and resolved (`endsAt`)
/// when the container is healthy again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertmanagerChannel {
    /// Base URL of the Alertmanager, e.g. `http://alertmanager:9093`.
    pub url: String,
}

/// A secret never written in a policy: the name of an environment variable or a file path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SecretRef {
    /// An environment variable of the operator.
    Env(String),
    /// A file readable by the operator (e.g. a mounted secret).
    File(String),
}

/// Written by the operator only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyStatus {
    /// How many containers the policy governs now.
    #[serde(default)]
    pub matched_containers: u32,
    /// When the operator last looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconciled: Option<String>,
    /// Kube-style conditions (`Ready`, `Degraded`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A kube-style condition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// `Ready`, `Degraded`, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn yes() -> bool {
    true
}
fn default_loop_restarts() -> u32 {
    5
}
fn default_loop_within() -> HumanDuration {
    HumanDuration::from_secs(600)
}
fn default_leak_growth() -> f64 {
    20.0
}
fn default_leak_for() -> HumanDuration {
    HumanDuration::from_secs(1800)
}
fn default_actions() -> Vec<ActionKind> {
    vec![ActionKind::Restart]
}
fn default_stop_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_cooldown() -> HumanDuration {
    HumanDuration::from_secs(3600)
}
fn default_window() -> HumanDuration {
    HumanDuration::from_secs(3600)
}
fn default_max_actions() -> u32 {
    3
}
fn default_breaker_failures() -> u32 {
    3
}
fn default_min_confidence() -> f64 {
    0.7
}
fn default_verify_within() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_exec_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_cpu_percent() -> f64 {
    85.0
}
fn default_cpu_for() -> HumanDuration {
    HumanDuration::from_secs(120)
}
fn default_memory_percent() -> f64 {
    80.0
}
fn default_memory_for() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_group_wait() -> HumanDuration {
    HumanDuration::from_secs(3)
}
fn default_dedupe_for() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_resolve_after() -> HumanDuration {
    HumanDuration::from_secs(30)
}
