//! Finding identifiers in free text without a regex engine: e-mail addresses, URLs, IPv4
//! addresses, and long digit runs (phone, social security, record numbers, dates), plus given
//! strings known to identify the patient.

/// What kind of identifier a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Email,
    Url,
    IpAddress,
    NumberRun,
    KnownValue,
}

impl Found {
    pub fn as_str(self) -> &'static str {
        match self {
            Found::Email => "e-mail address",
            Found::Url => "URL",
            Found::IpAddress => "IP address",
            Found::NumberRun => "phone, record number or date",
            Found::KnownValue => "a name or identifier of the patient",
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '@' | '/' | ':' | '%' | '?' | '=' | '&' | '#' | '~')
}

fn classify_word(word: &str) -> Option<Found> {
    let trimmed = word.trim_matches(|c: char| matches!(c, '.' | ',' | ':' | ';'));
    let lower = trimmed.to_ascii_lowercase();
    if lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("www.")
        || lower.starts_with("ftp://")
    {
        return Some(Found::Url);
    }
    if let Some((user, domain)) = trimmed.split_once('@')
        && !user.is_empty()
        && domain.contains('.')
    {
        return Some(Found::Email);
    }
    let octets: Vec<&str> = trimmed.split('.').collect();
    if octets.len() == 4
        && octets.iter().all(|o| !o.is_empty() && o.len() <= 3 && o.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(Found::IpAddress);
    }
    None
}

/// Byte ranges of digit runs (digits joined by spaces, dashes, dots, slashes or brackets) with
/// at least `min_digits` digits.
fn number_runs(text: &str, min_digits: usize) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    let mut digits = 0;
    let mut last_digit_end = 0;
    for (i, c) in text.char_indices() {
        if c.is_ascii_digit() {
            start.get_or_insert(i);
            digits += 1;
            last_digit_end = i + 1;
        } else if start.is_some() && matches!(c, ' ' | '-' | '.' | '/' | '(' | ')' | '+') {
            continue;
        } else if let Some(s) = start.take() {
            if digits >= min_digits {
                runs.push((s, last_digit_end));
            }
            digits = 0;
        }
    }
    if let Some(s) = start
        && digits >= min_digits
    {
        runs.push((s, last_digit_end));
    }
    runs
}

/// What identifiers `text` holds, with their byte ranges.
pub fn find(text: &str, known: &[String]) -> Vec<(Found, usize, usize)> {
    let mut found = Vec::new();
    let mut word_start = None;
    for (i, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        if is_word_char(c) && i < text.len() {
            word_start.get_or_insert(i);
        } else if let Some(s) = word_start.take()
            && let Some(kind) = text.get(s..i).and_then(classify_word)
        {
            found.push((kind, s, i));
        }
    }
    found.extend(number_runs(text, 6).into_iter().map(|(s, e)| (Found::NumberRun, s, e)));
    let lower = text.to_lowercase();
    if lower.len() == text.len() {
        for value in known.iter().filter(|v| v.chars().count() >= 2) {
            let needle = value.to_lowercase();
            for (at, _) in lower.match_indices(&needle) {
                let before = lower[..at].chars().next_back();
                let after = lower[at + needle.len()..].chars().next();
                let whole_word =
                    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric);
                if whole_word {
                    found.push((Found::KnownValue, at, at + needle.len()));
                }
            }
        }
    } else if known.iter().any(|v| v.chars().count() >= 2 && text.to_lowercase().contains(&v.to_lowercase())) {
        found.push((Found::KnownValue, 0, text.len()));
    }
    found
}

/// `text` with every finding replaced by `[redacted]`.
pub fn redact(text: &str, known: &[String]) -> String {
    let mut ranges: Vec<(usize, usize)> = find(text, known).into_iter().map(|(_, s, e)| (s, e)).collect();
    if ranges.is_empty() {
        return text.to_owned();
    }
    ranges.sort();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e) in ranges {
        if e <= at {
            continue;
        }
        out.push_str(text.get(at..s.max(at)).unwrap_or(""));
        out.push_str("[redacted]");
        at = e;
    }
    out.push_str(text.get(at..).unwrap_or(""));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, known: &[&str], expected: &str) {
        let known: Vec<String> = known.iter().map(|s| s.to_string()).collect();
        assert_eq!(redact(text, &known), expected, "{text}");
    }

    #[test]
    fn identifiers_in_free_text_are_redacted() {
        check("call 555-123-4567 today", &[], "call [redacted] today");
        check("mail jane.doe@example.org.", &[], "mail [redacted]");
        check("see https://portal.example/p/77 now", &[], "see [redacted] now");
        check("from 192.168.10.4", &[], "from [redacted]");
        check("SSN 999 76 5725", &[], "SSN [redacted]");
        check("seen by Freda O'Connell", &["Freda", "O'Connell"], "seen by [redacted] [redacted]");
        check("Fredagain is not Freda", &["Freda"], "Fredagain is not [redacted]");
        check("blood pressure 120/80 mmHg, 3 tablets", &[], "blood pressure 120/80 mmHg, 3 tablets");
        check("nothing here", &[], "nothing here");
    }
}
