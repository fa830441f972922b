//! Announce a problem once: what identifies it ([`Signature`]), whether this reconcile is a
//! new problem or a due retry, and the `health_alert` / decision envelopes.

use chrono::{DateTime, Utc};

use super::Context;
use super::context::Handled;
use crate::model::container::ContainerInfo;
use crate::model::decision::{ActionKind, Decision};
use crate::model::wire::{
    AiNote, DecisionPayload, Envelope, FalseAlarm, HealthAlert, MetricsSnapshot, Payload,
    RemediationNeeded, round1, wire_timestamp_secs,
};
use crate::observe::store::Observed;
use crate::policy::HealthPolicy;

/// Identifies a problem: the finding acted on, the action, and the container's run (its
/// `StartedAt`: a run ends once, so its end adds nothing, and an exit decided from the `die`
/// event's time must be the same problem as the inspection after it, whose `FinishedAt`
/// differs from that time by a little).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Signature {
    finding: String,
    action: Option<ActionKind>,
    started_at: Option<DateTime<Utc>>,
}

impl Signature {
    /// The signature of `decision` about `info`'s current run.
    pub(crate) fn of(decision: &Decision, info: &ContainerInfo) -> Self {
        Self {
            finding: decision.primary.clone().unwrap_or_default(),
            action: decision.action,
            started_at: info.started_at,
        }
    }
}

/// What to do with a problem this reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Seen for the first time: announce, then act.
    New,
    /// Announced already and its wait is over: act again, quietly.
    RetryDue,
    /// Announced already; nothing to do until then (or the next resync).
    Quiet(Option<DateTime<Utc>>),
}

/// How long a container must stay below its thresholds before a transient spike is a new
/// episode, announced again: a container pinned at its CPU limit dips below the threshold
/// between samples, and each dip must not make the next sample a new problem.
pub(crate) const SPIKE_EPISODE_QUIET: std::time::Duration = std::time::Duration::from_secs(60);

/// The finding name of a transient spike.
const SPIKE: &str = "transient_spike";

fn episode_over(p: &Handled, now: DateTime<Utc>) -> bool {
    p.quiet_since.is_some_and(|q| {
        now - q >= chrono::Duration::from_std(SPIKE_EPISODE_QUIET).unwrap_or(chrono::Duration::MAX)
    })
}

/// Pure: what to remember of `previous` when no probe finds anything at `now`: nothing
/// (`None`), or, for a transient spike whose episode is not over, the same with the start of
/// the quiet period.
pub(crate) fn quiet(previous: Option<Handled>, now: DateTime<Utc>) -> Option<Handled> {
    let mut p = previous.filter(|p| p.signature.finding == SPIKE && !episode_over(p, now))?;
    p.quiet_since.get_or_insert(now);
    Some(p)
}

/// Pure: the turn of a problem with `signature`, given what was last handled.
pub(crate) fn turn(previous: Option<&Handled>, signature: &Signature, now: DateTime<Utc>) -> Turn {
    match previous {
        Some(p) if p.signature == *signature && !episode_over(p, now) => match p.retry_at {
            Some(t) if now >= t => Turn::RetryDue,
            retry_at => Turn::Quiet(retry_at),
        },
        _ => Turn::New,
    }
}

/// Remembers the problem handled for `id`, and when it may be acted on again.
pub(crate) fn remember(
    ctx: &Context,
    id: &str,
    signature: Signature,
    retry_at: Option<DateTime<Utc>>,
) {
    ctx.handled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(
            id.to_owned(),
            Handled {
                signature,
                retry_at,
                failures: 0,
                quiet_since: None,
            },
        );
}

/// Counts and publishes one payload.
pub(crate) async fn publish<P: Payload>(ctx: &Context, payload: &P) {
    ctx.metrics.decision(P::TYPE);
    ctx.sink.publish(Envelope::of(payload)).await;
}

/// What one announcement is about.
pub(crate) struct Problem<'a> {
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

/// Publishes `health_alert` (before any model is asked: the alert never waits for it).
pub(crate) async fn alert(ctx: &Context, p: &Problem<'_>) {
    publish(ctx, &health_alert(ctx, p)).await;
}

/// Publishes `false_alarm`: the final decision is to do nothing.
pub(crate) async fn false_alarm(ctx: &Context, p: &Problem<'_>) {
    publish(ctx, &FalseAlarm(decision_payload(ctx, p))).await;
}

/// Publishes `remediation_needed` (and remembers the id as this process's own).
pub(crate) async fn needed(ctx: &Context, p: &Problem<'_>) {
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
        ai: AiNote::of(p.decision),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_told_by_its_die_event_is_the_same_problem_as_its_inspection() {
        let decision = Decision {
            action: Some(ActionKind::Restart),
            reason: "exited with code 3".into(),
            confidence: 1.0,
            method: crate::model::decision::AnalysisMethod::Rules,
            findings: Vec::new(),
            primary: Some("exited".into()),
            ai: None,
        };
        let told = crate::engine::fake::exited(crate::engine::fake::running("web", &[]), 3);
        let mut inspected = told.clone();
        inspected.finished_at = told
            .finished_at
            .map(|t| t - chrono::Duration::microseconds(1500));
        assert_eq!(
            Signature::of(&decision, &told),
            Signature::of(&decision, &inspected)
        );
        let mut next_run = inspected.clone();
        next_run.started_at = Some(Utc::now());
        assert_ne!(
            Signature::of(&decision, &told),
            Signature::of(&decision, &next_run)
        );
    }

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
            quiet_since: None,
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

    #[test]
    fn a_spike_episode_survives_short_dips_and_ends_after_a_quiet_minute() {
        let now = Utc::now();
        let secs = |s: i64| now - chrono::Duration::seconds(s);
        let spike = Signature {
            finding: SPIKE.into(),
            ..Signature::default()
        };
        let handled = |signature: &Signature, quiet_since| Handled {
            signature: signature.clone(),
            quiet_since,
            ..Handled::default()
        };
        let exited = Signature {
            finding: "exited".into(),
            ..Signature::default()
        };
        // (what was handled, quiet since then: kept?, and the spike's turn when it is back)
        let cases = [
            (handled(&spike, None), Some(now), Turn::Quiet(None)),
            (
                handled(&spike, Some(secs(30))),
                Some(secs(30)),
                Turn::Quiet(None),
            ),
            (handled(&spike, Some(secs(60))), None, Turn::New),
            (handled(&exited, None), None, Turn::New),
        ];
        for (i, (previous, kept, back)) in cases.into_iter().enumerate() {
            let after = quiet(Some(previous.clone()), now);
            assert_eq!(after.as_ref().and_then(|h| h.quiet_since), kept, "case {i}");
            let turn_back = match &after {
                Some(h) => turn(Some(h), &spike, now),
                None => turn(None, &spike, now),
            };
            assert_eq!(turn_back, back, "case {i}");
        }
        assert_eq!(quiet(None, now).map(|h| h.quiet_since), None);
    }
}
