//! `analysis.mode: ai` in the reconcile: the model reviews the rules' decision about one container.

use chrono::Utc;
use tracing::debug;

use super::Context;
use crate::analyze::llm::prompt::{Facts, RepairNote};
use crate::analyze::llm::verdict::{fall_back, rules_verdict};
use crate::analyze::{AiReview, Decision};
use crate::docker::ContainerInfo;
use crate::observe::store::Observed;
use crate::policy::{AnalysisMode, HealthPolicy};
use crate::respond::safety::{Outcome, SafetyState};

/// What `fallback_reason` says when no model is configured.
pub const NO_MODEL: &str =
    "no model is configured (set OPENAI_API_KEY or ANTHROPIC_API_KEY): the rules decide";

/// The failure, without the container's life: the same crash again is the same signature,
/// so a crash loop asks the model once. A different rules' verdict (an escalation) asks again.
pub fn failure_signature(policy: &HealthPolicy, info: &ContainerInfo, rules: &Decision) -> String {
    format!(
        "{}|{}|{}|{:?}|{}|{}|{:?}",
        policy.metadata.name,
        info.name,
        rules.primary.as_deref().unwrap_or_default(),
        info.exit_code,
        info.oom_killed,
        rules.action.map_or("none", |a| a.as_str()),
        policy.spec.remediation.actions,
    )
}

/// The decision to carry out: the rules' own unless the policy asks for `ai` and a finding
/// exists; then the model's when valid, else the rules' recorded as a fallback.
pub async fn review(
    ctx: &Context,
    policy: &HealthPolicy,
    observed: &Observed,
    seen: &ContainerInfo,
    safety: &SafetyState,
    rules: Decision,
) -> Decision {
    if policy.spec.analysis.mode != AnalysisMode::Ai || rules.findings.is_empty() {
        return rules;
    }
    let Some(ai) = &ctx.ai else {
        let review = AiReview {
            provider: "none".into(),
            model: String::new(),
            rules: rules_verdict(&rules),
            answer: None,
            fallback_reason: None,
            cached: false,
            latency_ms: 0,
        };
        return fall_back(rules, review, NO_MODEL);
    };
    let signature = failure_signature(policy, seen, &rules);
    let log_lines = policy.spec.analysis.include_logs as usize;
    let (findings, verdict) = (rules.findings.clone(), rules_verdict(&rules));
    let facts = async move {
        let diagnostics = match ctx.docker.diagnostics(&seen.id, log_lines).await {
            Ok(d) => d,
            Err(e) => {
                debug!(container = %seen.name, error = %e, "no health log or logs for the model");
                Default::default()
            }
        };
        Facts {
            container: seen.clone(),
            findings,
            rules: verdict,
            usage: observed.usage.iter().copied().collect(),
            restarts: observed.restarts.iter().copied().collect(),
            repairs: safety
                .actions
                .iter()
                .map(|a| RepairNote {
                    at: a.at,
                    action: a.action,
                    finding: a.finding.clone(),
                    outcome: match a.outcome {
                        Outcome::Pending => "pending",
                        Outcome::Succeeded => "succeeded",
                        Outcome::Failed => "failed",
                    }
                    .to_owned(),
                })
                .collect(),
            health_log: diagnostics.health_log,
            logs: diagnostics.logs,
            now: Utc::now(),
        }
    };
    ai.review(policy, rules, &signature, facts).await
}

/// The allow-listed command the model chose for an exec, when its answer is used.
pub fn exec_command<'p>(policy: &'p HealthPolicy, decision: &Decision) -> Option<&'p [String]> {
    let i = decision.exec_command_index()?;
    let exec = policy.spec.remediation.exec.as_ref()?;
    exec.allowed.get(i).map(Vec::as_slice)
}
