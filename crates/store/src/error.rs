//! The store's error, and how it becomes a domain error.

use tributary_core::error::ResourceKind;
use tributary_core::Error;

/// Everything that can go wrong inside this crate.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A domain answer decided by the store (not found, permission denied, sweep refused, ...).
    #[error(transparent)]
    Domain(#[from] Error),
    /// The database said no, or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration script failed.
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
    /// A stored value the domain cannot read back (an unknown enum text, bad JSON).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Encoding an item list or a batch parameter failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// Runs a store operation and hands its error to the domain: every `Store` method is a body
/// wrapped in this, so a `StoreError` becomes a `tributary_core::Error` in one place.
pub(crate) async fn run<T>(
    operation: impl std::future::Future<Output = StoreResult<T>>,
) -> tributary_core::Result<T> {
    Ok(operation.await?)
}

/// Whether the database error means "try again later": unreachable database, exhausted pool,
/// or (PostgreSQL) a serialization failure / deadlock / a statement cancelled on request, or
/// (SQLite) a busy/locked database.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            is_cancelled_on_request(code.as_deref(), db.message())
                || matches!(
                    code.as_deref(),
                    // PostgreSQL: serialization_failure, deadlock_detected, admin/crash shutdown,
                    // cannot_connect_now, too_many_connections.
                    Some("40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300")
                    // SQLite: SQLITE_BUSY, SQLITE_LOCKED (and their extended codes).
                    | Some("5" | "6" | "261" | "517" | "262")
                )
        }
        _ => false,
    }
}

/// PostgreSQL `query_canceled` (statement_timeout) or SQLite `SQLITE_INTERRUPT` (the progress
/// handler of a bounded read).
fn is_timeout(code: Option<&str>) -> bool {
    matches!(code, Some("57014" | "9"))
}

/// PostgreSQL `query_canceled` by a request (`pg_cancel_backend`, an operator's tool), not by a
/// timeout: the statement's transaction is rolled back and the call can be made again, where a
/// timed-out listing would only time out again. PostgreSQL tells the two apart only in its
/// message, which `lc_messages` may translate: the English text is recognised, anything else
/// stays a timeout.
fn is_cancelled_on_request(code: Option<&str>, message: &str) -> bool {
    code == Some("57014") && message.contains("user request")
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Domain(e) => e,
            StoreError::Database(e) if is_transient(&e) => Error::Unavailable(e.to_string()),
            // PostgreSQL refused a `$regex` pattern that the domain's (Rust) check accepted.
            StoreError::Database(sqlx::Error::Database(db))
                if db.code().as_deref() == Some("2201B") =>
            {
                Error::invalid(
                    "filter",
                    format!(
                        "the database refused the regular expression: {}",
                        db.message()
                    ),
                )
            }
            StoreError::Database(sqlx::Error::Database(db)) if is_timeout(db.code().as_deref()) => {
                Error::ResourceExhausted {
                    subject: "query".into(),
                    description: "the statement ran longer than the server's query timeout \
                                  (database.query_timeout_secs, for listings) or the \
                                  database's statement_timeout; narrow a listing's filter or \
                                  use indexed fields"
                        .into(),
                }
            }
            // Text the database cannot hold (NUL): the domain refuses it up front, field by
            // field; this is the net under any field a check missed.
            StoreError::Database(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("22021" | "22P05")) =>
            {
                Error::invalid(
                    "request",
                    format!("holds text the database cannot store: {}", db.message()),
                )
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

/// Maps a unique violation raised by creating `id` of `kind` to `AlreadyExists`.
pub(crate) fn unique_to_exists(
    kind: ResourceKind,
    id: &str,
) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |error| match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => Error::AlreadyExists {
            kind,
            id: id.to_owned(),
        }
        .into(),
        _ => error.into(),
    }
}

/// The answer to a batch or close that names no open session of the calling connector.
pub(crate) fn session_denied(session_id: &str) -> StoreError {
    Error::PermissionDenied(format!(
        "session {session_id} is not an open session of this connector"
    ))
    .into()
}

/// The refusal of a replace commit whose sweep exceeds the connector's removal guard.
pub(crate) fn sweep_refused(would_delete: u64, total: u64, limit: f64) -> StoreError {
    let percent = if total == 0 {
        0.0
    } else {
        would_delete as f64 * 100.0 / total as f64
    };
    Error::FailedPrecondition {
        reason: "SWEEP_REFUSED",
        message: format!(
            "replace commit would delete {would_delete} of {total} records ({percent:.1}%), above the connector's \
             limit of {limit}%; retry with force = true or close with commit = false"
        ),
        metadata: vec![
            ("would_delete".to_owned(), would_delete.to_string()),
            ("total".to_owned(), total.to_string()),
            ("limit_percent".to_owned(), limit.to_string()),
        ],
    }
    .into()
}

/// The refusal to delete an entity type that still has records or connectors.
pub(crate) fn entity_type_in_use(slug: &str, records: u64, connectors: u64) -> StoreError {
    Error::FailedPrecondition {
        reason: "ENTITY_TYPE_HAS_RECORDS",
        message: format!(
            "entity type {slug:?} has {records} records and {connectors} connectors; delete with force = true \
             to remove them too"
        ),
        metadata: vec![
            ("records".to_owned(), records.to_string()),
            ("connectors".to_owned(), connectors.to_string()),
        ],
    }
    .into()
}
