//! Redis adapters that are not the bus: the shared alert state (silences).

pub mod alert_state;
