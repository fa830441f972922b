//! The file source on a real filesystem, without the watcher: the periodic rescan alone (the
//! safety net where change notification does not work) and an on-demand reload (SIGHUP).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hemostat::metrics::Metrics;
use hemostat::policy::registry::PolicyRegistry;
use hemostat::policy::source::files::{FileSource, Reload};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

fn write_policy(dir: &Path, priority: i32) {
    let text = format!(
        "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata: {{name: p}}\nspec:\n  priority: {priority}\n  selector: {{matchNames: [\"x-*\"]}}\n  probes: {{exit: {{}}}}\n"
    );
    std::fs::write(dir.join("p.yaml"), text).unwrap();
}

struct Running {
    registry: Arc<PolicyRegistry>,
    metrics: Arc<Metrics>,
    reload: Arc<Notify>,
    published: Arc<std::sync::atomic::AtomicUsize>,
    shutdown: CancellationToken,
}

fn start(dir: &Path, how: Reload) -> Running {
    let source = FileSource::load(vec![dir.to_path_buf()]);
    let registry = Arc::new(PolicyRegistry::new(source.policies()));
    let metrics = Arc::new(Metrics::new());
    let reload = Arc::new(Notify::new());
    let published = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let (r, p) = (registry.clone(), published.clone());
    tokio::spawn(source.run(
        Box::new(move |set| {
            p.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            r.replace(set);
        }),
        registry.clone(),
        metrics.clone(),
        reload.clone(),
        how,
        shutdown.clone(),
    ));
    Running {
        registry,
        metrics,
        reload,
        published,
        shutdown,
    }
}

fn priority(r: &Running) -> i32 {
    r.registry.snapshot()[0].spec.priority
}

async fn wait_priority(r: &Running, want: i32, within: Duration) -> Duration {
    let start = Instant::now();
    while priority(r) != want {
        assert!(
            start.elapsed() < within,
            "priority {} after {within:?}, want {want}",
            priority(r)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn reloads(r: &Running, trigger: &str) -> f64 {
    let text = r.metrics.encode();
    let key = format!("hemostat_policy_reloads_total{{trigger=\"{trigger}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key)?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[tokio::test]
async fn without_a_watch_the_periodic_rescan_still_picks_up_a_change() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), 1);
    let r = start(
        dir.path(),
        Reload {
            rescan: Duration::from_secs(1),
            watch: false,
        },
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    write_policy(dir.path(), 2);
    let took = wait_priority(&r, 2, Duration::from_millis(1500)).await;
    eprintln!("picked up by the rescan after {took:?}");
    assert!(reloads(&r, "rescan") >= 1.0);
    assert_eq!(reloads(&r, "watch"), 0.0);
    r.shutdown.cancel();
}

#[tokio::test]
async fn a_reload_rescans_at_once_and_always_publishes() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), 1);
    let r = start(
        dir.path(),
        Reload {
            rescan: Duration::from_secs(3600),
            watch: false,
        },
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_policy(dir.path(), 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(priority(&r), 1, "nothing watches and no rescan is due");
    r.reload.notify_one();
    wait_priority(&r, 3, Duration::from_millis(500)).await;
    assert_eq!(reloads(&r, "sighup"), 1.0);
    // A reload with nothing changed still publishes (with Redis, it re-reads the applied set).
    let before = r.published.load(std::sync::atomic::Ordering::SeqCst);
    r.reload.notify_one();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        r.published.load(std::sync::atomic::Ordering::SeqCst),
        before + 1
    );
    r.shutdown.cancel();
}
