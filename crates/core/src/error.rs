//! The domain error: what went wrong, in terms a client can act on.
//!
//! Services map it to a gRPC status in exactly one place (`tributary-grpc::status`).

/// One problem with a request: the field (e.g. `records[3].entity.population`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending field, in `records[3].entity.population` form.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// The kinds of thing a `NotFound` or `AlreadyExists` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    EntityType,
    Connector,
    Consumer,
    Record,
    Session,
    ImportResult,
    Source,
    Export,
}

impl ResourceKind {
    /// The resource type name used in error details.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EntityType => "entity_type",
            Self::Connector => "connector",
            Self::Consumer => "consumer",
            Self::Record => "record",
            Self::Session => "session",
            Self::ImportResult => "import_result",
            Self::Source => "source",
            Self::Export => "export",
        }
    }
}

/// Every way a domain operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request (records, schema, filter, argument) is invalid; nothing was applied.
    #[error("invalid argument: {}", summarize(.0))]
    InvalidArgument(Vec<Violation>),
    /// No token, or a token that matches nothing.
    #[error("missing or invalid token")]
    Unauthenticated,
    /// The caller is known but may not do this (foreign, closed or superseded session, ungranted type).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The named resource does not exist.
    #[error("{} {id:?} not found", .kind.as_str())]
    NotFound { kind: ResourceKind, id: String },
    /// The named resource exists already.
    #[error("{} {id:?} already exists", .kind.as_str())]
    AlreadyExists { kind: ResourceKind, id: String },
    /// The operation is refused in the current state; `reason` is a stable machine-readable code.
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
        metadata: Vec<(String, String)>,
    },
    /// A limit was exceeded (batch size, record size, rate).
    #[error("{subject}: {description}")]
    ResourceExhausted {
        subject: String,
        description: String,
    },
    /// The connector is over its `rate_limit`; nothing of the call was applied. Retrying after
    /// `retry_after` can succeed.
    #[error("connector {connector:?} is over its rate limit of {rate} records per second; retry in {:.3} s", .retry_after.as_secs_f64())]
    RateLimited {
        connector: String,
        rate: u32,
        retry_after: std::time::Duration,
    },
    /// A position (e.g. a change-log sequence to resume after) is no longer available.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// The database could not be reached or the transaction could not complete; retryable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or a broken invariant on the server side.
    #[error("internal error: {0}")]
    Internal(String),
}

fn summarize(violations: &[Violation]) -> String {
    let mut text = String::new();
    for (i, v) in violations.iter().take(5).enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        text.push_str(&v.field);
        text.push_str(": ");
        text.push_str(&v.description);
    }
    if violations.len() > 5 {
        text.push_str(&format!("; and {} more", violations.len() - 5));
    }
    text
}

impl Error {
    /// A single-violation `InvalidArgument`.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![Violation::new(field, description)])
    }

    /// `NotFound` for a resource of `kind` named `id`.
    pub fn not_found(kind: ResourceKind, id: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// Whether retrying the same request later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// `error` and its causes, `: `-separated: a top-level message ("error sending request",
/// "transport error") leaves out what an operator needs (connection refused, an invalid
/// certificate, ...).
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let message = c.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = c.source();
    }
    text
}

/// Result with the domain error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
