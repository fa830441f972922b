//! Golden tests of the wire protocol: the envelopes reconcile, the responder, the external
//! refusal and the sampler produce, byte for byte, against files captured from the `json!`
//! builders before the typed payloads replaced them (`tests/golden/wire/`).
//!
//! `HEMOSTAT_BLESS=1 cargo test --lib wire_golden` rewrites the files (review the diff!).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::engine::fake::{Script, exited, running};
use crate::fixtures::{TestContext, policy};
use crate::model::usage::Usage;
use crate::model::wire::Envelope;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/wire");

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-11-03T10:30:45.123456Z")
        .unwrap()
        .to_utc()
}

/// One envelope per line, each serialised exactly as the sinks serialise it, with what
/// differs between runs (the envelope's clock, the decision's uuid) replaced by markers after
/// checking its format; nothing else is touched.
fn lines(envelopes: &[Envelope]) -> String {
    let mut out = String::new();
    for e in envelopes {
        let mut line = serde_json::to_string(e).unwrap();
        assert!(
            chrono::DateTime::parse_from_str(&e.timestamp, "%Y-%m-%dT%H:%M:%S%.6f%:z").is_ok()
                && e.timestamp.len() == 32
                && e.timestamp.ends_with("+00:00"),
            "envelope timestamp {} is not ISO-8601 UTC with microseconds and +00:00",
            e.timestamp
        );
        line = line.replacen(&format!("\"{}\"", e.timestamp), "\"<timestamp>\"", 1);
        if let Some(id) = e.data.get("decision_id").and_then(Value::as_str) {
            assert!(
                uuid::Uuid::parse_str(id).is_ok(),
                "decision_id {id} is not a uuid"
            );
            line = line.replace(&format!("\"{id}\""), "\"<decision_id>\"");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn check(name: &str, got: &str) {
    let path = format!("{DIR}/{name}.jsonl");
    if std::env::var_os("HEMOSTAT_BLESS").is_some() {
        std::fs::create_dir_all(DIR).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(got, want, "wire format of {name} drifted from {path}");
}

/// A crashed container, one usage sample observed: alert, decision, then the responder's outcome.
async fn crash_scenario(spec: &str, labels: &[(&str, &str)]) -> String {
    crash_scenario_with(spec, labels, Script::default()).await
}

async fn crash_scenario_with(spec: &str, labels: &[(&str, &str)], script: Script) -> String {
    let t = TestContext::new(vec![policy("crash", spec)]);
    t.engine.script("web-id", script);
    let mut info = exited(running("web", labels), 1);
    info.started_at = Some(at() - chrono::Duration::minutes(5));
    info.finished_at = Some(at());
    t.engine.put(info.clone());
    t.ctx.observed.upsert(info, Utc::now());
    t.ctx.observed.push_usage(
        "web-id",
        crate::model::usage::UsagePoint {
            at: at(),
            cpu_percent: 12.345,
            memory_percent: 40.06,
            memory_used_bytes: 1 << 20,
        },
    );
    crate::controller::reconcile("web-id", &t.ctx)
        .await
        .unwrap();
    lines(&t.envelopes().await)
}

#[tokio::test(start_paused = true)]
async fn crash_repaired_envelopes_are_byte_identical() {
    let spec =
        "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n    verifyWithin: 4s\n";
    check(
        "crash_repaired",
        &crash_scenario(spec, &[("role", "target")]).await,
    );
}

#[tokio::test(start_paused = true)]
async fn failed_and_gave_up_envelopes_are_byte_identical() {
    let spec = "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n    verifyWithin: 2s\n    circuitBreaker: {failures: 1, within: 1h, openFor: 1h}\n";
    let down = Script {
        stays_down: true,
        ..Script::default()
    };
    check(
        "crash_not_back_gave_up",
        &crash_scenario_with(spec, &[("role", "target")], down).await,
    );
}

#[tokio::test(start_paused = true)]
async fn refusal_and_dry_run_envelopes_are_byte_identical() {
    let spec = "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n";
    let protected = crash_scenario(
        spec,
        &[("role", "target"), ("io.hemostat.protected", "true")],
    )
    .await;
    check("crash_protected", &protected);
    let dry = "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n    dryRun: true\n";
    check(
        "crash_dry_run",
        &crash_scenario(dry, &[("role", "target")]).await,
    );
}

#[tokio::test(start_paused = true)]
async fn false_alarm_envelopes_are_byte_identical() {
    let spec = "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n    minConfidence: 0.99\n";
    check(
        "false_alarm",
        &crash_scenario(spec, &[("role", "target")]).await,
    );
}

#[test]
fn stats_values_are_byte_identical() {
    let info = running("web", &[("role", "target")]);
    let usage = Usage {
        cpu_percent: 12.345,
        memory_percent: 99.96,
        memory_used_bytes: 1 << 20,
        memory_limit_bytes: 1 << 30,
    };
    let v = crate::model::wire::ContainerStats::of(&info, Some(&usage), at(), "node-a").to_json();
    check("stats", &(serde_json::to_string(&v).unwrap() + "\n"));
}

#[tokio::test]
async fn external_refusal_envelopes_are_byte_identical() {
    let t = TestContext::new(vec![]);
    super::external::handle::golden_refusal(&t.ctx).await;
    check("external_refusal", &lines(&t.envelopes().await));
}
