//! What the operator costs as the number of governed containers grows: 50 → 200 → 1000.
//!
//! ```text
//! cargo bench --bench scale
//! HEMOSTAT_BENCH_SIZES=50,200,1000 HEMOSTAT_BENCH_SECONDS=60 HEMOSTAT_BENCH_INTERVAL=5s cargo bench --bench scale
//! ```
//!
//! Starts the release `hemostat` binary (`--sample-interval 5s`, every other setting its
//! default: resync 30s, `--log-level info`, an in-memory store persisted to a temp dir) with
//! the original system's defaults as the policy (exit, healthcheck, OOM, restart loop, CPU 85 %
//! for 2 m, memory 80 % for 1 m, restart), governing every container of the run. Then, for
//! each size, it adds busybox sleepers (FROM scratch, named `hs-scale-…`) up to that size,
//! created 8 at a time, waits until the operator lists them all and two sampling passes went
//! by, and measures over a window (default 60 s):
//!
//! - the operator's CPU time, `utime + stime` of `/proc/<pid>/stat`, as % of one core: time
//!   it consumed, so other load on the machine does not inflate it;
//! - its `VmRSS` every second (average, maximum) and `VmHWM` at the end;
//! - its sampling pass (`hemostat_sample_pass_duration_seconds` sum / count over the window);
//! - reconciles per second (`hemostat_reconciles_total`);
//!
//! and, in this process, 20 passes of `Sampler::sample` with the cgroup reader over the same
//! containers (median, max), and at the size `HEMOSTAT_BENCH_API_AT` (default 200) 3 passes
//! with the engine's stats API only (no cgroup files: what `--cgroup-root` pointing nowhere
//! does) at the default concurrency. Every container is removed at the end.

#[path = "support/machine.rs"]
mod machine;

#[path = "../tests/operator/mod.rs"]
mod operator;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hemostat::engine::ContainerEngine;
use hemostat::observe::sampler::{CgroupReader, DEFAULT_CGROUP_ROOT, DEFAULT_CONCURRENCY, Sampler};
use operator::{Operator, free_port, policy_dir, policy_for_run};
use support::{ContainerSpec, TestRun};

/// The original system's defaults (policies/hemostat-default.yaml), for the run's containers.
const POLICY: &str = "  probes:\n    exit: {nonZeroOnly: true}\n    healthcheck: {unhealthyFor: 0s}\n    oomKilled: {}\n    restartLoop: {restarts: 5, within: 10m}\n    cpu: {abovePercent: 85, for: 2m}\n    memory: {abovePercent: 80, for: 1m}\n  remediation:\n    actions: [restart]\n    stopTimeout: 10s\n    cooldown: 1h\n    maxActions: {count: 3, per: 1h}\n    circuitBreaker: {failures: 3, within: 1h, openFor: 1h}\n";

struct Row {
    size: usize,
    cpu_percent: f64,
    rss_avg_kib: f64,
    rss_max_kib: u64,
    hwm_kib: u64,
    op_pass_ms: f64,
    reconciles_per_s: f64,
    cgroup_pass: (Duration, Duration),
    api_pass: Option<(Duration, Duration, usize)>,
    load: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench targets too: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench <name>`");
        return;
    }
    let sizes: Vec<usize> = env_or("HEMOSTAT_BENCH_SIZES", "50,200,1000")
        .split(',')
        .map(|s| s.trim().parse().expect("HEMOSTAT_BENCH_SIZES: numbers"))
        .collect();
    let window = Duration::from_secs(
        env_or("HEMOSTAT_BENCH_SECONDS", "60")
            .parse()
            .expect("HEMOSTAT_BENCH_SECONDS: a number"),
    );
    let interval = env_or("HEMOSTAT_BENCH_INTERVAL", "5s");
    let interval_d = humantime::parse_duration(&interval).expect("HEMOSTAT_BENCH_INTERVAL");
    let api_at: usize = env_or("HEMOSTAT_BENCH_API_AT", "200")
        .parse()
        .expect("HEMOSTAT_BENCH_API_AT: a number");

    let run = TestRun::named("hs-scale-");
    support::busybox_image().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let policies = policy_dir(dir.path(), &policy_for_run("scale", &run.run_id, POLICY));
    let op = Operator::start_exactly(
        free_port(),
        &policies,
        &run.label,
        &dir.path().join("state"),
        &["--sample-interval", &interval, "--log-level", "info"],
        &[],
    )
    .await;
    let pid = op.pid();
    machine::print(&format!(
        "hemostat binary {} ({}), --sample-interval {interval}, pid {pid}",
        env!("CARGO_BIN_EXE_hemostat"),
        machine::profile()
    ));
    let docker = Arc::new(support::docker().await);
    let host = docker.host_info().await.expect("host info");

    let mut rows = Vec::new();
    let mut have = 0usize;
    for &size in &sizes {
        let started = Instant::now();
        let spawned: Vec<String> = futures::stream::iter(have..size)
            .map(|i| {
                let run = &run;
                async move {
                    run.spawn(
                        &format!("s{i}"),
                        ContainerSpec::sleeper().label("role", "target"),
                    )
                    .await
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        have += spawned.len();
        eprintln!(
            "{size} containers: started {} more in {:.1} s; {}",
            spawned.len(),
            started.elapsed().as_secs_f64(),
            meminfo()
        );
        wait_listed(&op, size).await;
        // The first pass after a container appears yields no usage: let two go by.
        tokio::time::sleep(interval_d * 2 + Duration::from_secs(5)).await;

        let containers = docker
            .list_containers(Some(&run.label))
            .await
            .expect("list containers");
        assert_eq!(containers.len(), size);

        let load = loadavg();
        let before = op.get_text("/metrics").await;
        let cpu0 = cpu_ticks(pid);
        let t0 = Instant::now();
        let mut rss = Vec::new();
        while t0.elapsed() < window {
            rss.push(status_kib(pid, "VmRSS:"));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let cpu1 = cpu_ticks(pid);
        let secs = t0.elapsed().as_secs_f64();
        let after = op.get_text("/metrics").await;
        let hwm = status_kib(pid, "VmHWM:");
        let ticks = clock_ticks();
        let delta = |name: &str| metric(&after, name) - metric(&before, name);
        let op_pass_ms = delta("hemostat_sample_pass_duration_seconds_sum")
            / delta("hemostat_sample_pass_duration_seconds_count").max(1.0)
            * 1e3;

        // The same containers, sampled in this process.
        let mut sampler =
            Sampler::new(docker.clone(), Some(CgroupReader::new(DEFAULT_CGROUP_ROOT)));
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let n = sampler.sample(&containers, &host).await.len();
            times.push(t.elapsed());
            assert!(times.len() == 1 || n == size, "cgroup pass: {n} usages");
        }
        let cgroup_pass = (median(&times), *times.iter().max().unwrap());
        let api_pass = if size == api_at {
            let mut sampler = Sampler::new(docker.clone(), None);
            let mut times = Vec::new();
            let mut usages = 0;
            for _ in 0..3 {
                let t = Instant::now();
                usages = sampler.sample(&containers, &host).await.len();
                times.push(t.elapsed());
            }
            Some((median(&times), *times.iter().max().unwrap(), usages))
        } else {
            None
        };

        let row = Row {
            size,
            cpu_percent: (cpu1 - cpu0) as f64 / ticks / secs * 100.0,
            rss_avg_kib: rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64,
            rss_max_kib: rss.iter().copied().max().unwrap_or(0),
            hwm_kib: hwm,
            op_pass_ms,
            reconciles_per_s: delta("hemostat_reconciles_total") / secs,
            cgroup_pass,
            api_pass,
            load: format!("{load} → {}", loadavg()),
        };
        eprintln!(
            "{size}: CPU {:.2} %, RSS {:.1} MiB, pass {:.1} ms, in-process cgroup pass {:.1} / {:.1} ms, stats API pass {:?}",
            row.cpu_percent,
            row.rss_avg_kib / 1024.0,
            row.op_pass_ms,
            ms(row.cgroup_pass.0),
            ms(row.cgroup_pass.1),
            row.api_pass.map(|(m, x, u)| (ms(m), ms(x), u))
        );
        rows.push(row);
    }

    println!();
    println!(
        "| containers | operator CPU (% of one core) | RSS avg / max (MiB) | VmHWM (MiB) | operator's sampling pass, avg (ms) | reconciles/s | Sampler::sample, cgroup files, median / max (ms) | load average (1 min) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.1} / {:.1} | {:.1} | {:.1} | {:.1} | {:.1} / {:.1} | {} |",
            r.size,
            r.cpu_percent,
            r.rss_avg_kib / 1024.0,
            r.rss_max_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0,
            r.op_pass_ms,
            r.reconciles_per_s,
            ms(r.cgroup_pass.0),
            ms(r.cgroup_pass.1),
            r.load
        );
    }
    for r in &rows {
        if let Some((median, max, usages)) = r.api_pass {
            println!(
                "\nstats API only (no cgroup files), {} containers, concurrency {DEFAULT_CONCURRENCY}: pass median {:.0} ms, max {:.0} ms ({usages} usages in the last pass)",
                r.size,
                ms(median),
                ms(max)
            );
        }
    }
    println!("window {} s per size; {}", window.as_secs(), meminfo());
    machine::print_final_load();
    drop(op);
    let t = Instant::now();
    run.cleanup();
    eprintln!(
        "removed the containers in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// Waits until the operator's API lists `n` containers.
async fn wait_listed(op: &Operator, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let listed = op
            .get("/api/v1/containers")
            .await
            .as_array()
            .map_or(0, Vec::len);
        if listed >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the operator lists {listed} of {n} containers after 300 s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the operator's stat");
    // After the `(comm)` field: state is field 3; utime, stime are fields 14, 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("run getconf CLK_TCK");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK is a number")
}

/// A `Vm…:` line of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A metric's value in a Prometheus text page (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

fn meminfo() -> String {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    format!(
        "host memory available {:.1} GiB of {:.1} GiB",
        get("MemAvailable:") as f64 / 1048576.0,
        get("MemTotal:") as f64 / 1048576.0
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(values: &[Duration]) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    v[v.len() / 2]
}
