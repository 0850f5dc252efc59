//! The things Tributary stores (SPEC.md §1), as the domain sees them.

use crate::clock::Micros;
use serde_json::Value;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stable text form stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Parses the stored text form.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}
pub(crate) use string_enum;

string_enum! {
    /// When a session's data becomes visible and what happens to earlier data (§2.1).
    SessionMode { Stream = "stream", Accrue = "accrue", Replace = "replace" }
}

string_enum! {
    /// Where a session is in its life.
    SessionState {
        /// Accepting batches.
        Open = "open",
        /// Closed with commit; its data is visible.
        Committed = "committed",
        /// Closed without commit; its data was discarded.
        RolledBack = "rolled_back",
        /// Rolled back because the connector opened another accrue/replace session.
        Superseded = "superseded",
        /// Rolled back after being idle longer than the idle timeout.
        Expired = "expired",
        /// A stream session that was closed (a no-op for its data).
        Closed = "closed",
    }
}

string_enum! {
    /// What happened, or what commit will do, to one id of a batch.
    Outcome {
        Created = "created",
        Updated = "updated",
        Unchanged = "unchanged",
        Deleted = "deleted",
        NotFound = "not_found",
        Skipped = "skipped",
    }
}

string_enum! {
    /// Whether a connector may create and update records (§4.4).
    WritePolicy {
        /// Creates and updates: the connector is the source of truth.
        Importer = "importer",
        /// Creates only; changes to existing records are skipped.
        ImporterCreateOnly = "importer_create_only",
        /// Creates and updates, except records edited inside Tributary.
        ImporterUpdateUnlessEdited = "importer_update_unless_edited",
    }
}

string_enum! {
    /// How an import (session or pull cycle) ended (§6).
    ImportStatus { Succeeded = "succeeded", Partial = "partial", Failed = "failed", Canceled = "canceled" }
}

string_enum! {
    /// How a digest compares with the visible catalog (§2.4).
    DigestState { New = "new", Changed = "changed", Unchanged = "unchanged" }
}

impl SessionMode {
    /// Whether the session's data waits for commit (accrue, replace) rather than applying at once.
    pub fn is_staged(self) -> bool {
        !matches!(self, Self::Stream)
    }
}

/// A kind of record and the JSON Schema of its `entity` attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityType {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub schema: Value,
    /// Incremented on every schema change; validators are cached by it.
    pub schema_version: u32,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// A data connector: contributes records of one entity type.
#[derive(Debug, Clone, PartialEq)]
pub struct Connector {
    pub id: String,
    pub name: String,
    pub entity_type: String,
    pub write_policy: WritePolicy,
    pub reject_removals_above_percent: Option<f64>,
    pub rate_limit: Option<u32>,
    pub created_at: Micros,
}

/// A consumer: reads the entity types it is granted.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    pub id: String,
    pub name: String,
    pub entity_types: Vec<String>,
    pub created_at: Micros,
}

/// A visible record as stored. `entity` and `instance` are JSON object text.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub key: String,
    pub entity_type: String,
    pub connector: String,
    pub id: String,
    pub name: String,
    pub entity: String,
    pub instance: String,
    pub checksum: String,
    pub version: i64,
    pub created_at: Micros,
    pub updated_at: Micros,
    pub source: Option<String>,
    pub edited_at: Option<Micros>,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub connector: String,
    pub mode: SessionMode,
    pub state: SessionState,
    pub opened_at: Micros,
    pub last_active_at: Micros,
}

/// What a session did, reported at close.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionTotals {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    /// Records a replace commit's sweep removed.
    pub swept: u64,
    pub skipped: u64,
}

/// One skipped or failed item of an import (§6).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImportItem {
    pub id: String,
    pub reason: String,
    pub error: String,
    /// The offending data, truncated to 4 KiB.
    pub data: String,
}

/// The report of one accrue/replace session or pull cycle (§6).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportResult {
    pub id: String,
    pub connector: String,
    pub session_id: Option<String>,
    pub source: Option<String>,
    pub started_at: Micros,
    pub ended_at: Micros,
    pub status: ImportStatus,
    pub totals: SessionTotals,
    pub failed: u64,
    pub sweep_refused: u64,
    pub pages: u64,
    pub skipped_items: Vec<ImportItem>,
    pub failed_items: Vec<ImportItem>,
    pub items_not_listed: u64,
    pub errors: Vec<String>,
}

/// What a record outcome reports back for one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOutcome {
    pub id: String,
    pub key: String,
    pub outcome: Outcome,
}

/// A page of results and the token for the next page, if any.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}
