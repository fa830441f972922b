//! The shipped Grafana dashboard and Prometheus rules only query metrics HemoStat exposes.

use std::collections::BTreeSet;

use hemostat::metrics::Metrics;

const GRAFANA: &str = include_str!("../deploy/grafana/hemostat.json");
const RULES: &str = include_str!("../deploy/prometheus/rules.yml");

/// Every sample name the operator can expose.
fn exposed() -> BTreeSet<String> {
    let m = Metrics::new();
    // Families with a free-form label appear with their first series.
    m.reconcile_error("docker");
    m.refusal("cooldown");
    m.docker_event("start");
    m.action("restart", "success", 1.0);
    m.external_request("accepted");
    m.sample_pass(0.1);
    let text = m.encode();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// The `hemostat_*` and `process_*` identifiers in a text.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for prefix in ["hemostat_", "process_"] {
        for (at, _) in text.match_indices(prefix) {
            let before = text[..at].chars().last();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

#[test]
fn every_metric_the_grafana_dashboard_and_the_rules_query_is_exposed() {
    let exposed = exposed();
    let dashboard: serde_json::Value = serde_json::from_str(GRAFANA).expect("valid JSON");
    assert_eq!(dashboard["uid"], "hemostat");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    for (what, text) in [("grafana", exprs.join("\n")), ("rules", RULES.to_owned())] {
        let used = referenced(&text);
        assert!(used.len() >= 8, "{what}: {used:?}");
        let missing: Vec<&String> = used.iter().filter(|n| !exposed.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{what} queries metrics never exposed: {missing:?}\nexposed: {exposed:?}"
        );
    }
    // The rules cover the actions counter the Helm chart's PrometheusRule builds on.
    assert!(referenced(RULES).contains("hemostat_actions_total"));
}
