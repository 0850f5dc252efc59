//! SPEC.md §2.5 over real gRPC: range-based sync (`Reconcile`, unary and in the `Contribute`
//! stream) answers what per-record digests (`Diff`) answer, keeps what matched in a replace
//! session, settles an unchanged set in one round, survives a broken stream, and refuses
//! hostile calls with the range named.

use std::time::Duration;

use tonic::Code;
use tributary_client::digest::checksum;
use tributary_client::reconcile::{reconcile, CallLimits, ClientSet, Outcome};
use tributary_client::{StreamingContributor, StreamingContributorBuilder};
use tributary_proto::contribution::v1::reconcile_range::Content;
use tributary_proto::contribution::v1::{
    DiffRequest, Digest, DigestState, ReconcileItems, ReconcileRange, ReconcileRequest, Record,
    SessionMode,
};
use tributary_tests::{bad_request_fields, country, on_both_backends, Sandbox, World};

fn streamer(sandbox: &Sandbox, token: &str) -> StreamingContributorBuilder {
    StreamingContributor::builder(sandbox.channel(), token).backoff(
        Duration::from_millis(20),
        Duration::from_millis(500),
        100,
    )
}

fn id(i: usize) -> String {
    format!("c{i:05}")
}

/// Loads `records` in a stream session.
async fn load(sandbox: &Sandbox, w: &World, records: Vec<Record>) {
    let mut stream = streamer(sandbox, &w.token)
        .open(SessionMode::Stream)
        .await
        .expect("open");
    for chunk in records.chunks(1_000) {
        stream.upsert(chunk.to_vec()).await.expect("load");
    }
    stream.finish(true, false).await.expect("loaded");
}

/// The client's records as a set, with the checksums the server computes.
fn set_of(records: &[Record]) -> ClientSet {
    ClientSet::new(
        records
            .iter()
            .map(|r| (r.id.clone(), checksum(r).expect("checksum"))),
    )
}

/// The ids to send, as `Diff` answers them for the same records (new or changed).
async fn by_diff(w: &mut World, session: &str, records: &[Record]) -> Vec<String> {
    let mut send = Vec::new();
    for chunk in records.chunks(5_000) {
        let digests = chunk
            .iter()
            .map(|r| Digest {
                id: r.id.clone(),
                checksum: checksum(r).expect("checksum"),
            })
            .collect();
        let results = w
            .contributor
            .diff(DiffRequest {
                session_id: session.into(),
                digests,
            })
            .await
            .expect("diff")
            .into_inner()
            .results;
        send.extend(
            results
                .into_iter()
                .filter(|r| r.state() != DigestState::Unchanged)
                .map(|r| r.id),
        );
    }
    send.sort();
    send
}

fn sent_ids(set: &ClientSet, outcome: &Outcome) -> Vec<String> {
    outcome.send.iter().map(|&i| set.id(i).to_owned()).collect()
}

/// 3,000 loaded; the client then changed 30, added 20 and lost 10.
fn edited(total: usize) -> Vec<Record> {
    let mut records: Vec<Record> = (10..total)
        .map(|i| country(&id(i), if i % 100 == 50 { 2 } else { 1 }))
        .collect();
    records.extend((0..20).map(|i| country(&format!("new{i:03}"), 1)));
    records
}

async fn reconcile_answers_what_diff_answers(sandbox: &Sandbox) {
    const TOTAL: usize = 3_000;
    let mut w = sandbox.country_world().await;
    let loaded: Vec<Record> = (0..TOTAL).map(|i| country(&id(i), 1)).collect();
    load(sandbox, &w, loaded.clone()).await;
    let session = w.open(SessionMode::Stream).await;

    // Nothing changed: one round, one range, nothing to send.
    let set = set_of(&loaded);
    let outcome = reconcile(&mut w.contributor, &session, &set, CallLimits::default())
        .await
        .expect("reconcile");
    assert_eq!(
        (outcome.rounds, outcome.send.len(), outcome.absent),
        (1, 0, 0)
    );

    // Some changed, some added, some gone: what Diff answers, and the gone ones named.
    let client = edited(TOTAL);
    let set = set_of(&client);
    let outcome = reconcile(&mut w.contributor, &session, &set, CallLimits::default())
        .await
        .expect("reconcile");
    let mut sent = sent_ids(&set, &outcome);
    sent.sort();
    assert_eq!(sent, by_diff(&mut w, &session, &client).await);
    assert_eq!(sent.len(), 30 + 20);
    assert_eq!(outcome.absent, 10);
    let mut absent = outcome.absent_ids.clone();
    absent.sort();
    assert_eq!(absent, (0..10).map(id).collect::<Vec<_>>());
    assert!(outcome.rounds > 1, "differences are found by splitting");

    // Small calls (at most 3 ranges, 40 items each) reach the same answer.
    let small = CallLimits {
        max_ranges: 3,
        max_items: 40,
    };
    let outcome = reconcile(&mut w.contributor, &session, &set, small)
        .await
        .expect("reconcile in small calls");
    let mut small_sent = sent_ids(&set, &outcome);
    small_sent.sort();
    assert_eq!(small_sent, sent);
}

async fn a_replace_session_keeps_what_matched_and_sweeps_the_rest(sandbox: &Sandbox) {
    const TOTAL: usize = 3_000;
    let mut w = sandbox.country_world().await;
    load(
        sandbox,
        &w,
        (0..TOTAL).map(|i| country(&id(i), 1)).collect(),
    )
    .await;
    let client = edited(TOTAL);
    let set = set_of(&client);
    let mut replace = streamer(sandbox, &w.token)
        .open(SessionMode::Replace)
        .await
        .expect("open replace");
    let outcome = replace
        .reconcile(&set, CallLimits::default())
        .await
        .expect("reconcile in the stream");
    let send: Vec<Record> = outcome
        .send
        .iter()
        .map(|&i| {
            client
                .iter()
                .find(|r| r.id == set.id(i))
                .expect("a client record")
                .clone()
        })
        .collect();
    assert_eq!(send.len(), 50);
    replace
        .upsert(send)
        .await
        .expect("send the new and changed");
    let closed = replace.finish(true, true).await.expect("commit");
    let totals = closed.totals.expect("totals");
    assert_eq!(
        (totals.created, totals.updated, totals.swept, totals.deleted),
        (20, 30, 10, 0),
        "{totals:?}"
    );
    assert_eq!(totals.unchanged, (TOTAL - 10 - 30) as u64);
    let visible = w.visible().await;
    assert_eq!(visible.len(), TOTAL - 10 + 20);
    assert!((0..10).all(|i| !visible.contains_key(&id(i))));
    for (i, r) in (10..TOTAL).map(|i| (i, &visible[&id(i)])) {
        let expected = if i % 100 == 50 { 2 } else { 1 };
        assert_eq!(r.version, expected, "{} written only if changed", r.id);
    }
}

async fn empty_sides_settle_in_one_round(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let records: Vec<Record> = (0..500).map(|i| country(&id(i), 1)).collect();
    let session = w.open(SessionMode::Accrue).await;

    // An empty catalog: everything is new, in one round.
    let set = set_of(&records);
    let outcome = reconcile(&mut w.contributor, &session, &set, CallLimits::default())
        .await
        .expect("reconcile against nothing");
    assert_eq!((outcome.rounds, outcome.send.len()), (1, 500));
    let empty = ClientSet::new(Vec::new());
    let outcome = reconcile(&mut w.contributor, &session, &empty, CallLimits::default())
        .await
        .expect("nothing against nothing");
    assert_eq!(
        outcome,
        Outcome {
            rounds: 1,
            ..Outcome::default()
        }
    );
    w.close(&session, false, false).await.expect("roll back");

    // A client with nothing in a replace session: every record is absent, and swept.
    load(sandbox, &w, records).await;
    let session = w.open(SessionMode::Replace).await;
    let outcome = reconcile(&mut w.contributor, &session, &empty, CallLimits::default())
        .await
        .expect("reconcile nothing");
    assert_eq!((outcome.rounds, outcome.absent), (1, 500));
    let totals = w
        .close(&session, true, true)
        .await
        .expect("commit")
        .totals
        .expect("totals");
    assert_eq!((totals.swept, totals.unchanged), (500, 0));
    assert!(w.visible().await.is_empty());
}

async fn a_broken_stream_reconciles_after_it_resumes(sandbox: &Sandbox) {
    const TOTAL: usize = 2_000;
    let mut w = sandbox.country_world().await;
    let loaded: Vec<Record> = (0..TOTAL).map(|i| country(&id(i), 1)).collect();
    load(sandbox, &w, loaded).await;
    let client = edited(TOTAL);
    let set = set_of(&client);
    let mut replace = streamer(sandbox, &w.token)
        .open(SessionMode::Replace)
        .await
        .expect("open");
    replace.disconnect();
    let outcome = replace
        .reconcile(&set, CallLimits::default())
        .await
        .expect("reconcile after a reconnect");
    assert_eq!(replace.stats().reconnects, 1);
    let mut sent = sent_ids(&set, &outcome);
    sent.sort();
    let session = replace.session_id().to_owned();
    assert_eq!(sent, by_diff(&mut w, &session, &client).await);

    // The session resumed by id in another contributor reconciles the same way, and what
    // matched is kept once however often it was asked.
    drop(replace);
    let mut resumed = streamer(sandbox, &w.token)
        .resume(session.clone())
        .await
        .expect("resume");
    let again = resumed
        .reconcile(&set, CallLimits::default())
        .await
        .expect("reconcile again");
    assert_eq!(again.send, outcome.send);
    let totals = resumed
        .finish(true, true)
        .await
        .expect("commit")
        .totals
        .expect("totals");
    // Nothing was sent in full: the changed records were neither kept nor sent, so the sweep
    // removes them with the 10 the client lacks.
    assert_eq!(
        (totals.unchanged, totals.swept, totals.created),
        (
            (TOTAL - 10 - TOTAL / 100) as u64,
            (10 + TOTAL / 100) as u64,
            0
        )
    );
}

fn fingerprint_range(lower: &str, upper: &str, bytes: usize) -> ReconcileRange {
    ReconcileRange {
        lower_bound: lower.into(),
        upper_bound: upper.into(),
        content: Some(Content::Fingerprint(vec![0; bytes])),
    }
}

async fn hostile_reconcile_calls_are_refused_with_the_range_named(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let session = w.open(SessionMode::Stream).await;
    let call = |ranges: Vec<ReconcileRange>| {
        let mut client = w.contributor.clone();
        let session = session.clone();
        async move {
            client
                .reconcile(ReconcileRequest {
                    session_id: session,
                    ranges,
                })
                .await
        }
    };
    let cases: Vec<(Vec<ReconcileRange>, &str)> = vec![
        (
            vec![
                fingerprint_range("", "m", 16),
                fingerprint_range("k", "", 16),
            ],
            "ranges[1].lower_bound",
        ),
        (
            vec![fingerprint_range("m", "a", 16)],
            "ranges[0].upper_bound",
        ),
        (vec![fingerprint_range("", "", 15)], "ranges[0].fingerprint"),
        (
            vec![fingerprint_range("a\0", "", 16)],
            "ranges[0].lower_bound",
        ),
        (
            vec![ReconcileRange {
                content: None,
                ..fingerprint_range("", "", 16)
            }],
            "ranges[0]",
        ),
        (
            vec![ReconcileRange {
                content: Some(Content::Items(ReconcileItems {
                    ids: vec!["b".into(), "a".into()],
                    hashes: vec![0; 16],
                })),
                ..fingerprint_range("", "", 16)
            }],
            "ranges[0].items.ids[1]",
        ),
        (
            vec![ReconcileRange {
                content: Some(Content::Items(ReconcileItems {
                    ids: vec!["a".into()],
                    hashes: vec![0; 3],
                })),
                ..fingerprint_range("", "", 16)
            }],
            "ranges[0].items.hashes",
        ),
    ];
    for (ranges, field) in cases {
        let status = call(ranges).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let fields = bad_request_fields(&status);
        assert!(
            fields.iter().any(|(f, _)| f == field),
            "{field} not in {fields:?}"
        );
    }
    let too_many: Vec<ReconcileRange> = (0..CallLimits::default().max_ranges + 1)
        .map(|i| fingerprint_range(&format!("{i:08}"), &format!("{i:08}~"), 16))
        .collect();
    let status = call(too_many).await.expect_err("too many ranges");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Listed items count across ranges against `limits.max_batch_records`.
    let max_items = CallLimits::default().max_items;
    let ids: Vec<String> = (0..=max_items).map(|i| format!("{i:08}")).collect();
    let listed = ReconcileRange {
        content: Some(Content::Items(ReconcileItems {
            hashes: vec![0; ids.len() * 8],
            ids,
        })),
        ..fingerprint_range("", "", 16)
    };
    let status = call(vec![listed]).await.expect_err("too many listed items");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_batch_records"), "{status:?}");

    // Only the connector's own open sessions, only with its token.
    let status = w
        .contributor
        .reconcile(ReconcileRequest {
            session_id: uuid::Uuid::new_v4().to_string(),
            ranges: vec![fingerprint_range("", "", 16)],
        })
        .await
        .expect_err("unknown session");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = sandbox
        .contributor("tbc_not-a-token")
        .reconcile(ReconcileRequest {
            session_id: session.clone(),
            ranges: vec![],
        })
        .await
        .expect_err("no such token");
    assert_eq!(status.code(), Code::Unauthenticated);
}

/// A server that takes at most 2 ranges a call (`limits.max_reconcile_ranges`).
fn two_ranges_a_call(options: &mut tributary::server::ServerOptions) {
    options.limits.max_reconcile_ranges = 2;
}

async fn a_stream_batch_over_the_range_cap_is_rejected_and_the_stream_goes_on(sandbox: &Sandbox) {
    let w = sandbox.country_world().await;
    let loaded: Vec<Record> = (0..1_000).map(|i| country(&id(i), 1)).collect();
    load(sandbox, &w, loaded).await;
    let changed: Vec<Record> = (0..1_000).map(|i| country(&id(i), 2)).collect();
    let mut stream = streamer(sandbox, &w.token)
        .open(SessionMode::Stream)
        .await
        .expect("open");
    // Round 2 splits the differing range into 16: more than the server takes.
    let refused = stream
        .reconcile(&set_of(&changed), CallLimits::default())
        .await
        .expect_err("over the cap");
    match refused {
        tributary_client::StreamError::Rejected { error, .. } => {
            assert_eq!(error.code, Code::ResourceExhausted as i32, "{error:?}");
            assert!(error.message.contains("max_reconcile_ranges"), "{error:?}");
        }
        other => panic!("expected a rejected batch, got {other:?}"),
    }
    // Within the server's cap the same exchange goes through, on the same stream.
    let small = CallLimits {
        max_ranges: 2,
        max_items: 10_000,
    };
    let outcome = stream
        .reconcile(&set_of(&changed), small)
        .await
        .expect("within the cap");
    assert_eq!(outcome.send.len(), 1_000);
    stream.finish(true, false).await.expect("close");
}

on_both_backends!(
    reconcile_answers_what_diff_answers,
    a_replace_session_keeps_what_matched_and_sweeps_the_rest,
    empty_sides_settle_in_one_round,
    a_broken_stream_reconciles_after_it_resumes,
    hostile_reconcile_calls_are_refused_with_the_range_named,
    a_stream_batch_over_the_range_cap_is_rejected_and_the_stream_goes_on with super::two_ranges_a_call,
);
