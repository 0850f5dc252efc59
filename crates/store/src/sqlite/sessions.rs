//! Sessions on SQLite: open (with supersede), batches, close (commit/rollback), idle expiry.

use super::changes::{log_keys, Op, Sequencer};
use super::{begin_batch, end_batch, insert_import_result, json_list, touch_session, SqliteStore};
use crate::error::{sweep_refused, StoreResult};
use crate::rows::{count, session_result, skip_flags};
use sqlx::{Sqlite, Transaction};
use std::collections::{HashMap, HashSet};
use tributary_core::error::ResourceKind;
use tributary_core::model::{
    Connector, DigestState, ImportStatus, Outcome, Session, SessionMode, SessionState,
    SessionTotals,
};
use tributary_core::record::{
    plan_deletes, plan_digests, plan_upserts, ExistingRecord, PreparedRecord,
};
use tributary_core::record::{KeyedDigest, KeyedId};
use tributary_core::session::{self, SessionEnd};
use tributary_core::store::{
    BatchResult, ClosedSession, OpenedSession, ResumedSession, SessionCall,
};
use tributary_core::Error;

/// Ends staged (accrue/replace) sessions in `state` with a canceled import result each:
/// `ended` lists `(id, connector, opened_at)`. Their staged rows are deleted.
async fn cancel_sessions(
    tx: &mut Transaction<'static, Sqlite>,
    ended: &[(String, String, i64)],
    now: i64,
    error: &str,
) -> StoreResult<()> {
    if ended.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM staged_records WHERE session_id IN (SELECT value FROM json_each(?1))")
        .bind(json_list(ended.iter().map(|(id, _, _)| id.as_str()))?)
        .execute(&mut **tx)
        .await?;
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
    Ok(())
}

pub(crate) async fn open_session(
    s: &SqliteStore,
    connector: &Connector,
    mode: SessionMode,
    now: i64,
) -> StoreResult<OpenedSession> {
    let id = uuid::Uuid::new_v4().to_string();
    let mut tx = s.write().await?;
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM connectors WHERE id = ?1")
        .bind(&connector.id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(Error::not_found(ResourceKind::Connector, &connector.id).into());
    }
    let mut superseded = Vec::new();
    if session::supersedes(mode) {
        let ended: Vec<(String, String, i64)> = sqlx::query_as(
            "UPDATE sessions SET state = 'superseded', closed_at = ?2 \
             WHERE connector = ?1 AND state = 'open' AND mode <> 'stream' RETURNING id, connector, opened_at",
        )
        .bind(&connector.id)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        cancel_sessions(&mut tx, &ended, now, &format!("superseded by session {id}")).await?;
        superseded = ended.into_iter().map(|(id, _, _)| id).collect();
    }
    sqlx::query(
        "INSERT INTO sessions (id, connector, mode, state, opened_at, last_active_at) VALUES (?1, ?2, ?3, 'open', ?4, ?4)",
    )
    .bind(&id)
    .bind(&connector.id)
    .bind(mode.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
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
}

pub(crate) async fn upsert_batch(
    s: &SqliteStore,
    call: &SessionCall<'_>,
    records: &[PreparedRecord],
) -> StoreResult<BatchResult<Vec<Outcome>>> {
    let mut tx = s.write().await?;
    let Some(mode) = begin_batch(&mut tx, call).await? else {
        tx.commit().await?;
        return Ok(BatchResult::AlreadyApplied);
    };
    let (outcomes, logged) = if records.is_empty() {
        (Vec::new(), None)
    } else {
        apply_upserts(&mut tx, call, mode, records).await?
    };
    end_batch(&mut tx, call).await?;
    tx.commit().await?;
    if let Some(sequence) = logged {
        s.changes.publish(sequence);
    }
    Ok(BatchResult::Applied(outcomes))
}

/// Applies or stages the batch; answers the outcomes and, when records changed visibly, the
/// last change-log sequence the batch logged.
async fn apply_upserts(
    tx: &mut Transaction<'static, Sqlite>,
    call: &SessionCall<'_>,
    mode: SessionMode,
    records: &[PreparedRecord],
) -> StoreResult<(Vec<Outcome>, Option<u64>)> {
    let existing = existing_records(tx, records.iter().map(|r| r.key.as_str())).await?;
    let applied = !mode.is_staged();
    let plan = plan_upserts(records, &existing, call.connector.write_policy, applied);
    let mut logged = None;
    if !plan.writes.is_empty() {
        let rows: Vec<serde_json::Value> = plan
            .writes
            .iter()
            .map(|&i| {
                let r = &records[i];
                serde_json::json!({
                    "key": r.key, "id": r.id, "name": r.name,
                    "entity": r.entity, "instance": r.instance, "checksum": r.checksum,
                })
            })
            .collect();
        let rows = serde_json::to_string(&rows)?;
        if applied {
            write_records(tx, call, &rows).await?;
            let keys: Vec<&str> = plan
                .writes
                .iter()
                .map(|&i| records[i].key.as_str())
                .collect();
            let entity_type = &call.connector.entity_type;
            logged = log_keys(tx, entity_type, &keys, Op::Upsert, call.now).await?;
        } else {
            stage_upserts(tx, call.session_id, &rows).await?;
        }
    }
    Ok((plan.outcomes, logged))
}

/// What the visible catalog holds for `keys`: one `SELECT` of their checksums.
async fn existing_records<'k>(
    tx: &mut Transaction<'static, Sqlite>,
    keys: impl IntoIterator<Item = &'k str>,
) -> StoreResult<HashMap<String, ExistingRecord>> {
    let found: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT key, checksum, edited_at IS NOT NULL FROM records WHERE key IN (SELECT value FROM json_each(?1))",
    )
    .bind(json_list(keys)?)
    .fetch_all(&mut **tx)
    .await?;
    Ok(found
        .into_iter()
        .map(|(key, checksum, edited)| (key, ExistingRecord { checksum, edited }))
        .collect())
}

/// Stream: applies the rows at once. Only created/updated rows reach here.
async fn write_records(
    tx: &mut Transaction<'static, Sqlite>,
    call: &SessionCall<'_>,
    rows: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO records (key, entity_type, connector, id, name, entity, instance, checksum, version, \
                              created_at, updated_at, source, edited_at) \
         SELECT json_extract(j.value, '$.key'), ?2, ?3, json_extract(j.value, '$.id'), \
                json_extract(j.value, '$.name'), json_extract(j.value, '$.entity'), \
                json_extract(j.value, '$.instance'), json_extract(j.value, '$.checksum'), 1, ?4, ?4, NULL, NULL \
         FROM json_each(?1) AS j WHERE true \
         ON CONFLICT (key) DO UPDATE SET name = excluded.name, entity = excluded.entity, \
             instance = excluded.instance, checksum = excluded.checksum, version = records.version + 1, \
             updated_at = excluded.updated_at, source = NULL",
    )
    .bind(rows)
    .bind(&call.connector.entity_type)
    .bind(&call.connector.id)
    .bind(call.now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Accrue/replace: stages the rows; a later operation on the same key replaces an earlier one.
async fn stage_upserts(
    tx: &mut Transaction<'static, Sqlite>,
    session_id: &str,
    rows: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO staged_records (session_id, key, id, op, name, entity, instance, checksum) \
         SELECT ?2, json_extract(j.value, '$.key'), json_extract(j.value, '$.id'), 'upsert', \
                json_extract(j.value, '$.name'), json_extract(j.value, '$.entity'), \
                json_extract(j.value, '$.instance'), json_extract(j.value, '$.checksum') \
         FROM json_each(?1) AS j WHERE true \
         ON CONFLICT (session_id, key) DO UPDATE SET id = excluded.id, op = 'upsert', name = excluded.name, \
             entity = excluded.entity, instance = excluded.instance, checksum = excluded.checksum",
    )
    .bind(rows)
    .bind(session_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn delete_batch(
    s: &SqliteStore,
    call: &SessionCall<'_>,
    ids: &[KeyedId],
) -> StoreResult<BatchResult<Vec<Outcome>>> {
    let mut tx = s.write().await?;
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
        s.changes.publish(sequence);
    }
    Ok(BatchResult::Applied(outcomes))
}

async fn apply_deletes(
    tx: &mut Transaction<'static, Sqlite>,
    call: &SessionCall<'_>,
    mode: SessionMode,
    ids: &[KeyedId],
) -> StoreResult<(Vec<Outcome>, Option<u64>)> {
    let keys: Vec<&str> = ids.iter().map(|k| k.key.as_str()).collect();
    let keys_json = json_list(keys.iter().copied())?;
    let mut logged = None;
    let exists: HashSet<String> = if mode.is_staged() {
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM records WHERE connector = ?2 AND key IN (SELECT value FROM json_each(?1))",
        )
        .bind(&keys_json)
        .bind(&call.connector.id)
        .fetch_all(&mut **tx)
        .await?;
        // One staged row per key (the last id wins, though a key names one id anyway).
        let mut unique: HashMap<&str, &str> = HashMap::new();
        for k in ids {
            unique.insert(&k.key, &k.id);
        }
        let rows: Vec<serde_json::Value> = unique
            .into_iter()
            .map(|(key, id)| serde_json::json!({ "key": key, "id": id }))
            .collect();
        sqlx::query(
            "INSERT INTO staged_records (session_id, key, id, op) \
             SELECT ?2, json_extract(j.value, '$.key'), json_extract(j.value, '$.id'), 'delete' \
             FROM json_each(?1) AS j WHERE true \
             ON CONFLICT (session_id, key) DO UPDATE SET id = excluded.id, op = 'delete', name = NULL, \
                 entity = NULL, instance = NULL, checksum = NULL",
        )
        .bind(serde_json::to_string(&rows)?)
        .bind(call.session_id)
        .execute(&mut **tx)
        .await?;
        found.into_iter().collect()
    } else {
        let deleted: Vec<String> = sqlx::query_scalar(
            "DELETE FROM records WHERE connector = ?2 AND key IN (SELECT value FROM json_each(?1)) RETURNING key",
        )
        .bind(&keys_json)
        .bind(&call.connector.id)
        .fetch_all(&mut **tx)
        .await?;
        let gone: Vec<&str> = deleted.iter().map(String::as_str).collect();
        let entity_type = &call.connector.entity_type;
        logged = log_keys(tx, entity_type, &gone, Op::Delete, call.now).await?;
        deleted.into_iter().collect()
    };
    Ok((plan_deletes(&keys, &exists), logged))
}

pub(crate) async fn diff_batch(
    s: &SqliteStore,
    call: &SessionCall<'_>,
    digests: &[KeyedDigest],
) -> StoreResult<BatchResult<Vec<DigestState>>> {
    let mut tx = s.write().await?;
    let Some(mode) = begin_batch(&mut tx, call).await? else {
        tx.commit().await?;
        return Ok(BatchResult::AlreadyApplied);
    };
    let states = if digests.is_empty() {
        Vec::new()
    } else {
        let existing = existing_records(&mut tx, digests.iter().map(|d| d.key.as_str())).await?;
        let states = plan_digests(digests, &existing);
        if mode == SessionMode::Replace {
            let keep = keep_rows(digests, &states);
            if !keep.is_empty() {
                stage_keeps(&mut tx, call.session_id, &serde_json::to_string(&keep)?).await?;
            }
        }
        states
    };
    end_batch(&mut tx, call).await?;
    tx.commit().await?;
    Ok(BatchResult::Applied(states))
}

/// The unchanged digests of a batch, one per key, as the JSON rows `stage_keeps` reads.
fn keep_rows(digests: &[KeyedDigest], states: &[DigestState]) -> Vec<serde_json::Value> {
    let mut unique: HashMap<&str, &str> = HashMap::new();
    for (d, state) in digests.iter().zip(states) {
        if *state == DigestState::Unchanged {
            unique.insert(&d.key, &d.id);
        }
    }
    unique
        .into_iter()
        .map(|(key, id)| serde_json::json!({ "key": key, "id": id }))
        .collect()
}

/// Replace: stages unchanged digests as `keep`; like any operation, it replaces an earlier one
/// on the same key.
async fn stage_keeps(
    tx: &mut Transaction<'static, Sqlite>,
    session_id: &str,
    rows: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO staged_records (session_id, key, id, op) \
         SELECT ?2, json_extract(j.value, '$.key'), json_extract(j.value, '$.id'), 'keep' \
         FROM json_each(?1) AS j WHERE true \
         ON CONFLICT (session_id, key) DO UPDATE SET id = excluded.id, op = 'keep', name = NULL, \
             entity = NULL, instance = NULL, checksum = NULL",
    )
    .bind(rows)
    .bind(session_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn resume_session(
    s: &SqliteStore,
    call: &SessionCall<'_>,
) -> StoreResult<ResumedSession> {
    let mut tx = s.write().await?;
    let (mode, applied_seq) = touch_session(&mut tx, call).await?;
    tx.commit().await?;
    Ok(ResumedSession {
        mode,
        last_batch_seq: u64::try_from(applied_seq).unwrap_or(0),
    })
}

pub(crate) async fn close_session(
    s: &SqliteStore,
    call: &SessionCall<'_>,
    commit: bool,
    force: bool,
) -> StoreResult<ClosedSession> {
    let mut tx = s.write().await?;
    let (mode, _) = touch_session(&mut tx, call).await?;
    let end = if commit {
        SessionEnd::Commit
    } else {
        SessionEnd::Rollback
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
    let opened_at: i64 = sqlx::query_scalar("SELECT opened_at FROM sessions WHERE id = ?1")
        .bind(call.session_id)
        .fetch_one(&mut *tx)
        .await?;
    let mut logged = None;
    let (status, totals) = if commit {
        match commit_staged(&mut tx, call, mode, force).await {
            Ok((totals, last)) => {
                logged = last;
                (ImportStatus::Succeeded, totals)
            }
            Err(e) => {
                // Nothing of the commit may stick (the guard refusal keeps the session open).
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
    } else {
        (ImportStatus::Canceled, SessionTotals::default())
    };
    sqlx::query("DELETE FROM staged_records WHERE session_id = ?1")
        .bind(call.session_id)
        .execute(&mut *tx)
        .await?;
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
        s.changes.publish(sequence);
    }
    Ok(ClosedSession {
        mode,
        totals,
        import_result_id: Some(result.id),
    })
}

async fn set_state(
    tx: &mut Transaction<'static, Sqlite>,
    call: &SessionCall<'_>,
    state: SessionState,
) -> StoreResult<()> {
    sqlx::query("UPDATE sessions SET state = ?2, closed_at = ?3 WHERE id = ?1")
        .bind(call.session_id)
        .bind(state.as_str())
        .bind(call.now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Makes an accrue/replace session's staged data visible, set-based: totals by one aggregate,
/// the removal guard, changed rows written, deletes applied, and for replace the sweep.
/// `keep` rows (digests found unchanged) are never written: they count as unchanged while their
/// record exists, and being staged rows they spare it from the sweep's anti-join.
/// Every visible change is logged, set-based and before the writes (the same predicates pick
/// the rows); answers the totals and the last change-log sequence, if anything changed.
async fn commit_staged(
    tx: &mut Transaction<'static, Sqlite>,
    call: &SessionCall<'_>,
    mode: SessionMode,
    force: bool,
) -> StoreResult<(SessionTotals, Option<u64>)> {
    let connector = call.connector;
    let (skip_all, skip_edited) = skip_flags(connector.write_policy);
    // `skip` below: a changed record the write policy keeps as is.
    let (created, updated, unchanged, skipped, deleted): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT \
           count(*) FILTER (WHERE s.op = 'upsert' AND r.key IS NULL), \
           count(*) FILTER (WHERE s.op = 'upsert' AND r.checksum <> s.checksum \
                            AND NOT (?2 OR (?3 AND r.edited_at IS NOT NULL))), \
           count(*) FILTER (WHERE (s.op = 'upsert' AND r.checksum = s.checksum) \
                            OR (s.op = 'keep' AND r.key IS NOT NULL)), \
           count(*) FILTER (WHERE s.op = 'upsert' AND r.checksum <> s.checksum \
                            AND (?2 OR (?3 AND r.edited_at IS NOT NULL))), \
           count(*) FILTER (WHERE s.op = 'delete' AND r.key IS NOT NULL) \
         FROM staged_records s LEFT JOIN records r ON r.key = s.key WHERE s.session_id = ?1",
        )
        .bind(call.session_id)
        .bind(skip_all)
        .bind(skip_edited)
        .fetch_one(&mut **tx)
        .await?;
    let mut totals = SessionTotals {
        created: count(created),
        updated: count(updated),
        unchanged: count(unchanged),
        deleted: count(deleted),
        swept: 0,
        skipped: count(skipped),
    };

    if mode == SessionMode::Replace && !force {
        if let Some(limit) = connector.reject_removals_above_percent {
            let (candidates, total): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE NOT EXISTS \
                          (SELECT 1 FROM staged_records s WHERE s.session_id = ?2 AND s.key = r.key)), \
                        count(*) \
                 FROM records r WHERE r.connector = ?1",
            )
            .bind(&connector.id)
            .bind(call.session_id)
            .fetch_one(&mut **tx)
            .await?;
            if session::sweep_refused(count(candidates), count(total), Some(limit)) {
                return Err(sweep_refused(count(candidates), count(total), limit));
            }
        }
    }

    let logged = log_commit(tx, call, mode, skip_all, skip_edited).await?;

    // Unchanged and policy-skipped rows are filtered out before the write, so they cost no
    // row lock or rewrite, and their version and updated_at stay put.
    sqlx::query(
        "INSERT INTO records (key, entity_type, connector, id, name, entity, instance, checksum, version, \
                              created_at, updated_at, source, edited_at) \
         SELECT s.key, ?2, ?3, s.id, s.name, s.entity, s.instance, s.checksum, 1, ?4, ?4, NULL, NULL \
         FROM staged_records s LEFT JOIN records r ON r.key = s.key \
         WHERE s.session_id = ?1 AND s.op = 'upsert' \
           AND (r.key IS NULL OR (r.checksum <> s.checksum AND NOT (?5 OR (?6 AND r.edited_at IS NOT NULL)))) \
         ON CONFLICT (key) DO UPDATE SET name = excluded.name, entity = excluded.entity, \
             instance = excluded.instance, checksum = excluded.checksum, version = records.version + 1, \
             updated_at = excluded.updated_at, source = NULL",
    )
    .bind(call.session_id)
    .bind(&connector.entity_type)
    .bind(&connector.id)
    .bind(call.now)
    .bind(skip_all)
    .bind(skip_edited)
    .execute(&mut **tx)
    .await?;

    sqlx::query(
        "DELETE FROM records WHERE connector = ?1 AND key IN \
         (SELECT key FROM staged_records WHERE session_id = ?2 AND op = 'delete')",
    )
    .bind(&connector.id)
    .bind(call.session_id)
    .execute(&mut **tx)
    .await?;

    if mode == SessionMode::Replace {
        let swept = sqlx::query(
            "DELETE FROM records WHERE connector = ?1 AND NOT EXISTS \
             (SELECT 1 FROM staged_records s WHERE s.session_id = ?2 AND s.key = records.key)",
        )
        .bind(&connector.id)
        .bind(call.session_id)
        .execute(&mut **tx)
        .await?;
        totals.swept = swept.rows_affected();
    }
    Ok((totals, logged))
}

/// Logs what a commit is about to change: an upsert for every staged upsert the commit writes
/// (same predicate as its INSERT), a delete for every staged delete of an existing record, and
/// for replace a delete for every record the sweep takes. Sequences follow key order within
/// each statement.
async fn log_commit(
    tx: &mut Transaction<'static, Sqlite>,
    call: &SessionCall<'_>,
    mode: SessionMode,
    skip_all: bool,
    skip_edited: bool,
) -> StoreResult<Option<u64>> {
    let connector = call.connector;
    let mut seq = Sequencer::start(tx).await?;
    let logged = sqlx::query(
        "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
         SELECT ?1 + row_number() OVER (ORDER BY s.key), ?2, s.key, \
                CASE s.op WHEN 'upsert' THEN 'upsert' ELSE 'delete' END, ?4 \
         FROM staged_records s LEFT JOIN records r ON r.key = s.key \
         WHERE s.session_id = ?3 AND ( \
           (s.op = 'upsert' AND (r.key IS NULL OR (r.checksum <> s.checksum \
                                  AND NOT (?5 OR (?6 AND r.edited_at IS NOT NULL))))) \
           OR (s.op = 'delete' AND r.key IS NOT NULL AND r.connector = ?7))",
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
    if mode == SessionMode::Replace {
        let swept = sqlx::query(
            "INSERT INTO change_log (seq, entity_type, key, op, recorded_at) \
             SELECT ?1 + row_number() OVER (ORDER BY r.key), r.entity_type, r.key, 'delete', ?2 \
             FROM records r WHERE r.connector = ?3 AND NOT EXISTS \
             (SELECT 1 FROM staged_records s WHERE s.session_id = ?4 AND s.key = r.key)",
        )
        .bind(seq.base())
        .bind(call.now)
        .bind(&connector.id)
        .bind(call.session_id)
        .execute(&mut **tx)
        .await?;
        seq.advance(swept.rows_affected());
    }
    seq.finish(tx).await
}

pub(crate) async fn expire_idle_sessions(
    s: &SqliteStore,
    idle_cutoff: i64,
    now: i64,
) -> StoreResult<u64> {
    let mut tx = s.write().await?;
    let ended: Vec<(String, String, i64)> = sqlx::query_as(
        "UPDATE sessions SET state = 'expired', closed_at = ?2 \
         WHERE state = 'open' AND mode <> 'stream' AND last_active_at < ?1 RETURNING id, connector, opened_at",
    )
    .bind(idle_cutoff)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    cancel_sessions(&mut tx, &ended, now, "expired after idle timeout").await?;
    tx.commit().await?;
    Ok(ended.len() as u64)
}
