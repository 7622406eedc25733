//! Times as the page shows them: how long ago or from now, beside the time in UTC, inside a
//! `<time>` that holds the exact instant. Without a script the server cannot know the reader's
//! time zone, and a relative time reads the same in every one.

use std::time::{Duration, SystemTime};

use maud::{Markup, html};

use crate::time::rfc3339;

/// `3 min ago, at 14:03:20 UTC`, `in 4 min 10 s, at 14:08:20 UTC`.
pub(super) fn when(time: SystemTime, now: SystemTime) -> Markup {
    html! { time datetime=(rfc3339(time)) { (relative(time, now)) ", at " (utc(time, now)) } }
}

/// `14:20:00 UTC (in 15 min)`: when something ends.
pub(super) fn until(time: SystemTime, now: SystemTime) -> Markup {
    html! { time datetime=(rfc3339(time)) { (utc(time, now)) " (" (relative(time, now)) ")" } }
}

/// `3 min ago`, `in 4 min 10 s`, with the time in UTC on hover.
pub(super) fn how_long(time: SystemTime, now: SystemTime) -> Markup {
    html! { time datetime=(rfc3339(time)) title=(utc(time, now)) { (relative(time, now)) } }
}

/// `in 4 min 10 s`, `3 min ago`, `just now`.
fn relative(time: SystemTime, now: SystemTime) -> String {
    let second = Duration::from_secs(1);
    match time.duration_since(now) {
        Ok(ahead) if ahead >= second => format!("in {}", spoken(ahead)),
        Err(past) if past.duration() >= second => format!("{} ago", spoken(past.duration())),
        _ => "just now".to_owned(),
    }
}

/// `14:03:20 UTC` on the same day as `now`, else `2026-11-21 14:03 UTC`.
fn utc(time: SystemTime, now: SystemTime) -> String {
    let (at, today) = (rfc3339(time), rfc3339(now));
    if at[..10] == today[..10] {
        format!("{} UTC", &at[11..19])
    } else {
        format!("{} {} UTC", &at[..10], &at[11..16])
    }
}

/// `4 min 10 s`, `2 h 5 min`, `3 days 4 h`, `1 day`: the two largest units, as a person says
/// them.
pub(super) fn spoken(d: Duration) -> String {
    let units = [
        (" day", " days"),
        (" h", " h"),
        (" min", " min"),
        (" s", " s"),
    ];
    crate::time::two_units(d, units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_says_them() {
        let d = Duration::from_secs;
        assert_eq!(spoken(d(0)), "0 s");
        assert_eq!(spoken(d(12)), "12 s");
        assert_eq!(spoken(d(250)), "4 min 10 s");
        assert_eq!(spoken(d(900)), "15 min");
        assert_eq!(spoken(d(3600)), "1 h");
        assert_eq!(spoken(d(7500)), "2 h 5 min");
        assert_eq!(spoken(d(86_400)), "1 day");
        assert_eq!(spoken(d(7 * 86_400 + 4 * 3600 + 59)), "7 days 4 h");
    }

    #[test]
    fn a_time_reads_from_now_and_in_utc_and_keeps_its_instant() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_265_100); // 2026-11-21T12:45:00Z
        let later = now + Duration::from_secs(250);
        assert_eq!(
            when(later, now).into_string(),
            r#"<time datetime="2026-11-21T12:49:10Z">in 4 min 10 s, at 12:49:10 UTC</time>"#
        );
        let earlier = now - Duration::from_secs(3 * 86_400);
        assert_eq!(
            when(earlier, now).into_string(),
            r#"<time datetime="2026-11-18T12:45:00Z">3 days ago, at 2026-11-18 12:45 UTC</time>"#
        );
        assert_eq!(relative(now, now), "just now");
        assert!(
            how_long(later, now)
                .into_string()
                .contains(r#"title="12:49:10 UTC">in 4 min 10 s<"#)
        );
    }
}
