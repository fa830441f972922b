//! End to end: remediation requests from other tools (`--accept-external-requests`) with the operator binary, the real engine and a real redis-server.

mod operator;
mod redis_support;
mod support;

use std::time::Duration;

use operator::{Operator, policy_dir, policy_for_run};
use redis_support::RedisServer;
use serde_json::{Value, json};
use support::{ContainerSpec, TestRun, wait_until};

const CHANNEL: &str = "hemostat:remediation_needed";

const POLICY: &str = "  probes:\n    exit: {}\n  remediation:\n    actions: [restart, exec]\n    exec:\n      allowed:\n        - [\"true\"]\n    cooldown: 1s\n    stopTimeout: 1s\n    minConfidence: 0.7\n";

fn request(container: &str, action: &str, extra: Value) -> Vec<u8> {
    let mut data = json!({
        "container": container,
        "action": action,
        "reason": "custom analyzer says so",
        "confidence": 0.9,
    });
    if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
        data.extend(extra.clone());
    }
    json!({
        "timestamp": "2026-11-23T10:00:00.000000",
        "agent": "custom-analyzer",
        "type": "remediation_needed",
        "data": data,
    })
    .to_string()
    .into_bytes()
}

async fn publish(redis: &RedisServer, payload: &[u8]) -> i64 {
    let mut conn = redis.connection().await;
    redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(payload)
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn subscribers(redis: &RedisServer) -> i64 {
    let mut conn = redis.connection().await;
    let reply: Vec<redis::Value> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(CHANNEL)
        .query_async(&mut conn)
        .await
        .unwrap();
    match reply.get(1) {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("unexpected NUMSUB reply {other:?}"),
    }
}

async fn metrics(op: &Operator) -> String {
    reqwest::get(format!("{}/metrics", op.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn external(text: &str, result: &str) -> f64 {
    series(
        text,
        &format!(r#"hemostat_external_requests_total{{result="{result}"}}"#),
    )
}

fn started_at(run: &TestRun, id: &str) -> String {
    run.docker_cli(&["inspect", "-f", "{{.State.StartedAt}}", id])
}

async fn start(
    dir: &std::path::Path,
    run: &TestRun,
    redis: &RedisServer,
    accept: bool,
) -> Operator {
    let policies = policy_dir(dir, &policy_for_run("external", &run.run_id, POLICY));
    let url = redis.url();
    let mut extra = vec!["--redis-url", url.as_str()];
    if accept {
        extra.push("--accept-external-requests");
    }
    Operator::start(&policies, &run.label, &dir.join("state"), &extra).await
}

#[tokio::test]
async fn hostile_requests_are_refused_and_counted_and_a_valid_one_restarts_a_governed_container() {
    let redis = RedisServer::start();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let web_id = run
        .spawn("web", ContainerSpec::sleeper().label("role", "target"))
        .await;
    let other_id = run.spawn("other", ContainerSpec::sleeper()).await;
    let (web, other) = (run.name("web"), run.name("other"));
    let web_started = started_at(&run, &web_id);
    let other_started = started_at(&run, &other_id);
    let op = start(dir.path(), &run, &redis, true).await;
    wait_until(
        Duration::from_secs(10),
        "the operator subscribes to remediation requests",
        || async { subscribers(&redis).await >= 1 },
    )
    .await;

    let huge = request(&web, "restart", json!({"reason": "x".repeat(100 * 1024)}));
    assert!(huge.len() >= 100 * 1024);
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("unknown_action", request(&web, "delete", json!({}))),
        (
            "exec_not_allowed",
            request(&web, "exec", json!({"command": ["sh", "-c", "kill 1"]})),
        ),
        ("not_governed", request(&other, "restart", json!({}))),
        ("too_large", huge),
        ("not_json", vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, b'{']),
        ("action_not_allowed", request(&web, "stop", json!({}))),
        (
            "low_confidence",
            request(&web, "restart", json!({"confidence": 0.2})),
        ),
    ];
    for (_, payload) in &hostile {
        assert_eq!(publish(&redis, payload).await, 1, "one subscriber");
    }
    wait_until(
        Duration::from_secs(10),
        "every hostile request is counted as refused",
        || async {
            let text = metrics(&op).await;
            hostile
                .iter()
                .all(|(reason, _)| external(&text, &format!("refused_{reason}")) == 1.0)
        },
    )
    .await;
    let text = metrics(&op).await;
    assert_eq!(external(&text, "accepted"), 0.0, "{text}");

    // Announced and audited where the container name is known; nothing was touched.
    let audit = op.audit_for(&web).await;
    let refused: Vec<&Value> = audit
        .iter()
        .filter(|r| r["gate"] == "external_request")
        .collect();
    // unknown action, unlisted exec, stop not allowed, low confidence (the oversized and the
    // garbage payloads are refused unread: no container name to announce).
    assert_eq!(refused.len(), 4, "{audit:#?}");
    assert!(refused.iter().all(|r| r["status"] == "rejected"));
    assert!(
        refused
            .iter()
            .any(|r| r["details"].as_str().unwrap().contains("exec_not_allowed")),
        "{refused:#?}"
    );
    assert!(
        !audit.iter().any(|r| r["status"] == "success"),
        "{audit:#?}"
    );
    let other_audit = op.audit_for(&other).await;
    assert_eq!(other_audit.len(), 1, "{other_audit:#?}");
    assert_eq!(other_audit[0]["gate"], "external_request");
    let complete = op.decisions("remediation_complete", &web).await;
    assert!(
        complete
            .iter()
            .any(|e| e["data"]["gate"] == "external_request"
                && e["data"]["result"]["status"] == "rejected"
                && e["data"]["refusal"] == "unknown_action"),
        "{complete:#?}"
    );
    assert_eq!(started_at(&run, &web_id), web_started);
    assert_eq!(started_at(&run, &other_id), other_started);
    let log = op.log_text();
    assert!(
        log.contains("external remediation request refused"),
        "{log}"
    );
    assert!(!log.contains("xxxxxxxxxx"), "the payload is never logged");

    // A valid request goes through the responder and every gate, and restarts the container.
    assert_eq!(
        publish(&redis, &request(&web, "restart", json!({}))).await,
        1
    );
    wait_until(
        Duration::from_secs(30),
        "the external restart succeeds",
        || async {
            op.audit_for(&web)
                .await
                .iter()
                .any(|r| r["status"] == "success" && r["action"] == "restart")
        },
    )
    .await;
    assert_ne!(started_at(&run, &web_id), web_started, "restarted");
    assert_eq!(
        run.docker_cli(&["inspect", "-f", "{{.State.Status}}", &web_id]),
        "running"
    );
    let complete = op.decisions("remediation_complete", &web).await;
    let success = complete
        .iter()
        .find(|e| e["data"]["result"]["status"] == "success")
        .unwrap_or_else(|| panic!("{complete:#?}"));
    assert_eq!(success["data"]["analysis_method"], "external");
    assert!(
        success["data"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("external request from custom-analyzer"),
        "{success}"
    );
    let text = metrics(&op).await;
    assert_eq!(external(&text, "accepted"), 1.0, "{text}");

    // Two back-to-back requests: the safety gates (cooldown or the in-flight lock) hold the
    // second one.
    let before = op
        .audit_for(&web)
        .await
        .iter()
        .filter(|r| r["status"] == "success")
        .count();
    publish(&redis, &request(&web, "restart", json!({}))).await;
    publish(&redis, &request(&web, "restart", json!({}))).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let complete = op.decisions("remediation_complete", &web).await;
        let held = complete.iter().any(|e| {
            e["data"]["analysis_method"] == "external"
                && e["data"]["result"]["status"] == "rejected"
                && (e["data"]["gate"] == "cooldown" || e["data"]["gate"] == "in_flight")
        });
        if held {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second of two back-to-back requests is not held by a gate: {complete:#?}\nlog:\n{}",
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = op.audit_for(&web).await;
    let successes = after.iter().filter(|r| r["status"] == "success").count();
    assert!(successes <= before + 1, "{after:#?}");
    assert_eq!(started_at(&run, &other_id), other_started, "never touched");
}

#[tokio::test]
async fn without_the_flag_a_valid_external_request_is_ignored() {
    let redis = RedisServer::start();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let web_id = run
        .spawn("web", ContainerSpec::sleeper().label("role", "target"))
        .await;
    let web = run.name("web");
    let web_started = started_at(&run, &web_id);
    let op = start(dir.path(), &run, &redis, false).await;
    // Give a subscriber, were there one, the time to subscribe.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(subscribers(&redis).await, 0, "nobody listens");
    assert_eq!(
        publish(&redis, &request(&web, "restart", json!({}))).await,
        0
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(op.audit_for(&web).await.is_empty());
    assert_eq!(started_at(&run, &web_id), web_started);
    let text = metrics(&op).await;
    assert_eq!(external(&text, "accepted"), 0.0, "{text}");
    assert!(
        !op.log_text()
            .contains("accepting external remediation requests"),
        "{}",
        op.log_text()
    );
}
