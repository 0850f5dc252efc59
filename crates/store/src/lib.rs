//! Tributary's storage: the [`Store`] trait of `tributary-core` implemented for SQLite (the
//! embedded default) and PostgreSQL. Both backends keep the same schema and the same contract;
//! `tests/conformance.rs` runs one suite against both.
//!
//! [`open`] picks the backend from the URL: `postgres://` / `postgresql://` is PostgreSQL, anything
//! else (`sqlite:...` or a plain file path) is SQLite. Migrations run at open.

mod changes;
mod error;
mod migrate;
pub mod postgres;
mod pull;
mod query;
mod rows;
mod source_delegate;
pub mod sqlite;
mod test_hooks;
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

/// Implements [`Store`] for `$store` by calling the free functions of module `$ops` (a module name in scope), which take
/// `&$store` first and answer `StoreResult`; the only work here is the error conversion.
macro_rules! delegate_store {
    ($store:ty, $ops:ident) => {
        #[async_trait::async_trait]
        impl tributary_core::store::Store for $store {
            async fn create_entity_type(
                &self,
                entity_type: &tributary_core::model::EntityType,
            ) -> tributary_core::Result<()> {
                Ok($ops::create_entity_type(self, entity_type).await?)
            }
            async fn get_entity_type(
                &self,
                slug: &str,
            ) -> tributary_core::Result<tributary_core::model::EntityType> {
                Ok($ops::get_entity_type(self, slug).await?)
            }
            async fn list_entity_types(
                &self,
                after: Option<&str>,
                limit: u32,
            ) -> tributary_core::Result<Vec<tributary_core::model::EntityType>> {
                Ok($ops::list_entity_types(self, after, limit).await?)
            }
            async fn update_entity_type(
                &self,
                entity_type: &tributary_core::model::EntityType,
                now: tributary_core::clock::Micros,
            ) -> tributary_core::Result<tributary_core::model::EntityType> {
                Ok($ops::update_entity_type(self, entity_type, now).await?)
            }
            async fn delete_entity_type(
                &self,
                slug: &str,
                force: bool,
            ) -> tributary_core::Result<()> {
                Ok($ops::delete_entity_type(self, slug, force).await?)
            }
            async fn create_connector(
                &self,
                connector: &tributary_core::model::Connector,
                token_hash: &str,
            ) -> tributary_core::Result<()> {
                Ok($ops::create_connector(self, connector, token_hash).await?)
            }
            async fn get_connector(
                &self,
                id: &str,
            ) -> tributary_core::Result<tributary_core::model::Connector> {
                Ok($ops::get_connector(self, id).await?)
            }
            async fn list_connectors(
                &self,
                after: Option<&str>,
                limit: u32,
            ) -> tributary_core::Result<Vec<tributary_core::model::Connector>> {
                Ok($ops::list_connectors(self, after, limit).await?)
            }
            async fn update_connector(
                &self,
                connector: &tributary_core::model::Connector,
            ) -> tributary_core::Result<tributary_core::model::Connector> {
                Ok($ops::update_connector(self, connector).await?)
            }
            async fn delete_connector(
                &self,
                id: &str,
                delete_records: bool,
            ) -> tributary_core::Result<u64> {
                Ok($ops::delete_connector(self, id, delete_records).await?)
            }
            async fn set_connector_token(
                &self,
                id: &str,
                token_hash: &str,
            ) -> tributary_core::Result<()> {
                Ok($ops::set_connector_token(self, id, token_hash).await?)
            }
            async fn connector_by_token(
                &self,
                token_hash: &str,
            ) -> tributary_core::Result<Option<(tributary_core::model::Connector, u32)>> {
                Ok($ops::connector_by_token(self, token_hash).await?)
            }
            async fn create_consumer(
                &self,
                consumer: &tributary_core::model::Consumer,
                token_hash: &str,
            ) -> tributary_core::Result<()> {
                Ok($ops::create_consumer(self, consumer, token_hash).await?)
            }
            async fn get_consumer(
                &self,
                id: &str,
            ) -> tributary_core::Result<tributary_core::model::Consumer> {
                Ok($ops::get_consumer(self, id).await?)
            }
            async fn list_consumers(
                &self,
                after: Option<&str>,
                limit: u32,
            ) -> tributary_core::Result<Vec<tributary_core::model::Consumer>> {
                Ok($ops::list_consumers(self, after, limit).await?)
            }
            async fn delete_consumer(&self, id: &str) -> tributary_core::Result<()> {
                Ok($ops::delete_consumer(self, id).await?)
            }
            async fn consumer_by_token(
                &self,
                token_hash: &str,
            ) -> tributary_core::Result<Option<tributary_core::model::Consumer>> {
                Ok($ops::consumer_by_token(self, token_hash).await?)
            }
            async fn open_session(
                &self,
                connector: &tributary_core::model::Connector,
                mode: tributary_core::model::SessionMode,
                now: tributary_core::clock::Micros,
            ) -> tributary_core::Result<tributary_core::store::OpenedSession> {
                Ok($ops::open_session(self, connector, mode, now).await?)
            }
            async fn upsert_batch(
                &self,
                call: &tributary_core::store::SessionCall<'_>,
                records: &[tributary_core::record::PreparedRecord],
            ) -> tributary_core::Result<
                tributary_core::store::BatchResult<Vec<tributary_core::model::Outcome>>,
            > {
                Ok($ops::upsert_batch(self, call, records).await?)
            }
            async fn delete_batch(
                &self,
                call: &tributary_core::store::SessionCall<'_>,
                ids: &[tributary_core::record::KeyedId],
            ) -> tributary_core::Result<
                tributary_core::store::BatchResult<Vec<tributary_core::model::Outcome>>,
            > {
                Ok($ops::delete_batch(self, call, ids).await?)
            }
            async fn diff_batch(
                &self,
                call: &tributary_core::store::SessionCall<'_>,
                digests: &[tributary_core::record::KeyedDigest],
            ) -> tributary_core::Result<
                tributary_core::store::BatchResult<Vec<tributary_core::model::DigestState>>,
            > {
                Ok($ops::diff_batch(self, call, digests).await?)
            }
            async fn resume_session(
                &self,
                call: &tributary_core::store::SessionCall<'_>,
            ) -> tributary_core::Result<tributary_core::store::ResumedSession> {
                Ok($ops::resume_session(self, call).await?)
            }
            async fn close_session(
                &self,
                call: &tributary_core::store::SessionCall<'_>,
                commit: bool,
                force: bool,
            ) -> tributary_core::Result<tributary_core::store::ClosedSession> {
                Ok($ops::close_session(self, call, commit, force).await?)
            }
            async fn expire_idle_sessions(
                &self,
                idle_cutoff: tributary_core::clock::Micros,
                now: tributary_core::clock::Micros,
            ) -> tributary_core::Result<u64> {
                Ok($ops::expire_idle_sessions(self, idle_cutoff, now).await?)
            }
            async fn get_record(
                &self,
                key: &str,
            ) -> tributary_core::Result<Option<tributary_core::model::StoredRecord>> {
                Ok($ops::get_record(self, key).await?)
            }
            async fn get_records(
                &self,
                keys: &[String],
            ) -> tributary_core::Result<Vec<tributary_core::model::StoredRecord>> {
                Ok($ops::get_records(self, keys).await?)
            }
            async fn list_records(
                &self,
                entity_type: &str,
                after_key: Option<&str>,
                limit: u32,
            ) -> tributary_core::Result<Vec<tributary_core::model::StoredRecord>> {
                Ok($ops::list_records(self, entity_type, after_key, limit).await?)
            }
            async fn lookup_records(
                &self,
                entity_type: &str,
                ids: &[String],
                connector: Option<&str>,
            ) -> tributary_core::Result<Vec<tributary_core::model::StoredRecord>> {
                Ok($ops::lookup_records(self, entity_type, ids, connector).await?)
            }
            async fn count_records(&self, entity_type: &str) -> tributary_core::Result<u64> {
                Ok($ops::count_records(self, entity_type).await?)
            }
            async fn query_records(
                &self,
                query: &tributary_core::store::RecordQuery<'_>,
            ) -> tributary_core::Result<tributary_core::store::RecordPage> {
                Ok($ops::query_records(self, query).await?)
            }
            async fn read_changes(
                &self,
                entity_type: &str,
                after: u64,
                limit: u32,
            ) -> tributary_core::Result<tributary_core::store::ChangeLogPage> {
                Ok($ops::read_changes(self, entity_type, after, limit).await?)
            }
            async fn wait_for_changes(&self, after: u64) {
                $ops::wait_for_changes(self, after).await
            }
            async fn prune_changes(
                &self,
                recorded_before: tributary_core::clock::Micros,
            ) -> tributary_core::Result<u64> {
                Ok($ops::prune_changes(self, recorded_before).await?)
            }
            async fn get_import_result(
                &self,
                id: &str,
            ) -> tributary_core::Result<tributary_core::model::ImportResult> {
                Ok($ops::get_import_result(self, id).await?)
            }
            async fn list_import_results(
                &self,
                connector: Option<&str>,
                after: Option<&str>,
                limit: u32,
            ) -> tributary_core::Result<Vec<tributary_core::model::ImportResult>> {
                Ok($ops::list_import_results(self, connector, after, limit).await?)
            }
        }
    };
}
pub(crate) use delegate_store;
