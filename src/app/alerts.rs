//! The alerts in the composition root: the silence store, the channels' notifiers and
//! the router task subscribed to the live envelopes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::adapters::redis::RedisConfig;
use crate::adapters::redis::alert_state::RedisAlertState;
use crate::alert::api::AlertsApi;
use crate::alert::channels::{operator_alerts, policy_channels};
use crate::alert::mark::{MarkingSink, SilenceCache};
use crate::alert::metrics::AlertMetrics;
use crate::alert::router::{AlertRouter, BuildNotifier, History, RouterOptions, SILENCE_REFRESH};
use crate::alert::state::{AlertState, FileAlertState};
use crate::bus::EventSink;
use crate::policy::registry::PolicyRegistry;

/// Why alerting could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AlertingError {
    /// `ALERT_ENABLED` or `ALERT_DEDUPE_TTL` is malformed.
    #[error("invalid alert settings")]
    Env(#[source] crate::alert::channels::EnvError),
    /// The silence store cannot be set up.
    #[error("cannot set up the silence store")]
    State(#[source] crate::alert::state::AlertStateError),
}

/// Where silences are kept: Redis when configured (the whole fleet honours them), else the
/// state dir.
pub(crate) fn state(
    redis: Option<&RedisConfig>,
    state_dir: &Path,
) -> Result<Arc<dyn AlertState>, AlertingError> {
    Ok(match redis {
        Some(config) => {
            Arc::new(RedisAlertState::from_config(config).map_err(AlertingError::State)?)
        }
        None => Arc::new(FileAlertState::new(state_dir)),
    })
}

/// `sink`, marking envelopes about silenced containers.
pub(crate) fn marking(
    sink: Arc<dyn EventSink>,
    state: Arc<dyn AlertState>,
    shutdown: CancellationToken,
) -> Arc<dyn EventSink> {
    let cache = SilenceCache::spawn(state, SILENCE_REFRESH, shutdown);
    Arc::new(MarkingSink::new(sink, cache))
}

/// Starts alerting; returns what the HTTP API serves about it.
pub(crate) fn start(
    state: Arc<dyn AlertState>,
    policies: Arc<PolicyRegistry>,
    sink: &dyn EventSink,
    metrics: AlertMetrics,
    timeout: Duration,
    shutdown: CancellationToken,
) -> Result<AlertsApi, AlertingError> {
    let operator = operator_alerts(|k| std::env::var(k).ok()).map_err(AlertingError::Env)?;
    let history = Arc::new(History::default());
    let api = AlertsApi {
        state: state.clone(),
        history: history.clone(),
    };
    if !operator.enabled {
        info!("ALERT_ENABLED=false: no notification is sent (repairs and records go on)");
        return Ok(api);
    }
    let client = crate::adapters::http_client(timeout);
    let build: Arc<BuildNotifier> =
        Arc::new(move |spec| crate::adapters::notifier_for(spec, &client, timeout));
    // Say now, not at the first crash, when a channel cannot work.
    let check_client = crate::adapters::http_client(timeout);
    let mut names = Vec::new();
    for policy in policies.snapshot().iter() {
        for ch in policy_channels(policy) {
            if let Err(e) = crate::adapters::notifier_for(&ch.spec, &check_client, timeout) {
                error!(channel = %ch.name, error = %e, "alert channel unusable: its alerts will not be sent until this is fixed");
            }
            names.push(ch.name);
        }
    }
    names.extend(operator.channel.as_ref().map(|c| c.name.clone()));
    if names.is_empty() {
        info!(
            "no alert channel configured (spec.alerts.channels, SLACK_WEBHOOK_URL); policies applied later may add some"
        );
    } else {
        info!(channels = %names.join(", "), "alerts on");
    }
    let router = AlertRouter::new(
        policies,
        operator.channel,
        build,
        state,
        metrics,
        history,
        RouterOptions {
            timeout,
            ..RouterOptions::default()
        },
        shutdown,
    );
    let rx = sink.subscribe();
    tokio::spawn(tracing::Instrument::instrument(
        router.run(rx),
        tracing::info_span!("alert_router"),
    ));
    Ok(api)
}
