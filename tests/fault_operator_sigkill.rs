//! Staged fault: the operator is SIGKILLed 10 times at random moments (a seeded RNG; the seed is
//! printed, `HEMOSTAT_FAULT_SEED` replays it) while a container crash-loops, each new process
//! on the same `--state-dir`: the engine restarts the container no more often than the policy's
//! `maxActions`, every restart the engine made was recorded before it was made, and every
//! recorded action is audited once (`interrupted` when its process was killed first).

mod operator;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use operator::{Operator, free_port, policy_dir, policy_for_run};
use serde_json::Value;
use support::{ContainerSpec, TestRun};

const MAX_ACTIONS: usize = 3;
const KILLS: usize = 10;
/// The longest an operator process lives before its SIGKILL (after it is ready).
const MAX_LIFE_MS: u64 = 4_000;

fn seed() -> u64 {
    std::env::var("HEMOSTAT_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// The actions on record in `<state>/state.json` for the container.
fn recorded_actions(state_dir: &Path, name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(state_dir.join("state.json")).unwrap_or_default();
    let state: Value = serde_json::from_str(&text).unwrap_or_default();
    state["safety"][format!("test-node/{name}")]["actions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn ten_sigkills_during_a_crash_loop_never_exceed_max_actions() {
    let started = Instant::now();
    let seed = seed();
    eprintln!("HEMOSTAT_FAULT_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "  probes:\n    exit: {{nonZeroOnly: true}}\n  remediation:\n    actions: [restart]\n    cooldown: 1s\n    maxActions: {{count: {MAX_ACTIONS}, per: 10m}}\n    circuitBreaker: {{failures: 100, within: 10m, openFor: 10m}}\n    verifyWithin: 5s\n"
    );
    let policies = policy_dir(dir.path(), &policy_for_run("sigkill", &run.run_id, &policy));
    let state = dir.path().join("state");
    let events = run.follow_events();
    // Crashes 2 s after every start: each restart the operator makes is followed by a crash.
    let id = run
        .spawn(
            "loop",
            ContainerSpec::sh("sleep 2; exit 1").label("role", "target"),
        )
        .await;
    let name = run.name("loop");
    let port = free_port();

    let mut lives = Vec::new();
    for _ in 0..KILLS {
        let mut op = Operator::start_at(port, &policies, &run.label, &state, &[]).await;
        let life = Duration::from_millis(rng.u64(0..MAX_LIFE_MS));
        tokio::time::sleep(life).await;
        op.kill9();
        lives.push(life.as_millis());
        let recorded = recorded_actions(&state, &name).len();
        assert!(
            recorded <= MAX_ACTIONS,
            "{recorded} actions on record after a SIGKILL (seed {seed}): {:#?}",
            recorded_actions(&state, &name)
        );
    }
    eprintln!("lives before SIGKILL (ms): {lives:?}");

    // A last operator runs until it refuses for the window (or the budget is never reached
    // because SIGKILLs fell between record and restart: it never acts beyond it either).
    let op = Operator::start_at(port, &policies, &run.label, &state, &[]).await;
    let refusal = op
        .wait_audit(
            &name,
            60,
            "the window's limit refuses a further restart",
            |r| r["gate"] == "max_actions",
        )
        .await;
    assert_eq!(refusal["status"], "rejected");
    // Another crash cycle and two resyncs: nothing more is done.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let engine_restarts = events.starts(&id) - 1;
    let events = events.of(&id);
    let recorded = recorded_actions(&state, &name);
    let audit = op.audit_for(&name).await;
    let audited = audit
        .iter()
        .filter(|r| r["action"] == "restart" && r["status"] != "rejected")
        .count();
    let statuses: Vec<&str> = audit
        .iter()
        .filter(|r| r["action"] == "restart" && r["status"] != "rejected")
        .map(|r| r["status"].as_str().unwrap_or_default())
        .collect();
    eprintln!(
        "seed {seed}: engine restarts {engine_restarts}, recorded actions {}, audited actions {audited} {statuses:?}; wall time {:?}",
        recorded.len(),
        started.elapsed()
    );
    assert_eq!(
        recorded.len(),
        MAX_ACTIONS,
        "the window is full (seed {seed}): {recorded:#?}"
    );
    assert!(
        engine_restarts <= MAX_ACTIONS,
        "the engine restarted it {engine_restarts} times, more than maxActions {MAX_ACTIONS} (seed {seed}): {events:?}"
    );
    assert!(
        engine_restarts >= 1,
        "the loop was repaired at all (seed {seed}): {events:?}"
    );
    // Every action on record is audited once: its outcome, or `interrupted` when the process
    // that started it was killed first (settled by a later one).
    let mut audited_ids: Vec<&str> = audit
        .iter()
        .filter(|r| r["action"] == "restart" && r["status"] != "rejected")
        .map(|r| r["decision_id"].as_str().unwrap())
        .collect();
    audited_ids.sort_unstable();
    let mut recorded_ids: Vec<&str> = recorded
        .iter()
        .map(|a| a["decision_id"].as_str().unwrap())
        .collect();
    recorded_ids.sort_unstable();
    assert_eq!(
        audited_ids, recorded_ids,
        "every recorded action audited once (seed {seed}): {audit:#?}"
    );
    let succeeded = audit.iter().filter(|r| r["status"] == "success").count();
    assert!(
        succeeded <= engine_restarts,
        "no success audited without its restart (seed {seed}): {audit:#?}"
    );
    assert!(
        recorded.iter().all(|a| a["outcome"] != "pending"),
        "nothing left pending once settled (seed {seed}): {recorded:#?}"
    );
    // Every die was a crash (exit 1), never a restart of a running container.
    for (action, code) in &events {
        if action == "die" {
            assert_eq!(code, "1", "seed {seed}: {events:?}");
        }
    }
}
