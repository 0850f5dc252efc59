//! Export runs (SPEC.md §7): read the catalog in keyset pages and stream the encoded records to
//! a file or an S3 object through a multipart upload, so memory stays bounded whatever the
//! catalog's size; and the scheduler that runs interval and cron exports under a database lease.

mod scheduler;

pub use scheduler::ExportScheduler;

use async_trait::async_trait;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tributary_core::clock::now_micros;
use tributary_core::error::with_causes;
use tributary_core::export::format::{
    framing, record_columns, record_json, schema_columns, CsvEncoder,
};
use tributary_core::export::service::ExportRunner;
use tributary_core::export::{file_name, Destination, Export, ExportFormat, ExportRun};
use tributary_core::ids::new_id;
use tributary_core::model::{ImportStatus, StoredRecord};
use tributary_core::query::{Cursor, ListQuery};
use tributary_core::store::{CatalogSnapshot, RecordQuery, Store};

/// Where S3 destinations live and how to reach them (`[export.s3]`). Credentials not given here
/// come from the standard `AWS_*` environment variables.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// e.g. `http://127.0.0.1:9000` for MinIO; `None` for AWS.
    pub endpoint: Option<String>,
    /// Default `us-east-1` (or `AWS_REGION`).
    pub region: Option<String>,
    /// Allow plain HTTP endpoints.
    pub allow_http: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// How export runs read and write.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub s3: S3Options,
    /// Directories `file://` destinations must be under (re-checked at every run).
    pub allowed_dirs: Vec<PathBuf>,
    /// Records read per keyset page.
    pub page_size: u32,
    /// Size of each uploaded part (S3 needs at least 5 MiB but for the last).
    pub part_bytes: usize,
    /// Most parts uploading at once; memory is about `part_bytes * (max_parts_in_flight + 1)`.
    pub max_parts_in_flight: usize,
    /// Most distinct CSV columns (schema properties and fields found in records).
    pub max_csv_columns: usize,
    /// How long a request to S3 is retried before the run fails.
    pub s3_retry_timeout: Duration,
    /// The scheduler's longest sleep between looks for due exports.
    pub heartbeat: Duration,
    /// How long a scheduled run's claim lasts without renewal (renewed every third of it).
    pub lease: Duration,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            s3: S3Options::default(),
            allowed_dirs: Vec::new(),
            page_size: 1000,
            part_bytes: 8 * 1024 * 1024,
            max_parts_in_flight: 2,
            max_csv_columns: 10_000,
            s3_retry_timeout: Duration::from_secs(60),
            heartbeat: Duration::from_secs(60),
            lease: Duration::from_secs(60),
        }
    }
}

/// Runs exports: what `RunExport` and the scheduler call.
#[derive(Clone)]
pub struct Exporter {
    store: Arc<dyn Store>,
    options: ExportOptions,
}

/// A multipart upload and what has gone into it.
struct Sink {
    upload: WriteMultipart,
    bytes: u64,
    max_in_flight: usize,
}

impl Sink {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        // Waits while too many parts are uploading, so memory does not grow with the export.
        self.upload
            .wait_for_capacity(self.max_in_flight)
            .await
            .map_err(|e| format!("uploading: {}", with_causes(&e)))?;
        self.upload.write(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

impl Exporter {
    /// An exporter over `store`.
    pub fn new(store: Arc<dyn Store>, options: ExportOptions) -> Self {
        Self { store, options }
    }

    /// The options it runs with.
    pub fn options(&self) -> &ExportOptions {
        &self.options
    }

    /// The object store and the object's path for a run's file `name` under `destination`.
    async fn open(
        &self,
        destination: &Destination,
        name: &str,
    ) -> Result<(Arc<dyn ObjectStore>, ObjectPath), String> {
        match destination {
            Destination::File { dir } => {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                let fs = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| format!("opening {}: {}", dir.display(), with_causes(&e)))?;
                Ok((Arc::new(fs), ObjectPath::from(name)))
            }
            Destination::S3 { bucket, prefix } => {
                // reqwest is built without a crypto provider of its own (see the engine's HTTP
                // client); ring is the process's.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let s3 = &self.options.s3;
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_virtual_hosted_style_request(false)
                    .with_allow_http(s3.allow_http)
                    .with_retry(RetryConfig {
                        retry_timeout: self.options.s3_retry_timeout,
                        max_retries: 5,
                        ..RetryConfig::default()
                    })
                    .with_client_options(
                        ClientOptions::new()
                            .with_allow_http(s3.allow_http)
                            .with_connect_timeout(Duration::from_secs(10)),
                    );
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let store = builder
                    .build()
                    .map_err(|e| format!("configuring S3: {}", with_causes(&e)))?;
                let path = if prefix.is_empty() {
                    name.to_owned()
                } else {
                    format!("{prefix}/{name}")
                };
                Ok((Arc::new(store), ObjectPath::from(path)))
            }
        }
    }

    /// Writes the export's records to `destination`/`name`; the records and bytes written.
    /// On any failure the upload is aborted, so nothing is left under the final name.
    async fn write(
        &self,
        export: &Export,
        destination: &Destination,
        name: &str,
    ) -> Result<(u64, u64), String> {
        let query = ListQuery::parse(&export.entity_type, &export.filter, "")
            .map_err(|e| format!("the filter: {e}"))?;
        // One snapshot for the whole run (both of CSV's passes): the records visible at its
        // start, whatever commits while it runs.
        let mut snapshot = self
            .store
            .open_snapshot()
            .await
            .map_err(|e| format!("opening a snapshot of the catalog: {e}"))?;
        let snapshot = snapshot.as_mut();
        // CSV's header needs every column before the first row: a first pass over the same
        // keyset pages collects them (bounded by `max_csv_columns`, not by the record count).
        let csv = match export.format {
            ExportFormat::Csv => Some(self.csv_columns(snapshot, export, &query).await?),
            _ => None,
        };
        let (store, path) = self.open(destination, name).await?;
        let upload = store
            .put_multipart(&path)
            .await
            .map_err(|e| format!("starting the upload: {}", with_causes(&e)))?;
        let mut sink = Sink {
            upload: WriteMultipart::new_with_chunk_size(upload, self.options.part_bytes),
            bytes: 0,
            max_in_flight: self.options.max_parts_in_flight.max(1),
        };
        match self
            .stream(snapshot, export, &query, csv.as_ref(), &mut sink)
            .await
        {
            Ok(records) => {
                let bytes = sink.bytes;
                sink.upload
                    .finish()
                    .await
                    .map_err(|e| format!("completing the upload: {}", with_causes(&e)))?;
                Ok((records, bytes))
            }
            Err(error) => {
                if let Err(abort) = sink.upload.abort().await {
                    tracing::warn!(export = %export.id, error = %with_causes(&abort), "could not abort an export's upload");
                }
                Err(error)
            }
        }
    }

    /// The export's records in `snapshot`, page by page in key order.
    fn pages<'a>(
        &self,
        snapshot: &'a mut dyn CatalogSnapshot,
        export: &'a Export,
        query: &'a ListQuery,
    ) -> KeysetPages<'a> {
        KeysetPages {
            snapshot,
            export,
            query,
            limit: self.options.page_size.max(1),
            after: None,
            done: false,
        }
    }

    async fn csv_columns(
        &self,
        snapshot: &mut dyn CatalogSnapshot,
        export: &Export,
        query: &ListQuery,
    ) -> Result<CsvEncoder, String> {
        let entity_type = self
            .store
            .get_entity_type(&export.entity_type)
            .await
            .map_err(|e| format!("reading the entity type: {e}"))?;
        let mut columns = BTreeSet::new();
        schema_columns(&entity_type.schema, &mut columns);
        let mut pages = self.pages(snapshot, export, query);
        while let Some(records) = pages.next().await? {
            for r in &records {
                record_columns(r, &mut columns).map_err(|e| e.to_string())?;
            }
            if columns.len() > self.options.max_csv_columns {
                return Err(format!(
                    "the records hold more than {} distinct CSV columns (export.max_csv_columns)",
                    self.options.max_csv_columns
                ));
            }
        }
        Ok(CsvEncoder::new(columns))
    }

    async fn stream(
        &self,
        snapshot: &mut dyn CatalogSnapshot,
        export: &Export,
        query: &ListQuery,
        csv: Option<&CsvEncoder>,
        sink: &mut Sink,
    ) -> Result<u64, String> {
        let (head, between, tail) = framing(export.format);
        sink.write(head).await?;
        if let Some(csv) = csv {
            sink.write(&csv.header().map_err(|e| e.to_string())?)
                .await?;
        }
        let mut records = 0u64;
        let mut pages = self.pages(snapshot, export, query);
        while let Some(page) = pages.next().await? {
            for r in &page {
                if records > 0 {
                    sink.write(between).await?;
                }
                let bytes = match (export.format, csv) {
                    (ExportFormat::Csv, Some(csv)) => csv.record(r),
                    (ExportFormat::Ndjson, _) => record_json(r).map(|mut line| {
                        line.push(b'\n');
                        line
                    }),
                    _ => record_json(r),
                }
                .map_err(|e| e.to_string())?;
                sink.write(&bytes).await?;
                records += 1;
            }
        }
        sink.write(tail).await?;
        Ok(records)
    }
}

/// Keyset pages of an export's records: each page continues after the previous one's last key,
/// so only one page is in memory at a time.
struct KeysetPages<'a> {
    snapshot: &'a mut dyn CatalogSnapshot,
    export: &'a Export,
    query: &'a ListQuery,
    limit: u32,
    after: Option<Cursor>,
    done: bool,
}

impl KeysetPages<'_> {
    async fn next(&mut self) -> Result<Option<Vec<StoredRecord>>, String> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .snapshot
            .query_records(&RecordQuery {
                entity_type: &self.export.entity_type,
                filter: self.query.filter.as_ref(),
                order: &self.query.order,
                after: self.after.as_ref(),
                limit: self.limit,
            })
            .await
            .map_err(|e| format!("reading the catalog: {e}"))?;
        match page.last {
            Some(last) if page.records.len() >= self.limit as usize => self.after = Some(last),
            _ => self.done = true,
        }
        Ok(Some(page.records))
    }
}

fn count_run(run: &ExportRun) {
    metrics::counter!("tributary_export_runs_total", "status" => run.status.as_str()).increment(1);
    metrics::counter!("tributary_export_records_total").increment(run.records);
    metrics::counter!("tributary_export_bytes_total").increment(run.bytes);
}

#[async_trait]
impl ExportRunner for Exporter {
    /// Runs on a task of its own, so a run whose caller went away (a RunExport cancelled by
    /// its deadline) still ends, cleans up its upload and is recorded.
    async fn run(&self, export: &Export) -> tributary_core::Result<ExportRun> {
        let me = self.clone();
        let export = export.clone();
        tokio::spawn(async move { me.run_now(&export).await })
            .await
            .map_err(|e| tributary_core::Error::Internal(format!("an export run panicked: {e}")))?
    }
}

impl Exporter {
    async fn run_now(&self, export: &Export) -> tributary_core::Result<ExportRun> {
        let started = now_micros();
        let name = file_name(&export.name, export.format, started);
        let (location, outcome) = match Destination::parse(
            "export.destination",
            &export.destination,
            &self.options.allowed_dirs,
        ) {
            Ok(destination) => (
                destination.location(&name),
                self.write(export, &destination, &name).await,
            ),
            Err(e) => (String::new(), Err(e.to_string())),
        };
        let run = ExportRun {
            id: new_id(),
            export_id: export.id.clone(),
            status: if outcome.is_ok() {
                ImportStatus::Succeeded
            } else {
                ImportStatus::Failed
            },
            started_at: started,
            ended_at: now_micros(),
            records: outcome.as_ref().map_or(0, |(r, _)| *r),
            bytes: outcome.as_ref().map_or(0, |(_, b)| *b),
            location,
            error: outcome.err(),
        };
        match &run.error {
            None => {
                tracing::info!(export = %export.id, location = %run.location, records = run.records, bytes = run.bytes, "export run succeeded")
            }
            Some(error) => {
                tracing::warn!(export = %export.id, location = %run.location, %error, "export run failed")
            }
        }
        count_run(&run);
        self.store.record_export_run(&run).await?;
        Ok(run)
    }
}
