//! `alert::Notifier` for Slack incoming webhooks: Block Kit with a plain-text fallback, one
//! coloured attachment per alert (as the original: green success, red failure, orange refusal,
//! yellow false alarm, grey otherwise); a storm becomes one message listing every container.

use std::time::Duration;

use serde_json::{Value, json};

use crate::alert::notify::{Notifier, NotifyError};
use crate::alert::secret::Secret;
use crate::alert::{Alert, AlertKind};

/// Successful repair, resolved.
pub(crate) const GREEN: &str = "#36a64f";
/// Failed repair.
pub(crate) const RED: &str = "#ff0000";
/// Refused (breaker, budget, manual stop).
pub(crate) const ORANGE: &str = "#ff9900";
/// False alarm.
pub(crate) const YELLOW: &str = "#ffcc00";
/// Anything else (dry run, finding without action, test).
pub(crate) const GREY: &str = "#cccccc";

/// Above this many alerts a message lists containers per outcome instead of one block each.
pub(crate) const DETAILED_UP_TO: usize = 10;
/// Slack's limit on a section's text.
const SECTION_MAX: usize = 2900;

/// The colour of an alert, as the original's.
pub(crate) fn color(alert: &Alert) -> &'static str {
    match (alert.kind, alert.outcome.as_str()) {
        (AlertKind::Resolved, _) | (AlertKind::Outcome, "success") => GREEN,
        (AlertKind::Outcome, "failed") => RED,
        (AlertKind::Refusal, _) => ORANGE,
        (AlertKind::FalseAlarm, _) => YELLOW,
        _ => GREY,
    }
}

fn label(color: &str) -> &'static str {
    match color {
        GREEN => "repaired or resolved",
        RED => "failed",
        ORANGE => "refused",
        YELLOW => "false alarms",
        _ => "other",
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn detail(alert: &Alert) -> Value {
    let mut text = format!("*{}*\n{}", alert.headline(), alert.reason);
    if !alert.details.is_empty() && alert.details != alert.reason {
        text.push_str(&format!("\n_{}_", alert.details));
    }
    if let Some(why) = &alert.explanation {
        text.push_str(&format!("\n>{why}"));
    }
    let mut facts = vec![
        format!("policy `{}`", alert.policy),
        format!("node `{}`", alert.node),
        format!("action `{}`", alert.action.as_deref().unwrap_or("none")),
        format!("outcome `{}`", alert.outcome),
        format!("severity `{:?}`", alert.severity).to_lowercase(),
    ];
    if let Some(gate) = &alert.gate {
        facts.push(format!("gate `{gate}`"));
    }
    json!({
        "color": color(alert),
        "fallback": alert.headline(),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&text, SECTION_MAX)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": facts.join(" · ")}]},
        ],
    })
}

/// Section blocks holding `head` then every line, each under Slack's size limit.
fn sections(head: &str, lines: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut current = head.to_owned();
    for line in lines {
        if current.len() + line.len() + 1 > SECTION_MAX {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&truncate(line, SECTION_MAX));
    }
    out.push(current);
    out.into_iter()
        .map(|t| json!({"type": "section", "text": {"type": "mrkdwn", "text": t}}))
        .collect()
}

/// The webhook payload for a group of alerts.
pub(crate) fn message(alerts: &[Alert]) -> Value {
    let text = match alerts {
        [one] => format!("HemoStat: {}", one.headline()),
        many => {
            let mut nodes: Vec<&str> = many.iter().map(|a| a.node.as_str()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            let names: Vec<String> = many
                .iter()
                .map(|a| {
                    format!(
                        "{} ({} {})",
                        a.container,
                        a.action.as_deref().unwrap_or(a.kind.as_str()),
                        a.outcome
                    )
                })
                .collect();
            truncate(
                &format!(
                    "HemoStat: {} alerts on {}: {}",
                    many.len(),
                    nodes.join(", "),
                    names.join(", ")
                ),
                SECTION_MAX,
            )
        }
    };
    let attachments: Vec<Value> = if alerts.len() <= DETAILED_UP_TO {
        alerts.iter().map(detail).collect()
    } else {
        let mut by_color: Vec<(&str, Vec<&Alert>)> = Vec::new();
        for a in alerts {
            let c = color(a);
            match by_color.iter_mut().find(|(k, _)| *k == c) {
                Some((_, v)) => v.push(a),
                None => by_color.push((c, vec![a])),
            }
        }
        by_color
            .into_iter()
            .map(|(c, group)| {
                let names: Vec<String> = group
                    .iter()
                    .map(|a| {
                        format!(
                            "`{}` on {}: {} {}",
                            a.container,
                            a.node,
                            a.action.as_deref().unwrap_or(a.kind.as_str()),
                            a.outcome
                        )
                    })
                    .collect();
                let head = format!("*{} {}*", group.len(), label(c));
                json!({
                    "color": c,
                    "fallback": format!("{} {}", group.len(), label(c)),
                    "blocks": sections(&head, &names),
                })
            })
            .collect()
    };
    json!({
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": truncate(&text, SECTION_MAX)}}],
        "attachments": attachments,
    })
}

/// Posts to one Slack incoming webhook.
pub(crate) struct SlackNotifier {
    client: reqwest::Client,
    url: Secret,
    timeout: Duration,
}

impl SlackNotifier {
    /// A notifier for the webhook at `url`.
    pub(crate) fn new(client: reqwest::Client, url: Secret, timeout: Duration) -> Self {
        Self {
            client,
            url,
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl Notifier for SlackNotifier {
    async fn send(&self, alerts: &[Alert]) -> Result<(), NotifyError> {
        let request = self
            .client
            .post(self.url.expose())
            .timeout(self.timeout)
            .json(&message(alerts));
        super::post(request, self.timeout).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(container: &str, status: &str) -> Alert {
        let mut a = Alert::test("node-a");
        a.kind = AlertKind::Outcome;
        a.container = container.into();
        a.action = Some("restart".into());
        a.outcome = status.into();
        a
    }

    #[test]
    fn colours_are_the_originals() {
        let mut refusal = outcome("w", "rejected");
        refusal.kind = AlertKind::Refusal;
        let mut fa = outcome("w", "none");
        fa.kind = AlertKind::FalseAlarm;
        let cases = [
            (outcome("w", "success"), GREEN),
            (outcome("w", "failed"), RED),
            (refusal, ORANGE),
            (fa, YELLOW),
            (outcome("w", "dry_run"), GREY),
        ];
        for (a, c) in cases {
            assert_eq!(color(&a), c, "{:?} {}", a.kind, a.outcome);
        }
    }

    #[test]
    fn one_alert_names_container_action_and_outcome_in_text_and_blocks() {
        let m = message(&[outcome("web-1", "success")]);
        assert_eq!(m["text"], "HemoStat: web-1 on node-a: restart success");
        assert_eq!(m["attachments"][0]["color"], GREEN);
        assert_eq!(m["attachments"][0]["blocks"][0]["type"], "section");
    }

    #[test]
    fn a_storm_is_one_message_listing_every_container() {
        let alerts: Vec<Alert> = (0..200)
            .map(|i| {
                outcome(
                    &format!("c{i:03}"),
                    if i % 2 == 0 { "success" } else { "failed" },
                )
            })
            .collect();
        let m = message(&alerts);
        assert_eq!(m["attachments"].as_array().unwrap().len(), 2);
        let listed: String = m["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|a| a["blocks"].as_array().unwrap().iter())
            .map(|b| b["text"]["text"].as_str().unwrap().to_owned())
            .collect();
        for i in 0..200 {
            assert!(listed.contains(&format!("`c{i:03}`")), "c{i:03} missing");
        }
    }
}
