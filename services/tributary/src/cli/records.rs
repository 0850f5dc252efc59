//! `tributary records ...`: reading the catalog as a consumer (SPEC.md §3).

use std::io::Write;

use clap::Subcommand;
use serde_json::json;
use tributary_client::pages::RecordPages;
use tributary_client::pb::catalog;

use super::connection::{with_token_hint, ServerArgs};
use super::output::{self, OutputFormat};
use super::usage;

/// Read records (consumer token: --token, else TRIBUTARY_TOKEN; none for a public catalog).
#[derive(Debug, clap::Args)]
pub struct RecordsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: RecordsCommand,
}

/// Records subcommands.
#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// List the visible records of an entity type, page by page.
    ///
    /// --filter takes the JSON filter language of the Catalog, e.g.
    /// '{"entity.population": {"$gt": 1000000}, "name": {"$regex": "^U"}}';
    /// --order-by takes e.g. "entity.population desc, id".
    List {
        #[arg(long)]
        entity_type: String,
        /// A JSON filter object.
        #[arg(long)]
        filter: Option<String>,
        /// Order (AIP-132), ties broken by key.
        #[arg(long)]
        order_by: Option<String>,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<usize>,
        /// Records per request (at most 1,000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i32).range(1..=1000))]
        page_size: i32,
        /// `table` and `json` print when the listing is complete; `ndjson` prints page by page.
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Show one record: by KEY, or by --entity-type, --connector and --id.
    Get {
        /// The record's 40-hex key.
        #[arg(required_unless_present = "id", conflicts_with_all = ["entity_type", "connector", "id"])]
        key: Option<String>,
        #[arg(long, requires_all = ["connector", "id"])]
        entity_type: Option<String>,
        #[arg(long, requires_all = ["entity_type", "id"])]
        connector: Option<String>,
        /// The external id (the connector's own key).
        #[arg(long, requires_all = ["entity_type", "connector"])]
        id: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Print change events of an entity type as they happen (until Ctrl-C or --count).
    ///
    /// Each event is `{"sequence", "upserted": record}` or `{"sequence", "deleted_key"}`.
    /// Without --after it starts from now (the sequence of a listing's snapshot).
    Watch {
        #[arg(long)]
        entity_type: String,
        /// Only events after this sequence (0: everything the change log still holds).
        #[arg(long)]
        after: Option<u64>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// `ndjson` (default) or `json` print one object per event; `table` one line per event.
        #[arg(long, value_enum, default_value = "ndjson")]
        output: OutputFormat,
    },
}

/// Runs a `records` subcommand.
pub async fn run(args: RecordsArgs) -> anyhow::Result<()> {
    let token = args.server.token("consumer", true)?;
    let mut client = tributary_client::catalog(args.server.connect().await?, &token.value);
    let hint = |e| with_token_hint(e, &token, "consumer");
    match args.command {
        RecordsCommand::List {
            entity_type,
            filter,
            order_by,
            limit,
            page_size,
            output,
        } => {
            if let Some(filter) = &filter {
                // Caught here for a clearer message; the server checks the operators.
                serde_json::from_str::<serde_json::Value>(filter)
                    .map_err(|e| usage(format!("--filter is not JSON: {e}")))?;
            }
            let limit = limit.unwrap_or(usize::MAX);
            let mut pages = RecordPages::new(
                client,
                catalog::ListRecordsRequest {
                    entity_type,
                    filter: filter.unwrap_or_default(),
                    order_by: order_by.unwrap_or_default(),
                    page_size,
                    page_token: String::new(),
                },
            );
            let mut items = Vec::new();
            let mut seen = 0usize;
            while seen < limit {
                let Some(page) = pages.next_page().await.map_err(hint)? else {
                    break;
                };
                let take = page.len().min(limit - seen);
                seen += take;
                let page = page.iter().take(take).map(output::record);
                if output == OutputFormat::Ndjson {
                    let mut out = std::io::stdout().lock();
                    for item in page {
                        writeln!(out, "{item}")?;
                    }
                } else {
                    items.extend(page);
                }
            }
            if output != OutputFormat::Ndjson {
                output::print_list(output, output::RECORD_COLUMNS, &items)?;
            }
            Ok(())
        }
        RecordsCommand::Get {
            key,
            entity_type,
            connector,
            id,
            output,
        } => {
            let record = match (key, entity_type, connector, id) {
                (Some(key), ..) => {
                    client
                        .get_record(catalog::GetRecordRequest { key })
                        .await
                        .map_err(hint)?
                        .into_inner()
                        .record
                }
                (None, Some(entity_type), Some(connector), Some(id)) => {
                    client
                        .get_record_by_id(catalog::GetRecordByIdRequest {
                            entity_type,
                            connector,
                            id,
                        })
                        .await
                        .map_err(hint)?
                        .into_inner()
                        .record
                }
                _ => return Err(usage("give a KEY, or --entity-type, --connector and --id")),
            };
            output::print_one(output, &output::record(&record.unwrap_or_default()))
        }
        RecordsCommand::Watch {
            entity_type,
            after,
            count,
            output,
        } => {
            let after = match after {
                Some(after) => after,
                None => {
                    client
                        .list_records(catalog::ListRecordsRequest {
                            entity_type: entity_type.clone(),
                            page_size: 1,
                            ..Default::default()
                        })
                        .await
                        .map_err(hint)?
                        .into_inner()
                        .sequence
                }
            };
            let mut events = client
                .watch(catalog::WatchRequest { entity_type, after })
                .await
                .map_err(hint)?
                .into_inner();
            let mut printed = 0u64;
            while count.is_none_or(|c| printed < c) {
                let Some(event) = events.message().await.map_err(hint)? else {
                    break;
                };
                print_event(output, &event)?;
                printed += 1;
            }
            Ok(())
        }
    }
}

fn print_event(format: OutputFormat, event: &catalog::WatchResponse) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Table => match &event.event {
            Some(catalog::watch_response::Event::Upserted(r)) => writeln!(
                out,
                "{}\tupserted\t{}\t{}\t{}",
                event.sequence, r.id, r.name, r.key
            )?,
            Some(catalog::watch_response::Event::DeletedKey(key)) => {
                writeln!(out, "{}\tdeleted\t\t\t{key}", event.sequence)?
            }
            None => writeln!(out, "{}\t?", event.sequence)?,
        },
        OutputFormat::Json | OutputFormat::Ndjson => {
            let value = match &event.event {
                Some(catalog::watch_response::Event::Upserted(r)) => {
                    json!({"sequence": event.sequence, "upserted": output::record(r)})
                }
                Some(catalog::watch_response::Event::DeletedKey(key)) => {
                    json!({"sequence": event.sequence, "deleted_key": key})
                }
                None => json!({"sequence": event.sequence}),
            };
            writeln!(out, "{value}")?;
        }
    }
    // Each event as it happens, also into a pipe.
    out.flush()?;
    Ok(())
}
