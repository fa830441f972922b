//! Runs one request through the steps: note the attempt, settle what a dead process left
//! pending, gates, claim, record, execute and verify, finish; then reports the outcome once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::claim::{Claim, ClaimError, ClaimRequest};
use super::execute::{ActionError, Done, execute};
use super::gates::{GateInput, Refusal, Verdict, check_gates};
use super::report::Report;
use super::verify::{Step, Verify};
use super::{Request, Response};
use crate::bus::EventSink;
use crate::engine::ContainerEngine;
use crate::model::decision::ActionKind;
use crate::model::safety::{ActionRecord, Outcome, SafetyState};
use crate::model::safety::{Limits, lock_key, safety_key};
use crate::model::wire::Envelope;
use crate::observe::acting::Acting;
use crate::policy::{GiveUp, HealthPolicy};
use crate::store::{StateStore, StoreError};

/// Carries out decisions within the safety limits.
pub(crate) struct Responder {
    /// The engine.
    pub docker: Arc<dyn ContainerEngine>,
    /// Safety state, locks, audit.
    pub store: Arc<dyn StateStore>,
    /// Where `remediation_complete` goes.
    pub sink: Arc<dyn EventSink>,
    /// Which containers HemoStat is acting on (so their stop events are not taken as manual).
    pub acting: Arc<Acting>,
    /// This node's name.
    pub node: String,
    /// The engine's own ID: the in-flight lock is keyed by it (see [`lock_key`]).
    pub engine_id: String,
    /// Lock owner id of this operator process.
    pub owner: String,
    /// HemoStat's own container, when it runs in one.
    pub own_container_id: Option<String>,
    /// Operator-wide dry run.
    pub global_dry_run: bool,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// When the engine call of each decision started, until it is audited.
    pub action_started: std::sync::Mutex<std::collections::HashMap<String, DateTime<Utc>>>,
    /// Places for repairs (the engine call and its verification) at once: a request that
    /// passed its gates waits here, its claim held, without delaying any other decision.
    pub repairs: tokio::sync::Semaphore,
}

/// How many repairs run at once by default (`--max-concurrent-repairs`).
pub(crate) const DEFAULT_MAX_REPAIRS: usize = 32;

/// The longest a verification waits, whatever the policy says (its documented maximum).
const MAX_VERIFY_WAIT: Duration = crate::policy::duration::MAX_ACTION_TIME;

impl Responder {
    /// Runs the gates and, if they allow it, the action; announces and audits the outcome.
    pub(crate) async fn respond(&self, req: Request<'_>) -> Response {
        self.respond_then(req, || {}).await
    }

    /// [`Self::respond`], calling `gated` once the request has passed every gate, holds its
    /// claim and is on the record, before it waits for one of the [`Self::repairs`] places.
    /// A refused request is announced without `gated` being called.
    pub(crate) async fn respond_then(&self, req: Request<'_>, gated: impl FnOnce()) -> Response {
        let started = std::time::Instant::now();
        let response = self.decide_and_act(req, gated).await;
        let action = req.decision.action.map_or("none", |a| a.as_str());
        let secs = match response {
            Response::Success(_) | Response::Failed(_) => started.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        self.metrics.action(action, response.status(), secs);
        match &response {
            Response::Rejected(r) => self.metrics.refusal(r.gate()),
            Response::GaveUp(_) => self.metrics.refusal("circuit_open"),
            _ => {}
        }
        self.announce(&req, &response).await;
        response
    }

    async fn decide_and_act(&self, req: Request<'_>, gated: impl FnOnce()) -> Response {
        let Some(action) = req.decision.action else {
            return Response::Rejected(Refusal::NotAllowed {
                action: ActionKind::Restart,
                policy: req.policy.metadata.name.clone(),
            });
        };
        let key = safety_key(&self.node, &req.info.name);
        let now = Utc::now();
        let limits = req.policy.spec.remediation.limits();
        let finding = req.decision.primary.clone().unwrap_or_default();
        self.settle_interrupted(req, &key).await;
        let (safety, tripped) = match self.note_attempt(&key, &limits, &finding, now).await {
            Ok(noted) => noted,
            Err(e) => {
                return Response::Failed(format!("safety state unavailable, not acting: {e}"));
            }
        };
        if tripped {
            return self.give_up(req, safety.failures.len()).await;
        }
        let command = req.command.or_else(|| default_command(req.policy));
        match check_gates(self.gate_input(req, action, command, &safety, now)) {
            Verdict::Refuse(r) => return Response::Rejected(r),
            Verdict::DryRun => return Response::DryRun,
            Verdict::Execute => {}
        }
        let lock = lock_key(&self.engine_id, &req.info.id);
        let claim = match self.claim(req, &lock).await {
            Ok(claim) => claim,
            Err(refused) => return refused,
        };
        if let Err(e) = self.record(&key, req, action, finding, now).await {
            claim.abandon().await;
            return Response::Failed(format!("could not record the action, not acting: {e}"));
        }
        gated();
        let own = match self.repair_place(req, &lock).await {
            Err(lost) => lost,
            Ok(_place) => {
                info!(container = %req.info.name, %action, decision_id = req.decision_id, "acting");
                self.started(req.decision_id);
                match self.run(req, action, command, now).await {
                    Ok(details) => Response::Success(details),
                    Err(e) => Response::Failed(e.to_string()),
                }
            }
        };
        let (after, tripped) = self.finish(&key, req, &limits, &own).await;
        claim.release().await;
        if tripped {
            // The action's own outcome is on the record too, then the give-up.
            self.metrics.action(action.as_str(), own.status(), 0.0);
            self.announce(&req, &own).await;
            let failures = after.map(|s| s.failures.len()).unwrap_or_default();
            return self.give_up(req, failures).await;
        }
        own
    }

    /// Forgets what no window reads, counts a recurrence of the same failure, trips the
    /// breaker when due; returns the state and whether it tripped now.
    async fn note_attempt(
        &self,
        key: &str,
        limits: &Limits,
        finding: &str,
        now: DateTime<Utc>,
    ) -> Result<(SafetyState, bool), StoreError> {
        let mut tripped = false;
        let safety = self
            .store
            .update_safety(key, &mut |s| {
                s.prune(limits, now);
                s.note_recurrence(limits, finding, now);
                tripped = s.trip_if_needed(limits, now);
            })
            .await?;
        Ok((safety, tripped))
    }

    fn gate_input<'a>(
        &'a self,
        req: Request<'a>,
        action: ActionKind,
        command: Option<&'a [String]>,
        safety: &'a SafetyState,
        now: DateTime<Utc>,
    ) -> GateInput<'a> {
        GateInput {
            policy: req.policy,
            info: req.info,
            action,
            command,
            own_container_id: self.own_container_id.as_deref(),
            manual_stop: req.manual_stop,
            safety,
            now,
            global_dry_run: self.global_dry_run,
        }
    }

    /// Waits for a repair place, then renews the in-flight lock `lock` (the wait may have been
    /// long); `Err` when the lock was lost meanwhile, and the repair must not run.
    async fn repair_place(
        &self,
        req: Request<'_>,
        lock: &str,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, Response> {
        let place = self
            .repairs
            .acquire()
            .await
            .expect("the repair places are never closed");
        match self.store.try_lock(lock, &self.owner, lock_ttl(req.policy)).await {
            Ok(true) => Ok(place),
            Ok(false) => Err(Response::Failed(
                "the in-flight lock expired while the repair waited for a place and another operator holds it now; not acting".to_owned(),
            )),
            Err(e) => Err(Response::Failed(format!(
                "lock unavailable, not acting: {e}"
            ))),
        }
    }

    /// Takes the container for this action (its in-flight lock is `lock`), or says why not.
    async fn claim(&self, req: Request<'_>, lock: &str) -> Result<Claim<'_>, Response> {
        let r = &req.policy.spec.remediation;
        let name = &req.policy.metadata.name;
        let ttl = lock_ttl(req.policy);
        let budget = r
            .fleet_budget
            .as_ref()
            .map(|b| (name.as_str(), b.max_actions, b.per.get(), req.decision_id));
        let request = ClaimRequest {
            id: &req.info.id,
            key: lock,
            owner: &self.owner,
            ttl,
            budget,
        };
        Claim::take(&self.acting, &self.store, request)
            .await
            .map_err(|e| match e {
                ClaimError::InFlight => Response::Rejected(Refusal::InFlight),
                ClaimError::BudgetSpent => {
                    let b = r.fleet_budget.as_ref().expect("a budget was taken");
                    Response::Rejected(Refusal::FleetBudget {
                        policy: name.clone(),
                        max: b.max_actions,
                        per: b.per.to_string(),
                    })
                }
                ClaimError::LockUnavailable(e) => {
                    Response::Failed(format!("lock unavailable, not acting: {e}"))
                }
                ClaimError::BudgetUnavailable(e) => {
                    Response::Failed(format!("fleet budget unavailable, not acting: {e}"))
                }
            })
    }

    /// Durable before acting: a crash from here on still holds the cooldown.
    async fn record(
        &self,
        key: &str,
        req: Request<'_>,
        action: ActionKind,
        finding: String,
        now: DateTime<Utc>,
    ) -> Result<SafetyState, StoreError> {
        let record = ActionRecord {
            decision_id: req.decision_id.to_owned(),
            at: now,
            action,
            finding,
            outcome: Outcome::Pending,
        };
        self.store
            .update_safety(key, &mut |s| s.actions.push(record.clone()))
            .await
    }

    /// The engine call, then the verification when the action should bring it back.
    async fn run(
        &self,
        req: Request<'_>,
        action: ActionKind,
        command: Option<&[String]>,
        started: DateTime<Utc>,
    ) -> Result<String, ActionError> {
        let docker: &dyn ContainerEngine = &*self.docker;
        match execute(docker, req.policy, &req.info.id, action, command).await? {
            Done::Finished(details) => Ok(details),
            Done::Verify => self.verify_back(req, started).await,
        }
    }

    /// Inspects every 200 ms until [`Verify`] decides or `verifyWithin` is over.
    async fn verify_back(
        &self,
        req: Request<'_>,
        started: DateTime<Utc>,
    ) -> Result<String, ActionError> {
        let within = req.policy.spec.remediation.verify_within.get();
        let now = tokio::time::Instant::now();
        let deadline = now.checked_add(within).unwrap_or(now + MAX_VERIFY_WAIT);
        let mut verify = Verify::new(started, Duration::from_secs(1).min(within / 2));
        loop {
            let inspected = self.docker.inspect(&req.info.id).await;
            let inspected = inspected
                .as_ref()
                .map(Option::as_ref)
                .map_err(ToString::to_string);
            match verify.step(inspected, tokio::time::Instant::now().into_std()) {
                Step::Succeeded(details) => return Ok(details),
                Step::Failed(details) => return Err(ActionError::NotBack(details)),
                Step::Wait => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ActionError::NotBack(format!(
                    "did not come back within {}: {}",
                    req.policy.spec.remediation.verify_within,
                    verify.last()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Records the outcome; returns the state after and whether the breaker tripped now.
    async fn finish(
        &self,
        key: &str,
        req: Request<'_>,
        limits: &Limits,
        own: &Response,
    ) -> (Result<SafetyState, StoreError>, bool) {
        let outcome = match own {
            Response::Success(_) => Outcome::Succeeded,
            _ => Outcome::Failed,
        };
        let finished = Utc::now();
        let mut tripped = false;
        let after = self
            .store
            .update_safety(key, &mut |s| {
                s.finish(req.decision_id, outcome, finished);
                tripped = s.trip_if_needed(limits, finished);
            })
            .await;
        if let Err(e) = &after {
            warn!(container = %req.info.name, error = %e, "could not record the outcome");
        }
        (after, tripped)
    }

    fn started(&self, decision_id: &str) {
        self.action_started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(decision_id.to_owned(), Utc::now());
    }

    async fn give_up(&self, req: Request<'_>, failures: usize) -> Response {
        let r = &req.policy.spec.remediation;
        let base = format!(
            "circuit breaker opened after {failures} failed repairs within {}; open for {}",
            r.circuit_breaker.within, r.circuit_breaker.open_for
        );
        warn!(container = %req.info.name, "{base}");
        match r.on_give_up {
            GiveUp::Leave => Response::GaveUp(format!("{base}; leaving the container as it is")),
            GiveUp::Stop => {
                let _acting = self.acting.begin(&req.info.id);
                match self.docker.stop(&req.info.id, r.stop_timeout.get()).await {
                    Ok(()) => {
                        Response::GaveUp(format!("{base}; stopped the container (onGiveUp: stop)"))
                    }
                    Err(e) => Response::GaveUp(format!("{base}; onGiveUp stop failed: {e}")),
                }
            }
        }
    }

    async fn announce(&self, req: &Request<'_>, response: &Response) {
        let (details, gate) = match response {
            Response::Success(d) | Response::Failed(d) => (d.clone(), None),
            Response::Rejected(r) => (r.to_string(), Some(r.gate().to_owned())),
            Response::DryRun => ("dry run: nothing was touched".to_owned(), None),
            Response::GaveUp(d) => (d.clone(), Some("circuit_open".to_owned())),
        };
        // Every outcome at info: a person reading the log sees what was done and why not.
        info!(
            container = %req.info.name,
            action = req.decision.action.map_or("none", |a| a.as_str()),
            status = response.status(),
            gate = gate.as_deref().unwrap_or("-"),
            decision_id = req.decision_id,
            details = %details,
            "outcome"
        );
        let report = Report {
            container: req.info.name.clone(),
            container_id: Some(req.info.id.clone()),
            policy: Some(req.policy.metadata.name.clone()),
            action: req
                .decision
                .action
                .map_or("none", |a| a.as_str())
                .to_owned(),
            status: response.status(),
            details,
            gate,
            dry_run: matches!(response, Response::DryRun),
            confidence: Some(req.decision.confidence),
            reason: req.decision.reason.clone(),
            decision_id: req.decision_id.to_owned(),
            method: req.decision.method,
            node: self.node.clone(),
            refusal: None,
            gave_up: matches!(response, Response::GaveUp(_)),
            action_started_at: self
                .action_started
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(req.decision_id),
            ai: crate::model::wire::AiNote::of(req.decision),
        };
        self.sink.publish(Envelope::of(&report.payload())).await;
        if let Err(e) = self.store.append_audit(report.audit(Utc::now())).await {
            warn!(error = %e, "could not append to the audit trail");
        }
    }
}

/// How long the in-flight lock lives if this process dies: the longest one repair may take,
/// and a minute more.
fn lock_ttl(policy: &HealthPolicy) -> Duration {
    let r = &policy.spec.remediation;
    r.stop_timeout
        .get()
        .saturating_add(r.verify_within.get())
        .saturating_add(Duration::from_secs(60))
}

/// The first allow-listed exec command, used when a request names none.
fn default_command(policy: &HealthPolicy) -> Option<&[String]> {
    policy
        .spec
        .remediation
        .exec
        .as_ref()
        .and_then(|e| e.allowed.first())
        .map(|c| c.as_slice())
}
