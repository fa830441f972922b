//! The responder: safety gates, then the action, its verification and its audit record.

pub mod acting;
pub mod safety;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::{info, warn};

use self::acting::Acting;
use self::safety::{ActionRecord, GateInput, Outcome, Refusal, Verdict, check_gates};
use crate::analyze::Decision;
use crate::bus::{AuditRecord, Envelope, EventSink, EventType, StateStore};
use crate::docker::{ContainerInfo, ContainerState, DockerApi, HealthStatus};
use crate::policy::{ActionKind, GiveUp, HealthPolicy};

/// What the responder is asked to carry out.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The governing policy.
    pub policy: &'a HealthPolicy,
    /// The container as last inspected.
    pub info: &'a ContainerInfo,
    /// The analyzer's decision (with an action).
    pub decision: &'a Decision,
    /// Its id, shared by every envelope about it.
    pub decision_id: &'a str,
    /// A person stopped the container.
    pub manual_stop: bool,
    /// For exec: the command (default: the first allow-listed one).
    pub command: Option<&'a [String]>,
}

/// How a request ended, as announced in `remediation_complete`.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// Carried out and verified.
    Success(String),
    /// Carried out, but it failed or the container did not come back.
    Failed(String),
    /// Refused by a gate.
    Rejected(Refusal),
    /// Dry run: decided, recorded, nothing touched.
    DryRun,
    /// The circuit breaker opened now and `onGiveUp` ran.
    GaveUp(String),
}

impl Response {
    /// `success`, `failed`, `rejected` or `dry_run` (the original's `result.status`).
    pub fn status(&self) -> &'static str {
        match self {
            Self::Success(_) => "success",
            Self::Failed(_) => "failed",
            Self::Rejected(_) | Self::GaveUp(_) => "rejected",
            Self::DryRun => "dry_run",
        }
    }
}

/// The longest a verification waits, whatever the policy says (its documented maximum).
const MAX_VERIFY_WAIT: Duration = crate::policy::duration::MAX_ACTION_TIME;

/// Carries out decisions within the safety limits.
pub struct Responder {
    /// The engine.
    pub docker: Arc<dyn DockerApi>,
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
}

/// The key of a container's safety state: node and name, so that recreating a container
/// (new id, same name) keeps its history and two nodes never share one.
pub fn safety_key(node: &str, container: &str) -> String {
    format!("{node}/{container}")
}

/// The key of a container's in-flight lock: the engine's own ID and the container's ID, so two
/// operators on one engine never both act on one container whatever their `--node-name`s.
pub fn lock_key(engine_id: &str, container_id: &str) -> String {
    format!("engine:{engine_id}/{container_id}")
}

impl Responder {
    /// Runs the gates and, if they allow it, the action; announces and audits the outcome.
    pub async fn respond(&self, req: Request<'_>) -> Response {
        let started = std::time::Instant::now();
        let response = self.decide_and_act(req).await;
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

    async fn decide_and_act(&self, req: Request<'_>) -> Response {
        let Some(action) = req.decision.action else {
            return Response::Rejected(Refusal::NotAllowed {
                action: ActionKind::Restart,
                policy: req.policy.metadata.name.clone(),
            });
        };
        let key = safety_key(&self.node, &req.info.name);
        let now = Utc::now();
        let finding = req.decision.primary.clone().unwrap_or_default();
        let mut tripped = false;
        let safety = match self
            .store
            .update_safety(&key, &mut |s| {
                s.prune(req.policy, now);
                s.note_recurrence(req.policy, &finding, now);
                tripped = s.trip_if_needed(req.policy, now);
            })
            .await
        {
            Ok(s) => s,
            Err(e) => {
                return Response::Failed(format!("safety state unavailable, not acting: {e}"));
            }
        };
        if tripped {
            return self.give_up(req, safety.failures.len()).await;
        }
        let default_command = req
            .policy
            .spec
            .remediation
            .exec
            .as_ref()
            .and_then(|e| e.allowed.first())
            .map(|c| c.as_slice());
        let command = req.command.or(default_command);
        let verdict = check_gates(GateInput {
            policy: req.policy,
            info: req.info,
            action,
            command,
            own_container_id: self.own_container_id.as_deref(),
            manual_stop: req.manual_stop,
            safety: &safety,
            now,
            global_dry_run: self.global_dry_run,
        });
        match verdict {
            Verdict::Refuse(r) => return Response::Rejected(r),
            Verdict::DryRun => return Response::DryRun,
            Verdict::Execute => {}
        }
        let r = &req.policy.spec.remediation;
        // One action per container within this process first (the shared lock below is
        // re-entrant for this process's owner id), then across processes.
        let Some(acting) = self.acting.try_begin(&req.info.id) else {
            return Response::Rejected(Refusal::InFlight);
        };
        let lock_ttl = r
            .stop_timeout
            .get()
            .saturating_add(r.verify_within.get())
            .saturating_add(Duration::from_secs(60));
        let lock = lock_key(&self.engine_id, &req.info.id);
        match self.store.try_lock(&lock, &self.owner, lock_ttl).await {
            Ok(true) => {}
            Ok(false) => {
                acting.abandon();
                return Response::Rejected(Refusal::InFlight);
            }
            Err(e) => {
                acting.abandon();
                return Response::Failed(format!("lock unavailable, not acting: {e}"));
            }
        }
        if let Some(budget) = &r.fleet_budget {
            let taken = self
                .store
                .take_fleet_budget(
                    &req.policy.metadata.name,
                    budget.max_actions,
                    budget.per.get(),
                    req.decision_id,
                )
                .await;
            let refusal = match taken {
                Ok(true) => None,
                Ok(false) => Some(Response::Rejected(Refusal::FleetBudget {
                    policy: req.policy.metadata.name.clone(),
                    max: budget.max_actions,
                    per: budget.per.to_string(),
                })),
                Err(e) => Some(Response::Failed(format!(
                    "fleet budget unavailable, not acting: {e}"
                ))),
            };
            if let Some(refusal) = refusal {
                let _ = self.store.unlock(&lock, &self.owner).await;
                acting.abandon();
                return refusal;
            }
        }
        // Durable before acting: a crash from here on still holds the cooldown.
        let record = ActionRecord {
            decision_id: req.decision_id.to_owned(),
            at: now,
            action,
            finding,
            outcome: Outcome::Pending,
        };
        if let Err(e) = self
            .store
            .update_safety(&key, &mut |s| s.actions.push(record.clone()))
            .await
        {
            let _ = self.store.unlock(&lock, &self.owner).await;
            acting.abandon();
            return Response::Failed(format!("could not record the action, not acting: {e}"));
        }
        info!(container = %req.info.name, %action, decision_id = req.decision_id, "acting");
        self.action_started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(req.decision_id.to_owned(), Utc::now());
        let result = self.execute(req, action, command, now).await;
        let outcome = if result.is_ok() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
        let finished = Utc::now();
        let mut tripped = false;
        let after = self
            .store
            .update_safety(&key, &mut |s| {
                s.finish(req.decision_id, outcome, finished);
                tripped = s.trip_if_needed(req.policy, finished);
            })
            .await;
        let _ = self.store.unlock(&lock, &self.owner).await;
        if let Err(e) = &after {
            warn!(container = %req.info.name, error = %e, "could not record the outcome");
        }
        drop(acting);
        let own = match result {
            Ok(details) => Response::Success(details),
            Err(details) => Response::Failed(details),
        };
        if tripped {
            // The action's own outcome is on the record too, then the give-up.
            self.metrics.action(action.as_str(), own.status(), 0.0);
            self.announce(&req, &own).await;
            let failures = after.map(|s| s.failures.len()).unwrap_or_default();
            return self.give_up(req, failures).await;
        }
        own
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

    async fn execute(
        &self,
        req: Request<'_>,
        action: ActionKind,
        command: Option<&[String]>,
        started: DateTime<Utc>,
    ) -> Result<String, String> {
        let r = &req.policy.spec.remediation;
        let id = &req.info.id;
        match action {
            ActionKind::Restart => {
                self.docker
                    .restart(id, r.stop_timeout.get())
                    .await
                    .map_err(|e| format!("restart failed: {e}"))?;
                self.verify_back(req, started).await
            }
            ActionKind::Start => {
                self.docker
                    .start(id)
                    .await
                    .map_err(|e| format!("start failed: {e}"))?;
                self.verify_back(req, started).await
            }
            ActionKind::Stop => {
                self.docker
                    .stop(id, r.stop_timeout.get())
                    .await
                    .map_err(|e| format!("stop failed: {e}"))?;
                Ok("container stopped".to_owned())
            }
            ActionKind::Exec => {
                let command = command.ok_or("no exec command is allow-listed")?;
                let timeout = r
                    .exec
                    .as_ref()
                    .map_or(Duration::from_secs(30), |e| e.timeout.get());
                let out = self
                    .docker
                    .exec(id, command, timeout)
                    .await
                    .map_err(|e| format!("exec failed: {e}"))?;
                match out.exit_code {
                    Some(0) => Ok(format!("exec {command:?} exited 0")),
                    code => Err(format!(
                        "exec {command:?} exited {code:?}: {}",
                        out.output.trim()
                    )),
                }
            }
        }
    }

    /// Did it come back? Running since after the action, not unhealthy (healthy if it has a
    /// healthcheck), and still running a moment later.
    async fn verify_back(
        &self,
        req: Request<'_>,
        started: DateTime<Utc>,
    ) -> Result<String, String> {
        let within = req.policy.spec.remediation.verify_within.get();
        let now = tokio::time::Instant::now();
        let deadline = now.checked_add(within).unwrap_or(now + MAX_VERIFY_WAIT);
        let settle = Duration::from_secs(1).min(within / 2);
        let mut last;
        let mut up_since: Option<tokio::time::Instant> = None;
        loop {
            match self.docker.inspect(&req.info.id).await {
                Ok(Some(info)) => {
                    let restarted = info
                        .started_at
                        .is_some_and(|s| s >= safety::earlier(started, Duration::from_secs(1)));
                    let healthy = matches!(info.health, HealthStatus::None | HealthStatus::Healthy);
                    let up = info.state == ContainerState::Running && restarted;
                    last = format!("state {:?}, health {:?}", info.state, info.health);
                    if up && info.health != HealthStatus::Unhealthy {
                        let since = *up_since.get_or_insert_with(tokio::time::Instant::now);
                        if healthy && since.elapsed() >= settle {
                            return Ok(format!("container is back: {last}"));
                        }
                    } else {
                        up_since = None;
                    }
                }
                Ok(None) => return Err("container disappeared".to_owned()),
                Err(e) => last = format!("inspect failed: {e}"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "did not come back within {}: {last}",
                    req.policy.spec.remediation.verify_within
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn announce(&self, req: &Request<'_>, response: &Response) {
        let action = req
            .decision
            .action
            .map_or("none", |a| a.as_str())
            .to_owned();
        let (details, gate) = match response {
            Response::Success(d) | Response::Failed(d) => (d.clone(), None),
            Response::Rejected(r) => (r.to_string(), Some(r.gate().to_owned())),
            Response::DryRun => ("dry run: nothing was touched".to_owned(), None),
            Response::GaveUp(d) => (d.clone(), Some("circuit_open".to_owned())),
        };
        let status = response.status();
        let dry_run = matches!(response, Response::DryRun);
        let data = json!({
            "container": req.info.name,
            "action": action,
            "result": {
                "status": status,
                "action": action,
                "container": req.info.name,
                "details": details,
            },
            "dry_run": dry_run,
            "confidence": req.decision.confidence,
            "reason": req.decision.reason,
            "decision_id": req.decision_id,
            "analysis_method": req.decision.method,
            "container_id": req.info.id,
            "policy": req.policy.metadata.name,
            "node": self.node,
            "gate": gate,
            "gave_up": matches!(response, Response::GaveUp(_)),
        });
        self.sink
            .publish(Envelope::new(EventType::RemediationComplete, data))
            .await;
        let record = AuditRecord {
            decision_id: req.decision_id.to_owned(),
            timestamp: Utc::now(),
            node: self.node.clone(),
            container: req.info.name.clone(),
            container_id: req.info.id.clone(),
            policy: req.policy.metadata.name.clone(),
            action,
            status: status.to_owned(),
            reason: req.decision.reason.clone(),
            details,
            gate,
            action_started_at: self
                .action_started
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(req.decision_id),
        };
        if let Err(e) = self.store.append_audit(record).await {
            warn!(error = %e, "could not append to the audit trail");
        }
    }
}
