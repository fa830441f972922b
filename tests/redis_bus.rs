//! The Redis bus against a real `redis-server`: wire protocol, durable stream, outbox through a restart, state store.

mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hemostat::adapters::redis::{RedisBus, RedisConfig, STREAM_KEY};
use hemostat::bus::EventSink;
use hemostat::model::audit::AuditRecord;
use hemostat::model::safety::SafetyState;
use hemostat::model::wire::{Envelope, EventType};
use hemostat::store::StateStore;
use redis::AsyncCommands;
use redis_support::RedisServer;
use serde_json::json;

fn bus(server: &RedisServer) -> RedisBus {
    RedisBus::new(&RedisConfig::from_url(&server.url()).unwrap()).unwrap()
}

fn numbered(i: usize) -> Envelope {
    Envelope::new(
        EventType::HealthAlert,
        json!({"container": "web", "issues": ["exited"], "seq": i}),
    )
}

/// `(id, [field, value, …])` of every stream entry, oldest first.
type Entries = Vec<(String, Vec<String>)>;

async fn stream_envelopes(conn: &mut redis::aio::MultiplexedConnection) -> Vec<Envelope> {
    let entries: Entries = redis::cmd("XRANGE")
        .arg(STREAM_KEY)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    entries.iter().map(|(_, f)| envelope_field(f)).collect()
}

fn envelope_field(fields: &[String]) -> Envelope {
    let at = fields
        .iter()
        .position(|f| f == "envelope")
        .expect("an envelope field");
    serde_json::from_str(&fields[at + 1]).unwrap()
}

fn sample_envelopes() -> Vec<Envelope> {
    vec![
        Envelope::new(
            EventType::HealthAlert,
            json!({"container": "api", "issues": ["High CPU: 92.5%"], "metrics": {"cpu_pct": 92.5}}),
        ),
        Envelope::new(
            EventType::RemediationNeeded,
            json!({"container": "api", "action": "restart", "reason": "CPU", "confidence": 0.9}),
        ),
        Envelope::new(
            EventType::FalseAlarm,
            json!({"container": "db", "reason": "Transient spike"}),
        ),
        Envelope::new(
            EventType::RemediationComplete,
            json!({"container": "api", "action": "restart", "node": "n1",
                   "result": {"status": "success", "action": "restart", "container": "api"}}),
        ),
    ]
}

#[tokio::test]
async fn subscribers_and_the_stream_see_every_envelope_exactly() {
    let server = RedisServer::start();
    let bus = bus(&server);
    let mut pubsub = server.client().get_async_pubsub().await.unwrap();
    pubsub.psubscribe("hemostat:*").await.unwrap();
    let mut messages = pubsub.into_on_message();

    let sent = sample_envelopes();
    for e in &sent {
        bus.publish(e.clone()).await;
    }
    assert!(bus.flush(Duration::from_secs(5)).await);
    assert_eq!(bus.delivered(), 4);

    for e in &sent {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("a message within 5 s")
            .expect("the subscription is open");
        assert_eq!(msg.get_channel_name(), e.kind().unwrap().channel());
        let payload: String = msg.get_payload().unwrap();
        assert_eq!(payload, serde_json::to_string(e).unwrap());
        let parsed: serde_json::Value = serde_json::from_str(&payload).unwrap();
        let keys: Vec<&str> = parsed
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 5);
        for k in ["timestamp", "agent", "type", "event_type", "data"] {
            assert!(keys.contains(&k), "{payload}");
        }
    }

    let mut conn = server.connection().await;
    assert_eq!(stream_envelopes(&mut conn).await, sent);

    // A consumer group reads the same envelopes, in order, with their type.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM_KEY)
        .arg("alerts")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let reply: Vec<(String, Entries)> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("alerts")
        .arg("alert-1")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(STREAM_KEY)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let read: Vec<Envelope> = reply[0].1.iter().map(|(_, f)| envelope_field(f)).collect();
    assert_eq!(read, sent);
    let types: Vec<&str> = reply[0]
        .1
        .iter()
        .map(|(_, f)| f[f.iter().position(|x| x == "type").unwrap() + 1].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "health_alert",
            "remediation_needed",
            "false_alarm",
            "remediation_complete"
        ]
    );

    // The original's lists and remediation history.
    let all: Vec<String> = conn.lrange("hemostat:events:all", 0, -1).await.unwrap();
    assert_eq!(all.len(), 4);
    let ttl: i64 = conn.ttl("hemostat:events:false_alarm").await.unwrap();
    assert!((3500..=3600).contains(&ttl), "{ttl}");
    let history: String = conn.get("hemostat:remediation:api").await.unwrap();
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history["count"], 1);
    assert_eq!(
        history["last_action"].as_str().unwrap(),
        format!("{}+00:00", &sent[3].timestamp[..19])
    );
    let per_node: String = conn.get("hemostat:node:n1:remediation:api").await.unwrap();
    assert!(per_node.contains("\"count\":1"), "{per_node}");
    let ttl: i64 = conn.ttl("hemostat:remediation:api").await.unwrap();
    assert!((3500..=3600).contains(&ttl), "{ttl}");

    assert_eq!(
        bus.recent(Some(EventType::FalseAlarm), 10).await,
        vec![sent[2].clone()]
    );
    assert_eq!(bus.recent(None, 2).await, sent[2..].to_vec());
}

#[tokio::test]
async fn only_finished_remediations_count_in_the_history() {
    let server = RedisServer::start();
    let bus = bus(&server);
    for status in ["success", "failed", "rejected", "dry_run", "failed"] {
        bus.publish(Envelope::new(
            EventType::RemediationComplete,
            json!({"container": "api", "result": {"status": status}}),
        ))
        .await;
    }
    assert!(bus.flush(Duration::from_secs(5)).await);
    let mut conn = server.connection().await;
    let history: String = conn.get("hemostat:remediation:api").await.unwrap();
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history["count"], 3);
}

#[tokio::test]
async fn events_lists_are_capped_and_stats_expire() {
    let server = RedisServer::start();
    let bus = bus(&server);
    for i in 0..250 {
        bus.publish(numbered(i)).await;
    }
    assert!(bus.flush(Duration::from_secs(10)).await);
    let mut conn = server.connection().await;
    let len: usize = conn.llen("hemostat:events:health_alert").await.unwrap();
    assert_eq!(len, 100);
    let len: usize = conn.llen("hemostat:events:all").await.unwrap();
    assert_eq!(len, 100);
    let recent = bus.recent(Some(EventType::HealthAlert), 3).await;
    let seqs: Vec<u64> = recent
        .iter()
        .map(|e| e.data["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [247, 248, 249]);

    bus.put_stats("web", "node-a", json!({"name": "web", "cpu_pct": 1.5}))
        .await
        .unwrap();
    bus.put_stats("web", "node-b", json!({"name": "web", "cpu_pct": 80.0}))
        .await
        .unwrap();
    for key in [
        "hemostat:stats:web",
        "hemostat:node:node-a:stats:web",
        "hemostat:node:node-b:stats:web",
    ] {
        let ttl: i64 = conn.ttl(key).await.unwrap();
        assert!((290..=300).contains(&ttl), "{key}: {ttl}");
    }
    let a: String = conn.get("hemostat:node:node-a:stats:web").await.unwrap();
    assert!(a.contains("1.5"), "{a}");
    let last: String = conn.get("hemostat:stats:web").await.unwrap();
    assert!(last.contains("80"), "last writer wins: {last}");
}

#[tokio::test]
async fn a_redis_restart_loses_no_envelope_and_keeps_the_order() {
    let mut server = RedisServer::start_durable();
    let bus = bus(&server);
    for i in 0..50 {
        bus.publish(numbered(i)).await;
    }
    assert!(bus.flush(Duration::from_secs(5)).await);

    server.stop();
    let publisher = Instant::now();
    for i in 50..250 {
        bus.publish(numbered(i)).await;
        if i == 150 {
            // Redis comes back in the middle of the burst.
            server.start_again();
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // publish never waited on Redis.
    assert!(publisher.elapsed() < Duration::from_secs(30));
    assert!(
        bus.flush(Duration::from_secs(30)).await,
        "outbox still holds {}",
        bus.outbox_len()
    );
    assert_eq!(bus.dropped(), 0);

    let mut conn = server.connection().await;
    let mut seqs: Vec<u64> = stream_envelopes(&mut conn)
        .await
        .iter()
        .map(|e| e.data["seq"].as_u64().unwrap())
        .collect();
    // At-least-once: a batch whose reply was lost may be there twice, right after itself.
    let total = seqs.len();
    seqs.dedup();
    println!("stream entries: {total} for 250 envelopes");
    assert_eq!(seqs, (0..250).collect::<Vec<u64>>(), "in order, none lost");
    assert!(total >= 250, "{total}");
    assert!(bus.delivered() >= 250);
}

#[tokio::test]
async fn a_full_outbox_drops_the_oldest_and_counts_it() {
    // Nobody listens on this port: Redis is down for the whole test.
    let port = redis_support::free_port();
    let config = RedisConfig::from_url(&format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .with_outbox_capacity(10);
    let bus = RedisBus::new(&config).unwrap();
    let started = Instant::now();
    for i in 0..50 {
        bus.publish(numbered(i)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "publish blocked"
    );
    assert_eq!(bus.delivered(), 0);
    assert!(bus.dropped() >= 40 - 10, "dropped {}", bus.dropped());
    assert_eq!(bus.dropped() as usize + bus.outbox_len(), 50);
    assert!(!bus.flush(Duration::from_millis(100)).await);

    // Redis being down: recent() is served from memory, the store says why it cannot answer.
    let recent = bus.recent(Some(EventType::HealthAlert), 2).await;
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[1].data["seq"], 49);
    let err = bus.safety("n/web").await.unwrap_err();
    assert_eq!(err.metric_label(), "redis");
    assert!(
        bus.try_lock("n/web", "a", Duration::from_secs(1))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_lock_has_one_holder_across_two_buses() {
    let server = RedisServer::start();
    let (a, b) = (bus(&server), bus(&server));
    let ttl = Duration::from_secs(30);
    assert!(a.try_lock("n1/web", "op-a", ttl).await.unwrap());
    assert!(!b.try_lock("n1/web", "op-b", ttl).await.unwrap());
    assert!(
        a.try_lock("n1/web", "op-a", ttl).await.unwrap(),
        "re-entrant"
    );
    assert!(b.try_lock("n2/web", "op-b", ttl).await.unwrap(), "per node");
    b.unlock("n1/web", "op-b").await.unwrap();
    assert!(!b.try_lock("n1/web", "op-b", ttl).await.unwrap());
    a.unlock("n1/web", "op-a").await.unwrap();
    assert!(
        b.try_lock("n1/web", "op-b", Duration::from_millis(50))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(a.try_lock("n1/web", "op-a", ttl).await.unwrap(), "expired");

    // Two tasks race for the same lock: exactly one wins.
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut winners = 0;
    for round in 0..20 {
        let key = format!("n1/race-{round}");
        let (ka, kb) = (key.clone(), key);
        let (a2, b2) = (Arc::clone(&a), Arc::clone(&b));
        let ta = tokio::spawn(async move { a2.try_lock(&ka, "op-a", ttl).await.unwrap() });
        let tb = tokio::spawn(async move { b2.try_lock(&kb, "op-b", ttl).await.unwrap() });
        let (wa, wb) = (ta.await.unwrap(), tb.await.unwrap());
        assert!(wa ^ wb, "round {round}: {wa} {wb}");
        winners += 1;
    }
    assert_eq!(winners, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_safety_updates_lose_nothing() {
    let server = RedisServer::start();
    let buses = [Arc::new(bus(&server)), Arc::new(bus(&server))];
    let mut tasks = Vec::new();
    for (n, bus) in buses.iter().enumerate() {
        let bus = Arc::clone(bus);
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                let at = chrono::Utc::now();
                bus.update_safety("n1/web", &mut |s: &mut SafetyState| {
                    s.failures.push(at);
                    let _ = (n, i);
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let state = buses[0].safety("n1/web").await.unwrap();
    assert_eq!(state.failures.len(), 200);
    assert_eq!(
        buses[1].safety("n1/other").await.unwrap(),
        SafetyState::default()
    );

    let mut conn = server.connection().await;
    let raw: String = conn.get("hemostat:safety:n1/web").await.unwrap();
    let parsed: SafetyState = serde_json::from_str(&raw).unwrap();
    assert_eq!(parsed, state);
    let ttl: i64 = conn.ttl("hemostat:safety:n1/web").await.unwrap();
    assert_eq!(ttl, -1, "safety state never expires");
}

/// A corrupt safety state is neither an error that blocks the container for good nor a reset
/// that forgets its actions: it is rebuilt from the audit trail and replaced.
#[tokio::test]
async fn a_corrupt_safety_state_is_rebuilt_from_the_audit_trail_not_a_reset_nor_a_block() {
    let server = RedisServer::start();
    let bus = bus(&server);
    let mut conn = server.connection().await;
    let started = chrono::Utc::now() - chrono::Duration::seconds(30);
    bus.append_audit(AuditRecord {
        action_started_at: Some(started),
        ..audit("d-before")
    })
    .await
    .unwrap();
    let _: () = conn
        .set("hemostat:safety:n1/web", "{not json")
        .await
        .unwrap();
    let state = bus.safety("n1/web").await.expect("rebuilt, not an error");
    assert_eq!(state.actions.len(), 1, "{state:?}");
    assert_eq!(state.actions[0].at, started, "the cooldown counts from it");
    let updated = bus
        .update_safety("n1/web", &mut |s| s.failures.push(chrono::Utc::now()))
        .await
        .expect("an update goes on");
    assert_eq!(updated.actions.len(), 1);
    let raw: String = conn.get("hemostat:safety:n1/web").await.unwrap();
    assert_eq!(serde_json::from_str::<SafetyState>(&raw).unwrap(), updated);
}

fn audit(id: &str) -> AuditRecord {
    redis_support::audit_record(id, "restarted")
}

#[tokio::test]
async fn the_audit_trail_is_capped_and_read_newest_last() {
    let server = RedisServer::start();
    let bus = bus(&server);
    for i in 0..1005 {
        bus.append_audit(audit(&format!("d{i}"))).await.unwrap();
    }
    let tail = bus.audit_tail(3).await.unwrap();
    let ids: Vec<&str> = tail.iter().map(|r| r.decision_id.as_str()).collect();
    assert_eq!(ids, ["d1002", "d1003", "d1004"]);
    assert_eq!(bus.audit_tail(5000).await.unwrap().len(), 1000);
    assert!(bus.audit_tail(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_audit_record_delivered_twice_is_kept_once() {
    let server = RedisServer::start();
    let bus = bus(&server);
    let record = audit("d1");
    bus.append_audit(record.clone()).await.unwrap();
    bus.append_audit(audit("d2")).await.unwrap();
    // The retry of d1 after a partition healed: identical, so not a second action.
    bus.append_audit(record.clone()).await.unwrap();
    let ids: Vec<String> = bus
        .audit_tail(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.decision_id)
        .collect();
    assert_eq!(ids, ["d1", "d2"]);
    // A different record of the same decision (another outcome) is kept.
    let mut failed = record;
    failed.status = "failed".into();
    bus.append_audit(failed).await.unwrap();
    assert_eq!(bus.audit_tail(10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn the_state_store_works_again_after_a_restart() {
    let mut server = RedisServer::start_durable();
    let bus = bus(&server);
    bus.update_safety("n1/web", &mut |s| s.failures.push(chrono::Utc::now()))
        .await
        .unwrap();
    server.restart();
    // The first command after the restart meets a dead connection; it is retried once.
    let state = bus.safety("n1/web").await.unwrap();
    assert_eq!(state.failures.len(), 1);
    assert!(
        bus.try_lock("n1/web", "a", Duration::from_secs(5))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_password_protected_server_is_reached_and_the_password_never_shows() {
    let server = RedisServer::start_with_password("t0p-s3cret-pw");
    let config = RedisConfig::from_parts(
        None,
        Some("127.0.0.1".into()),
        Some(server.port()),
        Some("t0p-s3cret-pw".into()),
    )
    .unwrap()
    .unwrap();
    let bus = RedisBus::new(&config).unwrap();
    bus.ping().await.unwrap();
    for shown in [
        format!("{config}"),
        format!("{config:?}"),
        format!("{bus:?}"),
        format!("{:?}", bus.config()),
    ] {
        assert!(!shown.contains("t0p-s3cret-pw"), "{shown}");
    }
    let wrong = RedisConfig::from_parts(
        None,
        Some("127.0.0.1".into()),
        Some(server.port()),
        Some("wr0ng-pw".into()),
    )
    .unwrap()
    .unwrap();
    let err = RedisBus::new(&wrong).unwrap().ping().await.unwrap_err();
    assert!(!err.to_string().contains("wr0ng-pw"), "{err}");
    assert!(!format!("{err:?}").contains("wr0ng-pw"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_throughput() {
    let server = RedisServer::start();
    let n = 20_000;
    // Room for the whole burst: this measures Redis delivery, not the overflow policy.
    let config = RedisConfig::from_url(&server.url())
        .unwrap()
        .with_outbox_capacity(n);
    let bus = RedisBus::new(&config).unwrap();
    let envelopes: Vec<Envelope> = (0..n).map(numbered).collect();
    let started = Instant::now();
    for e in envelopes {
        bus.publish(e).await;
    }
    let enqueued = started.elapsed();
    assert!(bus.flush(Duration::from_secs(120)).await);
    let total = started.elapsed();
    assert_eq!(bus.dropped(), 0);
    assert_eq!(bus.delivered(), n as u64);
    println!(
        "redis publish throughput: {n} envelopes enqueued in {enqueued:?}, delivered in {total:?} = {:.0} envelopes/s",
        n as f64 / total.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_budget_holds_across_two_nodes_racing() {
    let server = RedisServer::start();
    let (a, b) = (Arc::new(bus(&server)), Arc::new(bus(&server)));
    let per = Duration::from_secs(3600);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let node = if i % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        tasks.push(tokio::spawn(async move {
            node.take_fleet_budget("web-api", 3, per, &format!("d{i}"))
                .await
                .unwrap()
        }));
    }
    let mut taken = 0;
    for t in tasks {
        taken += usize::from(t.await.unwrap());
    }
    assert_eq!(taken, 3, "exactly the budget is taken across both nodes");
    assert!(
        a.take_fleet_budget("other", 1, per, "x").await.unwrap(),
        "budgets are per policy"
    );
    // A short window frees the budget again.
    assert!(
        a.take_fleet_budget("short", 1, Duration::from_millis(100), "s1")
            .await
            .unwrap()
    );
    assert!(
        !b.take_fleet_budget("short", 1, Duration::from_millis(100), "s2")
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        b.take_fleet_budget("short", 1, Duration::from_millis(100), "s3")
            .await
            .unwrap()
    );
}
