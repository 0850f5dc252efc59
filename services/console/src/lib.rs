//! The web console: the three files of `console/dist`, built by `npm run build --prefix console`
//! and committed, embedded here so that `cargo build` needs no Node (docs/adr/0015-web-console.md).
//! The console calls the API over gRPC-Web on the same origin, so it needs no CORS.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
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

/// Wraps the gRPC server's services: requests for `/console` and below go to [`router`] (when
/// enabled), everything else to the wrapped service. It sits outside tonic-web, which answers
/// `400` to any HTTP/1.1 request that is not gRPC-Web.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleLayer {
    enabled: bool,
}

impl ConsoleLayer {
    /// A layer that serves the console when `enabled`, and otherwise passes every request on.
    pub fn new(enabled: bool) -> Self {
        Self { enabled }
    }
}

impl<S> tower_layer::Layer<S> for ConsoleLayer {
    type Service = Console<S>;

    fn layer(&self, inner: S) -> Console<S> {
        Console {
            inner,
            router: self.enabled.then(router),
        }
    }
}

/// See [`ConsoleLayer`].
#[derive(Debug, Clone)]
pub struct Console<S> {
    inner: S,
    router: Option<Router>,
}

/// Whether `path` is the console's.
fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with(PREFIX)
}

impl<S, B> tower_service::Service<axum::http::Request<B>> for Console<S>
where
    S: tower_service::Service<axum::http::Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        match &mut self.router {
            Some(router) if is_console(request.uri().path()) => {
                // axum's router is always ready and never fails.
                let answer = tower_service::Service::call(router, request);
                Box::pin(async move {
                    let response = match answer.await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    Ok(response.map(tonic::body::Body::new))
                })
            }
            _ => Box::pin(self.inner.call(request)),
        }
    }
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
