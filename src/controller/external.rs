//! Remediation requests from other tools on `hemostat:remediation_needed` (`--accept-external-requests`): untrusted input, validated, then carried out by the responder behind every safety gate.
//!
//! The original system let a custom analyzer publish `remediation_needed` envelopes
//! `{timestamp, agent, type, data: {container, action, reason, confidence, command?}}` for the
//! responder to carry out. Here such a request is honoured only when:
//!
//! - the payload is at most [`MAX_PAYLOAD`] bytes of JSON with the envelope's shape, `type`
//!   `remediation_needed`, and `data` carrying a valid container name, a known action, a
//!   `reason` string and a numeric `confidence`;
//! - it is not this operator's own decision read back (agent `HemoStat-Analyzer` with
//!   `data.node` naming this node, or a `data.decision_id` this process produced), nor addressed
//!   to another node (`data.node` naming another node): those are ignored, not refused;
//! - the container is observed here and governed by a policy, the policy allows the action, an
//!   `exec` carries a `command` exactly on the policy's allow-list, and the confidence (clamped
//!   to 0..=1) reaches the policy's `minConfidence`.
//!
//! Then it becomes a [`Decision`] ([`AnalysisMethod::External`]) handed to
//! [`crate::respond::Responder::respond`], so protected containers, manual stops, dry-run,
//! cooldown, maximum actions, the circuit breaker, the in-flight lock and the fleet budget all
//! apply, and the outcome is announced and audited as any other. A request refused before the
//! responder is counted (`hemostat_external_requests_total{result="refused_<reason>"}`), logged
//! at warn with the reason (never the payload) and, when its container name is valid, announced
//! as a `remediation_complete` with `result.status: "rejected"` and `gate: "external_request"`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::Context;
use crate::adapters::redis::requests::RequestHandler;
use crate::analyze::{AnalysisMethod, Decision};
use crate::bus::{Envelope, EventType};
use crate::engine::ContainerInfo;
use crate::policy::select::Target;
use crate::policy::{ActionKind, HealthPolicy};
use crate::respond::Request;
use crate::respond::report::Report;

/// Larger payloads are refused unread.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The agent of HemoStat's own `remediation_needed` envelopes.
pub const OWN_AGENT: &str = "HemoStat-Analyzer";
/// The `gate` of a request refused before it reached the responder.
pub const GATE: &str = "external_request";
/// The `finding` external actions are recorded under (a repeated request within the circuit
/// breaker window counts the previous action as a failed repair).
pub const FINDING: &str = "external";
/// Longest reason kept (characters); the rest is cut.
const MAX_REASON: usize = 512;
/// Longest agent name kept (characters).
const MAX_AGENT: usize = 64;
/// Longest container name accepted (Docker's own limit is lower in practice).
const MAX_NAME: usize = 255;
/// Requests carried out at once; more wait (and Redis buffers the rest).
const CONCURRENT: usize = 4;
/// Refusals announced (and logged at warn) per minute; beyond that they are only counted.
const ANNOUNCED_PER_MINUTE: u32 = 60;

/// A request that passed validation.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidRequest {
    /// The container, as last observed.
    pub info: ContainerInfo,
    /// Its governing policy.
    pub policy: HealthPolicy,
    /// The decision to hand to the responder.
    pub decision: Decision,
    /// For exec: the command, exactly as allow-listed.
    pub command: Option<Vec<String>>,
    /// Who sent it (sanitised).
    pub agent: String,
}

/// Why a request is ignored: it is not one for this operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// This operator's own decision, read back from the channel.
    Own,
    /// Another node's decision, or a request addressed to another node.
    OtherNode,
}

impl Ignored {
    /// The metric result, `ignored_<reason>`.
    pub fn result(self) -> &'static str {
        match self {
            Self::Own => "ignored_own",
            Self::OtherNode => "ignored_other_node",
        }
    }
}

/// Why a request was refused before the responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Over [`MAX_PAYLOAD`] bytes.
    TooLarge,
    /// Not JSON.
    NotJson,
    /// JSON, but not a `remediation_needed` envelope with the required fields.
    BadShape,
    /// The container name is missing or not a valid Docker name.
    BadContainer,
    /// The action is none of restart, stop, start, exec.
    UnknownAction,
    /// No observed container of that name is governed by a policy.
    NotGoverned,
    /// The governing policy does not allow the action.
    ActionNotAllowed,
    /// An exec without a command exactly on the policy's allow-list.
    ExecNotAllowed,
    /// The confidence is below the policy's `minConfidence`.
    LowConfidence,
}

impl Reason {
    /// A short label; the metric result is `refused_<label>`.
    pub fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::NotJson => "not_json",
            Self::BadShape => "bad_shape",
            Self::BadContainer => "bad_container",
            Self::UnknownAction => "unknown_action",
            Self::NotGoverned => "not_governed",
            Self::ActionNotAllowed => "action_not_allowed",
            Self::ExecNotAllowed => "exec_not_allowed",
            Self::LowConfidence => "low_confidence",
        }
    }

    /// The metric result.
    pub fn result(self) -> String {
        format!("refused_{}", self.label())
    }
}

/// A refused request: why, and what of it can be trusted enough to announce.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    /// Why.
    pub reason: Reason,
    /// For people; never contains the payload beyond sanitised, bounded fields.
    pub detail: String,
    /// The container name, when it was a valid Docker name.
    pub container: Option<String>,
    /// The container id, when the container is known.
    pub container_id: Option<String>,
    /// The governing policy, when known.
    pub policy: Option<String>,
    /// The action, when it was a known one.
    pub action: Option<ActionKind>,
    /// The sender (sanitised).
    pub agent: Option<String>,
}

/// The outcome of validating one message.
#[derive(Clone, Debug, PartialEq)]
pub enum Invalid {
    /// Not for this operator: counted, logged at debug, never announced.
    Ignored(Ignored),
    /// Refused: counted, logged at warn, announced when the container name is valid.
    Refused(Box<Refused>),
}

struct Partial {
    container: Option<String>,
    container_id: Option<String>,
    policy: Option<String>,
    action: Option<ActionKind>,
    agent: Option<String>,
}

impl Partial {
    fn refuse(&self, reason: Reason, detail: impl Into<String>) -> Invalid {
        Invalid::Refused(Box::new(Refused {
            reason,
            detail: detail.into(),
            container: self.container.clone(),
            container_id: self.container_id.clone(),
            policy: self.policy.clone(),
            action: self.action,
            agent: self.agent.clone(),
        }))
    }
}

/// Keeps printable characters only and at most `max` of them.
fn sanitise(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect::<String>()
}

/// Docker's container name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, optionally with a leading `/`.
fn container_name(raw: &str) -> Option<&str> {
    let name = raw.strip_prefix('/').unwrap_or(raw);
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    (first_ok && rest_ok && name.len() >= 2 && name.len() <= MAX_NAME).then_some(name)
}

fn parse_action(s: &str) -> Option<ActionKind> {
    ActionKind::ALL.into_iter().find(|a| a.as_str() == s)
}

/// Validates one message of `hemostat:remediation_needed`. Pure: `own_node` is this node's
/// name, `is_own_decision` tells the decision ids this process produced, and `lookup` finds an
/// observed container by name together with its governing policy (`None` when there is no such
/// container or no policy governs it).
/// `data.command`: absent, or an array of strings.
fn command_of(
    data: &serde_json::Map<String, Value>,
    p: &Partial,
) -> Result<Option<Vec<String>>, Invalid> {
    match data.get("command") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .map(Some)
            .ok_or_else(|| p.refuse(Reason::BadShape, "data.command is not an array of strings")),
        Some(_) => Err(p.refuse(Reason::BadShape, "data.command is not an array of strings")),
    }
}

/// What the governing policy says of the request: the action allowed, an exec command on its
/// allow-list, the confidence (clamped to 0..=1) at least `minConfidence`.
fn allowed_by(
    policy: &HealthPolicy,
    action: ActionKind,
    command: Option<Vec<String>>,
    confidence: f64,
    p: &Partial,
) -> Result<(Option<Vec<String>>, f64), Invalid> {
    let r = &policy.spec.remediation;
    if !r.actions.contains(&action) {
        return Err(p.refuse(
            Reason::ActionNotAllowed,
            format!(
                "action {action} is not allowed by policy {}",
                policy.metadata.name
            ),
        ));
    }
    let command = if action == ActionKind::Exec {
        let allowed = r.exec.as_ref().map(|e| e.allowed.as_slice()).unwrap_or(&[]);
        match command {
            Some(c) if allowed.contains(&c) => Some(c),
            Some(_) => {
                return Err(p.refuse(
                    Reason::ExecNotAllowed,
                    format!(
                        "the command is not on the exec allow-list of policy {}",
                        policy.metadata.name
                    ),
                ));
            }
            None => {
                return Err(p.refuse(Reason::ExecNotAllowed, "an exec needs data.command"));
            }
        }
    } else {
        None
    };
    let confidence = if confidence.is_finite() {
        confidence.clamp(0.0, 1.0)
    } else {
        0.0
    };
    if confidence < r.min_confidence {
        return Err(p.refuse(
            Reason::LowConfidence,
            format!(
                "confidence {confidence} is below minConfidence {} of policy {}",
                r.min_confidence, policy.metadata.name
            ),
        ));
    }
    Ok((command, confidence))
}

pub fn validate_request(
    payload: &[u8],
    own_node: &str,
    is_own_decision: impl Fn(&str) -> bool,
    lookup: impl Fn(&str) -> Option<(ContainerInfo, HealthPolicy)>,
) -> Result<ValidRequest, Invalid> {
    let mut p = Partial {
        container: None,
        container_id: None,
        policy: None,
        action: None,
        agent: None,
    };
    if payload.len() > MAX_PAYLOAD {
        return Err(p.refuse(
            Reason::TooLarge,
            format!("{} bytes, the limit is {MAX_PAYLOAD}", payload.len()),
        ));
    }
    let Ok(value) = serde_json::from_slice::<Value>(payload) else {
        return Err(p.refuse(Reason::NotJson, "not JSON"));
    };
    let Some(envelope) = value.as_object() else {
        return Err(p.refuse(Reason::BadShape, "not a JSON object"));
    };
    let agent = envelope.get("agent").and_then(Value::as_str);
    p.agent = agent.map(|a| sanitise(a, MAX_AGENT));
    let data = envelope.get("data").and_then(Value::as_object);
    // Own and other nodes' decisions first: they are well-formed, and not ours to judge.
    if let Some(data) = data {
        let node = data.get("node").and_then(Value::as_str);
        if agent == Some(OWN_AGENT) && node == Some(own_node) {
            return Err(Invalid::Ignored(Ignored::Own));
        }
        if data
            .get("decision_id")
            .and_then(Value::as_str)
            .is_some_and(&is_own_decision)
        {
            return Err(Invalid::Ignored(Ignored::Own));
        }
        if node.is_some_and(|n| n != own_node) {
            return Err(Invalid::Ignored(Ignored::OtherNode));
        }
    }
    // `type` as documented, or only `event_type` as the original's agents write it.
    let kind = envelope
        .get("type")
        .or_else(|| envelope.get("event_type"))
        .and_then(Value::as_str);
    if kind != Some(EventType::RemediationNeeded.as_str()) {
        return Err(p.refuse(Reason::BadShape, "type is not remediation_needed"));
    }
    let Some(timestamp) = envelope.get("timestamp").and_then(Value::as_str) else {
        return Err(p.refuse(Reason::BadShape, "agent or timestamp missing"));
    };
    if agent.is_none() {
        return Err(p.refuse(Reason::BadShape, "agent or timestamp missing"));
    }
    // Naive (the protocol document's form) or with an offset (the original agents' form).
    if crate::model::wire::parse_wire_timestamp(timestamp).is_none() {
        return Err(p.refuse(
            Reason::BadShape,
            "timestamp is not ISO-8601 (e.g. 2025-11-03T10:30:45.123456+00:00)",
        ));
    }
    let Some(data) = data else {
        return Err(p.refuse(Reason::BadShape, "data is not an object"));
    };
    let Some(raw_name) = data.get("container").and_then(Value::as_str) else {
        return Err(p.refuse(Reason::BadContainer, "data.container missing"));
    };
    let Some(name) = container_name(raw_name) else {
        return Err(p.refuse(
            Reason::BadContainer,
            "data.container is not a valid container name",
        ));
    };
    p.container = Some(name.to_owned());
    let Some(raw_action) = data.get("action").and_then(Value::as_str) else {
        return Err(p.refuse(Reason::BadShape, "data.action missing"));
    };
    let Some(action) = parse_action(raw_action) else {
        return Err(p.refuse(
            Reason::UnknownAction,
            format!(
                "unknown action {:?} (restart, stop, start or exec)",
                sanitise(raw_action, 32)
            ),
        ));
    };
    p.action = Some(action);
    let Some(reason) = data.get("reason").and_then(Value::as_str) else {
        return Err(p.refuse(Reason::BadShape, "data.reason missing"));
    };
    let Some(confidence) = data.get("confidence").and_then(Value::as_f64) else {
        return Err(p.refuse(Reason::BadShape, "data.confidence is not a number"));
    };
    let command = command_of(data, &p)?;
    let Some((info, policy)) = lookup(name) else {
        return Err(p.refuse(
            Reason::NotGoverned,
            "no observed container of that name is governed by a policy",
        ));
    };
    p.container_id = Some(info.id.clone());
    p.policy = Some(policy.metadata.name.clone());
    let (command, confidence) = allowed_by(&policy, action, command, confidence, &p)?;
    let agent = p.agent.clone().unwrap_or_default();
    let decision = Decision {
        action: Some(action),
        reason: format!(
            "external request from {agent}: {}",
            sanitise(reason, MAX_REASON)
        ),
        confidence,
        method: AnalysisMethod::External,
        findings: Vec::new(),
        primary: Some(FINDING.to_owned()),
        ai: None,
    };
    Ok(ValidRequest {
        info,
        policy,
        decision,
        command,
        agent,
    })
}

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
/// at most [`CONCURRENT`] at once).
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
    let request = match valid {
        Ok(r) => r,
        Err(Invalid::Ignored(why)) => {
            ctx.metrics.external_request(why.result());
            debug!(result = why.result(), "remediation request ignored");
            return;
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
            return;
        }
    };
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
async fn announce_refusal(ctx: &Context, refused: &Refused) {
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
/// accepted request runs in a task, at most [`CONCURRENT`] at once).
pub struct Intake {
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
    pub fn new(ctx: Arc<Context>) -> Self {
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
    let known = Refused {
        reason: Reason::ActionNotAllowed,
        detail: "policy crash does not allow stop".to_owned(),
        container: Some("web".to_owned()),
        container_id: Some("web-id".to_owned()),
        policy: Some("crash".to_owned()),
        action: Some(ActionKind::Stop),
        agent: Some("HemoStat-Analyzer".to_owned()),
    };
    announce_refusal(ctx, &known).await;
    let unknown = Refused {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ExecPolicy;
    use crate::policy::builtin::default_policy;
    use serde_json::json;

    const NODE: &str = "node-a";

    fn info(name: &str) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{name}"),
            image: "img".into(),
            started_at: None,
            pid: None,
            ..crate::engine::fake::running(name, &[])
        }
    }

    fn policy() -> HealthPolicy {
        let mut p = default_policy();
        p.metadata.name = "web-policy".into();
        p.spec.remediation.actions = vec![ActionKind::Restart, ActionKind::Exec];
        p.spec.remediation.exec = Some(ExecPolicy {
            allowed: vec![vec!["nginx".into(), "-s".into(), "reload".into()]],
            timeout: "5s".parse().unwrap(),
        });
        p.spec.remediation.min_confidence = 0.7;
        p
    }

    fn lookup(name: &str) -> Option<(ContainerInfo, HealthPolicy)> {
        (name == "web").then(|| (info("web"), policy()))
    }

    fn envelope(data: Value) -> Vec<u8> {
        json!({
            "timestamp": "2026-11-23T10:00:00.000000",
            "agent": "custom-analyzer",
            "type": "remediation_needed",
            "data": data,
        })
        .to_string()
        .into_bytes()
    }

    fn request(container: &str, action: &str, confidence: f64) -> Value {
        json!({"container": container, "action": action, "reason": "looks stuck", "confidence": confidence})
    }

    fn check(payload: &[u8]) -> Result<ValidRequest, Invalid> {
        validate_request(payload, NODE, |id| id == "mine-1", lookup)
    }

    fn outcome(payload: &[u8]) -> String {
        match check(payload) {
            Ok(_) => "accepted".into(),
            Err(Invalid::Ignored(i)) => i.result().into(),
            Err(Invalid::Refused(r)) => r.reason.result(),
        }
    }

    #[test]
    fn requests_are_accepted_refused_or_ignored_as_the_table_says() {
        let mut with_command = request("web", "exec", 0.9);
        with_command["command"] = json!(["nginx", "-s", "reload"]);
        let mut bad_command = request("web", "exec", 0.9);
        bad_command["command"] = json!(["sh", "-c", "rm -rf /"]);
        let mut prefix_command = request("web", "exec", 0.9);
        prefix_command["command"] = json!(["nginx", "-s"]);
        let mut not_strings = request("web", "exec", 0.9);
        not_strings["command"] = json!(["nginx", 1]);
        let mut own = request("web", "restart", 0.9);
        own["node"] = json!(NODE);
        let own_envelope = json!({"timestamp": "t", "agent": OWN_AGENT, "type": "remediation_needed", "data": own}).to_string();
        let mut own_id = request("web", "restart", 0.9);
        own_id["decision_id"] = json!("mine-1");
        let mut other = request("web", "restart", 0.9);
        other["node"] = json!("node-b");
        let other_operator = json!({"timestamp": "t", "agent": OWN_AGENT, "type": "remediation_needed", "data": other}).to_string();
        let mut targeted = request("web", "restart", 0.9);
        targeted["node"] = json!(NODE);
        let mut no_reason = request("web", "restart", 0.9);
        no_reason.as_object_mut().unwrap().remove("reason");
        let mut string_confidence = request("web", "restart", 0.9);
        string_confidence["confidence"] = json!("0.9");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "a valid restart",
                envelope(request("web", "restart", 0.9)),
                "accepted",
            ),
            (
                "a timestamp with +00:00 (the original agents' form)",
                json!({"timestamp": "2025-11-03T10:30:48.456789+00:00", "agent": "analyzer", "type": "remediation_needed", "data": request("web", "restart", 0.9)}).to_string().into_bytes(),
                "accepted",
            ),
            (
                "a timestamp with Z and whole seconds",
                json!({"timestamp": "2025-11-03T10:30:48Z", "agent": "analyzer", "type": "remediation_needed", "data": request("web", "restart", 0.9)}).to_string().into_bytes(),
                "accepted",
            ),
            (
                "only event_type, as the original's analyzer publishes",
                json!({"event_type": "remediation_needed", "timestamp": "2025-11-03T10:30:48.456789+00:00", "agent": "analyzer", "data": request("web", "restart", 0.9)}).to_string().into_bytes(),
                "accepted",
            ),
            (
                "a timestamp that is no time",
                json!({"timestamp": "yesterday", "agent": "x", "type": "remediation_needed", "data": request("web", "restart", 0.9)}).to_string().into_bytes(),
                "refused_bad_shape",
            ),
            (
                "a valid name with a leading slash",
                envelope(request("/web", "restart", 0.9)),
                "accepted",
            ),
            ("an allow-listed exec", envelope(with_command), "accepted"),
            ("addressed to this node", envelope(targeted), "accepted"),
            (
                "confidence above 1 is clamped",
                envelope(request("web", "restart", 7.0)),
                "accepted",
            ),
            (
                "over 64 KiB",
                envelope(json!({"container": "web", "action": "restart", "reason": "x".repeat(MAX_PAYLOAD), "confidence": 1.0})),
                "refused_too_large",
            ),
            (
                "garbage bytes",
                vec![0xff, 0x00, 0x13, 0x37],
                "refused_not_json",
            ),
            ("a JSON array", b"[1,2]".to_vec(), "refused_bad_shape"),
            (
                "another type",
                json!({"timestamp": "t", "agent": "x", "type": "health_alert", "data": request("web", "restart", 0.9)}).to_string().into_bytes(),
                "refused_bad_shape",
            ),
            (
                "no agent",
                json!({"timestamp": "t", "type": "remediation_needed", "data": request("web", "restart", 0.9)}).to_string().into_bytes(),
                "refused_bad_shape",
            ),
            (
                "data not an object",
                json!({"timestamp": "t", "agent": "x", "type": "remediation_needed", "data": "web"}).to_string().into_bytes(),
                "refused_bad_shape",
            ),
            (
                "no container",
                envelope(json!({"action": "restart", "reason": "r", "confidence": 1.0})),
                "refused_bad_container",
            ),
            (
                "a container name that is no Docker name",
                envelope(request("web; rm -rf /", "restart", 0.9)),
                "refused_bad_container",
            ),
            (
                "an unknown action",
                envelope(request("web", "delete", 0.9)),
                "refused_unknown_action",
            ),
            ("no reason", envelope(no_reason), "refused_bad_shape"),
            (
                "confidence as a string",
                envelope(string_confidence),
                "refused_bad_shape",
            ),
            (
                "an unknown container",
                envelope(request("db", "restart", 0.9)),
                "refused_not_governed",
            ),
            (
                "an action the policy does not allow",
                envelope(request("web", "stop", 0.9)),
                "refused_action_not_allowed",
            ),
            (
                "an exec without a command",
                envelope(request("web", "exec", 0.9)),
                "refused_exec_not_allowed",
            ),
            (
                "an exec of an unlisted command",
                envelope(bad_command),
                "refused_exec_not_allowed",
            ),
            (
                "an exec of a prefix of a listed command",
                envelope(prefix_command),
                "refused_exec_not_allowed",
            ),
            (
                "a command that is not strings",
                envelope(not_strings),
                "refused_bad_shape",
            ),
            (
                "below minConfidence",
                envelope(request("web", "restart", 0.5)),
                "refused_low_confidence",
            ),
            (
                "negative confidence is clamped to 0",
                envelope(request("web", "restart", -3.0)),
                "refused_low_confidence",
            ),
            (
                "this operator's own decision",
                own_envelope.into_bytes(),
                "ignored_own",
            ),
            (
                "a decision id this process produced",
                envelope(own_id),
                "ignored_own",
            ),
            (
                "another operator's decision",
                other_operator.into_bytes(),
                "ignored_other_node",
            ),
        ];
        for (name, payload, expected) in cases {
            assert_eq!(outcome(&payload), expected, "{name}");
        }
    }

    #[test]
    fn an_accepted_request_becomes_an_external_decision_with_the_exact_command() {
        let mut data = request("web", "exec", 3.0);
        data["command"] = json!(["nginx", "-s", "reload"]);
        data["reason"] = json!("reload\nplease\u{7}");
        let valid = check(&envelope(data)).unwrap();
        assert_eq!(valid.info.name, "web");
        assert_eq!(valid.policy.metadata.name, "web-policy");
        assert_eq!(valid.decision.action, Some(ActionKind::Exec));
        assert_eq!(valid.decision.method, AnalysisMethod::External);
        assert_eq!(valid.decision.confidence, 1.0);
        assert_eq!(valid.decision.primary.as_deref(), Some(FINDING));
        assert_eq!(
            valid.decision.reason,
            "external request from custom-analyzer: reloadplease"
        );
        assert_eq!(
            valid.command,
            Some(vec!["nginx".to_string(), "-s".into(), "reload".into()])
        );
        let restart = check(&envelope(request("web", "restart", 0.8))).unwrap();
        assert_eq!(restart.command, None, "only an exec carries a command");
    }

    #[test]
    fn a_refusal_keeps_only_what_can_be_announced() {
        let Err(Invalid::Refused(r)) = check(&envelope(request("web", "stop", 0.9))) else {
            panic!("refused");
        };
        assert_eq!(r.container.as_deref(), Some("web"));
        assert_eq!(r.container_id.as_deref(), Some("id-web"));
        assert_eq!(r.policy.as_deref(), Some("web-policy"));
        assert_eq!(r.action, Some(ActionKind::Stop));
        let Err(Invalid::Refused(r)) = check(&envelope(request("bad name!", "restart", 0.9)))
        else {
            panic!("refused");
        };
        assert_eq!(r.container, None, "an invalid name is never announced");
        let long = "a".repeat(300);
        assert!(matches!(
            check(&envelope(request(&long, "restart", 0.9))),
            Err(Invalid::Refused(r)) if r.reason == Reason::BadContainer
        ));
        let Err(Invalid::Refused(r)) = check(&[b'x'; MAX_PAYLOAD + 1]) else {
            panic!("refused");
        };
        assert_eq!(r.reason, Reason::TooLarge);
        assert!(!r.detail.contains("xxx"), "never the payload");
    }

    #[test]
    fn exactly_64_kib_is_read() {
        let mut payload = envelope(request("web", "restart", 0.9));
        // Pad with JSON whitespace up to the limit exactly.
        payload.resize(MAX_PAYLOAD, b' ');
        assert_eq!(outcome(&payload), "accepted");
        payload.push(b' ');
        assert_eq!(outcome(&payload), "refused_too_large");
    }
}
