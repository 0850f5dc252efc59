//! `tributary export ...`: exports of the catalog to a directory or an S3 bucket (SPEC.md §7).

use clap::Subcommand;
use serde_json::{json, Value};
use tributary_client::pages::collect_all;
use tributary_client::pb::admin;

use super::connection::{with_token_hint, ServerArgs};
use super::output::{self, Column, OutputFormat};
use super::source_file::{duration, duration_text};
use super::usage;

/// Manage exports (admin token; see `tributary entity-type --help` for where it comes from).
///
/// An export writes an entity type's visible records, optionally filtered (the Catalog filter
/// language), as NDJSON, a JSON array or CSV, to `file:///dir` (under the server's
/// `export.allowed_dirs`) or `s3://bucket/prefix`; each run writes a new
/// `<prefix>/<name>-<UTC time>.<ext>`. With --interval or --cron it also runs by itself.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: ExportCommand,
}

/// What defines an export, as flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportDefinition {
    /// Names the files or objects written (letters, digits, '-', '_', '.').
    #[arg(long)]
    name: Option<String>,
    /// The entity type exported.
    #[arg(long)]
    entity_type: Option<String>,
    /// A Catalog filter (JSON text), e.g. '{"entity.population": {"$gt": 1000000}}'.
    #[arg(long)]
    filter: Option<String>,
    /// ndjson (default), json or csv.
    #[arg(long, value_enum)]
    format: Option<FormatName>,
    /// file:///dir or s3://bucket/prefix.
    #[arg(long)]
    destination: Option<String>,
    /// Run every so often, e.g. "1h" or "30m" (at least 1 minute).
    #[arg(long, conflicts_with = "cron")]
    interval: Option<String>,
    /// Run at the times of a cron expression (UTC), e.g. "15 3 * * *".
    #[arg(long)]
    cron: Option<String>,
    /// Remove the schedule (update): run only on `export run`.
    #[arg(long, conflicts_with_all = ["interval", "cron"])]
    no_schedule: bool,
    /// Enable or disable the schedule.
    #[arg(long)]
    enabled: Option<bool>,
}

/// Export formats by name.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatName {
    Ndjson,
    Json,
    Csv,
}

/// Export subcommands.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Create an export; one with --interval runs at once, one with --cron at its next time.
    Create {
        #[command(flatten)]
        definition: ExportDefinition,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Show an export.
    Get {
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// List exports.
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Change an export: the flags given replace those values, the rest stay.
    Update {
        id: String,
        #[command(flatten)]
        definition: ExportDefinition,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Delete an export and its run history; what it wrote stays.
    Delete { id: String },
    /// Run an export now and print the run: status, records, bytes, location (exit 1 if it failed).
    Run {
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// List an export's runs, newest first.
    Runs {
        id: String,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
}

const EXPORT_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("ENTITY TYPE", "/entity_type"),
    ("FORMAT", "/format"),
    ("DESTINATION", "/destination"),
    ("INTERVAL", "/interval"),
    ("CRON", "/cron"),
    ("ENABLED", "/enabled"),
];

const RUN_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("STATUS", "/status"),
    ("RECORDS", "/records"),
    ("BYTES", "/bytes"),
    ("STARTED", "/started_at"),
    ("LOCATION", "/location"),
    ("ERROR", "/error"),
];

fn format_name(format: admin::ExportFormat) -> &'static str {
    match format {
        admin::ExportFormat::Unspecified | admin::ExportFormat::Ndjson => "ndjson",
        admin::ExportFormat::Json => "json",
        admin::ExportFormat::Csv => "csv",
    }
}

fn export_json(e: &admin::Export) -> Value {
    let (interval, cron) = match &e.schedule {
        Some(admin::export::Schedule::Interval(d)) => (json!(duration_text(d)), Value::Null),
        Some(admin::export::Schedule::Cron(c)) => (Value::Null, json!(c)),
        None => (Value::Null, Value::Null),
    };
    json!({
        "id": e.id,
        "name": e.name,
        "entity_type": e.entity_type,
        "filter": e.filter,
        "format": format_name(e.format()),
        "destination": e.destination,
        "interval": interval,
        "cron": cron,
        "enabled": e.enabled.unwrap_or(true),
        "created_at": output::time(e.created_at.as_ref()),
        "updated_at": output::time(e.updated_at.as_ref()),
    })
}

fn run_json(r: &admin::ExportRun) -> Value {
    json!({
        "id": r.id,
        "export_id": r.export_id,
        "status": output::import_status_name(r.status()),
        "started_at": output::time(r.started_at.as_ref()),
        "ended_at": output::time(r.ended_at.as_ref()),
        "records": r.records,
        "bytes": r.bytes,
        "location": r.location,
        "error": r.error,
    })
}

/// `base` with the flags given in `d` applied.
fn apply(d: ExportDefinition, mut base: admin::Export) -> anyhow::Result<admin::Export> {
    if let Some(v) = d.name {
        base.name = v;
    }
    if let Some(v) = d.entity_type {
        base.entity_type = v;
    }
    if let Some(v) = d.filter {
        base.filter = v;
    }
    if let Some(f) = d.format {
        base.format = match f {
            FormatName::Ndjson => admin::ExportFormat::Ndjson,
            FormatName::Json => admin::ExportFormat::Json,
            FormatName::Csv => admin::ExportFormat::Csv,
        } as i32;
    }
    if let Some(v) = d.destination {
        base.destination = v;
    }
    if let Some(i) = d.interval {
        let d = duration(&Value::String(i)).map_err(|e| usage(format!("--interval: {e}")))?;
        base.schedule = Some(admin::export::Schedule::Interval(d));
    }
    if let Some(c) = d.cron {
        base.schedule = Some(admin::export::Schedule::Cron(c));
    }
    if d.no_schedule {
        base.schedule = None;
    }
    if d.enabled.is_some() {
        base.enabled = d.enabled;
    }
    Ok(base)
}

/// Runs an `export` subcommand.
pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let token = args.server.admin_token()?;
    let mut client = tributary_client::admin(args.server.connect().await?, &token.value);
    let hint = |e| with_token_hint(e, &token, "admin");
    match args.command {
        ExportCommand::Create { definition, output } => {
            let export = apply(definition, admin::Export::default())?;
            let created = client
                .create_export(admin::CreateExportRequest {
                    export: Some(export),
                })
                .await
                .map_err(hint)?
                .into_inner()
                .export
                .unwrap_or_default();
            output::print_one(output, &export_json(&created))
        }
        ExportCommand::Get { id, output } => {
            let found = client
                .get_export(admin::GetExportRequest { id })
                .await
                .map_err(hint)?
                .into_inner()
                .export
                .unwrap_or_default();
            output::print_one(output, &export_json(&found))
        }
        ExportCommand::List { output } => {
            let all = collect_all(|page_token| {
                let mut client = client.clone();
                async move {
                    let page = client
                        .list_exports(admin::ListExportsRequest {
                            page_size: 100,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.exports, page.next_page_token))
                }
            })
            .await
            .map_err(hint)?;
            let items: Vec<Value> = all.iter().map(export_json).collect();
            output::print_list(output, EXPORT_COLUMNS, &items)
        }
        ExportCommand::Update {
            id,
            definition,
            output,
        } => {
            let current = client
                .get_export(admin::GetExportRequest { id })
                .await
                .map_err(hint)?
                .into_inner()
                .export
                .unwrap_or_default();
            let updated = client
                .update_export(admin::UpdateExportRequest {
                    export: Some(apply(definition, current)?),
                })
                .await
                .map_err(hint)?
                .into_inner()
                .export
                .unwrap_or_default();
            output::print_one(output, &export_json(&updated))
        }
        ExportCommand::Delete { id } => {
            client
                .delete_export(admin::DeleteExportRequest { id: id.clone() })
                .await
                .map_err(hint)?;
            println!("Deleted export {id}");
            Ok(())
        }
        ExportCommand::Run { id, output } => {
            let run = client
                .run_export(admin::RunExportRequest { id })
                .await
                .map_err(hint)?
                .into_inner()
                .run
                .unwrap_or_default();
            output::print_one(output, &run_json(&run))?;
            if run.status() == admin::ImportStatus::Succeeded {
                Ok(())
            } else {
                Err(anyhow::anyhow!("the export run failed: {}", run.error))
            }
        }
        ExportCommand::Runs { id, limit, output } => {
            let mut items = Vec::new();
            let mut page_token = String::new();
            while items.len() < limit {
                let page = client
                    .list_export_runs(admin::ListExportRunsRequest {
                        export_id: id.clone(),
                        page_size: i32::try_from(limit.min(1000)).unwrap_or(1000),
                        page_token,
                    })
                    .await
                    .map_err(hint)?
                    .into_inner();
                items.extend(page.runs.iter().map(run_json));
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            items.truncate(limit);
            output::print_list(output, RUN_COLUMNS, &items)
        }
    }
}
