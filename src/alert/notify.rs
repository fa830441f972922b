//! The `Notifier` trait (one per channel kind, in `adapters/`) and the delivery worker every
//! channel gets: a bounded queue (drop-oldest, counted, warned once), grouping, a rate limit
//! (`governor`), a timeout per attempt and retries with exponential backoff (`backon`) that
//! honour `429` + `Retry-After`. Pushing onto the queue never waits, so nothing here can
//! delay a repair.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use governor::{Quota, RateLimiter};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Alert;
use super::group::Group;
use super::metrics::AlertMetrics;

/// Why a delivery failed. Never holds a URL or a token: transport errors are stripped of the
/// URL, response bodies are truncated.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum NotifyError {
    /// `429 Too Many Requests`; retried after `Retry-After` when given.
    #[error("rate limited by the receiver (429){}", .retry_after.map(|d| format!(", retry after {}s", d.as_secs_f64())).unwrap_or_default())]
    RateLimited {
        /// The receiver's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// A 5xx answer; retried.
    #[error("the receiver failed with HTTP {status}")]
    Server {
        /// The status.
        status: u16,
    },
    /// A 4xx answer other than 429: the request or the credentials are wrong; not retried.
    #[error("the receiver refused the notification with HTTP {status}: {body}")]
    Rejected {
        /// The status.
        status: u16,
        /// The start of its answer.
        body: String,
    },
    /// No answer within the timeout; retried.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, DNS, TLS…; retried.
    #[error("transport: {0}")]
    Transport(String),
}

impl NotifyError {
    /// Worth another attempt.
    pub(crate) fn retryable(&self) -> bool {
        !matches!(self, Self::Rejected { .. })
    }

    /// How long the receiver asked us to wait.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// From a reqwest error, without its URL.
    pub(crate) fn from_reqwest(e: reqwest::Error, timeout: Duration) -> Self {
        if e.is_timeout() {
            return Self::Timeout(timeout);
        }
        Self::Transport(e.without_url().to_string())
    }

    /// From a non-2xx answer.
    pub(crate) fn from_status(
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &str,
    ) -> Self {
        match status.as_u16() {
            429 => Self::RateLimited {
                retry_after: headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64()))),
            },
            s @ 500..=599 => Self::Server { status: s },
            s => Self::Rejected {
                status: s,
                body: body.chars().take(200).collect(),
            },
        }
    }
}

/// The longest `Retry-After` honoured.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Sends one group of alerts to one destination.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// Delivers the group as one message (or one request).
    async fn send(&self, alerts: &[Alert]) -> Result<(), NotifyError>;
}

#[async_trait::async_trait]
impl<T: Notifier + ?Sized> Notifier for Arc<T> {
    async fn send(&self, alerts: &[Alert]) -> Result<(), NotifyError> {
        (**self).send(alerts).await
    }
}

/// How a channel delivers.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The channel's name (metrics, logs).
    pub name: String,
    /// Group wait.
    pub group_wait: Duration,
    /// Messages per second at most (Slack allows about one per webhook).
    pub per_second: NonZeroU32,
    /// Alerts waiting at most; beyond, the oldest are dropped.
    pub queue_capacity: usize,
    /// One attempt's timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: usize,
    /// First backoff.
    pub min_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
}

impl Delivery {
    /// Defaults for a channel: 1000 queued, 10 s per attempt, 5 retries from 500 ms to 30 s.
    pub fn new(name: impl Into<String>, group_wait: Duration, per_second: u32) -> Self {
        Self {
            name: name.into(),
            group_wait,
            per_second: NonZeroU32::new(per_second.max(1)).expect("non-zero"),
            queue_capacity: 1000,
            timeout: Duration::from_secs(10),
            retries: 5,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

struct Queue {
    items: Mutex<VecDeque<(Alert, Instant)>>,
    wake: Notify,
    capacity: usize,
    warned: AtomicBool,
}

/// A channel's handle: push alerts; a worker task delivers them.
#[derive(Clone)]
pub struct Channel {
    name: String,
    queue: Arc<Queue>,
    metrics: AlertMetrics,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Starts the channel's worker; it stops when `shutdown` is cancelled.
    pub fn spawn(
        delivery: Delivery,
        notifier: Arc<dyn Notifier>,
        metrics: AlertMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        metrics.channel_created(&delivery.name);
        let queue = Arc::new(Queue {
            items: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            capacity: delivery.queue_capacity.max(1),
            warned: AtomicBool::new(false),
        });
        let channel = Self {
            name: delivery.name.clone(),
            queue: queue.clone(),
            metrics: metrics.clone(),
        };
        let span = tracing::info_span!("alert_channel", channel = %delivery.name);
        tokio::spawn(tracing::Instrument::instrument(
            worker(delivery, notifier, queue, metrics, shutdown),
            span,
        ));
        channel
    }

    /// The channel's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Queues an alert without waiting; when the queue is full the oldest alert is dropped.
    pub fn push(&self, alert: Alert) {
        let (depth, dropped) = {
            let mut items = self.queue.items.lock().expect("queue lock");
            let dropped = if items.len() >= self.queue.capacity {
                items.pop_front().is_some()
            } else {
                false
            };
            items.push_back((alert, Instant::now()));
            (items.len(), dropped)
        };
        if dropped {
            self.metrics.count(&self.name, "dropped", 1);
            if !self.queue.warned.swap(true, Ordering::Relaxed) {
                warn!(channel = %self.name, capacity = self.queue.capacity, "alert queue full: dropping the oldest alerts (counted in hemostat_notifications_total{{result=\"dropped\"}}; warned once)");
            }
        }
        self.metrics.queue_depth(&self.name, depth);
        self.queue.wake.notify_one();
    }

    /// Alerts waiting (not yet grouped by the worker).
    pub fn depth(&self) -> usize {
        self.queue.items.lock().expect("queue lock").len()
    }
}

async fn worker(
    delivery: Delivery,
    notifier: Arc<dyn Notifier>,
    queue: Arc<Queue>,
    metrics: AlertMetrics,
    shutdown: CancellationToken,
) {
    let limiter = RateLimiter::direct(Quota::per_second(delivery.per_second));
    let mut group: Group<(Alert, Instant)> = Group::new(delivery.group_wait);
    loop {
        let drained: Vec<_> = queue.items.lock().expect("queue lock").drain(..).collect();
        if !drained.is_empty() {
            let now = Instant::now();
            for item in drained {
                group.push(item, now);
            }
        }
        let due = group.take_due(Instant::now());
        // Waiting = still queued + grouped, not yet handed to the receiver.
        metrics.queue_depth(
            &delivery.name,
            group.len() + queue.items.lock().expect("queue lock").len(),
        );
        if let Some(batch) = due {
            tokio::select! {
                () = limiter.until_ready() => {}
                () = shutdown.cancelled() => return,
            }
            tokio::select! {
                () = deliver(&delivery, notifier.as_ref(), batch, &metrics) => {}
                () = shutdown.cancelled() => return,
            }
            continue;
        }
        let due = group.due_at().map(tokio::time::Instant::from_std);
        tokio::select! {
            () = queue.wake.notified() => {}
            () = async { tokio::time::sleep_until(due.expect("due")).await }, if due.is_some() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn deliver(
    delivery: &Delivery,
    notifier: &dyn Notifier,
    batch: Vec<(Alert, Instant)>,
    metrics: &AlertMetrics,
) {
    let (alerts, queued): (Vec<Alert>, Vec<Instant>) = batch.into_iter().unzip();
    let name = &delivery.name;
    let timeout = delivery.timeout;
    let attempt = || async {
        match tokio::time::timeout(timeout, notifier.send(&alerts)).await {
            Ok(r) => r,
            Err(_) => Err(NotifyError::Timeout(timeout)),
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(delivery.min_backoff)
        .with_max_delay(delivery.max_backoff)
        .with_max_times(delivery.retries)
        .with_jitter();
    let result = attempt
        .retry(backoff)
        .when(NotifyError::retryable)
        .adjust(|e: &NotifyError, next: Option<Duration>| {
            next.map(|d| e.retry_after().unwrap_or(d))
        })
        .notify(|e: &NotifyError, wait: Duration| {
            metrics.retried(name);
            debug!(channel = %name, error = %e, wait_ms = wait.as_millis() as u64, "notification not delivered yet, retrying");
        })
        .await;
    let n = alerts.len() as u64;
    match result {
        Ok(()) => {
            metrics.count(name, "sent", n);
            for q in queued {
                metrics.latency(name, q.elapsed().as_secs_f64());
            }
            info!(channel = %name, alerts = n, containers = %containers(&alerts), "notification sent");
        }
        Err(e) => {
            metrics.count(name, "failed", n);
            warn!(channel = %name, alerts = n, containers = %containers(&alerts), error = %e, "notification not delivered; giving up on it");
        }
    }
}

fn containers(alerts: &[Alert]) -> String {
    let mut names: Vec<&str> = alerts.iter().map(|a| a.container.as_str()).collect();
    names.dedup();
    names.join(",")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    struct Scripted {
        answers: Mutex<VecDeque<Result<(), NotifyError>>>,
        sent: Mutex<Vec<(Instant, usize)>>,
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Notifier for Scripted {
        async fn send(&self, alerts: &[Alert]) -> Result<(), NotifyError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = self.answers.lock().unwrap().pop_front().unwrap_or(Ok(()));
            if answer.is_ok() {
                self.sent
                    .lock()
                    .unwrap()
                    .push((Instant::now(), alerts.len()));
            }
            answer
        }
    }

    fn scripted(answers: Vec<Result<(), NotifyError>>) -> Arc<Scripted> {
        Arc::new(Scripted {
            answers: Mutex::new(answers.into()),
            sent: Mutex::default(),
            calls: AtomicUsize::new(0),
        })
    }

    fn fast(name: &str) -> Delivery {
        Delivery {
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            ..Delivery::new(name, Duration::from_millis(100), 100)
        }
    }

    #[tokio::test]
    async fn a_429_is_retried_after_its_retry_after_and_a_400_is_not_retried() {
        let n = scripted(vec![Err(NotifyError::RateLimited {
            retry_after: Some(Duration::from_millis(600)),
        })]);
        let metrics = AlertMetrics::default();
        let token = CancellationToken::new();
        let ch = Channel::spawn(fast("c"), n.clone(), metrics.clone(), token.clone());
        let pushed = Instant::now();
        ch.push(Alert::test("n"));
        tokio::time::timeout(Duration::from_secs(5), async {
            while metrics.get("c", "sent") == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        let (at, _) = n.sent.lock().unwrap()[0];
        assert!(
            at - pushed >= Duration::from_millis(700),
            "waited {:?}",
            at - pushed
        );
        assert_eq!(n.calls.load(Ordering::SeqCst), 2);

        let refused = scripted(vec![Err(NotifyError::Rejected {
            status: 403,
            body: "no".into(),
        })]);
        let ch = Channel::spawn(fast("r"), refused.clone(), metrics.clone(), token.clone());
        ch.push(Alert::test("n"));
        tokio::time::timeout(Duration::from_secs(5), async {
            while metrics.get("r", "failed") == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(refused.calls.load(Ordering::SeqCst), 1);
        token.cancel();
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_and_counts_it() {
        let metrics = AlertMetrics::default();
        let token = CancellationToken::new();
        token.cancel(); // no worker drains: the queue only fills
        let ch = Channel::spawn(
            Delivery {
                queue_capacity: 3,
                ..fast("q")
            },
            scripted(vec![]),
            metrics.clone(),
            token,
        );
        for i in 0..5 {
            let mut a = Alert::test("n");
            a.container = format!("c{i}");
            ch.push(a);
        }
        assert_eq!(ch.depth(), 3);
        assert_eq!(metrics.get("q", "dropped"), 2);
        let left: Vec<String> = ch
            .queue
            .items
            .lock()
            .unwrap()
            .iter()
            .map(|(a, _)| a.container.clone())
            .collect();
        assert_eq!(left, ["c2", "c3", "c4"]);
    }
}
