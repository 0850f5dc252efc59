//! Sessions (SPEC.md §2.1, §2.2): stream, accrue and replace; supersede, expiry, denial.

use super::support::*;
use serde_json::{json, Value};
use tributary_core::checksum::canonical_json;
use tributary_core::error::ResourceKind;
use tributary_core::ids::new_connector_id;
use tributary_core::model::{
    Connector, ImportStatus, Outcome, SessionMode, SessionTotals, WritePolicy,
};
use tributary_core::record::PreparedRecord;
use tributary_core::Error;
use tributary_store::testing::TestDb;

conformance!(
    stream_upsert_outcomes,
    stream_supplied_checksum_is_used_as_is,
    stream_delete_outcomes,
    a_batch_finds_its_records_whatever_their_checksums_hold,
    a_batch_of_hundreds_lands_row_for_row,
    accrue_is_invisible_until_commit,
    a_close_sent_again_answers_as_the_first_did,
    accrue_rollback_discards,
    accrue_last_operation_wins,
    accrue_commit_writes_only_changed_rows,
    a_commit_of_thousands_writes_new_and_changed_records_alike,
    a_record_staged_unchanged_is_kept_not_written_back,
    accrue_counts_each_unchanged_record_once,
    a_key_sent_back_and_forth_ends_as_its_last_batch_left_it,
    an_accrue_commit_of_deletes_only_applies_them,
    a_large_change_gets_fresh_statistics,
    replace_sweeps_exactly_the_unstaged_records,
    replace_guard_refuses_then_force_commits,
    supersede_denies_the_old_session_and_discards_its_data,
    staged_rows_go_after_every_end_even_one_whose_process_stopped,
    the_drain_keeps_what_open_sessions_staged,
    stream_sessions_are_never_superseded,
    foreign_unknown_and_closed_sessions_are_denied,
    idle_sessions_expire,
    a_batch_keeps_its_session_from_expiring,
    concurrent_unary_batches_of_one_session_all_stage,
);

async fn stream_upsert_outcomes(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let s = open(db, &c, SessionMode::Stream, T0).await;
    let up = |now: i64, records: Vec<PreparedRecord>| {
        let s = s.clone();
        let c = c.clone();
        async move {
            db.store
                .upsert_batch(&call(&s, &c, now), &records)
                .await
                .applied_ok()
        }
    };
    assert_eq!(
        up(T0, vec![record(&c, "GB", 1), record(&c, "FR", 2)]).await,
        [Outcome::Created, Outcome::Created]
    );
    let gb = get(db, &c, "GB").await.unwrap();
    assert_eq!((gb.version, gb.created_at, gb.updated_at), (1, T0, T0));
    assert_eq!(
        (
            gb.entity_type.as_str(),
            gb.connector.as_str(),
            gb.id.as_str()
        ),
        ("country", c.id.as_str(), "GB")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&gb.entity).unwrap(),
        json!({"population": 1})
    );
    assert_eq!(
        serde_json::from_str::<Value>(&gb.instance).unwrap(),
        json!({})
    );
    assert_eq!((gb.source, gb.edited_at), (None, None));
    // Entity and instance come back as the canonical text they were stored as, on both backends.
    let mut wide = record(&c, "WIDE", 1);
    wide.entity = canonical_json(
        &json!({"zeta": [1, 2.5, "x"], "a": {"b": null, "aa": true}, "population": 3}),
    )
    .unwrap();
    wide.instance = canonical_json(&json!({"source": "test", "n": 1e3})).unwrap();
    up(T0, vec![wide.clone()]).await;
    let stored = get(db, &c, "WIDE").await.unwrap();
    assert_eq!(
        (stored.entity, stored.instance),
        (wide.entity, wide.instance)
    );

    // Unchanged: neither version nor updated_at move.
    assert_eq!(
        up(T0 + SEC, vec![record(&c, "GB", 1)]).await,
        [Outcome::Unchanged]
    );
    let gb = get(db, &c, "GB").await.unwrap();
    assert_eq!((gb.version, gb.updated_at), (1, T0));

    // Updated: version + 1, updated_at moves, created_at stays.
    assert_eq!(
        up(T0 + 2 * SEC, vec![record(&c, "GB", 10)]).await,
        [Outcome::Updated]
    );
    let gb = get(db, &c, "GB").await.unwrap();
    assert_eq!(
        (gb.version, gb.created_at, gb.updated_at),
        (2, T0, T0 + 2 * SEC)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&gb.entity).unwrap(),
        json!({"population": 10})
    );

    // Within a batch each record is judged against the ones before it; the last write wins.
    let outcomes = up(
        T0 + 3 * SEC,
        vec![
            record(&c, "DE", 1),
            record(&c, "DE", 2),
            record(&c, "DE", 2),
        ],
    )
    .await;
    assert_eq!(
        outcomes,
        [Outcome::Created, Outcome::Updated, Outcome::Unchanged]
    );
    let de = get(db, &c, "DE").await.unwrap();
    assert_eq!(
        (de.version, de.checksum.as_str()),
        (1, record(&c, "DE", 2).checksum.as_str())
    );
    assert_eq!(up(T0 + 4 * SEC, vec![]).await, []);
    assert_eq!(db.store.count_records("country").await.unwrap(), 4);

    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + 5 * SEC), true, false)
        .await
        .unwrap();
    assert_eq!(
        (closed.mode, closed.totals, closed.import_result_id),
        (SessionMode::Stream, SessionTotals::default(), None)
    );
    assert!(db
        .store
        .list_import_results(&ImportResultFilter::default(), None, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn stream_supplied_checksum_is_used_as_is(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let mut r = record(&c, "GB", 1);
    r.checksum = "upstream-etag-1".into();
    assert_eq!(stream(db, &c, &[r.clone()], T0).await, [Outcome::Created]);
    assert_eq!(get(db, &c, "GB").await.unwrap().checksum, "upstream-etag-1");
    // Different data under the same supplied checksum is unchanged: the checksum decides.
    let mut same = record(&c, "GB", 99);
    same.checksum = "upstream-etag-1".into();
    assert_eq!(
        stream(db, &c, &[same], T0 + SEC).await,
        [Outcome::Unchanged]
    );
    assert_eq!(
        serde_json::from_str::<Value>(&get(db, &c, "GB").await.unwrap().entity).unwrap(),
        json!({"population": 1})
    );
}

async fn stream_delete_outcomes(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let other = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "GB", 1), record(&c, "FR", 1)], T0).await;
    stream(db, &other, &[record(&other, "GB", 1)], T0).await;
    let s = open(db, &c, SessionMode::Stream, T0).await;
    let outcomes = db
        .store
        .delete_batch(
            &call(&s, &c, T0),
            &[keyed(&c, "GB"), keyed(&c, "XX"), keyed(&c, "GB")],
        )
        .await
        .applied_ok();
    assert_eq!(
        outcomes,
        [Outcome::Deleted, Outcome::NotFound, Outcome::NotFound]
    );
    assert_eq!(visible_ids(db, &c).await, ids(&["FR"]));
    // Another connector's key is not this connector's to delete.
    let outcomes = db
        .store
        .delete_batch(&call(&s, &c, T0), &[keyed(&other, "GB")])
        .await
        .applied_ok();
    assert_eq!(outcomes, [Outcome::NotFound]);
    assert_eq!(visible_ids(db, &other).await, ids(&["GB"]));
}

// ---------------------------------------------------------------------------------------------
// Accrue and replace

/// A batch finds the records it sends again whatever their supplied checksums hold: SQLite reads
/// what a batch finds back as one JSON text (`existing_rows!`), and a connector's own checksum
/// (1..128 characters of anything) is the one field in it a client controls (keys are hex), so
/// characters JSON escapes must come back as they went in.
async fn a_batch_finds_its_records_whatever_their_checksums_hold(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let checksums = [
        "q\"uote",
        "back\\slash",
        "new\nline",
        "tab\t",
        "é€😀",
        "[1,\"2\"]",
        "12:ab",
        " ",
        "\u{7f}",
    ];
    let sent = |version: i64| {
        checksums
            .iter()
            .enumerate()
            .map(|(i, checksum)| {
                let mut r = record(&c, &format!("R{i}"), version);
                r.checksum = (*checksum).to_owned();
                r
            })
            .collect::<Vec<_>>()
    };
    stream(db, &c, &sent(1), T0).await;
    let s = open(db, &c, SessionMode::Accrue, T0 + SEC).await;
    let at = call(&s, &c, T0 + SEC);
    assert_eq!(
        db.store.upsert_batch(&at, &sent(1)).await.applied_ok(),
        [Outcome::Unchanged; 9]
    );
    let mut again = sent(1);
    again[4].checksum = "é€😀 changed".to_owned();
    let outcomes = db.store.upsert_batch(&at, &again).await.applied_ok();
    assert_eq!(outcomes[4], Outcome::Updated);
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Outcome::Unchanged)
            .count(),
        8
    );
}

/// A batch of hundreds of records lands row for row, streamed and staged: each record with its
/// own fields (no row's cells shifted onto another's, whatever the backend's batch parameters
/// are), and of two rows for one key far apart in the batch the later wins.
async fn a_batch_of_hundreds_lands_row_for_row(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let ids: Vec<String> = (0..777).map(|i| format!("R{i:03}")).collect();
    let batch = |base: i64| {
        ids.iter()
            .zip(base..)
            .map(|(id, population)| record(&c, id, population))
            .collect::<Vec<_>>()
    };
    let landed = |expected: Vec<PreparedRecord>| async move {
        let keys: Vec<String> = expected.iter().map(|r| r.key.clone()).collect();
        let stored = db.store.get_records(&keys).await.unwrap();
        assert_eq!(stored.len(), expected.len());
        for want in &expected {
            let got = stored.iter().find(|r| r.key == want.key).unwrap();
            assert_eq!(
                (
                    &got.id,
                    &got.name,
                    &got.entity,
                    &got.instance,
                    &got.checksum
                ),
                (
                    &want.id,
                    &want.name,
                    &want.entity,
                    &want.instance,
                    &want.checksum
                )
            );
        }
    };
    let outcomes = stream(db, &c, &batch(0), T0).await;
    assert_eq!(outcomes, vec![Outcome::Created; 777]);
    landed(batch(0)).await;

    let s = open(db, &c, SessionMode::Accrue, T0 + SEC).await;
    let mut sent = batch(1000);
    sent.push(record(&c, "R005", 5)); // as visible: unstages R005's update from the batch
    sent.push(record(&c, "R700", -1)); // replaces R700's staged row
    let outcomes = db
        .store
        .upsert_batch(&call(&s, &c, T0 + SEC), &sent)
        .await
        .applied_ok();
    assert_eq!(outcomes[777], Outcome::Unchanged);
    db.store
        .close_session(&call(&s, &c, T0 + 2 * SEC), true, false)
        .await
        .unwrap();
    let mut expected = batch(1000);
    expected[5] = record(&c, "R005", 5);
    expected[700] = record(&c, "R700", -1);
    landed(expected).await;
}

async fn accrue_is_invisible_until_commit(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "OLD", 1)], T0).await;
    let s = open(db, &c, SessionMode::Accrue, T0).await;
    let outcomes = db
        .store
        .upsert_batch(
            &call(&s, &c, T0 + SEC),
            &[record(&c, "GB", 1), record(&c, "FR", 2)],
        )
        .await
        .applied_ok();
    assert_eq!(outcomes, [Outcome::Created, Outcome::Created]);
    let outcomes = db
        .store
        .delete_batch(
            &call(&s, &c, T0 + SEC),
            &[keyed(&c, "OLD"), keyed(&c, "NONE")],
        )
        .await
        .applied_ok();
    assert_eq!(outcomes, [Outcome::Deleted, Outcome::NotFound]);
    assert_eq!(visible_ids(db, &c).await, ids(&["OLD"]));
    assert!(get(db, &c, "GB").await.is_none());

    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + 2 * SEC), true, false)
        .await
        .unwrap();
    assert_eq!(closed.mode, SessionMode::Accrue);
    assert_eq!(closed.totals, totals(2, 0, 0, 1, 0, 0));
    assert_eq!(visible_ids(db, &c).await, ids(&["FR", "GB"]));
    let gb = get(db, &c, "GB").await.unwrap();
    assert_eq!(
        (gb.version, gb.created_at, gb.updated_at),
        (1, T0 + 2 * SEC, T0 + 2 * SEC)
    );

    let result = db
        .store
        .get_import_result(closed.import_result_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(result.status, ImportStatus::Succeeded);
    assert_eq!(result.totals, closed.totals);
    assert_eq!(
        (result.connector.as_str(), result.session_id.as_deref()),
        (c.id.as_str(), Some(s.as_str()))
    );
    assert_eq!((result.started_at, result.ended_at), (T0, T0 + 2 * SEC));
    assert!(
        result.errors.is_empty()
            && result.skipped_items.is_empty()
            && result.failed_items.is_empty()
    );
    // The same close sent again (its answer lost) answers as the first did.
    let again = db
        .store
        .close_session(&call(&s, &c, T0 + 3 * SEC), true, false)
        .await
        .unwrap();
    assert_eq!(again, closed);
}

/// A close sent again after its session ended answers what the close it repeats answered, when
/// the session ended that way; a close that would end it otherwise is denied, naming the state
/// to the session's own connector only.
async fn a_close_sent_again_answers_as_the_first_did(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let other = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "OLD", 1), record(&c, "SAME", 1)], T0).await;
    let committed = open(db, &c, SessionMode::Replace, T0).await;
    db.store
        .upsert_batch(
            &call(&committed, &c, T0),
            &[record(&c, "NEW", 1), record(&c, "SAME", 1)],
        )
        .await
        .applied_ok();
    let first = db
        .store
        .close_session(&call(&committed, &c, T0 + SEC), true, false)
        .await
        .unwrap();
    assert_eq!(first.totals, totals(1, 0, 1, 0, 1, 0));
    for at in [T0 + 2 * SEC, T0 + 3 * SEC] {
        let again = db
            .store
            .close_session(&call(&committed, &c, at), true, true)
            .await
            .unwrap();
        assert_eq!(again, first);
    }
    assert_ended(
        db.store
            .close_session(&call(&committed, &c, T0 + 3 * SEC), false, false)
            .await,
        "committed",
    );
    // Another connector learns nothing of it.
    assert_denied(
        db.store
            .close_session(&call(&committed, &other, T0 + 3 * SEC), true, false)
            .await,
    );

    let rolled_back = open(db, &c, SessionMode::Accrue, T0 + 4 * SEC).await;
    db.store
        .upsert_batch(&call(&rolled_back, &c, T0 + 4 * SEC), &[record(&c, "X", 1)])
        .await
        .applied_ok();
    let first = db
        .store
        .close_session(&call(&rolled_back, &c, T0 + 5 * SEC), false, false)
        .await
        .unwrap();
    let again = db
        .store
        .close_session(&call(&rolled_back, &c, T0 + 6 * SEC), false, false)
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(again.totals, SessionTotals::default());
    assert_ended(
        db.store
            .close_session(&call(&rolled_back, &c, T0 + 6 * SEC), true, false)
            .await,
        "rolled_back",
    );
    assert!(
        get(db, &c, "X").await.is_none(),
        "a repeated close commits nothing"
    );

    // A stream session closes the same way whatever the flag: any close is a repeat.
    let streamed = open(db, &c, SessionMode::Stream, T0 + 7 * SEC).await;
    let first = db
        .store
        .close_session(&call(&streamed, &c, T0 + 7 * SEC), true, false)
        .await
        .unwrap();
    for commit in [true, false] {
        let again = db
            .store
            .close_session(&call(&streamed, &c, T0 + 8 * SEC), commit, false)
            .await
            .unwrap();
        assert_eq!(again, first);
    }

    // A superseded session was not closed by a close: there is none to repeat.
    let superseded = open(db, &c, SessionMode::Accrue, T0 + 9 * SEC).await;
    let latest = open(db, &c, SessionMode::Accrue, T0 + 10 * SEC).await;
    assert_ended(
        db.store
            .close_session(&call(&superseded, &c, T0 + 10 * SEC), true, false)
            .await,
        "superseded",
    );
    db.store
        .close_session(&call(&latest, &c, T0 + 11 * SEC), false, false)
        .await
        .unwrap();
}

/// `PermissionDenied` for a close that cannot repeat how the session ended (`state`).
fn assert_ended<T: std::fmt::Debug>(result: Result<T, Error>, state: &str) {
    match result {
        Err(Error::PermissionDenied(message)) => {
            assert!(message.contains("not an open session"), "{message}");
            assert!(message.contains(&format!("it ended {state}")), "{message}");
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

async fn accrue_rollback_discards(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "OLD", 1)], T0).await;
    for mode in [SessionMode::Accrue, SessionMode::Replace] {
        let s = open(db, &c, mode, T0).await;
        db.store
            .upsert_batch(
                &call(&s, &c, T0),
                &[record(&c, "GB", 1), record(&c, "OLD", 2)],
            )
            .await
            .applied_ok();
        db.store
            .delete_batch(&call(&s, &c, T0), &[keyed(&c, "OLD")])
            .await
            .applied_ok();
        let closed = db
            .store
            .close_session(&call(&s, &c, T0 + SEC), false, false)
            .await
            .unwrap();
        assert_eq!(
            (closed.mode, closed.totals),
            (mode, SessionTotals::default())
        );
        let result = db
            .store
            .get_import_result(&closed.import_result_id.unwrap())
            .await
            .unwrap();
        assert_eq!(
            (result.status, result.session_id.as_deref()),
            (ImportStatus::Canceled, Some(s.as_str()))
        );
        assert_denied(
            db.store
                .upsert_batch(&call(&s, &c, T0 + SEC), &[record(&c, "GB", 1)])
                .await,
        );
        assert_eq!(visible_ids(db, &c).await, ids(&["OLD"]));
        assert_eq!(get(db, &c, "OLD").await.unwrap().version, 1);
    }
}

async fn accrue_last_operation_wins(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "KEEP", 1)], T0).await;
    let s = open(db, &c, SessionMode::Accrue, T0).await;
    let at = call(&s, &c, T0);
    // Upsert then delete: nothing is created. Delete then upsert: the record is written.
    db.store
        .upsert_batch(&at, &[record(&c, "A", 1)])
        .await
        .applied_ok();
    db.store
        .delete_batch(&at, &[keyed(&c, "A")])
        .await
        .applied_ok();
    assert_eq!(
        db.store
            .delete_batch(&at, &[keyed(&c, "KEEP")])
            .await
            .applied_ok(),
        [Outcome::Deleted]
    );
    assert_eq!(
        db.store
            .upsert_batch(&at, &[record(&c, "KEEP", 5)])
            .await
            .applied_ok(),
        [Outcome::Updated]
    );
    // Staged outcomes are judged against the visible catalog: twice created.
    assert_eq!(
        db.store
            .upsert_batch(&at, &[record(&c, "B", 1), record(&c, "B", 2)])
            .await
            .applied_ok(),
        [Outcome::Created, Outcome::Created]
    );
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + SEC), true, false)
        .await
        .unwrap();
    assert_eq!(closed.totals, totals(1, 1, 0, 0, 0, 0));
    assert_eq!(visible_ids(db, &c).await, ids(&["B", "KEEP"]));
    assert_eq!(
        get(db, &c, "B").await.unwrap().checksum,
        record(&c, "B", 2).checksum
    );
    assert_eq!(get(db, &c, "KEEP").await.unwrap().version, 2);
}

async fn accrue_commit_writes_only_changed_rows(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "A", 1), record(&c, "B", 1)], T0).await;
    let s = open(db, &c, SessionMode::Accrue, T0 + SEC).await;
    let outcomes = db
        .store
        .upsert_batch(
            &call(&s, &c, T0 + SEC),
            &[record(&c, "A", 1), record(&c, "B", 2), record(&c, "C", 1)],
        )
        .await
        .applied_ok();
    assert_eq!(
        outcomes,
        [Outcome::Unchanged, Outcome::Updated, Outcome::Created]
    );
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + 2 * SEC), true, false)
        .await
        .unwrap();
    assert_eq!(closed.totals, totals(1, 1, 1, 0, 0, 0));
    let a = get(db, &c, "A").await.unwrap();
    assert_eq!((a.version, a.updated_at), (1, T0));
    let b = get(db, &c, "B").await.unwrap();
    assert_eq!(
        (b.version, b.created_at, b.updated_at),
        (2, T0, T0 + 2 * SEC)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&b.entity).unwrap(),
        json!({"population": 2})
    );
}

/// Commits creating more than a batch's worth of records, new records alone and then new ones
/// beside a changed and an unchanged one, land as smaller commits' do (version 1, the commit's
/// time, the staged name and entity; the changed record's version raised, the unchanged one's
/// left): what any faster path for a commit's new records must keep (ADR 0019). The first
/// commit only creates, so it takes the plain `INSERT`; the second writes with `ON CONFLICT`.
async fn a_commit_of_thousands_writes_new_and_changed_records_alike(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "A", 1), record(&c, "B", 1)], T0).await;
    let commit = |ids: std::ops::Range<usize>, extra: Vec<PreparedRecord>, at: i64| {
        let c = &c;
        async move {
            let s = open(db, c, SessionMode::Accrue, at).await;
            let mut staged: Vec<_> = ids
                .map(|i| record(c, &format!("N{i:05}"), i as i64))
                .collect();
            staged.extend(extra);
            for batch in staged.chunks(500) {
                db.store
                    .upsert_batch(&call(&s, c, at), batch)
                    .await
                    .applied_ok();
            }
            db.store
                .close_session(&call(&s, c, at + SEC), true, false)
                .await
                .unwrap()
                .totals
        }
    };
    assert_eq!(
        commit(0..1_500, vec![], T0 + SEC).await,
        totals(1_500, 0, 0, 0, 0, 0)
    );
    let changed = vec![record(&c, "A", 1), record(&c, "B", 2)];
    let at = T0 + 10 * SEC;
    assert_eq!(
        commit(1_500..2_700, changed, at).await,
        totals(1_200, 1, 1, 0, 0, 0)
    );

    assert_eq!(visible_ids(db, &c).await.len(), 2_702);
    for (id, population, time) in [("N00000", 0, T0 + 2 * SEC), ("N02699", 2_699, at + SEC)] {
        let r = get(db, &c, id).await.unwrap();
        assert_eq!(
            (
                r.version,
                r.created_at,
                r.updated_at,
                r.name.as_str(),
                r.connector.as_str()
            ),
            (1, time, time, format!("Name {id}").as_str(), c.id.as_str())
        );
        assert_eq!(
            serde_json::from_str::<Value>(&r.entity).unwrap(),
            json!({"population": population})
        );
    }
    let a = get(db, &c, "A").await.unwrap();
    assert_eq!((a.version, a.updated_at), (1, T0));
    let b = get(db, &c, "B").await.unwrap();
    assert_eq!((b.version, b.created_at, b.updated_at), (2, T0, at + SEC));
}

/// A record sent as it already is gets staged as a keep (ADR 0019): it overrides what the
/// session staged for it before, spares it from a sweep, counts as unchanged, and is not
/// written back at commit over a later write of the connector's stream session.
async fn a_record_staged_unchanged_is_kept_not_written_back(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let ids_now = ["A", "B", "C", "D"];
    let existing: Vec<_> = ids_now.iter().map(|id| record(&c, id, 1)).collect();
    stream(db, &c, &existing, T0).await;
    for mode in [SessionMode::Accrue, SessionMode::Replace] {
        let s = open(db, &c, mode, T0 + SEC).await;
        let at = call(&s, &c, T0 + SEC);
        // A: deleted, then sent unchanged: the keep wins. B: changed, then sent as it is.
        db.store
            .delete_batch(&at, &[keyed(&c, "A")])
            .await
            .applied_ok();
        db.store
            .upsert_batch(&at, &[record(&c, "B", 9)])
            .await
            .applied_ok();
        let outcomes = db
            .store
            .upsert_batch(
                &at,
                &[record(&c, "A", 1), record(&c, "B", 1), record(&c, "C", 1)],
            )
            .await
            .applied_ok();
        assert_eq!(outcomes, [Outcome::Unchanged; 3], "{mode:?}");
        // The connector's stream changes C after it was staged: that later write stands.
        stream(db, &c, &[record(&c, "C", 7)], T0 + 2 * SEC).await;
        let closed = db
            .store
            .close_session(&call(&s, &c, T0 + 3 * SEC), true, false)
            .await
            .unwrap();
        let swept = u64::from(mode == SessionMode::Replace);
        assert_eq!(closed.totals, totals(0, 0, 3, 0, swept, 0), "{mode:?}");
        for id in ["A", "B"] {
            let kept = get(db, &c, id).await.unwrap();
            assert_eq!((kept.version, kept.updated_at), (1, T0), "{mode:?} {id}");
        }
        let c_now = get(db, &c, "C").await.unwrap();
        assert_eq!(c_now.checksum, record(&c, "C", 7).checksum, "{mode:?}");
        stream(db, &c, &[record(&c, "C", 1)], T0 + 4 * SEC).await;
    }
    // Replace swept D, the one record no batch named.
    assert_eq!(visible_ids(db, &c).await, ids(&["A", "B", "C"]));
}

/// Accrue notes the records it finds unchanged instead of staging a row for each (ADR 0019,
/// eighth round); its totals still count each such record once, by its last operation in the
/// session, as its batch reported it. The notes go with the session however it ends.
async fn accrue_counts_each_unchanged_record_once(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let all = ["A", "B", "C", "D", "E", "F"];
    let existing: Vec<_> = all.iter().map(|id| record(&c, id, 1)).collect();
    stream(db, &c, &existing, T0).await;
    const NOTES: &str = "UPDATE staged_unchanged SET keys = keys";
    let noted = || db.execute_sql(NOTES);
    // After a session's end its notes are deleted in the background (ADR 0019).
    let noted_after_end = || db.execute_sql_until(NOTES, 0);
    let s = open(db, &c, SessionMode::Accrue, T0 + SEC).await;
    let at = call(&s, &c, T0 + SEC);
    let up = |records: Vec<PreparedRecord>| async move {
        db.store.upsert_batch(&at, &records).await.applied_ok()
    };
    let same = |ids: &[&str]| ids.iter().map(|id| record(&c, id, 1)).collect::<Vec<_>>();
    assert_eq!(
        up(same(&["A", "B", "C", "D"])).await,
        [Outcome::Unchanged; 4]
    );
    // A again, unchanged; B then changed; C then deleted; E changed, then back as it is.
    assert_eq!(up(same(&["A"])).await, [Outcome::Unchanged]);
    assert_eq!(up(vec![record(&c, "B", 5)]).await, [Outcome::Updated]);
    db.store
        .delete_batch(&at, &[keyed(&c, "C")])
        .await
        .applied_ok();
    assert_eq!(up(vec![record(&c, "E", 9)]).await, [Outcome::Updated]);
    assert_eq!(up(same(&["E"])).await, [Outcome::Unchanged]);
    assert_eq!(
        noted().await,
        3,
        "one note per batch with unchanged records"
    );
    // The connector's stream deletes D before the commit: D was reported unchanged and counts
    // so (a `keep` row would not count it: ADR 0019, eighth round); the commit brings it not
    // back.
    let d = open(db, &c, SessionMode::Stream, T0 + 2 * SEC).await;
    db.store
        .delete_batch(&call(&d, &c, T0 + 2 * SEC), &[keyed(&c, "D")])
        .await
        .applied_ok();
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + 3 * SEC), true, false)
        .await
        .unwrap();
    assert_eq!(closed.totals, totals(0, 1, 3, 1, 0, 0));
    assert_eq!(noted_after_end().await, 0, "the commit drops its notes");
    assert_eq!(visible_ids(db, &c).await, ids(&["A", "B", "E", "F"]));
    let b = get(db, &c, "B").await.unwrap();
    assert_eq!((b.version, b.checksum), (2, record(&c, "B", 5).checksum));
    for id in ["A", "E"] {
        let kept = get(db, &c, id).await.unwrap();
        assert_eq!((kept.version, kept.updated_at), (1, T0), "{id}");
    }
    // A rolled back session's notes go too, and count for nothing.
    let r = open(db, &c, SessionMode::Accrue, T0 + 4 * SEC).await;
    let at = call(&r, &c, T0 + 4 * SEC);
    db.store.upsert_batch(&at, &same(&["A"])).await.applied_ok();
    assert_eq!(noted().await, 1);
    db.store.close_session(&at, false, false).await.unwrap();
    assert_eq!(noted_after_end().await, 0, "a rollback drops its notes");
    // So do those of a session still open when its connector is deleted.
    let o = open(db, &c, SessionMode::Accrue, T0 + 5 * SEC).await;
    let at = call(&o, &c, T0 + 5 * SEC);
    db.store.upsert_batch(&at, &same(&["A"])).await.applied_ok();
    assert_eq!(noted().await, 1);
    db.store.delete_connector(&c.id, false).await.unwrap();
    assert_eq!(noted().await, 0, "deleting the connector drops its notes");
}

/// Staged rows are appended (ADR 0019, twenty-sixth round): a key sent changed, then as it
/// is, then changed again has three rows, and the commit acts on the last alone, whichever it
/// is. E ends changed (written once, counted updated, not unchanged); F ends as it is (counted
/// unchanged once, not written, though changed rows of it were staged twice).
async fn a_key_sent_back_and_forth_ends_as_its_last_batch_left_it(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "E", 1), record(&c, "F", 1)], T0).await;
    let s = open(db, &c, SessionMode::Accrue, T0 + SEC).await;
    let at = call(&s, &c, T0 + SEC);
    for (e, f) in [(9, 9), (1, 1), (5, 7), (5, 1)] {
        db.store
            .upsert_batch(&at, &[record(&c, "E", e), record(&c, "F", f)])
            .await
            .applied_ok();
    }
    let totals_of_commit = commit(db, &s, &c, T0 + 2 * SEC).await;
    assert_eq!(totals_of_commit, totals(0, 1, 1, 0, 0, 0));
    let e = get(db, &c, "E").await.unwrap();
    assert_eq!((e.version, e.checksum), (2, record(&c, "E", 5).checksum));
    let f = get(db, &c, "F").await.unwrap();
    assert_eq!((f.version, f.updated_at), (1, T0));
}

/// A commit whose totals count deletes and nothing to write still applies the deletes (the
/// commit skips only the statements its totals found nothing for).
async fn an_accrue_commit_of_deletes_only_applies_them(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "A", 1), record(&c, "B", 1)], T0).await;
    let s = open(db, &c, SessionMode::Accrue, T0 + SEC).await;
    db.store
        .delete_batch(
            &call(&s, &c, T0 + SEC),
            &[keyed(&c, "A"), keyed(&c, "NONE")],
        )
        .await
        .applied_ok();
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + 2 * SEC), true, false)
        .await
        .unwrap();
    assert_eq!(closed.totals, totals(0, 0, 0, 1, 0, 0));
    assert_eq!(visible_ids(db, &c).await, ids(&["B"]));
}

/// On PostgreSQL the store analyzes `records` itself after a change as large as the table
/// (ADR 0019) instead of leaving the planner with an empty table's statistics until autovacuum
/// comes by. SQLite's planner needs none, so there the body only writes.
async fn a_large_change_gets_fresh_statistics(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let many: Vec<_> = (0..10_000)
        .map(|i| record(&c, &format!("R{i:05}"), i))
        .collect();
    stream(db, &c, &many, T0).await;
    if !tributary_store::is_postgres_url(&db.url) {
        return;
    }
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // `analyze_count` counts analyses run by a client (the store), not autovacuum's.
    let analyzed = async {
        loop {
            let runs: i64 = sqlx::query_scalar(
                "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'records'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if runs > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), analyzed)
        .await
        .expect("records analyzed after 10,000 changes");
}

async fn replace_sweeps_exactly_the_unstaged_records(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let other = connector(db, WritePolicy::Importer, None).await;
    let existing: Vec<_> = ["A", "B", "C", "D", "E"]
        .iter()
        .map(|id| record(&c, id, 1))
        .collect();
    stream(db, &c, &existing, T0).await;
    stream(db, &other, &[record(&other, "Z", 1)], T0).await;

    let s = open(db, &c, SessionMode::Replace, T0).await;
    let at = call(&s, &c, T0 + SEC);
    db.store
        .upsert_batch(
            &at,
            &[record(&c, "A", 1), record(&c, "B", 2), record(&c, "F", 1)],
        )
        .await
        .applied_ok();
    db.store
        .delete_batch(&at, &[keyed(&c, "C")])
        .await
        .applied_ok();
    assert_eq!(visible_ids(db, &c).await, ids(&["A", "B", "C", "D", "E"]));
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + 2 * SEC), true, false)
        .await
        .unwrap();
    // D and E were neither upserted nor deleted: swept. C was deleted explicitly.
    assert_eq!(closed.totals, totals(1, 1, 1, 1, 2, 0));
    assert_eq!(visible_ids(db, &c).await, ids(&["A", "B", "F"]));
    assert_eq!(
        visible_ids(db, &other).await,
        ids(&["Z"]),
        "another connector's records are not swept"
    );
    let result = db
        .store
        .get_import_result(&closed.import_result_id.unwrap())
        .await
        .unwrap();
    assert_eq!(result.totals.swept, 2);

    // An empty replace commit removes everything of the connector.
    let s = open(db, &c, SessionMode::Replace, T0 + 3 * SEC).await;
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + 3 * SEC), true, false)
        .await
        .unwrap();
    assert_eq!(closed.totals.swept, 3);
    assert_eq!(visible_ids(db, &c).await, ids(&[]));
}

async fn replace_guard_refuses_then_force_commits(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, Some(50.0)).await;
    let existing: Vec<_> = ["A", "B", "C", "D"]
        .iter()
        .map(|id| record(&c, id, 1))
        .collect();
    stream(db, &c, &existing, T0).await;
    let s = open(db, &c, SessionMode::Replace, T0).await;
    db.store
        .upsert_batch(&call(&s, &c, T0), &[record(&c, "A", 2)])
        .await
        .applied_ok();

    match db
        .store
        .close_session(&call(&s, &c, T0 + SEC), true, false)
        .await
    {
        Err(Error::FailedPrecondition {
            reason,
            message,
            metadata,
        }) => {
            assert_eq!(reason, "SWEEP_REFUSED");
            assert!(message.contains("3 of 4"), "{message}");
            assert!(
                metadata.contains(&("would_delete".to_owned(), "3".to_owned())),
                "{metadata:?}"
            );
            assert!(
                metadata.contains(&("total".to_owned(), "4".to_owned())),
                "{metadata:?}"
            );
            assert!(
                metadata.contains(&("limit_percent".to_owned(), "50".to_owned())),
                "{metadata:?}"
            );
        }
        other => panic!("expected SWEEP_REFUSED, got {other:?}"),
    }
    // Nothing happened, and the session is still open with its staged rows.
    assert_eq!(visible_ids(db, &c).await, ids(&["A", "B", "C", "D"]));
    assert_eq!(get(db, &c, "A").await.unwrap().version, 1);
    assert_eq!(
        db.store
            .upsert_batch(&call(&s, &c, T0 + 2 * SEC), &[record(&c, "B", 1)])
            .await
            .applied_ok(),
        [Outcome::Unchanged]
    );
    // Now 2 of 4 would go: exactly at the limit, which is allowed.
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + 3 * SEC), true, false)
        .await
        .unwrap();
    assert_eq!(closed.totals, totals(0, 1, 1, 0, 2, 0));
    assert_eq!(visible_ids(db, &c).await, ids(&["A", "B"]));

    let s = open(db, &c, SessionMode::Replace, T0 + 4 * SEC).await;
    assert!(matches!(
        db.store
            .close_session(&call(&s, &c, T0 + 4 * SEC), true, false)
            .await,
        Err(Error::FailedPrecondition {
            reason: "SWEEP_REFUSED",
            ..
        })
    ));
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + 5 * SEC), true, true)
        .await
        .unwrap();
    assert_eq!(closed.totals.swept, 2);
    assert_eq!(visible_ids(db, &c).await, ids(&[]));
}

async fn supersede_denies_the_old_session_and_discards_its_data(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let first = open(db, &c, SessionMode::Accrue, T0).await;
    db.store
        .upsert_batch(&call(&first, &c, T0), &[record(&c, "X", 1)])
        .await
        .applied_ok();
    let second = db
        .store
        .open_session(&c, SessionMode::Replace, T0 + SEC)
        .await
        .unwrap();
    assert_eq!(second.superseded, vec![first.clone()]);
    assert_eq!(second.session.mode, SessionMode::Replace);
    assert_eq!(
        (second.session.opened_at, second.session.last_active_at),
        (T0 + SEC, T0 + SEC)
    );
    assert_denied(
        db.store
            .upsert_batch(&call(&first, &c, T0 + SEC), &[record(&c, "X", 1)])
            .await,
    );
    assert_denied(
        db.store
            .close_session(&call(&first, &c, T0 + SEC), true, false)
            .await,
    );

    let closed = db
        .store
        .close_session(&call(&second.session.id, &c, T0 + 2 * SEC), true, false)
        .await
        .unwrap();
    assert_eq!(closed.totals, SessionTotals::default());
    assert!(
        get(db, &c, "X").await.is_none(),
        "the superseded session's staged data is gone"
    );

    let results = db
        .store
        .list_import_results(&of_connector(&c.id), None, 10)
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    let canceled = results
        .iter()
        .find(|r| r.session_id.as_deref() == Some(first.as_str()))
        .unwrap();
    assert_eq!(canceled.status, ImportStatus::Canceled);
    assert_eq!(
        canceled.errors,
        [format!("superseded by session {}", second.session.id)]
    );
    assert_eq!((canceled.started_at, canceled.ended_at), (T0, T0 + SEC));
}

async fn stream_sessions_are_never_superseded(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let s1 = open(db, &c, SessionMode::Stream, T0).await;
    let s2 = db
        .store
        .open_session(&c, SessionMode::Stream, T0)
        .await
        .unwrap();
    assert!(s2.superseded.is_empty());
    let accrue = db
        .store
        .open_session(&c, SessionMode::Accrue, T0)
        .await
        .unwrap();
    assert!(accrue.superseded.is_empty());
    assert_eq!(
        db.store
            .upsert_batch(&call(&s1, &c, T0), &[record(&c, "A", 1)])
            .await
            .applied_ok(),
        [Outcome::Created]
    );
    assert_eq!(
        db.store
            .upsert_batch(&call(&s2.session.id, &c, T0), &[record(&c, "B", 1)])
            .await
            .applied_ok(),
        [Outcome::Created]
    );
    // Streams are judged at once; the accrue session sees A as visible.
    assert_eq!(
        db.store
            .upsert_batch(&call(&accrue.session.id, &c, T0), &[record(&c, "A", 1)])
            .await
            .applied_ok(),
        [Outcome::Unchanged]
    );
    // Opening a stream session does not supersede the open accrue session either.
    open(db, &c, SessionMode::Stream, T0).await;
    db.store
        .close_session(&call(&accrue.session.id, &c, T0), true, false)
        .await
        .unwrap();
}

async fn foreign_unknown_and_closed_sessions_are_denied(db: &TestDb) {
    let a = connector(db, WritePolicy::Importer, None).await;
    let b = connector(db, WritePolicy::Importer, None).await;
    let sa = open(db, &a, SessionMode::Accrue, T0).await;
    db.store
        .upsert_batch(&call(&sa, &a, T0), &[record(&a, "X", 1)])
        .await
        .applied_ok();
    // b using a's session: refused, and a's session is untouched.
    assert_denied(
        db.store
            .upsert_batch(&call(&sa, &b, T0), &[record(&b, "X", 1)])
            .await,
    );
    assert_denied(
        db.store
            .delete_batch(&call(&sa, &b, T0), &[keyed(&b, "X")])
            .await,
    );
    assert_denied(
        db.store
            .close_session(&call(&sa, &b, T0), false, false)
            .await,
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_denied(
        db.store
            .upsert_batch(&call(&unknown, &a, T0), &[record(&a, "X", 1)])
            .await,
    );
    assert_denied(
        db.store
            .close_session(&call(&unknown, &a, T0), true, false)
            .await,
    );
    let closed = db
        .store
        .close_session(&call(&sa, &a, T0 + SEC), true, false)
        .await
        .unwrap();
    assert_eq!(closed.totals.created, 1);
    assert_denied(
        db.store
            .upsert_batch(&call(&sa, &a, T0 + SEC), &[record(&a, "Y", 1)])
            .await,
    );
    assert_denied(
        db.store
            .delete_batch(&call(&sa, &a, T0 + SEC), &[keyed(&a, "X")])
            .await,
    );
    // A closed stream session is refused too.
    let st = open(db, &a, SessionMode::Stream, T0).await;
    db.store
        .close_session(&call(&st, &a, T0), false, false)
        .await
        .unwrap();
    assert_denied(
        db.store
            .upsert_batch(&call(&st, &a, T0), &[record(&a, "Y", 1)])
            .await,
    );
    // Opening a session for a connector that does not exist is NotFound.
    let ghost = Connector {
        id: new_connector_id(),
        ..a.clone()
    };
    assert!(matches!(
        db.store.open_session(&ghost, SessionMode::Stream, T0).await,
        Err(Error::NotFound {
            kind: ResourceKind::Connector,
            ..
        })
    ));
}

async fn idle_sessions_expire(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let staged = open(db, &c, SessionMode::Accrue, T0).await;
    let live = open(db, &c, SessionMode::Stream, T0).await;
    db.store
        .upsert_batch(&call(&staged, &c, T0 + SEC), &[record(&c, "X", 1)])
        .await
        .applied_ok();

    // A batch arriving after the idle timeout is refused even before the expiry sweep runs.
    let late = T0 + SEC + DAY + SEC;
    assert_denied(
        db.store
            .upsert_batch(&call(&staged, &c, late), &[record(&c, "Y", 1)])
            .await,
    );
    // Nothing to expire yet at a cutoff before the last activity.
    assert_eq!(db.store.expire_idle_sessions(T0, late).await.unwrap(), 0);
    assert_eq!(
        db.store
            .expire_idle_sessions(late - DAY, late)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        db.store
            .expire_idle_sessions(late - DAY, late)
            .await
            .unwrap(),
        0
    );
    // Stream sessions never expire.
    assert_eq!(
        db.store
            .upsert_batch(&call(&live, &c, late), &[record(&c, "Z", 1)])
            .await
            .applied_ok(),
        [Outcome::Created]
    );

    let results = db
        .store
        .list_import_results(&of_connector(&c.id), None, 10)
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(
        (results[0].status, results[0].session_id.as_deref()),
        (ImportStatus::Canceled, Some(staged.as_str()))
    );
    assert_eq!(results[0].errors, ["expired after idle timeout"]);
    assert_eq!(results[0].ended_at, late);
    // A new accrue session opens without superseding anything.
    assert!(db
        .store
        .open_session(&c, SessionMode::Accrue, late)
        .await
        .unwrap()
        .superseded
        .is_empty());
    assert!(get(db, &c, "X").await.is_none());
}

/// Every batch touches its session, so the idle timeout counts from the last one: a cutoff
/// before it expires nothing, and the session commits the last version sent.
async fn a_batch_keeps_its_session_from_expiring(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let s = open(db, &c, SessionMode::Accrue, T0).await;
    for at in [T0 + SEC / 2, T0 + 10 * SEC, T0 + 10 * SEC + SEC / 2] {
        db.store
            .upsert_batch(&call(&s, &c, at), &[record(&c, "X", at)])
            .await
            .applied_ok();
    }
    // Idle since T0 + 10 s at the latest: a cutoff before that expires nothing.
    assert_eq!(
        db.store
            .expire_idle_sessions(T0 + 9 * SEC, T0 + DAY)
            .await
            .unwrap(),
        0
    );
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + 11 * SEC), true, false)
        .await
        .unwrap();
    assert_eq!(closed.totals, totals(1, 0, 0, 0, 0, 0));
    assert_eq!(
        get(db, &c, "X").await.unwrap().checksum,
        record(&c, "X", T0 + 10 * SEC + SEC / 2).checksum
    );
}

/// A session's unary batches in flight at once (through two stores, as on two replicas), with
/// overlapping keys in opposite orders, some sent as they are and some changed: every batch is
/// staged (none fails on a lock conflict or deadlock) and the commit holds, for every key, one
/// of the versions sent.
async fn concurrent_unary_batches_of_one_session_all_stage(db: &TestDb) {
    const KEYS: i64 = 60;
    let c = connector(db, WritePolicy::Importer, None).await;
    let existing: Vec<_> = (0..KEYS).map(|i| record(&c, &format!("R{i}"), 0)).collect();
    stream(db, &c, &existing, T0).await;
    let other = tributary_store::open(&db.url).await.unwrap();
    for round in 0..3 {
        let at = T0 + (1 + round) * 2 * SEC;
        let s = open(db, &c, SessionMode::Accrue, at).await;
        let stores = [
            db.store.clone(),
            other.clone(),
            db.store.clone(),
            other.clone(),
        ];
        let sends = stores.iter().enumerate().map(|(n, store)| {
            let n = n as i64;
            let mut records: Vec<_> = (0..KEYS)
                .map(|i| {
                    let population = if (i + n) % 2 == 0 { 0 } else { 1 + n };
                    record(&c, &format!("R{i}"), population)
                })
                .collect();
            if n % 2 == 1 {
                records.reverse();
            }
            let (s, c) = (s.clone(), c.clone());
            async move {
                store
                    .upsert_batch(&call(&s, &c, at + SEC / 2), &records)
                    .await
            }
        });
        for result in futures::future::join_all(sends).await {
            assert_eq!(result.applied_ok().len(), KEYS as usize, "round {round}");
        }
        let closed = db
            .store
            .close_session(&call(&s, &c, at + SEC), true, false)
            .await
            .unwrap();
        let t = closed.totals;
        assert_eq!(
            (t.created, t.updated + t.unchanged),
            (0, KEYS as u64),
            "{t:?}"
        );
        for i in 0..KEYS {
            let id = format!("R{i}");
            let now = get(db, &c, &id).await.unwrap().checksum;
            let sent = (0..4).map(|n| if (i + n) % 2 == 0 { 0 } else { 1 + n });
            assert!(
                sent.map(|p| record(&c, &id, p).checksum).any(|s| s == now),
                "round {round}: {id} holds a version nobody sent"
            );
        }
    }
}

/// A session's staged rows are deleted after its end, in the background (ADR 0019,
/// twenty-third round): after a commit, a rollback and a supersede they go, and what a process
/// left listed when it stopped before deleting goes at the next open of a store on the database
/// or the next idle-expiry pass.
async fn staged_rows_go_after_every_end_even_one_whose_process_stopped(db: &TestDb) {
    const STAGED: &str = "UPDATE staged_records SET op = op";
    const LISTED: &str = "UPDATE unstaging SET session_id = session_id";
    let c = connector(db, WritePolicy::Importer, None).await;
    let stage = |session: String, at: i64, ids: &'static [&'static str]| {
        let c = c.clone();
        async move {
            let records: Vec<_> = ids.iter().map(|id| record(&c, id, 1)).collect();
            db.store
                .upsert_batch(&call(&session, &c, at), &records)
                .await
                .applied_ok();
            session
        }
    };
    let committed = stage(open(db, &c, SessionMode::Accrue, T0).await, T0, &["A", "B"]).await;
    db.store
        .close_session(&call(&committed, &c, T0 + SEC), true, false)
        .await
        .unwrap();
    assert_eq!(db.execute_sql_until(STAGED, 0).await, 0, "after a commit");
    assert_eq!(visible_ids(db, &c).await, ids(&["A", "B"]));
    let rolled_back = stage(open(db, &c, SessionMode::Replace, T0).await, T0, &["C"]).await;
    db.store
        .close_session(&call(&rolled_back, &c, T0 + SEC), false, false)
        .await
        .unwrap();
    assert_eq!(db.execute_sql_until(STAGED, 0).await, 0, "after a rollback");
    stage(open(db, &c, SessionMode::Accrue, T0).await, T0, &["D"]).await;
    let superseding = open(db, &c, SessionMode::Accrue, T0 + SEC).await;
    assert_eq!(
        db.execute_sql_until(STAGED, 0).await,
        0,
        "after a supersede"
    );
    assert_eq!(db.execute_sql(LISTED).await, 0, "each listing goes too");

    // A process ended this session (listed, in the same transaction) and stopped before its
    // task deleted the staged rows.
    let stopped = stage(superseding, T0 + SEC, &["E", "F", "G"]).await;
    let end_without_unstaging = format!(
        "UPDATE sessions SET state = 'rolled_back', closed_at = {T0} WHERE id = '{stopped}'"
    );
    assert_eq!(db.execute_sql(&end_without_unstaging).await, 1);
    let listing = format!("INSERT INTO unstaging (session_id) VALUES ('{stopped}')");
    assert_eq!(db.execute_sql(&listing).await, 1);
    assert_eq!(db.execute_sql(STAGED).await, 3);
    let restarted = tributary_store::open(&db.url).await.unwrap();
    assert_eq!(db.execute_sql_until(STAGED, 0).await, 0, "drained at open");
    assert_eq!(db.execute_sql(LISTED).await, 0);

    // Left again, and found by this process's next idle-expiry pass (which expires nothing).
    let again = stage(open(db, &c, SessionMode::Accrue, T0).await, T0, &["H"]).await;
    let end_without_unstaging = end_without_unstaging.replace(&stopped, &again);
    assert_eq!(db.execute_sql(&end_without_unstaging).await, 1);
    assert_eq!(db.execute_sql(&listing.replace(&stopped, &again)).await, 1);
    assert_eq!(db.execute_sql(STAGED).await, 1);
    assert_eq!(
        restarted.expire_idle_sessions(T0 - DAY, T0).await.unwrap(),
        0
    );
    assert_eq!(
        db.execute_sql_until(STAGED, 0).await,
        0,
        "drained on expiry"
    );
    assert_eq!(db.execute_sql(LISTED).await, 0);
    assert_eq!(visible_ids(db, &c).await, ids(&["A", "B"]));
}

/// The drain empties the staged rows whole when only ended sessions have any, and otherwise one
/// session at a time: what open sessions staged (rows, or notes of records found unchanged)
/// survives another session's end and is committed as sent.
async fn the_drain_keeps_what_open_sessions_staged(db: &TestDb) {
    let staged =
        |session: &str| format!("UPDATE staged_records SET op = op WHERE session_id = '{session}'");
    let noted = |session: &str| {
        format!("UPDATE staged_unchanged SET keys = keys WHERE session_id = '{session}'")
    };
    const LISTED: &str = "UPDATE unstaging SET session_id = session_id";
    let (a, b) = (
        connector(db, WritePolicy::Importer, None).await,
        connector(db, WritePolicy::Importer, None).await,
    );
    async fn stage(db: &TestDb, c: &Connector, session: &str, ids: &[&str]) {
        let records: Vec<_> = ids.iter().map(|id| record(c, id, 1)).collect();
        let call = call(session, c, T0);
        db.store.upsert_batch(&call, &records).await.applied_ok();
    }

    // A's session has staged a row when B's commits: B's rows go, one session at a time.
    let kept = open(db, &a, SessionMode::Accrue, T0).await;
    stage(db, &a, &kept, &["X"]).await;
    let ended = open(db, &b, SessionMode::Accrue, T0).await;
    stage(db, &b, &ended, &["Y", "Z"]).await;
    assert_eq!(commit(db, &ended, &b, T0 + SEC).await.created, 2);
    assert_eq!(db.execute_sql_until(&staged(&ended), 0).await, 0);
    assert_eq!(db.execute_sql_until(LISTED, 0).await, 0);
    assert_eq!(
        db.execute_sql(&staged(&kept)).await,
        1,
        "the open session's row"
    );
    assert_eq!(commit(db, &kept, &a, T0 + SEC).await.created, 1);
    assert_eq!(visible_ids(db, &a).await, ids(&["X"]));
    assert_eq!(db.execute_sql_until(&staged(&kept), 0).await, 0);

    // A's session has only noted X unchanged when B's commits: the table is emptied whole, and
    // A's note is kept (its commit still counts X unchanged).
    let noting = open(db, &a, SessionMode::Accrue, T0).await;
    stage(db, &a, &noting, &["X"]).await;
    assert_eq!(db.execute_sql(&noted(&noting)).await, 1);
    let ended = open(db, &b, SessionMode::Accrue, T0).await;
    stage(db, &b, &ended, &["W"]).await;
    assert_eq!(commit(db, &ended, &b, T0 + SEC).await.created, 1);
    assert_eq!(db.execute_sql_until(&staged(&ended), 0).await, 0);
    assert_eq!(db.execute_sql_until(LISTED, 0).await, 0);
    assert_eq!(
        db.execute_sql(&noted(&noting)).await,
        1,
        "the open session's note"
    );
    assert_eq!(commit(db, &noting, &a, T0 + SEC).await.unchanged, 1);
    assert_eq!(db.execute_sql_until(&noted(&noting), 0).await, 0);
    assert_eq!(visible_ids(db, &b).await, ids(&["W", "Y", "Z"]));
}
