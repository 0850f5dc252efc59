//! The end-to-end path: the three phases through the real server's public gRPC API, the way a
//! connector would send them (unary calls, a few in flight).

use std::pin::pin;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures::StreamExt;
use tributary_proto::admin::v1 as admin;
use tributary_proto::contribution::v1 as contribution;

use crate::records::{self, contribution_record as record, Phase, ENTITY_TYPE};
use crate::server::{cpu_time, ContributionClient, Server};
use crate::PhaseResult;

/// What the gRPC path measured.
pub struct Outcome {
    /// One result per phase.
    pub phases: Vec<PhaseResult>,
    /// `VmHWM` after each phase.
    pub peak_rss_kib: Vec<u64>,
    /// Issue 3's streaming and digest workloads: the re-sends run after the three phases on the
    /// same server; `run_grpc` adds the first loads, each measured on a fresh server.
    pub sync: Result<crate::sync::Outcome>,
}

/// Creates the entity type and a connector, then runs the three phases through the server.
pub async fn run(
    server: &Server,
    admin_token: &str,
    records: usize,
    batch: usize,
    inflight: usize,
    window: usize,
) -> Result<Outcome> {
    let channel = server.channel().await?;
    let mut admin_client = tributary_client::admin(channel.clone(), admin_token);
    records::create_country_type(&mut admin_client).await?;
    let created = admin_client
        .create_connector(admin::CreateConnectorRequest {
            connector: Some(admin::Connector {
                name: "bench".into(),
                entity_type: ENTITY_TYPE.into(),
                write_policy: admin::WritePolicy::Importer as i32,
                ..Default::default()
            }),
        })
        .await
        .context("CreateConnector")?
        .into_inner();
    let client = tributary_client::contribution(channel.clone(), &created.token);

    let mut outcome = Outcome {
        phases: Vec::new(),
        peak_rss_kib: Vec::new(),
        sync: Err(anyhow!("not run")),
    };
    for phase in Phase::ALL {
        let pid = server.pid().to_string();
        let (server_before, bench_before) = (cpu_time(&pid)?, cpu_time("self")?);
        let mut result = run_phase(&client, phase, records, batch, inflight)
            .await
            .with_context(|| format!("gRPC {}", phase.label()))?;
        result.cpu = Some((
            cpu_time(&pid)?.saturating_sub(server_before),
            cpu_time("self")?.saturating_sub(bench_before),
        ));
        outcome.phases.push(result);
        outcome.peak_rss_kib.push(server.peak_rss_kib()?);
    }
    let settings = crate::sync::Settings {
        records,
        batch,
        inflight,
        window,
    };
    outcome.sync = crate::sync::run(server, &mut admin_client, channel, &settings)
        .await
        .map_err(|e| e.context(format!("server log (last lines):\n{}", server.log_tail())));
    Ok(outcome)
}

async fn run_phase(
    client: &ContributionClient,
    phase: Phase,
    records: usize,
    batch: usize,
    inflight: usize,
) -> Result<PhaseResult> {
    let mode = match phase {
        Phase::FirstLoad | Phase::Unchanged => contribution::SessionMode::Accrue,
        Phase::Replace => contribution::SessionMode::Replace,
    };
    let batches = phase.batches(records, batch);
    let sent: usize = batches.iter().map(Vec::len).sum();
    let expected = match phase {
        Phase::FirstLoad => contribution::Outcome::Created,
        Phase::Unchanged | Phase::Replace => contribution::Outcome::Unchanged,
    };

    let start = Instant::now();
    let session_id = client
        .clone()
        .open_session(contribution::OpenSessionRequest { mode: mode as i32 })
        .await
        .context("OpenSession")?
        .into_inner()
        .session_id;
    // Batches hold disjoint ids, so their order inside the session does not matter; a few in
    // flight keep the server busy while the client builds the next batch.
    let upserts = futures::stream::iter(batches.into_iter().map(|indexes| {
        let mut client = client.clone();
        let session_id = session_id.clone();
        async move {
            let request = contribution::UpsertRequest {
                session_id,
                records: indexes.iter().map(|&i| record(i)).collect(),
            };
            let sent_at = Instant::now();
            client
                .upsert(request)
                .await
                .map(|response| (response, sent_at.elapsed()))
        }
    }))
    .buffer_unordered(inflight.max(1));
    let mut upserts = pin!(upserts);
    let mut as_expected = 0usize;
    let mut reported = 0usize;
    let (mut calls, mut latency_sum, mut latency_max) = (0u32, Duration::ZERO, Duration::ZERO);
    while let Some(response) = upserts.next().await {
        let (response, latency) = response.context("Upsert")?;
        let response = response.into_inner();
        calls += 1;
        latency_sum += latency;
        latency_max = latency_max.max(latency);
        reported += response.outcomes.len();
        as_expected += response
            .outcomes
            .iter()
            .filter(|o| o.outcome == expected as i32)
            .count();
    }
    let commit_start = Instant::now();
    let closed = client
        .clone()
        .close_session(contribution::CloseSessionRequest {
            session_id: session_id.clone(),
            commit: true,
            force: false,
        })
        .await
        .context("CloseSession(commit)")?
        .into_inner();
    let commit = commit_start.elapsed();
    let elapsed = start.elapsed();

    let mut warnings = Vec::new();
    if reported != sent || as_expected != sent {
        warnings.push(format!(
            "gRPC {}: {as_expected} of {reported} outcomes {expected:?}, {sent} records sent",
            phase.label()
        ));
    }
    let totals = closed.totals.unwrap_or_default();
    let (total, swept) = match phase {
        Phase::FirstLoad => (totals.created, 0),
        Phase::Unchanged | Phase::Replace => (totals.unchanged, records - sent),
    };
    if total != sent as u64 || totals.swept != swept as u64 {
        warnings.push(format!(
            "gRPC {}: commit totals {totals:?}, expected {sent} {expected:?} and {swept} swept",
            phase.label()
        ));
    }
    let mean = latency_sum.checked_div(calls).unwrap_or_default();
    Ok(
        PhaseResult::new(phase, sent, elapsed, Some(commit), warnings)
            .with_latency(mean, latency_max),
    )
}
