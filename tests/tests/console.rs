//! The web console (issue 15) in a real browser: Debian's chromium driven by playwright-core
//! (console/tests/console.test.mjs) against a real server with a real pull source on 127.0.0.1.
//! The browser script and this test coordinate through the script's stdout lines: it prints
//! `WATCHING` once the live tail is open, and this test then upserts a record for it to see.
#![allow(clippy::unwrap_used)]

use axum::routing::get;
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tributary::server::ServerOptions;
use tributary_ingest::EngineOptions;
use tributary_proto::admin::v1 as admin;
use tributary_proto::contribution::v1 as contribution;
use tributary_tests::{country, json_struct, on_both_backends, wait_until, Sandbox};

const CHROMIUM: &str = "/usr/bin/chromium";

fn fast(o: &mut ServerOptions) {
    // The exports page runs an export to a directory under the system's temporary directory.
    o.exports.allowed_dirs = vec![std::env::temp_dir()];
    o.ingest = Some(EngineOptions {
        heartbeat: Duration::from_millis(200),
        lease: Duration::from_secs(2),
        ..EngineOptions::default()
    });
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Why the browser test cannot run here, if it cannot: chromium, node or the console's
/// node_modules missing. Under CI=true that fails the test; elsewhere it is skipped with a word.
fn browser_missing() -> Option<String> {
    let modules = repo_root().join("console/node_modules/playwright-core");
    if !std::path::Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} is missing (apt-get install chromium)"));
    }
    if !modules.exists() {
        return Some(format!(
            "{} is missing (npm ci --prefix console)",
            modules.display()
        ));
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("node is missing".into());
    }
    None
}

/// A JSON API on 127.0.0.1 with two good countries and one whose population is not a number.
async fn serve_countries() -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/items",
        get(|| async {
            let body = json!({"data": [
                {"id": "C0001", "name": "Country One", "code": "AA", "population": 1000},
                {"id": "C0002", "name": "Country Two", "code": "BB", "population": 2000},
                {"id": "C0003", "name": "Country Bad", "code": "CC", "population": "lots"}
            ]});
            ([("content-type", "application/json")], body.to_string())
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn ms(n: i32) -> prost_types::Duration {
    prost_types::Duration {
        seconds: 0,
        nanos: n * 1_000_000,
    }
}

async fn console_pages_work_in_a_real_browser(sandbox: &Sandbox) {
    if let Some(why) = browser_missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the console's browser test cannot run under CI: {why}"
        );
        eprintln!("SKIPPED console_pages_work_in_a_real_browser: {why}");
        return;
    }
    let mut world = sandbox.country_world().await;
    let (source_connector, _) = sandbox
        .create_connector("country", |c| c.name = "api importer".into())
        .await;
    let api = serve_countries().await;
    let source = sandbox
        .admin()
        .create_source(admin::CreateSourceRequest {
            source: Some(admin::Source {
                connector: source_connector.clone(),
                name: "country api".into(),
                kind: admin::SourceKind::HttpJson as i32,
                config: Some(json_struct(json!({
                    "url": format!("http://{api}/items"), "items": "/data",
                    "headers": {"Authorization": "Bearer s3cret"},
                    "pagination": {"type": "none"}
                }))),
                mapping: Some(json_struct(json!({
                    "id": "/id", "name": "/name",
                    "entity": {"code": "/code", "population": "/population"}
                }))),
                burst_length: Some(ms(200)),
                burst_interval: Some(ms(10)),
                rest_length: Some(prost_types::Duration {
                    seconds: 86_400,
                    nanos: 0,
                }),
                backoff: vec![ms(50)],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .source
        .unwrap();
    // The first cycle runs at once; the browser reads its result.
    let first = wait_until(Duration::from_secs(60), || {
        let mut admin = sandbox.admin();
        let connector = source_connector.clone();
        async move {
            let r = admin
                .list_import_results(admin::ListImportResultsRequest {
                    connector,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            r.import_results.into_iter().next()
        }
    })
    .await
    .expect("the source's first import result");
    assert_eq!(first.failed, 1, "{first:?}");
    // ListImportResults filters by source and status on the server (the console relies on it).
    let of = |source: &str, status: admin::ImportStatus| admin::ListImportResultsRequest {
        source: source.into(),
        status: status as i32,
        ..Default::default()
    };
    let mut a = sandbox.admin();
    let listed = |r: tonic::Response<admin::ListImportResultsResponse>| {
        r.into_inner()
            .import_results
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    let status = admin::ImportStatus::try_from(first.status).unwrap();
    let mine = a.list_import_results(of(&source.id, status)).await.unwrap();
    assert_eq!(listed(mine), vec![first.id.clone()]);
    let other_status = if status == admin::ImportStatus::Succeeded {
        admin::ImportStatus::Failed
    } else {
        admin::ImportStatus::Succeeded
    };
    let none = a
        .list_import_results(of(&source.id, other_status))
        .await
        .unwrap();
    assert!(listed(none).is_empty());
    let elsewhere = a
        .list_import_results(of("no-such-source", admin::ImportStatus::Unspecified))
        .await
        .unwrap();
    assert!(listed(elsewhere).is_empty());
    let bad = a
        .list_import_results(admin::ListImportResultsRequest {
            status: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("status"), "{bad:?}");
    let reader_token = sandbox.create_consumer(&["country"]).await;
    // An export the exports page lists and runs.
    let export_dir = tempfile::tempdir().unwrap();
    sandbox
        .admin()
        .create_export(admin::CreateExportRequest {
            export: Some(admin::Export {
                name: "console-export".into(),
                entity_type: "country".into(),
                destination: format!("file://{}/catalog", export_dir.path().display()),
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    let script = repo_root().join("console/tests/console.test.mjs");
    let shots = repo_root().join(format!(
        "console/tests/screenshots/{}",
        format!("{:?}", sandbox.backend).to_lowercase()
    ));
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("http://{}", sandbox.addr))
        .arg(&sandbox.admin_token)
        .arg(&reader_token)
        .arg(&source.id)
        .env("CHROMIUM", CHROMIUM)
        .env("SCREENSHOTS", &shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(240), lines.next_line())
        .await
        .expect("the browser script went silent for 4 minutes")
        .unwrap()
    {
        println!("browser: {line}");
        if line == "WATCHING" {
            // The live tail is open: a change made now must arrive in it.
            let session = world.open(contribution::SessionMode::Accrue).await;
            world
                .upsert(&session, vec![country("LIVE1", 42)])
                .await
                .unwrap();
            world.close(&session, true, false).await.unwrap();
        }
        seen.push(line);
    }
    let status = child.wait().await.unwrap();
    assert!(
        status.success(),
        "the browser script failed ({status}); its output: {seen:#?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("PASS"), "{seen:#?}");
    // The two runs the browser started wrote a file each.
    let written: Vec<_> = std::fs::read_dir(export_dir.path().join("catalog"))
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(written.len(), 2, "{written:?}");
}

on_both_backends!(console_pages_work_in_a_real_browser with super::fast);

/// The console is served where Admin is, over plain HTTP/1.1 next to gRPC-Web, and nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_is_served_only_where_admin_is() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }
    let with_admin = Sandbox::sqlite(|_| {}).await;
    let page = get(with_admin.addr, "/console/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("content-type: text/html; charset=utf-8"),
        "{page}"
    );
    assert!(
        page.contains("content-security-policy: default-src 'none'"),
        "{page}"
    );
    let redirect = get(with_admin.addr, "/console").await;
    assert!(redirect.starts_with("HTTP/1.1 308"), "{redirect}");
    assert!(redirect.contains("location: /console/"), "{redirect}");
    with_admin.stop().await;

    let without_admin =
        Sandbox::sqlite(|o| o.services = vec![tributary::server::ServiceKind::Consumer]).await;
    let page = get(without_admin.addr, "/console/").await;
    assert!(!page.starts_with("HTTP/1.1 200"), "{page}");
    without_admin.stop().await;
}
