//! Pull sources on SQLite: definitions, claims, pages, sweeps, deltas and edits.
//!
//! Every write to `records` made for sources happens in exactly four functions:
//! [`write_source_records`] (pages and deltas), the sweep in [`end_cycle`], the delete of a
//! delta in [`push_source_delta`], and [`edit_record`].

use super::changes::{log_keys, Op, Sequencer};
use super::{insert_import_result, json_list, SqliteStore};
use crate::error::{unique_to_exists, StoreResult};
use crate::pull::{
    self, backoff_text, lease_lost, plan_page, to_millis, CycleClose, CYCLE_COLUMNS,
    SOURCE_COLUMNS, STATE_COLUMNS,
};
use crate::rows::{count, to_i64};
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, Transaction};
use std::collections::HashMap;
use tributary_core::error::ResourceKind;
use tributary_core::model::{Connector, ImportResult, ImportStatus, StoredRecord};
use tributary_core::record::KeyedId;
use tributary_core::record::{ExistingRecord, PreparedRecord};
use tributary_core::source::store::{Claim, RecordEdit};
use tributary_core::source::{
    ClaimedSource, CycleEnd, DeltaTotals, Lease, PageTotals, Source, SourcePage, SourceStatus,
};
use tributary_core::Error;

type Tx = Transaction<'static, Sqlite>;

fn not_found(id: &str) -> crate::error::StoreError {
    Error::not_found(ResourceKind::Source, id).into()
}

pub(crate) async fn create_source(s: &SqliteStore, src: &Source) -> StoreResult<()> {
    let mut tx = s.write().await?;
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM connectors WHERE id = ?1")
        .bind(&src.connector)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(Error::not_found(ResourceKind::Connector, &src.connector).into());
    }
    sqlx::query(&format!(
        "INSERT INTO sources ({SOURCE_COLUMNS}, next_run_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?15)"
    ))
    .bind(&src.id)
    .bind(&src.connector)
    .bind(&src.name)
    .bind(src.kind.as_str())
    .bind(src.config.to_string())
    .bind(src.mapping.to_string())
    .bind(src.schedule.to_text())
    .bind(to_millis(src.pacing.burst_length))
    .bind(to_millis(src.pacing.burst_interval))
    .bind(to_millis(src.pacing.rest_length))
    .bind(backoff_text(&src.pacing))
    .bind(src.reject_removals_above_percent)
    .bind(i64::from(src.reject_empty))
    .bind(i64::from(src.enabled))
    .bind(src.created_at)
    .bind(src.updated_at)
    .execute(&mut *tx)
    .await
    .map_err(unique_to_exists(ResourceKind::Source, &src.id))?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn get_source(s: &SqliteStore, id: &str) -> StoreResult<Source> {
    let row: Option<SqliteRow> = sqlx::query(&format!(
        "SELECT {SOURCE_COLUMNS} FROM sources WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(&s.reader)
    .await?;
    pull::source(&row.ok_or_else(|| not_found(id))?)
}

pub(crate) async fn list_sources(
    s: &SqliteStore,
    connector: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<Source>> {
    let rows: Vec<SqliteRow> = sqlx::query(&format!(
        "SELECT {SOURCE_COLUMNS} FROM sources WHERE (?1 IS NULL OR connector = ?1) AND id > ?2 \
         ORDER BY id LIMIT ?3"
    ))
    .bind(connector)
    .bind(after.unwrap_or(""))
    .bind(i64::from(limit))
    .fetch_all(&s.reader)
    .await?;
    rows.iter().map(pull::source).collect()
}

pub(crate) async fn update_source(s: &SqliteStore, src: &Source) -> StoreResult<Source> {
    let mut tx = s.write().await?;
    let row: Option<SqliteRow> = sqlx::query(&format!(
        "UPDATE sources SET name = ?2, kind = ?3, config = ?4, mapping = ?5, schedule = ?6, \
             burst_length_ms = ?7, burst_interval_ms = ?8, rest_length_ms = ?9, backoff_ms = ?10, \
             reject_removals_above_percent = ?11, reject_empty = ?12, enabled = ?13, updated_at = ?14 \
         WHERE id = ?1 RETURNING {SOURCE_COLUMNS}"
    ))
    .bind(&src.id)
    .bind(&src.name)
    .bind(src.kind.as_str())
    .bind(src.config.to_string())
    .bind(src.mapping.to_string())
    .bind(src.schedule.to_text())
    .bind(to_millis(src.pacing.burst_length))
    .bind(to_millis(src.pacing.burst_interval))
    .bind(to_millis(src.pacing.rest_length))
    .bind(backoff_text(&src.pacing))
    .bind(src.reject_removals_above_percent)
    .bind(i64::from(src.reject_empty))
    .bind(i64::from(src.enabled))
    .bind(src.updated_at)
    .fetch_optional(&mut *tx)
    .await?;
    let updated = pull::source(&row.ok_or_else(|| not_found(&src.id))?)?;
    tx.commit().await?;
    Ok(updated)
}

pub(crate) async fn delete_source(s: &SqliteStore, id: &str) -> StoreResult<()> {
    let mut tx = s.write().await?;
    let done = sqlx::query("DELETE FROM sources WHERE id = ?1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(not_found(id));
    }
    clear_cycle_rows(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

async fn clear_cycle_rows(tx: &mut Tx, id: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM source_marks WHERE source_id = ?1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM source_items WHERE source_id = ?1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) async fn source_status(s: &SqliteStore, id: &str) -> StoreResult<SourceStatus> {
    let row: Option<SqliteRow> = sqlx::query(&format!(
        "SELECT id, {STATE_COLUMNS}, (SELECT count(*) FROM source_marks WHERE source_id = ?1) AS marks \
         FROM sources WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(&s.reader)
    .await?;
    let row = row.ok_or_else(|| not_found(id))?;
    let marks: i64 = sqlx::Row::try_get(&row, "marks")?;
    pull::status(&row, count(marks))
}

pub(crate) async fn trigger_source(
    s: &SqliteStore,
    id: &str,
    now: i64,
) -> StoreResult<SourceStatus> {
    let mut tx = s.write().await?;
    let done = sqlx::query("UPDATE sources SET next_run_at = min(next_run_at, ?2) WHERE id = ?1")
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(not_found(id));
    }
    tx.commit().await?;
    source_status(s, id).await
}

pub(crate) async fn cancel_source(
    s: &SqliteStore,
    id: &str,
    now: i64,
    next_run_at: i64,
) -> StoreResult<Option<ImportResult>> {
    let mut tx = s.write().await?;
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM sources WHERE id = ?1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let state = state.ok_or_else(|| not_found(id))?;
    if !matches!(state.as_str(), "running" | "backoff") {
        // Ended explicitly: a dropped transaction's rollback is deferred, and meanwhile the row
        // lock would make a claim skip the source.
        tx.rollback().await?;
        return Ok(None);
    }
    let close = CycleClose {
        status: ImportStatus::Canceled,
        swept: 0,
        sweep_refused: 0,
        extra_error: Some("cancelled by CancelSource".into()),
    };
    let result = end_cycle(&mut tx, id, close, "idle", None, now, next_run_at).await?;
    tx.commit().await?;
    Ok(Some(result))
}

pub(crate) async fn next_source_due(s: &SqliteStore) -> StoreResult<Option<i64>> {
    Ok(
        // A leased source is claimable again only when its lease expires.
        sqlx::query_scalar(
            "SELECT min(max(next_run_at, coalesce(lease_expires_at, next_run_at))) FROM sources WHERE enabled = 1",
        )
            .fetch_one(&s.reader)
            .await?,
    )
}

pub(crate) async fn claim_sources(
    s: &SqliteStore,
    claim: &Claim<'_>,
) -> StoreResult<Vec<ClaimedSource>> {
    let cycle = uuid::Uuid::new_v4().simple().to_string();
    let mut tx = s.write().await?;
    // One statement decides every claim: due, enabled, and no live lease. A source that was
    // not in a cycle starts a fresh one here (new cycle id, no cursor, zeroed counters).
    let rows: Vec<SqliteRow> = sqlx::query(&format!(
        "UPDATE sources SET lease_holder = ?1, lease_expires_at = ?3, \
             cycle_id = CASE WHEN state IN ('running', 'backoff') THEN cycle_id ELSE ?4 END, \
             cycle_started_at = CASE WHEN state IN ('running', 'backoff') THEN cycle_started_at ELSE ?2 END, \
             cursor = CASE WHEN state IN ('running', 'backoff') THEN cursor ELSE NULL END, \
             attempts = CASE WHEN state IN ('running', 'backoff') THEN attempts ELSE 0 END, \
             c_created = CASE WHEN state IN ('running', 'backoff') THEN c_created ELSE 0 END, \
             c_updated = CASE WHEN state IN ('running', 'backoff') THEN c_updated ELSE 0 END, \
             c_unchanged = CASE WHEN state IN ('running', 'backoff') THEN c_unchanged ELSE 0 END, \
             c_skipped = CASE WHEN state IN ('running', 'backoff') THEN c_skipped ELSE 0 END, \
             c_failed = CASE WHEN state IN ('running', 'backoff') THEN c_failed ELSE 0 END, \
             c_pages = CASE WHEN state IN ('running', 'backoff') THEN c_pages ELSE 0 END, \
             c_listed = CASE WHEN state IN ('running', 'backoff') THEN c_listed ELSE 0 END, \
             c_not_listed = CASE WHEN state IN ('running', 'backoff') THEN c_not_listed ELSE 0 END, \
             c_errors = CASE WHEN state IN ('running', 'backoff') THEN c_errors ELSE '[]' END, \
             state = 'running' \
         WHERE id IN (SELECT id FROM sources WHERE enabled = 1 AND next_run_at <= ?2 \
                        AND (lease_holder IS NULL OR lease_expires_at < ?2) \
                      ORDER BY next_run_at LIMIT ?5) \
         RETURNING {SOURCE_COLUMNS}, {STATE_COLUMNS}"
    ))
    .bind(claim.holder)
    .bind(claim.now)
    .bind(claim.lease_until)
    .bind(&cycle)
    .bind(i64::from(claim.limit))
    .fetch_all(&mut *tx)
    .await?;
    // Fresh cycles start without marks or listed items (a cancelled cycle may have left some).
    for table in ["source_marks", "source_items"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE source_id IN (SELECT id FROM sources WHERE cycle_id = ?1)"
        ))
        .bind(&cycle)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    rows.iter()
        .map(|row| {
            Ok(ClaimedSource {
                source: pull::source(row)?,
                status: pull::status(row, 0)?,
            })
        })
        .collect()
}

/// Checks `lease` inside `tx`; answers the connector's entity type and write policy and how
/// many items the cycle listed so far.
async fn fence(tx: &mut Tx, lease: &Lease) -> StoreResult<(String, String, String, i64)> {
    let row: Option<(String, String, String, i64)> = sqlx::query_as(
        "SELECT c.id, c.entity_type, c.write_policy, s.c_listed \
         FROM sources s JOIN connectors c ON c.id = s.connector \
         WHERE s.id = ?1 AND s.lease_holder = ?2 AND s.cycle_id = ?3",
    )
    .bind(&lease.source_id)
    .bind(&lease.holder)
    .bind(&lease.cycle_id)
    .fetch_optional(&mut **tx)
    .await?;
    row.ok_or_else(|| lease_lost(&lease.source_id))
}

/// What the visible catalog holds for `keys`: one `SELECT` of their checksums.
async fn existing(
    tx: &mut Tx,
    records: &[PreparedRecord],
) -> StoreResult<HashMap<String, ExistingRecord>> {
    let found: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT key, checksum, edited_at IS NOT NULL FROM records WHERE key IN (SELECT value FROM json_each(?1))",
    )
    .bind(json_list(records.iter().map(|r| r.key.as_str()))?)
    .fetch_all(&mut **tx)
    .await?;
    Ok(found
        .into_iter()
        .map(|(key, checksum, edited)| (key, ExistingRecord { checksum, edited }))
        .collect())
}

/// Writes created/updated records of a page or delta, as the source's: one set-based upsert.
async fn write_source_records(
    tx: &mut Tx,
    entity_type: &str,
    connector: &str,
    source_id: &str,
    writes: &[&PreparedRecord],
    now: i64,
) -> StoreResult<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = writes
        .iter()
        .map(|r| {
            serde_json::json!({
                "key": r.key, "id": r.id, "name": r.name,
                "entity": r.entity, "instance": r.instance, "checksum": r.checksum,
            })
        })
        .collect();
    sqlx::query(
        "INSERT INTO records (key, entity_type, connector, id, name, entity, instance, checksum, version, \
                              created_at, updated_at, source, edited_at) \
         SELECT json_extract(j.value, '$.key'), ?2, ?3, json_extract(j.value, '$.id'), \
                json_extract(j.value, '$.name'), json_extract(j.value, '$.entity'), \
                json_extract(j.value, '$.instance'), json_extract(j.value, '$.checksum'), 1, ?5, ?5, ?4, NULL \
         FROM json_each(?1) AS j WHERE true \
         ON CONFLICT (key) DO UPDATE SET name = excluded.name, entity = excluded.entity, \
             instance = excluded.instance, checksum = excluded.checksum, version = records.version + 1, \
             updated_at = excluded.updated_at, source = excluded.source",
    )
    .bind(serde_json::to_string(&rows)?)
    .bind(entity_type)
    .bind(connector)
    .bind(source_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn mark(tx: &mut Tx, source_id: &str, records: &[PreparedRecord]) -> StoreResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO source_marks (source_id, key) SELECT ?1, value FROM json_each(?2) WHERE true \
         ON CONFLICT DO NOTHING",
    )
    .bind(source_id)
    .bind(json_list(records.iter().map(|r| r.key.as_str()))?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn apply_source_page(
    s: &SqliteStore,
    lease: &Lease,
    page: &SourcePage,
) -> StoreResult<PageTotals> {
    let mut tx = s.write().await?;
    let (connector, entity_type, policy, listed) = fence(&mut tx, lease).await?;
    let existing = existing(&mut tx, &page.records).await?;
    let plan = plan_page(&page.records, &existing, pull::policy(&policy)?);
    write_source_records(
        &mut tx,
        &entity_type,
        &connector,
        &lease.source_id,
        &plan.writes,
        page.now,
    )
    .await?;
    mark(&mut tx, &lease.source_id, &page.records).await?;
    let room = page.max_items.saturating_sub(count(listed));
    let (items, rest) = pull::items_to_list(plan.skipped, &page.failed_items, room);
    if !items.is_empty() {
        let rows: Vec<serde_json::Value> = items
            .iter()
            .enumerate()
            .map(|(i, (kind, item))| {
                Ok(serde_json::json!({
                    "seq": listed + i as i64, "kind": kind, "item": serde_json::to_string(item)?,
                }))
            })
            .collect::<StoreResult<_>>()?;
        sqlx::query(
            "INSERT INTO source_items (source_id, seq, kind, item) \
             SELECT ?1, json_extract(j.value, '$.seq'), json_extract(j.value, '$.kind'), \
                    json_extract(j.value, '$.item') FROM json_each(?2) AS j",
        )
        .bind(&lease.source_id)
        .bind(serde_json::to_string(&rows)?)
        .execute(&mut *tx)
        .await?;
    }
    let mut totals = plan.totals;
    totals.failed = page.failed_items.len() as u64;
    sqlx::query(
        "UPDATE sources SET cursor = ?2, lease_expires_at = ?3, attempts = 0, state = 'running', \
             c_created = c_created + ?4, c_updated = c_updated + ?5, c_unchanged = c_unchanged + ?6, \
             c_skipped = c_skipped + ?7, c_failed = c_failed + ?8, c_pages = c_pages + 1, \
             c_listed = c_listed + ?9, c_not_listed = c_not_listed + ?10 \
         WHERE id = ?1",
    )
    .bind(&lease.source_id)
    .bind(&page.next_cursor)
    .bind(page.lease_until)
    .bind(to_i64(totals.created))
    .bind(to_i64(totals.updated))
    .bind(to_i64(totals.unchanged))
    .bind(to_i64(totals.skipped))
    .bind(to_i64(totals.failed))
    .bind(items.len() as i64)
    .bind(to_i64(rest))
    .execute(&mut *tx)
    .await?;
    let logged = log_writes(&mut tx, &entity_type, &plan.writes, page.now).await?;
    tx.commit().await?;
    if let Some(sequence) = logged {
        s.changes.publish(sequence);
    }
    Ok(totals)
}

/// Logs an upsert for every record a page or delta wrote (ADR 0003).
async fn log_writes(
    tx: &mut Tx,
    entity_type: &str,
    writes: &[&PreparedRecord],
    now: i64,
) -> StoreResult<Option<u64>> {
    let keys: Vec<&str> = writes.iter().map(|r| r.key.as_str()).collect();
    log_keys(tx, entity_type, &keys, Op::Upsert, now).await
}

pub(crate) async fn source_page_failed(
    s: &SqliteStore,
    lease: &Lease,
    error: &str,
    _now: i64,
    retry_at: i64,
) -> StoreResult<()> {
    let mut tx = s.write().await?;
    fence(&mut tx, lease).await?;
    let errors: String = sqlx::query_scalar("SELECT c_errors FROM sources WHERE id = ?1")
        .bind(&lease.source_id)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE sources SET attempts = attempts + 1, last_error = ?2, c_errors = ?3, state = 'backoff', \
             lease_holder = NULL, lease_expires_at = NULL, next_run_at = ?4 WHERE id = ?1",
    )
    .bind(&lease.source_id)
    .bind(error)
    .bind(pull::push_error(&errors, error)?)
    .bind(retry_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn release_source(
    s: &SqliteStore,
    lease: &Lease,
    next_run_at: i64,
) -> StoreResult<()> {
    let mut tx = s.write().await?;
    let done = sqlx::query(
        "UPDATE sources SET lease_holder = NULL, lease_expires_at = NULL, next_run_at = ?4 \
         WHERE id = ?1 AND lease_holder = ?2 AND cycle_id = ?3",
    )
    .bind(&lease.source_id)
    .bind(&lease.holder)
    .bind(&lease.cycle_id)
    .bind(next_run_at)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(lease_lost(&lease.source_id));
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn finish_source_cycle(
    s: &SqliteStore,
    lease: &Lease,
    end: &CycleEnd,
    now: i64,
    next_run_at: i64,
) -> StoreResult<ImportResult> {
    let mut tx = s.write().await?;
    let (connector, _, _, _) = fence(&mut tx, lease).await?;
    let id = lease.source_id.as_str();
    let mut logged = None;
    let result = match end {
        CycleEnd::Failed { error } => {
            let close = CycleClose {
                status: ImportStatus::Failed,
                swept: 0,
                sweep_refused: 0,
                extra_error: Some(error.clone()),
            };
            end_cycle(&mut tx, id, close, "idle", Some(error), now, next_run_at).await?
        }
        CycleEnd::Done {
            reject_empty,
            reject_removals_above_percent: limit,
        } => {
            let (seen, candidates, total): (i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM source_marks WHERE source_id = ?1), \
                        count(*) FILTER (WHERE NOT EXISTS \
                            (SELECT 1 FROM source_marks m WHERE m.source_id = ?1 AND m.key = r.key)), \
                        count(*) \
                 FROM records r WHERE r.source = ?1 AND r.connector = ?2",
            )
            .bind(id)
            .bind(&connector)
            .fetch_one(&mut *tx)
            .await?;
            let (seen, candidates, total) = (count(seen), count(candidates), count(total));
            let refused = pull::sweep_guard(*reject_empty, *limit, seen, candidates, total);
            let mut swept = 0;
            if !refused && candidates > 0 {
                // Logged before the deletion, with the same predicate (ADR 0003).
                let mut seq = Sequencer::start(&mut tx).await?;
                let entries = sqlx::query(
                    "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
                     SELECT ?3 + row_number() OVER (ORDER BY key), entity_type, key, 'delete', ?4 \
                     FROM records WHERE source = ?1 AND connector = ?2 AND NOT EXISTS \
                     (SELECT 1 FROM source_marks m WHERE m.source_id = ?1 AND m.key = records.key)",
                )
                .bind(id)
                .bind(&connector)
                .bind(seq.base())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                seq.advance(entries.rows_affected());
                // The sweep: one anti-join against this cycle's marks.
                swept = sqlx::query(
                    "DELETE FROM records WHERE source = ?1 AND connector = ?2 AND NOT EXISTS \
                     (SELECT 1 FROM source_marks m WHERE m.source_id = ?1 AND m.key = records.key)",
                )
                .bind(id)
                .bind(&connector)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                logged = seq.finish(&mut tx).await?;
            }
            let cycle = read_cycle(&mut tx, id).await?;
            let close = CycleClose {
                status: pull::done_status(&cycle, refused),
                swept,
                sweep_refused: if refused { candidates } else { 0 },
                extra_error: refused
                    .then(|| pull::refusal_message(seen, candidates, total, *limit)),
            };
            end_cycle(&mut tx, id, close, "resting", None, now, next_run_at).await?
        }
    };
    tx.commit().await?;
    if let Some(sequence) = logged {
        s.changes.publish(sequence);
    }
    Ok(result)
}

async fn read_cycle(tx: &mut Tx, id: &str) -> StoreResult<pull::CycleRow> {
    let row: SqliteRow = sqlx::query(&format!(
        "SELECT {CYCLE_COLUMNS} FROM sources WHERE id = ?1"
    ))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    pull::cycle_row(&row)
}

/// Ends the current cycle of `id` inside `tx`: writes its import result, clears cursor, marks,
/// listed items, counters and lease, and sets the state and next run.
async fn end_cycle(
    tx: &mut Tx,
    id: &str,
    close: CycleClose,
    state: &str,
    last_error: Option<&String>,
    now: i64,
    next_run_at: i64,
) -> StoreResult<ImportResult> {
    let cycle = read_cycle(tx, id).await?;
    let items: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, item FROM source_items WHERE source_id = ?1 ORDER BY seq")
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
    let result = pull::cycle_result(id, &cycle, items, close, now)?;
    insert_import_result(tx, &result).await?;
    clear_cycle_rows(tx, id).await?;
    sqlx::query(
        "UPDATE sources SET state = ?2, cursor = NULL, cycle_id = NULL, cycle_started_at = NULL, \
             attempts = 0, last_error = ?3, last_run_at = ?4, next_run_at = ?5, lease_holder = NULL, \
             lease_expires_at = NULL, last_import_result = ?6, c_created = 0, c_updated = 0, \
             c_unchanged = 0, c_skipped = 0, c_failed = 0, c_pages = 0, c_listed = 0, \
             c_not_listed = 0, c_errors = '[]' \
         WHERE id = ?1",
    )
    .bind(id)
    .bind(state)
    .bind(last_error)
    .bind(now)
    .bind(next_run_at)
    .bind(&result.id)
    .execute(&mut **tx)
    .await?;
    Ok(result)
}

pub(crate) async fn push_source_delta(
    s: &SqliteStore,
    source: &Source,
    connector: &Connector,
    added: &[PreparedRecord],
    removed: &[KeyedId],
    now: i64,
) -> StoreResult<DeltaTotals> {
    let mut tx = s.write().await?;
    let policy: Option<String> = sqlx::query_scalar(
        "SELECT c.write_policy FROM sources s JOIN connectors c ON c.id = s.connector WHERE s.id = ?1",
    )
    .bind(&source.id)
    .fetch_optional(&mut *tx)
    .await?;
    let policy = pull::policy(&policy.ok_or_else(|| not_found(&source.id))?)?;
    let existing = existing(&mut tx, added).await?;
    let plan = plan_page(added, &existing, policy);
    write_source_records(
        &mut tx,
        &connector.entity_type,
        &connector.id,
        &source.id,
        &plan.writes,
        now,
    )
    .await?;
    mark(&mut tx, &source.id, added).await?;
    let mut deleted = 0;
    let mut logged = None;
    if !removed.is_empty() {
        let keys = json_list(removed.iter().map(|k| k.key.as_str()))?;
        let mut seq = Sequencer::start(&mut tx).await?;
        let entries = sqlx::query(
            "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
             SELECT ?3 + row_number() OVER (ORDER BY key), entity_type, key, 'delete', ?4 \
             FROM records WHERE connector = ?2 AND key IN (SELECT value FROM json_each(?1))",
        )
        .bind(&keys)
        .bind(&connector.id)
        .bind(seq.base())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        seq.advance(entries.rows_affected());
        deleted = sqlx::query(
            "DELETE FROM records WHERE connector = ?2 AND key IN (SELECT value FROM json_each(?1))",
        )
        .bind(&keys)
        .bind(&connector.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        logged = seq.finish(&mut tx).await?;
    }
    if let Some(last) = log_writes(&mut tx, &connector.entity_type, &plan.writes, now).await? {
        logged = Some(last);
    }
    tx.commit().await?;
    if let Some(sequence) = logged {
        s.changes.publish(sequence);
    }
    Ok(DeltaTotals {
        created: plan.totals.created,
        updated: plan.totals.updated,
        unchanged: plan.totals.unchanged,
        skipped: plan.totals.skipped,
        deleted,
    })
}

pub(crate) async fn edit_record(s: &SqliteStore, edit: &RecordEdit) -> StoreResult<StoredRecord> {
    let mut tx = s.write().await?;
    let row: Option<SqliteRow> = sqlx::query(
        "UPDATE records SET name = ?2, entity = ?3, instance = ?4, checksum = ?5, \
             version = version + 1, updated_at = ?6, edited_at = ?6 \
         WHERE key = ?1 \
         RETURNING key, entity_type, connector, id, name, entity, instance, checksum, version, \
                   created_at, updated_at, source, edited_at",
    )
    .bind(&edit.key)
    .bind(&edit.name)
    .bind(&edit.entity)
    .bind(&edit.instance)
    .bind(&edit.checksum)
    .bind(edit.now)
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or_else(|| Error::not_found(ResourceKind::Record, &edit.key))?;
    let record = crate::rows::record(&row)?;
    let logged = log_keys(
        &mut tx,
        &record.entity_type,
        &[record.key.as_str()],
        Op::Upsert,
        edit.now,
    )
    .await?;
    tx.commit().await?;
    if let Some(sequence) = logged {
        s.changes.publish(sequence);
    }
    Ok(record)
}
