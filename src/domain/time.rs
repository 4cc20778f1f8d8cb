//! Clock and timestamp formats of the API.

use chrono::Utc;

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
    UtcTimestamp(secs).to_string()
}

/// A Unix time shown as the API's UTC `YYYY-MM-DDTHH:MM:SS`. Every item of
/// a list carries one, so it is written digit by digit into a stack buffer
/// and serialised from there (through `fmt`, with a `String` per item, it
/// was 5-7% of the CPU of a page of posts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTimestamp(pub i64);

impl UtcTimestamp {
    fn ascii(self) -> [u8; 19] {
        let days = self.0.div_euclid(86_400);
        let in_day = self.0.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        // Outside four digits (never for a stored time) the Unix epoch
        // stands in, as chrono's default did.
        if !(0..=9999).contains(&year) {
            return UtcTimestamp(0).ascii();
        }
        let mut out = *b"0000-00-00T00:00:00";
        let mut put = |at: usize, value: i64, width: usize| {
            let mut value = value;
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, year, 4);
        put(5, month, 2);
        put(8, day, 2);
        put(11, in_day / 3600, 2);
        put(14, in_day / 60 % 60, 2);
        put(17, in_day % 60, 2);
        out
    }
}

/// Year, month and day of a day count from 1970-01-01 in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl std::fmt::Display for UtcTimestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ascii = self.ascii();
        f.write_str(std::str::from_utf8(&ascii).map_err(|_| std::fmt::Error)?)
    }
}

impl serde::Serialize for UtcTimestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ascii = self.ascii();
        let text = std::str::from_utf8(&ascii).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_use_the_t_separator_without_zone() {
        assert_eq!(format_utc(1_772_539_500), "2026-03-03T12:05:00");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00");
        assert_eq!(format_utc(951_868_799), "2000-02-29T23:59:59");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59");
        assert_eq!(format_utc(253_402_300_799), "9999-12-31T23:59:59");
        assert_eq!(format_utc(253_402_300_800), "1970-01-01T00:00:00");
    }

    #[test]
    fn timestamps_agree_with_chrono_over_four_centuries() {
        use chrono::DateTime;
        // Every 7,777,777 s (about 90 days, drifting through every hour,
        // minute and second) from 1800 to 2200, plus each side of midnight.
        let mut secs = -5_364_662_400_i64;
        while secs < 7_258_118_400 {
            for t in [
                secs,
                secs - secs.rem_euclid(86_400),
                secs - secs.rem_euclid(86_400) - 1,
            ] {
                let expected = DateTime::from_timestamp(t, 0)
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M:%S")
                    .to_string();
                assert_eq!(format_utc(t), expected, "{t}");
            }
            secs += 7_777_777;
        }
    }

    #[test]
    fn a_timestamp_serialises_as_a_json_string() {
        assert_eq!(
            serde_json::to_string(&UtcTimestamp(1_772_539_500)).unwrap(),
            "\"2026-03-03T12:05:00\""
        );
    }
}
