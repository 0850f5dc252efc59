//! Issue 16's range-based sync workload: N records loaded through the `Contribute` stream, then
//! the same set reconciled (`Reconcile`, unary) with 0, 1, 1,000 and 100,000 of them changed,
//! and, for comparison, the same unchanged set diffed record by record (`Diff`). One server
//! process per size; its peak RSS is reset after the load, so the figures are the syncs'.
//!
//! Bytes are the encoded sizes of the protobuf messages both ways (`encoded_len`), without gRPC
//! frame headers, HTTP/2 or TCP overhead. Time is wall time from the first call to the last
//! answer; the client's hashing and sorting of its set is reported apart.

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use prost::Message;
use tributary_client::pb::contribution as pb;
use tributary_core::reconcile::{CallLimits, ClientSet, Reconciler};
use tributary_grpc::reconcile::{answers_from_proto, ranges_to_proto};

use crate::server::{cpu_time, ContributionClient, Server};

/// Digests per `Diff` call in the comparison.
const DIFF_BATCH: usize = 10_000;

/// One sync measured.
pub struct SyncRun {
    pub label: String,
    pub rounds: u32,
    pub calls: u32,
    pub sent: usize,
    pub received: usize,
    pub elapsed: Duration,
    /// Ids the exchange says to send in full.
    pub to_send: usize,
    pub server_cpu: Duration,
    /// The server's `VmHWM` during the sync (reset before it), KiB.
    pub peak_rss_kib: u64,
}

/// What one size measured.
pub struct Outcome {
    pub records: usize,
    pub load: Duration,
    /// Building the client's set of N items (hashing and sorting).
    pub client_set: Duration,
    pub syncs: Vec<SyncRun>,
}

/// Loads `records`, then measures each sync in its own session. On PostgreSQL `records` is
/// analyzed after the load first, as autovacuum does within minutes: before that the planner's
/// estimates for the page query are stale and it sorts the rest of the table for every page.
pub async fn run(
    server: &Server,
    postgres_url: Option<&str>,
    admin_token: &str,
    records: usize,
    batch: usize,
    window: usize,
) -> Result<Outcome> {
    let loaded = crate::sync::loaded_connector(
        server,
        admin_token,
        "bench-reconcile",
        records,
        batch,
        window,
    )
    .await?;
    let load = loaded.load;
    if let Some(url) = postgres_url {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
        sqlx::query("ANALYZE records").execute(&mut conn).await?;
    }
    let digests: Vec<pb::Digest> = (0..records)
        .map(crate::sync::digest)
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let unchanged = ClientSet::new(digests.iter().map(|d| (d.id.clone(), d.checksum.clone())));
    let client_set = started.elapsed();
    let client = tributary_client::contribution(loaded.channel, &loaded.token);
    let mut outcome = Outcome {
        records,
        load,
        client_set,
        syncs: Vec::new(),
    };
    for changed in [0, 1, 1_000, 100_000] {
        if changed > records {
            continue;
        }
        // Every (records / changed)-th record changed, spread over the whole id range.
        let step = records / changed.max(1);
        let set = if changed == 0 {
            unchanged.clone()
        } else {
            ClientSet::new(digests.iter().enumerate().map(|(i, d)| {
                let checksum = if i % step == 0 && i / step < changed {
                    format!("changed-{}", d.checksum)
                } else {
                    d.checksum.clone()
                };
                (d.id.clone(), checksum)
            }))
        };
        let label = format!("`Reconcile`, {} changed", crate::thousands(changed as f64));
        let sync = measured(server, &label, reconcile(&client, &set)).await?;
        ensure!(
            sync.to_send == changed,
            "{label}: {} to send, expected {changed}",
            sync.to_send
        );
        outcome.syncs.push(sync);
    }
    let label = "`Diff`, 0 changed (per-record digests)".to_owned();
    let sync = measured(server, &label, diff(&client, &digests)).await?;
    ensure!(sync.to_send == 0, "Diff: {} to send", sync.to_send);
    outcome.syncs.push(sync);
    Ok(outcome)
}

/// Figures of a sync, before the server's share is added.
struct Exchange {
    rounds: u32,
    calls: u32,
    sent: usize,
    received: usize,
    to_send: usize,
}

async fn measured(
    server: &Server,
    label: &str,
    sync: impl std::future::Future<Output = Result<Exchange>>,
) -> Result<SyncRun> {
    server.reset_peak_rss()?;
    let pid = server.pid().to_string();
    let cpu = cpu_time(&pid)?;
    let started = Instant::now();
    let exchange = sync.await.with_context(|| label.to_owned())?;
    Ok(SyncRun {
        label: label.to_owned(),
        rounds: exchange.rounds,
        calls: exchange.calls,
        sent: exchange.sent,
        received: exchange.received,
        elapsed: started.elapsed(),
        to_send: exchange.to_send,
        server_cpu: cpu_time(&pid)?.saturating_sub(cpu),
        peak_rss_kib: server.peak_rss_kib()?,
    })
}

async fn open_accrue(client: &ContributionClient) -> Result<String> {
    Ok(client
        .clone()
        .open_session(pb::OpenSessionRequest {
            mode: pb::SessionMode::Accrue as i32,
        })
        .await?
        .into_inner()
        .session_id)
}

async fn roll_back(client: &ContributionClient, session_id: String) -> Result<()> {
    client
        .clone()
        .close_session(pb::CloseSessionRequest {
            session_id,
            commit: false,
            force: false,
        })
        .await?;
    Ok(())
}

/// A whole exchange in an accrue session, counting the bytes of every message.
async fn reconcile(client: &ContributionClient, set: &ClientSet) -> Result<Exchange> {
    let session_id = open_accrue(client).await?;
    let mut reconciler = Reconciler::new(set);
    let mut exchange = Exchange {
        rounds: 0,
        calls: 0,
        sent: 0,
        received: 0,
        to_send: 0,
    };
    loop {
        let round = reconciler.next_round();
        if round.is_empty() {
            break;
        }
        exchange.rounds += 1;
        for call in Reconciler::calls(round, CallLimits::default()) {
            let request = pb::ReconcileRequest {
                session_id: session_id.clone(),
                ranges: ranges_to_proto(&call),
            };
            exchange.sent += request.encoded_len();
            let response = client.clone().reconcile(request).await?.into_inner();
            exchange.received += response.encoded_len();
            exchange.calls += 1;
            let answers = answers_from_proto(response.ranges).map_err(|e| anyhow!("{e}"))?;
            reconciler
                .absorb(&call, &answers)
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    exchange.to_send = reconciler.outcome().send.len();
    roll_back(client, session_id).await?;
    Ok(exchange)
}

/// The same unchanged set as per-record digests, in unary `Diff` calls one after another.
async fn diff(client: &ContributionClient, digests: &[pb::Digest]) -> Result<Exchange> {
    let session_id = open_accrue(client).await?;
    let mut exchange = Exchange {
        rounds: 1,
        calls: 0,
        sent: 0,
        received: 0,
        to_send: 0,
    };
    for chunk in digests.chunks(DIFF_BATCH) {
        let request = pb::DiffRequest {
            session_id: session_id.clone(),
            digests: chunk.to_vec(),
        };
        exchange.sent += request.encoded_len();
        let response = client.clone().diff(request).await?.into_inner();
        exchange.received += response.encoded_len();
        exchange.calls += 1;
        exchange.to_send += response
            .results
            .iter()
            .filter(|r| r.state() != pb::DigestState::Unchanged)
            .count();
    }
    roll_back(client, session_id).await?;
    Ok(exchange)
}
