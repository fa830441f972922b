//! Every line that talks to Redis: the outbox (`EventSink`), the shared state (`StateStore`),
//! the policy repository and source, the external request subscriber, their keys and settings.

pub mod alert_state;
pub mod config;
pub mod conn;
pub mod keys;
pub mod outbox;
pub mod policies;
pub mod requests;
pub mod state;
pub mod topology;

pub use config::{DEFAULT_OUTBOX_CAPACITY, DEFAULT_PORT, RedisConfig};
pub use outbox::*;
