//! `rediss://` against a real TLS-only `redis-server` whose certificate a CA made at test time
//! signed: the bus, the policy commands and the operator binary trust it through
//! `--redis-ca-file`, and refuse it (or a bad CA file) without.

mod operator;
mod redis_support;

use std::process::Command;
use std::time::{Duration, Instant};

use hemostat::adapters::redis::{RedisBus, RedisConfig};
use hemostat::bus::EventSink;
use hemostat::model::wire::{Envelope, EventType};
use hemostat::store::StateStore;
use operator::{Operator, policy_dir, policy_for_run};
use redis_support::ha::TestCa;
use serde_json::json;

fn hemostat(args: &[&str]) -> (i32, String, String) {
    // Bounded: a refused setting must end the process, never leave it running.
    let out = Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_hemostat"))
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("REDIS_CA_FILE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_bus_the_policy_commands_and_the_operator_talk_tls_to_a_private_ca_server() {
    let ca = TestCa::new();
    let server = ca.server();
    let ca_file = ca.ca().display().to_string();
    // The certificate names 127.0.0.1 (IP) and localhost (DNS): both are checked.
    let by_ip = format!("rediss://127.0.0.1:{}/0", server.port());
    let by_name = format!("rediss://localhost:{}/0", server.port());

    let config = RedisConfig::from_url(&by_ip)
        .unwrap()
        .with_ca_file(&ca.ca())
        .unwrap();
    assert!(config.tls());
    let bus = RedisBus::new(&config).unwrap();
    bus.ping().await.expect("PING over TLS with the test CA");
    bus.publish(Envelope::new(
        EventType::HealthAlert,
        json!({"container": "tls-web", "issues": ["exited"]}),
    ))
    .await;
    assert!(bus.flush(Duration::from_secs(5)).await);
    assert!(
        bus.try_lock("engine:e/tls", "me", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert_eq!(server.cli(&["XLEN", "hemostat:stream:events"]).trim(), "1");
    assert_eq!(
        server.cli(&["GET", "hemostat:lock:engine:e/tls"]).trim(),
        "me"
    );

    // The policy commands: apply through TLS, by host name this time.
    let dir = tempfile::tempdir().unwrap();
    let applied = dir.path().join("applied.yaml");
    std::fs::write(
        &applied,
        policy_for_run("over-tls", "nobody", "  probes:\n    exit: {}\n"),
    )
    .unwrap();
    let (code, out, err) = hemostat(&[
        "apply",
        "-f",
        &applied.display().to_string(),
        "--redis-url",
        &by_name,
        "--redis-ca-file",
        &ca_file,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "healthpolicy/over-tls created");
    assert!(
        server
            .cli(&["HKEYS", "hemostat:policies"])
            .contains("over-tls")
    );

    // The operator: its policy watcher reads the applied policy over TLS.
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("from-file", "nobody", "  probes:\n    exit: {}\n"),
    );
    let op = Operator::start(
        &policies,
        "hemostat.test.run=redisha-tls-none",
        &dir.path().join("state"),
        &[
            "--redis-url",
            &by_ip,
            "--redis-ca-file",
            &ca_file,
            "--insecure-no-auth",
        ],
    )
    .await;
    let started = Instant::now();
    loop {
        let names = op.get("/api/v1/policies").await.to_string();
        if names.contains("over-tls") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the operator never enforced the policy applied over TLS: {names}\nlog:\n{}",
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = op.get_text("/metrics").await;
    assert!(
        metrics.contains("hemostat_redis_outage 0"),
        "the operator sees Redis as down over TLS:\n{}",
        op.log_text()
    );
    eprintln!(
        "operator enforced the TLS-applied policy after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unknown_ca_and_bad_ca_files_are_refused_with_clear_errors() {
    let ca = TestCa::new();
    let server = ca.server();
    let url = format!("rediss://127.0.0.1:{}/0", server.port());

    // The built-in web roots do not know the test CA: the TLS handshake is refused.
    let (code, _, err) = hemostat(&["get", "policies", "--redis-url", &url]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach Redis"), "{err}");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "the error does not say the certificate is not trusted: {err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let key_only = ca.path("ca.key").display().to_string();
    let missing = dir.path().join("missing.pem").display().to_string();
    let no_policies = tempfile::tempdir().unwrap();
    let policies_dir = no_policies.path().to_str().unwrap();
    for (args, says) in [
        (
            vec!["--redis-url", &url, "--redis-ca-file", &missing],
            "cannot read the file",
        ),
        (
            vec![
                "--redis-url",
                &url,
                "--redis-ca-file",
                empty.to_str().unwrap(),
            ],
            "no certificate in the file",
        ),
        (
            vec!["--redis-url", &url, "--redis-ca-file", &key_only],
            "no certificate in the file",
        ),
        (
            vec![
                "--redis-url",
                "redis://127.0.0.1:1/0",
                "--redis-ca-file",
                ca.ca().to_str().unwrap(),
            ],
            "does not use TLS",
        ),
    ] {
        let mut all = vec!["get", "policies"];
        all.extend(args.iter().copied());
        let (code, _, err) = hemostat(&all);
        assert_ne!(code, 0, "{all:?}");
        assert!(err.contains(says), "{all:?}: {err}");
        let mut run = vec!["run", "--policies", policies_dir];
        run.extend(args.iter().copied());
        let (code, _, err) = hemostat(&run);
        assert_ne!(code, 0, "{run:?}");
        assert!(err.contains(says), "{run:?}: {err}");
    }
}
