//! The `tributary` command line: `tributary serve` runs every service (or the `--only` ones) in
//! one process on one port; the other subcommands ([`cli`]) talk gRPC to a running server.
//!
//! This crate is the top of the layering: [`server`] assembles the service adapters
//! (`services/{contributor,consumer,admin}`), the store and the pull engine into one process,
//! with [`config`] (layered configuration), [`admin_token`] and [`telemetry`].

pub mod admin_token;
pub mod cli;
pub mod config;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod web;

use std::process::ExitCode;

use crate::config::{Args, Settings};
use crate::server::ServiceKind;
use clap::{Parser, Subcommand};

/// Tributary: a catalog broker. Connectors contribute records over gRPC, consumers read them.
///
/// `tributary serve` runs the server. The other commands talk to a running server (--server,
/// default http://127.0.0.1:50051, or TRIBUTARY_SERVER) with a token (--token, or
/// TRIBUTARY_TOKEN; admin commands also take TRIBUTARY_ADMIN_TOKEN and, for a server on this
/// machine, ./tributary-data/admin.token).
///
/// Exit status: 0 success, 1 refused by the server or failed (e.g. invalid records), 2 usage.
#[derive(Debug, Parser)]
#[command(name = "tributary", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What `tributary` can do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC services on one port (all of them, or the --only ones).
    ///
    /// Serves Contribution, Catalog and Admin, plus gRPC health and reflection, on one port, with
    /// an embedded SQLite database under the data directory unless --database-url is given. The
    /// admin token comes from TRIBUTARY_ADMIN_TOKEN, else from <data-dir>/admin.token, which is
    /// generated (mode 0600) on first start. Stops gracefully on Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    // The client commands take their help from their argument structs (cli::*).
    EntityType(cli::entity_type::EntityTypeArgs),
    Connector(cli::connector::ConnectorArgs),
    Consumer(cli::consumer::ConsumerArgs),
    Contribute(cli::contribute::ContributeArgs),
    Records(cli::records::RecordsArgs),
    ImportResults(cli::import_results::ImportResultsArgs),
    Source(cli::source::SourceArgs),
    Export(cli::export::ExportArgs),
}

/// Flags of `tributary serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Run only this service; repeat to run several (default: all of them).
    #[arg(long = "only", value_enum, value_name = "SERVICE")]
    pub only: Vec<ServiceKind>,
    #[command(flatten)]
    pub common: Args,
}

impl Cli {
    /// Runs the chosen subcommand to completion; failures are printed on stderr and become
    /// the exit status (1 refused or failed, 2 usage).
    pub async fn run(self) -> ExitCode {
        let done = match self.command {
            Command::Serve(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
            Command::EntityType(args) => cli::entity_type::run(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Connector(args) => cli::connector::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Consumer(args) => cli::consumer::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Contribute(args) => cli::contribute::run(args).await,
            Command::Records(args) => cli::records::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::ImportResults(args) => cli::import_results::run(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Source(args) => cli::source::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Export(args) => cli::export::run(args).await.map(|()| ExitCode::SUCCESS),
        };
        done.unwrap_or_else(|error| {
            eprintln!("error: {}", cli::render_error(&error));
            cli::exit_code(&error)
        })
    }
}

/// `tributary serve`: until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&args.common)?;
    let services = if args.only.is_empty() {
        ServiceKind::ALL.to_vec()
    } else {
        args.only
    };
    server::run(settings, services).await
}

/// Runs one service alone, as the `tributary-<service>` binaries do.
pub async fn serve_alone(kind: ServiceKind, args: Args) -> anyhow::Result<()> {
    let settings = Settings::load(&args)?;
    server::run(settings, vec![kind]).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_accepts_repeated_only() {
        let cli = Cli::try_parse_from([
            "tributary",
            "serve",
            "--only",
            "contributor",
            "--only",
            "admin",
            "--listen",
            "127.0.0.1:0",
        ])
        .expect("valid command line");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve, got {:?}", cli.command);
        };
        assert_eq!(
            args.only,
            vec![ServiceKind::Contributor, ServiceKind::Admin]
        );
        assert_eq!(args.common.listen.as_deref(), Some("127.0.0.1:0"));
    }
}
