//! The limits of SPEC.md §10, configurable per deployment.

use std::time::Duration;

/// Limits that apply to every contribution.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most records (or ids) in one Upsert/Delete batch.
    pub max_batch_records: usize,
    /// Largest serialised record in bytes.
    pub max_record_bytes: usize,
    /// An accrue/replace session idle for longer is rolled back.
    pub session_idle_timeout: Duration,
    /// Most ranges in one Reconcile call (SPEC.md §2.5); its listed items count against
    /// `max_batch_records`.
    pub max_reconcile_ranges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_records: 10_000,
            max_record_bytes: 1024 * 1024,
            session_idle_timeout: Duration::from_secs(24 * 3600),
            max_reconcile_ranges: 4_096,
        }
    }
}
