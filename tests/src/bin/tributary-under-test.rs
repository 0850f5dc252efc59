//! The `tributary` command line, as a binary of the test package: end-to-end tests spawn it as
//! a separate process (e.g. `serve --only consumer --database-url …`).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    tributary::Cli::parse().run().await
}
