//! The SQLite backend: one database file in WAL mode.
//!
//! Two pools: a writer pool of exactly one connection, through which every write transaction goes
//! (`BEGIN IMMEDIATE`), so writers queue in-process instead of failing with SQLITE_BUSY when a
//! deferred transaction upgrades from read to write; and a reader pool for plain reads, which WAL
//! lets run alongside the writer. Batch parameters travel as one JSON text read with `json_each`.

mod catalog;
mod changes;
mod listing;
mod reads;
mod sessions;
mod sources;

use crate::changes::ChangeSignal;
use crate::error::{session_denied, StoreError, StoreResult};
use crate::rows::{to_i64, IMPORT_RESULT_COLUMNS};
use backon::{BackoffBuilder, ExponentialBuilder};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::str::FromStr;
use std::sync::Arc;
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

/// Tributary's store on a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Wakes this process's change-log readers after a commit that logged changes. (Another
    /// process on the same file is not woken; Watch's periodic re-read covers it.)
    changes: Arc<ChangeSignal>,
}

crate::delegate_store!(SqliteStore, ops);

/// SQLITE_BUSY (code 5, with its extended codes: recovery, snapshot, timeout).
fn is_busy(error: &StoreError) -> bool {
    let (StoreError::Database(sqlx::Error::Database(db))
    | StoreError::Migration {
        source: sqlx::Error::Database(db),
        ..
    }) = error
    else {
        return false;
    };
    db.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}
crate::source_delegate::delegate_source_store!(SqliteStore, sources);

impl SqliteStore {
    /// Opens (creating if needed) and migrates the SQLite database at `url`: a `sqlite:` URL or
    /// a plain file path. An in-memory database (`sqlite::memory:`) works for experiments: it
    /// gets a single connection that reads and writes, kept open for the store's lifetime.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        // Processes opening one fresh file at once race to switch it to WAL mode and to migrate
        // it, and SQLite can answer the loser SQLITE_BUSY at once rather than after the busy
        // timeout (a lock it cannot wait for without risking a deadlock). Opening again, after a
        // short backoff, finds the file switched and migrated.
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_secs(1))
            .with_max_times(10)
            .with_jitter()
            .build();
        loop {
            match Self::open_once(url).await {
                Err(error) if is_busy(&error) => match delays.next() {
                    Some(delay) => {
                        tracing::debug!(%error, ?delay, "SQLite busy while opening; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(error),
                },
                opened => return opened,
            }
        }
    }

    async fn open_once(url: &str) -> Result<Self, StoreError> {
        let options = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url)?
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            // SQLite's default page cache is 2 MiB per connection: once the records table and
            // its indexes outgrow it, every insert at a random key (keys are SHA-1s) rereads
            // B-tree pages from the OS. 32 MiB keeps the upper levels of a multi-million-row
            // table's indexes cached; it is filled only as pages are used.
            .pragma("cache_size", "-32768")
            // A batch of 1,000 records at random keys dirties a few thousand index pages, more
            // than the default checkpoint threshold (1,000 pages): every commit then ran a
            // checkpoint (writes and two fsyncs). 10,000 pages (~40 MiB of WAL) lets pages
            // rewritten by successive batches be checkpointed once: ~40 % faster bulk loads
            // into a large table (docs/BENCHMARKS.md, issue 5).
            .pragma("wal_autocheckpoint", "10000")
            // `$regex` filters call regexp(pattern, text), backed by the Rust regex crate.
            .with_regexp();
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // A long commit holds the only writer connection; let queued writers wait for it.
        let mut writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(120));
        if in_memory {
            // The database lives only as long as a connection to it.
            writer = writer
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let writer = writer.connect_with(options.clone()).await?;
        crate::migrate::sqlite(&writer).await?;
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await?
        };
        Ok(Self {
            writer,
            reader,
            changes: Arc::default(),
        })
    }

    /// Starts a write transaction on the single writer connection, taking the write lock now.
    async fn write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Checks that `call` names an open session of its connector that has not gone idle, marks it
/// active, and
/// answers its mode and applied sequence. Runs first in every batch and close transaction.
async fn touch_session(
    tx: &mut Transaction<'static, Sqlite>,
    call: &SessionCall<'_>,
) -> StoreResult<(SessionMode, i64)> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "UPDATE sessions SET last_active_at = ?1 \
         WHERE id = ?2 AND connector = ?3 AND state = 'open' AND (mode = 'stream' OR last_active_at >= ?4) \
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
    tx: &mut Transaction<'static, Sqlite>,
    call: &SessionCall<'_>,
) -> StoreResult<Option<SessionMode>> {
    let (mode, applied_seq) = touch_session(tx, call).await?;
    Ok((!crate::rows::already_applied(call, applied_seq)).then_some(mode))
}

/// Ends an applied batch: a sequenced one raises the session's applied sequence to its own, in
/// the batch's transaction, so the batch and the record of it commit together.
async fn end_batch(
    tx: &mut Transaction<'static, Sqlite>,
    call: &SessionCall<'_>,
) -> StoreResult<()> {
    if let Some(seq) = call.batch_seq {
        sqlx::query("UPDATE sessions SET applied_seq = ?2 WHERE id = ?1")
            .bind(call.session_id)
            .bind(to_i64(seq))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Writes an import result inside `tx`.
async fn insert_import_result(
    tx: &mut Transaction<'static, Sqlite>,
    r: &ImportResult,
) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO import_results ({IMPORT_RESULT_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
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

/// A list of strings as the JSON array text `json_each(?N)` reads.
fn json_list<'a>(items: impl IntoIterator<Item = &'a str>) -> StoreResult<String> {
    Ok(serde_json::to_string(
        &items.into_iter().collect::<Vec<_>>(),
    )?)
}
