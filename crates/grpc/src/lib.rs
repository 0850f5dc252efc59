//! The gRPC glue every Tributary service adapter shares: the one mapping of domain errors to
//! `tonic::Status`, `google.protobuf.Struct` <-> JSON, timestamps, token metadata, and the TLS of
//! outbound calls.
//!
//! It sits below the service adapters, so the server assembly in `services/tributary` can wire
//! them without a dependency cycle.

pub mod auth;
pub mod convert;
pub mod reconcile;
pub mod status;
pub mod tls;

pub use status::{log_outcome, request_status, to_status, traced};
