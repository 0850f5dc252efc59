//! `tributary-consumer`: runs the Catalog service (consumers read records) alone, with health and reflection.

use clap::Parser;
use tributary::config::Args;
use tributary::serve_alone;
use tributary::server::ServiceKind;

/// Runs the Catalog service (consumers read records) alone on one port, with gRPC health and reflection.
#[derive(Parser)]
#[command(name = "tributary-consumer", version)]
struct Cli {
    #[command(flatten)]
    common: Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    serve_alone(ServiceKind::Consumer, Cli::parse().common).await
}
