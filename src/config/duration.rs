//! Durations as people write them in configuration: `90s`, `5m`, `1h 30m`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

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
    let text = String::deserialize(d)?;
    parse(&text).map(Some).map_err(serde::de::Error::custom)
}

/// `deserialize_with` for required `Duration` fields written as text.
pub(crate) fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
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
}
