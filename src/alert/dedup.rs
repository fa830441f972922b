//! Pure: the same alert (node + container + finding + outcome) is sent at most once per window.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What to do with an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send it (and remember it).
    Send,
    /// The same alert was sent within the window.
    Suppress,
}

/// Remembers when each fingerprint was last sent, per channel.
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    marks: HashMap<String, Instant>,
}

impl Dedup {
    /// Decides about `fingerprint` at `now` with a window of `window` (0 never suppresses).
    pub(crate) fn check(&mut self, fingerprint: &str, window: Duration, now: Instant) -> Verdict {
        if self.marks.len() > 10_000 {
            self.marks
                .retain(|_, at| now.saturating_duration_since(*at) < Duration::from_secs(3600));
        }
        match self.marks.get(fingerprint) {
            Some(at) if now.saturating_duration_since(*at) < window => Verdict::Suppress,
            _ => {
                self.marks.insert(fingerprint.to_owned(), now);
                Verdict::Send
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Alert;

    fn alert(node: &str, container: &str, finding: &str, outcome: &str) -> String {
        let mut a = Alert::test(node);
        a.kind = crate::alert::AlertKind::Outcome;
        a.container = container.into();
        a.finding = finding.into();
        a.outcome = outcome.into();
        a.fingerprint()
    }

    #[test]
    fn only_the_same_node_container_finding_and_outcome_is_suppressed() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let first = alert("n1", "web-1", "exited", "success");
        let cases = [
            ("the same, 1 s later", first.clone(), 1, Verdict::Suppress),
            (
                "another container (the original's bug)",
                alert("n1", "web-2", "exited", "success"),
                1,
                Verdict::Send,
            ),
            (
                "another node",
                alert("n2", "web-1", "exited", "success"),
                1,
                Verdict::Send,
            ),
            (
                "another finding",
                alert("n1", "web-1", "oom_killed", "success"),
                1,
                Verdict::Send,
            ),
            (
                "another outcome",
                alert("n1", "web-1", "exited", "failed"),
                1,
                Verdict::Send,
            ),
            (
                "the same, after the window",
                first.clone(),
                61,
                Verdict::Send,
            ),
        ];
        let mut d = Dedup::default();
        assert_eq!(d.check(&first, w, t0), Verdict::Send);
        for (what, fp, secs, want) in cases {
            assert_eq!(
                d.check(&fp, w, t0 + Duration::from_secs(secs)),
                want,
                "{what}"
            );
        }
        assert_eq!(
            d.check(&first, Duration::ZERO, t0 + Duration::from_secs(62)),
            Verdict::Send
        );
    }
}
