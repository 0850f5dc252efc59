//! The client subcommands of `tributary`: thin over `tributary-client`, for people at a terminal
//! and for scripts. Decisions (token resolution, CSV mapping, exit codes) are in
//! docs/adr/0005-command-line.md.
//!
//! Exit codes: 0 success; 1 the server refused or the work failed (including a contribution with
//! invalid records); 2 a usage error (bad flags, unreadable input, wrong token for the connector).

pub mod connection;
pub mod connector;
pub mod consumer;
pub mod contribute;
pub mod entity_type;
pub mod export;
pub mod import_results;
pub mod input;
pub mod output;
pub mod records;
pub mod source;
pub mod source_file;

use std::process::ExitCode;

use tributary_client::status::describe;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the server refused, or the work failed (e.g. invalid records).
pub const EXIT_FAILED: u8 = 1;
/// Exit status: the command line or its input cannot be used as given.
pub const EXIT_USAGE: u8 = 2;

/// A mistake in how the command was called (exit status 2), as opposed to a refusal by the
/// server or a failure on the way (exit status 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Shorthand for a usage error.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// What a failed command prints on stderr: the context chain, with a gRPC status rendered as
/// its code, message and error details (field violations, reasons, resources).
pub fn render_error(error: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in error.chain() {
        match cause.downcast_ref::<tonic::Status>() {
            Some(status) => {
                parts.push(describe(status));
                // A status is the root cause; tonic's own source chain adds nothing readable.
                break;
            }
            None => parts.push(cause.to_string()),
        }
    }
    parts.join(": ")
}

/// The exit status for a failed command.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    if error
        .chain()
        .any(|c| c.downcast_ref::<UsageError>().is_some())
    {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}
