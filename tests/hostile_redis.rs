//! Garbage written straight into Redis keys against a real `redis-server`: it is refused,
//! reported and escaped, never a reason to act twice, duplicate or storm.

mod operator;
mod redis_support;
mod support;

use std::process::Command;

use redis_support::RedisServer;

const EVIL: &str = "evil\u{1b}[31m\nFORGED level=ERROR";

fn policy(name: &str) -> String {
    format!(
        "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {{app: web}}\n  probes:\n    exit: {{}}\n"
    )
}

#[tokio::test]
async fn control_characters_in_a_stored_policy_name_are_refused_and_escaped_on_output() {
    let server = RedisServer::start();
    let mut conn = server.connection().await;
    let _: () = redis::cmd("HSET")
        .arg("hemostat:policies")
        .arg(EVIL)
        .arg(policy("evil"))
        .arg("good")
        .arg(policy("good"))
        .query_async(&mut conn)
        .await
        .unwrap();

    let refused =
        hemostat::adapters::redis::policies::validate_stored(EVIL, policy("evil").as_bytes())
            .expect_err("a field with control characters is no policy name");
    assert!(!format!("{refused:?}").contains('\u{1b}'), "{refused:?}");

    for output in ["table", "json", "yaml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_hemostat"))
            .args(["get", "policies", "-o", output])
            .env("REDIS_URL", server.url())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "raw escape printed (-o {output}): {text:?}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("FORGED")),
            "forged line (-o {output}): {text:?}"
        );
        assert!(text.contains("good"), "{text}");
        if output == "table" {
            assert!(text.contains(r"evil\u{1b}[31m\nFORGED"), "{text}");
        }
    }
}

/// The password never has to be on the command line (`ps` shows it to every user): from
/// `--redis-url-file` or `REDIS_PASSWORD_FILE` the operator connects; on the command line it
/// is warned about.
#[tokio::test]
async fn the_redis_password_comes_from_a_file_and_on_the_command_line_is_warned_about() {
    let server = RedisServer::start_with_password("s3cret-pw");
    let run = support::TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = operator::policy_dir(
        dir.path(),
        &operator::policy_for_run("pw", &run.run_id, "  probes:\n    exit: {}\n"),
    );
    let url_file = dir.path().join("redis-url");
    std::fs::write(&url_file, format!("{}\n", server.url())).unwrap();
    let pw_file = dir.path().join("redis-password");
    std::fs::write(&pw_file, "s3cret-pw\n").unwrap();
    let without_pw = format!("redis://127.0.0.1:{}/0", server.port());
    let connected = "shared state and decisions go to Redis";
    let warning = "a Redis password is on the command line";

    let from_url_file = operator::Operator::start(
        &policies,
        &run.label,
        &dir.path().join("s1"),
        &["--redis-url-file", url_file.to_str().unwrap()],
    )
    .await;
    let log = from_url_file.log_text();
    assert!(log.contains(connected) && !log.contains(warning), "{log}");
    assert!(!log.contains("s3cret-pw"), "{log}");

    let from_password_file = operator::Operator::start_with_env(
        &policies,
        &run.label,
        &dir.path().join("s2"),
        &["--redis-url", &without_pw],
        &[("REDIS_PASSWORD_FILE", pw_file.to_str().unwrap())],
    )
    .await;
    let log = from_password_file.log_text();
    assert!(log.contains(connected) && !log.contains(warning), "{log}");

    let on_command_line = operator::Operator::start(
        &policies,
        &run.label,
        &dir.path().join("s3"),
        &["--redis-url", &server.url()],
    )
    .await;
    let log = on_command_line.log_text();
    assert!(log.contains(connected) && log.contains(warning), "{log}");
    assert!(!log.contains("s3cret-pw"), "{log}");
}

use std::sync::Arc;
use std::time::Duration;

use hemostat::adapters::redis::{RedisBus, RedisConfig};
use hemostat::bus::EventSink;
use hemostat::model::wire::{Envelope, EventType};
use hemostat::store::StateStore;
use hemostat::store::fallback::FallbackStore;
use hemostat::store::memory::MemoryStore;

fn bus(server: &RedisServer) -> Arc<RedisBus> {
    Arc::new(RedisBus::new(&RedisConfig::from_url(&server.url()).unwrap()).unwrap())
}

/// Two operators' stores, as `run` builds them: Redis first, a local view for outages.
fn fallback(server: &RedisServer, dir: &Path) -> FallbackStore {
    FallbackStore::new(bus(server), MemoryStore::open(dir).unwrap())
}

use std::path::Path;

#[tokio::test]
async fn a_wrong_typed_lock_key_never_lets_two_operators_both_act() {
    let server = RedisServer::start();
    let mut conn = server.connection().await;
    let key = "engine-1/web";
    let _: () = redis::cmd("HSET")
        .arg(format!("hemostat:lock:{key}"))
        .arg("junk")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (fallback(&server, d1.path()), fallback(&server, d2.path()));
    let ttl = Duration::from_secs(30);
    let (took_a, took_b) = tokio::join!(a.try_lock(key, "op-a", ttl), b.try_lock(key, "op-b", ttl));
    let took = [took_a.unwrap(), took_b.unwrap()];
    assert_eq!(
        took.iter().filter(|t| **t).count(),
        1,
        "exactly one acts: {took:?}"
    );
    // And again on the next failure: still one at a time.
    assert!(
        !b.try_lock(key, "op-b", ttl).await.unwrap()
            || !a.try_lock(key, "op-a", ttl).await.unwrap()
    );
    assert!(hemostat::store::BAD_VALUES.get() >= 1);
}

#[tokio::test]
async fn a_wrong_typed_stream_key_never_publishes_an_envelope_twice() {
    let server = RedisServer::start();
    let mut conn = server.connection().await;
    let _: () = redis::cmd("SET")
        .arg("hemostat:stream:events")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut pubsub = server.client().get_async_pubsub().await.unwrap();
    pubsub.subscribe("hemostat:health_alert").await.unwrap();
    let mut messages = pubsub.into_on_message();
    let bus = bus(&server);
    for i in 0..3 {
        bus.publish(Envelope::new(
            EventType::HealthAlert,
            serde_json::json!({"container": "web", "seq": i}),
        ))
        .await;
    }
    assert!(
        bus.flush(Duration::from_secs(10)).await,
        "the outbox drains"
    );
    let mut received = 0;
    while let Ok(Some(_)) = tokio::time::timeout(
        Duration::from_secs(3),
        futures::StreamExt::next(&mut messages),
    )
    .await
    {
        received += 1;
    }
    assert_eq!(received, 3, "each envelope published once");
    assert_eq!(bus.dropped(), 0);
}

#[tokio::test]
async fn a_wrong_typed_policies_key_does_not_start_a_reconnect_storm() {
    let server = RedisServer::start();
    let mut conn = server.connection().await;
    let _: () = redis::cmd("SET")
        .arg("hemostat:policies")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let connections = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = connections(
        redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut conn)
            .await
            .unwrap(),
    );
    let registry = Arc::new(hemostat::policy::registry::PolicyRegistry::new(Vec::new()));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(hemostat::adapters::redis::policies::watch_policies(
        server.client(),
        registry,
        Vec::new(),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    shutdown.cancel();
    watcher.await.unwrap();
    let after = connections(
        redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut conn)
            .await
            .unwrap(),
    );
    assert!(after - before <= 4, "{} connections in 3 s", after - before);
}

#[tokio::test]
async fn junk_audit_entries_and_safety_keys_are_skipped_not_fatal() {
    let server = RedisServer::start();
    let mut conn = server.connection().await;
    let bus = bus(&server);
    bus.append_audit(serde_json::from_value(serde_json::json!({
        "timestamp": "2026-01-01T00:00:00Z", "node": "n", "container": "web",
        "container_id": "c", "policy": "p", "decision_id": "d", "action": "restart",
        "status": "success", "reason": "r", "details": "x", "action_started_at": "2026-01-01T00:00:00Z"
    })).unwrap())
    .await
    .unwrap();
    let _: () = redis::cmd("LPUSH")
        .arg("hemostat:audit")
        .arg("{junk")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("hemostat:safety:n/web")
        .arg("junk")
        .query_async(&mut conn)
        .await
        .unwrap();
    let tail = bus
        .audit_tail(10)
        .await
        .expect("a junk entry does not break the listing");
    assert_eq!(tail.len(), 1);
    // A junk safety state is neither a reset nor a permanent block: it is rebuilt from the
    // audit trail (the one success above), replaced in Redis, and reported once.
    let before = hemostat::store::BAD_VALUES.get();
    let state = bus.safety("n/web").await.expect("rebuilt, not an error");
    assert_eq!(state.actions.len(), 1, "{state:?}");
    assert!(hemostat::store::BAD_VALUES.get() > before, "reported");
    let stored: String = redis::cmd("GET")
        .arg("hemostat:safety:n/web")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<hemostat::model::safety::SafetyState>(&stored).unwrap(),
        state,
        "the junk was replaced"
    );
}

fn audit_record(
    container: &str,
    id: &str,
    status: &str,
    started: chrono::DateTime<chrono::Utc>,
) -> hemostat::model::audit::AuditRecord {
    serde_json::from_value(serde_json::json!({
        "timestamp": started + chrono::Duration::seconds(2), "node": "n", "container": container,
        "container_id": "c", "policy": "p", "decision_id": id, "action": "restart",
        "status": status, "reason": "exited", "details": "x", "action_started_at": started
    }))
    .unwrap()
}

/// Junk in a safety key (text or another type) never stops repairs nor forgets them: the
/// cooldown and the breaker count from the audited actions, and the key is valid again.
#[tokio::test]
async fn a_junk_safety_state_is_rebuilt_from_the_audit_trail_so_repairs_go_on_within_the_cooldown()
{
    use hemostat::model::safety::{ActionRecord, Limits, Outcome};
    let server = RedisServer::start();
    let mut conn = server.connection().await;
    let bus = bus(&server);
    let now = chrono::Utc::now();
    let ago = |s: i64| now - chrono::Duration::seconds(s);
    bus.append_audit(audit_record("api", "d1", "success", ago(120)))
        .await
        .unwrap();
    bus.append_audit(audit_record("api", "d2", "failed", ago(10)))
        .await
        .unwrap();
    bus.append_audit(audit_record("api", "d3", "rejected", ago(5)))
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("hemostat:safety:n/api")
        .arg("{\"actions\": \"junk")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("hemostat:safety:n/cache")
        .arg("junk")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let before = hemostat::store::BAD_VALUES.get();

    let web = bus.safety("n/api").await.expect("rebuilt, not an error");
    let ids: Vec<&str> = web.actions.iter().map(|a| a.decision_id.as_str()).collect();
    assert_eq!(ids, ["d1", "d2"], "the actions that ran: {web:?}");
    assert_eq!(web.failures.len(), 1, "{web:?}");
    // The cooldown counts from the last audited action, to the second.
    assert_eq!(
        web.actions.last().unwrap().at.timestamp(),
        ago(10).timestamp()
    );
    let limits = Limits {
        cooldown: Duration::from_secs(60),
        max_actions_per: Duration::from_secs(3600),
        breaker_within: Duration::from_secs(3600),
        breaker_failures: 2,
        breaker_open_for: Duration::from_secs(600),
    };
    // One more failure trips the breaker: the rebuilt failure is counted.
    let mut next = web.clone();
    next.failures.push(now);
    assert!(next.trip_if_needed(&limits, now), "{next:?}");

    // A wrong-typed key: updated in place of the junk.
    let db = bus
        .update_safety("n/cache", &mut |s| {
            s.actions.push(ActionRecord {
                decision_id: "d9".into(),
                at: now,
                action: hemostat::model::decision::ActionKind::Restart,
                finding: "exited".into(),
                outcome: Outcome::Pending,
            })
        })
        .await
        .expect("a hash in a safety key does not stop the update");
    assert_eq!(db.actions.len(), 1);
    let ty: String = redis::cmd("TYPE")
        .arg("hemostat:safety:n/cache")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ty, "string");
    assert_eq!(bus.safety("n/cache").await.unwrap(), db);
    assert_eq!(
        bus.safety("n/api").await.unwrap(),
        web,
        "replaced once, stable"
    );
    assert!(
        hemostat::store::BAD_VALUES.get() >= before + 2,
        "each key reported"
    );
}

/// Waits for /tmp/crash, removes it and exits 3: one crash per `touch`.
const CRASH_ON_DEMAND: &str =
    "while [ ! -f /tmp/crash ]; do sleep 0.1; done; rm /tmp/crash; exit 3";

/// The real operator on a real Redis holding junk in the keys it reads: the HTTP listings
/// answer with the good entries, and the container with a junk safety state is still repaired.
#[tokio::test]
async fn junk_in_redis_never_makes_the_api_fail_nor_stops_repairs() {
    let server = RedisServer::start();
    let mut conn = server.connection().await;
    let run = support::TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = operator::policy_dir(
        dir.path(),
        &operator::policy_for_run(
            "junk",
            &run.run_id,
            "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1s\n    verifyWithin: 10s\n",
        ),
    );
    let crasher = run.name("crasher");
    let hashed = run.name("hashed");
    for name in [&crasher, &hashed] {
        let _: () = redis::cmd("SET")
            .arg(format!("hemostat:safety:test-node/{name}"))
            .arg("junk{")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("DEL")
        .arg(format!("hemostat:safety:test-node/{hashed}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("hemostat:safety:test-node/{hashed}"))
        .arg("junk")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("LPUSH")
        .arg("hemostat:audit")
        .arg("{junk")
        .arg("[1, 2]")
        .query_async(&mut conn)
        .await
        .unwrap();
    let op = operator::Operator::start(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &["--redis-url", &server.url()],
    )
    .await;
    let spec = |s: support::ContainerSpec| s.label("role", "target");
    run.spawn("crasher", spec(support::ContainerSpec::sh(CRASH_ON_DEMAND)))
        .await;
    run.spawn("hashed", spec(support::ContainerSpec::sleeper()))
        .await;

    let http = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("{}{path}", op.base);
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get("/api/v1/containers").await;
        assert_eq!(status, 200, "{body}");
        let names: Vec<&str> = body
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        if names.contains(&crasher.as_str()) && names.contains(&hashed.as_str()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = get(&format!("/api/v1/containers/{hashed}")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get("/api/v1/audit?limit=1000").await;
    assert_eq!(
        (status, body.as_array().map(Vec::len)),
        (200, Some(0)),
        "{body}"
    );

    // The container whose safety key held junk is repaired, and the audit lists it.
    run.docker_cli(&["exec", &crasher, "touch", "/tmp/crash"]);
    let record = op
        .wait_audit(
            &crasher,
            30,
            "the crasher is repaired despite its junk safety key",
            |r| r["status"] == "success",
        )
        .await;
    assert_eq!(record["action"], "restart");
    let (status, body) = get("/api/v1/audit?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.as_array().unwrap().len(),
        1,
        "only the good entry: {body}"
    );
    let stored: String = redis::cmd("GET")
        .arg(format!("hemostat:safety:test-node/{crasher}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let state: hemostat::model::safety::SafetyState = serde_json::from_str(&stored)
        .unwrap_or_else(|e| panic!("the junk was replaced by a valid state: {e}: {stored}"));
    assert_eq!(state.actions.len(), 1, "{state:?}");
    let (status, body) = get(&format!("/api/v1/containers/{crasher}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["safety"]["last_action_at"].is_string(), "{body}");
    let metrics = op.get_text("/metrics").await;
    let bad: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hemostat_store_bad_values_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bad-values counter:\n{metrics}"));
    assert!(bad >= 3.0, "two safety keys and the audit list: {bad}");
    run.cleanup();
}
