//! `redis+sentinel://` against real `redis-sentinel`s watching a master and its replica: the
//! bus and the operator binary follow the master through a `SENTINEL FAILOVER` switch, and
//! keep publishing, locking and writing the audit on the new master.

mod operator;
mod redis_support;
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use hemostat::adapters::redis::{RedisBus, RedisConfig};
use hemostat::bus::EventSink;
use hemostat::model::wire::{Envelope, EventType};
use hemostat::store::StateStore;
use operator::{Operator, policy_dir, policy_for_run};
use redis_support::RedisServer;
use redis_support::ha::Sentinel;
use serde_json::{Value, json};
use support::{ContainerSpec, TestRun};

const MASTER: &str = "hsmaster";

fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !ok() {
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

fn llen(server: &RedisServer, key: &str) -> usize {
    server.cli(&["LLEN", key]).trim().parse().unwrap_or(0)
}

/// A subscription to `hemostat:remediation_complete` on one server, made again when the
/// server drops it (Sentinels kill every client of the nodes they reconfigure).
struct Completions {
    client: redis::Client,
    messages: futures::stream::BoxStream<'static, redis::Msg>,
    resubscribed: usize,
}

impl Completions {
    async fn on(server: &RedisServer) -> Self {
        let client = server.client();
        let messages = Self::subscribe(&client).await;
        Self {
            client,
            messages,
            resubscribed: 0,
        }
    }

    async fn subscribe(client: &redis::Client) -> futures::stream::BoxStream<'static, redis::Msg> {
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub
            .subscribe("hemostat:remediation_complete")
            .await
            .unwrap();
        pubsub.into_on_message().boxed()
    }

    /// The next `remediation_complete` about `container` published after `since`.
    async fn after(
        &mut self,
        container: &str,
        since: chrono::DateTime<chrono::Utc>,
        log: impl Fn() -> String,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, self.messages.next())
                .await
                .unwrap_or_else(|_| panic!("no remediation_complete within 60 s; log:\n{}", log()));
            let Some(msg) = msg else {
                self.resubscribed += 1;
                self.messages = Self::subscribe(&self.client).await;
                continue;
            };
            let e: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
            let at =
                chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
            if e["data"]["container"] == container && at > since {
                return e;
            }
        }
    }
}

#[tokio::test]
async fn the_bus_and_the_operator_follow_the_master_through_a_sentinel_failover() {
    let master = RedisServer::start();
    let replica = RedisServer::start_with(
        vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port().to_string(),
        ],
        None,
    );
    wait("the replica syncs", Duration::from_secs(20), || {
        replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    let sentinels = [
        Sentinel::start(MASTER, master.port()),
        Sentinel::start(MASTER, master.port()),
    ];
    wait(
        "the sentinels see the replica",
        Duration::from_secs(20),
        || {
            sentinels.iter().all(|s| {
                s.cli(&["SENTINEL", "replicas", MASTER])
                    .contains(&replica.port().to_string())
            })
        },
    );
    let url = format!(
        "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/{MASTER}",
        sentinels[0].port(),
        sentinels[1].port()
    );
    let config = RedisConfig::from_url(&url).unwrap();
    let bus = RedisBus::new(&config).unwrap();
    bus.ping().await.unwrap();
    assert!(
        bus.try_lock("engine:e/lib", "lib", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(
        master.cli(&["GET", "hemostat:lock:engine:e/lib"]).trim(),
        "lib"
    );

    // The replica, soon the master, carries every PUBLISH of its master.
    let mut completions = Completions::on(&replica).await;

    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let body = "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n    cooldown: 1s\n    maxActions: {count: 100, per: 1h}\n    circuitBreaker: {failures: 100, within: 1h, openFor: 1h}\n    verifyWithin: 2s\n    fleetBudget: {maxActions: 100, per: 1h}\n";
    let policies = policy_dir(dir.path(), &policy_for_run("sentinel", &run.run_id, body));
    let op = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &["--redis-url", &url, "--insecure-no-auth"],
    )
    .await;
    run.spawn(
        "loop",
        ContainerSpec::sh("sleep 3; exit 3").label("role", "target"),
    )
    .await;
    let name = run.name("loop");
    let log = || op.log_text();
    let first = completions
        .after(&name, chrono::Utc::now() - chrono::Duration::hours(1), log)
        .await;
    assert_eq!(first["data"]["result"]["status"], "success", "{first}");
    let audit_before = llen(&master, "hemostat:audit");
    assert!(audit_before >= 1);

    // The switch: the Sentinels promote the replica and demote the master.
    let switched_at = chrono::Utc::now();
    let asked = Instant::now();
    let ok = sentinels[0].cli(&["SENTINEL", "FAILOVER", MASTER]);
    assert!(ok.contains("OK"), "SENTINEL FAILOVER: {ok}");
    let switch = wait(
        "the sentinels name the replica",
        Duration::from_secs(30),
        || {
            sentinels
                .iter()
                .all(|s| s.master_port(MASTER) == Some(replica.port()))
                && replica.cli(&["ROLE"]).starts_with("master")
        },
    );
    wait(
        "the old master is a replica",
        Duration::from_secs(30),
        || master.cli(&["ROLE"]).starts_with("slave"),
    );

    // The operator: two more complete remediations, their locks, budget and audit written
    // on the new master.
    for _ in 0..2 {
        let e = completions.after(&name, switched_at, log).await;
        assert_eq!(e["data"]["result"]["status"], "success", "{e}");
    }
    let followed = asked.elapsed();
    let audit_after = llen(&replica, "hemostat:audit");
    assert!(
        audit_after > audit_before,
        "no audit record reached the new master ({audit_before} → {audit_after})"
    );
    let budget: usize = replica
        .cli(&["ZCARD", "hemostat:fleet:budget:sentinel"])
        .trim()
        .parse()
        .unwrap();
    assert!(budget >= 2, "{budget}");

    // The bus made before the switch follows too: a write lands on the new master.
    bus.publish(Envelope::new(
        EventType::HealthAlert,
        json!({"container": "after-switch", "issues": ["exited"]}),
    ))
    .await;
    assert!(
        bus.flush(Duration::from_secs(20)).await,
        "the outbox is stuck"
    );
    assert!(
        replica
            .cli(&["LRANGE", "hemostat:events:health_alert", "0", "-1"])
            .contains("after-switch")
    );
    assert!(
        bus.try_lock("engine:e/after", "lib", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(
        replica.cli(&["GET", "hemostat:lock:engine:e/after"]).trim(),
        "lib"
    );
    let metrics = op.get_text("/metrics").await;
    assert!(
        metrics.contains("hemostat_redis_outage 0"),
        "{}",
        op.log_text()
    );
    eprintln!(
        "sentinel switch: {switch:?} until every sentinel named the new master; two remediations on it {followed:?} after SENTINEL FAILOVER; audit {audit_before} → {audit_after}, fleet budget {budget}; the test's own subscription was dropped by the switch {} time(s)",
        completions.resubscribed
    );
}
