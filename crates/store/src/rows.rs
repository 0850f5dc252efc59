//! Reading rows back into domain values, the same way for both backends.
//!
//! Each backend selects the same column names (PostgreSQL casts JSONB to text), so one mapper per
//! domain type serves both through the small [`Cols`] accessor trait.

use crate::error::{StoreError, StoreResult};
use sqlx::Row;
use tributary_core::model::{
    Connector, EntityType, ImportItem, ImportResult, ImportStatus, SessionTotals, StoredRecord,
    WritePolicy,
};

/// Typed column access by name, implemented for each backend's row type.
pub(crate) trait Cols {
    fn text(&self, column: &str) -> StoreResult<String>;
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>>;
    fn int(&self, column: &str) -> StoreResult<i64>;
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>>;
    fn opt_float(&self, column: &str) -> StoreResult<Option<f64>>;
}

macro_rules! impl_cols {
    ($row:ty) => {
        impl Cols for $row {
            fn text(&self, column: &str) -> StoreResult<String> {
                Ok(self.try_get(column)?)
            }
            fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
                Ok(self.try_get(column)?)
            }
            fn int(&self, column: &str) -> StoreResult<i64> {
                Ok(self.try_get(column)?)
            }
            fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
                Ok(self.try_get(column)?)
            }
            fn opt_float(&self, column: &str) -> StoreResult<Option<f64>> {
                Ok(self.try_get(column)?)
            }
        }
    };
}

impl_cols!(sqlx::sqlite::SqliteRow);
impl_cols!(sqlx::postgres::PgRow);

/// A stored count (never negative) as the domain's u64.
pub(crate) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

/// A domain count as a stored BIGINT.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Whether a sequenced call's batch is at or below the session's applied sequence (a resend).
/// Unsequenced calls never are.
pub(crate) fn already_applied(
    call: &tributary_core::store::SessionCall<'_>,
    applied_seq: i64,
) -> bool {
    call.batch_seq.is_some_and(|seq| to_i64(seq) <= applied_seq)
}

fn u32_of(value: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is out of range")))
}

fn parse_json(text: &str, what: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn entity_type(row: &impl Cols) -> StoreResult<EntityType> {
    Ok(EntityType {
        slug: row.text("slug")?,
        name: row.text("name")?,
        description: row.text("description")?,
        schema: parse_json(&row.text("schema")?, "entity type schema")?,
        schema_version: u32_of(row.int("schema_version")?, "schema_version")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

pub(crate) fn write_policy(text: &str) -> StoreResult<WritePolicy> {
    WritePolicy::parse(text)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown write policy {text:?}")))
}

pub(crate) fn connector(row: &impl Cols) -> StoreResult<Connector> {
    Ok(Connector {
        id: row.text("id")?,
        name: row.text("name")?,
        entity_type: row.text("entity_type")?,
        write_policy: write_policy(&row.text("write_policy")?)?,
        reject_removals_above_percent: row.opt_float("reject_removals_above_percent")?,
        rate_limit: row
            .opt_int("rate_limit")?
            .map(|v| u32_of(v, "rate_limit"))
            .transpose()?,
        created_at: row.int("created_at")?,
    })
}

pub(crate) fn record(row: &impl Cols) -> StoreResult<StoredRecord> {
    Ok(StoredRecord {
        key: row.text("key")?,
        entity_type: row.text("entity_type")?,
        connector: row.text("connector")?,
        id: row.text("id")?,
        name: row.text("name")?,
        entity: row.text("entity")?,
        instance: row.text("instance")?,
        checksum: row.text("checksum")?,
        version: row.int("version")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        source: row.opt_text("source")?,
        edited_at: row.opt_int("edited_at")?,
    })
}

fn items(text: &str, what: &str) -> StoreResult<Vec<ImportItem>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn import_result(row: &impl Cols) -> StoreResult<ImportResult> {
    let status = row.text("status")?;
    Ok(ImportResult {
        id: row.text("id")?,
        connector: row.text("connector")?,
        session_id: row.opt_text("session_id")?,
        source: row.opt_text("source")?,
        started_at: row.int("started_at")?,
        ended_at: row.int("ended_at")?,
        status: ImportStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown import status {status:?}")))?,
        totals: SessionTotals {
            created: count(row.int("created")?),
            updated: count(row.int("updated")?),
            unchanged: count(row.int("unchanged")?),
            deleted: count(row.int("deleted")?),
            swept: count(row.int("swept")?),
            skipped: count(row.int("skipped")?),
        },
        failed: count(row.int("failed")?),
        sweep_refused: count(row.int("sweep_refused")?),
        pages: count(row.int("pages")?),
        skipped_items: items(&row.text("skipped_items")?, "skipped_items")?,
        failed_items: items(&row.text("failed_items")?, "failed_items")?,
        items_not_listed: count(row.int("items_not_listed")?),
        errors: serde_json::from_str(&row.text("errors")?)
            .map_err(|e| StoreError::Corrupt(format!("import result errors: {e}")))?,
    })
}

/// The report of an accrue/replace session that ended at `ended_at`.
pub(crate) fn session_result(
    connector: &str,
    session_id: &str,
    started_at: i64,
    ended_at: i64,
    status: ImportStatus,
    totals: SessionTotals,
    errors: Vec<String>,
) -> ImportResult {
    ImportResult {
        id: tributary_core::ids::new_id(),
        connector: connector.to_owned(),
        session_id: Some(session_id.to_owned()),
        source: None,
        started_at,
        ended_at,
        status,
        totals,
        failed: 0,
        sweep_refused: 0,
        pages: 0,
        skipped_items: Vec::new(),
        failed_items: Vec::new(),
        items_not_listed: 0,
        errors,
    }
}

/// The column list every import-result insert and select uses, in this order.
pub(crate) const IMPORT_RESULT_COLUMNS: &str = "id, connector, session_id, source, started_at, ended_at, status, \
     created, updated, unchanged, skipped, failed, deleted, swept, sweep_refused, pages, skipped_items, \
     failed_items, items_not_listed, errors";

/// Write-policy switches for the commit SQL: skip every change, or skip changes to edited records.
pub(crate) fn skip_flags(policy: WritePolicy) -> (bool, bool) {
    match policy {
        WritePolicy::Importer => (false, false),
        WritePolicy::ImporterCreateOnly => (true, false),
        WritePolicy::ImporterUpdateUnlessEdited => (false, true),
    }
}

/// The definition columns of `exports`, in this order.
pub(crate) const EXPORT_COLUMNS: &str = "id, name, entity_type, filter, format, destination, \
     schedule, enabled, created_at, updated_at";
/// The columns of `export_runs`, in this order.
pub(crate) const EXPORT_RUN_COLUMNS: &str =
    "id, export_id, status, started_at, ended_at, records, bytes, location, error";

pub(crate) fn export(row: &impl Cols) -> StoreResult<tributary_core::export::Export> {
    use tributary_core::export::{Export, ExportFormat};
    use tributary_core::source::Schedule;
    let format = row.text("format")?;
    let schedule = row.text("schedule")?;
    Ok(Export {
        id: row.text("id")?,
        name: row.text("name")?,
        entity_type: row.text("entity_type")?,
        filter: row.text("filter")?,
        format: ExportFormat::parse(&format)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown export format {format:?}")))?,
        destination: row.text("destination")?,
        schedule: Schedule::from_text(&schedule)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown schedule {schedule:?}")))?,
        enabled: row.int("enabled")? != 0,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

pub(crate) fn export_run(row: &impl Cols) -> StoreResult<tributary_core::export::ExportRun> {
    let status = row.text("status")?;
    Ok(tributary_core::export::ExportRun {
        id: row.text("id")?,
        export_id: row.text("export_id")?,
        status: ImportStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown run status {status:?}")))?,
        started_at: row.int("started_at")?,
        ended_at: row.int("ended_at")?,
        records: count(row.int("records")?),
        bytes: count(row.int("bytes")?),
        location: row.text("location")?,
        error: row.opt_text("error")?,
    })
}
