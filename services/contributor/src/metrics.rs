//! What the Contribution service counts for Prometheus (`metrics` facade; see the server's
//! `metrics` module): records by outcome and entity type as acknowledged (a staged batch of an
//! accrue/replace session counts when acknowledged, what its commit will do), sessions opened
//! and how they ended, and calls held back or refused by a rate limit.

use tributary_core::model::{Outcome, RecordOutcome, SessionMode};
use tributary_core::store::ClosedSession;

/// Adds a batch's outcomes to `tributary_records_total{entity_type, outcome, via="push"}`.
pub(crate) fn count_outcomes(entity_type: &str, outcomes: &[RecordOutcome]) {
    for outcome in Outcome::ALL {
        let n = outcomes.iter().filter(|o| o.outcome == *outcome).count();
        if n > 0 {
            metrics::counter!("tributary_records_total",
                "entity_type" => entity_type.to_owned(), "outcome" => outcome.as_str(),
                "via" => "push")
            .increment(n as u64);
        }
    }
}

/// A session opened, and the sessions it superseded.
pub(crate) fn count_opened(mode: SessionMode, superseded: usize) {
    metrics::counter!("tributary_sessions_opened_total", "mode" => mode.as_str()).increment(1);
    if superseded > 0 {
        metrics::counter!("tributary_sessions_closed_total", "result" => "superseded")
            .increment(superseded as u64);
    }
}

/// A session closed: committed, rolled back, or (a stream session) closed; and what a replace
/// commit swept.
pub(crate) fn count_closed(entity_type: &str, closed: &ClosedSession, commit: bool) {
    let result = match (closed.mode, commit) {
        (SessionMode::Stream, _) => "closed",
        (_, true) => "committed",
        (_, false) => "rolled_back",
    };
    metrics::counter!("tributary_sessions_closed_total", "result" => result).increment(1);
    if commit && closed.totals.swept > 0 {
        metrics::counter!("tributary_records_total",
            "entity_type" => entity_type.to_owned(), "outcome" => "swept", "via" => "push")
        .increment(closed.totals.swept);
    }
}

/// A call refused (`rpc` Upsert, Delete, Diff) or a stream batch held back (`Contribute`) by
/// the connector's rate limit.
pub(crate) fn count_rate_limited(rpc: &'static str) {
    metrics::counter!("tributary_rate_limited_total", "rpc" => rpc).increment(1);
}
