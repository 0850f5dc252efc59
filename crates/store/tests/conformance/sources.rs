//! Pull sources (SPEC.md §5): definitions, claims and leases, pages, marks and sweeps.

use super::support::*;
use serde_json::json;
use tributary_core::error::ResourceKind;
use tributary_core::ids::{new_id, record_key};
use tributary_core::model::{Connector, ImportItem, ImportStatus, WritePolicy};
use tributary_core::record::PreparedRecord;
use tributary_core::Error;
use tributary_store::testing::TestDb;

conformance!(
    source_crud_and_status,
    deleting_a_connector_or_its_entity_type_clears_its_sources_cycle_rows,
    claims_are_exclusive_until_the_lease_expires,
    pages_mark_and_the_sweep_removes_exactly_the_unseen,
    sweep_guards_refuse_and_the_next_good_cycle_sweeps,
    a_lost_lease_refuses_every_write,
    failed_pages_back_off_and_the_last_failure_fails_the_cycle,
    write_policies_apply_to_pages_and_edits_are_kept,
    cancel_reports_the_cycle_canceled,
    pulled_pages_and_sweeps_are_in_the_change_log,
);

mod pull {
    use super::*;
    use tributary_core::source::store::Claim;
    pub use tributary_core::source::store::RecordEdit;
    pub use tributary_core::source::SourceState;
    use tributary_core::source::{
        ClaimedSource, CycleEnd, Lease, Pacing, Schedule, Source, SourceKind, SourcePage,
    };

    pub fn source(c: &Connector) -> Source {
        Source {
            id: new_id(),
            connector: c.id.clone(),
            name: "a source".into(),
            kind: SourceKind::HttpJson,
            config: json!({"url": "http://127.0.0.1:1/items", "headers": {"Authorization": "Bearer s"}}),
            mapping: json!({"id": "/id"}),
            schedule: Schedule::Rest,
            pacing: Pacing::default(),
            reject_removals_above_percent: None,
            reject_empty: true,
            enabled: true,
            created_at: T0,
            updated_at: T0,
        }
    }

    pub async fn claim(db: &TestDb, holder: &str, now: i64) -> Vec<ClaimedSource> {
        db.store
            .claim_sources(&Claim {
                holder,
                now,
                lease_until: now + 10 * SEC,
                limit: 10,
            })
            .await
            .unwrap()
    }

    pub fn lease(claimed: &ClaimedSource, holder: &str) -> Lease {
        Lease {
            source_id: claimed.source.id.clone(),
            holder: holder.into(),
            cycle_id: claimed.status.cycle_id.clone().unwrap(),
        }
    }

    pub fn page(records: Vec<PreparedRecord>, cursor: &str, now: i64) -> SourcePage {
        SourcePage {
            records,
            failed_items: Vec::new(),
            next_cursor: cursor.into(),
            now,
            lease_until: now + 10 * SEC,
            max_items: 1000,
        }
    }

    pub fn done(limit: Option<f64>) -> CycleEnd {
        CycleEnd::Done {
            reject_empty: true,
            reject_removals_above_percent: limit,
        }
    }

    pub async fn run_cycle(
        db: &TestDb,
        c: &Connector,
        ids: &[&str],
        limit: Option<f64>,
        now: i64,
    ) -> tributary_core::model::ImportResult {
        let claimed = claim(db, "e1", now).await;
        assert_eq!(claimed.len(), 1, "one due source");
        let lease = lease(&claimed[0], "e1");
        let records = ids.iter().map(|id| record(c, id, 1)).collect();
        db.store
            .apply_source_page(&lease, &page(records, "{\"page\":2}", now))
            .await
            .unwrap();
        db.store
            .finish_source_cycle(&lease, &done(limit), now, now + SEC)
            .await
            .unwrap()
    }
}

async fn source_crud_and_status(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let s = pull::source(&c);
    db.store.create_source(&s).await.unwrap();
    assert_eq!(db.store.get_source(&s.id).await.unwrap(), s);
    let mut other = pull::source(&c);
    other.connector = "nope".into();
    assert!(matches!(
        db.store.create_source(&other).await,
        Err(Error::NotFound {
            kind: ResourceKind::Connector,
            ..
        })
    ));
    let listed = db.store.list_sources(Some(&c.id), None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(db
        .store
        .list_sources(Some("x"), None, 10)
        .await
        .unwrap()
        .is_empty());
    let mut changed = s.clone();
    changed.name = "renamed".into();
    changed.enabled = false;
    assert_eq!(
        db.store.update_source(&changed).await.unwrap().name,
        "renamed"
    );
    let status = db.store.source_status(&s.id).await.unwrap();
    assert_eq!(status.state, pull::SourceState::Idle);
    assert_eq!(status.next_run_at, T0, "a new source is due at once");
    assert!(
        pull::claim(db, "e1", T0 + SEC).await.is_empty(),
        "disabled sources are never claimed"
    );
    db.store.delete_source(&s.id).await.unwrap();
    assert!(matches!(
        db.store.get_source(&s.id).await,
        Err(Error::NotFound {
            kind: ResourceKind::Source,
            ..
        })
    ));
}

async fn deleting_a_connector_or_its_entity_type_clears_its_sources_cycle_rows(db: &TestDb) {
    // A source in mid-cycle: a page marked one record and listed one failed item.
    async fn mid_cycle(db: &TestDb, c: &Connector) -> String {
        let s = pull::source(c);
        db.store.create_source(&s).await.unwrap();
        let claimed = pull::claim(db, "e1", T0).await;
        let lease = pull::lease(&claimed[0], "e1");
        let mut page = pull::page(vec![record(c, "A", 1)], "{\"page\":2}", T0);
        page.failed_items.push(ImportItem {
            id: "B".into(),
            reason: "invalid".into(),
            error: "entity.population: must be an integer".into(),
            data: "{}".into(),
        });
        db.store.apply_source_page(&lease, &page).await.unwrap();
        s.id
    }
    // Rows left behind, deleted: how many there were.
    async fn left(db: &TestDb, id: &str) -> u64 {
        db.execute_sql(&format!(
            "DELETE FROM source_marks WHERE source_id = '{id}'"
        ))
        .await
            + db.execute_sql(&format!(
                "DELETE FROM source_items WHERE source_id = '{id}'"
            ))
            .await
    }
    let c = connector(db, WritePolicy::Importer, None).await;
    let id = mid_cycle(db, &c).await;
    let status = db.store.source_status(&id).await.unwrap();
    assert_eq!((status.marks, status.counts.failed), (1, 1));
    db.store.delete_connector(&c.id, false).await.unwrap();
    assert_eq!(left(db, &id).await, 0);

    let c = connector(db, WritePolicy::Importer, None).await;
    let id = mid_cycle(db, &c).await;
    db.store
        .delete_entity_type(&c.entity_type, true)
        .await
        .unwrap();
    assert_eq!(left(db, &id).await, 0);
}

async fn claims_are_exclusive_until_the_lease_expires(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let s = pull::source(&c);
    db.store.create_source(&s).await.unwrap();
    // Two engines race for the due source: exactly one wins.
    let (a, b) = tokio::join!(pull::claim(db, "a", T0), pull::claim(db, "b", T0));
    assert_eq!(a.len() + b.len(), 1);
    let (winner, first) = if a.is_empty() { ("b", b) } else { ("a", a) };
    assert_eq!(first[0].status.lease_holder.as_deref(), Some(winner));
    assert_eq!(first[0].status.state, pull::SourceState::Running);
    let lease = pull::lease(&first[0], winner);
    db.store
        .apply_source_page(
            &lease,
            &pull::page(vec![record(&c, "A", 1)], "{\"page\":2}", T0),
        )
        .await
        .unwrap();
    // Still leased (the page renewed it to T0 + 10 s): nobody else gets it.
    assert!(pull::claim(db, "c", T0 + 5 * SEC).await.is_empty());
    // The holder died: after expiry another engine takes over the same cycle, from the cursor.
    let taken = pull::claim(db, "c", T0 + 11 * SEC).await;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].status.cycle_id, first[0].status.cycle_id);
    assert_eq!(taken[0].status.cursor.as_deref(), Some("{\"page\":2}"));
    assert_eq!(taken[0].status.counts.created, 1);
    assert_eq!(db.store.source_status(&s.id).await.unwrap().marks, 1);
}

async fn pages_mark_and_the_sweep_removes_exactly_the_unseen(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    db.store.create_source(&pull::source(&c)).await.unwrap();
    // A pushed record of the same connector is not the source's: never swept by it.
    stream(db, &c, &[record(&c, "PUSHED", 1)], T0).await;
    let r = pull::run_cycle(db, &c, &["A", "B", "C", "D"], None, T0).await;
    assert_eq!((r.totals.created, r.totals.swept, r.pages), (4, 0, 1));
    assert_eq!(r.status, ImportStatus::Succeeded);
    assert_eq!(
        get(db, &c, "A").await.unwrap().source.as_deref(),
        Some(r.source.as_deref().unwrap())
    );
    let r = pull::run_cycle(db, &c, &["A", "C"], None, T0 + 2 * SEC).await;
    assert_eq!((r.totals.unchanged, r.totals.swept), (2, 2));
    assert_eq!(visible_ids(db, &c).await, ids(&["A", "C", "PUSHED"]));
    let status = db
        .store
        .source_status(r.source.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(status.state, pull::SourceState::Resting);
    assert_eq!(status.marks, 0);
    assert_eq!(status.last_import_result.as_deref(), Some(r.id.as_str()));
    assert_eq!(db.store.get_import_result(&r.id).await.unwrap(), r);
}

async fn pulled_pages_and_sweeps_are_in_the_change_log(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    db.store.create_source(&pull::source(&c)).await.unwrap();
    let entity_type = c.entity_type.clone();
    let changes = |after: u64| {
        let entity_type = entity_type.clone();
        async move {
            db.store
                .read_changes(&entity_type, after, 100)
                .await
                .unwrap()
                .changes
        }
    };
    pull::run_cycle(db, &c, &["A", "B", "C"], None, T0).await;
    let first = changes(0).await;
    assert_eq!(first.len(), 3, "one upsert per created record");
    assert!(first.iter().all(|e| !e.deleted && e.record.is_some()));
    let after = first.last().unwrap().sequence;
    // Unchanged A and C log nothing; B is swept: one delete, logged in the sweep's transaction.
    pull::run_cycle(db, &c, &["A", "C"], None, T0 + 2 * SEC).await;
    let second = changes(after).await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(second[0].deleted);
    assert_eq!(second[0].key, record_key(&c.entity_type, &c.id, "B"));
}

async fn sweep_guards_refuse_and_the_next_good_cycle_sweeps(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    db.store.create_source(&pull::source(&c)).await.unwrap();
    let all: Vec<String> = (0..10).map(|i| format!("R{i}")).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    pull::run_cycle(db, &c, &all, Some(50.0), T0).await;
    // 80 % would go: refused, reported, nothing deleted.
    let r = pull::run_cycle(db, &c, &all[..2], Some(50.0), T0 + 2 * SEC).await;
    assert_eq!(
        (r.status, r.sweep_refused, r.totals.swept),
        (ImportStatus::Partial, 8, 0)
    );
    assert!(
        r.errors.iter().any(|e| e.contains("8 of 10")),
        "{:?}",
        r.errors
    );
    assert_eq!(visible_ids(db, &c).await.len(), 10);
    // An empty cycle: refused by reject_empty.
    let r = pull::run_cycle(db, &c, &[], None, T0 + 4 * SEC).await;
    assert_eq!((r.sweep_refused, r.totals.swept), (10, 0));
    // The next good cycle sweeps the earlier candidates.
    let r = pull::run_cycle(db, &c, &all[..6], None, T0 + 6 * SEC).await;
    assert_eq!((r.status, r.totals.swept), (ImportStatus::Succeeded, 4));
    assert_eq!(visible_ids(db, &c).await.len(), 6);
}

async fn a_lost_lease_refuses_every_write(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    db.store.create_source(&pull::source(&c)).await.unwrap();
    let first = pull::claim(db, "old", T0).await;
    let stale = pull::lease(&first[0], "old");
    let taken = pull::claim(db, "new", T0 + 11 * SEC).await;
    assert_eq!(taken.len(), 1);
    let lost = |r: Result<_, Error>| {
        assert!(
            matches!(
                r,
                Err(Error::FailedPrecondition {
                    reason: "LEASE_LOST",
                    ..
                })
            ),
            "expected LEASE_LOST"
        )
    };
    lost(
        db.store
            .apply_source_page(
                &stale,
                &pull::page(vec![record(&c, "A", 1)], "{}", T0 + 12 * SEC),
            )
            .await
            .map(|_| ()),
    );
    lost(db.store.release_source(&stale, T0).await);
    lost(db.store.source_page_failed(&stale, "x", T0, T0).await);
    lost(
        db.store
            .finish_source_cycle(&stale, &pull::done(None), T0, T0)
            .await
            .map(|_| ()),
    );
    assert!(
        get(db, &c, "A").await.is_none(),
        "the stale page wrote nothing"
    );
}

async fn failed_pages_back_off_and_the_last_failure_fails_the_cycle(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    db.store.create_source(&pull::source(&c)).await.unwrap();
    let claimed = pull::claim(db, "e", T0).await;
    let lease = pull::lease(&claimed[0], "e");
    db.store
        .source_page_failed(&lease, "HTTP 500", T0, T0 + 60 * SEC)
        .await
        .unwrap();
    let status = db.store.source_status(&claimed[0].source.id).await.unwrap();
    assert_eq!(
        (
            status.state,
            status.attempts,
            status.last_error.as_deref(),
            status.lease_holder
        ),
        (pull::SourceState::Backoff, 1, Some("HTTP 500"), None)
    );
    assert!(
        pull::claim(db, "e", T0 + 59 * SEC).await.is_empty(),
        "not before retry_at"
    );
    let again = pull::claim(db, "e", T0 + 60 * SEC).await;
    assert_eq!(again[0].status.attempts, 1, "the retry continues the cycle");
    let lease = pull::lease(&again[0], "e");
    let r = db
        .store
        .finish_source_cycle(
            &lease,
            &tributary_core::source::CycleEnd::Failed {
                error: "gave up".into(),
            },
            T0 + 61 * SEC,
            T0 + DAY,
        )
        .await
        .unwrap();
    assert_eq!(r.status, ImportStatus::Failed);
    assert_eq!(r.errors, vec!["HTTP 500".to_owned(), "gave up".to_owned()]);
    let status = db.store.source_status(&claimed[0].source.id).await.unwrap();
    assert_eq!(
        (status.state, status.cursor, status.next_run_at),
        (pull::SourceState::Idle, None, T0 + DAY)
    );
}

async fn write_policies_apply_to_pages_and_edits_are_kept(db: &TestDb) {
    let c = connector(db, WritePolicy::ImporterUpdateUnlessEdited, None).await;
    db.store.create_source(&pull::source(&c)).await.unwrap();
    pull::run_cycle(db, &c, &["A", "B"], None, T0).await;
    let edited = db
        .store
        .edit_record(&pull::RecordEdit {
            key: key(&c, "A"),
            name: "Edited".into(),
            entity: "{\"population\":7}".into(),
            instance: "{}".into(),
            checksum: "edited".into(),
            now: T0 + SEC,
        })
        .await
        .unwrap();
    assert_eq!(
        (edited.edited_at, edited.version, edited.name.as_str()),
        (Some(T0 + SEC), 2, "Edited")
    );
    // The next cycle brings changed content for both: B is updated, A (edited) is skipped.
    let claimed = pull::claim(db, "e1", T0 + 2 * SEC).await;
    let lease = pull::lease(&claimed[0], "e1");
    let totals = db
        .store
        .apply_source_page(
            &lease,
            &pull::page(
                vec![record(&c, "A", 2), record(&c, "B", 2)],
                "{}",
                T0 + 2 * SEC,
            ),
        )
        .await
        .unwrap();
    assert_eq!((totals.updated, totals.skipped), (1, 1));
    let r = db
        .store
        .finish_source_cycle(&lease, &pull::done(None), T0 + 2 * SEC, T0 + DAY)
        .await
        .unwrap();
    assert_eq!(r.skipped_items.len(), 1);
    assert_eq!(
        (
            r.skipped_items[0].id.as_str(),
            r.skipped_items[0].reason.as_str()
        ),
        ("A", "edited")
    );
    assert!(r.skipped_items[0].data.contains("population"));
    assert_eq!(get(db, &c, "A").await.unwrap().name, "Edited");
    assert!(matches!(
        db.store
            .edit_record(&pull::RecordEdit {
                key: "0".repeat(40),
                ..pull::RecordEdit {
                    key: String::new(),
                    name: "x".into(),
                    entity: "{}".into(),
                    instance: "{}".into(),
                    checksum: "c".into(),
                    now: T0
                }
            })
            .await,
        Err(Error::NotFound {
            kind: ResourceKind::Record,
            ..
        })
    ));
}

async fn cancel_reports_the_cycle_canceled(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let s = pull::source(&c);
    db.store.create_source(&s).await.unwrap();
    assert!(
        db.store
            .cancel_source(&s.id, T0, T0)
            .await
            .unwrap()
            .is_none(),
        "nothing to cancel"
    );
    let claimed = pull::claim(db, "e", T0).await;
    let lease = pull::lease(&claimed[0], "e");
    db.store
        .apply_source_page(
            &lease,
            &pull::page(vec![record(&c, "A", 1)], "{\"p\":2}", T0),
        )
        .await
        .unwrap();
    let r = db
        .store
        .cancel_source(&s.id, T0 + SEC, T0 + DAY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.status, r.totals.created, r.pages),
        (ImportStatus::Canceled, 1, 1)
    );
    assert!(
        db.store.release_source(&lease, T0).await.is_err(),
        "the holder's lease is gone"
    );
    let status = db.store.source_status(&s.id).await.unwrap();
    assert_eq!(
        (status.state, status.marks, status.cursor),
        (pull::SourceState::Idle, 0, None)
    );
}
