//! What a model is asked about one sick container, and the JSON Schema of its answer: pure.
//!
//! Only facts about this one container go in: its findings, summarised usage, restart and
//! repair history, image, state, health log, labels (secret-looking values redacted) and, only
//! when the policy allows it, its last log lines with obvious secrets redacted. Never its
//! environment (HemoStat never reads it) nor anything about other containers.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::redact::{REDACTED, is_secret_key, redact_line};
use crate::model::container::{ContainerInfo, HealthLogEntry};
use crate::model::decision::{ActionKind, Finding, Verdict};
use crate::model::usage::UsagePoint;
use crate::policy::HealthPolicy;

/// The name of the answer's schema (OpenAI `json_schema.name`, Anthropic tool name).
pub(crate) const ANSWER_NAME: &str = "hemostat_decision";

/// Longest log line or healthcheck output sent, in characters.
const MAX_LINE: usize = 500;
/// Healthcheck runs sent.
const HEALTH_RUNS: usize = 5;
/// Recent restarts and repairs sent.
const HISTORY: usize = 10;

/// One earlier repair of the container (from its safety state).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RepairNote {
    /// When it started.
    pub at: DateTime<Utc>,
    /// What was done.
    pub action: ActionKind,
    /// The finding it answered.
    pub finding: String,
    /// `pending`, `succeeded` or `failed`.
    pub outcome: String,
}

/// Everything the model may be told about one container.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Facts {
    /// The container as inspected.
    pub container: ContainerInfo,
    /// What the probes found.
    pub findings: Vec<Finding>,
    /// What the rules would do.
    pub rules: Verdict,
    /// Resource samples, oldest first.
    pub usage: Vec<UsagePoint>,
    /// When it restarted, oldest first.
    pub restarts: Vec<DateTime<Utc>>,
    /// HemoStat's earlier repairs, oldest first.
    pub repairs: Vec<RepairNote>,
    /// The engine's healthcheck runs, oldest first.
    pub health_log: Vec<HealthLogEntry>,
    /// The last log lines (already limited to `analysis.includeLogs`), oldest first.
    pub logs: Vec<String>,
    /// The instant of the analysis.
    pub now: DateTime<Utc>,
}

/// The question, ready for any provider.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Prompt {
    /// Instructions.
    pub system: String,
    /// The facts, as pretty JSON.
    pub user: String,
    /// The answer's JSON Schema.
    pub schema: Value,
}

/// The instructions: the model's role, the only answer it may give, and its limits.
fn system_text(policy: &HealthPolicy) -> String {
    let r = &policy.spec.remediation;
    let mut allowed: Vec<&str> = r.actions.iter().map(|a| a.as_str()).collect();
    allowed.push("none");
    let exec = if r.actions.contains(&ActionKind::Exec) {
        "\nFor \"exec\", set \"command\" to the index (0-based) of one command in policy.exec_commands; for any other action set it to null. No other command can ever run."
    } else {
        ""
    };
    format!(
        "You are the analyzer of HemoStat, which keeps Docker containers healthy. You are given the facts about one container that a health probe flagged, and what HemoStat's deterministic rules would do.\n\
Decide whether to act, choosing only among the actions this container's policy allows: {}. \"none\" means the finding is a false alarm and the container must be left alone.\n\
Answer with exactly one JSON object and nothing else, of this shape: {{\"action\": \"<one of those>\", \"confidence\": <0 to 1>, \"reason\": \"<one sentence for the operator>\", \"root_cause\": \"<what is wrong underneath>\"{}}}.{exec}\n\
Answers below confidence {} are not used. Any other action, field or shape is refused and the rules decide.",
        allowed.join(", "),
        if exec.is_empty() {
            ""
        } else {
            ", \"command\": <index or null>"
        },
        r.min_confidence,
    )
}

/// The JSON Schema the answer must fit: the four fields (plus `command` when exec is
/// allowed), `action` one of the policy's allowed actions or `none`, nothing else.
pub(crate) fn answer_schema(policy: &HealthPolicy) -> Value {
    let r = &policy.spec.remediation;
    let mut actions: Vec<&str> = r.actions.iter().map(|a| a.as_str()).collect();
    actions.push("none");
    let mut properties = json!({
        "action": {"type": "string", "enum": actions},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
        "root_cause": {"type": "string"},
    });
    let mut required = vec!["action", "confidence", "reason", "root_cause"];
    if r.actions.contains(&ActionKind::Exec) {
        let n = r.exec.as_ref().map_or(0, |e| e.allowed.len());
        properties["command"] = json!({
            "type": ["integer", "null"],
            "minimum": 0,
            "maximum": n.saturating_sub(1),
        });
        required.push("command");
    }
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": properties,
    })
}

fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_LINE {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_LINE).collect();
    cut.push('…');
    cut
}

fn stats(values: impl Iterator<Item = f64> + Clone) -> Value {
    let n = values.clone().count();
    if n == 0 {
        return Value::Null;
    }
    let round = |x: f64| (x * 10.0).round() / 10.0;
    let min = values.clone().fold(f64::INFINITY, f64::min);
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    let avg = values.clone().sum::<f64>() / n as f64;
    let latest = values.last().unwrap_or_default();
    json!({"min": round(min), "avg": round(avg), "max": round(max), "latest": round(latest)})
}

/// The usage history summarised: never the raw samples.
fn usage_summary(usage: &[UsagePoint]) -> Value {
    let (Some(first), Some(last)) = (usage.first(), usage.last()) else {
        return Value::Null;
    };
    json!({
        "samples": usage.len(),
        "window_secs": (last.at - first.at).num_seconds().max(0),
        "cpu_percent_of_limit": stats(usage.iter().map(|u| u.cpu_percent)),
        "memory_percent_of_limit": stats(usage.iter().map(|u| u.memory_percent)),
        "memory_used_bytes_latest": last.memory_used_bytes,
    })
}

fn tail<T>(items: &[T], n: usize) -> &[T] {
    &items[items.len().saturating_sub(n)..]
}

/// Builds the question about one container under one policy.
pub(crate) fn build(policy: &HealthPolicy, facts: &Facts) -> Prompt {
    let c = &facts.container;
    let r = &policy.spec.remediation;
    let labels: serde_json::Map<String, Value> = c
        .labels
        .iter()
        .map(|(k, v)| {
            let v = if is_secret_key(k) {
                REDACTED.to_owned()
            } else {
                redact_line(v)
            };
            (k.clone(), Value::String(v))
        })
        .collect();
    let mut user = json!({
        "container": {
            "name": c.name,
            "image": c.image,
            "state": c.state,
            "exit_code": c.exit_code,
            "oom_killed": c.oom_killed,
            "health": c.health,
            "health_failing_streak": c.health_failing_streak,
            "engine_restart_count": c.restart_count,
            "started_at": c.started_at,
            "finished_at": c.finished_at,
            "cpu_limit_cores": c.limits.cpu_limit_cores(),
            "memory_limit_bytes": c.limits.memory_bytes,
            "labels": labels,
        },
        "findings": facts.findings,
        "rules_verdict": {
            "action": facts.rules.action.map_or("none", |a| a.as_str()),
            "confidence": facts.rules.confidence,
            "reason": facts.rules.reason,
        },
        "usage": usage_summary(&facts.usage),
        "restarts": {
            "count": facts.restarts.len(),
            "recent": tail(&facts.restarts, HISTORY),
        },
        "repairs": tail(&facts.repairs, HISTORY).iter().map(|n| json!({
            "at": n.at,
            "action": n.action.as_str(),
            "finding": n.finding,
            "outcome": n.outcome,
        })).collect::<Vec<_>>(),
        "health_log": tail(&facts.health_log, HEALTH_RUNS).iter().map(|h| json!({
            "start": h.start,
            "exit_code": h.exit_code,
            "output": truncate(&redact_line(h.output.trim())),
        })).collect::<Vec<_>>(),
        "policy": {
            "name": policy.metadata.name,
            "allowed_actions": r.actions.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            "min_confidence": r.min_confidence,
        },
        "now": facts.now,
    });
    if let Some(exec) = r
        .exec
        .as_ref()
        .filter(|_| r.actions.contains(&ActionKind::Exec))
    {
        user["policy"]["exec_commands"] = json!(exec.allowed);
    }
    let max_logs = policy.spec.analysis.include_logs as usize;
    if max_logs > 0 {
        let lines: Vec<String> = tail(&facts.logs, max_logs)
            .iter()
            .map(|l| truncate(&redact_line(l)))
            .collect();
        user["logs"] = json!(lines);
    }
    Prompt {
        system: system_text(policy),
        user: serde_json::to_string_pretty(&user).unwrap_or_default(),
        schema: answer_schema(policy),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::model::container::{ContainerState, HealthStatus, ResourceLimits};
    use crate::model::decision::{FindingKind, Severity};
    use crate::policy::builtin::default_policy;
    use crate::policy::{AnalysisMode, ExecPolicy};

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn policy(include_logs: u32) -> HealthPolicy {
        let mut p = default_policy();
        p.metadata.name = "web".into();
        p.spec.analysis.mode = AnalysisMode::Ai;
        p.spec.analysis.include_logs = include_logs;
        p.spec.remediation.actions = vec![ActionKind::Exec, ActionKind::Restart];
        p.spec.remediation.exec = Some(ExecPolicy {
            allowed: vec![vec!["/bin/sh".into(), "-c".into(), "kill -HUP 1".into()]],
            timeout: crate::policy::HumanDuration::from_secs(10),
        });
        p
    }

    fn facts() -> Facts {
        Facts {
            container: ContainerInfo {
                id: "abc".into(),
                name: "web-1".into(),
                image: "registry.example.com/web:1.2".into(),
                labels: [
                    ("app".to_owned(), "web".to_owned()),
                    ("io.example.db-password".to_owned(), "hunter2".to_owned()),
                ]
                .into_iter()
                .collect(),
                state: ContainerState::Exited,
                exit_code: Some(3),
                oom_killed: false,
                health: HealthStatus::None,
                health_failing_streak: 0,
                restart_count: 2,
                health_output: None,
                started_at: Some(t(-60)),
                finished_at: Some(t(-1)),
                limits: ResourceLimits {
                    nano_cpus: Some(500_000_000),
                    memory_bytes: Some(64 << 20),
                    ..Default::default()
                },
                pid: None,
            },
            findings: vec![Finding {
                kind: FindingKind::Exited { exit_code: 3 },
                severity: Severity::High,
                message: "Exited with code 3".into(),
            }],
            rules: Verdict {
                action: Some(ActionKind::Restart),
                reason: "Exited with code 3".into(),
                confidence: 0.9,
            },
            usage: (0..4)
                .map(|i| UsagePoint {
                    at: t(-40 + i * 10),
                    cpu_percent: 10.0 * i as f64,
                    memory_percent: 20.0,
                    memory_used_bytes: 1 << 20,
                })
                .collect(),
            restarts: vec![t(-120)],
            repairs: vec![RepairNote {
                at: t(-110),
                action: ActionKind::Restart,
                finding: "exited".into(),
                outcome: "succeeded".into(),
            }],
            health_log: vec![],
            logs: vec![
                "starting".into(),
                "connecting with password=hunter2".into(),
                "fatal: cannot open /data".into(),
            ],
            now: t(0),
        }
    }

    fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/analyze/llm/testdata")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
        assert_eq!(
            actual, want,
            "{name} changed; review it and run with UPDATE_GOLDEN=1"
        );
    }

    #[test]
    fn the_prompt_is_stable_golden() {
        let p = build(&policy(2), &facts());
        let text = format!(
            "--- system\n{}\n--- user\n{}\n--- schema\n{}\n",
            p.system,
            p.user,
            serde_json::to_string_pretty(&p.schema).unwrap()
        );
        golden("prompt.txt", &text);
    }

    #[test]
    fn logs_are_sent_only_when_allowed_and_redacted() {
        let without = build(&policy(0), &facts());
        assert!(!without.user.contains("fatal: cannot open"));
        assert!(!without.user.contains("\"logs\""));
        let with = build(&policy(2), &facts());
        assert!(with.user.contains("fatal: cannot open"));
        assert!(!with.user.contains("starting\""), "only the last 2 lines");
        assert!(!with.user.contains("hunter2"), "{}", with.user);
    }

    #[test]
    fn the_schema_allows_only_the_policys_actions_and_none() {
        let mut p = policy(0);
        p.spec.remediation.actions = vec![ActionKind::Restart];
        p.spec.remediation.exec = None;
        let schema = answer_schema(&p);
        assert_eq!(
            schema["properties"]["action"]["enum"],
            json!(["restart", "none"])
        );
        assert_eq!(
            schema["required"],
            json!(["action", "confidence", "reason", "root_cause"])
        );
        assert_eq!(schema["additionalProperties"], json!(false));
        let with_exec = answer_schema(&policy(0));
        assert_eq!(with_exec["properties"]["command"]["maximum"], json!(0));
    }
}
