//! Which containers HemoStat itself is acting on, so their stop/kill events are not taken as manual.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after an action ends its events are still attributed to HemoStat (events can lag).
pub(crate) const EVENT_GRACE: Duration = Duration::from_secs(10);

/// Container ids with an action of ours in flight, or just finished.
#[derive(Debug, Default)]
pub struct Acting {
    /// id → None while acting, Some(until) during the grace period after.
    ids: Mutex<HashMap<String, Option<Instant>>>,
}

/// Ends the acting period (starting its grace) when dropped.
#[must_use]
pub(crate) struct ActingGuard<'a> {
    acting: &'a Acting,
    id: String,
    /// What was recorded for `id` before (restored by [`ActingGuard::abandon`]).
    previous: Option<Option<Instant>>,
    /// Set by [`ActingGuard::abandon`]: no grace period on drop.
    abandoned: bool,
}

impl Acting {
    /// Marks `id` as being acted on until the guard drops.
    pub(crate) fn begin(&self, id: &str) -> ActingGuard<'_> {
        let previous = self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned(), None);
        ActingGuard {
            acting: self,
            id: id.to_owned(),
            previous,
            abandoned: false,
        }
    }

    /// Like [`Self::begin`], but `None` while another action of this process on `id` is in
    /// flight: the shared lock is re-entrant for one owner, so this is what keeps two paths of
    /// one process (the reconcile loop and external requests) from acting at once.
    pub(crate) fn try_begin(&self, id: &str) -> Option<ActingGuard<'_>> {
        let mut ids = self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(ids.get(id), Some(None)) {
            return None;
        }
        let previous = ids.insert(id.to_owned(), None);
        Some(ActingGuard {
            acting: self,
            id: id.to_owned(),
            previous,
            abandoned: false,
        })
    }

    /// True while HemoStat acts on `id`, and for [`EVENT_GRACE`] after.
    pub(crate) fn is_ours(&self, id: &str) -> bool {
        let mut ids = self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match ids.get(id) {
            Some(None) => true,
            Some(Some(until)) if *until > Instant::now() => true,
            Some(Some(_)) => {
                ids.remove(id);
                false
            }
            None => false,
        }
    }
}

impl ActingGuard<'_> {
    /// Nothing was done after all: forgets this action without a grace period.
    pub(crate) fn abandon(mut self) {
        if let Ok(mut ids) = self.acting.ids.lock() {
            match self.previous.take() {
                Some(previous) => ids.insert(self.id.clone(), previous),
                None => ids.remove(&self.id),
            };
        }
        self.abandoned = true;
    }
}

impl Drop for ActingGuard<'_> {
    fn drop(&mut self) {
        if self.abandoned {
            return;
        }
        if let Ok(mut ids) = self.acting.ids.lock() {
            ids.insert(self.id.clone(), Some(Instant::now() + EVENT_GRACE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_ours_while_acting_and_for_a_grace_period_after() {
        let acting = Acting::default();
        assert!(!acting.is_ours("a"));
        let guard = acting.begin("a");
        assert!(acting.is_ours("a"));
        drop(guard);
        assert!(acting.is_ours("a"));
        assert!(!acting.is_ours("b"));
    }

    #[test]
    fn only_one_action_at_a_time_and_an_abandoned_one_leaves_no_trace() {
        let acting = Acting::default();
        let first = acting.try_begin("a").expect("free");
        assert!(acting.try_begin("a").is_none(), "in flight");
        assert!(acting.try_begin("b").is_some());
        drop(first);
        let again = acting
            .try_begin("a")
            .expect("free again during the grace period");
        again.abandon();
        assert!(acting.is_ours("a"), "the earlier grace period is restored");
        let c = acting.try_begin("c").expect("free");
        c.abandon();
        assert!(!acting.is_ours("c"));
    }
}
