//! Marks the records of silenced containers: every envelope about a container a silence mutes
//! carries `data.silenced` (the silence's id), so the decision stream, `/api/v1/decisions` and
//! the webhook's envelopes say why nobody was told. The silences are read by a background task
//! every second; publishing only reads that copy, so it never waits on the state store.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::silence::Silence;
use super::state::AlertState;
use crate::bus::EventSink;
use crate::model::wire::{Envelope, EventType};

/// The silences as last read.
#[derive(Debug, Default)]
pub(crate) struct SilenceCache {
    silences: RwLock<Vec<Silence>>,
}

impl SilenceCache {
    /// A cache refreshed from `state` every `every` until `shutdown`.
    pub(crate) fn spawn(
        state: Arc<dyn AlertState>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let cache = Arc::new(Self::default());
        let me = cache.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                match state.silences().await {
                    Ok(s) => {
                        *me.silences.write().expect("silences lock") = s;
                        failing = false;
                    }
                    Err(e) => {
                        if !failing {
                            warn!(error = %e, "cannot read the silences; records are marked from the last ones read");
                        }
                        failing = true;
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        });
        cache
    }

    /// Replaces the cached silences (tests).
    #[cfg(test)]
    pub(crate) fn set(&self, silences: Vec<Silence>) {
        *self.silences.write().expect("silences lock") = silences;
    }

    /// The id of the silence muting `container` (governed by `policy`, on `node`) at `now`.
    pub(crate) fn silencing(
        &self,
        node: &str,
        container: &str,
        policy: &str,
        now: DateTime<Utc>,
    ) -> Option<String> {
        self.silences
            .read()
            .expect("silences lock")
            .iter()
            .find(|s| s.matches_target(node, container, policy, now))
            .map(|s| s.id.clone())
    }
}

/// An `EventSink` that marks envelopes about silenced containers, then hands them on.
pub(crate) struct MarkingSink {
    inner: Arc<dyn EventSink>,
    silences: Arc<SilenceCache>,
}

impl MarkingSink {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn EventSink>, silences: Arc<SilenceCache>) -> Self {
        Self { inner, silences }
    }

    /// The envelope, with `data.silenced` set when a silence mutes its container.
    pub(crate) fn mark(&self, mut envelope: Envelope) -> Envelope {
        if envelope.kind().is_none() {
            return envelope;
        }
        let data = &envelope.data;
        let field = |k: &str| {
            data.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let (node, container, policy) = (field("node"), field("container"), field("policy"));
        if container.is_empty() {
            return envelope;
        }
        if let Some(id) = self
            .silences
            .silencing(&node, &container, &policy, Utc::now())
            && let Some(obj) = envelope.data.as_object_mut()
        {
            obj.insert("silenced".to_owned(), serde_json::Value::String(id));
        }
        envelope
    }
}

#[async_trait::async_trait]
impl EventSink for MarkingSink {
    async fn publish(&self, envelope: Envelope) {
        self.inner.publish(self.mark(envelope)).await;
    }

    async fn recent(&self, event_type: Option<EventType>, limit: usize) -> Vec<Envelope> {
        self.inner.recent(event_type, limit).await
    }

    async fn put_stats(&self, container: &str, node: &str, stats: serde_json::Value) {
        self.inner.put_stats(container, node, stats).await;
    }

    async fn put_state(&self, state: &crate::model::wire::ContainerStateKey) {
        self.inner.put_state(state).await;
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Envelope> {
        self.inner.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_about_a_silenced_container_says_which_silence_and_others_are_untouched() {
        let cache = Arc::new(SilenceCache::default());
        let s = Silence::new(
            Some("web-*".into()),
            None,
            None,
            Duration::from_secs(60),
            "deploy".into(),
            "me".into(),
            Utc::now() - chrono::Duration::seconds(1),
        )
        .unwrap();
        cache.set(vec![s.clone()]);
        let sink = MarkingSink::new(Arc::new(crate::bus::memory::MemorySink::default()), cache);
        let env = |c: &str| {
            Envelope::new(
                EventType::RemediationComplete,
                serde_json::json!({"container": c, "node": "n1", "policy": "p"}),
            )
        };
        assert_eq!(sink.mark(env("web-1")).data["silenced"], s.id.as_str());
        assert!(sink.mark(env("db-1")).data.get("silenced").is_none());
    }
}
