//! What happens to a checked request: refused (counted, logged and announced within a budget
//! per minute) or handed to the responder, at most `CONCURRENT` at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::GATE;
use super::request::{Invalid, RequestRefusal, ValidRequest, validate_request};
use crate::adapters::redis::requests::RequestHandler;
use crate::controller::Context;
use crate::model::decision::AnalysisMethod;
use crate::model::wire::Envelope;
use crate::policy::select::Target;
use crate::respond::Request;
use crate::respond::report::Report;

/// Requests carried out at once; more wait (and Redis buffers the rest).
const CONCURRENT: usize = 4;
/// Refusals announced (and logged at warn) per minute; beyond that they are only counted.
const ANNOUNCED_PER_MINUTE: u32 = 60;

/// How many refusals may still be announced in the current minute.
struct AnnounceBudget {
    window: Instant,
    used: u32,
    suppressed: u64,
}

impl AnnounceBudget {
    fn new() -> Self {
        Self {
            window: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }

    fn take(&mut self) -> bool {
        if self.window.elapsed() >= Duration::from_secs(60) {
            if self.suppressed > 0 {
                warn!(
                    suppressed = self.suppressed,
                    "external requests refused without announcement (over {ANNOUNCED_PER_MINUTE} per minute); see hemostat_external_requests_total"
                );
            }
            *self = Self::new();
        }
        if self.used < ANNOUNCED_PER_MINUTE {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// Handles one message: validates it, then refuses or hands it to the responder (in a task,
/// at most `CONCURRENT` at once).
async fn handle(
    ctx: &Arc<Context>,
    payload: &[u8],
    budget: &mut AnnounceBudget,
    slots: &Arc<Semaphore>,
) {
    let lookup = |name: &str| {
        let observed = ctx.observed.find_by_name(name)?;
        let info = observed.info;
        let policy = ctx.policies.governing(Target::from(&info))?;
        Some((info, policy))
    };
    let valid = validate_request(
        payload,
        &ctx.config.node,
        |id| ctx.own_decisions.contains(id),
        lookup,
    );
    match valid {
        Ok(request) => accept(ctx, request, slots).await,
        Err(Invalid::Ignored(why)) => {
            ctx.metrics.external_request(why.result());
            debug!(result = why.result(), "remediation request ignored");
        }
        Err(Invalid::Refused(refused)) => {
            ctx.metrics.external_request(&refused.reason.result());
            if budget.take() {
                warn!(
                    reason = refused.reason.label(),
                    detail = %refused.detail,
                    container = refused.container.as_deref().unwrap_or("-"),
                    agent = refused.agent.as_deref().unwrap_or("-"),
                    "external remediation request refused"
                );
                announce_refusal(ctx, &refused).await;
            }
        }
    }
}

/// Hands an accepted request to the responder in a task, once one of `slots` is free.
async fn accept(ctx: &Arc<Context>, request: ValidRequest, slots: &Arc<Semaphore>) {
    ctx.metrics.external_request("accepted");
    info!(
        container = %request.info.name,
        action = request.decision.action.map_or("none", |a| a.as_str()),
        agent = %request.agent,
        "external remediation request accepted; handing it to the responder"
    );
    let Ok(permit) = slots.clone().acquire_owned().await else {
        return;
    };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let manual_stop = ctx
            .observed
            .get(&request.info.id)
            .is_some_and(|o| o.manual_stop);
        let decision_id = uuid::Uuid::new_v4().to_string();
        ctx.own_decisions.insert(&decision_id);
        let response = ctx
            .responder
            .respond(Request {
                policy: &request.policy,
                info: &request.info,
                decision: &request.decision,
                decision_id: &decision_id,
                manual_stop,
                command: request.command.as_deref(),
            })
            .await;
        info!(container = %request.info.name, status = response.status(), %decision_id, "external remediation request handled");
        // Look again soon: the container changed, or the gates may have something to say.
        ctx.queue.schedule_now(request.info.id.clone());
    });
}

/// Announces and audits a refusal whose container name is valid.
async fn announce_refusal(ctx: &Context, refused: &RequestRefusal) {
    let Some(container) = &refused.container else {
        return;
    };
    let action = refused.action.map_or("unknown", |a| a.as_str());
    let decision_id = uuid::Uuid::new_v4().to_string();
    let details = format!(
        "external request refused ({}): {}",
        refused.reason.label(),
        refused.detail
    );
    let reason = format!(
        "external request from {}",
        refused.agent.as_deref().unwrap_or("an unknown agent")
    );
    let report = Report {
        container: container.clone(),
        container_id: refused.container_id.clone(),
        policy: refused.policy.clone(),
        action: action.to_owned(),
        status: "rejected",
        details,
        gate: Some(GATE.to_owned()),
        dry_run: false,
        confidence: None,
        reason,
        decision_id,
        method: AnalysisMethod::External,
        node: ctx.config.node.clone(),
        refusal: Some(refused.reason.label().to_owned()),
        gave_up: false,
        action_started_at: None,
        ai: Default::default(),
    };
    ctx.sink.publish(Envelope::of(&report.payload())).await;
    if let Err(e) = ctx.store.append_audit(report.audit(Utc::now())).await {
        warn!(error = %e, "could not append to the audit trail");
    }
}

/// Validates and handles the requests of one subscription, one message at a time (each
/// accepted request runs in a task, at most `CONCURRENT` at once).
pub(crate) struct Intake {
    ctx: Arc<Context>,
    budget: AnnounceBudget,
    slots: Arc<Semaphore>,
}

#[async_trait::async_trait]
impl RequestHandler for Intake {
    async fn handle(&mut self, payload: &[u8]) {
        handle(&self.ctx, payload, &mut self.budget, &self.slots).await;
    }
}

impl Intake {
    /// An intake acting through `ctx`.
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            budget: AnnounceBudget::new(),
            slots: Arc::new(Semaphore::new(CONCURRENT)),
        }
    }
}

/// Announces two fixed refusals (one with a known container and policy, one without), for
/// the wire golden tests.
#[cfg(test)]
pub(crate) async fn golden_refusal(ctx: &Context) {
    use super::request::Reason;
    use crate::model::decision::ActionKind;
    let known = RequestRefusal {
        reason: Reason::ActionNotAllowed,
        detail: "policy crash does not allow stop".to_owned(),
        container: Some("web".to_owned()),
        container_id: Some("web-id".to_owned()),
        policy: Some("crash".to_owned()),
        action: Some(ActionKind::Stop),
        agent: Some("HemoStat-Analyzer".to_owned()),
    };
    announce_refusal(ctx, &known).await;
    let unknown = RequestRefusal {
        reason: Reason::NotGoverned,
        detail: "no governed container named ghost".to_owned(),
        container: Some("ghost".to_owned()),
        container_id: None,
        policy: None,
        action: None,
        agent: None,
    };
    announce_refusal(ctx, &unknown).await;
}
