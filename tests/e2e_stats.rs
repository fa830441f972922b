//! `hemostat:stats:<container>` (TTL 300 s) exists for every governed container, running or not, even under a policy without a resource probe; the dashboard's usage history covers them too.

mod operator;
mod redis_support;
mod support;

use std::time::Duration;

use operator::{Operator, policy_dir, policy_for_run};
use redis_support::RedisServer;
use serde_json::Value;
use support::{ContainerSpec, TestRun, wait_for};

/// No cpu, memory or leak probe: before, such containers were never sampled.
const POLICY: &str = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n";

async fn stats(conn: &mut redis::aio::MultiplexedConnection, name: &str) -> Option<(Value, i64)> {
    let key = format!("hemostat:stats:{name}");
    let raw: Option<String> = redis::cmd("GET").arg(&key).query_async(conn).await.unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(conn).await.unwrap();
    Some((serde_json::from_str(&raw?).unwrap(), ttl))
}

#[tokio::test]
async fn every_governed_container_has_its_stats_key_with_its_status() {
    let redis = RedisServer::start();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(dir.path(), &policy_for_run("stats", &run.run_id, POLICY));
    let op = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &["--redis-url", &redis.url()],
    )
    .await;
    run.spawn(
        "up",
        ContainerSpec::sleeper()
            .label("role", "target")
            .memory(64 << 20),
    )
    .await;
    // Exits 0 at once: governed, not running, never repaired (nonZeroOnly).
    run.spawn("done", ContainerSpec::sh("exit 0").label("role", "target"))
        .await;
    // Not selected by the policy.
    run.spawn("other", ContainerSpec::sleeper().label("role", "bystander"))
        .await;
    let (up, done, other) = (run.name("up"), run.name("done"), run.name("other"));
    let mut conn = redis.connection().await;

    let (running, ttl) = wait_for(
        Duration::from_secs(20),
        "stats of the running container",
        || {
            let mut conn = conn.clone();
            let up = up.clone();
            async move {
                stats(&mut conn, &up)
                    .await
                    .filter(|(s, _)| s["memory_pct"].as_f64().is_some_and(|m| m > 0.0))
            }
        },
    )
    .await;
    assert_eq!(running["status"], "running", "{running}");
    assert_eq!(running["name"], up.as_str());
    assert_eq!(running["node"], "test-node");
    let mem = running["memory_pct"].as_f64().unwrap();
    assert!(mem > 0.0 && mem < 50.0, "{running}");
    assert!(ttl > 0 && ttl <= 300, "TTL {ttl}");

    let (exited, ttl) = wait_for(
        Duration::from_secs(20),
        "stats of the exited container",
        || {
            let mut conn = conn.clone();
            let done = done.clone();
            async move { stats(&mut conn, &done).await }
        },
    )
    .await;
    assert_eq!(exited["status"], "exited", "{exited}");
    assert_eq!(exited["cpu_pct"], 0.0, "{exited}");
    assert_eq!(exited["memory_pct"], 0.0, "{exited}");
    assert!(ttl > 0 && ttl <= 300, "TTL {ttl}");
    // The per-node copy, so two hosts with a container of the same name do not collide.
    let node_copy: Option<String> = redis::cmd("GET")
        .arg(format!("hemostat:node:test-node:stats:{up}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(node_copy.is_some());

    // Several passes later the ungoverned one still has none, and the dashboard's usage
    // history has the running governed one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        stats(&mut conn, &other).await.is_none(),
        "an ungoverned container got stats"
    );
    let usage = op.get("/api/v1/usage").await;
    assert!(
        usage["containers"][&up]["memory"]
            .as_array()
            .is_some_and(|h| !h.is_empty()),
        "{usage}"
    );
    drop(op);
    run.cleanup();
}
