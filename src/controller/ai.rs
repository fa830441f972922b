//! `analysis.mode: ai` in the reconcile: the model reviews the rules' decision about one container.

use chrono::Utc;
use tracing::debug;

use super::Context;
use crate::analyze::llm::prompt::{Facts, RepairNote};
use crate::analyze::llm::verdict::{fall_back, rules_verdict};
use crate::model::container::ContainerInfo;
use crate::model::decision::{AiReview, Decision};
use crate::model::safety::{Outcome, SafetyState};
use crate::observe::store::Observed;
use crate::policy::{AnalysisMode, HealthPolicy};

/// What `fallback_reason` says when no model is configured.
pub(crate) const NO_MODEL: &str =
    "no model is configured (set OPENAI_API_KEY or ANTHROPIC_API_KEY): the rules decide";

/// The failure, without the container's life: the same crash again is the same signature,
/// so a crash loop asks the model once. A different rules' verdict (an escalation) asks again.
pub(crate) fn failure_signature(
    policy: &HealthPolicy,
    info: &ContainerInfo,
    rules: &Decision,
) -> String {
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
pub(crate) async fn review(
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
                        Outcome::Interrupted => "interrupted",
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
pub(crate) fn exec_command<'p>(
    policy: &'p HealthPolicy,
    decision: &Decision,
) -> Option<&'p [String]> {
    let i = decision.exec_command_index()?;
    let exec = policy.spec.remediation.exec.as_ref()?;
    exec.allowed.get(i).map(Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use crate::analyze::llm::{
        AiAnalyzer, AiLimits, AiMetrics, LlmClient, LlmError, LlmReply, LlmRequest,
    };
    use crate::controller::reconcile;
    use crate::engine::fake::{Call, exited, running};
    use crate::fixtures::{TestContext, policy};
    use crate::model::container::{ContainerInfo, HealthStatus};
    use crate::model::wire::EventType;

    const ID: &str = "web-id";

    /// Answers every question with `answer`, keeping the questions.
    struct Model {
        answer: &'static str,
        asked: Mutex<Vec<LlmRequest>>,
    }

    #[async_trait::async_trait]
    impl LlmClient for Model {
        fn provider(&self) -> &'static str {
            "openai"
        }
        fn model(&self) -> &str {
            "test"
        }
        async fn complete(&self, req: &LlmRequest) -> Result<LlmReply, LlmError> {
            self.asked.lock().unwrap().push(req.clone());
            Ok(LlmReply {
                content: self.answer.into(),
                input_tokens: 0,
                output_tokens: 0,
            })
        }
    }

    struct NoMetrics;

    impl AiMetrics for NoMetrics {
        fn ai_request(&self, _: &str, _: &str, _: Option<Duration>) {}
        fn ai_tokens(&self, _: &str, _: &str, _: u64) {}
    }

    fn given(spec: &str, info: ContainerInfo, answer: &'static str) -> (TestContext, Arc<Model>) {
        let model = Arc::new(Model {
            answer,
            asked: Mutex::default(),
        });
        let ai = AiAnalyzer::new(model.clone(), Arc::new(NoMetrics), AiLimits::default());
        let t = TestContext::with_ai(vec![policy("p", spec)], Arc::new(ai));
        t.engine.put(info);
        (t, model)
    }

    #[tokio::test(start_paused = true)]
    async fn a_valid_none_is_announced_as_a_false_alarm_after_the_alert_and_nothing_is_done() {
        let spec = "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n  analysis: {mode: ai}\n";
        let none = r#"{"action": "none", "confidence": 0.9, "reason": "a planned exit", "root_cause": "job done"}"#;
        let (t, model) = given(spec, exited(running("web", &[("role", "target")]), 1), none);
        reconcile(ID, &t.ctx).await.unwrap();
        assert!(t.engine.calls().is_empty());
        let kinds: Vec<_> = t
            .envelopes()
            .await
            .iter()
            .filter_map(|e| e.kind())
            .collect();
        assert_eq!(kinds, [EventType::HealthAlert, EventType::FalseAlarm]);
        let alarm = &t.envelopes().await[1].data;
        assert_eq!(alarm["analysis_method"], "ai");
        assert_eq!(alarm["reason"], "false alarm: a planned exit");
        assert_eq!(alarm["root_cause"], "job done");
        assert_eq!(alarm["ai"]["rules"]["action"], "restart");
        assert!(
            model.asked.lock().unwrap()[0]
                .user
                .contains("Exited with code 1")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_exec_chosen_by_the_model_runs_exactly_the_allow_listed_command_it_named() {
        let spec = "  probes:\n    healthcheck: {unhealthyFor: 0s}\n  remediation:\n    actions: [exec, restart]\n    exec: {allowed: [[\"/bin/a\"], [\"/bin/b\", \"-x\"]]}\n  analysis: {mode: ai}\n";
        let exec1 = r#"{"action": "exec", "command": 1, "confidence": 0.9, "reason": "reload", "root_cause": "stale config"}"#;
        let mut info = running("web", &[("role", "target")]);
        info.health = HealthStatus::Unhealthy;
        let (t, _) = given(spec, info, exec1);
        reconcile(ID, &t.ctx).await.unwrap();
        assert_eq!(
            t.engine.calls(),
            [Call::Exec(ID.into(), vec!["/bin/b".into(), "-x".into()])],
            "the rules alone would have run /bin/a"
        );
    }
}
