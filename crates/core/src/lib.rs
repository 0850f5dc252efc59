//! Tributary's domain: the record model and its rules, canonical JSON checksums, record keys,
//! the session state machine, and the storage trait that the store crate implements.
//!
//! Nothing here knows about gRPC or SQL; services translate protobuf into these types and the
//! store crate implements [`store::Store`] for SQLite and PostgreSQL.

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod checksum;
pub mod clock;
pub mod closing;
pub mod contribution;
pub mod error;
pub mod export;
pub mod ids;
pub mod limits;
pub mod model;
pub mod page;
pub mod query;
pub mod rate_limit;
pub mod reconcile;
pub mod record;
pub mod schema;
pub mod session;
pub mod source;
pub mod store;
pub mod text;

pub use error::{Error, Result, Violation};
