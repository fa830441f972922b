//! Remediation requests from other tools on `hemostat:remediation_needed` (`--accept-external-requests`): untrusted input, validated, then carried out by the responder behind every safety gate.
//!
//! The original system let a custom analyzer publish `remediation_needed` envelopes
//! `{timestamp, agent, type, data: {container, action, reason, confidence, command?}}` for the
//! responder to carry out. Here such a request is honoured only when:
//!
//! - the payload is at most [`MAX_PAYLOAD`](request::MAX_PAYLOAD) bytes of JSON with the envelope's shape, `type`
//!   `remediation_needed`, and `data` carrying a valid container name, a known action, a
//!   `reason` string and a numeric `confidence`;
//! - it is not this operator's own decision read back (agent `HemoStat-Analyzer` with
//!   `data.node` naming this node, or a `data.decision_id` this process produced), nor addressed
//!   to another node (`data.node` naming another node): those are ignored, not refused;
//! - the container is observed here and governed by a policy, the policy allows the action, an
//!   `exec` carries a `command` exactly on the policy's allow-list, and the confidence (clamped
//!   to 0..=1) reaches the policy's `minConfidence`.
//!
//! Then it becomes a [`Decision`](crate::model::decision::Decision) ([`AnalysisMethod::External`](crate::model::decision::AnalysisMethod::External)) handed to
//! [`crate::respond::Responder::respond`], so protected containers, manual stops, dry-run,
//! cooldown, maximum actions, the circuit breaker, the in-flight lock and the fleet budget all
//! apply, and the outcome is announced and audited as any other. A request refused before the
//! responder is counted (`hemostat_external_requests_total{result="refused_<reason>"}`), logged
//! at warn with the reason (never the payload) and, when its container name is valid, announced
//! as a `remediation_complete` with `result.status: "rejected"` and `gate: "external_request"`.
//!
//! [`request`] reads and checks one message (pure); [`handle`] refuses, rate-limits the
//! announcements of refusals, or hands the request to the responder.

pub(crate) mod handle;
pub mod request;

/// The `gate` of a request refused before it reached the responder.
pub(crate) const GATE: &str = "external_request";
