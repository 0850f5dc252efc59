//! `tributary-contributor`: runs the Contribution service (connectors push records) alone, with health and reflection.

use clap::Parser;
use tributary::config::Args;
use tributary::serve_alone;
use tributary::server::ServiceKind;

/// Runs the Contribution service (connectors push records) alone on one port, with gRPC health and reflection.
#[derive(Parser)]
#[command(name = "tributary-contributor", version)]
struct Cli {
    #[command(flatten)]
    common: Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    serve_alone(ServiceKind::Contributor, Cli::parse().common).await
}
