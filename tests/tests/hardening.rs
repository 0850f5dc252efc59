//! Hostile input and bounded resources (issue 12), over real gRPC on 127.0.0.1, on SQLite and
//! PostgreSQL: every rule has a test named after it. Nothing a client sends gets INTERNAL or
//! UNKNOWN; limits answer with a violation or a QuotaFailure that names them; revocation
//! reaches open streams.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prost::Message;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_types::StatusExt;
use tributary::server::ServerOptions;
use tributary_proto::admin::v1 as admin;
use tributary_proto::catalog::v1 as catalog;
use tributary_proto::contribution::v1 as pb;
use tributary_proto::contribution::v1::contribute_request::Message as Msg;
use tributary_proto::contribution::v1::contribute_response::Message as Reply;
use tributary_tests::{
    bad_request_fields, country, json_struct, on_both_backends, raw, wait_until, Backend, Sandbox,
    World,
};

const LIST_RECORDS: &str = "/tributary.catalog.v1.Catalog/ListRecords";
const CREATE_ENTITY_TYPE: &str = "/tributary.admin.v1.Admin/CreateEntityType";

fn list(filter: &str, order_by: &str) -> catalog::ListRecordsRequest {
    catalog::ListRecordsRequest {
        entity_type: "country".into(),
        filter: filter.into(),
        order_by: order_by.into(),
        page_size: 10,
        page_token: String::new(),
    }
}

async fn countries(world: &mut World, n: usize) {
    let session = world.open(pb::SessionMode::Stream).await;
    let records: Vec<pb::Record> = (0..n)
        .map(|i| country(&format!("C{i:05}"), i as i64))
        .collect();
    for chunk in records.chunks(1_000) {
        world.upsert(&session, chunk.to_vec()).await.unwrap();
    }
}

fn assert_invalid(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields = bad_request_fields(status);
    assert!(
        fields.iter().any(|(f, _)| f.starts_with(field)),
        "no violation of {field}: {fields:?}"
    );
}

fn assert_quota(status: &tonic::Status, subject: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let quota = status.get_details_quota_failure().expect("QuotaFailure");
    assert_eq!(quota.violations[0].subject, subject, "{status:?}");
}

async fn malformed_protobuf_is_invalid_argument_with_or_without_a_token(sandbox: &Sandbox) {
    let world = sandbox.country_world().await;
    let garbage = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x12];
    let with_token = raw::unary(
        sandbox.channel(),
        LIST_RECORDS,
        garbage.clone(),
        Some(&sandbox.admin_token),
    )
    .await
    .unwrap_err();
    assert_eq!(with_token.code(), Code::InvalidArgument, "{with_token:?}");
    let admin = raw::unary(
        sandbox.channel(),
        CREATE_ENTITY_TYPE,
        garbage.clone(),
        Some(&sandbox.admin_token),
    )
    .await
    .unwrap_err();
    assert_eq!(admin.code(), Code::InvalidArgument, "{admin:?}");
    let without = raw::unary(sandbox.channel(), LIST_RECORDS, garbage, None)
        .await
        .unwrap_err();
    assert_eq!(without.code(), Code::Unauthenticated, "{without:?}");
    drop(world);
}

async fn oversized_requests_are_resource_exhausted_with_quota_failure(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    // Catalog requests are small: 1 MiB by default.
    let big = list(&"x".repeat(2 * 1024 * 1024), "");
    let refused = world.reader.list_records(big).await.unwrap_err();
    assert_quota(&refused, "request");
    // A body never decoded: an admin call without a token is refused before it is read.
    let body = admin::CreateEntityTypeRequest {
        entity_type: Some(admin::EntityType {
            slug: "big".into(),
            name: "x".repeat(6 * 1024 * 1024),
            ..Default::default()
        }),
    }
    .encode_to_vec();
    let anonymous = raw::unary(sandbox.channel(), CREATE_ENTITY_TYPE, body.clone(), None)
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let admin = raw::unary(
        sandbox.channel(),
        CREATE_ENTITY_TYPE,
        body,
        Some(&sandbox.admin_token),
    )
    .await
    .unwrap_err();
    assert_quota(&admin, "request");
}

async fn nul_in_any_text_is_invalid_argument_naming_the_field(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let session = world.open(pb::SessionMode::Stream).await;
    let mut bad_id = country("A\0B", 1);
    let refused = world
        .upsert(&session, vec![bad_id.clone()])
        .await
        .unwrap_err();
    assert_invalid(&refused, "records[0].id");
    bad_id.id = "ok".into();
    bad_id.name = "N\0".into();
    let refused = world.upsert(&session, vec![bad_id]).await.unwrap_err();
    assert_invalid(&refused, "records[0].name");
    let mut entity = tributary_tests::country_entity("XX", 1);
    entity["capital"] = "Lon\0don".into();
    let record = pb::Record {
        id: "E".into(),
        name: "E".into(),
        entity: Some(json_struct(entity)),
        ..Default::default()
    };
    let refused = world.upsert(&session, vec![record]).await.unwrap_err();
    assert_invalid(&refused, "records[0].entity");
    let refused = world.delete(&session, &["x\0"]).await.unwrap_err();
    assert_invalid(&refused, "ids[0]");

    let refused = world
        .reader
        .list_records(list(r#"{"name": "a\u0000"}"#, ""))
        .await
        .unwrap_err();
    assert_invalid(&refused, "filter.name");
    let refused = world
        .reader
        .lookup_by_external_ids(catalog::LookupByExternalIdsRequest {
            entity_type: "country".into(),
            ids: vec!["GB".into(), "F\0R".into()],
            connector: String::new(),
        })
        .await
        .unwrap_err();
    assert_invalid(&refused, "ids[1]");
    let refused = world
        .reader
        .get_record_by_id(catalog::GetRecordByIdRequest {
            entity_type: "country".into(),
            connector: world.connector.clone(),
            id: "\0".into(),
        })
        .await
        .unwrap_err();
    assert_invalid(&refused, "id");
    let refused = sandbox
        .admin()
        .create_entity_type(admin::CreateEntityTypeRequest {
            entity_type: Some(admin::EntityType {
                slug: "nul".into(),
                name: "N\0".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_invalid(&refused, "entity_type.name");
    let refused = sandbox
        .admin()
        .get_connector(admin::GetConnectorRequest { id: "a\0".into() })
        .await
        .unwrap_err();
    assert_invalid(&refused, "id");
    let refused = sandbox
        .admin()
        .get_source(admin::GetSourceRequest { id: "s\0".into() })
        .await
        .unwrap_err();
    assert_invalid(&refused, "id");
    // Nothing of the refused batches was applied.
    assert!(world.visible().await.is_empty());
}

/// The Contribution server decodes entities straight into JSON (ADR 0022): over real gRPC, a
/// NaN is INVALID_ARGUMENT naming its path, nesting past protobuf's recursion limit is
/// INVALID_ARGUMENT, not INTERNAL, and the session goes on taking good records.
async fn hostile_entities_are_invalid_argument_over_the_wire(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let session = world.open(pb::SessionMode::Stream).await;
    let mut entity = json_struct(tributary_tests::country_entity("XX", 1));
    entity.fields.insert(
        "area".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)),
        },
    );
    let record = pb::Record {
        id: "E".into(),
        name: "E".into(),
        entity: Some(entity),
        ..Default::default()
    };
    let refused = world.upsert(&session, vec![record]).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let fields = bad_request_fields(&refused);
    assert!(
        fields
            .iter()
            .any(|(f, d)| f == "records[0].entity.area" && d.contains("NaN")),
        "{fields:?}"
    );

    let mut deep = prost_types::Struct::default();
    for _ in 0..200 {
        deep = prost_types::Struct {
            fields: [(
                "a".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StructValue(deep)),
                },
            )]
            .into_iter()
            .collect(),
        };
    }
    let record = pb::Record {
        id: "D".into(),
        name: "D".into(),
        entity: Some(deep),
        ..Default::default()
    };
    let refused = world.upsert(&session, vec![record]).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    world.upsert(&session, vec![country("A", 1)]).await.unwrap();
}

async fn order_by_takes_up_to_eight_fields_on_both_backends_and_refuses_more(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    countries(&mut world, 25).await;
    let fields = [
        "entity.population desc",
        "entity.code",
        "entity.capital",
        "entity.area",
        "entity.calling_code",
        "entity.continent",
        "entity.currency.code",
        "name",
    ];
    let order_by = fields.join(", ");
    let mut request = list("", &order_by);
    let mut seen = Vec::new();
    loop {
        let page = world
            .reader
            .list_records(request.clone())
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.records.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(seen[0], "C00024", "population descending first");

    let nine = format!("{order_by}, id");
    let refused = world
        .reader
        .list_records(list("", &nine))
        .await
        .unwrap_err();
    assert_invalid(&refused, "order_by");
    let huge = (0..50_000)
        .map(|i| format!("entity.f{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let refused = world
        .reader
        .list_records(list("", &huge))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.code(),
            Code::InvalidArgument | Code::ResourceExhausted
        ),
        "{refused:?}"
    );
}

async fn in_with_the_documented_maximum_of_values_works_on_both_backends(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    countries(&mut world, 20).await;
    let ids: Vec<String> = (0..1_000).map(|i| format!("C{i:05}")).collect();
    let filter = serde_json::json!({"id": {"$in": ids}}).to_string();
    let page = world
        .reader
        .list_records(catalog::ListRecordsRequest {
            page_size: 100,
            ..list(&filter, "")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.records.len(), 20);
    let nin = serde_json::json!({"entity.population": {"$nin": (0..1_000).collect::<Vec<_>>()}});
    let page = world
        .reader
        .list_records(list(&nin.to_string(), ""))
        .await
        .unwrap()
        .into_inner();
    assert!(page.records.is_empty());
    let too_many: Vec<String> = (0..1_001).map(|i| i.to_string()).collect();
    let filter = serde_json::json!({"id": {"$in": too_many}}).to_string();
    let refused = world
        .reader
        .list_records(list(&filter, ""))
        .await
        .unwrap_err();
    assert_invalid(&refused, "filter.id.$in");
    // Deep nesting and many conditions are refused with the limit named, never run.
    let mut deep = serde_json::json!({"id": "x"});
    for _ in 0..20 {
        deep = serde_json::json!({"$not": deep});
    }
    let refused = world
        .reader
        .list_records(list(&deep.to_string(), ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("max_filter_depth"),
        "{refused:?}"
    );
}

async fn forged_page_tokens_are_refused(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    countries(&mut world, 15).await;
    let first = world
        .reader
        .list_records(list("", "entity.population"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    // The token decoded, its cursor given many more values than the order has.
    let mut token: serde_json::Value =
        serde_json::from_slice(&hex::decode(&first.next_page_token).unwrap()).unwrap();
    token["c"]["v"] = serde_json::json!(vec!["x"; 500]);
    let forged = hex::encode(token.to_string());
    let refused = world
        .reader
        .list_records(catalog::ListRecordsRequest {
            page_token: forged,
            ..list("", "entity.population")
        })
        .await
        .unwrap_err();
    assert_invalid(&refused, "page_token");
    let refused = world
        .reader
        .list_records(catalog::ListRecordsRequest {
            page_token: "ab".repeat(20_000),
            ..list("", "entity.population")
        })
        .await
        .unwrap_err();
    assert_invalid(&refused, "page_token");
    token["c"]["k"] = "\u{0}".into();
    token["c"]["v"] = serde_json::json!([1]);
    let refused = world
        .reader
        .list_records(catalog::ListRecordsRequest {
            page_token: hex::encode(token.to_string()),
            ..list("", "entity.population")
        })
        .await
        .unwrap_err();
    assert_invalid(&refused, "page_token");
}

async fn get_record_answers_the_same_for_an_ungranted_key_as_for_a_missing_one(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    countries(&mut world, 1).await;
    let key = world.get("C00000").await.unwrap().key;
    sandbox
        .admin()
        .create_entity_type(admin::CreateEntityTypeRequest {
            entity_type: Some(admin::EntityType {
                slug: "city".into(),
                name: "City".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let other = sandbox.create_consumer(&["city"]).await;
    let mut reader = sandbox.reader(&other);
    let ungranted = reader
        .get_record(catalog::GetRecordRequest { key: key.clone() })
        .await
        .unwrap_err();
    let missing = reader
        .get_record(catalog::GetRecordRequest {
            key: "0".repeat(40),
        })
        .await
        .unwrap_err();
    assert_eq!(ungranted.code(), Code::NotFound);
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        ungranted.message().replace(&key, "K"),
        missing.message().replace(&"0".repeat(40), "K")
    );
}

fn two_watches(options: &mut ServerOptions) {
    options.catalog_limits.max_watches_per_consumer = 2;
    options.catalog_limits.watch_revalidate = Duration::from_millis(200);
}

async fn watch(
    reader: &mut tributary_tests::CatalogClient,
) -> Result<tonic::Streaming<catalog::WatchResponse>, tonic::Status> {
    reader
        .watch(catalog::WatchRequest {
            entity_type: "country".into(),
            after: 0,
        })
        .await
        .map(|r| r.into_inner())
}

async fn watch_streams_are_capped_per_consumer(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let first = watch(&mut world.reader).await.unwrap();
    let _second = watch(&mut world.reader).await.unwrap();
    let refused = watch(&mut world.reader).await.unwrap_err();
    assert_quota(&refused, "watches");
    // Another consumer has its own allowance.
    let other = sandbox.create_consumer(&["country"]).await;
    let _theirs = watch(&mut sandbox.reader(&other)).await.unwrap();
    // A closed stream frees its place.
    drop(first);
    let reopened = wait_until(Duration::from_secs(30), || {
        let mut reader = world.reader.clone();
        async move { watch(&mut reader).await.ok() }
    })
    .await;
    assert!(reopened.is_some(), "a place frees when a stream closes");
}

/// Reads a Watch until it ends; its final status.
async fn end_of(mut stream: tonic::Streaming<catalog::WatchResponse>) -> tonic::Status {
    let ended = tokio::time::timeout(Duration::from_secs(30), async move {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return tonic::Status::ok("ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await;
    ended.expect("the Watch ends within 30 s")
}

async fn deleting_a_consumer_or_its_entity_type_ends_its_watch(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let stream = watch(&mut world.reader).await.unwrap();
    let consumer = sandbox
        .admin()
        .list_consumers(admin::ListConsumersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .consumers
        .remove(0)
        .id;
    sandbox
        .admin()
        .delete_consumer(admin::DeleteConsumerRequest { id: consumer })
        .await
        .unwrap();
    assert_eq!(end_of(stream).await.code(), Code::Unauthenticated);

    let other = sandbox.create_consumer(&["country"]).await;
    let stream = watch(&mut sandbox.reader(&other)).await.unwrap();
    sandbox
        .admin()
        .delete_entity_type(admin::DeleteEntityTypeRequest {
            slug: "country".into(),
            force: true,
        })
        .await
        .unwrap();
    let ended = end_of(stream).await;
    assert!(
        matches!(ended.code(), Code::PermissionDenied | Code::Unauthenticated),
        "{ended:?}"
    );
}

/// A raw Contribute stream: send messages, read replies.
struct Stream {
    tx: mpsc::Sender<pb::ContributeRequest>,
    rx: tonic::Streaming<pb::ContributeResponse>,
}

impl Stream {
    async fn open(world: &mut World) -> Stream {
        let (tx, requests) = mpsc::channel(8);
        Stream::send_on(
            &tx,
            Msg::Open(pb::StreamOpen {
                mode: pb::SessionMode::Stream as i32,
                session_id: String::new(),
            }),
        )
        .await;
        let rx = world
            .contributor
            .contribute(ReceiverStream::new(requests))
            .await
            .unwrap()
            .into_inner();
        let mut stream = Stream { tx, rx };
        assert!(matches!(stream.next().await, Ok(Reply::Opened(_))));
        stream
    }

    async fn send_on(tx: &mpsc::Sender<pb::ContributeRequest>, message: Msg) {
        tx.send(pb::ContributeRequest {
            message: Some(message),
        })
        .await
        .unwrap();
    }

    async fn upsert(
        &mut self,
        batch_seq: u64,
        records: Vec<pb::Record>,
    ) -> Result<Reply, tonic::Status> {
        Stream::send_on(
            &self.tx,
            Msg::Upsert(pb::UpsertBatch { batch_seq, records }),
        )
        .await;
        self.next().await
    }

    async fn next(&mut self) -> Result<Reply, tonic::Status> {
        let next = tokio::time::timeout(Duration::from_secs(30), self.rx.message())
            .await
            .expect("an answer within 30 s")?;
        Ok(next.and_then(|m| m.message).expect("a reply"))
    }
}

async fn rotating_or_deleting_a_token_ends_its_contribute_stream(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let mut stream = Stream::open(&mut world).await;
    assert!(matches!(
        stream.upsert(1, vec![country("A", 1)]).await,
        Ok(Reply::Ack(_))
    ));
    sandbox
        .admin()
        .rotate_connector_token(admin::RotateConnectorTokenRequest {
            id: world.connector.clone(),
        })
        .await
        .unwrap();
    let refused = stream.upsert(2, vec![country("B", 1)]).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let visible = world_visible(sandbox, &world).await;
    assert_eq!(
        visible,
        vec!["A".to_owned()],
        "nothing of the refused batch"
    );

    let (connector, token) = sandbox.create_connector("country", |_| {}).await;
    let mut other = World {
        connector: connector.clone(),
        contributor: sandbox.contributor(&token),
        reader: world.reader.clone(),
        token,
    };
    let mut stream = Stream::open(&mut other).await;
    sandbox
        .admin()
        .delete_connector(admin::DeleteConnectorRequest {
            id: connector,
            delete_records: false,
        })
        .await
        .unwrap();
    let refused = stream.upsert(1, vec![country("C", 1)]).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

async fn world_visible(sandbox: &Sandbox, world: &World) -> Vec<String> {
    let reader_token = sandbox.create_consumer(&["country"]).await;
    let mut reader = sandbox.reader(&reader_token);
    tributary_tests::list_all(&mut reader, "country")
        .await
        .into_values()
        .filter(|r| r.connector == world.connector)
        .map(|r| r.id)
        .collect()
}

async fn connector_and_schema_updates_apply_from_the_streams_next_batch(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let mut stream = Stream::open(&mut world).await;
    assert!(
        matches!(stream.upsert(1, vec![country("A", 1)]).await, Ok(Reply::Ack(a)) if a.error.is_none())
    );
    // The schema now also requires `capital` to be "Paris": the next batch is checked by it.
    let mut schema = tributary_tests::country_schema();
    schema["properties"]["capital"] = serde_json::json!({"const": "Paris"});
    sandbox
        .admin()
        .update_entity_type(admin::UpdateEntityTypeRequest {
            entity_type: Some(admin::EntityType {
                slug: "country".into(),
                name: "Country".into(),
                schema: Some(json_struct(schema)),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    match stream.upsert(2, vec![country("B", 1)]).await {
        Ok(Reply::Ack(ack)) => {
            let error = ack.error.expect("the new schema refuses the batch");
            assert!(
                error.violations.iter().any(|v| v.field.contains("capital")),
                "{error:?}"
            );
        }
        other => panic!("expected a refused batch, got {other:?}"),
    }
}

fn fast_timeout() -> tributary_store::StoreOptions {
    tributary_store::StoreOptions {
        query_timeout: Duration::from_millis(1),
        ..Default::default()
    }
}

async fn a_listing_over_the_query_timeout_is_stopped_with_resource_exhausted(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    countries(&mut world, 5_000).await;
    // A regular expression on every record's entity: a full scan that takes far over 1 ms.
    let filter = r#"{"entity.capital": {"$regex": "^(L|l)(o|O)+n(d|D)o+n.*x$"}}"#;
    let refused = world
        .reader
        .list_records(list(filter, "entity.area"))
        .await
        .unwrap_err();
    assert_quota(&refused, "query");
    assert!(refused.message().contains("query_timeout"), "{refused:?}");
    // Counting with the same filter is bounded the same way.
    let refused = world
        .reader
        .count_records(catalog::CountRecordsRequest {
            entity_type: "country".into(),
            filter: filter.into(),
        })
        .await
        .unwrap_err();
    assert_quota(&refused, "query");
}

/// Random hostile calls: fields empty, huge, NUL-laden or random bytes, on every Catalog and
/// Contribution call with a filter, order, token, key or id. None may be INTERNAL or UNKNOWN,
/// and the server answers a plain call afterwards.
async fn hostile_random_calls_never_get_internal_or_unknown(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    countries(&mut world, 30).await;
    let session = world.open(pb::SessionMode::Stream).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut failures = Vec::new();
    let rss_before = resident_kib();
    for call in 0..3_000 {
        let outcome = match call % 6 {
            0 => world
                .reader
                .list_records(catalog::ListRecordsRequest {
                    entity_type: hostile(&mut rng),
                    filter: hostile_filter(&mut rng),
                    order_by: hostile(&mut rng),
                    page_size: rng.random_range(-5..2_000),
                    page_token: hostile(&mut rng),
                })
                .await
                .map(|_| ()),
            1 => {
                // The same hostile filter counted and listed; INTERNAL from either is reported.
                let filter = hostile_filter(&mut rng);
                let counted = world
                    .reader
                    .count_records(catalog::CountRecordsRequest {
                        entity_type: "country".into(),
                        filter: filter.clone(),
                    })
                    .await
                    .map(|_| ());
                let listed = world
                    .reader
                    .list_records(list(&filter, &hostile_order(&mut rng)))
                    .await
                    .map(|_| ());
                match counted {
                    Err(s) if matches!(s.code(), Code::Internal | Code::Unknown) => Err(s),
                    _ => listed,
                }
            }
            2 => world
                .reader
                .get_record(catalog::GetRecordRequest {
                    key: hostile(&mut rng),
                })
                .await
                .map(|_| ()),
            3 => world
                .reader
                .lookup_by_external_ids(catalog::LookupByExternalIdsRequest {
                    entity_type: "country".into(),
                    ids: (0..rng.random_range(0..5))
                        .map(|_| hostile(&mut rng))
                        .collect(),
                    connector: hostile(&mut rng),
                })
                .await
                .map(|_| ()),
            4 => world
                .upsert(
                    &session,
                    vec![pb::Record {
                        id: hostile(&mut rng),
                        name: hostile(&mut rng),
                        entity: Some(json_struct(serde_json::json!({
                            "code": hostile(&mut rng),
                            "population": rng.random_range(-5..5),
                            hostile(&mut rng): hostile(&mut rng),
                        }))),
                        instance: None,
                        checksum: hostile(&mut rng),
                    }],
                )
                .await
                .map(|_| ()),
            _ => world
                .reader
                .get_record_by_id(catalog::GetRecordByIdRequest {
                    entity_type: hostile(&mut rng),
                    connector: hostile(&mut rng),
                    id: hostile(&mut rng),
                })
                .await
                .map(|_| ()),
        };
        if let Err(status) = outcome {
            if matches!(status.code(), Code::Internal | Code::Unknown) {
                failures.push(format!("call {call}: {status:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} calls failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    world
        .reader
        .list_records(list("", ""))
        .await
        .expect("the server still answers");
    // The server runs in this process (beside the other tests of this file, which run at the
    // same time): its memory after 3,000 calls stays far below what the calls could make it hold
    // (each could send up to 16 MiB), so nothing grows with the input.
    let grown_mib = resident_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 768, "memory grew by {grown_mib} MiB");
}

/// This process's resident memory, in KiB.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn hostile(rng: &mut impl Rng) -> String {
    match rng.random_range(0..8) {
        0 => String::new(),
        1 => "\0".repeat(rng.random_range(1..4)),
        2 => format!("a\0{}", rng.random::<u32>()),
        3 => "x".repeat(rng.random_range(60..3_000)),
        4 => (0..rng.random_range(1..40))
            .map(|_| rng.random::<char>())
            .collect(),
        5 => hex::encode(
            (0..rng.random_range(1..200))
                .map(|_| rng.random::<u8>())
                .collect::<Vec<_>>(),
        ),
        6 => "country".into(),
        _ => format!("C{:05}", rng.random_range(0..40)),
    }
}

fn hostile_filter(rng: &mut impl Rng) -> String {
    let field = [
        "id",
        "name",
        "entity.population",
        "entity.capital",
        "updated_at",
        "bogus",
    ][rng.random_range(0..6)];
    let op = [
        "$eq",
        "$in",
        "$regex",
        "$gt",
        "$contains",
        "$exists",
        "$not",
    ][rng.random_range(0..7)];
    match rng.random_range(0..4) {
        0 => hostile(rng),
        1 => serde_json::json!({field: {op: hostile(rng)}}).to_string(),
        2 => serde_json::json!({field: {op: [hostile(rng), 1, null]}}).to_string(),
        _ => serde_json::json!({"$or": [{field: hostile(rng)}, {"$not": {field: {op: 3}}}]})
            .to_string(),
    }
}

fn hostile_order(rng: &mut impl Rng) -> String {
    (0..rng.random_range(0..12))
        .map(|_| {
            let f = [
                "entity.a",
                "id",
                "name",
                "entity.population desc",
                "x y z",
                "\0",
            ][rng.random_range(0..6)];
            f.to_owned()
        })
        .collect::<Vec<_>>()
        .join(",")
}

on_both_backends!(
    malformed_protobuf_is_invalid_argument_with_or_without_a_token,
    oversized_requests_are_resource_exhausted_with_quota_failure,
    nul_in_any_text_is_invalid_argument_naming_the_field,
    hostile_entities_are_invalid_argument_over_the_wire,
    order_by_takes_up_to_eight_fields_on_both_backends_and_refuses_more,
    in_with_the_documented_maximum_of_values_works_on_both_backends,
    forged_page_tokens_are_refused,
    get_record_answers_the_same_for_an_ungranted_key_as_for_a_missing_one,
    watch_streams_are_capped_per_consumer with super::two_watches,
    deleting_a_consumer_or_its_entity_type_ends_its_watch with super::two_watches,
    rotating_or_deleting_a_token_ends_its_contribute_stream,
    connector_and_schema_updates_apply_from_the_streams_next_batch,
    hostile_random_calls_never_get_internal_or_unknown,
);

/// The query timeout needs a store opened with its own options.
mod query_timeout {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let sandbox =
            Sandbox::with_store(Backend::Sqlite, fast_timeout(), str::to_owned, |_| {}).await;
        a_listing_over_the_query_timeout_is_stopped_with_resource_exhausted(&sandbox).await;
        sandbox.stop().await;
    }

    tributary_tests::postgres_test! {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres() {
            let sandbox =
                Sandbox::with_store(Backend::Postgres, fast_timeout(), str::to_owned, |_| {}).await;
            a_listing_over_the_query_timeout_is_stopped_with_resource_exhausted(&sandbox).await;
            sandbox.stop().await;
        }
    }
}

/// PostgreSQL unreachable (a proxy the test cuts, never the shared server): calls answer
/// UNAVAILABLE within the acquire timeout, health says NOT_SERVING, and both recover without a
/// restart once it is back.
mod database_outage {
    use super::*;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tributary_tests::proxy::Proxy;

    async fn health(sandbox: &Sandbox) -> Option<ServingStatus> {
        let answer = HealthClient::new(sandbox.channel())
            .check(HealthCheckRequest {
                service: "tributary.catalog.v1.Catalog".into(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(answer.into_inner().status).ok()
    }

    tributary_tests::postgres_test! {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_unreachable_database_is_unavailable_within_seconds_and_health_follows_it() {
            let target: std::net::SocketAddr = {
                let url = url::Url::parse(&std::env::var("TRIBUTARY_TEST_DATABASE_URL").unwrap()).unwrap();
                let host = url.host_str().unwrap_or("127.0.0.1").replace("localhost", "127.0.0.1");
                format!("{host}:{}", url.port().unwrap_or(5432)).parse().unwrap()
            };
            let proxy = Proxy::start(target).await;
            let via = |url: &str| {
                let mut url = url::Url::parse(url).unwrap();
                url.set_host(Some("127.0.0.1")).unwrap();
                url.set_port(Some(proxy.addr.port())).unwrap();
                url.to_string()
            };
            let options = tributary_store::StoreOptions {
                acquire_timeout: Duration::from_secs(2),
                ..Default::default()
            };
            let sandbox = Sandbox::with_store(Backend::Postgres, options, via, |_| {}).await;
            let mut world = sandbox.country_world().await;
            countries(&mut world, 3).await;
            assert_eq!(health(&sandbox).await, Some(ServingStatus::Serving));

            proxy.cut();
            let started = tokio::time::Instant::now();
            let refused = world.reader.list_records(list("", "")).await.unwrap_err();
            assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
            assert!(started.elapsed() < Duration::from_secs(30), "answered within the acquire timeout, not hanging");
            let not_serving = wait_until(Duration::from_secs(30), || async {
                (health(&sandbox).await == Some(ServingStatus::NotServing)).then_some(())
            })
            .await;
            assert!(not_serving.is_some(), "health follows the database down");

            proxy.restore();
            let serving = wait_until(Duration::from_secs(30), || async {
                (health(&sandbox).await == Some(ServingStatus::Serving)).then_some(())
            })
            .await;
            assert!(serving.is_some(), "health follows the database back");
            let listed = wait_until(Duration::from_secs(30), || {
                let mut reader = world.reader.clone();
                async move { reader.list_records(list("", "")).await.ok() }
            })
            .await
            .expect("calls work again without a restart");
            assert_eq!(listed.into_inner().records.len(), 3, "nothing lost");
            sandbox.stop().await;
        }
    }
}
