//! `tributary import-results ...`: the reports of accrue/replace sessions (SPEC.md §6).

use clap::Subcommand;
use tributary_client::pb::admin;

use super::connection::{with_token_hint, ServerArgs};
use super::output::{self, OutputFormat};

/// Show import results: one per closed accrue/replace session (admin token; see
/// `tributary entity-type --help` for where it comes from).
#[derive(Debug, clap::Args)]
pub struct ImportResultsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: ImportResultsCommand,
}

/// Import result subcommands.
#[derive(Debug, Subcommand)]
pub enum ImportResultsCommand {
    /// List import results, newest first.
    List {
        /// Only this connector's.
        #[arg(long)]
        connector: Option<String>,
        /// Only the cycles of this source (its id).
        #[arg(long)]
        source: Option<String>,
        /// Only results with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// At most this many (newest first).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Show one import result with its skipped and failed items.
    Get {
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
}

/// An import result's status, as `--status` takes it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StatusArg {
    Succeeded,
    Partial,
    Failed,
    Canceled,
}

impl From<StatusArg> for admin::ImportStatus {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Succeeded => admin::ImportStatus::Succeeded,
            StatusArg::Partial => admin::ImportStatus::Partial,
            StatusArg::Failed => admin::ImportStatus::Failed,
            StatusArg::Canceled => admin::ImportStatus::Canceled,
        }
    }
}

/// Runs an `import-results` subcommand.
pub async fn run(args: ImportResultsArgs) -> anyhow::Result<()> {
    let token = args.server.admin_token()?;
    let mut client = tributary_client::admin(args.server.connect().await?, &token.value);
    let hint = |e| with_token_hint(e, &token, "admin");
    match args.command {
        ImportResultsCommand::List {
            connector,
            source,
            status,
            limit,
            output,
        } => {
            let mut items = Vec::new();
            let mut page_token = String::new();
            while items.len() < limit {
                let page = client
                    .list_import_results(admin::ListImportResultsRequest {
                        connector: connector.clone().unwrap_or_default(),
                        source: source.clone().unwrap_or_default(),
                        status: status.map_or(admin::ImportStatus::Unspecified, Into::into) as i32,
                        page_size: i32::try_from(limit.min(1000)).unwrap_or(1000),
                        page_token,
                    })
                    .await
                    .map_err(hint)?
                    .into_inner();
                items.extend(page.import_results.iter().map(output::import_result));
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            items.truncate(limit);
            output::print_list(output, output::IMPORT_RESULT_COLUMNS, &items)
        }
        ImportResultsCommand::Get { id, output } => {
            let found = client
                .get_import_result(admin::GetImportResultRequest { id })
                .await
                .map_err(hint)?
                .into_inner()
                .import_result
                .unwrap_or_default();
            output::print_one(output, &output::import_result(&found))
        }
    }
}
