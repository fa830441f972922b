//! The embedded event sink: the newest envelopes in memory, and a broadcast for live consumers.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::broadcast;

use super::{Envelope, EventSink, EventType};

/// Envelopes kept (the newest) for `recent`.
pub(crate) const RETAINED: usize = 1000;

/// The in-memory event sink: the newest envelopes, plus a broadcast for live consumers.
#[derive(Debug)]
pub struct MemorySink {
    recent: Mutex<VecDeque<Envelope>>,
    live: broadcast::Sender<Envelope>,
}

impl Default for MemorySink {
    fn default() -> Self {
        Self {
            recent: Mutex::new(VecDeque::new()),
            live: broadcast::channel(super::LIVE_CAPACITY).0,
        }
    }
}

#[async_trait::async_trait]
impl EventSink for MemorySink {
    async fn publish(&self, envelope: Envelope) {
        {
            let mut recent = self
                .recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            recent.push_back(envelope.clone());
            while recent.len() > RETAINED {
                recent.pop_front();
            }
        }
        let _ = self.live.send(envelope);
    }

    fn subscribe(&self) -> broadcast::Receiver<Envelope> {
        self.live.subscribe()
    }

    async fn recent(&self, event_type: Option<EventType>, limit: usize) -> Vec<Envelope> {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let matching: Vec<&Envelope> = recent
            .iter()
            .filter(|e| event_type.is_none_or(|t| e.kind() == Some(t)))
            .collect();
        let skip = matching.len().saturating_sub(limit);
        matching.into_iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sink_keeps_the_newest_envelopes_by_type() {
        let sink = MemorySink::default();
        for i in 0..5 {
            sink.publish(Envelope::new(
                EventType::FalseAlarm,
                serde_json::json!({"i": i}),
            ))
            .await;
        }
        sink.publish(Envelope::new(EventType::HealthAlert, serde_json::json!({})))
            .await;
        let two = sink.recent(Some(EventType::FalseAlarm), 2).await;
        assert_eq!(
            two.iter()
                .map(|e| e.data["i"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(sink.recent(None, 10).await.len(), 6);
    }
}
