//! `tributary connector ...`: who may contribute records of an entity type (SPEC.md §4.2).

use clap::Subcommand;
use serde_json::json;
use tributary_client::pages::collect_all;
use tributary_client::pb::admin;

use super::connection::{with_token_hint, ServerArgs};
use super::output::{self, OutputFormat};

/// Manage connectors (admin token; see `tributary entity-type --help` for where it comes from).
#[derive(Debug, clap::Args)]
pub struct ConnectorArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: ConnectorCommand,
}

/// The source-of-truth setting of a connector (SPEC.md §4.4).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WritePolicyArg {
    /// Creates and updates records (the connector is the source of truth).
    Importer,
    /// Creates records, never updates them.
    ImporterCreateOnly,
    /// Creates and updates, unless the record was edited inside Tributary since.
    ImporterUpdateUnlessEdited,
}

impl From<WritePolicyArg> for admin::WritePolicy {
    fn from(p: WritePolicyArg) -> Self {
        match p {
            WritePolicyArg::Importer => admin::WritePolicy::Importer,
            WritePolicyArg::ImporterCreateOnly => admin::WritePolicy::ImporterCreateOnly,
            WritePolicyArg::ImporterUpdateUnlessEdited => {
                admin::WritePolicy::ImporterUpdateUnlessEdited
            }
        }
    }
}

/// Connector subcommands.
#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// Create a connector; prints its id and its token, which is shown only this once.
    Create {
        #[arg(long)]
        name: String,
        /// The entity type it contributes.
        #[arg(long)]
        entity_type: String,
        #[arg(long, value_enum, default_value = "importer")]
        write_policy: WritePolicyArg,
        /// Refuse a replace commit that would delete more than this percentage of its records.
        #[arg(long, value_name = "PERCENT")]
        reject_removals_above_percent: Option<f64>,
        /// Records per second this connector may send: unary calls over it are refused with
        /// a time to wait, stream batches are held back (default: no limit).
        #[arg(long)]
        rate_limit: Option<u32>,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Show a connector.
    Get {
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// List connectors.
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Issue a new token for a connector; the old one stops working at once.
    Rotate {
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Delete a connector; its records stay in the catalog unless --delete-records.
    Delete {
        id: String,
        #[arg(long)]
        delete_records: bool,
    },
}

/// Runs a `connector` subcommand.
pub async fn run(args: ConnectorArgs) -> anyhow::Result<()> {
    let token = args.server.admin_token()?;
    let mut client = tributary_client::admin(args.server.connect().await?, &token.value);
    let hint = |e| with_token_hint(e, &token, "admin");
    match args.command {
        ConnectorCommand::Create {
            name,
            entity_type,
            write_policy,
            reject_removals_above_percent,
            rate_limit,
            output,
        } => {
            let created = client
                .create_connector(admin::CreateConnectorRequest {
                    connector: Some(admin::Connector {
                        name,
                        entity_type,
                        write_policy: admin::WritePolicy::from(write_policy).into(),
                        reject_removals_above_percent,
                        rate_limit,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(hint)?
                .into_inner();
            let connector = created.connector.unwrap_or_default();
            match output {
                OutputFormat::Table => {
                    println!(
                        "Created connector {} ({}) for entity type {}.",
                        connector.id, connector.name, connector.entity_type
                    );
                    print_token(&created.token);
                    Ok(())
                }
                format => output::print_one(
                    format,
                    &json!({"connector": output::connector(&connector), "token": created.token}),
                ),
            }
        }
        ConnectorCommand::Get { id, output } => {
            let found = client
                .get_connector(admin::GetConnectorRequest { id })
                .await
                .map_err(hint)?
                .into_inner()
                .connector
                .unwrap_or_default();
            output::print_one(output, &output::connector(&found))
        }
        ConnectorCommand::List { output } => {
            let all = collect_all(|page_token| {
                let mut client = client.clone();
                async move {
                    let page = client
                        .list_connectors(admin::ListConnectorsRequest {
                            page_size: 100,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.connectors, page.next_page_token))
                }
            })
            .await
            .map_err(hint)?;
            let items: Vec<_> = all.iter().map(output::connector).collect();
            output::print_list(output, output::CONNECTOR_COLUMNS, &items)
        }
        ConnectorCommand::Rotate { id, output } => {
            let rotated = client
                .rotate_connector_token(admin::RotateConnectorTokenRequest { id: id.clone() })
                .await
                .map_err(hint)?
                .into_inner();
            match output {
                OutputFormat::Table => {
                    println!("Rotated the token of connector {id}; the old token no longer works.");
                    print_token(&rotated.token);
                    Ok(())
                }
                format => output::print_one(format, &json!({"id": id, "token": rotated.token})),
            }
        }
        ConnectorCommand::Delete { id, delete_records } => {
            let deleted = client
                .delete_connector(admin::DeleteConnectorRequest {
                    id: id.clone(),
                    delete_records,
                })
                .await
                .map_err(hint)?
                .into_inner();
            if delete_records {
                println!(
                    "Deleted connector {id} and its {} records.",
                    deleted.records_deleted
                );
            } else {
                println!("Deleted connector {id}; its records stay in the catalog.");
            }
            Ok(())
        }
    }
}

/// Prints a token with the warning that it is not shown again (only its hash is stored).
pub fn print_token(token: &str) {
    println!("Token (shown only this once; store it now):");
    println!("{token}");
}
