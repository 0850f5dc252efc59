//! The storage trait: everything the domain needs from a database. `tributary-store` implements
//! it for SQLite (the embedded default) and PostgreSQL; one conformance suite tests both.
//!
//! Contract every implementation keeps:
//! - A batch (upsert or delete) is one transaction that also checks and touches the session, so
//!   a batch racing a supersede or close is either fully applied or refused.
//! - Committing an accrue/replace session is set-based SQL in one transaction: the staged rows are
//!   compared with the visible rows by checksum, only changed rows are written, and a replace sweep
//!   is an anti-join. No statement per record, and memory does not grow with the session.
//! - A sequenced batch (`SessionCall::batch_seq`) raises the session's `applied_seq` in its own
//!   transaction; a resend at or below it is answered `AlreadyApplied` without effect, so a batch
//!   applies exactly once across broken streams, server restarts and replicas.
//! - Outcomes are decided by [`crate::record::plan_upserts`] / [`crate::record::plan_deletes`]
//!   for batches and by the equivalent SQL at commit.

use crate::clock::Micros;
use crate::export::store::ExportStore;
use crate::model::{
    Connector, Consumer, DigestState, EntityType, ImportResult, ImportStatus, Outcome, Session,
    SessionMode, SessionTotals, StoredRecord,
};
use crate::query::{Cursor, Filter, SortKey};
use crate::reconcile::IdRange;
use crate::record::{KeyedDigest, KeyedId, PreparedRecord};
use crate::source::store::SourceStore;
use crate::Result;
use async_trait::async_trait;

/// The session a batch or close addresses, and who is asking.
#[derive(Debug, Clone, Copy)]
pub struct SessionCall<'a> {
    pub session_id: &'a str,
    /// The authenticated connector; a session of another connector is refused.
    pub connector: &'a Connector,
    pub now: Micros,
    /// Accrue/replace sessions last active before this instant are expired and refused.
    pub idle_cutoff: Micros,
    /// `None` for unary calls, which never read or change the session's applied sequence.
    /// `Some(seq)` for a streamed batch: applied only when `seq` is above the session's
    /// `applied_seq`, which is raised to `seq` in the batch's own transaction (exactly-once).
    pub batch_seq: Option<u64>,
}

/// What a sequenced batch did: applied now, or already applied by an earlier send of the same
/// `batch_seq` (nothing was applied twice). Unsequenced calls are always `Applied`.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchResult<T> {
    Applied(T),
    AlreadyApplied,
}

impl<T> BatchResult<T> {
    /// Maps the applied value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> BatchResult<U> {
        match self {
            Self::Applied(v) => BatchResult::Applied(f(v)),
            Self::AlreadyApplied => BatchResult::AlreadyApplied,
        }
    }

    /// The applied value; `None` for an already applied batch.
    pub fn applied(self) -> Option<T> {
        match self {
            Self::Applied(v) => Some(v),
            Self::AlreadyApplied => None,
        }
    }
}

/// An open session found again by its id: its mode and the highest batch sequence applied.
#[derive(Debug, Clone)]
pub struct ResumedSession {
    pub mode: SessionMode,
    /// 0 when no sequenced batch was applied yet.
    pub last_batch_seq: u64,
}

/// A newly opened session and the sessions it superseded.
#[derive(Debug, Clone)]
pub struct OpenedSession {
    pub session: Session,
    pub superseded: Vec<String>,
}

/// The result of closing a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedSession {
    pub mode: SessionMode,
    pub totals: SessionTotals,
    /// The import result written for an accrue/replace session.
    pub import_result_id: Option<String>,
}

/// One page of a listing, for the store to compile to SQL.
#[derive(Debug, Clone, Copy)]
pub struct RecordQuery<'a> {
    pub entity_type: &'a str,
    pub filter: Option<&'a Filter>,
    /// Ends with `key`, so the order is total.
    pub order: &'a [SortKey],
    /// Continue strictly after this position; `None` for the first page.
    pub after: Option<&'a Cursor>,
    pub limit: u32,
}

/// A page of a listing, read in one snapshot.
#[derive(Debug, Clone)]
pub struct RecordPage {
    pub records: Vec<StoredRecord>,
    /// The position of the last record (for the next page's token).
    pub last: Option<Cursor>,
    /// The change-log sequence of the snapshot the page was read in: every change up to it is
    /// in the page, none after it.
    pub sequence: u64,
}

/// One change-log entry as read back, joined to the record's current state.
#[derive(Debug, Clone)]
pub struct LoggedChange {
    pub sequence: u64,
    pub key: String,
    /// The record was deleted (else upserted).
    pub deleted: bool,
    /// The record as it is now, for an upsert; `None` when it has been deleted since (a later
    /// delete entry follows).
    pub record: Option<StoredRecord>,
}

/// Change-log entries of one entity type after a sequence, read in one snapshot.
#[derive(Debug, Clone)]
pub struct ChangeLogPage {
    /// In sequence order.
    pub changes: Vec<LoggedChange>,
    /// The highest sequence committed (of any entity type) in the snapshot.
    pub last_sequence: u64,
    /// Entries up to this sequence have been pruned; resuming below it would miss changes.
    pub pruned_through: u64,
}

/// Entity types, connectors and consumers: who may write and read what (SPEC.md §4.1, §4.2).
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Creates an entity type; `AlreadyExists` if the slug is taken.
    async fn create_entity_type(&self, entity_type: &EntityType) -> Result<()>;
    /// The entity type `slug`; `NotFound` otherwise.
    async fn get_entity_type(&self, slug: &str) -> Result<EntityType>;
    /// Entity types ordered by slug, after `after`.
    async fn list_entity_types(&self, after: Option<&str>, limit: u32) -> Result<Vec<EntityType>>;
    /// Replaces name, description and schema; bumps `schema_version` when the schema changed.
    async fn update_entity_type(&self, entity_type: &EntityType, now: Micros)
        -> Result<EntityType>;
    /// Deletes an entity type. With records and without `force`: `FailedPrecondition`
    /// (reason `ENTITY_TYPE_HAS_RECORDS`). With `force`, its records, connectors and sessions go too.
    async fn delete_entity_type(&self, slug: &str, force: bool) -> Result<()>;

    /// Creates a connector whose token hashes to `token_hash`; `NotFound` for its entity type.
    async fn create_connector(&self, connector: &Connector, token_hash: &str) -> Result<()>;
    /// The connector `id`; `NotFound` otherwise.
    async fn get_connector(&self, id: &str) -> Result<Connector>;
    /// Connectors ordered by id, after `after`.
    async fn list_connectors(&self, after: Option<&str>, limit: u32) -> Result<Vec<Connector>>;
    /// Replaces name, write policy, removal guard and rate limit.
    async fn update_connector(&self, connector: &Connector) -> Result<Connector>;
    /// Deletes a connector and rolls back its sessions; its records too when `delete_records`.
    /// Returns how many records were deleted.
    async fn delete_connector(&self, id: &str, delete_records: bool) -> Result<u64>;
    /// Replaces the connector's token hash; the old token stops working at once.
    async fn set_connector_token(&self, id: &str, token_hash: &str) -> Result<()>;
    /// The connector whose token hashes to `token_hash`, with its entity type's schema version.
    async fn connector_by_token(&self, token_hash: &str) -> Result<Option<(Connector, u32)>>;

    /// Creates a consumer; `NotFound` for an entity type it is granted that does not exist.
    async fn create_consumer(&self, consumer: &Consumer, token_hash: &str) -> Result<()>;
    /// The consumer `id`; `NotFound` otherwise.
    async fn get_consumer(&self, id: &str) -> Result<Consumer>;
    /// Consumers ordered by id, after `after`.
    async fn list_consumers(&self, after: Option<&str>, limit: u32) -> Result<Vec<Consumer>>;
    /// Deletes a consumer; `NotFound` otherwise.
    async fn delete_consumer(&self, id: &str) -> Result<()>;
    /// The consumer whose token hashes to `token_hash`.
    async fn consumer_by_token(&self, token_hash: &str) -> Result<Option<Consumer>>;
    /// How many sessions are open, by mode (every mode, zeros included), for operators.
    async fn open_sessions_by_mode(&self) -> Result<Vec<(SessionMode, u64)>>;
    /// This process's database connections: (in use, open).
    fn connections(&self) -> (u32, u32);
}

/// Contribution sessions and their batches (SPEC.md §2).
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Opens a session. Opening accrue/replace supersedes (rolls back, with a canceled import
    /// result) the connector's open accrue/replace session, atomically.
    async fn open_session(
        &self,
        connector: &Connector,
        mode: SessionMode,
        now: Micros,
    ) -> Result<OpenedSession>;
    /// Applies (stream) or stages (accrue/replace) an upsert batch of valid records. Returns one
    /// outcome per record, in order. `PermissionDenied` for a session that is unknown, closed,
    /// superseded, expired or another connector's. A sequenced call (`batch_seq`) at or below the
    /// session's applied sequence answers `AlreadyApplied` and changes nothing but the session's
    /// activity time.
    async fn upsert_batch(
        &self,
        call: &SessionCall<'_>,
        records: &[PreparedRecord],
    ) -> Result<BatchResult<Vec<Outcome>>>;
    /// Applies several sequenced upsert batches of one session in one transaction, in order,
    /// each as [`SessionStore::upsert_batch`] would with its `batch_seq` (`call.batch_seq` is
    /// not used): a stream's group commit (ADR 0020). One result per batch, in order; the
    /// session's applied sequence ends at the last batch applied. Fails as a whole.
    async fn upsert_batches(
        &self,
        call: &SessionCall<'_>,
        batches: &[(u64, &[PreparedRecord])],
    ) -> Result<Vec<BatchResult<Vec<Outcome>>>>;
    /// Applies (stream) or stages (accrue/replace) a delete batch; one outcome per id, in order.
    /// Sequenced like [`SessionStore::upsert_batch`].
    async fn delete_batch(
        &self,
        call: &SessionCall<'_>,
        ids: &[KeyedId],
    ) -> Result<BatchResult<Vec<Outcome>>>;
    /// Compares digests with the visible catalog (see [`crate::record::plan_digests`]); one state
    /// per digest, in order. In a replace session every unchanged key is staged as a `keep` (the
    /// sweep spares it, commit counts it unchanged and writes nothing); stream and accrue sessions
    /// only get the answer. Sequenced like [`SessionStore::upsert_batch`].
    async fn diff_batch(
        &self,
        call: &SessionCall<'_>,
        digests: &[KeyedDigest],
    ) -> Result<BatchResult<Vec<DigestState>>>;
    /// The connector's visible `(id, checksum)` items by id in byte order, from `from` on
    /// (`inclusive` or not), at most `limit`: what a reconcile call is judged against (§2.5).
    async fn read_items(
        &self,
        connector: &Connector,
        from: &str,
        inclusive: bool,
        limit: u32,
    ) -> Result<Vec<(String, String)>>;
    /// The store half of a reconcile call: in a replace session, stages a `keep` (as
    /// [`SessionStore::diff_batch`] does for unchanged digests) for every visible record of the
    /// connector in `ranges` and for every record of `ids`; other sessions are only touched.
    /// Sequenced like [`SessionStore::upsert_batch`].
    async fn keep_batch(
        &self,
        call: &SessionCall<'_>,
        ranges: &[IdRange],
        ids: &[KeyedId],
    ) -> Result<BatchResult<()>>;
    /// Finds an open session again (e.g. a resumed stream): its mode and applied sequence.
    /// Refused and touched like any batch; `call.batch_seq` is ignored.
    async fn resume_session(&self, call: &SessionCall<'_>) -> Result<ResumedSession>;
    /// Closes a session: commits or discards staged data (accrue/replace), writes the import result.
    /// A replace commit refused by the connector's removal guard (and not `force`d) answers
    /// `FailedPrecondition` (reason `SWEEP_REFUSED`) and leaves the session open and untouched.
    async fn close_session(
        &self,
        call: &SessionCall<'_>,
        commit: bool,
        force: bool,
    ) -> Result<ClosedSession>;
    /// Rolls back accrue/replace sessions last active before `idle_cutoff`; returns how many.
    async fn expire_idle_sessions(&self, idle_cutoff: Micros, now: Micros) -> Result<u64>;
}

/// The visible catalog: records, listings, the change log and import results (SPEC.md §3, §6).
#[async_trait]
pub trait CatalogStore: Send + Sync {
    /// The visible record with `key`.
    async fn get_record(&self, key: &str) -> Result<Option<StoredRecord>>;
    /// The visible records among `keys` (any order).
    async fn get_records(&self, keys: &[String]) -> Result<Vec<StoredRecord>>;
    /// Visible records of an entity type ordered by key, after `after_key`.
    async fn list_records(
        &self,
        entity_type: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredRecord>>;
    /// Visible records of an entity type whose external id is among `ids`, of one connector or all.
    async fn lookup_records(
        &self,
        entity_type: &str,
        ids: &[String],
        connector: Option<&str>,
    ) -> Result<Vec<StoredRecord>>;
    /// How many visible records an entity type has ([`CatalogStore::count_matching`] without
    /// a filter).
    async fn count_records(&self, entity_type: &str) -> Result<u64> {
        Ok(self.count_matching(entity_type, None).await?.0)
    }

    /// A page of visible records matching `query`, in its order, read in one snapshot together
    /// with the change-log sequence of that snapshot. A cursor that does not fit the query's
    /// order answers `InvalidArgument` (`page_token`).
    async fn query_records(&self, query: &RecordQuery<'_>) -> Result<RecordPage>;
    /// Opens a snapshot of the visible catalog that later reads share (an export's run): the
    /// records as they are now, whatever commits while it is open. It holds a database
    /// connection until dropped.
    async fn open_snapshot(&self) -> Result<Box<dyn CatalogSnapshot>>;
    /// How many visible records of `entity_type` match `filter`, and the change-log sequence
    /// of the snapshot counted in; bounded by the query timeout like a listing.
    async fn count_matching(
        &self,
        entity_type: &str,
        filter: Option<&Filter>,
    ) -> Result<(u64, u64)>;
    /// At most `limit` change-log entries of `entity_type` with a sequence above `after`.
    async fn read_changes(
        &self,
        entity_type: &str,
        after: u64,
        limit: u32,
    ) -> Result<ChangeLogPage>;
    /// Resolves once a change with a sequence above `after` may have been committed (by this
    /// process, or on PostgreSQL by any process). May resolve spuriously; callers re-read.
    async fn wait_for_changes(&self, entity_type: &str, after: u64);
    /// Deletes change-log entries recorded before `recorded_before` (a prefix of the log);
    /// returns how many.
    async fn prune_changes(&self, recorded_before: Micros) -> Result<u64>;

    /// The import result `id`; `NotFound` otherwise.
    async fn get_import_result(&self, id: &str) -> Result<ImportResult>;
    /// Import results newest first (by `ended_at`, then id) that `filter` admits, continuing
    /// after the result `after` (an id from a previous page).
    async fn list_import_results(
        &self,
        filter: &ImportResultFilter<'_>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ImportResult>>;
}

/// Which import results a listing returns; `None` admits every value.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportResultFilter<'a> {
    pub connector: Option<&'a str>,
    /// The source that ran the cycle (its id).
    pub source: Option<&'a str>,
    pub status: Option<ImportStatus>,
}

/// A snapshot of the visible catalog held open across reads ([`CatalogStore::open_snapshot`]).
#[async_trait]
pub trait CatalogSnapshot: Send {
    /// A page of the records matching `query` as they were when the snapshot was opened; each
    /// statement is bounded by the query timeout, as in [`CatalogStore::query_records`].
    async fn query_records(&mut self, query: &RecordQuery<'_>) -> Result<RecordPage>;
}

/// The storage every Tributary service runs on: one implementation per backend, with every area
/// trait (the services hold it as `Arc<dyn Store>`).
pub trait Store:
    AdminStore + SessionStore + CatalogStore + SourceStore + ExportStore + Send + Sync + 'static
{
}

impl<T> Store for T where
    T: AdminStore + SessionStore + CatalogStore + SourceStore + ExportStore + Send + Sync + 'static
{
}
