//! What several areas write and read the same way: the visible rows a batch touches, the
//! set-based upsert of changed records, and import results.

use super::{bind_rows, in_list_arg, read_existing, rowset, Tx};
use crate::batch::{record_rows, RECORD_COLUMNS};
use crate::error::StoreResult;
use crate::rows::{to_i64, IMPORT_RESULT_COLUMNS};
use std::collections::HashMap;
use std::sync::LazyLock;
use tributary_core::model::ImportResult;
use tributary_core::record::{ExistingRecord, PreparedRecord};

/// The columns of a record as every read selects them (JSON read back as text).
macro_rules! record_columns {
    () => {
        concat!(
            "records.key, records.entity_type, records.connector, records.id, records.name, ",
            json_col!("records.entity", "entity"),
            ", ",
            json_col!("records.instance", "instance"),
            ", records.checksum, records.version, records.created_at, records.updated_at, \
             records.source, records.edited_at"
        )
    };
}
pub(super) use record_columns;

/// The look-up of [`existing_records`]: each listed key's checksum and whether it was edited.
pub(super) const FIND_EXISTING: &str = existing_rows!(concat!(
    "SELECT r.key, r.checksum, r.edited_at IS NOT NULL AS edited FROM ",
    records_with_keys!("$1")
));

/// What the visible catalog holds for `keys`: one `SELECT` of their checksums, found as the
/// backend finds a list of keys fastest (`records_with_keys!`) and read back as it reads many
/// rows at once (`existing_rows!`). A key listed twice is one entry.
pub(super) async fn existing_records<'k>(
    tx: &mut Tx,
    keys: impl IntoIterator<Item = &'k str>,
) -> StoreResult<HashMap<String, ExistingRecord>> {
    let query = sqlx::query(FIND_EXISTING).bind(in_list_arg(keys)?);
    Ok(read_existing(tx, query)
        .await?
        .into_iter()
        .map(|(key, checksum, edited)| (key, ExistingRecord { checksum, edited }))
        .collect())
}

/// Who writes a batch of records: its connector and, for pulled records, its source.
pub(super) struct Writer<'a> {
    pub entity_type: &'a str,
    pub connector: &'a str,
    /// `None` for contributed records (an update clears the source of a pulled one).
    pub source: Option<&'a str>,
    pub now: i64,
}

/// Upserts created and updated records, set-based: one statement for the batch. Rows go in key
/// order, so concurrent batches lock overlapping rows in one order instead of deadlocking.
pub(super) async fn write_records(
    tx: &mut Tx,
    writer: &Writer<'_>,
    mut writes: Vec<&PreparedRecord>,
) -> StoreResult<()> {
    static UPSERT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO records (key, entity_type, connector, id, name, entity, instance, checksum, \
                                  version, created_at, updated_at, source, edited_at) \
             SELECT u.key, $1, $2, u.id, u.name, {}, {}, u.checksum, 1, $4, $4, $3, NULL \
             FROM {} WHERE true \
             ON CONFLICT (key) DO UPDATE SET name = excluded.name, entity = excluded.entity, \
                 instance = excluded.instance, checksum = excluded.checksum, \
                 version = records.version + 1, updated_at = excluded.updated_at, \
                 source = excluded.source",
            json_value!("u.entity"),
            json_value!("u.instance"),
            rowset(5, &RECORD_COLUMNS)
        )
    });
    if writes.is_empty() {
        return Ok(());
    }
    writes.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let upsert = sqlx::query(&UPSERT)
        .bind(writer.entity_type)
        .bind(writer.connector)
        .bind(writer.source)
        .bind(writer.now);
    bind_rows(upsert, record_rows(writes))?
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes an import result inside `tx`.
pub(super) async fn insert_import_result(tx: &mut Tx, r: &ImportResult) -> StoreResult<()> {
    static INSERT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO import_results ({IMPORT_RESULT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, \
             $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        )
    });
    sqlx::query(&INSERT)
        .bind(&r.id)
        .bind(&r.connector)
        .bind(&r.session_id)
        .bind(&r.source)
        .bind(r.started_at)
        .bind(r.ended_at)
        .bind(r.status.as_str())
        .bind(to_i64(r.totals.created))
        .bind(to_i64(r.totals.updated))
        .bind(to_i64(r.totals.unchanged))
        .bind(to_i64(r.totals.skipped))
        .bind(to_i64(r.failed))
        .bind(to_i64(r.totals.deleted))
        .bind(to_i64(r.totals.swept))
        .bind(to_i64(r.sweep_refused))
        .bind(to_i64(r.pages))
        .bind(serde_json::to_string(&r.skipped_items)?)
        .bind(serde_json::to_string(&r.failed_items)?)
        .bind(to_i64(r.items_not_listed))
        .bind(serde_json::to_string(&r.errors)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
