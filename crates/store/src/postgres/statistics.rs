//! Fresh planner statistics after large changes. Autovacuum analyzes `records` a minute or more
//! after it changes, and until then a table that grew from nothing to a million rows is planned
//! as if it were empty: range-based sync's page query then sorted the rest of the table for
//! every page (ADR 0018), and catalog listings can pick a scan for a table of a few rows. So this
//! process analyzes `records` itself once it has logged as many changes since the last analysis
//! as the table then had rows (at least [`FIRST_ANALYSIS`]): a table that doubles, or is
//! rewritten, is analyzed right after, and a steady trickle of changes costs nothing.

use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Changes logged before the first analysis of this process.
const FIRST_ANALYSIS: u64 = 10_000;

/// Counts the changes this process logged and analyzes `records` when they add up.
#[derive(Debug)]
pub(crate) struct Statistics {
    /// Changes logged since the last analysis began.
    logged: AtomicU64,
    /// How many changes call for the next analysis: the table's rows at the last one.
    threshold: AtomicU64,
    /// An analysis is running (one at a time).
    running: AtomicBool,
}

impl Default for Statistics {
    fn default() -> Self {
        Self {
            logged: AtomicU64::new(0),
            threshold: AtomicU64::new(FIRST_ANALYSIS),
            running: AtomicBool::new(false),
        }
    }
}

impl Statistics {
    /// Counts `entries` committed changes; starts an analysis in the background when they add
    /// up to the threshold and none is running.
    pub(crate) fn note(self: &Arc<Self>, entries: u64, pool: &PgPool) {
        let logged = self.logged.fetch_add(entries, Ordering::Relaxed) + entries;
        if logged < self.threshold.load(Ordering::Relaxed)
            || self.running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let counted = self.logged.swap(0, Ordering::Relaxed);
        let this = Arc::clone(self);
        let pool = pool.clone();
        tokio::spawn(async move {
            match analyze(&pool).await {
                Ok(rows) => this
                    .threshold
                    .store(rows.max(FIRST_ANALYSIS), Ordering::Relaxed),
                Err(error) => {
                    // Counted again, so the next commit tries once more.
                    this.logged.fetch_add(counted, Ordering::Relaxed);
                    tracing::debug!(%error, "analyzing records after a large change");
                }
            }
            this.running.store(false, Ordering::Release);
        });
    }
}

/// Analyzes `records`; answers how many rows it has now. Gives up rather than wait behind
/// autovacuum (which then analyzes it anyway) and hold a connection of the pool meanwhile.
async fn analyze(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '1s'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("ANALYZE records").execute(&mut *tx).await?;
    let rows: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'records'::regclass")
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(rows.max(0.0) as u64)
}
