//! `tributary-admin`: runs the Admin service (operators manage entity types, connectors and consumers) alone, with health and reflection.

use clap::Parser;
use tributary::config::Args;
use tributary::serve_alone;
use tributary::server::ServiceKind;

/// Runs the Admin service (operators manage entity types, connectors and consumers) alone on one port, with gRPC health and reflection.
#[derive(Parser)]
#[command(name = "tributary-admin", version)]
struct Cli {
    #[command(flatten)]
    common: Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    serve_alone(ServiceKind::Admin, Cli::parse().common).await
}
