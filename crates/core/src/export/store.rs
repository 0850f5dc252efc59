//! What exports need from a database. Every `Store` implements it (it is a supertrait of
//! [`crate::store::Store`]).
//!
//! Contract every implementation keeps:
//! - Export names are unique (`AlreadyExists`); an export's entity type exists when it is
//!   stored (`NotFound` otherwise) and deleting the entity type deletes its exports.
//! - Claiming is one atomic `UPDATE … WHERE due AND enabled AND (no lease OR lease expired)
//!   RETURNING`, so a due export is run by at most one scheduler at a time, and a dead holder's
//!   lease is taken over once it expires.
//! - Lease renewals and releases name their holder; one whose holder no longer matches changes
//!   nothing (and answers `false`).

use super::{Export, ExportRun};
use crate::clock::Micros;
use crate::source::store::Claim;
use crate::Result;
use async_trait::async_trait;

/// Storage for exports and their runs.
#[async_trait]
pub trait ExportStore: Send + Sync {
    /// Creates an export, due at `next_run_at` (`None`: only on demand). `AlreadyExists` for a
    /// taken name, `NotFound` for an unknown entity type.
    async fn create_export(&self, export: &Export, next_run_at: Option<Micros>) -> Result<()>;
    /// The export `id`; `NotFound` otherwise.
    async fn get_export(&self, id: &str) -> Result<Export>;
    /// Exports ordered by id, after `after`.
    async fn list_exports(&self, after: Option<&str>, limit: u32) -> Result<Vec<Export>>;
    /// Replaces an export's definition and its next due time; `NotFound`, `AlreadyExists` and
    /// entity type `NotFound` as for create.
    async fn update_export(&self, export: &Export, next_run_at: Option<Micros>) -> Result<Export>;
    /// Deletes an export and its runs; `NotFound` otherwise.
    async fn delete_export(&self, id: &str) -> Result<()>;

    /// Records a finished run; `NotFound` when its export was deleted meanwhile.
    async fn record_export_run(&self, run: &ExportRun) -> Result<()>;
    /// An export's runs, newest first (by `started_at`, then id), continuing after the run
    /// `after`. `NotFound` for an unknown export.
    async fn list_export_runs(
        &self,
        export_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ExportRun>>;

    /// Claims up to `limit` due, enabled exports whose lease is free or expired.
    async fn claim_exports(&self, claim: &Claim<'_>) -> Result<Vec<Export>>;
    /// Extends `holder`'s lease on export `id` to `until`; `false` when it no longer holds it.
    async fn renew_export_lease(&self, id: &str, holder: &str, until: Micros) -> Result<bool>;
    /// Frees `holder`'s lease and sets when the export is next due; `false` when it no longer
    /// holds it.
    async fn release_export(
        &self,
        id: &str,
        holder: &str,
        next_run_at: Option<Micros>,
    ) -> Result<bool>;
    /// The earliest due time of an enabled export, for the scheduler's sleep.
    async fn next_export_due(&self) -> Result<Option<Micros>>;
}
