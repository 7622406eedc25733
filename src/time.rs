//! Times as the crate writes them: whole milliseconds for stores and codes, RFC 3339 and short
//! durations for people.

use std::time::{Duration, SystemTime};

/// A wall-clock time in whole milliseconds since the Unix epoch, in 8 bytes: the precision
/// stores keep and codes are bound to. Times before the epoch count as the epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) struct Millis(u64);

impl Millis {
    pub(crate) fn of(time: SystemTime) -> Millis {
        Millis(millis(time).unsigned_abs())
    }

    pub(crate) fn time(self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// The milliseconds since the epoch.
    pub(crate) fn get(self) -> u64 {
        self.0
    }
}

impl std::ops::Add<Duration> for Millis {
    type Output = Millis;
    fn add(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(duration_millis(d)))
    }
}

/// A duration in whole milliseconds, at most `u64::MAX` of them.
pub(crate) fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch; times before it count as the epoch.
pub(crate) fn millis(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The time `ms` milliseconds after the Unix epoch.
pub(crate) fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// `time` cut to whole milliseconds, the precision stores keep.
pub(crate) fn to_millis(time: SystemTime) -> SystemTime {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + Duration::new(d.as_secs(), d.subsec_millis() * 1_000_000),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// Whole seconds since the Unix epoch; 0 for earlier times.
pub(crate) fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-11-21T14:05:00Z`, from days since the epoch by the civil calendar.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = unix_secs(time);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `1h 30m`, `4m 59s`, `0s`: the two largest units, as a person reads them.
pub(crate) fn human_duration(d: Duration) -> String {
    two_units(d, [("d", "d"), ("h", "h"), ("m", "m"), ("s", "s")])
}

/// `d` in its two largest units of days, hours, minutes and seconds, each written after its
/// number as `units` names it (for one, for more): `1d 2h`, `1 day 30 s`, `0s`.
pub(crate) fn two_units(d: Duration, units: [(&str, &str); 4]) -> String {
    let mut rest = d.as_secs();
    let mut parts = Vec::new();
    for (size, (one, many)) in [86_400, 3600, 60, 1].into_iter().zip(units) {
        let n = rest / size;
        if n > 0 || (size == 1 && parts.is_empty()) {
            parts.push(format!("{n}{}", if n == 1 { one } else { many }));
            rest %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_wall_clock_times() {
        let at = |secs| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_265_100), "2026-11-21T12:45:00Z");
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        let d = Duration::from_secs;
        assert_eq!(human_duration(d(0)), "0s");
        assert_eq!(human_duration(d(299)), "4m 59s");
        assert_eq!(human_duration(d(5400)), "1h 30m");
        assert_eq!(human_duration(d(3600)), "1h");
        assert_eq!(human_duration(d(90_061)), "1d 1h");
    }
}
