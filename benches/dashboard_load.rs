//! The dashboard under load: a screenshot of the overview at 50 containers, then the operator's CPU and RSS on 200 containers with 0 and with 10 dashboards open.
//!
//! ```text
//! cargo bench --bench dashboard_load
//! HEMOSTAT_BENCH_CONTAINERS=200 HEMOSTAT_BENCH_DASHBOARDS=10 HEMOSTAT_BENCH_SECONDS=60 cargo bench --bench dashboard_load
//! ```
//!
//! Starts 50 containers of the busybox test image under two policies (sleepers holding some
//! up to 6 MiB under a 32 MiB limit, a few CPU burners capped at 0.1 core, crashers restarted on
//! demand, one failing healthcheck), `hemostat run` (the release binary, `--sample-interval 2s`,
//! `--log-level info`) and a headless Chromium; writes `docs/dashboard-overview-50.png`
//! (1600×2200, light) and `docs/dashboard-phone-dark.png` (390×844, dark). Then adds sleepers up
//! to N (default 200) and measures the operator process (utime+stime and VmRSS from
//! `/proc/<pid>`) over SECONDS (default 60) with no page open, then with DASHBOARDS (default 10)
//! headless Chromiums each showing the overview (one browser each: a browser opens at most 6
//! connections to one host, and every open dashboard holds one for its event stream). A crasher is crashed every 10 s in both windows, so the
//! pages receive events. Containers are removed at the end.

#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/webdriver/mod.rs"]
mod webdriver;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use support::{ContainerSpec, TestRun};
use webdriver::Browser;

const CRASH_ON_DEMAND: &str =
    "while [ ! -f /tmp/crash ]; do sleep 0.1; done; rm /tmp/crash; exit 3";
const CRASHERS: usize = 3;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: {v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sleeper holding `kib` KiB in a shell variable.
fn holder(kib: usize) -> ContainerSpec {
    ContainerSpec::sh(&format!(
        "x=$(head -c {} /dev/zero | tr '\\0' a); sleep 3600; echo ${{#x}}",
        kib * 1024
    ))
    .memory(32 << 20)
}

fn spec(i: usize) -> (String, ContainerSpec) {
    // Crashers are workers: their policy's 1 s cooldown lets every crash be repaired.
    let tier = if i < CRASHERS || i.is_multiple_of(3) {
        "worker"
    } else {
        "web"
    };
    let (name, spec) = match i {
        0..CRASHERS => (
            format!("crasher-{i}"),
            ContainerSpec::sh(CRASH_ON_DEMAND).memory(32 << 20),
        ),
        3 | 4 => (
            format!("burner-{i}"),
            ContainerSpec::busy_loop().cpus(0.1).memory(32 << 20),
        ),
        5 => (
            "flaky-health".to_owned(),
            ContainerSpec::sleeper().healthcheck(
                ["sh", "-c", "echo 'db unreachable'; exit 1"],
                Duration::from_secs(2),
                1,
            ),
        ),
        _ => (format!("{tier}-{i:03}"), holder(256 + (i * 997) % 6_000)),
    };
    (name, spec.label("tier", tier))
}

struct Op {
    child: Child,
    base: String,
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_operator(run: &TestRun, dir: &std::path::Path) -> Op {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let policy = |name: &str, tier: &str, cooldown: &str| {
        format!(
            "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {{hemostat.test.run: \"{}\", tier: {tier}}}\n  probes:\n    exit: {{nonZeroOnly: true}}\n    healthcheck: {{unhealthyFor: 0s}}\n    memory: {{abovePercent: 95, for: 1h}}\n  remediation:\n    actions: [restart]\n    cooldown: {cooldown}\n    maxActions: {{count: 1000, per: 1h}}\n    circuitBreaker: {{failures: 1000, within: 1h, openFor: 1m}}\n    verifyWithin: 10s\n",
            run.run_id
        )
    };
    std::fs::write(
        policies.join("bench.yaml"),
        format!(
            "{}---\n{}",
            policy("web-tier", "web", "1h"),
            policy("workers", "worker", "1s")
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args(["run", "--policies"])
        .arg(&policies)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--label-filter", &run.label])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--sample-interval", "2s", "--log-level", "info"])
        .env("HEMOSTAT_NODE_NAME", "bench-node")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("operator.log")).unwrap())
        .spawn()
        .expect("hemostat binary");
    Op {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// utime+stime (seconds) and VmRSS (bytes) of a process.
fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    (ticks / 100.0, rss_kib * 1024)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Measures the operator over `secs`, crashing a crasher every 10 s.
async fn measure(run: &TestRun, pid: u32, secs: u64) -> (f64, u64, u64) {
    let (cpu0, _) = cpu_and_rss(pid);
    let started = Instant::now();
    let (mut max_rss, mut sum_rss, mut n) = (0u64, 0u64, 0u64);
    let mut next_crash = Instant::now();
    let mut k = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        if Instant::now() >= next_crash {
            let name = run.name(&format!("crasher-{}", k % CRASHERS));
            let _ = Command::new("docker")
                .args(["exec", &name, "touch", "/tmp/crash"])
                .status();
            k += 1;
            next_crash += Duration::from_secs(10);
        }
        let (_, rss) = cpu_and_rss(pid);
        max_rss = max_rss.max(rss);
        sum_rss += rss;
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (cpu1, _) = cpu_and_rss(pid);
    let wall = started.elapsed().as_secs_f64();
    ((cpu1 - cpu0) / wall * 100.0, sum_rss / n.max(1), max_rss)
}

/// Opens the dashboard, again if Chromium aborted the navigation (it does when Docker adds a
/// network interface for a new container: ERR_NETWORK_CHANGED).
async fn open(browser: &Browser, url: &str) {
    for _ in 0..10 {
        browser.goto(url).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if browser
            .js("return !!document.getElementById('conn')", json!([]))
            .await
            == true
        {
            return;
        }
    }
    panic!("the dashboard would not load at {url}");
}

async fn wait_cards(browser: &Browser, n: usize) {
    browser
        .wait_js(
            Duration::from_secs(120),
            &format!("{n} cards with figures"),
            "return [...document.querySelectorAll('article.card .v.mem')].filter(e => e.textContent.endsWith('%')).length >= arguments[0]",
            json!([n]),
        )
        .await;
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench <name>`");
        return;
    }
    let total = env_usize("HEMOSTAT_BENCH_CONTAINERS", 200).max(50);
    let tabs = env_usize("HEMOSTAT_BENCH_DASHBOARDS", 10).max(1);
    let secs = env_usize("HEMOSTAT_BENCH_SECONDS", 60) as u64;
    let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/docs");
    let run = TestRun::new();
    support::busybox_image().await;
    let dir = tempfile::tempdir().unwrap();
    eprintln!("load average at start: {}", load());

    let spawn = |range: std::ops::Range<usize>| {
        let run = &run;
        futures::stream::iter(range)
            .map(move |i| async move {
                let (name, spec) = spec(i);
                run.spawn(&name, spec).await
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
    };
    spawn(0..50).await;
    let op = start_operator(&run, dir.path());
    let browser = Browser::start_with(
        1600,
        1000,
        &[
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    open(&browser, &format!("{}/", op.base)).await;
    wait_cards(&browser, 40).await;
    for i in 0..CRASHERS {
        let _ = Command::new("docker")
            .args([
                "exec",
                &run.name(&format!("crasher-{i}")),
                "touch",
                "/tmp/crash",
            ])
            .status();
    }
    // Sparklines fill over a few samples.
    tokio::time::sleep(Duration::from_secs(16)).await;
    // Tall enough for the whole overview (a screenshot is of the viewport).
    browser.emulate(1600, 2200, false).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(
        format!("{docs}/dashboard-overview-50.png"),
        browser.screenshot_png().await,
    )
    .unwrap();
    browser.emulate(390, 844, true).await;
    browser.js("localStorage.setItem('hemostat-theme', 'dark'); document.documentElement.dataset.theme = 'dark';", json!([])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(
        format!("{docs}/dashboard-phone-dark.png"),
        browser.screenshot_png().await,
    )
    .unwrap();
    browser
        .js("localStorage.removeItem('hemostat-theme')", json!([]))
        .await;
    browser.goto("about:blank").await;
    eprintln!("screenshots written to {docs}");

    let more = Instant::now();
    spawn(50..total).await;
    eprintln!(
        "{total} containers running ({:.0} s to add the rest)",
        more.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pid = op.child.id();
    let (cpu0, avg0, max0) = measure(&run, pid, secs).await;
    eprintln!(
        "0 dashboards: operator CPU {cpu0:.1} % of one core, RSS avg {:.1} MiB, max {:.1} MiB; load {}",
        avg0 as f64 / 1048576.0,
        max0 as f64 / 1048576.0,
        load()
    );

    // One Chromium per dashboard: a browser opens at most 6 connections to one host, and each
    // open dashboard holds one for its event stream.
    drop(browser);
    let mut browsers = Vec::new();
    for _ in 0..tabs {
        let b = Browser::start(1600, 1000).await;
        open(&b, &format!("{}/", op.base)).await;
        browsers.push(b);
    }
    for b in &browsers {
        wait_cards(b, total - 20).await;
        b.js(
            "performance.setResourceTimingBufferSize(1000000)",
            json!([]),
        )
        .await;
    }
    let requests = || async {
        let mut n = 0;
        for b in &browsers {
            n += b
                .js(
                    "return performance.getEntriesByType('resource').length",
                    json!([]),
                )
                .await
                .as_u64()
                .unwrap_or(0);
        }
        n
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    let requests_before = requests().await;
    let (cpu1, avg1, max1) = measure(&run, pid, secs).await;
    let served = requests().await - requests_before;
    eprintln!(
        "the {tabs} pages made {served} API requests in {secs} s ({:.1}/s), besides their event streams",
        served as f64 / secs as f64
    );
    eprintln!(
        "{tabs} dashboards: operator CPU {cpu1:.1} % of one core, RSS avg {:.1} MiB, max {:.1} MiB; load {}",
        avg1 as f64 / 1048576.0,
        max1 as f64 / 1048576.0,
        load()
    );
    let m = reqwest::get(format!("{}/metrics", op.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in m.lines().filter(|l| {
        l.starts_with("hemostat_sample_pass_duration_seconds_sum")
            || l.starts_with("hemostat_sample_pass_duration_seconds_count")
            || l.starts_with("hemostat_containers_observed")
    }) {
        eprintln!("{line}");
    }
    println!("| containers | dashboards | operator CPU (% of one core) | RSS avg | RSS max |");
    println!("|---|---|---|---|---|");
    println!(
        "| {total} | 0 | {cpu0:.1} | {:.1} MiB | {:.1} MiB |",
        avg0 as f64 / 1048576.0,
        max0 as f64 / 1048576.0
    );
    println!(
        "| {total} | {tabs} | {cpu1:.1} | {:.1} MiB | {:.1} MiB |",
        avg1 as f64 / 1048576.0,
        max1 as f64 / 1048576.0
    );
    drop(browsers);
    drop(op);
    run.cleanup();
}
