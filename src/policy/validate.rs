//! Semantic rules a `HealthPolicy` must satisfy beyond its types, each with the path it concerns.

use std::collections::BTreeSet;

use super::types::*;
use crate::model::decision::ActionKind;

/// One broken rule: where (a YAML path like `spec.probes.cpu.abovePercent`) and what is expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending field inside the document.
    pub path: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl Violation {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Checks one policy against every semantic rule; an empty result means it is valid.
pub fn validate(policy: &HealthPolicy) -> Vec<Violation> {
    let mut out = Vec::new();
    if policy.api_version != API_VERSION {
        out.push(Violation::new(
            "apiVersion",
            format!(
                "unsupported apiVersion {:?}: expected {API_VERSION:?}",
                policy.api_version
            ),
        ));
    }
    if policy.kind != KIND {
        out.push(Violation::new(
            "kind",
            format!("unsupported kind {:?}: expected {KIND:?}", policy.kind),
        ));
    }
    if let Err(why) = check_dns_name(&policy.metadata.name) {
        out.push(Violation::new("metadata.name", why));
    }
    check_selector(&policy.spec.selector, &mut out);
    check_probes(&policy.spec.probes, &mut out);
    check_remediation(&policy.spec.remediation, &mut out);
    check_alerts(&policy.spec.alerts, &mut out);
    check_analysis(&policy.spec.analysis, &mut out);
    out
}

fn check_analysis(a: &Analysis, out: &mut Vec<Violation>) {
    check_positive("spec.analysis.timeout", a.timeout, out);
    if a.timeout.get() > std::time::Duration::from_secs(120) {
        out.push(Violation::new(
            "spec.analysis.timeout",
            format!(
                "timeout {} is too long: the container waits for the model, give at most 2m (like 10s)",
                a.timeout
            ),
        ));
    }
    if a.include_logs > MAX_INCLUDE_LOGS {
        out.push(Violation::new(
            "spec.analysis.includeLogs",
            format!(
                "includeLogs {} is too many: give at most {MAX_INCLUDE_LOGS} lines",
                a.include_logs
            ),
        ));
    }
    if a.mode == AnalysisMode::Rules {
        if a.include_logs > 0 {
            out.push(Violation::new(
                "spec.analysis.includeLogs",
                "includeLogs only applies to mode: ai (the rules never read logs): set mode: ai or remove includeLogs",
            ));
        }
        if a.timeout != Analysis::default().timeout {
            out.push(Violation::new(
                "spec.analysis.timeout",
                "timeout only applies to mode: ai: set mode: ai or remove timeout",
            ));
        }
    }
}

/// A DNS-1123 label: what Kubernetes accepts as a name, so policies can live beside manifests.
pub(crate) fn check_dns_name(name: &str) -> Result<(), String> {
    let hint = "a name is lowercase letters, digits and '-', starts and ends with a letter or digit, and has at most 63 characters (like web-api)";
    if name.is_empty() {
        return Err(format!("metadata.name is empty: {hint}"));
    }
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let valid_ends = !name.starts_with('-') && !name.ends_with('-');
    if name.len() > 63 || !valid_chars || !valid_ends {
        return Err(format!("invalid name {name:?}: {hint}"));
    }
    Ok(())
}

fn check_selector(selector: &Selector, out: &mut Vec<Violation>) {
    let has_terms = !selector.match_labels.is_empty()
        || !selector.match_names.is_empty()
        || !selector.match_images.is_empty();
    if !has_terms && !selector.match_all {
        out.push(Violation::new(
            "spec.selector",
            "empty selector would match every container: give matchLabels, matchNames or matchImages, or say matchAll: true if that is what you mean",
        ));
    }
    if has_terms && selector.match_all {
        out.push(Violation::new(
            "spec.selector.matchAll",
            "matchAll: true cannot be combined with matchLabels, matchNames or matchImages: remove one or the other",
        ));
    }
    for key in selector.match_labels.keys() {
        if key.trim().is_empty() {
            out.push(Violation::new(
                "spec.selector.matchLabels",
                "a label key is empty: give the label name, like app",
            ));
        }
    }
    for (field, globs) in [
        ("matchNames", &selector.match_names),
        ("matchImages", &selector.match_images),
    ] {
        for (i, glob) in globs.iter().enumerate() {
            if glob.trim().is_empty() {
                out.push(Violation::new(
                    format!("spec.selector.{field}[{i}]"),
                    "empty pattern: give a glob like web-* (use matchAll: true to select everything)",
                ));
            }
        }
    }
}

fn check_percent(path: &str, value: f64, out: &mut Vec<Violation>) {
    if !(value > 0.0 && value <= 100.0) {
        out.push(Violation::new(
            path,
            format!(
                "percentage {value} is out of range: expected a number above 0 and at most 100"
            ),
        ));
    }
}

fn check_positive(path: &str, value: HumanDuration, out: &mut Vec<Violation>) {
    if value.is_zero() {
        out.push(Violation::new(
            path,
            "duration must be longer than 0s: give one like 30s, 5m or 1h",
        ));
    }
    check_at_most(path, value, MAX_DURATION, out);
}

/// Every duration has a maximum (documented in the README); the parser already refuses more
/// than a year, this also holds for values built any other way.
fn check_at_most(path: &str, value: HumanDuration, max: Duration, out: &mut Vec<Violation>) {
    if value.get() > max {
        out.push(Violation::new(
            path,
            format!(
                "duration {value} is too long: the longest allowed here is {}",
                HumanDuration(max)
            ),
        ));
    }
}

fn check_count(path: &str, value: u32, out: &mut Vec<Violation>) {
    if value == 0 {
        out.push(Violation::new(path, "count must be at least 1"));
    }
}

fn check_probes(probes: &Probes, out: &mut Vec<Violation>) {
    if *probes == Probes::default() {
        out.push(Violation::new(
            "spec.probes",
            "no probe is configured, so the policy would never find anything: add at least one of exit, healthcheck, oomKilled, restartLoop, cpu, memory, memoryLeak",
        ));
    }
    if let Some(p) = &probes.restart_loop {
        check_count("spec.probes.restartLoop.restarts", p.restarts, out);
        check_positive("spec.probes.restartLoop.within", p.within, out);
    }
    if let Some(p) = &probes.healthcheck {
        check_at_most(
            "spec.probes.healthcheck.unhealthyFor",
            p.unhealthy_for,
            MAX_DURATION,
            out,
        );
    }
    if let Some(p) = &probes.cpu {
        check_percent("spec.probes.cpu.abovePercent", p.above_percent, out);
        check_at_most("spec.probes.cpu.for", p.for_, MAX_DURATION, out);
    }
    if let Some(p) = &probes.memory {
        check_percent("spec.probes.memory.abovePercent", p.above_percent, out);
        check_at_most("spec.probes.memory.for", p.for_, MAX_DURATION, out);
    }
    if let Some(p) = &probes.memory_leak {
        check_percent(
            "spec.probes.memoryLeak.growthPercentPerHour",
            p.growth_percent_per_hour,
            out,
        );
        check_positive("spec.probes.memoryLeak.for", p.for_, out);
    }
}

fn check_remediation(r: &Remediation, out: &mut Vec<Violation>) {
    check_actions(r, out);
    if let Some(exec) = &r.exec {
        check_exec(exec, r.actions.contains(&ActionKind::Exec), out);
    }
    check_limits(r, out);
    check_action_times(r, out);
    if let Some(budget) = &r.fleet_budget {
        check_fleet_budget(budget, out);
    }
    check_min_confidence(r.min_confidence, out);
    check_give_up(r, out);
}

/// Each action listed once; exec listed only with the commands it may run.
fn check_actions(r: &Remediation, out: &mut Vec<Violation>) {
    let mut seen = BTreeSet::new();
    for (i, action) in r.actions.iter().enumerate() {
        if !seen.insert(*action) {
            out.push(Violation::new(
                format!("spec.remediation.actions[{i}]"),
                format!(
                    "action {action} is listed twice: list each action once, in escalation order"
                ),
            ));
        }
    }
    let commands = r.exec.as_ref().map(|e| e.allowed.as_slice()).unwrap_or(&[]);
    if let Some(at) = r.actions.iter().position(|a| *a == ActionKind::Exec)
        && commands.is_empty()
    {
        out.push(Violation::new(
            format!("spec.remediation.actions[{at}]"),
            "exec is allowed but remediation.exec.allowed lists no command: add the exact commands it may run, like [[\"/bin/sh\", \"-c\", \"kill -HUP 1\"]]",
        ));
    }
}

/// The `remediation.exec` block: only with exec among the actions, no empty command, a timeout.
fn check_exec(exec: &ExecPolicy, exec_allowed: bool, out: &mut Vec<Violation>) {
    if !exec_allowed {
        out.push(Violation::new(
            "spec.remediation.exec",
            "remediation.exec is set but exec is not among remediation.actions: add exec to the actions or remove this block",
        ));
    }
    for (i, cmd) in exec.allowed.iter().enumerate() {
        if cmd.is_empty() || cmd[0].trim().is_empty() {
            out.push(Violation::new(
                format!("spec.remediation.exec.allowed[{i}]"),
                "empty command: give the program and its arguments, like [\"/bin/sh\", \"-c\", \"kill -HUP 1\"]",
            ));
        }
    }
    check_positive("spec.remediation.exec.timeout", exec.timeout, out);
    check_at_most(
        "spec.remediation.exec.timeout",
        exec.timeout,
        MAX_ACTION_TIME,
        out,
    );
}

/// The cooldown, the action window and the circuit breaker.
fn check_limits(r: &Remediation, out: &mut Vec<Violation>) {
    check_positive("spec.remediation.cooldown", r.cooldown, out);
    check_count(
        "spec.remediation.maxActions.count",
        r.max_actions.count,
        out,
    );
    check_positive("spec.remediation.maxActions.per", r.max_actions.per, out);
    check_count(
        "spec.remediation.circuitBreaker.failures",
        r.circuit_breaker.failures,
        out,
    );
    check_positive(
        "spec.remediation.circuitBreaker.within",
        r.circuit_breaker.within,
        out,
    );
    check_positive(
        "spec.remediation.circuitBreaker.openFor",
        r.circuit_breaker.open_for,
        out,
    );
}

/// How long an action may take: its verification and a stop's grace period.
fn check_action_times(r: &Remediation, out: &mut Vec<Violation>) {
    check_positive("spec.remediation.verifyWithin", r.verify_within, out);
    check_at_most(
        "spec.remediation.verifyWithin",
        r.verify_within,
        MAX_ACTION_TIME,
        out,
    );
    check_at_most(
        "spec.remediation.stopTimeout",
        r.stop_timeout,
        MAX_ACTION_TIME,
        out,
    );
}

fn check_fleet_budget(budget: &FleetBudget, out: &mut Vec<Violation>) {
    check_count(
        "spec.remediation.fleetBudget.maxActions",
        budget.max_actions,
        out,
    );
    check_positive("spec.remediation.fleetBudget.per", budget.per, out);
}

fn check_min_confidence(min_confidence: f64, out: &mut Vec<Violation>) {
    if !(0.0..=1.0).contains(&min_confidence) {
        out.push(Violation::new(
            "spec.remediation.minConfidence",
            format!(
                "minConfidence {min_confidence} is out of range: expected a number from 0 to 1, like 0.7"
            ),
        ));
    }
}

/// `onGiveUp: stop` needs stop among the actions.
fn check_give_up(r: &Remediation, out: &mut Vec<Violation>) {
    if r.on_give_up == GiveUp::Stop && !r.actions.contains(&ActionKind::Stop) {
        out.push(Violation::new(
            "spec.remediation.onGiveUp",
            "onGiveUp: stop needs stop among remediation.actions: add stop to the actions or use onGiveUp: leave",
        ));
    }
}

fn check_alerts(alerts: &Alerts, out: &mut Vec<Violation>) {
    if alerts.group_wait.get() > std::time::Duration::from_secs(300) {
        out.push(Violation::new(
            "spec.alerts.groupWait",
            format!(
                "groupWait {} is too long: alerts would wait that long before anyone hears of them; use at most 5m (default 3s)",
                alerts.group_wait
            ),
        ));
    }
    for (i, channel) in alerts.channels.iter().enumerate() {
        let mut secrets = Vec::new();
        match channel {
            Channel::Slack(s) => secrets.push((
                format!("spec.alerts.channels[{i}].slack.webhookUrlFrom"),
                &s.webhook_url_from,
            )),
            Channel::Webhook(w) => {
                secrets.push((
                    format!("spec.alerts.channels[{i}].webhook.urlFrom"),
                    &w.url_from,
                ));
                if let Some(key) = &w.secret_from {
                    secrets.push((format!("spec.alerts.channels[{i}].webhook.secretFrom"), key));
                }
            }
            Channel::Alertmanager(a) => {
                let ok = (a.url.starts_with("http://") || a.url.starts_with("https://"))
                    && a.url.len() > "https://".len();
                if !ok {
                    out.push(Violation::new(
                        format!("spec.alerts.channels[{i}].alertmanager.url"),
                        format!(
                            "{:?} is not an http(s) URL: give the Alertmanager's base URL, like http://alertmanager:9093",
                            a.url
                        ),
                    ));
                }
            }
        }
        for (path, secret) in secrets {
            let (SecretRef::Env(name) | SecretRef::File(name)) = secret;
            if name.trim().is_empty() {
                out.push(Violation::new(
                    path,
                    "empty secret reference: name the environment variable (env: SLACK_WEBHOOK_URL) or file that holds it",
                ));
            }
        }
    }
}

use std::time::Duration;

use super::duration::{HumanDuration, MAX_ACTION_TIME, MAX_DURATION};

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> HealthPolicy {
        super::super::builtin::default_policy()
    }

    #[test]
    fn the_builtin_default_policy_is_valid() {
        assert_eq!(validate(&valid()), vec![]);
    }

    #[test]
    fn each_rule_names_the_path_it_concerns() {
        type Edit = fn(&mut HealthPolicy);
        let cases: Vec<(Edit, &str, &str)> = vec![
            (
                |p| p.api_version = "v1".into(),
                "apiVersion",
                "expected \"hemostat.io/v1alpha1\"",
            ),
            (
                |p| p.kind = "Pod".into(),
                "kind",
                "expected \"HealthPolicy\"",
            ),
            (
                |p| p.metadata.name = "Web_API".into(),
                "metadata.name",
                "invalid name",
            ),
            (
                |p| p.metadata.name = "a".repeat(64),
                "metadata.name",
                "at most 63",
            ),
            (
                |p| p.spec.selector = Selector::default(),
                "spec.selector",
                "matchAll: true",
            ),
            (
                |p| p.spec.probes = Probes::default(),
                "spec.probes",
                "no probe",
            ),
            (
                |p| p.spec.probes.cpu.as_mut().unwrap().above_percent = 150.0,
                "spec.probes.cpu.abovePercent",
                "out of range",
            ),
            (
                |p| p.spec.probes.memory.as_mut().unwrap().above_percent = f64::NAN,
                "spec.probes.memory.abovePercent",
                "out of range",
            ),
            (
                |p| p.spec.remediation.cooldown = HumanDuration::default(),
                "spec.remediation.cooldown",
                "longer than 0s",
            ),
            (
                |p| p.spec.remediation.verify_within = HumanDuration::from_secs(3_601),
                "spec.remediation.verifyWithin",
                "longest allowed here is 1h",
            ),
            (
                |p| p.spec.remediation.stop_timeout = HumanDuration::from_secs(7_200),
                "spec.remediation.stopTimeout",
                "longest allowed here is 1h",
            ),
            (
                |p| {
                    p.spec.remediation.circuit_breaker.open_for = HumanDuration::from_secs(u64::MAX)
                },
                "spec.remediation.circuitBreaker.openFor",
                "longest allowed here is 365d",
            ),
            (
                |p| p.spec.probes.cpu.as_mut().unwrap().for_ = HumanDuration::from_secs(u64::MAX),
                "spec.probes.cpu.for",
                "longest allowed here is 365d",
            ),
            (
                |p| p.spec.remediation.max_actions.count = 0,
                "spec.remediation.maxActions.count",
                "at least 1",
            ),
            (
                |p| p.spec.remediation.actions = vec![ActionKind::Restart, ActionKind::Exec],
                "spec.remediation.actions[1]",
                "lists no command",
            ),
            (
                |p| p.spec.remediation.on_give_up = GiveUp::Stop,
                "spec.remediation.onGiveUp",
                "needs stop",
            ),
            (
                |p| p.spec.analysis.include_logs = 5,
                "spec.analysis.includeLogs",
                "only applies to mode: ai",
            ),
            (
                |p| {
                    p.spec.analysis.mode = AnalysisMode::Ai;
                    p.spec.analysis.include_logs = 5000;
                },
                "spec.analysis.includeLogs",
                "at most 1000",
            ),
            (
                |p| {
                    p.spec.analysis.mode = AnalysisMode::Ai;
                    p.spec.analysis.timeout = HumanDuration::default();
                },
                "spec.analysis.timeout",
                "longer than 0s",
            ),
            (
                |p| p.spec.analysis.timeout = HumanDuration::from_secs(3),
                "spec.analysis.timeout",
                "only applies to mode: ai",
            ),
            (
                |p| p.spec.remediation.min_confidence = 1.5,
                "spec.remediation.minConfidence",
                "from 0 to 1",
            ),
        ];
        for (edit, path, fragment) in cases {
            let mut policy = valid();
            edit(&mut policy);
            let violations = validate(&policy);
            assert!(
                violations
                    .iter()
                    .any(|v| v.path == path && v.message.contains(fragment)),
                "expected a violation at {path} containing {fragment:?}, got {violations:?}"
            );
        }
    }
}
