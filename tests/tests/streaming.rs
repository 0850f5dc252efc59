//! SPEC.md §2.3 and §2.4 over real gRPC: the `Contribute` stream (ordered acks, rejected batches
//! that do not stop the stream, exactly-once resume after a dropped stream or a server restart),
//! digest sync (`Diff`, unary and streamed), and graceful shutdown (§9).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};
use tributary_client::{StreamError, StreamingContributor, StreamingContributorBuilder};
use tributary_proto::catalog::v1 as catalog;
use tributary_proto::contribution::v1::contribute_request::Message as Msg;
use tributary_proto::contribution::v1::contribute_response::Message as Reply;
use tributary_proto::contribution::v1::{
    BatchAck, ContributeRequest, ContributeResponse, DeleteBatch, DiffRequest, Digest, DigestState,
    Outcome, Record, SessionMode, StreamOpen, StreamOpened, UpsertBatch,
};
use tributary_tests::{country, json_struct, on_both_backends, Sandbox, World};

/// Five countries per batch, with ids that name the batch: `b0042-3`.
fn batch(seq: u64) -> Vec<Record> {
    (0..5)
        .map(|i| country(&format!("b{seq:04}-{i}"), (seq * 10 + i) as i64))
        .collect()
}

/// A streaming contributor for `token`, with a quick backoff for tests.
fn streamer(sandbox: &Sandbox, token: &str) -> StreamingContributorBuilder {
    StreamingContributor::builder(sandbox.channel(), token).backoff(
        Duration::from_millis(20),
        Duration::from_millis(500),
        100,
    )
}

/// Every ack a contributor receives, in order.
#[derive(Clone, Default)]
struct Acks(Arc<Mutex<Vec<BatchAck>>>);

impl Acks {
    fn recorder(&self) -> impl FnMut(&BatchAck) + Send + 'static {
        let acks = self.0.clone();
        move |ack| acks.lock().expect("acks").push(ack.clone())
    }

    fn take(&self) -> Vec<BatchAck> {
        std::mem::take(&mut *self.0.lock().expect("acks"))
    }
}

/// Asserts that `visible` holds exactly the records of batches `seqs`, each written once.
fn assert_exactly_once(
    visible: &BTreeMap<String, catalog::Record>,
    seqs: impl IntoIterator<Item = u64>,
) {
    let expected: Vec<String> = seqs.into_iter().flat_map(batch).map(|r| r.id).collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !visible.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "missing records: {missing:?}");
    assert_eq!(visible.len(), expected.len(), "no record beyond those sent");
    let rewritten: Vec<(&String, i64)> = visible
        .values()
        .filter(|r| r.version != 1)
        .map(|r| (&r.id, r.version))
        .collect();
    assert!(
        rewritten.is_empty(),
        "applied more than once: {rewritten:?}"
    );
}

/// A raw `Contribute` call, for the protocol's edges the client never produces.
struct Raw {
    tx: mpsc::Sender<ContributeRequest>,
    rx: Streaming<ContributeResponse>,
}

impl Raw {
    async fn start(w: &mut World, first: Msg) -> Raw {
        let (tx, requests) = mpsc::channel(16);
        tx.send(ContributeRequest {
            message: Some(first),
        })
        .await
        .expect("queue the first message");
        let rx = w
            .contributor
            .contribute(ReceiverStream::new(requests))
            .await
            .expect("stream accepted")
            .into_inner();
        Raw { tx, rx }
    }

    async fn open(w: &mut World, mode: SessionMode, session_id: &str) -> (Raw, StreamOpened) {
        let mut raw = Raw::start(
            w,
            Msg::Open(StreamOpen {
                mode: mode as i32,
                session_id: session_id.into(),
            }),
        )
        .await;
        match raw.next().await {
            Ok(Reply::Opened(opened)) => (raw, opened),
            other => panic!("expected opened, got {other:?}"),
        }
    }

    async fn send(&self, message: Msg) {
        self.tx
            .send(ContributeRequest {
                message: Some(message),
            })
            .await
            .expect("send on the stream");
    }

    async fn upsert(&mut self, batch_seq: u64, records: Vec<Record>) -> BatchAck {
        self.send(Msg::Upsert(UpsertBatch { batch_seq, records }))
            .await;
        match self.next().await {
            Ok(Reply::Ack(ack)) => ack,
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    /// The next response; `Err` when the stream ended with a status.
    async fn next(&mut self) -> Result<Reply, Status> {
        let next = tokio::time::timeout(Duration::from_secs(60), self.rx.message())
            .await
            .expect("the server answers within 60 s");
        match next? {
            Some(ContributeResponse {
                message: Some(reply),
            }) => Ok(reply),
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

async fn a_thousand_batches_are_acknowledged_in_order_with_their_outcomes(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let acks = Acks::default();
    let mut stream = streamer(sandbox, &w.token)
        .on_ack(acks.recorder())
        .open(SessionMode::Stream)
        .await
        .expect("open");
    for seq in 1..=1000 {
        assert_eq!(stream.upsert(batch(seq)).await.expect("upsert"), seq);
        assert!(stream.in_flight() <= tributary_client::stream::DEFAULT_WINDOW);
    }
    // Deleting through the stream reports per-id outcomes too.
    stream
        .delete(vec!["b0001-0".into(), "nowhere".into()])
        .await
        .expect("delete");
    let closed = stream.finish(true, false).await.expect("finish");
    assert_eq!(closed.import_result_id, "", "stream sessions write none");

    let acks = acks.take();
    assert_eq!(acks.len(), 1001);
    for (ack, seq) in acks.iter().zip(1u64..) {
        assert_eq!(ack.batch_seq, seq, "in order");
        assert!(ack.error.is_none() && !ack.already_applied, "{ack:?}");
        if seq <= 1000 {
            let ids: Vec<&str> = ack.outcomes.iter().map(|o| o.id.as_str()).collect();
            let sent: Vec<String> = batch(seq).into_iter().map(|r| r.id).collect();
            assert_eq!(ids, sent, "one outcome per record, in order");
            for o in &ack.outcomes {
                assert_eq!(o.outcome(), Outcome::Created);
                assert_eq!(
                    o.key,
                    tributary_core::ids::record_key("country", &w.connector, &o.id)
                );
            }
        }
    }
    let deletes: Vec<Outcome> = acks[1000].outcomes.iter().map(|o| o.outcome()).collect();
    assert_eq!(deletes, [Outcome::Deleted, Outcome::NotFound]);
    assert_eq!(w.visible().await.len(), 4999);
}

async fn an_invalid_batch_mid_stream_is_rejected_and_the_stream_goes_on(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let acks = Acks::default();
    let mut stream = streamer(sandbox, &w.token)
        .on_ack(acks.recorder())
        .open(SessionMode::Stream)
        .await
        .expect("open");
    for seq in 1..=5 {
        let mut records = batch(seq);
        if seq == 3 {
            records[1].entity = Some(json_struct(
                serde_json::json!({"code": "FR", "population": "many"}),
            ));
        }
        stream.upsert(records).await.expect("upsert");
    }
    stream.finish(true, false).await.expect("finish");

    let acks = acks.take();
    assert_eq!(
        acks.iter().map(|a| a.batch_seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let error = acks[2].error.as_ref().expect("batch 3 rejected");
    assert_eq!(error.code, Code::InvalidArgument as i32);
    assert_eq!(
        error
            .violations
            .iter()
            .map(|v| v.field.as_str())
            .collect::<Vec<_>>(),
        ["records[1].entity.population (id \"b0003-1\")"]
    );
    assert!(acks[2].outcomes.is_empty());
    for i in [0, 1, 3, 4] {
        assert!(acks[i].error.is_none());
        assert_eq!(acks[i].outcomes.len(), 5);
    }
    // The batches around it applied; nothing of it, not even its valid records.
    assert_exactly_once(&w.visible().await, [1, 2, 4, 5]);
}

/// Every batch updates one shared record and rejects or adds others: batches committed together
/// (the writer's group commit, ADR 0020) must still apply and answer strictly in stream order.
async fn batches_that_change_one_record_in_turn_apply_in_stream_order(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let acks = Acks::default();
    let mut stream = streamer(sandbox, &w.token)
        .on_ack(acks.recorder())
        .open(SessionMode::Stream)
        .await
        .expect("open");
    for seq in 1..=300u64 {
        let mut records = vec![country("shared", seq as i64)];
        if seq % 7 == 0 {
            records.push(country("", 1)); // no id: the whole batch is rejected
        } else {
            records.push(country(&format!("own-{seq}"), 1));
        }
        stream.upsert(records).await.expect("upsert");
    }
    stream.finish(true, false).await.expect("finish");

    let acks = acks.take();
    assert_eq!(acks.len(), 300);
    let mut applied = 0;
    for (ack, seq) in acks.iter().zip(1u64..) {
        assert_eq!(ack.batch_seq, seq, "in order");
        if seq % 7 == 0 {
            assert!(ack.error.is_some() && ack.outcomes.is_empty(), "{ack:?}");
            continue;
        }
        applied += 1;
        let shared = if applied == 1 {
            Outcome::Created
        } else {
            Outcome::Updated
        };
        let outcomes: Vec<Outcome> = ack.outcomes.iter().map(|o| o.outcome()).collect();
        assert_eq!(outcomes, [shared, Outcome::Created], "batch {seq}");
    }
    let visible = w.visible().await;
    let shared = &visible["shared"];
    assert_eq!(shared.version, applied, "one version per applied batch");
    let population = shared
        .entity
        .as_ref()
        .map(|e| e.fields["population"].clone());
    let last = (1..=300).rev().find(|s| s % 7 != 0).unwrap_or_default();
    assert_eq!(
        population.and_then(|v| v.kind),
        Some(prost_types::value::Kind::NumberValue(last as f64))
    );
    assert_eq!(visible.len() as i64, applied + 1);
}

async fn a_dropped_stream_resumes_and_applies_every_batch_exactly_once(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let mut stream = streamer(sandbox, &w.token)
        .open(SessionMode::Stream)
        .await
        .expect("open");
    for seq in 1..=200 {
        stream.upsert(batch(seq)).await.expect("upsert");
        if seq == 60 || seq == 120 {
            // Up to a window of batches is unacknowledged here: some applied, some not yet.
            stream.disconnect();
        }
    }
    stream.flush().await.expect("flush");
    let stats = stream.stats();
    assert_eq!(stats.reconnects, 2, "{stats:?}");
    assert_eq!(stats.acked, 200);
    stream.finish(true, false).await.expect("finish");
    assert_exactly_once(&w.visible().await, 1..=200);
}

async fn an_aborted_client_resumes_the_session_by_id_exactly_once(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let (acked_tx, mut acked) = watch::channel(0u64);
    let (id_tx, id_rx) = oneshot::channel();
    let builder = streamer(sandbox, &w.token).on_ack(move |ack| {
        acked_tx.send_replace(ack.batch_seq);
    });
    let client = tokio::spawn(async move {
        let mut stream = builder.open(SessionMode::Stream).await.expect("open");
        let _ = id_tx.send(stream.session_id().to_owned());
        for seq in 1..=100 {
            stream.upsert(batch(seq)).await.expect("upsert");
        }
        // Hold the stream (with its unacknowledged batches) until aborted.
        std::future::pending::<()>().await;
    });
    let session_id = id_rx.await.expect("session id");
    acked.wait_for(|&seq| seq >= 80).await.expect("acks");
    client.abort();
    let _ = client.await;

    let mut resumed = streamer(sandbox, &w.token)
        .resume(&session_id)
        .await
        .expect("resume");
    let after = resumed.resumed_after();
    assert!((80..=100).contains(&after), "resumed after {after}");
    assert_eq!(resumed.next_batch_seq(), after + 1);
    for seq in after + 1..=200 {
        assert_eq!(resumed.upsert(batch(seq)).await.expect("upsert"), seq);
    }
    resumed.finish(true, false).await.expect("finish");
    assert_exactly_once(&w.visible().await, 1..=200);
}

async fn a_server_restart_mid_stream_loses_and_duplicates_nothing(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let (acked_tx, mut acked) = watch::channel(0u64);
    let (go_on_tx, go_on) = oneshot::channel::<()>();
    let mut go_on = Some(go_on);
    let builder = streamer(sandbox, &w.token).on_ack(move |ack| {
        acked_tx.send_replace(ack.batch_seq);
    });
    let client = tokio::spawn(async move {
        let mut stream = builder.open(SessionMode::Stream).await?;
        for seq in 1..=200 {
            stream.upsert(batch(seq)).await?;
            if seq == 100 {
                // Keep the stream open, batches possibly in flight, while the server restarts.
                if let Some(go_on) = go_on.take() {
                    let _ = go_on.await;
                }
            }
        }
        stream.flush().await?;
        let stats = stream.stats();
        stream.finish(true, false).await?;
        Ok::<_, StreamError>(stats)
    });
    acked.wait_for(|&seq| seq >= 80).await.expect("acks");
    sandbox.restart().await;
    go_on_tx.send(()).expect("client still running");
    let stats = client.await.expect("client task").expect("stream survived");
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_exactly_once(&w.visible().await, 1..=200);
}

async fn shutdown_ends_open_streams_with_unavailable(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let (mut raw, _) = Raw::open(&mut w, SessionMode::Stream, "").await;
    let ack = raw.upsert(1, batch(1)).await;
    assert_eq!(ack.outcomes.len(), 5);
    // The stream is open and idle; shutdown must not wait for the client to end it.
    sandbox.restart().await;
    let status = raw.next().await.expect_err("the stream ends");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_exactly_once(&w.visible().await, [1]);
}

async fn batch_seq_must_increase_and_resent_batches_are_acknowledged_without_reapplying(
    sandbox: &Sandbox,
) {
    let mut w = sandbox.country_world().await;
    let (mut raw, opened) = Raw::open(&mut w, SessionMode::Stream, "").await;
    assert_eq!(opened.last_batch_seq, 0);
    let zero = raw.upsert(0, batch(9)).await;
    let error = zero.error.expect("batch_seq 0 refused");
    assert_eq!(error.code, Code::InvalidArgument as i32);
    assert_eq!(error.violations[0].field, "batch_seq");
    assert!(raw.upsert(1, batch(1)).await.error.is_none());
    assert!(raw.upsert(2, batch(2)).await.error.is_none());
    let repeated = raw.upsert(2, batch(2)).await;
    assert_eq!(
        repeated.error.expect("not above the previous").violations[0].field,
        "batch_seq"
    );
    // Gaps are fine: batch_seq only has to increase.
    assert!(raw.upsert(5, batch(5)).await.error.is_none());
    drop(raw);

    // A resumed stream learns the last applied batch and may resend up to it.
    let (mut raw, resumed) = Raw::open(&mut w, SessionMode::Unspecified, &opened.session_id).await;
    assert_eq!(
        (
            resumed.session_id.as_str(),
            resumed.mode(),
            resumed.last_batch_seq
        ),
        (opened.session_id.as_str(), SessionMode::Stream, 5)
    );
    for seq in [2, 5] {
        let again = raw.upsert(seq, batch(seq)).await;
        assert!(again.already_applied, "{again:?}");
        assert!(again.error.is_none() && again.outcomes.is_empty());
    }
    let fresh = raw.upsert(6, batch(6)).await;
    assert!(!fresh.already_applied);
    assert_eq!(fresh.outcomes.len(), 5);
    drop(raw);
    assert_exactly_once(&w.visible().await, [1, 2, 5, 6]);
}

async fn unary_diff_answers_new_changed_and_unchanged(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let s = w.open(SessionMode::Stream).await;
    let mut gb = country("GB", 1);
    gb.checksum = "gb-v1".into();
    let mut fr = country("FR", 1);
    fr.checksum = "fr-v1".into();
    w.upsert(&s, vec![gb, fr]).await.expect("upsert");
    let digest = |id: &str, checksum: &str| Digest {
        id: id.into(),
        checksum: checksum.into(),
    };
    let results = w
        .contributor
        .diff(DiffRequest {
            session_id: s.clone(),
            digests: vec![
                digest("GB", "gb-v1"),
                digest("FR", "fr-v2"),
                digest("DE", "de-v1"),
            ],
        })
        .await
        .expect("diff")
        .into_inner()
        .results;
    let states: Vec<(&str, DigestState)> =
        results.iter().map(|r| (r.id.as_str(), r.state())).collect();
    assert_eq!(
        states,
        [
            ("GB", DigestState::Unchanged),
            ("FR", DigestState::Changed),
            ("DE", DigestState::New)
        ]
    );
    assert_eq!(
        results[0].key,
        tributary_core::ids::record_key("country", &w.connector, "GB")
    );

    // The streamed form answers the ids to send in full.
    let mut stream = streamer(sandbox, &w.token)
        .open(SessionMode::Stream)
        .await
        .expect("open");
    let send = stream
        .diff(vec![
            digest("GB", "gb-v1"),
            digest("FR", "fr-v2"),
            digest("DE", "de-v1"),
        ])
        .await
        .expect("diff");
    assert_eq!(send, ["FR", "DE"]);
    stream.finish(true, false).await.expect("finish");

    // Diff names no session it may not use.
    let status = w
        .contributor
        .diff(DiffRequest {
            session_id: uuid::Uuid::new_v4().to_string(),
            digests: vec![digest("GB", "gb-v1")],
        })
        .await
        .expect_err("unknown session");
    assert_eq!(status.code(), Code::PermissionDenied);
}

async fn a_replace_session_driven_by_digests_sweeps_only_the_missing(sandbox: &Sandbox) {
    const TOTAL: usize = 10_000;
    const CHANGED: usize = 100;
    const MISSING: usize = 50;
    let mut w = sandbox.country_world().await;
    let id = |i: usize| format!("c{i:05}");
    let versioned = |i: usize, v: i64| {
        let mut r = country(&id(i), v);
        r.checksum = format!("{}-v{v}", id(i));
        r
    };

    let mut load = streamer(sandbox, &w.token)
        .open(SessionMode::Stream)
        .await
        .expect("open");
    for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(500) {
        load.upsert(chunk.iter().map(|&i| versioned(i, 1)).collect())
            .await
            .expect("load");
    }
    load.finish(true, false).await.expect("loaded");

    // Ids 0..100 changed, 100..9,950 unchanged, 9,950..10,000 gone from the source.
    let mut replace = streamer(sandbox, &w.token)
        .open(SessionMode::Replace)
        .await
        .expect("open replace");
    // Digest batches are pipelined (a window of them in flight), and the connection breaks
    // once mid-way: answers lost with it are asked again, each batch answered exactly once.
    let mut sent_seqs = Vec::new();
    for (n, chunk) in (0..TOTAL - MISSING)
        .collect::<Vec<_>>()
        .chunks(1000)
        .enumerate()
    {
        let digests = chunk
            .iter()
            .map(|&i| Digest {
                id: id(i),
                checksum: format!("{}-v{}", id(i), if i < CHANGED { 2 } else { 1 }),
            })
            .collect();
        sent_seqs.push(replace.send_digests(digests).await.expect("send digests"));
        if n == 5 {
            replace.disconnect();
        }
    }
    replace.flush().await.expect("every digest batch answered");
    let mut answers = replace.take_digest_answers();
    // A batch asked again after the reconnect is answered after those sent behind it.
    answers.sort_by_key(|a| a.batch_seq);
    assert_eq!(
        answers.iter().map(|a| a.batch_seq).collect::<Vec<_>>(),
        sent_seqs,
        "one answer per digest batch"
    );
    assert!(answers.iter().all(|a| a.error.is_none()));
    assert_eq!(replace.stats().reconnects, 1);
    let to_send: Vec<String> = answers.into_iter().flat_map(|a| a.to_send).collect();
    let changed: Vec<String> = (0..CHANGED).map(id).collect();
    assert_eq!(
        to_send, changed,
        "diff asks for exactly the changed records"
    );
    replace
        .upsert((0..CHANGED).map(|i| versioned(i, 2)).collect())
        .await
        .expect("send the changed in full");
    let closed = replace.finish(true, false).await.expect("commit");
    let totals = closed.totals.expect("totals");
    assert_eq!(
        (totals.swept, totals.updated, totals.created, totals.deleted),
        (MISSING as u64, CHANGED as u64, 0, 0),
        "{totals:?}"
    );
    assert_eq!(totals.unchanged, (TOTAL - MISSING - CHANGED) as u64);
    assert!(!closed.import_result_id.is_empty());

    let visible = w.visible().await;
    assert_eq!(visible.len(), TOTAL - MISSING);
    assert!((TOTAL - MISSING..TOTAL).all(|i| !visible.contains_key(&id(i))));
    for i in 0..CHANGED {
        let r = &visible[&id(i)];
        assert_eq!(
            (r.version, r.checksum.as_str()),
            (2, format!("{}-v2", id(i)).as_str())
        );
    }
    for i in CHANGED..TOTAL - MISSING {
        assert_eq!(visible[&id(i)].version, 1, "{} kept untouched", id(i));
    }
}

async fn resuming_a_closed_foreign_or_unknown_session_is_permission_denied(sandbox: &Sandbox) {
    let w = sandbox.country_world().await;
    let stream = streamer(sandbox, &w.token)
        .open(SessionMode::Accrue)
        .await
        .expect("open");
    let closed_id = stream.session_id().to_owned();
    stream.finish(true, false).await.expect("close");
    let open = streamer(sandbox, &w.token)
        .open(SessionMode::Accrue)
        .await
        .expect("open");
    let (_, other_token) = sandbox.create_connector("country", |_| {}).await;

    let denied = |result: Result<StreamingContributor, StreamError>| match result {
        Err(StreamError::Status(s)) => s.code(),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        denied(streamer(sandbox, &w.token).resume(&closed_id).await),
        Code::PermissionDenied
    );
    assert_eq!(
        denied(
            streamer(sandbox, &other_token)
                .resume(open.session_id())
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        denied(
            streamer(sandbox, &w.token)
                .resume(uuid::Uuid::new_v4().to_string())
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        denied(
            streamer(sandbox, "tbc_nope")
                .open(SessionMode::Stream)
                .await
        ),
        Code::Unauthenticated
    );
    // The refusals touched nothing: the open session still resumes.
    let resumed = streamer(sandbox, &w.token)
        .resume(open.session_id())
        .await
        .expect("still open");
    resumed.finish(false, false).await.expect("roll back");
}

async fn the_first_message_must_be_open(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let mut raw = Raw::start(
        &mut w,
        Msg::Delete(DeleteBatch {
            batch_seq: 1,
            ids: vec!["GB".into()],
        }),
    )
    .await;
    let status = raw.next().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("open"), "{}", status.message());
}

async fn a_superseded_stream_session_ends_the_stream_with_permission_denied(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let mut stream = streamer(sandbox, &w.token)
        .open(SessionMode::Replace)
        .await
        .expect("open");
    stream.upsert(batch(1)).await.expect("upsert");
    stream.flush().await.expect("acked");
    w.open(SessionMode::Replace).await;
    stream.upsert(batch(2)).await.expect("queued");
    match stream.flush().await {
        Err(StreamError::Status(s)) => assert_eq!(s.code(), Code::PermissionDenied),
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
}

async fn a_refused_replace_commit_keeps_the_session_for_a_forced_close(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let (_, token) = sandbox
        .create_connector("country", |c| c.reject_removals_above_percent = Some(50.0))
        .await;
    let mut load = streamer(sandbox, &token)
        .open(SessionMode::Stream)
        .await
        .expect("open");
    for seq in 1..=4 {
        load.upsert(batch(seq)).await.expect("upsert");
    }
    load.finish(true, false).await.expect("loaded");

    let mut replace = streamer(sandbox, &token)
        .open(SessionMode::Replace)
        .await
        .expect("open");
    replace.upsert(batch(1)).await.expect("upsert");
    let session_id = replace.session_id().to_owned();
    match replace.finish(true, false).await {
        Err(StreamError::Status(s)) => assert_eq!(s.code(), Code::FailedPrecondition),
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
    let resumed = streamer(sandbox, &token)
        .resume(&session_id)
        .await
        .expect("the session stays open");
    assert_eq!(resumed.resumed_after(), 1);
    let closed = resumed.finish(true, true).await.expect("forced commit");
    assert_eq!(closed.totals.expect("totals").swept, 15);
    assert_eq!(w.visible().await.len(), 5);
}

/// A batch over `limits.max_batch_records` (here 8) is refused whole as RESOURCE_EXHAUSTED in its
/// ack, checked before its records are decoded, and the stream goes on.
async fn an_oversized_batch_mid_stream_is_rejected_and_the_stream_goes_on(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let (mut raw, _) = Raw::open(&mut w, SessionMode::Stream, "").await;
    assert!(raw.upsert(1, batch(1)).await.error.is_none());
    let oversized: Vec<Record> = [batch(2), batch(2)].concat();
    let refused = raw.upsert(2, oversized).await;
    let error = refused.error.expect("ten records over a limit of eight");
    assert_eq!(error.code, Code::ResourceExhausted as i32);
    assert!(error.message.contains("max_batch_records"), "{error:?}");
    assert!(refused.outcomes.is_empty());
    assert!(raw.upsert(3, batch(3)).await.error.is_none());
    drop(raw);
    assert_exactly_once(&w.visible().await, [1, 3]);
}

on_both_backends!(
    a_thousand_batches_are_acknowledged_in_order_with_their_outcomes,
    an_oversized_batch_mid_stream_is_rejected_and_the_stream_goes_on with |o: &mut tributary::server::ServerOptions| o.limits.max_batch_records = 8,
    an_invalid_batch_mid_stream_is_rejected_and_the_stream_goes_on,
    batches_that_change_one_record_in_turn_apply_in_stream_order,
    a_dropped_stream_resumes_and_applies_every_batch_exactly_once,
    an_aborted_client_resumes_the_session_by_id_exactly_once,
    a_server_restart_mid_stream_loses_and_duplicates_nothing,
    shutdown_ends_open_streams_with_unavailable,
    batch_seq_must_increase_and_resent_batches_are_acknowledged_without_reapplying,
    unary_diff_answers_new_changed_and_unchanged,
    a_replace_session_driven_by_digests_sweeps_only_the_missing,
    resuming_a_closed_foreign_or_unknown_session_is_permission_denied,
    the_first_message_must_be_open,
    a_superseded_stream_session_ends_the_stream_with_permission_denied,
    a_refused_replace_commit_keeps_the_session_for_a_forced_close,
);
