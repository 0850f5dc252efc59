//! The real `tributary serve` as a child process on a free local port, what it costs (CPU time,
//! peak RSS), and the clients the workloads drive it with.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::{Child, Command};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tributary_client::BearerAuth;
use tributary_proto::admin::v1 as admin;
use tributary_proto::contribution::v1 as contribution;

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
        Self::start_with_env(bin, database_url, admin_token, &[]).await
    }

    /// [`Server::start`] with extra environment variables (settings) for the server.
    pub async fn start_with_env(
        bin: &Path,
        database_url: Option<&str>,
        admin_token: &str,
        env: &[(&str, String)],
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
        // A commit of 1,000,000 records may take longer than the default 60 s to answer on a
        // slow machine; the bench measures it instead of abandoning the wait.
        cmd.env("TRIBUTARY_GRPC__REQUEST_TIMEOUT_SECS", "3600");
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
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

    /// The server's data directory (where `file://` exports may be written by default).
    pub(crate) fn data_dir(&self) -> PathBuf {
        self._data_dir.path().join("data")
    }

    /// Resets the server's `VmHWM` to its current RSS (Linux `clear_refs` 5), so the next
    /// [`Server::peak_rss_kib`] is the peak since now.
    pub(crate) fn reset_peak_rss(&self) -> Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5")
            .with_context(|| format!("resetting the peak RSS of process {}", self.pid))
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

/// An Admin client with the bench's admin token.
pub(crate) type AdminClient =
    admin::admin_client::AdminClient<InterceptedService<Channel, BearerAuth>>;

/// A Contribution client with a connector's token.
pub(crate) type ContributionClient =
    contribution::contribution_client::ContributionClient<InterceptedService<Channel, BearerAuth>>;
