//! `tributary consumer ...`: who may read which entity types (SPEC.md §4.2).

use clap::Subcommand;
use serde_json::json;
use tributary_client::pages::collect_all;
use tributary_client::pb::admin;

use super::connection::{with_token_hint, ServerArgs};
use super::connector::print_token;
use super::output::{self, OutputFormat};

/// Manage consumers (admin token; see `tributary entity-type --help` for where it comes from).
#[derive(Debug, clap::Args)]
pub struct ConsumerArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: ConsumerCommand,
}

/// Consumer subcommands.
#[derive(Debug, Subcommand)]
pub enum ConsumerCommand {
    /// Create a consumer granted some entity types; prints its token, shown only this once.
    Create {
        #[arg(long)]
        name: String,
        /// An entity type it may read; repeat for several.
        #[arg(long = "entity-type", value_name = "SLUG", required = true)]
        entity_types: Vec<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Show a consumer.
    Get {
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// List consumers.
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Delete a consumer; its token stops working at once.
    Delete { id: String },
}

/// Runs a `consumer` subcommand.
pub async fn run(args: ConsumerArgs) -> anyhow::Result<()> {
    let token = args.server.admin_token()?;
    let mut client = tributary_client::admin(args.server.connect().await?, &token.value);
    let hint = |e| with_token_hint(e, &token, "admin");
    match args.command {
        ConsumerCommand::Create {
            name,
            entity_types,
            output,
        } => {
            let created = client
                .create_consumer(admin::CreateConsumerRequest {
                    consumer: Some(admin::Consumer {
                        name,
                        entity_types,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(hint)?
                .into_inner();
            let consumer = created.consumer.unwrap_or_default();
            match output {
                OutputFormat::Table => {
                    println!(
                        "Created consumer {} ({}) reading {}.",
                        consumer.id,
                        consumer.name,
                        consumer.entity_types.join(", ")
                    );
                    print_token(&created.token);
                    Ok(())
                }
                format => output::print_one(
                    format,
                    &json!({"consumer": output::consumer(&consumer), "token": created.token}),
                ),
            }
        }
        ConsumerCommand::Get { id, output } => {
            let found = client
                .get_consumer(admin::GetConsumerRequest { id })
                .await
                .map_err(hint)?
                .into_inner()
                .consumer
                .unwrap_or_default();
            output::print_one(output, &output::consumer(&found))
        }
        ConsumerCommand::List { output } => {
            let all = collect_all(|page_token| {
                let mut client = client.clone();
                async move {
                    let page = client
                        .list_consumers(admin::ListConsumersRequest {
                            page_size: 100,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.consumers, page.next_page_token))
                }
            })
            .await
            .map_err(hint)?;
            let items: Vec<_> = all.iter().map(output::consumer).collect();
            output::print_list(output, output::CONSUMER_COLUMNS, &items)
        }
        ConsumerCommand::Delete { id } => {
            client
                .delete_consumer(admin::DeleteConsumerRequest { id: id.clone() })
                .await
                .map_err(hint)?;
            println!("Deleted consumer {id}.");
            Ok(())
        }
    }
}
