//! RFC 3339 on the wire, milliseconds inside.

use kura_core::time::Timestamp;

use crate::error::ApiError;

pub fn format(t: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.as_millis())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| t.as_millis().to_string())
}

pub fn parse(field: &'static str, raw: &str) -> Result<Timestamp, ApiError> {
    raw.parse::<jiff::Timestamp>()
        .map(|t| Timestamp::from_millis(t.as_millisecond()))
        .map_err(|_| ApiError::invalid(format!("{field} must be an RFC 3339 time such as 2026-01-31T12:00:00Z")))
}
