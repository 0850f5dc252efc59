//! Issue 14's workload: N records loaded through the `Contribute` stream, then exported as
//! NDJSON by `RunExport` to a directory and to an S3-compatible server that this process serves
//! on 127.0.0.1 (`s3s-fs` over a temporary directory). One server process per size; its peak
//! RSS is reset after the load, so the figure is the export's alone.

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use tributary_proto::admin::v1 as admin;

use crate::records::ENTITY_TYPE;
use crate::server::{cpu_time, Server};

/// The access key of the local S3 server.
pub const S3_KEY: &str = "bench-access-key";
/// Its secret.
pub const S3_SECRET: &str = "bench-secret-key";
/// The bucket exports are written to.
const BUCKET: &str = "exports";

/// An S3-compatible server on 127.0.0.1 over a temporary directory, until dropped.
pub struct S3Server {
    pub endpoint: String,
    _root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    pub async fn start() -> Result<S3Server> {
        let root = tempfile::Builder::new()
            .prefix("tributary-bench-s3-")
            .tempdir()?;
        std::fs::create_dir(root.path().join(BUCKET))?;
        let fs = s3s_fs::FileSystem::new(root.path()).map_err(|e| anyhow!("s3s-fs: {e:?}"))?;
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(S3_KEY, S3_SECRET));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let http =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let conn = http
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Ok(S3Server {
            endpoint,
            _root: root,
            task,
        })
    }

    /// The server settings that send `s3://` exports here.
    pub fn server_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TRIBUTARY_EXPORT__S3__ENDPOINT", self.endpoint.clone()),
            ("TRIBUTARY_EXPORT__S3__ALLOW_HTTP", "true".into()),
            ("TRIBUTARY_EXPORT__S3__REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", S3_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET.into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One export run's figures.
pub struct Run {
    pub destination: &'static str,
    pub elapsed: Duration,
    pub bytes: u64,
    pub server_cpu: Duration,
    /// The server's `VmHWM` during the run (reset before it), KiB.
    pub peak_rss_kib: u64,
}

impl Run {
    pub fn rate(&self, records: usize) -> f64 {
        records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What one size measured.
pub struct Outcome {
    pub records: usize,
    pub load: Duration,
    /// `VmHWM` after the load, before the resets, KiB.
    pub load_rss_kib: u64,
    pub runs: Vec<Run>,
    /// Set when the peak could not be reset (then the figures include the load's).
    pub reset_failed: Option<String>,
}

/// Loads `records` records, then runs an NDJSON export to the server's data directory and one
/// to the S3 server, each measured.
pub async fn run(
    server: &Server,
    admin_token: &str,
    records: usize,
    batch: usize,
    window: usize,
) -> Result<Outcome> {
    let crate::sync::Loaded {
        mut admin, load, ..
    } = crate::sync::loaded_connector(server, admin_token, "bench-export", records, batch, window)
        .await?;
    let load_rss_kib = server.peak_rss_kib()?;
    let file_url = format!("file://{}/exports", server.data_dir().display());
    let mut outcome = Outcome {
        records,
        load,
        load_rss_kib,
        runs: Vec::new(),
        reset_failed: None,
    };
    for (destination, url) in [("file", file_url), ("S3", format!("s3://{BUCKET}/bench"))] {
        if let Err(e) = server.reset_peak_rss() {
            outcome.reset_failed = Some(format!("{e:#}"));
        }
        outcome
            .runs
            .push(export_once(server, &mut admin, destination, &url, records).await?);
    }
    Ok(outcome)
}

async fn export_once(
    server: &Server,
    admin: &mut crate::server::AdminClient,
    destination: &'static str,
    url: &str,
    records: usize,
) -> Result<Run> {
    let export = admin
        .create_export(admin::CreateExportRequest {
            export: Some(admin::Export {
                name: format!("bench-{}", destination.to_lowercase()),
                entity_type: ENTITY_TYPE.into(),
                format: admin::ExportFormat::Ndjson as i32,
                destination: url.into(),
                enabled: Some(true),
                ..Default::default()
            }),
        })
        .await
        .context("CreateExport")?
        .into_inner()
        .export
        .ok_or_else(|| anyhow!("CreateExport answered no export"))?;
    let pid = server.pid().to_string();
    let cpu = cpu_time(&pid)?;
    let started = Instant::now();
    let run = admin
        .run_export(admin::RunExportRequest { id: export.id })
        .await
        .context("RunExport")?
        .into_inner()
        .run
        .ok_or_else(|| anyhow!("RunExport answered no run"))?;
    let elapsed = started.elapsed();
    ensure!(
        run.status == admin::ImportStatus::Succeeded as i32 && run.records == records as u64,
        "export to {destination}: expected {records} records, got {run:?}"
    );
    Ok(Run {
        destination,
        elapsed,
        bytes: run.bytes,
        server_cpu: cpu_time(&pid)?.saturating_sub(cpu),
        peak_rss_kib: server.peak_rss_kib()?,
    })
}
