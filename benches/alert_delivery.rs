//! Alert delivery: the latency from an envelope to a local Slack-speaking server's `200 ok`, and
//! the cost of a storm of 200 alerts (routing time, messages, time to the last one, CPU).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hemostat::alert::metrics::AlertMetrics;
use hemostat::alert::router::{AlertRouter, BuildNotifier, History, RouterOptions};
use hemostat::alert::state::FileAlertState;
use hemostat::model::wire::{Envelope, EventType};
use hemostat::policy::registry::PolicyRegistry;
use hemostat::policy::{Channel, HumanDuration, SecretRef, SlackChannel};
use tokio_util::sync::CancellationToken;

const LATENCY_SAMPLES: usize = 50;
const STORM: usize = 200;

#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<(Instant, usize)>>>);

async fn slack_server(arrivals: Arrivals) -> String {
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let arrivals = arrivals.clone();
        async move {
            arrivals
                .0
                .lock()
                .unwrap()
                .push((Instant::now(), body.len()));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

fn completion(container: &str, policy: &str) -> Envelope {
    Envelope::new(
        EventType::RemediationComplete,
        serde_json::json!({"container": container, "action": "restart", "node": "node-a",
            "policy": policy, "decision_id": uuid::Uuid::new_v4().to_string(),
            "reason": "Exited with code 3", "container_id": "0123456789ab",
            "result": {"status": "success", "details": "container is back: state Running, health None"}}),
    )
}

fn router(url_file: &std::path::Path, group_wait: u64, state_dir: &std::path::Path) -> AlertRouter {
    let mut p = hemostat::policy::builtin::default_policy();
    p.metadata.name = "bench".into();
    p.spec.alerts.group_wait = HumanDuration::from_secs(group_wait);
    p.spec.alerts.resolve_after = HumanDuration::from_secs(0);
    p.spec.alerts.dedupe_for = HumanDuration::from_secs(0);
    p.spec.alerts.channels = vec![Channel::Slack(SlackChannel {
        webhook_url_from: SecretRef::File(url_file.display().to_string()),
    })];
    let client = hemostat::adapters::http_client(Duration::from_secs(10));
    let build: Arc<BuildNotifier> = Arc::new(move |spec| {
        hemostat::adapters::notifier_for(spec, &client, Duration::from_secs(10))
    });
    AlertRouter::new(
        Arc::new(PolicyRegistry::new(vec![p])),
        None,
        build,
        Arc::new(FileAlertState::new(state_dir)),
        AlertMetrics::default(),
        Arc::new(History::default()),
        RouterOptions::default(),
        CancellationToken::new(),
    )
}

async fn wait_for(arrivals: &Arrivals, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while arrivals.0.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "the server never got {n} messages"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench <name>`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let arrivals = Arrivals::default();
        let base = slack_server(arrivals.clone()).await;
        let url_file = dir.path().join("slack-url");
        std::fs::write(&url_file, format!("{base}/services/T0/B0/token")).unwrap();

        // 1. Latency, group wait 0: envelope handed to the router → 200 ok. Spaced by 1.1 s so
        // Slack's rate limit (1/s per webhook) never adds a wait.
        let mut r = router(&url_file, 0, dir.path());
        let mut samples = Vec::new();
        for i in 0..LATENCY_SAMPLES {
            let before = arrivals.0.lock().unwrap().len();
            let started = Instant::now();
            r.handle(&completion(&format!("web-{i}"), "bench")).await;
            wait_for(&arrivals, before + 1).await;
            let at = arrivals.0.lock().unwrap()[before].0;
            samples.push((at - started).as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        samples.sort_by(f64::total_cmp);
        println!(
            "latency (groupWait 0s), envelope → Slack 200 ok, {LATENCY_SAMPLES} alerts: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
            percentile(&samples, 0.5),
            percentile(&samples, 0.95),
            samples[samples.len() - 1]
        );

        // 2. A storm of 200 alerts with the default group wait (3s).
        let storm_arrivals = Arrivals::default();
        let base = slack_server(storm_arrivals.clone()).await;
        let storm_url = dir.path().join("storm-url");
        std::fs::write(&storm_url, format!("{base}/services/T0/B0/token")).unwrap();
        let mut r = router(&storm_url, 3, dir.path());
        let envelopes: Vec<Envelope> = (0..STORM).map(|i| completion(&format!("c{i:03}"), "bench")).collect();
        let cpu0 = cpu_seconds();
        let started = Instant::now();
        for e in &envelopes {
            r.handle(e).await;
        }
        let routed = started.elapsed();
        wait_for(&storm_arrivals, 1).await;
        tokio::time::sleep(Duration::from_secs(5)).await; // anything else that would follow
        let got = storm_arrivals.0.lock().unwrap().clone();
        let cpu = cpu_seconds() - cpu0;
        let last = got.last().unwrap().0 - started;
        println!(
            "storm of {STORM} alerts (groupWait 3s): routed in {:.2} ms ({:.1} µs per alert, never waiting on delivery); \
             {} Slack message(s), {} bytes, the last {:.2} s after the first alert; CPU {:.2} s for routing + rendering + sending",
            routed.as_secs_f64() * 1000.0,
            routed.as_secs_f64() * 1e6 / STORM as f64,
            got.len(),
            got.iter().map(|g| g.1).sum::<usize>(),
            last.as_secs_f64(),
            cpu
        );
    });
}
