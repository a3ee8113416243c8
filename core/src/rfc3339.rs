//! RFC 3339 times as Docker writes them: Go's `RFC3339Nano`, UTC, the fraction's trailing
//! zeros trimmed and no fraction at all when it is zero (image `created`, `LastTagTime`, json
//! log lines). chrono does the calendar; only Go's trimming is ours, since chrono's
//! `SecondsFormat::AutoSi` rounds the fraction to 3, 6 or 9 digits instead.

use chrono::{DateTime, SecondsFormat, Utc};

/// `t` as Go's `RFC3339Nano` writes it.
pub fn format_nano(t: &DateTime<Utc>) -> String {
    let full = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
    // `...SS.nnnnnnnnnZ`: trim the fraction's zeros, then a bare dot.
    let body = full.trim_end_matches('Z').trim_end_matches('0');
    format!("{}Z", body.trim_end_matches('.'))
}

/// The current time as [`format_nano`] writes it.
pub fn now() -> String {
    format_nano(&Utc::now())
}

/// Parses an RFC 3339 time (fraction and offset optional as RFC 3339 allows) into UTC.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses an RFC 3339 time to unix seconds.
pub fn unix_seconds(s: &str) -> Option<i64> {
    parse(s).map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn trims_like_go() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 0, 48, 5).unwrap();
        assert_eq!(format_nano(&t), "2026-11-28T00:48:05Z");
        let t = t + chrono::Duration::nanoseconds(120_000_000);
        assert_eq!(format_nano(&t), "2026-11-28T00:48:05.12Z");
        let t = t + chrono::Duration::nanoseconds(7);
        assert_eq!(format_nano(&t), "2026-11-28T00:48:05.120000007Z");
        assert_eq!(parse(&format_nano(&t)), Some(t));
        let epoch = Utc.timestamp_opt(0, 0).unwrap();
        assert_eq!(format_nano(&epoch), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn parses_docker_times_and_offsets() {
        let s = "2026-11-27T23:14:56.403413452Z";
        assert_eq!(parse(s).map(|t| format_nano(&t)).as_deref(), Some(s));
        assert_eq!(unix_seconds("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(unix_seconds("yesterday"), None);
    }
}
