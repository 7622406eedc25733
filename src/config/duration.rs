//! Durations as people write them in configuration: `90s`, `5m`, `1h 30m`.

use std::time::Duration;

use std::fmt;

use serde::Deserializer;
use serde::de::{self, Visitor};

const EXPECTED: &str = "a duration like `90s`, `5m` or `1h 30m`";

/// Parses a duration as [`humantime`] reads it: `1h 30m`, `1h30m`, `90s`, `250ms`, `2d`,
/// `5min`, `1.5h` (units from `ns` to `y`; note `m` is minutes and `M` months).
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| {
        format!(
            "invalid duration `{}` ({error}), expected {EXPECTED}",
            text.escape_debug()
        )
    })
}

/// `deserialize_with` for `Option<Duration>` fields written as text.
pub(crate) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    required(d).map(Some)
}

/// `deserialize_with` for required `Duration` fields written as text.
pub(crate) fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(Text)
}

/// Reads a duration from text, and says how to write one when given a number (`ttl = 300`:
/// seconds? minutes?), rather than only that a string was expected.
struct Text;

impl Visitor<'_> for Text {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
        Err(a_number(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
        Err(a_number(n))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Duration, E> {
        Err(a_number(n))
    }
}

/// What a duration written as the number `n` hears: how to write it.
fn a_number<E: de::Error>(n: impl fmt::Display) -> E {
    E::custom(format!(
        "a duration is text with a unit, not a number: write \"{n}s\" for {n} seconds, or \"5m\", \"1h 30m\""
    ))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::time::Duration;

    #[test]
    fn people_write_durations_with_units() {
        let secs = |s| Ok(Duration::from_secs(s));
        assert_eq!(parse("5m"), secs(300));
        assert_eq!(parse("1h 30m"), secs(5400));
        assert_eq!(parse("1h30m"), secs(5400));
        assert_eq!(parse(" 90s "), secs(90));
        assert_eq!(parse("2d"), secs(172_800));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5 minutes"), secs(300));
        assert_eq!(parse("1.5h"), secs(5400));
        for bad in ["", "5", "m", "five minutes", "-1s", "5m 3", "5 fortnights"] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("expected a duration like"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_number_is_answered_with_how_to_write_it() {
        use serde::de::IntoDeserializer;
        use serde::de::value::Error;
        let read = |d: serde::de::value::I64Deserializer<Error>| super::required(d);
        let error = read(300_i64.into_deserializer()).unwrap_err().to_string();
        assert!(error.contains("write \"300s\" for 300 seconds"), "{error}");
    }
}
