//! Staged fault: the engine's event stream (and every other connection to the engine) is cut by
//! killing the `socat` proxy the operator talks through, a container crashes during the cut, and
//! the proxy comes back 20 s later: the crash, whose `die` event never reached the operator, is
//! repaired once, within one resync interval of the heal (the reconnect backoff never waits
//! longer than a resync interval).

mod operator;
mod socat_proxy;
mod support;

use std::time::{Duration, Instant};

use operator::{Operator, policy_dir, policy_for_run};
use socat_proxy::EngineProxy;
use support::{ContainerSpec, TestRun, wait_until};

/// The operator's `--resync-interval` (tests/operator starts it with 5s).
const RESYNC: Duration = Duration::from_secs(5);
/// How long the proxy stays down: long enough for an uncapped backoff (250 ms doubling to 30 s)
/// to be asleep for 16 s when the proxy comes back.
const CUT: Duration = Duration::from_secs(20);
/// Listing the containers again and starting the restart, after the first attempt that reaches
/// the engine.
const RELIST_AND_ACT: Duration = Duration::from_secs(2);

async fn ready_status(op: &Operator) -> u16 {
    reqwest::get(format!("{}/readyz", op.base))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_crash_during_an_event_stream_cut_is_repaired_within_one_resync_of_the_heal() {
    let started = Instant::now();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = EngineProxy::start(&dir.path().join("engine.sock"));
    let policy = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    verifyWithin: 10s\n";
    let policies = policy_dir(dir.path(), &policy_for_run("cut", &run.run_id, policy));
    let op = Operator::start_with_env(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &[],
        &[("DOCKER_HOST", &proxy.docker_host())],
    )
    .await;
    let events = run.follow_events();
    // Crashes 4 s after its first start, runs on after a restart.
    let id = run
        .spawn(
            "crash",
            ContainerSpec::sh(
                "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep 4; exit 3",
            )
            .label("role", "target"),
        )
        .await;
    let name = run.name("crash");
    wait_until(
        Duration::from_secs(10),
        "the operator has seen the container running",
        || async { op.get(&format!("/api/v1/containers/{name}")).await["state"] == "running" },
    )
    .await;

    proxy.cut();
    let cut_at = Instant::now();
    wait_until(
        Duration::from_secs(5),
        "readyz says 503 during the cut",
        || async { ready_status(&op).await == 503 },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the container crashes during the cut",
        || async { run.docker_cli(&["inspect", "-f", "{{.State.Status}}", &id]) == "exited" },
    )
    .await;
    tokio::time::sleep(CUT.saturating_sub(cut_at.elapsed())).await;
    assert!(
        op.audit_for(&name).await.is_empty(),
        "nothing can be done while the engine is cut off"
    );
    assert_eq!(events.starts(&id), 1, "no restart during the cut");

    proxy.heal();
    let healed_at = Instant::now();
    let record = op
        .wait_audit(&name, 30, "the crash is repaired after the heal", |r| {
            r["action"] == "restart" && r["status"] == "success"
        })
        .await;
    // When the restart's engine call started, on the operator's clock (the same host clock).
    let acted: chrono::DateTime<chrono::Utc> = record["action_started_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no action_started_at: {record}"))
        .parse()
        .unwrap();
    let healed_utc = chrono::Utc::now() - chrono::Duration::from_std(healed_at.elapsed()).unwrap();
    let after_heal = (acted - healed_utc).to_std().unwrap_or_default();
    eprintln!(
        "cut {:?}; heal -> restart started {after_heal:?}; log lines about the engine:\n{}",
        healed_at - cut_at,
        op.log_text()
            .lines()
            .filter(|l| l.contains("listing") || l.contains("event stream") || l.contains("ready"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        after_heal <= RESYNC + RELIST_AND_ACT,
        "the restart started {after_heal:?} after the heal: more than one resync interval ({RESYNC:?}) plus {RELIST_AND_ACT:?}\n{}",
        op.log_text()
    );
    wait_until(Duration::from_secs(10), "readyz is 200 again", || async {
        ready_status(&op).await == 200
    })
    .await;
    // Exactly one repair, on the operator's record and on the engine's.
    tokio::time::sleep(RESYNC).await;
    let audit = op.audit_for(&name).await;
    let acted: Vec<_> = audit
        .iter()
        .filter(|r| r["action"] == "restart" && r["status"] != "rejected")
        .collect();
    assert_eq!(acted.len(), 1, "{audit:#?}");
    assert_eq!(
        events.starts(&id),
        2,
        "the first start and one restart: {:?}",
        events.of(&id)
    );
    assert_eq!(
        run.docker_cli(&["inspect", "-f", "{{.State.Status}}", &id]),
        "running"
    );
    eprintln!("wall time {:?}", started.elapsed());
}
