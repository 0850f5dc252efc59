//! The visible catalog (SPEC.md §3, §6): records, listings in one snapshot with their change-log
//! sequence, the change log read back and pruned, and import results.

use super::records::record_columns;
use super::{
    bound_statements, bounded_snapshot, can_hold_snapshot, end_bounded, in_list_arg, record_row,
    snapshot, wait_for_changes, Backend, Listing, Tx,
};
use crate::error::{run, StoreResult};
use crate::query::{self, Arg};
use crate::rows::{self, count, to_i64, IMPORT_RESULT_COLUMNS};
use async_trait::async_trait;
use sqlx::Row as _;
use std::sync::LazyLock;
use tributary_core::error::ResourceKind;
use tributary_core::model::{ImportResult, StoredRecord};
use tributary_core::query::Filter;
use tributary_core::store::{
    CatalogSnapshot, CatalogStore, ChangeLogPage, ImportResultFilter, LoggedChange, RecordPage,
    RecordQuery,
};
use tributary_core::{Error, Result};

/// Binds a compiled query's arguments, in order, to a `query` or `query_scalar` statement.
macro_rules! bind_args {
    ($statement:expr, $args:expr) => {{
        let mut statement = $statement;
        for a in $args {
            statement = match a {
                Arg::Text(v) | Arg::Json(v) => statement.bind(v),
                Arg::Int(v) => statement.bind(v),
                Arg::Float(v) => statement.bind(v),
            };
        }
        statement
    }};
}

/// Entries pruned per transaction, so pruning never holds a writer for long.
const PRUNE_CHUNK: i64 = 10_000;

#[async_trait]
impl CatalogStore for Backend {
    async fn get_record(&self, key: &str) -> Result<Option<StoredRecord>> {
        run(async {
            let row = sqlx::query(concat!(
                "SELECT ",
                record_columns!(),
                " FROM records WHERE key = $1"
            ))
            .bind(key)
            .fetch_optional(self.reader())
            .await?;
            row.as_ref().map(record_row).transpose()
        })
        .await
    }

    async fn get_records(&self, keys: &[String]) -> Result<Vec<StoredRecord>> {
        run(async {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let found = sqlx::query(concat!(
                "SELECT ",
                record_columns!(),
                " FROM records WHERE ",
                in_list!("key", "$1")
            ))
            .bind(in_list_arg(keys.iter().map(String::as_str))?)
            .fetch_all(self.reader())
            .await?;
            found.iter().map(record_row).collect()
        })
        .await
    }

    async fn list_records(
        &self,
        entity_type: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredRecord>> {
        run(async {
            let found = sqlx::query(concat!(
                "SELECT ",
                record_columns!(),
                " FROM records WHERE entity_type = $1 AND key > $2 ORDER BY key LIMIT $3"
            ))
            .bind(entity_type)
            .bind(after_key.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(self.reader())
            .await?;
            found.iter().map(record_row).collect()
        })
        .await
    }

    async fn lookup_records(
        &self,
        entity_type: &str,
        ids: &[String],
        connector: Option<&str>,
    ) -> Result<Vec<StoredRecord>> {
        run(async {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let found = sqlx::query(concat!(
                "SELECT ",
                record_columns!(),
                " FROM records WHERE entity_type = $1 AND (CAST($2 AS TEXT) IS NULL OR connector = $2) AND ",
                in_list!("id", "$3")
            ))
            .bind(entity_type)
            .bind(connector)
            .bind(in_list_arg(ids.iter().map(String::as_str))?)
            .fetch_all(self.reader())
            .await?;
            found.iter().map(record_row).collect()
        })
        .await
    }

    async fn query_records(&self, query: &RecordQuery<'_>) -> Result<RecordPage> {
        run(async {
            let mut tx = bounded_snapshot(self).await?;
            let page = read_page(&mut tx, query).await;
            end_bounded(&mut tx).await;
            let page = page?;
            tx.commit().await?;
            Ok(page)
        })
        .await
    }

    async fn count_matching(
        &self,
        entity_type: &str,
        filter: Option<&Filter>,
    ) -> Result<(u64, u64)> {
        run(async {
            let (sql, args) = query::compile_count::<Listing>(entity_type, filter);
            let mut tx = bounded_snapshot(self).await?;
            let counted = async {
                let sequence = current_sequence(&mut tx).await?;
                let n: i64 = bind_args!(sqlx::query_scalar(&sql), args)
                    .fetch_one(&mut *tx)
                    .await?;
                StoreResult::Ok((count(n), count(sequence)))
            }
            .await;
            end_bounded(&mut tx).await;
            let counted = counted?;
            tx.commit().await?;
            Ok(counted)
        })
        .await
    }

    async fn open_snapshot(&self) -> Result<Box<dyn CatalogSnapshot>> {
        if !can_hold_snapshot(self) {
            return Ok(Box::new(PagewiseSnapshot(self.clone())));
        }
        run(async {
            let mut tx = snapshot(self).await?;
            // The snapshot is taken by the first statement, not by BEGIN: take it now.
            current_sequence(&mut tx).await?;
            let held: Box<dyn CatalogSnapshot> = Box::new(HeldSnapshot {
                tx,
                timeout: self.query_timeout,
            });
            Ok(held)
        })
        .await
    }

    async fn read_changes(
        &self,
        entity_type: &str,
        after: u64,
        limit: u32,
    ) -> Result<ChangeLogPage> {
        run(async {
            let mut tx = snapshot(self).await?;
            let (last_sequence, pruned_through): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT last_seq FROM change_sequence WHERE id = 1), \
                        (SELECT through_seq FROM change_log_pruned WHERE id = 1)",
            )
            .fetch_one(&mut *tx)
            .await?;
            let found = sqlx::query(concat!(
                "SELECT c.seq AS change_seq, c.key AS change_key, c.op AS change_op, ",
                record_columns!(),
                " FROM change_log AS c LEFT JOIN records ON c.op = 'upsert' AND records.key = c.key \
                  WHERE c.entity_type = $1 AND c.seq > $2 ORDER BY c.seq LIMIT $3"
            ))
            .bind(entity_type)
            .bind(to_i64(after))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            let changes = found
                .iter()
                .map(|row| {
                    let joined = match row.try_get::<Option<String>, _>("key")? {
                        Some(_) => Some(record_row(row)?),
                        None => None,
                    };
                    Ok(LoggedChange {
                        sequence: count(row.try_get("change_seq")?),
                        key: row.try_get("change_key")?,
                        deleted: row.try_get::<String, _>("change_op")? == "delete",
                        record: joined,
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(ChangeLogPage {
                changes,
                last_sequence: count(last_sequence),
                pruned_through: count(pruned_through),
            })
        })
        .await
    }

    async fn wait_for_changes(&self, entity_type: &str, after: u64) {
        wait_for_changes(self, entity_type, after).await
    }

    async fn prune_changes(&self, recorded_before: i64) -> Result<u64> {
        run(async {
            let mut total = 0;
            loop {
                let mut tx = self.write().await?;
                // Pruned as a prefix (by sequence), a chunk at a time: the newest old entry among
                // the oldest chunk bounds it, so no entry survives below the recorded horizon.
                // The horizon row is locked so replicas pruning together do not interleave.
                sqlx::query(concat!(
                    "SELECT 1 FROM change_log_pruned WHERE id = 1",
                    for_update!()
                ))
                .execute(&mut *tx)
                .await?;
                let through: Option<i64> = sqlx::query_scalar(
                    "SELECT max(seq) FROM \
                     (SELECT seq, recorded_at FROM change_log ORDER BY seq LIMIT $2) AS c \
                     WHERE recorded_at < $1",
                )
                .bind(recorded_before)
                .bind(PRUNE_CHUNK)
                .fetch_one(&mut *tx)
                .await?;
                let Some(through) = through else {
                    tx.commit().await?;
                    return Ok(total);
                };
                let deleted = sqlx::query("DELETE FROM change_log WHERE seq <= $1")
                    .bind(through)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query(
                    "UPDATE change_log_pruned SET through_seq = \
                     CASE WHEN through_seq > $1 THEN through_seq ELSE $1 END WHERE id = 1",
                )
                .bind(through)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                total += deleted;
                if deleted < PRUNE_CHUNK as u64 {
                    return Ok(total);
                }
            }
        })
        .await
    }

    async fn get_import_result(&self, id: &str) -> Result<ImportResult> {
        static SELECT: LazyLock<String> = LazyLock::new(|| {
            format!("SELECT {IMPORT_RESULT_COLUMNS} FROM import_results WHERE id = $1")
        });
        run(async {
            let row = sqlx::query(&SELECT)
                .bind(id)
                .fetch_optional(self.reader())
                .await?
                .ok_or_else(|| Error::not_found(ResourceKind::ImportResult, id))?;
            rows::import_result(&row)
        })
        .await
    }

    async fn list_import_results(
        &self,
        filter: &ImportResultFilter<'_>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ImportResult>> {
        // Newest first; the page continues strictly after the row `after` in (ended_at, id)
        // order.
        static SELECT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {IMPORT_RESULT_COLUMNS} FROM import_results \
                 WHERE (CAST($1 AS TEXT) IS NULL OR connector = $1) \
                   AND (CAST($4 AS TEXT) IS NULL OR source = $4) \
                   AND (CAST($5 AS TEXT) IS NULL OR status = $5) \
                   AND (CAST($2 AS TEXT) IS NULL OR (ended_at, id) < \
                        (SELECT ended_at, id FROM import_results WHERE id = $2)) \
                 ORDER BY ended_at DESC, id DESC LIMIT $3"
            )
        });
        run(async {
            let found = sqlx::query(&SELECT)
                .bind(filter.connector)
                .bind(after)
                .bind(i64::from(limit))
                .bind(filter.source)
                .bind(filter.status.map(|s| s.as_str()))
                .fetch_all(self.reader())
                .await?;
            found.iter().map(rows::import_result).collect()
        })
        .await
    }
}

/// The change-log sequence in `tx`'s snapshot: every change up to it is visible there.
async fn current_sequence(tx: &mut Tx) -> StoreResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT last_seq FROM change_sequence WHERE id = 1")
            .fetch_one(&mut **tx)
            .await?,
    )
}

/// A page of `query` and the change-log sequence, both read in `tx`'s snapshot: the page holds
/// every change up to that sequence and none after it (writers take sequences in commit order).
async fn read_page(tx: &mut Tx, query: &RecordQuery<'_>) -> StoreResult<RecordPage> {
    let (sql, args) = query::compile::<Listing>(query, record_columns!())?;
    let statement = bind_args!(sqlx::query(&sql), args);
    let sequence = current_sequence(tx).await?;
    let found = statement.fetch_all(&mut **tx).await?;
    let records = found
        .iter()
        .map(record_row)
        .collect::<StoreResult<Vec<_>>>()?;
    let last = match (found.last(), records.last()) {
        (Some(row), Some(r)) => Some(query::cursor_of(
            &row.try_get::<String, _>("sort_values")?,
            r.key.clone(),
        )?),
        _ => None,
    };
    Ok(RecordPage {
        records,
        last,
        sequence: count(sequence),
    })
}

/// One read transaction held open for an export's run; each page's statements are bounded by
/// the query timeout anew, so a long export is not cut off, but no one page runs unbounded.
struct HeldSnapshot {
    tx: Tx,
    timeout: std::time::Duration,
}

#[async_trait]
impl CatalogSnapshot for HeldSnapshot {
    async fn query_records(&mut self, query: &RecordQuery<'_>) -> Result<RecordPage> {
        run(async {
            bound_statements(&mut self.tx, self.timeout).await?;
            let page = read_page(&mut self.tx, query).await;
            end_bounded(&mut self.tx).await;
            page
        })
        .await
    }
}

/// Where no transaction can be held open (an in-memory SQLite database has a single connection,
/// which every other call would then wait for), each page is a snapshot of its own.
struct PagewiseSnapshot(Backend);

#[async_trait]
impl CatalogSnapshot for PagewiseSnapshot {
    async fn query_records(&mut self, query: &RecordQuery<'_>) -> Result<RecordPage> {
        self.0.query_records(query).await
    }
}
