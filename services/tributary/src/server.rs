//! The one place a Tributary process is wired: the store, the selected services, health,
//! reflection, message-size limits, the idle-session reaper, and graceful shutdown.

use crate::config::{Settings, DEFAULT_MAX_MESSAGE_BYTES};
pub use crate::transport::TransportOptions;
use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tributary_admin::AdminApi;
use tributary_consumer::CatalogApi;
use tributary_contributor::ContributionApi;
use tributary_core::admin::AdminService;
use tributary_core::catalog::{CatalogLimits, CatalogService};
use tributary_core::contribution::ContributionService;
use tributary_core::export::service::ExportService;
use tributary_core::limits::Limits;
use tributary_core::source::service::SourceService;
use tributary_core::source::AllowedDirs;
use tributary_core::store::Store;
use tributary_grpc::auth::AdminAuth;
use tributary_ingest::{Engine, EngineOptions, ExportOptions, ExportScheduler, Exporter};
use tributary_proto::admin::v1::admin_server::AdminServer;
use tributary_proto::catalog::v1::catalog_server::CatalogServer;
use tributary_proto::contribution::v1::json::contribution_server::ContributionServer;

/// A gRPC service a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum ServiceKind {
    /// `tributary.contribution.v1.Contribution`: connectors push records.
    Contributor,
    /// `tributary.catalog.v1.Catalog`: consumers read the catalog.
    Consumer,
    /// `tributary.admin.v1.Admin`: operators manage the broker.
    Admin,
}

impl ServiceKind {
    /// Every service, in a stable order.
    pub const ALL: [ServiceKind; 3] = [
        ServiceKind::Contributor,
        ServiceKind::Consumer,
        ServiceKind::Admin,
    ];

    /// The fully-qualified gRPC service name (as health checks and reflection know it).
    pub fn grpc_name(self) -> &'static str {
        match self {
            Self::Contributor => <ContributionServer<ContributionApi> as NamedService>::NAME,
            Self::Consumer => <CatalogServer<CatalogApi> as NamedService>::NAME,
            Self::Admin => <AdminServer<AdminApi> as NamedService>::NAME,
        }
    }
}

/// How [`serve`] runs.
#[derive(Clone)]
pub struct ServerOptions {
    /// The services to run; each at most once, whatever the order or repetition here.
    pub services: Vec<ServiceKind>,
    /// The admin token; only its hash is kept once serving starts.
    pub admin_token: String,
    pub limits: Limits,
    /// Let Catalog calls without a token read every entity type.
    pub catalog_public: bool,
    /// Largest gRPC message, in either direction, of every Tributary service.
    pub max_message_bytes: usize,
    /// How often idle accrue/replace sessions are rolled back.
    pub reaper_interval: Duration,
    /// The pull engine run alongside the Admin service; `None` runs none.
    pub ingest: Option<EngineOptions>,
    /// How export runs read and write (`[export]`).
    pub exports: ExportOptions,
    /// Run the export scheduler alongside the Admin service (interval and cron exports).
    pub export_schedules: bool,
    /// Change-log entries older than this are pruned; a Watch resuming before them answers
    /// `OUT_OF_RANGE`.
    pub change_log_retention: Duration,
    /// How often the change log is pruned.
    pub prune_interval: Duration,
    /// TLS (and mTLS) on the gRPC port; `None` serves plaintext.
    pub tls: Option<crate::tls::ServerTls>,
    /// Directories `ndjson` sources may read files under (`ingest.allowed_dirs`; empty: none).
    /// The one list both source validation and this process's engine use (it replaces
    /// `ingest`'s own).
    pub allowed_dirs: Vec<std::path::PathBuf>,
    /// What one consumer may ask of the catalog (query sizes, lookups, Watch streams).
    pub catalog_limits: CatalogLimits,
    /// Connection and request bounds of the gRPC port.
    pub transport: TransportOptions,
    /// Browser origins allowed to call over gRPC-Web (CORS); empty allows none.
    pub cors_allowed_origins: Vec<String>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("services", &self.services)
            .field("limits", &self.limits)
            .field("catalog_public", &self.catalog_public)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("reaper_interval", &self.reaper_interval)
            .field("ingest", &self.ingest)
            .field("exports", &self.exports)
            .field("export_schedules", &self.export_schedules)
            .field("change_log_retention", &self.change_log_retention)
            .field("prune_interval", &self.prune_interval)
            .field("tls", &self.tls)
            .field("allowed_dirs", &self.allowed_dirs)
            .field("catalog_limits", &self.catalog_limits)
            .field("transport", &self.transport)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .finish_non_exhaustive()
    }
}

impl ServerOptions {
    /// All services with default limits and the given admin token.
    pub fn all(admin_token: impl Into<String>) -> Self {
        Self {
            services: ServiceKind::ALL.to_vec(),
            admin_token: admin_token.into(),
            limits: Limits::default(),
            catalog_public: false,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            reaper_interval: Duration::from_secs(60),
            ingest: Some(EngineOptions::default()),
            exports: ExportOptions::default(),
            export_schedules: true,
            change_log_retention: Duration::from_secs(
                crate::config::DEFAULT_CHANGE_LOG_RETENTION_SECS,
            ),
            prune_interval: Duration::from_secs(crate::config::DEFAULT_PRUNE_INTERVAL_SECS),
            tls: None,
            allowed_dirs: Vec::new(),
            catalog_limits: CatalogLimits::default(),
            transport: TransportOptions::default(),
            cors_allowed_origins: Vec::new(),
        }
    }

    /// The options `settings` describe, for `services`.
    pub fn from_settings(
        settings: &Settings,
        services: Vec<ServiceKind>,
        admin_token: String,
    ) -> Self {
        Self {
            services,
            admin_token,
            limits: settings.core_limits(),
            catalog_public: settings.catalog.public,
            max_message_bytes: settings.limits.max_message_bytes,
            reaper_interval: Duration::from_secs(settings.sessions.reaper_interval_secs.max(1)),
            ingest: settings.engine_options(),
            exports: settings.export_options(),
            export_schedules: settings.ingest.enabled,
            change_log_retention: Duration::from_secs(settings.catalog.change_log_retention_secs),
            prune_interval: Duration::from_secs(settings.catalog.prune_interval_secs.max(1)),
            // Read from files by `run`, which can fail.
            tls: None,
            allowed_dirs: settings.ingest.allowed_dirs.clone(),
            catalog_limits: settings.catalog_limits(),
            transport: settings.transport_options(),
            cors_allowed_origins: settings.web.cors_allowed_origins.clone(),
        }
    }
}

/// Serves the selected services on `listener` until `shutdown` resolves, then lets in-flight
/// calls finish: open `Contribute` streams finish the batch in flight and end with
/// `UNAVAILABLE`, so long-lived streams do not hold shutdown up (SPEC.md §9). Health (`grpc.health.v1.Health`, per service name and `""`) and reflection
/// (v1 and v1alpha) are always served.
pub async fn serve(
    store: Arc<dyn Store>,
    options: ServerOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut services = options.services.clone();
    services.sort();
    services.dedup();
    let max = options.max_message_bytes;

    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tributary_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().context("building reflection v1")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building reflection v1alpha")?;

    // Every call is counted and timed (crate::metrics); without a recorder this costs little.
    let transport = options.transport.clone();
    // Browsers speak gRPC-Web (HTTP/1.1 or HTTP/2), translated to gRPC before anything else sees
    // the call; CORS answers preflights only for the configured origins (none by default).
    // The web console (`/console/`) is served where Admin is, outside tonic-web, which refuses
    // HTTP/1.1 requests that are not gRPC-Web; its pages call this port's API.
    let console = services.contains(&ServiceKind::Admin);
    let mut builder = Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(transport.max_concurrent_streams)
        .http2_keepalive_interval(Some(transport.keepalive_interval))
        .http2_keepalive_timeout(Some(transport.keepalive_timeout))
        .timeout(transport.request_timeout)
        .layer(tributary_console::ConsoleLayer::new(console))
        .layer(crate::web::cors(&options.cors_allowed_origins)?)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(crate::metrics::GrpcMetricsLayer::new())
        .layer(crate::guard::GuardLayer::new(options.catalog_public));
    if let Some(tls) = &options.tls {
        builder = builder
            .tls_config(tls.tonic_config())
            .context("the TLS certificate, key or client CA")?;
    }
    let mut router = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let mut reaper = None;
    let mut engine = None;
    let mut scheduler = None;
    // Cancelled when serving stops; the engine's bursts finish their page and free their lease.
    let stop_engine = CancellationToken::new();
    // Every process prunes the change log (idempotent across replicas), so it stays bounded
    // even where no Catalog service runs.
    let pruner = tokio::spawn(prune_change_log(
        CatalogService::new(store.clone(), false),
        options.change_log_retention,
        options.prune_interval,
    ));
    // Cancelled when `shutdown` resolves; tells open streams to wind down.
    let stop_streams = CancellationToken::new();
    for kind in &services {
        router = match kind {
            ServiceKind::Contributor => {
                let svc = ContributionService::new(store.clone(), options.limits.clone());
                reaper = Some(tokio::spawn(reap_idle_sessions(
                    svc.clone(),
                    options.reaper_interval,
                )));
                router.add_service(tributary_contributor::contribution_server(
                    svc,
                    max,
                    stop_streams.clone(),
                ))
            }
            ServiceKind::Consumer => {
                let svc = CatalogService::new(store.clone(), options.catalog_public)
                    .with_limits(options.catalog_limits.clone());
                router.add_service(tributary_consumer::catalog_server(
                    svc,
                    transport.max_catalog_request_bytes,
                    max,
                    stop_streams.clone(),
                ))
            }
            ServiceKind::Admin => {
                let auth = AdminAuth::new(&options.admin_token);
                let mut sources = SourceService::new(store.clone(), options.limits.clone())
                    .with_allowed_dirs(AllowedDirs::new(options.allowed_dirs.clone()));
                if let Some(engine_options) = options.ingest.clone() {
                    let engine_options = EngineOptions {
                        allowed_dirs: options.allowed_dirs.clone(),
                        ..engine_options
                    };
                    let e = Arc::new(
                        Engine::new(store.clone(), engine_options)
                            .map_err(|e| anyhow::anyhow!("starting the pull engine: {e}"))?,
                    );
                    sources = sources.with_waker(e.waker());
                    engine = Some(tokio::spawn(e.run(stop_engine.clone())));
                }
                let exporter = Arc::new(Exporter::new(store.clone(), options.exports.clone()));
                let mut exports = ExportService::new(
                    store.clone(),
                    exporter.clone(),
                    options.exports.allowed_dirs.clone(),
                );
                if options.export_schedules {
                    let s = Arc::new(ExportScheduler::new(exporter));
                    exports = exports.with_waker(s.waker());
                    scheduler = Some(tokio::spawn(s.run(stop_engine.clone())));
                }
                router.add_service(tributary_admin::admin_server(
                    AdminService::new(store.clone()),
                    sources,
                    exports,
                    auth,
                    transport.max_admin_request_bytes,
                    max,
                ))
            }
        };
        health
            .set_service_status(kind.grpc_name(), ServingStatus::Serving)
            .await;
    }
    health.set_service_status("", ServingStatus::Serving).await;
    let health_watch = tokio::spawn(crate::health::follow_database(
        store.clone(),
        health.clone(),
        services.iter().map(|k| k.grpc_name()).collect(),
    ));
    let tls = crate::tls::ServerTls::describe(options.tls.as_ref());
    drop(options);

    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    let names: Vec<&str> = services.iter().map(|k| k.grpc_name()).collect();
    tracing::info!(%addr, services = ?names, tls, "serving gRPC");
    let shutdown = async move {
        shutdown.await;
        stop_streams.cancel();
    };
    // Nagle's algorithm would hold each small response (an ack, a diff answer) until the peer's
    // delayed ACK, ~40 ms per round trip; tonic sets TCP_NODELAY only on listeners it binds itself.
    let incoming = TcpListenerStream::new(listener)
        .map(|conn| conn.and_then(|socket| socket.set_nodelay(true).map(|()| socket)));
    let result = router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("serving gRPC");
    if let Some(reaper) = reaper {
        reaper.abort();
    }
    stop_engine.cancel();
    if let Some(engine) = engine {
        // A burst stops after its page in flight; a stuck fetch is cut off (its lease expires).
        if tokio::time::timeout(Duration::from_secs(30), engine)
            .await
            .is_err()
        {
            tracing::warn!("the pull engine did not stop within 30 s");
        }
    }
    if let Some(scheduler) = scheduler {
        // Runs under way finish; one that does not within 30 s leaves its lease to expire.
        if tokio::time::timeout(Duration::from_secs(30), scheduler)
            .await
            .is_err()
        {
            tracing::warn!("the export scheduler did not stop within 30 s");
        }
    }
    pruner.abort();
    health_watch.abort();
    tracing::info!(%addr, "stopped");
    result
}

/// Rolls back idle accrue/replace sessions every `interval`; errors are logged and retried.
async fn reap_idle_sessions(svc: ContributionService, interval: Duration) {
    // tokio's interval panics on a zero period.
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match svc.expire_idle_sessions().await {
            Ok(0) => {}
            Ok(expired) => {
                metrics::counter!("tributary_sessions_closed_total", "result" => "expired")
                    .increment(expired);
                tracing::info!(expired, "rolled back idle sessions")
            }
            Err(error) => tracing::warn!(%error, "could not expire idle sessions"),
        }
    }
}

/// Deletes change-log entries older than `retention` every `interval`; errors are logged and
/// retried.
async fn prune_change_log(svc: CatalogService, retention: Duration, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match svc.prune_change_log(retention).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned the change log"),
            Err(error) => tracing::warn!(%error, "could not prune the change log"),
        }
    }
}

/// Runs a process: logging, the store, the admin token, the listener, and serving until
/// Ctrl-C or SIGTERM.
pub async fn run(settings: Settings, services: Vec<ServiceKind>) -> anyhow::Result<()> {
    crate::telemetry::init(&settings.log);
    if settings.uses_embedded_database() {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    }
    let store = tributary_store::open_with(&settings.database_url(), settings.store_options())
        .await
        .map_err(|e| anyhow::anyhow!("opening the database: {e}"))?;
    let admin_token = if services.contains(&ServiceKind::Admin) {
        crate::admin_token::resolve(&settings)?
    } else {
        // Only the Admin service checks the token; other processes need none.
        String::new()
    };
    let listener = TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let mut options = ServerOptions::from_settings(&settings, services, admin_token);
    options.tls = crate::tls::ServerTls::load(&settings.tls)?;
    let metrics = crate::metrics::start(&settings.metrics, &store).await?;
    let served = serve(store, options, listener, shutdown_signal()).await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    served
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing in-flight calls");
}
