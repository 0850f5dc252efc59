//! What every Tributary service process shares: layered configuration, the admin token,
//! logging, and the one place a server is wired (services, health, reflection, limits).
//!
//! The gRPC glue the service adapters use (error mapping, Struct <-> JSON, token metadata) lives
//! one layer down in `tributary-grpc`, so this crate can depend on the adapters; it is
//! re-exported here as `status`, `convert` and `auth`.

pub mod admin_token;
pub mod config;
pub mod server;
pub mod telemetry;

pub use tributary_grpc::{auth, convert, status};
