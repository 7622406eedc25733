//! Durations as people write them in configuration: `90s`, `5m`, `1h 30m`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

const EXPECTED: &str = "a duration like `90s`, `5m` or `1h 30m` (units: ms, s, m, h, d)";

/// Parses `1h 30m`, `1h30m`, `90s`, `250ms`, `2d`: whole numbers, each followed by a unit.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration `{}`, expected {EXPECTED}",
            text.escape_debug()
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = match &rest[..letters] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        let part = unit.checked_mul(u32::try_from(value).map_err(|_| bad())?);
        total = part.and_then(|p| total.checked_add(p)).ok_or_else(bad)?;
        rest = rest[letters..].trim_start();
    }
    Ok(total)
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
        for bad in [
            "",
            "5",
            "m",
            "5 minutes",
            "1.5h",
            "-1s",
            "5m 3",
            "99999999999h",
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("expected a duration like"), "{bad}: {error}");
        }
    }
}
