//! Date arithmetic for de-identification: shifting FHIR dates by a number of days.

use crate::labels::Date;

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(date: Date) -> i64 {
    kura_core::time::days_from_civil(i64::from(date.year), date.month, date.day)
}

pub fn civil_from_days(days: i64) -> Date {
    Date::from_days(days)
}

/// Shifts a FHIR date, dateTime or instant by `days`. A full date keeps its time part; a
/// year-month is reduced to its year (a month cannot be shifted by days); a year stays; anything
/// else is not a date and gives `None`.
pub fn shift(raw: &str, days: i64) -> Option<String> {
    let bytes = raw.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes.get(range).is_some_and(|b| b.iter().all(u8::is_ascii_digit));
    match raw.len() {
        4 if digits(0..4) => Some(raw.to_owned()),
        7 if digits(0..4) && bytes.get(4) == Some(&b'-') && digits(5..7) => raw.get(..4).map(str::to_owned),
        n if n >= 10 && digits(0..4) && digits(5..7) && digits(8..10) => {
            let date = Date::parse(raw.get(..10)?)?;
            let shifted = civil_from_days(days_from_civil(date) + days);
            let rest = raw.get(10..).unwrap_or("");
            Some(format!("{:04}-{:02}-{:02}{rest}", shifted.year, shifted.month, shifted.day))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_shift_by_days() {
        let check =
            |raw: &str, days: i64, expected: Option<&str>| assert_eq!(shift(raw, days).as_deref(), expected, "{raw}");
        check("2006-02-25", 10, Some("2006-03-07"));
        check("2006-02-25T08:57:20+00:00", -60, Some("2005-12-27T08:57:20+00:00"));
        check("2000-02-28", 1, Some("2000-02-29"));
        check("1999-12-31T23:59:59Z", 1, Some("2000-01-01T23:59:59Z"));
        check("2006-02", 5, Some("2006"));
        check("2006", 5, Some("2006"));
        check("yesterday", 5, None);
        for days in [-400, -1, 0, 1, 365, 12_000] {
            let date = Date { year: 1987, month: 6, day: 15 };
            assert_eq!(days_from_civil(civil_from_days(days_from_civil(date) + days)) - days_from_civil(date), days);
        }
    }
}
