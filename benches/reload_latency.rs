//! Time from a change of a `--policies` file to the new version being in force, on the real
//! binary.
//!
//! ```text
//! cargo bench --bench reload_latency
//! HEMOSTAT_BENCH_CHANGES=100 cargo bench --bench reload_latency
//! ```
//!
//! Starts the `hemostat` binary that cargo built with this bench with `--policies` on a
//! directory laid out as a Kubernetes ConfigMap volume (`..data` symlink to a timestamped
//! directory, the key a symlink through it) plus a plain file, and no periodic rescan
//! (`--policies-rescan-interval 1h`): only the watcher can notice a change. Then, for each of
//! three kinds of change, `HEMOSTAT_BENCH_CHANGES` times (default 40): changes a policy's
//! priority and polls `/api/v1/policies` every 5 ms until the new priority is served.
//!
//! - **write in place**: the plain file rewritten (`std::fs::write`);
//! - **rename over**: a temp file written and renamed over the plain file (what editors do);
//! - **ConfigMap swap**: a new data directory, `..data` swapped with one rename.

#[path = "../tests/operator/mod.rs"]
mod operator;
#[path = "../tests/support/mod.rs"]
mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use operator::{Operator, policy_for_run};
use support::TestRun;

fn policy(name: &str, run: &TestRun, priority: usize) -> String {
    policy_for_run(
        name,
        &run.run_id,
        &format!("  priority: {priority}\n  probes:\n    exit: {{nonZeroOnly: true}}\n"),
    )
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench targets too: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench <name>`");
        return;
    }
    let changes: usize = std::env::var("HEMOSTAT_BENCH_CHANGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(40);
    let run = TestRun::new();
    let dir = tempfile::tempdir().expect("a temp dir");
    let root = dir.path().join("policies");
    std::fs::create_dir_all(&root).unwrap();
    let mut configmap = ConfigMap::new(root.join("configmap"));
    configmap.update("cm.yaml", &policy("cm", &run, 0));
    let plain = root.join("plain.yaml");
    std::fs::write(&plain, policy("plain", &run, 0)).unwrap();
    let op = Operator::start(
        &root,
        &run.label,
        &dir.path().join("state"),
        &["--policies-rescan-interval", "1h"],
    )
    .await;
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let http = reqwest::Client::new();
    let mut rows = Vec::new();
    for kind in ["write in place", "rename over", "ConfigMap swap"] {
        let mut samples = Vec::with_capacity(changes);
        for i in 1..=changes {
            // Let the previous change's events settle (the debounce is 200 ms).
            tokio::time::sleep(Duration::from_millis(300)).await;
            let name = if kind == "ConfigMap swap" {
                "cm"
            } else {
                "plain"
            };
            let text = policy(name, &run, i);
            let started = Instant::now();
            match kind {
                "write in place" => std::fs::write(&plain, &text).unwrap(),
                "rename over" => {
                    let tmp = root.join(".plain.yaml.tmp");
                    std::fs::write(&tmp, &text).unwrap();
                    std::fs::rename(&tmp, &plain).unwrap();
                }
                _ => configmap.update("cm.yaml", &text),
            }
            samples.push(wait_for_priority(&http, &op.base, name, i, started).await);
        }
        eprintln!("{kind}: {}", quantiles(&samples));
        rows.push((kind, samples));
    }
    println!();
    println!("| change | changes | file change → in force |");
    println!("|---|---|---|");
    for (kind, samples) in &rows {
        println!("| {kind} | {} | {} |", samples.len(), quantiles(samples));
    }
    println!("(p50 / p95 / p99 / max in ms)");
    println!(
        "load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    drop(op);
    run.cleanup();
}

async fn wait_for_priority(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    priority: usize,
    started: Instant,
) -> Duration {
    loop {
        let views: serde_json::Value = http
            .get(format!("{base}/api/v1/policies"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let now = views
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == name && p["priority"].as_u64() == Some(priority as u64));
        if now {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} priority {priority} never came into force"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A ConfigMap volume as the kubelet writes it (see tests/e2e_reload.rs).
struct ConfigMap {
    dir: PathBuf,
    generation: u32,
}

impl ConfigMap {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, generation: 0 }
    }

    fn update(&mut self, key: &str, text: &str) {
        self.generation += 1;
        let data = format!("..data_{:06}", self.generation);
        let data_dir: &Path = &self.dir.join(&data);
        std::fs::create_dir(data_dir).unwrap();
        std::fs::write(data_dir.join(key), text).unwrap();
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        symlink(&data, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        if self.dir.join(key).symlink_metadata().is_err() {
            symlink(format!("..data/{key}"), self.dir.join(key)).unwrap();
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `p50 / p95 / p99 / max` in milliseconds.
fn quantiles(samples: &[Duration]) -> String {
    let mut v: Vec<f64> = samples.iter().copied().map(ms).collect();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "{:.0} / {:.0} / {:.0} / {:.0}",
        at(0.5),
        at(0.95),
        at(0.99),
        v[v.len() - 1]
    )
}
