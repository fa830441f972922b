//! One reconcile of one container: observe, analyze, announce, and let the responder act.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tracing::{debug, info};

use super::context::Handled;
use super::{Action, Context, Error};
use crate::analyze::{Decision, Observation, analyze};
use crate::bus::envelope::wire_timestamp_secs;
use crate::bus::{Envelope, EventType};
use crate::observe::store::Observed;
use crate::policy::HealthPolicy;
use crate::policy::select::Target;
use crate::respond::safety::Refusal;
use crate::respond::{Request, Response, safety_key};

/// Reconciles one container: computes everything again from what is observed now
/// (level-triggered), announces a problem once, and asks the responder to act when the
/// analyzer says so. Returns when to look again.
pub async fn reconcile(id: &str, ctx: &Context) -> Result<Action, Error> {
    // Fresh from the engine: events only trigger, the inspection here is the truth.
    match ctx.docker.inspect(id).await {
        Ok(Some(info)) if in_scope(ctx, &info.labels) => ctx.observed.upsert(info, Utc::now()),
        Ok(_) => ctx.observed.remove(id),
        Err(e) if e.is_not_found() => ctx.observed.remove(id),
        Err(e) => return Err(Error::Docker(e)),
    }
    let Some(observed) = ctx.observed.get(id) else {
        ctx.handled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        return Ok(Action::AwaitChange);
    };
    let info = &observed.info;
    let target = Target {
        name: &info.name,
        image: &info.image,
        labels: &info.labels,
    };
    let Some(policy) = ctx.policies.governing(target) else {
        ctx.handled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        return Ok(Action::Requeue(ctx.config.resync));
    };
    let now = Utc::now();
    let key = safety_key(&ctx.config.node, &info.name);
    let safety = ctx.store.safety(&key).await.map_err(Error::Store)?;
    let mut seen = info.clone();
    seen.oom_killed |= observed.oom_seen;
    let usage: Vec<_> = observed.usage.iter().copied().collect();
    let restarts: Vec<_> = observed.restarts.iter().copied().collect();
    let observation = Observation {
        info: &seen,
        now,
        usage: &usage,
        restarts: &restarts,
        manual_stop: observed.manual_stop,
        unhealthy_since: observed.unhealthy_since,
        failed_repairs: safety.recent_failures(&policy, now),
    };
    let decision = analyze(&policy, &observation);
    if decision.findings.is_empty() {
        ctx.handled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        return Ok(Action::Requeue(next_look(ctx, &policy, &observed, now)));
    }

    let signature = format!(
        "{}|{:?}|{:?}|{:?}",
        decision.primary.as_deref().unwrap_or_default(),
        decision.action,
        info.started_at,
        info.finished_at
    );
    let previous = ctx
        .handled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(id)
        .cloned();
    let is_new = previous.as_ref().is_none_or(|p| p.signature != signature);
    let retry_due = previous
        .as_ref()
        .and_then(|p| p.retry_at)
        .is_some_and(|t| now >= t);
    if !is_new && !retry_due {
        return Ok(requeue_until(ctx, previous.and_then(|p| p.retry_at)));
    }

    let decision_id = uuid::Uuid::new_v4().to_string();
    if is_new {
        publish(
            ctx,
            EventType::HealthAlert,
            alert_data(ctx, &observed, &seen, &policy, &decision, &decision_id),
        )
        .await;
    }
    let Some(action) = decision.action else {
        if is_new {
            let data = decision_data(ctx, &observed, &policy, &decision, &decision_id);
            publish(ctx, EventType::FalseAlarm, data).await;
        }
        remember(ctx, id, signature, None);
        return Ok(Action::Requeue(ctx.config.resync));
    };
    let data = decision_data(ctx, &observed, &policy, &decision, &decision_id);
    ctx.own_decisions.insert(&decision_id);
    publish(ctx, EventType::RemediationNeeded, data).await;
    info!(container = %info.name, %action, reason = %decision.reason, "remediation needed");
    let response = ctx
        .responder
        .respond(Request {
            policy: &policy,
            info: &seen,
            decision: &decision,
            decision_id: &decision_id,
            manual_stop: observed.manual_stop,
            command: None,
        })
        .await;
    debug!(container = %info.name, status = response.status(), "responded");
    let retry_at = retry_after(&response, &policy, now);
    remember(ctx, id, signature, retry_at);
    Ok(requeue_until(ctx, retry_at))
}

/// True when the container carries the operator's `--label-filter` (or there is none).
pub fn in_scope(ctx: &Context, labels: &std::collections::BTreeMap<String, String>) -> bool {
    match &ctx.config.label_filter {
        None => true,
        Some(filter) => {
            let (k, v) = filter.split_once('=').unwrap_or((filter.as_str(), ""));
            labels
                .get(k)
                .is_some_and(|value| v.is_empty() || value == v)
        }
    }
}

/// When to look again at a container with no finding yet: at the latest after a resync, or
/// when an unhealthy healthcheck will have lasted the policy's `unhealthyFor`.
fn next_look(
    ctx: &Context,
    policy: &HealthPolicy,
    observed: &Observed,
    now: chrono::DateTime<Utc>,
) -> Duration {
    let mut wait = ctx.config.resync;
    if let (Some(probe), Some(since)) = (&policy.spec.probes.healthcheck, observed.unhealthy_since)
    {
        let due = crate::respond::safety::later(since, probe.unhealthy_for.get());
        if let Ok(left) = (due - now).to_std() {
            wait = wait.min(left.saturating_add(Duration::from_millis(50)));
        }
    }
    wait.max(Duration::from_millis(50))
}

/// When the same problem may be acted on again after this response.
fn retry_after(
    response: &Response,
    policy: &HealthPolicy,
    now: chrono::DateTime<Utc>,
) -> Option<chrono::DateTime<Utc>> {
    let r = &policy.spec.remediation;
    let after = |d: Duration| crate::respond::safety::later(now, d);
    match response {
        Response::Success(_) | Response::Failed(_) => Some(after(r.cooldown.get())),
        Response::Rejected(Refusal::Cooldown { until, .. })
        | Response::Rejected(Refusal::CircuitOpen { until, .. }) => Some(*until),
        Response::Rejected(Refusal::MaxActions { .. })
        | Response::Rejected(Refusal::FleetBudget { .. }) => Some(after(Duration::from_secs(60))),
        Response::Rejected(Refusal::InFlight) => Some(after(Duration::from_secs(5))),
        Response::GaveUp(_) => Some(after(r.circuit_breaker.open_for.get())),
        Response::Rejected(_) | Response::DryRun => None,
    }
}

fn requeue_until(ctx: &Context, at: Option<chrono::DateTime<Utc>>) -> Action {
    let resync = ctx.config.resync;
    let wait = at
        .and_then(|t| (t - Utc::now()).to_std().ok())
        .map_or(resync, |d| d.min(resync))
        .max(Duration::from_millis(100));
    Action::Requeue(wait)
}

fn remember(ctx: &Context, id: &str, signature: String, retry_at: Option<chrono::DateTime<Utc>>) {
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

async fn publish(ctx: &Context, event_type: EventType, data: serde_json::Value) {
    ctx.metrics.decision(event_type);
    ctx.sink.publish(Envelope::new(event_type, data)).await;
}

/// The original's `metrics` object: `{name, status, memory_pct, cpu_pct, timestamp}`.
fn metrics_json(observed: &Observed) -> serde_json::Value {
    let latest = observed.usage.back();
    json!({
        "name": observed.info.name,
        "status": observed.info.state,
        "memory_pct": latest.map(|u| round1(u.memory_percent)),
        "cpu_pct": latest.map(|u| round1(u.cpu_percent)),
        "timestamp": wire_timestamp_secs(latest.map_or_else(Utc::now, |u| u.at)),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn alert_data(
    ctx: &Context,
    observed: &Observed,
    seen: &crate::docker::ContainerInfo,
    policy: &HealthPolicy,
    decision: &Decision,
    decision_id: &str,
) -> serde_json::Value {
    json!({
        "container": seen.name,
        "issues": decision.findings.iter().map(|f| f.message.clone()).collect::<Vec<_>>(),
        "metrics": metrics_json(observed),
        "findings": decision.findings,
        "exit_code": seen.exit_code,
        "oom_killed": seen.oom_killed,
        "health": seen.health,
        "container_id": seen.id,
        "decision_id": decision_id,
        "policy": policy.metadata.name,
        "node": ctx.config.node,
    })
}

fn decision_data(
    ctx: &Context,
    observed: &Observed,
    policy: &HealthPolicy,
    decision: &Decision,
    decision_id: &str,
) -> serde_json::Value {
    let mut data = json!({
        "container": observed.info.name,
        "reason": decision.reason,
        "confidence": decision.confidence,
        "metrics": metrics_json(observed),
        "analysis_method": decision.method,
        "decision_id": decision_id,
        "container_id": observed.info.id,
        "policy": policy.metadata.name,
        "node": ctx.config.node,
        "dry_run": policy.spec.remediation.dry_run || ctx.responder.global_dry_run,
    });
    if let Some(action) = decision.action {
        data["action"] = json!(action.as_str());
    }
    data
}
