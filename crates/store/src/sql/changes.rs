//! Writing the change log, in the writing transaction (ADR 0003).
//!
//! Sequences come from the single-row counter `change_sequence`, moved in the writing
//! transaction, so sequences become visible in commit order: on SQLite because there is one
//! writer; on PostgreSQL because the counter row stays locked until commit, and a commit is
//! visible before its locks go. Lock order on PostgreSQL, so that writers never deadlock: a
//! stream batch takes the counter last, after its record rows; a commit or bulk deletion first
//! locks the open stream sessions of the connectors concerned (`lock_stream_sessions`, waiting
//! out their batches in flight), then the counter, then writes.

use super::{bind_rows, notify, rowset, Tx};
use crate::batch::TextRows;
use crate::changes::{Logged, Op};
use crate::error::StoreResult;
use crate::rows::{count, to_i64};
use std::sync::LazyLock;

/// Logs `op` for `keys` (records of `entity_type`) at the next sequences, in key order like
/// every set-based entry; answers the last sequence, or `None` when there was nothing to log.
/// Takes the counter as the batch's last lock and holds it only for these statements.
pub(super) async fn log_keys(
    tx: &mut Tx,
    entity_type: &str,
    keys: &[&str],
    op: Op,
    now: i64,
) -> StoreResult<Option<Logged>> {
    static LOG_KEYS: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
             SELECT $1 + u.ord, $2, u.key, $3, $4 FROM {}",
            rowset(5, &["key"])
        )
    });
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
    let insert = sqlx::query(&LOG_KEYS)
        .bind(last - n)
        .bind(entity_type)
        .bind(op.as_str())
        .bind(now);
    bind_rows(insert, TextRows::column(keys))?
        .execute(&mut **tx)
        .await?;
    let logged = Logged {
        entity_type: entity_type.to_owned(),
        last: count(last),
        entries: count(n),
    };
    notify(tx, &logged).await?;
    Ok(Some(logged))
}

/// Hands out sequences to set-based `INSERT INTO change_log … SELECT` statements of one
/// transaction (numbered `base + row_number()`), holding the counter from [`Sequencer::start`]
/// to commit, and moves the counter once at the end.
pub(super) struct Sequencer {
    entity_type: String,
    first: i64,
    last: i64,
}

impl Sequencer {
    /// Takes the counter (locked on PostgreSQL; SQLite's one writer keeps it ours).
    pub(super) async fn start(tx: &mut Tx, entity_type: &str) -> StoreResult<Self> {
        let last: i64 = sqlx::query_scalar(concat!(
            "SELECT last_seq FROM change_sequence WHERE id = 1",
            for_update!()
        ))
        .fetch_one(&mut **tx)
        .await?;
        Ok(Self {
            entity_type: entity_type.to_owned(),
            first: last,
            last,
        })
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
    pub(super) async fn finish(self, tx: &mut Tx) -> StoreResult<Option<Logged>> {
        if self.last == self.first {
            return Ok(None);
        }
        sqlx::query("UPDATE change_sequence SET last_seq = $1 WHERE id = 1")
            .bind(self.last)
            .execute(&mut **tx)
            .await?;
        let logged = Logged {
            entity_type: self.entity_type,
            last: count(self.last),
            entries: count(self.last - self.first),
        };
        notify(tx, &logged).await?;
        Ok(Some(logged))
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
    tx: &mut Tx,
    scope: DeleteScope,
    value: &str,
    entity_type: &str,
    now: i64,
) -> StoreResult<Option<Logged>> {
    macro_rules! log_deletes {
        ($condition:literal) => {
            concat!(
                "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
                 SELECT $1 + row_number() OVER (ORDER BY key), entity_type, key, 'delete', $2 \
                 FROM records WHERE ",
                $condition
            )
        };
    }
    let sql = match scope {
        DeleteScope::Connector => log_deletes!("connector = $3"),
        DeleteScope::EntityType => log_deletes!("entity_type = $3"),
    };
    let mut seq = Sequencer::start(tx, entity_type).await?;
    let logged = sqlx::query(sql)
        .bind(seq.base())
        .bind(now)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    seq.advance(logged.rows_affected());
    seq.finish(tx).await
}
