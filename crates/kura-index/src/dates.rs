//! Civil dates as day numbers: days since 1970-01-01 (negative before), the proleptic Gregorian
//! calendar, and age in whole years. Ages are computed on calendar dates, never with a 365.25-day
//! year, because a cohort boundary such as "40 years old" must flip exactly on the birthday.

use kura_core::time::civil_from_days;

/// Whole years a person born on day `birth` has lived on day `today`: the year difference, less
/// one if this year's birthday has not come yet. Someone born on 29 February turns a year older
/// on 1 March in common years. `None` if `today` is before the birth.
pub fn age_in_years(birth: i32, today: i32) -> Option<u32> {
    let years = age_difference(i64::from(birth), i64::from(today));
    u32::try_from(years).ok()
}

/// The signed version of [`age_in_years`], over the wider range the binary search below needs.
fn age_difference(birth: i64, today: i64) -> i64 {
    let (birth_year, birth_month, birth_day) = civil_from_days(birth);
    let (year, month, day) = civil_from_days(today);
    let not_yet = (month, day) < (birth_month, birth_day);
    year - birth_year - i64::from(not_yet)
}

/// The inclusive range of birth days whose age on `today` lies within `min..=max` years (an
/// absent `min` means 0, an absent `max` means no upper bound), or `None` if no day qualifies.
/// People born after `today` have no age yet and are never inside.
pub(crate) fn birth_days_for_ages(min: Option<u32>, max: Option<u32>, today: i32) -> Option<(i32, i32)> {
    let today = i64::from(today);
    let lowest = i64::from(i32::MIN);
    let min = i64::from(min.unwrap_or(0));
    // Age falls as the birth day rises, so each bound is one binary search over birth days
    // (about 32 date conversions); this keeps leap days and month lengths in one place.
    let last = last_where(lowest, today, |birth| age_difference(birth, today) >= min)?;
    let first = match max {
        None => lowest,
        Some(max) => {
            let max = i64::from(max);
            last_where(lowest, today, |birth| age_difference(birth, today) > max).map_or(lowest, |day| day + 1)
        }
    };
    if first > last {
        return None;
    }
    Some((i32::try_from(first).ok()?, i32::try_from(last).ok()?))
}

/// The largest `x` in `low..=high` with `holds(x)`, for a predicate that is true up to some
/// point and false after it; `None` if it holds nowhere.
fn last_where(low: i64, high: i64, holds: impl Fn(i64) -> bool) -> Option<i64> {
    if !holds(low) {
        return None;
    }
    // Invariant: holds(low), and everything above `high` fails.
    let (mut low, mut high) = (low, high);
    while low < high {
        let middle = low + (high - low + 1) / 2;
        if holds(middle) {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    Some(low)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_core::time::days_from_civil;
    use proptest::prelude::*;

    fn day(year: i64, month: u32, day: u32) -> i32 {
        i32::try_from(days_from_civil(year, month, day)).unwrap()
    }

    #[test]
    fn days_and_dates() {
        let check = |days: i64, expected: (i64, u32, u32)| {
            assert_eq!(civil_from_days(days), expected, "{days}");
            assert_eq!(days_from_civil(expected.0, expected.1, expected.2), days, "{expected:?}");
        };
        check(0, (1970, 1, 1));
        check(-1, (1969, 12, 31));
        check(59, (1970, 3, 1));
        check(11_016, (2000, 2, 29));
        check(-25_567, (1900, 1, 1));
        check(-719_468, (0, 3, 1));
        check(19_723, (2024, 1, 1));
        check(20_089, (2025, 1, 1));
    }

    #[test]
    fn ages_turn_on_the_birthday() {
        let check = |birth: (i64, u32, u32), today: (i64, u32, u32), expected: Option<u32>| {
            let got = age_in_years(day(birth.0, birth.1, birth.2), day(today.0, today.1, today.2));
            assert_eq!(got, expected, "born {birth:?} on {today:?}");
        };
        check((1980, 6, 15), (2020, 6, 14), Some(39));
        check((1980, 6, 15), (2020, 6, 15), Some(40));
        check((1980, 6, 15), (1980, 6, 15), Some(0));
        check((1980, 6, 15), (1980, 6, 14), None);
        check((1960, 12, 31), (2021, 1, 1), Some(60));
        // A leap-day birth counts its birthday as 1 March in common years.
        check((2000, 2, 29), (2001, 2, 28), Some(0));
        check((2000, 2, 29), (2001, 3, 1), Some(1));
        check((2000, 2, 29), (2004, 2, 29), Some(4));
        check((1920, 1, 1), (2025, 1, 1), Some(105));
    }

    #[test]
    fn birth_day_ranges_for_ages() {
        let today = day(2024, 2, 29);
        type Civil = (i64, u32, u32);
        let check = |min: Option<u32>, max: Option<u32>, expected: Option<(Civil, Civil)>| {
            let expected = expected.map(|(a, b)| (day(a.0, a.1, a.2), day(b.0, b.1, b.2)));
            assert_eq!(birth_days_for_ages(min, max, today), expected, "{min:?}..{max:?}");
        };
        check(Some(40), Some(40), Some(((1983, 3, 1), (1984, 2, 29))));
        check(Some(0), Some(0), Some(((2023, 3, 1), (2024, 2, 29))));
        check(Some(1), Some(1), Some(((2022, 3, 1), (2023, 2, 28))));
        check(Some(40), Some(39), None);
        let (first, last) = birth_days_for_ages(None, Some(17), today).unwrap();
        assert_eq!((first, last), (day(2006, 3, 1), today));
        let (first, last) = birth_days_for_ages(Some(18), None, today).unwrap();
        assert_eq!((first, last), (i32::MIN, day(2006, 2, 28)));
        // Ages beyond any representable birth day select nobody rather than overflowing.
        check(Some(u32::MAX), None, None);
        let (first, _) = birth_days_for_ages(None, Some(u32::MAX), today).unwrap();
        assert_eq!(first, i32::MIN);
    }

    proptest! {
        #[test]
        fn day_numbers_round_trip(days in -3_000_000i64..3_000_000) {
            let (year, month, day) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(year, month, day), days);
        }

        #[test]
        fn birth_day_ranges_agree_with_ages(
            min in 0u32..120, width in 0u32..40, today in -20_000i32..30_000, birth in -60_000i32..30_000,
        ) {
            let max = min + width;
            let inside = birth_days_for_ages(Some(min), Some(max), today)
                .is_some_and(|(first, last)| first <= birth && birth <= last);
            let age = age_in_years(birth, today);
            prop_assert_eq!(inside, age.is_some_and(|age| min <= age && age <= max));
        }
    }
}
