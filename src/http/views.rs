//! The JSON bodies of `/api/v1` (and what the CLI reads back): containers with their safety
//! state, policies in force, errors.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::container::{ContainerState, HealthStatus};
use crate::model::decision::ActionKind;
use crate::model::safety::SafetyState;
use crate::policy::registry::Provenance;
use crate::policy::{Condition, HealthPolicy, PolicyStatus, Selector};

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

/// One observed container, with the policy that governs it and its safety state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerView {
    /// Name, without the leading `/`.
    pub name: String,
    /// Full id.
    pub id: String,
    /// Image reference.
    pub image: String,
    /// `running`, `exited`, …
    pub state: ContainerState,
    /// `none`, `starting`, `healthy` or `unhealthy`.
    pub health: HealthStatus,
    /// The last exit code, when it exited.
    pub exit_code: Option<i64>,
    /// The engine says the kernel OOM-killed it.
    pub oom_killed: bool,
    /// Docker's own restart count (restart policy).
    pub restart_count: u64,
    /// The last healthcheck's output (untrusted text from the container).
    #[serde(default)]
    pub health_output: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// A person stopped or killed it, and nobody started it since: left alone.
    pub manual_stop: bool,
    /// Labelled `io.hemostat.protected=true`: never acted on.
    pub protected: bool,
    /// The name of the governing policy, if any.
    pub policy: Option<String>,
    /// CPU in percent of its limit (or of all host cores), from the latest sample.
    pub cpu_percent: Option<f64>,
    /// Memory in percent of its limit (or of host memory), from the latest sample.
    pub memory_percent: Option<f64>,
    /// Restarts HemoStat has seen recently (Docker's and its own).
    pub restarts_seen: usize,
    /// Unhealthy without interruption since then.
    pub unhealthy_since: Option<DateTime<Utc>>,
    /// What the safety gates remember of it on this node.
    pub safety: SafetyView,
}

/// The safety state of a container as the gates see it now.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SafetyView {
    /// When HemoStat last acted on it.
    pub last_action_at: Option<DateTime<Utc>>,
    /// Actions within the governing policy's `maxActions.per` window (every remembered
    /// action when no policy governs it).
    pub actions_in_window: usize,
    /// Failed repairs within the governing policy's breaker window (every remembered failure
    /// when no policy governs it).
    pub failures: usize,
    /// The circuit breaker is open until then; null when closed.
    pub breaker_open_until: Option<DateTime<Utc>>,
}

impl SafetyView {
    /// What `safety` means under `policy` at `now`.
    pub(crate) fn new(
        safety: &SafetyState,
        policy: Option<&HealthPolicy>,
        now: DateTime<Utc>,
    ) -> Self {
        let within = |window: std::time::Duration, at: DateTime<Utc>| {
            chrono::Duration::from_std(window).map_or(true, |w| now - at <= w)
        };
        let (actions_in_window, failures) = match policy {
            Some(p) => {
                let r = &p.spec.remediation;
                (
                    safety
                        .actions
                        .iter()
                        .filter(|a| within(r.max_actions.per.get(), a.at))
                        .count(),
                    safety
                        .failures
                        .iter()
                        .filter(|t| within(r.circuit_breaker.within.get(), **t))
                        .count(),
                )
            }
            None => (safety.actions.len(), safety.failures.len()),
        };
        Self {
            last_action_at: safety.actions.iter().map(|a| a.at).max(),
            actions_in_window,
            failures,
            breaker_open_until: safety.open_until.filter(|until| *until > now),
        }
    }
}

/// A policy in force, as served by `/api/v1/policies`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PolicyView {
    /// `metadata.name`.
    pub name: String,
    /// `spec.priority`.
    pub priority: i32,
    /// `spec.selector`.
    pub selector: Selector,
    /// `spec.remediation.actions`, in escalation order.
    pub actions: Vec<ActionKind>,
    /// `spec.remediation.dryRun`.
    pub dry_run: bool,
    /// `file:line:col` the version in force was read from (policies from `--policies` files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Containers governed now, and the `Ready` / `Degraded` conditions: `Degraded` is `True`
    /// when the policy's document is invalid now and its last good version stays in force.
    pub status: PolicyStatus,
    /// The whole policy as enforced (what `hemostat diff --api` compares with).
    pub document: HealthPolicy,
}

impl From<&HealthPolicy> for PolicyView {
    /// The view of a policy of unknown origin, governing no container.
    fn from(p: &HealthPolicy) -> Self {
        Self::new(p, None, 0)
    }
}

impl PolicyView {
    /// The view of `p`, governing `matched` containers, read from where `provenance` says.
    pub(crate) fn new(p: &HealthPolicy, provenance: Option<&Provenance>, matched: u32) -> Self {
        let condition = |type_: &str, status: bool, reason: &str, message: String| Condition {
            type_: type_.to_owned(),
            status: if status { "True" } else { "False" }.to_owned(),
            reason: reason.to_owned(),
            message,
        };
        let conditions = match provenance {
            None => vec![condition("Ready", true, "InForce", String::new())],
            Some(from) if from.problems.is_empty() => vec![
                condition(
                    "Ready",
                    true,
                    "Loaded",
                    format!("enforced from {}", from.source),
                ),
                condition("Degraded", false, "Valid", String::new()),
            ],
            Some(from) => vec![
                condition(
                    "Ready",
                    true,
                    "LastGoodKept",
                    format!("last good version from {} enforced", from.source),
                ),
                condition(
                    "Degraded",
                    true,
                    "InvalidDocument",
                    from.problems.join("\n"),
                ),
            ],
        };
        let mut document = p.clone();
        document.status = None;
        Self {
            name: p.metadata.name.clone(),
            priority: p.spec.priority,
            selector: p.spec.selector.clone(),
            actions: p.spec.remediation.actions.clone(),
            dry_run: p.spec.remediation.dry_run,
            source: provenance.map(|from| from.source.clone()),
            status: PolicyStatus {
                matched_containers: matched,
                last_reconciled: None,
                conditions,
            },
            document,
        }
    }

    /// The problems of the policy's current document (empty when it is valid).
    pub(crate) fn problems(&self) -> Vec<&str> {
        self.status
            .conditions
            .iter()
            .filter(|c| c.type_ == "Degraded" && c.status == "True")
            .flat_map(|c| c.message.lines())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::safety::{ActionRecord, Outcome};

    #[test]
    fn the_safety_view_counts_within_the_policy_windows_and_hides_a_closed_breaker() {
        let now = Utc::now();
        let hours = |h: i64| now - chrono::Duration::hours(h);
        let record = |at| ActionRecord {
            decision_id: "d".into(),
            at,
            action: ActionKind::Restart,
            finding: "exited".into(),
            outcome: Outcome::Failed,
        };
        let safety = SafetyState {
            actions: vec![record(hours(3)), record(hours(0))],
            failures: vec![hours(3), hours(0)],
            open_until: Some(hours(-1)),
            gave_up_at: None,
        };
        let policy = crate::policy::builtin::default_policy();
        let view = SafetyView::new(&safety, Some(&policy), now);
        assert_eq!(view.actions_in_window, 1);
        assert_eq!(view.failures, 1);
        assert_eq!(view.last_action_at, Some(now));
        assert_eq!(view.breaker_open_until, Some(hours(-1)));
        let unpoliced = SafetyView::new(&safety, None, now);
        assert_eq!(unpoliced.actions_in_window, 2);
        let later = SafetyView::new(&safety, Some(&policy), hours(-2));
        assert_eq!(later.breaker_open_until, None);
    }
}
