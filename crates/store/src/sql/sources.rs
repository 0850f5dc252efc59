//! Pull sources (SPEC.md §5): definitions, claims, pages, sweeps, deltas and edits.
//!
//! Every write to `records` made for sources happens in exactly four places: `write_records`
//! (pages and deltas), the sweep in `finish_source_cycle`, the removals of a delta in
//! `push_source_delta`, and `edit_record`.

use super::changes::{log_keys, Sequencer};
use super::records::{
    existing_records, insert_import_result, record_columns, write_records, Writer,
};
use super::{
    bind_rows, in_list_arg, lock_stream_sessions, record_row, rowset, Backend, Query, Row, Tx,
};
use crate::batch::TextRows;
use crate::changes::{Logged, Op};
use crate::error::{run, unique_to_exists, StoreError, StoreResult};
use crate::pull::{
    self, backoff_text, lease_lost, plan_page, to_millis, CycleClose, CYCLE_COLUMNS,
    SOURCE_COLUMNS, STATE_COLUMNS,
};
use crate::rows::{count, to_i64};
use async_trait::async_trait;
use std::sync::LazyLock;
use tributary_core::error::ResourceKind;
use tributary_core::model::{Connector, ImportResult, ImportStatus, StoredRecord};
use tributary_core::record::{KeyedId, PreparedRecord};
use tributary_core::source::store::{Claim, RecordEdit, SourceStore};
use tributary_core::source::{
    ClaimedSource, CycleEnd, DeltaTotals, Lease, PageTotals, Source, SourcePage, SourceStatus,
};
use tributary_core::{Error, Result};

fn not_found(id: &str) -> StoreError {
    Error::not_found(ResourceKind::Source, id).into()
}

#[async_trait]
impl SourceStore for Backend {
    async fn create_source(&self, src: &Source) -> Result<()> {
        static INSERT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "INSERT INTO sources ({SOURCE_COLUMNS}, next_run_at) VALUES ($1, $2, $3, $4, $5, \
                 $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $15)"
            )
        });
        run(async {
            let mut tx = self.write().await?;
            let exists = sqlx::query("SELECT 1 FROM connectors WHERE id = $1")
                .bind(&src.connector)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(Error::not_found(ResourceKind::Connector, &src.connector).into());
            }
            let insert = sqlx::query(&INSERT).bind(&src.id).bind(&src.connector);
            bind_definition(insert, src)
                .bind(src.created_at)
                .bind(src.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(unique_to_exists(ResourceKind::Source, &src.id))?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn get_source(&self, id: &str) -> Result<Source> {
        static SELECT: LazyLock<String> =
            LazyLock::new(|| format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE id = $1"));
        run(async {
            let row: Option<Row> = sqlx::query(&SELECT)
                .bind(id)
                .fetch_optional(self.reader())
                .await?;
            pull::source(&row.ok_or_else(|| not_found(id))?)
        })
        .await
    }

    async fn list_sources(
        &self,
        connector: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Source>> {
        static SELECT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {SOURCE_COLUMNS} FROM sources \
                 WHERE (CAST($1 AS TEXT) IS NULL OR connector = $1) AND id > $2 \
                 ORDER BY id LIMIT $3"
            )
        });
        run(async {
            let rows: Vec<Row> = sqlx::query(&SELECT)
                .bind(connector)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await?;
            rows.iter().map(pull::source).collect()
        })
        .await
    }

    async fn update_source(&self, src: &Source) -> Result<Source> {
        static UPDATE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE sources SET name = $2, kind = $3, config = $4, mapping = $5, \
                     schedule = $6, burst_length_ms = $7, burst_interval_ms = $8, \
                     rest_length_ms = $9, backoff_ms = $10, reject_removals_above_percent = $11, \
                     reject_empty = $12, enabled = $13, updated_at = $14 \
                 WHERE id = $1 RETURNING {SOURCE_COLUMNS}"
            )
        });
        run(async {
            let update = sqlx::query(&UPDATE).bind(&src.id);
            let row: Option<Row> = bind_definition(update, src)
                .bind(src.updated_at)
                .fetch_optional(self.writer())
                .await?;
            pull::source(&row.ok_or_else(|| not_found(&src.id))?)
        })
        .await
    }

    async fn delete_source(&self, id: &str) -> Result<()> {
        run(async {
            let mut tx = self.write().await?;
            let done = sqlx::query("DELETE FROM sources WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(not_found(id));
            }
            clear_cycle_rows(&mut tx, id).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn source_status(&self, id: &str) -> Result<SourceStatus> {
        run(source_status(self, id)).await
    }

    async fn trigger_source(&self, id: &str, now: i64) -> Result<SourceStatus> {
        run(async {
            let done = sqlx::query(
                "UPDATE sources SET next_run_at = \
                 CASE WHEN next_run_at < $2 THEN next_run_at ELSE $2 END WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .execute(self.writer())
            .await?;
            if done.rows_affected() == 0 {
                return Err(not_found(id));
            }
            source_status(self, id).await
        })
        .await
    }

    async fn cancel_source(
        &self,
        id: &str,
        now: i64,
        next_run_at: i64,
    ) -> Result<Option<ImportResult>> {
        run(async {
            let mut tx = self.write().await?;
            let state: Option<String> = sqlx::query_scalar(concat!(
                "SELECT state FROM sources WHERE id = $1",
                for_update!()
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let state = state.ok_or_else(|| not_found(id))?;
            if !matches!(state.as_str(), "running" | "backoff") {
                // Ended explicitly: a dropped transaction's rollback is deferred, and meanwhile
                // the row lock would make a claim skip the source.
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
        })
        .await
    }

    async fn next_source_due(&self) -> Result<Option<i64>> {
        run(async {
            // A leased source is claimable again only when its lease expires.
            Ok(sqlx::query_scalar(
                "SELECT min(CASE WHEN lease_expires_at > next_run_at THEN lease_expires_at \
                                 ELSE next_run_at END) \
                 FROM sources WHERE enabled = 1",
            )
            .fetch_one(self.reader())
            .await?)
        })
        .await
    }

    async fn claim_sources(&self, claim: &Claim<'_>) -> Result<Vec<ClaimedSource>> {
        // One statement decides every claim: due, enabled, and no live lease. The conditions
        // are repeated outside the subquery so that, under PostgreSQL's READ COMMITTED, a row
        // another engine claimed meanwhile is re-checked against its new version and skipped.
        // A source that was not in a cycle starts a fresh one here (new cycle id, no cursor,
        // zeroed counters).
        static CLAIM: LazyLock<String> = LazyLock::new(|| {
            let keep = |column: &str, fresh: &str| {
                format!(
                    "{column} = CASE WHEN state IN ('running', 'backoff') THEN {column} \
                     ELSE {fresh} END"
                )
            };
            let resets = [
                keep("cycle_id", "$4"),
                keep("cycle_started_at", "$2"),
                keep("cursor", "NULL"),
                keep("attempts", "0"),
                keep("c_created", "0"),
                keep("c_updated", "0"),
                keep("c_unchanged", "0"),
                keep("c_skipped", "0"),
                keep("c_failed", "0"),
                keep("c_pages", "0"),
                keep("c_listed", "0"),
                keep("c_not_listed", "0"),
                keep("c_errors", "'[]'"),
            ]
            .join(", ");
            format!(
                "UPDATE sources SET lease_holder = $1, lease_expires_at = $3, {resets}, \
                     state = 'running' \
                 WHERE id IN (SELECT id FROM sources WHERE enabled = 1 AND next_run_at <= $2 \
                                AND (lease_holder IS NULL OR lease_expires_at < $2) \
                              ORDER BY next_run_at LIMIT $5{}) \
                   AND enabled = 1 AND next_run_at <= $2 \
                   AND (lease_holder IS NULL OR lease_expires_at < $2) \
                 RETURNING {SOURCE_COLUMNS}, {STATE_COLUMNS}",
                skip_locked!()
            )
        });
        run(async {
            let cycle = uuid::Uuid::new_v4().simple().to_string();
            let mut tx = self.write().await?;
            let rows: Vec<Row> = sqlx::query(&CLAIM)
                .bind(claim.holder)
                .bind(claim.now)
                .bind(claim.lease_until)
                .bind(&cycle)
                .bind(i64::from(claim.limit))
                .fetch_all(&mut *tx)
                .await?;
            // Fresh cycles start without marks or listed items (a cancelled cycle may have left
            // some).
            for sql in [
                "DELETE FROM source_marks WHERE source_id IN \
                 (SELECT id FROM sources WHERE cycle_id = $1)",
                "DELETE FROM source_items WHERE source_id IN \
                 (SELECT id FROM sources WHERE cycle_id = $1)",
            ] {
                sqlx::query(sql).bind(&cycle).execute(&mut *tx).await?;
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
        })
        .await
    }

    async fn apply_source_page(&self, lease: &Lease, page: &SourcePage) -> Result<PageTotals> {
        run(async {
            let mut tx = self.write().await?;
            let fenced = fence(&mut tx, lease).await?;
            let keys = page.records.iter().map(|r| r.key.as_str());
            let existing = existing_records(&mut tx, keys).await?;
            let plan = plan_page(&page.records, &existing, pull::policy(&fenced.policy)?);
            let written: Vec<&str> = plan.writes.iter().map(|r| r.key.as_str()).collect();
            let writer = Writer {
                entity_type: &fenced.entity_type,
                connector: &fenced.connector,
                source: Some(&lease.source_id),
                now: page.now,
            };
            write_records(&mut tx, &writer, plan.writes).await?;
            mark(&mut tx, &lease.source_id, &page.records).await?;
            let room = page.max_items.saturating_sub(count(fenced.listed));
            let (items, rest) = pull::items_to_list(plan.skipped, &page.failed_items, room);
            list_items(&mut tx, &lease.source_id, fenced.listed, &items).await?;
            let mut totals = plan.totals;
            totals.failed = page.failed_items.len() as u64;
            sqlx::query(
                "UPDATE sources SET cursor = $2, lease_expires_at = $3, attempts = 0, \
                     state = 'running', c_created = c_created + $4, c_updated = c_updated + $5, \
                     c_unchanged = c_unchanged + $6, c_skipped = c_skipped + $7, \
                     c_failed = c_failed + $8, c_pages = c_pages + 1, \
                     c_listed = c_listed + $9, c_not_listed = c_not_listed + $10 \
                 WHERE id = $1",
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
            // Last in the transaction, as for a stream batch: the counter is the page's last
            // lock (ADR 0003).
            let logged =
                log_keys(&mut tx, &fenced.entity_type, &written, Op::Upsert, page.now).await?;
            tx.commit().await?;
            if let Some(sequence) = logged {
                self.published(&sequence);
            }
            Ok(totals)
        })
        .await
    }

    async fn source_page_failed(
        &self,
        lease: &Lease,
        error: &str,
        _now: i64,
        retry_at: i64,
    ) -> Result<()> {
        run(async {
            let mut tx = self.write().await?;
            fence(&mut tx, lease).await?;
            let errors: String = sqlx::query_scalar("SELECT c_errors FROM sources WHERE id = $1")
                .bind(&lease.source_id)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE sources SET attempts = attempts + 1, last_error = $2, c_errors = $3, \
                     state = 'backoff', lease_holder = NULL, lease_expires_at = NULL, \
                     next_run_at = $4 \
                 WHERE id = $1",
            )
            .bind(&lease.source_id)
            .bind(error)
            .bind(pull::push_error(&errors, error)?)
            .bind(retry_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn release_source(&self, lease: &Lease, next_run_at: i64) -> Result<()> {
        run(async {
            let done = sqlx::query(
                "UPDATE sources SET lease_holder = NULL, lease_expires_at = NULL, next_run_at = $4 \
                 WHERE id = $1 AND lease_holder = $2 AND cycle_id = $3",
            )
            .bind(&lease.source_id)
            .bind(&lease.holder)
            .bind(&lease.cycle_id)
            .bind(next_run_at)
            .execute(self.writer())
            .await?;
            if done.rows_affected() == 0 {
                return Err(lease_lost(&lease.source_id));
            }
            Ok(())
        })
        .await
    }

    async fn finish_source_cycle(
        &self,
        lease: &Lease,
        end: &CycleEnd,
        now: i64,
        next_run_at: i64,
    ) -> Result<ImportResult> {
        run(async {
            let mut tx = self.write().await?;
            let Fenced {
                connector,
                entity_type,
                ..
            } = fence(&mut tx, lease).await?;
            let id = lease.source_id.as_str();
            let (result, logged) = match end {
                CycleEnd::Failed { error } => {
                    let close = CycleClose {
                        status: ImportStatus::Failed,
                        swept: 0,
                        sweep_refused: 0,
                        extra_error: Some(error.clone()),
                    };
                    let result =
                        end_cycle(&mut tx, id, close, "idle", Some(error), now, next_run_at)
                            .await?;
                    (result, None)
                }
                CycleEnd::Done {
                    reject_empty,
                    reject_removals_above_percent: limit,
                } => {
                    let (seen, candidates, total): (i64, i64, i64) = sqlx::query_as(
                        "SELECT (SELECT count(*) FROM source_marks WHERE source_id = $1), \
                                count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM source_marks m \
                                    WHERE m.source_id = $1 AND m.key = r.key)), \
                                count(*) \
                         FROM records r WHERE r.source = $1 AND r.connector = $2",
                    )
                    .bind(id)
                    .bind(&connector)
                    .fetch_one(&mut *tx)
                    .await?;
                    let (seen, candidates, total) = (count(seen), count(candidates), count(total));
                    let refused = pull::sweep_guard(*reject_empty, *limit, seen, candidates, total);
                    let (swept, logged) = if !refused && candidates > 0 {
                        sweep(&mut tx, id, &connector, &entity_type, now).await?
                    } else {
                        (0, None)
                    };
                    let cycle = read_cycle(&mut tx, id).await?;
                    let close = CycleClose {
                        status: pull::done_status(&cycle, refused),
                        swept,
                        sweep_refused: if refused { candidates } else { 0 },
                        extra_error: refused
                            .then(|| pull::refusal_message(seen, candidates, total, *limit)),
                    };
                    let result =
                        end_cycle(&mut tx, id, close, "resting", None, now, next_run_at).await?;
                    (result, logged)
                }
            };
            tx.commit().await?;
            if let Some(sequence) = logged {
                self.published(&sequence);
            }
            Ok(result)
        })
        .await
    }

    async fn push_source_delta(
        &self,
        source: &Source,
        connector: &Connector,
        added: &[PreparedRecord],
        removed: &[KeyedId],
        now: i64,
    ) -> Result<DeltaTotals> {
        run(async {
            let mut tx = self.write().await?;
            let policy: Option<String> = sqlx::query_scalar(
                "SELECT c.write_policy FROM sources s JOIN connectors c ON c.id = s.connector \
                 WHERE s.id = $1",
            )
            .bind(&source.id)
            .fetch_optional(&mut *tx)
            .await?;
            let policy = pull::policy(&policy.ok_or_else(|| not_found(&source.id))?)?;
            let existing = existing_records(&mut tx, added.iter().map(|r| r.key.as_str())).await?;
            let plan = plan_page(added, &existing, policy);
            let written: Vec<&str> = plan.writes.iter().map(|r| r.key.as_str()).collect();
            let writer = Writer {
                entity_type: &connector.entity_type,
                connector: &connector.id,
                source: Some(&source.id),
                now,
            };
            write_records(&mut tx, &writer, plan.writes).await?;
            mark(&mut tx, &source.id, added).await?;
            let (deleted, mut logged) = if removed.is_empty() {
                (0, None)
            } else {
                remove(&mut tx, connector, removed, now).await?
            };
            let upserted =
                log_keys(&mut tx, &connector.entity_type, &written, Op::Upsert, now).await?;
            logged = upserted.or(logged);
            tx.commit().await?;
            if let Some(sequence) = logged {
                self.published(&sequence);
            }
            Ok(DeltaTotals {
                created: plan.totals.created,
                updated: plan.totals.updated,
                unchanged: plan.totals.unchanged,
                skipped: plan.totals.skipped,
                deleted,
            })
        })
        .await
    }

    async fn edit_record(&self, edit: &RecordEdit) -> Result<StoredRecord> {
        run(async {
            let mut tx = self.write().await?;
            let row: Option<Row> = sqlx::query(concat!(
                "UPDATE records SET name = $2, entity = ",
                json_value!("$3"),
                ", instance = ",
                json_value!("$4"),
                ", checksum = $5, version = version + 1, updated_at = $6, edited_at = $6 \
                 WHERE key = $1 RETURNING ",
                record_columns!()
            ))
            .bind(&edit.key)
            .bind(&edit.name)
            .bind(&edit.entity)
            .bind(&edit.instance)
            .bind(&edit.checksum)
            .bind(edit.now)
            .fetch_optional(&mut *tx)
            .await?;
            let row = row.ok_or_else(|| Error::not_found(ResourceKind::Record, &edit.key))?;
            let record = record_row(&row)?;
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
                self.published(&sequence);
            }
            Ok(record)
        })
        .await
    }
}

/// Binds a source's definition, from `name` to `enabled`, in the order of `SOURCE_COLUMNS`.
fn bind_definition<'q>(query: Query<'q>, src: &'q Source) -> Query<'q> {
    query
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
}

async fn source_status(s: &Backend, id: &str) -> StoreResult<SourceStatus> {
    static SELECT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT id, {STATE_COLUMNS}, \
                    (SELECT count(*) FROM source_marks WHERE source_id = $1) AS marks \
             FROM sources WHERE id = $1"
        )
    });
    let row: Option<Row> = sqlx::query(&SELECT)
        .bind(id)
        .fetch_optional(s.reader())
        .await?;
    let row = row.ok_or_else(|| not_found(id))?;
    let marks: i64 = sqlx::Row::try_get(&row, "marks")?;
    pull::status(&row, count(marks))
}

async fn clear_cycle_rows(tx: &mut Tx, id: &str) -> StoreResult<()> {
    for sql in [
        "DELETE FROM source_marks WHERE source_id = $1",
        "DELETE FROM source_items WHERE source_id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut **tx).await?;
    }
    Ok(())
}

/// What a lease's writes need to know of its source's connector.
struct Fenced {
    connector: String,
    entity_type: String,
    policy: String,
    /// How many items the cycle listed so far.
    listed: i64,
}

/// Checks `lease` inside `tx` (locking the source row on PostgreSQL).
async fn fence(tx: &mut Tx, lease: &Lease) -> StoreResult<Fenced> {
    let row: Option<(String, String, String, i64)> = sqlx::query_as(concat!(
        "SELECT c.id, c.entity_type, c.write_policy, s.c_listed \
         FROM sources s JOIN connectors c ON c.id = s.connector \
         WHERE s.id = $1 AND s.lease_holder = $2 AND s.cycle_id = $3",
        for_update_of!("s")
    ))
    .bind(&lease.source_id)
    .bind(&lease.holder)
    .bind(&lease.cycle_id)
    .fetch_optional(&mut **tx)
    .await?;
    let (connector, entity_type, policy, listed) =
        row.ok_or_else(|| lease_lost(&lease.source_id))?;
    Ok(Fenced {
        connector,
        entity_type,
        policy,
        listed,
    })
}

/// Marks a page's records as seen in the current cycle.
async fn mark(tx: &mut Tx, source_id: &str, records: &[PreparedRecord]) -> StoreResult<()> {
    static MARK: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO source_marks (source_id, key) SELECT $1, u.key FROM {} WHERE true \
             ON CONFLICT DO NOTHING",
            rowset(2, &["key"])
        )
    });
    if records.is_empty() {
        return Ok(());
    }
    let keys = TextRows::column(records.iter().map(|r| r.key.as_str()));
    bind_rows(sqlx::query(&MARK).bind(source_id), keys)?
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Lists skipped and failed items in the cycle's report, numbered after the `listed` so far.
async fn list_items(
    tx: &mut Tx,
    source_id: &str,
    listed: i64,
    items: &[(&str, tributary_core::model::ImportItem)],
) -> StoreResult<()> {
    static LIST: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO source_items (source_id, seq, kind, item) \
             SELECT $1, $2 + u.ord - 1, u.kind, u.item FROM {}",
            rowset(3, &["kind", "item"])
        )
    });
    if items.is_empty() {
        return Ok(());
    }
    let texts: Vec<String> = items
        .iter()
        .map(|(_, item)| serde_json::to_string(item))
        .collect::<std::result::Result<_, _>>()?;
    let mut rows = TextRows::new(2);
    for ((kind, _), text) in items.iter().zip(&texts) {
        rows.push(&[kind, text]);
    }
    bind_rows(sqlx::query(&LIST).bind(source_id).bind(listed), rows)?
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The sweep: deletes the source's records not marked in this cycle (one anti-join), logged
/// before the deletion with the same predicate (ADR 0003). Answers how many went and the last
/// change-log sequence.
async fn sweep(
    tx: &mut Tx,
    source_id: &str,
    connector: &str,
    entity_type: &str,
    now: i64,
) -> StoreResult<(u64, Option<Logged>)> {
    lock_stream_sessions(tx, connector).await?;
    let mut seq = Sequencer::start(tx, entity_type).await?;
    let entries = sqlx::query(
        "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
         SELECT $3 + row_number() OVER (ORDER BY key), entity_type, key, 'delete', $4 \
         FROM records WHERE source = $1 AND connector = $2 AND NOT EXISTS \
         (SELECT 1 FROM source_marks m WHERE m.source_id = $1 AND m.key = records.key)",
    )
    .bind(source_id)
    .bind(connector)
    .bind(seq.base())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    seq.advance(entries.rows_affected());
    let swept = sqlx::query(
        "DELETE FROM records WHERE source = $1 AND connector = $2 AND NOT EXISTS \
         (SELECT 1 FROM source_marks m WHERE m.source_id = $1 AND m.key = records.key)",
    )
    .bind(source_id)
    .bind(connector)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok((swept, seq.finish(tx).await?))
}

/// A delta's removals: deleted, and logged first under the counter taken after the
/// connector's stream sessions (as a commit does). Answers how many went and the last sequence.
async fn remove(
    tx: &mut Tx,
    connector: &Connector,
    removed: &[KeyedId],
    now: i64,
) -> StoreResult<(u64, Option<Logged>)> {
    lock_stream_sessions(tx, &connector.id).await?;
    let keys = || in_list_arg(removed.iter().map(|k| k.key.as_str()));
    let mut seq = Sequencer::start(tx, &connector.entity_type).await?;
    let entries = sqlx::query(concat!(
        "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
         SELECT $2 + row_number() OVER (ORDER BY key), entity_type, key, 'delete', $3 \
         FROM records WHERE connector = $1 AND ",
        in_list!("key", "$4")
    ))
    .bind(&connector.id)
    .bind(seq.base())
    .bind(now)
    .bind(keys()?)
    .execute(&mut **tx)
    .await?;
    seq.advance(entries.rows_affected());
    let deleted = sqlx::query(concat!(
        "DELETE FROM records WHERE connector = $1 AND ",
        in_list!("key", "$2")
    ))
    .bind(&connector.id)
    .bind(keys()?)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok((deleted, seq.finish(tx).await?))
}

async fn read_cycle(tx: &mut Tx, id: &str) -> StoreResult<pull::CycleRow> {
    static SELECT: LazyLock<String> =
        LazyLock::new(|| format!("SELECT {CYCLE_COLUMNS} FROM sources WHERE id = $1"));
    let row: Row = sqlx::query(&SELECT).bind(id).fetch_one(&mut **tx).await?;
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
        sqlx::query_as("SELECT kind, item FROM source_items WHERE source_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
    let result = pull::cycle_result(id, &cycle, items, close, now)?;
    insert_import_result(tx, &result).await?;
    clear_cycle_rows(tx, id).await?;
    sqlx::query(
        "UPDATE sources SET state = $2, cursor = NULL, cycle_id = NULL, cycle_started_at = NULL, \
             attempts = 0, last_error = $3, last_run_at = $4, next_run_at = $5, \
             lease_holder = NULL, lease_expires_at = NULL, last_import_result = $6, \
             c_created = 0, c_updated = 0, c_unchanged = 0, c_skipped = 0, c_failed = 0, \
             c_pages = 0, c_listed = 0, c_not_listed = 0, c_errors = '[]' \
         WHERE id = $1",
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
