//! How times and durations read, everywhere: the CLI, mails, the API's
//! human-readable strings. One formatter each, so the farm says "1m 5s" the
//! same way in every place.

use crate::Millis;
use chrono::TimeZone;

/// `0.4s`, `59.9s`, `1m 5s`, `2h 3m`: as precise as a reader needs.
pub fn duration(ms: Millis) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h {}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{}.{}s", s, (ms % 1000) / 100)
    }
}

/// `22:00` when `t` falls on the same day as `now` in `tz`, else
/// `2026-12-24 22:00`. UTC gets a `UTC` suffix so nobody reads it as local.
pub fn clock_time<Tz: TimeZone>(t: Millis, now: Millis, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let (Some(at), Some(today)) = (
        tz.timestamp_millis_opt(t as i64).single(),
        tz.timestamp_millis_opt(now as i64).single(),
    ) else {
        return format!("{t} ms after the epoch");
    };
    let text = if at.date_naive() == today.date_naive() {
        at.format("%H:%M").to_string()
    } else {
        at.format("%Y-%m-%d %H:%M").to_string()
    };
    if at.offset().to_string() == "UTC" {
        format!("{text} UTC")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_the_same_everywhere() {
        assert_eq!(duration(400), "0.4s");
        assert_eq!(duration(59_999), "59.9s");
        assert_eq!(duration(65_000), "1m 5s");
        assert_eq!(duration(7_384_000), "2h 3m");
    }

    #[test]
    fn clock_times_name_the_day_when_it_is_not_today() {
        let now = 1_790_000_000_000; // 2026-09-21 14:13:20 UTC
        assert_eq!(clock_time(now + 3_600_000, now, &chrono::Utc), "15:13 UTC");
        assert_eq!(
            clock_time(now + 86_400_000, now, &chrono::Utc),
            "2026-09-22 14:13 UTC"
        );
        let tokyo = chrono::FixedOffset::east_opt(9 * 3600).expect("a valid offset");
        assert_eq!(clock_time(now, now, &tokyo), "23:13");
    }
}
