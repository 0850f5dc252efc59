//! SPEC.md §5, §6, §4.4: pull sources end to end — a real server on 127.0.0.1 running the pull
//! engine, sources served by real HTTP and gRPC servers started by the test (which also check
//! that the configured headers arrive), including unreadable sources and unknown source ids.

#![allow(clippy::unwrap_used)]

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tributary::server::ServerOptions;
use tributary_ingest::EngineOptions;
use tributary_proto::admin::v1 as admin;
use tributary_tests::{json_struct, on_both_backends, tls, wait_until, Sandbox};

const WAIT: Duration = Duration::from_secs(60);
const PER_PAGE: usize = 10;

/// A fast engine: the heartbeat is only an upper bound, the engine wakes at due times.
fn fast_engine() -> EngineOptions {
    EngineOptions {
        heartbeat: Duration::from_millis(200),
        lease: Duration::from_secs(2),
        ..EngineOptions::default()
    }
}

fn fast(o: &mut ServerOptions) {
    o.ingest = Some(fast_engine());
}

/// Where the tests' NDJSON files live: the one directory their servers allow file paths under
/// (each test makes its own directory inside it).
fn files_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("tributary-ingest-test-files");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fast engine whose server lets `ndjson` sources read files under [`files_dir`].
fn fast_with_files(o: &mut ServerOptions) {
    fast(o);
    o.allowed_dirs = vec![files_dir()];
}

/// A fast engine that trusts the test process's private CA besides the system's roots.
fn fast_trusting_test_ca(o: &mut ServerOptions) {
    o.ingest = Some(EngineOptions {
        ca_file: Some(tls::test_ca().pem_file.clone()),
        ..fast_engine()
    });
}

// ---------------------------------------------------------------------------------------------
// A paginated JSON API on 127.0.0.1: `GET /items?page=N&per_page=10` → `{"data": [...]}`.

#[derive(Default)]
struct Api {
    items: Mutex<Vec<Value>>,
    /// Page → failures left (u32::MAX: always).
    fail: Mutex<HashMap<u64, u32>>,
    hits: Mutex<HashMap<u64, u32>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    delay_ms: AtomicU64,
    /// The `Authorization` header of every request, in order.
    authorizations: Mutex<Vec<Option<String>>>,
    /// The query string of every request, in order.
    queries: Mutex<Vec<String>>,
    /// Page → a gate the request waits at until the test opens it.
    gates: Mutex<HashMap<u64, Arc<tokio::sync::Semaphore>>>,
}

impl Api {
    fn set_items(&self, items: Vec<Value>) {
        *self.items.lock().unwrap() = items;
    }
    fn hits(&self, page: u64) -> u32 {
        self.hits.lock().unwrap().get(&page).copied().unwrap_or(0)
    }
    /// Records what a request carried.
    fn saw(&self, headers: &axum::http::HeaderMap, query: &str) {
        let authorization = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
        self.authorizations.lock().unwrap().push(authorization);
        self.queries.lock().unwrap().push(query.to_owned());
    }
    /// Requests for `page` wait until [`Api::open_gate`].
    fn close_gate(&self, page: u64) {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        self.gates.lock().unwrap().insert(page, gate);
    }
    fn open_gate(&self, page: u64) {
        if let Some(gate) = self.gates.lock().unwrap().remove(&page) {
            gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
        }
    }
    fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
    /// Asserts that every request so far carried the source's `Authorization` header.
    fn assert_every_request_authorized(&self) {
        let seen = self.authorizations.lock().unwrap().clone();
        assert!(!seen.is_empty(), "no request reached the API");
        assert!(
            seen.iter().all(|a| a.as_deref() == Some("Bearer s3cret")),
            "the configured Authorization header on every request: {seen:?}"
        );
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn query_pairs(q: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect()
}

async fn items_page(
    State(api): State<Arc<Api>>,
    headers: axum::http::HeaderMap,
    RawQuery(q): RawQuery,
) -> axum::response::Response {
    let q = q.unwrap_or_default();
    api.saw(&headers, &q);
    let q = query_pairs(&q);
    let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let now = api.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    api.max_in_flight.fetch_max(now, Ordering::SeqCst);
    // Counted down on drop: a request whose client died is dropped mid-handler.
    let _in_flight = InFlight(&api.in_flight);
    *api.hits.lock().unwrap().entry(page).or_default() += 1;
    let gate = api.gates.lock().unwrap().get(&page).cloned();
    if let Some(gate) = gate {
        let _ = gate.acquire().await;
    }
    let delay = api.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let failing = {
        let mut fail = api.fail.lock().unwrap();
        match fail.get_mut(&page) {
            Some(n) if *n == u32::MAX => true,
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    };
    if failing {
        return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
    }
    let items = api.items.lock().unwrap();
    let start = (page.saturating_sub(1) as usize) * PER_PAGE;
    let data: Vec<Value> = items.iter().skip(start).take(PER_PAGE).cloned().collect();
    (
        [("content-type", "application/json")],
        json!({"data": data, "page": page}).to_string(),
    )
        .into_response()
}

fn json_response(body: Value) -> axum::response::Response {
    ([("content-type", "application/json")], body.to_string()).into_response()
}

/// `GET /offset?offset=N&limit=L` → `{"data": items[N..N+L]}`.
async fn offset_page(
    State(api): State<Arc<Api>>,
    headers: axum::http::HeaderMap,
    RawQuery(q): RawQuery,
) -> axum::response::Response {
    let q = q.unwrap_or_default();
    api.saw(&headers, &q);
    let q = query_pairs(&q);
    let number = |key: &str| q.get(key).and_then(|v| v.parse::<usize>().ok());
    let (offset, limit) = (
        number("offset").unwrap_or(0),
        number("limit").unwrap_or(100),
    );
    let items = api.items.lock().unwrap();
    let data: Vec<Value> = items.iter().skip(offset).take(limit).cloned().collect();
    json_response(json!({"data": data}))
}

/// `GET /cursor[?cursor=cN]` → `{"data": items[N..N+10], "next": "cN+10"}`; `next` is null on
/// the last page.
async fn cursor_page(
    State(api): State<Arc<Api>>,
    headers: axum::http::HeaderMap,
    RawQuery(q): RawQuery,
) -> axum::response::Response {
    let q = q.unwrap_or_default();
    api.saw(&headers, &q);
    let q = query_pairs(&q);
    let from = match q.get("cursor") {
        None => 0,
        Some(c) => match c.strip_prefix('c').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return (StatusCode::BAD_REQUEST, "bad cursor").into_response(),
        },
    };
    let items = api.items.lock().unwrap();
    let data: Vec<Value> = items.iter().skip(from).take(PER_PAGE).cloned().collect();
    let next = (from + PER_PAGE < items.len()).then(|| format!("c{}", from + PER_PAGE));
    json_response(json!({"data": data, "next": next}))
}

fn api_app(api: Arc<Api>) -> axum::Router {
    axum::Router::new()
        .route("/items", get(items_page))
        .route("/offset", get(offset_page))
        .route("/cursor", get(cursor_page))
        .with_state(api)
}

async fn serve_api(api: Arc<Api>) -> SocketAddr {
    serve(api_app(api)).await
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn country_item(i: usize) -> Value {
    json!({"id": format!("C{i:04}"), "name": format!("Country {i}"), "code": "XX", "population": i})
}

fn countries(range: std::ops::Range<usize>) -> Vec<Value> {
    range.map(country_item).collect()
}

fn country_mapping() -> Value {
    json!({"id": "/id", "name": "/name", "entity": {"code": "/code", "population": "/population"}})
}

fn ms(n: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (n / 1000) as i64,
        nanos: ((n % 1000) * 1_000_000) as i32,
    }
}

/// A source definition with fast pacing.
fn source(
    connector: &str,
    kind: admin::SourceKind,
    config: Value,
    mapping: Value,
) -> admin::Source {
    admin::Source {
        connector: connector.into(),
        name: "test source".into(),
        kind: kind as i32,
        config: Some(json_struct(config)),
        mapping: Some(json_struct(mapping)),
        burst_length: Some(ms(200)),
        burst_interval: Some(ms(10)),
        rest_length: Some(ms(86_400_000)),
        backoff: vec![ms(50), ms(50), ms(50)],
        ..Default::default()
    }
}

fn http_source(connector: &str, addr: SocketAddr) -> admin::Source {
    json_api_source(connector, &format!("http://{addr}/items"))
}

fn json_api_source(connector: &str, url: &str) -> admin::Source {
    source(
        connector,
        admin::SourceKind::HttpJson,
        json!({"url": url, "items": "/data",
               "headers": {"Authorization": "Bearer s3cret"},
               "pagination": {"type": "page", "size_param": "per_page", "size": PER_PAGE}}),
        country_mapping(),
    )
}

async fn create_source(sandbox: &Sandbox, source: admin::Source) -> String {
    sandbox
        .admin()
        .create_source(admin::CreateSourceRequest {
            source: Some(source),
        })
        .await
        .expect("create source")
        .into_inner()
        .source
        .expect("source")
        .id
}

async fn status(sandbox: &Sandbox, id: &str) -> admin::SourceStatus {
    sandbox
        .admin()
        .get_source_status(admin::GetSourceStatusRequest { id: id.into() })
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status")
}

/// Waits for the source's next import result after `previous` (a result id, or none).
async fn next_result(sandbox: &Sandbox, id: &str, previous: &str) -> admin::ImportResult {
    let result_id = wait_until(WAIT, || async {
        let s = status(sandbox, id).await;
        (!s.last_import_result.is_empty() && s.last_import_result != previous)
            .then_some(s.last_import_result)
    })
    .await
    .unwrap_or_else(|| panic!("no cycle of source {id} finished within {WAIT:?}"));
    sandbox
        .admin()
        .get_import_result(admin::GetImportResultRequest { id: result_id })
        .await
        .expect("import result")
        .into_inner()
        .import_result
        .expect("import result")
}

async fn trigger(sandbox: &Sandbox, id: &str) {
    sandbox
        .admin()
        .trigger_source(admin::TriggerSourceRequest { id: id.into() })
        .await
        .expect("trigger");
}

async fn visible_ids(world: &mut tributary_tests::World) -> BTreeSet<String> {
    world.visible().await.into_keys().collect()
}

fn ids(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("C{i:04}")).collect()
}

const SUCCEEDED: i32 = admin::ImportStatus::Succeeded as i32;
const PARTIAL: i32 = admin::ImportStatus::Partial as i32;
const FAILED: i32 = admin::ImportStatus::Failed as i32;

// ---------------------------------------------------------------------------------------------

async fn fifty_pages_import_fully_and_the_next_cycle_sweeps_exactly_the_missing(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    api.set_items(countries(0..500));
    let addr = serve_api(api.clone()).await;
    let id = create_source(sandbox, http_source(&world.connector, addr)).await;

    let first = next_result(sandbox, &id, "").await;
    assert_eq!(first.status, SUCCEEDED, "{first:?}");
    assert_eq!((first.created, first.swept), (500, 0));
    assert_eq!(
        first.pages, 51,
        "50 full pages and the empty one that ends the listing"
    );
    assert_eq!(first.source, id);
    assert_eq!(visible_ids(&mut world).await, ids(0..500));
    for page in 1..=51 {
        assert_eq!(api.hits(page), 1, "page {page} fetched once");
    }
    api.assert_every_request_authorized();

    // 30 items disappear at the source: the next cycle sweeps exactly those.
    let gone: BTreeSet<usize> = (0..500).step_by(17).take(30).collect();
    api.set_items(
        (0..500)
            .filter(|i| !gone.contains(i))
            .map(country_item)
            .collect(),
    );
    trigger(sandbox, &id).await;
    let second = next_result(sandbox, &id, &first.id).await;
    assert_eq!(second.status, SUCCEEDED, "{second:?}");
    assert_eq!(
        (second.unchanged, second.created, second.swept),
        (470, 0, 30)
    );
    let expected: BTreeSet<String> = (0..500)
        .filter(|i| !gone.contains(i))
        .map(|i| format!("C{i:04}"))
        .collect();
    assert_eq!(visible_ids(&mut world).await, expected);

    // The source's headers are never shown back.
    let shown = sandbox
        .admin()
        .get_source(admin::GetSourceRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(!format!("{shown:?}").contains("s3cret"));
}

/// The engine fetches the next page while writing one (ADR 0010): a burst that ends meanwhile
/// still writes the page it asked for, so across many burst boundaries no page is fetched twice
/// and none is lost.
async fn pages_fetched_ahead_are_written_once_across_burst_boundaries(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    api.set_items(countries(0..200));
    api.delay_ms.store(5, Ordering::SeqCst);
    let addr = serve_api(api.clone()).await;
    let mut def = http_source(&world.connector, addr);
    def.burst_length = Some(ms(25));
    let id = create_source(sandbox, def).await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(result.status, SUCCEEDED, "{result:?}");
    assert_eq!((result.created, result.pages), (200, 21));
    for page in 1..=21 {
        assert_eq!(api.hits(page), 1, "page {page} fetched once");
    }
    assert_eq!(api.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(visible_ids(&mut world).await, ids(0..200));
}

async fn a_cycle_removing_80_percent_is_refused_and_an_empty_one_too(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    api.set_items(countries(0..100));
    let addr = serve_api(api.clone()).await;
    let mut def = http_source(&world.connector, addr);
    def.reject_removals_above_percent = Some(50.0);
    let id = create_source(sandbox, def).await;
    let first = next_result(sandbox, &id, "").await;
    assert_eq!(first.created, 100);

    api.set_items(countries(0..20));
    trigger(sandbox, &id).await;
    let refused = next_result(sandbox, &id, &first.id).await;
    assert_eq!(refused.status, PARTIAL);
    assert_eq!((refused.sweep_refused, refused.swept), (80, 0));
    assert!(
        refused.errors.iter().any(|e| e.contains("80 of 100")),
        "{:?}",
        refused.errors
    );
    assert_eq!(visible_ids(&mut world).await, ids(0..100));

    api.set_items(Vec::new());
    trigger(sandbox, &id).await;
    let empty = next_result(sandbox, &id, &refused.id).await;
    assert_eq!(
        (empty.status, empty.sweep_refused, empty.swept),
        (PARTIAL, 100, 0)
    );
    assert!(
        empty.errors.iter().any(|e| e.contains("reject_empty")),
        "{:?}",
        empty.errors
    );
    assert_eq!(visible_ids(&mut world).await.len(), 100);

    // The next good cycle sweeps the earlier candidates.
    api.set_items(countries(0..60));
    trigger(sandbox, &id).await;
    let good = next_result(sandbox, &id, &empty.id).await;
    assert_eq!((good.status, good.swept), (SUCCEEDED, 40));
    assert_eq!(visible_ids(&mut world).await, ids(0..60));
}

async fn a_page_failing_twice_is_retried_from_the_saved_cursor(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    api.set_items(countries(0..50));
    api.fail.lock().unwrap().insert(3, 2);
    let addr = serve_api(api.clone()).await;
    let id = create_source(sandbox, http_source(&world.connector, addr)).await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(result.status, SUCCEEDED, "{result:?}");
    assert_eq!(
        (result.created, result.unchanged),
        (50, 0),
        "no duplicate, no loss"
    );
    assert_eq!(result.errors.len(), 2, "{:?}", result.errors);
    assert!(result.errors[0].contains("503"), "{:?}", result.errors);
    assert_eq!(
        (api.hits(1), api.hits(2), api.hits(3), api.hits(4)),
        (1, 1, 3, 1)
    );
    assert_eq!(visible_ids(&mut world).await, ids(0..50));
}

async fn a_page_that_always_fails_fails_the_cycle_after_the_last_interval(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    api.set_items(countries(0..50));
    api.fail.lock().unwrap().insert(2, u32::MAX);
    let addr = serve_api(api.clone()).await;
    let id = create_source(sandbox, http_source(&world.connector, addr)).await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(result.status, FAILED, "{result:?}");
    assert_eq!(api.hits(2), 4, "the first try and one per backoff interval");
    assert!(result
        .errors
        .last()
        .is_some_and(|e| e.contains("gave up after 4 attempts")));
    assert_eq!(result.created, 10, "the first page was imported");
    let s = status(sandbox, &id).await;
    assert_eq!(
        (s.state, s.cursor.as_str()),
        (admin::SourceState::Idle as i32, "")
    );
    assert_eq!(
        visible_ids(&mut world).await,
        ids(0..10),
        "nothing was swept"
    );
}

async fn invalid_items_are_reported_with_their_data_and_the_rest_imported(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    let mut items = countries(0..30);
    items[12]["population"] = json!("many");
    items[13].as_object_mut().unwrap().remove("id");
    api.set_items(items);
    let addr = serve_api(api).await;
    let id = create_source(sandbox, http_source(&world.connector, addr)).await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(
        (result.status, result.created, result.failed),
        (PARTIAL, 28, 2)
    );
    let bad = &result.failed_items[0];
    assert_eq!((bad.id.as_str(), bad.reason.as_str()), ("C0012", "invalid"));
    assert!(bad.error.contains("entity.population"), "{}", bad.error);
    assert!(bad.data.contains("many"), "{}", bad.data);
    assert_eq!(result.failed_items[1].reason, "mapping");
    assert!(result.failed_items[1].data.contains("Country 13"));
    let mut expected = ids(0..30);
    expected.remove("C0012");
    expected.remove("C0013");
    assert_eq!(visible_ids(&mut world).await, expected);
}

// ---------------------------------------------------------------------------------------------
// Feeds, files and gRPC providers

const RSS: &str = r#"<?xml version="1.0"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><title>News</title>
<item><guid>n1</guid><title>First</title><link>http://x/1</link><description>One</description>
  <media:content url="http://x/1.mp4" type="video/mp4" width="640" height="360" duration="12"/>
  <media:thumbnail url="http://x/1.jpg"/></item>
<item><guid>n2</guid><title>Second</title><link>http://x/2</link></item>
</channel></rss>"#;

const ATOM: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Blog</title><id>urn:blog</id><updated>2024-01-01T00:00:00Z</updated>
<entry><id>urn:a1</id><title>Alpha</title><link href="http://x/a1"/><updated>2024-01-02T00:00:00Z</updated>
  <author><name>Ann</name></author><summary>About alpha</summary></entry>
</feed>"#;

async fn article_type(sandbox: &Sandbox) -> (String, tributary_tests::CatalogClient) {
    sandbox
        .admin()
        .create_entity_type(admin::CreateEntityTypeRequest {
            entity_type: Some(admin::EntityType {
                slug: "article".into(),
                name: "Article".into(),
                schema: Some(json_struct(
                    json!({"type": "object", "required": ["title"]}),
                )),
                ..Default::default()
            }),
        })
        .await
        .expect("entity type");
    let (connector, _) = sandbox.create_connector("article", |_| {}).await;
    let reader = sandbox.reader(&sandbox.create_consumer(&["article"]).await);
    (connector, reader)
}

async fn rss_atom_and_media_rss_feeds_are_imported(sandbox: &Sandbox) {
    let (connector, mut reader) = article_type(sandbox).await;
    let app = axum::Router::new()
        .route("/rss", get(|| async { RSS }))
        .route("/atom", get(|| async { ATOM }));
    let addr = serve(app).await;
    let mapping = json!({"id": "/id", "name": "/title",
        "entity": {"title": "/title", "link": "/link", "summary": "/summary", "authors": "/authors", "media": "/media"}});
    for path in ["rss", "atom"] {
        let id = create_source(
            sandbox,
            source(
                &connector,
                admin::SourceKind::Feed,
                json!({"url": format!("http://{addr}/{path}")}),
                mapping.clone(),
            ),
        )
        .await;
        let result = next_result(sandbox, &id, "").await;
        assert_eq!(result.status, SUCCEEDED, "{path}: {result:?}");
    }
    let all = tributary_tests::list_all(&mut reader, "article").await;
    assert_eq!(
        all.keys().cloned().collect::<Vec<_>>(),
        ["n1", "n2", "urn:a1"]
    );
    let entity = |id: &str| format!("{:?}", all[id].entity);
    let n1 = entity("n1");
    assert!(
        n1.contains("http://x/1.mp4") && n1.contains("video/mp4") && n1.contains("http://x/1.jpg"),
        "{n1}"
    );
    assert!(entity("urn:a1").contains("Ann"));
    assert_eq!(all["n1"].name, "First");
}

async fn a_feed_without_mapping_names_records_by_title_and_keeps_the_entry(sandbox: &Sandbox) {
    let (connector, mut reader) = article_type(sandbox).await;
    let addr = serve(axum::Router::new().route("/rss", get(|| async { RSS }))).await;
    let without_mapping = admin::Source {
        mapping: None,
        ..source(
            &connector,
            admin::SourceKind::Feed,
            json!({"url": format!("http://{addr}/rss")}),
            json!({}),
        )
    };
    let id = create_source(sandbox, without_mapping).await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(
        (result.status, result.created),
        (SUCCEEDED, 2),
        "{result:?}"
    );
    let all = tributary_tests::list_all(&mut reader, "article").await;
    assert_eq!(all["n1"].name, "First");
    assert_eq!(all["n2"].name, "Second");
    let entity = format!("{:?}", all["n1"].entity);
    assert!(
        entity.contains("http://x/1") && entity.contains("One") && entity.contains("video/mp4"),
        "the whole entry is the entity: {entity}"
    );
}

async fn an_ndjson_file_is_imported_a_page_at_a_time(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let dir = tempfile::tempdir_in(files_dir()).unwrap();
    let path = dir.path().join("countries.ndjson");
    let mut text = String::new();
    for i in 0..25 {
        text.push_str(&country_item(i).to_string());
        text.push('\n');
        if i == 7 {
            text.push_str("{not json\n");
        }
    }
    std::fs::write(&path, text).unwrap();
    let id = create_source(
        sandbox,
        source(
            &world.connector,
            admin::SourceKind::Ndjson,
            json!({"path": path.display().to_string(), "page_size": 10}),
            country_mapping(),
        ),
    )
    .await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!((result.created, result.failed, result.pages), (25, 1, 3));
    assert!(
        result.failed_items[0].error.contains("line 9"),
        "{:?}",
        result.failed_items
    );
    assert_eq!(visible_ids(&mut world).await, ids(0..25));
}

/// An NDJSON object over HTTP(S): `/ranged` answers `Range: bytes=N-` with 206 (416 past the
/// end) and records the offsets asked for; `/whole` ignores ranges and always sends it all.
#[derive(Default)]
struct NdjsonObject {
    body: Vec<u8>,
    ranges: Mutex<Vec<u64>>,
    /// The `Authorization` header of every request, in order.
    authorizations: Mutex<Vec<Option<String>>>,
}

impl NdjsonObject {
    fn saw(&self, headers: &axum::http::HeaderMap) {
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.authorizations.lock().unwrap().push(authorization);
    }
}

fn ndjson_object_app(object: Arc<NdjsonObject>) -> axum::Router {
    async fn ranged(
        State(o): State<Arc<NdjsonObject>>,
        headers: axum::http::HeaderMap,
    ) -> axum::response::Response {
        o.saw(&headers);
        let from: u64 = headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.strip_suffix('-'))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        o.ranges.lock().unwrap().push(from);
        match o.body.get(from as usize..) {
            Some(rest) if !rest.is_empty() => {
                (StatusCode::PARTIAL_CONTENT, rest.to_vec()).into_response()
            }
            _ => StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
        }
    }
    async fn whole(State(o): State<Arc<NdjsonObject>>, headers: axum::http::HeaderMap) -> Vec<u8> {
        o.saw(&headers);
        o.body.clone()
    }
    axum::Router::new()
        .route("/ranged", get(ranged))
        .route("/whole", get(whole))
        .with_state(object)
}

async fn an_ndjson_object_is_read_over_https_with_ranges(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    // 25 items and a bad line; the last line has no newline.
    let mut text = String::new();
    for i in 0..25 {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&country_item(i).to_string());
        if i == 12 {
            text.push_str("\n{not json");
        }
    }
    let object = Arc::new(NdjsonObject {
        body: text.into_bytes(),
        ..NdjsonObject::default()
    });
    let addr = tls::serve_https(ndjson_object_app(object.clone()), "127.0.0.1").await;
    let ndjson_source = |connector: &str, path: &str| {
        source(
            connector,
            admin::SourceKind::Ndjson,
            json!({"url": format!("https://{addr}/{path}"), "page_size": 10,
                   "headers": {"Authorization": "Bearer s3cret"}}),
            country_mapping(),
        )
    };
    let id = create_source(sandbox, ndjson_source(&world.connector, "ranged")).await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(result.status, PARTIAL, "{result:?}");
    assert_eq!((result.created, result.failed, result.pages), (25, 1, 3));
    assert!(
        result.failed_items[0].error.contains("line 14"),
        "{result:?}"
    );
    assert_eq!(visible_ids(&mut world).await, ids(0..25));
    let ranges = object.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 3, "one ranged GET per page: {ranges:?}");
    assert!(
        ranges[0] == 0 && ranges[1] > 0 && ranges[2] > ranges[1],
        "{ranges:?}"
    );

    // A server that ignores ranges: the same items, each page skipping what was read.
    let (other, _) = sandbox.create_connector("country", |_| {}).await;
    let id = create_source(sandbox, ndjson_source(&other, "whole")).await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!((result.created, result.failed, result.pages), (25, 1, 3));
    let seen = object.authorizations.lock().unwrap().clone();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(
        seen.iter().all(|a| a.as_deref() == Some("Bearer s3cret")),
        "the configured Authorization header on every request: {seen:?}"
    );
}

mod provider {
    use super::*;
    use tributary_proto::provider::v1::source_provider_server::{
        SourceProvider, SourceProviderServer,
    };
    use tributary_proto::provider::v1::{NextRequest, NextResponse};

    /// A provider of 35 countries, 10 per call, cursor `{"after": n}`.
    pub struct Countries;

    #[tonic::async_trait]
    impl SourceProvider for Countries {
        async fn next(
            &self,
            request: tonic::Request<NextRequest>,
        ) -> Result<tonic::Response<NextResponse>, tonic::Status> {
            let req = request.into_inner();
            let after = if req.cursor.is_empty() {
                0
            } else {
                let c: Value = serde_json::from_str(&req.cursor)
                    .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                c["after"].as_u64().unwrap_or(0) as usize
            };
            let end = (after + 10).min(35);
            Ok(tonic::Response::new(NextResponse {
                items: (after..end).map(|i| json_struct(country_item(i))).collect(),
                next_cursor: json!({"after": end}).to_string(),
                done: end == 35,
            }))
        }
    }

    /// A provider that answers every call with an error.
    pub struct Down;

    #[tonic::async_trait]
    impl SourceProvider for Down {
        async fn next(
            &self,
            _: tonic::Request<NextRequest>,
        ) -> Result<tonic::Response<NextResponse>, tonic::Status> {
            Err(tonic::Status::unavailable("the upstream catalogue is down"))
        }
    }

    pub async fn serve() -> SocketAddr {
        serve_provider(Countries).await
    }

    pub async fn serve_provider(provider: impl SourceProvider) -> SocketAddr {
        serve_with(tonic::transport::Server::builder(), provider).await
    }

    /// The provider over TLS, with a certificate for `name` signed by the test CA.
    pub async fn serve_tls(name: &str) -> SocketAddr {
        let issued = tls::test_ca().issue(&[name]);
        let identity = tonic::transport::Identity::from_pem(issued.cert_pem, issued.key_pem);
        let server = tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap();
        serve_with(server, Countries).await
    }

    async fn serve_with(
        mut server: tonic::transport::Server,
        provider: impl SourceProvider,
    ) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            server
                .add_service(SourceProviderServer::new(provider))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }
}

async fn a_grpc_provider_is_called_with_the_cursor(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let addr = provider::serve().await;
    let id = create_source(
        sandbox,
        source(
            &world.connector,
            admin::SourceKind::Grpc,
            json!({"endpoint": format!("http://{addr}")}),
            country_mapping(),
        ),
    )
    .await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(
        (result.status, result.created, result.pages),
        (SUCCEEDED, 35, 4)
    );
    assert_eq!(visible_ids(&mut world).await, ids(0..35));
}

async fn a_grpc_provider_is_reached_over_https_with_the_trusted_roots(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let addr = provider::serve_tls("127.0.0.1").await;
    let id = create_source(
        sandbox,
        source(
            &world.connector,
            admin::SourceKind::Grpc,
            json!({"endpoint": format!("https://{addr}")}),
            country_mapping(),
        ),
    )
    .await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(
        (result.status, result.created),
        (SUCCEEDED, 35),
        "{result:?}"
    );
    assert_eq!(visible_ids(&mut world).await, ids(0..35));

    // A provider whose certificate names another host is refused, saying why.
    let (other, _) = sandbox.create_connector("country", |_| {}).await;
    let elsewhere = provider::serve_tls("elsewhere.invalid").await;
    let id = create_source(
        sandbox,
        source(
            &other,
            admin::SourceKind::Grpc,
            json!({"endpoint": format!("https://{elsewhere}")}),
            country_mapping(),
        ),
    )
    .await;
    let error = wait_until(WAIT, || async {
        Some(status(sandbox, &id).await.last_error).filter(|e| !e.is_empty())
    })
    .await
    .expect("the page fails");
    assert!(error.contains("certificate"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Write policies (§4.4) for pulled records

async fn write_policies_apply_to_pulled_records(sandbox: &Sandbox) {
    sandbox.create_country_type().await;
    let reader_token = sandbox.create_consumer(&["country"]).await;
    let mut reader = sandbox.reader(&reader_token);
    for (policy, expect_updated, expect_skipped) in [
        (admin::WritePolicy::Importer, 10, 0),
        (admin::WritePolicy::ImporterCreateOnly, 0, 10),
        (admin::WritePolicy::ImporterUpdateUnlessEdited, 9, 1),
    ] {
        let (connector, _) = sandbox
            .create_connector("country", |c| c.write_policy = policy as i32)
            .await;
        let api = Arc::new(Api::default());
        api.set_items(countries(0..10));
        let addr = serve_api(api.clone()).await;
        let id = create_source(sandbox, http_source(&connector, addr)).await;
        let first = next_result(sandbox, &id, "").await;
        assert_eq!(first.created, 10);
        // Edit one record inside Tributary.
        let key = tributary_core::ids::record_key("country", &connector, "C0003");
        let edited = sandbox
            .admin()
            .edit_record(admin::EditRecordRequest {
                key: key.clone(),
                name: Some("Edited".into()),
                ..Default::default()
            })
            .await
            .expect("edit")
            .into_inner()
            .record
            .expect("record");
        assert!(edited.edited_at.is_some());
        // The source changes every record.
        api.set_items(
            (0..10)
                .map(|i| {
                    let mut item = country_item(i);
                    item["population"] = json!(1000 + i);
                    item
                })
                .collect(),
        );
        trigger(sandbox, &id).await;
        let second = next_result(sandbox, &id, &first.id).await;
        assert_eq!(
            (second.updated, second.skipped),
            (expect_updated, expect_skipped),
            "{policy:?}"
        );
        let record = reader
            .get_record(tributary_proto::catalog::v1::GetRecordRequest { key })
            .await
            .unwrap()
            .into_inner()
            .record
            .unwrap();
        let kept_edit = policy != admin::WritePolicy::Importer;
        assert_eq!(record.name == "Edited", kept_edit, "{policy:?}");
        if policy == admin::WritePolicy::ImporterUpdateUnlessEdited {
            assert_eq!(second.skipped_items[0].reason, "edited");
            assert_eq!(second.skipped_items[0].id, "C0003");
        }
    }
}

async fn bad_source_definitions_name_the_field(sandbox: &Sandbox) {
    let world = sandbox.country_world().await;
    let mut def = source(
        &world.connector,
        admin::SourceKind::HttpJson,
        json!({"url": "ftp://nope"}),
        json!({"id": "code"}),
    );
    def.reject_removals_above_percent = Some(120.0);
    let status = sandbox
        .admin()
        .create_source(admin::CreateSourceRequest { source: Some(def) })
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let fields: Vec<String> = tributary_tests::bad_request_fields(&status)
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert!(
        fields.contains(&"source.config.url".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"source.mapping.id".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"source.reject_removals_above_percent".to_owned()),
        "{fields:?}"
    );
    let missing = sandbox
        .admin()
        .get_source_status(admin::GetSourceStatusRequest { id: "nope".into() })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

// ---------------------------------------------------------------------------------------------
// Pagination kinds, guards, deltas and report caps

async fn offset_pagination_imports_every_page(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    api.set_items(countries(0..25));
    let addr = serve_api(api.clone()).await;
    let def = source(
        &world.connector,
        admin::SourceKind::HttpJson,
        json!({"url": format!("http://{addr}/offset"), "items": "/data",
               "headers": {"Authorization": "Bearer s3cret"},
               "pagination": {"type": "offset", "limit": PER_PAGE}}),
        country_mapping(),
    );
    let id = create_source(sandbox, def).await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(result.status, SUCCEEDED, "{result:?}");
    assert_eq!(
        (result.created, result.pages),
        (25, 3),
        "the short page ends it"
    );
    assert_eq!(
        api.queries(),
        [
            "offset=0&limit=10",
            "offset=10&limit=10",
            "offset=20&limit=10"
        ]
    );
    api.assert_every_request_authorized();
    assert_eq!(visible_ids(&mut world).await, ids(0..25));
}

async fn next_cursor_pagination_imports_every_page(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    api.set_items(countries(0..25));
    let addr = serve_api(api.clone()).await;
    let def = source(
        &world.connector,
        admin::SourceKind::HttpJson,
        json!({"url": format!("http://{addr}/cursor"), "items": "/data",
               "headers": {"Authorization": "Bearer s3cret"},
               "pagination": {"type": "cursor", "field": "/next"}}),
        country_mapping(),
    );
    let id = create_source(sandbox, def).await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(result.status, SUCCEEDED, "{result:?}");
    assert_eq!(
        (result.created, result.pages),
        (25, 3),
        "a null next cursor ends it"
    );
    assert_eq!(api.queries(), ["", "cursor=c10", "cursor=c20"]);
    api.assert_every_request_authorized();
    assert_eq!(visible_ids(&mut world).await, ids(0..25));
}

async fn reject_empty_defaults_to_true_and_false_lets_an_empty_cycle_sweep(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    api.set_items(countries(0..10));
    let addr = serve_api(api.clone()).await;
    let def = http_source(&world.connector, addr);
    assert_eq!(def.reject_empty, None, "created without reject_empty");
    let id = create_source(sandbox, def.clone()).await;
    let shown = sandbox
        .admin()
        .get_source(admin::GetSourceRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .source
        .unwrap();
    assert_eq!(shown.reject_empty, Some(true), "the default");
    let first = next_result(sandbox, &id, "").await;
    assert_eq!(first.created, 10);

    api.set_items(Vec::new());
    trigger(sandbox, &id).await;
    let refused = next_result(sandbox, &id, &first.id).await;
    assert_eq!(
        (refused.status, refused.sweep_refused, refused.swept),
        (PARTIAL, 10, 0)
    );
    assert_eq!(visible_ids(&mut world).await, ids(0..10));

    sandbox
        .admin()
        .update_source(admin::UpdateSourceRequest {
            source: Some(admin::Source {
                id: id.clone(),
                reject_empty: Some(false),
                ..def
            }),
        })
        .await
        .expect("update");
    trigger(sandbox, &id).await;
    let swept = next_result(sandbox, &id, &refused.id).await;
    assert_eq!((swept.status, swept.swept), (SUCCEEDED, 10));
    assert!(visible_ids(&mut world).await.is_empty());
}

async fn push_delta_records_count_as_marked_in_the_running_cycle(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    api.set_items(countries(0..20));
    api.close_gate(2);
    let addr = serve_api(api.clone()).await;
    let id = create_source(sandbox, http_source(&world.connector, addr)).await;
    // The cycle is under way: page 1 applied, page 2 asked for and held at the API.
    wait_until(WAIT, || async {
        (api.hits(2) > 0 && status(sandbox, &id).await.pages >= 1).then_some(())
    })
    .await
    .expect("the cycle reached page 2");
    let pushed = sandbox
        .admin()
        .push_delta(admin::PushDeltaRequest {
            source_id: id.clone(),
            added: vec![admin::DeltaRecord {
                id: "D1".into(),
                name: "Delta".into(),
                entity: Some(json_struct(json!({"code": "DD", "population": 1}))),
                ..Default::default()
            }],
            removed: Vec::new(),
        })
        .await
        .expect("push delta")
        .into_inner();
    assert_eq!(pushed.created, 1);
    assert_eq!(
        status(sandbox, &id).await.marks,
        11,
        "page 1's ten records and the delta's one"
    );
    api.open_gate(2);
    let result = next_result(sandbox, &id, "").await;
    assert_eq!((result.status, result.swept), (SUCCEEDED, 0), "{result:?}");
    let mut expected = ids(0..20);
    expected.insert("D1".into());
    assert_eq!(visible_ids(&mut world).await, expected, "the sweep kept D1");

    // Marks belong to a cycle: the next one, which does not list D1, sweeps it.
    trigger(sandbox, &id).await;
    let next = next_result(sandbox, &id, &result.id).await;
    assert_eq!((next.status, next.swept), (SUCCEEDED, 1), "{next:?}");
    assert_eq!(visible_ids(&mut world).await, ids(0..20));
}

fn fast_listing_five_items(o: &mut ServerOptions) {
    o.ingest = Some(EngineOptions {
        max_items: 5,
        ..fast_engine()
    });
}

async fn reports_list_at_most_max_items_and_count_the_rest(sandbox: &Sandbox) {
    let world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    let mut items = countries(0..30);
    for item in items.iter_mut().skip(3).step_by(2).take(12) {
        item["population"] = json!("many");
    }
    api.set_items(items);
    let addr = serve_api(api).await;
    let id = create_source(sandbox, http_source(&world.connector, addr)).await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(
        (result.status, result.created, result.failed),
        (PARTIAL, 18, 12)
    );
    assert_eq!(
        (result.failed_items.len(), result.items_not_listed),
        (5, 7),
        "reports.max_items = 5 listed, the rest counted"
    );
    assert_eq!(
        result
            .failed_items
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>(),
        ["C0003", "C0005", "C0007", "C0009", "C0011"],
        "the first ones, in order"
    );
}

// ---------------------------------------------------------------------------------------------
// Unreadable sources: each page fails, is retried per the backoff, and the cycle fails saying why

/// The failed import result of `def`'s first cycle, after its four attempts.
async fn failed_cycle(sandbox: &Sandbox, def: admin::Source) -> admin::ImportResult {
    let id = create_source(sandbox, def).await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(result.status, FAILED, "{result:?}");
    assert_eq!(result.created, 0);
    assert!(
        result
            .errors
            .last()
            .is_some_and(|e| e.contains("gave up after 4 attempts")),
        "{:?}",
        result.errors
    );
    result
}

fn assert_errors_say(result: &admin::ImportResult, what: &[&str]) {
    assert!(
        result
            .errors
            .iter()
            .any(|e| what.iter().all(|w| e.contains(w))),
        "an error saying {what:?}: {:?}",
        result.errors
    );
}

async fn a_malformed_feed_fails_its_cycle_saying_why(sandbox: &Sandbox) {
    let (connector, _) = article_type(sandbox).await;
    let app = axum::Router::new().route(
        "/broken",
        get(|| async { "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><item><title>Cut" }),
    );
    let addr = serve(app).await;
    let url = format!("http://{addr}/broken");
    let result = failed_cycle(
        sandbox,
        source(
            &connector,
            admin::SourceKind::Feed,
            json!({"url": url}),
            json!({"id": "/id", "name": "/title", "entity": {"title": "/title"}}),
        ),
    )
    .await;
    assert_errors_say(&result, &[&url, "not an RSS or Atom feed"]);
}

async fn a_missing_ndjson_file_fails_its_cycle_naming_the_file(sandbox: &Sandbox) {
    let world = sandbox.country_world().await;
    let dir = tempfile::tempdir_in(files_dir()).unwrap();
    let path = dir.path().join("missing.ndjson").display().to_string();
    let result = failed_cycle(
        sandbox,
        source(
            &world.connector,
            admin::SourceKind::Ndjson,
            json!({"path": path}),
            country_mapping(),
        ),
    )
    .await;
    assert_errors_say(&result, &["opening", &path]);
}

async fn a_provider_error_fails_its_cycle_with_the_providers_message(sandbox: &Sandbox) {
    let world = sandbox.country_world().await;
    let addr = provider::serve_provider(provider::Down).await;
    let result = failed_cycle(
        sandbox,
        source(
            &world.connector,
            admin::SourceKind::Grpc,
            json!({"endpoint": format!("http://{addr}")}),
            country_mapping(),
        ),
    )
    .await;
    assert_errors_say(&result, &["the upstream catalogue is down"]);
}

async fn a_non_json_body_fails_its_cycle_saying_so(sandbox: &Sandbox) {
    let world = sandbox.country_world().await;
    let app = axum::Router::new().route("/html", get(|| async { "<html>Maintenance</html>" }));
    let addr = serve(app).await;
    let url = format!("http://{addr}/html");
    let result = failed_cycle(sandbox, json_api_source(&world.connector, &url)).await;
    assert_errors_say(&result, &["is not JSON"]);
}

async fn unknown_sources_are_not_found_in_every_source_call(sandbox: &Sandbox) {
    let world = sandbox.country_world().await;
    let unknown = "0".repeat(32);
    let a = sandbox.admin();
    let mut def = http_source(&world.connector, "127.0.0.1:9".parse().unwrap());
    def.id = unknown.clone();
    let update = a
        .clone()
        .update_source(admin::UpdateSourceRequest { source: Some(def) })
        .await
        .map(|_| ());
    let delete = a
        .clone()
        .delete_source(admin::DeleteSourceRequest {
            id: unknown.clone(),
        })
        .await
        .map(|_| ());
    let trigger = a
        .clone()
        .trigger_source(admin::TriggerSourceRequest {
            id: unknown.clone(),
        })
        .await
        .map(|_| ());
    let cancel = a
        .clone()
        .cancel_source(admin::CancelSourceRequest {
            id: unknown.clone(),
        })
        .await
        .map(|_| ());
    let status = a
        .clone()
        .get_source_status(admin::GetSourceStatusRequest {
            id: unknown.clone(),
        })
        .await
        .map(|_| ());
    let delta = a
        .clone()
        .push_delta(admin::PushDeltaRequest {
            source_id: unknown.clone(),
            added: Vec::new(),
            removed: vec!["C0001".into()],
        })
        .await
        .map(|_| ());
    for (rpc, result) in [
        ("UpdateSource", update),
        ("DeleteSource", delete),
        ("TriggerSource", trigger),
        ("CancelSource", cancel),
        ("GetSourceStatus", status),
        ("PushDelta", delta),
    ] {
        tributary_tests::assert_not_found(rpc, result, "source", &unknown);
    }
}

// ---------------------------------------------------------------------------------------------
// Several engines on one PostgreSQL database

tributary_tests::postgres_test! {
    /// Two engines (each with its own connection pool, as two processes would have) share one
    /// database: a source is worked by one of them at a time; when the holder dies mid-cycle the
    /// other takes over after the lease expires, from the saved cursor, and the end state is
    /// exactly the source's items, each imported once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_two_engines_work_a_source_one_at_a_time_and_take_over_a_dead_holder() {
        two_engines_work_a_source_one_at_a_time_and_take_over_a_dead_holder().await;
    }
}

async fn two_engines_work_a_source_one_at_a_time_and_take_over_a_dead_holder() {
    let sandbox = Sandbox::postgres(|o| o.ingest = None).await;
    let mut world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    api.set_items(countries(0..300));
    api.delay_ms.store(20, Ordering::SeqCst);
    let addr = serve_api(api.clone()).await;
    let url = sandbox.database_url().expect("database url").to_owned();
    let options = EngineOptions {
        heartbeat: Duration::from_millis(100),
        lease: Duration::from_secs(1),
        ..EngineOptions::default()
    };
    let engine = |store| Arc::new(tributary_ingest::Engine::new(store, options.clone()).unwrap());
    let a = engine(tributary_store::open(&url).await.unwrap());
    let b = engine(tributary_store::open(&url).await.unwrap());
    let mut def = http_source(&world.connector, addr);
    def.burst_length = Some(ms(100));
    let id = create_source(&sandbox, def).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let task_a = tokio::spawn(a.clone().run(stop.clone()));
    let task_b = tokio::spawn(b.clone().run(stop.clone()));

    // Kill whichever engine holds the lease once the cycle is well under way.
    let holder = wait_until(WAIT, || async {
        let s = status(&sandbox, &id).await;
        (s.pages >= 5 && !s.lease_holder.is_empty()).then_some(s.lease_holder)
    })
    .await
    .expect("the cycle got under way");
    let survivor = if holder == a.holder() {
        task_a.abort();
        b.holder().to_owned()
    } else {
        task_b.abort();
        a.holder().to_owned()
    };
    let taken_over = wait_until(WAIT, || async {
        let s = status(&sandbox, &id).await;
        (s.lease_holder == survivor || !s.last_import_result.is_empty()).then_some(())
    })
    .await;
    assert!(taken_over.is_some(), "the survivor took the source over");

    let result = next_result(&sandbox, &id, "").await;
    assert_eq!(result.status, SUCCEEDED, "{result:?}");
    assert_eq!(
        (result.created, result.unchanged, result.pages),
        (300, 0, 31),
        "every item imported once, every page applied once"
    );
    assert_eq!(
        api.max_in_flight.load(Ordering::SeqCst),
        1,
        "one engine at a time"
    );
    assert_eq!(visible_ids(&mut world).await, ids(0..300));
    stop.cancel();
    sandbox.stop().await;
}

async fn https_sources_are_verified_against_the_trusted_roots(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    api.set_items(countries(0..25));
    let addr = tls::serve_https(api_app(api.clone()), "127.0.0.1").await;
    let id = create_source(
        sandbox,
        json_api_source(&world.connector, &format!("https://{addr}/items")),
    )
    .await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(result.status, SUCCEEDED, "{result:?}");
    assert_eq!((result.created, result.pages), (25, 3));
    assert_eq!(visible_ids(&mut world).await, ids(0..25));

    // A certificate for another name is refused: the page fails, saying why, and nothing is
    // imported.
    let (other, _) = sandbox.create_connector("country", |_| {}).await;
    let elsewhere = tls::serve_https(api_app(api), "elsewhere.invalid").await;
    let id = create_source(
        sandbox,
        json_api_source(&other, &format!("https://{elsewhere}/items")),
    )
    .await;
    let error = wait_until(WAIT, || async {
        Some(status(sandbox, &id).await.last_error).filter(|e| !e.is_empty())
    })
    .await
    .expect("the page fails");
    assert!(
        error.contains("certificate") && error.contains("https://"),
        "{error}"
    );
    assert_eq!(status(sandbox, &id).await.pages, 0);
}

// ---------------------------------------------------------------------------------------------
// Hostile sources (issue 12): stuck providers, file paths, endless lines, secrets in URLs, and
// headers that must stay with their origin.

/// A fast engine working one source at a time, whose providers get 300 ms to connect and
/// 300 ms to answer.
fn fast_single_slot_impatient(o: &mut ServerOptions) {
    o.ingest = Some(EngineOptions {
        concurrency: 1,
        provider_connect_timeout: Duration::from_millis(300),
        provider_request_timeout: Duration::from_millis(300),
        ..fast_engine()
    });
}

/// A TCP listener on 127.0.0.1 that accepts connections and never sends a byte.
async fn silent_listener() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// A TCP listener on 127.0.0.1 that never accepts, its backlog filled by connections the test
/// holds, so a further connection attempt is left unanswered (where the kernel keeps a small
/// backlog; elsewhere the attempt connects and hangs like [`silent_listener`]).
async fn unaccepting_listener() -> (SocketAddr, impl Sized) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => fillers.push(stream),
            // The backlog is full: connection attempts are no longer answered.
            _ => break,
        }
    }
    (addr, (listener, fillers))
}

async fn a_grpc_provider_that_never_answers_times_out_and_frees_its_slot(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let silent = silent_listener().await;
    let (unaccepting, _held) = unaccepting_listener().await;
    let mut stuck = Vec::new();
    for addr in [silent, unaccepting] {
        let (connector, _) = sandbox.create_connector("country", |_| {}).await;
        let def = source(
            &connector,
            admin::SourceKind::Grpc,
            json!({"endpoint": format!("http://{addr}")}),
            country_mapping(),
        );
        stuck.push(create_source(sandbox, def).await);
    }
    // A good source behind them gets the engine's one slot once a stuck page has timed out.
    let api = Arc::new(Api::default());
    api.set_items(countries(0..10));
    let addr = serve_api(api.clone()).await;
    let good = create_source(sandbox, http_source(&world.connector, addr)).await;
    let result = next_result(sandbox, &good, "").await;
    assert_eq!(
        (result.status, result.created),
        (SUCCEEDED, 10),
        "{result:?}"
    );
    assert_eq!(visible_ids(&mut world).await, ids(0..10));
    // One that accepts and never answers, one that never accepts.
    for (id, what) in stuck.iter().zip([
        "ingest.provider_request_timeout_secs",
        "ingest.provider_connect_timeout_secs",
    ]) {
        let result = next_result(sandbox, id, "").await;
        assert_eq!(result.status, FAILED, "{result:?}");
        assert_errors_say(&result, &["timed out", what]);
    }
}

async fn file_paths_are_refused_when_no_directory_is_allowed(sandbox: &Sandbox) {
    let world = sandbox.country_world().await;
    let status = sandbox
        .admin()
        .create_source(admin::CreateSourceRequest {
            source: Some(source(
                &world.connector,
                admin::SourceKind::Ndjson,
                json!({"path": "/proc/self/environ"}),
                country_mapping(),
            )),
        })
        .await
        .expect_err("file paths are refused by default");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let fields = tributary_tests::bad_request_fields(&status);
    assert!(
        fields
            .iter()
            .any(|(f, d)| f == "source.config.path" && d.contains("ingest.allowed_dirs")),
        "{fields:?}"
    );
}

/// The field violation `def` is refused with at `field`.
async fn refused(sandbox: &Sandbox, def: admin::Source, field: &str) -> String {
    let status = sandbox
        .admin()
        .create_source(admin::CreateSourceRequest { source: Some(def) })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    tributary_tests::bad_request_fields(&status)
        .into_iter()
        .find(|(f, _)| f == field)
        .unwrap_or_else(|| panic!("no violation of {field}: {status:?}"))
        .1
}

async fn ndjson_paths_outside_the_allowed_directories_are_refused(sandbox: &Sandbox) {
    let mut world = sandbox.country_world().await;
    let dir = tempfile::tempdir_in(files_dir()).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.ndjson");
    std::fs::write(&secret, format!("{}\n", country_item(666))).unwrap();
    let ndjson = |path: String| {
        source(
            &world.connector,
            admin::SourceKind::Ndjson,
            json!({"path": path}),
            country_mapping(),
        )
    };
    let why = refused(sandbox, ndjson("/etc/passwd".into()), "source.config.path").await;
    assert!(why.contains("not under an allowed directory"), "{why}");
    let dotdot = format!("{}/../../{}", dir.path().display(), secret.display());
    let why = refused(sandbox, ndjson(dotdot), "source.config.path").await;
    assert!(why.contains(".."), "{why}");
    let why = refused(sandbox, ndjson("items.ndjson".into()), "source.config.path").await;
    assert!(why.contains("absolute"), "{why}");
    let link = dir.path().join("link.ndjson");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let why = refused(
        sandbox,
        ndjson(link.display().to_string()),
        "source.config.path",
    )
    .await;
    assert!(why.contains("symlink"), "{why}");

    // Checked again when read: a directory that did not exist at creation and is then made a
    // symlink to elsewhere is refused by the engine.
    let later = dir.path().join("later");
    let mut def = ndjson(later.join("secret.ndjson").display().to_string());
    def.backoff = vec![ms(60_000)];
    let id = create_source(sandbox, def).await;
    let first = wait_until(WAIT, || async {
        Some(status(sandbox, &id).await.last_error).filter(|e| !e.is_empty())
    })
    .await
    .expect("the first attempt fails: no such file");
    assert!(first.contains("opening"), "{first}");
    std::os::unix::fs::symlink(outside.path(), &later).unwrap();
    trigger(sandbox, &id).await;
    let error = wait_until(WAIT, || async {
        Some(status(sandbox, &id).await.last_error)
            .filter(|e| e.contains("not under an allowed directory"))
    })
    .await
    .expect("the read is refused");
    assert!(error.contains("secret.ndjson"), "{error}");
    assert!(world.visible().await.is_empty(), "nothing was read");
}

/// A fast engine with lines of at most 1 KiB and pages of at most 64 KiB.
fn fast_with_files_and_short_lines(o: &mut ServerOptions) {
    fast_with_files(o);
    if let Some(engine) = &mut o.ingest {
        engine.max_line_bytes = 1024;
        engine.max_page_bytes = 64 * 1024;
    }
}

async fn ndjson_lines_longer_than_max_line_bytes_fail_and_endless_input_fails_the_page(
    sandbox: &Sandbox,
) {
    let mut world = sandbox.country_world().await;
    let dir = tempfile::tempdir_in(files_dir()).unwrap();
    let path = dir.path().join("long.ndjson");
    let mut text = String::new();
    for i in 0..5 {
        text.push_str(&country_item(i).to_string());
        text.push('\n');
    }
    let mut long = country_item(99);
    long["name"] = json!("y".repeat(5000));
    text.push_str(&long.to_string());
    text.push('\n');
    for i in 5..10 {
        text.push_str(&country_item(i).to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    let ndjson = |connector: &str, config: Value| {
        source(
            connector,
            admin::SourceKind::Ndjson,
            config,
            country_mapping(),
        )
    };
    let id = create_source(
        sandbox,
        ndjson(
            &world.connector,
            json!({"path": path.display().to_string()}),
        ),
    )
    .await;
    let result = next_result(sandbox, &id, "").await;
    assert_eq!(
        (result.status, result.created, result.failed),
        (PARTIAL, 10, 1),
        "{result:?}"
    );
    let failed = &result.failed_items[0];
    assert!(
        failed.error.contains("line 6") && failed.error.contains("ingest.max_line_bytes"),
        "{failed:?}"
    );
    assert!(failed.data.len() <= 4096, "{}", failed.data.len());
    assert_eq!(visible_ids(&mut world).await, ids(0..10));

    // /dev/zero-like input: 32 MiB of NUL bytes (a sparse file) and an endless HTTP body.
    let zeros = dir.path().join("zeros.ndjson");
    std::fs::File::create(&zeros)
        .unwrap()
        .set_len(32 * 1024 * 1024)
        .unwrap();
    let (other, _) = sandbox.create_connector("country", |_| {}).await;
    let result = failed_cycle(
        sandbox,
        ndjson(&other, json!({"path": zeros.display().to_string()})),
    )
    .await;
    assert_errors_say(
        &result,
        &["no end within 65536 bytes", "ingest.max_page_bytes"],
    );
    let app = axum::Router::new().route(
        "/zero",
        get(|| async {
            let chunk = axum::body::Bytes::from(vec![0u8; 64 * 1024]);
            axum::body::Body::from_stream(futures::stream::repeat_with(move || {
                Ok::<_, std::convert::Infallible>(chunk.clone())
            }))
        }),
    );
    let addr = serve(app).await;
    let (third, _) = sandbox.create_connector("country", |_| {}).await;
    let result = failed_cycle(
        sandbox,
        ndjson(&third, json!({"url": format!("http://{addr}/zero")})),
    )
    .await;
    assert_errors_say(&result, &["no end within 65536 bytes"]);
}

async fn page_size_above_max_batch_records_is_refused(sandbox: &Sandbox) {
    let world = sandbox.country_world().await;
    let max = tributary_core::limits::Limits::default().max_batch_records as u64;
    let def = source(
        &world.connector,
        admin::SourceKind::Ndjson,
        json!({"url": "https://bucket.example/items.ndjson", "page_size": max + 1}),
        country_mapping(),
    );
    let why = refused(sandbox, def, "source.config.page_size").await;
    assert!(why.contains("limits.max_batch_records"), "{why}");
    let def = source(
        &world.connector,
        admin::SourceKind::HttpJson,
        json!({"url": "https://api.example/items", "pagination": {"type": "offset", "limit": max + 1}}),
        country_mapping(),
    );
    refused(sandbox, def, "source.config.pagination.limit").await;
}

async fn secrets_in_source_urls_are_redacted_wherever_a_source_is_shown(sandbox: &Sandbox) {
    let world = sandbox.country_world().await;
    let api = Arc::new(Api::default());
    api.set_items(countries(0..10));
    let addr = serve_api(api.clone()).await;
    let url = format!("http://alice:pa55word@{addr}/items?sig=s3cret#frag");
    let shown = format!("http://REDACTED@{addr}/items?sig=REDACTED#REDACTED");
    let mut def = json_api_source(&world.connector, &url);
    def.config = Some(json_struct(json!({"url": url, "items": "/data",
        "pagination": {"type": "page", "size_param": "per_page", "size": PER_PAGE}})));
    let created = sandbox
        .admin()
        .create_source(admin::CreateSourceRequest { source: Some(def) })
        .await
        .unwrap()
        .into_inner()
        .source
        .unwrap();
    let id = created.id.clone();
    let first = next_result(sandbox, &id, "").await;
    assert_eq!(first.created, 10, "{first:?}");
    // The engine uses the real URL.
    assert!(
        api.queries().iter().all(|q| q.contains("sig=s3cret")),
        "{:?}",
        api.queries()
    );
    let got = sandbox
        .admin()
        .get_source(admin::GetSourceRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .source
        .unwrap();
    let listed = sandbox
        .admin()
        .list_sources(admin::ListSourcesRequest::default())
        .await
        .unwrap()
        .into_inner();
    for (what, text) in [
        ("CreateSource", format!("{created:?}")),
        ("GetSource", format!("{got:?}")),
        ("ListSources", format!("{listed:?}")),
    ] {
        assert!(
            !text.contains("s3cret") && !text.contains("pa55word"),
            "{what}: {text}"
        );
        assert!(text.contains(&shown), "{what} shows {shown}: {text}");
    }
    // Sending the shown definition back keeps the stored URL.
    let mut update = got.clone();
    update.name = "renamed".into();
    sandbox
        .admin()
        .update_source(admin::UpdateSourceRequest {
            source: Some(update.clone()),
        })
        .await
        .expect("update with the redacted URL");
    let before = api.queries().len();
    trigger(sandbox, &id).await;
    let second = next_result(sandbox, &id, &first.id).await;
    assert_eq!(second.status, SUCCEEDED, "{second:?}");
    let queries = api.queries();
    assert!(
        queries.len() > before && queries[before..].iter().all(|q| q.contains("sig=s3cret")),
        "{queries:?}"
    );
    // A URL edited around the placeholder is refused rather than stored with it.
    let mut edited = update;
    let mut config =
        tributary_grpc::convert::struct_to_json(edited.config.take().unwrap()).unwrap();
    config["url"] = json!(format!("http://{addr}/items?sig=REDACTED&v=2"));
    edited.config = Some(json_struct(config));
    let refusal = sandbox
        .admin()
        .update_source(admin::UpdateSourceRequest {
            source: Some(edited),
        })
        .await
        .expect_err("the placeholder is refused");
    assert!(
        tributary_tests::bad_request_fields(&refusal)
            .iter()
            .any(|(f, _)| f == "source.config.url"),
        "{refusal:?}"
    );

    // Errors name the URL redacted: an HTTP error and a refused connection.
    api.fail.lock().unwrap().insert(1, u32::MAX);
    let (other, _) = sandbox.create_connector("country", |_| {}).await;
    let failing = source(
        &other,
        admin::SourceKind::HttpJson,
        json!({"url": format!("http://{addr}/items?sig=s3cret"), "items": "/data"}),
        country_mapping(),
    );
    let result = failed_cycle(sandbox, failing).await;
    assert_errors_say(&result, &["sig=REDACTED", "HTTP 503"]);
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (third, _) = sandbox.create_connector("country", |_| {}).await;
    let refused_conn = source(
        &third,
        admin::SourceKind::Ndjson,
        json!({"url": format!("http://bob:pa55word@{closed}/x.ndjson?sig=s3cret")}),
        country_mapping(),
    );
    let id3 = create_source(sandbox, refused_conn).await;
    let result = next_result(sandbox, &id3, "").await;
    let last_error = status(sandbox, &id3).await.last_error;
    for text in [format!("{result:?}"), last_error] {
        assert!(
            !text.contains("s3cret") && !text.contains("pa55word"),
            "{text}"
        );
    }
    assert_errors_say(&result, &["sig=REDACTED"]);
}

/// A server that records, per path, the `Authorization` and `X-Api-Key` headers it received.
#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

/// A request's path, `Authorization` and `X-Api-Key`.
type Seen = (String, Option<String>, Option<String>);

impl Recorder {
    fn saw(&self, path: &str, headers: &axum::http::HeaderMap) {
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.0.lock().unwrap().push((
            path.to_owned(),
            header("authorization"),
            header("x-api-key"),
        ));
    }
    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

/// Origin A: `/page1` (items 0..10, `Link` to B's `/page2`), `/moved` (302 to B's `/page2`),
/// `/here` (302 to `/plain`), `/plain` (items 20..30) and `/loop` (302 to itself).
fn origin_a(recorder: Arc<Recorder>, b: SocketAddr) -> axum::Router {
    let record = |r: Arc<Recorder>| {
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
            let r = r.clone();
            async move {
                r.saw(uri.path(), &headers);
                let redirect = |to: String| (StatusCode::FOUND, [("location", to)]).into_response();
                match uri.path() {
                    "/page1" => (
                        [("link", format!("<http://{b}/page2>; rel=\"next\""))],
                        json_response(json!({"data": countries(0..10)})),
                    )
                        .into_response(),
                    "/moved" => redirect(format!("http://{b}/page2")),
                    "/here" => redirect("/plain".into()),
                    "/plain" => json_response(json!({"data": countries(20..30)})),
                    _ => redirect("/loop".into()),
                }
            }
        }
    };
    axum::Router::new().fallback(record(recorder))
}

/// Origin B: `/page2` (items 10..20, no next page).
fn origin_b(recorder: Arc<Recorder>) -> axum::Router {
    axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
            let r = recorder.clone();
            async move {
                r.saw(uri.path(), &headers);
                json_response(json!({"data": countries(10..20)}))
            }
        },
    )
}

async fn configured_headers_never_go_to_another_origin(sandbox: &Sandbox) {
    let (seen_a, seen_b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let b = serve(origin_b(seen_b.clone())).await;
    let a = serve(origin_a(seen_a.clone(), b)).await;
    sandbox.create_country_type().await;
    let def = |connector: &str, path: &str, pagination: Value| {
        source(
            connector,
            admin::SourceKind::HttpJson,
            json!({"url": format!("http://{a}{path}"), "items": "/data",
                   "headers": {"Authorization": "Bearer s3cret", "X-Api-Key": "k3y"},
                   "pagination": pagination}),
            country_mapping(),
        )
    };
    let run = move |path: &'static str, pagination: Value| async move {
        let (connector, _) = sandbox.create_connector("country", |_| {}).await;
        let def = source(
            &connector,
            admin::SourceKind::HttpJson,
            json!({"url": format!("http://{a}{path}"), "items": "/data",
                   "headers": {"Authorization": "Bearer s3cret", "X-Api-Key": "k3y"},
                   "pagination": pagination}),
            country_mapping(),
        );
        let id = create_source(sandbox, def).await;
        next_result(sandbox, &id, "").await
    };
    // A next-page link to another origin.
    let result = run("/page1", json!({"type": "link"})).await;
    assert_eq!(
        (result.status, result.created),
        (SUCCEEDED, 20),
        "{result:?}"
    );
    // A redirect to another origin, and one within the origin.
    let result = run("/moved", json!({"type": "none"})).await;
    assert_eq!(
        (result.status, result.created),
        (SUCCEEDED, 10),
        "{result:?}"
    );
    let result = run("/here", json!({"type": "none"})).await;
    assert_eq!(
        (result.status, result.created),
        (SUCCEEDED, 10),
        "{result:?}"
    );

    let home = (Some("Bearer s3cret".to_owned()), Some("k3y".to_owned()));
    let a_seen = seen_a.seen();
    assert!(!a_seen.is_empty());
    for (path, auth, key) in &a_seen {
        assert_eq!((auth, key), (&home.0, &home.1), "A's own headers on {path}");
    }
    assert!(a_seen.iter().any(|(p, _, _)| p == "/plain"), "{a_seen:?}");
    let b_seen = seen_b.seen();
    assert_eq!(b_seen.len(), 2, "{b_seen:?}");
    for (path, auth, key) in &b_seen {
        assert_eq!(
            (auth, key),
            (&None, &None),
            "no configured header reaches B ({path})"
        );
    }

    // Redirects are followed at most 10 times.
    let (connector, _) = sandbox.create_connector("country", |_| {}).await;
    let result = failed_cycle(sandbox, def(&connector, "/loop", json!({"type": "none"}))).await;
    assert_errors_say(&result, &["more than 10 redirects"]);
}

on_both_backends!(
    https_sources_are_verified_against_the_trusted_roots with super::fast_trusting_test_ca,
    fifty_pages_import_fully_and_the_next_cycle_sweeps_exactly_the_missing with super::fast,
    pages_fetched_ahead_are_written_once_across_burst_boundaries with super::fast,
    a_cycle_removing_80_percent_is_refused_and_an_empty_one_too with super::fast,
    a_page_failing_twice_is_retried_from_the_saved_cursor with super::fast,
    a_page_that_always_fails_fails_the_cycle_after_the_last_interval with super::fast,
    invalid_items_are_reported_with_their_data_and_the_rest_imported with super::fast,
    rss_atom_and_media_rss_feeds_are_imported with super::fast,
    a_feed_without_mapping_names_records_by_title_and_keeps_the_entry with super::fast,
    an_ndjson_file_is_imported_a_page_at_a_time with super::fast_with_files,
    an_ndjson_object_is_read_over_https_with_ranges with super::fast_trusting_test_ca,
    a_grpc_provider_is_called_with_the_cursor with super::fast,
    a_grpc_provider_is_reached_over_https_with_the_trusted_roots with super::fast_trusting_test_ca,
    write_policies_apply_to_pulled_records with super::fast,
    bad_source_definitions_name_the_field with super::fast,
    offset_pagination_imports_every_page with super::fast,
    next_cursor_pagination_imports_every_page with super::fast,
    reject_empty_defaults_to_true_and_false_lets_an_empty_cycle_sweep with super::fast,
    push_delta_records_count_as_marked_in_the_running_cycle with super::fast,
    reports_list_at_most_max_items_and_count_the_rest with super::fast_listing_five_items,
    a_malformed_feed_fails_its_cycle_saying_why with super::fast,
    a_missing_ndjson_file_fails_its_cycle_naming_the_file with super::fast_with_files,
    a_provider_error_fails_its_cycle_with_the_providers_message with super::fast,
    a_non_json_body_fails_its_cycle_saying_so with super::fast,
    unknown_sources_are_not_found_in_every_source_call with super::fast,
    a_grpc_provider_that_never_answers_times_out_and_frees_its_slot with super::fast_single_slot_impatient,
    file_paths_are_refused_when_no_directory_is_allowed with super::fast,
    ndjson_paths_outside_the_allowed_directories_are_refused with super::fast_with_files,
    ndjson_lines_longer_than_max_line_bytes_fail_and_endless_input_fails_the_page with super::fast_with_files_and_short_lines,
    page_size_above_max_batch_records_is_refused with super::fast,
    secrets_in_source_urls_are_redacted_wherever_a_source_is_shown with super::fast,
    configured_headers_never_go_to_another_origin with super::fast,
);
