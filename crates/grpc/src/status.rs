//! The one place a domain [`Error`] becomes a gRPC [`Status`] (SPEC.md §8).
//!
//! Every status message says what was wrong on its own, so a `grpcurl` user sees it without
//! decoding the rich details; the details (`BadRequest`, `ResourceInfo`, `ErrorInfo`,
//! `QuotaFailure`) are for programs.

use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};
use tributary_core::Error;

/// The `ErrorInfo.domain` of every Tributary error.
pub const ERROR_DOMAIN: &str = "tributary";

/// The start of tonic's message for a request message above the decoding limit (OUT_OF_RANGE).
const TOO_LARGE: &str = "Error, decoded message length too large";

/// A status tonic produced while reading a request, as SPEC.md §8 wants it: a message above the
/// size limit is `RESOURCE_EXHAUSTED` with a `QuotaFailure` (tonic says `OUT_OF_RANGE`); any
/// other status is returned unchanged.
pub fn request_status(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().starts_with(TOO_LARGE) {
        let detail = status.message().trim_start_matches("Error, ").to_owned();
        Status::with_error_details(
            Code::ResourceExhausted,
            format!("the request message is too large: {detail}"),
            ErrorDetails::with_quota_failure_violation("request", detail),
        )
    } else {
        status
    }
}

/// A status travels in HTTP/2 headers, which peers cap (16 KiB is common); what a client sent
/// may be echoed in it, so messages and details are clipped and the violations listed in the
/// details are capped (a stream batch's ack carries all of them in its body).
const MAX_MESSAGE_BYTES: usize = 1024;
const MAX_DETAIL_BYTES: usize = 256;
const MAX_DETAILED_VIOLATIONS: usize = 20;

/// `text`, cut to at most `max` bytes at a character boundary, with `…` when cut.
fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max.saturating_sub(3);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Maps a domain error to its gRPC status with rich error details.
pub fn to_status(err: Error) -> Status {
    // The message is rendered first: it is the Display of the domain error, which already
    // summarises violations and names resources.
    let message = clip(err.to_string(), MAX_MESSAGE_BYTES);
    match err {
        Error::InvalidArgument(violations) => {
            let more = violations.len().saturating_sub(MAX_DETAILED_VIOLATIONS);
            let mut violations: Vec<FieldViolation> = violations
                .into_iter()
                .take(MAX_DETAILED_VIOLATIONS)
                .map(|v| {
                    FieldViolation::new(
                        clip(v.field, MAX_DETAIL_BYTES),
                        clip(v.description, MAX_DETAIL_BYTES),
                    )
                })
                .collect();
            if more > 0 {
                violations.push(FieldViolation::new(
                    "request",
                    format!("and {more} more violations"),
                ));
            }
            Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(violations),
            )
        }
        Error::Unauthenticated => Status::unauthenticated(message),
        Error::PermissionDenied(_) => Status::permission_denied(message),
        Error::NotFound { kind, id } => Status::with_error_details(
            Code::NotFound,
            message,
            ErrorDetails::with_resource_info(
                kind.as_str(),
                clip(id, MAX_DETAIL_BYTES),
                "",
                "not found",
            ),
        ),
        Error::AlreadyExists { kind, id } => Status::with_error_details(
            Code::AlreadyExists,
            message,
            ErrorDetails::with_resource_info(
                kind.as_str(),
                clip(id, MAX_DETAIL_BYTES),
                "",
                "already exists",
            ),
        ),
        Error::FailedPrecondition {
            reason, metadata, ..
        } => {
            let metadata: HashMap<String, String> = metadata.into_iter().collect();
            Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
            )
        }
        Error::ResourceExhausted {
            subject,
            description,
        } => Status::with_error_details(
            Code::ResourceExhausted,
            message,
            ErrorDetails::with_quota_failure_violation(subject, description),
        ),
        Error::RateLimited {
            connector,
            rate,
            retry_after,
        } => {
            let mut details = ErrorDetails::with_quota_failure_violation(
                format!("connector:{connector}"),
                format!("rate_limit is {rate} records per second"),
            );
            details.set_retry_info(Some(retry_after));
            Status::with_error_details(Code::ResourceExhausted, message, details)
        }
        Error::OutOfRange(_) => Status::out_of_range(message),
        Error::Unavailable(detail) => {
            tracing::warn!(%detail, "store unavailable");
            Status::unavailable(message)
        }
        Error::Internal(detail) => {
            // The detail may name server internals; clients get a generic message.
            tracing::error!(%detail, "internal error");
            Status::internal("internal error; the server log has the details")
        }
    }
}

/// Runs an RPC handler body inside `span` and logs how it ended there.
pub async fn traced<T>(
    span: tracing::Span,
    body: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    use tracing::Instrument;
    async move { log_outcome(body.await) }
        .instrument(span)
        .await
}

/// Logs how an RPC ended, inside its span: failures a client caused at `info`, server-side
/// failures at `warn`, successes at `debug`. Returns the result unchanged.
pub fn log_outcome<T>(result: Result<T, Status>) -> Result<T, Status> {
    match &result {
        Ok(_) => tracing::debug!("ok"),
        Err(status) => match status.code() {
            Code::Internal | Code::Unavailable | Code::Unknown => {
                tracing::warn!(code = ?status.code(), message = status.message(), "failed")
            }
            code => tracing::info!(?code, message = status.message(), "refused"),
        },
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::error::ResourceKind;
    use tributary_core::Violation;

    #[test]
    fn invalid_argument_carries_one_bad_request_violation_per_problem() {
        let status = to_status(Error::InvalidArgument(vec![
            Violation::new("records[0].name", "name is required"),
            Violation::new("records[3].entity.population", "must be an integer"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("records[3].entity.population"),
            "{}",
            status.message()
        );
        let details = status.get_error_details();
        let bad_request = details.bad_request().expect("BadRequest details");
        assert_eq!(bad_request.field_violations.len(), 2);
        assert_eq!(
            bad_request.field_violations[1].field,
            "records[3].entity.population"
        );
        assert_eq!(
            bad_request.field_violations[1].description,
            "must be an integer"
        );
    }

    #[test]
    fn not_found_carries_resource_info() {
        let status = to_status(Error::not_found(ResourceKind::EntityType, "country"));
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("country"));
        let details = status.get_error_details();
        let info = details.resource_info().expect("ResourceInfo details");
        assert_eq!(info.resource_type, "entity_type");
        assert_eq!(info.resource_name, "country");
    }

    #[test]
    fn failed_precondition_carries_error_info_reason() {
        let status = to_status(Error::FailedPrecondition {
            reason: "SWEEP_REFUSED",
            message: "the sweep would delete 60 of 100 records".into(),
            metadata: vec![("would_delete".into(), "60".into())],
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("60 of 100"));
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo details");
        assert_eq!(info.reason, "SWEEP_REFUSED");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata.get("would_delete").map(String::as_str),
            Some("60")
        );
    }

    #[test]
    fn resource_exhausted_carries_quota_failure() {
        let status = to_status(Error::ResourceExhausted {
            subject: "records".into(),
            description: "too many".into(),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        let quota = details.quota_failure().expect("QuotaFailure details");
        assert_eq!(quota.violations[0].subject, "records");
    }

    #[test]
    fn rate_limited_carries_quota_failure_and_retry_info() {
        let status = to_status(Error::RateLimited {
            connector: "c1".into(),
            rate: 5,
            retry_after: std::time::Duration::from_millis(200),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("rate limit of 5"),
            "{}",
            status.message()
        );
        let details = status.get_error_details();
        let quota = details.quota_failure().expect("QuotaFailure details");
        assert_eq!(quota.violations[0].subject, "connector:c1");
        let retry = details.retry_info().expect("RetryInfo details");
        assert_eq!(
            retry.retry_delay,
            Some(std::time::Duration::from_millis(200))
        );
    }

    #[test]
    fn internal_hides_the_detail() {
        let status = to_status(Error::Internal(
            "connection string postgres://secret".into(),
        ));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn simple_codes() {
        assert_eq!(
            to_status(Error::Unauthenticated).code(),
            Code::Unauthenticated
        );
        assert_eq!(
            to_status(Error::PermissionDenied("no".into())).code(),
            Code::PermissionDenied
        );
        assert_eq!(
            to_status(Error::OutOfRange("pruned".into())).code(),
            Code::OutOfRange
        );
        assert_eq!(
            to_status(Error::Unavailable("db down".into())).code(),
            Code::Unavailable
        );
        let exists = to_status(Error::AlreadyExists {
            kind: ResourceKind::EntityType,
            id: "x".into(),
        });
        assert_eq!(exists.code(), Code::AlreadyExists);
    }
}
