//! Sessions (SPEC.md §2): open (with supersede), batches, close (commit or rollback), expiry.
//!
//! Every batch and close starts by touching its session row (`UPDATE … RETURNING`): no row
//! means `PERMISSION_DENIED` (but a close of a session that ended as that close would leave it
//! answers as the close that ended it, [`repeated_close`]), and on PostgreSQL the row lock serialises the batch against a
//! concurrent close, supersede or expiry of the same session. Accrue/replace data is staged in
//! `staged_records` and made visible by set-based SQL in the commit's one transaction (ADR 0001).

use super::changes::{log_keys, Sequencer};
use super::records::{existing_records, insert_import_result, write_records, Writer};
use super::unstaging::unstage_later;
use super::{
    begin_hashed_joins, begin_small_sorts, bind_rows, end_hashed_joins, end_small_sorts,
    in_list_arg, lock_stream_sessions, prepare_bulk_write, read_items_page, rowset, Backend, Query,
    Tx,
};
use crate::batch::{record_rows, TextRows, RECORD_COLUMNS};
use crate::changes::{Logged, Op};
use crate::error::{run, session_denied, sweep_refused, StoreError, StoreResult};
use crate::rows::{
    self, already_applied, count, session_result, skip_flags, to_i64, IMPORT_RESULT_COLUMNS,
};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use tributary_core::error::ResourceKind;
use tributary_core::model::{
    Connector, DigestState, ImportStatus, Outcome, Session, SessionMode, SessionState,
    SessionTotals,
};
use tributary_core::reconcile::IdRange;
use tributary_core::record::{
    plan_deletes, plan_digests, plan_upserts, KeyedDigest, KeyedId, PreparedRecord,
};
use tributary_core::session::{self, SessionEnd};
use tributary_core::store::{
    BatchResult, ClosedSession, OpenedSession, ResumedSession, SessionCall, SessionStore,
};
use tributary_core::{Error, Result};

#[async_trait]
impl SessionStore for Backend {
    async fn open_session(
        &self,
        connector: &Connector,
        mode: SessionMode,
        now: i64,
    ) -> Result<OpenedSession> {
        run(async {
            let id = uuid::Uuid::new_v4().to_string();
            let mut tx = self.write().await?;
            // Locking the connector row serialises concurrent opens of one connector; stream
            // opens never supersede, they only keep the connector from going meanwhile.
            const SUPERSEDING: &str =
                concat!("SELECT 1 FROM connectors WHERE id = $1", for_update!());
            const NOT_SUPERSEDING: &str =
                concat!("SELECT 1 FROM connectors WHERE id = $1", for_share!());
            let lock = if session::supersedes(mode) {
                SUPERSEDING
            } else {
                NOT_SUPERSEDING
            };
            let exists = sqlx::query(lock)
                .bind(&connector.id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(Error::not_found(ResourceKind::Connector, &connector.id).into());
            }
            let mut superseded = Vec::new();
            let mut unstage = false;
            if session::supersedes(mode) {
                let ended: Vec<(String, String, i64)> = sqlx::query_as(
                    "UPDATE sessions SET state = 'superseded', closed_at = $2 \
                     WHERE connector = $1 AND state = 'open' AND mode <> 'stream' \
                     RETURNING id, connector, opened_at",
                )
                .bind(&connector.id)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                let why = format!("superseded by session {id}");
                unstage |= cancel_sessions(&mut tx, &ended, now, &why).await?;
                superseded = ended.into_iter().map(|(id, _, _)| id).collect();
            }
            sqlx::query(
                "INSERT INTO sessions (id, connector, mode, state, opened_at, last_active_at) \
                 VALUES ($1, $2, $3, 'open', $4, $4)",
            )
            .bind(&id)
            .bind(&connector.id)
            .bind(mode.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            if unstage {
                self.drain_unstaging();
            }
            let session = Session {
                id,
                connector: connector.id.clone(),
                mode,
                state: SessionState::Open,
                opened_at: now,
                last_active_at: now,
            };
            Ok(OpenedSession {
                session,
                superseded,
            })
        })
        .await
    }

    async fn upsert_batch(
        &self,
        call: &SessionCall<'_>,
        records: &[PreparedRecord],
    ) -> Result<BatchResult<Vec<Outcome>>> {
        let mut results = self.upserts(call, &[(call.batch_seq, records)]).await?;
        results
            .pop()
            .ok_or_else(|| Error::Internal("no result for the batch".into()))
    }

    async fn upsert_batches(
        &self,
        call: &SessionCall<'_>,
        batches: &[(u64, &[PreparedRecord])],
    ) -> Result<Vec<BatchResult<Vec<Outcome>>>> {
        let sequenced: Vec<(Option<u64>, &[PreparedRecord])> = batches
            .iter()
            .map(|&(seq, records)| (Some(seq), records))
            .collect();
        self.upserts(call, &sequenced).await
    }

    async fn delete_batch(
        &self,
        call: &SessionCall<'_>,
        ids: &[KeyedId],
    ) -> Result<BatchResult<Vec<Outcome>>> {
        run(async {
            let mut tx = self.write().await?;
            let Some(mode) = begin_batch(&mut tx, call).await? else {
                tx.commit().await?;
                return Ok(BatchResult::AlreadyApplied);
            };
            let (outcomes, logged) = if ids.is_empty() {
                (Vec::new(), None)
            } else {
                apply_deletes(&mut tx, call, mode, ids).await?
            };
            end_batch(&mut tx, call).await?;
            tx.commit().await?;
            if let Some(sequence) = logged {
                self.published(&sequence);
            }
            Ok(BatchResult::Applied(outcomes))
        })
        .await
    }

    async fn diff_batch(
        &self,
        call: &SessionCall<'_>,
        digests: &[KeyedDigest],
    ) -> Result<BatchResult<Vec<DigestState>>> {
        run(async {
            let mut tx = self.write().await?;
            let Some(mode) = begin_batch(&mut tx, call).await? else {
                tx.commit().await?;
                return Ok(BatchResult::AlreadyApplied);
            };
            let states = if digests.is_empty() {
                Vec::new()
            } else {
                let keys = digests.iter().map(|d| d.key.as_str());
                let existing = existing_records(&mut tx, keys).await?;
                let states = plan_digests(digests, &existing);
                if mode == SessionMode::Replace {
                    stage_keeps(&mut tx, call.session_id, digests, &states).await?;
                }
                states
            };
            end_batch(&mut tx, call).await?;
            tx.commit().await?;
            Ok(BatchResult::Applied(states))
        })
        .await
    }

    async fn read_items(
        &self,
        connector: &Connector,
        from: &str,
        inclusive: bool,
        limit: u32,
    ) -> Result<Vec<(String, String)>> {
        // `id` compares as bytes on both backends (SQLite's BINARY, PostgreSQL's "C"), the
        // order the client sorts in; (entity_type, id) is indexed. How the page travels back is
        // the backend's (`items_page!`, `read_items_page`).
        const FROM: &str = items_page!(
            "SELECT id, checksum FROM records \
             WHERE entity_type = $1 AND connector = $2 AND id >= $3 ORDER BY id LIMIT $4"
        );
        const AFTER: &str = items_page!(
            "SELECT id, checksum FROM records \
             WHERE entity_type = $1 AND connector = $2 AND id > $3 ORDER BY id LIMIT $4"
        );
        let query = sqlx::query(if inclusive { FROM } else { AFTER })
            .bind(&connector.entity_type)
            .bind(&connector.id)
            .bind(from)
            .bind(i64::from(limit));
        run(read_items_page(self.reader(), query)).await
    }

    async fn keep_batch(
        &self,
        call: &SessionCall<'_>,
        ranges: &[IdRange],
        ids: &[KeyedId],
    ) -> Result<BatchResult<()>> {
        run(async {
            let mut tx = self.write().await?;
            let Some(mode) = begin_batch(&mut tx, call).await? else {
                tx.commit().await?;
                return Ok(BatchResult::AlreadyApplied);
            };
            if mode == SessionMode::Replace {
                stage_kept_ranges(&mut tx, call, ranges).await?;
                let unique: HashMap<&str, &str> = ids.iter().map(|k| (&*k.key, &*k.id)).collect();
                stage_ids(&mut tx, call.session_id, "keep", unique).await?;
            }
            end_batch(&mut tx, call).await?;
            tx.commit().await?;
            Ok(BatchResult::Applied(()))
        })
        .await
    }

    async fn resume_session(&self, call: &SessionCall<'_>) -> Result<ResumedSession> {
        run(async {
            let mut tx = self.write().await?;
            let (mode, applied_seq) = touch_session(&mut tx, call).await?;
            tx.commit().await?;
            Ok(ResumedSession {
                mode,
                last_batch_seq: u64::try_from(applied_seq).unwrap_or(0),
            })
        })
        .await
    }

    async fn close_session(
        &self,
        call: &SessionCall<'_>,
        commit: bool,
        force: bool,
    ) -> Result<ClosedSession> {
        run(async {
            let mut tx = self.write().await?;
            let end = if commit {
                SessionEnd::Commit
            } else {
                SessionEnd::Rollback
            };
            let mode = match touch_session(&mut tx, call).await {
                Ok((mode, _)) => mode,
                // A close sent again after its session ended (the first call's answer lost:
                // cancelled, timed out, a broken connection) answers as that close did.
                Err(StoreError::Domain(Error::PermissionDenied(_))) => {
                    return repeated_close(&mut tx, call, end).await
                }
                Err(other) => return Err(other),
            };
            let state = end.final_state(mode);
            if !mode.is_staged() {
                set_state(&mut tx, call, state).await?;
                tx.commit().await?;
                return Ok(ClosedSession {
                    mode,
                    totals: SessionTotals::default(),
                    import_result_id: None,
                });
            }
            let opened_at: i64 = sqlx::query_scalar("SELECT opened_at FROM sessions WHERE id = $1")
                .bind(call.session_id)
                .fetch_one(&mut *tx)
                .await?;
            let mut logged = None;
            let (status, totals) = if commit {
                match commit_staged(self, &mut tx, call, mode, force).await {
                    Ok((totals, last)) => {
                        logged = last;
                        (ImportStatus::Succeeded, totals)
                    }
                    Err(e) => {
                        // Nothing of the commit may stick (a guard refusal keeps the session
                        // open).
                        let _ = tx.rollback().await;
                        return Err(e);
                    }
                }
            } else {
                (ImportStatus::Canceled, SessionTotals::default())
            };
            let unstage = unstage_later(&mut tx, &[call.session_id]).await?;
            set_state(&mut tx, call, state).await?;
            let result = session_result(
                &call.connector.id,
                call.session_id,
                opened_at,
                call.now,
                status,
                totals,
                Vec::new(),
            );
            insert_import_result(&mut tx, &result).await?;
            crate::test_hooks::before_session_commit(call.session_id).await;
            tx.commit().await?;
            if let Some(sequence) = logged {
                self.published(&sequence);
            }
            if unstage {
                self.drain_unstaging();
            }
            Ok(ClosedSession {
                mode,
                totals,
                import_result_id: Some(result.id),
            })
        })
        .await
    }

    async fn expire_idle_sessions(&self, idle_cutoff: i64, now: i64) -> Result<u64> {
        run(async {
            let mut tx = self.write().await?;
            let ended: Vec<(String, String, i64)> = sqlx::query_as(
                "UPDATE sessions SET state = 'expired', closed_at = $2 \
                 WHERE state = 'open' AND mode <> 'stream' AND last_active_at < $1 \
                 RETURNING id, connector, opened_at",
            )
            .bind(idle_cutoff)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            cancel_sessions(&mut tx, &ended, now, "expired after idle timeout").await?;
            tx.commit().await?;
            // Every pass, not only when one expired: it also retries what an earlier drain of
            // any process left (a failure, a process that stopped).
            self.drain_unstaging();
            Ok(ended.len() as u64)
        })
        .await
    }
}

impl Backend {
    /// Applies (stream) or stages upsert batches of one session in one transaction, in order:
    /// a sequenced batch at or below the applied sequence is answered already applied, and the
    /// applied sequence ends at the last sequenced batch applied. The records written are logged
    /// last (ADR 0003), together.
    async fn upserts(
        &self,
        call: &SessionCall<'_>,
        batches: &[(Option<u64>, &[PreparedRecord])],
    ) -> Result<Vec<BatchResult<Vec<Outcome>>>> {
        run(async {
            let mut tx = self.write().await?;
            let (mode, mut applied_seq) = touch_session(&mut tx, call).await?;
            let mut results = Vec::with_capacity(batches.len());
            let mut written = Vec::new();
            let mut last_sequenced = None;
            for &(batch_seq, records) in batches {
                let call = SessionCall { batch_seq, ..*call };
                if already_applied(&call, applied_seq) {
                    results.push(BatchResult::AlreadyApplied);
                    continue;
                }
                let (outcomes, keys) = apply_upserts(&mut tx, &call, mode, records).await?;
                written.extend(keys);
                results.push(BatchResult::Applied(outcomes));
                if let Some(seq) = batch_seq {
                    applied_seq = to_i64(seq);
                    last_sequenced = Some(call);
                }
            }
            if let Some(call) = last_sequenced {
                end_batch(&mut tx, &call).await?;
            }
            let logged = log_upserts(&mut tx, call, &written).await?;
            tx.commit().await?;
            if let Some(sequence) = logged {
                self.published(&sequence);
            }
            Ok(results)
        })
        .await
    }
}

/// Checks that `call` names an open session of its connector that has not gone idle, marks it
/// active (on PostgreSQL locking its row until the transaction ends), and answers its mode and
/// applied sequence. Runs first in every batch and close transaction.
async fn touch_session(tx: &mut Tx, call: &SessionCall<'_>) -> StoreResult<(SessionMode, i64)> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "UPDATE sessions SET last_active_at = $1 \
         WHERE id = $2 AND connector = $3 AND state = 'open' \
           AND (mode = 'stream' OR last_active_at >= $4) \
         RETURNING mode, applied_seq",
    )
    .bind(call.now)
    .bind(call.session_id)
    .bind(&call.connector.id)
    .bind(call.idle_cutoff)
    .fetch_optional(&mut **tx)
    .await?;
    let (mode, applied_seq) = row.ok_or_else(|| session_denied(call.session_id))?;
    let mode = SessionMode::parse(&mode)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown session mode {mode:?}")))?;
    Ok((mode, applied_seq))
}

/// The answer to a close of a session that is no longer open: the one its own close gave,
/// read back from the session and its import result, when the session ended as `end` would
/// have left it (committed for a commit, rolled back for a rollback, closed for a stream
/// session). A commit can outlive its call (ADR 0019, ninth round), and the client's retry is
/// how it learns the totals. Any other ending is `PERMISSION_DENIED`, naming the state only
/// to the session's own connector.
async fn repeated_close(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    end: SessionEnd,
) -> StoreResult<ClosedSession> {
    static RESULT: LazyLock<String> = LazyLock::new(|| {
        format!("SELECT {IMPORT_RESULT_COLUMNS} FROM import_results WHERE session_id = $1")
    });
    let ended: Option<(String, String)> = sqlx::query_as(
        "SELECT mode, state FROM sessions WHERE id = $1 AND connector = $2 AND state <> 'open'",
    )
    .bind(call.session_id)
    .bind(&call.connector.id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((mode, state)) = ended else {
        return Err(session_denied(call.session_id));
    };
    let mode = SessionMode::parse(&mode)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown session mode {mode:?}")))?;
    if state != end.final_state(mode).as_str() {
        return Err(Error::PermissionDenied(format!(
            "session {} is not an open session: it ended {state}, which this close cannot repeat",
            call.session_id
        ))
        .into());
    }
    if !mode.is_staged() {
        return Ok(ClosedSession {
            mode,
            totals: SessionTotals::default(),
            import_result_id: None,
        });
    }
    // A staged session's close writes its import result in the transaction that ends it.
    let row = sqlx::query(&RESULT)
        .bind(call.session_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "session {} ended without an import result",
                call.session_id
            ))
        })?;
    let result = rows::import_result(&row)?;
    Ok(ClosedSession {
        mode,
        totals: result.totals,
        import_result_id: Some(result.id),
    })
}

/// Starts a batch: touches the session and answers its mode, or `None` when the call's
/// `batch_seq` was already applied (the caller commits the touch and applies nothing).
async fn begin_batch(tx: &mut Tx, call: &SessionCall<'_>) -> StoreResult<Option<SessionMode>> {
    let (mode, applied_seq) = touch_session(tx, call).await?;
    Ok((!already_applied(call, applied_seq)).then_some(mode))
}

/// Ends an applied batch: a sequenced one raises the session's applied sequence to its own, in
/// the batch's transaction, so the batch and the record of it commit together.
async fn end_batch(tx: &mut Tx, call: &SessionCall<'_>) -> StoreResult<()> {
    if let Some(seq) = call.batch_seq {
        sqlx::query("UPDATE sessions SET applied_seq = $2 WHERE id = $1")
            .bind(call.session_id)
            .bind(to_i64(seq))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Ends staged (accrue/replace) sessions with a canceled import result each: `ended` lists
/// `(id, connector, opened_at)`. Their staged rows are listed to delete after the transaction
/// ([`unstage_later`]); answers whether any was.
async fn cancel_sessions(
    tx: &mut Tx,
    ended: &[(String, String, i64)],
    now: i64,
    error: &str,
) -> StoreResult<bool> {
    if ended.is_empty() {
        return Ok(false);
    }
    let ids: Vec<&str> = ended.iter().map(|(id, _, _)| id.as_str()).collect();
    let unstage = unstage_later(tx, &ids).await?;
    for (id, connector, opened_at) in ended {
        let result = session_result(
            connector,
            id,
            *opened_at,
            now,
            ImportStatus::Canceled,
            SessionTotals::default(),
            vec![error.to_owned()],
        );
        insert_import_result(tx, &result).await?;
    }
    Ok(unstage)
}

/// Applies (stream) or stages (accrue/replace) the batch; answers the outcomes and the keys of
/// the records it wrote visibly (stream), for the caller to log last in its transaction: the
/// change counter is a transaction's last lock (ADR 0003), also when it applies several batches.
async fn apply_upserts<'r>(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    mode: SessionMode,
    records: &'r [PreparedRecord],
) -> StoreResult<(Vec<Outcome>, Vec<&'r str>)> {
    if records.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let existing = existing_records(tx, records.iter().map(|r| r.key.as_str())).await?;
    let applied = !mode.is_staged();
    let plan = plan_upserts(records, &existing, call.connector.write_policy, applied);
    let mut written = Vec::new();
    if !plan.writes.is_empty() {
        if applied {
            let writes: Vec<&PreparedRecord> = plan.writes.iter().map(|&i| &records[i]).collect();
            written = writes.iter().map(|r| r.key.as_str()).collect();
            let writer = Writer {
                entity_type: &call.connector.entity_type,
                connector: &call.connector.id,
                source: None,
                now: call.now,
            };
            write_records(tx, &writer, writes).await?;
        } else {
            // A record already as sent has nothing for commit to write, so its payload is not
            // staged (ADR 0019): replace stages a `keep` (the sweep spares it), accrue only
            // notes its key.
            let (kept, changed): (Vec<usize>, Vec<usize>) = plan
                .writes
                .iter()
                .partition(|&&i| plan.outcomes[i] == Outcome::Unchanged);
            if mode == SessionMode::Replace {
                let kept = kept.iter().map(|&i| (&*records[i].key, &*records[i].id));
                stage_ids(tx, call.session_id, "keep", kept.collect()).await?;
            } else {
                let kept: Vec<&str> = kept.iter().map(|&i| &*records[i].key).collect();
                note_unchanged(tx, call.session_id, &kept).await?;
            }
            let changed = changed.iter().map(|&i| &records[i]).collect();
            stage_upserts(tx, call.session_id, changed).await?;
        }
    }
    Ok((plan.outcomes, written))
}

/// Logs upserts of `keys` (records a stream batch or group wrote), last in the transaction.
async fn log_upserts(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    keys: &[&str],
) -> StoreResult<Option<Logged>> {
    log_keys(tx, &call.connector.entity_type, keys, Op::Upsert, call.now).await
}

/// Accrue/replace: stages the rows, appended: a later operation on the same key supersedes an
/// earlier one, whose row the commit deletes first ([`drop_superseded`]).
async fn stage_upserts(
    tx: &mut Tx,
    session_id: &str,
    writes: Vec<&PreparedRecord>,
) -> StoreResult<()> {
    if writes.is_empty() {
        return Ok(());
    }
    static STAGE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO staged_records (session_id, key, id, op, name, entity, instance, checksum) \
             SELECT $1, u.key, u.id, 'upsert', u.name, {}, {}, u.checksum FROM {}",
            json_value!("u.entity"),
            json_value!("u.instance"),
            rowset(2, &RECORD_COLUMNS)
        )
    });
    let stage = sqlx::query(&STAGE).bind(session_id);
    bind_rows(stage, record_rows(writes))?
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Accrue: keys found unchanged supersede what the session staged for them before (the last
/// operation wins: commit then leaves their records as they are) and are noted, one row for the
/// batch, for the commit to count ([`count_noted_unchanged`]). A `keep` row per record, as
/// replace stages, cost an unchanged re-send most of its time (ADR 0019, eighth round).
/// Superseding takes an `unchanged` marker row per key, appended like any staged row: the
/// commit deletes what it superseded ([`drop_superseded`]), and no statement of the commit
/// reads a marker as an operation.
async fn note_unchanged(tx: &mut Tx, session_id: &str, keys: &[&str]) -> StoreResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let keys = in_list_arg(keys.iter().copied())?;
    // Asked first, on its own: a session that staged nothing (an unchanged re-send) has
    // nothing to supersede, and appends no markers.
    let staged: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM staged_records WHERE session_id = $1)")
            .bind(session_id)
            .fetch_one(&mut **tx)
            .await?;
    if staged {
        sqlx::query(concat!(
            "INSERT INTO staged_records (session_id, key, id, op) \
             SELECT $1, k.value, '', 'unchanged' FROM ",
            list_elements!("$2", "k")
        ))
        .bind(session_id)
        .bind(keys.clone())
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("INSERT INTO staged_unchanged (session_id, keys) VALUES ($1, $2)")
        .bind(session_id)
        .bind(keys)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Accrue commit: the records [`note_unchanged`] noted, each once, that the session did not
/// stage again later. Unlike a `keep` row, a note counts as its batch reported it, also when the
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

/// Stages `(key, id)` rows of `op` (`delete` or `keep`), one per key; like any operation, a row
/// supersedes an earlier one on the same key.
async fn stage_ids(
    tx: &mut Tx,
    session_id: &str,
    op: &str,
    unique: HashMap<&str, &str>,
) -> StoreResult<()> {
    static STAGE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO staged_records (session_id, key, id, op) \
             SELECT $1, u.key, u.id, $2 FROM {}",
            rowset(3, &["key", "id"])
        )
    });
    if unique.is_empty() {
        return Ok(());
    }
    let mut rows = TextRows::new(2);
    for (key, id) in unique {
        rows.push(&[key, id]);
    }
    let stage = sqlx::query(&STAGE).bind(session_id).bind(op);
    bind_rows(stage, rows)?.execute(&mut **tx).await?;
    Ok(())
}

async fn apply_deletes(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    mode: SessionMode,
    ids: &[KeyedId],
) -> StoreResult<(Vec<Outcome>, Option<Logged>)> {
    let keys: Vec<&str> = ids.iter().map(|k| k.key.as_str()).collect();
    let mut logged = None;
    let exists: HashSet<String> = if mode.is_staged() {
        let found: Vec<String> = sqlx::query_scalar(concat!(
            "SELECT key FROM records WHERE connector = $1 AND ",
            in_list!("key", "$2")
        ))
        .bind(&call.connector.id)
        .bind(in_list_arg(keys.iter().copied())?)
        .fetch_all(&mut **tx)
        .await?;
        // One staged row per key (the last id wins, though a key names one id anyway).
        let unique: HashMap<&str, &str> = ids.iter().map(|k| (&*k.key, &*k.id)).collect();
        stage_ids(tx, call.session_id, "delete", unique).await?;
        found.into_iter().collect()
    } else {
        let deleted: Vec<String> = sqlx::query_scalar(concat!(
            "DELETE FROM records WHERE connector = $1 AND ",
            in_list!("key", "$2"),
            " RETURNING key"
        ))
        .bind(&call.connector.id)
        .bind(in_list_arg(keys.iter().copied())?)
        .fetch_all(&mut **tx)
        .await?;
        let gone: Vec<&str> = deleted.iter().map(String::as_str).collect();
        let entity_type = &call.connector.entity_type;
        logged = log_keys(tx, entity_type, &gone, Op::Delete, call.now).await?;
        deleted.into_iter().collect()
    };
    Ok((plan_deletes(&keys, &exists), logged))
}

/// Replace: stages the unchanged digests, one per key, as `keep`.
async fn stage_keeps(
    tx: &mut Tx,
    session_id: &str,
    digests: &[KeyedDigest],
    states: &[DigestState],
) -> StoreResult<()> {
    let unique: HashMap<&str, &str> = digests
        .iter()
        .zip(states)
        .filter(|(_, state)| **state == DigestState::Unchanged)
        .map(|(d, _)| (&*d.key, &*d.id))
        .collect();
    stage_ids(tx, session_id, "keep", unique).await
}

/// Stages a `keep` for every visible record of the connector in `ranges` (a reconcile call's
/// matched ranges), in one statement; an upper bound of "" is no upper end.
async fn stage_kept_ranges(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    ranges: &[IdRange],
) -> StoreResult<()> {
    static STAGE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO staged_records (session_id, key, id, op) \
             SELECT $1, r.key, r.id, 'keep' FROM {} JOIN records r \
                 ON r.entity_type = $2 AND r.connector = $3 AND r.id >= u.lower_bound \
                 AND (u.upper_bound = '' OR r.id < u.upper_bound)",
            rowset(4, &["lower_bound", "upper_bound"])
        )
    });
    if ranges.is_empty() {
        return Ok(());
    }
    let mut rows = TextRows::new(2);
    for range in ranges {
        rows.push(&[range.lower.as_str(), range.upper.as_deref().unwrap_or("")]);
    }
    let stage = sqlx::query(&STAGE)
        .bind(call.session_id)
        .bind(&call.connector.entity_type)
        .bind(&call.connector.id);
    bind_rows(stage, rows)?.execute(&mut **tx).await?;
    Ok(())
}

async fn set_state(tx: &mut Tx, call: &SessionCall<'_>, state: SessionState) -> StoreResult<()> {
    sqlx::query("UPDATE sessions SET state = $2, closed_at = $3 WHERE id = $1")
        .bind(call.session_id)
        .bind(state.as_str())
        .bind(call.now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Makes an accrue/replace session's staged data visible, set-based: superseded rows dropped,
/// totals by one aggregate, changes logged, the removal guard, changed rows written, deletes
/// applied, and for replace the sweep. `keep` rows (records or digests found unchanged when
/// staged) are never written: they count as unchanged while their record exists, and being
/// staged rows they spare it from the sweep's anti-join (replace); accrue's unchanged records
/// are counted from its notes. Every visible change is logged, set-based and before the writes
/// (the same predicates pick the rows; the sweep and its guard take the records its log
/// found); answers the totals and the last change-log sequence, if anything changed.
async fn commit_staged(
    store: &Backend,
    tx: &mut Tx,
    call: &SessionCall<'_>,
    mode: SessionMode,
    force: bool,
) -> StoreResult<(SessionTotals, Option<Logged>)> {
    let connector = call.connector;
    let (skip_all, skip_edited) = skip_flags(connector.write_policy);
    drop_superseded(tx, call.session_id).await?;
    // `skip` below: a changed record the write policy keeps as is.
    let (created, updated, unchanged, skipped, deleted): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT \
               count(*) FILTER (WHERE s.op = 'upsert' AND r.key IS NULL), \
               count(*) FILTER (WHERE s.op = 'upsert' AND r.checksum <> s.checksum \
                                AND NOT ($2 OR ($3 AND r.edited_at IS NOT NULL))), \
               count(*) FILTER (WHERE (s.op = 'upsert' AND r.checksum = s.checksum) \
                                OR (s.op = 'keep' AND r.key IS NOT NULL)), \
               count(*) FILTER (WHERE s.op = 'upsert' AND r.checksum <> s.checksum \
                                AND ($2 OR ($3 AND r.edited_at IS NOT NULL))), \
               count(*) FILTER (WHERE s.op = 'delete' AND r.key IS NOT NULL) \
             FROM staged_records s LEFT JOIN records r ON r.key = s.key WHERE s.session_id = $1",
        )
        .bind(call.session_id)
        .bind(skip_all)
        .bind(skip_edited)
        .fetch_one(&mut **tx)
        .await?;
    let noted = if mode == SessionMode::Accrue {
        count_noted_unchanged(tx, call.session_id).await?
    } else {
        0
    };
    let mut totals = SessionTotals {
        created: count(created),
        updated: count(updated),
        unchanged: count(unchanged) + noted,
        deleted: count(deleted),
        swept: 0,
        skipped: count(skipped),
    };

    // What the totals found none of is not looked for again: the commit of an unchanged
    // re-send reads its staged rows for the totals, and nothing more (they are deleted after
    // the commit, `unstaging`).
    let writes = totals.created + totals.updated > 0;
    let deletes = totals.deleted > 0;
    let (logged, swept) = if writes || deletes || mode == SessionMode::Replace {
        log_commit(tx, call, mode, skip_all, skip_edited).await?
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
/// last operation found it unchanged has its `unchanged` marker, [`note_unchanged`], which they
/// do not read as an operation; left in place, it costs no deletion). One pass over the
/// session's rows in key order (a window, in a small sort on SQLite, like the count of noted
/// keys); what it deletes is found by `seq`, usually nothing, joined by hashing
/// ([`begin_hashed_joins`]).
async fn drop_superseded(tx: &mut Tx, session_id: &str) -> StoreResult<()> {
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
    dropped?;
    joins?;
    sorts?;
    Ok(())
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
        "INSERT INTO records (key, entity_type, connector, id, name, entity, instance, checksum, \
                              version, created_at, updated_at, source, edited_at) \
         SELECT s.key, $2, $3, s.id, s.name, s.entity, s.instance, s.checksum, 1, $4, $4, NULL, NULL \
         FROM staged_records s LEFT JOIN records r ON r.key = s.key \
         WHERE s.session_id = $1 AND s.op = 'upsert' \
           AND (r.key IS NULL OR (r.checksum <> s.checksum \
                                  AND NOT ($5 OR ($6 AND r.edited_at IS NOT NULL)))) \
         ORDER BY s.key"
    };
}

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
    let mut attempt = sqlx::Acquire::begin(&mut *tx).await?;
    let inserted = staged_write(write_staged!(), call, skip_all, skip_edited)
        .execute(&mut *attempt)
        .await;
    match inserted {
        Ok(_) => {
            attempt.commit().await?;
            Ok(true)
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            attempt.rollback().await?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// `statement`, a form of [`write_staged!`], bound for `call`.
fn staged_write<'q>(
    statement: &'q str,
    call: &SessionCall<'q>,
    skip_all: bool,
    skip_edited: bool,
) -> Query<'q> {
    sqlx::query(statement)
        .bind(call.session_id)
        .bind(&call.connector.entity_type)
        .bind(&call.connector.id)
        .bind(call.now)
        .bind(skip_all)
        .bind(skip_edited)
}

/// Logs what a commit is about to change: an upsert for every staged upsert the commit writes
/// (same predicate as its INSERT), a delete for every staged delete of an existing record, and
/// for replace a delete for every record the sweep takes. Sequences follow key order within
/// each statement. First the connector's open stream sessions are locked (their batches in
/// flight finish first, new ones wait), then the counter: see the lock order in `changes`.
async fn log_commit(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    mode: SessionMode,
    skip_all: bool,
    skip_edited: bool,
) -> StoreResult<(Option<Logged>, Option<Swept>)> {
    lock_stream_sessions(tx, &call.connector.id).await?;
    let mut seq = Sequencer::start(tx, &call.connector.entity_type).await?;
    // Both statements sort on SQLite (like an accrue commit's count of noted keys): staged rows
    // come in the order they were staged, the connector's records by the source index.
    begin_small_sorts(tx).await?;
    let logged = log_changes(tx, call, mode, &mut seq, skip_all, skip_edited).await;
    end_small_sorts(tx).await?;
    let swept = logged?;
    Ok((seq.finish(tx).await?, swept))
}

/// [`log_commit`]'s statements, in key order each, drawing sequences from `seq`; answers a
/// replace commit's [`Swept`].
async fn log_changes(
    tx: &mut Tx,
    call: &SessionCall<'_>,
    mode: SessionMode,
    seq: &mut Sequencer,
    skip_all: bool,
    skip_edited: bool,
) -> StoreResult<Option<Swept>> {
    let connector = call.connector;
    let logged = sqlx::query(
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
    .bind(&connector.id)
    .execute(&mut **tx)
    .await?;
    seq.advance(logged.rows_affected());
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
