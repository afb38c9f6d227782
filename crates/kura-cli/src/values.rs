//! Parsing of command-line values into the API's wire values: categories, grant actions,
//! agent powers, anonymization levels and times. Errors name the values that are allowed.

use anyhow::{Result, bail};
use kura_api_types as api;
use serde::de::DeserializeOwned;

pub const CATEGORIES: &[&str] = &[
    "certificate",
    "image",
    "medication",
    "observation",
    "condition",
    "procedure",
    "document",
    "patient_entered",
    "other",
];
pub const ACTIONS: &[&str] = &["view", "copy", "move", "delete", "statistics"];
pub const POWERS: &[&str] = &["view", "copy", "move", "delete", "statistics", "manage_grants"];
pub const ANONYMIZATIONS: &[&str] = &["none", "pseudonymized", "anonymized"];

/// One wire name (`patient_entered`, `manage_grants`; `-` may stand for `_`) as a wire value.
fn wire_value<T: DeserializeOwned>(raw: &str, what: &str, allowed: &[&str]) -> Result<T, String> {
    let name = raw.trim().to_ascii_lowercase().replace('-', "_");
    serde_json::from_value(serde_json::Value::String(name))
        .map_err(|_| format!("'{raw}' is not a {what}; use one of: {}", allowed.join(", ")))
}

pub fn category(raw: &str) -> Result<api::Category, String> {
    wire_value(raw, "category", CATEGORIES)
}

pub fn grant_action(raw: &str) -> Result<api::GrantAction, String> {
    wire_value(raw, "grant action", ACTIONS)
}

pub fn power(raw: &str) -> Result<api::Power, String> {
    wire_value(raw, "power", POWERS)
}

pub fn anonymization(raw: &str) -> Result<api::Anonymization, String> {
    wire_value(raw, "anonymization level", ANONYMIZATIONS)
}

/// An RFC 3339 time, checked here so that a typo fails before anything is sent; normalised
/// to UTC.
pub fn rfc3339(raw: &str) -> Result<String, String> {
    raw.trim()
        .parse::<jiff::Timestamp>()
        .map(|t| t.to_string())
        .map_err(|_| format!("'{raw}' is not an RFC 3339 time such as 2026-01-31T12:00:00Z"))
}

/// The end of a period of `days` days from `now`, as RFC 3339.
pub fn days_from(now: jiff::Timestamp, days: u32) -> Result<String> {
    if days == 0 {
        bail!("--days must be at least 1");
    }
    let end = now.checked_add(jiff::SignedDuration::from_hours(24 * i64::from(days)))?;
    Ok(end.to_string())
}

/// `--days N` or `--expires-at T` (clap keeps them apart) as the wire `expires_at`.
pub fn expiry(days: Option<u32>, expires_at: Option<String>) -> Result<Option<String>> {
    match (days, expires_at) {
        (Some(days), _) => days_from(jiff::Timestamp::now(), days).map(Some),
        (None, at) => Ok(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_parse_from_their_wire_names() {
        let check = |raw: &str, expected: Option<api::Category>| {
            assert_eq!(category(raw).ok(), expected, "{raw}");
        };
        check("image", Some(api::Category::Image));
        check("Certificate", Some(api::Category::Certificate));
        check(" condition ", Some(api::Category::Condition));
        check("patient_entered", Some(api::Category::PatientEntered));
        check("patient-entered", Some(api::Category::PatientEntered));
        check("images", None);
        check("", None);
        let message = category("xray").unwrap_err();
        assert!(message.contains("'xray' is not a category") && message.contains("image"), "{message}");
        for name in CATEGORIES {
            assert!(category(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn actions_powers_and_levels_parse() {
        assert_eq!(grant_action("copy"), Ok(api::GrantAction::Copy));
        assert!(grant_action("manage_grants").is_err());
        assert_eq!(power("manage_grants"), Ok(api::Power::ManageGrants));
        assert_eq!(power("manage-grants"), Ok(api::Power::ManageGrants));
        assert_eq!(anonymization("pseudonymized"), Ok(api::Anonymization::Pseudonymized));
        assert!(anonymization("partial").is_err());
        for name in ACTIONS {
            assert!(grant_action(name).is_ok(), "{name}");
        }
        for name in POWERS {
            assert!(power(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn times_are_checked_and_periods_computed() {
        assert_eq!(rfc3339("2026-01-31T12:00:00Z").as_deref(), Ok("2026-01-31T12:00:00Z"));
        assert_eq!(rfc3339("2026-01-31T21:00:00+09:00").as_deref(), Ok("2026-01-31T12:00:00Z"));
        assert!(rfc3339("2026-01-31").is_err());
        assert!(rfc3339("tomorrow").is_err());
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(days_from(now, 30).unwrap(), "2026-01-31T00:00:00Z");
        assert!(days_from(now, 0).is_err());
        assert_eq!(expiry(None, Some("2026-01-31T12:00:00Z".into())).unwrap().as_deref(), Some("2026-01-31T12:00:00Z"));
        assert_eq!(expiry(None, None).unwrap(), None);
    }
}
