//! Clock and timestamp formats of the API.

use std::fmt::Write;

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Unix seconds now.
pub fn now_secs() -> i64 {
    Utc::now().timestamp()
}

/// Unix seconds now, with fractions (room messages).
pub fn now_f64() -> f64 {
    Utc::now().timestamp_micros() as f64 / 1_000_000.0
}

/// The API's user-facing timestamp: UTC `YYYY-MM-DDTHH:MM:SS`.
/// Written field by field: a strftime pattern is parsed on every call, and
/// every post in a list is formatted.
pub fn format_utc(secs: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or_default();
    let mut out = String::with_capacity(19);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_use_the_t_separator_without_zone() {
        assert_eq!(format_utc(1_772_539_500), "2026-03-03T12:05:00");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00");
        assert_eq!(format_utc(951_868_799), "2000-02-29T23:59:59");
    }
}
