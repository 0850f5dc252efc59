//! The pull engine (SPEC.md §5): a heartbeat claims due sources with a lease in the database,
//! runs a burst of pages from the saved cursor, and at the provider's end sweeps what was not
//! seen. It runs inside the admin service process or alone; any number of engines may share one
//! PostgreSQL database, and each source is worked by one of them at a time.

mod engine;
mod error;
pub mod export;
mod metrics;
mod page;
mod prefetch;
pub mod providers;

pub use engine::{Engine, EngineOptions};
pub use error::FetchError;
pub use export::{ExportOptions, ExportScheduler, Exporter, S3Options};
