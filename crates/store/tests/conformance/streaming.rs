//! Streaming (SPEC.md §2.3) and digest sync (§2.4): sequenced batches apply exactly once; digests
//! answer against the visible catalog and keep records from the sweep.

use super::support::*;
use std::collections::BTreeSet;
use tributary_core::model::{DigestState, Outcome, SessionMode, SessionTotals, WritePolicy};
use tributary_core::record::KeyedDigest;
use tributary_core::record::PreparedRecord;
use tributary_core::store::BatchResult;
use tributary_core::Error;
use tributary_store::testing::TestDb;

conformance!(
    sequenced_batches_apply_once,
    sequenced_staged_batches_stage_once,
    grouped_batches_apply_in_order_once_and_whole,
    grouped_staged_batches_follow_last_operation_wins,
    applied_seq_survives_reopening,
    concurrent_resends_apply_once,
    diff_answers_new_changed_unchanged,
    replace_keeps_unchanged_digests,
    keep_digests_follow_last_operation_wins,
    digests_stage_nothing_outside_replace,
    resume_returns_the_last_seq_and_refuses_foreign_sessions,
    read_items_pages_by_byte_order_whatever_the_ids_hold,
);

async fn sequenced_batches_apply_once(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let s = open(db, &c, SessionMode::Stream, T0).await;
    let first = db
        .store
        .upsert_batch(&seq_call(&s, &c, T0, 1), &[record(&c, "GB", 1)])
        .await
        .unwrap();
    assert_eq!(first, BatchResult::Applied(vec![Outcome::Created]));
    // A resend of seq 1 (even with other content) is acknowledged, not applied.
    let again = db
        .store
        .upsert_batch(&seq_call(&s, &c, T0 + SEC, 1), &[record(&c, "GB", 2)])
        .await
        .unwrap();
    assert_eq!(again, BatchResult::AlreadyApplied);
    let gb = get(db, &c, "GB").await.unwrap();
    assert_eq!((gb.version, gb.checksum), (1, record(&c, "GB", 1).checksum));

    let second = db
        .store
        .upsert_batch(&seq_call(&s, &c, T0 + 2 * SEC, 2), &[record(&c, "GB", 3)])
        .await
        .unwrap();
    assert_eq!(second, BatchResult::Applied(vec![Outcome::Updated]));
    // A lower seq after a higher one is already applied, whatever its kind.
    for seq in [1, 2] {
        assert_eq!(
            db.store
                .upsert_batch(&seq_call(&s, &c, T0 + 3 * SEC, seq), &[record(&c, "FR", 1)])
                .await
                .unwrap(),
            BatchResult::AlreadyApplied
        );
        assert_eq!(
            db.store
                .delete_batch(&seq_call(&s, &c, T0 + 3 * SEC, seq), &[keyed(&c, "GB")])
                .await
                .unwrap(),
            BatchResult::AlreadyApplied
        );
        assert_eq!(
            db.store
                .diff_batch(&seq_call(&s, &c, T0 + 3 * SEC, seq), &[digest(&c, "GB", 3)])
                .await
                .unwrap(),
            BatchResult::AlreadyApplied
        );
    }
    assert_eq!(visible_ids(db, &c).await, ids(&["GB"]));
    assert_eq!(get(db, &c, "GB").await.unwrap().version, 2);

    // Sequences may skip; every kind of batch raises the applied sequence.
    assert_eq!(
        db.store
            .diff_batch(&seq_call(&s, &c, T0 + 4 * SEC, 5), &[digest(&c, "GB", 3)])
            .await
            .unwrap(),
        BatchResult::Applied(vec![DigestState::Unchanged])
    );
    assert_eq!(
        db.store
            .delete_batch(&seq_call(&s, &c, T0 + 4 * SEC, 5), &[keyed(&c, "GB")])
            .await
            .unwrap(),
        BatchResult::AlreadyApplied
    );
    assert_eq!(
        db.store
            .delete_batch(&seq_call(&s, &c, T0 + 4 * SEC, 6), &[keyed(&c, "GB")])
            .await
            .unwrap(),
        BatchResult::Applied(vec![Outcome::Deleted])
    );
    // An empty sequenced batch counts too.
    assert_eq!(
        db.store
            .upsert_batch(&seq_call(&s, &c, T0 + 4 * SEC, 7), &[])
            .await
            .unwrap(),
        BatchResult::Applied(vec![])
    );
    assert_eq!(
        db.store
            .upsert_batch(&seq_call(&s, &c, T0 + 4 * SEC, 7), &[record(&c, "X", 1)])
            .await
            .unwrap(),
        BatchResult::AlreadyApplied
    );
    // Unary (unsequenced) calls neither read nor move the applied sequence.
    db.store
        .upsert_batch(&call(&s, &c, T0 + 5 * SEC), &[record(&c, "DE", 1)])
        .await
        .applied_ok();
    let resumed = db
        .store
        .resume_session(&call(&s, &c, T0 + 5 * SEC))
        .await
        .unwrap();
    assert_eq!(resumed.last_batch_seq, 7);
    assert_eq!(visible_ids(db, &c).await, ids(&["DE"]));
}

/// A stream's group commit (`upsert_batches`): batches apply in order in one transaction,
/// those at or below the applied sequence are answered already applied, and a refused group
/// applies nothing.
async fn grouped_batches_apply_in_order_once_and_whole(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let s = open(db, &c, SessionMode::Stream, T0).await;
    let (gb1, fr1, gb2) = (
        record(&c, "GB", 1),
        record(&c, "FR", 1),
        record(&c, "GB", 2),
    );
    let group: [(u64, &[PreparedRecord]); 3] = [(1, &[gb1, fr1]), (2, &[gb2]), (3, &[])];
    let results = db.store.upsert_batches(&call(&s, &c, T0), &group).await;
    assert_eq!(
        results.unwrap(),
        [
            BatchResult::Applied(vec![Outcome::Created, Outcome::Created]),
            BatchResult::Applied(vec![Outcome::Updated]),
            BatchResult::Applied(vec![]),
        ]
    );
    let gb = get(db, &c, "GB").await.unwrap();
    assert_eq!((gb.version, gb.checksum), (2, record(&c, "GB", 2).checksum));

    // A resent group after a resume: the applied prefix is acknowledged, the rest applied.
    let (de, gb3) = (record(&c, "DE", 1), record(&c, "GB", 3));
    let (de, gb3) = (std::slice::from_ref(&de), std::slice::from_ref(&gb3));
    let group: [(u64, &[PreparedRecord]); 3] = [(2, de), (3, de), (4, gb3)];
    let results = db
        .store
        .upsert_batches(&call(&s, &c, T0 + SEC), &group)
        .await;
    assert_eq!(
        results.unwrap(),
        [
            BatchResult::AlreadyApplied,
            BatchResult::AlreadyApplied,
            BatchResult::Applied(vec![Outcome::Updated]),
        ]
    );
    assert_eq!(visible_ids(db, &c).await, ids(&["FR", "GB"]));
    let resumed = db.store.resume_session(&call(&s, &c, T0 + SEC)).await;
    assert_eq!(resumed.unwrap().last_batch_seq, 4);

    // A group for a closed session is refused whole: nothing of it is applied.
    db.store
        .close_session(&call(&s, &c, T0 + 2 * SEC), true, false)
        .await
        .unwrap();
    let group: [(u64, &[PreparedRecord]); 1] = [(5, &[record(&c, "IT", 1)])];
    assert_denied(
        db.store
            .upsert_batches(&call(&s, &c, T0 + 3 * SEC), &group)
            .await,
    );
    assert_eq!(visible_ids(db, &c).await, ids(&["FR", "GB"]));
}

/// Grouped batches of an accrue session stage in order: the later batch's operation on a key
/// wins at commit, as with batches sent one by one.
async fn grouped_staged_batches_follow_last_operation_wins(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let s = open(db, &c, SessionMode::Accrue, T0).await;
    let (gb1, fr1, gb2) = (
        record(&c, "GB", 1),
        record(&c, "FR", 1),
        record(&c, "GB", 2),
    );
    let group: [(u64, &[PreparedRecord]); 2] = [(1, &[gb1, fr1]), (2, &[gb2])];
    let results = db.store.upsert_batches(&call(&s, &c, T0), &group).await;
    assert_eq!(results.unwrap().len(), 2);
    assert!(visible_ids(db, &c).await.is_empty(), "staged, not visible");
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + SEC), true, false)
        .await
        .unwrap();
    assert_eq!(closed.totals.created, 2);
    let gb = get(db, &c, "GB").await.unwrap();
    assert_eq!((gb.version, gb.checksum), (1, record(&c, "GB", 2).checksum));
}

async fn sequenced_staged_batches_stage_once(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "OLD", 1)], T0).await;
    let s = open(db, &c, SessionMode::Replace, T0).await;
    for _ in 0..2 {
        db.store
            .upsert_batch(&seq_call(&s, &c, T0, 1), &[record(&c, "A", 1)])
            .await
            .unwrap();
    }
    // A resend carrying other ids stages nothing: B is not staged, so not created.
    assert_eq!(
        db.store
            .upsert_batch(&seq_call(&s, &c, T0, 1), &[record(&c, "B", 1)])
            .await
            .unwrap(),
        BatchResult::AlreadyApplied
    );
    // Nor is a resent delete or keep.
    assert_eq!(
        db.store
            .diff_batch(&seq_call(&s, &c, T0, 1), &[digest(&c, "OLD", 1)])
            .await
            .unwrap(),
        BatchResult::AlreadyApplied
    );
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + SEC), true, false)
        .await
        .unwrap();
    assert_eq!(
        closed.totals,
        SessionTotals {
            created: 1,
            swept: 1,
            ..SessionTotals::default()
        }
    );
    assert_eq!(visible_ids(db, &c).await, ids(&["A"]));
}

async fn applied_seq_survives_reopening(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let s = open(db, &c, SessionMode::Stream, T0).await;
    db.store
        .upsert_batch(&seq_call(&s, &c, T0, 41), &[record(&c, "GB", 1)])
        .await
        .applied_ok();
    // Another store on the same database: a restarted server, or another replica.
    let other = tributary_store::open(&db.url).await.unwrap();
    assert_eq!(
        other
            .resume_session(&call(&s, &c, T0 + SEC))
            .await
            .unwrap()
            .last_batch_seq,
        41
    );
    assert_eq!(
        other
            .upsert_batch(&seq_call(&s, &c, T0 + SEC, 41), &[record(&c, "GB", 2)])
            .await
            .unwrap(),
        BatchResult::AlreadyApplied
    );
    assert_eq!(
        other
            .upsert_batch(&seq_call(&s, &c, T0 + SEC, 42), &[record(&c, "GB", 2)])
            .await
            .unwrap(),
        BatchResult::Applied(vec![Outcome::Updated])
    );
    // ... and back on the first store.
    assert_eq!(
        db.store
            .upsert_batch(&seq_call(&s, &c, T0 + 2 * SEC, 42), &[record(&c, "GB", 3)])
            .await
            .unwrap(),
        BatchResult::AlreadyApplied
    );
    assert_eq!(get(db, &c, "GB").await.unwrap().version, 2);
}

async fn concurrent_resends_apply_once(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let s = open(db, &c, SessionMode::Stream, T0).await;
    // The same batch sent at once through two stores (two replicas) and twice through each.
    let other = tributary_store::open(&db.url).await.unwrap();
    let stores = [db.store.clone(), other.clone(), db.store.clone(), other];
    let sends = stores.iter().enumerate().map(|(i, store)| {
        let (s, c) = (s.clone(), c.clone());
        async move {
            let now = T0 + i as i64;
            store
                .upsert_batch(&seq_call(&s, &c, now, 1), &[record(&c, "GB", 1)])
                .await
                .unwrap()
        }
    });
    let results = futures::future::join_all(sends).await;
    let applied = results
        .iter()
        .filter(|r| matches!(r, BatchResult::Applied(_)))
        .count();
    assert_eq!(applied, 1, "{results:?}");
    assert!(results.contains(&BatchResult::Applied(vec![Outcome::Created])));
    assert_eq!(get(db, &c, "GB").await.unwrap().version, 1);
}

// ---------------------------------------------------------------------------------------------
// Digest sync (§2.4)

async fn diff_answers_new_changed_unchanged(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let other = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "GB", 1), record(&c, "FR", 1)], T0).await;
    stream(db, &other, &[record(&other, "DE", 1)], T0).await;
    for mode in [
        SessionMode::Stream,
        SessionMode::Accrue,
        SessionMode::Replace,
    ] {
        let s = open(db, &c, mode, T0).await;
        let states = db
            .store
            .diff_batch(
                &call(&s, &c, T0 + SEC),
                &[
                    digest(&c, "GB", 1),
                    digest(&c, "FR", 2),
                    digest(&c, "NEW", 1),
                    // Another connector's record is not this connector's.
                    digest(&c, "DE", 1),
                    digest(&c, "GB", 1),
                ],
            )
            .await
            .applied_ok();
        assert_eq!(
            states,
            [
                DigestState::Unchanged,
                DigestState::Changed,
                DigestState::New,
                DigestState::New,
                DigestState::Unchanged
            ],
            "{mode:?}"
        );
        assert!(db
            .store
            .diff_batch(&call(&s, &c, T0 + SEC), &[])
            .await
            .applied_ok()
            .is_empty());
        db.store
            .close_session(&call(&s, &c, T0 + SEC), false, false)
            .await
            .unwrap();
    }
    // Nothing of the catalog moved.
    assert_eq!(visible_ids(db, &c).await, ids(&["FR", "GB"]));
    assert_eq!(get(db, &c, "GB").await.unwrap().version, 1);
}

async fn replace_keeps_unchanged_digests(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, Some(50.0)).await;
    let name = |i: usize| format!("R{i:03}");
    let all: Vec<PreparedRecord> = (0..100).map(|i| record(&c, &name(i), 1)).collect();
    stream(db, &c, &all, T0).await;

    let s = open(db, &c, SessionMode::Replace, T0 + SEC).await;
    // 0..60 unchanged, 60..100 changed: only the 60 are kept.
    let digests: Vec<KeyedDigest> = (0..100)
        .map(|i| digest(&c, &name(i), if i < 60 { 1 } else { 2 }))
        .collect();
    let states = db
        .store
        .diff_batch(&seq_call(&s, &c, T0 + SEC, 1), &digests)
        .await
        .applied_ok();
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == DigestState::Unchanged)
            .count(),
        60
    );
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == DigestState::Changed)
            .count(),
        40
    );
    // The 20 changed ones 60..80 are sent in full.
    let changed: Vec<PreparedRecord> = (60..80).map(|i| record(&c, &name(i), 2)).collect();
    assert_eq!(
        db.store
            .upsert_batch(&seq_call(&s, &c, T0 + SEC, 2), &changed)
            .await
            .applied_ok(),
        vec![Outcome::Updated; 20]
    );
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + 2 * SEC), true, false)
        .await
        .unwrap();
    assert_eq!(
        closed.totals,
        SessionTotals {
            unchanged: 60,
            updated: 20,
            swept: 20,
            ..SessionTotals::default()
        }
    );
    let expected: BTreeSet<String> = (0..80).map(name).collect();
    assert_eq!(visible_ids(db, &c).await, expected);
    // Kept records were not rewritten.
    let kept = get(db, &c, &name(0)).await.unwrap();
    assert_eq!((kept.version, kept.updated_at), (1, T0));
    assert_eq!(get(db, &c, &name(60)).await.unwrap().version, 2);
    let result = db
        .store
        .get_import_result(closed.import_result_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(result.totals, closed.totals);
    // The keep rows went with the session (deleted in the background after its end, ADR 0019:
    // awaited, not asserted at once).
    assert_eq!(
        db.execute_sql_until("UPDATE staged_records SET op = op WHERE op = 'keep'", 0)
            .await,
        0
    );
}

async fn keep_digests_follow_last_operation_wins(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let ids_ = ["A", "B", "C", "D", "E"];
    let all: Vec<PreparedRecord> = ids_.iter().map(|id| record(&c, id, 1)).collect();
    stream(db, &c, &all, T0).await;
    let s = open(db, &c, SessionMode::Replace, T0).await;
    let at = call(&s, &c, T0 + SEC);
    // A: delete then keep → kept. B: keep then delete → deleted. C: keep then upsert → updated.
    // D: upsert then keep → kept as is. E: keep twice in one batch → one keep. Nothing else.
    db.store
        .delete_batch(&at, &[keyed(&c, "A")])
        .await
        .applied_ok();
    db.store
        .upsert_batch(&at, &[record(&c, "D", 9)])
        .await
        .applied_ok();
    db.store
        .diff_batch(
            &at,
            &[
                digest(&c, "A", 1),
                digest(&c, "B", 1),
                digest(&c, "C", 1),
                digest(&c, "D", 1),
                digest(&c, "E", 1),
                digest(&c, "E", 1),
            ],
        )
        .await
        .applied_ok();
    db.store
        .delete_batch(&at, &[keyed(&c, "B")])
        .await
        .applied_ok();
    db.store
        .upsert_batch(&at, &[record(&c, "C", 2)])
        .await
        .applied_ok();
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + 2 * SEC), true, false)
        .await
        .unwrap();
    assert_eq!(
        closed.totals,
        SessionTotals {
            unchanged: 3,
            updated: 1,
            deleted: 1,
            ..SessionTotals::default()
        }
    );
    assert_eq!(visible_ids(db, &c).await, ids(&["A", "C", "D", "E"]));
    assert_eq!(get(db, &c, "D").await.unwrap().version, 1);
    assert_eq!(get(db, &c, "C").await.unwrap().version, 2);
}

async fn digests_stage_nothing_outside_replace(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "A", 1), record(&c, "B", 1)], T0).await;
    let accrue = open(db, &c, SessionMode::Accrue, T0).await;
    db.store
        .diff_batch(
            &call(&accrue, &c, T0),
            &[digest(&c, "A", 1), digest(&c, "B", 1)],
        )
        .await
        .applied_ok();
    assert_eq!(
        db.execute_sql("UPDATE staged_records SET op = op").await,
        0,
        "accrue digests stage nothing"
    );
    let closed = db
        .store
        .close_session(&call(&accrue, &c, T0 + SEC), true, false)
        .await
        .unwrap();
    assert_eq!(closed.totals, SessionTotals::default());
    let live = open(db, &c, SessionMode::Stream, T0).await;
    db.store
        .diff_batch(&call(&live, &c, T0), &[digest(&c, "A", 1)])
        .await
        .applied_ok();
    assert_eq!(db.execute_sql("UPDATE staged_records SET op = op").await, 0);
    assert_eq!(visible_ids(db, &c).await, ids(&["A", "B"]));
    // A keep from a replace session that is rolled back leaves nothing behind.
    let r = open(db, &c, SessionMode::Replace, T0).await;
    db.store
        .diff_batch(&call(&r, &c, T0), &[digest(&c, "A", 1)])
        .await
        .applied_ok();
    assert_eq!(db.execute_sql("UPDATE staged_records SET op = op").await, 1);
    db.store
        .close_session(&call(&r, &c, T0 + SEC), false, false)
        .await
        .unwrap();
    // Deleted in the background after the session's end (ADR 0019).
    assert_eq!(
        db.execute_sql_until("UPDATE staged_records SET op = op", 0)
            .await,
        0
    );
    assert_eq!(visible_ids(db, &c).await, ids(&["A", "B"]));
}

async fn resume_returns_the_last_seq_and_refuses_foreign_sessions(db: &TestDb) {
    let a = connector(db, WritePolicy::Importer, None).await;
    let b = connector(db, WritePolicy::Importer, None).await;
    let s = open(db, &a, SessionMode::Accrue, T0).await;
    let fresh = db.store.resume_session(&call(&s, &a, T0)).await.unwrap();
    assert_eq!((fresh.mode, fresh.last_batch_seq), (SessionMode::Accrue, 0));
    db.store
        .upsert_batch(&seq_call(&s, &a, T0, 3), &[record(&a, "X", 1)])
        .await
        .applied_ok();
    let resumed = db
        .store
        .resume_session(&call(&s, &a, T0 + SEC))
        .await
        .unwrap();
    assert_eq!(
        (resumed.mode, resumed.last_batch_seq),
        (SessionMode::Accrue, 3)
    );
    // Another connector's, an unknown and a closed session are refused.
    let denied = |r: tributary_core::Result<_>| matches!(r, Err(Error::PermissionDenied(_)));
    assert!(denied(
        db.store.resume_session(&call(&s, &b, T0 + SEC)).await
    ));
    let unknown = uuid::Uuid::new_v4().to_string();
    assert!(denied(
        db.store.resume_session(&call(&unknown, &a, T0 + SEC)).await
    ));
    // Resuming touches the session: a day after the resume it has not gone idle.
    assert!(db
        .store
        .resume_session(&call(&s, &a, T0 + DAY))
        .await
        .is_ok());
    db.store
        .upsert_batch(
            &seq_call(&s, &a, T0 + 2 * DAY - SEC, 4),
            &[record(&a, "Y", 1)],
        )
        .await
        .applied_ok();
    db.store
        .close_session(&call(&s, &a, T0 + 2 * DAY), true, false)
        .await
        .unwrap();
    assert!(denied(
        db.store.resume_session(&call(&s, &a, T0 + 2 * DAY)).await
    ));
    // A superseded session is refused, and resuming it does not disturb its successor.
    let first = open(db, &a, SessionMode::Replace, T0).await;
    let second = open(db, &a, SessionMode::Replace, T0 + SEC).await;
    assert!(denied(
        db.store.resume_session(&call(&first, &a, T0 + SEC)).await
    ));
    assert_eq!(
        db.store
            .resume_session(&call(&second, &a, T0 + SEC))
            .await
            .unwrap()
            .mode,
        SessionMode::Replace
    );
}

/// A reconcile call's reads (§2.5): the connector's own `(id, checksum)` items, by id in byte
/// order, page by page from a bound (inclusive or not); ids holding separators, digits and
/// multibyte characters come back whole.
async fn read_items_pages_by_byte_order_whatever_the_ids_hold(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let other = connector(db, WritePolicy::Importer, None).await;
    let ids = ["12:ab", "1", "a:b\nc", "Z", "é", "€😀", "zz", "2:x3:y", " "];
    let records: Vec<PreparedRecord> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| record(&c, id, i as i64))
        .collect();
    stream(db, &c, &records, T0).await;
    stream(
        db,
        &other,
        &[record(&other, "1", 1), record(&other, "Y", 2)],
        T0,
    )
    .await;
    let mut expected: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.id.clone(), r.checksum.clone()))
        .collect();
    expected.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

    // Pages of two, each on after the last id of the one before.
    let mut read = Vec::new();
    let (mut from, mut inclusive) = (String::new(), true);
    loop {
        let page = db.store.read_items(&c, &from, inclusive, 2).await.unwrap();
        read.extend(page.iter().cloned());
        match page.last() {
            Some((last, _)) if page.len() == 2 => (from, inclusive) = (last.clone(), false),
            _ => break,
        }
    }
    assert_eq!(read, expected);

    // From a bound that is an id: inclusive or not; past every id: nothing.
    let at = &expected[3].0;
    let page = db.store.read_items(&c, at, true, 100).await.unwrap();
    assert_eq!(page, expected[3..]);
    let page = db.store.read_items(&c, at, false, 100).await.unwrap();
    assert_eq!(page, expected[4..]);
    let page = db
        .store
        .read_items(&c, "\u{10FFFF}", true, 100)
        .await
        .unwrap();
    assert!(page.is_empty());
}
