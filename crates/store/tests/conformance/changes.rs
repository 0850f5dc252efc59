//! The change log and listings (SPEC.md §3): sequences, filters, pruning.

use super::support::*;
use tributary_core::model::{Connector, SessionMode, WritePolicy};
use tributary_core::record::PreparedRecord;
use tributary_core::store::SessionCall;
use tributary_core::Error;
use tributary_store::testing::TestDb;

conformance!(
    change_log_records_every_visible_change_in_commit_order,
    a_replace_logs_each_swept_record_once_in_key_order,
    a_refused_sweep_logs_nothing_and_a_forced_one_logs_what_it_removes,
    a_first_load_creates_and_logs_each_key_once_whatever_it_sent_twice,
    a_replace_of_only_new_records_sweeps_the_old_ones_under_its_guard,
    bulk_deletions_are_logged,
    listings_report_the_sequence_of_their_snapshot,
    filters_compile_to_sql_with_the_same_results,
    pruning_moves_the_horizon,
    concurrent_writers_make_sequences_visible_without_gaps,
    a_commit_wakes_only_the_readers_of_its_entity_type,
    a_held_snapshot_reads_the_catalog_as_it_was_when_opened,
);

/// `(op, id)` of every change-log entry of `country`, in sequence order, checking that
/// sequences increase.
async fn logged(db: &TestDb, c: &Connector) -> Vec<(&'static str, String)> {
    let page = db.store.read_changes("country", 0, 1000).await.unwrap();
    let sequences: Vec<u64> = page.changes.iter().map(|e| e.sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    assert_eq!(sequences.last().copied().unwrap_or(0), page.last_sequence);
    let by_key: std::collections::HashMap<String, String> = ["A", "B", "C", "D", "E", "F"]
        .iter()
        .map(|id| (key(c, id), (*id).to_owned()))
        .collect();
    page.changes
        .into_iter()
        .map(|e| {
            let op = if e.deleted { "delete" } else { "upsert" };
            (op, by_key.get(&e.key).cloned().unwrap_or(e.key))
        })
        .collect()
}

fn entries(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    list.iter()
        .map(|(op, id)| (*op, (*id).to_owned()))
        .collect()
}

async fn change_log_records_every_visible_change_in_commit_order(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    // Stream: two created, then one unchanged (not logged) and one updated.
    stream(db, &c, &[record(&c, "A", 1), record(&c, "B", 2)], T0).await;
    stream(db, &c, &[record(&c, "A", 1), record(&c, "B", 3)], T0 + SEC).await;
    let s = open(db, &c, SessionMode::Stream, T0 + 2 * SEC).await;
    db.store
        .delete_batch(
            &call(&s, &c, T0 + 2 * SEC),
            &[keyed(&c, "A"), keyed(&c, "Z")],
        )
        .await
        .applied_ok();
    // Accrue: nothing is logged until commit, then its changes together.
    let accrue = open(db, &c, SessionMode::Accrue, T0 + 3 * SEC).await;
    let at = call(&accrue, &c, T0 + 3 * SEC);
    db.store
        .upsert_batch(
            &at,
            &[record(&c, "C", 1), record(&c, "B", 3), record(&c, "D", 4)],
        )
        .await
        .applied_ok();
    db.store
        .delete_batch(&at, &[keyed(&c, "D")])
        .await
        .applied_ok();
    assert_eq!(logged(db, &c).await.len(), 4, "staged data is not logged");
    db.store.close_session(&at, true, false).await.unwrap();
    // Replace keeps C and adds E: B is swept.
    let replace = open(db, &c, SessionMode::Replace, T0 + 4 * SEC).await;
    let rt = call(&replace, &c, T0 + 4 * SEC);
    db.store
        .upsert_batch(&rt, &[record(&c, "C", 1), record(&c, "E", 5)])
        .await
        .applied_ok();
    db.store.close_session(&rt, true, false).await.unwrap();
    let mut first_batch = entries(&[("upsert", "A"), ("upsert", "B")]);
    // Within one batch, entries follow key order.
    first_batch.sort_by_key(|(_, id)| key(&c, id));
    let mut log = logged(db, &c).await;
    assert_eq!(log.drain(..2).collect::<Vec<_>>(), first_batch);
    assert_eq!(
        log,
        entries(&[
            ("upsert", "B"),
            ("delete", "A"),
            ("upsert", "C"),
            ("upsert", "E"),
            ("delete", "B"),
        ])
    );
    // Upserts are read back joined to the record as it is now.
    let page = db.store.read_changes("country", 0, 1000).await.unwrap();
    let e = page.changes.iter().find(|e| e.key == key(&c, "E")).unwrap();
    assert_eq!(e.record.as_ref().map(|r| r.id.as_str()), Some("E"));
    let gone = page
        .changes
        .iter()
        .find(|e| e.key == key(&c, "B") && !e.deleted)
        .unwrap();
    assert!(gone.record.is_none(), "B was swept since");
    // Reading after a sequence, with a limit.
    let first = page.changes[0].sequence;
    let next = db.store.read_changes("country", first, 2).await.unwrap();
    assert_eq!(next.changes.len(), 2);
    assert_eq!(next.changes[0].sequence, page.changes[1].sequence);
    assert!(db
        .store
        .read_changes("planet", 0, 10)
        .await
        .unwrap()
        .changes
        .is_empty());
}

/// A replace that keeps one of six records sweeps five: five deletes, after the six creates,
/// each once and in key order (the sweep's log is the commit statement that sorts).
async fn a_replace_logs_each_swept_record_once_in_key_order(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let ids = ["A", "B", "C", "D", "E", "F"];
    let all: Vec<PreparedRecord> = ids.iter().map(|id| record(&c, id, 1)).collect();
    stream(db, &c, &all, T0).await;
    let replace = open(db, &c, SessionMode::Replace, T0 + SEC).await;
    let rt = call(&replace, &c, T0 + SEC);
    db.store
        .upsert_batch(&rt, &[record(&c, "C", 1)])
        .await
        .applied_ok();
    let closed = db.store.close_session(&rt, true, false).await.unwrap();
    assert_eq!(closed.totals.swept, 5);
    let mut expected = in_key_order(&c, "upsert", &ids);
    expected.extend(in_key_order(&c, "delete", &["A", "B", "D", "E", "F"]));
    assert_eq!(logged(db, &c).await, expected);
}

/// Change-log entries `op` of `ids` of `c`, as [`logged`] lists them, in the order of the
/// records' keys (the order of a commit's entries).
fn in_key_order(c: &Connector, op: &'static str, ids: &[&str]) -> Vec<(&'static str, String)> {
    let mut list: Vec<(&'static str, String)> =
        ids.iter().map(|id| (op, (*id).to_owned())).collect();
    list.sort_by_key(|(_, id)| key(c, id));
    list
}

/// Commits replace session `rt` without force, which its removal guard refuses
/// (`SWEEP_REFUSED`), leaving the change log as it was (`before`).
async fn assert_sweep_refused(
    db: &TestDb,
    c: &Connector,
    rt: &SessionCall<'_>,
    before: &[(&'static str, String)],
) {
    let refused = db.store.close_session(rt, true, false).await;
    assert!(
        matches!(
            refused,
            Err(Error::FailedPrecondition {
                reason: "SWEEP_REFUSED",
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(logged(db, c).await, before, "a refused commit logs nothing");
}

/// A replace commit logs its sweep before its removal guard counts it (ADR 0019, twenty-sixth
/// round): a refused commit leaves no entry behind, and the sweep of a forced one removes
/// exactly the records it logged.
async fn a_refused_sweep_logs_nothing_and_a_forced_one_logs_what_it_removes(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, Some(50.0)).await;
    let ids = ["A", "B", "C", "D"];
    let all: Vec<PreparedRecord> = ids.iter().map(|id| record(&c, id, 1)).collect();
    stream(db, &c, &all, T0).await;
    let streamed = logged(db, &c).await;
    let replace = open(db, &c, SessionMode::Replace, T0 + SEC).await;
    let rt = call(&replace, &c, T0 + SEC);
    db.store
        .upsert_batch(&rt, &[record(&c, "A", 2)])
        .await
        .applied_ok();
    assert_sweep_refused(db, &c, &rt, &streamed).await;
    let closed = db.store.close_session(&rt, true, true).await.unwrap();
    assert_eq!(closed.totals.swept, 3);
    let mut expected = streamed;
    expected.push(("upsert", "A".to_owned()));
    expected.extend(in_key_order(&c, "delete", &["B", "C", "D"]));
    assert_eq!(logged(db, &c).await, expected);
    let left: Vec<String> = visible_ids(db, &c).await.into_iter().collect();
    assert_eq!(left, ["A"]);
}

/// A commit that only creates records skips the superseded rows' pass (ADR 0019,
/// twenty-eighth round); a key staged twice makes its write fail on the primary key and the
/// commit go the general way. Either way each key is created once, as its last batch sent it,
/// and logged once, in key order: an accrue first load (once without, once with keys sent
/// twice) and a replace one, which sweeps nothing.
async fn a_first_load_creates_and_logs_each_key_once_whatever_it_sent_twice(db: &TestDb) {
    type Batches<'a> = &'a [Vec<(&'a str, i64)>];
    let sent_once = [vec![("A", 1), ("C", 1)], vec![("B", 1)]];
    let sent_twice = [
        vec![("A", 1), ("B", 1)],
        vec![("B", 2), ("C", 1)],
        vec![("A", 3)],
    ];
    let runs: [(SessionMode, Batches); 3] = [
        (SessionMode::Accrue, &sent_once),
        (SessionMode::Accrue, &sent_twice),
        (SessionMode::Replace, &sent_twice),
    ];
    for (mode, batches) in runs {
        let c = connector(db, WritePolicy::Importer, None).await;
        let s = open(db, &c, mode, T0).await;
        for batch in batches {
            let records: Vec<PreparedRecord> =
                batch.iter().map(|&(id, n)| record(&c, id, n)).collect();
            db.store
                .upsert_batch(&call(&s, &c, T0), &records)
                .await
                .applied_ok();
        }
        let before = db.store.read_changes("country", 0, 1000).await.unwrap();
        assert_eq!(commit(db, &s, &c, T0 + SEC).await, totals(3, 0, 0, 0, 0, 0));
        let after = db
            .store
            .read_changes("country", before.last_sequence, 1000)
            .await
            .unwrap();
        let log: Vec<(bool, String)> = after
            .changes
            .into_iter()
            .map(|e| (e.deleted, e.key))
            .collect();
        let mut keys: Vec<String> = ["A", "B", "C"].iter().map(|id| key(&c, id)).collect();
        keys.sort();
        let expected: Vec<(bool, String)> = keys.into_iter().map(|k| (false, k)).collect();
        assert_eq!(log, expected, "{mode:?} {batches:?}");
        let last_sent = |id: &str| {
            let mut sent = batches.iter().flatten().filter(|(sent, _)| *sent == id);
            sent.next_back().map(|&(_, n)| record(&c, id, n).checksum)
        };
        for id in ["A", "B", "C"] {
            let stored = get(db, &c, id).await.unwrap();
            assert_eq!(
                (Some(stored.checksum), stored.version, stored.created_at),
                (last_sent(id), 1, T0 + SEC),
                "{id} after {mode:?} {batches:?}"
            );
        }
    }
}

/// A replace session that sends only keys without a record commits the shorter way (ADR 0019,
/// twenty-eighth round) and still sweeps the connector's other records: its guard refuses a
/// sweep above the limit (nothing logged or written), and a forced commit logs the new record
/// and then the swept ones, in key order, and leaves only the new one.
async fn a_replace_of_only_new_records_sweeps_the_old_ones_under_its_guard(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, Some(50.0)).await;
    stream(db, &c, &[record(&c, "A", 1), record(&c, "B", 1)], T0).await;
    let streamed = logged(db, &c).await;
    let replace = open(db, &c, SessionMode::Replace, T0 + SEC).await;
    let rt = call(&replace, &c, T0 + SEC);
    db.store
        .upsert_batch(&rt, &[record(&c, "C", 1)])
        .await
        .applied_ok();
    assert_sweep_refused(db, &c, &rt, &streamed).await;
    assert!(get(db, &c, "C").await.is_none(), "nor writes");
    let closed = db.store.close_session(&rt, true, true).await.unwrap();
    assert_eq!(closed.totals, totals(1, 0, 0, 0, 2, 0));
    let mut expected = streamed;
    expected.push(("upsert", "C".to_owned()));
    expected.extend(in_key_order(&c, "delete", &["A", "B"]));
    assert_eq!(logged(db, &c).await, expected);
    let left: Vec<String> = visible_ids(db, &c).await.into_iter().collect();
    assert_eq!(left, ["C"]);
}

async fn bulk_deletions_are_logged(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "A", 1), record(&c, "B", 2)], T0).await;
    db.store.delete_connector(&c.id, true).await.unwrap();
    let d = connector(db, WritePolicy::Importer, None).await;
    stream(db, &d, &[record(&d, "C", 3)], T0).await;
    db.store.delete_entity_type("country", true).await.unwrap();
    let page = db.store.read_changes("country", 0, 100).await.unwrap();
    let ops: Vec<(bool, String)> = page
        .changes
        .into_iter()
        .map(|e| (e.deleted, e.key))
        .collect();
    // Within one statement, entries follow key order.
    let mut a_b = [key(&c, "A"), key(&c, "B")];
    a_b.sort();
    assert_eq!(
        ops,
        vec![
            (false, a_b[0].clone()),
            (false, a_b[1].clone()),
            (true, a_b[0].clone()),
            (true, a_b[1].clone()),
            (false, key(&d, "C")),
            (true, key(&d, "C")),
        ]
    );
}

async fn listings_report_the_sequence_of_their_snapshot(db: &TestDb) {
    use tributary_core::query::ListQuery;
    use tributary_core::store::RecordQuery;
    let c = connector(db, WritePolicy::Importer, None).await;
    let q = ListQuery::parse("country", "", "").unwrap();
    let query = RecordQuery {
        entity_type: "country",
        filter: None,
        order: &q.order,
        after: None,
        limit: 10,
    };
    assert_eq!(db.store.query_records(&query).await.unwrap().sequence, 0);
    stream(db, &c, &[record(&c, "A", 1), record(&c, "B", 2)], T0).await;
    let page = db.store.query_records(&query).await.unwrap();
    assert_eq!(page.records.len(), 2);
    assert_eq!(page.sequence, 2);
    // The cursor continues strictly after the last record.
    let first = db
        .store
        .query_records(&RecordQuery { limit: 1, ..query })
        .await
        .unwrap();
    let rest = db
        .store
        .query_records(&RecordQuery {
            after: first.last.as_ref(),
            ..query
        })
        .await
        .unwrap();
    assert_eq!(rest.records.len(), 1);
    assert_ne!(rest.records[0].key, first.records[0].key);
    // A cursor that does not fit the order is a bad page token, not an internal error.
    let by_population = ListQuery::parse("country", "", "entity.population").unwrap();
    let wrong = db
        .store
        .query_records(&RecordQuery {
            order: &by_population.order,
            after: first.last.as_ref(),
            ..query
        })
        .await;
    assert!(matches!(wrong, Err(Error::InvalidArgument(v)) if v[0].field == "page_token"));
}

async fn filters_compile_to_sql_with_the_same_results(db: &TestDb) {
    use tributary_core::query::ListQuery;
    use tributary_core::store::RecordQuery;
    let c = connector(db, WritePolicy::Importer, None).await;
    let records: Vec<PreparedRecord> = (1..=6)
        .map(|i| record(&c, &format!("R{i}"), i * 10))
        .collect();
    stream(db, &c, &records, T0).await;
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            r#"{"entity.population": {"$gt": 30}}"#,
            "",
            &["R4", "R5", "R6"],
        ),
        (
            r#"{"entity.population": {"$in": [10, 60]}}"#,
            "entity.population desc",
            &["R6", "R1"],
        ),
        (
            r#"{"$or": [{"id": "R2"}, {"name": {"$regex": "R3$"}}]}"#,
            "id",
            &["R2", "R3"],
        ),
        (
            r#"{"entity.population": {"$not": {"$lte": 50}}}"#,
            "",
            &["R6"],
        ),
        (
            r#"{"entity.missing": {"$exists": false}, "id": {"$gte": "R5"}}"#,
            "id desc",
            &["R6", "R5"],
        ),
        (r#"{"entity.population": "10"}"#, "", &[]),
    ];
    for (filter, order_by, expected) in cases {
        let q = ListQuery::parse("country", filter, order_by).unwrap();
        let page = db
            .store
            .query_records(&RecordQuery {
                entity_type: "country",
                filter: q.filter.as_ref(),
                order: &q.order,
                after: None,
                limit: 100,
            })
            .await
            .unwrap_or_else(|e| panic!("{filter}: {e}"));
        let mut got: Vec<String> = page.records.into_iter().map(|r| r.id).collect();
        if order_by.is_empty() {
            got.sort();
        }
        assert_eq!(got, expected, "{filter} / {order_by}");
    }
}

async fn pruning_moves_the_horizon(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "A", 1)], T0).await;
    stream(db, &c, &[record(&c, "B", 1)], T0 + DAY).await;
    assert_eq!(db.store.prune_changes(T0 + SEC).await.unwrap(), 1);
    let page = db.store.read_changes("country", 0, 10).await.unwrap();
    assert_eq!(page.pruned_through, 1);
    assert_eq!(page.changes.len(), 1);
    assert_eq!(db.store.prune_changes(T0 + SEC).await.unwrap(), 0);
    assert_eq!(db.store.prune_changes(T0 + 2 * DAY).await.unwrap(), 1);
    assert_eq!(
        db.store
            .read_changes("country", 0, 10)
            .await
            .unwrap()
            .pruned_through,
        2
    );
}

/// The BIGSERIAL pitfall: with concurrent writers, a reader must never see sequence N+1 before N.
/// Sequences are contiguous per entity type here (one type), so any gap a reader observes would
/// be a change it could miss for good.
async fn concurrent_writers_make_sequences_visible_without_gaps(db: &TestDb) {
    const WRITERS: usize = 4;
    const BATCHES: usize = 25;
    const PER_BATCH: usize = 4;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let c = connector(db, WritePolicy::Importer, None).await;
        let store = db.store.clone();
        writers.push(tokio::spawn(async move {
            let session = store
                .open_session(&c, SessionMode::Stream, T0)
                .await
                .unwrap()
                .session
                .id;
            for b in 0..BATCHES {
                let batch: Vec<PreparedRecord> = (0..PER_BATCH)
                    .map(|i| record(&c, &format!("W{w}-{b}-{i}"), 1))
                    .collect();
                store
                    .upsert_batch(&call(&session, &c, T0 + b as i64), &batch)
                    .await
                    .applied_ok();
            }
        }));
    }
    let total = (WRITERS * BATCHES * PER_BATCH) as u64;
    // Reads race the commits as closely as possible (a yield, no sleep), within a deadline.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut after = 0;
    while after < total {
        let page = db.store.read_changes("country", after, 1000).await.unwrap();
        for change in &page.changes {
            assert_eq!(change.sequence, after + 1, "a gap after {after}");
            after = change.sequence;
        }
        if page.changes.is_empty() {
            join_finished(&mut writers).await;
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {after} of {total} changes became visible within the deadline"
            );
            tokio::task::yield_now().await;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
}

/// Joins the tasks that have finished, so one that panicked fails the test at once instead of
/// leaving the reader waiting for changes that will never come.
async fn join_finished(tasks: &mut Vec<tokio::task::JoinHandle<()>>) {
    let (finished, running): (Vec<_>, Vec<_>) = std::mem::take(tasks)
        .into_iter()
        .partition(|t| t.is_finished());
    *tasks = running;
    for task in finished {
        task.await.unwrap();
    }
}

/// Watch readers wait per entity type: a change of `country` wakes its readers and leaves the
/// readers of `city` waiting until `city` changes.
async fn a_commit_wakes_only_the_readers_of_its_entity_type(db: &TestDb) {
    use futures::FutureExt;
    let c = connector(db, WritePolicy::Importer, None).await;
    db.store
        .create_entity_type(&entity_type("city", country_schema()))
        .await
        .unwrap();
    let city = Connector {
        id: tributary_core::ids::new_connector_id(),
        entity_type: "city".into(),
        ..c.clone()
    };
    db.store
        .create_connector(&city, &format!("hash-{}", city.id))
        .await
        .unwrap();
    if tributary_store::is_postgres_url(&db.url) {
        // The LISTEN connection starts with the first wait and then wakes every reader once
        // (wake-ups may have been missed before it listened): let that happen first, by waiting
        // for a commit only its NOTIFY can report (another store, as another process).
        let before = db
            .store
            .read_changes("city", 0, 1)
            .await
            .unwrap()
            .last_sequence;
        let woken = db.store.wait_for_changes("city", before);
        let other = tributary_store::open(&db.url).await.unwrap();
        let s = other
            .open_session(&city, SessionMode::Stream, T0)
            .await
            .unwrap()
            .session
            .id;
        other
            .upsert_batch(&call(&s, &city, T0), &[record(&city, "W", 1)])
            .await
            .applied_ok();
        tokio::time::timeout(std::time::Duration::from_secs(30), woken)
            .await
            .expect("another process's commit wakes this one's readers");
    }
    let after = db
        .store
        .read_changes("country", 0, 1)
        .await
        .unwrap()
        .last_sequence;
    let country_waits = db.store.wait_for_changes("country", after);
    let mut city_waits = Box::pin(db.store.wait_for_changes("city", after));
    assert!(
        (&mut city_waits).now_or_never().is_none(),
        "nothing changed yet"
    );
    stream(db, &c, &[record(&c, "A", 1)], T0).await;
    tokio::time::timeout(std::time::Duration::from_secs(30), country_waits)
        .await
        .expect("a country change wakes country's readers");
    assert!(
        (&mut city_waits).now_or_never().is_none(),
        "a country change does not wake city's readers"
    );
    stream(db, &city, &[record(&city, "P", 1)], T0 + SEC).await;
    tokio::time::timeout(std::time::Duration::from_secs(30), city_waits)
        .await
        .expect("a city change wakes city's readers");
}

/// An export's snapshot: pages read after commits that add, change and remove records still
/// show the catalog as it was when the snapshot was opened, and a new snapshot sees the commits.
async fn a_held_snapshot_reads_the_catalog_as_it_was_when_opened(db: &TestDb) {
    use tributary_core::query::ListQuery;
    use tributary_core::store::{CatalogSnapshot, RecordQuery};
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(
        db,
        &c,
        &[record(&c, "A", 1), record(&c, "B", 2), record(&c, "C", 3)],
        T0,
    )
    .await;
    let q = ListQuery::parse("country", "", "").unwrap();
    let query = RecordQuery {
        entity_type: "country",
        filter: None,
        order: &q.order,
        after: None,
        limit: 2,
    };
    // Every page of a snapshot: (id, population) sorted by id, and each page's sequence.
    async fn read_all(
        snapshot: &mut dyn CatalogSnapshot,
        query: &RecordQuery<'_>,
    ) -> (Vec<(String, String)>, Vec<u64>) {
        let (mut seen, mut sequences) = (Vec::new(), Vec::new());
        let mut after = None;
        loop {
            let page = snapshot
                .query_records(&RecordQuery {
                    after: after.as_ref(),
                    ..*query
                })
                .await
                .unwrap();
            sequences.push(page.sequence);
            seen.extend(
                page.records
                    .iter()
                    .map(|r| (r.id.clone(), r.entity.clone())),
            );
            match page.last {
                Some(last) if page.records.len() == query.limit as usize => after = Some(last),
                _ => {
                    seen.sort();
                    return (seen, sequences);
                }
            }
        }
    }
    let mut before = db.store.open_snapshot().await.unwrap();
    // The first page is read before the commits, the rest after them.
    let first = before.query_records(&query).await.unwrap();
    assert_eq!(first.records.len(), 2);
    let replace = open(db, &c, SessionMode::Replace, T0 + SEC);
    let replace = replace.await;
    let rt = call(&replace, &c, T0 + SEC);
    db.store
        .upsert_batch(
            &rt,
            &[record(&c, "A", 10), record(&c, "C", 3), record(&c, "D", 4)],
        )
        .await
        .applied_ok();
    db.store.close_session(&rt, true, false).await.unwrap();
    let (seen, sequences) = read_all(before.as_mut(), &query).await;
    let population = |n: i64| format!("{{\"population\":{n}}}");
    assert_eq!(
        seen,
        vec![
            ("A".to_owned(), population(1)),
            ("B".to_owned(), population(2)),
            ("C".to_owned(), population(3)),
        ],
        "the snapshot shows neither the change of A, the removal of B nor the new D"
    );
    assert!(
        sequences.iter().all(|s| *s == first.sequence),
        "{sequences:?}"
    );
    drop(before);
    let mut after = db.store.open_snapshot().await.unwrap();
    let (seen, sequences) = read_all(after.as_mut(), &query).await;
    assert_eq!(
        seen,
        vec![
            ("A".to_owned(), population(10)),
            ("C".to_owned(), population(3)),
            ("D".to_owned(), population(4)),
        ]
    );
    assert!(sequences[0] > first.sequence);
}
