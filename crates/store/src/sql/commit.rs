//! A staged session's commit (SPEC.md §2.2, ADR 0001, ADR 0019): its staged rows made visible
//! set-based, in the closing transaction that the session's close opens (`sessions`).

use super::changes::Sequencer;
use super::{
    begin_hashed_joins, begin_small_sorts, end_hashed_joins, end_small_sorts, lock_stream_sessions,
    prepare_bulk_write, Backend, Query, Tx,
};
use crate::changes::Logged;
use crate::error::{sweep_refused, StoreResult};
use crate::rows::{count, skip_flags, to_i64};
use tributary_core::model::{Connector, SessionMode, SessionTotals};
use tributary_core::session;
use tributary_core::store::SessionCall;

/// Makes an accrue/replace session's staged data visible, set-based: totals by one aggregate,
/// then either a first load's shorter way ([`commit_new_records`]) or superseded rows dropped,
/// changes logged, the removal guard, changed rows written, deletes applied, and for replace
/// the sweep ([`commit_changes`]). `keep` rows (records or digests found unchanged when staged)
/// are never written: they count as unchanged while their record exists, and being staged rows
/// they spare it from the sweep's anti-join (replace); accrue's unchanged records are counted
/// from its notes. Answers the totals and the last change-log sequence, if anything changed.
pub(super) async fn commit_staged(
    store: &Backend,
    tx: &mut Tx,
    call: &SessionCall<'_>,
    mode: SessionMode,
    force: bool,
) -> StoreResult<(SessionTotals, Option<Logged>)> {
    let staged = staged_totals(tx, call).await?;
    commit_from_totals(store, tx, call, mode, force, staged).await
}

/// [`commit_staged`] once its totals are taken, over the rows as staged.
pub(super) async fn commit_from_totals(
    store: &Backend,
    tx: &mut Tx,
    call: &SessionCall<'_>,
    mode: SessionMode,
    force: bool,
    mut staged: StagedTotals,
) -> StoreResult<(SessionTotals, Option<Logged>)> {
    let mut stepped_back = false;
    if staged.only_creates() {
        match commit_new_records(store, tx, call, mode, force, &staged).await? {
            Some(committed) => return Ok(committed),
            None => stepped_back = true,
        }
    }
    // The totals counted superseded rows too, and a first load's way steps back from a key
    // staged twice or written meanwhile: taken again in either case.
    let dropped = drop_superseded(tx, call.session_id).await?;
    if dropped > 0 || stepped_back {
        staged = staged_totals(tx, call).await?;
    }
    commit_changes(store, tx, call, mode, force, &staged).await
}

/// What a session's staged rows would do, by one aggregate over them joined to `records`, in
/// their last operation per key once superseded rows are dropped. `others` counts the rows that
/// are not upserts: deletes, `keep`s and `unchanged` markers.
pub(super) struct StagedTotals {
    created: u64,
    updated: u64,
    unchanged: u64,
    skipped: u64,
    deleted: u64,
    others: u64,
}

impl StagedTotals {
    /// Whether every staged row is an upsert of a key that has no record (a first load).
    fn only_creates(&self) -> bool {
        self.created > 0
            && self.updated + self.unchanged + self.skipped + self.deleted + self.others == 0
    }
}

pub(super) async fn staged_totals(
    tx: &mut Tx,
    call: &SessionCall<'_>,
) -> StoreResult<StagedTotals> {
    let (skip_all, skip_edited) = skip_flags(call.connector.write_policy);
    // `skip` below: a changed record the write policy keeps as is.
    let (created, updated, unchanged, skipped, deleted, others): (i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT \
               count(*) FILTER (WHERE s.op = 'upsert' AND r.key IS NULL), \
               count(*) FILTER (WHERE s.op = 'upsert' AND r.checksum <> s.checksum \
                                AND NOT ($2 OR ($3 AND r.edited_at IS NOT NULL))), \
               count(*) FILTER (WHERE (s.op = 'upsert' AND r.checksum = s.checksum) \
                                OR (s.op = 'keep' AND r.key IS NOT NULL)), \
               count(*) FILTER (WHERE s.op = 'upsert' AND r.checksum <> s.checksum \
                                AND ($2 OR ($3 AND r.edited_at IS NOT NULL))), \
               count(*) FILTER (WHERE s.op = 'delete' AND r.key IS NOT NULL), \
               count(*) FILTER (WHERE s.op <> 'upsert') \
             FROM staged_records s LEFT JOIN records r ON r.key = s.key WHERE s.session_id = $1",
        )
        .bind(call.session_id)
        .bind(skip_all)
        .bind(skip_edited)
        .fetch_one(&mut **tx)
        .await?;
    Ok(StagedTotals {
        created: count(created),
        updated: count(updated),
        unchanged: count(unchanged),
        skipped: count(skipped),
        deleted: count(deleted),
        others: count(others),
    })
}

/// The session's totals: its staged rows' and, for accrue, the keys it noted unchanged.
async fn session_totals(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    mode: SessionMode,
    staged: &StagedTotals,
) -> StoreResult<SessionTotals> {
    let noted = if mode == SessionMode::Accrue {
        count_noted_unchanged(tx, call.session_id).await?
    } else {
        0
    };
    Ok(SessionTotals {
        created: staged.created,
        updated: staged.updated,
        unchanged: staged.unchanged + noted,
        deleted: staged.deleted,
        swept: 0,
        skipped: staged.skipped,
    })
}

/// A commit whose staged rows are all new records, as a first load's are: logged and then
/// written in key order as the general way does ([`commit_changes`]), but without the
/// superseded rows' pass first (a sort of every staged key, which finds nothing to delete
/// unless the session sent a key twice: 1.0-1.4 s of a million's commit on PostgreSQL, ADR
/// 0019) and by statements that take every staged upsert without looking at `records`. The
/// primary key checks what those spare: a key staged twice, or created by another writer since
/// the totals (a pull source writing as the same connector), fails the `INSERT`; the log and
/// the write are then rolled back to a savepoint taken before them, and `None` answered, for
/// the caller to commit the general way. Locks are taken in the general way's order (the
/// connector's stream sessions, the counter, then the writes).
pub(super) async fn commit_new_records(
    store: &Backend,
    tx: &mut Tx,
    call: &SessionCall<'_>,
    mode: SessionMode,
    force: bool,
    staged: &StagedTotals,
) -> StoreResult<Option<(SessionTotals, Option<Logged>)>> {
    let mut totals = session_totals(tx, call, mode, staged).await?;
    let mut seq = take_counter(tx, call).await?;
    run_statement(tx, "SAVEPOINT new_records").await?;
    if !log_and_insert_new(store, tx, call, &mut seq, staged.created).await? {
        run_statement(tx, "ROLLBACK TO SAVEPOINT new_records").await?;
        run_statement(tx, "RELEASE SAVEPOINT new_records").await?;
        return Ok(None);
    }
    run_statement(tx, "RELEASE SAVEPOINT new_records").await?;
    let (logged, swept) = log_sweep_and_finish(tx, call, mode, seq).await?;
    if let Some(swept) = swept {
        if !force {
            refuse_large_sweep(tx, call.connector, &swept).await?;
        }
        if swept.count > 0 {
            totals.swept = sweep(tx, call.connector, &swept).await?;
        }
    }
    Ok(Some((totals, logged)))
}

/// Logs every staged upsert of the session, then writes each as a new record
/// ([`INSERT_STAGED_AS_NEW`]): `false` when the write met a key that has a record (the
/// transaction then needs rolling back to before the log).
async fn log_and_insert_new(
    store: &Backend,
    tx: &mut Tx,
    call: &SessionCall<'_>,
    seq: &mut Sequencer,
    created: u64,
) -> StoreResult<bool> {
    // Both statements sort by key, on SQLite in a small buffer (as every commit statement).
    begin_small_sorts(tx).await?;
    let inserted = async {
        log_upserts(tx, call, seq, UpsertLog::AllNew).await?;
        // Held until the write ends (PostgreSQL: a helper merging the GIN pending list).
        let _bulk = prepare_bulk_write(store, tx, created).await?;
        let inserted = staged_insert(INSERT_STAGED_AS_NEW, call)
            .execute(&mut **tx)
            .await;
        inserted_unless_duplicate(inserted)
    }
    .await;
    let sorts = end_small_sorts(tx).await;
    let inserted = inserted?;
    sorts?;
    Ok(inserted)
}

/// An `INSERT`'s outcome: `true` when it wrote, `false` when it met a key that has a record
/// (the transaction or savepoint then needs rolling back), any other failure as such.
fn inserted_unless_duplicate<T>(inserted: Result<T, sqlx::Error>) -> StoreResult<bool> {
    match inserted {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn run_statement(tx: &mut Tx, statement: &str) -> StoreResult<()> {
    sqlx::query(statement).execute(&mut **tx).await?;
    Ok(())
}

/// The general commit: superseded rows are gone, so each key has one staged row, its last
/// operation. Every visible change is logged, set-based and before the writes (the same
/// predicates pick the rows; the sweep and its guard take the records its log found).
async fn commit_changes(
    store: &Backend,
    tx: &mut Tx,
    call: &SessionCall<'_>,
    mode: SessionMode,
    force: bool,
    staged: &StagedTotals,
) -> StoreResult<(SessionTotals, Option<Logged>)> {
    let connector = call.connector;
    let (skip_all, skip_edited) = skip_flags(connector.write_policy);
    let mut totals = session_totals(tx, call, mode, staged).await?;

    // What the totals found none of is not looked for again: the commit of an unchanged
    // re-send reads its staged rows for the totals, and nothing more (they are deleted after
    // the commit, `unstaging`).
    let writes = totals.created + totals.updated > 0;
    let deletes = totals.deleted > 0;
    let (logged, swept) = if writes || deletes || mode == SessionMode::Replace {
        let seq = take_counter(tx, call).await?;
        let upserts = UpsertLog::Changing {
            skip_all,
            skip_edited,
        };
        log_staged(tx, call, mode, seq, upserts).await?
    } else {
        (None, None)
    };
    match &swept {
        Some(swept) if !force => refuse_large_sweep(tx, connector, swept).await?,
        _ => {}
    }
    if writes {
        let (created, updated) = (totals.created, totals.updated);
        write_staged_upserts(store, tx, call, (created, updated), skip_all, skip_edited).await?;
    }
    if deletes {
        sqlx::query(
            "DELETE FROM records WHERE connector = $1 AND key IN \
             (SELECT key FROM staged_records WHERE session_id = $2 AND op = 'delete')",
        )
        .bind(&connector.id)
        .bind(call.session_id)
        .execute(&mut **tx)
        .await?;
    }

    if let Some(swept) = swept.filter(|swept| swept.count > 0) {
        totals.swept = sweep(tx, connector, &swept).await?;
    }
    Ok((totals, logged))
}

/// The records a replace commit sweeps (those of the connector it did not stage), as the
/// change log's entries for them: the `count` sequences after `after`.
struct Swept {
    after: i64,
    count: u64,
}

/// Refuses a replace commit whose sweep would remove more of the connector's records than its
/// `reject_removals_above_percent` allows (the transaction is then rolled back: nothing of the
/// commit sticks, the session stays open).
async fn refuse_large_sweep(tx: &mut Tx, connector: &Connector, swept: &Swept) -> StoreResult<()> {
    let Some(limit) = connector.reject_removals_above_percent else {
        return Ok(());
    };
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM records WHERE connector = $1")
        .bind(&connector.id)
        .fetch_one(&mut **tx)
        .await?;
    if session::sweep_refused(swept.count, count(total), Some(limit)) {
        return Err(sweep_refused(swept.count, count(total), limit));
    }
    Ok(())
}

/// Deletes the records the commit logged as swept ([`log_swept`]), found by their change-log
/// entries: the one anti-join of the staged rows is the log's (on SQLite a list of every staged
/// key, built and probed once per statement, ADR 0019). Answers how many went.
async fn sweep(tx: &mut Tx, connector: &Connector, swept: &Swept) -> StoreResult<u64> {
    let last = swept.after.saturating_add(to_i64(swept.count));
    let deleted = sqlx::query(
        "DELETE FROM records WHERE connector = $1 AND key IN \
         (SELECT key FROM change_log WHERE seq > $2 AND seq <= $3)",
    )
    .bind(&connector.id)
    .bind(swept.after)
    .bind(last)
    .execute(&mut **tx)
    .await?;
    Ok(deleted.rows_affected())
}

/// Deletes the session's staged rows that a later row of the same key superseded, first in a
/// commit: its statements then read one row per key, the last operation on it (a key whose
/// last operation found it unchanged has its `unchanged` marker, from `note_unchanged` in
/// `sessions`, which they do not read as an operation; left in place, it costs no deletion). One pass over the
/// session's rows in key order (a window, in a small sort on SQLite, like the count of noted
/// keys); what it deletes is found by `seq`, usually nothing, joined by hashing
/// ([`begin_hashed_joins`]).
async fn drop_superseded(tx: &mut Tx, session_id: &str) -> StoreResult<u64> {
    begin_small_sorts(tx).await?;
    begin_hashed_joins(tx).await?;
    let dropped = sqlx::query(DROP_SUPERSEDED)
        .bind(session_id)
        .execute(&mut **tx)
        .await;
    // The statement's error first: after it, PostgreSQL refuses the reset of a failed
    // transaction (which its rollback undoes anyway), while SQLite's cache size outlives it.
    let joins = end_hashed_joins(tx).await;
    let sorts = end_small_sorts(tx).await;
    let dropped = dropped?.rows_affected();
    joins?;
    sorts?;
    Ok(dropped)
}

/// [`drop_superseded`]'s statement, for session `$1`.
pub(super) const DROP_SUPERSEDED: &str =
    "DELETE FROM staged_records WHERE session_id = $1 AND seq IN \
     (SELECT seq FROM (SELECT seq, row_number() OVER (PARTITION BY key ORDER BY seq DESC) AS nth \
                       FROM staged_records WHERE session_id = $1) ordered \
      WHERE nth > 1)";

/// The records write of a commit: its staged upserts that change something. Unchanged and
/// policy-skipped rows are filtered out before the write, so they cost no row lock or rewrite,
/// and their version and updated_at stay put. Rows go in key order: the key indexes then take
/// them page by page instead of at random (at 1,000,000 records on PostgreSQL, 29.6 s -> 22.7 s,
/// ADR 0019).
macro_rules! write_staged {
    () => {
        concat!(
            records_from_staged!(),
            " staged_records s LEFT JOIN records r ON r.key = s.key \
             WHERE s.session_id = $1 AND s.op = 'upsert' \
               AND (r.key IS NULL OR (r.checksum <> s.checksum \
                                      AND NOT ($5 OR ($6 AND r.edited_at IS NOT NULL)))) \
             ORDER BY s.key"
        )
    };
}

/// Staged rows `s` of session `$1` as new records of entity type `$2` and connector `$3`,
/// written at `$4`: what every write of a commit inserts, from the rows the rest of its
/// statement names `s`.
macro_rules! records_from_staged {
    () => {
        "INSERT INTO records (key, entity_type, connector, id, name, entity, instance, checksum, \
                              version, created_at, updated_at, source, edited_at) \
         SELECT s.key, $2, $3, s.id, s.name, s.entity, s.instance, s.checksum, 1, $4, $4, NULL, NULL \
         FROM"
    };
}

/// [`commit_new_records`]' write: every staged upsert, in key order, as a new record. Sorted in
/// a subquery: PostgreSQL would otherwise sort the rows with the values the `SELECT` adds to
/// them (~140 bytes a row more to sort, 1-2 s of a million's write in psql), where a join
/// ([`write_staged!`]) makes it add them after the sort.
const INSERT_STAGED_AS_NEW: &str = concat!(
    records_from_staged!(),
    " (SELECT key, id, name, entity, instance, checksum FROM staged_records \
       WHERE session_id = $1 AND op = 'upsert' ORDER BY key) s \
     ORDER BY s.key"
);

/// [`write_staged!`] for a commit that changes existing records: a key that has a record gets
/// its row updated in place.
const UPSERT_STAGED: &str = concat!(
    write_staged!(),
    " ON CONFLICT (key) DO UPDATE SET name = excluded.name, entity = excluded.entity, \
         instance = excluded.instance, checksum = excluded.checksum, \
         version = records.version + 1, updated_at = excluded.updated_at, source = NULL"
);

/// Writes a commit's staged upserts that change something ([`write_staged!`]); `(created,
/// updated)` are the commit's totals.
pub(super) async fn write_staged_upserts(
    store: &Backend,
    tx: &mut Tx,
    call: &SessionCall<'_>,
    (created, updated): (u64, u64),
    skip_all: bool,
    skip_edited: bool,
) -> StoreResult<()> {
    // Held until the writes end (PostgreSQL: a helper merging the GIN pending list).
    let _bulk = prepare_bulk_write(store, tx, created + updated).await?;
    // The rows sort by key on SQLite in a small buffer, as the change log's do.
    begin_small_sorts(tx).await?;
    let written = write_in_key_order(tx, call, updated, skip_all, skip_edited).await;
    end_small_sorts(tx).await?;
    written
}

async fn write_in_key_order(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    updated: u64,
    skip_all: bool,
    skip_edited: bool,
) -> StoreResult<()> {
    if updated == 0 && insert_new_records(tx, call, skip_all, skip_edited).await? {
        return Ok(());
    }
    staged_write(UPSERT_STAGED, call, skip_all, skip_edited)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes a commit that only creates records by a plain `INSERT`, without the conflict clause:
/// on PostgreSQL `ON CONFLICT` makes every row a speculative insertion (a lock, a second probe
/// of the primary key and a confirming WAL record each), which at 1,000,000 new records took
/// 23.6-24.5 s against 20.7-21.3 s (ADR 0019). The totals found no record for these keys, and
/// the connector's other writers are held off, but a key could still turn up meanwhile (a pull
/// source writing as the same connector): the `INSERT` runs in a savepoint and, on a duplicate
/// key, is rolled back to it and answers `false`, for the caller to write with the clause.
async fn insert_new_records(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    skip_all: bool,
    skip_edited: bool,
) -> StoreResult<bool> {
    let insert = staged_write(write_staged!(), call, skip_all, skip_edited);
    insert_in_savepoint(tx, insert).await
}

/// Runs `insert` in a savepoint: `false` when it met a key that has a record (rolled back to
/// the savepoint, the transaction still usable).
async fn insert_in_savepoint(tx: &mut Tx, insert: Query<'_>) -> StoreResult<bool> {
    let mut attempt = sqlx::Acquire::begin(&mut *tx).await?;
    let inserted = inserted_unless_duplicate(insert.execute(&mut *attempt).await)?;
    if inserted {
        attempt.commit().await?;
    } else {
        attempt.rollback().await?;
    }
    Ok(inserted)
}

/// `statement`, a form of [`write_staged!`], bound for `call`.
fn staged_write<'q>(
    statement: &'q str,
    call: &SessionCall<'q>,
    skip_all: bool,
    skip_edited: bool,
) -> Query<'q> {
    staged_insert(statement, call)
        .bind(skip_all)
        .bind(skip_edited)
}

/// `statement`, a form of [`records_from_staged!`], bound for `call` (`$1` to `$4`).
fn staged_insert<'q>(statement: &'q str, call: &SessionCall<'q>) -> Query<'q> {
    sqlx::query(statement)
        .bind(call.session_id)
        .bind(&call.connector.entity_type)
        .bind(&call.connector.id)
        .bind(call.now)
}

/// Takes what a commit's log needs before anything is written: first the connector's open
/// stream sessions (their batches in flight finish first, new ones wait), then the counter;
/// see the lock order in `changes`.
async fn take_counter(tx: &mut Tx, call: &SessionCall<'_>) -> StoreResult<Sequencer> {
    lock_stream_sessions(tx, &call.connector.id).await?;
    Sequencer::start(tx, &call.connector.entity_type).await
}

/// Which staged upserts a commit logs.
#[derive(Clone, Copy)]
enum UpsertLog {
    /// Those its write is about to make (logged before it): the same predicate as
    /// [`write_staged!`] picks them.
    Changing { skip_all: bool, skip_edited: bool },
    /// Every one, each about to be written as a new record ([`commit_new_records`]).
    AllNew,
}

/// Logs what a commit changes: its staged upserts as `upserts` says, a delete for every staged
/// delete of an existing record, and for replace a delete for every record the sweep takes.
/// Sequences follow key order within each statement, drawn from `seq` ([`take_counter`]).
async fn log_staged(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    mode: SessionMode,
    mut seq: Sequencer,
    upserts: UpsertLog,
) -> StoreResult<(Option<Logged>, Option<Swept>)> {
    // Its statements sort on SQLite (like an accrue commit's count of noted keys): staged rows
    // come in the order they were staged, the connector's records by the source index.
    begin_small_sorts(tx).await?;
    let logged = log_upserts(tx, call, &mut seq, upserts).await;
    end_small_sorts(tx).await?;
    logged?;
    log_sweep_and_finish(tx, call, mode, seq).await
}

/// Ends a commit's log: a replace commit's sweep logged ([`log_sweep`], sorting in the small
/// buffer on SQLite), then the sequences drawn ([`Sequencer::finish`]); answers them and the
/// sweep's [`Swept`] for its guard.
async fn log_sweep_and_finish(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    mode: SessionMode,
    mut seq: Sequencer,
) -> StoreResult<(Option<Logged>, Option<Swept>)> {
    begin_small_sorts(tx).await?;
    let swept = log_sweep(tx, call, mode, &mut seq).await;
    end_small_sorts(tx).await?;
    let swept = swept?;
    Ok((seq.finish(tx).await?, swept))
}

/// Logs the commit's staged upserts as `upserts` says, and (the general way) its staged deletes
/// of existing records, in key order, drawing sequences from `seq`.
async fn log_upserts(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    seq: &mut Sequencer,
    upserts: UpsertLog,
) -> StoreResult<()> {
    let connector = call.connector;
    let log = match upserts {
        UpsertLog::Changing {
            skip_all,
            skip_edited,
        } => sqlx::query(
            "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
             SELECT $1 + row_number() OVER (ORDER BY s.key), $2, s.key, \
                    CASE s.op WHEN 'upsert' THEN 'upsert' ELSE 'delete' END, $4 \
             FROM staged_records s LEFT JOIN records r ON r.key = s.key \
             WHERE s.session_id = $3 AND ( \
               (s.op = 'upsert' AND (r.key IS NULL OR (r.checksum <> s.checksum \
                                      AND NOT ($5 OR ($6 AND r.edited_at IS NOT NULL))))) \
               OR (s.op = 'delete' AND r.key IS NOT NULL AND r.connector = $7))",
        )
        .bind(seq.base())
        .bind(&connector.entity_type)
        .bind(call.session_id)
        .bind(call.now)
        .bind(skip_all)
        .bind(skip_edited)
        .bind(&connector.id),
        UpsertLog::AllNew => sqlx::query(
            "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
             SELECT $1 + row_number() OVER (ORDER BY s.key), $2, s.key, 'upsert', $4 \
             FROM staged_records s WHERE s.session_id = $3 AND s.op = 'upsert'",
        )
        .bind(seq.base())
        .bind(&connector.entity_type)
        .bind(call.session_id)
        .bind(call.now),
    };
    seq.advance(log.execute(&mut **tx).await?.rows_affected());
    Ok(())
}

/// A replace commit's sweep, logged ([`log_swept`], drawing sequences from `seq`); `None` for
/// other modes.
async fn log_sweep(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    mode: SessionMode,
    seq: &mut Sequencer,
) -> StoreResult<Option<Swept>> {
    if mode != SessionMode::Replace {
        return Ok(None);
    }
    let after = seq.base();
    begin_hashed_joins(tx).await?;
    let count = log_swept(tx, call, after).await;
    let joins = end_hashed_joins(tx).await;
    let count = count?;
    joins?;
    seq.advance(count);
    Ok(Some(Swept { after, count }))
}

/// Logs a delete for every record of the connector that a replace session did not stage: the
/// records its sweep takes. Returns how many.
async fn log_swept(tx: &mut Tx, call: &SessionCall<'_>, base: i64) -> StoreResult<u64> {
    let swept = sqlx::query(concat!(
        "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
         SELECT $1 + row_number() OVER (ORDER BY r.key), r.entity_type, r.key, 'delete', $2 \
         FROM records r WHERE r.connector = $3 AND ",
        not_staged!("r.key", "$4")
    ))
    .bind(base)
    .bind(call.now)
    .bind(&call.connector.id)
    .bind(call.session_id)
    .execute(&mut **tx)
    .await?;
    Ok(swept.rows_affected())
}

/// Accrue commit: the records `note_unchanged` (`sessions`) noted, each once, that the session
/// did not stage again later. Unlike a `keep` row, a note counts as its batch reported it, also when the
/// connector's stream deleted the record since: asking `records` for each noted key cost the
/// commit of 100,000 more than the notes saved (ADR 0019, eighth round).
///
/// `GROUP BY`, not `DISTINCT`: SQLite makes each noted key unique in a temporary B-tree for
/// `DISTINCT`, whose pages stayed in memory as the session grew (42 MiB and rising at a million
/// notes), and in a sorter for `GROUP BY`, which spills to a file past a bounded buffer
/// (ADR 0019, fifteenth round). PostgreSQL plans both alike. The sort runs in a small buffer
/// ([`begin_small_sorts`]): the keys of a million notes are 56 MB to sort. A session that noted
/// nothing (a first load, a replace) does not touch the buffer.
async fn count_noted_unchanged(tx: &mut Tx, session_id: &str) -> StoreResult<u64> {
    let noted_any: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM staged_unchanged WHERE session_id = $1)")
            .bind(session_id)
            .fetch_one(&mut **tx)
            .await?;
    if !noted_any {
        return Ok(0);
    }
    begin_small_sorts(tx).await?;
    begin_hashed_joins(tx).await?;
    let noted = count_distinct_noted(tx, session_id).await;
    let joins = end_hashed_joins(tx).await;
    let sorts = end_small_sorts(tx).await;
    let noted = noted?;
    joins?;
    sorts?;
    Ok(count(noted))
}

async fn count_distinct_noted(tx: &mut Tx, session_id: &str) -> StoreResult<i64> {
    let noted = sqlx::query_scalar(concat!(
        "SELECT count(*) FROM (SELECT k.value AS key FROM staged_unchanged u, ",
        list_elements!("u.keys", "k"),
        " WHERE u.session_id = $1 GROUP BY k.value) n \
         WHERE ",
        not_staged!("n.key", "$1")
    ))
    .bind(session_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(noted)
}
