//! `tributary source ...`: pull sources the server's ingestion engine runs (SPEC.md §5).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;
use tributary_client::pages::collect_all;
use tributary_client::pb::admin;

use super::connection::{with_token_hint, ServerArgs};
use super::output::{self, OutputFormat};
use super::source_file;
use super::{input, usage};

/// Manage pull sources (admin token; see `tributary entity-type --help` for where it comes from).
///
/// A source is defined by a JSON file (the protobuf JSON form of the admin API's `Source`, field
/// names in snake_case), for example:
///
///   {
///     "connector": "CONNECTOR-ID",
///     "name": "countries API",
///     "kind": "http_json",
///     "config": {"url": "https://example.org/items", "items": "/data",
///                "headers": {"Authorization": "Bearer ..."},
///                "pagination": {"type": "page", "size_param": "per_page", "size": 100}},
///     "mapping": {"id": "/id", "name": "/name", "entity": {"code": "/code"}},
///     "interval": "3600s",
///     "enabled": true
///   }
///
/// Fields: connector (required on create; cannot change), name, kind (http_json | ndjson | feed
/// | grpc), config (the kind's settings), mapping (each of id, name, entity, instance, checksum
/// a JSON pointer, a "{/a} {/b}" template or an object of such), interval or cron (neither:
/// rest_length after each cycle), burst_length, burst_interval, rest_length, backoff (a list),
/// reject_removals_above_percent, reject_empty (default true), enabled (default true).
/// Durations are written "90s", "1.5s", "500ms", "5m", "2h" or "1d". The output of `source get
/// --output json` is a valid file (id and timestamps are ignored); header values come back as
/// "<redacted>" and URLs with their userinfo, query values and fragment as "REDACTED"; the
/// server keeps the stored value for a header or URL sent back as shown.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct SourceArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: SourceCommand,
}

/// Source subcommands.
#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Create a source from a JSON definition (see `tributary source --help`); an enabled source
    /// runs its first cycle at once.
    Create {
        /// The definition (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Show a source's definition (header values and URL secrets redacted).
    Get {
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// List sources.
    List {
        /// Only this connector's.
        #[arg(long)]
        connector: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Replace a source's definition with a JSON file (see `tributary source --help`); the
    /// connector may be left out. Headers and URLs sent back as shown (redacted) keep their stored
    /// value.
    Update {
        id: String,
        /// The new definition (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Delete a source and its runtime state; the records it imported stay in the catalog.
    Delete { id: String },
    /// Run a source now, outside its schedule; prints its status.
    Trigger {
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Cancel the cycle under way (reported as canceled); the next starts per the schedule.
    Cancel {
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Apply an event delta between cycles: records added or changed at the source (an NDJSON
    /// or CSV file, as for `contribute`) and ids removed there. Added records count as seen in
    /// the current cycle; the connector's write policy applies. The file is checked whole
    /// before anything is sent; each request of up to --batch records is applied atomically.
    PushDelta {
        id: String,
        /// Records added or changed (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        added: Option<PathBuf>,
        /// The added file's format (default: from its extension; NDJSON for stdin).
        #[arg(long, value_enum)]
        format: Option<input::InputFormat>,
        /// An external id removed at the source (repeatable).
        #[arg(long = "removed", value_name = "ID")]
        removed: Vec<String>,
        /// Records (added and removed) per request.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Show a source's runtime state: state (idle, running, resting, backoff), cursor, attempts,
    /// last error, last and next run, and the current cycle's marks and counts.
    Status {
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
}

/// Runs a `source` subcommand.
pub async fn run(args: SourceArgs) -> anyhow::Result<()> {
    // Read the definition before connecting: a bad file is a usage error, whatever the server.
    let definition = match &args.command {
        SourceCommand::Create { file, .. } | SourceCommand::Update { file, .. } => {
            Some(read_source(file)?)
        }
        _ => None,
    };
    let delta = match &args.command {
        SourceCommand::PushDelta {
            added,
            format,
            removed,
            batch,
            ..
        } => Some(read_delta(added.as_deref(), *format, removed, *batch)?),
        _ => None,
    };
    let token = args.server.admin_token()?;
    let mut client = tributary_client::admin(args.server.connect().await?, &token.value);
    let hint = |e| with_token_hint(e, &token, "admin");
    match args.command {
        SourceCommand::Create { output, .. } => {
            let source = definition.unwrap_or_default();
            if source.connector.is_empty() {
                return Err(usage("the source definition needs a \"connector\""));
            }
            let created = client
                .create_source(admin::CreateSourceRequest {
                    source: Some(source),
                })
                .await
                .map_err(hint)?
                .into_inner()
                .source
                .unwrap_or_default();
            show_changed("Created", &created, output)
        }
        SourceCommand::Get { id, output } => {
            let found = client
                .get_source(admin::GetSourceRequest { id })
                .await
                .map_err(hint)?
                .into_inner()
                .source
                .unwrap_or_default();
            output::print_one(output, &source_file::source_json(&found))
        }
        SourceCommand::List { connector, output } => {
            let connector = connector.unwrap_or_default();
            let all = collect_all(|page_token| {
                let mut client = client.clone();
                let connector = connector.clone();
                async move {
                    let page = client
                        .list_sources(admin::ListSourcesRequest {
                            connector,
                            page_size: 100,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.sources, page.next_page_token))
                }
            })
            .await
            .map_err(hint)?;
            let items: Vec<_> = all.iter().map(source_file::source_json).collect();
            output::print_list(output, output::SOURCE_COLUMNS, &items)
        }
        SourceCommand::Update { id, output, .. } => {
            let mut source = definition.unwrap_or_default();
            if source.connector.is_empty() {
                // The connector cannot change; the file may leave it out.
                source.connector = client
                    .get_source(admin::GetSourceRequest { id: id.clone() })
                    .await
                    .map_err(hint)?
                    .into_inner()
                    .source
                    .unwrap_or_default()
                    .connector;
            }
            source.id = id;
            let updated = client
                .update_source(admin::UpdateSourceRequest {
                    source: Some(source),
                })
                .await
                .map_err(hint)?
                .into_inner()
                .source
                .unwrap_or_default();
            show_changed("Updated", &updated, output)
        }
        SourceCommand::Delete { id } => {
            client
                .delete_source(admin::DeleteSourceRequest { id: id.clone() })
                .await
                .map_err(hint)?;
            println!("Deleted source {id}; its records stay in the catalog.");
            Ok(())
        }
        SourceCommand::Trigger { id, output } => {
            let status = client
                .trigger_source(admin::TriggerSourceRequest { id })
                .await
                .map_err(hint)?
                .into_inner()
                .status
                .unwrap_or_default();
            output::print_one(output, &output::source_status(&status))
        }
        SourceCommand::Cancel { id, output } => {
            let canceled = client
                .cancel_source(admin::CancelSourceRequest { id: id.clone() })
                .await
                .map_err(hint)?
                .into_inner()
                .import_result;
            match (canceled, output) {
                (Some(result), OutputFormat::Table) => {
                    println!(
                        "Canceled the cycle of source {id}; import result: {}",
                        result.id
                    );
                    Ok(())
                }
                (Some(result), format) => {
                    output::print_one(format, &output::import_result(&result))
                }
                (None, OutputFormat::Table) => {
                    println!("Source {id} had no cycle under way; nothing canceled.");
                    Ok(())
                }
                (None, format) => output::print_one(format, &Value::Null),
            }
        }
        SourceCommand::PushDelta { id, output, .. } => {
            let mut totals = admin::PushDeltaResponse::default();
            for request in delta.unwrap_or_default() {
                let applied = client
                    .push_delta(admin::PushDeltaRequest {
                        source_id: id.clone(),
                        ..request
                    })
                    .await
                    .map_err(hint)?
                    .into_inner();
                totals.created += applied.created;
                totals.updated += applied.updated;
                totals.unchanged += applied.unchanged;
                totals.skipped += applied.skipped;
                totals.deleted += applied.deleted;
            }
            match output {
                OutputFormat::Table => {
                    println!(
                        "Delta applied to source {id}: {} created, {} updated, {} unchanged, {} skipped, {} deleted.",
                        totals.created, totals.updated, totals.unchanged, totals.skipped, totals.deleted
                    );
                    Ok(())
                }
                format => output::print_one(
                    format,
                    &serde_json::json!({
                        "source_id": id,
                        "created": totals.created,
                        "updated": totals.updated,
                        "unchanged": totals.unchanged,
                        "skipped": totals.skipped,
                        "deleted": totals.deleted,
                    }),
                ),
            }
        }
        SourceCommand::Status { id, output } => {
            let status = client
                .get_source_status(admin::GetSourceStatusRequest { id })
                .await
                .map_err(hint)?
                .into_inner()
                .status
                .unwrap_or_default();
            output::print_one(output, &output::source_status(&status))
        }
    }
}

/// Prints a created or updated source: one line for people, the object for programs.
fn show_changed(verb: &str, s: &admin::Source, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Table => {
            println!(
                "{verb} source {} ({}) for connector {}.",
                s.id, s.name, s.connector
            );
            Ok(())
        }
        format => output::print_one(format, &source_file::source_json(s)),
    }
}

/// Reads a delta's added records (all of them: a delta is small, and a bad line must stop it
/// before anything is sent) and cuts it with the removed ids into requests of `batch` entries.
fn read_delta(
    added: Option<&Path>,
    format: Option<input::InputFormat>,
    removed: &[String],
    batch: usize,
) -> anyhow::Result<Vec<admin::PushDeltaRequest>> {
    if batch == 0 {
        return Err(usage("--batch must be positive"));
    }
    let mut records = Vec::new();
    if let Some(path) = added {
        let format = format.unwrap_or_else(|| input::InputFormat::from_path(path));
        let mut reader = input::RecordReader::open(path, format)?;
        let mut bad = Vec::new();
        while let Some(item) = reader
            .next_item()
            .with_context(|| format!("reading {}", input::input_name(path)))?
        {
            match item.record {
                Ok(r) => records.push(admin::DeltaRecord {
                    id: r.id,
                    name: r.name,
                    entity: r.entity,
                    instance: r.instance,
                    checksum: r.checksum,
                }),
                Err(e) => bad.push(format!("line {}: {e}", item.line)),
            }
        }
        if !bad.is_empty() {
            return Err(usage(format!(
                "{}: nothing sent; fix these lines:\n  {}",
                input::input_name(path),
                bad.join("\n  ")
            )));
        }
    }
    if records.is_empty() && removed.is_empty() {
        return Err(usage(
            "nothing to push: give --added FILE and/or --removed ID",
        ));
    }
    let mut requests = Vec::new();
    let mut removed = removed.iter().cloned().peekable();
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() || removed.peek().is_some() {
        let added: Vec<_> = records.by_ref().take(batch).collect();
        let room = batch - added.len();
        requests.push(admin::PushDeltaRequest {
            source_id: String::new(),
            added,
            removed: removed.by_ref().take(room).collect(),
        });
    }
    Ok(requests)
}

/// Reads a source definition file (`-` for stdin).
fn read_source(path: &Path) -> anyhow::Result<admin::Source> {
    let text = input::read_small(path).context("reading the source definition")?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| usage(format!("{}: not JSON: {e}", path.display())))?;
    source_file::parse_source(value).map_err(|e| usage(format!("{}: {e}", path.display())))
}
