//! The one error type of the crate.

use crate::pseudonym::MIN_KEY_BYTES;

/// Why content was refused or could not be transformed.
///
/// Messages name positions, field names and limits, never the content they were found in, so
/// they are safe to log and to show to the uploader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The bytes are not valid content of the format they claim.
    #[error("malformed content: {0}")]
    Malformed(String),
    /// The content is valid but uses something Kura does not handle, or the operation cannot be
    /// applied to this format.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A pseudonym key shorter than the minimum: pseudonyms under it could be guessed.
    #[error("a pseudonym key must be at least {MIN_KEY_BYTES} bytes")]
    KeyTooShort,
    /// The institution id given at ingest cannot be written as an `institution:` label.
    #[error("the institution id cannot be used in a label")]
    InvalidInstitution,
}
