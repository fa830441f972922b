//! The one exponential backoff for reconnect loops (Docker events, Redis subscriptions, the outbox).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff: `first` doubling up to `max`, back to `first` on [`Backoff::reset`]
/// (after a connection that stayed up; kube-runtime's watcher does the same).
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    /// 250 ms doubling to 30 s: the reconnect loops' backoff.
    fn default() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(30))
    }
}

impl Backoff {
    /// A backoff from `first` doubling to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// The delay [`Backoff::next_delay`] will return, without advancing.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Back to the first delay.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps the next delay; false when `shutdown` fired first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
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

    #[tokio::test(start_paused = true)]
    async fn wait_stops_early_on_shutdown() {
        let shutdown = CancellationToken::new();
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
        assert!(b.wait(&shutdown).await);
        shutdown.cancel();
        assert!(!b.wait(&shutdown).await);
    }
}
