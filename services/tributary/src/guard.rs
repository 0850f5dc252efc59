//! The request guard around the router: what is refused before a request body is read, and how
//! tonic's own refusals are told to clients (SPEC.md §8).
//!
//! - A call to Admin or Contribution (or Catalog, unless the catalog is public) without an
//!   `authorization` header is answered `UNAUTHENTICATED` at once, before its body is read or
//!   decoded: an anonymous client cannot make the server decode megabytes.
//! - A request message above the service's size limit is `RESOURCE_EXHAUSTED` with a
//!   `QuotaFailure` rather than tonic's `OUT_OF_RANGE`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::codegen::http::{header::AUTHORIZATION, Request, Response};
use tonic::codegen::Service;
use tonic::Status;
use tributary_grpc::request_status;

/// Wraps the router in a [`Guard`].
#[derive(Debug, Clone)]
pub struct GuardLayer {
    catalog_public: bool,
}

impl GuardLayer {
    /// A guard; `catalog_public` lets Catalog calls without a token through.
    pub fn new(catalog_public: bool) -> Self {
        Self { catalog_public }
    }

    fn needs_token(&self, path: &str) -> bool {
        path.starts_with("/tributary.admin.v1.Admin/")
            || path.starts_with("/tributary.contribution.v1.Contribution/")
            || (!self.catalog_public && path.starts_with("/tributary.catalog.v1.Catalog/"))
    }
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            layer: self.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Guard<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let has_token = request
            .headers()
            .get(AUTHORIZATION)
            .is_some_and(|v| !v.is_empty());
        if !has_token && self.layer.needs_token(request.uri().path()) {
            let refused = Status::unauthenticated(
                "missing token: send `authorization: Bearer <token>` with every call",
            );
            return Box::pin(std::future::ready(Ok(refused.into_http())));
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            // A request refused while it was read answers in the headers (trailers-only).
            if let Some(status) = Status::from_header_map(response.headers()) {
                let original = status.code();
                let status = request_status(status);
                if status.code() != original {
                    let headers = response.headers_mut();
                    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
                        headers.remove(name);
                    }
                    // Only ASCII, percent-encoded text goes into these headers.
                    let _ = status.add_header(headers);
                }
            }
            Ok(response)
        })
    }
}
