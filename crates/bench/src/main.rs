//! `tributary-bench`: runs one workload (100,000 country records in batches of 1,000: first load,
//! unchanged re-send, replace with 10 % removed) both as raw SQL and end to end through a real
//! `tributary serve`, on SQLite and PostgreSQL, and prints records/s, the gRPC / raw SQL ratio,
//! commit times and the server's peak RSS as Markdown tables. Then issue 3's workloads: first
//! loads through unary `Upsert` calls vs the `Contribute` stream, each by a fresh server into an
//! empty database, and on the phases' server an unchanged re-send in full vs as digests only
//! (`Diff`), with records/s and bytes sent.
//! `--catalog` runs issue 4's catalog workload instead, `--ingest` issue 5's pull sources,
//! `--export` issue 14's exports.

mod catalog;
mod export;
mod grpc;
mod ingest;
mod raw;
mod reconcile;
mod records;
mod server;
mod sync;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use clap::{Parser, ValueEnum};

use crate::records::Phase;

/// Runs the same workload as raw SQL and through gRPC, on each backend, and prints the rates.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Which backend(s) to measure.
    #[arg(long, value_enum, default_value = "both")]
    backend: BackendArg,
    /// Records in the workload.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Records per Upsert call / per SQL transaction.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Upsert calls in flight at once on the gRPC path (1 = strictly sequential).
    #[arg(long, default_value_t = 2)]
    inflight: usize,
    /// Unacknowledged batches in flight on the `Contribute` stream (the client's default: 8).
    #[arg(long, default_value_t = tributary_client::stream::DEFAULT_WINDOW)]
    window: usize,
    /// A PostgreSQL server URL; fresh `tributary_bench_*` databases are created on it and dropped.
    #[arg(
        long,
        env = "TRIBUTARY_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    /// The `tributary` binary to spawn (default: the one next to this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Run issue 4's catalog workload instead: ListRecords pages/s with a selective entity
    /// filter over `--catalog-records` records, and Watch latency from commit to event.
    #[arg(long)]
    catalog: bool,
    /// Records loaded for the catalog workload.
    #[arg(long, default_value_t = 1_000_000)]
    catalog_records: usize,
    /// Run issue 5's pull-ingestion workload instead: an `http_json` source served locally,
    /// imported and then re-imported unchanged, once per size in `--source-items`, each by a
    /// fresh server process whose peak RSS is reported.
    #[arg(long)]
    ingest: bool,
    /// Source sizes (items) for the ingestion workload.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    source_items: Vec<usize>,
    /// Run issue 14's export workload instead: records loaded, then exported as NDJSON to a
    /// directory and to a local S3 server, once per size in `--export-records`, each by a fresh
    /// server process whose peak RSS during the export is reported.
    #[arg(long)]
    export: bool,
    /// Catalog sizes (records) for the export workload.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    export_records: Vec<usize>,
    /// Run issue 16's range-based sync workload instead: records loaded, then reconciled with 0,
    /// 1, 1,000 and 100,000 changed and diffed record by record for comparison, once per size
    /// in `--reconcile-records`, each by a fresh server process.
    #[arg(long)]
    reconcile: bool,
    /// Catalog sizes (records) for the range-based sync workload.
    #[arg(long, value_delimiter = ',', default_value = "1000000")]
    reconcile_records: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// What one phase measured on one path.
pub struct PhaseResult {
    phase: Phase,
    records: usize,
    elapsed: Duration,
    commit: Option<Duration>,
    /// Mean and slowest Upsert call (gRPC only).
    latency: Option<(Duration, Duration)>,
    /// CPU time the server and the bench process spent in the phase (gRPC only).
    cpu: Option<(Duration, Duration)>,
    warnings: Vec<String>,
}

impl PhaseResult {
    /// A phase that sent `records` records in `elapsed` (commit included).
    pub fn new(
        phase: Phase,
        records: usize,
        elapsed: Duration,
        commit: Option<Duration>,
        warnings: Vec<String>,
    ) -> PhaseResult {
        PhaseResult {
            phase,
            records,
            elapsed,
            commit,
            latency: None,
            cpu: None,
            warnings,
        }
    }

    /// Records the mean and slowest call of the phase.
    pub fn with_latency(mut self, mean: Duration, max: Duration) -> PhaseResult {
        self.latency = Some((mean, max));
        self
    }

    fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every requested backend; `Ok(false)` when a path failed (its error is in the report).
async fn run(args: Args) -> Result<bool> {
    ensure!(
        args.records > 0 && args.batch > 0,
        "--records and --batch must be positive"
    );
    let server_bin = match &args.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary has no directory")?
            .join("tributary"),
    };
    ensure!(
        server_bin.is_file(),
        "no server binary at {} (build it with `cargo build --release -p tributary`, or pass --server-bin)",
        server_bin.display()
    );
    let backends: &[Backend] = match args.backend {
        BackendArg::Sqlite => &[Backend::Sqlite],
        BackendArg::Postgres => &[Backend::Postgres],
        BackendArg::Both => &[Backend::Sqlite, Backend::Postgres],
    };

    let machine = format!(
        "{} CPU(s), {} RAM; server {}; {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        mem_total(),
        server_bin.display(),
        provenance()
    );
    if args.reconcile {
        let sizes: Vec<String> = args
            .reconcile_records
            .iter()
            .map(|&n| thousands(n as f64))
            .collect();
        println!(
            "tributary-bench --reconcile: catalogs of {} records; {machine}\n",
            sizes.join(" and ")
        );
    } else if args.export {
        let sizes: Vec<String> = args
            .export_records
            .iter()
            .map(|&n| thousands(n as f64))
            .collect();
        println!(
            "tributary-bench --export: catalogs of {} records; {machine}\n",
            sizes.join(" and ")
        );
    } else if args.ingest {
        let sizes: Vec<String> = args
            .source_items
            .iter()
            .map(|&n| thousands(n as f64))
            .collect();
        println!(
            "tributary-bench --ingest: sources of {} items; {machine}\n",
            sizes.join(" and ")
        );
    } else {
        println!(
            "tributary-bench: {} records, batches of {}, {} gRPC Upsert call(s) in flight; {machine}\n",
            thousands(args.records as f64),
            thousands(args.batch as f64),
            args.inflight.max(1),
        );
    }
    let mut ok = true;
    if args.reconcile {
        for &backend in backends {
            let mut outcomes = Vec::new();
            for &records in &args.reconcile_records {
                let outcome = run_reconcile(backend, &args, &server_bin, records).await;
                ok &= outcome.is_ok();
                outcomes.push((records, outcome));
            }
            println!("{}", reconcile_report(backend, &outcomes));
        }
        return Ok(ok);
    }
    if args.export {
        for &backend in backends {
            let mut outcomes = Vec::new();
            for &records in &args.export_records {
                let outcome = run_export(backend, &args, &server_bin, records).await;
                ok &= outcome.is_ok();
                outcomes.push((records, outcome));
            }
            println!("{}", export_report(backend, &outcomes));
        }
        return Ok(ok);
    }
    if args.ingest {
        for &backend in backends {
            let mut outcomes = Vec::new();
            for &items in &args.source_items {
                let outcome = run_ingest(backend, &args, &server_bin, items).await;
                ok &= outcome.is_ok();
                outcomes.push((items, outcome));
            }
            println!("{}", ingest_report(backend, &outcomes));
        }
        return Ok(ok);
    }
    if args.catalog {
        for &backend in backends {
            let outcome = run_catalog(backend, &args, &server_bin).await;
            ok &= outcome.is_ok();
            println!("{}", catalog_report(backend, &outcome));
        }
        return Ok(ok);
    }
    for &backend in backends {
        let raw = run_raw(backend, &args).await;
        let grpc = run_grpc(backend, &args, &server_bin).await;
        ok &= raw.is_ok() && grpc.as_ref().is_ok_and(|g| g.sync.is_ok());
        println!("{}", report(backend, &args, &raw, &grpc));
    }
    Ok(ok)
}

async fn run_raw(backend: Backend, args: &Args) -> Result<Vec<PhaseResult>> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::Builder::new()
                .prefix("tributary-bench-raw-")
                .tempdir()?;
            raw::sqlite(&dir.path().join("raw.db"), args.records, args.batch).await
        }
        Backend::Postgres => {
            let name = format!("tributary_bench_raw_{}", uuid::Uuid::new_v4().simple());
            let url = raw::create_database(&args.database_url, &name).await?;
            let result = raw::postgres(&url, args.records, args.batch).await;
            if let Err(e) = raw::drop_database(&args.database_url, &name).await {
                eprintln!("warning: could not drop database {name}: {e:#}");
            }
            result
        }
    }
}

/// Runs `workload` with a fresh database for `backend` (a new PostgreSQL database, dropped after;
/// `None` for SQLite, whose servers make their own files) and a fresh admin token.
async fn with_database<T>(
    backend: Backend,
    args: &Args,
    workload: impl AsyncFnOnce(Option<&str>, &str) -> Result<T>,
) -> Result<T> {
    let admin_token = uuid::Uuid::new_v4().simple().to_string();
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let name = format!("tributary_bench_{}", uuid::Uuid::new_v4().simple());
            let url = raw::create_database(&args.database_url, &name).await?;
            Some((name, url))
        }
    };
    let result = workload(database.as_ref().map(|(_, url)| url.as_str()), &admin_token).await;
    if let Some((name, _)) = database {
        if let Err(e) = raw::drop_database(&args.database_url, &name).await {
            eprintln!("warning: could not drop database {name}: {e:#}");
        }
    }
    result
}

/// Adds the server's last log lines to a failed workload's error.
fn with_log<T>(result: Result<T>, server: &server::Server) -> Result<T> {
    result.map_err(|e| e.context(format!("server log (last lines):\n{}", server.log_tail())))
}

async fn run_grpc(
    backend: Backend,
    args: &Args,
    server_bin: &std::path::Path,
) -> Result<grpc::Outcome> {
    let mut outcome = with_database(backend, args, async |url, admin_token| {
        let server = server::Server::start(server_bin, url, admin_token).await?;
        let outcome = grpc::run(
            &server,
            admin_token,
            args.records,
            args.batch,
            args.inflight,
            args.window.max(1),
        )
        .await;
        let outcome = with_log(outcome, &server);
        server.stop().await?;
        outcome
    })
    .await?;
    if let Ok(sync) = &mut outcome.sync {
        match fresh_loads(backend, args, server_bin).await {
            Ok((rows, warnings)) => {
                sync.rows.splice(0..0, rows);
                sync.warnings.extend(warnings);
            }
            Err(e) => outcome.sync = Err(e),
        }
    }
    Ok(outcome)
}

/// Issue 3's first loads, unary and stream, in the order unary, stream, stream, unary, each by a
/// fresh server into a fresh database (see `sync`'s module comment for why).
async fn fresh_loads(
    backend: Backend,
    args: &Args,
    server_bin: &std::path::Path,
) -> Result<(Vec<sync::Row>, Vec<String>)> {
    use sync::Workload::{LoadStream, LoadUnary};
    let settings = sync::Settings {
        records: args.records,
        batch: args.batch,
        inflight: args.inflight,
        window: args.window.max(1),
    };
    let (mut rows, mut warnings) = (Vec::new(), Vec::new());
    for workload in [LoadUnary, LoadStream, LoadStream, LoadUnary] {
        let (row, seen) = with_database(backend, args, async |url, admin_token| {
            let server = server::Server::start(server_bin, url, admin_token).await?;
            let loaded = sync::fresh_load(&server, admin_token, workload, &settings).await;
            let loaded = with_log(loaded, &server);
            server.stop().await?;
            loaded
        })
        .await?;
        rows.push(row);
        warnings.extend(seen);
    }
    Ok((rows, warnings))
}

async fn run_catalog(
    backend: Backend,
    args: &Args,
    server_bin: &std::path::Path,
) -> Result<catalog::Outcome> {
    with_database(backend, args, async |url, admin_token| {
        let server = server::Server::start(server_bin, url, admin_token).await?;
        // PostgreSQL: the watcher uses a second process, woken by NOTIFY.
        let watcher = match url {
            Some(url) => Some(server::Server::start(server_bin, Some(url), admin_token).await?),
            None => None,
        };
        let outcome = catalog::run(
            &server,
            watcher.as_ref(),
            admin_token,
            args.catalog_records,
            args.batch,
            url,
        )
        .await;
        let outcome = with_log(outcome, &server);
        server.stop().await?;
        if let Some(watcher) = watcher {
            watcher.stop().await?;
        }
        outcome
    })
    .await
}

async fn run_ingest(
    backend: Backend,
    args: &Args,
    server_bin: &std::path::Path,
    items: usize,
) -> Result<ingest::Outcome> {
    with_database(backend, args, async |url, admin_token| {
        let server = server::Server::start(server_bin, url, admin_token).await?;
        let outcome = with_log(ingest::run(&server, admin_token, items).await, &server);
        server.stop().await?;
        outcome
    })
    .await
}

fn ingest_report(backend: Backend, outcomes: &[(usize, Result<ingest::Outcome>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {} — pull ingestion: `http_json` source on 127.0.0.1, offset pages of {}, one burst per cycle\n",
        backend.label(),
        thousands(ingest::PAGE as f64)
    );
    out.push_str("| source items | cycle | wall s | items/s | created / unchanged | server CPU s | source CPU s | server peak RSS MiB |\n");
    out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|\n");
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    let mut failures = String::new();
    for (items, outcome) in outcomes {
        let o = match outcome {
            Ok(o) => o,
            Err(e) => {
                let _ = writeln!(
                    out,
                    "| {} | failed | — | — | — | — | — | — |",
                    thousands(*items as f64)
                );
                let _ = writeln!(failures, "{} items: {e:#}", thousands(*items as f64));
                continue;
            }
        };
        for (label, c) in [("first", &o.first), ("unchanged re-import", &o.unchanged)] {
            let _ = writeln!(
                out,
                "| {} | {label} | {:.2} | {} | {} / {} | {:.2} | {:.2} | {} (idle {}) |",
                thousands(o.items as f64),
                c.elapsed.as_secs_f64(),
                thousands(c.rate(o.items)),
                thousands(c.result.created as f64),
                thousands(c.result.unchanged as f64),
                c.server_cpu.as_secs_f64(),
                c.bench_cpu.as_secs_f64(),
                mib(c.peak_rss_kib),
                mib(o.idle_rss_kib),
            );
        }
    }
    out.push('\n');
    out.push_str(&failures);
    out
}

async fn run_export(
    backend: Backend,
    args: &Args,
    server_bin: &std::path::Path,
    records: usize,
) -> Result<export::Outcome> {
    let s3 = export::S3Server::start().await?;
    with_database(backend, args, async |url, admin_token| {
        let server =
            server::Server::start_with_env(server_bin, url, admin_token, &s3.server_env()).await?;
        let outcome = export::run(
            &server,
            admin_token,
            records,
            args.batch,
            args.window.max(1),
        )
        .await;
        let outcome = with_log(outcome, &server);
        server.stop().await?;
        outcome
    })
    .await
}

async fn run_reconcile(
    backend: Backend,
    args: &Args,
    server_bin: &std::path::Path,
    records: usize,
) -> Result<reconcile::Outcome> {
    with_database(backend, args, async |url, admin_token| {
        let server = server::Server::start(server_bin, url, admin_token).await?;
        let outcome = reconcile::run(
            &server,
            url,
            admin_token,
            records,
            args.batch,
            args.window.max(1),
        )
        .await;
        let outcome = with_log(outcome, &server);
        server.stop().await?;
        outcome
    })
    .await
}

fn reconcile_report(backend: Backend, outcomes: &[(usize, Result<reconcile::Outcome>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {} — range-based sync: one server process per size, each sync in its own session\n",
        backend.label()
    );
    out.push_str("| records | sync | rounds | calls | KiB sent | KiB received | bytes/record both ways | wall s | server CPU s | server peak RSS MiB |\n");
    out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut notes = String::new();
    for (records, outcome) in outcomes {
        let o = match outcome {
            Ok(o) => o,
            Err(e) => {
                let _ = writeln!(
                    out,
                    "| {} | failed | — | — | — | — | — | — | — | — |",
                    thousands(*records as f64)
                );
                let _ = writeln!(notes, "{} records: {e:#}", thousands(*records as f64));
                continue;
            }
        };
        for s in &o.syncs {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1} | {:.1} | {:.3} | {:.2} | {:.2} | {:.1} |",
                thousands(o.records as f64),
                s.label,
                s.rounds,
                s.calls,
                s.sent as f64 / 1024.0,
                s.received as f64 / 1024.0,
                (s.sent + s.received) as f64 / o.records.max(1) as f64,
                s.elapsed.as_secs_f64(),
                s.server_cpu.as_secs_f64(),
                s.peak_rss_kib as f64 / 1024.0,
            );
        }
        let _ = writeln!(
            notes,
            "{} records loaded in {:.1} s; the client's set built (hashed and sorted) in {:.2} s",
            thousands(o.records as f64),
            o.load.as_secs_f64(),
            o.client_set.as_secs_f64(),
        );
    }
    out.push('\n');
    out.push_str(&notes);
    out
}

fn export_report(backend: Backend, outcomes: &[(usize, Result<export::Outcome>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {} — exports: NDJSON by `RunExport`, one server process per size\n",
        backend.label()
    );
    out.push_str("| records | destination | wall s | records/s | MiB written | server CPU s | server peak RSS during the run MiB |\n");
    out.push_str("|---:|---|---:|---:|---:|---:|---:|\n");
    let mib = |n: f64| format!("{:.1}", n / (1024.0 * 1024.0));
    let mut notes = String::new();
    for (records, outcome) in outcomes {
        let o = match outcome {
            Ok(o) => o,
            Err(e) => {
                let _ = writeln!(
                    out,
                    "| {} | failed | — | — | — | — | — |",
                    thousands(*records as f64)
                );
                let _ = writeln!(notes, "{} records: {e:#}", thousands(*records as f64));
                continue;
            }
        };
        for run in &o.runs {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {} | {} | {:.2} | {} |",
                thousands(o.records as f64),
                run.destination,
                run.elapsed.as_secs_f64(),
                thousands(run.rate(o.records)),
                mib(run.bytes as f64),
                run.server_cpu.as_secs_f64(),
                mib(run.peak_rss_kib as f64 * 1024.0),
            );
        }
        let _ = writeln!(
            notes,
            "{} records loaded in {:.1} s (peak RSS {} MiB while loading){}",
            thousands(o.records as f64),
            o.load.as_secs_f64(),
            mib(o.load_rss_kib as f64 * 1024.0),
            o.reset_failed
                .as_ref()
                .map(|e| format!("; the peak could not be reset, so it includes the load: {e}"))
                .unwrap_or_default()
        );
    }
    out.push('\n');
    out.push_str(&notes);
    out
}

fn catalog_report(backend: Backend, outcome: &Result<catalog::Outcome>) -> String {
    let mut out = String::new();
    let o = match outcome {
        Ok(o) => o,
        Err(e) => {
            return format!(
                "### {} — catalog workload failed\n\n{e:#}\n",
                backend.label()
            )
        }
    };
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let _ = writeln!(
        out,
        "### {} — catalog, {} records (loaded in {:.0} s, {} rec/s)\n",
        backend.label(),
        thousands(o.records as f64),
        o.load.as_secs_f64(),
        thousands(o.records as f64 / o.load.as_secs_f64().max(1e-9)),
    );
    out.push_str("| workload | figure |\n|---|---:|\n");
    let _ = writeln!(
        out,
        "| ListRecords `{}` ({} matches), pages of 100 | {:.0} pages/s ({} ms/page) |",
        catalog::FILTER,
        thousands(o.matching as f64),
        o.pages as f64 / o.listing.as_secs_f64().max(1e-9),
        ms(o.listing / (o.pages.max(1) as u32)),
    );
    let _ = writeln!(
        out,
        "| ListRecords unfiltered, key order, pages of 1,000 | {:.0} pages/s ({} records/s) |",
        o.full_pages as f64 / o.full.as_secs_f64().max(1e-9),
        thousands(o.records as f64 / o.full.as_secs_f64().max(1e-9)),
    );
    let _ = writeln!(
        out,
        "| Watch: Upsert call start → event, p50 / p99 ({} commits) | {} / {} ms |",
        o.event.len(),
        ms(catalog::quantile(&o.event, 0.5)),
        ms(catalog::quantile(&o.event, 0.99)),
    );
    let _ = writeln!(
        out,
        "| (the Upsert round trip alone, p50 / p99) | {} / {} ms |",
        ms(catalog::quantile(&o.upsert, 0.5)),
        ms(catalog::quantile(&o.upsert, 0.99)),
    );
    out
}

/// The Markdown report of one backend.
fn report(
    backend: Backend,
    args: &Args,
    raw: &Result<Vec<PhaseResult>>,
    grpc: &Result<grpc::Outcome>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {} — {} records, batches of {}\n",
        backend.label(),
        thousands(args.records as f64),
        thousands(args.batch as f64)
    );
    out.push_str("| workload | records sent | raw SQL rec/s | gRPC rec/s | gRPC / raw | gRPC commit s | raw SQL sweep s |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for phase in Phase::ALL {
        let raw_phase = raw.iter().flatten().find(|p| p.phase == phase);
        let grpc_phase = grpc
            .iter()
            .flat_map(|g| &g.phases)
            .find(|p| p.phase == phase);
        let sent = raw_phase.or(grpc_phase).map_or(0, |p| p.records);
        let raw_rate = raw_phase.map(PhaseResult::rate);
        let grpc_rate = grpc_phase.map(PhaseResult::rate);
        let ratio = match (raw_rate, grpc_rate) {
            (Some(r), Some(g)) => format!("{:.0} %", 100.0 * g / r),
            _ => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            phase.label(),
            thousands(sent as f64),
            raw_rate.map_or("failed".into(), thousands),
            grpc_rate.map_or("failed".into(), thousands),
            ratio,
            grpc_phase
                .and_then(|p| p.commit)
                .map_or("—".into(), |d| format!("{:.2}", d.as_secs_f64())),
            raw_phase
                .and_then(|p| p.commit)
                .map_or("—".into(), |d| format!("{:.2}", d.as_secs_f64())),
        );
    }
    out.push('\n');
    if let Ok(g) = grpc {
        out.push_str("| gRPC workload | wall s | commit s | Upsert call ms, mean / max | server CPU s | bench CPU s |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|\n");
        let secs =
            |d: Option<Duration>| d.map_or("—".into(), |d| format!("{:.2}", d.as_secs_f64()));
        for p in &g.phases {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                p.phase.label(),
                secs(Some(p.elapsed)),
                secs(p.commit),
                p.latency.map_or("—".into(), |(mean, max)| format!(
                    "{:.0} / {:.0}",
                    mean.as_secs_f64() * 1e3,
                    max.as_secs_f64() * 1e3
                )),
                secs(p.cpu.map(|c| c.0)),
                secs(p.cpu.map(|c| c.1)),
            );
        }
        out.push('\n');
        let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
        let after: Vec<String> = Phase::ALL
            .iter()
            .zip(&g.peak_rss_kib)
            .map(|(p, &kib)| format!("{} {}", short(*p), mib(kib)))
            .collect();
        let _ = writeln!(
            out,
            "Server peak RSS (VmHWM): **{} MiB** (after {} MiB)\n",
            g.peak_rss_kib.last().map_or("?".into(), |&k| mib(k)),
            after.join(", after ")
        );
    }
    if let Ok(g) = grpc {
        out.push_str(&sync_report(backend, args, &g.sync));
    }
    let warnings = raw
        .iter()
        .flatten()
        .chain(grpc.iter().flat_map(|g| &g.phases))
        .flat_map(|p| &p.warnings);
    for w in warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if let Err(e) = raw {
        let _ = writeln!(out, "raw SQL path failed: {e:#}");
    }
    if let Err(e) = grpc {
        let _ = writeln!(out, "gRPC path failed: {e:#}");
    }
    out
}

/// The Markdown table of issue 3's workloads, and the two ratios against the targets.
fn sync_report(backend: Backend, args: &Args, sync: &Result<sync::Outcome>) -> String {
    use sync::Workload;
    let mut out = String::new();
    let s = match sync {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(out, "streaming and digests failed: {e:#}\n");
            return out;
        }
    };
    let _ = writeln!(
        out,
        "#### {} — streaming and digests: {} records, batches of {}, {} unary call(s) in flight, stream window {}\n",
        backend.label(),
        thousands(args.records as f64),
        thousands(args.batch as f64),
        s.inflight,
        s.window
    );
    out.push_str("| workload | session | records | requests | wall s | rec/s | bytes sent | bytes / record | batch round trip ms, mean / max | server CPU s | bench CPU s |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &s.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} | {} | {} | {:.1} | {} | {:.2} | {:.2} |",
            r.workload.label(),
            r.workload.session(),
            thousands(r.records as f64),
            thousands(r.requests as f64),
            r.elapsed.as_secs_f64(),
            thousands(r.rate()),
            thousands(r.bytes as f64),
            r.bytes_per_record(),
            r.latency
                .mean_max()
                .map_or("—".into(), |(mean, max)| format!(
                    "{:.0} / {:.0}",
                    mean.as_secs_f64() * 1e3,
                    max.as_secs_f64() * 1e3
                )),
            r.server_cpu.as_secs_f64(),
            r.bench_cpu.as_secs_f64(),
        );
    }
    out.push('\n');
    let ratio = |a: Workload, b: Workload| -> Option<(f64, f64)> {
        let ((a_rate, a_bytes), (b_rate, b_bytes)) = (s.totals(a)?, s.totals(b)?);
        Some((a_rate / b_rate, a_bytes as f64 / b_bytes.max(1) as f64))
    };
    let mut line = |label: &str, a: Workload, b: Workload, target: f64| {
        if let Some((rate, bytes)) = ratio(a, b) {
            let verdict = if rate >= target { "met" } else { "MISSED" };
            let _ = writeln!(
                out,
                "- {label}: **{rate:.2}×** records/s (target ≥ {target}×: {verdict}), {bytes:.3}× bytes sent"
            );
        }
    };
    line(
        "stream / unary, first load (both runs of each, each into an empty database)",
        Workload::LoadStream,
        Workload::LoadUnary,
        1.0,
    );
    line(
        "digests (unary `Diff`) / full, unchanged",
        Workload::DigestUnary,
        Workload::FullResend,
        3.0,
    );
    line(
        "digests (stream `diff`) / full, unchanged",
        Workload::DigestStream,
        Workload::FullResend,
        3.0,
    );
    out.push('\n');
    for w in &s.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

fn short(phase: Phase) -> &'static str {
    match phase {
        Phase::FirstLoad => "first load",
        Phase::Unchanged => "re-send",
        Phase::Replace => "replace",
    }
}

/// `12345.6` as `12,346`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (n, c) in digits.chars().enumerate() {
        if n > 0 && (digits.len() - n) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Which code was measured, and when: `commit <short hash>, <UTC date>`, for the current
/// tables of docs/BENCHMARKS.md (the commit is the checkout the bench runs in, if any).
fn provenance() -> String {
    let output = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into())
    };
    format!(
        "commit {}, {}",
        output("git", &["rev-parse", "--short", "HEAD"]),
        output("date", &["-u", "+%Y-%m-%d"])
    )
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("? GiB".into(), |kib| {
            format!("{:.0} GiB", kib as f64 / 1_048_576.0)
        })
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(64_700.0), "64,700");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
