//! Time from the engine's `die` event to HemoStat's restart call, on the real engine.
//!
//! ```text
//! cargo bench --bench remediation_latency
//! HEMOSTAT_BENCH_BATCHES=5x10,1x10,25x2 cargo bench --bench remediation_latency
//! ```
//!
//! Starts the `hemostat` binary that cargo built with this bench (release profile under
//! `cargo bench`), with a policy that restarts containers whose main process exits
//! non-zero (`exit` probe, `restart`, cooldown 1h). Then, batch by batch, it starts
//! containers that crash once (exit 3, one second after start) and stay up after the
//! restart, and measures per container:
//!
//! - **die → restart call**: the audit record's `action_started_at` (when HemoStat
//!   began the engine's restart call) minus the `die` event's `timeNano`, read from
//!   the engine's own event stream by this bench;
//! - **die → event delivered**: when this bench's own event subscription received the
//!   `die` (the engine's delivery delay; HemoStat subscribes the same way);
//! - **die → running again**: the engine's next `start` event for the same container
//!   minus the `die` event.
//!
//! `HEMOSTAT_BENCH_BATCHES` is a comma-separated list of `SIZExCOUNT`: COUNT batches
//! of SIZE containers that crash at the same moment (default `5x10,1x10,25x2`). The
//! first group is the headline figure. Every container is removed at the end of its
//! batch (and by `TestRun` on drop). `HEMOSTAT_BENCH_MAX_CONCURRENT=N` passes
//! `--max-concurrent N` to the operator (default: the operator's own default, 8);
//! `HEMOSTAT_BENCH_LOG=FILE` keeps the operator's debug log there.

#[path = "support/events.rs"]
mod events;
#[path = "support/machine.rs"]
mod machine;

#[path = "../tests/operator/mod.rs"]
mod operator;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use events::{Events, quantiles};
use operator::{Operator, policy_dir, policy_for_run};
use support::{ContainerSpec, TestRun};

/// Crashes with code 3 in its first life, then stays up (a marker survives the restart).
const CRASH_ONCE: &str =
    "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep 1; exit 3";

const POLICY: &str = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    maxActions: {count: 1000, per: 1h}\n    verifyWithin: 10s\n";

#[derive(Clone, Copy)]
struct Sample {
    die_to_call: Duration,
    die_to_delivered: Duration,
    die_to_running: Option<Duration>,
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench targets too: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench <name>`");
        return;
    }
    let groups = batches_from_env();
    let run = TestRun::new();
    support::busybox_image().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("bench-crash", &run.run_id, POLICY),
    );
    let max_concurrent = std::env::var("HEMOSTAT_BENCH_MAX_CONCURRENT").ok();
    let extra: Vec<&str> = match &max_concurrent {
        Some(n) => vec!["--max-concurrent", n],
        None => vec![],
    };
    let op = Operator::start(&policies, &run.label, &dir.path().join("state"), &extra).await;
    let events = events::follow(&run.label).await;
    machine::print(&format!(
        "hemostat binary {} ({})",
        env!("CARGO_BIN_EXE_hemostat"),
        machine::profile()
    ));
    println!(
        "operator --max-concurrent: {}",
        max_concurrent.as_deref().unwrap_or("default (8)")
    );

    let mut results: Vec<(usize, usize, Vec<Sample>)> = Vec::new();
    let mut seq = 0usize;
    for (size, count) in groups {
        let mut samples = Vec::with_capacity(size * count);
        for batch in 0..count {
            let started = Instant::now();
            let names: Vec<String> = (0..size)
                .map(|i| {
                    seq += 1;
                    format!("b{size}-{batch}-{i}-{seq}")
                })
                .collect();
            let ids: Vec<String> = futures::future::join_all(
                names
                    .iter()
                    .map(|n| run.spawn(n, ContainerSpec::sh(CRASH_ONCE).label("role", "target"))),
            )
            .await;
            let batch_samples = measure_batch(&op, &events, &ids).await;
            eprintln!(
                "batch of {size} #{batch}: die→call {:?} ({:.1} s)",
                batch_samples
                    .iter()
                    .map(|s| format!("{:.0} ms", ms(s.die_to_call)))
                    .collect::<Vec<_>>(),
                started.elapsed().as_secs_f64()
            );
            samples.extend(batch_samples);
            let mut rm = vec!["rm", "-f"];
            rm.extend(ids.iter().map(String::as_str));
            run.docker_cli(&rm);
        }
        results.push((size, count, samples));
    }

    println!();
    println!(
        "| batch size × batches | crashes | die → restart call | die → event delivered (engine) | die → running again |"
    );
    println!("|---|---|---|---|---|");
    for (size, count, samples) in &results {
        let pick = |f: fn(&Sample) -> Option<Duration>| -> Vec<Duration> {
            samples.iter().filter_map(f).collect()
        };
        println!(
            "| {size} × {count} | {} | {} | {} | {} |",
            samples.len(),
            quantiles(&pick(|s| Some(s.die_to_call))),
            quantiles(&pick(|s| Some(s.die_to_delivered))),
            quantiles(&pick(|s| s.die_to_running)),
        );
    }
    println!("(each cell: p50 / p95 / p99 / max in ms)");
    machine::print_final_load();
    if let Ok(path) = std::env::var("HEMOSTAT_BENCH_LOG") {
        std::fs::write(&path, op.log_text()).expect("write HEMOSTAT_BENCH_LOG");
    }
    drop(op);
    run.cleanup();
}

/// Parses `HEMOSTAT_BENCH_BATCHES` (`5x10,1x10`) into (size, count) pairs.
fn batches_from_env() -> Vec<(usize, usize)> {
    let spec = std::env::var("HEMOSTAT_BENCH_BATCHES").unwrap_or_else(|_| "5x10,1x10,25x2".into());
    spec.split(',')
        .map(|group| {
            let (size, count) = group
                .trim()
                .split_once('x')
                .unwrap_or_else(|| panic!("HEMOSTAT_BENCH_BATCHES: {group:?} is not SIZExCOUNT"));
            let parse = |s: &str| -> usize {
                s.parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| panic!("HEMOSTAT_BENCH_BATCHES: bad number {s:?}"))
            };
            (parse(size), parse(count))
        })
        .collect()
}

/// Waits until every container of the batch has been restarted and back, and measures each.
async fn measure_batch(op: &Operator, events: &Events, ids: &[String]) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let audit = op.audit().await;
        let started: HashMap<&str, DateTime<Utc>> = audit
            .iter()
            .filter(|r| r["action"] == "restart")
            .filter_map(|r| {
                let at = r["action_started_at"].as_str()?;
                let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
                Some((r["container_id"].as_str()?, at))
            })
            .collect();
        let seen = events.lock().unwrap().clone();
        let samples: Option<Vec<Sample>> = ids
            .iter()
            .map(|id| {
                let call = *started.get(id.as_str())?;
                let evs = seen.get(id)?;
                let die_pos = evs.iter().position(|e| e.action == "die")?;
                let die = evs[die_pos].at;
                // The start that follows the die is the restart (`docker restart` of an exited
                // container emits `start` then `restart`).
                let back = evs[die_pos..]
                    .iter()
                    .find(|e| e.action == "start")
                    .map(|e| e.at);
                back?; // wait until it is running again
                Some(Sample {
                    die_to_call: (call - die).to_std().unwrap_or(Duration::ZERO),
                    die_to_delivered: (evs[die_pos].received - die)
                        .to_std()
                        .unwrap_or(Duration::ZERO),
                    die_to_running: back.and_then(|t| (t - die).to_std().ok()),
                })
            })
            .collect();
        if let Some(samples) = samples {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "the batch {ids:?} was not repaired within 60 s; operator log:\n{}",
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
