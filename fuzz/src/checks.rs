//! The properties each fuzz target asserts on one input: a panic is a finding.
//!
//! Shared by the libFuzzer targets (`fuzz/fuzz_targets/`) and by `tests/fuzz_regressions.rs`,
//! which replays every committed seed and regression through the same checks in `cargo test`.

use hemostat::adapters::llm::{anthropic_reply, openai_reply};
use hemostat::adapters::redis::policies::{PolicyMeta, stored_source, validate_stored};
use hemostat::analyze::llm::verdict::{accept, parse, rules_verdict, use_answer};
use hemostat::controller::external::request::{Invalid, MAX_PAYLOAD, Reason, validate_request};
use hemostat::model::container::{ContainerInfo, ContainerState, HealthStatus, ResourceLimits};
use hemostat::model::decision::{ActionKind, AiReview, AnalysisMethod, Decision};
use hemostat::policy::builtin::default_policy;
use hemostat::policy::diff::canonical_yaml;
use hemostat::policy::documents::split_documents;
use hemostat::policy::load::{Diagnostic, LoadReport};
use hemostat::policy::locate::Position;
use hemostat::policy::validate::validate;
use hemostat::policy::{ExecPolicy, HealthPolicy, HumanDuration, load_bytes, load_str};
use serde_json::{Value, json};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// `text` with YAML's three line breaks (LF, CRLF, a lone CR) written as LF.
fn lf_only(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// The lengths (in characters) of the lines of `text`, the line after a final line break
/// included: the places a `line:column` may point at.
fn line_lengths(text: &str) -> Vec<u64> {
    lf_only(text)
        .split('\n')
        .map(|l| l.chars().count() as u64)
        .collect()
}

fn assert_inside(what: &str, p: Position, lines: &[u64], input: &[u8]) {
    let line = usize::try_from(p.line).unwrap_or(usize::MAX);
    assert!(
        line >= 1 && line <= lines.len(),
        "{what} at line {} outside the input's {} lines: {:?}",
        p.line,
        lines.len(),
        String::from_utf8_lossy(input)
    );
    assert!(
        p.column >= 1 && p.column <= lines[line - 1] + 1,
        "{what} at {}:{} past the end of a line of {} characters: {:?}",
        p.line,
        p.column,
        lines[line - 1],
        String::from_utf8_lossy(input)
    );
}

fn position(d: &Diagnostic) -> Position {
    Position::new(d.line, d.column)
}

/// Every problem names the source, a place inside the input and a message without the
/// parser's own location suffix; problems are in line order.
fn check_diagnostics(report: &LoadReport, source: &str, lines: &[u64], input: &[u8]) {
    for d in report.diagnostics.iter().chain(&report.warnings) {
        assert_eq!(d.file, source, "{d}");
        assert_inside(&format!("diagnostic {d}"), position(d), lines, input);
        assert!(!d.message.trim().is_empty(), "empty message: {d:?}");
        assert!(
            !d.message.contains(" at line "),
            "location left in the message: {d}"
        );
    }
    let order: Vec<(u64, u64)> = report
        .diagnostics
        .iter()
        .map(|d| (d.line, d.column))
        .collect();
    assert!(order.is_sorted(), "diagnostics out of order: {order:?}");
}

/// A valid policy survives its own canonical YAML: loaded again it is clean and equal.
fn check_round_trip(policy: &HealthPolicy) {
    let mut policy = policy.clone();
    policy.status = None;
    let yaml = canonical_yaml(&policy);
    let again = load_str("round-trip.yaml", &yaml);
    assert!(
        again.is_clean() && again.policies.len() == 1,
        "the canonical YAML of an accepted policy does not load back:\n{yaml}\n{:?}",
        again.diagnostics
    );
    let mut back = again.policies[0].policy.clone();
    back.status = None;
    assert_eq!(back, policy, "round trip changed the policy:\n{yaml}");
}

/// Bytes → documents (`load_bytes`): every problem carries a location inside the input, every
/// accepted policy passes validation again, has a unique name, points inside the input and
/// round-trips through its canonical YAML; bytes and text load alike; the splitter cuts the
/// text into ordered, disjoint pieces that start on the line they claim.
pub fn policy_load(data: &[u8]) {
    const SOURCE: &str = "fuzz.yaml";
    let report = load_bytes(SOURCE, data);
    let body = data.strip_prefix(BOM).unwrap_or(data);
    let lines = line_lengths(&String::from_utf8_lossy(body));
    assert_eq!(report.files, 1);
    assert!(
        !report.policies.is_empty() || !report.diagnostics.is_empty(),
        "neither a policy nor a problem"
    );
    check_diagnostics(&report, SOURCE, &lines, data);
    let mut names = std::collections::BTreeSet::new();
    for loaded in &report.policies {
        assert_eq!(loaded.source, SOURCE);
        assert!(
            validate(&loaded.policy).is_empty(),
            "accepted but invalid: {:?}",
            validate(&loaded.policy)
        );
        assert!(
            names.insert(loaded.policy.metadata.name.clone()),
            "duplicate name accepted"
        );
        assert_inside("policy", loaded.position, &lines, data);
        assert_inside("metadata.name", loaded.name_position, &lines, data);
        check_round_trip(&loaded.policy);
    }
    let Ok(text) = std::str::from_utf8(body) else {
        assert!(report.policies.is_empty());
        assert_eq!(report.diagnostics.len(), 1, "{:?}", report.diagnostics);
        return;
    };
    let from_text = load_str(SOURCE, text);
    assert_eq!(from_text.policies, report.policies);
    assert_eq!(from_text.diagnostics, report.diagnostics);
    check_split(text);
}

fn check_split(text: &str) {
    let base = text.as_ptr() as usize;
    let mut end = 0usize;
    for chunk in split_documents(text) {
        let start = chunk.text.as_ptr() as usize - base;
        assert!(start >= end, "chunks overlap or are out of order");
        assert!(start + chunk.text.len() <= text.len());
        let line = lf_only(&text[..start]).matches('\n').count() as u64 + 1;
        assert_eq!(chunk.first_line, line, "chunk {:?}", chunk.text);
        assert!(chunk.text.ends_with(chunk.body()));
        end = start + chunk.text.len();
    }
}

/// The remote policy value: the input's first line is the hash field, the rest the stored
/// value. Accepted: named as its field, `status` stripped, valid, and accepted again from its
/// canonical YAML. Refused: every diagnostic names the escaped source, points inside the
/// value and is safe to print (no control characters from Redis reach a terminal). The same
/// value read as the `hemostat:policies:meta` JSON: once written back it reads the same.
pub fn redis_policy(data: &[u8]) {
    let (field, value) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let name = String::from_utf8_lossy(field);
    let source = stored_source(&name);
    assert!(!source.chars().any(char::is_control), "{source:?}");
    let body = value.strip_prefix(BOM).unwrap_or(value);
    let lines = line_lengths(&String::from_utf8_lossy(body));
    match validate_stored(&name, value) {
        Ok(policy) => {
            assert_eq!(policy.metadata.name, name);
            assert!(policy.status.is_none());
            assert!(validate(&policy).is_empty());
            let again = validate_stored(&name, canonical_yaml(&policy).as_bytes());
            assert_eq!(again.as_ref(), Ok(&policy), "canonical YAML refused");
        }
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty());
            for d in &diagnostics {
                assert_eq!(d.file, source);
                assert_inside(&format!("diagnostic {d}"), position(d), &lines, value);
                assert!(
                    !d.to_string().chars().any(char::is_control),
                    "a control character from Redis in a diagnostic: {d:?}"
                );
            }
        }
    }
    if let Ok(meta) = serde_json::from_slice::<PolicyMeta>(value) {
        let written = serde_json::to_string(&meta).expect("PolicyMeta serializes");
        let read: PolicyMeta = serde_json::from_str(&written)
            .unwrap_or_else(|e| panic!("written meta {written} does not read back: {e}"));
        assert_eq!(serde_json::to_string(&read).unwrap(), written);
        assert_eq!(read.generation, meta.generation);
    }
}

const NODE: &str = "node-a";

fn web_policy() -> HealthPolicy {
    let mut p = default_policy();
    p.metadata.name = "web-policy".into();
    p.spec.remediation.actions = vec![ActionKind::Restart, ActionKind::Exec];
    p.spec.remediation.exec = Some(ExecPolicy {
        allowed: vec![
            vec!["nginx".into(), "-s".into(), "reload".into()],
            vec!["/bin/sh".into(), "-c".into(), "kill -HUP 1".into()],
        ],
        timeout: HumanDuration::from_secs(5),
    });
    p.spec.remediation.min_confidence = 0.7;
    p
}

fn db_policy() -> HealthPolicy {
    let mut p = default_policy();
    p.metadata.name = "db-policy".into();
    p.spec.remediation.actions = vec![ActionKind::Stop, ActionKind::Start];
    p.spec.remediation.exec = None;
    p.spec.remediation.min_confidence = 0.0;
    p
}

fn lookup(name: &str) -> Option<(ContainerInfo, HealthPolicy)> {
    let policy = match name {
        "web" | "web-1" => web_policy(),
        "db" => db_policy(),
        _ => return None,
    };
    let info = ContainerInfo {
        id: format!("{name}-id"),
        name: name.to_owned(),
        image: "busybox:test".to_owned(),
        labels: Default::default(),
        state: ContainerState::Running,
        exit_code: None,
        oom_killed: false,
        health: HealthStatus::None,
        health_failing_streak: 0,
        health_output: None,
        restart_count: 0,
        started_at: None,
        finished_at: None,
        limits: ResourceLimits::default(),
        pid: Some(4242),
    };
    Some((info, policy))
}

fn valid_container_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && (2..=255).contains(&name.len())
}

fn printable_and_at_most(s: &str, max: usize) -> bool {
    !s.chars().any(char::is_control) && s.chars().count() <= max
}

/// The external remediation request: accepted only for a governed container, an action its
/// policy allows, an exec command exactly on the allow-list and a confidence within
/// `minConfidence..=1`; whatever is kept of the sender's text is printable and bounded;
/// refusals carry only a valid container name and the reason the bytes deserve.
pub fn external_request(data: &[u8]) {
    let outcome = validate_request(data, NODE, |id| id == "mine-1", lookup);
    let json = serde_json::from_slice::<Value>(data).ok();
    match outcome {
        Ok(v) => {
            let r = &v.policy.spec.remediation;
            let action = v
                .decision
                .action
                .expect("an accepted request has an action");
            assert!(r.actions.contains(&action), "{action} not allowed");
            assert_eq!(v.decision.method, AnalysisMethod::External);
            let c = v.decision.confidence;
            assert!(c.is_finite() && c >= r.min_confidence && c <= 1.0, "{c}");
            match (&v.command, action) {
                (Some(cmd), ActionKind::Exec) => {
                    assert!(r.exec.as_ref().unwrap().allowed.contains(cmd), "{cmd:?}");
                }
                (None, a) => assert_ne!(a, ActionKind::Exec),
                (Some(cmd), a) => panic!("a command {cmd:?} for {a}"),
            }
            assert!(lookup(&v.info.name).is_some());
            assert!(printable_and_at_most(&v.agent, 64), "{:?}", v.agent);
            assert!(
                printable_and_at_most(&v.decision.reason, 600),
                "{:?}",
                v.decision.reason
            );
            assert!(data.len() <= MAX_PAYLOAD);
            let json = json.expect("an accepted request is JSON");
            let kind = json.get("type").or_else(|| json.get("event_type"));
            assert_eq!(kind.and_then(Value::as_str), Some("remediation_needed"));
        }
        Err(Invalid::Ignored(_)) => {
            let json = json.expect("an ignored request is JSON");
            assert!(json["data"].is_object(), "ignored without data");
        }
        Err(Invalid::Refused(r)) => {
            if data.len() > MAX_PAYLOAD {
                assert_eq!(r.reason, Reason::TooLarge);
            } else if json.is_none() {
                assert_eq!(r.reason, Reason::NotJson);
            } else {
                assert!(!matches!(r.reason, Reason::TooLarge | Reason::NotJson));
            }
            assert!(!r.detail.chars().any(char::is_control), "{:?}", r.detail);
            if let Some(agent) = &r.agent {
                assert!(printable_and_at_most(agent, 64), "{agent:?}");
            }
            if let Some(name) = &r.container {
                assert!(valid_container_name(name), "{name:?}");
            }
            if r.container_id.is_some() || r.policy.is_some() {
                let name = r
                    .container
                    .as_deref()
                    .expect("a known container has a name");
                assert!(lookup(name).is_some());
            }
        }
    }
}

fn rules() -> Decision {
    Decision {
        action: Some(ActionKind::Restart),
        reason: "Exited with code 3".into(),
        confidence: 0.9,
        method: AnalysisMethod::Rules,
        findings: vec![],
        primary: Some("exited".into()),
        ai: None,
    }
}

/// The AI answer parser. The first byte chooses the layer the rest enters at: 0 the message
/// content (`verdict::parse`), 1 an OpenAI chat-completions body, 2 an Anthropic Messages
/// body (whose content then goes through `parse`). A parsed answer has bounded, trimmed text
/// and reads back the same from its own JSON; an accepted one names an action the policy
/// allows (an exec's command index inside the allow-list, no command otherwise), a confidence
/// within `minConfidence..=1` and a reason, and becomes an AI decision carrying exactly that.
pub fn ai_answer(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let input = String::from_utf8_lossy(rest);
    let content = match mode % 3 {
        0 => input.into_owned(),
        layer => {
            let Ok(body) = serde_json::from_str::<Value>(&input) else {
                return;
            };
            let reply = if layer == 1 {
                openai_reply(&body)
            } else {
                anthropic_reply(&body)
            };
            match reply {
                Ok(reply) => reply.content,
                Err(e) => {
                    assert!(!e.label().is_empty());
                    assert!(e.to_string().chars().count() <= 400, "{e}");
                    return;
                }
            }
        }
    };
    let Ok(answer) = parse(&content) else {
        return;
    };
    for text in [&answer.reason, &answer.root_cause] {
        let n = text.chars().count();
        assert!(n <= 1000, "{n} characters kept");
        assert_eq!(text.trim(), text.as_str(), "untrimmed text kept");
    }
    assert!(answer.confidence.is_finite());
    let written = json!({
        "action": answer.action,
        "confidence": answer.confidence,
        "reason": answer.reason,
        "root_cause": answer.root_cause,
        "command": answer.command,
    });
    assert_eq!(
        parse(&written.to_string()).as_ref(),
        Ok(&answer),
        "{written}"
    );
    for policy in [web_policy(), db_policy()] {
        let r = &policy.spec.remediation;
        let Ok(action) = accept(&policy, &answer) else {
            continue;
        };
        assert!((r.min_confidence..=1.0).contains(&answer.confidence));
        assert!(!answer.reason.is_empty());
        match action {
            None => assert_eq!(answer.action, "none"),
            Some(a) => {
                assert!(r.actions.contains(&a));
                assert_eq!(a.as_str(), answer.action);
            }
        }
        match (action, answer.command) {
            (Some(ActionKind::Exec), Some(i)) => {
                assert!(i < r.exec.as_ref().map_or(0, |e| e.allowed.len()));
            }
            (Some(ActionKind::Exec), None) => panic!("exec without a command accepted"),
            (_, c) => assert_eq!(c, None),
        }
        let review = AiReview {
            provider: "openai".into(),
            model: "m".into(),
            rules: rules_verdict(&rules()),
            answer: Some(answer.clone()),
            fallback_reason: None,
            cached: false,
            latency_ms: 1,
        };
        let decision = use_answer(rules(), action, review);
        assert_eq!(decision.method, AnalysisMethod::Ai);
        assert_eq!(decision.action, action);
        assert_eq!(decision.confidence, answer.confidence);
        assert_eq!(decision.fallback_reason(), None);
        assert_eq!(decision.root_cause(), Some(answer.root_cause.as_str()));
    }
}
