//! `tributary`: the command line and the all-in-one server.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tributary::Cli::parse().run().await
}
