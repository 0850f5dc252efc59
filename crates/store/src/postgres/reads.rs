//! Reading the visible catalog and import results on PostgreSQL.

use super::PgStore;
use crate::error::{StoreError, StoreResult};
use crate::rows::{self, count, IMPORT_RESULT_COLUMNS};
use tributary_core::checksum::canonical_json;
use tributary_core::error::ResourceKind;
use tributary_core::model::{ImportResult, StoredRecord};
use tributary_core::Error;

macro_rules! record_columns {
    () => {
        "key, entity_type, connector, id, name, entity::text AS entity, instance::text AS instance, checksum, version, created_at, updated_at, \
         source, edited_at"
    };
}

/// A record row with `entity`/`instance` back in canonical JSON text. JSONB prints its own
/// normal form (`{"a": 1}`, keys by length); the domain stored canonical text (RFC 8785) and
/// both backends hand the same text back, so anything hashing or comparing it agrees.
pub(super) fn record(row: &sqlx::postgres::PgRow) -> StoreResult<StoredRecord> {
    let mut r = rows::record(row)?;
    r.entity = canonical(&r.entity)?;
    r.instance = canonical(&r.instance)?;
    Ok(r)
}

fn canonical(text: &str) -> StoreResult<String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("record JSON: {e}")))?;
    Ok(canonical_json(&value)?)
}

pub(crate) async fn get_record(s: &PgStore, key: &str) -> StoreResult<Option<StoredRecord>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        record_columns!(),
        " FROM records WHERE key = $1"
    ))
    .bind(key)
    .fetch_optional(&s.pool)
    .await?;
    row.as_ref().map(record).transpose()
}

pub(crate) async fn get_records(s: &PgStore, keys: &[String]) -> StoreResult<Vec<StoredRecord>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let found = sqlx::query(concat!(
        "SELECT ",
        record_columns!(),
        " FROM records WHERE key = ANY($1)"
    ))
    .bind(keys)
    .fetch_all(&s.pool)
    .await?;
    found.iter().map(record).collect()
}

pub(crate) async fn list_records(
    s: &PgStore,
    entity_type: &str,
    after_key: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<StoredRecord>> {
    let found = sqlx::query(concat!(
        "SELECT ",
        record_columns!(),
        " FROM records WHERE entity_type = $1 AND key > $2 ORDER BY key LIMIT $3"
    ))
    .bind(entity_type)
    .bind(after_key.unwrap_or(""))
    .bind(i64::from(limit))
    .fetch_all(&s.pool)
    .await?;
    found.iter().map(record).collect()
}

pub(crate) async fn lookup_records(
    s: &PgStore,
    entity_type: &str,
    ids: &[String],
    connector: Option<&str>,
) -> StoreResult<Vec<StoredRecord>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let found = sqlx::query(concat!(
        "SELECT ",
        record_columns!(),
        " FROM records WHERE entity_type = $1 AND id = ANY($2) AND ($3::text IS NULL OR connector = $3)"
    ))
    .bind(entity_type)
    .bind(ids)
    .bind(connector)
    .fetch_all(&s.pool)
    .await?;
    found.iter().map(record).collect()
}

pub(crate) async fn count_records(s: &PgStore, entity_type: &str) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM records WHERE entity_type = $1")
        .bind(entity_type)
        .fetch_one(&s.pool)
        .await?;
    Ok(count(n))
}

pub(crate) async fn get_import_result(s: &PgStore, id: &str) -> StoreResult<ImportResult> {
    let sql = format!("SELECT {IMPORT_RESULT_COLUMNS} FROM import_results WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&s.pool)
        .await?
        .ok_or_else(|| Error::not_found(ResourceKind::ImportResult, id))?;
    rows::import_result(&row)
}

pub(crate) async fn list_import_results(
    s: &PgStore,
    connector: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<ImportResult>> {
    // Newest first; the page continues strictly after the row `after` in (ended_at, id) order.
    let sql = format!(
        "SELECT {IMPORT_RESULT_COLUMNS} FROM import_results \
         WHERE ($1::text IS NULL OR connector = $1) \
           AND ($2::text IS NULL OR (ended_at, id) < (SELECT ended_at, id FROM import_results WHERE id = $2)) \
         ORDER BY ended_at DESC, id DESC LIMIT $3"
    );
    let found = sqlx::query(&sql)
        .bind(connector)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&s.pool)
        .await?;
    found.iter().map(rows::import_result).collect()
}
