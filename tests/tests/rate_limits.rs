//! A connector's `rate_limit` (SPEC.md §4.2, §8): records per second, enforced on Upsert,
//! Delete, Diff and the Contribute stream. Unary calls over the limit are refused with
//! RESOURCE_EXHAUSTED, `QuotaFailure` and `RetryInfo`, applying nothing; stream batches are held
//! back whole until the limit admits them. The budget of a connector holds one largest batch
//! (here `max_batch_records` = 10), refilled at its rate.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_types::StatusExt;
use tributary_client::retry::{honouring_retry_info, retry_delay};
use tributary_client::StreamingContributor;
use tributary_proto::admin::v1 as admin;
use tributary_proto::contribution::v1 as pb;
use tributary_proto::contribution::v1::contribute_request::Message as Msg;
use tributary_proto::contribution::v1::contribute_response::Message as Reply;
use tributary_tests::{bad_request_fields, country, on_both_backends, Sandbox, World};

/// Largest batch, and so the size of every connector's bucket, in these tests.
const BATCH: usize = 10;

fn small_batches(options: &mut tributary::server::ServerOptions) {
    options.limits.max_batch_records = BATCH;
}

fn countries(prefix: &str, n: usize) -> Vec<pb::Record> {
    (0..n)
        .map(|i| country(&format!("{prefix}{i}"), 1))
        .collect()
}

/// A world whose connector may send `rate` records per second.
async fn limited_world(sandbox: &Sandbox, rate: u32) -> World {
    let world = sandbox.country_world().await;
    set_rate(sandbox, &world.connector, Some(rate)).await;
    world
}

async fn set_rate(sandbox: &Sandbox, connector: &str, rate: Option<u32>) {
    let mut admin = sandbox.admin();
    let current = admin
        .get_connector(admin::GetConnectorRequest {
            id: connector.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .connector
        .unwrap();
    admin
        .update_connector(admin::UpdateConnectorRequest {
            connector: Some(admin::Connector {
                rate_limit: rate,
                ..current
            }),
        })
        .await
        .unwrap();
}

/// Asserts `status` is the rate limit's refusal: RESOURCE_EXHAUSTED naming the connector, with
/// a wait.
fn assert_rate_limited(status: &tonic::Status, connector: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let quota = status.get_details_quota_failure().expect("QuotaFailure");
    assert_eq!(
        quota.violations[0].subject,
        format!("connector:{connector}")
    );
    let wait = retry_delay(status).expect("RetryInfo");
    assert!(wait > Duration::ZERO, "{wait:?}");
}

async fn upsert_over_the_limit_is_refused_with_retry_info_and_applies_nothing(sandbox: &Sandbox) {
    let mut world = limited_world(sandbox, 5).await;
    let session = world.open(pb::SessionMode::Stream).await;
    world.upsert(&session, countries("A", BATCH)).await.unwrap();
    let refused = world
        .upsert(&session, countries("B", 3))
        .await
        .expect_err("over the limit");
    assert_rate_limited(&refused, &world.connector);
    assert!(
        world.get("B0").await.is_none(),
        "nothing of a refused call is applied"
    );

    // A client that waits as told goes on.
    let request = pb::UpsertRequest {
        session_id: session.clone(),
        records: countries("B", 3),
    };
    let contributor = world.contributor.clone();
    let outcomes = honouring_retry_info(|| {
        let (mut client, request) = (contributor.clone(), request.clone());
        async move { client.upsert(request).await }
    })
    .await
    .expect("admitted after waiting")
    .into_inner()
    .outcomes;
    assert_eq!(outcomes.len(), 3);
    assert!(world.get("B2").await.is_some());
}

/// The rate limit is checked before anything in the batch is: a malformed batch over the limit
/// is refused as rate-limited (the client learns to wait, not what is wrong), and once admitted
/// the same batch is refused as malformed, applying none of its records.
async fn a_malformed_batch_over_the_limit_is_refused_as_rate_limited(sandbox: &Sandbox) {
    let mut world = limited_world(sandbox, 5).await;
    let session = world.open(pb::SessionMode::Stream).await;
    world.upsert(&session, countries("A", BATCH)).await.unwrap();
    let mut malformed = countries("M", 3);
    malformed[1].id = String::new();

    let refused = world
        .upsert(&session, malformed.clone())
        .await
        .expect_err("over the limit");
    assert_rate_limited(&refused, &world.connector);

    let request = pb::UpsertRequest {
        session_id: session.clone(),
        records: malformed,
    };
    let contributor = world.contributor.clone();
    let invalid = honouring_retry_info(|| {
        let (mut client, request) = (contributor.clone(), request.clone());
        async move { client.upsert(request).await }
    })
    .await
    .expect_err("admitted, then refused as malformed");
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");
    let violations = bad_request_fields(&invalid);
    assert!(
        violations.iter().any(|(field, _)| field == "records[1].id"),
        "{violations:?}"
    );
    assert!(world.get("M0").await.is_none(), "nothing of it is applied");
}

async fn delete_and_diff_draw_on_the_same_budget(sandbox: &Sandbox) {
    let mut world = limited_world(sandbox, 5).await;
    let session = world.open(pb::SessionMode::Stream).await;
    world.upsert(&session, countries("A", BATCH)).await.unwrap();

    let refused = world
        .delete(&session, &["A0"])
        .await
        .expect_err("delete over the limit");
    assert_rate_limited(&refused, &world.connector);
    assert!(
        world.get("A0").await.is_some(),
        "the refused delete deleted nothing"
    );

    let diff = pb::DiffRequest {
        session_id: session.clone(),
        digests: vec![pb::Digest {
            id: "A1".into(),
            checksum: "x".into(),
        }],
    };
    let refused = world
        .contributor
        .diff(diff.clone())
        .await
        .expect_err("diff over the limit");
    assert_rate_limited(&refused, &world.connector);

    let contributor = world.contributor.clone();
    let answered = honouring_retry_info(|| {
        let (mut client, diff) = (contributor.clone(), diff.clone());
        async move { client.diff(diff).await }
    })
    .await
    .expect("diff admitted after waiting")
    .into_inner();
    assert_eq!(answered.results.len(), 1);
}

async fn a_changed_limit_applies_from_the_next_call(sandbox: &Sandbox) {
    let mut world = limited_world(sandbox, 1).await;
    let session = world.open(pb::SessionMode::Stream).await;
    world.upsert(&session, countries("A", BATCH)).await.unwrap();
    let refused = world.upsert(&session, countries("B", 1)).await.unwrap_err();
    assert_rate_limited(&refused, &world.connector);

    // No limit: any number of calls go through at once.
    set_rate(sandbox, &world.connector, None).await;
    for round in 0..5 {
        world
            .upsert(&session, countries(&format!("C{round}-"), BATCH))
            .await
            .expect("no limit any more");
    }
    // A limit again: a fresh budget at the new rate.
    set_rate(sandbox, &world.connector, Some(2)).await;
    world.upsert(&session, countries("D", BATCH)).await.unwrap();
    let refused = world.upsert(&session, countries("E", 1)).await.unwrap_err();
    assert_rate_limited(&refused, &world.connector);
}

async fn a_stream_over_the_limit_is_held_back_whole_and_in_order(sandbox: &Sandbox) {
    let mut world = limited_world(sandbox, 10).await;
    let rejected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = rejected.clone();
    let started = tokio::time::Instant::now();
    let mut stream = StreamingContributor::builder(sandbox.channel(), &world.token)
        .on_ack(move |ack| {
            if ack.error.is_some() {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .open(pb::SessionMode::Accrue)
        .await
        .unwrap();
    // The same id in every batch: the last batch's value must win (order kept).
    for batch in 0..4 {
        let mut records = countries(&format!("S{batch}-"), BATCH - 1);
        records.push(country("SAME", batch));
        stream.upsert(records).await.unwrap();
    }
    let closed = stream
        .finish(true, false)
        .await
        .expect("the stream commits");
    let elapsed = started.elapsed();
    assert_eq!(rejected.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(closed.totals.unwrap().created, 4 * (BATCH as u64 - 1) + 1);
    let same = world.get("SAME").await.expect("SAME is visible");
    assert_eq!(tributary_tests::entity_number(&same, "population"), 3.0);
    // The limiter's guarantee, not a speed: 40 records at 10/s with a bucket of 10 cannot be
    // admitted in less than (40 - 10) / 10 = 3 s (less GCRA's tolerance of one record a batch).
    assert!(
        elapsed >= Duration::from_millis(2700),
        "held back: {elapsed:?}"
    );
}

async fn a_held_back_stream_follows_update_connector(sandbox: &Sandbox) {
    let world = limited_world(sandbox, 1).await;
    let mut stream = StreamingContributor::builder(sandbox.channel(), &world.token)
        .open(pb::SessionMode::Stream)
        .await
        .unwrap();
    stream.upsert(countries("A", BATCH)).await.unwrap();
    // At 1 record/s this batch would wait 10 s; lifting the limit frees it.
    stream.upsert(countries("B", BATCH)).await.unwrap();
    set_rate(sandbox, &world.connector, None).await;
    let flushed = tokio::time::timeout(Duration::from_secs(8), stream.flush()).await;
    assert!(
        flushed.is_ok(),
        "the held-back batch went on once the limit was lifted"
    );
    stream.finish(false, false).await.unwrap();
}

/// The next reply on a raw `Contribute` stream.
async fn next_reply(replies: &mut tonic::Streaming<pb::ContributeResponse>) -> Reply {
    match tokio::time::timeout(Duration::from_secs(60), replies.message()).await {
        Ok(Ok(Some(pb::ContributeResponse {
            message: Some(reply),
        }))) => reply,
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// The stream's writer commits the batches already prepared behind the one it holds in one
/// transaction (ADR 0020). A batch the store refuses only when applying it (a `batch_seq` past
/// BIGINT) fails such a group as a whole; the writer then applies its batches one by one, so the
/// others are applied and acknowledged and only that one is rejected. The rate limit makes the
/// group: the first batch waits for its budget (about a second), long after the empty batch
/// behind it is prepared, and an empty batch costs no budget, so it joins once the first is let
/// through.
async fn a_group_failing_on_one_batch_is_applied_batch_by_batch(sandbox: &Sandbox) {
    let mut world = limited_world(sandbox, BATCH as u32).await;
    let session = world.open(pb::SessionMode::Stream).await;
    world.upsert(&session, countries("U", BATCH)).await.unwrap();

    let (tx, requests) = mpsc::channel(4);
    let send = |message| {
        let tx = tx.clone();
        async move {
            tx.send(pb::ContributeRequest {
                message: Some(message),
            })
            .await
            .expect("queue a message")
        }
    };
    send(Msg::Open(pb::StreamOpen {
        mode: pb::SessionMode::Stream as i32,
        session_id: String::new(),
    }))
    .await;
    let mut replies = world
        .contributor
        .contribute(ReceiverStream::new(requests))
        .await
        .expect("stream accepted")
        .into_inner();
    assert!(matches!(next_reply(&mut replies).await, Reply::Opened(_)));
    let past_bigint = i64::MAX as u64 + 1;
    send(Msg::Upsert(pb::UpsertBatch {
        batch_seq: 1,
        records: countries("G", BATCH),
    }))
    .await;
    send(Msg::Upsert(pb::UpsertBatch {
        batch_seq: past_bigint,
        records: Vec::new(),
    }))
    .await;

    let Reply::Ack(first) = next_reply(&mut replies).await else {
        panic!("expected the first batch's ack")
    };
    assert_eq!(first.batch_seq, 1);
    assert!(first.error.is_none(), "{:?}", first.error);
    assert_eq!(first.outcomes.len(), BATCH);
    assert!(first
        .outcomes
        .iter()
        .all(|o| o.outcome() == pb::Outcome::Created));
    let Reply::Ack(refused) = next_reply(&mut replies).await else {
        panic!("expected the refused batch's ack")
    };
    assert_eq!(refused.batch_seq, past_bigint);
    let error = refused.error.expect("batch_seq past BIGINT is refused");
    assert_eq!(error.code, Code::InvalidArgument as i32);
    assert_eq!(error.violations[0].field, "batch_seq");
    assert!(refused.outcomes.is_empty());
    for i in 0..BATCH {
        assert!(world.get(&format!("G{i}")).await.is_some(), "G{i} applied");
    }
}

/// SPEC §2.3: "a slow store slows the sender; memory does not grow with the stream's length".
/// The rate limit makes the slow store: the first batch spends the whole budget, so the writer
/// holds the second back for ten seconds, and the server may read only as far ahead as its
/// bounded queue of prepared batches and HTTP/2's flow-control window allow. The client offers
/// 80 batches of ~500 KB, built only when the transport asks for the next one, and no more than
/// a bounded few are taken while the writer waits (ten batches in the server, ADR 0020, plus what
/// the window and the client's encoder hold).
async fn a_held_back_stream_stops_taking_batches_from_its_sender(sandbox: &Sandbox) {
    const OFFERED: usize = 80;
    let world = limited_world(sandbox, 1).await;
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = taken.clone();
    let open = pb::ContributeRequest {
        message: Some(Msg::Open(pb::StreamOpen {
            mode: pb::SessionMode::Stream as i32,
            session_id: String::new(),
        })),
    };
    let batches = (1..=OFFERED).map(move |seq| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        pb::ContributeRequest {
            message: Some(Msg::Upsert(pb::UpsertBatch {
                batch_seq: seq as u64,
                records: large_records(&format!("L{seq}-")),
            })),
        }
    });
    let requests = futures::stream::iter(std::iter::once(open).chain(batches));
    let mut replies = world
        .contributor
        .clone()
        .contribute(requests)
        .await
        .expect("stream accepted")
        .into_inner();
    assert!(matches!(next_reply(&mut replies).await, Reply::Opened(_)));
    let Reply::Ack(first) = next_reply(&mut replies).await else {
        panic!("expected the first batch's ack")
    };
    assert_eq!(first.batch_seq, 1);
    // The second batch waits ten seconds for its budget; watch what the sender is asked for
    // meanwhile (a window to observe that nothing more happens, not a synchronisation).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let taken = taken.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        taken <= 24,
        "the server took {taken} of {OFFERED} batches while its writer waited"
    );
}

/// `BATCH` records of ~50 KB each (a large `instance`), ~500 KB as a batch.
fn large_records(prefix: &str) -> Vec<pb::Record> {
    let padding = "x".repeat(50_000);
    (0..BATCH)
        .map(|i| pb::Record {
            instance: Some(tributary_tests::json_struct(
                serde_json::json!({ "padding": padding }),
            )),
            ..country(&format!("{prefix}{i}"), 1)
        })
        .collect()
}

on_both_backends!(
    upsert_over_the_limit_is_refused_with_retry_info_and_applies_nothing with super::small_batches,
    a_malformed_batch_over_the_limit_is_refused_as_rate_limited with super::small_batches,
    delete_and_diff_draw_on_the_same_budget with super::small_batches,
    a_changed_limit_applies_from_the_next_call with super::small_batches,
    a_stream_over_the_limit_is_held_back_whole_and_in_order with super::small_batches,
    a_held_back_stream_follows_update_connector with super::small_batches,
    a_group_failing_on_one_batch_is_applied_batch_by_batch with super::small_batches,
    a_held_back_stream_stops_taking_batches_from_its_sender with super::small_batches,
);
