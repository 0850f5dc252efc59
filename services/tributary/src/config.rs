//! Settings, layered: defaults, then a TOML file (`--config FILE` or `TRIBUTARY_CONFIG`), then
//! `TRIBUTARY_*` environment variables (nested keys joined by `__`, e.g.
//! `TRIBUTARY_LIMITS__MAX_BATCH_RECORDS`), then command-line flags.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tributary_core::limits::Limits;

/// Every setting of a Tributary process.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Address the gRPC port listens on.
    pub listen: String,
    /// Where the embedded SQLite database and the generated admin token live.
    pub data_dir: PathBuf,
    /// `postgres://...` or a SQLite path; absent means SQLite at `<data_dir>/tributary.db`.
    pub database_url: Option<String>,
    /// The admin token; absent means `<data_dir>/admin.token` (generated on first start).
    pub admin_token: Option<String>,
    pub limits: LimitSettings,
    pub sessions: SessionSettings,
    pub catalog: CatalogSettings,
    pub log: LogSettings,
    pub ingest: IngestSettings,
    pub export: ExportSettings,
    pub reports: ReportSettings,
    pub tls: TlsSettings,
    pub metrics: MetricsSettings,
    pub database: DatabaseSettings,
    pub grpc: GrpcSettings,
    pub web: WebSettings,
}

/// Browsers (gRPC-Web).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WebSettings {
    /// Origins (`https://console.example.com`) whose pages may call over gRPC-Web; none by
    /// default. `*` allows any origin.
    pub cors_allowed_origins: Vec<String>,
}

/// How the store uses its database (docs/LIMITS.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// Most PostgreSQL connections (SQLite: reader connections, at most 8).
    pub max_connections: u32,
    /// How long a call waits for a connection before UNAVAILABLE, in seconds.
    pub acquire_timeout_secs: f64,
    /// The longest a catalog listing may run before RESOURCE_EXHAUSTED, in seconds.
    pub query_timeout_secs: f64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        let store = tributary_store::StoreOptions::default();
        Self {
            max_connections: store.max_connections,
            acquire_timeout_secs: store.acquire_timeout.as_secs_f64(),
            query_timeout_secs: store.query_timeout.as_secs_f64(),
        }
    }
}

/// Connection and request bounds of the gRPC port (docs/LIMITS.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcSettings {
    pub max_concurrent_streams: u32,
    pub keepalive_interval_secs: f64,
    pub keepalive_timeout_secs: f64,
    pub request_timeout_secs: f64,
    pub max_catalog_request_bytes: usize,
    pub max_admin_request_bytes: usize,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        let t = crate::transport::TransportOptions::default();
        Self {
            max_concurrent_streams: t.max_concurrent_streams,
            keepalive_interval_secs: t.keepalive_interval.as_secs_f64(),
            keepalive_timeout_secs: t.keepalive_timeout.as_secs_f64(),
            request_timeout_secs: t.request_timeout.as_secs_f64(),
            max_catalog_request_bytes: t.max_catalog_request_bytes,
            max_admin_request_bytes: t.max_admin_request_bytes,
        }
    }
}

/// TLS on the gRPC port (SPEC.md §9): served when a certificate is configured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsSettings {
    /// PEM certificate chain of the server.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// PEM certificates of the authority clients' certificates must be signed by (mTLS);
    /// clients without such a certificate are refused.
    pub client_ca: Option<PathBuf>,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsSettings {
    /// Address serving Prometheus text at `/metrics`; absent means no endpoint.
    pub listen: Option<String>,
}

/// The pull engine (SPEC.md §5).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestSettings {
    /// Run the engine in processes that serve the Admin service.
    pub enabled: bool,
    /// Longest sleep between looks for due sources, in seconds (fractions allowed).
    pub heartbeat_secs: f64,
    /// How long a claim on a source lasts without a page renewing it, in seconds.
    pub lease_secs: f64,
    /// Most sources one engine works at once.
    pub concurrency: u32,
    /// Largest page body an HTTP source may return, and most bytes one `ndjson` page reads.
    pub max_page_bytes: usize,
    /// Longest line of an `ndjson` source, in bytes; a longer one is a failed item.
    pub max_line_bytes: usize,
    /// Timeout of one HTTP request to a source, in seconds.
    pub http_timeout_secs: f64,
    /// How long connecting to a `grpc` provider may take, in seconds.
    pub provider_connect_timeout_secs: f64,
    /// How long one call to a `grpc` provider may take, in seconds.
    pub provider_request_timeout_secs: f64,
    /// Directories `ndjson` sources may read files under (and below); empty: none.
    pub allowed_dirs: Vec<PathBuf>,
    /// A PEM file of root certificates trusted for `https://` sources besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// Exports (SPEC.md §7).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ExportSettings {
    /// Directories `file://` destinations may write under; empty means the data directory.
    pub allowed_dirs: Vec<PathBuf>,
    /// Records read per page of a run.
    pub page_size: Option<u32>,
    /// Size of each uploaded part, in bytes (at least 5 MiB for S3).
    pub part_bytes: Option<usize>,
    /// Most distinct CSV columns a run writes; a run over it fails.
    pub max_csv_columns: Option<usize>,
    pub s3: ExportS3Settings,
}

/// How S3 destinations are reached (`[export.s3]`). Credentials come from the standard `AWS_*`
/// environment variables unless given here.
#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ExportS3Settings {
    /// An S3-compatible endpoint, e.g. `http://127.0.0.1:9000`; absent means AWS.
    pub endpoint: Option<String>,
    /// Default `us-east-1` (or `AWS_REGION`).
    pub region: Option<String>,
    /// Allow a plain `http://` endpoint.
    pub allow_http: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

// The secret key must never reach a log line, so Debug is written by hand.
impl std::fmt::Debug for ExportS3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportS3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

/// Import results (SPEC.md §6).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportSettings {
    /// Most skipped/failed items listed per import result; the rest are counted.
    pub max_items: u64,
}

// The engine owns its defaults; the settings only spell them in configuration units.
impl Default for IngestSettings {
    fn default() -> Self {
        let engine = tributary_ingest::EngineOptions::default();
        Self {
            enabled: true,
            heartbeat_secs: engine.heartbeat.as_secs_f64(),
            lease_secs: engine.lease.as_secs_f64(),
            concurrency: engine.concurrency,
            max_page_bytes: engine.max_page_bytes,
            max_line_bytes: engine.max_line_bytes,
            http_timeout_secs: engine.http_timeout.as_secs_f64(),
            provider_connect_timeout_secs: engine.provider_connect_timeout.as_secs_f64(),
            provider_request_timeout_secs: engine.provider_request_timeout.as_secs_f64(),
            allowed_dirs: engine.allowed_dirs,
            ca_file: engine.ca_file,
        }
    }
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            max_items: tributary_ingest::EngineOptions::default().max_items,
        }
    }
}

/// A positive number of seconds as a duration (non-finite or non-positive means `fallback`).
fn secs(value: f64, fallback: std::time::Duration) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .unwrap_or(fallback)
}

/// Contribution limits (SPEC.md §10).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitSettings {
    pub max_batch_records: usize,
    pub max_record_bytes: usize,
    /// Most ranges in one Reconcile call.
    pub max_reconcile_ranges: usize,
    /// Largest gRPC message, in either direction.
    pub max_message_bytes: usize,
}

/// Session housekeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionSettings {
    /// An accrue/replace session idle for longer is rolled back.
    pub idle_timeout_secs: u64,
    /// How often idle sessions are looked for.
    pub reaper_interval_secs: u64,
}

/// Catalog access and the change log behind Watch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CatalogSettings {
    /// Let calls without a token read every entity type.
    pub public: bool,
    /// Change-log retention (SPEC.md §10: 7 days); Watch resuming from older answers
    /// OUT_OF_RANGE.
    pub change_log_retention_secs: u64,
    /// How often old change-log entries are pruned.
    pub prune_interval_secs: u64,
    /// Query bounds of ListRecords (`catalog.max_filter_bytes` …, docs/LIMITS.md), each capped
    /// at a ceiling both backends run.
    #[serde(flatten)]
    pub query: tributary_core::query::QueryLimits,
    /// Most ids of one LookupByExternalIds call.
    pub max_lookup_ids: usize,
    /// Most Watch streams one consumer holds open in one process.
    pub max_watches_per_consumer: usize,
    /// Most Watch streams without a token (public catalog) in one process.
    pub max_public_watches: usize,
    /// How often an open Watch checks its consumer and grant again, in seconds.
    pub watch_revalidate_secs: f64,
}

/// Default change-log retention: 7 days.
pub const DEFAULT_CHANGE_LOG_RETENTION_SECS: u64 = 7 * 24 * 3600;
/// Default pruning interval: 10 minutes.
pub const DEFAULT_PRUNE_INTERVAL_SECS: u64 = 600;

impl Default for CatalogSettings {
    fn default() -> Self {
        let limits = tributary_core::catalog::CatalogLimits::default();
        Self {
            public: false,
            change_log_retention_secs: DEFAULT_CHANGE_LOG_RETENTION_SECS,
            prune_interval_secs: DEFAULT_PRUNE_INTERVAL_SECS,
            query: limits.query,
            max_lookup_ids: limits.max_lookup_ids,
            max_watches_per_consumer: limits.max_watches_per_consumer,
            max_public_watches: limits.max_public_watches,
            watch_revalidate_secs: limits.watch_revalidate.as_secs_f64(),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` env-filter directive; `RUST_LOG` overrides it.
    pub filter: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Default gRPC message limit: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            data_dir: PathBuf::from("./tributary-data"),
            database_url: None,
            admin_token: None,
            limits: LimitSettings::default(),
            sessions: SessionSettings::default(),
            catalog: CatalogSettings::default(),
            log: LogSettings::default(),
            ingest: IngestSettings::default(),
            export: ExportSettings::default(),
            reports: ReportSettings::default(),
            tls: TlsSettings::default(),
            metrics: MetricsSettings::default(),
            database: DatabaseSettings::default(),
            grpc: GrpcSettings::default(),
            web: WebSettings::default(),
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        let core = Limits::default();
        Self {
            max_batch_records: core.max_batch_records,
            max_record_bytes: core.max_record_bytes,
            max_reconcile_ranges: core.max_reconcile_ranges,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_timeout_secs: Limits::default().session_idle_timeout.as_secs(),
            reaper_interval_secs: 60,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

// The admin token must never reach a log line, so Debug is written by hand.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("limits", &self.limits)
            .field("sessions", &self.sessions)
            .field("catalog", &self.catalog)
            .field("log", &self.log)
            .field("ingest", &self.ingest)
            .field("export", &self.export)
            .field("reports", &self.reports)
            .field("tls", &self.tls)
            .field("metrics", &self.metrics)
            .field("database", &self.database)
            .field("grpc", &self.grpc)
            .field("web", &self.web)
            .finish()
    }
}

/// The flags every service binary shares; they override the file and the environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Args {
    /// TOML configuration file. Settings are layered: built-in defaults, then this file, then
    /// TRIBUTARY_* environment variables (nested keys joined by `__`, e.g.
    /// TRIBUTARY_LIMITS__MAX_BATCH_RECORDS=5000), then these flags.
    #[arg(long, value_name = "FILE", env = "TRIBUTARY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve gRPC on [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory for the embedded SQLite database and the generated admin token
    /// [default: ./tributary-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database to use instead of the embedded SQLite: postgres://user:pass@host/db, or a SQLite
    /// path. Any number of replicas may share one PostgreSQL database.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Serve gRPC over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require clients to present a certificate signed by this PEM authority (mTLS; needs
    /// --tls-cert).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

impl Settings {
    /// Settings from defaults, the configuration file, the environment and `args`.
    pub fn load(args: &Args) -> Result<Self, Box<figment::Error>> {
        Self::from_figment(Self::figment(args.config.as_deref()), args)
    }

    /// The layered sources before the flags: defaults, the file (if any), the environment.
    pub fn figment(config_file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = config_file {
            figment = figment.merge(Toml::file_exact(file));
        }
        // TRIBUTARY_CONFIG names the file; it is not a setting.
        figment.merge(Env::prefixed("TRIBUTARY_").split("__").ignore(&["config"]))
    }

    fn from_figment(figment: Figment, args: &Args) -> Result<Self, Box<figment::Error>> {
        let mut settings: Settings = figment.extract().map_err(Box::new)?;
        if let Some(listen) = &args.listen {
            settings.listen = listen.clone();
        }
        if let Some(data_dir) = &args.data_dir {
            settings.data_dir = data_dir.clone();
        }
        if let Some(url) = &args.database_url {
            settings.database_url = Some(url.clone());
        }
        let flag = |flag: &Option<PathBuf>, setting: &mut Option<PathBuf>| {
            if let Some(path) = flag {
                *setting = Some(path.clone());
            }
        };
        flag(&args.tls_cert, &mut settings.tls.cert);
        flag(&args.tls_key, &mut settings.tls.key);
        flag(&args.tls_client_ca, &mut settings.tls.client_ca);
        if let Some(listen) = &args.metrics_listen {
            settings.metrics.listen = Some(listen.clone());
        }
        Ok(settings)
    }

    /// The store to open: the configured URL, else SQLite under the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.trim().is_empty() => url.clone(),
            _ => self
                .data_dir
                .join("tributary.db")
                .to_string_lossy()
                .into_owned(),
        }
    }

    /// Whether the store is the embedded SQLite under the data directory.
    pub fn uses_embedded_database(&self) -> bool {
        self.database_url
            .as_deref()
            .is_none_or(|u| u.trim().is_empty())
    }

    /// The pull engine's options; `None` when the engine is disabled.
    pub fn engine_options(&self) -> Option<tributary_ingest::EngineOptions> {
        let defaults = tributary_ingest::EngineOptions::default();
        self.ingest
            .enabled
            .then(|| tributary_ingest::EngineOptions {
                heartbeat: secs(self.ingest.heartbeat_secs, defaults.heartbeat),
                lease: secs(self.ingest.lease_secs, defaults.lease),
                concurrency: self.ingest.concurrency.max(1),
                max_items: self.reports.max_items,
                max_record_bytes: self.limits.max_record_bytes,
                max_page_bytes: self.ingest.max_page_bytes,
                max_line_bytes: self.ingest.max_line_bytes.max(1),
                http_timeout: secs(self.ingest.http_timeout_secs, defaults.http_timeout),
                provider_connect_timeout: secs(
                    self.ingest.provider_connect_timeout_secs,
                    defaults.provider_connect_timeout,
                ),
                provider_request_timeout: secs(
                    self.ingest.provider_request_timeout_secs,
                    defaults.provider_request_timeout,
                ),
                allowed_dirs: self.ingest.allowed_dirs.clone(),
                ca_file: self.ingest.ca_file.clone(),
            })
    }

    /// How export runs read and write; `file://` destinations default to the data directory.
    pub fn export_options(&self) -> tributary_ingest::ExportOptions {
        let defaults = tributary_ingest::ExportOptions::default();
        let e = &self.export;
        let allowed_dirs = if e.allowed_dirs.is_empty() {
            // Absolute, so that a file:// URL (always absolute) can be under it.
            vec![std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone())]
        } else {
            e.allowed_dirs.clone()
        };
        tributary_ingest::ExportOptions {
            s3: tributary_ingest::S3Options {
                endpoint: e.s3.endpoint.clone(),
                region: e.s3.region.clone(),
                allow_http: e.s3.allow_http,
                access_key_id: e.s3.access_key_id.clone(),
                secret_access_key: e.s3.secret_access_key.clone(),
            },
            allowed_dirs,
            page_size: e.page_size.unwrap_or(defaults.page_size).clamp(1, 10_000),
            part_bytes: e
                .part_bytes
                .unwrap_or(defaults.part_bytes)
                .max(5 * 1024 * 1024),
            max_csv_columns: e.max_csv_columns.unwrap_or(defaults.max_csv_columns),
            heartbeat: secs(self.ingest.heartbeat_secs, defaults.heartbeat),
            lease: secs(self.ingest.lease_secs, defaults.lease),
            ..defaults
        }
    }

    /// How the store uses its database.
    pub fn store_options(&self) -> tributary_store::StoreOptions {
        let defaults = tributary_store::StoreOptions::default();
        let d = &self.database;
        tributary_store::StoreOptions {
            max_connections: d.max_connections.max(1),
            acquire_timeout: secs(d.acquire_timeout_secs, defaults.acquire_timeout),
            query_timeout: secs(d.query_timeout_secs, defaults.query_timeout),
        }
    }

    /// The catalog's limits.
    pub fn catalog_limits(&self) -> tributary_core::catalog::CatalogLimits {
        let c = &self.catalog;
        let defaults = tributary_core::catalog::CatalogLimits::default();
        tributary_core::catalog::CatalogLimits {
            query: c.query.clamped(),
            max_lookup_ids: c.max_lookup_ids.max(1),
            max_watches_per_consumer: c.max_watches_per_consumer.max(1),
            max_public_watches: c.max_public_watches,
            watch_revalidate: secs(c.watch_revalidate_secs, defaults.watch_revalidate),
        }
    }

    /// The gRPC port's connection and request bounds.
    pub fn transport_options(&self) -> crate::transport::TransportOptions {
        let d = crate::transport::TransportOptions::default();
        let g = &self.grpc;
        crate::transport::TransportOptions {
            max_concurrent_streams: g.max_concurrent_streams.max(1),
            keepalive_interval: secs(g.keepalive_interval_secs, d.keepalive_interval),
            keepalive_timeout: secs(g.keepalive_timeout_secs, d.keepalive_timeout),
            request_timeout: secs(g.request_timeout_secs, d.request_timeout),
            max_catalog_request_bytes: g.max_catalog_request_bytes.max(1024),
            max_admin_request_bytes: g.max_admin_request_bytes.max(1024),
        }
    }

    /// The domain limits these settings describe.
    pub fn core_limits(&self) -> Limits {
        Limits {
            max_batch_records: self.limits.max_batch_records,
            max_record_bytes: self.limits.max_record_bytes,
            session_idle_timeout: Duration::from_secs(self.sessions.idle_timeout_secs),
            max_reconcile_ranges: self.limits.max_reconcile_ranges.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_match_the_specification() {
        let s = Settings::default();
        assert_eq!(s.listen, "127.0.0.1:50051");
        assert_eq!(s.limits.max_batch_records, 10_000);
        assert_eq!(s.limits.max_record_bytes, 1024 * 1024);
        assert_eq!(s.limits.max_message_bytes, 16 * 1024 * 1024);
        assert_eq!(s.sessions.idle_timeout_secs, 86_400);
        assert!(!s.catalog.public);
        assert_eq!(s.catalog.change_log_retention_secs, 7 * 86_400);
        assert!(s.database_url().ends_with("tributary.db"));
        assert!(s.tls.cert.is_none() && s.tls.client_ca.is_none());
        assert!(s.metrics.listen.is_none(), "metrics are off by default");
        assert!(
            s.ingest.allowed_dirs.is_empty(),
            "no file may be read by default"
        );
        assert_eq!(s.ingest.max_line_bytes, 1024 * 1024);
        assert_eq!(s.ingest.provider_connect_timeout_secs, 10.0);
        assert_eq!(s.ingest.provider_request_timeout_secs, 30.0);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Error by value
    fn file_then_environment_then_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "tributary.toml",
                r#"
                listen = "0.0.0.0:1"
                data_dir = "/from/file"
                [limits]
                max_batch_records = 5
                [catalog]
                public = true
                max_in_values = 50
                max_order_by_fields = 99
                [database]
                query_timeout_secs = 2.5
                [log]
                format = "json"
                "#,
            )?;
            jail.set_env("TRIBUTARY_LIMITS__MAX_BATCH_RECORDS", "7");
            jail.set_env("TRIBUTARY_LISTEN", "0.0.0.0:2");
            jail.set_env("TRIBUTARY_ADMIN_TOKEN", "tba_from_env");
            jail.set_env("TRIBUTARY_TLS__CERT", "/env/cert.pem");
            jail.set_env("TRIBUTARY_TLS__KEY", "/env/key.pem");
            jail.set_env("TRIBUTARY_METRICS__LISTEN", "127.0.0.1:9000");
            jail.set_env("TRIBUTARY_CATALOG__MAX_WATCHES_PER_CONSUMER", "3");
            jail.set_env("TRIBUTARY_GRPC__MAX_CATALOG_REQUEST_BYTES", "65536");
            let args = Args {
                listen: Some("127.0.0.1:3".into()),
                tls_key: Some("/flag/key.pem".into()),
                ..Args::default()
            };
            let s =
                Settings::from_figment(Settings::figment(Some(Path::new("tributary.toml"))), &args)
                    .map_err(|e| e.to_string())?;
            assert_eq!(s.listen, "127.0.0.1:3");
            assert_eq!(s.data_dir, PathBuf::from("/from/file"));
            assert_eq!(s.limits.max_batch_records, 7);
            assert_eq!(s.limits.max_record_bytes, 1024 * 1024);
            assert!(s.catalog.public);
            assert_eq!(s.log.format, LogFormat::Json);
            assert_eq!(s.admin_token.as_deref(), Some("tba_from_env"));
            assert!(!format!("{s:?}").contains("tba_from_env"));
            assert_eq!(s.tls.cert, Some(PathBuf::from("/env/cert.pem")));
            assert_eq!(s.tls.key, Some(PathBuf::from("/flag/key.pem")));
            assert_eq!(s.tls.client_ca, None);
            assert_eq!(s.metrics.listen.as_deref(), Some("127.0.0.1:9000"));
            let catalog = s.catalog_limits();
            assert_eq!(catalog.query.max_in_values, 50);
            assert_eq!(
                catalog.query.max_filter_depth, 16,
                "unset keys keep their defaults"
            );
            assert_eq!(
                catalog.query.max_order_by_fields, 16,
                "lowered to the ceiling"
            );
            assert_eq!(catalog.max_watches_per_consumer, 3);
            assert_eq!(s.store_options().query_timeout, Duration::from_millis(2500));
            assert_eq!(s.store_options().acquire_timeout, Duration::from_secs(5));
            assert_eq!(s.transport_options().max_catalog_request_bytes, 65536);
            Ok(())
        });
    }
}
