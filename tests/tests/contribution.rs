//! SPEC.md §1.1 and §2.2: outcomes, unchanged records, atomic batches, session permissions,
//! the replace removal guard, idle expiry (of accrue and replace sessions) and import results.

use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;
use tributary_proto::admin::v1 as admin;
use tributary_proto::contribution::v1::{Outcome, SessionMode};
use tributary_tests::{
    bad_request_fields, country, country_entity, json_struct, on_both_backends, wait_until, Sandbox,
};

async fn unchanged_records_keep_version_and_updated_at(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let s = w.open(SessionMode::Stream).await;
    let first = w.upsert(&s, vec![country("GB", 1)]).await.expect("upsert");
    assert_eq!(first[0].outcome(), Outcome::Created);
    assert_eq!(
        first[0].key,
        tributary_core::ids::record_key("country", &w.connector, "GB")
    );
    let before = w.get("GB").await.expect("GB visible");

    // The same record with its entity's keys in another order: same canonical JSON, same checksum.
    let mut entity: Vec<(String, serde_json::Value)> = country_entity("XX", 1)
        .as_object()
        .expect("object")
        .clone()
        .into_iter()
        .collect();
    entity.reverse();
    let reordered = serde_json::Value::Object(entity.into_iter().collect());
    let mut again = country("GB", 1);
    again.entity = Some(json_struct(reordered));
    let outcomes = w.upsert(&s, vec![again]).await.expect("upsert again");
    assert_eq!(outcomes[0].outcome(), Outcome::Unchanged);
    let after = w.get("GB").await.expect("GB visible");
    assert_eq!(
        (after.version, after.updated_at, &after.checksum),
        (before.version, before.updated_at, &before.checksum)
    );

    // Unchanged in an accrue session too: commit rewrites nothing.
    let a = w.open(SessionMode::Accrue).await;
    let staged = w.upsert(&a, vec![country("GB", 1)]).await.expect("upsert");
    assert_eq!(staged[0].outcome(), Outcome::Unchanged);
    let totals = w
        .close(&a, true, false)
        .await
        .expect("commit")
        .totals
        .expect("totals");
    assert_eq!((totals.unchanged, totals.updated), (1, 0));
    let after_commit = w.get("GB").await.expect("GB visible");
    assert_eq!(
        (after_commit.version, after_commit.updated_at),
        (before.version, before.updated_at)
    );

    // A real change moves both.
    let changed = w
        .upsert(&s, vec![country("GB", 2)])
        .await
        .expect("upsert change");
    assert_eq!(changed[0].outcome(), Outcome::Updated);
    let updated = w.get("GB").await.expect("GB visible");
    assert_eq!(updated.version, before.version + 1);
    let micros = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
    };
    assert!(micros(&updated.updated_at) > micros(&before.updated_at));
}

async fn a_supplied_checksum_is_used_instead_of_the_computed_one(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let s = w.open(SessionMode::Stream).await;
    let mut r = country("GB", 1);
    r.checksum = "upstream-v1".into();
    w.upsert(&s, vec![r]).await.expect("upsert");
    assert_eq!(w.get("GB").await.expect("GB").checksum, "upstream-v1");
    // Different payload, same supplied checksum: the contributor says nothing changed.
    let mut r = country("GB", 2);
    r.checksum = "upstream-v1".into();
    assert_eq!(
        w.upsert(&s, vec![r]).await.expect("upsert")[0].outcome(),
        Outcome::Unchanged
    );
    assert_eq!(
        tributary_tests::entity_number(&w.get("GB").await.expect("GB"), "population"),
        1.0
    );
    // Without a checksum, Tributary computes BLAKE3 of the canonical JSON.
    w.upsert(&s, vec![country("FR", 1)]).await.expect("upsert");
    let fr = w.get("FR").await.expect("FR");
    assert_eq!(fr.checksum.len(), 64);
}

async fn an_invalid_batch_applies_nothing_and_lists_every_violation(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let s = w.open(SessionMode::Stream).await;
    let mut bad_population = country("FR", 1);
    bad_population.entity = Some(json_struct(
        serde_json::json!({"code": "FR", "population": "many"}),
    ));
    let mut no_name = country("DE", 1);
    no_name.name = String::new();
    let mut long_id = country("IT", 1);
    long_id.id = "x".repeat(65);
    let status = w
        .upsert(&s, vec![country("GB", 1), bad_population, no_name, long_id])
        .await
        .expect_err("invalid batch refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = bad_request_fields(&status);
    let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields.len(), 3, "one violation per problem: {fields:?}");
    assert!(
        names.contains(&"records[1].entity.population (id \"FR\")"),
        "{names:?}"
    );
    assert!(names.contains(&"records[2].name (id \"DE\")"), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("records[3].id")),
        "{names:?}"
    );
    assert!(
        status.message().contains("records[1].entity.population"),
        "message says what: {}",
        status.message()
    );
    assert!(
        w.visible().await.is_empty(),
        "nothing of the batch applied, not even the valid GB"
    );

    // A missing entity, and an instance that is not an object, in an accrue session.
    let a = w.open(SessionMode::Accrue).await;
    let mut no_entity = country("ES", 1);
    no_entity.entity = None;
    let status = w.upsert(&a, vec![no_entity]).await.expect_err("refused");
    assert_eq!(
        bad_request_fields(&status)[0].0,
        "records[0].entity (id \"ES\")"
    );
    w.close(&a, true, false).await.expect("commit");
    assert!(w.visible().await.is_empty());
}

async fn an_oversized_batch_is_resource_exhausted(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let s = w.open(SessionMode::Stream).await;
    let records = (0..11).map(|i| country(&format!("C{i}"), 1)).collect();
    let status = w.upsert(&s, records).await.expect_err("too many records");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.get_details_quota_failure().is_some(),
        "QuotaFailure details"
    );
}

async fn oversized_delete_and_diff_batches_are_resource_exhausted(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let s = w.open(SessionMode::Stream).await;
    w.upsert(&s, vec![country("C0", 1)]).await.expect("upsert");
    let ids: Vec<String> = (0..11).map(|i| format!("C{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let status = w.delete(&s, &id_refs).await.expect_err("too many ids");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let quota = status
        .get_details_quota_failure()
        .expect("QuotaFailure details");
    assert_eq!(quota.violations[0].subject, "ids");
    assert!(w.get("C0").await.is_some(), "nothing of the batch applied");

    let status = w
        .contributor
        .diff(tributary_proto::contribution::v1::DiffRequest {
            session_id: s.clone(),
            digests: ids
                .iter()
                .map(|id| tributary_proto::contribution::v1::Digest {
                    id: id.clone(),
                    checksum: "x".into(),
                })
                .collect(),
        })
        .await
        .expect_err("too many digests");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let quota = status
        .get_details_quota_failure()
        .expect("QuotaFailure details");
    assert_eq!(quota.violations[0].subject, "digests");
    // At the limit both are accepted.
    w.delete(&s, &id_refs[..10])
        .await
        .expect("10 ids are allowed");
}

/// The known answers of `tests/vectors/checksums.json` (SPEC.md §1.1), computed with Python's
/// `rfc8785` and `blake3`: the checksum the server stores for each vector's record.
async fn computed_checksums_match_the_known_answers_of_the_vectors(sandbox: &Sandbox) {
    let file: serde_json::Value = serde_json::from_str(include_str!("../vectors/checksums.json"))
        .expect("checksums.json is JSON");
    let vectors = file["vectors"].as_array().expect("vectors");
    sandbox
        .admin()
        .create_entity_type(admin::CreateEntityTypeRequest {
            entity_type: Some(admin::EntityType {
                slug: "vector".into(),
                name: "Checksum vectors".into(),
                schema: Some(json_struct(serde_json::json!({"type": "object"}))),
                ..Default::default()
            }),
        })
        .await
        .expect("entity type");
    let (connector, token) = sandbox.create_connector("vector", |_| {}).await;
    let reader_token = sandbox.create_consumer(&["vector"]).await;
    let mut w = tributary_tests::World {
        connector,
        contributor: sandbox.contributor(&token),
        reader: sandbox.reader(&reader_token),
        token,
    };
    let session = w.open(SessionMode::Stream).await;
    let records = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| tributary_proto::contribution::v1::Record {
            id: format!("v{i}"),
            name: v["record"]["name"].as_str().expect("name").into(),
            entity: Some(json_struct(v["record"]["entity"].clone())),
            instance: v["record"].get("instance").cloned().map(json_struct),
            checksum: String::new(),
        })
        .collect();
    w.upsert(&session, records)
        .await
        .expect("upsert the vectors");
    let stored = tributary_tests::list_all(&mut w.reader, "vector").await;
    for (i, v) in vectors.iter().enumerate() {
        assert_eq!(
            stored[&format!("v{i}")].checksum,
            v["checksum"].as_str().expect("checksum"),
            "checksum of vector {}",
            v["case"]
        );
    }
}

async fn superseded_sessions_are_permission_denied(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let old = w.open(SessionMode::Accrue).await;
    w.upsert(&old, vec![country("GB", 1)])
        .await
        .expect("upsert");
    let new = w
        .contributor
        .open_session(tributary_proto::contribution::v1::OpenSessionRequest {
            mode: SessionMode::Replace as i32,
        })
        .await
        .expect("open")
        .into_inner();
    assert_eq!(new.superseded_session_ids, vec![old.clone()]);
    w.upsert(&new.session_id, vec![country("FR", 1)])
        .await
        .expect("new session works");
    assert_eq!(
        w.upsert(&old, vec![country("DE", 1)])
            .await
            .expect_err("old refused")
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        w.close(&old, true, false)
            .await
            .expect_err("old refused")
            .code(),
        Code::PermissionDenied
    );
    w.close(&new.session_id, true, false)
        .await
        .expect("commit new");
    assert_eq!(
        w.visible().await.keys().collect::<Vec<_>>(),
        ["FR"],
        "the superseded session's GB was discarded"
    );
    // A stream session does not supersede anything.
    let a = w.open(SessionMode::Accrue).await;
    let _stream = w.open(SessionMode::Stream).await;
    w.upsert(&a, vec![country("GB", 1)])
        .await
        .expect("accrue still open");
}

async fn unknown_closed_and_foreign_sessions_are_permission_denied(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let open = w.open(SessionMode::Accrue).await;
    w.upsert(&open, vec![country("GB", 1)])
        .await
        .expect("upsert");

    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        w.upsert(&unknown, vec![country("X", 1)])
            .await
            .expect_err("unknown")
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        w.upsert("not-a-uuid", vec![country("X", 1)])
            .await
            .expect_err("garbage")
            .code(),
        Code::PermissionDenied
    );

    let closed = w.open(SessionMode::Stream).await;
    w.close(&closed, true, false).await.expect("close");
    assert_eq!(
        w.upsert(&closed, vec![country("X", 1)])
            .await
            .expect_err("closed")
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        w.delete(&closed, &["GB"]).await.expect_err("closed").code(),
        Code::PermissionDenied
    );

    let (_, other_token) = sandbox.create_connector("country", |_| {}).await;
    let mut other = sandbox.contributor(&other_token);
    let status = other
        .upsert(tributary_proto::contribution::v1::UpsertRequest {
            session_id: open.clone(),
            records: vec![country("Y", 1)],
        })
        .await
        .expect_err("another connector's session");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = other
        .close_session(tributary_proto::contribution::v1::CloseSessionRequest {
            session_id: open.clone(),
            commit: false,
            force: false,
        })
        .await
        .expect_err("another connector's session");
    assert_eq!(status.code(), Code::PermissionDenied);

    // The open session is unaffected by all of the above.
    w.close(&open, true, false).await.expect("commit");
    assert_eq!(w.visible().await.keys().collect::<Vec<_>>(), ["GB"]);
}

async fn a_wrong_or_missing_token_is_unauthenticated(sandbox: &Sandbox) {
    let w = sandbox.country_world().await;
    let mut wrong = sandbox.contributor("tbc_not-a-real-token");
    let status = wrong
        .open_session(tributary_proto::contribution::v1::OpenSessionRequest {
            mode: SessionMode::Stream as i32,
        })
        .await
        .expect_err("wrong token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut none = tributary_proto::contribution::v1::contribution_client::ContributionClient::new(
        sandbox.channel(),
    );
    let status = none
        .open_session(tributary_proto::contribution::v1::OpenSessionRequest {
            mode: SessionMode::Stream as i32,
        })
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    // A consumer token is not a connector token.
    let mut reader_as_contributor =
        sandbox.contributor(&sandbox.create_consumer(&["country"]).await);
    let status = reader_as_contributor
        .open_session(tributary_proto::contribution::v1::OpenSessionRequest {
            mode: SessionMode::Stream as i32,
        })
        .await
        .expect_err("consumer token");
    assert_eq!(status.code(), Code::Unauthenticated);
    // After rotation the old token stops working at once.
    let rotated = sandbox
        .admin()
        .rotate_connector_token(admin::RotateConnectorTokenRequest {
            id: w.connector.clone(),
        })
        .await
        .expect("rotate")
        .into_inner()
        .token;
    let mut old = sandbox.contributor(&w.token);
    let status = old
        .open_session(tributary_proto::contribution::v1::OpenSessionRequest {
            mode: SessionMode::Stream as i32,
        })
        .await
        .expect_err("old token");
    assert_eq!(status.code(), Code::Unauthenticated);
    sandbox
        .contributor(&rotated)
        .open_session(tributary_proto::contribution::v1::OpenSessionRequest {
            mode: SessionMode::Stream as i32,
        })
        .await
        .expect("new token works");
}

async fn the_replace_guard_refuses_a_large_sweep_until_forced(sandbox: &Sandbox) {
    sandbox.create_country_type().await;
    let (connector, token) = sandbox
        .create_connector("country", |c| c.reject_removals_above_percent = Some(50.0))
        .await;
    let reader_token = sandbox.create_consumer(&["country"]).await;
    let mut w = tributary_tests::World {
        connector,
        contributor: sandbox.contributor(&token),
        reader: sandbox.reader(&reader_token),
        token,
    };
    let s = w.open(SessionMode::Stream).await;
    w.upsert(&s, (0..10).map(|i| country(&format!("C{i}"), i)).collect())
        .await
        .expect("load 10");

    let r = w.open(SessionMode::Replace).await;
    w.upsert(&r, vec![country("C0", 0), country("C1", 1)])
        .await
        .expect("keep 2");
    let status = w
        .close(&r, true, false)
        .await
        .expect_err("guard refuses 8 of 10");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "SWEEP_REFUSED");
    assert_eq!(
        info.metadata.get("would_delete").map(String::as_str),
        Some("8")
    );
    assert_eq!(info.metadata.get("total").map(String::as_str), Some("10"));
    assert_eq!(w.visible().await.len(), 10, "nothing swept");

    // The session is still open: it takes more records, and force commits it.
    w.upsert(&r, vec![country("C2", 2)])
        .await
        .expect("session still open");
    let totals = w
        .close(&r, true, true)
        .await
        .expect("forced commit")
        .totals
        .expect("totals");
    assert_eq!(totals.swept, 7);
    assert_eq!(
        w.visible().await.keys().collect::<Vec<_>>(),
        ["C0", "C1", "C2"]
    );

    // Under the limit, no force is needed.
    let r = w.open(SessionMode::Replace).await;
    w.upsert(&r, vec![country("C0", 0), country("C1", 1)])
        .await
        .expect("keep 2 of 3");
    assert_eq!(
        w.close(&r, true, false)
            .await
            .expect("commit")
            .totals
            .expect("totals")
            .swept,
        1
    );
}

/// The idle timeout of the idle-expiry tests: so long that nothing expires by itself, however
/// slow the machine. The tests age a session past it (its last activity moved back in the
/// database) instead of waiting, so no step of theirs races a timer.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

fn idle_expiry(o: &mut tributary::server::ServerOptions) {
    o.limits.session_idle_timeout = IDLE_TIMEOUT;
    o.reaper_interval = Duration::from_millis(100);
}

/// Ages `session` past the idle timeout and waits for the reaper's import result of it.
async fn idle_past_the_timeout(
    sandbox: &Sandbox,
    connector: &str,
    session: &str,
) -> admin::ImportResult {
    sandbox
        .db()
        .backdate_session(session, 2 * IDLE_TIMEOUT)
        .await;
    let admin = sandbox.admin();
    wait_until(Duration::from_secs(60), || {
        let mut admin = admin.clone();
        async move {
            admin
                .list_import_results(admin::ListImportResultsRequest {
                    connector: connector.into(),
                    ..Default::default()
                })
                .await
                .expect("list import results")
                .into_inner()
                .import_results
                .into_iter()
                .find(|r| r.session_id == session)
        }
    })
    .await
    .unwrap_or_else(|| panic!("the reaper never rolled session {session} back"))
}

async fn idle_accrue_sessions_are_rolled_back(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let s = w.open(SessionMode::Accrue).await;
    w.upsert(&s, vec![country("GB", 1)]).await.expect("upsert");
    let stream = w.open(SessionMode::Stream).await;
    sandbox
        .db()
        .backdate_session(&stream, 2 * IDLE_TIMEOUT)
        .await;
    let result = idle_past_the_timeout(sandbox, &w.connector, &s).await;
    assert_eq!(result.status(), admin::ImportStatus::Canceled);
    assert_eq!(
        w.upsert(&s, vec![]).await.expect_err("expired").code(),
        Code::PermissionDenied
    );
    assert!(
        w.visible().await.is_empty(),
        "its data was never made visible"
    );
    // Stream sessions never expire, however long idle.
    w.upsert(&stream, vec![country("FR", 1)])
        .await
        .expect("stream session still open");
}

async fn idle_replace_sessions_are_rolled_back_and_previous_data_persists(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let load = w.open(SessionMode::Stream).await;
    w.upsert(&load, vec![country("GB", 1), country("FR", 1)])
        .await
        .expect("previous data");
    let r = w.open(SessionMode::Replace).await;
    w.upsert(&r, vec![country("DE", 1)]).await.expect("upsert");
    let result = idle_past_the_timeout(sandbox, &w.connector, &r).await;
    assert_eq!(result.status(), admin::ImportStatus::Canceled);
    assert_eq!(
        w.close(&r, true, false).await.expect_err("expired").code(),
        Code::PermissionDenied,
        "an expired replace session cannot commit"
    );
    assert_eq!(
        w.visible().await.keys().collect::<Vec<_>>(),
        ["FR", "GB"],
        "previous data untouched, the session's DE never visible"
    );
    // The connector is free to replace again.
    let again = w.open(SessionMode::Replace).await;
    w.upsert(&again, vec![country("DE", 1)])
        .await
        .expect("upsert");
    w.close(&again, true, false).await.expect("commit");
    assert_eq!(w.visible().await.keys().collect::<Vec<_>>(), ["DE"]);
}

async fn closing_accrue_and_replace_sessions_writes_import_results(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let a = w.open(SessionMode::Accrue).await;
    w.upsert(&a, vec![country("GB", 1), country("FR", 1)])
        .await
        .expect("upsert");
    let committed = w.close(&a, true, false).await.expect("commit");
    let r = w.open(SessionMode::Replace).await;
    w.upsert(&r, vec![country("GB", 1)]).await.expect("upsert");
    let rolled_back = w.close(&r, false, false).await.expect("rollback");
    let superseded = w.open(SessionMode::Accrue).await;
    w.open(SessionMode::Accrue).await;

    let mut admin = sandbox.admin();
    let result = admin
        .get_import_result(admin::GetImportResultRequest {
            id: committed.import_result_id.clone(),
        })
        .await
        .expect("get import result")
        .into_inner()
        .import_result
        .expect("result");
    assert_eq!(result.status(), admin::ImportStatus::Succeeded);
    assert_eq!(
        (
            result.created,
            result.connector.as_str(),
            result.session_id.as_str()
        ),
        (2, w.connector.as_str(), a.as_str())
    );

    let listed = admin
        .list_import_results(admin::ListImportResultsRequest {
            connector: w.connector.clone(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.import_results.len(), 2);
    assert_eq!(
        listed.import_results[0].session_id, superseded,
        "newest first"
    );
    assert_eq!(
        listed.import_results[0].status(),
        admin::ImportStatus::Canceled
    );
    assert_eq!(listed.import_results[1].id, rolled_back.import_result_id);
    assert_eq!(
        listed.import_results[1].status(),
        admin::ImportStatus::Canceled
    );
    let rest = admin
        .list_import_results(admin::ListImportResultsRequest {
            connector: w.connector.clone(),
            page_size: 2,
            page_token: listed.next_page_token,
            ..Default::default()
        })
        .await
        .expect("list page 2")
        .into_inner();
    assert_eq!(rest.import_results.len(), 1);
    assert_eq!(rest.import_results[0].id, committed.import_result_id);
}

on_both_backends!(
    unchanged_records_keep_version_and_updated_at,
    a_supplied_checksum_is_used_instead_of_the_computed_one,
    an_invalid_batch_applies_nothing_and_lists_every_violation,
    an_oversized_batch_is_resource_exhausted with |o: &mut tributary::server::ServerOptions| o.limits.max_batch_records = 10,
    oversized_delete_and_diff_batches_are_resource_exhausted with |o: &mut tributary::server::ServerOptions| o.limits.max_batch_records = 10,
    computed_checksums_match_the_known_answers_of_the_vectors,
    superseded_sessions_are_permission_denied,
    unknown_closed_and_foreign_sessions_are_permission_denied,
    a_wrong_or_missing_token_is_unauthenticated,
    the_replace_guard_refuses_a_large_sweep_until_forced,
    idle_accrue_sessions_are_rolled_back with super::idle_expiry,
    idle_replace_sessions_are_rolled_back_and_previous_data_persists with super::idle_expiry,
    closing_accrue_and_replace_sessions_writes_import_results,
);
