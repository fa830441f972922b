//! Fast tests of reconcile and the responder over the fake engine: the main paths in
//! milliseconds (paused clock), each asserting what the engine was asked to do and what was
//! announced and audited.

use std::time::Duration;

use chrono::Utc;

use tokio_util::sync::CancellationToken;

use super::driver::reconcile_all;
use super::{Action, reconcile};
use crate::engine::fake::{Call, Script, exited, running};
use crate::fixtures::{NODE, REPAIRS, TestContext, policy};
use crate::model::container::{ContainerInfo, HealthStatus};
use crate::model::safety::{lock_key, safety_key};
use crate::model::wire::EventType;
use crate::store::StateStore;

const ID: &str = "web-id";
const CRASH: &str =
    "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n    verifyWithin: 4s\n";

fn target() -> ContainerInfo {
    running("web", &[("role", "target")])
}

fn crashed(code: i64) -> ContainerInfo {
    exited(target(), code)
}

/// A context governed by one policy `p` with `spec`, and `info` in the engine.
fn given(spec: &str, info: ContainerInfo) -> TestContext {
    let t = TestContext::new(vec![policy("p", spec)]);
    t.engine.put(info);
    t
}

async fn completes(t: &TestContext) -> Vec<(String, Option<String>, bool)> {
    t.envelopes()
        .await
        .into_iter()
        .filter(|e| e.kind() == Some(EventType::RemediationComplete))
        .map(|e| {
            (
                e.result_status().unwrap_or_default().to_owned(),
                e.data["gate"].as_str().map(str::to_owned),
                e.data["gave_up"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

fn status(s: &str, gate: Option<&str>) -> (String, Option<String>, bool) {
    (s.to_owned(), gate.map(str::to_owned), false)
}

#[tokio::test(start_paused = true)]
async fn a_crashed_container_is_restarted_verified_and_audited() {
    let t = given(CRASH, crashed(1));
    reconcile(ID, &t.ctx).await.unwrap();
    assert_eq!(t.engine.calls(), [Call::Restart(ID.into())]);
    assert_eq!(completes(&t).await, [status("success", None)]);
    let audit = t.store.audit_tail(10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].action.as_str(), audit[0].status.as_str()),
        ("restart", "success")
    );
    assert!(audit[0].action_started_at.is_some());
    // The same problem, once repaired, is not announced again.
    let before = t.envelopes().await.len();
    reconcile(ID, &t.ctx).await.unwrap();
    assert_eq!(t.envelopes().await.len(), before);
}

#[tokio::test(start_paused = true)]
async fn a_container_stopped_by_a_person_is_left_alone() {
    let t = given(CRASH, crashed(137));
    reconcile(ID, &t.ctx).await.unwrap();
    assert!(t.engine.calls().is_empty());
    assert!(completes(&t).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_container_is_restarted_only_after_its_grace_period() {
    let spec = "  probes:\n    healthcheck: {unhealthyFor: 10s}\n  remediation:\n    actions: [restart]\n    verifyWithin: 4s\n";
    let mut info = target();
    info.health = HealthStatus::Unhealthy;
    let t = given(spec, info.clone());
    let action = reconcile(ID, &t.ctx).await.unwrap();
    assert!(t.engine.calls().is_empty(), "still within unhealthyFor");
    assert!(
        matches!(action, Action::Requeue(d) if d <= Duration::from_secs(11)),
        "looks again when the grace period ends: {action:?}"
    );
    // Unhealthy for 20 s now.
    t.ctx.observed.remove(ID);
    t.ctx
        .observed
        .upsert(info, Utc::now() - chrono::Duration::seconds(20));
    reconcile(ID, &t.ctx).await.unwrap();
    assert_eq!(t.engine.calls(), [Call::Restart(ID.into())]);
    assert_eq!(completes(&t).await, [status("success", None)]);
}

#[tokio::test(start_paused = true)]
async fn the_same_failure_within_the_cooldown_is_refused() {
    let t = given(CRASH, crashed(1));
    reconcile(ID, &t.ctx).await.unwrap();
    // It crashes again right after the repair.
    t.engine.put(crashed(1));
    reconcile(ID, &t.ctx).await.unwrap();
    assert_eq!(t.engine.calls(), [Call::Restart(ID.into())]);
    assert_eq!(
        completes(&t).await,
        [
            status("success", None),
            status("rejected", Some("cooldown"))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_after_failed_repairs_and_gives_up_by_stopping() {
    let spec = "  probes:\n    exit: {}\n  remediation:\n    actions: [restart, stop]\n    verifyWithin: 2s\n    circuitBreaker: {failures: 1, within: 1h, openFor: 1h}\n    onGiveUp: stop\n";
    let t = given(spec, crashed(1));
    t.engine.script(
        ID,
        Script {
            stays_down: true,
            ..Script::default()
        },
    );
    reconcile(ID, &t.ctx).await.unwrap();
    assert_eq!(
        t.engine.calls(),
        [Call::Restart(ID.into()), Call::Stop(ID.into())]
    );
    assert_eq!(
        completes(&t).await,
        [
            status("failed", None),
            ("rejected".into(), Some("circuit_open".into()), true)
        ]
    );
    let state = t.store.safety(&safety_key(NODE, "web")).await.unwrap();
    assert!(state.open_until.is_some() && state.gave_up_at.is_some());
    assert!(
        t.ctx
            .metrics
            .encode()
            .contains("\nhemostat_breakers_open 1\n"),
        "the gauge counts the open breaker"
    );
    // Open: the next crash is refused without touching the engine.
    t.engine.put(crashed(2));
    reconcile(ID, &t.ctx).await.unwrap();
    assert_eq!(t.engine.calls().len(), 2);
    assert!(
        t.ctx
            .metrics
            .encode()
            .contains("\nhemostat_breakers_open 1\n")
    );
    assert_eq!(
        completes(&t).await.last().unwrap().1.as_deref(),
        Some("cooldown")
    );
}

#[tokio::test(start_paused = true)]
async fn dry_run_decides_and_announces_but_touches_nothing() {
    let t = TestContext::with(vec![policy("p", CRASH)], true, None);
    t.engine.put(crashed(1));
    reconcile(ID, &t.ctx).await.unwrap();
    assert!(t.engine.calls().is_empty());
    assert_eq!(completes(&t).await, [status("dry_run", None)]);
}

#[tokio::test(start_paused = true)]
async fn protected_containers_and_hemostat_itself_are_never_touched() {
    let mut info = crashed(1);
    info.labels
        .insert("io.hemostat.protected".into(), "true".into());
    let t = given(CRASH, info);
    reconcile(ID, &t.ctx).await.unwrap();
    let own = TestContext::with(vec![policy("p", CRASH)], false, Some(ID.into()));
    own.engine.put(crashed(1));
    reconcile(ID, &own.ctx).await.unwrap();
    assert!(t.engine.calls().is_empty() && own.engine.calls().is_empty());
    assert_eq!(completes(&t).await, [status("rejected", Some("protected"))]);
    assert_eq!(
        completes(&own).await,
        [status("rejected", Some("own_container"))]
    );
}

#[tokio::test(start_paused = true)]
async fn an_action_already_in_flight_is_refused_in_this_process_and_across_processes() {
    let t = given(CRASH, crashed(1));
    {
        let _ours = t.ctx.acting.begin(ID);
        reconcile(ID, &t.ctx).await.unwrap();
    }
    let other = given(CRASH, crashed(1));
    let key = lock_key("fake-engine", ID);
    assert!(
        other
            .store
            .try_lock(&key, "another-operator", Duration::from_secs(60))
            .await
            .unwrap()
    );
    reconcile(ID, &other.ctx).await.unwrap();
    assert!(t.engine.calls().is_empty() && other.engine.calls().is_empty());
    assert_eq!(completes(&t).await, [status("rejected", Some("in_flight"))]);
    assert_eq!(
        completes(&other).await,
        [status("rejected", Some("in_flight"))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_that_does_not_bring_the_container_back_is_a_failure() {
    let t = given(CRASH, crashed(1));
    t.engine.script(
        ID,
        Script {
            stays_down: true,
            ..Script::default()
        },
    );
    reconcile(ID, &t.ctx).await.unwrap();
    assert_eq!(t.engine.calls(), [Call::Restart(ID.into())]);
    assert_eq!(completes(&t).await, [status("failed", None)]);
    let state = t.store.safety(&safety_key(NODE, "web")).await.unwrap();
    assert_eq!(state.failures.len(), 1, "counts towards the breaker");
    // An engine error is a failure too, never a panic or a retry loop.
    let broken = given(CRASH, crashed(1));
    broken.engine.script(
        ID,
        Script {
            fail_actions: true,
            ..Script::default()
        },
    );
    reconcile(ID, &broken.ctx).await.unwrap();
    assert_eq!(completes(&broken).await, [status("failed", None)]);
}

async fn announced(t: &TestContext) -> usize {
    t.envelopes()
        .await
        .into_iter()
        .filter(|e| {
            e.kind() == Some(EventType::FalseAlarm)
                && e.data["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("Transient CPU spike"))
        })
        .count()
}

/// A container pinned at its CPU limit reads just below the threshold now and then: its
/// transient spike is announced once per episode, not at every sample above it.
#[tokio::test]
async fn a_transient_spike_is_announced_once_per_episode_not_at_every_sample() {
    let t = given(
        "  probes:\n    cpu: {abovePercent: 90, for: 2m}\n",
        target(),
    );
    reconcile(ID, &t.ctx).await.unwrap();
    for cpu in [99.0, 85.0, 100.0, 89.0, 99.5, 80.0, 99.0] {
        t.ctx.observed.push_usage(
            ID,
            crate::model::usage::UsagePoint {
                at: Utc::now(),
                cpu_percent: cpu,
                memory_percent: 10.0,
                memory_used_bytes: 1 << 20,
            },
        );
        reconcile(ID, &t.ctx).await.unwrap();
    }
    assert_eq!(announced(&t).await, 1, "{:?}", t.envelopes().await);
    // Quiet for a minute, then above again: a new episode, announced.
    t.ctx
        .handled
        .lock()
        .unwrap()
        .get_mut(ID)
        .expect("the episode is remembered")
        .quiet_since = Some(Utc::now() - chrono::Duration::seconds(61));
    t.ctx.observed.push_usage(
        ID,
        crate::model::usage::UsagePoint {
            at: Utc::now(),
            cpu_percent: 99.0,
            memory_percent: 10.0,
            memory_used_bytes: 1 << 20,
        },
    );
    reconcile(ID, &t.ctx).await.unwrap();
    assert_eq!(announced(&t).await, 2);
}

#[tokio::test(start_paused = true)]
async fn an_action_a_dead_process_left_pending_is_audited_interrupted_once_its_lock_is_free() {
    use crate::model::decision::ActionKind;
    use crate::model::safety::{ActionRecord, Outcome};
    let pending = |id: &str| ActionRecord {
        decision_id: id.into(),
        at: Utc::now() - chrono::Duration::seconds(10),
        action: ActionKind::Restart,
        finding: "exited".into(),
        outcome: Outcome::Pending,
    };
    let spec = "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n    cooldown: 1s\n    verifyWithin: 4s\n";
    let t = given(spec, crashed(1));
    let key = safety_key(NODE, "web");
    t.store
        .update_safety(&key, &mut |s| s.actions.push(pending("dead-1")))
        .await
        .unwrap();
    // Another process holds the container's lock: it may still be acting, nothing is settled.
    let lock = lock_key("fake-engine", ID);
    assert!(
        t.store
            .try_lock(&lock, "another-operator", Duration::from_secs(60))
            .await
            .unwrap()
    );
    reconcile(ID, &t.ctx).await.unwrap();
    assert!(
        t.store
            .audit_tail(10)
            .await
            .unwrap()
            .iter()
            .all(|r| r.status != "interrupted")
    );
    let state = t.store.safety(&key).await.unwrap();
    assert_eq!(state.actions[0].outcome, Outcome::Pending);
    assert!(state.failures.is_empty(), "a pending repair is not judged");
    // Its lock gone (the process died), the next decision settles it, then acts.
    t.store.unlock(&lock, "another-operator").await.unwrap();
    // The in-flight refusal's retry (5 s later on the wall clock) decides again.
    t.ctx.handled.lock().unwrap().clear();
    reconcile(ID, &t.ctx).await.unwrap();
    let audit = t.store.audit_tail(10).await.unwrap();
    let interrupted: Vec<_> = audit
        .iter()
        .filter(|r| r.status == "interrupted")
        .map(|r| (r.decision_id.as_str(), r.action.as_str()))
        .collect();
    assert_eq!(interrupted, [("dead-1", "restart")], "{audit:#?}");
    // The container is still down, so the interrupted repair (if it ran) did not fix it: the
    // same finding now counts it as one failed repair, then a new restart is made.
    let state = t.store.safety(&key).await.unwrap();
    assert_eq!(state.actions[0].outcome, Outcome::Failed);
    assert_eq!(state.failures.len(), 1);
    assert_eq!(t.engine.calls(), [Call::Restart(ID.into())]);
    // Settled once: a later decision audits nothing more about it.
    t.ctx.handled.lock().unwrap().clear();
    reconcile(ID, &t.ctx).await.unwrap();
    let again = t.store.audit_tail(10).await.unwrap();
    assert_eq!(
        again.iter().filter(|r| r.status == "interrupted").count(),
        1
    );
}

/// `n` containers `c0`… that crashed just now, each restart taking `restart_takes`.
fn storm(spec: &str, n: usize, restart_takes: Duration) -> (TestContext, Vec<String>) {
    let t = TestContext::new(vec![policy("p", spec)]);
    let ids = (0..n)
        .map(|i| {
            let info = exited(running(&format!("c{i}"), &[("role", "target")]), 1);
            t.engine.script(
                &info.id,
                Script {
                    restart_takes: Some(restart_takes),
                    ..Script::default()
                },
            );
            let id = info.id.clone();
            t.engine.put(info);
            id
        })
        .collect();
    (t, ids)
}

/// Runs the loop over `t` with every id scheduled now; cancel the token to stop it.
fn run_loop(
    t: &mut TestContext,
    ids: &[String],
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let receiver = t.receiver.take().expect("the fixture's receiver");
    let runner = tokio::spawn(reconcile_all(t.ctx.clone(), receiver, shutdown.clone()));
    for id in ids {
        t.ctx.queue.schedule_now(id.clone());
    }
    (shutdown, runner)
}

fn count(envelopes: &[crate::model::wire::Envelope], kind: EventType) -> usize {
    envelopes.iter().filter(|e| e.kind() == Some(kind)).count()
}

#[tokio::test(start_paused = true)]
async fn a_storm_of_crashes_is_decided_gated_and_announced_before_any_repair_completes() {
    const N: usize = 200;
    let (mut t, ids) = storm(CRASH, N, Duration::from_secs(2));
    let (shutdown, runner) = run_loop(&mut t, &ids);

    // The loop decides 4 at once and each restart takes 2 s: if decisions waited behind
    // repairs, the last would come about 50 × 3 s later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = t.envelopes().await;
    assert_eq!(count(&seen, EventType::HealthAlert), N);
    assert_eq!(count(&seen, EventType::RemediationNeeded), N);
    assert_eq!(count(&seen, EventType::RemediationComplete), 0);
    for i in 0..N {
        let state = t
            .store
            .safety(&safety_key(NODE, &format!("c{i}")))
            .await
            .unwrap();
        assert_eq!(state.actions.len(), 1, "c{i} is gated and on the record");
    }
    assert!(
        t.ctx.acting.is_ours(&ids[N - 1]),
        "the last one's claim is held while it waits for a repair place"
    );
    assert_eq!(t.engine.max_restarts_at_once(), REPAIRS);

    tokio::time::sleep(Duration::from_secs(600)).await;
    let seen = t.envelopes().await;
    let first_complete = seen
        .iter()
        .position(|e| e.kind() == Some(EventType::RemediationComplete))
        .expect("repairs completed");
    let last_needed = seen
        .iter()
        .rposition(|e| e.kind() == Some(EventType::RemediationNeeded))
        .unwrap();
    assert!(
        last_needed < first_complete,
        "every decision before any outcome"
    );
    assert_eq!(completes(&t).await, vec![status("success", None); N]);
    assert_eq!(t.engine.calls().len(), N, "one restart each");
    assert_eq!(
        t.engine.max_restarts_at_once(),
        REPAIRS,
        "the repair places bound the engine calls"
    );
    shutdown.cancel();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn in_a_storm_the_gates_refuse_at_once_and_only_the_allowed_repairs_wait() {
    const N: usize = 60;
    let spec = format!("{CRASH}    fleetBudget: {{maxActions: 10, per: 1h}}\n");
    let (mut t, ids) = storm(&spec, N, Duration::from_secs(5));
    let (shutdown, runner) = run_loop(&mut t, &ids);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = completes(&t).await;
    assert_eq!(refused.len(), N - 10, "the refusals are announced at once");
    assert!(
        refused
            .iter()
            .all(|r| *r == status("rejected", Some("fleet_budget"))),
        "{refused:?}"
    );
    assert_eq!(count(&t.envelopes().await, EventType::RemediationNeeded), N);

    tokio::time::sleep(Duration::from_secs(120)).await;
    let all = completes(&t).await;
    assert_eq!(all.iter().filter(|r| r.0 == "success").count(), 10);
    assert_eq!(t.engine.calls().len(), 10);
    shutdown.cancel();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_crash_during_its_own_repair_is_looked_at_after_the_repair_not_beside_it() {
    let (mut t, ids) = storm(CRASH, 1, Duration::from_secs(3));
    let (shutdown, runner) = run_loop(&mut t, &ids);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Events about it while it is being repaired: the key is still its repair's.
    for _ in 0..5 {
        t.ctx.queue.schedule_now(ids[0].clone());
    }
    assert_eq!(t.ctx.queue.in_flight(), 1);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(t.engine.calls(), [Call::Restart(ids[0].clone())]);
    assert_eq!(completes(&t).await, [status("success", None)]);
    shutdown.cancel();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_storm_of_exits_is_decided_from_the_die_events_while_the_engine_is_slow_to_answer() {
    use crate::model::container::{ContainerEvent, ContainerState, EventAction};
    const N: usize = 200;
    let (mut t, ids) = storm(CRASH, N, Duration::from_secs(2));
    // Each was inspected running before the storm (the engine now has it exited, code 1).
    let t0 = Utc::now();
    for id in &ids {
        let mut was = t.engine.get(id).unwrap();
        was.state = ContainerState::Running;
        was.exit_code = None;
        was.finished_at = None;
        was.started_at = Some(t0 - chrono::Duration::seconds(60));
        t.ctx.observed.upsert(was, t0);
    }
    // The engine, busy with 200 exits, takes 10 s to answer an inspection.
    t.engine.set_inspect_takes(Duration::from_secs(10));
    let (shutdown, runner) = run_loop(&mut t, &[]);
    for id in &ids {
        let info = t.engine.get(id).unwrap();
        let die = ContainerEvent {
            action: EventAction::Die,
            container_id: id.clone(),
            name: info.name,
            labels: info.labels,
            time: t0,
            exit_code: Some(1),
            signal: None,
        };
        super::watch::handle_event(&t.ctx, die).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = t.envelopes().await;
    assert_eq!(count(&seen, EventType::HealthAlert), N);
    assert_eq!(count(&seen, EventType::RemediationNeeded), N);
    assert_eq!(
        t.engine.inspections(),
        0,
        "no decision waited on the engine"
    );
    let metrics = t.ctx.metrics.encode();
    assert!(
        metrics.contains(&format!("hemostat_exits_decided_from_events_total {N}")),
        "{metrics}"
    );

    t.engine.set_inspect_takes(Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(completes(&t).await, vec![status("success", None); N]);
    assert_eq!(t.engine.calls().len(), N, "one restart each");
    shutdown.cancel();
    runner.await.unwrap();
}
