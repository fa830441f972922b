//! Staged fault: the Docker engine unreachable (its `socat` proxy down) when the operator starts,
//! and again for 15 s while it runs.
//!
//! At start, `hemostat run` exits non-zero at once with a message naming the endpoint and what
//! to check (the behaviour `tests/run_cli.rs` pins: a supervisor such as compose's
//! `restart: unless-stopped` or the DaemonSet starts it again); the next start after the engine
//! is back repairs a crash that happened meanwhile. Mid-run, it keeps running and says why it
//! is not ready (`/readyz` 503, `/healthz` 200, the endpoint named in its log), and once the
//! engine is back it repairs a crash from during the outage and one from after it, once each.

mod operator;
mod socat_proxy;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use operator::{Operator, free_port, policy_dir, policy_for_run};
use socat_proxy::EngineProxy;
use support::{ContainerSpec, TestRun, wait_until};

const POLICY: &str = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    verifyWithin: 10s\n";
const OUTAGE: Duration = Duration::from_secs(15);

/// Crashes once `secs` after its first start; after a restart it runs on.
fn crash_once_after(secs: u64) -> ContainerSpec {
    ContainerSpec::sh(&format!(
        "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep {secs}; exit 3"
    ))
    .label("role", "target")
}

async fn status(op: &Operator, path: &str) -> u16 {
    reqwest::get(format!("{}{path}", op.base))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn unreachable_at_start_is_a_clear_exit_and_the_next_start_repairs_what_crashed_meanwhile() {
    let started = Instant::now();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("engine.sock");
    let mut proxy = EngineProxy::down(&sock);
    let policies = policy_dir(dir.path(), &policy_for_run("start", &run.run_id, POLICY));
    let state = dir.path().join("state");
    let events = run.follow_events();
    let id = run.spawn("crash", crash_once_after(1)).await;
    let name = run.name("crash");

    let attempt = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args(["run", "--policies"])
        .arg(&policies)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--label-filter", &run.label])
        .arg("--state-dir")
        .arg(&state)
        .env("DOCKER_HOST", proxy.docker_host())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = attempt.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach the Docker engine at {}",
            proxy.docker_host()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("set DOCKER_HOST"),
        "says what to check: {stderr}"
    );
    assert!(
        took < Duration::from_secs(10),
        "exits at once, not after {took:?}"
    );

    proxy.heal();
    let op = Operator::start_with_env(
        &policies,
        &run.label,
        &state,
        &[],
        &[("DOCKER_HOST", &proxy.docker_host())],
    )
    .await;
    let healed = Instant::now();
    op.wait_audit(
        &name,
        30,
        "the crash from before the start is repaired",
        |r| r["action"] == "restart" && r["status"] == "success",
    )
    .await;
    let repaired_after = healed.elapsed();
    assert_eq!(events.starts(&id), 2, "{:?}", events.of(&id));
    eprintln!(
        "exit after {took:?} with: {}\nrepaired {repaired_after:?} after the second start; wall time {:?}",
        stderr.trim(),
        started.elapsed()
    );
}

#[tokio::test]
async fn unreachable_mid_run_is_reported_and_repairs_resume_once_it_is_back() {
    let started = Instant::now();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = EngineProxy::start(&dir.path().join("engine.sock"));
    let policies = policy_dir(dir.path(), &policy_for_run("midrun", &run.run_id, POLICY));
    let op = Operator::start_with_env(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &[],
        &[("DOCKER_HOST", &proxy.docker_host())],
    )
    .await;
    let events = run.follow_events();
    // Crashes during the outage.
    let during_id = run.spawn("during", crash_once_after(4)).await;
    let during = run.name("during");
    wait_until(Duration::from_secs(10), "the operator sees it", || async {
        op.get(&format!("/api/v1/containers/{during}")).await["state"] == "running"
    })
    .await;

    proxy.cut();
    let cut_at = Instant::now();
    // Created during the outage (the operator never sees its create event), crashes after it.
    let after_id = run
        .spawn("after", crash_once_after(OUTAGE.as_secs() + 5))
        .await;
    let after = run.name("after");
    wait_until(Duration::from_secs(5), "readyz says 503", || async {
        status(&op, "/readyz").await == 503
    })
    .await;
    wait_until(
        Duration::from_secs(10),
        "the log names the unreachable endpoint",
        || async {
            op.log_text().contains(&format!(
                "cannot reach the Docker engine at {}",
                proxy.docker_host()
            ))
        },
    )
    .await;
    tokio::time::sleep(OUTAGE.saturating_sub(cut_at.elapsed())).await;
    assert_eq!(
        status(&op, "/healthz").await,
        200,
        "alive through the outage"
    );
    assert_eq!(
        status(&op, "/readyz").await,
        503,
        "not ready through the outage"
    );
    assert_eq!(
        run.docker_cli(&["inspect", "-f", "{{.State.Status}}", &during_id]),
        "exited",
        "crashed during the outage"
    );

    proxy.heal();
    let healed = Instant::now();
    op.wait_audit(
        &during,
        30,
        "the crash during the outage is repaired",
        |r| r["action"] == "restart" && r["status"] == "success",
    )
    .await;
    let during_repaired = healed.elapsed();
    wait_until(Duration::from_secs(10), "readyz is 200 again", || async {
        status(&op, "/readyz").await == 200
    })
    .await;
    op.wait_audit(&after, 40, "the crash after the outage is repaired", |r| {
        r["action"] == "restart" && r["status"] == "success"
    })
    .await;
    for (name, id) in [(&during, &during_id), (&after, &after_id)] {
        assert_eq!(
            events.starts(id),
            2,
            "{name}: one start and one repair: {:?}",
            events.of(id)
        );
        let acted = op
            .audit_for(name)
            .await
            .into_iter()
            .filter(|r| r["action"] == "restart" && r["status"] != "rejected")
            .count();
        assert_eq!(acted, 1, "{name}");
    }
    eprintln!(
        "outage {:?}; the crash during it repaired {during_repaired:?} after the heal; wall time {:?}",
        healed - cut_at,
        started.elapsed()
    );
}
