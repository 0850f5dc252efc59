//! Tributary's storage: the [`Store`] traits of `tributary-core` implemented for SQLite (the
//! embedded default) and PostgreSQL. Both backends keep the same schema and the same contract;
//! `tests/conformance/` runs one suite against both.
//!
//! Every statement is written once, in `src/sql/` (one module per area, each implementing one
//! storage trait). Each backend mounts those modules and compiles them against its own concrete
//! types; it supplies only what really differs: how a batch is bound (`json_each` over JSON text
//! or `unnest` of arrays), row-lock clauses, JSON column types, LISTEN/NOTIFY, pool and pragmas
//! (ADR 0001).
//!
//! [`open`] picks the backend from the URL: `postgres://` / `postgresql://` is PostgreSQL, anything
//! else (`sqlite:...` or a plain file path) is SQLite. Migrations run at open.

mod batch;
mod changes;
mod coalesce;
mod error;
mod migrate;
pub mod postgres;
mod pull;
mod query;
mod rows;
pub mod sqlite;
mod test_hooks;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;
use tributary_core::store::Store;

pub use error::StoreError;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// How a store uses its database: connections, how long a call waits for one, and how long a
/// catalog read may run. Every field has a config key (`[database]`, docs/LIMITS.md).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The most connections the PostgreSQL pool opens (SQLite: reader connections, at most 8).
    pub max_connections: u32,
    /// How long a call waits for a connection before answering `Unavailable`: with the
    /// database unreachable, callers learn it within this time.
    pub acquire_timeout: Duration,
    /// The longest a catalog listing may run (PostgreSQL `statement_timeout`, SQLite progress
    /// handler) before it is stopped and answered `ResourceExhausted`.
    pub query_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(10),
        }
    }
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens (creating and migrating as needed) the database at `url`.
pub async fn open(url: &str) -> tributary_core::Result<Arc<dyn Store>> {
    open_with(url, StoreOptions::default()).await
}

/// Opens the database at `url` with `options`.
pub async fn open_with(url: &str, options: StoreOptions) -> tributary_core::Result<Arc<dyn Store>> {
    if is_postgres_url(url) {
        Ok(Arc::new(PgStore::open(url, options).await?))
    } else {
        Ok(Arc::new(SqliteStore::open_with(url, options).await?))
    }
}
