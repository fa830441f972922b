//! One outcome, reported once: the `remediation_complete` payload and the audit record are
//! built here for the responder and for refused external requests alike.

use chrono::{DateTime, Utc};

use crate::model::audit::AuditRecord;
use crate::model::decision::AnalysisMethod;
use crate::model::wire::{ActionResult, AiNote, RemediationComplete};

/// Everything an outcome report says.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    /// Container name.
    pub container: String,
    /// Container id, when known.
    pub container_id: Option<String>,
    /// The governing policy, when known.
    pub policy: Option<String>,
    /// The action (`none`/`unknown` when there was none).
    pub action: String,
    /// `success`, `failed`, `rejected` or `dry_run`.
    pub status: &'static str,
    /// What happened, or why it was refused.
    pub details: String,
    /// Which gate refused it.
    pub gate: Option<String>,
    /// Nothing was touched because of a dry run.
    pub dry_run: bool,
    /// The decision's confidence (absent for refused external requests).
    pub confidence: Option<f64>,
    /// Why it was decided.
    pub reason: String,
    /// The decision's id.
    pub decision_id: String,
    /// How it was decided.
    pub method: AnalysisMethod,
    /// The node.
    pub node: String,
    /// Why an external request was refused.
    pub refusal: Option<String>,
    /// The circuit breaker opened now.
    pub gave_up: bool,
    /// When the engine call started, for actions that ran.
    pub action_started_at: Option<DateTime<Utc>>,
    /// What the model said (`analysis.mode: ai` only).
    pub ai: AiNote,
}

impl Report {
    /// The `remediation_complete` payload.
    pub(crate) fn payload(&self) -> RemediationComplete {
        RemediationComplete {
            container: self.container.clone(),
            action: self.action.clone(),
            result: ActionResult::new(self.status, &self.action, &self.container, &self.details),
            dry_run: self.dry_run,
            confidence: self.confidence,
            reason: self.reason.clone(),
            decision_id: self.decision_id.clone(),
            analysis_method: self.method,
            container_id: self.container_id.clone(),
            policy: self.policy.clone(),
            node: self.node.clone(),
            gate: self.gate.clone(),
            refusal: self.refusal.clone(),
            gave_up: self.gave_up,
            ai: self.ai.clone(),
        }
    }

    /// The audit record, stamped `now`.
    pub(crate) fn audit(self, now: DateTime<Utc>) -> AuditRecord {
        AuditRecord {
            decision_id: self.decision_id,
            timestamp: now,
            node: self.node,
            container: self.container,
            container_id: self.container_id.unwrap_or_default(),
            policy: self.policy.unwrap_or_default(),
            action: self.action,
            status: self.status.to_owned(),
            reason: self.reason,
            details: self.details,
            action_started_at: self.action_started_at,
            gate: self.gate,
            analysis_method: Some(self.method),
            root_cause: self.ai.root_cause,
            fallback_reason: self.ai.fallback_reason,
        }
    }
}
