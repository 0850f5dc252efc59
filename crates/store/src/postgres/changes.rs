//! The change log on PostgreSQL: appending entries in the writing transaction, reading them
//! back joined to the records, pruning, and the LISTEN connection that wakes this process's
//! readers for commits made anywhere.
//!
//! Sequences come from the single-row counter `change_sequence`, updated (so row-locked) in the
//! writing transaction. A second writer waits on the lock until the first has committed, and
//! PostgreSQL makes a commit visible before it releases its locks: sequences therefore become
//! visible in order, and a reader that sees N+1 has seen N. (A BIGSERIAL would not do: values
//! are taken at insert time, and a transaction that took N can commit after one that took N+1.)
//! Lock order, so that writers never deadlock: a stream batch takes the counter last, after its
//! record rows; a commit or bulk deletion first locks the open stream sessions of the connectors
//! concerned (waiting out their batches in flight), then the counter, then writes.

use super::listing::{record_columns, snapshot};
use super::reads::record;
use super::PgStore;
use crate::changes::{ChangeSignal, PG_CHANNEL};
use crate::error::StoreResult;
use crate::rows::{count, to_i64};
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Row, Transaction};
use std::sync::Weak;
use std::time::Duration;
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

/// Queues the wake-up other processes receive when the transaction commits.
async fn notify(tx: &mut Transaction<'static, Postgres>, last: i64) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(PG_CHANNEL)
        .bind(last.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Logs `op` for `keys` (records of `entity_type`) at the next sequences, in key order like
/// every set-based entry; answers the last sequence, or `None` when there was nothing to log. Takes the counter as the batch's last
/// lock, and holds it only for these statements and the commit.
pub(super) async fn log_keys(
    tx: &mut Transaction<'static, Postgres>,
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
        "UPDATE change_sequence SET last_seq = last_seq + $1 WHERE id = 1 RETURNING last_seq",
    )
    .bind(n)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
         SELECT $1 + u.ord, $2, u.key, $3, $4 FROM unnest($5::text[]) WITH ORDINALITY AS u(key, ord)",
    )
    .bind(last - n)
    .bind(entity_type)
    .bind(op.as_str())
    .bind(now)
    .bind(&keys)
    .execute(&mut **tx)
    .await?;
    notify(tx, last).await?;
    Ok(Some(count(last)))
}

/// Locks `connector`'s open stream sessions, as every bulk change (a commit, a sweep, a delta's
/// removals) does before it takes the counter: a stream batch holds its record rows and then
/// takes the counter, so a bulk change must wait out batches in flight rather than deadlock.
pub(super) async fn lock_stream_sessions(
    tx: &mut Transaction<'static, Postgres>,
    connector: &str,
) -> StoreResult<()> {
    sqlx::query(
        "SELECT 1 FROM sessions WHERE connector = $1 AND state = 'open' AND mode = 'stream' \
         ORDER BY id FOR UPDATE",
    )
    .bind(connector)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Hands out sequences to set-based `INSERT INTO change_log … SELECT` statements of one
/// transaction, holding the counter's row lock from [`Sequencer::start`] to commit.
pub(super) struct Sequencer {
    first: i64,
    last: i64,
}

impl Sequencer {
    /// Locks the counter.
    pub(super) async fn start(tx: &mut Transaction<'static, Postgres>) -> StoreResult<Self> {
        let last: i64 =
            sqlx::query_scalar("SELECT last_seq FROM change_sequence WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut **tx)
                .await?;
        Ok(Self { first: last, last })
    }

    /// The sequence after which the next statement's entries are numbered.
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
        tx: &mut Transaction<'static, Postgres>,
    ) -> StoreResult<Option<u64>> {
        if self.last == self.first {
            return Ok(None);
        }
        sqlx::query("UPDATE change_sequence SET last_seq = $1 WHERE id = 1")
            .bind(self.last)
            .execute(&mut **tx)
            .await?;
        notify(tx, self.last).await?;
        Ok(Some(count(self.last)))
    }
}

/// Which records a bulk deletion takes.
#[derive(Debug, Clone, Copy)]
pub(super) enum DeleteScope {
    Connector,
    EntityType,
}

/// Logs a delete for every record of a connector or an entity type, before they go. The
/// caller has locked (or ended) the open sessions of the connectors concerned.
pub(super) async fn log_deletes_where(
    tx: &mut Transaction<'static, Postgres>,
    scope: DeleteScope,
    value: &str,
    now: i64,
) -> StoreResult<Option<u64>> {
    let column = match scope {
        DeleteScope::Connector => "connector",
        DeleteScope::EntityType => "entity_type",
    };
    let mut seq = Sequencer::start(tx).await?;
    let sql = format!(
        "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
         SELECT $1 + row_number() OVER (ORDER BY key), entity_type, key, 'delete', $2 \
         FROM records WHERE {column} = $3"
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

pub(crate) async fn read_changes(
    s: &PgStore,
    entity_type: &str,
    after: u64,
    limit: u32,
) -> StoreResult<ChangeLogPage> {
    let mut tx = snapshot(s).await?;
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
                Some(_) => Some(record(row)?),
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
}

/// Entries pruned per transaction.
const PRUNE_CHUNK: i64 = 10_000;

pub(crate) async fn prune_changes(s: &PgStore, recorded_before: i64) -> StoreResult<u64> {
    let mut total = 0;
    loop {
        let mut tx = s.write().await?;
        // Pruned as a prefix (by sequence), a chunk at a time; the horizon row is locked so
        // replicas pruning together do not interleave.
        sqlx::query("SELECT 1 FROM change_log_pruned WHERE id = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await?;
        let through: Option<i64> = sqlx::query_scalar(
            "SELECT max(seq) FROM (SELECT seq, recorded_at FROM change_log ORDER BY seq LIMIT $2) c \
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
            "UPDATE change_log_pruned SET through_seq = GREATEST(through_seq, $1) WHERE id = 1",
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
}

/// Listens for commits of any process and publishes their sequences to `signal`, until the
/// store is dropped. After a lost connection (notifications may have been missed meanwhile) it
/// publishes the counter as it stands, so waiting readers re-read.
pub(super) async fn listen(pool: PgPool, signal: Weak<ChangeSignal>) {
    let mut listener: Option<PgListener> = None;
    loop {
        if signal.strong_count() == 0 {
            return;
        }
        let active = match listener.as_mut() {
            Some(active) => active,
            None => match PgListener::connect_with(&pool).await {
                Ok(mut fresh) => match fresh.listen(PG_CHANNEL).await {
                    Ok(()) => {
                        publish_counter(&pool, &signal).await;
                        listener.insert(fresh)
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot LISTEN for change-log commits; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "cannot connect to LISTEN for change-log commits; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        // Wake up now and then to notice a dropped store.
        match tokio::time::timeout(Duration::from_secs(5), active.try_recv()).await {
            Err(_elapsed) => {}
            Ok(Ok(Some(notification))) => {
                if let (Some(signal), Ok(sequence)) =
                    (signal.upgrade(), notification.payload().parse::<u64>())
                {
                    signal.publish(sequence);
                }
            }
            // The connection was lost; the next try_recv reconnects and re-listens.
            Ok(Ok(None)) => publish_counter(&pool, &signal).await,
            Ok(Err(error)) => {
                tracing::warn!(%error, "LISTEN connection failed; reconnecting");
                listener = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn publish_counter(pool: &PgPool, signal: &Weak<ChangeSignal>) {
    let last: Result<i64, _> =
        sqlx::query_scalar("SELECT last_seq FROM change_sequence WHERE id = 1")
            .fetch_one(pool)
            .await;
    if let (Ok(last), Some(signal)) = (last, signal.upgrade()) {
        signal.publish(count(last));
    }
}

pub(crate) async fn wait_for_changes(s: &PgStore, after: u64) {
    // One LISTEN connection per process, opened by the first reader that waits (a process that
    // only contributes never opens it).
    s.listening.call_once(|| {
        tokio::spawn(listen(
            s.pool.clone(),
            std::sync::Arc::downgrade(&s.changes),
        ));
    });
    s.changes.wait_above(after).await
}
