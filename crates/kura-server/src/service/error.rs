//! What a workflow can fail with, in its own terms. Handlers turn it into the error envelope
//! through `From<ServiceError> for ApiError`, the only place that gives it an HTTP status;
//! background jobs log it. Messages are for the user and never quote content.

use kura_store::StoreError;

use crate::error::ApiError;

/// Why a coded refusal refused (see [`ServiceError::Refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request clashes with the state it found.
    Conflict,
    /// The request cannot be done as asked.
    Invalid,
    /// The request is larger than the server takes.
    TooLarge,
    /// The caller may not do this now (their organisation's research is suspended).
    Forbidden,
    /// The caller asked for this too often.
    TooMany,
    /// What was asked for existed and has ended.
    Gone,
}

#[derive(Debug)]
pub enum ServiceError {
    /// The thing (`"record"`, `"move"`, …) does not exist, or the caller may not know it does.
    NotFound(&'static str),
    Forbidden(String),
    Conflict(String),
    Invalid(String),
    BadRequest(String),
    /// A refusal with a code of its own that clients act on (`not_linked`, `peer_refused`, …).
    Refused {
        why: Refusal,
        code: &'static str,
        message: String,
    },
    /// Another server (an external provider, a peer) failed or answered wrongly.
    Upstream {
        code: &'static str,
        message: String,
    },
    /// The server is at a limit it sets on itself; the same request later is fine.
    Busy {
        message: String,
        retry_after_secs: u64,
    },
    /// Our failure; what went wrong was logged where it happened.
    Internal,
    Store(StoreError),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Store(e)
    }
}

impl ServiceError {
    /// The conflict a store reports, with a sentence of the workflow's after it.
    pub fn store_conflict(e: StoreError, then: &str) -> Self {
        match e {
            StoreError::Conflict(why) => ServiceError::Conflict(format!("{why}{then}")),
            other => other.into(),
        }
    }
}

const INTERNAL: &str = "the server failed; the failure is logged";

impl std::fmt::Display for ServiceError {
    /// The user's message, the same as the error envelope would carry (the offline bootstrap
    /// prints it; background jobs log it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::NotFound(what) => write!(f, "{what} not found"),
            ServiceError::Forbidden(message)
            | ServiceError::Conflict(message)
            | ServiceError::Invalid(message)
            | ServiceError::BadRequest(message)
            | ServiceError::Refused { message, .. }
            | ServiceError::Upstream { message, .. }
            | ServiceError::Busy { message, .. } => f.write_str(message),
            ServiceError::Internal => f.write_str(INTERNAL),
            ServiceError::Store(StoreError::NotFound) => f.write_str("resource not found"),
            ServiceError::Store(StoreError::Conflict(why)) => f.write_str(why),
            ServiceError::Store(StoreError::Invalid(what)) => write!(f, "invalid {what}"),
            ServiceError::Store(StoreError::Corrupt(_) | StoreError::Backend(_)) => f.write_str(INTERNAL),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        use axum::http::StatusCode;
        match e {
            ServiceError::NotFound(what) => ApiError::not_found(what),
            ServiceError::Forbidden(message) => ApiError::forbidden(message),
            ServiceError::Conflict(message) => ApiError::conflict(message),
            ServiceError::Invalid(message) => ApiError::invalid(message),
            ServiceError::BadRequest(message) => ApiError::bad_request(message),
            ServiceError::Refused { why, code, message } => {
                let status = match why {
                    Refusal::Conflict => StatusCode::CONFLICT,
                    Refusal::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                    Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                    Refusal::Forbidden => StatusCode::FORBIDDEN,
                    Refusal::TooMany => StatusCode::TOO_MANY_REQUESTS,
                    Refusal::Gone => StatusCode::GONE,
                };
                ApiError::new(status, code, message)
            }
            ServiceError::Upstream { code, message } => ApiError::new(StatusCode::BAD_GATEWAY, code, message),
            ServiceError::Busy { message, retry_after_secs } => ApiError::busy(message, retry_after_secs),
            ServiceError::Internal => ApiError::internal(),
            ServiceError::Store(e) => e.into(),
        }
    }
}
