//! Time from a crash to HemoStat's restart call with `analysis.mode: ai`, on the real engine,
//! against a local OpenAI-compatible model that answers in 1 s, and one that hangs.
//!
//! ```text
//! cargo bench --bench ai_latency
//! HEMOSTAT_BENCH_AI_BATCHES=1x5,5x2 cargo bench --bench ai_latency
//! ```
//!
//! For each scenario (`rules` as the baseline, `ai` with a model answering `restart` after
//! 1 s, `ai` with a model that never answers so the policy's 10 s timeout applies) it starts
//! `hemostat run` and a local chat-completions server, then batches of containers that crash
//! once (exit 3 one second after start) and stay up after the restart. Per container:
//!
//! - **crash → restart call**: the audit record's `action_started_at` minus the container's
//!   `State.FinishedAt` of its first life (read after the restart: it is kept until the next exit);
//! - **crash → running again**: `State.StartedAt` after the restart minus that `FinishedAt`.
//!
//! `HEMOSTAT_BENCH_AI_BATCHES` is `SIZExCOUNT,…` (default `1x5,5x2`). Every container is
//! removed at the end of its batch.

#[path = "../tests/llm_support/mod.rs"]
mod llm_support;
#[path = "../tests/operator/mod.rs"]
mod operator;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use llm_support::{Behaviour, FakeLlm};
use operator::{Operator, policy_dir, policy_for_run};
use support::{ContainerSpec, TestRun};

/// Crashes with code 3 in its first life, then stays up (a marker survives the restart).
const CRASH_ONCE: &str =
    "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep 1; exit 3";

fn policy(mode: &str) -> String {
    format!(
        "  probes:\n    exit: {{nonZeroOnly: true}}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    maxActions: {{count: 1000, per: 1h}}\n    verifyWithin: 20s\n  analysis: {{mode: {mode}}}\n"
    )
}

#[derive(Clone)]
struct Sample {
    to_call: Duration,
    to_running: Duration,
    /// `rules`, `ai`, or `rule_based_fallback: timeout|breaker open|busy|other`.
    path: String,
}

/// How the decision was reached, in a few words.
fn path_of(record: &serde_json::Value) -> String {
    let method = record["analysis_method"].as_str().unwrap_or("?");
    let Some(why) = record["fallback_reason"].as_str() else {
        return method.to_owned();
    };
    let kind = if why.contains("did not answer within") {
        "timeout"
    } else if why.contains("failed repeatedly") {
        "breaker open"
    } else if why.contains("already in flight") {
        "busy (--ai-max-concurrent)"
    } else {
        "other"
    };
    format!("{method}: {kind}")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn quantiles(values: &[Duration]) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let mut v: Vec<f64> = values.iter().map(|d| ms(*d)).collect();
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    format!("{:.0} / {:.0} / {:.0}", q(0.5), q(0.95), v[v.len() - 1])
}

fn batches_from_env() -> Vec<(usize, usize)> {
    let spec = std::env::var("HEMOSTAT_BENCH_AI_BATCHES").unwrap_or_else(|_| "1x5,5x2".into());
    spec.split(',')
        .map(|g| {
            let (s, c) = g.trim().split_once('x').expect("SIZExCOUNT");
            (s.parse().expect("a size"), c.parse().expect("a count"))
        })
        .collect()
}

fn time(raw: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(raw.trim())
        .unwrap_or_else(|e| panic!("bad time {raw:?}: {e}"))
        .with_timezone(&Utc)
}

fn gap(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

async fn measure(op: &Operator, run: &TestRun, ids: &[String], names: &[String]) -> Vec<Sample> {
    let mut out = Vec::new();
    for (id, name) in ids.iter().zip(names) {
        let record = op
            .wait_audit(name, 60, "the crash is repaired", |r| {
                r["status"] == "success"
            })
            .await;
        let called = time(
            record["action_started_at"]
                .as_str()
                .expect("action_started_at"),
        );
        let inspected = run.docker_cli(&[
            "inspect",
            "-f",
            "{{.State.FinishedAt}} {{.State.StartedAt}}",
            id,
        ]);
        let (finished, started) = inspected.split_once(' ').unwrap();
        let died = time(finished);
        out.push(Sample {
            to_call: gap(died, called),
            to_running: gap(died, time(started)),
            path: path_of(&record),
        });
    }
    out
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench targets too: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench <name>`");
        return;
    }
    support::busybox_image().await;
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let scenarios: Vec<(&str, &str, Behaviour)> = vec![
        ("rules (baseline)", "rules", Behaviour::Status(500)),
        (
            "ai, model answers in 1 s",
            "ai",
            Behaviour::After(
                Duration::from_secs(1),
                Box::new(Behaviour::answer(
                    "restart",
                    0.9,
                    "it crashed; restart it",
                    "unknown",
                )),
            ),
        ),
        ("ai, model hangs (timeout 10 s)", "ai", Behaviour::Hang),
    ];
    let groups = batches_from_env();
    let mut table = Vec::new();
    for (label, mode, behaviour) in scenarios {
        let run = TestRun::new();
        let dir = tempfile::tempdir().expect("a temp dir");
        let llm = FakeLlm::start(move |_| behaviour.clone()).await;
        let base = llm.openai_base();
        let policies = policy_dir(
            dir.path(),
            &policy_for_run("bench-ai", &run.run_id, &policy(mode)),
        );
        let op = Operator::start_with_env(
            &policies,
            &run.label,
            &dir.path().join("state"),
            &[],
            &[
                ("OPENAI_API_KEY", "sk-bench"),
                ("OPENAI_BASE_URL", base.as_str()),
                ("AI_MODEL", "gpt-bench"),
            ],
        )
        .await;
        let mut seq = 0;
        for (size, count) in &groups {
            let mut samples = Vec::new();
            for batch in 0..*count {
                let names: Vec<String> = (0..*size)
                    .map(|i| {
                        seq += 1;
                        format!("a{size}-{batch}-{i}-{seq}")
                    })
                    .collect();
                let started = Instant::now();
                let ids: Vec<String> =
                    futures::future::join_all(names.iter().map(|n| {
                        run.spawn(n, ContainerSpec::sh(CRASH_ONCE).label("role", "target"))
                    }))
                    .await;
                let full: Vec<String> = names.iter().map(|n| run.name(n)).collect();
                let got = measure(&op, &run, &ids, &full).await;
                eprintln!(
                    "{label}, batch of {size} #{batch}: crash→call {:?} ({:.1} s)",
                    got.iter()
                        .map(|s| format!("{:.0} ms ({})", ms(s.to_call), s.path))
                        .collect::<Vec<_>>(),
                    started.elapsed().as_secs_f64()
                );
                samples.extend(got);
                let mut rm = vec!["rm", "-f"];
                rm.extend(ids.iter().map(String::as_str));
                run.docker_cli(&rm);
            }
            let mut by_path: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
            for sample in samples {
                by_path.entry(sample.path.clone()).or_default().push(sample);
            }
            for (path, samples) in by_path {
                table.push((label, *size, *count, path, samples));
            }
        }
        drop(op);
        run.cleanup();
    }
    println!();
    println!(
        "| scenario | crashing at once × batches | decided by | crashes | crash → restart call | crash → running again |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, size, count, path, samples) in &table {
        let calls: Vec<Duration> = samples.iter().map(|s| s.to_call).collect();
        let running: Vec<Duration> = samples.iter().map(|s| s.to_running).collect();
        println!(
            "| {label} | {size} × {count} | {path} | {} | {} | {} |",
            samples.len(),
            quantiles(&calls),
            quantiles(&running)
        );
    }
    println!("(each cell: p50 / p95 / max in ms)");
    println!(
        "load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
