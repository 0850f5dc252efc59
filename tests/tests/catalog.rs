//! SPEC.md §3 over real gRPC: the filter language, `order_by` and keyset paging under
//! concurrent writes, page sizes, `Watch` (list-then-watch, resume, retention, shutdown),
//! `GetEntityType`, `LookupByExternalIds`, `GetRecord` keys, and consumer grants. PostgreSQL also runs the contributor and the consumer as two separate processes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;
use tonic::{Code, Streaming};
use tributary_proto::admin::v1 as admin;
use tributary_proto::catalog::v1 as catalog;
use tributary_proto::catalog::v1::watch_response::Event;
use tributary_proto::contribution::v1 as contribution;
use tributary_proto::contribution::v1::SessionMode;
use tributary_tests::{
    assert_not_found, bad_request_fields, country, json_struct, on_both_backends, wait_until,
    CatalogClient, Sandbox, World,
};

/// How long a test waits for an event it expects.
const WAIT: Duration = Duration::from_secs(30);

/// A `thing` entity type with a permissive schema, a connector and a consumer granted it.
async fn thing_world(sandbox: &Sandbox) -> World {
    sandbox
        .admin()
        .create_entity_type(admin::CreateEntityTypeRequest {
            entity_type: Some(admin::EntityType {
                slug: "thing".into(),
                name: "Thing".into(),
                description: "anything".into(),
                schema: Some(json_struct(json!({"type": "object"}))),
                ..Default::default()
            }),
        })
        .await
        .expect("create entity type");
    let (connector, token) = sandbox.create_connector("thing", |_| {}).await;
    let reader_token = sandbox.create_consumer(&["thing"]).await;
    World {
        connector,
        contributor: sandbox.contributor(&token),
        reader: sandbox.reader(&reader_token),
        token,
    }
}

fn thing(id: &str, entity: serde_json::Value, instance: serde_json::Value) -> contribution::Record {
    contribution::Record {
        id: id.into(),
        name: format!("Thing {id}"),
        entity: Some(json_struct(entity)),
        instance: Some(json_struct(instance)),
        checksum: String::new(),
    }
}

/// Upserts `records` through a fresh stream session (visible at once).
async fn stream(w: &mut World, records: Vec<contribution::Record>) {
    let session = w.open(SessionMode::Stream).await;
    for chunk in records.chunks(1000) {
        w.upsert(&session, chunk.to_vec()).await.expect("upsert");
    }
}

/// One ListRecords call.
async fn list(
    reader: &mut CatalogClient,
    entity_type: &str,
    filter: &str,
    order_by: &str,
    page_size: i32,
    page_token: &str,
) -> Result<catalog::ListRecordsResponse, tonic::Status> {
    reader
        .list_records(catalog::ListRecordsRequest {
            entity_type: entity_type.into(),
            filter: filter.into(),
            order_by: order_by.into(),
            page_size,
            page_token: page_token.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// The ids of every record matching `filter`, in listing order, paging 2 at a time.
async fn ids_of(reader: &mut CatalogClient, filter: &str, order_by: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(reader, "thing", filter, order_by, 2, &token)
            .await
            .unwrap_or_else(|s| panic!("filter {filter} order {order_by}: {s}"));
        ids.extend(page.records.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Five things with numbers, strings, arrays, nesting, booleans and nulls in different places.
async fn five_things(w: &mut World) {
    stream(
        w,
        vec![
            thing(
                "a",
                json!({"n": 1, "s": "apple", "tags": ["x", "y"], "nested": {"deep": {"v": 10}}, "flag": true}),
                json!({"src": "one"}),
            ),
            thing(
                "b",
                json!({"n": 2.5, "s": "banana", "tags": ["y"], "nested": {"deep": {"v": 20}}, "flag": false}),
                json!({"src": "two"}),
            ),
            thing(
                "c",
                json!({"n": "3", "s": "cherry", "nested": {"deep": {"v": "30"}}, "nul": null}),
                json!({}),
            ),
            thing(
                "d",
                json!({"n": 10, "s": "Apple pie", "tags": [], "nested": {}}),
                json!({}),
            ),
            thing("e", json!({"s": "date"}), json!({})),
        ],
    )
    .await;
}

async fn every_filter_operator_is_compiled_to_sql(sandbox: &Sandbox) {
    let mut w = thing_world(sandbox).await;
    five_things(&mut w).await;
    let connector = w.connector.clone();
    let cases: Vec<(String, &[&str])> = vec![
        (r#"{"entity.n": 1}"#.into(), &["a"]),
        (r#"{"entity.n": {"$eq": 2.5}}"#.into(), &["b"]),
        // Numbers compare as numbers and never match strings, and the other way round.
        (r#"{"entity.n": {"$gt": 2}}"#.into(), &["b", "d"]),
        (r#"{"entity.n": {"$gte": 1, "$lt": 10}}"#.into(), &["a", "b"]),
        (r#"{"entity.n": {"$lte": 1}}"#.into(), &["a"]),
        (r#"{"entity.n": "3"}"#.into(), &["c"]),
        (r#"{"entity.n": 3}"#.into(), &[]),
        (r#"{"entity.n": {"$ne": 1}}"#.into(), &["b", "c", "d", "e"]),
        (r#"{"entity.n": {"$in": [1, 10, "3"]}}"#.into(), &["a", "c", "d"]),
        (r#"{"entity.n": {"$nin": [1, 10]}}"#.into(), &["b", "c", "e"]),
        (r#"{"entity.n": {"$exists": false}}"#.into(), &["e"]),
        (r#"{"entity.nul": {"$exists": true}}"#.into(), &["c"]),
        (r#"{"entity.nul": null}"#.into(), &["a", "b", "c", "d", "e"]),
        (r#"{"entity.s": {"$gt": "b"}}"#.into(), &["b", "c", "e"]),
        (r#"{"entity.s": {"$regex": "^[Aa]pple"}}"#.into(), &["a", "d"]),
        (r#"{"entity.s": {"$contains": "an"}}"#.into(), &["b"]),
        (r#"{"entity.tags": {"$contains": "y"}}"#.into(), &["a", "b"]),
        // Nested paths, typed.
        (r#"{"entity.nested.deep.v": {"$gte": 20}}"#.into(), &["b"]),
        (r#"{"entity.nested.deep.v": {"$exists": true}}"#.into(), &["a", "b", "c"]),
        (r#"{"entity.flag": true}"#.into(), &["a"]),
        (r#"{"entity.flag": false}"#.into(), &["b"]),
        (r#"{"instance.src": "one"}"#.into(), &["a"]),
        // Combinations.
        (r#"{"$or": [{"entity.n": 1}, {"entity.s": "date"}]}"#.into(), &["a", "e"]),
        (r#"{"$not": {"entity.tags": {"$contains": "y"}}}"#.into(), &["c", "d", "e"]),
        (r#"{"entity.n": {"$not": {"$gt": 2}}}"#.into(), &["a", "c", "e"]),
        (
            r#"{"$and": [{"$or": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}, {"$not": {"entity.flag": true}}]}"#.into(),
            &["b", "c"],
        ),
        (r#"{"id": {"$in": ["a", "b"]}, "entity.flag": false}"#.into(), &["b"]),
        // Columns.
        (r#"{"id": {"$gt": "c"}}"#.into(), &["d", "e"]),
        (r#"{"name": {"$regex": "^Thing [ab]$"}}"#.into(), &["a", "b"]),
        (r#"{"name": {"$contains": "ing e"}}"#.into(), &["e"]),
        (format!(r#"{{"connector": "{connector}"}}"#), &["a", "b", "c", "d", "e"]),
        (r#"{"connector": {"$ne": "nobody"}}"#.into(), &["a", "b", "c", "d", "e"]),
        (r#"{"updated_at": {"$gte": "2000-01-01T00:00:00Z"}}"#.into(), &["a", "b", "c", "d", "e"]),
        (r#"{"updated_at": {"$lt": 946684800000000}}"#.into(), &[]),
    ];
    for (filter, expected) in cases {
        let got = sorted(ids_of(&mut w.reader, &filter, "").await);
        let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, expected, "filter {filter}");
    }
}

async fn order_by_pages_in_a_total_order(sandbox: &Sandbox) {
    let mut w = thing_world(sandbox).await;
    five_things(&mut w).await;
    // Absent first, then numbers by value, then strings; descending reverses it.
    assert_eq!(
        ids_of(&mut w.reader, "", "entity.n desc, id").await,
        ["c", "d", "b", "a", "e"]
    );
    assert_eq!(
        ids_of(&mut w.reader, "", "entity.n").await,
        ["e", "a", "b", "d", "c"]
    );
    assert_eq!(
        ids_of(&mut w.reader, "", "entity.s").await,
        ["d", "a", "b", "c", "e"]
    );
    assert_eq!(
        ids_of(&mut w.reader, "", "id desc").await,
        ["e", "d", "c", "b", "a"]
    );
    assert_eq!(
        ids_of(
            &mut w.reader,
            r#"{"entity.n": {"$exists": true}}"#,
            "name desc"
        )
        .await,
        ["d", "c", "b", "a"]
    );
    // Ties (every updated_at of one batch is equal) are broken by key: a total order.
    let by_time = ids_of(&mut w.reader, "", "updated_at").await;
    assert_eq!(sorted(by_time.clone()), ["a", "b", "c", "d", "e"]);
    assert_eq!(by_time.len(), 5, "no record repeated across pages");
}

async fn malformed_filters_orders_and_tokens_are_invalid_argument(sandbox: &Sandbox) {
    let mut w = thing_world(sandbox).await;
    five_things(&mut w).await;
    let cases = [
        (r#"{"entity.n": {"$gtt": 1}}"#, "", "filter.entity.n.$gtt"),
        (r#"{"$nor": [{"id": "a"}]}"#, "", "filter.$nor"),
        (r#"{"population": 1}"#, "", "filter.population"),
        (r#"{"entity.a'b": 1}"#, "", "filter.entity.a'b"),
        (r#"{"id": 5}"#, "", "filter.id"),
        (
            r#"{"entity.s": {"$regex": "("}}"#,
            "",
            "filter.entity.s.$regex",
        ),
        (r#"{"entity.n": {"$in": 1}}"#, "", "filter.entity.n.$in"),
        ("{not json", "", "filter"),
        ("[1, 2]", "", "filter"),
        ("", "entity.n sideways", "order_by[0]"),
        ("", "colour", "order_by[0]"),
    ];
    for (filter, order_by, field) in cases {
        let status = list(&mut w.reader, "thing", filter, order_by, 10, "")
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{filter} {order_by}: {status:?}"
        );
        let fields = bad_request_fields(&status);
        assert!(
            fields.iter().any(|(f, _)| f == field),
            "{filter} {order_by}: {fields:?}"
        );
    }
    // Page tokens: garbage, and a token reused with another filter.
    let status = list(&mut w.reader, "thing", "", "", 2, "not-a-token")
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status)[0].0, "page_token");
    let first = list(&mut w.reader, "thing", "", "", 2, "")
        .await
        .expect("first page");
    let status = list(
        &mut w.reader,
        "thing",
        r#"{"id": "a"}"#,
        "",
        2,
        &first.next_page_token,
    )
    .await
    .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status)[0].0, "page_token");
}

async fn paging_with_concurrent_writes_sees_every_existing_record_once(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let existing: Vec<contribution::Record> =
        (0..5000).map(|i| country(&format!("P{i:05}"), i)).collect();
    let existing_ids: BTreeSet<String> = existing.iter().map(|r| r.id.clone()).collect();
    stream(&mut w, existing).await;
    let session = w.open(SessionMode::Stream).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut token = String::new();
    let mut page_no = 0;
    loop {
        let page = list(&mut w.reader, "country", "", "", 100, &token)
            .await
            .expect("page");
        for r in page.records {
            *seen.entry(r.id).or_default() += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        // Between pages: 10 updates of existing records and 10 new records (keys are hashes,
        // so they land before and after the cursor alike): 500 of each over the listing.
        if page_no < 50 {
            let mut batch: Vec<contribution::Record> = (0..10)
                .map(|i| {
                    country(
                        &format!("P{:05}", page_no * 97 + i * 7),
                        1_000_000 + page_no,
                    )
                })
                .collect();
            batch.extend((0..10).map(|i| country(&format!("N{page_no:03}-{i}"), 1)));
            w.upsert(&session, batch).await.expect("concurrent writes");
        }
        page_no += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "repeated: {repeated:?}");
    let missing: Vec<_> = existing_ids
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "missing {} records", missing.len());
}

/// Reads Watch events until one with `sequence >= until`.
async fn events_until(
    stream: &mut Streaming<catalog::WatchResponse>,
    until: u64,
) -> Vec<catalog::WatchResponse> {
    let mut events = Vec::new();
    while events
        .last()
        .is_none_or(|e: &catalog::WatchResponse| e.sequence < until)
    {
        let event = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("an event within the wait")
            .expect("the stream stays healthy")
            .expect("the stream stays open");
        events.push(event);
    }
    events
}

async fn watch(
    reader: &mut CatalogClient,
    entity_type: &str,
    after: u64,
) -> Result<Streaming<catalog::WatchResponse>, tonic::Status> {
    reader
        .watch(catalog::WatchRequest {
            entity_type: entity_type.into(),
            after,
        })
        .await
        .map(|r| r.into_inner())
}

/// Every visible country by key, and the listing's sequence.
async fn listing(reader: &mut CatalogClient) -> (BTreeMap<String, catalog::Record>, u64) {
    let mut all = BTreeMap::new();
    let mut token = String::new();
    let mut sequence = None;
    loop {
        let page = list(reader, "country", "", "", 7, &token)
            .await
            .expect("page");
        sequence.get_or_insert(page.sequence);
        assert_eq!(
            Some(page.sequence),
            sequence,
            "every page reports the listing's sequence"
        );
        for r in page.records {
            all.insert(r.key.clone(), r);
        }
        if page.next_page_token.is_empty() {
            return (all, sequence.unwrap_or_default());
        }
        token = page.next_page_token;
    }
}

async fn list_then_watch_rebuilds_the_catalog_across_accrue_and_replace(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    stream(
        &mut w,
        (0..30).map(|i| country(&format!("C{i:02}"), i)).collect(),
    )
    .await;

    // The listing starts; while it pages, an accrue commit and a replace sweep happen.
    let first = list(&mut w.reader, "country", "", "", 7, "")
        .await
        .expect("first page");
    let listed_at = first.sequence;
    assert!(listed_at > 0, "the initial writes were logged");
    let mut rebuilt: BTreeMap<String, catalog::Record> = first
        .records
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();

    let accrue = w.open(SessionMode::Accrue).await;
    let mut changes: Vec<_> = (0..5)
        .map(|i| country(&format!("C{i:02}"), 500 + i))
        .collect();
    changes.extend((0..5).map(|i| country(&format!("D{i:02}"), i)));
    w.upsert(&accrue, changes).await.expect("stage");
    w.delete(&accrue, &["C10", "C11"])
        .await
        .expect("stage deletes");
    w.close(&accrue, true, false).await.expect("commit accrue");

    let mut token = first.next_page_token;
    while !token.is_empty() {
        let page = list(&mut w.reader, "country", "", "", 7, &token)
            .await
            .expect("page");
        assert_eq!(page.sequence, listed_at);
        rebuilt.extend(page.records.into_iter().map(|r| (r.key.clone(), r)));
        token = page.next_page_token;
    }

    // Replace keeps C00..C19 (changing two) and D00, sweeping the rest.
    let replace = w.open(SessionMode::Replace).await;
    let mut kept: Vec<_> = (0..20)
        .map(|i| {
            country(
                &format!("C{i:02}"),
                if i < 2 {
                    900
                } else if i < 5 {
                    500 + i
                } else {
                    i
                },
            )
        })
        .collect();
    kept.push(country("D00", 0));
    w.upsert(&replace, kept).await.expect("stage replace");
    let closed = w.close(&replace, true, true).await.expect("commit replace");
    assert!(
        closed.totals.map(|t| t.swept).unwrap_or_default() > 0,
        "the sweep deleted records"
    );

    let (fresh, now_at) = listing(&mut w.reader).await;
    let mut events = watch(&mut w.reader, "country", listed_at)
        .await
        .expect("watch");
    for event in events_until(&mut events, now_at).await {
        match event.event.expect("an event") {
            Event::Upserted(r) => {
                rebuilt.insert(r.key.clone(), r);
            }
            Event::DeletedKey(key) => {
                rebuilt.remove(&key);
            }
        }
    }
    let summary = |m: &BTreeMap<String, catalog::Record>| -> Vec<(String, String, String, i64)> {
        m.values()
            .map(|r| (r.key.clone(), r.id.clone(), r.checksum.clone(), r.version))
            .collect()
    };
    assert_eq!(summary(&rebuilt), summary(&fresh));
}

async fn watch_resumes_after_a_sequence(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let start = list(&mut w.reader, "country", "", "", 1, "")
        .await
        .expect("list")
        .sequence;
    let session = w.open(SessionMode::Stream).await;
    for i in 0..3 {
        w.upsert(&session, vec![country(&format!("R{i}"), i)])
            .await
            .expect("upsert");
    }
    w.delete(&session, &["R1"]).await.expect("delete");
    let mut stream = watch(&mut w.reader, "country", start).await.expect("watch");
    let events = events_until(&mut stream, start + 4).await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    // R1's upsert (start + 2) is not delivered: events carry the record as it is now, and R1
    // is gone; its delete (start + 4) is. Sequences only increase.
    assert_eq!(sequences, [start + 1, start + 3, start + 4]);
    assert!(matches!(events[2].event, Some(Event::DeletedKey(_))));
    // Resuming after the first event delivers exactly the rest.
    let mut resumed = watch(&mut w.reader, "country", events[0].sequence)
        .await
        .expect("resume");
    let rest = events_until(&mut resumed, start + 4).await;
    assert_eq!(
        rest.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [start + 3, start + 4]
    );
    match &rest[0].event {
        Some(Event::Upserted(r)) => assert_eq!(r.id, "R2"),
        other => panic!("expected R2 upserted, got {other:?}"),
    }
    // A live watcher sees a later commit without being asked again.
    w.upsert(&session, vec![country("R9", 9)])
        .await
        .expect("upsert");
    let live = events_until(&mut resumed, start + 5).await;
    assert!(matches!(&live[0].event, Some(Event::Upserted(r)) if r.id == "R9"));
    // A sequence beyond the log is a bad argument.
    let status = watch(&mut w.reader, "country", start + 1_000)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn watch_after_pruned_changes_is_out_of_range(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    stream(&mut w, vec![country("A", 1), country("B", 2)]).await;
    let latest = list(&mut w.reader, "country", "", "", 1, "")
        .await
        .expect("list")
        .sequence;
    let pruned = sandbox
        .store
        .prune_changes(tributary_core::clock::now_micros() + 1)
        .await
        .expect("prune");
    assert_eq!(pruned, 2);
    let status = watch(&mut w.reader, "country", 0)
        .await
        .expect_err("pruned");
    assert_eq!(status.code(), Code::OutOfRange);
    // From the latest sequence nothing is missing: the watch is accepted.
    watch(&mut w.reader, "country", latest)
        .await
        .expect("watch from the latest");
}

async fn the_pruner_enforces_the_retention(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    stream(&mut w, vec![country("A", 1)]).await;
    let mut reader = w.reader.clone();
    let refused = wait_until(WAIT, || {
        let mut reader = reader.clone();
        async move {
            match watch(&mut reader, "country", 0).await {
                Err(status) if status.code() == Code::OutOfRange => Some(()),
                _ => None,
            }
        }
    })
    .await;
    assert!(refused.is_some(), "the background pruner removed the entry");
    let latest = list(&mut reader, "country", "", "", 1, "")
        .await
        .expect("list")
        .sequence;
    watch(&mut reader, "country", latest)
        .await
        .expect("watch from the latest");
}

async fn watch_ends_unavailable_at_shutdown(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let mut stream = watch(&mut w.reader, "country", 0).await.expect("watch");
    sandbox.restart().await;
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the stream ends at shutdown");
    assert_eq!(end.map(|s| s.code()), Some(Code::Unavailable));
}

async fn consumer_grants_and_tokens(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    thing_world(sandbox).await;
    // Granted country only.
    let status = list(&mut w.reader, "thing", "", "", 1, "")
        .await
        .expect_err("ungranted");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = watch(&mut w.reader, "thing", 0)
        .await
        .expect_err("ungranted");
    assert_eq!(status.code(), Code::PermissionDenied);
    list(&mut w.reader, "country", "", "", 1, "")
        .await
        .expect("granted");
    // A wrong token, and none, are unauthenticated (the catalog is not public here).
    for token in ["tbr_wrong", ""] {
        let mut stranger = sandbox.reader(token);
        let status = list(&mut stranger, "country", "", "", 1, "")
            .await
            .expect_err("stranger");
        assert_eq!(status.code(), Code::Unauthenticated, "token {token:?}");
        let status = watch(&mut stranger, "country", 0)
            .await
            .expect_err("stranger");
        assert_eq!(status.code(), Code::Unauthenticated, "token {token:?}");
    }
}

async fn a_public_catalog_needs_no_token(sandbox: &Sandbox) {
    let _w = sandbox.country_world().await;
    let mut anyone = sandbox.reader("");
    list(&mut anyone, "country", "", "", 1, "")
        .await
        .expect("public list");
    watch(&mut anyone, "country", 0)
        .await
        .expect("public watch");
    let status = list(&mut anyone, "planet", "", "", 1, "")
        .await
        .expect_err("unknown type");
    assert_eq!(status.code(), Code::NotFound);
    // A wrong token is still refused.
    let mut wrong = sandbox.reader("tbr_wrong");
    let status = list(&mut wrong, "country", "", "", 1, "")
        .await
        .expect_err("wrong token");
    assert_eq!(status.code(), Code::Unauthenticated);
}

async fn get_entity_type_answers_granted_types_with_their_schema(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    thing_world(sandbox).await;
    let country = w
        .reader
        .get_entity_type(catalog::GetEntityTypeRequest {
            slug: "country".into(),
        })
        .await
        .expect("granted")
        .into_inner()
        .entity_type
        .expect("entity type");
    assert_eq!(
        (
            country.slug.as_str(),
            country.name.as_str(),
            country.schema_version
        ),
        ("country", "Country", 1)
    );
    assert_eq!(
        country.schema,
        Some(json_struct(tributary_tests::country_schema())),
        "with its JSON Schema"
    );
    for slug in ["thing", "planet"] {
        let status = w
            .reader
            .get_entity_type(catalog::GetEntityTypeRequest { slug: slug.into() })
            .await
            .expect_err("not granted");
        assert_eq!(status.code(), Code::PermissionDenied, "{slug}");
    }
}

async fn list_records_page_size_defaults_to_100_and_is_capped_at_1000(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    stream(
        &mut w,
        (0..1050).map(|i| country(&format!("P{i:04}"), i)).collect(),
    )
    .await;
    for (asked, got) in [(0, 100), (7, 7), (1000, 1000), (1001, 1000), (5000, 1000)] {
        let page = list(&mut w.reader, "country", "", "", asked, "")
            .await
            .unwrap_or_else(|s| panic!("page_size {asked}: {s}"));
        assert_eq!(page.records.len(), got, "page_size {asked}");
        assert!(
            !page.next_page_token.is_empty(),
            "page_size {asked}: more follow"
        );
    }
    for asked in [-1, i32::MIN] {
        let status = list(&mut w.reader, "country", "", "", asked, "")
            .await
            .expect_err("negative page size");
        assert_eq!(status.code(), Code::InvalidArgument, "page_size {asked}");
        assert_eq!(bad_request_fields(&status)[0].0, "page_size");
    }
    let status = w
        .reader
        .list_entity_types(catalog::ListEntityTypesRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .expect_err("negative page size");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status)[0].0, "page_size");
    let types = w
        .reader
        .list_entity_types(catalog::ListEntityTypesRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .expect("a page size above 1,000 is capped, not refused")
        .into_inner();
    assert_eq!(types.entity_types.len(), 1);
}

async fn lookup(
    reader: &mut CatalogClient,
    entity_type: &str,
    ids: Vec<String>,
) -> Result<Vec<catalog::Record>, tonic::Status> {
    reader
        .lookup_by_external_ids(catalog::LookupByExternalIdsRequest {
            entity_type: entity_type.into(),
            ids,
            connector: String::new(),
        })
        .await
        .map(|r| r.into_inner().records)
}

async fn lookup_by_external_ids_refuses_ungranted_types_and_too_many_ids(sandbox: &Sandbox) {
    use tonic_types::StatusExt;
    let mut w = sandbox.country_world().await;
    thing_world(sandbox).await;
    stream(&mut w, vec![country("GB", 1), country("FR", 2)]).await;
    let found = lookup(&mut w.reader, "country", vec!["GB".into(), "XX".into()])
        .await
        .expect("lookup");
    assert_eq!(
        found.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["GB"]
    );
    for slug in ["thing", "planet"] {
        let status = lookup(&mut w.reader, slug, vec!["GB".into()])
            .await
            .expect_err("not granted");
        assert_eq!(status.code(), Code::PermissionDenied, "{slug}");
    }
    // An empty question has an empty answer.
    assert!(lookup(&mut w.reader, "country", Vec::new())
        .await
        .expect("no ids")
        .is_empty());
    let at_most: Vec<String> = (0..1000).map(|i| format!("I{i}")).collect();
    lookup(&mut w.reader, "country", at_most.clone())
        .await
        .expect("1,000 ids");
    let mut too_many = at_most;
    too_many.push("GB".into());
    let status = lookup(&mut w.reader, "country", too_many)
        .await
        .expect_err("1,001 ids");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let quota = status.get_details_quota_failure().expect("QuotaFailure");
    assert_eq!(quota.violations[0].subject, "ids");
}

async fn get_record_with_a_malformed_key_is_invalid_argument(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    stream(&mut w, vec![country("GB", 1)]).await;
    let key = tributary_core::ids::record_key("country", &w.connector, "GB");
    for malformed in [
        String::new(),
        "nope".into(),
        key[..39].to_owned(),
        format!("{key}0"),
        key.to_uppercase(),
        format!("{}g", &key[..39]),
    ] {
        let status = w
            .reader
            .get_record(catalog::GetRecordRequest {
                key: malformed.clone(),
            })
            .await
            .expect_err("malformed key");
        assert_eq!(status.code(), Code::InvalidArgument, "{malformed:?}");
        assert_eq!(bad_request_fields(&status)[0].0, "key", "{malformed:?}");
    }
    // A well-formed key of no record is not found, and says which.
    let unknown = tributary_core::ids::record_key("country", &w.connector, "XX");
    let result = w
        .reader
        .get_record(catalog::GetRecordRequest {
            key: unknown.clone(),
        })
        .await;
    assert_not_found("GetRecord", result, "record", &unknown);
    w.reader
        .get_record(catalog::GetRecordRequest { key })
        .await
        .expect("the record by its key");
}

async fn watch_on_an_ungranted_or_unknown_type_is_permission_denied(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    thing_world(sandbox).await;
    for slug in ["thing", "planet", ""] {
        let status = watch(&mut w.reader, slug, 0)
            .await
            .expect_err("not granted");
        assert_eq!(status.code(), Code::PermissionDenied, "{slug:?}");
    }
    watch(&mut w.reader, "country", 0).await.expect("granted");
}

/// With a public catalog every type is readable, so an unknown one is NOT_FOUND (not
/// PERMISSION_DENIED), with `ResourceInfo` naming it.
async fn unknown_entity_types_are_not_found_in_a_public_catalog(sandbox: &Sandbox) {
    let _w = sandbox.country_world().await;
    let mut anyone = sandbox.reader("");
    let get = anyone
        .get_entity_type(catalog::GetEntityTypeRequest {
            slug: "planet".into(),
        })
        .await
        .map(|_| ());
    let listed = list(&mut anyone, "planet", "", "", 1, "").await.map(|_| ());
    let looked_up = lookup(&mut anyone, "planet", vec!["GB".into()])
        .await
        .map(|_| ());
    let watched = watch(&mut anyone, "planet", 0).await.map(|_| ());
    for (rpc, result) in [
        ("GetEntityType", get),
        ("ListRecords", listed),
        ("LookupByExternalIds", looked_up),
        ("Watch", watched),
    ] {
        assert_not_found(rpc, result, "entity_type", "planet");
    }
}

/// CountRecords counts what a listing with the same filter lists, in the listing's snapshot,
/// with the rules of ListRecords for grants, unknown types and malformed filters.
async fn count_records_counts_what_a_listing_lists(sandbox: &Sandbox) {
    let mut w = thing_world(sandbox).await;
    five_things(&mut w).await;
    let count = |reader: &mut CatalogClient, entity_type: &str, filter: &str| {
        let mut reader = reader.clone();
        let request = catalog::CountRecordsRequest {
            entity_type: entity_type.into(),
            filter: filter.into(),
        };
        async move { reader.count_records(request).await.map(|r| r.into_inner()) }
    };
    for filter in [
        "",
        r#"{"entity.n": {"$gte": 2}}"#,
        r#"{"$or": [{"id": "a"}, {"entity.s": {"$regex": "^[Aa]pple"}}]}"#,
        r#"{"id": "nothing"}"#,
    ] {
        let counted = count(&mut w.reader, "thing", filter).await.expect("count");
        let listed = ids_of(&mut w.reader, filter, "").await;
        assert_eq!(counted.count, listed.len() as u64, "filter {filter}");
        let sequence = list(&mut w.reader, "thing", filter, "", 1, "")
            .await
            .expect("list")
            .sequence;
        assert_eq!(counted.sequence, sequence, "filter {filter}");
    }
    assert_eq!(
        count(&mut w.reader, "thing", "")
            .await
            .expect("count")
            .count,
        5
    );
    let bad = count(&mut w.reader, "thing", r#"{"entity.n": {"$gtt": 1}}"#)
        .await
        .expect_err("malformed filter");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(!bad_request_fields(&bad).is_empty(), "{bad:?}");
    for slug in ["country", "planet", ""] {
        let denied = count(&mut w.reader, slug, "").await.expect_err("ungranted");
        assert_eq!(denied.code(), Code::PermissionDenied, "{slug:?}");
    }
    let mut stranger = sandbox.reader("tbr_wrong");
    let refused = count(&mut stranger, "thing", "")
        .await
        .expect_err("stranger");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

on_both_backends!(
    every_filter_operator_is_compiled_to_sql,
    count_records_counts_what_a_listing_lists,
    order_by_pages_in_a_total_order,
    malformed_filters_orders_and_tokens_are_invalid_argument,
    paging_with_concurrent_writes_sees_every_existing_record_once,
    list_then_watch_rebuilds_the_catalog_across_accrue_and_replace,
    watch_resumes_after_a_sequence,
    watch_after_pruned_changes_is_out_of_range,
    the_pruner_enforces_the_retention with |o: &mut tributary::server::ServerOptions| {
        o.change_log_retention = std::time::Duration::ZERO;
        o.prune_interval = std::time::Duration::from_millis(50);
    },
    watch_ends_unavailable_at_shutdown,
    consumer_grants_and_tokens,
    a_public_catalog_needs_no_token with |o: &mut tributary::server::ServerOptions| {
        o.catalog_public = true;
    },
    get_entity_type_answers_granted_types_with_their_schema,
    list_records_page_size_defaults_to_100_and_is_capped_at_1000,
    lookup_by_external_ids_refuses_ungranted_types_and_too_many_ids,
    get_record_with_a_malformed_key_is_invalid_argument,
    watch_on_an_ungranted_or_unknown_type_is_permission_denied,
    unknown_entity_types_are_not_found_in_a_public_catalog with |o: &mut tributary::server::ServerOptions| {
        o.catalog_public = true;
    },
);

/// PostgreSQL: a contributor process and a consumer process on one database; a commit on the
/// first is watched on the second (woken by LISTEN/NOTIFY, awaited, not slept).
mod separate_processes {
    use super::*;
    use tokio::process::{Child, Command};

    /// A free loopback port (bound, read, released).
    async fn free_port() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("addr").port()
    }

    /// `tributary serve --only <service>` as its own process.
    async fn spawn(service: &str, database_url: &str, dir: &std::path::Path) -> (Child, String) {
        let port = free_port().await;
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_tributary-under-test"))
            .args([
                "serve",
                "--only",
                service,
                "--listen",
                &addr,
                "--database-url",
                database_url,
            ])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tributary");
        (child, format!("http://{addr}"))
    }

    async fn connect(endpoint: &str) -> tonic::transport::Channel {
        wait_until(WAIT, || async {
            tributary_client::connect(endpoint).await.ok()
        })
        .await
        .unwrap_or_else(|| panic!("{endpoint} did not come up"))
    }

    tributary_tests::postgres_test! {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_commit_on_a_contributor_process_is_watched_on_a_consumer_process() {
            commit_on_a_contributor_process_is_watched_on_a_consumer_process().await;
        }
    }

    async fn commit_on_a_contributor_process_is_watched_on_a_consumer_process() {
        let sandbox = Sandbox::postgres(|_| {}).await;
        sandbox.create_country_type().await;
        let (_connector, token) = sandbox.create_connector("country", |_| {}).await;
        let reader_token = sandbox.create_consumer(&["country"]).await;
        let url = sandbox.database_url().expect("database url").to_owned();
        let dir = tempfile_dir();
        let (mut contributor_process, contributor_at) = spawn("contributor", &url, &dir).await;
        let (mut consumer_process, consumer_at) = spawn("consumer", &url, &dir).await;

        let mut reader = tributary_client::catalog(connect(&consumer_at).await, &reader_token);
        let mut contributor =
            tributary_client::contribution(connect(&contributor_at).await, &token);
        let start = list(&mut reader, "country", "", "", 1, "")
            .await
            .expect("list")
            .sequence;
        let mut stream = watch(&mut reader, "country", start).await.expect("watch");

        let session = contributor
            .open_session(contribution::OpenSessionRequest {
                mode: SessionMode::Accrue as i32,
            })
            .await
            .expect("open")
            .into_inner()
            .session_id;
        contributor
            .upsert(contribution::UpsertRequest {
                session_id: session.clone(),
                records: vec![country("GB", 66), country("FR", 67)],
            })
            .await
            .expect("upsert");
        contributor
            .close_session(contribution::CloseSessionRequest {
                session_id: session,
                commit: true,
                force: false,
            })
            .await
            .expect("commit");

        let events = events_until(&mut stream, start + 2).await;
        let ids: BTreeSet<String> = events
            .into_iter()
            .filter_map(|e| match e.event {
                Some(Event::Upserted(r)) => Some(r.id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, BTreeSet::from(["FR".to_owned(), "GB".to_owned()]));
        let _ = contributor_process.kill().await;
        let _ = consumer_process.kill().await;
        sandbox.stop().await;
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tributary-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
