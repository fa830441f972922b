//! Staged fault: two replicas of the operator (same node name, one shared `redis-server`) on one
//! engine while three containers crash-loop: every failure is repaired by exactly one of them.
//! The engine's own events show it: per container, starts and crashes alternate (never two
//! restarts for one crash, never a restart of a container already brought back), and the
//! shared audit has exactly `maxActions` restarts per container. Three more containers crash
//! once: each is restarted once and its repair is on record as succeeded (the replica that
//! lost the race does not count the repair in flight as a failed one).

mod operator;
mod redis_support;
mod support;

use std::time::{Duration, Instant};

use operator::{Operator, policy_dir, policy_for_run};
use redis_support::RedisServer;
use serde_json::Value;
use support::{ContainerSpec, TestRun, wait_until};

const MAX_ACTIONS: usize = 3;
const CONTAINERS: usize = 3;

fn acted(audit: &[Value], name: &str) -> Vec<Value> {
    audit
        .iter()
        .filter(|r| r["container"] == name && r["action"] == "restart" && r["status"] != "rejected")
        .cloned()
        .collect()
}

#[tokio::test]
async fn two_replicas_on_one_engine_never_act_twice_on_one_failure() {
    let started = Instant::now();
    let redis = RedisServer::start();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "  probes:\n    exit: {{nonZeroOnly: true}}\n  remediation:\n    actions: [restart]\n    cooldown: 1s\n    maxActions: {{count: {MAX_ACTIONS}, per: 10m}}\n    circuitBreaker: {{failures: 100, within: 10m, openFor: 10m}}\n    verifyWithin: 5s\n"
    );
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("replicas", &run.run_id, &policy),
    );
    let url = redis.url();
    // Replicas: same node name (tests/operator's test-node), own state dirs, one Redis.
    let a = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("a"),
        &["--redis-url", &url],
    )
    .await;
    let b = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("b"),
        &["--redis-url", &url],
    )
    .await;
    let events = run.follow_events();
    let mut targets = Vec::new();
    for i in 0..CONTAINERS {
        let suffix = format!("loop-{i}");
        // Crashes 3 s after every start (1 s apart, so the three loops are out of phase).
        let id = run
            .spawn(
                &suffix,
                ContainerSpec::sh(&format!("sleep {}; exit 1", 3 + i)).label("role", "target"),
            )
            .await;
        targets.push((run.name(&suffix), id));
    }
    // And three that crash once and stay repaired.
    let mut once = Vec::new();
    for i in 0..CONTAINERS {
        let suffix = format!("once-{i}");
        let id = run
            .spawn(
                &suffix,
                ContainerSpec::sh(&format!(
                    "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep {}; exit 3",
                    2 + i
                ))
                .label("role", "target"),
            )
            .await;
        once.push((run.name(&suffix), id));
    }
    wait_until(
        Duration::from_secs(90),
        "every loop has reached its maxActions and been refused",
        || async {
            let audit = a.audit().await;
            targets.iter().all(|(name, _)| {
                audit
                    .iter()
                    .any(|r| r["container"] == name.as_str() && r["gate"] == "max_actions")
            })
        },
    )
    .await;
    // Time for a late duplicate to show (an in-flight refusal retries after 5 s).
    tokio::time::sleep(Duration::from_secs(8)).await;

    let (audit_a, audit_b) = (a.audit().await, b.audit().await);
    for (name, id) in &targets {
        let events = events.of(id);
        let sequence: Vec<&str> = events
            .iter()
            .filter(|(action, _)| action == "start" || action == "die")
            .map(|(action, _)| action.as_str())
            .collect();
        let expected: Vec<&str> = ["start", "die"]
            .iter()
            .copied()
            .cycle()
            .take(2 * (MAX_ACTIONS + 1))
            .collect();
        assert_eq!(
            sequence, expected,
            "{name}: one start per crash, {MAX_ACTIONS} restarts: {events:?}"
        );
        for (action, code) in &events {
            if action == "die" {
                assert_eq!(
                    code, "1",
                    "{name}: only crashes, no restart of a running container: {events:?}"
                );
            }
        }
        let restarts = acted(&audit_a, name);
        assert_eq!(restarts.len(), MAX_ACTIONS, "{name}: {audit_a:#?}");
        assert!(
            restarts.iter().all(|r| r["status"] == "success"),
            "{restarts:#?}"
        );
        assert_eq!(
            restarts,
            acted(&audit_b, name),
            "{name}: both replicas read one shared audit"
        );
        let mut decisions: Vec<&str> = restarts
            .iter()
            .map(|r| r["decision_id"].as_str().unwrap())
            .collect();
        decisions.sort_unstable();
        decisions.dedup();
        assert_eq!(
            decisions.len(),
            MAX_ACTIONS,
            "{name}: one decision per failure"
        );
    }
    let mut conn = redis.connection().await;
    for (name, id) in &once {
        assert_eq!(
            events.starts(id),
            2,
            "{name}: one start and one repair: {:?}",
            events.of(id)
        );
        let restarts = acted(&audit_a, name);
        assert_eq!(restarts.len(), 1, "{name}: {audit_a:#?}");
        assert_eq!(restarts[0]["status"], "success", "{restarts:#?}");
        // The other replica, seeing the same crash while the repair ran, did not take the
        // repair in flight for a failed one.
        let state: String = redis::cmd("GET")
            .arg(format!("hemostat:safety:test-node/{name}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let state: Value = serde_json::from_str(&state).unwrap();
        let outcomes: Vec<&str> = state["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(outcomes, ["succeeded"], "{name}: {state}");
        assert_eq!(state["failures"], serde_json::json!([]), "{name}: {state}");
    }
    let refused_in_flight = audit_a.iter().filter(|r| r["gate"] == "in_flight").count();
    eprintln!(
        "in-flight refusals (the other replica's attempts): {refused_in_flight}; wall time {:?}",
        started.elapsed()
    );
}
