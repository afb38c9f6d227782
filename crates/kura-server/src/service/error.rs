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

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    /// Each error answers the status, code and message the handlers answered before services
    /// existed, and its `Display` is that message.
    #[test]
    fn each_error_becomes_the_envelope_handlers_answered() {
        let check = |error: ServiceError, status: StatusCode, code: &str, message: &str| {
            assert_eq!(error.to_string(), message);
            let api = ApiError::from(error);
            assert_eq!(api.status(), status, "{message}");
            let envelope = api.envelope();
            assert_eq!((envelope.error.code.as_str(), envelope.error.message.as_str()), (code, message));
        };
        check(ServiceError::NotFound("record"), StatusCode::NOT_FOUND, "not_found", "record not found");
        check(ServiceError::Forbidden("no".into()), StatusCode::FORBIDDEN, "forbidden", "no");
        check(ServiceError::Conflict("taken".into()), StatusCode::CONFLICT, "conflict", "taken");
        check(ServiceError::Invalid("bad".into()), StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", "bad");
        check(ServiceError::BadRequest("what".into()), StatusCode::BAD_REQUEST, "bad_request", "what");
        let refused = |why, code| ServiceError::Refused { why, code, message: "m".into() };
        check(refused(Refusal::Conflict, "not_linked"), StatusCode::CONFLICT, "not_linked", "m");
        check(refused(Refusal::Invalid, "peer_refused"), StatusCode::UNPROCESSABLE_ENTITY, "peer_refused", "m");
        check(refused(Refusal::TooLarge, "archive_too_large"), StatusCode::PAYLOAD_TOO_LARGE, "archive_too_large", "m");
        check(refused(Refusal::Forbidden, "research_suspended"), StatusCode::FORBIDDEN, "research_suspended", "m");
        check(refused(Refusal::TooMany, "query_limit"), StatusCode::TOO_MANY_REQUESTS, "query_limit", "m");
        check(refused(Refusal::Gone, "sealed_copy_closed"), StatusCode::GONE, "sealed_copy_closed", "m");
        let upstream = ServiceError::Upstream { code: "provider_failed", message: "m".into() };
        check(upstream, StatusCode::BAD_GATEWAY, "provider_failed", "m");
        let busy = ServiceError::Busy { message: "later".into(), retry_after_secs: 5 };
        check(busy, StatusCode::SERVICE_UNAVAILABLE, "busy", "later");
        check(ServiceError::Internal, StatusCode::INTERNAL_SERVER_ERROR, "internal", INTERNAL);
        check(StoreError::NotFound.into(), StatusCode::NOT_FOUND, "not_found", "resource not found");
        check(StoreError::Conflict("gone").into(), StatusCode::CONFLICT, "conflict", "gone");
        check(StoreError::Backend("driver".into()).into(), StatusCode::INTERNAL_SERVER_ERROR, "internal", INTERNAL);
    }

    #[test]
    fn a_store_conflict_gets_the_workflows_sentence() {
        let error = ServiceError::store_conflict(StoreError::Conflict("changed"), "; nothing was moved");
        assert_eq!(error.to_string(), "changed; nothing was moved");
        assert!(matches!(ServiceError::store_conflict(StoreError::NotFound, "; x"), ServiceError::Store(_)));
    }
}
