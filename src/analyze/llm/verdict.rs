//! A model's answer: parsed strictly, checked against the policy, then turned into the
//! decision, or refused so that the rules decide. Pure.

use serde_json::Value;

use crate::model::decision::{
    ActionKind, AiReview, AnalysisMethod, Decision, ModelAnswer, Verdict,
};
use crate::policy::HealthPolicy;

/// The fields an answer may have.
const FIELDS: [&str; 5] = ["action", "confidence", "reason", "root_cause", "command"];
/// Longest reason or root cause kept, in characters.
const MAX_TEXT: usize = 1000;

/// Why a model's answer is not used (the rules decide instead).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// Not a JSON object, or cut off.
    #[error("the answer is not a JSON object ({0})")]
    NotJson(String),
    /// A field outside the documented shape.
    #[error("the answer has an unknown field {0:?}")]
    UnknownField(String),
    /// A documented field is missing.
    #[error("the answer lacks the field {0:?}")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("the answer's {field:?} is not {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// An action HemoStat does not have (`cleanup`, `scale`, …).
    #[error("the model chose {0:?}, which is not an action HemoStat has")]
    UnknownAction(String),
    /// A real action the policy does not allow.
    #[error("the model chose {action}, which policy {policy} does not allow")]
    NotAllowed {
        /// The action.
        action: ActionKind,
        /// The policy.
        policy: String,
    },
    /// `exec` without a command index.
    #[error("the model chose exec without naming an allow-listed command")]
    ExecWithoutCommand,
    /// `exec` of something not on the allow-list.
    #[error("the model chose exec of {0}, which is not on the policy's allow-list")]
    ExecNotListed(String),
    /// A command for an action other than exec.
    #[error("the model gave a command for an action other than exec")]
    CommandWithoutExec,
    /// Confidence outside 0..=1.
    #[error("the model's confidence {0} is outside 0..1")]
    ConfidenceOutOfRange(f64),
    /// Below the policy's `minConfidence`.
    #[error("the model's confidence {got} is below the policy's minConfidence {min}")]
    LowConfidence {
        /// The model's confidence.
        got: f64,
        /// The policy's minimum.
        min: f64,
    },
    /// No reason given.
    #[error("the model gave no reason")]
    EmptyReason,
}

impl Rejection {
    /// The `result` label of `hemostat_ai_requests_total` for an answer refused this way.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::NotAllowed { .. }
            | Self::ExecNotListed(_)
            | Self::ExecWithoutCommand
            | Self::CommandWithoutExec => "not_allowed",
            Self::LowConfidence { .. } => "low_confidence",
            _ => "invalid",
        }
    }
}

fn text(map: &serde_json::Map<String, Value>, field: &'static str) -> Result<String, Rejection> {
    let value = map.get(field).ok_or(Rejection::MissingField(field))?;
    let s = value.as_str().ok_or(Rejection::WrongType {
        field,
        expected: "a string",
    })?;
    let kept: String = s.trim().chars().take(MAX_TEXT).collect();
    // Trimmed again: the cut may end on a space inside the text.
    Ok(kept.trim_end().to_owned())
}

/// Parses the content of the model's message: exactly one JSON object with `action`,
/// `confidence`, `reason`, `root_cause` (and `command`, an index or null), nothing else.
pub fn parse(content: &str) -> Result<ModelAnswer, Rejection> {
    let trimmed = content.trim();
    // Tolerate a Markdown fence around the object; nothing else around it.
    let body = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|b| b.strip_suffix("```"))
        .unwrap_or(trimmed);
    let value: Value =
        serde_json::from_str(body.trim()).map_err(|e| Rejection::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(Rejection::NotJson("not an object".into()));
    };
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(Rejection::UnknownField(unknown.clone()));
    }
    let action = text(&map, "action")?;
    let confidence = map
        .get("confidence")
        .ok_or(Rejection::MissingField("confidence"))?
        .as_f64()
        .ok_or(Rejection::WrongType {
            field: "confidence",
            expected: "a number",
        })?;
    let command = match map.get("command") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(i) => Some(usize::try_from(i).unwrap_or(usize::MAX)),
            None => return Err(Rejection::ExecNotListed(v.to_string())),
        },
    };
    Ok(ModelAnswer {
        action,
        confidence,
        reason: text(&map, "reason")?,
        root_cause: text(&map, "root_cause")?,
        command,
    })
}

fn action_named(name: &str) -> Option<ActionKind> {
    ActionKind::ALL.into_iter().find(|a| a.as_str() == name)
}

/// Checks a parsed answer against the policy: `Ok(None)` is a valid "none" (a false alarm),
/// `Ok(Some(action))` an allowed action (an exec's command exactly on the allow-list).
pub fn accept(
    policy: &HealthPolicy,
    answer: &ModelAnswer,
) -> Result<Option<ActionKind>, Rejection> {
    let r = &policy.spec.remediation;
    if !(0.0..=1.0).contains(&answer.confidence) {
        return Err(Rejection::ConfidenceOutOfRange(answer.confidence));
    }
    let action = if answer.action == "none" {
        None
    } else {
        let action = action_named(&answer.action)
            .ok_or_else(|| Rejection::UnknownAction(answer.action.clone()))?;
        if !r.actions.contains(&action) {
            return Err(Rejection::NotAllowed {
                action,
                policy: policy.metadata.name.clone(),
            });
        }
        Some(action)
    };
    match (action, answer.command) {
        (Some(ActionKind::Exec), None) => return Err(Rejection::ExecWithoutCommand),
        (Some(ActionKind::Exec), Some(i)) => {
            let listed = r.exec.as_ref().map_or(0, |e| e.allowed.len());
            if i >= listed {
                return Err(Rejection::ExecNotListed(format!(
                    "command #{i} (the allow-list has {listed})"
                )));
            }
        }
        (_, Some(_)) => return Err(Rejection::CommandWithoutExec),
        (_, None) => {}
    }
    if answer.reason.is_empty() {
        return Err(Rejection::EmptyReason);
    }
    if answer.confidence < r.min_confidence {
        return Err(Rejection::LowConfidence {
            got: answer.confidence,
            min: r.min_confidence,
        });
    }
    Ok(action)
}

/// The rules' decision as a verdict on its own.
pub fn rules_verdict(rules: &Decision) -> Verdict {
    Verdict {
        action: rules.action,
        reason: rules.reason.clone(),
        confidence: rules.confidence,
    }
}

/// The decision when the model's answer is used: its action (or a false alarm for `none`),
/// its reason and confidence; the findings and the breaker's finding stay the rules'.
pub fn use_answer(rules: Decision, action: Option<ActionKind>, mut review: AiReview) -> Decision {
    let answer = review.answer.clone();
    review.fallback_reason = None;
    let (reason, confidence) = answer.map_or_else(
        || (rules.reason.clone(), rules.confidence),
        |a| (a.reason, a.confidence),
    );
    Decision {
        action,
        reason: if action.is_none() {
            format!("false alarm: {reason}")
        } else {
            reason
        },
        confidence,
        method: AnalysisMethod::Ai,
        ai: Some(review),
        ..rules
    }
}

/// The rules' decision, recorded as a fallback and why.
pub(crate) fn fall_back(rules: Decision, mut review: AiReview, why: impl Into<String>) -> Decision {
    review.fallback_reason = Some(why.into());
    Decision {
        method: AnalysisMethod::RuleBasedFallback,
        ai: Some(review),
        ..rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin::default_policy;
    use crate::policy::{ExecPolicy, HumanDuration};

    fn policy() -> HealthPolicy {
        let mut p = default_policy();
        p.spec.remediation.actions = vec![ActionKind::Exec, ActionKind::Restart];
        p.spec.remediation.exec = Some(ExecPolicy {
            allowed: vec![vec!["/bin/sh".into(), "-c".into(), "kill -HUP 1".into()]],
            timeout: HumanDuration::from_secs(5),
        });
        p
    }

    fn answer(json: &str) -> Result<Option<ActionKind>, Rejection> {
        accept(&policy(), &parse(json)?)
    }

    #[test]
    fn answers_are_accepted_only_in_the_exact_shape_and_within_the_policy() {
        use ActionKind::*;
        let ok = |a: &str, extra: &str| {
            format!(
                r#"{{"action": "{a}", "confidence": 0.9, "reason": "r", "root_cause": "c"{extra}}}"#
            )
        };
        let cases: Vec<(String, Result<Option<ActionKind>, &str>)> = vec![
            (ok("restart", ""), Ok(Some(Restart))),
            (ok("restart", r#", "command": null"#), Ok(Some(Restart))),
            (ok("none", ""), Ok(None)),
            (ok("exec", r#", "command": 0"#), Ok(Some(Exec))),
            (
                format!("```json\n{}\n```", ok("restart", "")),
                Ok(Some(Restart)),
            ),
            (ok("exec", r#", "command": 1"#), Err("not_allowed")),
            (
                ok("exec", r#", "command": ["rm", "-rf", "/"]"#),
                Err("not_allowed"),
            ),
            (ok("exec", ""), Err("not_allowed")),
            (ok("restart", r#", "command": 0"#), Err("not_allowed")),
            (ok("stop", ""), Err("not_allowed")),
            (ok("cleanup", ""), Err("invalid")),
            (ok("scale", ""), Err("invalid")),
            (ok("Restart", ""), Err("invalid")),
            (ok("restart", r#", "volumes": true"#), Err("invalid")),
            (
                r#"{"action": "restart", "confidence": 0.9, "reason": "r"}"#.into(),
                Err("invalid"),
            ),
            (
                r#"{"action": "restart", "confidence": "high", "reason": "r", "root_cause": "c"}"#
                    .into(),
                Err("invalid"),
            ),
            (
                r#"{"action": "restart", "confidence": 1.5, "reason": "r", "root_cause": "c"}"#
                    .into(),
                Err("invalid"),
            ),
            (
                r#"{"action": "restart", "confidence": 0.9, "reason": "", "root_cause": "c"}"#
                    .into(),
                Err("invalid"),
            ),
            (
                r#"{"action": "restart", "confidence": 0.5, "reason": "r", "root_cause": "c"}"#
                    .into(),
                Err("low_confidence"),
            ),
            (
                r#"{"action": "none", "confidence": 0.2, "reason": "r", "root_cause": "c"}"#.into(),
                Err("low_confidence"),
            ),
            (
                r#"{"action": "restart", "confidence": 0.9, "rea"#.into(),
                Err("invalid"),
            ),
            ("I would restart it.".into(), Err("invalid")),
            ("[]".into(), Err("invalid")),
            ("".into(), Err("invalid")),
        ];
        for (content, want) in cases {
            let got = answer(&content);
            match (&got, &want) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{content}"),
                (Err(e), Err(label)) => assert_eq!(e.label(), *label, "{content}: {e}"),
                _ => panic!("{content}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_long_reason_is_cut_and_trimmed_again() {
        // Found by the ai_answer fuzz target: a cut at MAX_TEXT characters that ends on a
        // space kept the trailing space.
        let reason = format!("{} tail", "x".repeat(MAX_TEXT - 1));
        let content = format!(
            r#"{{"action": "restart", "confidence": 0.9, "reason": "{reason}", "root_cause": "c"}}"#
        );
        let kept = parse(&content).unwrap().reason;
        assert_eq!(kept, "x".repeat(MAX_TEXT - 1));
    }

    fn rules() -> Decision {
        Decision {
            action: Some(ActionKind::Restart),
            reason: "Exited with code 3".into(),
            confidence: 0.9,
            method: AnalysisMethod::Rules,
            findings: vec![],
            primary: Some("exited".into()),
            ai: None,
        }
    }

    fn review(answer: Option<ModelAnswer>) -> AiReview {
        AiReview {
            provider: "openai".into(),
            model: "m".into(),
            rules: rules_verdict(&rules()),
            answer,
            fallback_reason: None,
            cached: false,
            latency_ms: 5,
        }
    }

    #[test]
    fn a_used_answer_carries_the_models_reason_and_root_cause() {
        let a = parse(r#"{"action": "none", "confidence": 0.8, "reason": "a planned exit", "root_cause": "batch job done"}"#).unwrap();
        let d = use_answer(rules(), None, review(Some(a)));
        assert_eq!(d.action, None);
        assert_eq!(d.method, AnalysisMethod::Ai);
        assert_eq!(d.reason, "false alarm: a planned exit");
        assert_eq!(d.root_cause(), Some("batch job done"));
        assert_eq!(d.primary.as_deref(), Some("exited"));
        assert_eq!(d.fallback_reason(), None);
    }

    #[test]
    fn a_fallback_keeps_the_rules_decision_and_says_why() {
        let d = fall_back(rules(), review(None), "timeout");
        assert_eq!(d.action, Some(ActionKind::Restart));
        assert_eq!(d.reason, "Exited with code 3");
        assert_eq!(d.method, AnalysisMethod::RuleBasedFallback);
        assert_eq!(d.fallback_reason(), Some("timeout"));
        assert_eq!(d.root_cause(), None);
        assert_eq!(d.exec_command_index(), None);
    }
}
