//! Timestamps as Go's RFC3339Nano writes them (Docker's json log and `logs --timestamps`):
//! UTC, fractional seconds with trailing zeros trimmed, none at all when zero.

use chrono::{DateTime, Timelike, Utc};
use strata_core::{Error, Result};

pub fn format_rfc3339_nano(t: &DateTime<Utc>) -> String {
    let mut out = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

pub fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::invalid(format!("bad timestamp {s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn trims_like_go() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 0, 48, 5).unwrap();
        assert_eq!(format_rfc3339_nano(&t), "2026-11-28T00:48:05Z");
        let t = t + chrono::Duration::nanoseconds(120_000_000);
        assert_eq!(format_rfc3339_nano(&t), "2026-11-28T00:48:05.12Z");
        let t = t + chrono::Duration::nanoseconds(7);
        assert_eq!(format_rfc3339_nano(&t), "2026-11-28T00:48:05.120000007Z");
        assert_eq!(parse_rfc3339(&format_rfc3339_nano(&t)).unwrap(), t);
    }
}
