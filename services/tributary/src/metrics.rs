//! Prometheus metrics (SPEC.md §9), served at `/metrics` on `--metrics-listen ADDR`.
//!
//! Code records through the `metrics` facade wherever the event happens (records and sessions in
//! the contributor adapter, Watch subscribers in the consumer adapter, cycles and pulled records
//! in the pull engine); with no recorder installed those calls cost next to nothing. This module
//! installs the Prometheus recorder, measures every gRPC call in a tower layer, reads the sources'
//! states when scraped, and serves the text.
//!
//! Label values are bounded: service and method names come from the served descriptors (any
//! other path is `unknown`), codes and states are enums, and entity types are what operators
//! create. Export runs are counted where they run (`tributary_ingest::export`).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::config::MetricsSettings;
use anyhow::Context as _;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use prost::Message;
use tokio::net::TcpListener;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{Body, Service};
use tributary_core::source::SourceState;
use tributary_core::store::Store;

/// Histogram buckets of every `*_seconds` metric: 1 ms to 5 min.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How often histograms are folded into their buckets between scrapes, so memory stays flat
/// however long nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Most sources counted per scrape for `tributary_sources{state}`.
const MAX_SOURCES_COUNTED: usize = 100_000;

/// The process's Prometheus recorder, installed on first use. Every server in the process (the
/// tests run several) records into it.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only when a recorder is installed already (a program embedding the
            // server); /metrics then shows what this one sees, which is nothing.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics stays empty");
            }
            handle
        })
        .clone()
}

/// Starts the `/metrics` endpoint `settings` ask for, if any; abort the task to stop it.
pub async fn start(
    settings: &MetricsSettings,
    store: &Arc<dyn Store>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>> {
    let Some(addr) = &settings.listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for metrics on {addr}"))?;
    Ok(Some(tokio::spawn(serve(
        listener,
        Some(store.clone()),
        std::future::pending(),
    ))))
}

/// Serves Prometheus text at `/metrics` on `listener` until `shutdown` resolves. With a store,
/// each scrape also counts the sources by state.
pub async fn serve(
    listener: TcpListener,
    store: Option<Arc<dyn Store>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = handle();
    let upkeep = tokio::spawn({
        let handle = handle.clone();
        async move {
            let mut ticker = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                ticker.tick().await;
                handle.run_upkeep();
            }
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let (handle, store) = (handle.clone(), store.clone());
            async move {
                if let Some(store) = store {
                    count_sources(store.as_ref()).await;
                    count_sessions_and_connections(store.as_ref()).await;
                }
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
            }
        }),
    );
    tracing::info!(addr = ?listener.local_addr().ok(), "serving Prometheus metrics at /metrics");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    upkeep.abort();
    served
}

/// Sets `tributary_open_sessions{mode}` (the database's figure, the same in every replica) and
/// `tributary_db_connections{state="in_use"|"open"}` (this process's pools).
async fn count_sessions_and_connections(store: &dyn Store) {
    match store.open_sessions_by_mode().await {
        Ok(counts) => {
            for (mode, n) in counts {
                metrics::gauge!("tributary_open_sessions", "mode" => mode.as_str()).set(n as f64);
            }
        }
        Err(error) => tracing::warn!(%error, "metrics: could not count open sessions"),
    }
    let (in_use, open) = store.connections();
    metrics::gauge!("tributary_db_connections", "state" => "in_use").set(f64::from(in_use));
    metrics::gauge!("tributary_db_connections", "state" => "open").set(f64::from(open));
}

/// Sets `tributary_sources{state}` from the store (every state, zeros included): the figure is
/// the database's, the same in every replica.
async fn count_sources(store: &dyn Store) {
    let mut counts: Vec<(SourceState, u64)> = SourceState::ALL.iter().map(|s| (*s, 0)).collect();
    let mut after: Option<String> = None;
    let mut seen = 0;
    while seen < MAX_SOURCES_COUNTED {
        let page = match store.list_sources(None, after.as_deref(), 1000).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "metrics: could not list sources");
                return;
            }
        };
        for source in &page {
            match store.source_status(&source.id).await {
                Ok(status) => {
                    if let Some(count) = counts.iter_mut().find(|(s, _)| *s == status.state) {
                        count.1 += 1;
                    }
                }
                // Deleted since it was listed.
                Err(_) => continue,
            }
        }
        seen += page.len();
        match page.last() {
            Some(last) if page.len() == 1000 => after = Some(last.id.clone()),
            _ => break,
        }
    }
    for (state, count) in counts {
        metrics::gauge!("tributary_sources", "state" => state.as_str()).set(count as f64);
    }
}

/// Counts and times every gRPC call: `grpc_server_started_total`,
/// `grpc_server_handled_total{grpc_code}` and `grpc_server_handling_seconds` (to the end of the
/// response, so streams count when they end), by `grpc_service` and `grpc_method`.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    /// `/package.Service/Method` of every served method.
    methods: Arc<HashSet<String>>,
}

impl GrpcMetricsLayer {
    /// A layer knowing the methods of Tributary's services, health and reflection.
    pub fn new() -> Self {
        let sets = [
            tributary_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut methods = HashSet::new();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        methods.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        Self {
            methods: Arc::new(methods),
        }
    }

    /// `(service, method)` labels of a request path; `unknown` for paths no service serves,
    /// so a client cannot mint label values.
    fn labels(&self, path: &str) -> (String, String) {
        match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
            Some((service, method)) if self.methods.contains(path) => {
                (service.to_owned(), method.to_owned())
            }
            _ => ("unknown".to_owned(), "unknown".to_owned()),
        }
    }
}

impl Default for GrpcMetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the router.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (service, method) = self.layer.labels(request.uri().path());
        metrics::counter!("grpc_server_started_total",
            "grpc_service" => service.clone(), "grpc_method" => method.clone())
        .increment(1);
        let mut call = Some(Call {
            service,
            method,
            started: Instant::now(),
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(error) => {
                    if let Some(call) = call.take() {
                        call.finish("UNKNOWN");
                    }
                    return Err(error);
                }
            };
            // A call refused at once answers its status in the headers (trailers-only).
            if let Some(code) = grpc_code(response.headers()) {
                if let Some(call) = call.take() {
                    call.finish(code);
                }
            }
            Ok(response.map(|inner| MeteredBody { inner, call }))
        })
    }
}

/// A call being measured.
struct Call {
    service: String,
    method: String,
    started: Instant,
}

impl Call {
    fn finish(self, code: &'static str) {
        metrics::counter!("grpc_server_handled_total",
            "grpc_service" => self.service.clone(), "grpc_method" => self.method.clone(),
            "grpc_code" => code)
        .increment(1);
        metrics::histogram!("grpc_server_handling_seconds",
            "grpc_service" => self.service, "grpc_method" => self.method)
        .record(self.started.elapsed().as_secs_f64());
    }
}

/// The `grpc-status` of headers or trailers, as the code's canonical name.
fn grpc_code(headers: &HeaderMap) -> Option<&'static str> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(tributary_client::status::code_name(tonic::Code::from_i32(
        code,
    )))
}

/// A response body that finishes its call's measurement at the trailers (or, when the client
/// goes away first, as `CANCELLED`).
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().and_then(grpc_code),
            Poll::Ready(Some(Err(_))) => Some("UNKNOWN"),
            // Ended without trailers: nothing went wrong that the server said.
            Poll::Ready(None) => Some("OK"),
            Poll::Pending => None,
        };
        if let Some(code) = code {
            if let Some(call) = self.call.take() {
                call.finish(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish("CANCELLED");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_become_labels() {
        let layer = GrpcMetricsLayer::new();
        assert_eq!(
            layer.labels("/tributary.contribution.v1.Contribution/Upsert"),
            (
                "tributary.contribution.v1.Contribution".to_owned(),
                "Upsert".to_owned()
            )
        );
        assert_eq!(
            layer.labels("/grpc.health.v1.Health/Check").1,
            "Check".to_owned()
        );
        for forged in [
            "/tributary.contribution.v1.Contribution/Upsert2",
            "/made.up.Service/Call",
            "/",
            "",
            "/a/b/c",
        ] {
            assert_eq!(
                layer.labels(forged),
                ("unknown".to_owned(), "unknown".to_owned()),
                "{forged}"
            );
        }
    }
}
