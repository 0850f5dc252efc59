//! Human-readable rendering of a gRPC status with its rich error details (SPEC.md §8), for
//! command lines and logs: the code, the message, and every `BadRequest` violation,
//! `ErrorInfo`, `ResourceInfo` and `QuotaFailure` the server attached.

use std::fmt::Write as _;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The canonical upper-case name of a status code (`INVALID_ARGUMENT`), as gRPC documents it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `CODE: message`, then one indented line per detail:
///
/// ```text
/// INVALID_ARGUMENT: 1 invalid record
///   records[1].entity.population (id "FR"): "many" is not of type "integer"
/// ```
pub fn describe(status: &Status) -> String {
    let mut out = format!("{}: {}", code_name(status.code()), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            let _ = write!(out, "\n  {}: {}", v.field, v.description);
        }
    }
    if let Some(info) = status.get_details_error_info() {
        let mut metadata: Vec<_> = info.metadata.into_iter().collect();
        metadata.sort();
        let metadata: Vec<String> = metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(out, "\n  reason: {}", info.reason);
        if !metadata.is_empty() {
            let _ = write!(out, " ({})", metadata.join(", "));
        }
    }
    if let Some(resource) = status
        .get_details_resource_info()
        // Usually the message already names the resource; say it once.
        .filter(|r| !status.message().contains(&r.resource_name))
    {
        let _ = write!(
            out,
            "\n  {} {:?}: {}",
            resource.resource_type, resource.resource_name, resource.description
        );
    }
    if let Some(quota) = status.get_details_quota_failure() {
        for v in quota.violations {
            let _ = write!(out, "\n  quota {}: {}", v.subject, v.description);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, FieldViolation};

    #[test]
    fn violations_are_listed_under_the_message() {
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "1 invalid record",
            ErrorDetails::with_bad_request(vec![FieldViolation::new(
                "records[1].entity.population (id \"FR\")",
                "\"many\" is not of type \"integer\"",
            )]),
        );
        assert_eq!(
            describe(&status),
            "INVALID_ARGUMENT: 1 invalid record\n  records[1].entity.population (id \"FR\"): \"many\" is not of type \"integer\""
        );
        assert_eq!(
            describe(&Status::not_found("no such type")),
            "NOT_FOUND: no such type"
        );
    }
}
