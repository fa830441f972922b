//! The rule-based analyzer: findings to one decision, within the policy's allowed actions.

use super::{Observation, run_probes};
use crate::model::container::ContainerState;
use crate::model::decision::{ActionKind, AnalysisMethod, Decision, Finding, FindingKind};
use crate::policy::HealthPolicy;

/// Confidence of the rules per finding, from the original system where it had one:
/// non-zero exit 0.9, critical anomaly 0.85, memory leak 0.8, sustained high CPU 0.75,
/// excessive restarts 0.6 (no action), transient spike 0.65 (no action).
fn confidence(finding: &Finding) -> f64 {
    match &finding.kind {
        FindingKind::Exited { exit_code: 0 } => 0.75,
        FindingKind::Exited { .. } => 0.9,
        FindingKind::OomKilled => 0.9,
        FindingKind::Unhealthy { .. } => 0.8,
        FindingKind::RestartLoop { .. } => 0.8,
        FindingKind::HighCpu { percent, .. } | FindingKind::HighMemory { percent, .. } => {
            if *percent > 95.0 {
                0.85
            } else {
                0.75
            }
        }
        FindingKind::MemoryLeak { .. } => 0.8,
        FindingKind::TransientSpike { .. } => 0.65,
    }
}

/// The actions that can answer a finding, given the container's state.
fn answers(kind: &FindingKind, state: ContainerState) -> &'static [ActionKind] {
    use ActionKind::*;
    match kind {
        FindingKind::Exited { .. } | FindingKind::OomKilled => &[Restart, Start],
        // Restarting a crash-looping container does not help: only stopping it does.
        FindingKind::RestartLoop { .. } => &[Stop],
        FindingKind::Unhealthy { .. }
        | FindingKind::HighCpu { .. }
        | FindingKind::HighMemory { .. }
        | FindingKind::MemoryLeak { .. }
            if state == ContainerState::Running =>
        {
            &[Exec, Restart, Stop]
        }
        _ => &[],
    }
}

/// Analyzes an observation with the rules: runs the probes, then decides.
pub(crate) fn analyze(policy: &HealthPolicy, obs: &Observation<'_>) -> Decision {
    let findings = run_probes(policy, obs);
    decide(policy, obs, findings)
}

/// Picks the action for the most confident finding among the policy's allowed actions, in the
/// policy's escalation order: the first applicable action, then the next one after each failed
/// repair in the circuit breaker window. Below `minConfidence` it is a false alarm.
pub(crate) fn decide(
    policy: &HealthPolicy,
    obs: &Observation<'_>,
    findings: Vec<Finding>,
) -> Decision {
    let remediation = &policy.spec.remediation;
    let Some(primary) = findings
        .iter()
        .max_by(|a, b| confidence(a).total_cmp(&confidence(b)))
    else {
        return Decision {
            action: None,
            reason: "healthy: no probe found a problem".into(),
            confidence: 1.0,
            method: AnalysisMethod::Rules,
            findings,
            primary: None,
            ai: None,
        };
    };
    let conf = confidence(primary);
    let candidates: Vec<ActionKind> = remediation
        .actions
        .iter()
        .copied()
        .filter(|a| answers(&primary.kind, obs.info.state).contains(a))
        .collect();
    let issues = findings
        .iter()
        .map(|f| f.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let primary_name = Some(primary.kind.name().to_owned());
    let no_action = |reason: String, confidence: f64| Decision {
        action: None,
        reason,
        confidence,
        method: AnalysisMethod::Rules,
        findings: findings.clone(),
        primary: primary_name.clone(),
        ai: None,
    };
    if let FindingKind::TransientSpike { .. } = primary.kind {
        return no_action(format!("false alarm: {issues}; not sustained"), conf);
    }
    if conf < remediation.min_confidence {
        return no_action(
            format!(
                "false alarm: {issues}; confidence {conf:.2} is below the policy's minimum {}",
                remediation.min_confidence
            ),
            conf,
        );
    }
    if candidates.is_empty() {
        let wanted = answers(&primary.kind, obs.info.state)
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(" or ");
        let reason = if wanted.is_empty() {
            format!("{issues}; no action can fix this")
        } else {
            format!("{issues}; the policy allows no action that fixes this (would need {wanted})")
        };
        return no_action(reason, conf);
    }
    let step = (obs.failed_repairs as usize).min(candidates.len() - 1);
    let action = candidates[step];
    let escalation = if step > 0 {
        format!(" (escalated after {} failed repair(s))", obs.failed_repairs)
    } else {
        String::new()
    };
    Decision {
        action: Some(action),
        reason: format!("{issues}{escalation}"),
        confidence: conf,
        method: AnalysisMethod::Rules,
        findings,
        primary: primary_name,
        ai: None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};

    use super::*;
    use crate::model::container::{ContainerInfo, HealthStatus, ResourceLimits};
    use crate::model::usage::UsagePoint;
    use crate::policy::builtin::default_policy;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn info(state: ContainerState) -> ContainerInfo {
        ContainerInfo {
            id: "abc".into(),
            name: "web-1".into(),
            image: "img".into(),
            labels: Default::default(),
            state,
            exit_code: None,
            oom_killed: false,
            health: HealthStatus::None,
            health_failing_streak: 0,
            health_output: None,
            restart_count: 0,
            started_at: Some(t(-10_000)),
            finished_at: None,
            limits: ResourceLimits::default(),
            pid: None,
        }
    }

    fn usage(cpu: &[f64], step: i64, end: i64) -> Vec<UsagePoint> {
        let n = cpu.len() as i64;
        cpu.iter()
            .enumerate()
            .map(|(i, c)| UsagePoint {
                at: t(end - (n - 1 - i as i64) * step),
                cpu_percent: *c,
                memory_percent: 10.0,
                memory_used_bytes: 1,
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        info: ContainerInfo,
        usage: Vec<UsagePoint>,
        restarts: Vec<DateTime<Utc>>,
        manual_stop: bool,
        unhealthy_since: Option<DateTime<Utc>>,
        failed_repairs: u32,
        policy: fn(&mut crate::policy::HealthPolicy),
        action: Option<ActionKind>,
        reason: &'static str,
    }

    fn base(name: &'static str, info: ContainerInfo) -> Case {
        Case {
            name,
            info,
            usage: vec![],
            restarts: vec![],
            manual_stop: false,
            unhealthy_since: None,
            failed_repairs: 0,
            policy: |_| {},
            action: None,
            reason: "",
        }
    }

    fn exited(code: i64) -> ContainerInfo {
        ContainerInfo {
            exit_code: Some(code),
            ..info(ContainerState::Exited)
        }
    }

    #[test]
    fn the_rules_decide_as_the_table_says() {
        let every_two_min = |cpu: &[f64]| usage(cpu, 60, 0);
        let cases = vec![
            Case {
                action: Some(ActionKind::Restart),
                reason: "Exited with code 1",
                ..base("a crash is restarted", exited(1))
            },
            Case {
                reason: "healthy",
                ..base("a clean exit is not a crash", exited(0))
            },
            Case {
                reason: "healthy",
                manual_stop: true,
                ..base("a manual stop is left alone", exited(1))
            },
            Case {
                action: Some(ActionKind::Restart),
                reason: "OOM killed",
                ..base(
                    "an OOM kill is recognised as OOM",
                    ContainerInfo {
                        oom_killed: true,
                        ..exited(137)
                    },
                )
            },
            Case {
                action: Some(ActionKind::Start),
                reason: "Exited with code 2",
                policy: |p| p.spec.remediation.actions = vec![ActionKind::Start],
                ..base("start is used when restart is not allowed", exited(2))
            },
            Case {
                reason: "allows no action",
                policy: |p| p.spec.remediation.actions = vec![ActionKind::Stop],
                ..base("nothing allowed fixes an exit", exited(2))
            },
            Case {
                reason: "healthy",
                ..base(
                    "health starting is never unhealthy",
                    ContainerInfo {
                        health: HealthStatus::Starting,
                        ..info(ContainerState::Running)
                    },
                )
            },
            Case {
                action: Some(ActionKind::Restart),
                reason: "Unhealthy for 5s",
                unhealthy_since: Some(t(-5)),
                ..base(
                    "unhealthy is restarted at once by default",
                    ContainerInfo {
                        health: HealthStatus::Unhealthy,
                        ..info(ContainerState::Running)
                    },
                )
            },
            Case {
                reason: "healthy",
                unhealthy_since: Some(t(-5)),
                policy: |p| {
                    p.spec.probes.healthcheck.as_mut().unwrap().unhealthy_for =
                        "30s".parse().unwrap()
                },
                ..base(
                    "unhealthy waits for unhealthyFor",
                    ContainerInfo {
                        health: HealthStatus::Unhealthy,
                        ..info(ContainerState::Running)
                    },
                )
            },
            Case {
                action: Some(ActionKind::Restart),
                reason: "High CPU: 90.0% of limit for 2m",
                usage: every_two_min(&[90.0, 91.0, 90.0]),
                ..base(
                    "sustained high CPU is restarted",
                    info(ContainerState::Running),
                )
            },
            Case {
                reason: "false alarm: Transient CPU spike",
                usage: every_two_min(&[10.0, 20.0, 90.0]),
                ..base(
                    "a short CPU spike is a false alarm",
                    info(ContainerState::Running),
                )
            },
            Case {
                reason: "false alarm: Transient CPU spike",
                usage: usage(&[90.0, 90.0], 10, 0),
                ..base(
                    "samples that do not cover the window are not sustained",
                    info(ContainerState::Running),
                )
            },
            Case {
                reason: "healthy",
                usage: every_two_min(&[50.0, 50.0, 50.0]),
                ..base(
                    "one busy core of two is 50 percent, not critical",
                    info(ContainerState::Running),
                )
            },
            Case {
                action: Some(ActionKind::Stop),
                reason: "Restart loop: 5 restarts",
                restarts: vec![t(-500), t(-400), t(-300), t(-200), t(-100)],
                policy: |p| {
                    p.spec.remediation.actions = vec![ActionKind::Restart, ActionKind::Stop]
                },
                ..base(
                    "a restart loop is stopped when stop is allowed",
                    info(ContainerState::Running),
                )
            },
            Case {
                reason: "allows no action",
                restarts: vec![t(-500), t(-400), t(-300), t(-200), t(-100)],
                ..base(
                    "a restart loop is not restarted",
                    info(ContainerState::Running),
                )
            },
            Case {
                reason: "healthy",
                restarts: vec![t(-5000), t(-4000), t(-300), t(-200), t(-100)],
                ..base(
                    "old restarts fall out of the window",
                    info(ContainerState::Running),
                )
            },
            Case {
                action: Some(ActionKind::Restart),
                reason: "escalated after 1 failed repair",
                unhealthy_since: Some(t(-60)),
                failed_repairs: 1,
                policy: |p| {
                    p.spec.remediation.actions = vec![ActionKind::Exec, ActionKind::Restart];
                    p.spec.remediation.exec = Some(crate::policy::ExecPolicy {
                        allowed: vec![vec!["/bin/true".into()]],
                        timeout: "5s".parse().unwrap(),
                    });
                },
                ..base(
                    "a failed exec escalates to restart",
                    ContainerInfo {
                        health: HealthStatus::Unhealthy,
                        ..info(ContainerState::Running)
                    },
                )
            },
            Case {
                reason: "below the policy's minimum 0.95",
                policy: |p| p.spec.remediation.min_confidence = 0.95,
                ..base("below minConfidence is a false alarm", exited(1))
            },
        ];
        for case in cases {
            let mut policy = default_policy();
            (case.policy)(&mut policy);
            let obs = Observation {
                info: &case.info,
                now: t(0),
                usage: &case.usage,
                restarts: &case.restarts,
                manual_stop: case.manual_stop,
                unhealthy_since: case.unhealthy_since,
                failed_repairs: case.failed_repairs,
            };
            let decision = analyze(&policy, &obs);
            assert_eq!(decision.action, case.action, "{}: {decision:?}", case.name);
            assert!(
                decision.reason.contains(case.reason),
                "{}: {:?}",
                case.name,
                decision.reason
            );
        }
    }

    /// The probe's `memory.for`, `cpu.for`, `memoryLeak.for`, `restartLoop.within` and
    /// `unhealthyFor` far beyond any clock: refused by validation, and harmless here anyway.
    #[test]
    fn huge_probe_windows_never_panic() {
        let huge = crate::policy::HumanDuration::from_secs(u64::MAX);
        let mut policy = default_policy();
        policy.spec.probes.memory_leak = Some(Default::default());
        let p = &mut policy.spec.probes;
        p.cpu.as_mut().unwrap().for_ = huge;
        p.memory.as_mut().unwrap().for_ = huge;
        p.memory_leak.as_mut().unwrap().for_ = huge;
        p.restart_loop = Some(crate::policy::types::RestartLoopProbe {
            restarts: 1,
            within: huge,
        });
        p.healthcheck = Some(crate::policy::types::HealthcheckProbe {
            unhealthy_for: huge,
        });
        let running = info(ContainerState::Running);
        let points = usage(&[99.0; 10], 10, 0);
        let obs = Observation {
            info: &running,
            now: t(0),
            usage: &points,
            restarts: &[t(-5)],
            manual_stop: false,
            unhealthy_since: Some(t(-100)),
            failed_repairs: 0,
        };
        let d = analyze(&policy, &obs);
        assert!(d.reason.contains("Restart loop"), "{d:?}");
    }

    #[test]
    fn a_leak_is_a_steady_climb_over_the_window() {
        let mut policy = default_policy();
        policy.spec.probes.memory_leak = Some(Default::default());
        policy.spec.probes.memory = None;
        let running = info(ContainerState::Running);
        let climb: Vec<UsagePoint> = (0..=40)
            .map(|i| UsagePoint {
                at: t(-2400 + i * 60),
                cpu_percent: 1.0,
                memory_percent: 10.0 + i as f64 * 0.5,
                memory_used_bytes: 1,
            })
            .collect();
        let obs = Observation {
            info: &running,
            now: t(0),
            usage: &climb,
            restarts: &[],
            manual_stop: false,
            unhealthy_since: None,
            failed_repairs: 0,
        };
        let d = analyze(&policy, &obs);
        assert_eq!(d.action, Some(ActionKind::Restart), "{d:?}");
        assert!(
            d.reason.contains("Memory leak: memory grows 30.0%"),
            "{}",
            d.reason
        );
        let flat: Vec<UsagePoint> = climb
            .iter()
            .map(|u| UsagePoint {
                memory_percent: 40.0,
                ..*u
            })
            .collect();
        let obs = Observation {
            usage: &flat,
            ..obs
        };
        assert_eq!(analyze(&policy, &obs).action, None);
    }

    #[test]
    fn samples_from_before_the_last_start_are_ignored() {
        let policy = default_policy();
        let restarted = ContainerInfo {
            started_at: Some(t(-30)),
            ..info(ContainerState::Running)
        };
        let old_burn = usage(&[99.0, 99.0, 99.0, 99.0], 60, -60);
        let obs = Observation {
            info: &restarted,
            now: t(0),
            usage: &old_burn,
            restarts: &[],
            manual_stop: false,
            unhealthy_since: None,
            failed_repairs: 0,
        };
        assert_eq!(analyze(&policy, &obs).action, None);
        let _ = Duration::seconds(0);
    }
}
