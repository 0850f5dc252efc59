//! Prometheus metrics (SPEC.md §9): `/metrics` scraped over real HTTP before and after a known
//! workload, on SQLite then PostgreSQL, and the differences checked figure by figure.
//!
//! The recorder is process-wide, so this file holds one test: nothing else in its process
//! records while it measures.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tributary::server::ServerOptions;
use tributary_ingest::EngineOptions;
use tributary_proto::admin::v1 as admin;
use tributary_proto::catalog::v1 as catalog;
use tributary_proto::contribution::v1 as pb;
use tributary_tests::{country, json_struct, wait_until, Sandbox};

const CONTRIBUTION: &str = "tributary.contribution.v1.Contribution";

const RSS: &str = r#"<?xml version="1.0"?>
<rss version="2.0"><channel><title>News</title>
<item><guid>n1</guid><title>First</title></item>
<item><guid>n2</guid><title>Second</title></item>
</channel></rss>"#;

fn options(o: &mut ServerOptions) {
    o.limits.max_batch_records = 10;
    o.ingest = Some(EngineOptions {
        heartbeat: Duration::from_millis(200),
        lease: Duration::from_secs(2),
        ..EngineOptions::default()
    });
}

/// One scrape: every sample by name and its sorted labels.
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    /// `GET /metrics` over HTTP/1.1 on a fresh connection.
    async fn take(addr: SocketAddr) -> Scrape {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_lowercase().contains("content-type: text/plain"),
            "{head}"
        );
        let mut samples = BTreeMap::new();
        for line in body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            samples.insert(normalise(series), value.parse().unwrap());
        }
        Scrape(samples)
    }

    /// The sum of the samples of `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
                series_name == name
                    && labels
                        .iter()
                        .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, v)| v)
            .sum()
    }

    fn series(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }
}

/// `name{b="2",a="1"}` as `name{a="1",b="2"}`.
fn normalise(series: &str) -> String {
    match series.split_once('{') {
        Some((name, labels)) => {
            let mut labels: Vec<&str> = labels.trim_end_matches('}').split("\",").collect();
            labels.sort();
            let labels: Vec<String> = labels
                .iter()
                .map(|l| format!("{}\"", l.trim_end_matches('"')))
                .collect();
            format!("{name}{{{}}}", labels.join(","))
        }
        None => series.to_owned(),
    }
}

/// How much a figure grew between two scrapes.
fn grew(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload_on_sqlite() {
    let sandbox = Sandbox::sqlite(options).await;
    measure(&sandbox).await;
    sandbox.stop().await;
}

tributary_tests::postgres_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_count_a_known_workload_on_postgres() {
        let sandbox = Sandbox::postgres(options).await;
        measure(&sandbox).await;
        sandbox.stop().await;
    }
}

async fn measure(sandbox: &Sandbox) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let endpoint = tokio::spawn(tributary::metrics::serve(
        listener,
        Some(sandbox.store.clone()),
        async move {
            let _ = stopped.await;
        },
    ));
    let before = Scrape::take(addr).await;

    let mut world = sandbox.country_world().await;
    // A stream session: 3 created, the same 3 unchanged, 1 deleted, 1 batch invalid.
    let session = world.open(pb::SessionMode::Stream).await;
    let three = || vec![country("C1", 1), country("C2", 2), country("C3", 3)];
    world.upsert(&session, three()).await.unwrap();
    world.upsert(&session, three()).await.unwrap();
    world.delete(&session, &["C3"]).await.unwrap();
    let mut invalid = country("BAD", 1);
    invalid.entity = None;
    world.upsert(&session, vec![invalid]).await.unwrap_err();
    world.close(&session, true, false).await.unwrap();
    // An accrue session committed and one rolled back.
    let committed = world.open(pb::SessionMode::Accrue).await;
    world
        .upsert(&committed, vec![country("C4", 4)])
        .await
        .unwrap();
    world.close(&committed, true, false).await.unwrap();
    let discarded = world.open(pb::SessionMode::Accrue).await;
    world.close(&discarded, false, false).await.unwrap();
    // A connector at 1 record/s: a full bucket of 10, then a refusal.
    let (_, limited_token) = sandbox
        .create_connector("country", |c| c.rate_limit = Some(1))
        .await;
    let mut limited = sandbox.contributor(&limited_token);
    let open = pb::OpenSessionRequest {
        mode: pb::SessionMode::Stream as i32,
    };
    let limited_session = limited
        .open_session(open)
        .await
        .unwrap()
        .into_inner()
        .session_id;
    let batch = |prefix: &str, n: usize| pb::UpsertRequest {
        session_id: limited_session.clone(),
        records: (0..n)
            .map(|i| country(&format!("{prefix}{i}"), 1))
            .collect(),
    };
    limited.upsert(batch("L", 10)).await.unwrap();
    limited.upsert(batch("M", 1)).await.unwrap_err();
    // A call without a token.
    sandbox
        .contributor("")
        .open_session(pb::OpenSessionRequest {
            mode: pb::SessionMode::Stream as i32,
        })
        .await
        .unwrap_err();

    // A Watch open while scraped, then closed.
    let watch = world
        .reader
        .watch(catalog::WatchRequest {
            entity_type: "country".into(),
            after: 0,
        })
        .await
        .unwrap();
    let watching = Scrape::take(addr).await;
    assert_eq!(
        grew(&before, &watching, "tributary_watch_subscribers", &[]),
        1.0
    );
    drop(watch);
    wait_until(Duration::from_secs(10), || async {
        (Scrape::take(addr)
            .await
            .value("tributary_watch_subscribers", &[])
            == before.value("tributary_watch_subscribers", &[]))
        .then_some(())
    })
    .await
    .expect("the closed Watch is no longer counted");

    // A feed source's cycle: 2 records pulled.
    let feed = pull_a_feed(sandbox).await;

    let after = Scrape::take(addr).await;
    let contribution = |method: &'static str, code: &'static str| {
        grew(
            &before,
            &after,
            "grpc_server_handled_total",
            &[
                ("grpc_service", CONTRIBUTION),
                ("grpc_method", method),
                ("grpc_code", code),
            ],
        )
    };
    // gRPC calls by service, method and code, and their latencies.
    assert_eq!(contribution("Upsert", "OK"), 4.0);
    assert_eq!(contribution("Upsert", "INVALID_ARGUMENT"), 1.0);
    assert_eq!(contribution("Upsert", "RESOURCE_EXHAUSTED"), 1.0);
    assert_eq!(contribution("Delete", "OK"), 1.0);
    assert_eq!(contribution("OpenSession", "OK"), 4.0);
    assert_eq!(contribution("OpenSession", "UNAUTHENTICATED"), 1.0);
    assert_eq!(contribution("CloseSession", "OK"), 3.0);
    let upsert_latencies = grew(
        &before,
        &after,
        "grpc_server_handling_seconds_count",
        &[("grpc_service", CONTRIBUTION), ("grpc_method", "Upsert")],
    );
    assert_eq!(upsert_latencies, 6.0);
    assert!(
        after.value(
            "grpc_server_handling_seconds_bucket",
            &[("grpc_method", "Upsert"), ("le", "+Inf")]
        ) >= 6.0
    );
    assert_eq!(
        grew(
            &before,
            &after,
            "grpc_server_handled_total",
            &[
                ("grpc_method", "Watch"),
                ("grpc_service", "tributary.catalog.v1.Catalog")
            ]
        ),
        1.0,
        "the Watch counts when it ends"
    );
    // Records by outcome and entity type, pushed and pulled.
    let records = |outcome: &'static str, entity_type: &'static str, via: &'static str| {
        grew(
            &before,
            &after,
            "tributary_records_total",
            &[
                ("entity_type", entity_type),
                ("outcome", outcome),
                ("via", via),
            ],
        )
    };
    assert_eq!(records("created", "country", "push"), 3.0 + 1.0 + 10.0);
    assert_eq!(records("unchanged", "country", "push"), 3.0);
    assert_eq!(records("deleted", "country", "push"), 1.0);
    assert_eq!(records("created", "article", "pull"), 2.0);
    // Sessions.
    let sessions = |name: &str, label: (&str, &str)| grew(&before, &after, name, &[label]);
    assert_eq!(
        sessions("tributary_sessions_opened_total", ("mode", "stream")),
        2.0
    );
    assert_eq!(
        sessions("tributary_sessions_opened_total", ("mode", "accrue")),
        2.0
    );
    assert_eq!(
        sessions("tributary_sessions_closed_total", ("result", "closed")),
        1.0
    );
    assert_eq!(
        sessions("tributary_sessions_closed_total", ("result", "committed")),
        1.0
    );
    assert_eq!(
        sessions("tributary_sessions_closed_total", ("result", "rolled_back")),
        1.0
    );
    // Open sessions by mode (the database's figure): of the two stream sessions one was
    // closed; both accrue sessions ended (committed, rolled back).
    assert_eq!(
        after.value("tributary_open_sessions", &[("mode", "stream")]),
        1.0
    );
    assert_eq!(
        after.value("tributary_open_sessions", &[("mode", "accrue")]),
        0.0
    );
    assert_eq!(
        after.value("tributary_open_sessions", &[("mode", "replace")]),
        0.0
    );
    // This process's database connections.
    let open = after.value("tributary_db_connections", &[("state", "open")]);
    let in_use = after.value("tributary_db_connections", &[("state", "in_use")]);
    assert!(
        open >= 1.0 && in_use <= open,
        "open {open}, in use {in_use}"
    );
    // The rate limit's refusal.
    assert_eq!(
        sessions("tributary_rate_limited_total", ("rpc", "Upsert")),
        1.0
    );
    // Sources by state (the database's figure), cycles by status and their duration.
    assert_eq!(
        after.value("tributary_sources", &[("state", feed.as_str())]),
        1.0
    );
    assert_eq!(
        after.value("tributary_sources", &[]),
        1.0,
        "one source in all"
    );
    assert_eq!(
        sessions("tributary_pull_cycles_total", ("status", "succeeded")),
        1.0
    );
    assert_eq!(
        sessions(
            "tributary_pull_cycle_seconds_count",
            ("status", "succeeded")
        ),
        1.0
    );
    // No label carries a record id.
    for series in after.series() {
        assert!(!series.contains("C1") && !series.contains("n1"), "{series}");
    }

    let _ = stop.send(());
    endpoint.await.unwrap().unwrap();
}

/// Creates an `article` type, a connector and a feed source on a local RSS server, waits for
/// its first cycle; returns the source's state after it.
async fn pull_a_feed(sandbox: &Sandbox) -> String {
    let mut admin = sandbox.admin();
    admin
        .create_entity_type(admin::CreateEntityTypeRequest {
            entity_type: Some(admin::EntityType {
                slug: "article".into(),
                name: "Article".into(),
                schema: Some(json_struct(json!({"type": "object"}))),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let (connector, _) = sandbox.create_connector("article", |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rss = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/rss", get(|| async { RSS }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let source = admin
        .create_source(admin::CreateSourceRequest {
            source: Some(admin::Source {
                connector,
                name: "news".into(),
                kind: admin::SourceKind::Feed as i32,
                config: Some(json_struct(json!({"url": format!("http://{rss}/rss")}))),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .source
        .unwrap();
    let status = wait_until(Duration::from_secs(60), || {
        let mut admin = sandbox.admin();
        let id = source.id.clone();
        async move {
            let status = admin
                .get_source_status(admin::GetSourceStatusRequest { id })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap();
            (!status.last_import_result.is_empty()).then_some(status)
        }
    })
    .await
    .expect("the feed's first cycle finished");
    admin::SourceState::try_from(status.state)
        .unwrap()
        .as_str_name()
        .trim_start_matches("SOURCE_STATE_")
        .to_lowercase()
}
