//! Human-readable durations (`30s`, `5m`, `1h30m`) for policy documents.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest duration the policy language accepts anywhere: 365 days. Fields that bound how
/// long one action may take have a shorter maximum (see [`MAX_ACTION_TIME`]).
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);
/// The longest `verifyWithin`, `stopTimeout` and `exec.timeout`: 1 hour.
pub(crate) const MAX_ACTION_TIME: Duration = Duration::from_secs(3_600);

/// Every spelling of a unit, with its length in nanoseconds. The JSON Schema's pattern
/// is built from the same list, so the parser and the schema accept the same text.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("sec", 1_000_000_000),
    ("secs", 1_000_000_000),
    ("m", 60_000_000_000),
    ("min", 60_000_000_000),
    ("mins", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("hr", 3_600_000_000_000),
    ("hrs", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
    ("day", 86_400_000_000_000),
    ("days", 86_400_000_000_000),
    ("w", 604_800_000_000_000),
    ("week", 604_800_000_000_000),
    ("weeks", 604_800_000_000_000),
];

/// The JSON Schema pattern of a duration (what [`parse`] accepts).
pub(crate) fn schema_pattern() -> String {
    let units: Vec<&str> = UNITS.iter().map(|(u, _)| *u).collect();
    format!(r"^\s*([0-9]+(\.[0-9]+)?\s*({})\s*)+$", units.join("|"))
}

/// Parses `30s`, `1.5s`, `1h30m`, `2 days`: one or more numbers (a decimal point allowed),
/// each followed by a unit, and at most [`MAX_DURATION`] in all.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let hint = "expected a number with a unit, like 30s, 1.5s, 5m, 1h or 1h30m";
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(format!("invalid duration {text:?}: empty; {hint}"));
    }
    let max = MAX_DURATION.as_nanos();
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if int_len == 0 {
            return Err(format!("invalid duration {text:?}: {hint}"));
        }
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                if n == 0 {
                    return Err(format!("invalid duration {text:?}: {hint}"));
                }
                f.split_at(n)
            }
            None => ("", after),
        };
        let after = after.trim_start();
        let unit_len: usize = after
            .chars()
            .take_while(|c| c.is_alphabetic())
            .map(char::len_utf8)
            .sum();
        let (unit, after) = after.split_at(unit_len);
        let Some((_, size)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {unit:?}; {hint}"
            ));
        };
        let too_long = || {
            format!(
                "duration {text:?} is too long: the longest allowed is {}",
                compact(MAX_DURATION)
            )
        };
        // Digits beyond the maximum are refused before they can overflow.
        let digits = int.trim_start_matches('0');
        if digits.len() > 20 {
            return Err(too_long());
        }
        let whole: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| too_long())?
        };
        let mut part = whole.checked_mul(*size).ok_or_else(too_long)?;
        let mut scale = *size;
        for digit in frac.bytes().take(9) {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total = total
            .checked_add(part)
            .filter(|t| *t <= max)
            .ok_or_else(too_long)?;
        rest = after.trim_start();
    }
    Ok(Duration::from_nanos(total as u64))
}

/// A duration written the way people write them: `500ms`, `30s`, `5m`, `1h30m`, `2d`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Builds one from whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The wrapped standard duration.
    pub(crate) const fn get(self) -> Duration {
        self.0
    }

    /// True for `0s`.
    pub(crate) fn is_zero(self) -> bool {
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
        parse(trimmed).map(Self)
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
            "description": "A duration with units, like 30s, 1.5s, 5m, 1h or 1h30m; at most 365d (verifyWithin, stopTimeout and exec.timeout: at most 1h).",
            "pattern": schema_pattern()
        })
    }
}

/// Formats a duration the way a person would write it in a policy: `1h30m`, `45s`, `250ms`.
pub(crate) fn compact(d: Duration) -> String {
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

    #[test]
    fn durations_above_a_year_are_refused_before_any_arithmetic() {
        assert_eq!(parse("365d").unwrap(), MAX_DURATION);
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0.25h").unwrap(), Duration::from_secs(900));
        for hostile in [
            "366d",
            "99999999999999h",
            "18446744073709551515s",
            "340282366920938463463374607431768211456ns",
            "52w2d",
            "364d24h1s",
        ] {
            let err = parse(hostile).unwrap_err();
            assert!(
                err.contains("too long") && err.contains("365d"),
                "{hostile}: {err}"
            );
        }
    }

    /// The committed JSON Schema's pattern and the parser accept the same text (checked with
    /// Python's `re`, what check-jsonschema uses).
    #[test]
    fn the_parser_and_the_schema_pattern_agree() {
        let samples = [
            "30s",
            "1.5s",
            "1h30m",
            " 10m ",
            "2 days",
            "1w",
            "250ms",
            "5µs",
            "3 hrs",
            "1.s",
            ".5s",
            "5",
            "ten minutes",
            "5mss",
            "1h-30m",
            "1,5s",
            "1e3s",
            "",
            "s",
            "5 m 3 s",
            "-5s",
            "1y",
            "1 month",
        ];
        let script = "import json,re,sys\nd=json.load(sys.stdin)\nprint(json.dumps([re.search(d['p'], s) is not None for s in d['s']]))";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed by this test (scripts/test.sh installs it)");
        let input = serde_json::json!({"p": schema_pattern(), "s": samples});
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.to_string().as_bytes())
            .unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        let by_schema: Vec<bool> = serde_json::from_slice(&out.stdout).unwrap();
        for (text, schema_ok) in samples.iter().zip(by_schema) {
            assert_eq!(parse(text).is_ok(), schema_ok, "{text:?}: parser vs schema");
        }
    }
}
