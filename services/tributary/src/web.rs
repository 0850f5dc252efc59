//! Browsers on the gRPC port: gRPC-Web is translated by `tonic_web` (server.rs); this module
//! builds the CORS policy, which allows only the configured origins (none by default), the
//! headers gRPC-Web sends, and exposes the status trailers a browser must read.

use anyhow::Context as _;
use std::time::Duration;
use tonic::codegen::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers a gRPC-Web client sends.
const ALLOWED_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "grpc-accept-encoding",
];

/// Response headers a browser page may read.
const EXPOSED_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// The CORS layer for `origins`: `*` allows any origin, an empty list none (no CORS headers are
/// added, so browsers refuse cross-origin calls).
pub fn cors(origins: &[String]) -> anyhow::Result<CorsLayer> {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/'))
                    .with_context(|| format!("web.cors_allowed_origins: {o:?} is not an origin"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(values)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
        .expose_headers(
            EXPOSED_HEADERS
                .map(HeaderName::from_static)
                .into_iter()
                .chain([header::CONTENT_TYPE])
                .collect::<Vec<_>>(),
        )
        .max_age(Duration::from_secs(600)))
}
