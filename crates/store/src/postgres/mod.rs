//! The PostgreSQL backend. Batches travel as array parameters expanded with `unnest` (far cheaper
//! to bind than multi-row VALUES); entity/instance are JSONB, read back as text. Every batch and
//! close locks its session row first (`UPDATE sessions ... RETURNING`), which serialises it
//! against a concurrent close, supersede or expiry of the same session.

mod catalog;
mod changes;
mod listing;
mod reads;
mod sessions;
mod sources;

use crate::changes::ChangeSignal;
use crate::error::{session_denied, StoreError, StoreResult};
use crate::rows::{to_i64, IMPORT_RESULT_COLUMNS};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::Duration;
use tributary_core::model::{ImportResult, SessionMode};
use tributary_core::store::SessionCall;

/// The free functions implementing each `Store` operation, for [`crate::delegate_store`].
mod ops {
    pub(super) use super::catalog::*;
    pub(super) use super::changes::{prune_changes, read_changes, wait_for_changes};
    pub(super) use super::listing::query_records;
    pub(super) use super::reads::*;
    pub(super) use super::sessions::*;
}

/// Connection settings for [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The most connections the pool opens.
    pub max_connections: u32,
    /// How long a call waits for a free connection before answering `Unavailable`.
    pub acquire_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// Tributary's store on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The highest change-log sequence known committed: raised by this process's commits and by
    /// NOTIFYs from other processes.
    changes: Arc<ChangeSignal>,
    /// Starts the LISTEN task once, when a change-log reader first waits.
    listening: Arc<Once>,
}

crate::delegate_store!(PgStore, ops);
crate::source_delegate::delegate_source_store!(PgStore, sources);

impl PgStore {
    /// Connects to and migrates the PostgreSQL database at `url`.
    pub async fn open(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        // sqlx keeps statements prepared, and after five runs PostgreSQL may settle on a generic
        // plan made while `records` or `staged_records` was small (a sequential scan for
        // `key = ANY($1)`), which then scans every row per batch once the tables grow. Our
        // statements are few and batch-sized, so planning each execution is cheap and safe.
        let connect =
            PgConnectOptions::from_str(url)?.options([("plan_cache_mode", "force_custom_plan")]);
        crate::migrate::postgres(&connect).await?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        Ok(Self {
            pool,
            changes: Arc::default(),
            listening: Arc::new(Once::new()),
        })
    }

    async fn write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

/// Checks that `call` names an open session of its connector that has not gone idle, marks it
/// active (locking its row until the transaction ends), and
/// answers its mode and applied sequence. Runs first in every batch and close transaction.
async fn touch_session(
    tx: &mut Transaction<'static, Postgres>,
    call: &SessionCall<'_>,
) -> StoreResult<(SessionMode, i64)> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "UPDATE sessions SET last_active_at = $1 \
         WHERE id = $2 AND connector = $3 AND state = 'open' AND (mode = 'stream' OR last_active_at >= $4) \
         RETURNING mode, applied_seq",
    )
    .bind(call.now)
    .bind(call.session_id)
    .bind(&call.connector.id)
    .bind(call.idle_cutoff)
    .fetch_optional(&mut **tx)
    .await?;
    let (mode, applied_seq) = row.ok_or_else(|| session_denied(call.session_id))?;
    let mode = SessionMode::parse(&mode)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown session mode {mode:?}")))?;
    Ok((mode, applied_seq))
}

/// Starts a batch: touches the session and answers its mode, or `None` when the call's
/// `batch_seq` was already applied (the caller commits the touch and applies nothing).
async fn begin_batch(
    tx: &mut Transaction<'static, Postgres>,
    call: &SessionCall<'_>,
) -> StoreResult<Option<SessionMode>> {
    let (mode, applied_seq) = touch_session(tx, call).await?;
    Ok((!crate::rows::already_applied(call, applied_seq)).then_some(mode))
}

/// Ends an applied batch: a sequenced one raises the session's applied sequence to its own, in
/// the batch's transaction, so the batch and the record of it commit together.
async fn end_batch(
    tx: &mut Transaction<'static, Postgres>,
    call: &SessionCall<'_>,
) -> StoreResult<()> {
    if let Some(seq) = call.batch_seq {
        sqlx::query("UPDATE sessions SET applied_seq = $2 WHERE id = $1")
            .bind(call.session_id)
            .bind(to_i64(seq))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Writes an import result inside `tx`.
async fn insert_import_result(
    tx: &mut Transaction<'static, Postgres>,
    r: &ImportResult,
) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO import_results ({IMPORT_RESULT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
    );
    sqlx::query(&sql)
        .bind(&r.id)
        .bind(&r.connector)
        .bind(&r.session_id)
        .bind(&r.source)
        .bind(r.started_at)
        .bind(r.ended_at)
        .bind(r.status.as_str())
        .bind(to_i64(r.totals.created))
        .bind(to_i64(r.totals.updated))
        .bind(to_i64(r.totals.unchanged))
        .bind(to_i64(r.totals.skipped))
        .bind(to_i64(r.failed))
        .bind(to_i64(r.totals.deleted))
        .bind(to_i64(r.totals.swept))
        .bind(to_i64(r.sweep_refused))
        .bind(to_i64(r.pages))
        .bind(serde_json::to_string(&r.skipped_items)?)
        .bind(serde_json::to_string(&r.failed_items)?)
        .bind(to_i64(r.items_not_listed))
        .bind(serde_json::to_string(&r.errors)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
