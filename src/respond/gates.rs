//! The safety gates: pure, clock passed in; the first refusal wins.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::container::ContainerInfo;
use crate::model::decision::ActionKind;
use crate::model::safety::{SafetyState, earlier, later};
use crate::policy::HealthPolicy;
use crate::policy::select::is_protected;

/// Why a decided action was not carried out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "gate", rename_all = "snake_case")]
pub(crate) enum Refusal {
    /// The policy does not allow this action.
    #[error("action {action} is not allowed by policy {policy}")]
    NotAllowed {
        /// The refused action.
        action: ActionKind,
        /// The policy.
        policy: String,
    },
    /// An exec of a command that is not on the allow-list.
    #[error("command {command:?} is not on the policy's exec allow-list")]
    ExecNotAllowed {
        /// The refused command.
        command: Vec<String>,
    },
    /// The container is labelled `io.hemostat.protected=true`.
    #[error("container is protected (io.hemostat.protected=true)")]
    Protected,
    /// The container is HemoStat itself.
    #[error("container is HemoStat's own container")]
    OwnContainer,
    /// A person stopped or killed it; it stays so until someone starts it.
    #[error("container was stopped by hand; it is left alone until someone starts it")]
    ManualStop,
    /// Too soon after the last action.
    #[error("cooldown: last action at {last}, next allowed at {until}")]
    Cooldown {
        /// The last action.
        last: DateTime<Utc>,
        /// When the cooldown ends.
        until: DateTime<Utc>,
    },
    /// Too many actions in the window.
    #[error("{count} actions already within {per}; the limit is {count}")]
    MaxActions {
        /// Actions in the window.
        count: u32,
        /// The window.
        per: String,
    },
    /// Repairs keep failing; the breaker is open.
    #[error("circuit breaker open until {until} after {failures} failed repairs")]
    CircuitOpen {
        /// When it closes.
        until: DateTime<Utc>,
        /// Failures that opened it.
        failures: u32,
    },
    /// Another action on this container is running (here or on another node).
    #[error("another action on this container is in flight")]
    InFlight,
    /// The policy's fleet-wide budget is spent.
    #[error(
        "fleet budget of policy {policy} spent: at most {max} actions per {per} across all nodes"
    )]
    FleetBudget {
        /// The policy.
        policy: String,
        /// Its budget.
        max: u32,
        /// Its window.
        per: String,
    },
}

impl Refusal {
    /// A short label for metrics and the wire.
    pub(crate) fn gate(&self) -> &'static str {
        match self {
            Self::NotAllowed { .. } => "not_allowed",
            Self::ExecNotAllowed { .. } => "exec_not_allowed",
            Self::Protected => "protected",
            Self::OwnContainer => "own_container",
            Self::ManualStop => "manual_stop",
            Self::Cooldown { .. } => "cooldown",
            Self::MaxActions { .. } => "max_actions",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::InFlight => "in_flight",
            Self::FleetBudget { .. } => "fleet_budget",
        }
    }
}

/// What the gates say.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Carry it out.
    Execute,
    /// Record it as if carried out, touch nothing.
    DryRun,
    /// Do not carry it out.
    Refuse(Refusal),
}

/// Everything the gates look at.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GateInput<'a> {
    /// The governing policy.
    pub policy: &'a HealthPolicy,
    /// The container.
    pub info: &'a ContainerInfo,
    /// The decided action.
    pub action: ActionKind,
    /// For exec: the command.
    pub command: Option<&'a [String]>,
    /// HemoStat's own container id, when it runs in one.
    pub own_container_id: Option<&'a str>,
    /// A person stopped it.
    pub manual_stop: bool,
    /// Its safety state.
    pub safety: &'a SafetyState,
    /// Now.
    pub now: DateTime<Utc>,
    /// The operator-wide dry-run switch.
    pub global_dry_run: bool,
}

/// The gates, in order: allowed by the policy; protected label and HemoStat's own container;
/// manual stop; dry-run; cooldown; maximum actions per window; circuit breaker. (The last gate,
/// one action in flight, is a lock taken by the responder.)
pub(crate) fn check_gates(input: GateInput<'_>) -> Verdict {
    let r = &input.policy.spec.remediation;
    if !r.actions.contains(&input.action) {
        return Verdict::Refuse(Refusal::NotAllowed {
            action: input.action,
            policy: input.policy.metadata.name.clone(),
        });
    }
    if input.action == ActionKind::Exec {
        let allowed = r.exec.as_ref().map(|e| e.allowed.as_slice()).unwrap_or(&[]);
        let command = input.command.unwrap_or(&[]);
        if !allowed.iter().any(|a| a.as_slice() == command) {
            return Verdict::Refuse(Refusal::ExecNotAllowed {
                command: command.to_vec(),
            });
        }
    }
    if is_protected(&input.info.labels) {
        return Verdict::Refuse(Refusal::Protected);
    }
    if let Some(own) = input.own_container_id
        && (input.info.id == own || (own.len() >= 12 && input.info.id.starts_with(own)))
    {
        return Verdict::Refuse(Refusal::OwnContainer);
    }
    if input.manual_stop {
        return Verdict::Refuse(Refusal::ManualStop);
    }
    if r.dry_run || input.global_dry_run {
        return Verdict::DryRun;
    }
    let now = input.now;
    if let Some(last) = input.safety.actions.last() {
        let until = later(last.at, r.cooldown.get());
        if now < until {
            return Verdict::Refuse(Refusal::Cooldown {
                last: last.at,
                until,
            });
        }
    }
    let window_start = earlier(now, r.max_actions.per.get());
    let in_window = input
        .safety
        .actions
        .iter()
        .filter(|a| a.at > window_start)
        .count() as u32;
    if in_window >= r.max_actions.count {
        return Verdict::Refuse(Refusal::MaxActions {
            count: in_window,
            per: r.max_actions.per.to_string(),
        });
    }
    if let Some(until) = input.safety.open_until
        && now < until
    {
        return Verdict::Refuse(Refusal::CircuitOpen {
            until,
            failures: input.safety.failures.len() as u32,
        });
    }
    Verdict::Execute
}

#[cfg(test)]
mod tests {

    use chrono::Duration;

    use super::*;
    use crate::model::container::ContainerState;
    use crate::model::safety::{ActionRecord, Outcome, far_future};
    use crate::policy::builtin::{PROTECTED_LABEL, default_policy};

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn container(labels: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            id: "0123456789abcdef".into(),
            image: "img".into(),
            state: ContainerState::Exited,
            exit_code: Some(1),
            started_at: None,
            pid: None,
            ..crate::engine::fake::running("web", labels)
        }
    }

    fn action(at: i64, finding: &str, outcome: Outcome) -> ActionRecord {
        ActionRecord {
            decision_id: format!("d{at}"),
            at: t(at),
            action: ActionKind::Restart,
            finding: finding.into(),
            outcome,
        }
    }

    #[test]
    fn the_gates_refuse_in_order() {
        let policy = default_policy();
        let plain = container(&[]);
        let protected = container(&[(PROTECTED_LABEL, "true")]);
        let recent = SafetyState {
            actions: vec![action(-60, "exited", Outcome::Succeeded)],
            ..Default::default()
        };
        let three = SafetyState {
            actions: vec![
                action(-3500, "exited", Outcome::Succeeded),
                action(-3000, "exited", Outcome::Succeeded),
                action(-2000, "exited", Outcome::Succeeded),
            ],
            ..Default::default()
        };
        let mut short_cooldown = default_policy();
        short_cooldown.spec.remediation.cooldown = "1s".parse().unwrap();
        let open = SafetyState {
            open_until: Some(t(100)),
            failures: vec![t(-10); 3],
            ..Default::default()
        };
        let mut dry = default_policy();
        dry.spec.remediation.dry_run = true;
        let empty = SafetyState::default();
        let input = |policy, info, safety, manual_stop, own: Option<&'static str>| GateInput {
            policy,
            info,
            action: ActionKind::Restart,
            command: None,
            own_container_id: own,
            manual_stop,
            safety,
            now: t(0),
            global_dry_run: false,
        };
        let cases: Vec<(&str, GateInput<'_>, &str)> = vec![
            (
                "nothing in the way",
                input(&policy, &plain, &empty, false, None),
                "execute",
            ),
            (
                "protected beats everything",
                input(&policy, &protected, &recent, true, None),
                "protected",
            ),
            (
                "own container",
                input(&policy, &plain, &empty, false, Some("0123456789ab")),
                "own_container",
            ),
            (
                "manual stop beats dry-run",
                input(&dry, &plain, &empty, true, None),
                "manual_stop",
            ),
            (
                "dry-run beats cooldown",
                input(&dry, &plain, &recent, false, None),
                "dry_run",
            ),
            (
                "cooldown",
                input(&policy, &plain, &recent, false, None),
                "cooldown",
            ),
            (
                "max actions per window",
                input(&short_cooldown, &plain, &three, false, None),
                "max_actions",
            ),
            (
                "circuit open",
                input(&short_cooldown, &plain, &open, false, None),
                "circuit_open",
            ),
        ];
        for (name, input, expected) in cases {
            let got = match check_gates(input) {
                Verdict::Execute => "execute",
                Verdict::DryRun => "dry_run",
                Verdict::Refuse(r) => r.gate(),
            };
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn exec_runs_only_exactly_allow_listed_commands_and_only_allowed_actions_run() {
        let mut policy = default_policy();
        policy.spec.remediation.actions = vec![ActionKind::Exec];
        policy.spec.remediation.exec = Some(crate::policy::ExecPolicy {
            allowed: vec![vec!["/bin/sh".into(), "-c".into(), "kill -HUP 1".into()]],
            timeout: "5s".parse().unwrap(),
        });
        let info = container(&[]);
        let safety = SafetyState::default();
        let ok = vec!["/bin/sh".to_string(), "-c".into(), "kill -HUP 1".into()];
        let bad = vec!["/bin/sh".to_string(), "-c".into(), "rm -rf /".into()];
        let input = |action, command: Option<&[String]>| {
            check_gates(GateInput {
                policy: &policy,
                info: &info,
                action,
                command,
                own_container_id: None,
                manual_stop: false,
                safety: &safety,
                now: t(0),
                global_dry_run: false,
            })
        };
        assert_eq!(input(ActionKind::Exec, Some(&ok)), Verdict::Execute);
        assert!(matches!(
            input(ActionKind::Exec, Some(&bad)),
            Verdict::Refuse(Refusal::ExecNotAllowed { .. })
        ));
        assert!(matches!(
            input(ActionKind::Exec, Some(&ok[..2])),
            Verdict::Refuse(Refusal::ExecNotAllowed { .. })
        ));
        assert!(matches!(
            input(ActionKind::Restart, None),
            Verdict::Refuse(Refusal::NotAllowed { .. })
        ));
    }

    #[test]
    fn a_restart_followed_by_the_same_failure_counts_as_a_failure_and_trips_the_breaker() {
        let policy = default_policy();
        let mut s = SafetyState::default();
        for (i, at) in [0, 100, 200].into_iter().enumerate() {
            s.actions.push(action(at, "exited", Outcome::Pending));
            s.finish(&format!("d{at}"), Outcome::Succeeded, t(at + 2));
            assert!(
                s.note_recurrence(&policy.spec.remediation.limits(), "exited", t(at + 50)),
                "failure {i} counted"
            );
            assert!(
                !s.note_recurrence(&policy.spec.remediation.limits(), "exited", t(at + 60)),
                "counted once per action"
            );
            let tripped = s.trip_if_needed(&policy.spec.remediation.limits(), t(at + 50));
            assert_eq!(tripped, i == 2, "trips at the third failure");
        }
        assert_eq!(s.open_until, Some(t(250 + 3600)));
        assert!(
            !s.trip_if_needed(&policy.spec.remediation.limits(), t(260)),
            "gives up once"
        );
    }

    #[test]
    fn a_repair_still_pending_is_not_judged_by_the_failure_it_is_repairing() {
        let limits = default_policy().spec.remediation.limits();
        let table = [
            (Outcome::Pending, false, Outcome::Pending),
            (Outcome::Succeeded, true, Outcome::Failed),
            (Outcome::Interrupted, true, Outcome::Failed),
            (Outcome::Failed, false, Outcome::Failed),
        ];
        for (before, counted, after) in table {
            let mut s = SafetyState {
                actions: vec![action(0, "exited", before)],
                ..Default::default()
            };
            assert_eq!(
                s.note_recurrence(&limits, "exited", t(1)),
                counted,
                "{before:?}"
            );
            assert_eq!(s.actions[0].outcome, after, "{before:?}");
            assert_eq!(s.failures.len(), usize::from(counted), "{before:?}");
        }
    }

    #[test]
    fn a_different_failure_or_one_outside_the_window_is_not_a_recurrence() {
        let policy = default_policy();
        let mut s = SafetyState {
            actions: vec![action(0, "high_cpu", Outcome::Succeeded)],
            ..Default::default()
        };
        assert!(!s.note_recurrence(&policy.spec.remediation.limits(), "exited", t(10)));
        assert!(!s.note_recurrence(&policy.spec.remediation.limits(), "high_cpu", t(3601)));
    }

    #[test]
    fn prune_keeps_only_what_a_window_still_reads() {
        let policy = default_policy();
        let mut s = SafetyState {
            actions: vec![
                action(-7200, "exited", Outcome::Succeeded),
                action(-10, "exited", Outcome::Succeeded),
            ],
            failures: vec![t(-7200), t(-10)],
            open_until: Some(t(-1)),
            gave_up_at: None,
        };
        s.prune(&policy.spec.remediation.limits(), t(0));
        assert_eq!(s.actions.len(), 1);
        assert_eq!(s.failures, vec![t(-10)]);
        assert_eq!(s.open_until, None);
    }

    /// The probe's values (`openFor: 99999999999999h`, `verifyWithin: 18446744073709551515s`):
    /// refused by the parser and `validate`, and the arithmetic saturates for any value built
    /// otherwise, so no gate or breaker ever panics.
    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        let huge = crate::policy::HumanDuration::from_secs(u64::MAX);
        let mut policy = default_policy();
        let r = &mut policy.spec.remediation;
        r.cooldown = huge;
        r.max_actions.per = huge;
        r.circuit_breaker.within = huge;
        r.circuit_breaker.open_for = huge;
        r.circuit_breaker.failures = 1;
        let info = container(&[]);
        let mut state = SafetyState {
            actions: vec![action(-10, "exited", Outcome::Succeeded)],
            ..Default::default()
        };
        let verdict = check_gates(GateInput {
            policy: &policy,
            info: &info,
            action: ActionKind::Restart,
            command: None,
            own_container_id: None,
            manual_stop: false,
            safety: &state,
            now: t(0),
            global_dry_run: false,
        });
        assert!(
            matches!(verdict, Verdict::Refuse(Refusal::Cooldown { until, .. }) if until == far_future()),
            "{verdict:?}"
        );
        assert!(state.note_recurrence(&policy.spec.remediation.limits(), "exited", t(0)));
        assert!(state.trip_if_needed(&policy.spec.remediation.limits(), t(1)));
        assert_eq!(state.open_until, Some(far_future()));
        state.prune(&policy.spec.remediation.limits(), t(2));
        assert_eq!(
            later(DateTime::<Utc>::MAX_UTC, Duration::MAX.to_std().unwrap()),
            far_future()
        );
        assert_eq!(
            earlier(t(0), std::time::Duration::MAX),
            DateTime::UNIX_EPOCH
        );
        // The saturated instant survives a round trip through the stores' JSON.
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<SafetyState>(&json).unwrap(), state);
    }
}
