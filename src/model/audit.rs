//! One audited responder outcome, as kept in the audit trail.

use serde::{Deserialize, Serialize};

/// One audited responder outcome (what `remediation_complete` announces).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The decision it belongs to.
    pub decision_id: String,
    /// When it ended.
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// The node that acted.
    pub node: String,
    /// Container name.
    pub container: String,
    /// Container id.
    pub container_id: String,
    /// The governing policy.
    pub policy: String,
    /// The action.
    pub action: String,
    /// `success`, `failed`, `rejected`, `dry_run`, or `interrupted` (an action a dead
    /// operator process left pending, settled by a later one: see `respond::settle`).
    pub status: String,
    /// Why it was decided.
    pub reason: String,
    /// What happened, or why it was refused.
    pub details: String,
    /// When the call to the engine started (for actions that ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Which gate refused it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// How the decision was reached (`rules`, `ai`, `rule_based_fallback`, `external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_method: Option<super::decision::AnalysisMethod>,
    /// The model's root cause, when its answer was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<String>,
    /// Why the rules decided although the policy asks for `ai`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}
