//! The storage conformance suite: every test body runs against SQLite and PostgreSQL.
//!
//! PostgreSQL tests need `TRIBUTARY_TEST_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1/test`);
//! without it they print a skip notice and pass.

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::collections::BTreeSet;
use tributary_core::checksum::{canonical_json, record_checksum};
use tributary_core::error::ResourceKind;
use tributary_core::ids::{new_connector_id, new_id, record_key};
use tributary_core::model::{
    Connector, Consumer, DigestState, EntityType, ImportItem, ImportStatus, Outcome, SessionMode,
    SessionTotals, StoredRecord, WritePolicy,
};
use tributary_core::record::PreparedRecord;
use tributary_core::store::{BatchResult, KeyedDigest, KeyedId, SessionCall};
use tributary_core::Error;
use tributary_store::testing::TestDb;

/// Logical time: tests pass explicit instants, one second apart.
const T0: i64 = 1_700_000_000_000_000;
const SEC: i64 = 1_000_000;
const DAY: i64 = 86_400 * SEC;

/// Generates a `#[tokio::test]` per backend for each test body `async fn name(db: &TestDb)`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = tributary_store::testing::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = tributary_store::testing::TestDb::postgres().await else { return };
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

conformance!(
    entity_type_crud_and_version_bump,
    entity_type_delete_refused_with_records_then_forced,
    connector_crud_and_tokens,
    delete_connector_rolls_back_its_sessions,
    consumers_with_grants,
    stream_upsert_outcomes,
    stream_supplied_checksum_is_used_as_is,
    stream_delete_outcomes,
    accrue_is_invisible_until_commit,
    accrue_rollback_discards,
    accrue_last_operation_wins,
    accrue_commit_writes_only_changed_rows,
    replace_sweeps_exactly_the_unstaged_records,
    replace_guard_refuses_then_force_commits,
    supersede_denies_the_old_session_and_discards_its_data,
    stream_sessions_are_never_superseded,
    foreign_unknown_and_closed_sessions_are_denied,
    idle_sessions_expire,
    create_only_policy_skips_changes,
    update_unless_edited_policy_skips_edited_records,
    import_results_are_listed_newest_first,
    record_reads,
    reopening_is_idempotent,
    concurrent_opens_leave_one_open_session,
    concurrent_stream_batches_all_apply,
    sequenced_batches_apply_once,
    sequenced_staged_batches_stage_once,
    applied_seq_survives_reopening,
    concurrent_resends_apply_once,
    diff_answers_new_changed_unchanged,
    replace_keeps_unchanged_digests,
    keep_digests_follow_last_operation_wins,
    digests_stage_nothing_outside_replace,
    resume_returns_the_last_seq_and_refuses_foreign_sessions,
    source_crud_and_status,
    deleting_a_connector_or_its_entity_type_clears_its_sources_cycle_rows,
    claims_are_exclusive_until_the_lease_expires,
    pages_mark_and_the_sweep_removes_exactly_the_unseen,
    sweep_guards_refuse_and_the_next_good_cycle_sweeps,
    a_lost_lease_refuses_every_write,
    failed_pages_back_off_and_the_last_failure_fails_the_cycle,
    write_policies_apply_to_pages_and_edits_are_kept,
    cancel_reports_the_cycle_canceled,
    change_log_records_every_visible_change_in_commit_order,
    pulled_pages_and_sweeps_are_in_the_change_log,
    bulk_deletions_are_logged,
    listings_report_the_sequence_of_their_snapshot,
    filters_compile_to_sql_with_the_same_results,
    pruning_moves_the_horizon,
    concurrent_writers_make_sequences_visible_without_gaps,
);

// ---------------------------------------------------------------------------------------------
// Helpers

/// Unwraps a batch's result: it must have succeeded and been applied.
trait AppliedOk<T> {
    fn applied_ok(self) -> T;
}

impl<T> AppliedOk<T> for tributary_core::Result<BatchResult<T>> {
    #[track_caller]
    fn applied_ok(self) -> T {
        match self {
            Ok(BatchResult::Applied(value)) => value,
            Ok(BatchResult::AlreadyApplied) => panic!("batch was already applied"),
            Err(e) => panic!("batch failed: {e}"),
        }
    }
}

fn entity_type(slug: &str, schema: Value) -> EntityType {
    EntityType {
        slug: slug.into(),
        name: format!("Type {slug}"),
        description: "for tests".into(),
        schema,
        schema_version: 1,
        created_at: T0,
        updated_at: T0,
    }
}

fn country_schema() -> Value {
    json!({"type": "object", "properties": {"population": {"type": "integer"}}})
}

/// A connector of `country` (created on first use) with `policy` and removal guard `guard`.
async fn connector(db: &TestDb, policy: WritePolicy, guard: Option<f64>) -> Connector {
    match db
        .store
        .create_entity_type(&entity_type("country", country_schema()))
        .await
    {
        Ok(()) | Err(Error::AlreadyExists { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    let c = Connector {
        id: new_connector_id(),
        name: "test connector".into(),
        entity_type: "country".into(),
        write_policy: policy,
        reject_removals_above_percent: guard,
        rate_limit: None,
        created_at: T0,
    };
    db.store
        .create_connector(&c, &format!("hash-{}", c.id))
        .await
        .unwrap();
    c
}

fn record(c: &Connector, id: &str, population: i64) -> PreparedRecord {
    let name = format!("Name {id}");
    let entity = canonical_json(&json!({"population": population})).unwrap();
    let instance = "{}".to_owned();
    let checksum = record_checksum(&name, &entity, &instance);
    PreparedRecord {
        id: id.into(),
        key: record_key(&c.entity_type, &c.id, id),
        name,
        entity,
        instance,
        checksum,
    }
}

fn key(c: &Connector, id: &str) -> String {
    record_key(&c.entity_type, &c.id, id)
}

fn keyed(c: &Connector, id: &str) -> KeyedId {
    KeyedId {
        id: id.into(),
        key: key(c, id),
    }
}

fn call<'a>(session: &'a str, c: &'a Connector, now: i64) -> SessionCall<'a> {
    SessionCall {
        session_id: session,
        connector: c,
        now,
        idle_cutoff: now - DAY,
        batch_seq: None,
    }
}

/// A streamed batch's call: `call` with a `batch_seq`.
fn seq_call<'a>(session: &'a str, c: &'a Connector, now: i64, seq: u64) -> SessionCall<'a> {
    SessionCall {
        batch_seq: Some(seq),
        ..call(session, c, now)
    }
}

/// The digest of `record(c, id, population)`.
fn digest(c: &Connector, id: &str, population: i64) -> KeyedDigest {
    let r = record(c, id, population);
    KeyedDigest {
        id: r.id,
        key: r.key,
        checksum: r.checksum,
    }
}

async fn open(db: &TestDb, c: &Connector, mode: SessionMode, now: i64) -> String {
    db.store
        .open_session(c, mode, now)
        .await
        .unwrap()
        .session
        .id
}

/// Writes `records` through a stream session at `now`.
async fn stream(db: &TestDb, c: &Connector, records: &[PreparedRecord], now: i64) -> Vec<Outcome> {
    let s = open(db, c, SessionMode::Stream, now).await;
    let outcomes = db
        .store
        .upsert_batch(&call(&s, c, now), records)
        .await
        .applied_ok();
    db.store
        .close_session(&call(&s, c, now), true, false)
        .await
        .unwrap();
    outcomes
}

async fn get(db: &TestDb, c: &Connector, id: &str) -> Option<StoredRecord> {
    db.store.get_record(&key(c, id)).await.unwrap()
}

/// The external ids of the connector's visible records.
async fn visible_ids(db: &TestDb, c: &Connector) -> BTreeSet<String> {
    let all = db
        .store
        .list_records(&c.entity_type, None, 10_000)
        .await
        .unwrap();
    all.into_iter()
        .filter(|r| r.connector == c.id)
        .map(|r| r.id)
        .collect()
}

fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn assert_denied<T: std::fmt::Debug>(result: Result<T, Error>) {
    match result {
        Err(Error::PermissionDenied(message)) => {
            assert!(message.contains("not an open session"), "{message}")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

fn totals(
    created: u64,
    updated: u64,
    unchanged: u64,
    deleted: u64,
    swept: u64,
    skipped: u64,
) -> SessionTotals {
    SessionTotals {
        created,
        updated,
        unchanged,
        deleted,
        swept,
        skipped,
    }
}

// ---------------------------------------------------------------------------------------------
// Entity types, connectors, consumers

async fn entity_type_crud_and_version_bump(db: &TestDb) {
    let store = &db.store;
    let country = entity_type("country", country_schema());
    store.create_entity_type(&country).await.unwrap();
    assert!(matches!(
        store.create_entity_type(&country).await,
        Err(Error::AlreadyExists {
            kind: ResourceKind::EntityType,
            ..
        })
    ));
    assert_eq!(store.get_entity_type("country").await.unwrap(), country);
    assert!(matches!(
        store.get_entity_type("nope").await,
        Err(Error::NotFound {
            kind: ResourceKind::EntityType,
            ..
        })
    ));
    for slug in ["city", "airport", "river"] {
        store
            .create_entity_type(&entity_type(slug, json!({"type": "object"})))
            .await
            .unwrap();
    }
    let page = store.list_entity_types(None, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|t| t.slug.as_str()).collect::<Vec<_>>(),
        ["airport", "city"]
    );
    let page = store.list_entity_types(Some("city"), 10).await.unwrap();
    assert_eq!(
        page.iter().map(|t| t.slug.as_str()).collect::<Vec<_>>(),
        ["country", "river"]
    );

    // Name only: the version stays; created_at is kept whatever the caller sends.
    let renamed = EntityType {
        name: "Countries".into(),
        created_at: 5,
        ..country.clone()
    };
    let stored = store.update_entity_type(&renamed, T0 + SEC).await.unwrap();
    assert_eq!(
        (stored.schema_version, stored.name.as_str()),
        (1, "Countries")
    );
    assert_eq!((stored.created_at, stored.updated_at), (T0, T0 + SEC));
    // The same schema with another key order is not a change.
    let reordered = json!({"properties": {"population": {"type": "integer"}}, "type": "object"});
    let stored = store
        .update_entity_type(
            &EntityType {
                schema: reordered,
                ..renamed.clone()
            },
            T0 + 2 * SEC,
        )
        .await
        .unwrap();
    assert_eq!(stored.schema_version, 1);
    let changed = json!({"type": "object", "required": ["population"]});
    let stored = store
        .update_entity_type(
            &EntityType {
                schema: changed.clone(),
                ..renamed
            },
            T0 + 3 * SEC,
        )
        .await
        .unwrap();
    assert_eq!((stored.schema_version, &stored.schema), (2, &changed));
    assert_eq!(store.get_entity_type("country").await.unwrap(), stored);
    assert!(matches!(
        store
            .update_entity_type(&entity_type("nope", json!({})), T0)
            .await,
        Err(Error::NotFound {
            kind: ResourceKind::EntityType,
            ..
        })
    ));

    store.delete_entity_type("river", false).await.unwrap();
    assert!(matches!(
        store.get_entity_type("river").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.delete_entity_type("river", false).await,
        Err(Error::NotFound {
            kind: ResourceKind::EntityType,
            ..
        })
    ));
}

async fn entity_type_delete_refused_with_records_then_forced(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "GB", 1), record(&c, "FR", 2)], T0).await;
    let staged = open(db, &c, SessionMode::Accrue, T0).await;
    db.store
        .upsert_batch(&call(&staged, &c, T0), &[record(&c, "DE", 3)])
        .await
        .applied_ok();

    match db.store.delete_entity_type("country", false).await {
        Err(Error::FailedPrecondition {
            reason, metadata, ..
        }) => {
            assert_eq!(reason, "ENTITY_TYPE_HAS_RECORDS");
            assert!(
                metadata.contains(&("records".to_owned(), "2".to_owned())),
                "{metadata:?}"
            );
        }
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
    assert_eq!(db.store.count_records("country").await.unwrap(), 2);

    db.store.delete_entity_type("country", true).await.unwrap();
    assert!(matches!(
        db.store.get_entity_type("country").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        db.store.get_connector(&c.id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(db.store.count_records("country").await.unwrap(), 0);
    assert!(db
        .store
        .connector_by_token(&format!("hash-{}", c.id))
        .await
        .unwrap()
        .is_none());
    assert_denied(
        db.store
            .upsert_batch(&call(&staged, &c, T0), &[record(&c, "DE", 3)])
            .await,
    );

    // A type with a connector but no records is refused too.
    let c = connector(db, WritePolicy::Importer, None).await;
    assert!(matches!(
        db.store.delete_entity_type("country", false).await,
        Err(Error::FailedPrecondition { .. })
    ));
    db.store.delete_entity_type("country", true).await.unwrap();
    assert!(matches!(
        db.store.get_connector(&c.id).await,
        Err(Error::NotFound { .. })
    ));
}

async fn connector_crud_and_tokens(db: &TestDb) {
    let store = &db.store;
    let orphan = Connector {
        id: new_connector_id(),
        name: "orphan".into(),
        entity_type: "nope".into(),
        write_policy: WritePolicy::Importer,
        reject_removals_above_percent: None,
        rate_limit: None,
        created_at: T0,
    };
    assert!(matches!(
        store.create_connector(&orphan, "h0").await,
        Err(Error::NotFound {
            kind: ResourceKind::EntityType,
            ..
        })
    ));

    let a = connector(db, WritePolicy::Importer, None).await;
    let b = connector(db, WritePolicy::ImporterCreateOnly, Some(12.5)).await;
    assert!(matches!(
        store.create_connector(&a, "another-hash").await,
        Err(Error::AlreadyExists {
            kind: ResourceKind::Connector,
            ..
        })
    ));
    assert_eq!(store.get_connector(&a.id).await.unwrap(), a);
    assert_eq!(store.get_connector(&b.id).await.unwrap(), b);
    assert!(matches!(
        store.get_connector("missing").await,
        Err(Error::NotFound {
            kind: ResourceKind::Connector,
            ..
        })
    ));

    let mut sorted = vec![a.clone(), b.clone()];
    sorted.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(store.list_connectors(None, 10).await.unwrap(), sorted);
    assert_eq!(store.list_connectors(None, 1).await.unwrap(), sorted[..1]);
    assert_eq!(
        store
            .list_connectors(Some(&sorted[0].id), 10)
            .await
            .unwrap(),
        sorted[1..]
    );

    let updated = Connector {
        name: "renamed".into(),
        write_policy: WritePolicy::ImporterUpdateUnlessEdited,
        reject_removals_above_percent: Some(10.0),
        rate_limit: Some(500),
        ..a.clone()
    };
    assert_eq!(store.update_connector(&updated).await.unwrap(), updated);
    assert_eq!(store.get_connector(&a.id).await.unwrap(), updated);
    assert!(matches!(
        store.update_connector(&orphan).await,
        Err(Error::NotFound { .. })
    ));

    let (found, version) = store
        .connector_by_token(&format!("hash-{}", a.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found, version), (updated.clone(), 1));
    assert!(store.connector_by_token("unknown").await.unwrap().is_none());

    store.set_connector_token(&a.id, "new-hash").await.unwrap();
    assert!(store
        .connector_by_token(&format!("hash-{}", a.id))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .connector_by_token("new-hash")
            .await
            .unwrap()
            .unwrap()
            .0
            .id,
        a.id
    );
    assert!(matches!(
        store.set_connector_token("missing", "x").await,
        Err(Error::NotFound { .. })
    ));

    // Records outlive their connector unless asked otherwise.
    stream(db, &a, &[record(&a, "GB", 1), record(&a, "FR", 2)], T0).await;
    stream(db, &b, &[record(&b, "GB", 1)], T0).await;
    assert_eq!(store.delete_connector(&a.id, false).await.unwrap(), 0);
    assert_eq!(visible_ids(db, &a).await, ids(&["FR", "GB"]));
    assert_eq!(store.delete_connector(&b.id, true).await.unwrap(), 1);
    assert_eq!(visible_ids(db, &b).await, ids(&[]));
    assert!(matches!(
        store.delete_connector(&b.id, true).await,
        Err(Error::NotFound {
            kind: ResourceKind::Connector,
            ..
        })
    ));
}

async fn delete_connector_rolls_back_its_sessions(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "GB", 1)], T0).await;
    let staged = open(db, &c, SessionMode::Replace, T0).await;
    let live = open(db, &c, SessionMode::Stream, T0).await;
    db.store
        .upsert_batch(&call(&staged, &c, T0), &[record(&c, "FR", 1)])
        .await
        .applied_ok();
    assert_eq!(db.store.delete_connector(&c.id, false).await.unwrap(), 0);
    assert_denied(
        db.store
            .close_session(&call(&staged, &c, T0), true, false)
            .await,
    );
    assert_denied(
        db.store
            .upsert_batch(&call(&live, &c, T0), &[record(&c, "FR", 1)])
            .await,
    );
    assert_eq!(visible_ids(db, &c).await, ids(&["GB"]));
}

async fn consumers_with_grants(db: &TestDb) {
    let store = &db.store;
    for slug in ["country", "city"] {
        store
            .create_entity_type(&entity_type(slug, json!({"type": "object"})))
            .await
            .unwrap();
    }
    let consumer = |id: &str, types: &[&str]| Consumer {
        id: id.into(),
        name: format!("consumer {id}"),
        entity_types: types.iter().map(|t| (*t).to_owned()).collect(),
        created_at: T0,
    };
    match store
        .create_consumer(&consumer("x", &["country", "nope"]), "hx")
        .await
    {
        Err(Error::NotFound {
            kind: ResourceKind::EntityType,
            id,
        }) => assert_eq!(id, "nope"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        store.get_consumer("x").await,
        Err(Error::NotFound {
            kind: ResourceKind::Consumer,
            ..
        })
    ));

    let a = consumer("a", &["city", "country"]);
    let b = consumer("b", &[]);
    store.create_consumer(&a, "ha").await.unwrap();
    store.create_consumer(&b, "hb").await.unwrap();
    assert!(matches!(
        store.create_consumer(&a, "other").await,
        Err(Error::AlreadyExists {
            kind: ResourceKind::Consumer,
            ..
        })
    ));
    assert_eq!(store.get_consumer("a").await.unwrap(), a);
    assert_eq!(
        store.consumer_by_token("ha").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.consumer_by_token("hb").await.unwrap(),
        Some(b.clone())
    );
    assert_eq!(store.consumer_by_token("nope").await.unwrap(), None);
    assert_eq!(
        store.list_consumers(None, 10).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(
        store.list_consumers(Some("a"), 10).await.unwrap(),
        vec![b.clone()]
    );

    // Deleting an entity type withdraws its grants.
    store.delete_entity_type("city", false).await.unwrap();
    assert_eq!(
        store.get_consumer("a").await.unwrap().entity_types,
        ["country"]
    );

    store.delete_consumer("a").await.unwrap();
    assert!(matches!(
        store.delete_consumer("a").await,
        Err(Error::NotFound {
            kind: ResourceKind::Consumer,
            ..
        })
    ));
    assert_eq!(store.consumer_by_token("ha").await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Stream sessions

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
        .list_import_results(None, None, 10)
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
        .get_import_result(&closed.import_result_id.unwrap())
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
    assert_denied(
        db.store
            .close_session(&call(&s, &c, T0 + 3 * SEC), true, false)
            .await,
    );
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
        .list_import_results(Some(&c.id), None, 10)
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
        .list_import_results(Some(&c.id), None, 10)
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

// ---------------------------------------------------------------------------------------------
// Write policies

async fn create_only_policy_skips_changes(db: &TestDb) {
    let c = connector(db, WritePolicy::ImporterCreateOnly, None).await;
    stream(db, &c, &[record(&c, "A", 1), record(&c, "B", 1)], T0).await;
    let outcomes = stream(
        db,
        &c,
        &[record(&c, "A", 2), record(&c, "B", 1), record(&c, "C", 1)],
        T0 + SEC,
    )
    .await;
    assert_eq!(
        outcomes,
        [Outcome::Skipped, Outcome::Unchanged, Outcome::Created]
    );
    let a = get(db, &c, "A").await.unwrap();
    assert_eq!(
        (a.version, a.checksum.as_str()),
        (1, record(&c, "A", 1).checksum.as_str())
    );

    for mode in [SessionMode::Accrue, SessionMode::Replace] {
        let s = open(db, &c, mode, T0 + 2 * SEC).await;
        let outcomes = db
            .store
            .upsert_batch(
                &call(&s, &c, T0 + 2 * SEC),
                &[record(&c, "A", 3), record(&c, "B", 1), record(&c, "C", 1)],
            )
            .await
            .applied_ok();
        assert_eq!(
            outcomes,
            [Outcome::Skipped, Outcome::Unchanged, Outcome::Unchanged]
        );
        let closed = db
            .store
            .close_session(&call(&s, &c, T0 + 3 * SEC), true, false)
            .await
            .unwrap();
        assert_eq!(closed.totals, totals(0, 0, 2, 0, 0, 1));
        assert_eq!(get(db, &c, "A").await.unwrap().version, 1);
        assert_eq!(
            visible_ids(db, &c).await,
            ids(&["A", "B", "C"]),
            "skipped records are not swept"
        );
    }
}

async fn update_unless_edited_policy_skips_edited_records(db: &TestDb) {
    let c = connector(db, WritePolicy::ImporterUpdateUnlessEdited, None).await;
    stream(
        db,
        &c,
        &[record(&c, "A", 1), record(&c, "B", 1), record(&c, "C", 1)],
        T0,
    )
    .await;
    db.set_edited_at(&key(&c, "A"), Some(T0 + SEC)).await;
    let outcomes = stream(
        db,
        &c,
        &[record(&c, "A", 2), record(&c, "B", 2), record(&c, "A", 1)],
        T0 + 2 * SEC,
    )
    .await;
    assert_eq!(
        outcomes,
        [Outcome::Skipped, Outcome::Updated, Outcome::Unchanged]
    );
    let a = get(db, &c, "A").await.unwrap();
    assert_eq!((a.version, a.edited_at), (1, Some(T0 + SEC)));
    assert_eq!(get(db, &c, "B").await.unwrap().version, 2);

    let s = open(db, &c, SessionMode::Accrue, T0 + 3 * SEC).await;
    let outcomes = db
        .store
        .upsert_batch(
            &call(&s, &c, T0 + 3 * SEC),
            &[record(&c, "A", 5), record(&c, "C", 5)],
        )
        .await
        .applied_ok();
    assert_eq!(outcomes, [Outcome::Skipped, Outcome::Updated]);
    let closed = db
        .store
        .close_session(&call(&s, &c, T0 + 4 * SEC), true, false)
        .await
        .unwrap();
    assert_eq!(closed.totals, totals(0, 1, 0, 0, 0, 1));
    assert_eq!(get(db, &c, "A").await.unwrap().version, 1);
    assert_eq!(get(db, &c, "C").await.unwrap().version, 2);

    // Importer policy overwrites edited records.
    let importer = Connector {
        write_policy: WritePolicy::Importer,
        ..c.clone()
    };
    assert_eq!(
        stream(db, &importer, &[record(&c, "A", 7)], T0 + 5 * SEC).await,
        [Outcome::Updated]
    );
}

// ---------------------------------------------------------------------------------------------
// Import results and reads

async fn import_results_are_listed_newest_first(db: &TestDb) {
    let a = connector(db, WritePolicy::Importer, None).await;
    let b = connector(db, WritePolicy::Importer, None).await;
    let mut expected = Vec::new();
    for i in 0..5 {
        let c = if i % 2 == 0 { &a } else { &b };
        let s = open(db, c, SessionMode::Accrue, T0 + i * SEC).await;
        db.store
            .upsert_batch(
                &call(&s, c, T0 + i * SEC),
                &[record(c, &format!("R{i}"), i)],
            )
            .await
            .applied_ok();
        let commit = i != 3;
        let closed = db
            .store
            .close_session(&call(&s, c, T0 + 10 * SEC + i * SEC), commit, false)
            .await
            .unwrap();
        expected.push((closed.import_result_id.unwrap(), c.id.clone(), commit));
    }
    expected.reverse();
    let all = db.store.list_import_results(None, None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        expected.iter().map(|e| e.0.clone()).collect::<Vec<_>>()
    );
    for (result, (_, connector, commit)) in all.iter().zip(&expected) {
        assert_eq!(&result.connector, connector);
        let status = if *commit {
            ImportStatus::Succeeded
        } else {
            ImportStatus::Canceled
        };
        assert_eq!(result.status, status);
        assert_eq!(result.totals.created, u64::from(*commit));
    }

    // Paging: two at a time, continuing after the last id of the previous page.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = db
            .store
            .list_import_results(None, after.as_deref(), 2)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page[page.len() - 1].id.clone());
        paged.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(paged, all.iter().map(|r| r.id.clone()).collect::<Vec<_>>());

    let of_b = db
        .store
        .list_import_results(Some(&b.id), None, 10)
        .await
        .unwrap();
    assert_eq!(of_b.len(), 2);
    assert!(of_b.iter().all(|r| r.connector == b.id));
    assert!(of_b[0].ended_at > of_b[1].ended_at);
    let rest = db
        .store
        .list_import_results(Some(&a.id), Some(&all[0].id), 10)
        .await
        .unwrap();
    assert_eq!(
        rest.len(),
        2,
        "continues after a result by its position, whatever its connector"
    );

    assert!(matches!(
        db.store.get_import_result(&new_id()).await,
        Err(Error::NotFound {
            kind: ResourceKind::ImportResult,
            ..
        })
    ));
}

async fn record_reads(db: &TestDb) {
    let a = connector(db, WritePolicy::Importer, None).await;
    let b = connector(db, WritePolicy::Importer, None).await;
    stream(
        db,
        &a,
        &[
            record(&a, "GB", 1),
            record(&a, "FR", 2),
            record(&a, "DE", 3),
        ],
        T0,
    )
    .await;
    stream(db, &b, &[record(&b, "GB", 4)], T0).await;
    assert_eq!(db.store.count_records("country").await.unwrap(), 4);
    assert_eq!(db.store.count_records("city").await.unwrap(), 0);

    let keys = vec![key(&a, "GB"), key(&b, "GB"), key(&a, "XX")];
    let found: BTreeSet<_> = db
        .store
        .get_records(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(found, keys[..2].iter().cloned().collect());
    assert!(db.store.get_records(&[]).await.unwrap().is_empty());

    let mut all_keys: Vec<String> = ["GB", "FR", "DE"]
        .iter()
        .map(|id| key(&a, id))
        .chain([key(&b, "GB")])
        .collect();
    all_keys.sort();
    let first = db.store.list_records("country", None, 3).await.unwrap();
    assert_eq!(
        first.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
        all_keys[..3]
    );
    let rest = db
        .store
        .list_records("country", Some(&first[2].key), 3)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
        all_keys[3..]
    );

    let gb_ids = vec!["GB".to_owned(), "NOPE".to_owned()];
    let by_id = db
        .store
        .lookup_records("country", &gb_ids, None)
        .await
        .unwrap();
    assert_eq!(
        by_id
            .iter()
            .map(|r| r.connector.clone())
            .collect::<BTreeSet<_>>(),
        [a.id.clone(), b.id.clone()].into()
    );
    let by_id = db
        .store
        .lookup_records("country", &gb_ids, Some(&b.id))
        .await
        .unwrap();
    assert_eq!(by_id.len(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(&by_id[0].entity).unwrap(),
        json!({"population": 4})
    );
    assert!(db
        .store
        .lookup_records("city", &gb_ids, None)
        .await
        .unwrap()
        .is_empty());
}

async fn reopening_is_idempotent(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    stream(db, &c, &[record(&c, "GB", 1)], T0).await;
    let again = tributary_store::open(&db.url).await.unwrap();
    assert_eq!(again.count_records("country").await.unwrap(), 1);
}

async fn concurrent_opens_leave_one_open_session(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let opened = futures::future::join_all(
        (0..8).map(|i| db.store.open_session(&c, SessionMode::Accrue, T0 + i)),
    )
    .await;
    let ids: Vec<String> = opened.into_iter().map(|o| o.unwrap().session.id).collect();
    let mut accepted = 0;
    for id in &ids {
        if db
            .store
            .upsert_batch(&call(id, &c, T0 + SEC), &[record(&c, "A", 1)])
            .await
            .is_ok()
        {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1, "exactly one accrue session stays open");
    let canceled = db
        .store
        .list_import_results(Some(&c.id), None, 100)
        .await
        .unwrap();
    assert_eq!(canceled.len(), 7);
}

async fn concurrent_stream_batches_all_apply(db: &TestDb) {
    let c = connector(db, WritePolicy::Importer, None).await;
    let sessions =
        futures::future::join_all((0..4).map(|_| open(db, &c, SessionMode::Stream, T0))).await;
    // Overlapping keys in different orders from every session.
    let batches = sessions.iter().enumerate().map(|(n, s)| {
        let mut records: Vec<_> = (0..50)
            .map(|i| record(&c, &format!("R{i}"), n as i64))
            .collect();
        if n % 2 == 1 {
            records.reverse();
        }
        let c = c.clone();
        async move {
            db.store
                .upsert_batch(&call(s, &c, T0 + SEC), &records)
                .await
        }
    });
    for result in futures::future::join_all(batches).await {
        assert_eq!(result.applied_ok().len(), 50);
    }
    assert_eq!(db.store.count_records("country").await.unwrap(), 50);
}

// ---------------------------------------------------------------------------------------------
// Concurrent migrations: several replicas starting at once on one fresh database.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_opens_of_a_fresh_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("fresh.db").display());
    let opened = futures::future::join_all((0..4).map(|_| tributary_store::open(&url))).await;
    for store in opened {
        assert_eq!(store.unwrap().count_records("country").await.unwrap(), 0);
    }
}

#[tokio::test]
async fn sqlite_in_memory_database_works() {
    let store = tributary_store::open("sqlite::memory:").await.unwrap();
    store
        .create_entity_type(&entity_type("country", country_schema()))
        .await
        .unwrap();
    assert_eq!(store.list_entity_types(None, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_migrations_on_a_fresh_database() {
    use sqlx::Connection;
    let Ok(server) = std::env::var(tributary_store::testing::DATABASE_URL_VAR) else {
        eprintln!("skipping PostgreSQL test: TRIBUTARY_TEST_DATABASE_URL is not set");
        return;
    };
    let name = format!("tributary_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .expect("TRIBUTARY_TEST_DATABASE_URL is unreachable");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(&server).unwrap();
    url.set_path(&format!("/{name}"));
    let url = url.to_string();

    let opened = futures::future::join_all((0..4).map(|_| tributary_store::open(&url))).await;
    let stores: Vec<_> = opened.into_iter().map(|s| s.unwrap()).collect();
    for store in &stores {
        assert_eq!(store.count_records("country").await.unwrap(), 0);
    }
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM tributary_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(versions, [1, 2, 3, 10]);
    drop(conn);
    drop(stores);
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Streaming (§2.3): sequenced batches apply exactly once.

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
    // The keep rows went with the session.
    assert_eq!(
        db.execute_sql("DELETE FROM staged_records WHERE op = 'keep'")
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
    assert_eq!(db.execute_sql("UPDATE staged_records SET op = op").await, 0);
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

// ---------------------------------------------------------------------------------------------
// Pull sources (SPEC.md §5)

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
// The change log and listings (issue 4)

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
    let mut after = 0;
    while after < total {
        let page = db.store.read_changes("country", after, 1000).await.unwrap();
        for change in &page.changes {
            assert_eq!(change.sequence, after + 1, "a gap after {after}");
            after = change.sequence;
        }
        if page.changes.is_empty() {
            tokio::task::yield_now().await;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
}
