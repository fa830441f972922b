//! Announce a problem once: what identifies it ([`Signature`]), whether this reconcile is a
//! new problem or a due retry, and the `health_alert` / decision envelopes.

use chrono::{DateTime, Utc};

use super::Context;
use super::context::Handled;
use crate::analyze::Decision;
use crate::engine::ContainerInfo;
use crate::model::wire::{
    DecisionPayload, Envelope, FalseAlarm, HealthAlert, MetricsSnapshot, Payload,
    RemediationNeeded, round1, wire_timestamp_secs,
};
use crate::observe::store::Observed;
use crate::policy::{ActionKind, HealthPolicy};

/// Identifies a problem: the finding acted on, the action, and the container's run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signature {
    finding: String,
    action: Option<ActionKind>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl Signature {
    /// The signature of `decision` about `info`'s current run.
    pub fn of(decision: &Decision, info: &ContainerInfo) -> Self {
        Self {
            finding: decision.primary.clone().unwrap_or_default(),
            action: decision.action,
            started_at: info.started_at,
            finished_at: info.finished_at,
        }
    }
}

/// What to do with a problem this reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Seen for the first time: announce, then act.
    New,
    /// Announced already and its wait is over: act again, quietly.
    RetryDue,
    /// Announced already; nothing to do until then (or the next resync).
    Quiet(Option<DateTime<Utc>>),
}

/// Pure: the turn of a problem with `signature`, given what was last handled.
pub fn turn(previous: Option<&Handled>, signature: &Signature, now: DateTime<Utc>) -> Turn {
    match previous {
        Some(p) if p.signature == *signature => match p.retry_at {
            Some(t) if now >= t => Turn::RetryDue,
            retry_at => Turn::Quiet(retry_at),
        },
        _ => Turn::New,
    }
}

/// Remembers the problem handled for `id`, and when it may be acted on again.
pub fn remember(ctx: &Context, id: &str, signature: Signature, retry_at: Option<DateTime<Utc>>) {
    ctx.handled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(
            id.to_owned(),
            Handled {
                signature,
                retry_at,
                failures: 0,
            },
        );
}

/// Counts and publishes one payload.
pub async fn publish<P: Payload>(ctx: &Context, payload: &P) {
    ctx.metrics.decision(P::TYPE);
    ctx.sink.publish(Envelope::of(payload)).await;
}

/// What one announcement is about.
pub struct Problem<'a> {
    /// The container's view.
    pub observed: &'a Observed,
    /// The inspection the analysis saw (with an `oom` event folded in).
    pub seen: &'a ContainerInfo,
    /// The governing policy.
    pub policy: &'a HealthPolicy,
    /// The decision.
    pub decision: &'a Decision,
    /// Its id.
    pub decision_id: &'a str,
}

/// Publishes `health_alert`, then `false_alarm` when there is no action.
pub async fn alert(ctx: &Context, p: &Problem<'_>) {
    publish(ctx, &health_alert(ctx, p)).await;
    if p.decision.action.is_none() {
        publish(ctx, &FalseAlarm(decision_payload(ctx, p))).await;
    }
}

/// Publishes `remediation_needed` (and remembers the id as this process's own).
pub async fn needed(ctx: &Context, p: &Problem<'_>) {
    ctx.own_decisions.insert(p.decision_id);
    publish(ctx, &RemediationNeeded(decision_payload(ctx, p))).await;
}

/// The original's `metrics` object: the latest usage sample, `null`s before the first.
fn metrics_of(observed: &Observed) -> MetricsSnapshot {
    let latest = observed.usage.back();
    MetricsSnapshot {
        name: observed.info.name.clone(),
        status: observed.info.state,
        memory_pct: latest.map(|u| round1(u.memory_percent)),
        cpu_pct: latest.map(|u| round1(u.cpu_percent)),
        timestamp: wire_timestamp_secs(latest.map_or_else(Utc::now, |u| u.at)),
    }
}

fn health_alert(ctx: &Context, p: &Problem<'_>) -> HealthAlert {
    HealthAlert {
        container: p.seen.name.clone(),
        issues: p
            .decision
            .findings
            .iter()
            .map(|f| f.message.clone())
            .collect(),
        metrics: metrics_of(p.observed),
        findings: p.decision.findings.clone(),
        exit_code: p.seen.exit_code,
        oom_killed: p.seen.oom_killed,
        health: p.seen.health,
        container_id: p.seen.id.clone(),
        decision_id: p.decision_id.to_owned(),
        policy: p.policy.metadata.name.clone(),
        node: ctx.config.node.clone(),
    }
}

fn decision_payload(ctx: &Context, p: &Problem<'_>) -> DecisionPayload {
    DecisionPayload {
        container: p.observed.info.name.clone(),
        reason: p.decision.reason.clone(),
        confidence: p.decision.confidence,
        metrics: metrics_of(p.observed),
        analysis_method: p.decision.method,
        decision_id: p.decision_id.to_owned(),
        container_id: p.observed.info.id.clone(),
        policy: p.policy.metadata.name.clone(),
        node: ctx.config.node.clone(),
        dry_run: p.policy.spec.remediation.dry_run || ctx.responder.global_dry_run,
        action: p.decision.action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_new_until_announced_then_quiet_until_its_retry_is_due() {
        let now = Utc::now();
        let sig = Signature {
            finding: "exited".into(),
            action: Some(ActionKind::Restart),
            ..Signature::default()
        };
        let other = Signature {
            finding: "unhealthy".into(),
            ..sig.clone()
        };
        let handled = |retry_at| Handled {
            signature: sig.clone(),
            retry_at,
            failures: 0,
        };
        let later = now + chrono::Duration::seconds(5);
        let cases = [
            (None, &sig, Turn::New),
            (Some(handled(None)), &other, Turn::New),
            (Some(handled(None)), &sig, Turn::Quiet(None)),
            (Some(handled(Some(later))), &sig, Turn::Quiet(Some(later))),
            (Some(handled(Some(now))), &sig, Turn::RetryDue),
        ];
        for (i, (previous, signature, want)) in cases.into_iter().enumerate() {
            assert_eq!(turn(previous.as_ref(), signature, now), want, "case {i}");
        }
    }
}
