//! Pure: which envelopes become alerts, and what they say.
//!
//! | envelope | alert |
//! |---|---|
//! | `health_alert` | none by itself: its findings are noted for the decision that follows |
//! | `remediation_complete`, status `success`/`failed`/`dry_run` | [`AlertKind::Outcome`], always |
//! | `remediation_complete`, `rejected` by `circuit_open` (or a give-up), `fleet_budget`, `manual_stop` | [`AlertKind::Refusal`] |
//! | `remediation_complete`, any other refusal (cooldown, in flight, protected, …) | none |
//! | `false_alarm` whose reason is a false alarm (not sustained, low confidence) | [`AlertKind::FalseAlarm`] when `falseAlarms: true` |
//! | `false_alarm` because no allowed action fixes it | [`AlertKind::Finding`] at or above `minSeverity` |

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Alert, AlertKind};
use crate::model::decision::Severity;
use crate::model::wire::{Envelope, EventType};
use crate::policy::Alerts;

/// Refusals that a person must hear about.
pub(crate) const IMPORTANT_GATES: [&str; 3] = ["circuit_open", "fleet_budget", "manual_stop"];

/// What a `health_alert` said about a decision, kept until its outcome arrives.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Noted {
    /// The most severe finding.
    pub severity: Severity,
    /// Its stable name.
    pub finding: String,
    /// When it was announced.
    pub at: DateTime<Utc>,
}

/// The findings a `health_alert` announces, keyed by its decision id.
pub(crate) fn note(envelope: &Envelope) -> Option<(String, Noted)> {
    if envelope.kind() != Some(EventType::HealthAlert) {
        return None;
    }
    let data = &envelope.data;
    let decision_id = str_of(data, "decision_id")?;
    let findings = data.get("findings").and_then(Value::as_array);
    let worst = findings
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let severity: Severity = serde_json::from_value(f.get("severity")?.clone()).ok()?;
            Some((severity, f.get("kind")?.as_str()?.to_owned()))
        })
        .max_by_key(|(s, _)| *s);
    let (severity, finding) = worst.unwrap_or((Severity::High, "unknown".to_owned()));
    Some((
        decision_id,
        Noted {
            severity,
            finding,
            at: timestamp(envelope),
        },
    ))
}

/// The alert an envelope calls for under a policy's alert settings, given what its
/// `health_alert` said (`noted`), or `None`.
pub(crate) fn classify(envelope: &Envelope, noted: Option<&Noted>, cfg: &Alerts) -> Option<Alert> {
    let data = &envelope.data;
    let kind = match envelope.kind()? {
        EventType::HealthAlert | EventType::RemediationNeeded => return None,
        EventType::RemediationComplete => {
            let status = data.pointer("/result/status").and_then(Value::as_str)?;
            let gave_up = data.get("gave_up").and_then(Value::as_bool) == Some(true);
            match status {
                "success" | "failed" | "dry_run" => AlertKind::Outcome,
                "rejected" => {
                    let gate = str_of(data, "gate").unwrap_or_default();
                    if !gave_up && !IMPORTANT_GATES.contains(&gate.as_str()) {
                        return None;
                    }
                    AlertKind::Refusal
                }
                _ => return None,
            }
        }
        EventType::FalseAlarm => {
            let reason = str_of(data, "reason").unwrap_or_default();
            if reason.starts_with("false alarm") {
                if !cfg.false_alarms {
                    return None;
                }
                AlertKind::FalseAlarm
            } else {
                let severity = noted.map_or(Severity::High, |n| n.severity);
                if severity < cfg.min_severity {
                    return None;
                }
                AlertKind::Finding
            }
        }
    };
    let outcome = match kind {
        AlertKind::Outcome | AlertKind::Refusal => data
            .pointer("/result/status")
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_owned(),
        _ => "none".to_owned(),
    };
    let external = str_of(data, "analysis_method").as_deref() == Some("external");
    let finding = match noted {
        Some(n) => n.finding.clone(),
        None if external => "external".to_owned(),
        None => "unknown".to_owned(),
    };
    let gate = match (kind, str_of(data, "gate")) {
        (AlertKind::Refusal, Some(g)) => Some(g),
        _ => None,
    };
    let details = data
        .pointer("/result/details")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| str_of(data, "reason").unwrap_or_default());
    Some(Alert {
        kind,
        node: str_of(data, "node").unwrap_or_default(),
        container: str_of(data, "container").unwrap_or_default(),
        container_id: str_of(data, "container_id").unwrap_or_default(),
        policy: str_of(data, "policy").unwrap_or_default(),
        severity: noted.map_or(Severity::High, |n| n.severity),
        finding,
        action: str_of(data, "action").filter(|a| a != "none"),
        outcome,
        gate,
        reason: str_of(data, "reason").unwrap_or_default(),
        details,
        // The model's root cause (the AiNote the operator flattens into its payloads); an
        // external agent's `explanation` otherwise.
        explanation: str_of(data, "root_cause").or_else(|| str_of(data, "explanation")),
        analysis_method: str_of(data, "analysis_method"),
        decision_id: str_of(data, "decision_id").unwrap_or_default(),
        at: timestamp(envelope),
        envelope: Some(envelope.clone()),
    })
}

/// The "resolved" follow-up of a successful repair.
pub(crate) fn resolved(outcome: &Alert, now: DateTime<Utc>) -> Alert {
    Alert {
        kind: AlertKind::Resolved,
        details: format!(
            "no new problem for {}s after the repair",
            (now - outcome.at).num_seconds().max(0)
        ),
        at: now,
        envelope: None,
        ..outcome.clone()
    }
}

/// True when this alert, once sent, should be followed by a "resolved" one.
pub(crate) fn wants_resolve(alert: &Alert) -> bool {
    alert.kind == AlertKind::Outcome && alert.outcome == "success"
}

fn str_of(data: &Value, key: &str) -> Option<String> {
    data.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// When the envelope was published: both wire forms (naive and with an offset) are read.
fn timestamp(envelope: &Envelope) -> DateTime<Utc> {
    envelope.time().unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn complete(status: &str, gate: Option<&str>, gave_up: bool) -> Envelope {
        Envelope::new(
            EventType::RemediationComplete,
            json!({"container": "web-1", "action": "restart", "node": "n1", "policy": "p",
                   "decision_id": "d1", "reason": "Exited with code 3", "gate": gate,
                   "gave_up": gave_up, "container_id": "abc",
                   "result": {"status": status, "details": "container is back"}}),
        )
    }

    fn false_alarm(reason: &str) -> Envelope {
        Envelope::new(
            EventType::FalseAlarm,
            json!({"container": "web-1", "node": "n1", "policy": "p", "decision_id": "d1",
                   "reason": reason}),
        )
    }

    #[test]
    fn alert_times_come_from_either_timestamp_form() {
        let want = DateTime::parse_from_rfc3339("2025-11-03T10:30:45.123456Z")
            .unwrap()
            .to_utc();
        for form in [
            "2025-11-03T10:30:45.123456",
            "2025-11-03T10:30:45.123456+00:00",
            "2025-11-03T11:30:45.123456+01:00",
        ] {
            let mut e = false_alarm("r");
            e.timestamp = form.to_owned();
            assert_eq!(timestamp(&e), want, "{form}");
        }
    }

    #[test]
    fn each_envelope_becomes_the_alert_of_the_table() {
        let quiet = Alerts::default();
        let loud = Alerts {
            false_alarms: true,
            ..Alerts::default()
        };
        let low = Noted {
            severity: Severity::Low,
            finding: "high_cpu".into(),
            at: Utc::now(),
        };
        type Case<'a> = (
            &'a str,
            Envelope,
            Option<&'a Noted>,
            &'a Alerts,
            Option<AlertKind>,
        );
        let cases: Vec<Case> = vec![
            (
                "success",
                complete("success", None, false),
                None,
                &quiet,
                Some(AlertKind::Outcome),
            ),
            (
                "failed",
                complete("failed", None, false),
                None,
                &quiet,
                Some(AlertKind::Outcome),
            ),
            (
                "dry run",
                complete("dry_run", None, false),
                None,
                &quiet,
                Some(AlertKind::Outcome),
            ),
            (
                "breaker",
                complete("rejected", Some("circuit_open"), false),
                None,
                &quiet,
                Some(AlertKind::Refusal),
            ),
            (
                "give-up",
                complete("rejected", Some("circuit_open"), true),
                None,
                &quiet,
                Some(AlertKind::Refusal),
            ),
            (
                "fleet budget",
                complete("rejected", Some("fleet_budget"), false),
                None,
                &quiet,
                Some(AlertKind::Refusal),
            ),
            (
                "manual stop",
                complete("rejected", Some("manual_stop"), false),
                None,
                &quiet,
                Some(AlertKind::Refusal),
            ),
            (
                "cooldown",
                complete("rejected", Some("cooldown"), false),
                None,
                &quiet,
                None,
            ),
            (
                "in flight",
                complete("rejected", Some("in_flight"), false),
                None,
                &quiet,
                None,
            ),
            (
                "false alarm, not asked",
                false_alarm("false alarm: spike; not sustained"),
                None,
                &quiet,
                None,
            ),
            (
                "false alarm, asked",
                false_alarm("false alarm: spike; not sustained"),
                None,
                &loud,
                Some(AlertKind::FalseAlarm),
            ),
            (
                "no action fixes it",
                false_alarm("High CPU; the policy allows no action"),
                None,
                &quiet,
                Some(AlertKind::Finding),
            ),
            (
                "below minSeverity",
                false_alarm("High CPU; the policy allows no action"),
                Some(&low),
                &quiet,
                None,
            ),
            (
                "health alert alone",
                Envelope::new(EventType::HealthAlert, json!({"decision_id": "d1"})),
                None,
                &quiet,
                None,
            ),
        ];
        for (what, env, noted, cfg, want) in cases {
            assert_eq!(classify(&env, noted, cfg).map(|a| a.kind), want, "{what}");
        }
    }

    #[test]
    fn an_outcome_carries_the_container_action_outcome_and_the_noted_finding() {
        let health = Envelope::new(
            EventType::HealthAlert,
            json!({"decision_id": "d1", "findings": [
                {"kind": "high_cpu", "severity": "medium", "message": "m"},
                {"kind": "exited", "exit_code": 3, "severity": "critical", "message": "m"}]}),
        );
        let (id, noted) = note(&health).unwrap();
        assert_eq!(id, "d1");
        assert_eq!(noted.finding, "exited");
        let a = classify(
            &complete("success", None, false),
            Some(&noted),
            &Alerts::default(),
        )
        .unwrap();
        assert_eq!(
            (
                a.container.as_str(),
                a.action.as_deref(),
                a.outcome.as_str(),
                a.severity
            ),
            ("web-1", Some("restart"), "success", Severity::Critical)
        );
        assert_eq!(a.details, "container is back");
        assert!(wants_resolve(&a));
        let r = resolved(&a, Utc::now());
        assert_eq!(r.kind, AlertKind::Resolved);
        assert_ne!(r.fingerprint(), a.fingerprint());
        assert_eq!(a.explanation, None, "the rules gave none");
        let mut ai = complete("success", None, false);
        ai.data["root_cause"] = json!("a missing marker file");
        ai.data["analysis_method"] = json!("ai");
        let a = classify(&ai, Some(&noted), &Alerts::default()).unwrap();
        assert_eq!(a.explanation.as_deref(), Some("a missing marker file"));
    }
}
