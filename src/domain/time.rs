//! Clock and timestamp formats of the API.

use chrono::{DateTime, Utc};

/// Unix seconds now.
pub fn now_secs() -> i64 {
    Utc::now().timestamp()
}

/// Unix seconds now, with fractions (room messages).
pub fn now_f64() -> f64 {
    Utc::now().timestamp_micros() as f64 / 1_000_000.0
}

/// The API's user-facing timestamp: UTC `YYYY-MM-DDTHH:MM:SS`.
pub fn format_utc(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_use_the_t_separator_without_zone() {
        assert_eq!(format_utc(1_772_539_500), "2026-03-03T12:05:00");
    }
}
