//! Issue 5's workload: an `http_json` source of N country items, served by this process on
//! 127.0.0.1 with offset pagination (each page generated on request, so the source itself holds
//! nothing), pulled by a real `tributary serve` (whose admin process runs the engine). One
//! server process per source size, so its peak RSS (`VmHWM`) is that import's alone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tributary_proto::admin::v1 as admin;

use crate::records::{self, ENTITY_TYPE};
use crate::server::{cpu_time, AdminClient, Server};
use tributary_grpc::convert::json_to_struct;

/// Items per page the source serves (its `limit`).
pub const PAGE: usize = 1_000;
/// The longest one cycle may take before the bench gives up.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(3_600);

/// One cycle's figures.
pub struct Cycle {
    pub elapsed: Duration,
    pub result: admin::ImportResult,
    /// The server's `VmHWM` after the cycle, KiB.
    pub peak_rss_kib: u64,
    /// CPU time of the server and of this process (the HTTP source) during the cycle.
    pub server_cpu: Duration,
    pub bench_cpu: Duration,
}

impl Cycle {
    pub fn rate(&self, items: usize) -> f64 {
        items as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What one source size measured.
pub struct Outcome {
    pub items: usize,
    /// `VmHWM` of the freshly started server, before any source existed, KiB.
    pub idle_rss_kib: u64,
    pub first: Cycle,
    pub unchanged: Cycle,
}

/// The page at `?offset=N&limit=L` of a source of `items` items: `{"data": [...]}`.
async fn page(State(items): State<usize>, RawQuery(query): RawQuery) -> impl IntoResponse {
    let (mut offset, mut limit) = (0, PAGE);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match (key.as_ref(), value.parse::<usize>()) {
            ("offset", Ok(n)) => offset = n,
            ("limit", Ok(n)) => limit = n.min(10 * PAGE),
            _ => {}
        }
    }
    let end = offset.saturating_add(limit).min(items);
    let data: Vec<_> = (offset.min(end)..end)
        .map(|i| json!({"id": records::id(i), "name": records::name(i), "country": records::entity(i)}))
        .collect();
    let body = serde_json::to_vec(&json!({ "data": data })).unwrap_or_default();
    ([(CONTENT_TYPE, "application/json")], body)
}

/// Serves a source of `items` items on a free local port until the process ends.
async fn serve_source(items: usize) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/items", get(page))
        .with_state(items);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

fn seconds(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Creates the entity type, a connector and the source on `server`, waits for the first cycle
/// (which creation starts), then triggers and waits for an unchanged second one.
pub async fn run(server: &Server, admin_token: &str, items: usize) -> Result<Outcome> {
    let idle_rss_kib = server.peak_rss_kib()?;
    let addr = serve_source(items).await?;
    let mut admin = tributary_client::admin(server.channel().await?, admin_token);
    records::create_country_type(&mut admin).await?;
    let connector = admin
        .create_connector(admin::CreateConnectorRequest {
            connector: Some(admin::Connector {
                name: "bench source".into(),
                entity_type: ENTITY_TYPE.into(),
                ..Default::default()
            }),
        })
        .await
        .context("CreateConnector")?
        .into_inner()
        .connector
        .ok_or_else(|| anyhow!("CreateConnector answered no connector"))?;
    let source = admin::Source {
        connector: connector.id.clone(),
        name: format!("{items} countries"),
        kind: admin::SourceKind::HttpJson as i32,
        config: json_to_struct(json!({
            "url": format!("http://{addr}/items"),
            "items": "/data",
            "pagination": {"type": "offset", "limit": PAGE},
        })),
        mapping: json_to_struct(json!({"id": "/id", "name": "/name", "entity": "/country"})),
        // One burst per cycle: the figure is the engine's and the database's, not the pacing's.
        burst_length: Some(seconds(CYCLE_TIMEOUT)),
        burst_interval: Some(seconds(Duration::ZERO)),
        rest_length: Some(seconds(Duration::from_secs(86_400))),
        schedule: Some(admin::source::Schedule::Interval(seconds(
            Duration::from_secs(86_400 * 365),
        ))),
        backoff: vec![seconds(Duration::from_secs(1))],
        ..Default::default()
    };
    let started = Instant::now();
    let cpu = (cpu_time(&server.pid().to_string())?, cpu_time("self")?);
    let id = admin
        .create_source(admin::CreateSourceRequest {
            source: Some(source),
        })
        .await
        .context("CreateSource")?
        .into_inner()
        .source
        .ok_or_else(|| anyhow!("CreateSource answered no source"))?
        .id;
    let first = cycle(server, &mut admin, &connector.id, &id, "", started, cpu).await?;
    check(&first.result, "first cycle", items, 0)?;

    let started = Instant::now();
    let cpu = (cpu_time(&server.pid().to_string())?, cpu_time("self")?);
    admin
        .trigger_source(admin::TriggerSourceRequest { id: id.clone() })
        .await
        .context("TriggerSource")?;
    let unchanged = cycle(
        server,
        &mut admin,
        &connector.id,
        &id,
        &first.result.id,
        started,
        cpu,
    )
    .await?;
    check(&unchanged.result, "unchanged re-import", 0, items)?;
    Ok(Outcome {
        items,
        idle_rss_kib,
        first,
        unchanged,
    })
}

/// Waits for the cycle after import result `previous` to end, and measures it.
async fn cycle(
    server: &Server,
    admin: &mut AdminClient,
    connector: &str,
    id: &str,
    previous: &str,
    started: Instant,
    (server_cpu, bench_cpu): (Duration, Duration),
) -> Result<Cycle> {
    // Polls the connector's newest import result, an indexed read: GetSourceStatus counts the
    // cycle's marks, which would load the server in proportion to the source while it imports.
    let result = loop {
        let newest = admin
            .list_import_results(admin::ListImportResultsRequest {
                connector: connector.into(),
                page_size: 1,
                ..Default::default()
            })
            .await?
            .into_inner()
            .import_results
            .into_iter()
            .next();
        if let Some(result) = newest.filter(|r| r.id != previous && r.source == id) {
            break result;
        }
        if started.elapsed() > CYCLE_TIMEOUT {
            let status = admin
                .get_source_status(admin::GetSourceStatusRequest { id: id.into() })
                .await?
                .into_inner();
            bail!("no cycle ended within {CYCLE_TIMEOUT:?}: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    Ok(Cycle {
        elapsed,
        result,
        peak_rss_kib: server.peak_rss_kib()?,
        server_cpu: cpu_time(&server.pid().to_string())?.saturating_sub(server_cpu),
        bench_cpu: cpu_time("self")?.saturating_sub(bench_cpu),
    })
}

/// The import result says every item was imported as expected.
fn check(result: &admin::ImportResult, what: &str, created: usize, unchanged: usize) -> Result<()> {
    ensure!(
        result.status == admin::ImportStatus::Succeeded as i32
            && result.created == created as u64
            && result.unchanged == unchanged as u64
            && result.updated == 0
            && result.failed == 0
            && result.swept == 0,
        "{what}: expected {created} created and {unchanged} unchanged, got {result:?}"
    );
    Ok(())
}
