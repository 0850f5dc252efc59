//! The web console: the three files of `console/dist`, built by `npm run build --prefix console`
//! and committed, embedded here so that `cargo build` needs no Node (docs/adr/0015-web-console.md).
//! The console calls the API over gRPC-Web on the same origin, so it needs no CORS.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The path prefix the console is served under.
pub const PREFIX: &str = "/console/";

const INDEX_HTML: &[u8] = include_bytes!("../../../console/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../../../console/dist/app.js");
const APP_CSS: &[u8] = include_bytes!("../../../console/dist/app.css");

/// The console's file at `path` (below `/console/`) with its content type; the page itself for
/// any path that is not an asset, so a reloaded deep link still opens the console.
pub fn asset(path: &str) -> (&'static str, &'static [u8]) {
    match path {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "app.css" => ("text/css; charset=utf-8", APP_CSS),
        _ => ("text/html; charset=utf-8", INDEX_HTML),
    }
}

fn respond(path: &str) -> Response {
    let (content_type, body) = asset(path);
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The assets change with the binary, not within its life; revalidating is cheap.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The console loads nothing but its own files and calls nothing but its own origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

async fn index() -> Response {
    respond("")
}

async fn file(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    respond(&path)
}

/// Routes for `/console` (redirected to `/console/`) and everything below `/console/`.
pub fn router() -> Router {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent(PREFIX) }))
        .route(PREFIX, get(index))
        .route("/console/{*path}", get(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    async fn get(path: &str) -> Response {
        router()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn console_redirects_to_its_slash_and_serves_assets_with_their_types() {
        let r = get("/console").await;
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "/console/");
        for (path, ty) in [
            ("/console/", "text/html; charset=utf-8"),
            ("/console/app.js", "text/javascript; charset=utf-8"),
            ("/console/app.css", "text/css; charset=utf-8"),
            ("/console/sources/abc", "text/html; charset=utf-8"),
        ] {
            let r = get(path).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], ty, "{path}");
        }
    }
}
