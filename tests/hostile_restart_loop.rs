//! End to end on the real Docker engine: a restart loop run by the engine's own restart policy
//! is counted once per restart (the `start` event and the growth of `RestartCount` are the same
//! restart), so `restartLoop: {restarts: N}` fires at exactly the N-th restart.

mod operator;
mod support;

use operator::{Operator, policy_dir, policy_for_run};
use support::{ContainerSpec, TestRun};

const RESTARTS: u32 = 4;

#[tokio::test]
async fn a_restart_loop_fires_at_exactly_n_engine_restarts() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "  probes:\n    restartLoop: {{restarts: {RESTARTS}, within: 10m}}\n  remediation:\n    actions: [stop]\n    cooldown: 1h\n    verifyWithin: 5s\n"
    );
    let policies = policy_dir(dir.path(), &policy_for_run("loop", &run.run_id, &policy));
    let op = Operator::start(&policies, &run.label, &dir.path().join("state"), &[]).await;
    // Runs 5 s then fails; the engine restarts it (back-off 100 ms, 200 ms, …): the N+1-th start
    // comes more than 5 s after the N-th, time enough for the operator to stop it even on a
    // loaded machine (with 2 s it once came too late and the engine counted N+1).
    let id = run
        .spawn(
            "loop",
            ContainerSpec::sh("sleep 5; exit 1")
                .label("role", "target")
                .restart("always"),
        )
        .await;
    let name = run.name("loop");
    let record = op
        .wait_audit(&name, 90, "the restart loop is stopped", |r| {
            r["action"] == "stop" && r["status"] == "success"
        })
        .await;
    let engine_restarts: u32 = run
        .docker_cli(&["inspect", "-f", "{{.RestartCount}}", &id])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        engine_restarts,
        RESTARTS,
        "the probe must fire at the {RESTARTS}th restart, not before: {record}\n{}",
        op.log_text()
            .lines()
            .filter(|l| l.contains("restart") || l.contains("docker event"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("Restart loop: {RESTARTS} restarts")),
        "{reason}"
    );
}
