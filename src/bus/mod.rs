//! Where envelopes go: the `EventSink` trait and the in-memory sink ([`memory::MemorySink`]).
//!
//! Shared state (`StateStore`, its error, the memory and fallback stores) lives in
//! [`crate::store`].

pub mod memory;

use crate::model::wire::{Envelope, EventType};

/// Where envelopes are published.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Publishes one envelope; never blocks the caller on a slow consumer.
    async fn publish(&self, envelope: Envelope);
    /// The newest envelopes, newest last, optionally of one type.
    async fn recent(&self, event_type: Option<EventType>, limit: usize) -> Vec<Envelope>;
    /// Publishes a container's latest metrics (the original's `hemostat:stats:<container>`);
    /// sinks without such a key ignore it.
    async fn put_stats(&self, _container: &str, _node: &str, _stats: serde_json::Value) {}
    /// Publishes a container's state as the original monitor kept it
    /// (`hemostat:state:container:<short id>`); sinks without such a key ignore it. A sink that
    /// wraps another must forward it (as `put_stats`).
    async fn put_state(&self, _state: &crate::model::wire::ContainerStateKey) {}
    /// Live envelopes from now on, for in-process consumers (alerts, the dashboard's event
    /// stream). A receiver that falls behind misses envelopes (`RecvError::Lagged`) rather
    /// than slowing HemoStat down.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Envelope>;
}

/// How many envelopes a live subscriber may fall behind before it misses some.
pub(crate) const LIVE_CAPACITY: usize = 1024;
