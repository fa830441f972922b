//! How long a container has been up, as the bounds the engine's list status text allows ("Up 3 minutes").

use std::time::Duration;

/// The uptime a list's status text allows: at least `min`, less than `max`. The engine writes
/// it with go-units' `HumanDuration` of `now - StartedAt`, so its precision falls with the
/// uptime: a second under a minute, a minute under an hour, then hours, days, weeks, months,
/// years.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UptimeBounds {
    /// The shortest uptime the text allows.
    pub min: Duration,
    /// The uptime the text allows no longer than (exclusive).
    pub max: Duration,
}

/// How far, beyond the text's own precision, an uptime may be from the bounds and still
/// count as the same run: the time between the engine writing the list and HemoStat reading
/// it, and a small difference between the two clocks.
pub const UPTIME_SLACK: Duration = Duration::from_secs(5);

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;

impl UptimeBounds {
    /// The bounds a running (or paused) container's status text gives: `"Up 2 minutes"`,
    /// `"Up About an hour (healthy)"`, `"Up 3 days (Paused)"`. `None` for any other text
    /// (exited, restarting, a wording this version does not know).
    pub fn of_status(status: &str) -> Option<UptimeBounds> {
        let rest = status.strip_prefix("Up ")?;
        // What follows the duration is a parenthesised suffix: health, or "(Paused)".
        let human = rest.split(" (").next()?.trim();
        let s = |secs: u64| Duration::from_secs(secs);
        let hm = |half_hours: u64| Duration::from_secs(half_hours * HOUR / 2);
        let bounds = match human {
            "Less than a second" => (Duration::ZERO, s(1)),
            "About a minute" => (s(MINUTE), s(2 * MINUTE)),
            "About an hour" => (s(HOUR), hm(3)),
            _ => {
                let (n, unit) = human.split_once(' ')?;
                let n: u64 = n.parse().ok()?;
                // hours, days, weeks and months come from the uptime rounded to the hour.
                let rounded_hours = |from: u64, to: u64| (hm(2 * from - 1), hm(2 * to - 1));
                match unit {
                    "second" | "seconds" => (s(n), s(n + 1)),
                    "minutes" => (s(n * MINUTE), s((n + 1) * MINUTE)),
                    "hours" => rounded_hours(n, n + 1),
                    "days" => rounded_hours(24 * n, 24 * (n + 1)),
                    "weeks" => rounded_hours(168 * n, 168 * (n + 1)),
                    "months" => rounded_hours(720 * n, 720 * (n + 1)),
                    "years" => (s(8760 * n * HOUR), s(8760 * (n + 1) * HOUR)),
                    _ => return None,
                }
            }
        };
        Some(UptimeBounds {
            min: bounds.0,
            max: bounds.1,
        })
    }

    /// The engine's own wording of an uptime (go-units' `HumanDuration`), as a fake engine
    /// lists it: the inverse of [`Self::of_status`].
    pub fn human(uptime: Duration) -> String {
        let secs = uptime.as_secs();
        let minutes = secs / MINUTE;
        // Go's `Duration.Round(time.Hour)`: halves away from zero.
        let hours = (uptime.as_secs_f64() / HOUR as f64).round() as u64;
        match () {
            () if secs < 1 => "Less than a second".to_owned(),
            () if secs == 1 => "1 second".to_owned(),
            () if secs < MINUTE => format!("{secs} seconds"),
            () if minutes == 1 => "About a minute".to_owned(),
            () if minutes < 60 => format!("{minutes} minutes"),
            () if hours == 1 => "About an hour".to_owned(),
            () if hours < 48 => format!("{hours} hours"),
            () if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
            () if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
            () if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
            () => format!("{} years", secs / HOUR / 24 / 365),
        }
    }

    /// Whether a run up for `uptime` could have been listed with this text, within
    /// [`UPTIME_SLACK`].
    pub fn allows(&self, uptime: Duration) -> bool {
        uptime.saturating_add(UPTIME_SLACK) >= self.min
            && uptime < self.max.saturating_add(UPTIME_SLACK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_status_text_bounds_the_uptime_as_go_units_rounds_it() {
        // (status, min, max); the texts are what Docker 20.10 writes.
        let cases = [
            ("Up Less than a second", Some((0, 1))),
            ("Up 1 second", Some((1, 2))),
            ("Up 42 seconds (healthy)", Some((42, 43))),
            ("Up About a minute", Some((60, 120))),
            ("Up 7 minutes (health: starting)", Some((420, 480))),
            ("Up About an hour (unhealthy)", Some((3600, 5400))),
            ("Up 2 hours", Some((5400, 9000))),
            ("Up 3 days (Paused)", Some((143 * 1800, 191 * 1800))),
            (
                "Up 2 weeks",
                Some(((2 * 168 * 2 - 1) * 1800, (3 * 168 * 2 - 1) * 1800)),
            ),
            (
                "Up 4 months",
                Some(((4 * 720 * 2 - 1) * 1800, (5 * 720 * 2 - 1) * 1800)),
            ),
            ("Up 2 years", Some((2 * 8760 * 3600, 3 * 8760 * 3600))),
            ("Exited (0) 5 seconds ago", None),
            ("Restarting (1) 2 seconds ago", None),
            ("Up a while", None),
            ("Up 3 fortnights", None),
            ("Created", None),
            ("", None),
        ];
        for (status, want) in cases {
            let got = UptimeBounds::of_status(status).map(|b| (b.min.as_secs(), b.max.as_secs()));
            assert_eq!(got, want, "{status:?}");
        }
    }

    #[test]
    fn every_uptime_the_engine_words_is_within_the_bounds_read_back() {
        // From a second to three years, in steps that cross every unit's boundaries.
        let mut uptime = Duration::from_millis(300);
        while uptime < secs(3 * 8760 * 3600) {
            let text = format!("Up {} (healthy)", UptimeBounds::human(uptime));
            let bounds = UptimeBounds::of_status(&text).unwrap_or_else(|| panic!("{text:?}"));
            assert!(
                bounds.min <= uptime && uptime < bounds.max,
                "{uptime:?} worded {text:?}, read back as {bounds:?}"
            );
            uptime = uptime.mul_f64(1.013) + Duration::from_millis(250);
        }
    }

    #[test]
    fn an_uptime_fits_the_text_within_the_slack() {
        let minutes_7 = UptimeBounds::of_status("Up 7 minutes").unwrap();
        let seconds_9 = UptimeBounds::of_status("Up 9 seconds").unwrap();
        // (bounds, uptime, allowed)
        let cases = [
            (minutes_7, secs(450), true),
            (minutes_7, secs(420 - 5), true),
            (minutes_7, secs(420 - 6), false),
            (minutes_7, secs(484), true),
            (minutes_7, secs(485), false),
            (seconds_9, secs(9), true),
            (seconds_9, secs(14), true),
            (seconds_9, secs(15), false),
            // A run restarted 9 s ago, where the last inspection saw one up for an hour.
            (seconds_9, secs(3600), false),
        ];
        for (i, (bounds, uptime, want)) in cases.into_iter().enumerate() {
            assert_eq!(bounds.allows(uptime), want, "case {i}");
        }
    }
}
