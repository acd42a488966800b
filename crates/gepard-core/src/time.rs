//! The one timestamp format gepard stores and serves.

use chrono::{DateTime, SecondsFormat, Utc};

/// Current time, truncated to microseconds so that stored and served values compare equal.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Formats a timestamp as fixed-width RFC 3339 UTC (`2026-01-02T03:04:05.000006Z`).
///
/// Fixed width matters: the stores compare and sort these strings as text.
pub fn format(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses a timestamp written by [`format`] (or any RFC 3339 value).
pub fn parse(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    #[test]
    fn formatted_timestamps_round_trip_and_sort_as_text() {
        let a = super::now();
        let b = a + chrono::Duration::microseconds(1);
        assert_eq!(super::parse(&super::format(&a)).unwrap(), a);
        assert!(super::format(&a) < super::format(&b));
    }
}
