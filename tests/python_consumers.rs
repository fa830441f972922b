//! What HemoStat writes to a real `redis-server`, read by Python 3 the way the original's
//! consumers read it: its dashboard compares event times with `datetime.now(UTC)` (a naive time
//! raises `TypeError` there), formats `cpu_percent`/`memory_percent` with `:.1f`, reads
//! `event_type`; its Alert agent shows `result.reason`, `result.error` and `analysis_method`.
//! The script is ours; it uses only the standard library calls those consumers make.

mod redis_support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use hemostat::adapters::redis::{RedisBus, RedisConfig};
use hemostat::bus::EventSink;
use hemostat::model::container::{ContainerInfo, ContainerState, HealthStatus, ResourceLimits};
use hemostat::model::decision::AnalysisMethod;
use hemostat::model::usage::Usage;
use hemostat::model::wire::{
    ActionResult, ContainerStateKey, ContainerStats, Envelope, EventType, RemediationComplete,
};
use redis::AsyncCommands;
use redis_support::RedisServer;
use serde_json::{Value, json};

const SCRIPT: &str = r#"
import json, sys
from datetime import datetime, timedelta, timezone

UTC = timezone.utc

doc = json.load(sys.stdin)
out = {"recent": [], "types": [], "grid": [], "state": [], "slack": [], "naive": None}
cutoff = datetime.now(UTC) - timedelta(hours=1)
for raw in doc["events"]:
    event = json.loads(raw)
    # The dashboard's history filter and timeline.
    when = datetime.fromisoformat(event.get("timestamp", "").replace("Z", "+00:00"))
    out["recent"].append(when > cutoff)
    out["types"].append(event.get("event_type", "unknown").lower())
    # The Alert agent's Slack fields.
    data = event.get("data", {})
    result = data.get("result", {})
    if result:
        out["slack"].append({
            "status": result.get("status", "unknown"),
            "rejection_reason": result.get("reason", ""),
            "error": result.get("error", ""),
            "analysis": data.get("analysis_method", "unknown"),
            "confident": data.get("confidence", 0) > 0,
        })
for raw in doc["stats"]:
    stats = json.loads(raw)
    out["grid"].append(f'{stats.get("cpu_percent", 0):.1f}/{stats.get("memory_percent", 0):.1f}/{stats.get("status", "active").upper()}')
for raw in doc["state"]:
    state = json.loads(raw)
    out["state"].append(f'{state["cpu_percent"]:.1f}/{state["memory_percent"]:.1f}/{state["status"]}')
# What the protocol document's naive form does in the same comparison.
try:
    datetime.fromisoformat("2025-11-03T10:30:45.123456") > cutoff
    out["naive"] = "compared"
except TypeError:
    out["naive"] = "TypeError"
print(json.dumps(out))
"#;

fn info(id: &str, name: &str, state: ContainerState) -> ContainerInfo {
    ContainerInfo {
        id: id.into(),
        name: name.into(),
        image: "busybox".into(),
        labels: BTreeMap::new(),
        state,
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

fn complete(status: &str, details: &str) -> Envelope {
    Envelope::of(&RemediationComplete {
        container: "api".into(),
        action: "restart".into(),
        result: ActionResult::new(status, "restart", "api", details),
        dry_run: false,
        confidence: Some(0.9),
        reason: "Exited with code 1".into(),
        decision_id: "d-1".into(),
        analysis_method: AnalysisMethod::Rules,
        container_id: Some("a".repeat(64)),
        policy: Some("web".into()),
        node: "node-a".into(),
        gate: (status == "rejected").then(|| "cooldown".to_owned()),
        refusal: None,
        gave_up: false,
        ai: Default::default(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reads_what_hemostat_writes_the_way_the_original_consumers_do() {
    let server = RedisServer::start();
    let bus = RedisBus::new(&RedisConfig::from_url(&server.url()).unwrap()).unwrap();
    bus.publish(Envelope::new(
        EventType::HealthAlert,
        json!({"container": "api", "issues": ["Exited with code 1"]}),
    ))
    .await;
    bus.publish(complete("rejected", "cooldown: last action 2m ago"))
        .await;
    bus.publish(complete("failed", "did not come back within 30s"))
        .await;
    assert!(bus.flush(Duration::from_secs(10)).await);
    let now = Utc::now();
    let usage = Usage {
        cpu_percent: 12.34,
        memory_percent: 40.0,
        memory_used_bytes: 1 << 20,
        memory_limit_bytes: 1 << 30,
    };
    let containers = [
        (
            info(&"a".repeat(64), "api", ContainerState::Running),
            Some(&usage),
        ),
        (info(&"b".repeat(64), "db", ContainerState::Exited), None),
    ];
    for (c, u) in &containers {
        let stats = ContainerStats::of(c, *u, now, "node-a").to_json();
        bus.put_stats(&c.name, "node-a", stats).await.unwrap();
        bus.put_state(&ContainerStateKey::of(c, *u, now, "node-a"))
            .await
            .unwrap();
    }

    let mut conn = server.connection().await;
    let events: Vec<String> = conn.lrange("hemostat:events:all", 0, -1).await.unwrap();
    let mut stats = Vec::new();
    let mut state = Vec::new();
    for name in ["api", "db"] {
        let s: String = conn.get(format!("hemostat:stats:{name}")).await.unwrap();
        stats.push(s);
    }
    for id in ["a", "b"] {
        let s: String = conn
            .get(format!("hemostat:state:container:{}", id.repeat(12)))
            .await
            .unwrap();
        state.push(s);
    }
    let input = json!({"events": events, "stats": stats, "state": state}).to_string();

    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (Debian: apt-get install python3)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the consumers' reads raised:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["recent"], json!([true, true, true]), "{got}");
    assert_eq!(
        got["types"],
        json!([
            "remediation_complete",
            "remediation_complete",
            "health_alert"
        ])
    );
    assert_eq!(
        got["slack"],
        json!([
            {"status": "failed", "rejection_reason": "", "error": "did not come back within 30s",
             "analysis": "rule_based", "confident": true},
            {"status": "rejected", "rejection_reason": "cooldown: last action 2m ago", "error": "",
             "analysis": "rule_based", "confident": true},
        ])
    );
    assert_eq!(got["grid"], json!(["12.3/40.0/RUNNING", "0.0/0.0/EXITED"]));
    assert_eq!(got["state"], json!(["12.3/40.0/running", "0.0/0.0/exited"]));
    assert_eq!(
        got["naive"], "TypeError",
        "the naive form is what broke the original dashboard"
    );
}
