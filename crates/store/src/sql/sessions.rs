//! Sessions (SPEC.md §2): open (with supersede), batches, close (commit or rollback), expiry.
//!
//! Every batch and close starts by touching its session row (`UPDATE … RETURNING`): no row
//! means `PERMISSION_DENIED` (but a close of a session that ended as that close would leave it
//! answers as the close that ended it, [`repeated_close`]), and on PostgreSQL the row lock serialises the batch against a
//! concurrent close, supersede or expiry of the same session. Accrue/replace data is staged in
//! `staged_records` and made visible by set-based SQL in the commit's one transaction (ADR 0001).

use super::changes::log_keys;
use super::commit::commit_staged;
use super::records::{existing_records, insert_import_result, write_records, Writer};
use super::unstaging::unstage_later;
use super::{bind_rows, in_list_arg, read_items_page, rowset, Backend, Tx};
use crate::batch::{record_rows, TextRows, RECORD_COLUMNS};
use crate::changes::{Logged, Op};
use crate::error::{run, session_denied, StoreError, StoreResult};
use crate::rows::{self, already_applied, session_result, to_i64, IMPORT_RESULT_COLUMNS};
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
