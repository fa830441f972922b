//! The one exponential backoff for reconnect loops (Docker events, Redis subscriptions, the outbox).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff: `first` doubling up to `max`, back to `first` on [`Backoff::reset`]
/// (after a connection that stayed up; kube-runtime's watcher does the same).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

/// The reconnect loops' first delay.
const FIRST: Duration = Duration::from_millis(250);
/// The reconnect loops' longest delay.
const MAX: Duration = Duration::from_secs(30);

impl Default for Backoff {
    /// 250 ms doubling to 30 s: the reconnect loops' backoff.
    fn default() -> Self {
        Self::new(FIRST, MAX)
    }
}

impl Backoff {
    /// A backoff from `first` doubling to `max`.
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The default backoff, but never sleeping longer than `limit` (nor shorter than its first
    /// delay): the engine watcher's, capped at the resync interval, so a repair after the
    /// engine comes back waits at most one interval, as it would while connected.
    pub(crate) fn at_most(limit: Duration) -> Self {
        Self::new(FIRST, MAX.min(limit).max(FIRST))
    }

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// The delay [`Backoff::next_delay`] will return, without advancing.
    pub(crate) fn peek(&self) -> Duration {
        self.next
    }

    /// Back to the first delay.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps the next delay; false when `shutdown` fired first.
    pub(crate) async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..10).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(250));
    }

    #[test]
    fn a_capped_backoff_never_sleeps_longer_than_its_limit() {
        let table: [(Duration, [u128; 8]); 4] = [
            (
                Duration::from_secs(5),
                [250, 500, 1000, 2000, 4000, 5000, 5000, 5000],
            ),
            (
                Duration::from_secs(30),
                [250, 500, 1000, 2000, 4000, 8000, 16000, 30000],
            ),
            (
                Duration::from_secs(300),
                [250, 500, 1000, 2000, 4000, 8000, 16000, 30000],
            ),
            (
                Duration::from_millis(100),
                [250, 250, 250, 250, 250, 250, 250, 250],
            ),
        ];
        for (limit, expected) in table {
            let mut b = Backoff::at_most(limit);
            let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
            assert_eq!(delays, expected, "limit {limit:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wait_stops_early_on_shutdown() {
        let shutdown = CancellationToken::new();
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
        assert!(b.wait(&shutdown).await);
        shutdown.cancel();
        assert!(!b.wait(&shutdown).await);
    }
}
