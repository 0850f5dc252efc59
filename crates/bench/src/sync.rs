//! Issue 3's workloads:
//!
//! - first load in a STREAM session: unary `Upsert` calls vs the `Contribute` stream through
//!   [`StreamingContributor`], twice each (unary, stream, stream, unary), each into an empty
//!   database and a server of its own ([`fresh_load`]): loads into one shared table slow down
//!   as it grows, steepest at first, which no run order cancels;
//! - unchanged re-send in an ACCRUE session, on the server of the three phases after them, on a
//!   connector of its own: every record in full through unary `Upsert` vs digests only (`Diff`,
//!   unary and in the stream), sending in full only the ids answered as new or changed (none),
//!   then commit.
//!
//! Bytes sent are the encoded sizes of the protobuf request messages the bench builds
//! (`prost::Message::encoded_len`): no gRPC frame headers (5 bytes per message), HTTP/2 or TCP
//! overhead, and no resends after a reconnect (counted separately, and expected to be zero).

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use prost::Message;
use tonic::transport::Channel;
use tributary_client::pb::contribution as pb;
use tributary_client::StreamingContributor;
use tributary_core::checksum::{canonical_json, record_checksum};
use tributary_proto::admin::v1 as admin;
use tributary_proto::contribution::v1::contribute_request::Message as Outgoing;

use crate::records::{self, contribution_record as record, Phase, ENTITY_TYPE};
use crate::server::{cpu_time, AdminClient, ContributionClient, Server};

/// What the workloads are run with.
pub struct Settings {
    pub records: usize,
    pub batch: usize,
    /// Unary calls in flight at once.
    pub inflight: usize,
    /// The stream's window of unacknowledged batches.
    pub window: usize,
}

/// One of the five measured workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// First load, STREAM session, unary `Upsert` calls.
    LoadUnary,
    /// First load, STREAM session, the `Contribute` stream.
    LoadStream,
    /// Unchanged re-send in full, ACCRUE session, unary `Upsert` calls, commit.
    FullResend,
    /// Unchanged re-send as digests, ACCRUE session, unary `Diff` calls, commit.
    DigestUnary,
    /// Unchanged re-send as digests, ACCRUE session, the stream's `diff`, commit.
    DigestStream,
}

impl Workload {
    /// The label printed in the report.
    pub fn label(self) -> &'static str {
        match self {
            Workload::LoadUnary => "first load, unary `Upsert`",
            Workload::LoadStream => "first load, `Contribute` stream",
            Workload::FullResend => "unchanged, full records, unary `Upsert`",
            Workload::DigestUnary => "unchanged, digests only, unary `Diff`",
            Workload::DigestStream => "unchanged, digests only, stream `diff`",
        }
    }

    /// The session it runs in.
    pub fn session(self) -> &'static str {
        match self {
            Workload::LoadUnary | Workload::LoadStream => "stream",
            _ => "accrue + commit",
        }
    }
}

/// What one workload measured.
pub struct Row {
    pub workload: Workload,
    /// Records loaded or covered (sent in full or as a digest).
    pub records: usize,
    /// Request messages sent (calls, or stream messages including open and close).
    pub requests: usize,
    /// Sum of the request messages' encoded sizes.
    pub bytes: usize,
    /// From opening the session to the end of its close.
    pub elapsed: Duration,
    /// CPU time the server and the bench process spent in it.
    pub server_cpu: Duration,
    pub bench_cpu: Duration,
    /// Batch round trips (not timed for the stream's upserts, whose acks are read lazily).
    pub latency: Latency,
}

impl Row {
    /// Records per second.
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Bytes sent per record.
    pub fn bytes_per_record(&self) -> f64 {
        self.bytes as f64 / self.records.max(1) as f64
    }
}

/// What the workloads measured.
pub struct Outcome {
    pub rows: Vec<Row>,
    pub window: usize,
    pub inflight: usize,
    /// Mismatched outcomes or totals: figures from such a run are not comparable.
    pub warnings: Vec<String>,
}

impl Outcome {
    /// Records/s and bytes sent of `workload` over all its runs (the first loads run twice),
    /// if it ran.
    pub fn totals(&self, workload: Workload) -> Option<(f64, usize)> {
        let runs = self.rows.iter().filter(|r| r.workload == workload);
        let (records, bytes, elapsed) = runs.fold((0, 0, Duration::ZERO), |(n, b, t), r| {
            (n + r.records, b + r.bytes, t + r.elapsed)
        });
        (records > 0).then(|| (records as f64 / elapsed.as_secs_f64().max(1e-9), bytes))
    }
}

/// Measured counts, before timing and CPU are attached.
pub(crate) struct Sent {
    records: usize,
    requests: usize,
    bytes: usize,
    latency: Latency,
}

/// Round trips of the batch calls that wait for their answer (unary calls, the stream's `diff`).
#[derive(Clone, Copy, Default)]
pub struct Latency {
    calls: u32,
    sum: Duration,
    max: Duration,
}

impl Latency {
    fn add(&mut self, d: Duration) {
        self.calls += 1;
        self.sum += d;
        self.max = self.max.max(d);
    }

    /// Mean and slowest round trip, if any was timed.
    pub fn mean_max(&self) -> Option<(Duration, Duration)> {
        (self.calls > 0).then(|| (self.sum / self.calls, self.max))
    }
}

/// Loads the records once (through the stream, unmeasured) into connector `bench-resend` and
/// runs the unchanged re-sends on it: in full through unary `Upsert`, then as digests through
/// unary `Diff` and through the stream's `diff`. The first loads are measured apart, each into
/// an empty database of its own ([`fresh_load`]).
pub async fn run(
    server: &Server,
    admin_client: &mut AdminClient,
    channel: Channel,
    settings: &Settings,
) -> Result<Outcome> {
    let token = create_connector(admin_client, "bench-resend").await?;
    let client = tributary_client::contribution(channel.clone(), &token);
    let batches = Phase::FirstLoad.batches(settings.records, settings.batch);
    let mut outcome = Outcome {
        rows: Vec::new(),
        window: settings.window,
        inflight: settings.inflight.max(1),
        warnings: Vec::new(),
    };
    let w = &mut outcome.warnings;
    stream_load(channel.clone(), &token, &batches, settings.window, w)
        .await
        .context("loading the re-send workloads' records")?;
    for workload in [
        Workload::FullResend,
        Workload::DigestUnary,
        Workload::DigestStream,
    ] {
        let w = &mut outcome.warnings;
        let row = measured(server, workload, async {
            match workload {
                Workload::FullResend => {
                    let mode = pb::SessionMode::Accrue;
                    unary_upserts(&client, mode, &batches, settings.inflight, w).await
                }
                Workload::DigestUnary => {
                    unary_digests(&client, &batches, settings.inflight, w).await
                }
                _ => stream_digests(channel.clone(), &token, &batches, settings.window, w).await,
            }
        })
        .await?;
        outcome.rows.push(row);
    }
    Ok(outcome)
}

/// A first load (`LoadUnary` or `LoadStream`) of all records into connector `bench-load` on
/// `server`, which must start empty: every load is measured into a database of its own, so
/// none runs against a table another load made bigger. Creates the entity type first.
pub async fn fresh_load(
    server: &Server,
    admin_token: &str,
    workload: Workload,
    settings: &Settings,
) -> Result<(Row, Vec<String>)> {
    let channel = server.channel().await?;
    let mut admin_client = tributary_client::admin(channel.clone(), admin_token);
    records::create_country_type(&mut admin_client).await?;
    let token = create_connector(&mut admin_client, "bench-load").await?;
    let batches = Phase::FirstLoad.batches(settings.records, settings.batch);
    let mut warnings = Vec::new();
    let w = &mut warnings;
    let row = measured(server, workload, async {
        if workload == Workload::LoadStream {
            stream_load(channel.clone(), &token, &batches, settings.window, w).await
        } else {
            let client = tributary_client::contribution(channel.clone(), &token);
            let mode = pb::SessionMode::Stream;
            unary_upserts(&client, mode, &batches, settings.inflight, w).await
        }
    })
    .await?;
    Ok((row, warnings))
}

/// Runs one workload and measures its wall time and the CPU time of the server and the bench.
async fn measured(
    server: &Server,
    workload: Workload,
    run: impl std::future::Future<Output = Result<Sent>>,
) -> Result<Row> {
    let pid = server.pid().to_string();
    let (server_before, bench_before) = (cpu_time(&pid)?, cpu_time("self")?);
    let start = Instant::now();
    let sent = run
        .await
        .with_context(|| format!("gRPC {}", workload.label()))?;
    let elapsed = start.elapsed();
    Ok(Row {
        workload,
        records: sent.records,
        requests: sent.requests,
        bytes: sent.bytes,
        elapsed,
        server_cpu: cpu_time(&pid)?.saturating_sub(server_before),
        bench_cpu: cpu_time("self")?.saturating_sub(bench_before),
        latency: sent.latency,
    })
}

pub(crate) async fn create_connector(admin_client: &mut AdminClient, name: &str) -> Result<String> {
    Ok(admin_client
        .create_connector(admin::CreateConnectorRequest {
            connector: Some(admin::Connector {
                name: name.into(),
                entity_type: ENTITY_TYPE.into(),
                write_policy: admin::WritePolicy::Importer as i32,
                ..Default::default()
            }),
        })
        .await
        .with_context(|| format!("CreateConnector {name}"))?
        .into_inner()
        .token)
}

/// Record `i`'s digest, its checksum computed as the server computes it (SPEC §1.1): BLAKE3 of
/// the canonical JSON of `{"entity","instance","name"}`, with instance `{}`.
pub(crate) fn digest(i: usize) -> Result<pb::Digest> {
    let entity = canonical_json(&records::entity(i)).map_err(|e| anyhow!("{e}"))?;
    Ok(pb::Digest {
        id: records::id(i),
        checksum: record_checksum(&records::name(i), &entity, "{}"),
    })
}

/// Records `indexes` in full, in a `mode` session through unary `Upsert` calls (a few in flight),
/// then `CloseSession(commit)`. A STREAM session expects every outcome `created`, an ACCRUE
/// session every outcome `unchanged` and the commit to count them.
async fn unary_upserts(
    client: &ContributionClient,
    mode: pb::SessionMode,
    batches: &[Vec<usize>],
    inflight: usize,
    warnings: &mut Vec<String>,
) -> Result<Sent> {
    let label = match mode {
        pb::SessionMode::Stream => Workload::LoadUnary.label(),
        _ => Workload::FullResend.label(),
    };
    let expected = match mode {
        pb::SessionMode::Stream => pb::Outcome::Created,
        _ => pb::Outcome::Unchanged,
    };
    let records: usize = batches.iter().map(Vec::len).sum();
    let open = pb::OpenSessionRequest { mode: mode as i32 };
    let mut bytes = open.encoded_len();
    let session_id = client
        .clone()
        .open_session(open)
        .await
        .context("OpenSession")?
        .into_inner()
        .session_id;
    let upserts = futures::stream::iter(batches.iter().map(|indexes| {
        let mut client = client.clone();
        let session_id = session_id.clone();
        async move {
            let request = pb::UpsertRequest {
                session_id,
                records: indexes.iter().map(|&i| record(i)).collect(),
            };
            let len = request.encoded_len();
            let sent_at = Instant::now();
            client
                .upsert(request)
                .await
                .map(|r| (r.into_inner(), len, sent_at.elapsed()))
        }
    }))
    .buffer_unordered(inflight.max(1));
    let (mut reported, mut as_expected) = (0usize, 0usize);
    let mut latency = Latency::default();
    let mut upserts = pin!(upserts);
    while let Some(response) = upserts.next().await {
        let (response, len, took) = response.context("Upsert")?;
        latency.add(took);
        bytes += len;
        reported += response.outcomes.len();
        as_expected += response
            .outcomes
            .iter()
            .filter(|o| o.outcome == expected as i32)
            .count();
    }
    let close = pb::CloseSessionRequest {
        session_id: session_id.clone(),
        commit: true,
        force: false,
    };
    bytes += close.encoded_len();
    let totals = client
        .clone()
        .close_session(close)
        .await
        .context("CloseSession")?
        .into_inner()
        .totals
        .unwrap_or_default();
    if reported != records || as_expected != records {
        warnings.push(format!(
            "gRPC {label}: {as_expected} of {reported} outcomes {expected:?}, {records} records sent"
        ));
    }
    if mode == pb::SessionMode::Accrue
        && (totals.unchanged != records as u64 || totals.created + totals.updated != 0)
    {
        warnings.push(format!(
            "gRPC {label}: commit totals {totals:?}, expected {records} unchanged"
        ));
    }
    Ok(Sent {
        records,
        requests: batches.len() + 2,
        bytes,
        latency,
    })
}

/// Outcomes and errors seen by a stream's ack callback.
#[derive(Default)]
struct Acks {
    outcomes: usize,
    created: usize,
    rejected: Vec<String>,
}

/// A connector of the country type on `server`, loaded with `records` records through the
/// `Contribute` stream: what the export and range-sync workloads start from.
pub(crate) struct Loaded {
    pub channel: Channel,
    pub admin: AdminClient,
    pub token: String,
    /// How long the load took.
    pub load: Duration,
}

/// Creates the country type and connector `name`, and loads `records` records into it.
pub(crate) async fn loaded_connector(
    server: &Server,
    admin_token: &str,
    name: &str,
    records: usize,
    batch: usize,
    window: usize,
) -> Result<Loaded> {
    let channel = server.channel().await?;
    let mut admin = tributary_client::admin(channel.clone(), admin_token);
    records::create_country_type(&mut admin).await?;
    let token = create_connector(&mut admin, name).await?;
    let started = Instant::now();
    let mut warnings = Vec::new();
    let batches = Phase::FirstLoad.batches(records, batch);
    stream_load(channel.clone(), &token, &batches, window, &mut warnings).await?;
    anyhow::ensure!(warnings.is_empty(), "loading: {warnings:?}");
    Ok(Loaded {
        channel,
        admin,
        token,
        load: started.elapsed(),
    })
}

/// A first load in a STREAM session through the `Contribute` stream; every outcome `created`.
pub(crate) async fn stream_load(
    channel: Channel,
    token: &str,
    batches: &[Vec<usize>],
    window: usize,
    warnings: &mut Vec<String>,
) -> Result<Sent> {
    let label = Workload::LoadStream.label();
    let acks = Arc::new(Mutex::new(Acks::default()));
    let seen = Arc::clone(&acks);
    let mut stream = StreamingContributor::builder(channel, token)
        .window(window)
        .on_ack(move |ack| {
            let mut acks = seen.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(error) = &ack.error {
                acks.rejected
                    .push(format!("batch {}: {}", ack.batch_seq, error.message));
            }
            acks.outcomes += ack.outcomes.len();
            acks.created += ack
                .outcomes
                .iter()
                .filter(|o| o.outcome == pb::Outcome::Created as i32)
                .count();
        })
        .open(pb::SessionMode::Stream)
        .await
        .context("Contribute open")?;
    let mut bytes = open_len(pb::SessionMode::Stream);
    let latency = Latency::default();
    for indexes in batches {
        let request = pb::ContributeRequest {
            message: Some(Outgoing::Upsert(pb::UpsertBatch {
                batch_seq: stream.next_batch_seq(),
                records: indexes.iter().map(|&i| record(i)).collect(),
            })),
        };
        bytes += request.encoded_len();
        let Some(Outgoing::Upsert(batch)) = request.message else {
            unreachable!("built as an upsert batch")
        };
        stream.upsert(batch.records).await.context("upsert")?;
    }
    let stats = stream.stats();
    bytes += close_len();
    stream.finish(true, false).await.context("finish")?;
    let records: usize = batches.iter().map(Vec::len).sum();
    let acks = acks.lock().unwrap_or_else(|e| e.into_inner());
    if acks.outcomes != records || acks.created != records || !acks.rejected.is_empty() {
        warnings.push(format!(
            "gRPC {label}: {} of {} outcomes Created, {records} records sent; rejected: {:?}",
            acks.created, acks.outcomes, acks.rejected
        ));
    }
    if stats.reconnects != 0 {
        warnings.push(format!(
            "gRPC {label}: {} reconnect(s); resent batches are not counted in bytes sent",
            stats.reconnects
        ));
    }
    Ok(Sent {
        records,
        requests: batches.len() + 2,
        bytes,
        latency,
    })
}

/// An unchanged re-send as digests: an ACCRUE session, unary `Diff` calls of one batch of
/// digests each (a few in flight), the new or changed ids sent in full (none expected), commit.
async fn unary_digests(
    client: &ContributionClient,
    batches: &[Vec<usize>],
    inflight: usize,
    warnings: &mut Vec<String>,
) -> Result<Sent> {
    let label = Workload::DigestUnary.label();
    let open = pb::OpenSessionRequest {
        mode: pb::SessionMode::Accrue as i32,
    };
    let mut bytes = open.encoded_len();
    let mut requests = 2;
    let session_id = client
        .clone()
        .open_session(open)
        .await
        .context("OpenSession")?
        .into_inner()
        .session_id;
    let diffs = futures::stream::iter(batches.iter().map(|indexes| {
        let mut client = client.clone();
        let session_id = session_id.clone();
        async move {
            let digests = indexes
                .iter()
                .map(|&i| digest(i))
                .collect::<Result<Vec<_>>>()?;
            let request = pb::DiffRequest {
                session_id,
                digests,
            };
            let len = request.encoded_len();
            let sent_at = Instant::now();
            let response = client.diff(request).await.context("Diff")?.into_inner();
            anyhow::Ok((response, len, sent_at.elapsed()))
        }
    }))
    .buffer_unordered(inflight.max(1));
    let mut diffs = pin!(diffs);
    let (mut answered, mut unchanged) = (0usize, 0usize);
    let mut latency = Latency::default();
    let mut to_send: Vec<usize> = Vec::new();
    while let Some(response) = diffs.next().await {
        let (response, len, took) = response?;
        latency.add(took);
        bytes += len;
        requests += 1;
        answered += response.results.len();
        for result in &response.results {
            if result.state == pb::DigestState::Unchanged as i32 {
                unchanged += 1;
            } else {
                to_send.push(index_of(&result.id)?);
            }
        }
    }
    // Send in full what the server asked for (nothing, when every record is unchanged).
    let mut sent_in_full = 0usize;
    for indexes in to_send.chunks(batches.first().map_or(1, Vec::len).max(1)) {
        let request = pb::UpsertRequest {
            session_id: session_id.clone(),
            records: indexes.iter().map(|&i| record(i)).collect(),
        };
        bytes += request.encoded_len();
        requests += 1;
        sent_in_full += indexes.len();
        client.clone().upsert(request).await.context("Upsert")?;
    }
    let close = pb::CloseSessionRequest {
        session_id: session_id.clone(),
        commit: true,
        force: false,
    };
    bytes += close.encoded_len();
    let totals = client
        .clone()
        .close_session(close)
        .await
        .context("CloseSession")?
        .into_inner()
        .totals
        .unwrap_or_default();
    let records: usize = batches.iter().map(Vec::len).sum();
    check_digests(
        label,
        records,
        answered,
        unchanged,
        sent_in_full,
        &totals,
        warnings,
    );
    Ok(Sent {
        records,
        requests,
        bytes,
        latency,
    })
}

/// An unchanged re-send as digests through the stream: an ACCRUE session, one digest batch per
/// batch sent without waiting for its answer (the stream's window bounds how many are in
/// flight), the ids answered new or changed sent in full as answers arrive (none expected),
/// commit.
async fn stream_digests(
    channel: Channel,
    token: &str,
    batches: &[Vec<usize>],
    window: usize,
    warnings: &mut Vec<String>,
) -> Result<Sent> {
    let label = Workload::DigestStream.label();
    let mut stream = StreamingContributor::builder(channel, token)
        .window(window)
        .open(pb::SessionMode::Accrue)
        .await
        .context("Contribute open")?;
    let mut sent = Sent {
        records: batches.iter().map(Vec::len).sum(),
        requests: 2,
        bytes: open_len(pb::SessionMode::Accrue) + close_len(),
        latency: Latency::default(),
    };
    let mut sent_in_full = 0usize;
    for indexes in batches {
        let digests = indexes
            .iter()
            .map(|&i| digest(i))
            .collect::<Result<Vec<_>>>()?;
        let request = pb::ContributeRequest {
            message: Some(Outgoing::Diff(pb::DigestBatch {
                batch_seq: stream.next_batch_seq(),
                digests,
            })),
        };
        sent.bytes += request.encoded_len();
        sent.requests += 1;
        let Some(Outgoing::Diff(batch)) = request.message else {
            unreachable!("built as a digest batch")
        };
        stream
            .send_digests(batch.digests)
            .await
            .context("send_digests")?;
        sent_in_full += send_answered(&mut stream, &mut sent).await?;
    }
    stream.flush().await.context("flush")?;
    sent_in_full += send_answered(&mut stream, &mut sent).await?;
    let closed = stream.finish(true, false).await.context("finish")?;
    // The answers name only the ids to send: every other one was answered unchanged.
    check_digests(
        label,
        sent.records,
        sent.records,
        sent.records - sent_in_full,
        sent_in_full,
        &closed.totals.unwrap_or_default(),
        warnings,
    );
    Ok(sent)
}

/// Sends in full the records the digest answers received so far name; returns how many.
async fn send_answered(stream: &mut StreamingContributor, sent: &mut Sent) -> Result<usize> {
    let mut count = 0;
    for answer in stream.take_digest_answers() {
        if let Some(error) = answer.error {
            bail!(
                "digest batch {} rejected: {}",
                answer.batch_seq,
                error.message
            );
        }
        if answer.to_send.is_empty() {
            continue;
        }
        let records: Vec<pb::Record> = answer
            .to_send
            .iter()
            .map(|id| index_of(id).map(record))
            .collect::<Result<_>>()?;
        let request = pb::ContributeRequest {
            message: Some(Outgoing::Upsert(pb::UpsertBatch {
                batch_seq: stream.next_batch_seq(),
                records,
            })),
        };
        sent.bytes += request.encoded_len();
        sent.requests += 1;
        count += answer.to_send.len();
        let Some(Outgoing::Upsert(batch)) = request.message else {
            unreachable!("built as an upsert batch")
        };
        stream.upsert(batch.records).await.context("upsert")?;
    }
    Ok(count)
}

fn open_len(mode: pb::SessionMode) -> usize {
    pb::ContributeRequest {
        message: Some(Outgoing::Open(pb::StreamOpen {
            mode: mode as i32,
            session_id: String::new(),
        })),
    }
    .encoded_len()
}

fn close_len() -> usize {
    pb::ContributeRequest {
        message: Some(Outgoing::Close(pb::StreamClose {
            commit: true,
            force: false,
        })),
    }
    .encoded_len()
}

/// Record index of id `C000123`.
fn index_of(id: &str) -> Result<usize> {
    id.strip_prefix('C')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("the server named an unknown id {id:?}"))
}

/// Every digest answered unchanged, nothing sent in full, nothing created or updated at commit.
fn check_digests(
    label: &str,
    records: usize,
    answered: usize,
    unchanged: usize,
    sent_in_full: usize,
    totals: &pb::SessionTotals,
    warnings: &mut Vec<String>,
) {
    if answered != records || unchanged != records || sent_in_full != 0 {
        warnings.push(format!(
            "gRPC {label}: {unchanged} of {answered} digests unchanged for {records} records, {sent_in_full} sent in full (expected none)"
        ));
    }
    if totals.created + totals.updated + totals.deleted + totals.swept != 0 {
        warnings.push(format!(
            "gRPC {label}: commit totals {totals:?}, expected nothing created, updated or removed"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::checksum::canonical_json;

    #[test]
    fn digest_is_the_checksum_of_the_whole_record() {
        let whole = serde_json::json!({
            "entity": records::entity(42),
            "instance": {},
            "name": records::name(42),
        });
        let expected = blake3::hash(canonical_json(&whole).unwrap().as_bytes())
            .to_hex()
            .to_string();
        assert_eq!(digest(42).unwrap().checksum, expected);
        assert_eq!(index_of(&records::id(42)).unwrap(), 42);
    }
}
