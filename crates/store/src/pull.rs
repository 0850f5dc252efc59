//! What both backends share for pull sources: reading source rows, planning a page's writes and
//! its report, and building a cycle's import result. The SQL stays in each backend's
//! `sources.rs`.

use crate::error::{StoreError, StoreResult};
use crate::rows::{count, write_policy, Cols};
use std::collections::HashMap;
use std::time::Duration;
use tributary_core::clock::Micros;
use tributary_core::model::{
    ImportItem, ImportResult, ImportStatus, Outcome, SessionTotals, WritePolicy,
};
use tributary_core::record::{plan_upserts, ExistingRecord, PreparedRecord};
use tributary_core::source::{
    CycleCounts, Pacing, PageTotals, Schedule, Source, SourceKind, SourceState, SourceStatus,
};
use tributary_core::Error;

/// The definition columns of `sources`, in this order.
pub(crate) const SOURCE_COLUMNS: &str = "id, connector, name, kind, config, mapping, schedule, \
     burst_length_ms, burst_interval_ms, rest_length_ms, backoff_ms, reject_removals_above_percent, \
     reject_empty, enabled, created_at, updated_at";

/// The state columns of `sources`.
pub(crate) const STATE_COLUMNS: &str = "state, cursor, cycle_id, cycle_started_at, attempts, \
     last_error, last_run_at, next_run_at, lease_holder, lease_expires_at, last_import_result, \
     c_created, c_updated, c_unchanged, c_skipped, c_failed, c_pages";

/// Most errors a cycle's report collects; later ones are counted in the last entry's place.
pub(crate) const MAX_CYCLE_ERRORS: usize = 100;

fn parse_json(text: &str, what: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn millis(value: i64) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or_default())
}

/// A duration as stored milliseconds.
pub(crate) fn to_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Backoff intervals as the stored JSON array of milliseconds.
pub(crate) fn backoff_text(pacing: &Pacing) -> String {
    let ms: Vec<i64> = pacing.backoff.iter().map(|d| to_millis(*d)).collect();
    serde_json::Value::from(ms).to_string()
}

pub(crate) fn source(row: &impl Cols) -> StoreResult<Source> {
    let kind = row.text("kind")?;
    let schedule = row.text("schedule")?;
    let backoff: Vec<i64> = serde_json::from_str(&row.text("backoff_ms")?)
        .map_err(|e| StoreError::Corrupt(format!("source backoff: {e}")))?;
    Ok(Source {
        id: row.text("id")?,
        connector: row.text("connector")?,
        name: row.text("name")?,
        kind: SourceKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown source kind {kind:?}")))?,
        config: parse_json(&row.text("config")?, "source config")?,
        mapping: parse_json(&row.text("mapping")?, "source mapping")?,
        schedule: Schedule::from_text(&schedule)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown schedule {schedule:?}")))?,
        pacing: Pacing {
            burst_length: millis(row.int("burst_length_ms")?),
            burst_interval: millis(row.int("burst_interval_ms")?),
            rest_length: millis(row.int("rest_length_ms")?),
            backoff: backoff.into_iter().map(millis).collect(),
        },
        reject_removals_above_percent: row.opt_float("reject_removals_above_percent")?,
        reject_empty: row.int("reject_empty")? != 0,
        enabled: row.int("enabled")? != 0,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

pub(crate) fn status(row: &impl Cols, marks: u64) -> StoreResult<SourceStatus> {
    let state = row.text("state")?;
    Ok(SourceStatus {
        source_id: row.text("id")?,
        state: SourceState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown source state {state:?}")))?,
        cursor: row.opt_text("cursor")?,
        cycle_id: row.opt_text("cycle_id")?,
        cycle_started_at: row.opt_int("cycle_started_at")?,
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
        last_error: row.opt_text("last_error")?,
        last_run_at: row.opt_int("last_run_at")?,
        next_run_at: row.int("next_run_at")?,
        lease_holder: row.opt_text("lease_holder")?,
        lease_expires_at: row.opt_int("lease_expires_at")?,
        marks,
        counts: CycleCounts {
            created: count(row.int("c_created")?),
            updated: count(row.int("c_updated")?),
            unchanged: count(row.int("c_unchanged")?),
            skipped: count(row.int("c_skipped")?),
            failed: count(row.int("c_failed")?),
            pages: count(row.int("c_pages")?),
        },
        last_import_result: row.opt_text("last_import_result")?,
    })
}

/// The refusal of a write whose lease was lost (expired and taken over, or the cycle cancelled).
pub(crate) fn lease_lost(source_id: &str) -> StoreError {
    Error::FailedPrecondition {
        reason: "LEASE_LOST",
        message: format!(
            "source {source_id}: this engine no longer holds the lease of the cycle it writes"
        ),
        metadata: vec![("source".to_owned(), source_id.to_owned())],
    }
    .into()
}

/// A page's plan: the records to write (created or updated, at most one per key), what the page
/// did, and the skipped items to list.
pub(crate) struct PagePlan<'a> {
    pub writes: Vec<&'a PreparedRecord>,
    pub totals: PageTotals,
    pub skipped: Vec<ImportItem>,
}

/// Plans a page (or delta) against what the store holds, like a stream batch: each record is
/// judged against the state the earlier records of the page left, and the write policy applies.
pub(crate) fn plan_page<'a>(
    records: &'a [PreparedRecord],
    existing: &HashMap<String, ExistingRecord>,
    policy: WritePolicy,
) -> PagePlan<'a> {
    let plan = plan_upserts(records, existing, policy, true);
    let mut totals = PageTotals::default();
    let mut skipped = Vec::new();
    for (record, outcome) in records.iter().zip(&plan.outcomes) {
        match outcome {
            Outcome::Created => totals.created += 1,
            Outcome::Updated => totals.updated += 1,
            Outcome::Unchanged => totals.unchanged += 1,
            Outcome::Skipped => {
                totals.skipped += 1;
                let edited = existing.get(&record.key).is_some_and(|e| e.edited);
                let (reason, error) = match policy {
                    WritePolicy::ImporterUpdateUnlessEdited if edited => (
                        "edited",
                        "the record was edited inside Tributary; the write policy keeps the edit",
                    ),
                    _ => (
                        "create_only",
                        "the record exists; the write policy only creates",
                    ),
                };
                skipped.push(ImportItem {
                    id: record.id.clone(),
                    reason: reason.to_owned(),
                    error: error.to_owned(),
                    data: tributary_core::source::truncate_item_data(&record_json(record)),
                });
            }
            Outcome::Deleted | Outcome::NotFound => {}
        }
    }
    let mut writes: Vec<&PreparedRecord> = plan.writes.iter().map(|&i| &records[i]).collect();
    // Key order, so concurrent writers lock overlapping rows in the same order.
    writes.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    PagePlan {
        writes,
        totals,
        skipped,
    }
}

fn record_json(r: &PreparedRecord) -> String {
    format!(
        "{{\"id\":{},\"name\":{},\"entity\":{},\"instance\":{},\"checksum\":{}}}",
        serde_json::Value::from(r.id.as_str()),
        serde_json::Value::from(r.name.as_str()),
        r.entity,
        r.instance,
        serde_json::Value::from(r.checksum.as_str())
    )
}

/// The items of a page to list in the report (skipped first, then failed), the first `room` of
/// them, and how many did not fit.
pub(crate) fn items_to_list(
    skipped: Vec<ImportItem>,
    failed: &[ImportItem],
    room: u64,
) -> (Vec<(&'static str, ImportItem)>, u64) {
    let all = skipped
        .into_iter()
        .map(|i| ("skipped", i))
        .chain(failed.iter().cloned().map(|i| ("failed", i)));
    let mut listed = Vec::new();
    let mut rest = 0;
    for item in all {
        if (listed.len() as u64) < room {
            listed.push(item);
        } else {
            rest += 1;
        }
    }
    (listed, rest)
}

/// Appends `error` to a cycle's collected errors (JSON text), up to [`MAX_CYCLE_ERRORS`].
pub(crate) fn push_error(errors_json: &str, error: &str) -> StoreResult<String> {
    let mut errors: Vec<String> = serde_json::from_str(errors_json).unwrap_or_default();
    if errors.len() < MAX_CYCLE_ERRORS {
        errors.push(error.to_owned());
    }
    Ok(serde_json::to_string(&errors)?)
}

/// What ends a cycle, as the report sees it.
pub(crate) struct CycleClose {
    pub status: ImportStatus,
    pub swept: u64,
    pub sweep_refused: u64,
    pub extra_error: Option<String>,
}

/// The counters of a cycle as read from its source row, plus the listed items.
pub(crate) struct CycleRow {
    pub connector: String,
    pub started_at: Option<Micros>,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub failed: u64,
    pub pages: u64,
    pub not_listed: u64,
    pub errors: String,
}

/// The state columns a cycle's end reads.
pub(crate) const CYCLE_COLUMNS: &str = "connector, cycle_started_at, c_created, c_updated, \
     c_unchanged, c_skipped, c_failed, c_pages, c_not_listed, c_errors";

pub(crate) fn cycle_row(row: &impl Cols) -> StoreResult<CycleRow> {
    Ok(CycleRow {
        connector: row.text("connector")?,
        started_at: row.opt_int("cycle_started_at")?,
        created: count(row.int("c_created")?),
        updated: count(row.int("c_updated")?),
        unchanged: count(row.int("c_unchanged")?),
        skipped: count(row.int("c_skipped")?),
        failed: count(row.int("c_failed")?),
        pages: count(row.int("c_pages")?),
        not_listed: count(row.int("c_not_listed")?),
        errors: row.text("c_errors")?,
    })
}

/// The import result of a cycle of `source_id` ending at `now`.
pub(crate) fn cycle_result(
    source_id: &str,
    cycle: &CycleRow,
    items: Vec<(String, String)>,
    close: CycleClose,
    now: Micros,
) -> StoreResult<ImportResult> {
    let mut errors: Vec<String> = serde_json::from_str(&cycle.errors).unwrap_or_default();
    errors.extend(close.extra_error);
    let mut skipped_items = Vec::new();
    let mut failed_items = Vec::new();
    for (kind, item) in items {
        let item: ImportItem = serde_json::from_str(&item)
            .map_err(|e| StoreError::Corrupt(format!("source item: {e}")))?;
        if kind == "skipped" {
            skipped_items.push(item);
        } else {
            failed_items.push(item);
        }
    }
    Ok(ImportResult {
        id: tributary_core::ids::new_id(),
        connector: cycle.connector.clone(),
        session_id: None,
        source: Some(source_id.to_owned()),
        started_at: cycle.started_at.unwrap_or(now),
        ended_at: now,
        status: close.status,
        totals: SessionTotals {
            created: cycle.created,
            updated: cycle.updated,
            unchanged: cycle.unchanged,
            deleted: 0,
            swept: close.swept,
            skipped: cycle.skipped,
        },
        failed: cycle.failed,
        sweep_refused: close.sweep_refused,
        pages: cycle.pages,
        skipped_items,
        failed_items,
        items_not_listed: cycle.not_listed,
        errors,
    })
}

/// The status of a cycle that reached its end: partial when items failed or the sweep was
/// refused, else succeeded.
pub(crate) fn done_status(cycle: &CycleRow, refused: bool) -> ImportStatus {
    if refused || cycle.failed > 0 {
        ImportStatus::Partial
    } else {
        ImportStatus::Succeeded
    }
}

/// The message collected when a guard refuses a cycle's sweep.
pub(crate) fn refusal_message(
    seen: u64,
    candidates: u64,
    total: u64,
    limit: Option<f64>,
) -> String {
    if seen == 0 {
        format!(
            "sweep refused: the cycle saw no records (reject_empty); {candidates} of {total} records kept"
        )
    } else {
        format!(
            "sweep refused: it would delete {candidates} of {total} records, above reject_removals_above_percent = {}",
            limit.unwrap_or_default()
        )
    }
}

/// Whether a cycle's guards refuse its sweep.
pub(crate) fn sweep_guard(
    reject_empty: bool,
    limit: Option<f64>,
    seen: u64,
    candidates: u64,
    total: u64,
) -> bool {
    (reject_empty && seen == 0) || tributary_core::session::sweep_refused(candidates, total, limit)
}

/// The write policy text of a connector row.
pub(crate) fn policy(text: &str) -> StoreResult<WritePolicy> {
    write_policy(text)
}
