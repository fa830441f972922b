//! Human-readable durations (`30s`, `5m`, `1h30m`) for policy documents.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way people write them: `500ms`, `30s`, `5m`, `1h30m`, `2d`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Builds one from whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The wrapped standard duration.
    pub const fn get(self) -> Duration {
        self.0
    }

    /// True for `0s`.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for HumanDuration {
    fn from(value: Duration) -> Self {
        Self(value)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&compact(self.0))
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed.starts_with('-') {
            return Err(format!(
                "invalid duration {s:?}: durations cannot be negative"
            ));
        }
        humantime::parse_duration(trimmed)
            .map(Self)
            .map_err(|e| {
                format!("invalid duration {s:?} ({e}); expected a number with a unit, like 30s, 5m, 1h or 1h30m")
            })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&compact(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, like 30s, 5m or 1h")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                if v == 0 {
                    Ok(HumanDuration::default())
                } else {
                    Err(E::custom(format!(
                        "duration {v} has no unit; write it with one, like {v}s or {v}m"
                    )))
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                if v < 0 {
                    Err(E::custom(format!(
                        "duration {v} is negative; durations must be positive, like 30s"
                    )))
                } else {
                    self.visit_u64(v as u64)
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "duration {v} has no unit; write it with one, like 30s or 5m"
                )))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration with units, like 30s, 5m, 1h or 1h30m.",
            "pattern": r"^\s*([0-9]+\s*(ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|hrs|d|days?|w|weeks?)\s*)+$"
        })
    }
}

/// Formats a duration the way a person would write it in a policy: `1h30m`, `45s`, `250ms`.
pub fn compact(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut secs = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    let millis = d.subsec_millis();
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    if out.is_empty() {
        out = format!("{}ns", d.subsec_nanos());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_the_way_people_write_them() {
        let cases = [
            ("30s", 30),
            ("5m", 300),
            ("1h", 3600),
            ("1h30m", 5400),
            ("2d", 172_800),
            (" 10m ", 600),
        ];
        for (text, secs) in cases {
            let parsed: HumanDuration = text.parse().unwrap();
            assert_eq!(parsed.get(), Duration::from_secs(secs), "{text}");
        }
    }

    #[test]
    fn durations_without_units_or_negative_are_refused_with_a_hint() {
        assert!(
            "-5s"
                .parse::<HumanDuration>()
                .unwrap_err()
                .contains("negative")
        );
        assert!(
            "ten minutes"
                .parse::<HumanDuration>()
                .unwrap_err()
                .contains("like 30s")
        );
    }

    #[test]
    fn durations_print_compactly_and_round_trip() {
        for text in ["0s", "45s", "1h30m", "1d2h", "250ms", "10m"] {
            let d: HumanDuration = text.parse().unwrap();
            assert_eq!(compact(d.get()), text);
        }
    }
}
