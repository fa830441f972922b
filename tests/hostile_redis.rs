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
use hemostat::bus::{Envelope, EventSink, EventType};
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
    // A junk safety state is never taken for an empty one (cooldowns would be forgotten): an
    // error, reported (once per key); listings show the container without it (src/http/api.rs).
    let before = hemostat::store::BAD_VALUES.get();
    assert!(bus.safety("n/web").await.is_err());
    assert!(bus.safety("n/web").await.is_err());
    assert!(hemostat::store::BAD_VALUES.get() > before, "reported");
}
