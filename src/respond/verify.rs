//! Did the container come back? A pure step over each inspection, clock passed in: running
//! since the action, not unhealthy (healthy when it has a healthcheck), and still so after a
//! short settle time.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::model::container::{ContainerInfo, ContainerState, HealthStatus};
use crate::model::safety::earlier;

/// What the verification says after one inspection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Look again (the caller stops at its deadline).
    Wait,
    /// It is back.
    Succeeded(String),
    /// It will not come back (it was removed).
    Failed(String),
}

/// The state of one verification.
#[derive(Debug)]
pub(crate) struct Verify {
    started: DateTime<Utc>,
    settle: Duration,
    up_since: Option<Instant>,
    last: String,
}

impl Verify {
    /// A verification of an action started at `started`, wanting `settle` of good health.
    pub(crate) fn new(started: DateTime<Utc>, settle: Duration) -> Self {
        Self {
            started,
            settle,
            up_since: None,
            last: String::new(),
        }
    }

    /// Takes in one inspection (`Err` carries why the inspection failed) made at `now`.
    pub(crate) fn step(
        &mut self,
        inspected: Result<Option<&ContainerInfo>, String>,
        now: Instant,
    ) -> Step {
        let info = match inspected {
            Ok(Some(info)) => info,
            Ok(None) => return Step::Failed("container disappeared".to_owned()),
            Err(e) => {
                self.last = format!("inspect failed: {e}");
                return Step::Wait;
            }
        };
        let restarted = info
            .started_at
            .is_some_and(|s| s >= earlier(self.started, Duration::from_secs(1)));
        let healthy = matches!(info.health, HealthStatus::None | HealthStatus::Healthy);
        let up = info.state == ContainerState::Running && restarted;
        self.last = format!("state {:?}, health {:?}", info.state, info.health);
        if up && info.health != HealthStatus::Unhealthy {
            let since = *self.up_since.get_or_insert(now);
            if healthy && now.duration_since(since) >= self.settle {
                return Step::Succeeded(format!("container is back: {}", self.last));
            }
        } else {
            self.up_since = None;
        }
        Step::Wait
    }

    /// What was last seen, for the timeout message.
    pub(crate) fn last(&self) -> &str {
        &self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::running;

    #[test]
    fn verification_waits_for_a_settled_healthy_run_started_after_the_action() {
        let started = Utc::now();
        let t0 = Instant::now();
        let secs = |s: u64| t0 + Duration::from_secs(s);
        let mut back = running("c", &[]);
        back.started_at = Some(started);
        let mut old_run = back.clone();
        old_run.started_at = Some(started - chrono::Duration::minutes(5));
        let mut unhealthy = back.clone();
        unhealthy.health = HealthStatus::Unhealthy;
        let mut starting = back.clone();
        starting.health = HealthStatus::Starting;
        let mut v = Verify::new(started, Duration::from_secs(1));
        type Case<'a> = (Result<Option<&'a ContainerInfo>, String>, Instant, Step);
        let cases: [Case<'_>; 7] = [
            (Ok(Some(&old_run)), secs(0), Step::Wait),
            (Err("timeout".into()), secs(0), Step::Wait),
            (Ok(Some(&back)), secs(1), Step::Wait),
            (Ok(Some(&unhealthy)), secs(2), Step::Wait),
            (Ok(Some(&starting)), secs(3), Step::Wait),
            (
                Ok(Some(&back)),
                secs(4),
                Step::Succeeded("container is back: state Running, health None".into()),
            ),
            (
                Ok(None),
                secs(5),
                Step::Failed("container disappeared".into()),
            ),
        ];
        for (i, (inspected, now, want)) in cases.into_iter().enumerate() {
            assert_eq!(v.step(inspected, now), want, "step {i}");
        }
    }
}
