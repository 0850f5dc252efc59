//! Issue 4's workloads: `ListRecords` pages/s over a large catalog with a selective entity
//! filter (with the index that makes it fast), and Watch latency from a commit to its event.
//! On PostgreSQL the watcher is connected to a second server process on the same database, so
//! the event travels by NOTIFY as it would between replicas.

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tributary_proto::admin::v1 as admin;
use tributary_proto::catalog::v1 as catalog;
use tributary_proto::contribution::v1 as contribution;

use crate::records::{self, ENTITY_TYPE};
use crate::server::Server;
use tributary_client::BearerAuth;
use tributary_grpc::convert::json_to_struct;

/// The selective filter: one calling code of 998, about 0.1 % of the records.
pub const FILTER: &str = r#"{"entity.calling_code": 44}"#;
/// The expression index an operator creates on SQLite for that filter (ADR 0003); PostgreSQL's
/// GIN index on `entity` comes with the migrations.
pub const SQLITE_INDEX: &str = "CREATE INDEX IF NOT EXISTS records_entity_calling_code \
     ON records (entity_type, json_extract(entity, '$.calling_code'), key)";

/// What the catalog workloads measured.
pub struct Outcome {
    pub records: usize,
    pub load: Duration,
    pub matching: usize,
    pub pages: usize,
    pub listing: Duration,
    /// Listing the whole catalog unfiltered, key order, pages of 1,000: pages and time.
    pub full_pages: usize,
    pub full: Duration,
    /// Upsert call start → event received, and the Upsert round trip alone, per commit.
    pub event: Vec<Duration>,
    pub upsert: Vec<Duration>,
}

type Catalog = catalog::catalog_client::CatalogClient<
    tonic::service::interceptor::InterceptedService<Channel, BearerAuth>,
>;

/// Loads `records` records through `server`, indexes (SQLite) and analyzes, lists, and watches;
/// the watcher connects to `watch_server` (another process on PostgreSQL, the same one on
/// SQLite). `postgres_url` is the database of a PostgreSQL server (`None`: SQLite).
pub async fn run(
    server: &Server,
    watch_server: Option<&Server>,
    admin_token: &str,
    records: usize,
    batch: usize,
    postgres_url: Option<&str>,
) -> Result<Outcome> {
    let channel = server.channel().await?;
    let mut admin_client = tributary_client::admin(channel.clone(), admin_token);
    records::create_country_type(&mut admin_client).await?;
    let connector = admin_client
        .create_connector(admin::CreateConnectorRequest {
            connector: Some(admin::Connector {
                name: "bench".into(),
                entity_type: ENTITY_TYPE.into(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    let consumer = admin_client
        .create_consumer(admin::CreateConsumerRequest {
            consumer: Some(admin::Consumer {
                name: "bench".into(),
                entity_types: vec![ENTITY_TYPE.into()],
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    let mut contributor = tributary_client::contribution(channel.clone(), &connector.token);

    // Load through one stream session, a batch at a time.
    let started = Instant::now();
    let session = contributor
        .open_session(contribution::OpenSessionRequest {
            mode: contribution::SessionMode::Stream as i32,
        })
        .await?
        .into_inner()
        .session_id;
    let ids: Vec<usize> = (0..records).collect();
    for chunk in ids.chunks(batch.max(1)) {
        let batch: Vec<contribution::Record> = chunk.iter().map(|&i| record(i, 0)).collect();
        contributor
            .upsert(contribution::UpsertRequest {
                session_id: session.clone(),
                records: batch,
            })
            .await
            .context("loading")?;
    }
    let load = started.elapsed();
    // The state an operator's database is in after a bulk load: SQLite with its expression
    // index, both with fresh statistics. (Right after a load, before autovacuum has analyzed
    // `records`, PostgreSQL can misjudge the key range and AND a bitmap of half the key index
    // with the GIN bitmap: 100–300 ms a page instead of a few; see docs/BENCHMARKS.md.)
    match postgres_url {
        None => {
            let url = format!("sqlite://{}", server.sqlite_file().display());
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await?;
            sqlx::query(SQLITE_INDEX).execute(&mut conn).await?;
            sqlx::query("ANALYZE").execute(&mut conn).await?;
        }
        Some(url) => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
            sqlx::query("ANALYZE records").execute(&mut conn).await?;
        }
    }

    let mut reader = tributary_client::catalog(channel.clone(), &consumer.token)
        .max_decoding_message_size(64 << 20);
    // Selective filter, pages of 100, repeated for at least 5 s.
    let (mut pages, mut matching) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) || pages == 0 {
        let (p, m) = list_all(&mut reader, FILTER, 100).await?;
        pages += p;
        matching = m;
    }
    let listing = started.elapsed();
    ensure!(matching > 0, "the selective filter matched nothing");
    let started = Instant::now();
    let (full_pages, full_count) = list_all(&mut reader, "", 1000).await?;
    let full = started.elapsed();
    ensure!(
        full_count == records,
        "full listing saw {full_count} of {records}"
    );

    // Watch latency: one record per commit, 200 commits.
    let watch_channel = match watch_server {
        Some(other) => other.channel().await?,
        None => channel.clone(),
    };
    let mut watcher = tributary_client::catalog(watch_channel, &consumer.token);
    let after = reader
        .list_records(catalog::ListRecordsRequest {
            entity_type: ENTITY_TYPE.into(),
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .sequence;
    let mut stream = watcher
        .watch(catalog::WatchRequest {
            entity_type: ENTITY_TYPE.into(),
            after,
        })
        .await?
        .into_inner();
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let receiving = tokio::spawn(async move {
        while let Ok(Some(_event)) = stream.message().await {
            if tx.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    let (mut event, mut upsert) = (Vec::new(), Vec::new());
    for n in 0..200 {
        let sent = Instant::now();
        contributor
            .upsert(contribution::UpsertRequest {
                session_id: session.clone(),
                records: vec![record(n, 1)],
            })
            .await?;
        upsert.push(sent.elapsed());
        let received = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .map_err(|_| anyhow!("no event within 30 s"))?
            .ok_or_else(|| anyhow!("the watch stream ended"))?;
        event.push(received.saturating_duration_since(sent));
    }
    receiving.abort();
    Ok(Outcome {
        records,
        load,
        matching,
        pages,
        listing,
        full_pages,
        full,
        event,
        upsert,
    })
}

/// Record `i`; `round` > 0 changes its population so a re-send is an update.
fn record(i: usize, round: u64) -> contribution::Record {
    let mut entity = records::entity(i);
    if round > 0 {
        entity["population"] = serde_json::json!(round);
    }
    contribution::Record {
        id: records::id(i),
        name: records::name(i),
        entity: json_to_struct(entity),
        instance: None,
        checksum: String::new(),
    }
}

/// Pages through a listing; answers (pages, records).
async fn list_all(reader: &mut Catalog, filter: &str, page_size: i32) -> Result<(usize, usize)> {
    let (mut pages, mut count) = (0, 0);
    let mut page_token = String::new();
    loop {
        let page = reader
            .list_records(catalog::ListRecordsRequest {
                entity_type: ENTITY_TYPE.into(),
                filter: filter.into(),
                page_size,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        pages += 1;
        count += page.records.len();
        if page.next_page_token.is_empty() {
            return Ok((pages, count));
        }
        page_token = page.next_page_token;
    }
}

/// The `q`-quantile of `samples`.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}
