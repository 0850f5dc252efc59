//! Browsers on the gRPC port (issue 15, part 1): gRPC-Web over HTTP/1.1 reaches every service
//! with the same authentication and errors as gRPC, and CORS lets only configured origins in.
#![allow(clippy::unwrap_used)]

use prost::Message;
use tributary::server::ServerOptions;
use tributary_proto::admin::v1 as admin;
use tributary_proto::catalog::v1 as catalog;
use tributary_tests::{on_both_backends, Sandbox};

const ORIGIN: &str = "http://console.example";

fn allow_console(options: &mut ServerOptions) {
    options.cors_allowed_origins = vec![ORIGIN.into()];
}

/// A gRPC-Web answer: HTTP status, its headers, the messages and the trailers.
struct WebAnswer {
    http: reqwest::StatusCode,
    headers: reqwest::header::HeaderMap,
    messages: Vec<Vec<u8>>,
    trailers: String,
}

impl WebAnswer {
    fn grpc_status(&self) -> String {
        let from_headers = self
            .headers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned());
        from_headers.unwrap_or_else(|| {
            self.trailers
                .lines()
                .find_map(|l| l.strip_prefix("grpc-status:"))
                .unwrap_or("missing")
                .trim()
                .to_owned()
        })
    }
}

/// A reqwest client. reqwest is built without a crypto provider; the server installs ring as
/// the process's default only when its pull engine starts, which may not have happened yet.
fn http_client(builder: reqwest::ClientBuilder) -> reqwest::Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    builder.build().unwrap()
}

/// Posts `message` to `method` as gRPC-Web (binary) over HTTP/1.1.
async fn grpc_web(
    sandbox: &Sandbox,
    method: &str,
    message: impl Message,
    token: Option<&str>,
) -> WebAnswer {
    let body = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&body);
    let client = http_client(reqwest::Client::builder().http1_only());
    let mut request = client
        .post(format!("http://{}/{method}", sandbox.addr))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", ORIGIN)
        .body(framed);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let (http, headers) = (response.status(), response.headers().clone());
    let bytes = response.bytes().await.unwrap();
    let (mut messages, mut trailers, mut at) = (Vec::new(), String::new(), 0);
    while at + 5 <= bytes.len() {
        let flag = bytes[at];
        let len = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
        let frame = &bytes[at + 5..at + 5 + len];
        if flag & 0x80 == 0 {
            messages.push(frame.to_vec());
        } else {
            trailers.push_str(&String::from_utf8_lossy(frame));
        }
        at += 5 + len;
    }
    WebAnswer {
        http,
        headers,
        messages,
        trailers,
    }
}

async fn grpc_web_reaches_every_service_with_the_same_auth_and_errors(sandbox: &Sandbox) {
    let world = sandbox.country_world().await;
    let reader = sandbox.create_consumer(&["country"]).await;
    let answer = grpc_web(
        sandbox,
        "tributary.catalog.v1.Catalog/ListEntityTypes",
        catalog::ListEntityTypesRequest::default(),
        Some(&reader),
    )
    .await;
    assert_eq!(answer.http, 200);
    assert_eq!(answer.grpc_status(), "0", "{}", answer.trailers);
    let listed = catalog::ListEntityTypesResponse::decode(answer.messages[0].as_slice()).unwrap();
    assert_eq!(listed.entity_types[0].slug, "country");
    // CORS: the configured origin may read the answer and its status.
    assert_eq!(
        answer.headers.get("access-control-allow-origin").unwrap(),
        ORIGIN
    );
    let admin_answer = grpc_web(
        sandbox,
        "tributary.admin.v1.Admin/GetConnector",
        admin::GetConnectorRequest {
            id: world.connector.clone(),
        },
        Some(&sandbox.admin_token),
    )
    .await;
    assert_eq!(admin_answer.grpc_status(), "0");
    // The same refusals as over gRPC.
    let anonymous = grpc_web(
        sandbox,
        "tributary.admin.v1.Admin/ListConnectors",
        admin::ListConnectorsRequest::default(),
        None,
    )
    .await;
    assert_eq!(anonymous.grpc_status(), "16", "UNAUTHENTICATED");
    let missing = grpc_web(
        sandbox,
        "tributary.catalog.v1.Catalog/GetRecord",
        catalog::GetRecordRequest {
            key: "0".repeat(40),
        },
        Some(&reader),
    )
    .await;
    assert_eq!(missing.grpc_status(), "5", "NOT_FOUND");
}

async fn cors_preflight_allows_only_configured_origins(sandbox: &Sandbox) {
    let client = http_client(reqwest::Client::builder());
    let preflight = |origin: &'static str| {
        client
            .request(
                reqwest::Method::OPTIONS,
                format!(
                    "http://{}/tributary.catalog.v1.Catalog/ListRecords",
                    sandbox.addr
                ),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-grpc-web",
            )
            .send()
    };
    let allowed = preflight(ORIGIN).await.unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        ORIGIN
    );
    let headers = allowed
        .headers()
        .get("access-control-allow-headers")
        .unwrap()
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("x-grpc-web"),
        "{headers}"
    );
    let other = preflight("http://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

on_both_backends!(
    grpc_web_reaches_every_service_with_the_same_auth_and_errors with super::allow_console,
    cors_preflight_allows_only_configured_origins with super::allow_console,
);
