//! A storm: 200 containers crash within one second. HemoStat's decisions, announcements and
//! repairs, beside the engine's own `--restart on-failure` bringing back the same storm.
//!
//! ```text
//! cargo bench --bench storm
//! HEMOSTAT_BENCH_STORM=200 cargo bench --bench storm
//! ```
//!
//! Each container (busybox, FROM scratch, named `hs-scale-…`) runs
//! `if [ -f /tmp/ran ]; then exec sleep 3600; fi; touch /tmp/ran; until [ -f /trigger/go ]; do sleep 0.5; done; exit 3`
//! with a host directory mounted read-only on `/trigger`: once all are up, the bench creates
//! `go`, and every container exits 3 within the next half second. The restarted container finds
//! `/tmp/ran` and sleeps.
//!
//! 1. **HemoStat**: the release `hemostat` binary (`--sample-interval 5s`, otherwise its
//!    defaults: `--max-concurrent 32`, `--max-concurrent-repairs 32`, resync 30 s, log level
//!    info, the in-memory store persisted to a state dir) with the policy
//!    `exit: {nonZeroOnly: true}`, `restart`, cooldown 1h, `maxActions: {count: 1000, per: 1h}`,
//!    `verifyWithin: 30s`. Per container, from the engine's `die` (`timeNano`, read by this
//!    bench's own event subscription): the `health_alert` and `remediation_needed` envelopes
//!    (their `timestamp`, from `/api/v1/decisions`), the restart call (the audit record's
//!    `action_started_at`), running again (the next `start` event) and `remediation_complete`.
//! 2. **The engine alone**: the operator stopped, the same storm with `--restart on-failure`
//!    and no HemoStat: die → running again (given at most `HEMOSTAT_BENCH_ENGINE_WAIT` s,
//!    default 600; those not back by then are counted and left out).

#[path = "support/events.rs"]
mod events;
#[path = "support/machine.rs"]
mod machine;

#[path = "../tests/operator/mod.rs"]
mod operator;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use events::{Events, die_and_back, quantiles};
use futures::StreamExt;
use operator::{Operator, free_port, policy_dir, policy_for_run};
use serde_json::Value;
use support::{ContainerSpec, TestRun};

const SCRIPT: &str = "if [ -f /tmp/ran ]; then exec sleep 3600; fi; touch /tmp/ran; until [ -f /trigger/go ]; do sleep 0.5; done; exit 3";

const POLICY: &str = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    maxActions: {count: 1000, per: 1h}\n    verifyWithin: 30s\n";

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench targets too: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench <name>`");
        return;
    }
    let n: usize = std::env::var("HEMOSTAT_BENCH_STORM")
        .unwrap_or_else(|_| "200".into())
        .parse()
        .expect("HEMOSTAT_BENCH_STORM: a number");
    support::busybox_image().await;
    machine::print(&format!(
        "hemostat binary {} ({}), a storm of {n}",
        env!("CARGO_BIN_EXE_hemostat"),
        machine::profile()
    ));

    // 1. HemoStat.
    let run = TestRun::named("hs-scale-");
    let dir = tempfile::tempdir().expect("a temp dir");
    let policies = policy_dir(dir.path(), &policy_for_run("storm", &run.run_id, POLICY));
    let op = Operator::start_exactly(
        free_port(),
        &policies,
        &run.label,
        &dir.path().join("state"),
        &["--sample-interval", "5s", "--log-level", "info"],
        &[],
    )
    .await;
    let trigger = trigger_dir(dir.path(), "hemostat");
    let ids = start_storm(&run, n, &trigger, None).await;
    wait_listed(&op, n).await;
    let events = events::follow(&run.label).await;
    let go = fire(&trigger);
    let hemostat = measure_hemostat(&op, &events, &ids, go).await;
    drop(op);
    run.cleanup();
    println!();
    header(n);
    row("HemoStat", &hemostat);

    if engine_wait().is_zero() {
        println!(
            "(each cell: p50 / p95 / p99 / max in ms; {} not back)",
            hemostat.missing
        );
        machine::print_final_load();
        return;
    }
    // 2. The engine's own restart policy.
    let run = TestRun::named("hs-scale-");
    let trigger = trigger_dir(dir.path(), "engine");
    let ids = start_storm(&run, n, &trigger, Some("on-failure")).await;
    let events = events::follow(&run.label).await;
    let go = fire(&trigger);
    let engine = measure_engine(&events, &ids, go).await;
    run.cleanup();

    println!();
    header(n);
    row("HemoStat", &hemostat);
    row("the engine's `--restart on-failure`", &engine);
    if engine.missing > 0 {
        println!(
            "the engine had not brought {} of {n} back within {} s (they are left out of its row)",
            engine.missing,
            engine_wait().as_secs()
        );
    }
    println!("(each cell: p50 / p95 / p99 / max in ms)");
    let p = |v: &[Duration], q: f64| {
        let mut v = v.to_vec();
        v.sort();
        v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1].as_secs_f64()
    };
    if engine.back.is_empty() {
        machine::print_final_load();
        return;
    }
    println!(
        "running again, HemoStat / engine: p50 {:.2}×, max {:.2}×",
        p(&hemostat.back, 0.5) / p(&engine.back, 0.5),
        p(&hemostat.back, 1.0) / p(&engine.back, 1.0)
    );
    machine::print_final_load();
}

/// How long the engine's own restart policy is given to bring the storm back
/// (`HEMOSTAT_BENCH_ENGINE_WAIT` seconds, default 600).
fn engine_wait() -> Duration {
    Duration::from_secs(
        std::env::var("HEMOSTAT_BENCH_ENGINE_WAIT")
            .ok()
            .map_or(600, |s| {
                s.parse().expect("HEMOSTAT_BENCH_ENGINE_WAIT: seconds")
            }),
    )
}

fn header(n: usize) {
    println!(
        "| storm of {n} | die spread (first → last die) | die → health_alert | die → remediation_needed | die → restart call | die → running again | die → remediation_complete |"
    );
    println!("|---|---|---|---|---|---|---|");
}

fn row(who: &str, m: &Measured) {
    println!(
        "| {who} | {:.0} ms | {} | {} | {} | {} | {} |",
        m.spread.as_secs_f64() * 1e3,
        quantiles(&m.alert),
        quantiles(&m.needed),
        quantiles(&m.call),
        quantiles(&m.back),
        quantiles(&m.complete),
    );
}

#[derive(Default)]
struct Measured {
    /// Containers not back at the end of the wait.
    missing: usize,
    spread: Duration,
    alert: Vec<Duration>,
    needed: Vec<Duration>,
    call: Vec<Duration>,
    back: Vec<Duration>,
    complete: Vec<Duration>,
}

/// A fresh host directory to mount on `/trigger`.
fn trigger_dir(parent: &Path, name: &str) -> std::path::PathBuf {
    let dir = parent.join(format!("trigger-{name}"));
    std::fs::create_dir_all(&dir).expect("trigger dir");
    dir
}

/// Starts `n` crashers 16 at a time and waits until all are running.
async fn start_storm(
    run: &TestRun,
    n: usize,
    trigger: &Path,
    restart: Option<&'static str>,
) -> Vec<String> {
    let started = Instant::now();
    let bind = format!("{}:/trigger:ro", trigger.display());
    let ids: Vec<String> = futures::stream::iter(0..n)
        .map(|i| {
            let mut spec = ContainerSpec::sh(SCRIPT)
                .label("role", "target")
                .bind(&bind);
            if let Some(policy) = restart {
                spec = spec.restart(policy);
            }
            async move { run.spawn(&format!("c{i}"), spec).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    eprintln!(
        "started {n} crashers in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ids
}

/// Makes every container exit within half a second; returns when.
fn fire(trigger: &Path) -> DateTime<Utc> {
    // Let the engine settle after the starts.
    std::thread::sleep(Duration::from_secs(3));
    let at = Utc::now();
    std::fs::write(trigger.join("go"), "go").expect("write the trigger");
    at
}

/// Waits until the operator's API lists `n` containers.
async fn wait_listed(op: &Operator, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while op
        .get("/api/v1/containers")
        .await
        .as_array()
        .map_or(0, Vec::len)
        < n
    {
        assert!(Instant::now() < deadline, "the operator never listed {n}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn since(t: DateTime<Utc>, die: DateTime<Utc>) -> Duration {
    (t - die).to_std().unwrap_or(Duration::ZERO)
}

fn parse(ts: &Value) -> Option<DateTime<Utc>> {
    Some(
        DateTime::parse_from_rfc3339(ts.as_str()?)
            .ok()?
            .with_timezone(&Utc),
    )
}

/// Envelope timestamps of one type, by container id (the first of each).
async fn envelopes(op: &Operator, kind: &str) -> HashMap<String, DateTime<Utc>> {
    let mut out = HashMap::new();
    let list = op
        .get(&format!("/api/v1/decisions?type={kind}&limit=1000"))
        .await;
    for e in list.as_array().into_iter().flatten() {
        if let (Some(id), Some(at)) = (e["data"]["container_id"].as_str(), parse(&e["timestamp"])) {
            out.entry(id.to_owned()).or_insert(at);
        }
    }
    out
}

async fn measure_hemostat(
    op: &Operator,
    events: &Events,
    ids: &[String],
    go: DateTime<Utc>,
) -> Measured {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let complete = envelopes(op, "remediation_complete").await;
        let all_back = ids
            .iter()
            .all(|id| matches!(die_and_back(events, id), Some((_, Some(_)))));
        if all_back && ids.iter().all(|id| complete.contains_key(id)) {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "not every container was back and announced within 300 s ({} of {} complete); log tail:\n{}",
                complete.len(),
                ids.len(),
                tail(&op.log_text())
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let alert = envelopes(op, "health_alert").await;
    let needed = envelopes(op, "remediation_needed").await;
    let complete = envelopes(op, "remediation_complete").await;
    let calls: HashMap<String, DateTime<Utc>> = op
        .audit()
        .await
        .iter()
        .filter_map(|r| {
            Some((
                r["container_id"].as_str()?.to_owned(),
                parse(&r["action_started_at"])?,
            ))
        })
        .collect();
    let statuses: Vec<String> = op
        .audit()
        .await
        .iter()
        .filter_map(|r| r["status"].as_str().map(str::to_owned))
        .collect();
    eprintln!(
        "HemoStat: {} of {} repairs succeeded",
        statuses.iter().filter(|s| *s == "success").count(),
        ids.len()
    );
    let mut m = Measured::default();
    let mut dies = Vec::new();
    for id in ids {
        let Some((die, back)) = die_and_back(events, id) else {
            m.missing += 1;
            continue;
        };
        dies.push(die);
        let push = |v: &mut Vec<Duration>, at: Option<&DateTime<Utc>>| {
            if let Some(at) = at {
                v.push(since(*at, die));
            }
        };
        push(&mut m.alert, alert.get(id));
        push(&mut m.needed, needed.get(id));
        push(&mut m.call, calls.get(id));
        push(&mut m.back, back.as_ref());
        push(&mut m.complete, complete.get(id));
        if back.is_none() {
            m.missing += 1;
        }
    }
    m.spread = spread(&dies);
    eprintln!(
        "HemoStat: first die {:.0} ms after the trigger",
        since(*dies.iter().min().unwrap(), go).as_secs_f64() * 1e3
    );
    m
}

async fn measure_engine(events: &Events, ids: &[String], go: DateTime<Utc>) -> Measured {
    let deadline = Instant::now() + engine_wait();
    while !ids
        .iter()
        .all(|id| matches!(die_and_back(events, id), Some((_, Some(_)))))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut m = Measured::default();
    let mut dies = Vec::new();
    for id in ids {
        let Some((die, back)) = die_and_back(events, id) else {
            m.missing += 1;
            continue;
        };
        dies.push(die);
        match back {
            Some(back) => m.back.push(since(back, die)),
            None => m.missing += 1,
        }
    }
    m.spread = spread(&dies);
    eprintln!(
        "engine: first die {:.0} ms after the trigger",
        since(*dies.iter().min().unwrap(), go).as_secs_f64() * 1e3
    );
    m
}

fn spread(dies: &[DateTime<Utc>]) -> Duration {
    let first = dies.iter().min().unwrap();
    let last = dies.iter().max().unwrap();
    since(*last, *first)
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
