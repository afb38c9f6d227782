//! Labels: the attribute information extracted from records, written `system:code`
//! (`icd10:E11.9`, `loinc:4548-4`, `sex:female`).

/// A validated label. The system is lower-case ASCII letters, digits, `-` or `_`; the code is
/// non-empty and holds no whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLabel {
    #[error("a label is written system:code")]
    MissingColon,
    #[error("the label system must be lower-case letters, digits, '-' or '_'")]
    BadSystem,
    #[error("the label code must be non-empty and hold no spaces or control characters")]
    BadCode,
    #[error("a label is at most 200 characters")]
    TooLong,
}

impl Label {
    pub fn parse(raw: &str) -> Result<Self, InvalidLabel> {
        if raw.len() > 200 {
            return Err(InvalidLabel::TooLong);
        }
        let (system, code) = raw.split_once(':').ok_or(InvalidLabel::MissingColon)?;
        let system_ok = !system.is_empty()
            && system.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !system_ok {
            return Err(InvalidLabel::BadSystem);
        }
        if code.is_empty() || code.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidLabel::BadCode);
        }
        Ok(Self(raw.to_owned()))
    }

    /// Builds `system:code`, validating both halves.
    pub fn new(system: &str, code: &str) -> Result<Self, InvalidLabel> {
        Self::parse(&format!("{system}:{code}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn system(&self) -> &str {
        self.0.split_once(':').map_or("", |(s, _)| s)
    }

    pub fn code(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, c)| c)
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Result<(&str, &str), InvalidLabel>) {
        let got = Label::parse(raw).map(|l| (l.system().to_owned(), l.code().to_owned()));
        let expected = expected.map(|(s, c)| (s.to_owned(), c.to_owned()));
        assert_eq!(got, expected, "{raw}");
    }

    #[test]
    fn labels_parse() {
        check("icd10:E11.9", Ok(("icd10", "E11.9")));
        check("institution:org_1:x", Ok(("institution", "org_1:x")));
        check("ageband:40-44", Ok(("ageband", "40-44")));
        check("E11", Err(InvalidLabel::MissingColon));
        check("ICD10:E11", Err(InvalidLabel::BadSystem));
        check(":E11", Err(InvalidLabel::BadSystem));
        check("icd10:", Err(InvalidLabel::BadCode));
        check("icd10:E 11", Err(InvalidLabel::BadCode));
    }
}
