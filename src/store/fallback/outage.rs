//! The outage gate: whether Redis is taken as unreachable (only on
//! [`StoreError::Unavailable`]), and when it may be asked again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::store::StoreError;

/// During an outage, Redis is asked at most once per this period.
pub(crate) const DEFAULT_PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long a probe in flight keeps other calls on the local view (a little more than the
/// Redis client's 5 s response timeout). A partition blackholes packets: a probe then waits for
/// the whole timeout, and without this every call of a reconcile would become a probe in turn.
pub(crate) const PROBE_IN_FLIGHT: Duration = Duration::from_secs(6);

/// Redis is unreachable: only then does the local view stand in. An error reply (a key of the
/// wrong type…) is passed on, never taken for an outage (two operators would both act).
pub(super) fn is_outage(e: &StoreError) -> bool {
    e.is_outage()
}

/// The error of a call not sent to Redis because an outage is on.
pub(super) fn outage_error(op: &'static str) -> StoreError {
    StoreError::Unavailable {
        op,
        source: "redis unreachable (outage in progress)".into(),
    }
}

/// Whether an outage is on, and when Redis may be probed next.
#[derive(Debug)]
pub(super) struct Outage {
    on: AtomicBool,
    /// During an outage, how often Redis is asked (counted from the end of the last probe).
    probe_every: Duration,
    /// How long a probe in flight keeps the other calls local ([`PROBE_IN_FLIGHT`]).
    probe_in_flight: Duration,
    /// During an outage, when Redis may be asked next.
    next_probe: Mutex<Instant>,
}

impl Default for Outage {
    fn default() -> Self {
        Self {
            on: AtomicBool::new(false),
            probe_every: DEFAULT_PROBE_EVERY,
            probe_in_flight: PROBE_IN_FLIGHT,
            next_probe: Mutex::new(Instant::now()),
        }
    }
}

impl Outage {
    /// During an outage, asks Redis at most once per `every` after the last probe ended
    /// (zero: on every call, and no hold while a probe is in flight).
    #[cfg(test)]
    pub(super) fn set_probe_every(&mut self, every: Duration) {
        self.probe_every = every;
        if every.is_zero() {
            self.probe_in_flight = Duration::ZERO;
        }
    }

    /// Whether the last call to the remote failed with an outage.
    pub(super) fn is_on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// Whether this call should go straight to the local view: an outage is on and another
    /// call is probing Redis or did less than a probe period ago. Otherwise this call is the
    /// probe (held for at most [`PROBE_IN_FLIGHT`]; its failure restarts the period).
    pub(super) fn skip_remote(&self) -> bool {
        if !self.is_on() {
            return false;
        }
        let mut next = self
            .next_probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if now < *next {
            return true;
        }
        *next = now + self.probe_every + self.probe_in_flight;
        false
    }

    /// A call failed with an outage: the first one starts it (logged once, at warn).
    pub(super) fn note_failure(&self, op: &'static str, e: &StoreError) {
        // The probe (or the call that found the outage) is over: the next one a period later.
        *self
            .next_probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now() + self.probe_every;
        if !self.on.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                op,
                error = %e,
                "redis unreachable: serving safety state, locks and audit from this node's local view until it answers again (fleet budgets are refused meanwhile)"
            );
        }
    }

    /// A call succeeded: true when this ends an outage.
    pub(super) fn end(&self) -> bool {
        self.on.swap(false, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> StoreError {
        outage_error("test")
    }

    #[test]
    fn only_an_unavailable_store_is_an_outage() {
        assert!(is_outage(&unavailable()));
        let refused = StoreError::Refused {
            op: "test",
            source: "WRONGTYPE".into(),
        };
        assert!(!is_outage(&refused));
    }

    #[test]
    fn during_an_outage_one_call_per_probe_period_asks_the_remote() {
        let mut outage = Outage::default();
        outage.set_probe_every(Duration::from_secs(3600));
        assert!(!outage.skip_remote(), "no outage: always ask");
        outage.note_failure("test", &unavailable());
        assert!(outage.is_on());
        assert!(outage.skip_remote(), "within the probe period");
        assert!(outage.end());
        assert!(!outage.end(), "ended once");
        assert!(!outage.skip_remote());
    }

    #[test]
    fn a_probe_in_flight_keeps_the_other_calls_local_until_it_fails() {
        let mut outage = Outage::default();
        outage.set_probe_every(Duration::from_millis(1));
        outage.note_failure("test", &unavailable());
        std::thread::sleep(Duration::from_millis(5));
        assert!(!outage.skip_remote(), "this call is the probe");
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            outage.skip_remote(),
            "past the period, but the probe still waits on Redis: stay local"
        );
        outage.note_failure("test", &unavailable());
        assert!(outage.skip_remote(), "a period after the failed probe");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!outage.skip_remote(), "the next probe");
    }

    #[test]
    fn with_a_zero_probe_period_every_call_asks() {
        let mut outage = Outage::default();
        outage.set_probe_every(Duration::ZERO);
        outage.note_failure("test", &unavailable());
        assert!(!outage.skip_remote());
        assert!(!outage.skip_remote());
    }
}
