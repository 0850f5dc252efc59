//! Pull sources (SPEC.md §5): what a source is, how it is paced, and its runtime state.
//!
//! A source is owned by a connector: it writes records of the connector's entity type under the
//! connector's write policy. The engine (`tributary-ingest`) runs its cycles; the store keeps its
//! definition, its state (cursor, lease, counters) and its marks.

pub mod kinds;
pub mod mapping;
pub mod paths;
pub mod schedule;
pub mod secrets;
pub mod service;
pub mod store;

use crate::clock::Micros;
use crate::model::ImportItem;
use serde_json::Value;
use std::time::Duration;

pub use kinds::KindConfig;
pub use mapping::Mapping;
pub use paths::AllowedDirs;
pub use schedule::Schedule;

crate::model::string_enum! {
    /// Where a source's items come from (§5).
    SourceKind { HttpJson = "http_json", Ndjson = "ndjson", Feed = "feed", Grpc = "grpc" }
}

crate::model::string_enum! {
    /// Where a source is in its life.
    SourceState {
        /// No cycle has run yet, or the last one was cancelled or failed.
        Idle = "idle",
        /// A cycle is under way (a burst runs, or the next burst is due).
        Running = "running",
        /// The last cycle finished; the next starts at `next_run_at`.
        Resting = "resting",
        /// A page failed; it is retried from the saved cursor at `next_run_at`.
        Backoff = "backoff",
    }
}

/// How a source paces its cycles (§5 defaults: 3 s bursts, 3 s apart, 1 day of rest, backoff
/// 1 min, 5 min, 30 min, 3 h).
#[derive(Debug, Clone, PartialEq)]
pub struct Pacing {
    pub burst_length: Duration,
    pub burst_interval: Duration,
    pub rest_length: Duration,
    pub backoff: Vec<Duration>,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            burst_length: Duration::from_secs(3),
            burst_interval: Duration::from_secs(3),
            rest_length: Duration::from_secs(24 * 3600),
            backoff: [60, 300, 1800, 3 * 3600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        }
    }
}

/// A pull source's definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub id: String,
    /// The connector it writes as: its entity type and write policy apply.
    pub connector: String,
    pub name: String,
    pub kind: SourceKind,
    /// The kind's settings (URL, pagination, headers, file path, endpoint), as JSON.
    pub config: Value,
    /// How an item becomes a record, as JSON (see [`Mapping`]).
    pub mapping: Value,
    pub schedule: Schedule,
    pub pacing: Pacing,
    pub reject_removals_above_percent: Option<f64>,
    pub reject_empty: bool,
    pub enabled: bool,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// The running report of a cycle, accumulated page by page in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleCounts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub failed: u64,
    pub pages: u64,
}

/// A source's runtime state, as `GetSourceStatus` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStatus {
    pub source_id: String,
    pub state: SourceState,
    /// The saved cursor (JSON text) the next page is fetched from; `None` at a cycle's start.
    pub cursor: Option<String>,
    pub cycle_id: Option<String>,
    pub cycle_started_at: Option<Micros>,
    /// Failed attempts at the current page.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub last_run_at: Option<Micros>,
    pub next_run_at: Micros,
    pub lease_holder: Option<String>,
    pub lease_expires_at: Option<Micros>,
    /// Records marked as seen in the current cycle.
    pub marks: u64,
    pub counts: CycleCounts,
    /// The import result of the last finished cycle.
    pub last_import_result: Option<String>,
}

/// A source the engine has claimed: its definition and state at the claim.
#[derive(Debug, Clone)]
pub struct ClaimedSource {
    pub source: Source,
    pub status: SourceStatus,
}

/// The right to work on a source's current cycle: every write of the engine names it, and the
/// store refuses a write whose holder or cycle no longer matches (the lease expired and another
/// engine took over, or the cycle was cancelled), so a stalled engine never writes late.
#[derive(Debug, Clone)]
pub struct Lease {
    pub source_id: String,
    pub holder: String,
    pub cycle_id: String,
}

/// One fetched page, prepared: the valid records, the items that failed or were skipped before
/// reaching the store, and the cursor to continue from.
#[derive(Debug, Clone)]
pub struct SourcePage {
    pub records: Vec<crate::record::PreparedRecord>,
    pub failed_items: Vec<ImportItem>,
    /// JSON text of the cursor after this page.
    pub next_cursor: String,
    pub now: Micros,
    /// The lease is extended to this instant by the page's transaction.
    pub lease_until: Micros,
    /// At most this many skipped/failed items are listed in the cycle's report.
    pub max_items: u64,
}

/// What a page did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageTotals {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub failed: u64,
}

/// How a cycle ends.
#[derive(Debug, Clone)]
pub enum CycleEnd {
    /// The provider reported done: sweep (unless a guard refuses) and rest.
    Done {
        reject_empty: bool,
        reject_removals_above_percent: Option<f64>,
    },
    /// The last backoff interval failed too: reported failed; the next cycle starts afresh.
    Failed { error: String },
}

/// What PushDelta did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaTotals {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub deleted: u64,
}

/// The largest piece of an item's data an import result keeps (§6).
pub const MAX_ITEM_DATA_BYTES: usize = 4096;

/// `text` cut to at most [`MAX_ITEM_DATA_BYTES`] bytes, on a character boundary.
pub fn truncate_item_data(text: &str) -> String {
    if text.len() <= MAX_ITEM_DATA_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_ITEM_DATA_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The instant `duration` after `from`, in store micros.
pub fn after(from: Micros, duration: Duration) -> Micros {
    from.saturating_add(i64::try_from(duration.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_data_is_truncated_to_4_kib_on_a_char_boundary() {
        let text = "é".repeat(3000);
        let cut = truncate_item_data(&text);
        assert!(cut.len() <= MAX_ITEM_DATA_BYTES);
        assert!(cut.len() >= MAX_ITEM_DATA_BYTES - 1);
        assert_eq!(truncate_item_data("short"), "short");
    }
}
