//! Label vocabulary helpers: coding systems, hierarchical codes, age bands.

use std::collections::BTreeSet;

use kura_core::labels::Label;

/// Collects labels, skipping values that do not make valid labels (a code with a space, say):
/// such a value is not searchable, but it is no reason to refuse the upload.
#[derive(Default)]
pub struct LabelSet(BTreeSet<Label>);

impl LabelSet {
    pub fn add(&mut self, system: &str, code: &str) {
        if let Ok(label) = Label::new(system, code) {
            self.0.insert(label);
        }
    }

    pub fn into_sorted(self) -> Vec<Label> {
        self.0.into_iter().collect()
    }

    /// A coding, by its system URL. ICD-10 codes are indexed at every level (`E11.65` also as
    /// `E11.6` and `E11`).
    pub fn add_coding(&mut self, system_url: &str, code: &str) {
        let Some(system) = system_for_url(system_url) else { return };
        let code = code.trim();
        self.add(system, code);
        if system == "icd10"
            && let Some((head, tail)) = code.split_once('.')
        {
            self.add(system, head);
            for end in 1..tail.len() {
                if let Some(prefix) = tail.get(..end) {
                    self.add(system, &format!("{head}.{prefix}"));
                }
            }
        }
    }
}

/// Label systems of the coding systems Kura indexes.
pub fn system_for_url(url: &str) -> Option<&'static str> {
    match url.trim_end_matches('/') {
        "http://snomed.info/sct" => Some("snomed"),
        "http://loinc.org" => Some("loinc"),
        "http://www.nlm.nih.gov/research/umls/rxnorm" => Some("rxnorm"),
        "http://hl7.org/fhir/sid/icd-10" | "http://hl7.org/fhir/sid/icd-10-cm" => Some("icd10"),
        "http://hl7.org/fhir/sid/cvx" => Some("cvx"),
        "http://www.whocc.no/atc" => Some("atc"),
        _ => None,
    }
}

/// A calendar date, from the leading `YYYY-MM-DD` (or `YYYYMMDD`) of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    pub fn parse(raw: &str) -> Option<Self> {
        let digits: String = raw.chars().take(10).filter(|c| c.is_ascii_digit()).collect();
        let year = digits.get(0..4)?.parse().ok()?;
        let month = digits.get(4..6).and_then(|m| m.parse().ok()).unwrap_or(1);
        let day = digits.get(6..8).and_then(|d| d.parse().ok()).unwrap_or(1);
        ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(Self { year, month, day })
    }

    /// The civil date of a Unix-millisecond instant.
    pub fn from_millis(millis: i64) -> Self {
        let days = millis.div_euclid(86_400_000);
        // Howard Hinnant's civil-from-days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Self { year, month, day }
    }

    /// Whole years from `self` (a birth date) to `at`.
    pub fn age_at(&self, at: Date) -> Option<u32> {
        let mut years = at.year - self.year;
        if (at.month, at.day) < (self.month, self.day) {
            years -= 1;
        }
        u32::try_from(years).ok()
    }
}

/// The five-year band of an age: `0-4`, `40-44`, and `90+` from ninety.
pub fn age_band(age: u32) -> String {
    if age >= 90 {
        "90+".to_owned()
    } else {
        let low = age / 5 * 5;
        format!("{low}-{}", low + 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icd10_codes_are_indexed_at_every_level() {
        let mut set = LabelSet::default();
        set.add_coding("http://hl7.org/fhir/sid/icd-10-cm", "E11.65");
        let got: Vec<String> = set.into_sorted().iter().map(|l| l.to_string()).collect();
        assert_eq!(got, ["icd10:E11", "icd10:E11.6", "icd10:E11.65"]);
    }

    #[test]
    fn unknown_systems_and_bad_codes_are_skipped() {
        let mut set = LabelSet::default();
        set.add_coding("http://example.org/local", "X1");
        set.add_coding("http://snomed.info/sct", "has space");
        assert!(set.into_sorted().is_empty());
    }

    #[test]
    fn ages_and_bands() {
        let check = |birth: &str, at: &str, band: &str| {
            let age = Date::parse(birth).unwrap().age_at(Date::parse(at).unwrap()).unwrap();
            assert_eq!(age_band(age), band, "{birth} at {at}");
        };
        check("1969-12-06", "2010-12-05", "40-44");
        check("1969-12-06", "2014-12-06", "45-49");
        check("2016-06-26", "2019-01-01", "0-4");
        check("1910-09-19", "2020-01-01", "90+");
        check("19800101", "2020-01-01", "40-44");
        assert_eq!(Date::from_millis(0), Date { year: 1970, month: 1, day: 1 });
        assert_eq!(Date::from_millis(1_764_000_000_000), Date { year: 2025, month: 11, day: 24 });
        assert_eq!(Date::parse("not a date"), None);
    }
}
