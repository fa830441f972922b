//! Publish throughput of the Redis bus: envelopes/s through the outbox into a real local redis-server.

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use hemostat::adapters::redis::{RedisBus, RedisConfig};
use hemostat::bus::EventSink;
use hemostat::model::wire::{Envelope, EventType};

const N: usize = 20_000;
const ROUNDS: usize = 3;

fn main() {
    // `cargo test --all-targets` runs bench targets too: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench <name>`");
        return;
    }
    let server = redis_support::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        // Room for the whole burst: this measures delivery, not the overflow policy.
        let config = RedisConfig::from_url(&server.url())
            .expect("config")
            .with_outbox_capacity(N);
        let bus = RedisBus::new(&config).expect("bus");
        for round in 1..=ROUNDS {
            let envelopes: Vec<Envelope> = (0..N)
                .map(|i| {
                    Envelope::new(
                        EventType::HealthAlert,
                        serde_json::json!({
                            "container": "web",
                            "issues": ["High CPU: 92.5%"],
                            "metrics": {"name": "web", "status": "running", "cpu_pct": 92.5, "memory_pct": 45.2},
                            "node": "node-a",
                            "seq": i,
                        }),
                    )
                })
                .collect();
            let before = bus.delivered();
            let started = Instant::now();
            for e in envelopes {
                bus.publish(e).await;
            }
            let enqueued = started.elapsed();
            assert!(bus.flush(Duration::from_secs(300)).await, "outbox did not drain");
            let total = started.elapsed();
            assert_eq!(bus.delivered() - before, N as u64);
            assert_eq!(bus.dropped(), 0);
            println!(
                "round {round}: {N} envelopes: publish() {:.1} µs each ({enqueued:?} in all); \
                 delivered to Redis (PUBLISH + XADD + 2×LPUSH/LTRIM/EXPIRE, MULTI per batch) in {total:?} \
                 = {:.0} envelopes/s",
                enqueued.as_secs_f64() * 1e6 / N as f64,
                N as f64 / total.as_secs_f64()
            );
        }
    });
}
