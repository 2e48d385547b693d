//! `DropboxTimestamp` (`%Y-%m-%dT%H:%M:%SZ`, always UTC, no fractions) and `Date` (`%Y-%m-%d`),
//! as Unix seconds, with the proleptic Gregorian calendar done by hand (no date-time crate in
//! the wasm component). Parsing is strict: anything but exactly these formats is an error,
//! because a timestamp that parses "approximately" would silently corrupt change detection.

/// What was wrong with a timestamp or date string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not of the form `YYYY-MM-DDTHH:MM:SSZ` / `YYYY-MM-DD` (length, separators, digits).
    #[error("expected {expected}, got {input:?}")]
    Format {
        expected: &'static str,
        input: String,
    },
    /// The form is right but a field is out of range (month 13, Feb 30, hour 24, ...).
    #[error("{field} {value} out of range in {input:?}")]
    OutOfRange {
        field: &'static str,
        value: u32,
        input: String,
    },
}

const TIMESTAMP_FORMAT: &str = "YYYY-MM-DDTHH:MM:SSZ";
const DATE_FORMAT: &str = "YYYY-MM-DD";

/// Parses a `DropboxTimestamp` such as `2015-05-12T15:50:38Z` into Unix seconds.
pub fn parse_timestamp(s: &str) -> Result<i64, TimeError> {
    let b = s.as_bytes();
    let format_err = || TimeError::Format {
        expected: TIMESTAMP_FORMAT,
        input: short(s),
    };
    if b.len() != 20
        || !separators_ok(
            b,
            &[
                (4, b'-'),
                (7, b'-'),
                (10, b'T'),
                (13, b':'),
                (16, b':'),
                (19, b'Z'),
            ],
        )
    {
        return Err(format_err());
    }
    let days = parse_ymd(b, s).map_err(|e| e.unwrap_or_else(format_err))?;
    let field = |range: std::ops::Range<usize>| digits(b, range).ok_or_else(format_err);
    let (hour, minute, second) = (field(11..13)?, field(14..16)?, field(17..19)?);
    check(hour <= 23, "hour", hour, s)?;
    check(minute <= 59, "minute", minute, s)?;
    check(second <= 59, "second", second, s)?;
    let secs_of_day = i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    Ok(days * 86_400 + secs_of_day)
}

/// Parses a `Date` such as `2015-05-12` into Unix seconds at 00:00 UTC.
pub fn parse_date(s: &str) -> Result<i64, TimeError> {
    let b = s.as_bytes();
    let format_err = || TimeError::Format {
        expected: DATE_FORMAT,
        input: short(s),
    };
    if b.len() != 10 || !separators_ok(b, &[(4, b'-'), (7, b'-')]) {
        return Err(format_err());
    }
    let days = parse_ymd(b, s).map_err(|e| e.unwrap_or_else(format_err))?;
    Ok(days * 86_400)
}

/// Formats Unix seconds as a `DropboxTimestamp`. Years outside 0000..=9999 cannot be written in
/// that format; they are clamped to the first/last second of that range.
pub fn format_timestamp(unix: i64) -> String {
    const MIN: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let unix = unix.clamp(MIN, MAX);
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn short(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().nth(40).is_some() {
        out.push('…');
    }
    out
}

fn separators_ok(b: &[u8], seps: &[(usize, u8)]) -> bool {
    seps.iter().all(|&(i, sep)| b.get(i) == Some(&sep))
}

/// The decimal value of `b[range]` if every byte is an ASCII digit.
fn digits(b: &[u8], range: std::ops::Range<usize>) -> Option<u32> {
    let bytes = b.get(range)?;
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u32, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
    })
}

fn check(ok: bool, field: &'static str, value: u32, input: &str) -> Result<(), TimeError> {
    if ok {
        Ok(())
    } else {
        Err(TimeError::OutOfRange {
            field,
            value,
            input: short(input),
        })
    }
}

/// Days since 1970-01-01 of the `YYYY-MM-DD` prefix. `Err(None)` = format error.
fn parse_ymd(b: &[u8], s: &str) -> Result<i64, Option<TimeError>> {
    let year = digits(b, 0..4).ok_or(None)?;
    let month = digits(b, 5..7).ok_or(None)?;
    let day = digits(b, 8..10).ok_or(None)?;
    check((1..=12).contains(&month), "month", month, s).map_err(Some)?;
    check(day >= 1 && day <= days_in_month(year, month), "day", day, s).map_err(Some)?;
    Ok(days_from_civil(i64::from(year), month, day))
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`], for days within the clamped range of `format_timestamp`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> i64 {
        parse_timestamp(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn known_values() {
        assert_eq!(ok("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ok("2015-05-12T15:50:38Z"), 1_431_445_838);
        assert_eq!(ok("2000-03-01T00:00:00Z"), 951_868_800);
        assert_eq!(ok("1969-12-31T23:59:59Z"), -1);
        assert_eq!(ok("2038-01-19T03:14:08Z"), 2_147_483_648);
        assert_eq!(ok("0000-01-01T00:00:00Z"), -62_167_219_200);
        assert_eq!(ok("9999-12-31T23:59:59Z"), 253_402_300_799);
        assert_eq!(parse_date("2015-05-12"), Ok(1_431_388_800));
        assert_eq!(parse_date("1970-01-01"), Ok(0));
    }

    #[test]
    fn leap_years() {
        assert_eq!(
            ok("2024-02-29T12:00:00Z"),
            ok("2024-03-01T12:00:00Z") - 86_400
        );
        assert_eq!(ok("2000-02-29T00:00:00Z"), 951_782_400);
        for bad in [
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
        ] {
            assert!(
                matches!(
                    parse_timestamp(bad),
                    Err(TimeError::OutOfRange {
                        field: "day",
                        value: 29,
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert!(parse_date("2023-02-29").is_err());
        assert!(parse_date("2024-02-29").is_ok());
        assert!(parse_date("2024-04-31").is_err());
    }

    #[test]
    fn rejects_everything_else() {
        let out_of_range = [
            "2015-05-12T24:00:00Z",
            "2015-05-12T23:60:00Z",
            "2015-05-12T23:59:60Z",
            "2015-13-12T00:00:00Z",
            "2015-00-12T00:00:00Z",
            "2015-05-00T00:00:00Z",
            "2015-05-32T00:00:00Z",
        ];
        for s in out_of_range {
            assert!(
                matches!(parse_timestamp(s), Err(TimeError::OutOfRange { .. })),
                "{s}"
            );
        }
        let malformed = [
            "",
            "2015-05-12T15:50:38",
            "2015-05-12T15:50:38z",
            "2015-05-12T15:50:38.123Z",
            "2015-05-12T15:50:38+00:00",
            "2015-05-12 15:50:38Z",
            "2015-5-12T15:50:38Z ",
            " 2015-05-12T15:50:38Z",
            "+015-05-12T15:50:38Z",
            "2015-05-1aT15:50:38Z",
            "2015-05-12T15:50:3٣Z",
            "２015-05-12T15:50:38Z",
            "2015-05-12",
        ];
        for s in malformed {
            assert!(
                matches!(parse_timestamp(s), Err(TimeError::Format { .. })),
                "{s:?}"
            );
        }
        for s in [
            "2015-05-12T00:00:00Z",
            "2015/05/12",
            "15-05-12",
            "2015-05-1",
            "-015-05-12",
        ] {
            assert!(
                matches!(parse_date(s), Err(TimeError::Format { .. })),
                "{s:?}"
            );
        }
        let long = "x".repeat(1000);
        let err = parse_timestamp(&long)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.len() < 120, "{err}");
    }

    #[test]
    fn format_round_trips() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2015-05-12T15:50:38Z",
            "2024-02-29T23:59:59Z",
            "1600-03-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "1969-07-20T20:17:40Z",
        ] {
            assert_eq!(format_timestamp(ok(s)), s);
        }
        // Every day over several 400-year cycles round-trips through the civil conversion.
        let mut t = -12_219_292_800; // 1582-10-15
        while t < 32_503_680_000 {
            // 3000-01-01
            assert_eq!(ok(&format_timestamp(t)), t);
            t += 86_400 * 7 + 3_661;
        }
        assert_eq!(format_timestamp(i64::MIN), "0000-01-01T00:00:00Z");
        assert_eq!(format_timestamp(i64::MAX), "9999-12-31T23:59:59Z");
    }
}
