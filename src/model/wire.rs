//! The wire protocol: the original envelope `{timestamp, agent, type, data}`, its four types, and the typed payloads.

use serde::{Deserialize, Serialize};

use super::container::{ContainerState, HealthStatus};
use super::decision::{ActionKind, AiReview, AnalysisMethod, Decision, Finding};

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
    pub(crate) const ALL: [EventType; 4] = [
        Self::HealthAlert,
        Self::RemediationNeeded,
        Self::FalseAlarm,
        Self::RemediationComplete,
    ];

    /// The `type` field.
    pub(crate) fn as_str(self) -> &'static str {
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
    pub(crate) fn agent(self) -> &'static str {
        match self {
            Self::HealthAlert => "HemoStat-Monitor",
            Self::RemediationNeeded | Self::FalseAlarm => "HemoStat-Analyzer",
            Self::RemediationComplete => "HemoStat-Responder",
        }
    }

    /// Parses the `type` field.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `{"timestamp", "agent", "type", "event_type", "data"}`: the documented envelope plus the
/// `event_type` the original's agents and its dashboard use (see `docs/PROTOCOL.md`).
///
/// Serialised with `event_type` equal to `type`, and `data.event_type` too (the original's
/// payloads carry it). Read from either `type` or `event_type` (the original's agents write
/// only `event_type`); when both are present, `type` wins.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawEnvelope")]
pub struct Envelope {
    /// ISO-8601 UTC with microseconds and an explicit offset:
    /// `2025-11-03T10:30:45.123456+00:00` ([`wire_timestamp`]); read in any form
    /// [`parse_wire_timestamp`] accepts.
    pub timestamp: String,
    /// `HemoStat-Monitor`, `HemoStat-Analyzer` or `HemoStat-Responder`.
    pub agent: String,
    /// The event type (the `type` field, and `event_type`).
    pub event_type: String,
    /// The payload; extra fields beyond the original's are allowed.
    pub data: serde_json::Value,
}

/// An envelope as it arrives: `type`, `event_type` or both.
#[derive(Deserialize)]
struct RawEnvelope {
    timestamp: String,
    agent: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    data: serde_json::Value,
}

impl TryFrom<RawEnvelope> for Envelope {
    type Error = String;

    fn try_from(raw: RawEnvelope) -> Result<Self, Self::Error> {
        let event_type = raw
            .kind
            .or(raw.event_type)
            .ok_or_else(|| "an envelope needs `type` or `event_type`".to_owned())?;
        Ok(Self {
            timestamp: raw.timestamp,
            agent: raw.agent,
            event_type,
            data: raw.data,
        })
    }
}

impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Envelope", 5)?;
        s.serialize_field("timestamp", &self.timestamp)?;
        s.serialize_field("agent", &self.agent)?;
        s.serialize_field("type", &self.event_type)?;
        s.serialize_field("event_type", &self.event_type)?;
        s.serialize_field("data", &self.data)?;
        s.end()
    }
}

impl Envelope {
    /// An envelope stamped now.
    pub fn new(event_type: EventType, data: serde_json::Value) -> Self {
        Self::at(chrono::Utc::now(), event_type, data)
    }

    /// An envelope stamped at `at`; an object `data` gets `event_type` too.
    pub fn at(
        at: chrono::DateTime<chrono::Utc>,
        event_type: EventType,
        mut data: serde_json::Value,
    ) -> Self {
        if let Some(map) = data.as_object_mut() {
            map.insert(
                "event_type".to_owned(),
                serde_json::Value::from(event_type.as_str()),
            );
        }
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

    /// When it was published, if its timestamp is one [`parse_wire_timestamp`] reads.
    pub(crate) fn time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        parse_wire_timestamp(&self.timestamp)
    }
}

/// The wire timestamp: ISO-8601 UTC, microseconds, explicit offset
/// (`2025-11-03T10:30:45.123456+00:00`, what Python's `datetime.now(UTC).isoformat()` writes).
pub(crate) fn wire_timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// The metrics and stats timestamp: ISO-8601 UTC, whole seconds, explicit offset
/// (`2025-11-03T10:30:45+00:00`).
pub fn wire_timestamp_secs(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// Reads a wire timestamp in every form HemoStat and the original have written: with an
/// offset (`+00:00`, `Z`, any other offset, converted to UTC) or without one (the original
/// protocol document's naive form, taken as UTC), with or without fractional seconds.
pub fn parse_wire_timestamp(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.to_utc());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .map(|naive| naive.and_utc())
}

/// Serde for a `DateTime<Utc>` on the wire: written as [`wire_timestamp`], read in any form
/// [`parse_wire_timestamp`] accepts (`#[serde(with = "crate::model::wire::wire_time")]`).
pub(crate) mod wire_time {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `2025-11-03T10:30:45.123456+00:00`.
    pub(crate) fn serialize<S: Serializer>(
        at: &chrono::DateTime<chrono::Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::wire_timestamp(*at))
    }

    /// Reads naive (UTC), `Z` or any offset.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<chrono::DateTime<chrono::Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_wire_timestamp(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not an ISO-8601 time such as 2025-11-03T10:30:45.123456+00:00"
            ))
        })
    }
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
    pub(crate) fn container(&self) -> Option<&str> {
        self.data["container"].as_str()
    }

    /// A `remediation_complete`'s `data.result.container`.
    pub(crate) fn result_container(&self) -> Option<&str> {
        self.data["result"]["container"].as_str()
    }

    /// The node that published it (`data.node`), when it says.
    pub(crate) fn node(&self) -> Option<&str> {
        self.data["node"].as_str()
    }

    /// The governing policy (`data.policy`), when it says.
    pub(crate) fn policy(&self) -> Option<&str> {
        self.data["policy"].as_str()
    }

    /// A `remediation_complete`'s `data.result.status`.
    pub(crate) fn result_status(&self) -> Option<&str> {
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
    /// What the model said (`analysis.mode: ai` only).
    #[serde(flatten)]
    pub ai: AiNote,
}

/// What the model said about a decision, in `remediation_needed`, `false_alarm` and
/// `remediation_complete`; every field is absent for decisions of the rules alone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AiNote {
    /// The model's root cause, when its answer was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<String>,
    /// Why the rules decided although the policy asks for `ai`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// The rules' verdict and the model's side by side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai: Option<AiReview>,
}

impl AiNote {
    /// The note of a decision.
    pub(crate) fn of(decision: &Decision) -> Self {
        Self {
            root_cause: decision.root_cause().map(str::to_owned),
            fallback_reason: decision.fallback_reason().map(str::to_owned),
            ai: decision.ai.clone(),
        }
    }
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
    /// Why it was refused: the same text as `details`, only when `status` is `rejected` (the
    /// original's Alert agent shows it as "Rejection Reason").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What went wrong: the same text as `details`, only when `status` is `failed` (the
    /// original's Alert agent shows it as "Error").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ActionResult {
    /// A result with `reason` or `error` filled from `details` as `status` asks.
    pub fn new(status: &str, action: &str, container: &str, details: &str) -> Self {
        let text = Some(details.to_owned());
        Self {
            status: status.to_owned(),
            action: action.to_owned(),
            container: container.to_owned(),
            details: details.to_owned(),
            reason: if status == "rejected" {
                text.clone()
            } else {
                None
            },
            error: if status == "failed" { text } else { None },
        }
    }
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
    /// What the model said (`analysis.mode: ai` only).
    #[serde(flatten)]
    pub ai: AiNote,
}

impl Payload for RemediationComplete {
    const TYPE: EventType = EventType::RemediationComplete;
}

/// The value of the stats keys `hemostat:stats:<name>` (and per node): the original's
/// documented fields plus `cpu_percent`/`memory_percent`, which its dashboard's health grid
/// reads from this key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// Container name.
    pub name: String,
    /// Its state.
    pub status: ContainerState,
    /// Memory in percent of its limit, one decimal (0 when not running).
    pub memory_pct: f64,
    /// CPU in percent of its limit, one decimal (0 when not running).
    pub cpu_pct: f64,
    /// The same as `memory_pct` (the original monitor's name).
    pub memory_percent: f64,
    /// The same as `cpu_pct` (the original monitor's name).
    pub cpu_percent: f64,
    /// When it was sampled, whole seconds ([`wire_timestamp_secs`]).
    pub timestamp: String,
    /// The node.
    pub node: String,
}

impl ContainerStats {
    /// The stats of `info`: from `usage` when it was sampled, else zeros (a container that is
    /// not running uses neither CPU nor memory).
    pub fn of(
        info: &super::container::ContainerInfo,
        usage: Option<&super::usage::Usage>,
        at: chrono::DateTime<chrono::Utc>,
        node: &str,
    ) -> Self {
        let cpu = usage.map_or(0.0, |u| round1(u.cpu_percent));
        let memory = usage.map_or(0.0, |u| round1(u.memory_percent));
        Self {
            name: info.name.clone(),
            status: info.state,
            memory_pct: memory,
            cpu_pct: cpu,
            memory_percent: memory,
            cpu_percent: cpu,
            timestamp: wire_timestamp_secs(at),
            node: node.to_owned(),
        }
    }

    /// The value as the stats keys hold it (keys sorted).
    pub fn to_json(&self) -> serde_json::Value {
        self.to_value()
    }
}

/// The value of `hemostat:state:container:<short id>`: what the original monitor keeps per
/// container (its dashboard's per-container view reads it). The original's
/// `network_*_bytes` and `blkio_*_bytes` are not measured by HemoStat and are absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerStateKey {
    /// The short container id (12 hex digits), as in the key.
    pub container_id: String,
    /// Container name.
    pub name: String,
    /// Its state.
    pub status: ContainerState,
    /// CPU in percent of its limit, one decimal (0 when not running).
    pub cpu_percent: f64,
    /// Memory in percent of its limit, one decimal (0 when not running).
    pub memory_percent: f64,
    /// Memory in use, bytes, page cache excluded (0 when not running).
    pub memory_usage: u64,
    /// The memory the percentage is of, bytes (0 when not sampled).
    pub memory_limit: u64,
    /// When it was sampled, whole seconds ([`wire_timestamp_secs`]).
    pub timestamp: String,
    /// The node.
    pub node: String,
}

impl ContainerStateKey {
    /// The state of `info`, from `usage` when it was sampled.
    pub fn of(
        info: &super::container::ContainerInfo,
        usage: Option<&super::usage::Usage>,
        at: chrono::DateTime<chrono::Utc>,
        node: &str,
    ) -> Self {
        Self {
            container_id: short_id(&info.id).to_owned(),
            name: info.name.clone(),
            status: info.state,
            cpu_percent: usage.map_or(0.0, |u| round1(u.cpu_percent)),
            memory_percent: usage.map_or(0.0, |u| round1(u.memory_percent)),
            memory_usage: usage.map_or(0, |u| u.memory_used_bytes),
            memory_limit: usage.map_or(0, |u| u.memory_limit_bytes),
            timestamp: wire_timestamp_secs(at),
            node: node.to_owned(),
        }
    }

    /// The value as the key holds it (keys sorted).
    pub fn to_json(&self) -> serde_json::Value {
        self.to_value()
    }
}

/// The short id Docker shows and the original keys its state by: the first 12 characters.
pub(crate) fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Rounds a percentage to one decimal, as the original displayed it.
pub(crate) fn round1(x: f64) -> f64 {
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
                "timestamp": "2025-11-03T10:30:45.123456+00:00",
                "agent": "HemoStat-Analyzer",
                "type": "false_alarm",
                "event_type": "false_alarm",
                "data": {"container": "c", "reason": "r", "event_type": "false_alarm"}
            })
        );
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"timestamp":"2025-11-03T10:30:45.123456+00:00","agent":"HemoStat-Analyzer","type":"false_alarm","event_type":"false_alarm","data":{"container":"c","event_type":"false_alarm","reason":"r"}}"#,
            "field order: the documented four, event_type beside type"
        );
        assert_eq!(
            EventType::RemediationComplete.channel(),
            "hemostat:remediation_complete"
        );
    }

    #[test]
    fn wire_timestamps_read_in_every_form_the_original_and_hemostat_wrote() {
        let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let cases = [
            (
                "2025-11-03T10:30:45.123456+00:00",
                Some(t("2025-11-03T10:30:45.123456Z")),
            ),
            (
                "2025-11-03T10:30:45.123456",
                Some(t("2025-11-03T10:30:45.123456Z")),
            ),
            ("2025-11-03T10:30:45+00:00", Some(t("2025-11-03T10:30:45Z"))),
            ("2025-11-03T10:30:45", Some(t("2025-11-03T10:30:45Z"))),
            ("2025-11-03T10:30:45Z", Some(t("2025-11-03T10:30:45Z"))),
            (
                "2025-11-03T12:30:45.5+02:00",
                Some(t("2025-11-03T10:30:45.5Z")),
            ),
            ("yesterday", None),
            ("2025-11-03", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_wire_timestamp(text), want, "{text:?}");
        }
        let at = t("2025-11-03T10:30:45.123456Z");
        assert_eq!(wire_timestamp(at), "2025-11-03T10:30:45.123456+00:00");
        assert_eq!(wire_timestamp_secs(at), "2025-11-03T10:30:45+00:00");
        assert_eq!(parse_wire_timestamp(&wire_timestamp(at)), Some(at));
    }

    #[test]
    fn envelopes_are_read_with_type_event_type_or_both() {
        let read = |v: serde_json::Value| serde_json::from_value::<Envelope>(v);
        let data = serde_json::json!({"container": "c"});
        let documented = read(serde_json::json!({"timestamp": "2025-11-03T10:30:45.123456", "agent": "a", "type": "false_alarm", "data": data})).unwrap();
        let original = read(serde_json::json!({"event_type": "false_alarm", "timestamp": "2025-11-03T10:30:45.123456+00:00", "agent": "analyzer", "data": data})).unwrap();
        let both = read(serde_json::json!({"timestamp": "2025-11-03T10:30:45.123456+00:00", "agent": "a", "type": "false_alarm", "event_type": "other", "data": data})).unwrap();
        for e in [&documented, &original, &both] {
            assert_eq!(e.kind(), Some(EventType::FalseAlarm));
            assert_eq!(e.time(), documented.time());
            assert!(e.time().is_some());
        }
        let neither = read(serde_json::json!({"timestamp": "t", "agent": "a", "data": data}));
        assert!(
            neither
                .unwrap_err()
                .to_string()
                .contains("`type` or `event_type`")
        );
    }

    #[test]
    fn analysis_methods_have_the_original_vocabulary_and_old_values_still_read() {
        for m in AnalysisMethod::ALL {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
            assert_eq!(
                serde_json::from_value::<AnalysisMethod>(m.as_str().into()).unwrap(),
                m
            );
        }
        assert_eq!(AnalysisMethod::Rules.as_str(), "rule_based");
        assert_eq!(AnalysisMethod::Ai.as_str(), "ai");
        assert_eq!(
            serde_json::from_value::<AnalysisMethod>("rules".into()).unwrap(),
            AnalysisMethod::Rules
        );
    }

    #[test]
    fn results_carry_reason_when_rejected_and_error_when_failed() {
        let v = |status| {
            serde_json::to_value(ActionResult::new(status, "restart", "c", "why")).unwrap()
        };
        assert_eq!(v("rejected")["reason"], "why");
        assert!(v("rejected").get("error").is_none());
        assert_eq!(v("failed")["error"], "why");
        assert!(v("failed").get("reason").is_none());
        for status in ["success", "dry_run"] {
            let r = v(status);
            assert_eq!(r["details"], "why");
            assert!(r.get("reason").is_none() && r.get("error").is_none(), "{r}");
        }
    }

    /// Every envelope of the golden files (captured from the `json!` builders) parses into its
    /// typed payload and serialises back byte for byte.
    #[test]
    fn golden_payloads_round_trip_byte_identical_through_the_typed_structs() {
        fn same<P: Payload + serde::de::DeserializeOwned>(data: &serde_json::Value) {
            let typed: P = serde_json::from_value(data.clone()).expect("golden payload parses");
            // `data.event_type` belongs to the envelope, not the payload.
            let mut rebuilt = typed.to_value();
            rebuilt["event_type"] = serde_json::Value::from(P::TYPE.as_str());
            assert_eq!(
                serde_json::to_string(&rebuilt).unwrap(),
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
