//! `alert::Notifier` for Prometheus Alertmanager: `POST <url>/api/v2/alerts` with labels
//! `alertname`, `container`, `node`, `policy`, `severity`, `action`, `outcome` (and `gate`);
//! a "resolved" alert is the same labels with `endsAt` now, so Alertmanager resolves it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::alert::notify::{Notifier, NotifyError};
use crate::alert::{Alert, AlertKind};

/// `HemostatExited`, `HemostatHighCpu`, … from the finding's name.
pub(crate) fn alertname(finding: &str) -> String {
    let camel: String = finding
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("Hemostat{camel}")
}

/// The labels of an alert: the same for an outcome and its resolve.
pub(crate) fn labels(alert: &Alert) -> BTreeMap<&'static str, String> {
    let mut l = BTreeMap::from([
        ("alertname", alertname(&alert.finding)),
        ("container", alert.container.clone()),
        ("node", alert.node.clone()),
        ("policy", alert.policy.clone()),
        ("severity", format!("{:?}", alert.severity).to_lowercase()),
        (
            "action",
            alert.action.clone().unwrap_or_else(|| "none".into()),
        ),
        ("outcome", alert.outcome.clone()),
    ]);
    if let Some(g) = &alert.gate {
        l.insert("gate", g.clone());
    }
    l
}

/// One entry of the `/api/v2/alerts` body.
pub(crate) fn postable(alert: &Alert) -> Value {
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut v = json!({
        "labels": labels(alert),
        "annotations": {
            "summary": alert.headline(),
            "description": if alert.details.is_empty() { alert.reason.clone() } else { format!("{}: {}", alert.reason, alert.details) },
            "decision_id": alert.decision_id,
        },
        "startsAt": ts(alert.at),
    });
    match alert.kind {
        AlertKind::Resolved => v["endsAt"] = json!(ts(alert.at)),
        AlertKind::Test => v["endsAt"] = json!(ts(alert.at + chrono::Duration::minutes(5))),
        _ => {}
    }
    v
}

/// Posts to one Alertmanager.
pub(crate) struct AlertmanagerNotifier {
    client: reqwest::Client,
    endpoint: String,
    timeout: Duration,
}

impl AlertmanagerNotifier {
    /// A notifier for the Alertmanager at `base` (e.g. `http://alertmanager:9093`).
    pub(crate) fn new(client: reqwest::Client, base: &str, timeout: Duration) -> Self {
        Self {
            client,
            endpoint: format!("{}/api/v2/alerts", base.trim_end_matches('/')),
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl Notifier for AlertmanagerNotifier {
    async fn send(&self, alerts: &[Alert]) -> Result<(), NotifyError> {
        let body: Vec<Value> = alerts.iter().map(postable).collect();
        let request = self
            .client
            .post(&self.endpoint)
            .timeout(self.timeout)
            .json(&body);
        super::post(request, self.timeout).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_and_its_resolve_share_their_labels_and_the_resolve_ends() {
        let mut a = Alert::test("n1");
        a.kind = AlertKind::Outcome;
        a.finding = "high_cpu".into();
        a.action = Some("restart".into());
        a.outcome = "success".into();
        let firing = postable(&a);
        let resolved = postable(&crate::alert::classify::resolved(&a, chrono::Utc::now()));
        assert_eq!(firing["labels"], resolved["labels"]);
        assert_eq!(firing["labels"]["alertname"], "HemostatHighCpu");
        assert!(firing.get("endsAt").is_none());
        assert!(resolved["endsAt"].is_string());
    }
}
