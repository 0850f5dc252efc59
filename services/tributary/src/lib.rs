//! The `tributary` command line: `tributary serve` runs every service (or the `--only` ones) in
//! one process on one port. Further subcommands (contribute, query, watch, ...) join [`Command`].

use clap::{Parser, Subcommand};
use tributary_runtime::config::{Args, Settings};
use tributary_runtime::server::{self, ServiceKind};

/// Tributary: a catalog broker. Connectors contribute records over gRPC, consumers read them.
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
    /// Runs the chosen subcommand to completion.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Serve(args) => serve(args).await,
        }
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
        let Command::Serve(args) = cli.command;
        assert_eq!(
            args.only,
            vec![ServiceKind::Contributor, ServiceKind::Admin]
        );
        assert_eq!(args.common.listen.as_deref(), Some("127.0.0.1:0"));
    }
}
