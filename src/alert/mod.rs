//! Decisions → people: alerts built from the live envelopes, de-duplicated, silenced, grouped
//! and delivered to Slack, webhooks and Alertmanager without ever blocking the loop.
//!
//! # Layout
//! - [`classify`]: pure: an envelope (and the finding announced before it) → an [`Alert`] or nothing.
//! - [`dedup`]: pure: the same alert (node, container, finding, outcome) once per window.
//! - [`group`]: pure: alerts that arrive together go out as one message.
//! - [`silence`]: pure: silences and their matcher; [`state`]: where silences are kept;
//!   [`mark`]: envelopes about silenced containers carry `data.silenced`.
//! - [`notify`]: the `Notifier` trait and the per-channel delivery worker (bounded queue,
//!   rate limit, timeouts, retries honouring `Retry-After`).
//! - [`channels`]: channels from policies and the original's environment.
//! - [`router`]: the task consuming `EventSink::subscribe()`.
//! - [`secret`]: webhook URLs and keys, resolved from env or file, never printed.
//! - [`api`]: `GET /api/v1/silences` and `GET /api/v1/alerts`.
//! - [`metrics`]: the `hemostat_notifications_*` metrics.

pub(crate) mod api;
pub mod channels;
pub(crate) mod classify;
pub(crate) mod dedup;
pub(crate) mod group;
pub(crate) mod mark;
pub mod metrics;
pub mod notify;
pub mod router;
pub(crate) mod secret;
pub mod silence;
pub mod state;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::decision::Severity;

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A problem was found and nothing is done about it (no allowed action fixes it).
    Finding,
    /// A repair ran (or was dry-run): its outcome.
    Outcome,
    /// A refusal a person must know about (breaker open, give-up, fleet budget, manual stop).
    Refusal,
    /// The analyzer decided it was a false alarm (sent only when asked for).
    FalseAlarm,
    /// A repaired container stayed healthy.
    Resolved,
    /// `hemostat alert test`.
    Test,
}

impl AlertKind {
    /// The name on the wire and in messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Finding => "finding",
            Self::Outcome => "outcome",
            Self::Refusal => "refusal",
            Self::FalseAlarm => "false_alarm",
            Self::Resolved => "resolved",
            Self::Test => "test",
        }
    }
}

/// One thing people should hear about, as every channel renders it (and as the webhook body
/// carries it; see the README for the schema).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// The node whose operator saw it.
    pub node: String,
    /// Container name.
    pub container: String,
    /// Container id.
    pub container_id: String,
    /// The governing policy.
    pub policy: String,
    /// The most severe finding behind it.
    pub severity: Severity,
    /// The finding's stable name (`exited`, `unhealthy`, `high_cpu`, …; `external` for a
    /// request of another tool).
    pub finding: String,
    /// The action decided, if any.
    pub action: Option<String>,
    /// `success`, `failed`, `rejected`, `dry_run`, or `none` when nothing was attempted.
    pub outcome: String,
    /// The gate that refused it, for refusals.
    pub gate: Option<String>,
    /// Why it was decided (the findings, for people).
    pub reason: String,
    /// What happened, or why it was refused.
    pub details: String,
    /// The analyzer's explanation, when it gave one.
    pub explanation: Option<String>,
    /// `rules`, `ai` or `external`.
    pub analysis_method: Option<String>,
    /// The decision it belongs to.
    pub decision_id: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The envelope it was built from (the original's `{timestamp, agent, type, data}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<crate::model::wire::Envelope>,
}

impl Alert {
    /// The de-duplication key: node + container + finding + outcome (and kind and gate, so a
    /// refusal never hides an outcome). The original keyed on the event type alone and dropped
    /// real alerts about other containers.
    pub(crate) fn fingerprint(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}",
            self.node,
            self.container,
            self.finding,
            self.kind.as_str(),
            self.outcome,
            self.gate.as_deref().unwrap_or("")
        )
    }

    /// One line for people: `web-1 on node-a: restart success (Exited with code 3)`.
    pub(crate) fn headline(&self) -> String {
        let what = match (self.kind, &self.action) {
            (AlertKind::Resolved, Some(a)) => format!("resolved after {a}"),
            (AlertKind::Resolved, None) => "resolved".to_owned(),
            (AlertKind::FalseAlarm, _) => "false alarm, nothing done".to_owned(),
            (AlertKind::Finding, _) => "problem found, nothing done".to_owned(),
            (AlertKind::Test, _) => "test notification".to_owned(),
            (_, Some(a)) => format!("{a} {}", self.outcome),
            (_, None) => self.outcome.clone(),
        };
        format!("{} on {}: {what}", self.container, self.node)
    }

    /// A test alert for `hemostat alert test`.
    pub fn test(node: &str) -> Self {
        Self {
            kind: AlertKind::Test,
            node: node.to_owned(),
            container: "hemostat-test".to_owned(),
            container_id: String::new(),
            policy: "-".to_owned(),
            severity: Severity::Low,
            finding: "test".to_owned(),
            action: None,
            outcome: "none".to_owned(),
            gate: None,
            reason: "a test notification sent by `hemostat alert test`".to_owned(),
            details: "if you can read this, the channel works".to_owned(),
            explanation: None,
            analysis_method: None,
            decision_id: uuid::Uuid::new_v4().to_string(),
            at: Utc::now(),
            envelope: None,
        }
    }
}
