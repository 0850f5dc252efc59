//! SPEC.md §2.1: a consumer never sees part of an accrue/replace session, whatever its size.
//!
//! Each commit of a 50,000-record session is held open at a known point after its writes, and
//! while it is held a reader looks up ids from both ends of the session in one query (one
//! snapshot): it must see the state before the commit, entirely, and the commit must still be
//! under way when the reader is done. The hold is, on PostgreSQL, a test transaction holding the
//! row lock of a record the commit deletes (the commit waits on it after writing every upsert;
//! no store change needed), and on SQLite the store's test pause just before the commit's COMMIT
//! (`tributary_store::testing::pause_session_commit`). A second reader polls throughout and must
//! never see a mix; once released, the commit's whole state is visible.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use tributary_client::StreamingContributor;
use tributary_core::ids::record_key;
use tributary_proto::catalog::v1::{LookupByExternalIdsRequest, Record};
use tributary_proto::contribution::v1::{CloseSessionRequest, CloseSessionResponse, SessionMode};
use tributary_store::testing::{pause_session_commit, CommitPause};
use tributary_tests::proxy::Proxy;
use tributary_tests::{
    country, entity_number, on_both_backends, wait_until, Backend, CatalogClient, Sandbox, World,
};

const RECORDS: usize = 50_000;
const BATCH: usize = 1_000;
/// Lookups made while the commit is held.
const POLLS_WHILE_HELD: usize = 20;
/// How long the test waits for the commit to reach its hold, or for a lookup to answer.
const WAIT: Duration = Duration::from_secs(120);

async fn send_all(w: &mut World, session: &str, prefix: &str, population: i64) {
    for start in (0..RECORDS).step_by(BATCH) {
        let batch = (start..start + BATCH)
            .map(|i| country(&format!("{prefix}{i}"), population))
            .collect();
        w.upsert(session, batch).await.expect("upsert batch");
    }
}

/// Ids from both ends of a prefix's range: the first and last records a commit writes.
fn ends(prefix: &str, each: usize) -> Vec<String> {
    (0..each)
        .chain(RECORDS - each..RECORDS)
        .map(|i| format!("{prefix}{i}"))
        .collect()
}

/// One lookup of `ids`: a single query, so a single snapshot of the catalog.
async fn snapshot(reader: &mut CatalogClient, connector: &str, ids: &[String]) -> Vec<Record> {
    let lookup = reader.lookup_by_external_ids(LookupByExternalIdsRequest {
        entity_type: "country".into(),
        ids: ids.to_vec(),
        connector: connector.into(),
    });
    tokio::time::timeout(WAIT, lookup)
        .await
        .expect("a lookup answers while a commit is under way")
        .expect("lookup")
        .into_inner()
        .records
}

/// What a snapshot must be: `Ok` if it is one of the allowed states.
type Check = fn(&[Record]) -> Result<(), String>;

/// Polls `ids` until `done`, failing on any snapshot `check` refuses.
fn poll_throughout(
    mut reader: CatalogClient,
    connector: String,
    ids: Vec<String>,
    done: Arc<AtomicBool>,
    check: Check,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !done.load(Ordering::SeqCst) {
            let records = snapshot(&mut reader, &connector, &ids).await;
            if let Err(problem) = check(&records) {
                panic!("partial state seen: {problem}");
            }
        }
    })
}

/// A commit held open at a known point after its writes.
enum Hold {
    /// PostgreSQL: a transaction holding the row lock of a record the commit deletes.
    RowLock {
        conn: sqlx::PgConnection,
        pid: i32,
        url: String,
    },
    /// SQLite: the store's pause before the commit's COMMIT.
    Pause(CommitPause),
}

impl Hold {
    /// Prepares to hold the commit of `session`, which deletes the record with `deleted_key`.
    async fn new(sandbox: &Sandbox, session: &str, deleted_key: &str) -> Hold {
        match sandbox.backend {
            Backend::Sqlite => Hold::Pause(pause_session_commit(session)),
            Backend::Postgres => {
                let url = sandbox.database_url().expect("database url").to_owned();
                let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
                let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut conn)
                    .await
                    .expect("backend pid");
                sqlx::query("BEGIN")
                    .execute(&mut conn)
                    .await
                    .expect("begin");
                let locked = sqlx::query("SELECT 1 FROM records WHERE key = $1 FOR UPDATE")
                    .bind(deleted_key)
                    .fetch_optional(&mut conn)
                    .await
                    .expect("lock the record");
                assert!(locked.is_some(), "the record to hold the commit on exists");
                Hold::RowLock { conn, pid, url }
            }
        }
    }

    /// Waits until the commit is held (PostgreSQL: a backend waits on the test's lock).
    async fn until_held(&mut self) {
        let held = match self {
            Hold::Pause(pause) => pause.reached(WAIT).await,
            Hold::RowLock { pid, url, .. } => {
                let watcher = sqlx::PgPool::connect(url).await.expect("connect");
                let pid = *pid;
                let blocked = wait_until(WAIT, || {
                    let watcher = watcher.clone();
                    async move {
                        let waiting: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM pg_stat_activity \
                             WHERE $1 = ANY(pg_blocking_pids(pid))",
                        )
                        .bind(pid)
                        .fetch_one(&watcher)
                        .await
                        .expect("read pg_stat_activity");
                        (waiting > 0).then_some(())
                    }
                })
                .await;
                watcher.close().await;
                blocked.is_some()
            }
        };
        assert!(held, "the commit did not reach its hold within {WAIT:?}");
    }

    /// Lets the commit go on.
    async fn release(self) {
        match self {
            Hold::Pause(pause) => pause.release(),
            Hold::RowLock { mut conn, .. } => {
                sqlx::query("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("rollback");
            }
        }
    }
}

/// Closes `session` with commit while it is held: checks `before` on every snapshot taken
/// during the hold (and that the commit is still under way after them), and lets a second
/// reader check `either` throughout. Answers the commit's response.
async fn commit_while_held(
    sandbox: &Sandbox,
    w: &World,
    session: &str,
    deleted_key: &str,
    ids: Vec<String>,
    before: Check,
    either: Check,
) -> CloseSessionResponse {
    let mut hold = Hold::new(sandbox, session, deleted_key).await;
    let done = Arc::new(AtomicBool::new(false));
    let poller = poll_throughout(
        w.reader.clone(),
        w.connector.clone(),
        ids.clone(),
        done.clone(),
        either,
    );
    let mut contributor = w.contributor.clone();
    let request = CloseSessionRequest {
        session_id: session.into(),
        commit: true,
        force: false,
    };
    let commit = tokio::spawn(async move { contributor.close_session(request).await });
    hold.until_held().await;
    let mut reader = w.reader.clone();
    for poll in 0..POLLS_WHILE_HELD {
        let records = snapshot(&mut reader, &w.connector, &ids).await;
        if let Err(problem) = before(&records) {
            panic!("poll {poll} during the held commit: {problem}");
        }
    }
    assert!(
        !commit.is_finished(),
        "the commit was still under way during every poll"
    );
    hold.release().await;
    let response = commit
        .await
        .expect("commit task")
        .expect("commit")
        .into_inner();
    done.store(true, Ordering::SeqCst);
    poller.await.expect("the reader saw no partial state");
    response
}

fn populations(records: &[Record]) -> BTreeSet<i64> {
    records
        .iter()
        .filter(|r| r.id.starts_with('A'))
        .map(|r| entity_number(r, "population") as i64)
        .collect()
}

/// Before the accrue commit: every A at population 1, and Z.
fn accrue_before(records: &[Record]) -> Result<(), String> {
    let z = records.iter().any(|r| r.id == "Z");
    match (records.len(), populations(records), z) {
        (999, p, true) if p == BTreeSet::from([1]) => Ok(()),
        (n, p, z) => Err(format!("{n} records, populations {p:?}, Z visible: {z}")),
    }
}

/// After the accrue commit: every A at population 2, Z deleted.
fn accrue_after(records: &[Record]) -> Result<(), String> {
    let z = records.iter().any(|r| r.id == "Z");
    match (records.len(), populations(records), z) {
        (998, p, false) if p == BTreeSet::from([2]) => Ok(()),
        (n, p, z) => Err(format!("{n} records, populations {p:?}, Z visible: {z}")),
    }
}

fn accrue_before_or_after(records: &[Record]) -> Result<(), String> {
    accrue_before(records).or_else(|_| accrue_after(records))
}

/// How many of the records are from set A and from set B.
fn sets(records: &[Record]) -> (usize, usize) {
    let a = records.iter().filter(|r| r.id.starts_with('A')).count();
    (a, records.len() - a)
}

fn replace_before(records: &[Record]) -> Result<(), String> {
    match sets(records) {
        (500, 0) => Ok(()),
        (a, b) => Err(format!("{a} old and {b} new records visible")),
    }
}

fn replace_before_or_after(records: &[Record]) -> Result<(), String> {
    match sets(records) {
        (500, 0) | (0, 500) => Ok(()),
        (a, b) => Err(format!("{a} old and {b} new records visible")),
    }
}

async fn a_reader_never_sees_part_of_a_large_accrue_or_replace_commit(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let load = w.open(SessionMode::Accrue).await;
    send_all(&mut w, &load, "A", 1).await;
    w.upsert(&load, vec![country("Z", 1)])
        .await
        .expect("upsert Z");
    w.close(&load, true, false).await.expect("initial commit");

    // Accrue: every A changes from population 1 to 2, and Z is deleted.
    let session = w.open(SessionMode::Accrue).await;
    send_all(&mut w, &session, "A", 2).await;
    w.delete(&session, &["Z"]).await.expect("delete Z");
    let mut ids = ends("A", 499);
    ids.push("Z".into());
    let z = record_key("country", &w.connector, "Z");
    let closed = commit_while_held(
        sandbox,
        &w,
        &session,
        &z,
        ids.clone(),
        accrue_before,
        accrue_before_or_after,
    )
    .await;
    let totals = closed.totals.expect("totals");
    assert_eq!((totals.updated, totals.deleted), (RECORDS as u64, 1));
    let after = snapshot(&mut w.reader.clone(), &w.connector, &ids).await;
    accrue_after(&after).expect("the whole commit is visible");

    // Replace: set A is replaced by set B.
    let session = w.open(SessionMode::Replace).await;
    send_all(&mut w, &session, "B", 3).await;
    let mut ids = ends("A", 250);
    ids.extend(ends("B", 250));
    let a0 = record_key("country", &w.connector, "A0");
    let closed = commit_while_held(
        sandbox,
        &w,
        &session,
        &a0,
        ids.clone(),
        replace_before,
        replace_before_or_after,
    )
    .await;
    let totals = closed.totals.expect("totals");
    assert_eq!(
        (totals.created, totals.swept),
        (RECORDS as u64, RECORDS as u64)
    );
    let after = snapshot(&mut w.reader.clone(), &w.connector, &ids).await;
    assert_eq!(sets(&after), (0, 500), "the whole commit is visible");
}

/// Whether every one of `ids` becomes visible within `WAIT` (a commit landing on its own).
async fn all_landed(w: &World, ids: &[String]) -> bool {
    let reader = w.reader.clone();
    wait_until(WAIT, || {
        let (mut reader, connector) = (reader.clone(), w.connector.clone());
        async move { (snapshot(&mut reader, &connector, ids).await.len() == ids.len()).then_some(()) }
    })
    .await
    .is_some()
}

/// A commit, once begun, runs to its end even when the call that asked for it is cancelled (its
/// deadline passes, as a 1,000,000-record commit on a slow disk outlived the server's 60 s):
/// dropped half-way, it would roll back, and every retry would meet the same deadline.
async fn a_commit_outlives_a_cancelled_close(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let session = w.open(SessionMode::Accrue).await;
    let ids: Vec<String> = (0..10).map(|i| format!("late-{i}")).collect();
    let batch = ids.iter().map(|id| country(id, 7)).collect();
    w.upsert(&session, batch).await.expect("upsert");

    let mut pause = pause_session_commit(&session);
    let mut request = tonic::Request::new(CloseSessionRequest {
        session_id: session.clone(),
        commit: true,
        force: false,
    });
    // Long enough to reach the pause on a slow machine; the pause outlasts it in any case.
    request.set_timeout(Duration::from_secs(5));
    let mut contributor = w.contributor.clone();
    let close = tokio::spawn(async move { contributor.close_session(request).await });
    assert!(pause.reached(WAIT).await, "the commit reached its pause");
    // A second close is refused at once, not queued behind the first (crate closing).
    let second = w
        .close(&session, true, false)
        .await
        .expect_err("one close at a time");
    assert_eq!(second.code(), tonic::Code::FailedPrecondition, "{second:?}");
    assert!(second.message().contains("being closed"), "{second:?}");
    let cancelled = close
        .await
        .expect("close task")
        .expect_err("the call ends at its deadline while the commit is held");
    assert!(
        matches!(
            cancelled.code(),
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ),
        "{cancelled:?}"
    );
    pause.release();

    assert!(
        all_landed(&w, &ids).await,
        "the commit landed after its call ended"
    );
    // The client whose call was cancelled sends its close again and learns how it ended.
    let again = w
        .close(&session, true, false)
        .await
        .expect("the close, answered again");
    let totals = again.totals.expect("totals");
    assert_eq!(
        (totals.created, totals.updated, totals.unchanged),
        (10, 0, 0),
        "{again:?}"
    );
    assert!(!again.import_result_id.is_empty(), "{again:?}");
    let rollback = w
        .close(&session, false, false)
        .await
        .expect_err("committed");
    assert_eq!(
        rollback.code(),
        tonic::Code::PermissionDenied,
        "{rollback:?}"
    );
    assert!(
        rollback.message().contains("ended committed"),
        "{rollback:?}"
    );
}

/// A `Contribute` stream broken after its close reached the server: the commit ends without
/// its stream, the client's resume is refused (the session is no longer open), and the client
/// learns how the session ended from the unary close, which answers as the close it repeats.
async fn a_stream_close_whose_answer_was_lost_is_answered_again(sandbox: &Sandbox) {
    let w = sandbox.country_world().await;
    let proxy = Proxy::start(sandbox.addr).await;
    let channel = tributary_client::connect(&format!("http://{}", proxy.addr))
        .await
        .expect("a channel through the proxy");
    let mut contributor = StreamingContributor::builder(channel, &w.token)
        .backoff(Duration::from_millis(20), Duration::from_millis(200), 500)
        .open(SessionMode::Accrue)
        .await
        .expect("open");
    let ids: Vec<String> = (0..3).map(|i| format!("lost-{i}")).collect();
    contributor
        .upsert(ids.iter().map(|id| country(id, 3)).collect())
        .await
        .expect("upsert");
    contributor.flush().await.expect("acknowledged");
    let session = contributor.session_id().to_owned();

    let mut pause = pause_session_commit(&session);
    let finish = tokio::spawn(async move { contributor.finish(true, false).await });
    assert!(pause.reached(WAIT).await, "the commit reached its pause");
    // The connection breaks while the commit is held; the client keeps trying to resume.
    proxy.cut();
    pause.release();
    assert!(
        all_landed(&w, &ids).await,
        "the commit landed without its stream"
    );
    proxy.restore();

    let closed = finish
        .await
        .expect("finish task")
        .expect("the close, answered by the unary close");
    let totals = closed.totals.expect("totals");
    assert_eq!(
        (totals.created, totals.updated, totals.unchanged),
        (3, 0, 0)
    );
    assert!(!closed.import_result_id.is_empty(), "{closed:?}");
}

on_both_backends!(
    a_reader_never_sees_part_of_a_large_accrue_or_replace_commit,
    a_commit_outlives_a_cancelled_close,
    a_stream_close_whose_answer_was_lost_is_answered_again,
);
