//! What the pull engine counts for Prometheus (`metrics` facade; the server's `metrics` module
//! serves it): pulled records by outcome and entity type, cycles by how they ended, and how
//! long cycles take.

use tributary_core::clock::Micros;
use tributary_core::source::PageTotals;

/// Adds a written page's totals to `tributary_records_total{entity_type, outcome, via="pull"}`.
pub(crate) fn count_pulled(entity_type: &str, totals: &PageTotals) {
    for (outcome, n) in [
        ("created", totals.created),
        ("updated", totals.updated),
        ("unchanged", totals.unchanged),
        ("skipped", totals.skipped),
        ("failed", totals.failed),
    ] {
        if n > 0 {
            metrics::counter!("tributary_records_total",
                "entity_type" => entity_type.to_owned(), "outcome" => outcome, "via" => "pull")
            .increment(n);
        }
    }
}

/// A cycle ended with `status` (its import result's): `tributary_pull_cycles_total{status}` and
/// `tributary_pull_cycle_seconds`, from its start to `now`.
pub(crate) fn count_cycle(status: &'static str, started: Micros, now: Micros) {
    metrics::counter!("tributary_pull_cycles_total", "status" => status).increment(1);
    let seconds = now.saturating_sub(started).max(0) as f64 / 1e6;
    metrics::histogram!("tributary_pull_cycle_seconds", "status" => status).record(seconds);
}
