//! The per-container safety state the gates read: actions taken, failures, the breaker.
//!
//! Pure, clock passed in. The methods read the policy's limits through [`Limits`] (built by
//! `Remediation::limits()`), so this module depends on no policy type.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::decision::ActionKind;

/// The windows and counts of a policy's remediation that the safety state is kept against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `cooldown`.
    pub cooldown: std::time::Duration,
    /// `maxActions.per`.
    pub max_actions_per: std::time::Duration,
    /// `circuitBreaker.within`.
    pub breaker_within: std::time::Duration,
    /// `circuitBreaker.failures`.
    pub breaker_failures: u32,
    /// `circuitBreaker.openFor`.
    pub breaker_open_for: std::time::Duration,
}

/// The key of a container's safety state: node and name, so that recreating a container
/// (new id, same name) keeps its history and two nodes never share one.
pub fn safety_key(node: &str, container: &str) -> String {
    format!("{node}/{container}")
}

/// The key of a container's in-flight lock: the engine's own ID and the container's ID, so two
/// operators on one engine never both act on one container whatever their `--node-name`s.
pub(crate) fn lock_key(engine_id: &str, container_id: &str) -> String {
    format!("engine:{engine_id}/{container_id}")
}

/// A std duration as a chrono one, saturating.
fn chrono(d: std::time::Duration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::MAX)
}

/// The latest instant time arithmetic saturates at: 9999-12-31T23:59:59Z, which every store
/// and every RFC 3339 reader still takes.
pub(crate) fn far_future() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at + d`, saturating at [`far_future`]: no duration, however large, panics here.
pub(crate) fn later(at: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    at.checked_add_signed(chrono(d))
        .map_or_else(far_future, |t| t.min(far_future()))
}

/// `at - d`, saturating at the Unix epoch.
pub(crate) fn earlier(at: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    at.checked_sub_signed(chrono(d))
        .map_or(DateTime::UNIX_EPOCH, |t| t.max(DateTime::UNIX_EPOCH))
}

/// How an action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Recorded before it ran; still running, or the operator died while it ran.
    Pending,
    /// Ran, and the container came back as expected.
    Succeeded,
    /// Failed, did not bring the container back, or the same failure came back within the
    /// circuit breaker window.
    Failed,
    /// Found pending by a later operator process holding the container's lock: the process
    /// that recorded it died (SIGKILL, OOM, power) before the outcome was known, so the engine
    /// may or may not have carried it out. Still counts for the cooldown and `maxActions`.
    Interrupted,
}

/// One action HemoStat took on a container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The decision it carried out.
    pub decision_id: String,
    /// When it started.
    pub at: DateTime<Utc>,
    /// What was done.
    pub action: ActionKind,
    /// The finding it answered (`exited`, `unhealthy`, …), to recognise the same failure.
    pub finding: String,
    /// How it ended.
    pub outcome: Outcome,
}

/// What the gates need to remember of one container; survives operator restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SafetyState {
    /// Actions within the longest window that matters, oldest first.
    pub actions: Vec<ActionRecord>,
    /// Failed repairs within the circuit breaker window, oldest first.
    pub failures: Vec<DateTime<Utc>>,
    /// The breaker is open until then.
    pub open_until: Option<DateTime<Utc>>,
    /// When the breaker last opened (and `onGiveUp` ran).
    pub gave_up_at: Option<DateTime<Utc>>,
}

impl SafetyState {
    /// Forgets what no window of the policy looks at any more.
    pub(crate) fn prune(&mut self, limits: &Limits, now: DateTime<Utc>) {
        let keep = [
            limits.cooldown,
            limits.max_actions_per,
            limits.breaker_within,
        ]
        .into_iter()
        .map(chrono)
        .max()
        .unwrap_or(Duration::hours(1));
        self.actions.retain(|a| now - a.at <= keep);
        let breaker = chrono(limits.breaker_within);
        self.failures.retain(|t| now - *t <= breaker);
        if self.open_until.is_some_and(|u| u <= now) {
            self.open_until = None;
        }
    }

    /// Failed repairs within the breaker window (escalation and the breaker read this).
    pub(crate) fn recent_failures(&self, limits: &Limits, now: DateTime<Utc>) -> u32 {
        let window = chrono(limits.breaker_within);
        self.failures.iter().filter(|t| now - **t <= window).count() as u32
    }

    /// The same failure is back: the last action that answered it within the breaker window
    /// and was not yet counted as failed did not repair it, whatever it looked like at the time.
    /// Returns true when this counted a new failure. An action still pending is not judged:
    /// the failure seen is the one it is repairing (another replica, seeing the same crash
    /// while the repair runs, would otherwise record a good repair as failed and open the
    /// breaker on a healthy container); once it finishes, or is settled as interrupted, the
    /// next recurrence counts.
    pub(crate) fn note_recurrence(
        &mut self,
        limits: &Limits,
        finding: &str,
        now: DateTime<Utc>,
    ) -> bool {
        let window = chrono(limits.breaker_within);
        let Some(last) = self
            .actions
            .iter_mut()
            .rev()
            .find(|a| now - a.at <= window && a.finding == finding)
        else {
            return false;
        };
        if matches!(last.outcome, Outcome::Failed | Outcome::Pending) {
            return false;
        }
        last.outcome = Outcome::Failed;
        self.failures.push(now);
        true
    }

    /// Marks every pending action interrupted and returns them, oldest first: the caller holds
    /// the container's in-flight lock, so no live process is still carrying one out.
    pub(crate) fn interrupt_pending(&mut self) -> Vec<ActionRecord> {
        self.actions
            .iter_mut()
            .filter(|a| a.outcome == Outcome::Pending)
            .map(|a| {
                a.outcome = Outcome::Interrupted;
                a.clone()
            })
            .collect()
    }

    /// Records the outcome of an action; a failure counts towards the breaker.
    pub fn finish(&mut self, decision_id: &str, outcome: Outcome, now: DateTime<Utc>) {
        if let Some(a) = self
            .actions
            .iter_mut()
            .rev()
            .find(|a| a.decision_id == decision_id)
        {
            if a.outcome == Outcome::Failed {
                return;
            }
            a.outcome = outcome;
            if outcome == Outcome::Failed {
                self.failures.push(now);
            }
        }
    }

    /// Opens the breaker when failures reached the policy's limit and it is not open yet.
    /// Returns true when it opened now (so `onGiveUp` runs once).
    pub fn trip_if_needed(&mut self, limits: &Limits, now: DateTime<Utc>) -> bool {
        let open = self.open_until.is_some_and(|u| now < u);
        if !open && self.recent_failures(limits, now) >= limits.breaker_failures {
            self.open_until = Some(later(now, limits.breaker_open_for));
            self.gave_up_at = Some(now);
            return true;
        }
        false
    }
}

/// Merges two views of one container's safety state (commutative and idempotent):
/// actions united by `decision_id`, oldest first (an action Failed on either side stays Failed,
/// else one Succeeded on either side is Succeeded); failures united, equal timestamps once;
/// the later `open_until` and `gave_up_at`.
pub(crate) fn merge_safety(a: &SafetyState, b: &SafetyState) -> SafetyState {
    let mut by_id: BTreeMap<&str, ActionRecord> = BTreeMap::new();
    for record in a.actions.iter().chain(&b.actions) {
        by_id
            .entry(record.decision_id.as_str())
            .and_modify(|known| known.outcome = combine(known.outcome, record.outcome))
            .or_insert_with(|| record.clone());
    }
    let mut actions: Vec<ActionRecord> = by_id.into_values().collect();
    actions.sort_by(|x, y| {
        x.at.cmp(&y.at)
            .then_with(|| x.decision_id.cmp(&y.decision_id))
    });
    let mut failures: Vec<_> = a.failures.iter().chain(&b.failures).copied().collect();
    failures.sort();
    failures.dedup();
    SafetyState {
        actions,
        failures,
        open_until: a.open_until.max(b.open_until),
        gave_up_at: a.gave_up_at.max(b.gave_up_at),
    }
}

/// What two views of one action say together: a known outcome over an interrupted one over
/// a pending one (Failed, then Succeeded, then Interrupted, then Pending).
fn combine(a: Outcome, b: Outcome) -> Outcome {
    match (a, b) {
        (Outcome::Failed, _) | (_, Outcome::Failed) => Outcome::Failed,
        (Outcome::Succeeded, _) | (_, Outcome::Succeeded) => Outcome::Succeeded,
        (Outcome::Interrupted, _) | (_, Outcome::Interrupted) => Outcome::Interrupted,
        _ => Outcome::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::{Failed, Interrupted, Pending, Succeeded};

    fn record(id: &str, outcome: Outcome) -> ActionRecord {
        ActionRecord {
            decision_id: id.into(),
            at: DateTime::UNIX_EPOCH,
            action: ActionKind::Restart,
            finding: "exited".into(),
            outcome,
        }
    }

    #[test]
    fn pending_actions_become_interrupted_and_known_outcomes_stay() {
        let table: [(&[Outcome], &[Outcome], usize); 4] = [
            (&[], &[], 0),
            (&[Succeeded, Failed], &[Succeeded, Failed], 0),
            (&[Pending], &[Interrupted], 1),
            (
                &[Succeeded, Pending, Interrupted, Pending],
                &[Succeeded, Interrupted, Interrupted, Interrupted],
                2,
            ),
        ];
        for (before, after, settled) in table {
            let mut state = SafetyState {
                actions: before
                    .iter()
                    .enumerate()
                    .map(|(i, o)| record(&format!("d{i}"), *o))
                    .collect(),
                ..SafetyState::default()
            };
            let got = state.interrupt_pending();
            let outcomes: Vec<Outcome> = state.actions.iter().map(|a| a.outcome).collect();
            assert_eq!(outcomes, after, "{before:?}");
            assert_eq!(got.len(), settled, "{before:?}");
            assert!(got.iter().all(|a| a.outcome == Interrupted));
            assert!(
                state.failures.is_empty(),
                "an interruption is not a failure"
            );
        }
    }

    #[test]
    fn merging_prefers_a_known_outcome_to_an_interruption_to_pending() {
        let table = [
            (Pending, Interrupted, Interrupted),
            (Interrupted, Succeeded, Succeeded),
            (Interrupted, Failed, Failed),
            (Pending, Pending, Pending),
            (Interrupted, Interrupted, Interrupted),
        ];
        for (a, b, want) in table {
            assert_eq!(combine(a, b), want, "{a:?} + {b:?}");
            assert_eq!(combine(b, a), want, "{b:?} + {a:?}");
        }
    }
}
