//! `tributary entity-type ...`: the kinds of records and their JSON Schemas (SPEC.md §4.1).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use tributary_client::pages::collect_all;
use tributary_client::pb::admin;
use tributary_grpc::convert::json_to_struct;

use super::connection::{with_token_hint, ServerArgs};
use super::output::{self, OutputFormat};
use super::{input, usage};

/// Manage entity types (admin token).
///
/// The admin token comes from --token, else TRIBUTARY_ADMIN_TOKEN, else TRIBUTARY_TOKEN, else
/// (for a server on this machine) ./tributary-data/admin.token (TRIBUTARY_DATA_DIR moves it).
#[derive(Debug, clap::Args)]
pub struct EntityTypeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: EntityTypeCommand,
}

/// Entity type subcommands.
#[derive(Debug, Subcommand)]
pub enum EntityTypeCommand {
    /// Create an entity type with a JSON Schema (draft 2020-12) for its records' `entity`.
    Create {
        /// 1..64 of a-z, 0-9 and '-', e.g. `country`.
        slug: String,
        /// Human-readable name (default: the slug).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// A file holding the JSON Schema (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        schema: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Show an entity type and its schema.
    Get {
        slug: String,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// List entity types.
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Change an entity type's name, description or schema (what is not given stays). A schema
    /// change applies to writes after it and bumps the schema version; check existing records
    /// first with `validate`.
    Update {
        slug: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// A file holding the new JSON Schema (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        schema: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Delete an entity type; refused while it has records, unless --force (which deletes its
    /// records and connectors too).
    Delete {
        slug: String,
        #[arg(long)]
        force: bool,
    },
    /// Dry run: how many existing records a schema (default: the current one) would reject.
    Validate {
        slug: String,
        /// A file holding the candidate JSON Schema (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        schema: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
}

/// Runs an `entity-type` subcommand.
pub async fn run(args: EntityTypeArgs) -> anyhow::Result<()> {
    let token = args.server.admin_token()?;
    let mut client = tributary_client::admin(args.server.connect().await?, &token.value);
    let hint = |e| with_token_hint(e, &token, "admin");
    match args.command {
        EntityTypeCommand::Create {
            slug,
            name,
            description,
            schema,
            output,
        } => {
            let schema = read_schema(&schema)?;
            let created = client
                .create_entity_type(admin::CreateEntityTypeRequest {
                    entity_type: Some(admin::EntityType {
                        name: name.unwrap_or_else(|| slug.clone()),
                        slug,
                        description,
                        schema: Some(schema),
                        ..Default::default()
                    }),
                })
                .await
                .map_err(hint)?
                .into_inner()
                .entity_type
                .unwrap_or_default();
            show_changed("Created", &created, output)
        }
        EntityTypeCommand::Get { slug, output } => {
            let found = client
                .get_entity_type(admin::GetEntityTypeRequest { slug })
                .await
                .map_err(hint)?
                .into_inner()
                .entity_type
                .unwrap_or_default();
            output::print_one(output, &output::admin_entity_type(&found))
        }
        EntityTypeCommand::List { output } => {
            let all = collect_all(|page_token| {
                let mut client = client.clone();
                async move {
                    let page = client
                        .list_entity_types(admin::ListEntityTypesRequest {
                            page_size: 100,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.entity_types, page.next_page_token))
                }
            })
            .await
            .map_err(hint)?;
            let items: Vec<_> = all.iter().map(output::admin_entity_type).collect();
            output::print_list(output, output::ENTITY_TYPE_COLUMNS, &items)
        }
        EntityTypeCommand::Update {
            slug,
            name,
            description,
            schema,
            output,
        } => {
            if name.is_none() && description.is_none() && schema.is_none() {
                return Err(usage(
                    "nothing to update: give --name, --description or --schema",
                ));
            }
            let schema = schema.as_deref().map(read_schema).transpose()?;
            // The RPC replaces all three fields; what the user did not give is kept as it is.
            let mut current = client
                .get_entity_type(admin::GetEntityTypeRequest { slug })
                .await
                .map_err(hint)?
                .into_inner()
                .entity_type
                .unwrap_or_default();
            if let Some(name) = name {
                current.name = name;
            }
            if let Some(description) = description {
                current.description = description;
            }
            if let Some(schema) = schema {
                current.schema = Some(schema);
            }
            let updated = client
                .update_entity_type(admin::UpdateEntityTypeRequest {
                    entity_type: Some(current),
                })
                .await
                .map_err(hint)?
                .into_inner()
                .entity_type
                .unwrap_or_default();
            show_changed("Updated", &updated, output)
        }
        EntityTypeCommand::Delete { slug, force } => {
            client
                .delete_entity_type(admin::DeleteEntityTypeRequest {
                    slug: slug.clone(),
                    force,
                })
                .await
                .map_err(hint)?;
            println!("Deleted entity type {slug}.");
            Ok(())
        }
        EntityTypeCommand::Validate {
            slug,
            schema,
            output,
        } => {
            let schema = schema.as_deref().map(read_schema).transpose()?;
            let report = client
                .validate_entity_type(admin::ValidateEntityTypeRequest { slug, schema })
                .await
                .map_err(hint)?
                .into_inner();
            let value = serde_json::json!({
                "records_checked": report.records_checked,
                "records_invalid": report.records_invalid,
                "examples": report.examples,
            });
            output::print_one(output, &value)
        }
    }
}

/// Prints a created or updated entity type: one line for people, the object for programs.
fn show_changed(verb: &str, e: &admin::EntityType, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Table => {
            println!(
                "{verb} entity type {} ({}), schema version {}.",
                e.slug, e.name, e.schema_version
            );
            Ok(())
        }
        format => output::print_one(format, &output::admin_entity_type(e)),
    }
}

/// Reads a JSON Schema file (`-` for stdin); it must be a JSON object.
fn read_schema(path: &std::path::Path) -> anyhow::Result<prost_types::Struct> {
    let text = input::read_small(path).context("reading the schema")?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| usage(format!("{}: not JSON: {e}", path.display())))?;
    json_to_struct(value).ok_or_else(|| {
        usage(format!(
            "{}: a schema must be a JSON object",
            path.display()
        ))
    })
}
