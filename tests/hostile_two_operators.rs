//! Two operators on one engine that call themselves by different `--node-name`s, sharing one
//! real `redis-server`: a crash is repaired once, never by both (the in-flight lock is keyed
//! by the engine's own ID and the container, not by the node name).

mod operator;
mod redis_support;
mod support;

use operator::{Operator, policy_dir, policy_for_run};
use redis_support::RedisServer;
use serde_json::Value;
use support::{ContainerSpec, TestRun};

const CRASH_ONCE: &str =
    "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep 1; exit 3";

#[tokio::test]
async fn two_operators_with_different_node_names_on_one_engine_never_both_act() {
    let server = RedisServer::start();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    verifyWithin: 10s\n";
    let policies = policy_dir(dir.path(), &policy_for_run("two", &run.run_id, policy));
    let url = server.url();
    let a = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("a"),
        &["--node-name", "alpha", "--redis-url", &url],
    )
    .await;
    let b = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("b"),
        &["--node-name", "beta", "--redis-url", &url],
    )
    .await;
    run.spawn(
        "crash",
        ContainerSpec::sh(CRASH_ONCE).label("role", "target"),
    )
    .await;
    let name = run.name("crash");
    a.wait_audit(&name, 40, "the crash is repaired", |r| {
        r["action"] == "restart" && r["status"] == "success"
    })
    .await;
    // Long enough for the other operator's retry (in-flight refusals retry after 5 s).
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    let restarts = |records: Vec<Value>| {
        records
            .into_iter()
            .filter(|r| r["action"] == "restart" && r["status"] == "success")
            .collect::<Vec<_>>()
    };
    let seen_by_a = restarts(a.audit_for(&name).await);
    let seen_by_b = restarts(b.audit_for(&name).await);
    assert_eq!(
        seen_by_a.len(),
        1,
        "one restart in the shared audit: {seen_by_a:#?}"
    );
    assert_eq!(seen_by_a, seen_by_b, "both read the same shared audit");
}
