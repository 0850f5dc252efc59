//! The end-to-end path: the real `tributary serve` as a child process, driven through its public
//! gRPC API the way a connector would.

use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use serde_json::Value;
use tokio::process::{Child, Command};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tributary_proto::admin::v1 as admin;
use tributary_proto::contribution::v1 as contribution;

use crate::records::{self, Phase, ENTITY_TYPE};
use crate::PhaseResult;

/// How long the server may take to answer its health check after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A `tributary serve` child process on a free local port, with its own data directory.
pub struct Server {
    child: Child,
    pid: u32,
    addr: String,
    log: PathBuf,
    _data_dir: tempfile::TempDir,
}

impl Server {
    /// Spawns `bin serve` (on `database_url` when given, else SQLite in a temporary directory)
    /// and waits until its health check answers `SERVING`.
    pub async fn start(
        bin: &Path,
        database_url: Option<&str>,
        admin_token: &str,
    ) -> Result<Server> {
        let data_dir = tempfile::Builder::new()
            .prefix("tributary-bench-")
            .tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = data_dir.path().join("server.log");
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(&addr)
            .arg("--data-dir")
            .arg(data_dir.path().join("data"));
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        cmd.env("TRIBUTARY_ADMIN_TOKEN", admin_token)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the server exited at once"))?;
        let mut server = Server {
            child,
            pid,
            addr,
            log,
            _data_dir: data_dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited with {status} before it was ready; its log:\n{}",
                    self.log_tail()
                );
            }
            let last_error = match self.health().await {
                Ok(true) => return Ok(()),
                Ok(false) => "health check answered NOT_SERVING".to_string(),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "the server was not ready after {READY_TIMEOUT:?} ({last_error}); its log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the contribution service (or, if it is not registered by name, the server) serves.
    async fn health(&self) -> Result<bool> {
        let mut health = HealthClient::new(self.channel().await?);
        for service in ["tributary.contribution.v1.Contribution", ""] {
            let request = HealthCheckRequest {
                service: service.into(),
            };
            match health.check(request).await {
                Ok(r) => return Ok(r.into_inner().status == ServingStatus::Serving as i32),
                Err(s) if s.code() == Code::NotFound => continue,
                Err(s) => return Err(s.into()),
            }
        }
        Ok(false)
    }

    pub(crate) async fn channel(&self) -> Result<Channel> {
        Ok(Endpoint::from_shared(format!("http://{}", self.addr))?
            .tcp_nodelay(true)
            .connect()
            .await?)
    }

    /// The SQLite file of a server started without a database URL.
    pub(crate) fn sqlite_file(&self) -> PathBuf {
        self._data_dir.path().join("data").join("tributary.db")
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmHWM in /proc/{}/status", self.pid))
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Kills the server and waits for it; its log is kept at `$TRIBUTARY_BENCH_SERVER_LOG`
    /// when that is set (with `RUST_LOG`, to see where a server's time went).
    pub async fn stop(mut self) -> Result<()> {
        self.child.kill().await?;
        if let Some(keep) = std::env::var_os("TRIBUTARY_BENCH_SERVER_LOG") {
            std::fs::copy(&self.log, keep)?;
        }
        Ok(())
    }
}

/// User + system CPU time of process `pid` (or `self`) so far, all threads included.
pub(crate) fn cpu_time(pid: &str) -> Result<Duration> {
    // Clock ticks: USER_HZ is 100 on every Linux the project runs on.
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |n: usize| -> Result<f64> {
        Ok(fields
            .get(n - 3)
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    Ok(Duration::from_secs_f64(
        (ticks(14)? + ticks(15)?) / TICKS_PER_SECOND,
    ))
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub(crate) struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub(crate) fn new(token: &str) -> Result<Bearer> {
        Ok(Bearer(format!("Bearer {token}").parse()?))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub(crate) type AdminClient = admin::admin_client::AdminClient<InterceptedService<Channel, Bearer>>;

pub(crate) type ContributionClient =
    contribution::contribution_client::ContributionClient<InterceptedService<Channel, Bearer>>;

/// What the gRPC path measured.
pub struct Outcome {
    /// One result per phase.
    pub phases: Vec<PhaseResult>,
    /// `VmHWM` after each phase.
    pub peak_rss_kib: Vec<u64>,
    /// Issue 3's streaming and digest workloads, run after the three phases on the same server.
    pub sync: Result<crate::sync::Outcome>,
}

/// Creates the entity type and a connector, then runs the three phases through the server.
pub async fn run(
    server: &Server,
    admin_token: &str,
    records: usize,
    batch: usize,
    inflight: usize,
    window: usize,
) -> Result<Outcome> {
    let channel = server.channel().await?;
    let mut admin_client = admin::admin_client::AdminClient::with_interceptor(
        channel.clone(),
        Bearer::new(admin_token)?,
    );
    admin_client
        .create_entity_type(admin::CreateEntityTypeRequest {
            entity_type: Some(admin::EntityType {
                slug: ENTITY_TYPE.into(),
                name: "Country".into(),
                description: "Benchmark countries, shaped like seed 004".into(),
                schema: Some(to_struct(&records::schema())),
                ..Default::default()
            }),
        })
        .await
        .context("CreateEntityType")?;
    let created = admin_client
        .create_connector(admin::CreateConnectorRequest {
            connector: Some(admin::Connector {
                name: "bench".into(),
                entity_type: ENTITY_TYPE.into(),
                write_policy: admin::WritePolicy::Importer as i32,
                ..Default::default()
            }),
        })
        .await
        .context("CreateConnector")?
        .into_inner();
    let client = contribution::contribution_client::ContributionClient::with_interceptor(
        channel.clone(),
        Bearer::new(&created.token)?,
    );

    let mut outcome = Outcome {
        phases: Vec::new(),
        peak_rss_kib: Vec::new(),
        sync: Err(anyhow!("not run")),
    };
    for phase in Phase::ALL {
        let pid = server.pid.to_string();
        let (server_before, bench_before) = (cpu_time(&pid)?, cpu_time("self")?);
        let mut result = run_phase(&client, phase, records, batch, inflight)
            .await
            .with_context(|| format!("gRPC {}", phase.label()))?;
        result.cpu = Some((
            cpu_time(&pid)?.saturating_sub(server_before),
            cpu_time("self")?.saturating_sub(bench_before),
        ));
        outcome.phases.push(result);
        outcome.peak_rss_kib.push(server.peak_rss_kib()?);
    }
    let settings = crate::sync::Settings {
        records,
        batch,
        inflight,
        window,
    };
    outcome.sync = crate::sync::run(server, &mut admin_client, channel, &settings)
        .await
        .map_err(|e| e.context(format!("server log (last lines):\n{}", server.log_tail())));
    Ok(outcome)
}

async fn run_phase(
    client: &ContributionClient,
    phase: Phase,
    records: usize,
    batch: usize,
    inflight: usize,
) -> Result<PhaseResult> {
    let mode = match phase {
        Phase::FirstLoad | Phase::Unchanged => contribution::SessionMode::Accrue,
        Phase::Replace => contribution::SessionMode::Replace,
    };
    let batches = phase.batches(records, batch);
    let sent: usize = batches.iter().map(Vec::len).sum();
    let expected = match phase {
        Phase::FirstLoad => contribution::Outcome::Created,
        Phase::Unchanged | Phase::Replace => contribution::Outcome::Unchanged,
    };

    let start = Instant::now();
    let session_id = client
        .clone()
        .open_session(contribution::OpenSessionRequest { mode: mode as i32 })
        .await
        .context("OpenSession")?
        .into_inner()
        .session_id;
    // Batches hold disjoint ids, so their order inside the session does not matter; a few in
    // flight keep the server busy while the client builds the next batch.
    let upserts = futures::stream::iter(batches.into_iter().map(|indexes| {
        let mut client = client.clone();
        let session_id = session_id.clone();
        async move {
            let request = contribution::UpsertRequest {
                session_id,
                records: indexes.iter().map(|&i| record(i)).collect(),
            };
            let sent_at = Instant::now();
            client
                .upsert(request)
                .await
                .map(|response| (response, sent_at.elapsed()))
        }
    }))
    .buffer_unordered(inflight.max(1));
    let mut upserts = pin!(upserts);
    let mut as_expected = 0usize;
    let mut reported = 0usize;
    let (mut calls, mut latency_sum, mut latency_max) = (0u32, Duration::ZERO, Duration::ZERO);
    while let Some(response) = upserts.next().await {
        let (response, latency) = response.context("Upsert")?;
        let response = response.into_inner();
        calls += 1;
        latency_sum += latency;
        latency_max = latency_max.max(latency);
        reported += response.outcomes.len();
        as_expected += response
            .outcomes
            .iter()
            .filter(|o| o.outcome == expected as i32)
            .count();
    }
    let commit_start = Instant::now();
    let closed = client
        .clone()
        .close_session(contribution::CloseSessionRequest {
            session_id: session_id.clone(),
            commit: true,
            force: false,
        })
        .await
        .context("CloseSession(commit)")?
        .into_inner();
    let commit = commit_start.elapsed();
    let elapsed = start.elapsed();

    let mut warnings = Vec::new();
    if reported != sent || as_expected != sent {
        warnings.push(format!(
            "gRPC {}: {as_expected} of {reported} outcomes {expected:?}, {sent} records sent",
            phase.label()
        ));
    }
    let totals = closed.totals.unwrap_or_default();
    let (total, swept) = match phase {
        Phase::FirstLoad => (totals.created, 0),
        Phase::Unchanged | Phase::Replace => (totals.unchanged, records - sent),
    };
    if total != sent as u64 || totals.swept != swept as u64 {
        warnings.push(format!(
            "gRPC {}: commit totals {totals:?}, expected {sent} {expected:?} and {swept} swept",
            phase.label()
        ));
    }
    let mean = latency_sum.checked_div(calls).unwrap_or_default();
    Ok(
        PhaseResult::new(phase, sent, elapsed, Some(commit), warnings)
            .with_latency(mean, latency_max),
    )
}

pub(crate) fn record(i: usize) -> contribution::Record {
    contribution::Record {
        id: records::id(i),
        name: records::name(i),
        entity: Some(to_struct(&records::entity(i))),
        instance: None,
        checksum: String::new(),
    }
}

pub(crate) fn to_struct(value: &Value) -> prost_types::Struct {
    match value {
        Value::Object(map) => prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        },
        _ => prost_types::Struct::default(),
    }
}

fn to_value(value: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(_) => Kind::StructValue(to_struct(value)),
    };
    prost_types::Value { kind: Some(kind) }
}
