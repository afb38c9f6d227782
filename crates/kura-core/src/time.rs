//! Time as the core sees it: milliseconds since the Unix epoch, UTC. The caller supplies `now`;
//! the core never reads a clock.

/// An instant, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    pub const fn plus_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    pub const fn plus_days(self, days: i64) -> Self {
        self.plus_millis(days.saturating_mul(86_400_000))
    }
}

/// The calendar date `(year, month, day)` of a day number (days since 1970-01-01, negative
/// before), in the proleptic Gregorian calendar. Every `i64` day a caller can reach has a date.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm: eras of 400 years starting on March 1st, so the
    // leap day is the last day of the shifted year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both fit in u32 by construction: day is 1..=31 and month 1..=12.
    (year, month as u32, day as u32)
}

/// The day number of a calendar date: the inverse of [`civil_from_days`] for valid dates; an
/// invalid day (30 February) counts on into the next month, as the arithmetic falls.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A half-open period `[not_before, expires_at)`; an absent end never expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    not_before: Timestamp,
    expires_at: Option<Timestamp>,
}

/// A period whose end is not after its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the period ends before it begins")]
pub struct EmptyPeriod;

impl Period {
    pub fn new(not_before: Timestamp, expires_at: Option<Timestamp>) -> Result<Self, EmptyPeriod> {
        match expires_at {
            Some(end) if end <= not_before => Err(EmptyPeriod),
            _ => Ok(Self { not_before, expires_at }),
        }
    }

    pub fn not_before(&self) -> Timestamp {
        self.not_before
    }

    pub fn expires_at(&self) -> Option<Timestamp> {
        self.expires_at
    }

    pub fn contains(&self, now: Timestamp) -> bool {
        self.not_before <= now && self.expires_at.is_none_or(|end| now < end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_and_calendar_dates() {
        let check = |days: i64, date: (i64, u32, u32)| {
            assert_eq!(civil_from_days(days), date, "{days}");
            assert_eq!(days_from_civil(date.0, date.1, date.2), days, "{date:?}");
        };
        check(0, (1970, 1, 1));
        check(-1, (1969, 12, 31));
        check(11_016, (2000, 2, 29));
        check(20_416, (2025, 11, 24));
        check(-25_567, (1900, 1, 1));
    }
}
