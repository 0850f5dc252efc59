//! `tributary`: the command line and the all-in-one server.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    tributary::Cli::parse().run().await
}
