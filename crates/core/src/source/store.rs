//! What the pull engine and the source admin calls need from a database. Every `Store`
//! implements it (it is a supertrait of [`crate::store::Store`]).
//!
//! Contract every implementation keeps:
//! - Claiming is one atomic `UPDATE … WHERE due AND (no lease OR lease expired) RETURNING`, so a
//!   source is worked by at most one engine at a time, and a dead holder's lease is taken over.
//! - Every engine write names its [`Lease`]; a write whose holder or cycle no longer matches is
//!   refused with `FailedPrecondition` (reason `LEASE_LOST`) and changes nothing.
//! - A page's records, its marks, the cycle's counters and the next cursor commit in one
//!   transaction, so a resumed cycle neither repeats nor loses a page.
//! - The sweep is one anti-join `DELETE` against the marks, guarded by `reject_empty` and
//!   `reject_removals_above_percent`; a refused sweep deletes nothing and is reported.

use super::{
    ClaimedSource, CycleEnd, DeltaTotals, Lease, PageTotals, Source, SourcePage, SourceStatus,
};
use crate::clock::Micros;
use crate::model::{Connector, ImportResult, StoredRecord};
use crate::record::{KeyedId, PreparedRecord};
use crate::Result;
use async_trait::async_trait;

/// A request to claim due sources.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// Who claims: a unique id per engine (process).
    pub holder: &'a str,
    pub now: Micros,
    /// The lease lasts until then unless renewed by a page.
    pub lease_until: Micros,
    /// Most sources to claim at once.
    pub limit: u32,
}

/// An edit made inside Tributary (§4.4): the record's new content, prepared and checksummed.
#[derive(Debug, Clone)]
pub struct RecordEdit {
    pub key: String,
    pub name: String,
    /// Canonical JSON text.
    pub entity: String,
    /// Canonical JSON text.
    pub instance: String,
    pub checksum: String,
    pub now: Micros,
}

/// Storage for pull sources.
#[async_trait]
pub trait SourceStore: Send + Sync {
    /// Creates a source, due at once; `NotFound` for its connector.
    async fn create_source(&self, source: &Source) -> Result<()>;
    /// The source `id`; `NotFound` otherwise.
    async fn get_source(&self, id: &str) -> Result<Source>;
    /// Sources ordered by id after `after`, optionally of one connector.
    async fn list_sources(
        &self,
        connector: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Source>>;
    /// Replaces a source's definition (its connector cannot change); its state is kept.
    async fn update_source(&self, source: &Source) -> Result<Source>;
    /// Deletes a source with its state and marks; its records stay.
    async fn delete_source(&self, id: &str) -> Result<()>;
    /// A source's runtime state.
    async fn source_status(&self, id: &str) -> Result<SourceStatus>;
    /// Makes a source due now (a running cycle continues; a resting source starts one).
    async fn trigger_source(&self, id: &str, now: Micros) -> Result<SourceStatus>;
    /// Cancels a source's current cycle, if any: reports it `canceled`, drops its cursor and
    /// marks, frees the lease (the holder's next write is refused) and sets the next run.
    async fn cancel_source(
        &self,
        id: &str,
        now: Micros,
        next_run_at: Micros,
    ) -> Result<Option<ImportResult>>;
    /// The earliest `next_run_at` of an enabled source, for the heartbeat's sleep.
    async fn next_source_due(&self) -> Result<Option<Micros>>;

    /// Claims up to `limit` due sources whose lease is free or expired. A source that was not
    /// in a cycle (idle, resting) starts a new one: new cycle id, no cursor, counters and marks
    /// cleared.
    async fn claim_sources(&self, claim: &Claim<'_>) -> Result<Vec<ClaimedSource>>;
    /// Applies one page under `lease` (see the module contract). Returns what it did.
    async fn apply_source_page(&self, lease: &Lease, page: &SourcePage) -> Result<PageTotals>;
    /// Records a failed page: one more attempt, the error collected, the lease freed and the
    /// source due again at `retry_at` (from the saved cursor).
    async fn source_page_failed(
        &self,
        lease: &Lease,
        error: &str,
        now: Micros,
        retry_at: Micros,
    ) -> Result<()>;
    /// Ends a burst: frees the lease; the next burst is due at `next_run_at`.
    async fn release_source(&self, lease: &Lease, next_run_at: Micros) -> Result<()>;
    /// Ends the cycle (sweep with guards, or failed), writes its import result, clears cursor,
    /// marks and lease, and sets the next run.
    async fn finish_source_cycle(
        &self,
        lease: &Lease,
        end: &CycleEnd,
        now: Micros,
        next_run_at: Micros,
    ) -> Result<ImportResult>;

    /// Applies an event delta to a source's connector: `added` upserted (write policy applies)
    /// and marked as seen in the current cycle, `removed` deleted.
    async fn push_source_delta(
        &self,
        source: &Source,
        connector: &Connector,
        added: &[PreparedRecord],
        removed: &[KeyedId],
        now: Micros,
    ) -> Result<DeltaTotals>;
    /// Replaces a record's content as an edit inside Tributary: `edited_at` and `updated_at`
    /// become `now`, the version moves. `NotFound` for an unknown key.
    async fn edit_record(&self, edit: &RecordEdit) -> Result<StoredRecord>;
}
