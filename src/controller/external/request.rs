//! One `remediation_needed` message from another tool, read into typed fields and checked
//! (pure): against this node, the observed containers and their governing policies.
//!
//! Every field is read with its expected type or not at all ([`Loose`]): a field of another
//! type counts as missing, so the checks below run in the same order whatever is wrong, and
//! the refusal carries what could be trusted up to that point. An object with a key given twice
//! is not read (it has no single meaning).

use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::model::container::ContainerInfo;
use crate::model::decision::{ActionKind, AnalysisMethod, Decision};
use crate::model::wire::{EventType, parse_wire_timestamp};
use crate::policy::HealthPolicy;

/// Larger payloads are refused unread.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The agent of HemoStat's own `remediation_needed` envelopes.
pub(crate) const OWN_AGENT: &str = "HemoStat-Analyzer";
/// The `finding` external actions are recorded under (a repeated request within the circuit
/// breaker window counts the previous action as a failed repair).
pub(crate) const FINDING: &str = "external";
/// Longest reason kept (characters); the rest is cut.
const MAX_REASON: usize = 512;
/// Longest agent name kept (characters).
const MAX_AGENT: usize = 64;
/// Longest container name accepted (Docker's own limit is lower in practice).
const MAX_NAME: usize = 255;

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
    pub(crate) fn result(self) -> &'static str {
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
    pub(crate) fn label(self) -> &'static str {
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
    pub(crate) fn result(self) -> String {
        format!("refused_{}", self.label())
    }
}

/// A refused request: why, and what of it can be trusted enough to announce.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRefusal {
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
    Refused(Box<RequestRefusal>),
}

/// A value of the expected type, or anything else (read and dropped).
#[derive(Deserialize)]
#[serde(untagged)]
enum Either<T> {
    Expected(T),
    Other(IgnoredAny),
}

/// A field read with its type `T`, or as missing when it has another type (or is null).
struct Loose<T>(Option<T>);

impl<T> Default for Loose<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Loose<T> {
    fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(match Either::deserialize(d)? {
            Either::Expected(v) => Some(v),
            Either::Other(_) => None,
        }))
    }
}

/// A struct read from a JSON object only (a derived struct would also take an array).
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Only(PhantomData)).map(Object)
    }
}

/// Present (even as null) or absent: `type: null` hides `event_type`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The envelope `{timestamp, agent, type | event_type, data}` as read.
#[derive(Deserialize)]
struct RemediationRequest {
    #[serde(default)]
    timestamp: Loose<String>,
    #[serde(default)]
    agent: Loose<String>,
    #[serde(rename = "type", default, deserialize_with = "present")]
    type_: Option<Loose<String>>,
    /// The original's agents name the type here only.
    #[serde(default)]
    event_type: Loose<String>,
    #[serde(default)]
    data: Loose<Object<RequestData>>,
}

/// `data` as read.
#[derive(Deserialize)]
struct RequestData {
    #[serde(default)]
    node: Loose<String>,
    #[serde(default)]
    decision_id: Loose<String>,
    #[serde(default)]
    container: Loose<String>,
    #[serde(default)]
    action: Loose<String>,
    #[serde(default)]
    reason: Loose<String>,
    #[serde(default)]
    confidence: Loose<f64>,
    /// Absent or null: none; anything but an array of strings is refused.
    #[serde(default)]
    command: Option<Either<Vec<String>>>,
}

impl RemediationRequest {
    fn data(&self) -> Option<&RequestData> {
        self.data.get().map(|o| &o.0)
    }

    /// `type` as documented, or only `event_type` as the original's agents write it.
    fn kind(&self) -> Option<&String> {
        match &self.type_ {
            Some(t) => t.get(),
            None => self.event_type.get(),
        }
    }
}

/// What is known of the request so far, for a refusal.
#[derive(Default)]
struct Partial {
    container: Option<String>,
    container_id: Option<String>,
    policy: Option<String>,
    action: Option<ActionKind>,
    agent: Option<String>,
}

impl Partial {
    fn refuse(&self, reason: Reason, detail: impl Into<String>) -> Invalid {
        Invalid::Refused(Box::new(RequestRefusal {
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

/// The bytes as an envelope object: not JSON, or JSON that is not an object, is refused.
fn read(payload: &[u8], p: &Partial) -> Result<RemediationRequest, Invalid> {
    if payload.len() > MAX_PAYLOAD {
        return Err(p.refuse(
            Reason::TooLarge,
            format!("{} bytes, the limit is {MAX_PAYLOAD}", payload.len()),
        ));
    }
    match serde_json::from_slice::<Either<Object<RemediationRequest>>>(payload) {
        Err(_) => Err(p.refuse(Reason::NotJson, "not JSON")),
        Ok(Either::Other(_)) => Err(p.refuse(Reason::BadShape, "not a JSON object")),
        Ok(Either::Expected(Object(request))) => Ok(request),
    }
}

/// Own and other nodes' decisions: well-formed, and not ours to judge.
fn ignored(
    request: &RemediationRequest,
    own_node: &str,
    is_own_decision: impl Fn(&str) -> bool,
) -> Option<Ignored> {
    let data = request.data()?;
    let node = data.node.get().map(String::as_str);
    if request.agent.get().map(String::as_str) == Some(OWN_AGENT) && node == Some(own_node) {
        return Some(Ignored::Own);
    }
    if data.decision_id.get().is_some_and(|id| is_own_decision(id)) {
        return Some(Ignored::Own);
    }
    node.is_some_and(|n| n != own_node)
        .then_some(Ignored::OtherNode)
}

/// The envelope's own fields: the type, an agent and an ISO-8601 timestamp (naive, the
/// protocol document's form, or with an offset, the original agents' form).
fn check_envelope(request: &RemediationRequest, p: &Partial) -> Result<(), Invalid> {
    if request.kind().map(String::as_str) != Some(EventType::RemediationNeeded.as_str()) {
        return Err(p.refuse(Reason::BadShape, "type is not remediation_needed"));
    }
    let (Some(timestamp), Some(_)) = (request.timestamp.get(), request.agent.get()) else {
        return Err(p.refuse(Reason::BadShape, "agent or timestamp missing"));
    };
    if parse_wire_timestamp(timestamp).is_none() {
        return Err(p.refuse(
            Reason::BadShape,
            "timestamp is not ISO-8601 (e.g. 2025-11-03T10:30:45.123456+00:00)",
        ));
    }
    Ok(())
}

/// `data.container` and `data.action`, recorded in `p` as soon as they are valid.
fn target<'a>(data: &'a RequestData, p: &mut Partial) -> Result<(&'a str, ActionKind), Invalid> {
    let Some(raw_name) = data.container.get() else {
        return Err(p.refuse(Reason::BadContainer, "data.container missing"));
    };
    let Some(name) = container_name(raw_name) else {
        return Err(p.refuse(
            Reason::BadContainer,
            "data.container is not a valid container name",
        ));
    };
    p.container = Some(name.to_owned());
    let Some(raw_action) = data.action.get() else {
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
    Ok((name, action))
}

/// `data.reason`, `data.confidence` and `data.command` (absent, or an array of strings).
fn claims<'a>(
    data: &'a RequestData,
    p: &Partial,
) -> Result<(&'a str, f64, Option<Vec<String>>), Invalid> {
    let Some(reason) = data.reason.get() else {
        return Err(p.refuse(Reason::BadShape, "data.reason missing"));
    };
    let Some(&confidence) = data.confidence.get() else {
        return Err(p.refuse(Reason::BadShape, "data.confidence is not a number"));
    };
    let command = match &data.command {
        None => None,
        Some(Either::Expected(c)) => Some(c.clone()),
        Some(Either::Other(_)) => {
            return Err(p.refuse(Reason::BadShape, "data.command is not an array of strings"));
        }
    };
    Ok((reason, confidence, command))
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
    let name = &policy.metadata.name;
    if !r.actions.contains(&action) {
        return Err(p.refuse(
            Reason::ActionNotAllowed,
            format!("action {action} is not allowed by policy {name}"),
        ));
    }
    let command = if action == ActionKind::Exec {
        let allowed = r.exec.as_ref().map(|e| e.allowed.as_slice()).unwrap_or(&[]);
        match command {
            Some(c) if allowed.contains(&c) => Some(c),
            Some(_) => {
                return Err(p.refuse(
                    Reason::ExecNotAllowed,
                    format!("the command is not on the exec allow-list of policy {name}"),
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
                "confidence {confidence} is below minConfidence {} of policy {name}",
                r.min_confidence
            ),
        ));
    }
    Ok((command, confidence))
}

/// Validates one message of `hemostat:remediation_needed`. Pure: `own_node` is this node's
/// name, `is_own_decision` tells the decision ids this process produced, and `lookup` finds an
/// observed container by name together with its governing policy (`None` when there is no such
/// container or no policy governs it).
pub fn validate_request(
    payload: &[u8],
    own_node: &str,
    is_own_decision: impl Fn(&str) -> bool,
    lookup: impl Fn(&str) -> Option<(ContainerInfo, HealthPolicy)>,
) -> Result<ValidRequest, Invalid> {
    let mut p = Partial::default();
    let request = read(payload, &p)?;
    p.agent = request.agent.get().map(|a| sanitise(a, MAX_AGENT));
    if let Some(why) = ignored(&request, own_node, is_own_decision) {
        return Err(Invalid::Ignored(why));
    }
    check_envelope(&request, &p)?;
    let Some(data) = request.data() else {
        return Err(p.refuse(Reason::BadShape, "data is not an object"));
    };
    let (name, action) = target(data, &mut p)?;
    let (reason, confidence, command) = claims(data, &p)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ExecPolicy;
    use crate::policy::builtin::default_policy;
    use serde_json::{Value, json};

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

    #[test]
    fn fields_of_another_type_read_as_missing_and_only_objects_are_read() {
        let restart = request("web", "restart", 0.9);
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "a null type hides event_type",
                json!({"type": null, "event_type": "remediation_needed", "timestamp": "2025-11-03T10:30:48Z", "agent": "a", "data": restart}),
                "refused_bad_shape",
            ),
            (
                "data as an array is no object",
                json!({"type": "remediation_needed", "timestamp": "2025-11-03T10:30:48Z", "agent": "a", "data": ["node-b", "x", "web"]}),
                "refused_bad_shape",
            ),
            (
                "an agent that is no string is missing",
                json!({"type": "remediation_needed", "timestamp": "2025-11-03T10:30:48Z", "agent": 7, "data": restart}),
                "refused_bad_shape",
            ),
            (
                "a node that is no string addresses no other node",
                json!({"type": "remediation_needed", "timestamp": "2025-11-03T10:30:48Z", "agent": "a", "data": {"node": 3, "container": "web", "action": "restart", "reason": "r", "confidence": 1}}),
                "accepted",
            ),
            (
                "a null command is no command",
                json!({"type": "remediation_needed", "timestamp": "2025-11-03T10:30:48Z", "agent": "a", "data": {"command": null, "container": "web", "action": "restart", "reason": "r", "confidence": 1}}),
                "accepted",
            ),
        ];
        for (name, value, expected) in cases {
            assert_eq!(outcome(value.to_string().as_bytes()), expected, "{name}");
        }
        let twice = br#"{"type": "remediation_needed", "type": "remediation_needed", "timestamp": "2025-11-03T10:30:48Z", "agent": "a", "data": {"container": "web", "action": "restart", "reason": "r", "confidence": 1}}"#;
        assert_eq!(outcome(twice), "refused_bad_shape", "a key given twice");
    }
}
