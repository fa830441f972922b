//! The wire protocol: the original envelope `{timestamp, agent, type, data}`, its four types, and the typed payloads.

use serde::{Deserialize, Serialize};

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
}
