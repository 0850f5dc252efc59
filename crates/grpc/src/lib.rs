//! The gRPC glue every Tributary service adapter shares: the one mapping of domain errors to
//! `tonic::Status`, `google.protobuf.Struct` <-> JSON, timestamps, and token metadata.
//!
//! It sits below the service adapters and `tributary-runtime` (which re-exports it), so the
//! runtime can wire the adapters without a dependency cycle.

pub mod auth;
pub mod convert;
pub mod status;

pub use status::{log_outcome, to_status, traced};
