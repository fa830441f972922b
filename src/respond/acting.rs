//! Which containers HemoStat itself is acting on, so their stop/kill events are not taken as manual.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after an action ends its events are still attributed to HemoStat (events can lag).
pub const EVENT_GRACE: Duration = Duration::from_secs(10);

/// Container ids with an action of ours in flight, or just finished.
#[derive(Debug, Default)]
pub struct Acting {
    /// id → None while acting, Some(until) during the grace period after.
    ids: Mutex<HashMap<String, Option<Instant>>>,
}

/// Ends the acting period (starting its grace) when dropped.
#[must_use]
pub struct ActingGuard<'a> {
    acting: &'a Acting,
    id: String,
}

impl Acting {
    /// Marks `id` as being acted on until the guard drops.
    pub fn begin(&self, id: &str) -> ActingGuard<'_> {
        self.ids
            .lock()
            .expect("acting mutex")
            .insert(id.to_owned(), None);
        ActingGuard {
            acting: self,
            id: id.to_owned(),
        }
    }

    /// True while HemoStat acts on `id`, and for [`EVENT_GRACE`] after.
    pub fn is_ours(&self, id: &str) -> bool {
        let mut ids = self.ids.lock().expect("acting mutex");
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

impl Drop for ActingGuard<'_> {
    fn drop(&mut self) {
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
}
