//! Entity types, connectors, consumers (SPEC.md §4.1, §4.2), write policies (§4.4), import
//! results (§6) and record reads.

use super::support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use tributary_core::error::ResourceKind;
use tributary_core::ids::{new_connector_id, new_id};
use tributary_core::model::{
    Connector, Consumer, EntityType, ImportStatus, Outcome, SessionMode, WritePolicy,
};
use tributary_core::Error;
use tributary_store::testing::TestDb;

conformance!(
    entity_type_crud_and_version_bump,
    entity_type_delete_refused_with_records_then_forced,
    connector_crud_and_tokens,
    delete_connector_rolls_back_its_sessions,
    consumers_with_grants,
    create_only_policy_skips_changes,
    update_unless_edited_policy_skips_edited_records,
    import_results_are_listed_newest_first,
    record_reads,
    reopening_is_idempotent,
    concurrent_opens_leave_one_open_session,
    concurrent_stream_batches_all_apply,
);

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
    let all = db
        .store
        .list_import_results(&ImportResultFilter::default(), None, 10)
        .await
        .unwrap();
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
            .list_import_results(&ImportResultFilter::default(), after.as_deref(), 2)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page[page.len() - 1].id.clone());
        paged.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(paged, all.iter().map(|r| r.id.clone()).collect::<Vec<_>>());

    // Status and connector filters combine; a source filter admits only that source's cycles.
    let canceled = db
        .store
        .list_import_results(
            &ImportResultFilter {
                status: Some(ImportStatus::Canceled),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    let expected_canceled: Vec<&String> = expected.iter().filter(|e| !e.2).map(|e| &e.0).collect();
    assert_eq!(
        canceled.iter().map(|r| &r.id).collect::<Vec<_>>(),
        expected_canceled
    );
    for connector in [&a.id, &b.id] {
        let succeeded = db
            .store
            .list_import_results(
                &ImportResultFilter {
                    status: Some(ImportStatus::Succeeded),
                    ..of_connector(connector)
                },
                None,
                10,
            )
            .await
            .unwrap();
        let want: Vec<&String> = expected
            .iter()
            .filter(|e| e.2 && &e.1 == connector)
            .map(|e| &e.0)
            .collect();
        assert_eq!(succeeded.iter().map(|r| &r.id).collect::<Vec<_>>(), want);
    }
    let of_a_source = db
        .store
        .list_import_results(
            &ImportResultFilter {
                source: Some("no such source"),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert!(of_a_source.is_empty(), "push sessions have no source");

    let of_b = db
        .store
        .list_import_results(&of_connector(&b.id), None, 10)
        .await
        .unwrap();
    assert_eq!(of_b.len(), 2);
    assert!(of_b.iter().all(|r| r.connector == b.id));
    assert!(of_b[0].ended_at > of_b[1].ended_at);
    let rest = db
        .store
        .list_import_results(&of_connector(&a.id), Some(&all[0].id), 10)
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
        .list_import_results(&of_connector(&c.id), None, 100)
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
