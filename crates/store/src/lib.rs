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
mod error;
mod migrate;
pub mod postgres;
mod pull;
mod query;
mod rows;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use tributary_core::store::Store;

pub use error::StoreError;
pub use postgres::{PgOptions, PgStore};
pub use sqlite::SqliteStore;

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens (creating and migrating as needed) the database at `url`.
pub async fn open(url: &str) -> tributary_core::Result<Arc<dyn Store>> {
    if is_postgres_url(url) {
        Ok(Arc::new(PgStore::open(url, PgOptions::default()).await?))
    } else {
        Ok(Arc::new(SqliteStore::open(url).await?))
    }
}
