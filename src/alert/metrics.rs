//! `hemostat_notifications_total{channel,result}`, the queue depth and the delivery latency
//! of each alert channel. Channel names never carry a secret (`web-api/slack`, `operator/slack`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelResult {
    channel: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 5 ms to about 10 min: a group wait of seconds, retries of minutes.
    Histogram::new(exponential_buckets(0.005, 2.0, 18))
}

/// The results counted in `hemostat_notifications_total`, one per alert.
pub(crate) const RESULTS: [&str; 5] = ["sent", "failed", "dropped", "silenced", "deduplicated"];

/// Handles to the alert metrics (cheap to clone).
#[derive(Clone, Debug)]
pub struct AlertMetrics {
    notifications: Family<ChannelResult, Counter>,
    retries: Family<ChannelLabel, Counter>,
    queue_depth: Family<ChannelLabel, Gauge>,
    latency: HistogramFamily<ChannelLabel>,
}

impl Default for AlertMetrics {
    fn default() -> Self {
        Self {
            notifications: Family::default(),
            retries: Family::default(),
            queue_depth: Family::default(),
            latency: Family::new_with_constructor(latency_buckets),
        }
    }
}

impl AlertMetrics {
    /// Registers them (under the registry's `hemostat_` prefix).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "notifications",
            "Alerts per channel, by result (sent, failed, dropped, silenced, deduplicated)",
            m.notifications.clone(),
        );
        registry.register(
            "notification_retries",
            "Delivery attempts retried (timeouts, 429, 5xx), per channel",
            m.retries.clone(),
        );
        registry.register(
            "notification_queue_depth",
            "Alerts waiting in a channel's queue",
            m.queue_depth.clone(),
        );
        registry.register_with_unit(
            "notification_latency",
            "From an alert entering its channel's queue to the receiver accepting it (group wait and retries included)",
            Unit::Seconds,
            m.latency.clone(),
        );
        m
    }

    /// Shows a channel's counters at 0 from the start.
    pub(crate) fn channel_created(&self, channel: &str) {
        for result in RESULTS {
            let _ = self.notifications.get_or_create(&ChannelResult {
                channel: channel.to_owned(),
                result: result.to_owned(),
            });
        }
        self.queue_depth(channel, 0);
    }

    /// Counts `n` alerts of `channel` with `result`.
    pub(crate) fn count(&self, channel: &str, result: &str, n: u64) {
        self.notifications
            .get_or_create(&ChannelResult {
                channel: channel.to_owned(),
                result: result.to_owned(),
            })
            .inc_by(n);
    }

    /// The value of a counter (tests, benchmarks).
    pub fn get(&self, channel: &str, result: &str) -> u64 {
        self.notifications
            .get_or_create(&ChannelResult {
                channel: channel.to_owned(),
                result: result.to_owned(),
            })
            .get()
    }

    /// Counts one retried attempt.
    pub(crate) fn retried(&self, channel: &str) {
        self.retries
            .get_or_create(&ChannelLabel {
                channel: channel.to_owned(),
            })
            .inc();
    }

    /// Sets the queue depth.
    pub(crate) fn queue_depth(&self, channel: &str, depth: usize) {
        self.queue_depth
            .get_or_create(&ChannelLabel {
                channel: channel.to_owned(),
            })
            .set(depth as i64);
    }

    /// Records one alert's delivery latency.
    pub(crate) fn latency(&self, channel: &str, secs: f64) {
        self.latency
            .get_or_create(&ChannelLabel {
                channel: channel.to_owned(),
            })
            .observe(secs);
    }
}
