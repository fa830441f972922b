//! `hemostat explain CONTAINER`: the last decision, its findings, and the rules' verdict beside the model's.

use clap::Args;
use serde_json::Value;

use super::client::Operator;

/// Arguments of `hemostat explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The container's name.
    pub container: String,
    /// The running operator's API (its --listen address).
    #[arg(long, env = "HEMOSTAT_API", default_value = "http://127.0.0.1:9090")]
    pub api: String,
    /// Print the envelopes as JSON instead of the side-by-side view.
    #[arg(long)]
    pub json: bool,
}

/// The envelopes of the last decision about one container.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Explained {
    /// `remediation_needed` or `false_alarm`.
    pub decision: Value,
    /// The `health_alert` of the same decision (the findings).
    pub alert: Option<Value>,
    /// The `remediation_complete` of the same decision (what the responder did).
    pub outcome: Option<Value>,
}

/// Picks the newest decision among `envelopes` (oldest first) and its companions.
pub(crate) fn last_decision(envelopes: &[Value]) -> Option<Explained> {
    let decision = envelopes
        .iter()
        .rev()
        .find(|e| e["type"] == "remediation_needed" || e["type"] == "false_alarm")?;
    let id = &decision["data"]["decision_id"];
    let of = |t: &str| {
        envelopes
            .iter()
            .rev()
            .find(|e| e["type"] == t && &e["data"]["decision_id"] == id)
            .cloned()
    };
    Some(Explained {
        decision: decision.clone(),
        alert: of("health_alert"),
        outcome: of("remediation_complete"),
    })
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), |f| format!("{f:.2}")),
        other => other.to_string(),
    }
}

/// The side-by-side view.
pub(crate) fn render(container: &str, e: &Explained) -> String {
    let d = &e.decision["data"];
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12}{v}\n"));
    line("Container:", container.to_owned());
    line(
        "Decision:",
        format!(
            "{} {} at {} (policy {})",
            s(&e.decision["type"]),
            s(&d["decision_id"]),
            s(&e.decision["timestamp"]),
            s(&d["policy"])
        ),
    );
    let method = match d["fallback_reason"].as_str() {
        Some(why) => format!("{} ({why})", s(&d["analysis_method"])),
        None => s(&d["analysis_method"]),
    };
    line("Method:", method);
    let findings = e
        .alert
        .as_ref()
        .and_then(|a| a["data"]["findings"].as_array().cloned())
        .unwrap_or_default();
    if findings.is_empty() {
        line("Findings:", "-".to_owned());
    }
    for (i, f) in findings.iter().enumerate() {
        let label = if i == 0 { "Findings:" } else { "" };
        line(
            label,
            format!("{} ({})", s(&f["message"]), s(&f["severity"])),
        );
    }
    out.push('\n');
    verdicts(&mut out, e);
    out
}

/// The rules' verdict beside the model's, then what was decided and its outcome.
fn verdicts(out: &mut String, e: &Explained) {
    let d = &e.decision["data"];
    let ai = &d["ai"];
    let model = if ai.is_null() {
        "MODEL (not asked)".to_owned()
    } else {
        let cached = if ai["cached"] == true { ", cached" } else { "" };
        format!("MODEL ({} {}{cached})", s(&ai["provider"]), s(&ai["model"]))
    };
    let rules = if ai.is_null() {
        // Without a review, the decision is the rules' own (or an external request's).
        serde_json::json!({
            "action": d.get("action").cloned().unwrap_or(Value::Null),
            "confidence": d["confidence"],
            "reason": d["reason"],
        })
    } else {
        ai["rules"].clone()
    };
    let answer = &ai["answer"];
    let rows = [
        ("", "RULES".to_owned(), model),
        ("Action:", s(&rules["action"]), s(&answer["action"])),
        (
            "Confidence:",
            s(&rules["confidence"]),
            s(&answer["confidence"]),
        ),
        ("Reason:", s(&rules["reason"]), s(&answer["reason"])),
        ("Root cause:", "-".to_owned(), s(&answer["root_cause"])),
    ];
    let width = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0) + 2;
    for (k, left, right) in rows {
        out.push_str(&format!("{k:<12}{left:<width$}{right}\n"));
    }
    out.push('\n');
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12}{v}\n"));
    line(
        "Decided:",
        format!(
            "{} (confidence {}): {}",
            d.get("action").map_or("none".to_owned(), s),
            s(&d["confidence"]),
            s(&d["reason"])
        ),
    );
    let outcome = e.outcome.as_ref().map_or("-".to_owned(), |o| {
        let r = &o["data"]["result"];
        format!("{}: {}", s(&r["status"]), s(&r["details"]))
    });
    line("Outcome:", outcome);
}

/// Runs `hemostat explain`.
pub(crate) async fn run(args: ExplainArgs) -> anyhow::Result<i32> {
    let operator = Operator::new(&args.api)?;
    let api = operator.base();
    let path = format!("/api/v1/decisions?container={}&limit=1000", args.container);
    let envelopes: Vec<Value> = operator.get_as(&path, "a list of envelopes").await?;
    let Some(explained) = last_decision(&envelopes) else {
        eprintln!(
            "no decision about {} is recorded at {api} (is the name right? see `hemostat get containers`)",
            args.container
        );
        return Ok(1);
    };
    if args.json {
        let all = serde_json::json!({
            "decision": explained.decision,
            "health_alert": explained.alert,
            "remediation_complete": explained.outcome,
        });
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print!("{}", render(&args.container, &explained));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn envelopes() -> Vec<Value> {
        vec![
            json!({"type": "health_alert", "timestamp": "t0", "data": {"decision_id": "d1", "findings": [{"message": "Exited with code 1", "severity": "high"}]}}),
            json!({"type": "remediation_needed", "timestamp": "t0", "data": {"decision_id": "d1", "action": "restart", "reason": "old", "confidence": 0.9, "analysis_method": "rules"}}),
            json!({"type": "health_alert", "timestamp": "t1", "data": {"decision_id": "d2", "findings": [{"message": "Exited with code 3", "severity": "high"}]}}),
            json!({"type": "false_alarm", "timestamp": "t1", "data": {"decision_id": "d2", "policy": "web", "reason": "false alarm: a planned exit", "confidence": 0.8, "analysis_method": "ai", "root_cause": "batch job done",
                "ai": {"provider": "openai", "model": "gpt-4", "cached": false,
                       "rules": {"action": "restart", "confidence": 0.9, "reason": "Exited with code 3"},
                       "answer": {"action": "none", "confidence": 0.8, "reason": "a planned exit", "root_cause": "batch job done"}}}}),
        ]
    }

    #[test]
    fn the_newest_decision_is_shown_with_its_findings_and_both_verdicts() {
        let e = last_decision(&envelopes()).unwrap();
        assert_eq!(e.decision["data"]["decision_id"], "d2");
        assert!(e.outcome.is_none());
        let text = render("web-1", &e);
        assert!(text.contains("Exited with code 3 (high)"), "{text}");
        assert!(!text.contains("code 1"), "{text}");
        let action = text.lines().find(|l| l.starts_with("Action:")).unwrap();
        assert!(
            action.contains("restart") && action.contains("none"),
            "{text}"
        );
        assert!(text.contains("MODEL (openai gpt-4)"), "{text}");
        assert!(text.contains("batch job done"), "{text}");
        assert!(
            text.contains("Decided:    none (confidence 0.80): false alarm: a planned exit"),
            "{text}"
        );
    }

    #[test]
    fn nothing_to_explain_without_a_decision() {
        assert_eq!(last_decision(&envelopes()[..1]), None);
    }
}
