//! The wire protocol: the original envelope `{timestamp, agent, type, data}`, its four types, and the typed payloads.

use serde::{Deserialize, Serialize};

use super::container::{ContainerState, HealthStatus};
use super::decision::{ActionKind, AnalysisMethod, Finding};

/// The four event types of the wire protocol, each with its channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A probe found a problem.
    HealthAlert,
    /// The analyzer decided to act.
    RemediationNeeded,
    /// The analyzer decided not to act.
    FalseAlarm,
    /// The responder acted, refused, or dry-ran.
    RemediationComplete,
}

impl EventType {
    /// Every type.
    pub const ALL: [EventType; 4] = [
        Self::HealthAlert,
        Self::RemediationNeeded,
        Self::FalseAlarm,
        Self::RemediationComplete,
    ];

    /// The `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HealthAlert => "health_alert",
            Self::RemediationNeeded => "remediation_needed",
            Self::FalseAlarm => "false_alarm",
            Self::RemediationComplete => "remediation_complete",
        }
    }

    /// The pub/sub channel, e.g. `hemostat:health_alert`.
    pub fn channel(self) -> String {
        format!("hemostat:{}", self.as_str())
    }

    /// The original agent that published this type.
    pub fn agent(self) -> &'static str {
        match self {
            Self::HealthAlert => "HemoStat-Monitor",
            Self::RemediationNeeded | Self::FalseAlarm => "HemoStat-Analyzer",
            Self::RemediationComplete => "HemoStat-Responder",
        }
    }

    /// Parses the `type` field.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `{"timestamp", "agent", "type", "data"}` exactly as the original.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// ISO-8601 without zone, microseconds: `2025-11-03T10:30:45.123456` (UTC).
    pub timestamp: String,
    /// `HemoStat-Monitor`, `HemoStat-Analyzer` or `HemoStat-Responder`.
    pub agent: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload; extra fields beyond the original's are allowed.
    pub data: serde_json::Value,
}

impl Envelope {
    /// An envelope stamped now.
    pub fn new(event_type: EventType, data: serde_json::Value) -> Self {
        Self::at(chrono::Utc::now(), event_type, data)
    }

    /// An envelope stamped at `at`.
    pub fn at(
        at: chrono::DateTime<chrono::Utc>,
        event_type: EventType,
        data: serde_json::Value,
    ) -> Self {
        Self {
            timestamp: wire_timestamp(at),
            agent: event_type.agent().to_owned(),
            event_type: event_type.as_str().to_owned(),
            data,
        }
    }

    /// The parsed type, if it is one of the four.
    pub fn kind(&self) -> Option<EventType> {
        EventType::parse(&self.event_type)
    }
}

/// The original's timestamp format: naive ISO-8601 with microseconds.
pub fn wire_timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The original's metrics timestamp: naive ISO-8601, whole seconds.
pub fn wire_timestamp_secs(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// A payload of one of the four envelope types.
pub trait Payload: Serialize {
    /// The envelope type it travels in.
    const TYPE: EventType;
}

impl Envelope {
    /// An envelope stamped now carrying a typed payload.
    pub fn of<P: Payload>(payload: &P) -> Self {
        Self::new(P::TYPE, payload.to_value())
    }

    /// The container the envelope is about (`data.container`).
    pub fn container(&self) -> Option<&str> {
        self.data["container"].as_str()
    }

    /// A `remediation_complete`'s `data.result.container`.
    pub fn result_container(&self) -> Option<&str> {
        self.data["result"]["container"].as_str()
    }

    /// The node that published it (`data.node`), when it says.
    pub fn node(&self) -> Option<&str> {
        self.data["node"].as_str()
    }

    /// The governing policy (`data.policy`), when it says.
    pub fn policy(&self) -> Option<&str> {
        self.data["policy"].as_str()
    }

    /// A `remediation_complete`'s `data.result.status`.
    pub fn result_status(&self) -> Option<&str> {
        self.data["result"]["status"].as_str()
    }
}

/// Serialises a payload into the envelope's `data` (keys sorted, as the `json!` builders were).
trait ToValue {
    fn to_value(&self) -> serde_json::Value;
}

impl<T: Serialize> ToValue for T {
    fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a wire payload is always serialisable")
    }
}

/// The original's `metrics` object: `{name, status, memory_pct, cpu_pct, timestamp}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Container name.
    pub name: String,
    /// Its state.
    pub status: ContainerState,
    /// Memory in percent of its limit, one decimal; `null` before the first sample.
    pub memory_pct: Option<f64>,
    /// CPU in percent of its limit, one decimal; `null` before the first sample.
    pub cpu_pct: Option<f64>,
    /// When the sample was taken, whole seconds ([`wire_timestamp_secs`]).
    pub timestamp: String,
}

/// `health_alert`: a probe found a problem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthAlert {
    /// Container name.
    pub container: String,
    /// One line per finding, for people (the original's `issues`).
    pub issues: Vec<String>,
    /// The latest usage.
    pub metrics: MetricsSnapshot,
    /// The findings, typed.
    pub findings: Vec<Finding>,
    /// Exit code of the last run.
    pub exit_code: Option<i64>,
    /// OOM-killed (by inspection or an `oom` event).
    pub oom_killed: bool,
    /// The healthcheck verdict.
    pub health: HealthStatus,
    /// Container id.
    pub container_id: String,
    /// The decision every envelope about this problem shares.
    pub decision_id: String,
    /// The governing policy.
    pub policy: String,
    /// The node.
    pub node: String,
}

impl Payload for HealthAlert {
    const TYPE: EventType = EventType::HealthAlert;
}

/// What `remediation_needed` and `false_alarm` carry: the analyzer's decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionPayload {
    /// Container name.
    pub container: String,
    /// Why, for people.
    pub reason: String,
    /// 0..=1.
    pub confidence: f64,
    /// The latest usage.
    pub metrics: MetricsSnapshot,
    /// How the decision was reached.
    pub analysis_method: AnalysisMethod,
    /// The decision's id.
    pub decision_id: String,
    /// Container id.
    pub container_id: String,
    /// The governing policy.
    pub policy: String,
    /// The node.
    pub node: String,
    /// The policy or the operator is in dry run.
    pub dry_run: bool,
    /// The action, only when one was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionKind>,
}

/// `remediation_needed`: the analyzer decided to act.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RemediationNeeded(pub DecisionPayload);

impl Payload for RemediationNeeded {
    const TYPE: EventType = EventType::RemediationNeeded;
}

/// `false_alarm`: the analyzer decided not to act.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FalseAlarm(pub DecisionPayload);

impl Payload for FalseAlarm {
    const TYPE: EventType = EventType::FalseAlarm;
}

/// The original's `result` object of `remediation_complete`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    /// `success`, `failed`, `rejected` or `dry_run`.
    pub status: String,
    /// The action (`none`/`unknown` when there was none).
    pub action: String,
    /// Container name.
    pub container: String,
    /// What happened, or why it was refused.
    pub details: String,
}

/// `remediation_complete`: the responder acted, refused, or dry-ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemediationComplete {
    /// Container name.
    pub container: String,
    /// The action (`none`/`unknown` when there was none).
    pub action: String,
    /// The outcome.
    pub result: ActionResult,
    /// Nothing was touched because of a dry run.
    pub dry_run: bool,
    /// The decision's confidence (absent for refused external requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Why it was decided.
    pub reason: String,
    /// The decision's id.
    pub decision_id: String,
    /// How it was decided.
    pub analysis_method: AnalysisMethod,
    /// Container id (`null` when the container is not known).
    pub container_id: Option<String>,
    /// The governing policy (`null` when none governs it).
    pub policy: Option<String>,
    /// The node.
    pub node: String,
    /// Which gate refused it (`null` when none did).
    pub gate: Option<String>,
    /// Why an external request was refused (only for those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// The circuit breaker opened now and `onGiveUp` ran.
    pub gave_up: bool,
}

impl Payload for RemediationComplete {
    const TYPE: EventType = EventType::RemediationComplete;
}

/// The value of the stats keys `hemostat:stats:<name>` (and per node).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// Container name.
    pub name: String,
    /// Its state.
    pub status: ContainerState,
    /// Memory in percent of its limit, one decimal.
    pub memory_pct: f64,
    /// CPU in percent of its limit, one decimal.
    pub cpu_pct: f64,
    /// When it was sampled, whole seconds.
    pub timestamp: String,
    /// The node.
    pub node: String,
}

impl ContainerStats {
    /// The value as the stats keys hold it (keys sorted).
    pub fn to_json(&self) -> serde_json::Value {
        self.to_value()
    }
}

/// Rounds a percentage to one decimal, as the original displayed it.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_have_exactly_the_original_shape() {
        let at = chrono::DateTime::parse_from_rfc3339("2025-11-03T10:30:45.123456Z")
            .unwrap()
            .to_utc();
        let e = Envelope::at(
            at,
            EventType::FalseAlarm,
            serde_json::json!({"container": "c", "reason": "r"}),
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "timestamp": "2025-11-03T10:30:45.123456",
                "agent": "HemoStat-Analyzer",
                "type": "false_alarm",
                "data": {"container": "c", "reason": "r"}
            })
        );
        assert_eq!(
            EventType::RemediationComplete.channel(),
            "hemostat:remediation_complete"
        );
    }

    /// Every envelope of the golden files (captured from the `json!` builders) parses into its
    /// typed payload and serialises back byte for byte.
    #[test]
    fn golden_payloads_round_trip_byte_identical_through_the_typed_structs() {
        fn same<P: Payload + serde::de::DeserializeOwned>(data: &serde_json::Value) {
            let typed: P = serde_json::from_value(data.clone()).expect("golden payload parses");
            assert_eq!(
                serde_json::to_string(&typed.to_value()).unwrap(),
                serde_json::to_string(data).unwrap()
            );
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/wire");
        let mut seen = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                if path.file_name().unwrap() == "stats.jsonl" {
                    let stats: ContainerStats = serde_json::from_str(line).unwrap();
                    assert_eq!(serde_json::to_string(&stats.to_json()).unwrap(), line);
                    seen.insert("stats");
                    continue;
                }
                let e: Envelope = serde_json::from_str(line).unwrap();
                assert_eq!(serde_json::to_string(&e).unwrap(), line, "envelope order");
                match e.kind().expect("one of the four types") {
                    EventType::HealthAlert => same::<HealthAlert>(&e.data),
                    EventType::RemediationNeeded => same::<RemediationNeeded>(&e.data),
                    EventType::FalseAlarm => same::<FalseAlarm>(&e.data),
                    EventType::RemediationComplete => same::<RemediationComplete>(&e.data),
                }
                seen.insert(e.kind().unwrap().as_str());
            }
        }
        assert_eq!(
            seen.len(),
            5,
            "every type and the stats key have a golden: {seen:?}"
        );
    }
}
