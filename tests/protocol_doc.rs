//! `docs/PROTOCOL.md` is the wire contract: its HemoStat examples are exactly what the typed
//! payloads serialise, and the original's examples (its protocol document, its monitor's state
//! key) are golden tests: every field they show is in HemoStat's output with the same JSON type,
//! and timestamps carry `+00:00`.
//!
//! `HEMOSTAT_BLESS=1 cargo test --test protocol_doc` rewrites the HemoStat examples from the
//! types (review the diff!).

use std::collections::BTreeMap;

use hemostat::adapters::redis::{EVENTS_CAP, EVENTS_TTL_SECS, STATE_TTL_SECS, STATS_TTL_SECS};
use hemostat::model::container::{ContainerInfo, ContainerState, HealthStatus, ResourceLimits};
use hemostat::model::decision::{AnalysisMethod, Finding, FindingKind, Severity};
use hemostat::model::usage::Usage;
use hemostat::model::wire::{
    ActionResult, ContainerStateKey, ContainerStats, DecisionPayload, Envelope, EventType,
    FalseAlarm, HealthAlert, MetricsSnapshot, RemediationComplete, RemediationNeeded,
    parse_wire_timestamp, wire_timestamp_secs,
};
use serde_json::Value;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");
const ID: &str = "3f2a9c81d4e5b6a7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn info() -> ContainerInfo {
    ContainerInfo {
        id: ID.into(),
        name: "hemostat-test-api".into(),
        image: "hemostat-test-api:1".into(),
        labels: BTreeMap::new(),
        state: ContainerState::Running,
        exit_code: None,
        oom_killed: false,
        health: HealthStatus::None,
        health_failing_streak: 0,
        restart_count: 0,
        health_output: None,
        started_at: None,
        finished_at: None,
        limits: ResourceLimits::default(),
        pid: None,
    }
}

fn usage() -> Usage {
    Usage {
        cpu_percent: 92.5,
        memory_percent: 45.2,
        memory_used_bytes: 57_881_395,
        memory_limit_bytes: 128 << 20,
    }
}

fn metrics() -> MetricsSnapshot {
    MetricsSnapshot {
        name: "hemostat-test-api".into(),
        status: ContainerState::Running,
        memory_pct: Some(45.2),
        cpu_pct: Some(92.5),
        timestamp: wire_timestamp_secs(at("2025-11-03T10:30:45Z")),
    }
}

fn decision(
    reason: &str,
    action: Option<hemostat::model::decision::ActionKind>,
) -> DecisionPayload {
    DecisionPayload {
        container: "hemostat-test-api".into(),
        reason: reason.into(),
        confidence: 0.9,
        metrics: metrics(),
        analysis_method: AnalysisMethod::Rules,
        decision_id: "0b5d6c1e-5f43-4a8e-9c1d-2f6a7b8c9d0e".into(),
        container_id: ID.into(),
        policy: "web-api".into(),
        node: "node-a".into(),
        dry_run: false,
        action,
        ai: Default::default(),
    }
}

fn complete(status: &str, details: &str, gate: Option<&str>) -> RemediationComplete {
    RemediationComplete {
        container: "hemostat-test-api".into(),
        action: "restart".into(),
        result: ActionResult::new(status, "restart", "hemostat-test-api", details),
        dry_run: false,
        confidence: Some(0.9),
        reason: "High CPU: 92.5% of limit for 2m".into(),
        decision_id: "0b5d6c1e-5f43-4a8e-9c1d-2f6a7b8c9d0e".into(),
        analysis_method: AnalysisMethod::Rules,
        container_id: Some(ID.into()),
        policy: Some("web-api".into()),
        node: "node-a".into(),
        gate: gate.map(str::to_owned),
        refusal: None,
        gave_up: false,
        ai: Default::default(),
    }
}

/// An envelope exactly as the sinks write it (field order as on the wire), pretty-printed.
fn envelope(at_: &str, t: EventType, data: Value) -> String {
    serde_json::to_string_pretty(&Envelope::at(at(at_), t, data)).unwrap()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

/// Every HemoStat example of the document, built from the typed payloads.
fn hemostat_examples() -> BTreeMap<&'static str, String> {
    let cpu = Finding {
        kind: FindingKind::HighCpu {
            percent: 92.5,
            for_secs: 120,
        },
        severity: Severity::High,
        message: "High CPU: 92.5% of limit for 2m".into(),
    };
    let alert = HealthAlert {
        container: "hemostat-test-api".into(),
        issues: vec![cpu.message.clone()],
        metrics: metrics(),
        findings: vec![cpu],
        exit_code: None,
        oom_killed: false,
        health: HealthStatus::None,
        container_id: ID.into(),
        decision_id: "0b5d6c1e-5f43-4a8e-9c1d-2f6a7b8c9d0e".into(),
        policy: "web-api".into(),
        node: "node-a".into(),
    };
    let running = info();
    let mut exited = info();
    exited.state = ContainerState::Exited;
    let sampled = at("2025-11-03T10:30:45Z");
    let examples: Vec<(&str, String)> = vec![
        (
            "health_alert",
            envelope(
                "2025-11-03T10:30:45.123456Z",
                EventType::HealthAlert,
                value(&alert),
            ),
        ),
        (
            "remediation_needed",
            envelope(
                "2025-11-03T10:30:48.456789Z",
                EventType::RemediationNeeded,
                value(&RemediationNeeded(decision(
                    "High CPU: 92.5% of limit for 2m",
                    Some(hemostat::model::decision::ActionKind::Restart),
                ))),
            ),
        ),
        (
            "false_alarm",
            envelope(
                "2025-11-03T10:30:48.456789Z",
                EventType::FalseAlarm,
                value(&FalseAlarm(decision(
                    "false alarm: High CPU: 92.5% of limit for 2m; confidence 0.90 is below the policy's minimum 0.95",
                    None,
                ))),
            ),
        ),
        (
            "remediation_complete",
            envelope(
                "2025-11-03T10:30:53.789012Z",
                EventType::RemediationComplete,
                value(&complete(
                    "success",
                    "container is back: state Running, health None",
                    None,
                )),
            ),
        ),
        (
            "remediation_complete_rejected",
            envelope(
                "2025-11-03T10:30:53.789012Z",
                EventType::RemediationComplete,
                value(&complete(
                    "rejected",
                    "cooldown: last action 2m ago, cooldown 1h",
                    Some("cooldown"),
                )),
            ),
        ),
        (
            "remediation_complete_failed",
            envelope(
                "2025-11-03T10:30:53.789012Z",
                EventType::RemediationComplete,
                value(&complete(
                    "failed",
                    "did not come back within 30s: state Exited, health None",
                    None,
                )),
            ),
        ),
        (
            "stats",
            pretty(&ContainerStats::of(&running, Some(&usage()), sampled, "node-a").to_json()),
        ),
        (
            "stats_exited",
            pretty(&ContainerStats::of(&exited, None, sampled, "node-a").to_json()),
        ),
        (
            "state",
            pretty(&ContainerStateKey::of(&running, Some(&usage()), sampled, "node-a").to_json()),
        ),
        (
            "remediation",
            pretty(
                &serde_json::json!({"count": 1, "last_action": wire_timestamp_secs(at("2025-11-03T10:30:53Z"))}),
            ),
        ),
    ];
    examples.into_iter().collect()
}

fn value<T: serde::Serialize>(payload: &T) -> Value {
    serde_json::to_value(payload).unwrap()
}

/// `(kind, name) -> (byte range of the block's body, body)` for every
/// `<!-- example: kind/name -->` followed by a ```json block.
fn blocks(doc: &str) -> BTreeMap<(String, String), (std::ops::Range<usize>, String)> {
    let mut out = BTreeMap::new();
    let marker = "<!-- example: ";
    let mut from = 0;
    while let Some(i) = doc[from..].find(marker) {
        let start = from + i + marker.len();
        let end = start + doc[start..].find(" -->").expect("marker closes");
        let (kind, name) = doc[start..end].split_once('/').expect("kind/name");
        let fence = end + doc[end..].find("```json\n").expect("a json block follows") + 8;
        let close = fence + doc[fence..].find("```").expect("block closes");
        let body = doc[fence..close].trim_end().to_owned();
        out.insert((kind.to_owned(), name.to_owned()), (fence..close, body));
        from = close;
    }
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Every field of `original` is in `ours` with the same JSON type (recursively), except the
/// `allowed_missing` paths; timestamps are read in the original's form and written with
/// `+00:00`. Returns the problems found.
fn covers(path: &str, original: &Value, ours: &Value, allowed_missing: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    match (original, ours) {
        (Value::Object(o), Value::Object(h)) => {
            for (k, v) in o {
                let p = format!("{path}.{k}");
                match h.get(k) {
                    None if allowed_missing.contains(&p.as_str()) => {}
                    None => problems.push(format!("{p} is missing")),
                    Some(mine) => problems.extend(covers(&p, v, mine, allowed_missing)),
                }
            }
        }
        (Value::Array(o), Value::Array(h)) => {
            if let (Some(o), Some(h)) = (o.first(), h.first()) {
                problems.extend(covers(&format!("{path}[0]"), o, h, allowed_missing));
            }
        }
        (o, h) if kind(o) != kind(h) => problems.push(format!(
            "{path}: {} in the original, {} here",
            kind(o),
            kind(h)
        )),
        (Value::String(o), Value::String(h))
            if path.ends_with("timestamp") || path.ends_with("last_action") =>
        {
            if parse_wire_timestamp(o).is_none() {
                problems.push(format!("{path}: the original's {o:?} does not parse"));
            }
            if !h.ends_with("+00:00") || parse_wire_timestamp(h).is_none() {
                problems.push(format!("{path}: {h:?} has no +00:00"));
            }
        }
        _ => {}
    }
    problems
}

#[test]
fn the_hemostat_examples_are_what_the_types_serialise() {
    let mut doc = std::fs::read_to_string(DOC).unwrap();
    let examples = hemostat_examples();
    let found = blocks(&doc);
    if std::env::var_os("HEMOSTAT_BLESS").is_some() {
        // Replace from the end so earlier ranges stay valid.
        let mut ranges: Vec<_> = found
            .iter()
            .filter(|((k, _), _)| k == "hemostat")
            .map(|((_, n), (r, _))| (r.clone(), examples[n.as_str()].clone()))
            .collect();
        ranges.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
        for (r, text) in ranges {
            doc.replace_range(r, &format!("{text}\n"));
        }
        std::fs::write(DOC, &doc).unwrap();
        return;
    }
    for (name, want) in &examples {
        let key = ("hemostat".to_owned(), (*name).to_owned());
        let (_, got) = found
            .get(&key)
            .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no example hemostat/{name}"));
        assert_eq!(
            got, want,
            "docs/PROTOCOL.md hemostat/{name} drifted from the types"
        );
    }
    for (k, n) in found.keys() {
        assert!(
            k == "original" || examples.contains_key(n.as_str()),
            "docs/PROTOCOL.md example {k}/{n} is not generated from the types"
        );
    }
}

#[test]
fn the_originals_examples_are_covered_field_for_field() {
    let doc = std::fs::read_to_string(DOC).unwrap();
    let found = blocks(&doc);
    let originals: Vec<_> = found.iter().filter(|((k, _), _)| k == "original").collect();
    let names: Vec<&str> = originals.iter().map(|((_, n), _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "false_alarm",
            "health_alert",
            "remediation",
            "remediation_complete",
            "remediation_complete_failed",
            "remediation_complete_rejected",
            "remediation_needed",
            "state",
            "stats",
        ],
        "one original example per envelope type and key"
    );
    // HemoStat does not measure network or block I/O (documented in PROTOCOL.md).
    let allowed = [
        "$.network_rx_bytes",
        "$.network_tx_bytes",
        "$.blkio_read_bytes",
        "$.blkio_write_bytes",
    ];
    for ((_, name), (_, body)) in originals {
        let original: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("original/{name} is not JSON: {e}"));
        let (_, ours) = &found[&("hemostat".to_owned(), name.clone())];
        let ours: Value = serde_json::from_str(ours).unwrap();
        let problems = covers("$", &original, &ours, &allowed);
        assert!(problems.is_empty(), "original/{name}: {problems:#?}");
        if let Some(t) = original.get("type").or(original.get("event_type")) {
            // The envelope names its type both ways, and so does its data.
            assert_eq!(&ours["type"], t, "{name}");
            assert_eq!(&ours["event_type"], t, "{name}");
            assert_eq!(&ours["data"]["event_type"], t, "{name}");
        }
    }
}

#[test]
fn the_key_table_states_the_ttls_and_caps_the_adapter_uses() {
    let doc = std::fs::read_to_string(DOC).unwrap();
    for (key, ttl) in [
        ("`hemostat:stats:<container>`", STATS_TTL_SECS),
        ("`hemostat:state:container:<short id>`", STATE_TTL_SECS),
        ("`hemostat:remediation:<container>`", EVENTS_TTL_SECS),
        ("`hemostat:events:<type>`", EVENTS_TTL_SECS),
    ] {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| {key}")))
            .unwrap_or_else(|| panic!("no key table row for {key}"));
        assert!(row.contains(&format!("| {ttl} s |")), "{key}: {row}");
    }
    assert!(doc.contains(&format!("newest {EVENTS_CAP}")));
}

#[test]
fn every_analysis_method_is_documented() {
    let doc = std::fs::read_to_string(DOC).unwrap();
    for m in AnalysisMethod::ALL {
        assert!(
            doc.contains(&format!("| `{}` |", m.as_str())),
            "docs/PROTOCOL.md does not document analysis_method {}",
            m.as_str()
        );
    }
}
