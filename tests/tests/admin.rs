//! SPEC.md §4.1, §4.2, §4.5, §8: entity types, connectors, consumers, the admin token, health
//! and reflection, invalid updates and NOT_FOUND details, over real gRPC.

use tonic::Code;
use tonic_types::StatusExt;
use tributary_proto::admin::v1 as admin;
use tributary_proto::contribution::v1::SessionMode;
use tributary_tests::{
    assert_not_found, bad_request_fields, country, json_struct, on_both_backends, Sandbox,
};

fn entity_type(slug: &str, schema: serde_json::Value) -> admin::CreateEntityTypeRequest {
    admin::CreateEntityTypeRequest {
        entity_type: Some(admin::EntityType {
            slug: slug.into(),
            name: "A type".into(),
            schema: Some(json_struct(schema)),
            ..Default::default()
        }),
    }
}

async fn entity_types_are_created_listed_updated_and_deleted(sandbox: &Sandbox) {
    let mut a = sandbox.admin();
    let created = a
        .create_entity_type(entity_type("city", serde_json::json!({"type": "object"})))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(
        created.entity_type.as_ref().map(|e| e.schema_version),
        Some(1)
    );
    let dup = a
        .create_entity_type(entity_type("city", serde_json::json!({"type": "object"})))
        .await
        .expect_err("duplicate");
    assert_eq!(dup.code(), Code::AlreadyExists);
    a.create_entity_type(entity_type(
        "airport",
        serde_json::json!({"type": "object"}),
    ))
    .await
    .expect("create");

    let page = a
        .list_entity_types(admin::ListEntityTypesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        page.entity_types
            .iter()
            .map(|e| e.slug.as_str())
            .collect::<Vec<_>>(),
        ["airport"]
    );
    let page = a
        .list_entity_types(admin::ListEntityTypesRequest {
            page_size: 1,
            page_token: page.next_page_token,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        page.entity_types
            .iter()
            .map(|e| e.slug.as_str())
            .collect::<Vec<_>>(),
        ["city"]
    );

    let mut update = entity_type(
        "city",
        serde_json::json!({"type": "object", "required": ["x"]}),
    )
    .entity_type
    .expect("type");
    update.description = "Cities".into();
    let updated = a
        .update_entity_type(admin::UpdateEntityTypeRequest {
            entity_type: Some(update),
        })
        .await
        .expect("update")
        .into_inner()
        .entity_type
        .expect("type");
    assert_eq!(
        (updated.schema_version, updated.description.as_str()),
        (2, "Cities")
    );

    let missing = a
        .get_entity_type(admin::GetEntityTypeRequest {
            slug: "nope".into(),
        })
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        missing.get_details_resource_info().map(|r| r.resource_type),
        Some("entity_type".to_string())
    );

    a.delete_entity_type(admin::DeleteEntityTypeRequest {
        slug: "airport".into(),
        force: false,
    })
    .await
    .expect("delete empty type");
    assert_eq!(
        a.get_entity_type(admin::GetEntityTypeRequest {
            slug: "airport".into()
        })
        .await
        .expect_err("gone")
        .code(),
        Code::NotFound
    );
}

async fn an_entity_type_with_records_is_deleted_only_with_force(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let s = w.open(SessionMode::Stream).await;
    w.upsert(&s, vec![country("GB", 1)]).await.expect("upsert");
    let mut a = sandbox.admin();
    let refused = a
        .delete_entity_type(admin::DeleteEntityTypeRequest {
            slug: "country".into(),
            force: false,
        })
        .await
        .expect_err("has records");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused.get_details_error_info().map(|i| i.reason),
        Some("ENTITY_TYPE_HAS_RECORDS".to_string())
    );
    a.delete_entity_type(admin::DeleteEntityTypeRequest {
        slug: "country".into(),
        force: true,
    })
    .await
    .expect("forced");
    assert_eq!(
        a.get_entity_type(admin::GetEntityTypeRequest {
            slug: "country".into()
        })
        .await
        .expect_err("gone")
        .code(),
        Code::NotFound
    );
}

async fn invalid_entity_types_are_refused_with_violations(sandbox: &Sandbox) {
    let mut a = sandbox.admin();
    let status = a
        .create_entity_type(entity_type(
            "Bad_Slug",
            serde_json::json!({"type": "no-such-type"}),
        ))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = bad_request_fields(&status)
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert!(fields.iter().any(|f| f == "entity_type.slug"), "{fields:?}");
    assert!(
        fields.iter().any(|f| f.starts_with("entity_type.schema")),
        "{fields:?}"
    );
    // Remote references are never fetched: the schema is refused instead.
    let status = a
        .create_entity_type(entity_type(
            "remote",
            serde_json::json!({"$ref": "http://127.0.0.1:9/schema.json"}),
        ))
        .await
        .expect_err("remote $ref");
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn a_schema_update_applies_to_later_writes_and_can_be_dry_run(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let s = w.open(SessionMode::Stream).await;
    w.upsert(&s, vec![country("GB", 1), country("FR", 2000)])
        .await
        .expect("upsert");
    let mut a = sandbox.admin();
    let stricter = serde_json::json!({"type": "object", "properties": {"population": {"type": "integer", "maximum": 1000}}});
    let check = a
        .validate_entity_type(admin::ValidateEntityTypeRequest {
            slug: "country".into(),
            schema: Some(json_struct(stricter.clone())),
        })
        .await
        .expect("dry run")
        .into_inner();
    assert_eq!((check.records_checked, check.records_invalid), (2, 1));
    assert!(
        check.examples[0].starts_with("FR: "),
        "{:?}",
        check.examples
    );
    a.update_entity_type(admin::UpdateEntityTypeRequest {
        entity_type: Some(admin::EntityType {
            slug: "country".into(),
            name: "Country".into(),
            schema: Some(json_struct(stricter)),
            ..Default::default()
        }),
    })
    .await
    .expect("update schema");
    let status = w
        .upsert(&s, vec![country("DE", 5000)])
        .await
        .expect_err("new schema applies");
    assert_eq!(
        bad_request_fields(&status)[0].0,
        "records[0].entity.population (id \"DE\")"
    );
}

async fn connectors_are_managed_and_tokens_shown_once(sandbox: &Sandbox) {
    sandbox.create_country_type().await;
    let mut a = sandbox.admin();
    let created = a
        .create_connector(admin::CreateConnectorRequest {
            connector: Some(admin::Connector {
                name: "Feed".into(),
                entity_type: "country".into(),
                reject_removals_above_percent: Some(20.0),
                ..Default::default()
            }),
        })
        .await
        .expect("create")
        .into_inner();
    let connector = created.connector.expect("connector");
    assert_eq!(connector.id.len(), 40);
    assert!(connector.id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!created.token.is_empty());
    assert_eq!(connector.write_policy(), admin::WritePolicy::Importer);

    let fetched = a
        .get_connector(admin::GetConnectorRequest {
            id: connector.id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .connector
        .expect("connector");
    assert_eq!(fetched.reject_removals_above_percent, Some(20.0));

    let updated = a
        .update_connector(admin::UpdateConnectorRequest {
            connector: Some(admin::Connector {
                id: connector.id.clone(),
                name: "Renamed".into(),
                write_policy: admin::WritePolicy::ImporterCreateOnly as i32,
                ..Default::default()
            }),
        })
        .await
        .expect("update")
        .into_inner()
        .connector
        .expect("connector");
    assert_eq!(
        (
            updated.name.as_str(),
            updated.write_policy(),
            updated.entity_type.as_str()
        ),
        ("Renamed", admin::WritePolicy::ImporterCreateOnly, "country")
    );

    let missing_type = a
        .create_connector(admin::CreateConnectorRequest {
            connector: Some(admin::Connector {
                name: "x".into(),
                entity_type: "nope".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("unknown entity type");
    assert_eq!(missing_type.code(), Code::NotFound);

    let listed = a
        .list_connectors(admin::ListConnectorsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .connectors;
    assert_eq!(listed.len(), 1);

    // Deleting a connector with its records removes them; its token stops working.
    let mut c = sandbox.contributor(&created.token);
    let s = c
        .open_session(tributary_proto::contribution::v1::OpenSessionRequest {
            mode: SessionMode::Stream as i32,
        })
        .await
        .expect("open")
        .into_inner()
        .session_id;
    c.upsert(tributary_proto::contribution::v1::UpsertRequest {
        session_id: s,
        records: vec![country("GB", 1)],
    })
    .await
    .expect("upsert");
    let deleted = a
        .delete_connector(admin::DeleteConnectorRequest {
            id: connector.id.clone(),
            delete_records: true,
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.records_deleted, 1);
    let status = c
        .open_session(tributary_proto::contribution::v1::OpenSessionRequest {
            mode: SessionMode::Stream as i32,
        })
        .await
        .expect_err("token gone");
    assert_eq!(status.code(), Code::Unauthenticated);
}

async fn consumers_read_only_granted_entity_types(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let s = w.open(SessionMode::Stream).await;
    w.upsert(&s, vec![country("GB", 1)]).await.expect("upsert");
    let mut a = sandbox.admin();
    a.create_entity_type(entity_type("city", serde_json::json!({"type": "object"})))
        .await
        .expect("create");
    let city_only = sandbox.create_consumer(&["city"]).await;
    let mut reader = sandbox.reader(&city_only);
    let status = reader
        .list_records(tributary_proto::catalog::v1::ListRecordsRequest {
            entity_type: "country".into(),
            ..Default::default()
        })
        .await
        .expect_err("ungranted");
    assert_eq!(status.code(), Code::PermissionDenied);
    let types = reader
        .list_entity_types(tributary_proto::catalog::v1::ListEntityTypesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .entity_types;
    assert_eq!(
        types.iter().map(|t| t.slug.as_str()).collect::<Vec<_>>(),
        ["city"]
    );
    let status = sandbox
        .reader("tbr_wrong")
        .list_entity_types(tributary_proto::catalog::v1::ListEntityTypesRequest::default())
        .await
        .expect_err("wrong token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let consumers = a
        .list_consumers(admin::ListConsumersRequest::default())
        .await
        .expect("list")
        .into_inner()
        .consumers;
    assert_eq!(consumers.len(), 2);
    let id = consumers
        .iter()
        .find(|c| c.entity_types == ["city"])
        .expect("city consumer")
        .id
        .clone();
    a.delete_consumer(admin::DeleteConsumerRequest { id })
        .await
        .expect("delete");
    let status = reader
        .list_entity_types(tributary_proto::catalog::v1::ListEntityTypesRequest::default())
        .await
        .expect_err("deleted");
    assert_eq!(status.code(), Code::Unauthenticated);
}

async fn admin_calls_need_the_admin_token(sandbox: &Sandbox) {
    let mut wrong = tributary_client::admin(sandbox.channel(), "tba_wrong");
    let status = wrong
        .list_entity_types(admin::ListEntityTypesRequest::default())
        .await
        .expect_err("wrong token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let w = sandbox.country_world().await;
    let mut as_connector = tributary_client::admin(sandbox.channel(), &w.token);
    let status = as_connector
        .list_connectors(admin::ListConnectorsRequest::default())
        .await
        .expect_err("connector token");
    assert_eq!(status.code(), Code::Unauthenticated);
}

async fn every_service_reports_health_and_reflection_lists_them(sandbox: &Sandbox) {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let mut health = HealthClient::new(sandbox.channel());
    for service in [
        "",
        "tributary.contribution.v1.Contribution",
        "tributary.catalog.v1.Catalog",
        "tributary.admin.v1.Admin",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut reflection = ServerReflectionClient::new(sandbox.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("reflection answer")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "tributary.contribution.v1.Contribution",
        "tributary.catalog.v1.Catalog",
        "tributary.admin.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
}

/// The field names of a status's `BadRequest` violations.
fn violated_fields(status: &tonic::Status) -> Vec<String> {
    bad_request_fields(status)
        .into_iter()
        .map(|(f, _)| f)
        .collect()
}

async fn connector_updates_with_invalid_values_are_refused_with_violations(sandbox: &Sandbox) {
    sandbox.create_country_type().await;
    a_second_type(sandbox).await;
    let (id, _) = sandbox
        .create_connector("country", |c| c.reject_removals_above_percent = Some(20.0))
        .await;
    let mut a = sandbox.admin();
    let valid = admin::Connector {
        id: id.clone(),
        name: "Feed".into(),
        ..Default::default()
    };
    let cases: Vec<(admin::Connector, &[&str])> = vec![
        (
            admin::Connector {
                name: String::new(),
                ..valid.clone()
            },
            &["connector.name"],
        ),
        (
            admin::Connector {
                name: "x".repeat(201),
                ..valid.clone()
            },
            &["connector.name"],
        ),
        (
            admin::Connector {
                reject_removals_above_percent: Some(150.0),
                rate_limit: Some(0),
                ..valid.clone()
            },
            &[
                "connector.reject_removals_above_percent",
                "connector.rate_limit",
            ],
        ),
        (
            admin::Connector {
                reject_removals_above_percent: Some(-1.0),
                ..valid.clone()
            },
            &["connector.reject_removals_above_percent"],
        ),
        (
            admin::Connector {
                reject_removals_above_percent: Some(f64::NAN),
                ..valid.clone()
            },
            &["connector.reject_removals_above_percent"],
        ),
        (
            admin::Connector {
                write_policy: 42,
                ..valid.clone()
            },
            &["connector.write_policy"],
        ),
        (
            admin::Connector {
                entity_type: "city".into(),
                ..valid.clone()
            },
            &["connector.entity_type"],
        ),
    ];
    for (connector, expected) in cases {
        let status = a
            .update_connector(admin::UpdateConnectorRequest {
                connector: Some(connector.clone()),
            })
            .await
            .expect_err("invalid update");
        assert_eq!(status.code(), Code::InvalidArgument, "{connector:?}");
        let fields = violated_fields(&status);
        for field in expected {
            assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
        }
    }
    let status = a
        .update_connector(admin::UpdateConnectorRequest { connector: None })
        .await
        .expect_err("no connector");
    assert_eq!(violated_fields(&status), ["connector"]);
    let status = a
        .update_connector(admin::UpdateConnectorRequest {
            connector: Some(admin::Connector {
                id: "0".repeat(40),
                ..valid
            }),
        })
        .await
        .expect_err("unknown connector");
    assert_eq!(status.code(), Code::NotFound);
    // Nothing of the refused updates stuck.
    let kept = a
        .get_connector(admin::GetConnectorRequest { id })
        .await
        .expect("get")
        .into_inner()
        .connector
        .expect("connector");
    assert_eq!(
        (
            kept.name.as_str(),
            kept.reject_removals_above_percent,
            kept.entity_type.as_str()
        ),
        ("test connector", Some(20.0), "country")
    );
}

async fn a_second_type(sandbox: &Sandbox) {
    sandbox
        .admin()
        .create_entity_type(entity_type("city", serde_json::json!({"type": "object"})))
        .await
        .expect("create city");
}

async fn entity_type_updates_with_invalid_values_are_refused_with_violations(sandbox: &Sandbox) {
    sandbox.create_country_type().await;
    let mut a = sandbox.admin();
    let valid = admin::EntityType {
        slug: "country".into(),
        name: "Country".into(),
        schema: Some(json_struct(serde_json::json!({"type": "object"}))),
        ..Default::default()
    };
    let cases: Vec<(admin::EntityType, &str)> = vec![
        (
            admin::EntityType {
                name: String::new(),
                ..valid.clone()
            },
            "entity_type.name",
        ),
        (
            admin::EntityType {
                schema: Some(json_struct(serde_json::json!({"type": "no-such-type"}))),
                ..valid.clone()
            },
            "entity_type.schema",
        ),
        (
            admin::EntityType {
                schema: Some(json_struct(serde_json::json!({"minimum": "ten"}))),
                ..valid.clone()
            },
            "entity_type.schema",
        ),
        (
            admin::EntityType {
                slug: "Country".into(),
                ..valid.clone()
            },
            "entity_type.slug",
        ),
    ];
    for (update, expected) in cases {
        let status = a
            .update_entity_type(admin::UpdateEntityTypeRequest {
                entity_type: Some(update.clone()),
            })
            .await
            .expect_err("invalid update");
        assert_eq!(status.code(), Code::InvalidArgument, "{update:?}");
        let fields = violated_fields(&status);
        assert!(
            fields.iter().any(|f| f.starts_with(expected)),
            "{expected} in {fields:?}"
        );
    }
    let status = a
        .update_entity_type(admin::UpdateEntityTypeRequest { entity_type: None })
        .await
        .expect_err("no entity type");
    assert_eq!(violated_fields(&status), ["entity_type"]);
    let status = a
        .update_entity_type(admin::UpdateEntityTypeRequest {
            entity_type: Some(admin::EntityType {
                slug: "planet".into(),
                ..valid
            }),
        })
        .await
        .expect_err("unknown type");
    assert_eq!(status.code(), Code::NotFound);
    // Nothing of the refused updates stuck.
    let kept = a
        .get_entity_type(admin::GetEntityTypeRequest {
            slug: "country".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .entity_type
        .expect("type");
    assert_eq!((kept.name.as_str(), kept.schema_version), ("Country", 1));
}

async fn consumers_with_invalid_values_are_refused(sandbox: &Sandbox) {
    sandbox.create_country_type().await;
    let mut a = sandbox.admin();
    let create = |name: &str, types: &[&str]| admin::CreateConsumerRequest {
        consumer: Some(admin::Consumer {
            name: name.into(),
            entity_types: types.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }),
    };
    let status = a
        .create_consumer(create("", &["country", "Bad Slug"]))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        ["consumer.name", "consumer.entity_types[1]"]
    );
    let status = a
        .create_consumer(create("reader", &["country", "planet"]))
        .await
        .expect_err("unknown type");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.get_details_resource_info().map(|r| r.resource_name),
        Some("planet".to_owned())
    );
    let status = a
        .create_consumer(admin::CreateConsumerRequest { consumer: None })
        .await
        .expect_err("no consumer");
    assert_eq!(violated_fields(&status), ["consumer"]);
    let consumers = a
        .list_consumers(admin::ListConsumersRequest::default())
        .await
        .expect("list")
        .into_inner()
        .consumers;
    assert!(consumers.is_empty(), "none was created");
}

/// SPEC.md §8: NOT_FOUND carries `ResourceInfo` naming the resource's type and id.
async fn not_found_details_name_the_resource(sandbox: &Sandbox) {
    let w = sandbox.country_world().await;
    let mut a = sandbox.admin();
    let unknown = "0".repeat(40);
    let connector = a
        .get_connector(admin::GetConnectorRequest {
            id: unknown.clone(),
        })
        .await
        .map(|_| ());
    let rotate = a
        .rotate_connector_token(admin::RotateConnectorTokenRequest {
            id: unknown.clone(),
        })
        .await
        .map(|_| ());
    let delete = a
        .delete_connector(admin::DeleteConnectorRequest {
            id: unknown.clone(),
            delete_records: true,
        })
        .await
        .map(|_| ());
    let consumer = a
        .get_consumer(admin::GetConsumerRequest {
            id: unknown.clone(),
        })
        .await
        .map(|_| ());
    let import_result = a
        .get_import_result(admin::GetImportResultRequest {
            id: unknown.clone(),
        })
        .await
        .map(|_| ());
    let source = a
        .get_source(admin::GetSourceRequest {
            id: unknown.clone(),
        })
        .await
        .map(|_| ());
    let edit = a
        .edit_record(admin::EditRecordRequest {
            key: unknown.clone(),
            name: Some("x".into()),
            ..Default::default()
        })
        .await
        .map(|_| ());
    let record = w
        .reader
        .clone()
        .get_record(tributary_proto::catalog::v1::GetRecordRequest {
            key: unknown.clone(),
        })
        .await
        .map(|_| ());
    for (rpc, result, kind) in [
        ("GetConnector", connector, "connector"),
        ("RotateConnectorToken", rotate, "connector"),
        ("DeleteConnector", delete, "connector"),
        ("GetConsumer", consumer, "consumer"),
        ("GetImportResult", import_result, "import_result"),
        ("GetSource", source, "source"),
        ("EditRecord", edit, "record"),
        ("GetRecord", record, "record"),
    ] {
        assert_not_found(rpc, result, kind, &unknown);
    }
}

async fn editing_a_malformed_key_is_invalid_argument(sandbox: &Sandbox) {
    sandbox.country_world().await;
    for key in ["", "nope", &"A".repeat(40), &"0".repeat(41)] {
        let status = sandbox
            .admin()
            .edit_record(admin::EditRecordRequest {
                key: key.into(),
                name: Some("x".into()),
                ..Default::default()
            })
            .await
            .expect_err("malformed key");
        assert_eq!(status.code(), Code::InvalidArgument, "{key:?}");
        assert_eq!(violated_fields(&status), ["key"], "{key:?}");
    }
}

async fn admin_list_page_sizes_below_zero_are_invalid_and_above_1000_capped(sandbox: &Sandbox) {
    sandbox.country_world().await;
    let a = sandbox.admin();
    for page_size in [-1, 5000] {
        let results: Vec<(&str, Result<usize, tonic::Status>)> = vec![
            (
                "ListEntityTypes",
                a.clone()
                    .list_entity_types(admin::ListEntityTypesRequest {
                        page_size,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().entity_types.len()),
            ),
            (
                "ListConnectors",
                a.clone()
                    .list_connectors(admin::ListConnectorsRequest {
                        page_size,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().connectors.len()),
            ),
            (
                "ListConsumers",
                a.clone()
                    .list_consumers(admin::ListConsumersRequest {
                        page_size,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().consumers.len()),
            ),
            (
                "ListImportResults",
                a.clone()
                    .list_import_results(admin::ListImportResultsRequest {
                        page_size,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().import_results.len()),
            ),
            (
                "ListSources",
                a.clone()
                    .list_sources(admin::ListSourcesRequest {
                        page_size,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().sources.len()),
            ),
        ];
        for (rpc, result) in results {
            if page_size < 0 {
                let status = result.expect_err(rpc);
                assert_eq!(status.code(), Code::InvalidArgument, "{rpc}");
                assert_eq!(violated_fields(&status), ["page_size"], "{rpc}");
            } else {
                // Capped at 1,000 (the core's page_size() unit test shows the cap itself).
                let n = result.unwrap_or_else(|s| panic!("{rpc}: {s}"));
                assert!(n <= 1, "{rpc}: {n}");
            }
        }
    }
}

on_both_backends!(
    entity_types_are_created_listed_updated_and_deleted,
    an_entity_type_with_records_is_deleted_only_with_force,
    invalid_entity_types_are_refused_with_violations,
    a_schema_update_applies_to_later_writes_and_can_be_dry_run,
    connectors_are_managed_and_tokens_shown_once,
    consumers_read_only_granted_entity_types,
    admin_calls_need_the_admin_token,
    every_service_reports_health_and_reflection_lists_them,
    connector_updates_with_invalid_values_are_refused_with_violations,
    entity_type_updates_with_invalid_values_are_refused_with_violations,
    consumers_with_invalid_values_are_refused,
    not_found_details_name_the_resource,
    editing_a_malformed_key_is_invalid_argument,
    admin_list_page_sizes_below_zero_are_invalid_and_above_1000_capped,
);
