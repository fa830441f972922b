//! Every line that talks to Redis: the outbox (`EventSink`), the shared state (`StateStore`),
//! the policy repository and source, the external request subscriber, their keys and settings.

pub mod alert_state;
pub(crate) mod config;
pub(crate) mod conn;
pub(crate) mod keys;
pub(crate) mod outbox;
pub mod policies;
pub(crate) mod requests;
pub(crate) mod state;
pub(crate) mod topology;

pub use config::{DEFAULT_OUTBOX_CAPACITY, DEFAULT_PORT, RedisConfig};
pub use outbox::*;
