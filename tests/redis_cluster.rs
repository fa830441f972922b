//! `redis+cluster://` against a real Redis Cluster the test creates (`redis-server
//! --cluster-enabled yes` nodes, `redis-cli --cluster create`): every multi-key operation
//! (the outbox's `MULTI`, the Lua scripts, `apply`/`delete`) stays in the `{hemostat}` slot,
//! pub/sub reaches every node, and the operator binary keeps publishing and locking while a
//! master is killed and its replica takes over.

mod operator;
mod redis_support;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hemostat::adapters::redis::alert_state::RedisAlertState;
use hemostat::adapters::redis::policies::PolicyRepo;
use hemostat::adapters::redis::{RedisBus, RedisConfig};
use hemostat::alert::state::AlertState;
use hemostat::bus::EventSink;
use hemostat::model::audit::AuditRecord;
use hemostat::model::wire::{Envelope, EventType};
use hemostat::store::StateStore;
use operator::{Operator, policy_dir, policy_for_run};
use redis_support::ha::RedisCluster;
use serde_json::{Value, json};
use support::{ContainerSpec, TestRun};

/// A plain (non-cluster) client on node `i`, for checks made by the test itself.
async fn node_conn(cluster: &RedisCluster, i: usize) -> redis::aio::MultiplexedConnection {
    cluster.nodes[i].connection().await
}

#[tokio::test]
async fn every_multi_key_operation_stays_in_one_slot_and_pubsub_reaches_every_node() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let cluster = RedisCluster::start(3, 0);
    let config = RedisConfig::from_url(&cluster.url()).unwrap();
    assert!(config.cluster());
    let slot = cluster.slot("{hemostat}");
    let home = cluster
        .master_of(slot)
        .expect("a master for the {hemostat} slot");
    // The original's names of one multi-key group hash to different slots: without the tag
    // a MULTI over them is refused by the cluster.
    assert_ne!(
        cluster.slot("hemostat:stats:web"),
        cluster.slot("hemostat:node:n1:stats:web")
    );
    let mut raw = redis::cluster::ClusterClient::new(vec![format!(
        "redis://127.0.0.1:{}",
        cluster.nodes[0].port()
    )])
    .unwrap()
    .get_async_connection()
    .await
    .unwrap();
    let crossed: redis::RedisResult<()> = redis::pipe()
        .atomic()
        .set("hemostat:stats:web", "1")
        .set("hemostat:node:n1:stats:web", "1")
        .query_async(&mut raw)
        .await;
    let err = crossed.expect_err("a cross-slot MULTI must be refused");
    assert_eq!(
        err.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot)
    );

    // Subscribed on a node that does not hold the slot: PUBLISH reaches it all the same.
    let other = (home + 1) % cluster.nodes.len();
    let mut pubsub = cluster.nodes[other]
        .client()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub
        .subscribe("hemostat:remediation_complete")
        .await
        .unwrap();
    let mut messages = pubsub.into_on_message();

    let bus = Arc::new(RedisBus::new(&config).unwrap());
    bus.ping().await.unwrap();
    bus.publish(Envelope::new(
        EventType::HealthAlert,
        json!({"container": "web", "issues": ["exited"]}),
    ))
    .await;
    let done = Envelope::new(
        EventType::RemediationComplete,
        json!({"container": "web", "node": "n1", "action": "restart",
               "result": {"status": "success", "container": "web"}}),
    );
    bus.publish(done).await;
    assert!(
        bus.flush(Duration::from_secs(10)).await,
        "outbox not delivered"
    );
    assert_eq!((bus.delivered(), bus.dropped()), (2, 0));
    let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("the envelope reaches a subscriber on another node")
        .unwrap();
    let payload: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(payload["data"]["container"], "web");

    bus.put_stats("web", "n1", json!({"cpu_percent": 1.0}))
        .await
        .unwrap();
    let mut keep = |_: &mut hemostat::model::safety::SafetyState| {};
    bus.update_safety("n1/web", &mut keep).await.unwrap();
    assert!(
        bus.try_lock("engine:e/web", "op-1", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(
        !bus.try_lock("engine:e/web", "op-2", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(
        bus.take_fleet_budget("p", 1, Duration::from_secs(60), "a")
            .await
            .unwrap()
    );
    assert!(
        !bus.take_fleet_budget("p", 1, Duration::from_secs(60), "b")
            .await
            .unwrap()
    );
    let record = AuditRecord {
        decision_id: "d-1".into(),
        timestamp: chrono::Utc::now(),
        node: "n1".into(),
        container: "web".into(),
        container_id: "abc".into(),
        policy: "p".into(),
        action: "restart".into(),
        status: "success".into(),
        reason: "cluster test".into(),
        details: "restarted".into(),
        action_started_at: None,
        gate: None,
        analysis_method: None,
        root_cause: None,
        fallback_reason: None,
    };
    bus.append_audit(record).await.unwrap();
    assert_eq!(bus.audit_tail(10).await.unwrap().len(), 1);
    bus.unlock("engine:e/web", "op-1").await.unwrap();

    // Everything HemoStat wrote is on the one master of the slot, under the tag.
    let mut on_home = node_conn(&cluster, home).await;
    for (key, kind) in [
        ("{hemostat}:stream:events", "stream"),
        ("{hemostat}:events:all", "list"),
        ("{hemostat}:events:health_alert", "list"),
        ("{hemostat}:remediation:web", "string"),
        ("{hemostat}:node:n1:remediation:web", "string"),
        ("{hemostat}:stats:web", "string"),
        ("{hemostat}:node:n1:stats:web", "string"),
        ("{hemostat}:safety:n1/web", "string"),
        ("{hemostat}:fleet:budget:p", "zset"),
        ("{hemostat}:audit", "list"),
    ] {
        let ty: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut on_home)
            .await
            .unwrap();
        assert_eq!(ty, kind, "{key} on the slot's master");
    }
    let remediation: String = redis::cmd("GET")
        .arg("{hemostat}:remediation:web")
        .query_async(&mut on_home)
        .await
        .unwrap();
    assert!(remediation.contains("\"count\":1"), "{remediation}");

    // The policy repository: a two-key Lua apply and a two-key MULTI delete.
    let mut repo = PolicyRepo::connect(&config).await.unwrap();
    let text = policy_for_run("clustered", "nobody", "  probes:\n    exit: {}\n");
    let applied = repo.apply("cluster.yaml", &text).await.unwrap();
    assert_eq!(applied.len(), 1);
    assert_eq!(repo.list().await.unwrap().len(), 1);
    let meta: Option<String> = redis::cmd("HGET")
        .arg("{hemostat}:policies:meta")
        .arg("clustered")
        .query_async(&mut on_home)
        .await
        .unwrap();
    assert!(meta.is_some_and(|m| m.contains("generation")));
    assert!(repo.delete("clustered").await.unwrap());
    assert!(repo.list().await.unwrap().is_empty());

    // Silences, shared by the fleet.
    let silences = RedisAlertState::from_config(&config).unwrap();
    assert!(silences.silences().await.unwrap().is_empty());
}

/// Restarted on every exit: it runs 3 s, then fails again.
const CRASH_AFTER_3S: &str = "sleep 3; exit 3";

/// `remediation_complete` envelopes seen on `messages` about `container` until `deadline`,
/// as (when seen, envelope).
async fn next_complete(
    messages: &mut (impl futures::Stream<Item = redis::Msg> + Unpin),
    container: &str,
    timeout: Duration,
    log: impl Fn() -> String,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, messages.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no remediation_complete within {timeout:?}; log:\n{}",
                    log()
                )
            })
            .expect("the subscription ended");
        let envelope: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
        if envelope["data"]["container"] == container
            || envelope["data"]["result"]["container"] == container
        {
            return envelope;
        }
    }
}

#[tokio::test]
async fn the_operator_keeps_publishing_and_locking_while_a_master_dies_and_its_replica_takes_over()
{
    let mut cluster = RedisCluster::start(3, 1);
    let slot = cluster.slot("{hemostat}");
    let home = cluster.master_of(slot).unwrap();
    // Subscribed on another master, which survives.
    let watcher = (0..cluster.nodes.len())
        .find(|&i| i != home && cluster.nodes[i].cli(&["ROLE"]).starts_with("master"))
        .expect("another master");
    let mut pubsub = cluster.nodes[watcher]
        .client()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub
        .subscribe("hemostat:remediation_complete")
        .await
        .unwrap();
    let mut messages = pubsub.into_on_message();

    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let body = "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n    cooldown: 1s\n    maxActions: {count: 100, per: 1h}\n    circuitBreaker: {failures: 100, within: 1h, openFor: 1h}\n    verifyWithin: 2s\n    fleetBudget: {maxActions: 100, per: 1h}\n";
    let policies = policy_dir(dir.path(), &policy_for_run("clustered", &run.run_id, body));
    let op = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &["--redis-url", &cluster.url(), "--insecure-no-auth"],
    )
    .await;
    run.spawn(
        "loop",
        ContainerSpec::sh(CRASH_AFTER_3S).label("role", "target"),
    )
    .await;
    let name = run.name("loop");
    let log = || op.log_text();
    let first = next_complete(&mut messages, &name, Duration::from_secs(60), log).await;
    assert_eq!(first["data"]["result"]["status"], "success", "{first}");
    let audit_before: usize = redis::cmd("LLEN")
        .arg("{hemostat}:audit")
        .query_async(&mut node_conn(&cluster, home).await)
        .await
        .unwrap();
    assert!(audit_before >= 1, "no audit record in the cluster");

    // The master holding every HemoStat key dies; a replica must take over.
    let killed = Instant::now();
    cluster.nodes[home].kill();
    let promoted = loop {
        if let Some(m) = cluster.master_of(slot).filter(|&m| m != home) {
            break m;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no replica took over the slot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let failover = killed.elapsed();
    cluster.wait_ok(Duration::from_secs(30));

    // Two more complete remediations after the failover: each took the lock, the fleet budget
    // and wrote the audit through the new master.
    let mut after = Vec::new();
    while after.len() < 2 {
        let e = next_complete(&mut messages, &name, Duration::from_secs(60), log).await;
        let at = chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
        if at.with_timezone(&chrono::Utc)
            > chrono::Utc::now() - chrono::Duration::from_std(killed.elapsed()).unwrap()
        {
            after.push(e);
        }
    }
    let first_after = killed.elapsed();
    let mut on_new = node_conn(&cluster, promoted).await;
    let audit_after: usize = redis::cmd("LLEN")
        .arg("{hemostat}:audit")
        .query_async(&mut on_new)
        .await
        .unwrap();
    assert!(
        audit_after > audit_before,
        "no audit record reached the new master ({audit_before} → {audit_after})"
    );
    let budget: usize = redis::cmd("ZCARD")
        .arg("{hemostat}:fleet:budget:clustered")
        .query_async(&mut on_new)
        .await
        .unwrap();
    assert!(
        budget >= 2,
        "the fleet budget was not counted on the new master: {budget}"
    );
    let stream: usize = redis::cmd("XLEN")
        .arg("{hemostat}:stream:events")
        .query_async(&mut on_new)
        .await
        .unwrap();
    assert!(stream > 0);
    let metrics = op.get_text("/metrics").await;
    assert!(
        metrics.contains("hemostat_redis_outage 0"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("redis"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "cluster failover: replica promoted {failover:?} after the kill; two remediations published {first_after:?} after it; audit {audit_before} → {audit_after}, fleet budget {budget}, stream {stream}"
    );
}
