//! Pure: alerts that arrive together go out as one message after a group wait; the first
//! alert of a quiet period waits no longer than that.

use std::time::{Duration, Instant};

/// At most this many alerts in one message; a bigger storm is split (still grouped).
pub(crate) const MAX_GROUP: usize = 500;

/// A group being collected.
#[derive(Debug)]
pub(crate) struct Group<T> {
    wait: Duration,
    opened: Option<Instant>,
    items: Vec<T>,
}

impl<T> Group<T> {
    /// An empty group that waits `wait` after its first item.
    pub(crate) fn new(wait: Duration) -> Self {
        Self {
            wait,
            opened: None,
            items: Vec::new(),
        }
    }

    /// Adds an item at `now`; the first one opens the group.
    pub(crate) fn push(&mut self, item: T, now: Instant) {
        self.opened.get_or_insert(now);
        self.items.push(item);
    }

    /// When the group is due, if it holds anything.
    pub(crate) fn due_at(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.wait)
    }

    /// How many items wait.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is waiting.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items to send now (at most [`MAX_GROUP`]) if the group is due or full; what stays
    /// keeps waiting from `now`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<Vec<T>> {
        let due = self.due_at().is_some_and(|t| now >= t) || self.items.len() >= MAX_GROUP;
        if !due || self.items.is_empty() {
            return None;
        }
        let rest = self.items.split_off(self.items.len().min(MAX_GROUP));
        let out = std::mem::replace(&mut self.items, rest);
        self.opened = (!self.items.is_empty()).then_some(now);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_arriving_within_the_wait_go_out_together_and_the_first_waits_no_longer() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut g = Group::new(Duration::from_secs(3));
        assert_eq!(g.due_at(), None);
        g.push("web-1", ms(0));
        g.push("web-2", ms(400));
        g.push("web-3", ms(2900));
        assert_eq!(
            g.due_at(),
            Some(ms(3000)),
            "the first alert sets the deadline"
        );
        assert_eq!(g.take_due(ms(2999)), None);
        assert_eq!(g.take_due(ms(3000)), Some(vec!["web-1", "web-2", "web-3"]));
        assert!(g.is_empty());
        assert_eq!(g.due_at(), None, "a quiet period again");
        g.push("web-4", ms(10_000));
        assert_eq!(g.take_due(ms(13_000)), Some(vec!["web-4"]));
    }

    #[test]
    fn a_storm_bigger_than_a_message_is_split() {
        let t0 = Instant::now();
        let mut g = Group::new(Duration::from_secs(3));
        for i in 0..MAX_GROUP + 10 {
            g.push(i, t0);
        }
        assert_eq!(g.take_due(t0).map(|v| v.len()), Some(MAX_GROUP));
        assert_eq!(
            g.take_due(t0 + Duration::from_secs(3)).map(|v| v.len()),
            Some(10)
        );
    }
}
