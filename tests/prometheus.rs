//! The shipped Prometheus rules pass promtool, and a real Prometheus scrapes the real operator and evaluates them.

mod operator;
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use operator::{Operator, free_port, policy_dir, policy_for_run};
use serde_json::Value;
use support::{ContainerSpec, TestRun};

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/rules.yml");
const RULE_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/prometheus/rules.test.yml"
);

const CRASH_ONCE: &str =
    "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep 1; exit 3";
const POLICY: &str = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    verifyWithin: 10s\n";

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_shipped_rules_pass_promtool_check_and_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", RULES], None);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&["test", "rules", RULE_TESTS], None);
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{RULES:?}]\nscrape_configs:\n  - job_name: hemostat\n    static_configs: [{{targets: [{target:?}]}}]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's prometheus package; scripts/test.sh installs it)");
        Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str) -> Option<Value> {
        let r = reqwest::get(format!("{}{path}", self.base)).await.ok()?;
        let v: Value = r.json().await.ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    /// The value of the instant query's first sample, if any.
    async fn value(&self, query: &str) -> Option<f64> {
        let q: String = query
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let data = self.api(&format!("/api/v1/query?query={q}")).await?;
        data["result"][0]["value"][1].as_str()?.parse().ok()
    }

    async fn wait_value(&self, query: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self.value(query).await
                && ok(v)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what} ({query} = {:?}); prometheus log:\n{}",
                self.value(query).await,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_operator_and_a_rule_over_actions_evaluates() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(dir.path(), &policy_for_run("prom", &run.run_id, POLICY));
    let op = Operator::start(&policies, &run.label, &dir.path().join("state"), &[]).await;

    // Both exposition formats, as the scraper's Accept asks; promtool lints the 0.0.4 text.
    let http = reqwest::Client::new();
    let text = http
        .get(format!("{}/metrics", op.base))
        .header("accept", "text/plain;version=0.0.4")
        .send()
        .await
        .unwrap();
    assert!(
        text.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        text.headers()
    );
    let body = text.text().await.unwrap();
    let (ok, out) = promtool(&["check", "metrics"], Some(&body));
    assert!(ok, "promtool check metrics:\n{out}\n{body}");
    let open = http
        .get(format!("{}/metrics", op.base))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    assert!(open.text().await.unwrap().ends_with("# EOF\n"));

    let prom = Prometheus::start(op.base.trim_start_matches("http://"));
    prom.wait_value("up{job=\"hemostat\"}", "the operator is scraped", |v| {
        v == 1.0
    })
    .await;

    run.spawn(
        "crash",
        ContainerSpec::sh(CRASH_ONCE).label("role", "target"),
    )
    .await;
    let name = run.name("crash");
    op.wait_audit(&name, 40, "the crash is repaired", |r| {
        r["status"] == "success"
    })
    .await;
    // The outcome is logged at info, with its status and gate.
    let log = op.log_text();
    assert!(
        log.lines().any(|l| l.contains(" INFO ")
            && l.contains("outcome")
            && l.contains("status=\"success\"")
            && l.contains(&name)),
        "{log}"
    );

    let rate = prom
        .wait_value(
            "hemostat:actions:rate5m{action=\"restart\",status=\"success\"}",
            "the recording rule over hemostat_actions_total sees the restart",
            |v| v > 0.0,
        )
        .await;
    eprintln!("hemostat:actions:rate5m{{restart,success}} = {rate}");
    prom.wait_value(
        "hemostat_actions_total{action=\"restart\",status=\"success\"}",
        "the counter is scraped",
        |v| v == 1.0,
    )
    .await;
    // Idle again: nothing is reconciling (the in_flight gauge used to read 1 here).
    prom.wait_value("hemostat_in_flight", "in_flight reads 0 when idle", |v| {
        v == 0.0
    })
    .await;
    prom.wait_value("hemostat_build_info", "build info", |v| v == 1.0)
        .await;
    prom.wait_value("process_resident_memory_bytes", "process metrics", |v| {
        v > 1e6
    })
    .await;
    // Every shipped rule evaluated without error against the real series.
    let rules = prom.api("/api/v1/rules").await.expect("rules API");
    let all: Vec<&Value> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(all.len() >= 10, "{rules}");
    for rule in &all {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    drop(prom);
    drop(op);
    run.cleanup();
}
