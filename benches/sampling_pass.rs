//! One resource-sampling pass over 50 running containers, beside `docker stats --no-stream`.
//!
//! ```text
//! cargo bench --bench sampling_pass
//! HEMOSTAT_BENCH_CONTAINERS=50 HEMOSTAT_BENCH_PASSES=5 cargo bench --bench sampling_pass
//! ```
//!
//! Starts N sleepers (default 50; 3 of them burn CPU, each capped at a quarter of a
//! core so the machine stays usable), then times, over the same containers:
//!
//! - `Sampler::sample` with the `CgroupReader` on this machine's `/sys/fs/cgroup`
//!   (what `hemostat run` does by default);
//! - `Sampler::sample` with the engine's one-shot stats API only
//!   (`Sampler::new(docker, None)`), at concurrency 8 (at most 3 passes), at 50 and at the
//!   default (256; PASSES passes each), and one container at a time (one pass: ~1 s per
//!   container);
//! - `docker stats --no-stream <ids>` (wall time of the CLI);
//! - the original Python system's method, one container's non-one-shot stats call
//!   (`stream=false`, what docker-py's `container.stats(stream=False)` does: the engine
//!   waits for a second sample to compute a CPU delta), measured on a few containers.
//!
//! The cgroup sampler runs max(PASSES, 20) passes; `docker stats` min(PASSES, 5) runs.
//! Prints the median and maximum of each. Containers are removed at the end (`TestRun`).

#[path = "support/machine.rs"]
mod machine;

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::StatsOptionsBuilder;
use futures::StreamExt;
use hemostat::engine::ContainerEngine;
use hemostat::observe::sampler::{CgroupReader, DEFAULT_CGROUP_ROOT, DEFAULT_CONCURRENCY, Sampler};
use support::{ContainerSpec, TestRun};

const BUSY: usize = 3;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: {v:?} is not a number"))
        })
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench targets too: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench <name>`");
        return;
    }
    let n = env_usize("HEMOSTAT_BENCH_CONTAINERS", 50);
    let passes = env_usize("HEMOSTAT_BENCH_PASSES", 5).max(1);
    let run = TestRun::new();
    support::busybox_image().await;
    machine::print(machine::profile());

    let spawn_started = Instant::now();
    let ids: Vec<String> = futures::stream::iter(0..n)
        .map(|i| {
            let spec = if i < BUSY {
                ContainerSpec::busy_loop().cpus(0.25)
            } else {
                ContainerSpec::sleeper()
            };
            let run = &run;
            async move { run.spawn(&format!("s{i}"), spec).await }
        })
        .buffered(8)
        .collect()
        .await;
    eprintln!(
        "started {n} containers ({BUSY} busy) in {:.1} s",
        spawn_started.elapsed().as_secs_f64()
    );

    let docker = Arc::new(support::docker().await);
    let host = docker.host_info().await.expect("host info");
    let containers = docker
        .list_containers(Some(&run.label))
        .await
        .expect("list containers");
    assert_eq!(containers.len(), n, "listed {containers:?}");

    let cgroups = CgroupReader::new(DEFAULT_CGROUP_ROOT);
    let readable = ids.iter().filter(|id| cgroups.read(id).is_some()).count();
    println!("cgroup files readable under {DEFAULT_CGROUP_ROOT} for {readable} of {n} containers");
    assert_eq!(
        readable, n,
        "the cgroup figures would silently include the API fallback"
    );

    let mut rows: Vec<(String, Vec<Duration>)> = Vec::new();

    let mut sampler = Sampler::new(docker.clone(), Some(cgroups));
    let mut times = Vec::new();
    let mut usages = 0;
    for _ in 0..passes.max(20) {
        let t = Instant::now();
        usages = sampler.sample(&containers, &host).await.len();
        times.push(t.elapsed());
    }
    assert_eq!(
        usages, n,
        "every container yields a usage after the first pass"
    );
    rows.push(("Sampler::sample, cgroup v1 files".into(), times));

    // One pass one-at-a-time takes about N seconds (see docs/BENCHMARKS.md): run it once.
    for (label, concurrency, api_passes) in [
        (
            "Sampler::sample, stats API only, concurrency 8",
            8,
            passes.min(3),
        ),
        (
            "Sampler::sample, stats API only, concurrency 50",
            50,
            passes,
        ),
        (
            "Sampler::sample, stats API only, default concurrency (256)",
            DEFAULT_CONCURRENCY,
            passes,
        ),
        ("Sampler::sample, stats API only, one at a time", 1, 1),
    ] {
        let mut sampler = Sampler::new(docker.clone(), None).with_concurrency(concurrency);
        let mut times = Vec::new();
        let mut usages = 0;
        for _ in 0..api_passes {
            let t = Instant::now();
            usages = sampler.sample(&containers, &host).await.len();
            times.push(t.elapsed());
        }
        assert!(
            api_passes == 1 || usages == n,
            "{label}: only {usages} usages"
        );
        rows.push((label.into(), times));
    }

    let mut times = Vec::new();
    for _ in 0..passes.min(5) {
        let t = Instant::now();
        let out = run.docker_cli(
            &["stats", "--no-stream", "--no-trunc"]
                .into_iter()
                .chain(ids.iter().map(String::as_str))
                .collect::<Vec<_>>(),
        );
        times.push(t.elapsed());
        assert_eq!(out.lines().count(), n + 1, "docker stats printed:\n{out}");
    }
    rows.push((format!("docker stats --no-stream <{n} ids>"), times));

    // The original system: one blocking, non-one-shot stats call per container.
    let client = docker.client();
    let mut times = Vec::new();
    for id in ids.iter().take(5) {
        let options = StatsOptionsBuilder::new().stream(false).build();
        let t = Instant::now();
        let mut stream = client.stats(id, Some(options));
        stream
            .next()
            .await
            .expect("a stats sample")
            .expect("stats call");
        times.push(t.elapsed());
    }
    let per_container = median(&times);
    rows.push((
        "one container's stream=false stats call (the original's per-container read)".into(),
        times,
    ));

    println!();
    println!("| method | runs | median (ms) | max (ms) |");
    println!("|---|---|---|---|");
    for (label, times) in &rows {
        println!(
            "| {label} | {} | {:.1} | {:.1} |",
            times.len(),
            ms(median(times)),
            ms(*times.iter().max().unwrap())
        );
    }
    println!(
        "\nthe original's sequential pass over {n} containers would take ≈ {n} × {:.0} ms = {:.1} s",
        ms(per_container),
        per_container.as_secs_f64() * n as f64
    );
    machine::print_final_load();
    drop(run);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(values: &[Duration]) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    v[v.len() / 2]
}
