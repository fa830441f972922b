//! One reconcile of one container: observe, analyze, announce, and let the responder act.

use std::time::Duration;

use chrono::Utc;
use tracing::{debug, info};

use super::announce::{self, Problem, Signature, Turn, remember};
use super::queue::Slot;
use super::{Action, Context, Error};
use crate::analyze::{Observation, analyze};
use crate::model::container::ContainerInfo;
use crate::model::decision::Decision;
use crate::model::safety::{SafetyState, safety_key};
use crate::observe::store::Observed;
use crate::policy::HealthPolicy;
use crate::policy::select::Target;
use crate::respond::gates::Refusal;
use crate::respond::{Request, Response};

/// Reconciles one container: computes everything again from what is observed now
/// (level-triggered), announces a problem once, and asks the responder to act when the
/// analyzer says so. Returns when to look again, once any repair is over.
pub async fn reconcile(id: &str, ctx: &Context) -> Result<Action, Error> {
    reconcile_in(id, ctx, &mut Slot::unbounded()).await
}

/// [`reconcile`] in the loop: `slot` is released as soon as the decision is made, gated and
/// announced, so the repair (the engine call and its verification, in one of the responder's
/// repair places) never holds up decisions about other containers.
pub async fn reconcile_in(id: &str, ctx: &Context, slot: &mut Slot) -> Result<Action, Error> {
    let Some(observed) = refresh(ctx, id).await? else {
        forget(ctx, id);
        return Ok(Action::AwaitChange);
    };
    let Some(policy) = ctx.policies.governing(Target::from(&observed.info)) else {
        forget(ctx, id);
        return Ok(Action::Requeue(ctx.config.reinspect()));
    };
    let now = Utc::now();
    let key = safety_key(&ctx.config.node, &observed.info.name);
    let safety = ctx.store.safety(&key).await.map_err(Error::Store)?;
    ctx.metrics
        .note_breaker(&key, safety.open_until.is_some_and(|u| now < u));
    let mut seen = observed.info.clone();
    seen.oom_killed |= observed.oom_seen;
    let decision = analyze_now(&policy, &observed, &seen, &safety, now);
    if decision.findings.is_empty() {
        settle(ctx, id, now);
        return Ok(Action::Requeue(next_look(ctx, &policy, &observed, now)));
    }
    let signature = Signature::of(&decision, &observed.info);
    let previous = ctx
        .handled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(id)
        .cloned();
    let turn = announce::turn(previous.as_ref(), &signature, now);
    if let Turn::Quiet(retry_at) = turn {
        // Back within its episode: the quiet period starts again at the next dip.
        if let Some(h) = ctx
            .handled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(id)
        {
            h.quiet_since = None;
        }
        return Ok(requeue_until(ctx, retry_at));
    }
    let decision_id = uuid::Uuid::new_v4().to_string();
    if turn == Turn::New {
        announce::alert(
            ctx,
            &problem(&observed, &seen, &policy, &decision, &decision_id),
        )
        .await;
    }
    // The rules decided; with `analysis.mode: ai` the model may now decide within the policy.
    let decision = super::ai::review(ctx, &policy, &observed, &seen, &safety, decision).await;
    let problem = problem(&observed, &seen, &policy, &decision, &decision_id);
    let Some(action) = decision.action else {
        if turn == Turn::New {
            announce::false_alarm(ctx, &problem).await;
        }
        remember(ctx, id, signature, None);
        return Ok(Action::Requeue(ctx.config.resync));
    };
    announce::needed(ctx, &problem).await;
    info!(container = %seen.name, %action, reason = %decision.reason, "remediation needed");
    let response = ctx
        .responder
        .respond_then(request(&problem, &observed), || slot.release())
        .await;
    debug!(container = %seen.name, status = response.status(), "responded");
    if matches!(response, Response::GaveUp(_)) {
        ctx.metrics.note_breaker(&key, true);
    }
    let retry_at = retry_after(&response, &policy, now);
    remember(ctx, id, signature, retry_at);
    Ok(requeue_until(ctx, retry_at))
}

/// Inspects the container afresh (the inspection is the truth) and returns its view, `None`
/// when it is gone or out of scope. An exit a `die` event told of the run last inspected is
/// decided from the event without waiting for the engine (which answers slowly while it
/// handles many exits at once); the reconcile after that inspects.
async fn refresh(ctx: &Context, id: &str) -> Result<Option<Observed>, Error> {
    if let Some(told) = ctx.observed.take_told_exit(id)
        && ctx.config.in_scope(&told.info.labels)
    {
        debug!(container = %told.info.name, exit_code = ?told.info.exit_code, "deciding the exit a die event told");
        ctx.metrics.decided_from_event();
        return Ok(Some(told));
    }
    match ctx.docker.inspect(id).await {
        Ok(Some(info)) if ctx.config.in_scope(&info.labels) => {
            ctx.observed.upsert(info, Utc::now());
        }
        Ok(_) => ctx.observed.remove(id),
        Err(e) if e.is_not_found() => ctx.observed.remove(id),
        Err(e) => return Err(Error::Docker(e)),
    }
    Ok(ctx.observed.get(id))
}

/// No probe finds anything now: the problem handled is over, but a transient spike's episode
/// only after a quiet period (see [`announce::quiet`]).
fn settle(ctx: &Context, id: &str, now: chrono::DateTime<Utc>) {
    let mut handled = ctx
        .handled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(h) = announce::quiet(handled.remove(id), now) {
        handled.insert(id.to_owned(), h);
    }
}

fn forget(ctx: &Context, id: &str) {
    ctx.handled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(id);
}

fn analyze_now(
    policy: &HealthPolicy,
    observed: &Observed,
    seen: &ContainerInfo,
    safety: &SafetyState,
    now: chrono::DateTime<Utc>,
) -> Decision {
    let usage: Vec<_> = observed.usage.iter().copied().collect();
    let restarts: Vec<_> = observed.restarts.iter().copied().collect();
    let observation = Observation {
        info: seen,
        now,
        usage: &usage,
        restarts: &restarts,
        manual_stop: observed.manual_stop,
        unhealthy_since: observed.unhealthy_since,
        failed_repairs: safety.recent_failures(&policy.spec.remediation.limits(), now),
    };
    analyze(policy, &observation)
}

fn problem<'a>(
    observed: &'a Observed,
    seen: &'a ContainerInfo,
    policy: &'a HealthPolicy,
    decision: &'a Decision,
    decision_id: &'a str,
) -> Problem<'a> {
    Problem {
        observed,
        seen,
        policy,
        decision,
        decision_id,
    }
}

fn request<'a>(p: &'a Problem<'a>, observed: &Observed) -> Request<'a> {
    Request {
        policy: p.policy,
        info: p.seen,
        decision: p.decision,
        decision_id: p.decision_id,
        manual_stop: observed.manual_stop,
        command: super::ai::exec_command(p.policy, p.decision),
    }
}

/// When to look again at a container with no finding yet: at the latest after
/// [`super::ControllerConfig::reinspect`] (events, the resync's list and the sampler bring it
/// back sooner on any change), or when an unhealthy healthcheck will have lasted the policy's
/// `unhealthyFor`.
fn next_look(
    ctx: &Context,
    policy: &HealthPolicy,
    observed: &Observed,
    now: chrono::DateTime<Utc>,
) -> Duration {
    let mut wait = if settled(&observed.info) {
        spread(ctx.config.reinspect(), &observed.info.id)
    } else {
        // Not running, or not healthy: what an inspection shows may still be changing (an
        // `oom` event after the `die`, a healthcheck not settled), so look again every resync.
        ctx.config.resync
    };
    if let (Some(probe), Some(since)) = (&policy.spec.probes.healthcheck, observed.unhealthy_since)
    {
        let due = crate::model::safety::later(since, probe.unhealthy_for.get());
        if let Ok(left) = (due - now).to_std() {
            wait = wait.min(left.saturating_add(Duration::from_millis(50)));
        }
    }
    wait.max(Duration::from_millis(50))
}

/// Running, and healthy or without a healthcheck: nothing an event would not announce.
fn settled(info: &crate::model::container::ContainerInfo) -> bool {
    use crate::model::container::{ContainerState, HealthStatus};
    info.state == ContainerState::Running
        && matches!(info.health, HealthStatus::Healthy | HealthStatus::None)
}

/// `interval` shortened by up to a tenth, by a fraction fixed for each container id: the
/// containers listed together at start are not all inspected again at the same moment.
fn spread(interval: Duration, id: &str) -> Duration {
    let h = id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    interval.saturating_sub(interval.mul_f64(f64::from(h % 1000) / 10_000.0))
}

/// When the same problem may be acted on again after this response.
fn retry_after(
    response: &Response,
    policy: &HealthPolicy,
    now: chrono::DateTime<Utc>,
) -> Option<chrono::DateTime<Utc>> {
    let r = &policy.spec.remediation;
    let after = |d: Duration| crate::model::safety::later(now, d);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_healthy_container_waits_for_the_long_reinspection() {
        use crate::model::container::{ContainerState as S, HealthStatus as H};
        let mut info = crate::engine::fake::running("web", &[]);
        // (state, health, settled)
        let cases = [
            (S::Running, H::None, true),
            (S::Running, H::Healthy, true),
            (S::Running, H::Unhealthy, false),
            (S::Running, H::Starting, false),
            (S::Exited, H::None, false),
            (S::Restarting, H::None, false),
            (S::Dead, H::None, false),
        ];
        for (state, health, want) in cases {
            info.state = state;
            info.health = health;
            assert_eq!(settled(&info), want, "{state:?} {health:?}");
        }
    }

    #[test]
    fn reinspections_are_spread_over_the_last_tenth_of_the_interval() {
        let interval = Duration::from_secs(300);
        let waits: Vec<Duration> = (0..200)
            .map(|i| spread(interval, &format!("{i:064x}")))
            .collect();
        for w in &waits {
            assert!(*w <= interval && *w >= interval.mul_f64(0.9), "{w:?}");
        }
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "{} distinct waits", distinct.len());
        assert_eq!(
            spread(interval, "abc"),
            spread(interval, "abc"),
            "fixed per id"
        );
    }
}
