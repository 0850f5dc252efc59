//! The change log on SQLite: appending entries in the writing transaction, reading them back
//! joined to the records, and pruning. SQLite has one writer at a time (the writer pool has one
//! connection), so sequences are assigned and committed in order without further locking.

use super::listing::record_columns;
use super::{json_list, SqliteStore};
use crate::error::StoreResult;
use crate::rows::{self, count, to_i64};
use sqlx::{Row, Sqlite, Transaction};
use tributary_core::store::{ChangeLogPage, LoggedChange};

/// What a change-log entry says happened to its record.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    Upsert,
    Delete,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }
}

/// Logs `op` for `keys` (records of `entity_type`) at the next sequences, in key order like
/// every set-based entry; answers the last sequence, or `None` when there was nothing to log. One statement for the whole batch.
pub(super) async fn log_keys(
    tx: &mut Transaction<'static, Sqlite>,
    entity_type: &str,
    keys: &[&str],
    op: Op,
    now: i64,
) -> StoreResult<Option<u64>> {
    if keys.is_empty() {
        return Ok(None);
    }
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    let n = to_i64(keys.len() as u64);
    let last: i64 = sqlx::query_scalar(
        "UPDATE change_sequence SET last_seq = last_seq + ?1 WHERE id = 1 RETURNING last_seq",
    )
    .bind(n)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
         SELECT ?1 + j.key + 1, ?2, j.value, ?3, ?4 FROM json_each(?5) AS j",
    )
    .bind(last - n)
    .bind(entity_type)
    .bind(op.as_str())
    .bind(now)
    .bind(json_list(keys)?)
    .execute(&mut **tx)
    .await?;
    Ok(Some(count(last)))
}

/// Hands out sequences to set-based `INSERT INTO change_log … SELECT` statements of one
/// transaction, and moves the counter once at the end.
pub(super) struct Sequencer {
    first: i64,
    last: i64,
}

impl Sequencer {
    /// Reads the counter (the single writer connection keeps it ours until commit).
    pub(super) async fn start(tx: &mut Transaction<'static, Sqlite>) -> StoreResult<Self> {
        let last: i64 = sqlx::query_scalar("SELECT last_seq FROM change_sequence WHERE id = 1")
            .fetch_one(&mut **tx)
            .await?;
        Ok(Self { first: last, last })
    }

    /// The sequence after which the next statement's entries are numbered (`base +
    /// row_number()`).
    pub(super) fn base(&self) -> i64 {
        self.last
    }

    /// Counts `entries` appended by a statement numbered from [`Sequencer::base`].
    pub(super) fn advance(&mut self, entries: u64) {
        self.last += to_i64(entries);
    }

    /// Moves the counter past the entries appended; answers the last sequence, if any.
    pub(super) async fn finish(
        self,
        tx: &mut Transaction<'static, Sqlite>,
    ) -> StoreResult<Option<u64>> {
        if self.last == self.first {
            return Ok(None);
        }
        sqlx::query("UPDATE change_sequence SET last_seq = ?1 WHERE id = 1")
            .bind(self.last)
            .execute(&mut **tx)
            .await?;
        Ok(Some(count(self.last)))
    }
}

/// Logs a delete for every record of a connector, or of an entity type, before they go.
pub(super) async fn log_deletes_where(
    tx: &mut Transaction<'static, Sqlite>,
    column: DeleteScope,
    value: &str,
    now: i64,
) -> StoreResult<Option<u64>> {
    let mut seq = Sequencer::start(tx).await?;
    let sql = format!(
        "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
         SELECT ?1 + row_number() OVER (ORDER BY key), entity_type, key, 'delete', ?2 \
         FROM records WHERE {} = ?3",
        column.as_str()
    );
    let logged = sqlx::query(&sql)
        .bind(seq.base())
        .bind(now)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    seq.advance(logged.rows_affected());
    seq.finish(tx).await
}

/// Which records a bulk deletion takes.
#[derive(Debug, Clone, Copy)]
pub(super) enum DeleteScope {
    Connector,
    EntityType,
}

impl DeleteScope {
    fn as_str(self) -> &'static str {
        match self {
            DeleteScope::Connector => "connector",
            DeleteScope::EntityType => "entity_type",
        }
    }
}

pub(crate) async fn read_changes(
    s: &SqliteStore,
    entity_type: &str,
    after: u64,
    limit: u32,
) -> StoreResult<ChangeLogPage> {
    let mut tx = s.reader.begin().await?;
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
          WHERE c.entity_type = ?1 AND c.seq > ?2 ORDER BY c.seq LIMIT ?3"
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
            let record = match row.try_get::<Option<String>, _>("key")? {
                Some(_) => Some(rows::record(row)?),
                None => None,
            };
            Ok(LoggedChange {
                sequence: count(row.try_get("change_seq")?),
                key: row.try_get("change_key")?,
                deleted: row.try_get::<String, _>("change_op")? == "delete",
                record,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(ChangeLogPage {
        changes,
        last_sequence: count(last_sequence),
        pruned_through: count(pruned_through),
    })
}

/// Entries pruned per transaction, so pruning never holds the writer for long.
const PRUNE_CHUNK: i64 = 10_000;

pub(crate) async fn prune_changes(s: &SqliteStore, recorded_before: i64) -> StoreResult<u64> {
    let mut total = 0;
    loop {
        let mut tx = s.write().await?;
        // The log is pruned as a prefix (by sequence): the newest old entry among the oldest
        // chunk bounds it, so no entry survives below the recorded horizon.
        let through: Option<i64> = sqlx::query_scalar(
            "SELECT max(seq) FROM (SELECT seq, recorded_at FROM change_log ORDER BY seq LIMIT ?2) \
             WHERE recorded_at < ?1",
        )
        .bind(recorded_before)
        .bind(PRUNE_CHUNK)
        .fetch_one(&mut *tx)
        .await?;
        let Some(through) = through else {
            tx.commit().await?;
            return Ok(total);
        };
        let deleted = sqlx::query("DELETE FROM change_log WHERE seq <= ?1")
            .bind(through)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE change_log_pruned SET through_seq = max(through_seq, ?1) WHERE id = 1")
            .bind(through)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        total += deleted;
        if deleted < PRUNE_CHUNK as u64 {
            return Ok(total);
        }
    }
}

pub(crate) async fn wait_for_changes(s: &SqliteStore, after: u64) {
    s.changes.wait_above(after).await
}
