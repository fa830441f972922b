//! Compatibility with the original's real consumers, against a real `redis-server`: the keys its
//! dashboard reads (names, field types, timestamp form, TTLs), the `--external-alert-agent`
//! setting beside its Alert agent, and the HTTP API over Redis reading both timestamp forms.

mod redis_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use chrono::Utc;
use hemostat::adapters::redis::{RedisBus, RedisConfig, STREAM_KEY};
use hemostat::bus::EventSink;
use hemostat::http::{ApiState, serve};
use hemostat::metrics::Metrics;
use hemostat::model::container::{ContainerInfo, ContainerState, HealthStatus, ResourceLimits};
use hemostat::model::decision::AnalysisMethod;
use hemostat::model::usage::Usage;
use hemostat::model::wire::{
    ActionResult, ContainerStateKey, ContainerStats, Envelope, EventType, RemediationComplete,
    parse_wire_timestamp,
};
use hemostat::observe::store::ObservedStore;
use hemostat::policy::registry::PolicyRegistry;
use hemostat::store::memory::MemoryStore;
use redis::AsyncCommands;
use redis_support::RedisServer;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ID: &str = "3f2a9c81d4e5b6a7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";

fn bus(server: &RedisServer, external_alert_agent: bool) -> RedisBus {
    let config = RedisConfig::from_url(&server.url())
        .unwrap()
        .with_external_alert_agent(external_alert_agent);
    RedisBus::new(&config).unwrap()
}

fn info(state: ContainerState) -> ContainerInfo {
    ContainerInfo {
        id: ID.into(),
        name: "hemostat-test-api".into(),
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
        container: "hemostat-test-api".into(),
        action: "restart".into(),
        result: ActionResult::new(status, "restart", "hemostat-test-api", details),
        dry_run: false,
        confidence: Some(0.9),
        reason: "CPU contention".into(),
        decision_id: "d-1".into(),
        analysis_method: AnalysisMethod::Rules,
        container_id: Some(ID.into()),
        policy: Some("web".into()),
        node: "node-a".into(),
        gate: None,
        refusal: None,
        gave_up: false,
        ai: Default::default(),
    })
}

/// The JSON type of a value, as the original's Python code would see it.
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

fn assert_aware_secs(ts: &Value) {
    let ts = ts.as_str().expect("a timestamp string");
    assert!(
        chrono::DateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%:z").is_ok()
            && ts.ends_with("+00:00"),
        "{ts} is not whole-second ISO-8601 with +00:00"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_the_original_dashboard_reads_have_its_fields_types_and_ttls() {
    let server = RedisServer::start();
    let bus = bus(&server, false);
    let mut conn = server.connection().await;
    let at = Utc::now();
    let usage = Usage {
        cpu_percent: 22.14,
        memory_percent: 45.2,
        memory_used_bytes: 48 << 20,
        memory_limit_bytes: 128 << 20,
    };
    for (state, usage) in [
        (ContainerState::Running, Some(&usage)),
        (ContainerState::Exited, None),
    ] {
        let c = info(state);
        let stats = ContainerStats::of(&c, usage, at, "node-a");
        bus.put_stats(&c.name, "node-a", stats.to_json())
            .await
            .unwrap();
        bus.put_state(&ContainerStateKey::of(&c, usage, at, "node-a"))
            .await
            .unwrap();

        // hemostat:stats:<name>: the documented fields plus the names the dashboard reads.
        let raw: String = conn.get("hemostat:stats:hemostat-test-api").await.unwrap();
        let v: Value = serde_json::from_str(&raw).unwrap();
        for (field, want) in [
            ("name", "str"),
            ("status", "str"),
            ("memory_pct", "float"),
            ("cpu_pct", "float"),
            ("memory_percent", "float"),
            ("cpu_percent", "float"),
            ("timestamp", "str"),
        ] {
            assert_eq!(kind(&v[field]), want, "stats {field}: {v}");
        }
        assert_eq!(v["status"], json!(state));
        assert_eq!(v["cpu_pct"], v["cpu_percent"]);
        assert_aware_secs(&v["timestamp"]);
        let ttl: i64 = conn.ttl("hemostat:stats:hemostat-test-api").await.unwrap();
        assert!((295..=300).contains(&ttl), "stats TTL {ttl}");

        // hemostat:state:container:<short id>: the original monitor's per-container state.
        let key = format!("hemostat:state:container:{}", &ID[..12]);
        let raw: String = conn.get(&key).await.unwrap();
        let v: Value = serde_json::from_str(&raw).unwrap();
        for (field, want) in [
            ("cpu_percent", "float"),
            ("memory_percent", "float"),
            ("memory_usage", "int"),
            ("memory_limit", "int"),
            ("status", "str"),
            ("name", "str"),
            ("container_id", "str"),
            ("timestamp", "str"),
        ] {
            assert_eq!(kind(&v[field]), want, "state {field}: {v}");
        }
        assert_eq!(v["container_id"], &ID[..12]);
        assert_aware_secs(&v["timestamp"]);
        let ttl: i64 = conn.ttl(&key).await.unwrap();
        assert!((295..=300).contains(&ttl), "state TTL {ttl}");
        if usage.is_some() {
            assert_eq!(v["cpu_percent"], 22.1);
            assert_eq!(v["memory_usage"], 48 << 20);
        } else {
            // A stopped container: its status with zero figures, never null (the dashboard
            // formats them with `:.1f`).
            assert_eq!(
                (v["cpu_percent"].as_f64(), v["memory_usage"].as_u64()),
                (Some(0.0), Some(0))
            );
        }
    }

    // Refusals and failures carry result.reason / result.error beside details; the lists and
    // the remediation key keep their TTLs; every timestamp has its offset.
    let rejected = complete("rejected", "cooldown: last action 2m ago");
    let failed = complete("failed", "did not come back within 30s");
    bus.publish(rejected.clone()).await;
    bus.publish(failed.clone()).await;
    assert!(bus.flush(Duration::from_secs(10)).await);
    let listed: Vec<String> = conn
        .lrange("hemostat:events:remediation_complete", 0, -1)
        .await
        .unwrap();
    let newest: Value = serde_json::from_str(&listed[0]).unwrap();
    let oldest: Value = serde_json::from_str(&listed[1]).unwrap();
    assert_eq!(
        newest["data"]["result"]["error"],
        "did not come back within 30s"
    );
    assert_eq!(
        oldest["data"]["result"]["reason"],
        "cooldown: last action 2m ago"
    );
    for e in [&newest, &oldest] {
        assert_eq!(e["event_type"], "remediation_complete");
        assert_eq!(e["data"]["event_type"], "remediation_complete");
        assert_eq!(e["data"]["analysis_method"], "rule_based");
        let ts = e["timestamp"].as_str().unwrap();
        assert!(ts.ends_with("+00:00") && ts.len() == 32, "{ts}");
    }
    for list in [
        "hemostat:events:remediation_complete",
        "hemostat:events:all",
    ] {
        let ttl: i64 = conn.ttl(list).await.unwrap();
        assert!((3595..=3600).contains(&ttl), "{list} TTL {ttl}");
    }
    let history: String = conn
        .get("hemostat:remediation:hemostat-test-api")
        .await
        .unwrap();
    let history: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history["count"], 1, "only the failure is an action taken");
    assert_aware_secs(&history["last_action"]);
    let ttl: i64 = conn
        .ttl("hemostat:remediation:hemostat-test-api")
        .await
        .unwrap();
    assert!((3595..=3600).contains(&ttl), "remediation TTL {ttl}");
}

/// What the original's Alert agent stores for each event it receives.
fn alert_agent_entry(envelope: &Value) -> String {
    json!({
        "timestamp": envelope["timestamp"],
        "agent": "alert",
        "event_type": envelope["type"],
        "data": envelope["data"],
    })
    .to_string()
}

async fn api(sink: Arc<dyn EventSink>) -> (String, CancellationToken) {
    let state = ApiState {
        ready: Arc::new(AtomicBool::new(true)),
        observed: Arc::new(ObservedStore::default()),
        sink,
        store: Arc::new(MemoryStore::ephemeral()),
        policies: Arc::new(PolicyRegistry::new(vec![])),
        metrics: Arc::new(Metrics::new()),
        node: "node-a".into(),
        events: Default::default(),
        access: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, state, shutdown.clone()));
    (format!("http://{addr}"), shutdown)
}

async fn decisions(base: &str, query: &str) -> Vec<Value> {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{base}/api/v1/decisions{query}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_the_original_alert_agent_every_event_is_listed_once() {
    let server = RedisServer::start();
    let bus = Arc::new(bus(&server, true));
    let mut conn = server.connection().await;
    let mut sub = server.client().get_async_pubsub().await.unwrap();
    sub.psubscribe("hemostat:*").await.unwrap();
    let mut messages = sub.into_on_message();

    let sent = [
        Envelope::new(EventType::HealthAlert, json!({"container": "web"})),
        Envelope::new(
            EventType::FalseAlarm,
            json!({"container": "web", "reason": "r"}),
        ),
        complete("success", "container is back"),
    ];
    for e in &sent {
        bus.publish(e.clone()).await;
    }
    assert!(bus.flush(Duration::from_secs(10)).await);

    // The original Alert agent, subscribed to the channels, fills the lists itself (it stores
    // remediation_complete and false_alarm).
    use futures::StreamExt;
    let mut seen = 0;
    while seen < sent.len() {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("every envelope is published")
            .unwrap();
        seen += 1;
        let envelope: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
        let kind = envelope["event_type"].as_str().unwrap().to_owned();
        if kind == "remediation_complete" || kind == "false_alarm" {
            let entry = alert_agent_entry(&envelope);
            let _: () = conn
                .lpush(format!("hemostat:events:{kind}"), &entry)
                .await
                .unwrap();
            let _: () = conn.lpush("hemostat:events:all", &entry).await.unwrap();
        }
    }
    let all: Vec<String> = conn.lrange("hemostat:events:all", 0, -1).await.unwrap();
    assert_eq!(
        all.len(),
        2,
        "listed once each, by the Alert agent only: {all:?}"
    );
    let complete_list: usize = conn
        .llen("hemostat:events:remediation_complete")
        .await
        .unwrap();
    assert_eq!(complete_list, 1);
    let health: bool = conn.exists("hemostat:events:health_alert").await.unwrap();
    assert!(!health, "HemoStat wrote no list");
    let stream: usize = conn.xlen(STREAM_KEY).await.unwrap();
    assert_eq!(stream, 3, "the stream still has everything");

    // HemoStat's own recent envelopes come from the stream: all of them, once, in order.
    assert_eq!(bus.recent(None, 10).await, sent.to_vec());
    assert_eq!(
        bus.recent(Some(EventType::FalseAlarm), 10).await,
        vec![sent[1].clone()]
    );
    assert_eq!(bus.recent(None, 2).await, sent[1..].to_vec());
    let (base, shutdown) = api(bus.clone()).await;
    let served = decisions(&base, "").await;
    let types: Vec<&str> = served.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["health_alert", "false_alarm", "remediation_complete"]
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_redis_serves_envelopes_in_both_timestamp_forms() {
    let server = RedisServer::start();
    let bus = Arc::new(bus(&server, false));
    let mut conn = server.connection().await;
    // Written before this change (naive, `type` only), by the original's Alert agent
    // (`event_type` only, +00:00), and now.
    let old = json!({"timestamp": "2025-11-03T10:30:45.123456", "agent": "HemoStat-Monitor",
                     "type": "health_alert", "data": {"container": "web"}});
    let original = json!({"timestamp": "2025-11-03T10:30:48.456789+00:00", "agent": "alert",
                          "event_type": "false_alarm", "data": {"container": "web", "reason": "r"}});
    for e in [&old, &original] {
        let _: () = conn
            .lpush("hemostat:events:all", e.to_string())
            .await
            .unwrap();
    }
    let now = Envelope::new(EventType::FalseAlarm, json!({"container": "web"}));
    bus.publish(now.clone()).await;
    assert!(bus.flush(Duration::from_secs(10)).await);

    let (base, shutdown) = api(bus.clone()).await;
    let served = decisions(&base, "").await;
    assert_eq!(served.len(), 3, "{served:?}");
    let times: Vec<_> = served
        .iter()
        .map(|e| parse_wire_timestamp(e["timestamp"].as_str().unwrap()).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(
        times[0].to_rfc3339(),
        "2025-11-03T10:30:45.123456+00:00",
        "naive is UTC"
    );
    for e in &served {
        assert_eq!(e["type"], e["event_type"], "{e}");
    }
    assert_eq!(served[1]["type"], "false_alarm");
    assert_eq!(served[2]["timestamp"], now.timestamp.as_str());
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_the_stream_old_envelopes_of_a_type_are_found_past_the_newest_page() {
    let server = RedisServer::start();
    let bus = bus(&server, true);
    // Three false alarms, then 1200 health alerts on top of them (more than two pages).
    for i in 0..3 {
        bus.publish(Envelope::new(
            EventType::FalseAlarm,
            json!({"container": "web", "seq": i}),
        ))
        .await;
    }
    for i in 0..1200 {
        bus.publish(Envelope::new(
            EventType::HealthAlert,
            json!({"container": "web", "seq": i}),
        ))
        .await;
    }
    assert!(bus.flush(Duration::from_secs(20)).await);
    let seqs = |v: Vec<Envelope>| -> Vec<u64> {
        v.iter().map(|e| e.data["seq"].as_u64().unwrap()).collect()
    };
    assert_eq!(
        seqs(bus.recent(Some(EventType::FalseAlarm), 10).await),
        [0, 1, 2]
    );
    assert_eq!(
        seqs(bus.recent(Some(EventType::FalseAlarm), 2).await),
        [1, 2]
    );
    assert_eq!(seqs(bus.recent(None, 3).await), [1197, 1198, 1199]);
    assert_eq!(bus.recent(None, 1000).await.len(), 1000);
    assert!(
        bus.recent(Some(EventType::RemediationNeeded), 10)
            .await
            .is_empty()
    );
}
