//! The SQLite backend: one database file in WAL mode.
//!
//! Two pools: a writer pool of exactly one connection, through which every write transaction goes
//! (`BEGIN IMMEDIATE`), so writers queue in-process instead of failing with SQLITE_BUSY when a
//! deferred transaction upgrades from read to write; and a reader pool for plain reads, which WAL
//! lets run alongside the writer. With one writer, no statement needs a row lock.
//!
//! The statements are the shared ones of `src/sql/` (mounted below, ADR 0001); this module says
//! how SQLite spells what differs: batch parameters are one JSON text read with `json_each`, JSON
//! columns are text, and there are no row locks.

/// Row-lock clauses: none on SQLite (one writer at a time).
macro_rules! for_update {
    () => {
        ""
    };
}
macro_rules! for_update_of {
    ($table:literal) => {
        ""
    };
}
macro_rules! for_share {
    () => {
        ""
    };
}
macro_rules! skip_locked {
    () => {
        ""
    };
}
/// Nothing to take before [`empty_table!`]: the write transaction (`BEGIN IMMEDIATE`) already
/// keeps every other writer out.
macro_rules! lock_whole {
    ($table:literal) => {
        [""; 0]
    };
}
/// Empties `$table`: a `DELETE` without `WHERE`, which SQLite runs as its truncate
/// optimization (the table's pages freed without visiting each row or index entry).
macro_rules! empty_table {
    ($table:literal) => {
        concat!("DELETE FROM ", $table)
    };
}
/// `$column` is one of the strings of the list parameter `$param` ([`in_list_arg`]).
macro_rules! in_list {
    ($column:literal, $param:literal) => {
        concat!($column, " IN (SELECT value FROM json_each(", $param, "))")
    };
}
/// The rows `r` of `records` whose keys are in the list parameter `$param` ([`in_list_arg`]):
/// the list joined to `records`. Written as `key IN (…)`, SQLite first builds a temporary
/// index of the list, a third of the read's time (ADR 0019, eleventh round). The records are
/// read from the index of their keys with the columns a look-up wants (migration 20), not from
/// the table (ADR 0019, twenty-ninth round).
macro_rules! records_with_keys {
    ($param:literal) => {
        concat!(
            "json_each(",
            $param,
            ") AS k JOIN records r INDEXED BY records_key_found ON r.key = k.value"
        )
    };
}
/// `$key` is no key the session `$session` staged (its `unchanged` markers aside): the
/// session's keys listed once and probed per row. Staged rows are indexed by `session_id` alone
/// (ADR 0019, twenty-sixth round), and SQLite plans the correlated `NOT EXISTS` as a search of
/// the session's rows for every row tested: rows times staged rows. The list is built from the
/// keys in order: taken as staged, at random, building it took twice as long (a million keys,
/// 5.7 s against 2.9 s with the sort).
macro_rules! not_staged {
    ($key:literal, $session:literal) => {
        concat!(
            $key,
            " NOT IN (SELECT key FROM staged_records WHERE session_id = ",
            $session,
            " AND op <> 'unchanged' ORDER BY key)"
        )
    };
}
/// The elements of a list column (written from [`in_list_arg`]) as the table `$alias`, each in
/// its column `value`.
macro_rules! list_elements {
    ($column:literal, $alias:literal) => {
        concat!("json_each(", $column, ") AS ", $alias)
    };
}
/// A JSON column read as text, named `$name`: stored as text already.
macro_rules! json_col {
    ($column:literal, $name:literal) => {
        $column
    };
}
/// JSON text going into a JSON column: stored as is.
macro_rules! json_value {
    ($text:literal) => {
        $text
    };
}
/// A page of `(id, checksum)` items as it travels back ([`read_items_page`]): one text of
/// length-prefixed items (`items.rs`).
macro_rules! items_page {
    ($select:literal) => {
        concat!(
            "SELECT string_agg(octet_length(id) || ':' || id || ",
            "octet_length(checksum) || ':' || checksum, '') FROM (",
            $select,
            ") AS page"
        )
    };
}

/// The `(key, checksum, edited)` rows a batch finds in `records` as they travel back
/// ([`read_existing`]): one JSON text of rows, for the reason `items_page!` gives.
macro_rules! existing_rows {
    ($select:expr) => {
        concat!(
            "SELECT json_group_array(json_array(key, checksum, edited)) FROM (",
            $select,
            ") AS found"
        )
    };
}

#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/admin.rs"]
mod admin;
#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/catalog.rs"]
mod catalog;
#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/changes.rs"]
mod changes;
#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/commit.rs"]
mod commit;
#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/exports.rs"]
mod exports;
mod items;
mod listing;
#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/records.rs"]
mod records;
#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/sessions.rs"]
mod sessions;
#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/sources.rs"]
mod sources;
#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/unstaging.rs"]
mod unstaging;

use crate::batch::TextRows;
use crate::changes::{ChangeSignal, Logged};
use crate::coalesce::Coalesced;
use crate::error::{StoreError, StoreResult};
use crate::StoreOptions;
use backon::{BackoffBuilder, ExponentialBuilder};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Database, Row as _, Sqlite, SqlitePool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tributary_core::model::StoredRecord;

/// The store the shared statements implement the storage traits for.
type Backend = SqliteStore;
/// The filter compiler of listings.
type Listing = listing::Sqlite;
type Tx = sqlx::Transaction<'static, Sqlite>;
type Pool = SqlitePool;
type Row = sqlx::sqlite::SqliteRow;
type Query<'q> = sqlx::query::Query<'q, Sqlite, <Sqlite as Database>::Arguments<'q>>;

/// Tributary's store on a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Token look-ups only, so that authentication never waits behind slow reads.
    auth: SqlitePool,
    query_timeout: Duration,
    /// One connection serves everything (`sqlite::memory:`).
    in_memory: bool,
    /// Wakes this process's change-log readers after a commit that logged changes. (Another
    /// process on the same file is not woken; Watch's periodic re-read covers it.)
    changes: Arc<ChangeSignal>,
    /// Deletes ended sessions' staged rows in the background ([`unstaging`]).
    unstaging: Arc<Coalesced>,
}

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

impl SqliteStore {
    /// Opens (creating if needed) and migrates the SQLite database at `url`: a `sqlite:` URL or
    /// a plain file path. An in-memory database (`sqlite::memory:`) works for experiments: it
    /// gets a single connection that reads and writes, kept open for the store's lifetime.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, StoreOptions::default()).await
    }

    /// [`SqliteStore::open`] with `options`.
    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
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
            match Self::open_once(url, &options).await {
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

    async fn open_once(url: &str, store: &StoreOptions) -> Result<Self, StoreError> {
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
            // table's indexes cached; it is filled only as pages are used. Readers then take a
            // smaller one (`READER_PAGE_CACHE`).
            .pragma("cache_size", PAGE_CACHE)
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
        let (reader, auth) = if in_memory {
            (writer.clone(), writer.clone())
        } else {
            let options = options.pragma("cache_size", READER_PAGE_CACHE);
            let reader = SqlitePoolOptions::new()
                .max_connections(store.max_connections.clamp(1, 8))
                .acquire_timeout(store.acquire_timeout)
                .connect_with(options.clone())
                .await?;
            let auth = SqlitePoolOptions::new()
                .max_connections(2)
                .acquire_timeout(store.acquire_timeout)
                .connect_lazy_with(options);
            (reader, auth)
        };
        let store = Self {
            writer,
            reader,
            auth,
            query_timeout: store.query_timeout,
            in_memory,
            changes: Arc::default(),
            unstaging: Arc::default(),
        };
        // What a process that stopped left to unstage.
        store.drain_unstaging();
        Ok(store)
    }

    /// Starts a write transaction on the single writer connection, taking the write lock now.
    async fn write(&self) -> StoreResult<Tx> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The pool of single-statement writes.
    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The pool of reads.
    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// The pool of token look-ups.
    fn auth(&self) -> &SqlitePool {
        &self.auth
    }

    /// After a commit that logged changes: wakes this process's readers. (SQLite's planner
    /// needs no fresh statistics to use the indexes.)
    fn published(&self, logged: &Logged) {
        self.changes.publish(logged);
    }
}

/// A read transaction: WAL gives all its statements one snapshot.
async fn snapshot(s: &SqliteStore) -> StoreResult<Tx> {
    Ok(s.reader.begin().await?)
}

/// Database connections of this process: (in use, open); in memory, all pools are one.
fn connections(s: &SqliteStore) -> (u32, u32) {
    let pools: Vec<&SqlitePool> = if s.in_memory {
        vec![&s.writer]
    } else {
        vec![&s.writer, &s.reader, &s.auth]
    };
    let open: u32 = pools.iter().map(|p| p.size()).sum();
    let idle: u32 = pools.iter().map(|p| p.num_idle() as u32).sum();
    (open.saturating_sub(idle), open)
}

/// A snapshot for a catalog listing, whose statements are interrupted (SQLITE_INTERRUPT) once
/// the query timeout has passed.
async fn bounded_snapshot(s: &SqliteStore) -> StoreResult<Tx> {
    let mut tx = snapshot(s).await?;
    bound_statements(&mut tx, s.query_timeout).await?;
    Ok(tx)
}

/// Interrupts `tx`'s statements once `timeout` has passed from now: SQLite calls the progress
/// handler every few thousand steps. [`end_bounded`] removes it.
async fn bound_statements(tx: &mut Tx, timeout: Duration) -> StoreResult<()> {
    let deadline = std::time::Instant::now() + timeout;
    tx.lock_handle()
        .await?
        .set_progress_handler(10_000, move || std::time::Instant::now() < deadline);
    Ok(())
}

/// Whether a read transaction can be held open while other calls run: not in memory, where the
/// database has a single connection.
fn can_hold_snapshot(s: &SqliteStore) -> bool {
    !s.in_memory
}

/// Removes the handler [`bounded_snapshot`] set, before the connection goes back to the pool.
async fn end_bounded(tx: &mut Tx) {
    if let Ok(mut handle) = tx.lock_handle().await {
        handle.remove_progress_handler();
    }
}

/// A list parameter for [`in_list!`]: one JSON array text.
fn in_list_arg<'a>(items: impl IntoIterator<Item = &'a str>) -> StoreResult<String> {
    Ok(serde_json::to_string(
        &items.into_iter().collect::<Vec<_>>(),
    )?)
}

/// The table expression `u` of a batch bound by [`bind_rows`] at parameter `$first`: its
/// `columns` (text) and `ord`, each row's 1-based position.
fn rowset(first: usize, columns: &[&str]) -> String {
    let picks: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, column)| format!("json_extract(j.value, '$[{i}]') AS {column}"))
        .collect();
    format!(
        "(SELECT {}, j.key + 1 AS ord FROM json_each(${first}) AS j) AS u",
        picks.join(", ")
    )
}

/// Binds a batch as the last parameter: one JSON array of rows.
fn bind_rows<'q>(query: Query<'q>, rows: TextRows<'_>) -> StoreResult<Query<'q>> {
    let rows: Vec<&[&str]> = rows.rows().collect();
    Ok(query.bind(serde_json::to_string(&rows)?))
}

/// What a commit's bulk write holds while it runs: nothing on SQLite.
#[derive(Debug)]
struct BulkWrite;

/// Settings of a transaction that writes a whole session's rows at once: none on SQLite, whose
/// one writer has no second connection to share the work with.
async fn prepare_bulk_write(
    _s: &SqliteStore,
    _tx: &mut Tx,
    _writes: u64,
) -> StoreResult<BulkWrite> {
    Ok(BulkWrite)
}

/// The writer's page cache, `PRAGMA cache_size` (negative: KiB): 32 MiB ([`SqliteStore::open`];
/// readers keep [`READER_PAGE_CACHE`]).
const PAGE_CACHE: &str = "-32768";

/// The page cache of each read and token look-up connection: 4 MiB, enough for the upper
/// levels of a multi-million-row table's indexes. Reads walk keys in order (pages, exports,
/// range-based sync), which the OS's cache serves as well; with the writer's 32 MiB, up to
/// ten more connections could together have cached 320 MiB that SQLite seldom gives back
/// (ADR 0019, seventeenth round).
const READER_PAGE_CACHE: &str = "-4096";

/// The `cache_size` a statement of [`begin_small_sorts`] runs under: 1 MiB.
const SMALL_SORT_CACHE: &str = "-1024";

/// Makes the transaction's next statements sort in at most 1 MiB of memory, until
/// [`end_small_sorts`]. SQLite sizes a sort's in-memory buffer by the connection's page cache
/// and allocates it whole once a sort outgrows it: counting an accrue session's noted keys
/// (a million keys, 56 MB to sort) took a 32 MiB buffer, a quarter of the server's peak RSS at
/// a million records. Past its buffer a sort merges runs from a temporary file, and with 1 MiB
/// that count took 0.9–1.4 s against 1.5–1.8 s with 32 MiB (ADR 0019, sixteenth round).
/// `cache_size` is the connection's, not the transaction's: [`end_small_sorts`] must follow,
/// whatever the statements' outcome. A commit dropped between the two (only a process ending
/// drops one: a close runs on its own task, ADR 0019) would leave the writer at 1 MiB until the
/// next commit that sorts (an accrue commit's count, a replace's swept-record log). Shrinking it drops cached pages only if SQLite's page caches together hold
/// more than they then may.
async fn begin_small_sorts(tx: &mut Tx) -> StoreResult<()> {
    set_cache_size(tx, SMALL_SORT_CACHE).await
}

/// Gives the connection its page cache back after [`begin_small_sorts`].
async fn end_small_sorts(tx: &mut Tx) -> StoreResult<()> {
    set_cache_size(tx, PAGE_CACHE).await
}

async fn set_cache_size(tx: &mut Tx, size: &str) -> StoreResult<()> {
    sqlx::query(&format!("PRAGMA cache_size = {size}"))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Nothing to set before a join of staged rows on SQLite, which has no other plan for
/// [`not_staged!`] than its list, and looks the superseded rows up by rowid.
async fn begin_hashed_joins(_tx: &mut Tx) -> StoreResult<()> {
    Ok(())
}

/// Ends [`begin_hashed_joins`]: nothing to end on SQLite.
async fn end_hashed_joins(_tx: &mut Tx) -> StoreResult<()> {
    Ok(())
}

/// Row locks of open sessions taken before a bulk change: none on SQLite.
async fn lock_stream_sessions(_tx: &mut Tx, _connector: &str) -> StoreResult<()> {
    Ok(())
}

/// Whose open sessions a deletion waits for (PostgreSQL only).
enum OpenSessionsOf<'a> {
    EntityType(#[allow(dead_code)] &'a str),
    Connector(#[allow(dead_code)] &'a str),
}

async fn lock_open_sessions(_tx: &mut Tx, _of: OpenSessionsOf<'_>) -> StoreResult<()> {
    Ok(())
}

/// Other processes are not told of commits on SQLite (see [`SqliteStore::changes`]).
async fn notify(_tx: &mut Tx, _logged: &Logged) -> StoreResult<()> {
    Ok(())
}

/// Reads a page of `(id, checksum)` items (`items_page!`): one row holding the whole page,
/// because sqlx hands SQLite's rows over from its worker thread one at a time, at about three
/// times what SQLite itself spends reading one (docs/BENCHMARKS.md, range-based sync).
async fn read_items_page(
    pool: &SqlitePool,
    query: Query<'_>,
) -> StoreResult<Vec<(String, String)>> {
    let text: Option<String> = query.fetch_one(pool).await?.try_get(0)?;
    items::parse(text.as_deref().unwrap_or_default())
}

/// Reads what a batch finds in `records` (`existing_rows!`): one row holding them all, since a
/// row handed over from sqlx's worker thread costs more than SQLite's probe that found it (an
/// unchanged re-send reads a row per record; docs/BENCHMARKS.md, tenth round).
async fn read_existing(tx: &mut Tx, query: Query<'_>) -> StoreResult<Vec<(String, String, bool)>> {
    let text: String = query.fetch_one(&mut **tx).await?.try_get(0)?;
    let rows: Vec<(String, String, u8)> = serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(format!("records found for a batch: {e}")))?;
    Ok(rows
        .into_iter()
        .map(|(key, checksum, edited)| (key, checksum, edited != 0))
        .collect())
}

/// A record row as the domain reads it.
fn record_row(row: &Row) -> StoreResult<StoredRecord> {
    crate::rows::record(row)
}

async fn wait_for_changes(s: &SqliteStore, entity_type: &str, after: u64) {
    s.changes.wait_above(entity_type, after).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn cache_size(tx: &mut Tx) -> i64 {
        sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&mut **tx)
            .await
            .expect("reads cache_size")
    }

    /// A store in a file of a temporary directory (kept as long as the directory is).
    async fn file_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("tributary.db");
        let store = SqliteStore::open(&path.display().to_string())
            .await
            .expect("opens the store");
        (dir, store)
    }

    /// A sort many times the small buffer still comes out right (SQLite merges runs from a
    /// temporary file), and the connection gets its page cache back afterwards.
    #[tokio::test]
    async fn small_sorts_merge_through_a_file_and_give_the_page_cache_back() {
        let (_dir, store) = file_store().await;
        let mut tx = store.writer.begin().await.expect("begins");
        assert_eq!(cache_size(&mut tx).await, -32768);

        begin_small_sorts(&mut tx)
            .await
            .expect("shrinks the sort buffer");
        assert_eq!(cache_size(&mut tx).await, -1024);
        // 100,000 distinct 40-character keys, each twice: ~9 MB to sort.
        let distinct: i64 = sqlx::query_scalar(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 199999) \
             SELECT count(*) FROM (SELECT printf('%040d', i / 2) AS k FROM n GROUP BY k)",
        )
        .fetch_one(&mut *tx)
        .await
        .expect("sorts");
        assert_eq!(distinct, 100_000);
        end_small_sorts(&mut tx)
            .await
            .expect("restores the page cache");

        assert_eq!(cache_size(&mut tx).await, -32768);
        tx.rollback().await.expect("rolls back");
    }

    /// The `column` of each row SQLite answers to `explain` (`EXPLAIN` or `EXPLAIN QUERY
    /// PLAN`) of `statement`, its `params` parameters bound.
    async fn explain(
        tx: &mut Tx,
        explain: &str,
        column: &str,
        statement: &str,
        params: usize,
    ) -> Vec<String> {
        let explained = format!("{explain} {statement}");
        let mut query = sqlx::query(&explained);
        for _ in 0..params {
            query = query.bind("session");
        }
        let rows = query.fetch_all(&mut **tx).await.expect("explains");
        rows.iter()
            .map(|row| row.try_get::<String, _>(column).expect("has the column"))
            .collect()
    }

    /// The opcodes of the program SQLite compiles for `statement`.
    async fn opcodes(tx: &mut Tx, statement: &str, params: usize) -> Vec<String> {
        explain(tx, "EXPLAIN", "opcode", statement, params).await
    }

    /// The details of SQLite's plan of `statement`.
    async fn plan(tx: &mut Tx, statement: &str, params: usize) -> Vec<String> {
        explain(tx, "EXPLAIN QUERY PLAN", "detail", statement, params).await
    }

    /// The drain's emptying of `staged_records` whole is SQLite's truncate optimization: the
    /// table's and its index's pages cleared, no row visited (as a `WHERE` would, checked too
    /// so the test can tell).
    #[tokio::test]
    async fn emptying_staged_rows_whole_visits_no_row() {
        let (_dir, store) = file_store().await;
        let mut tx = store.writer.begin().await.expect("begins");
        let program = opcodes(&mut tx, empty_table!("staged_records"), 0).await;
        assert!(program.iter().any(|op| op == "Clear"), "{program:?}");
        assert!(!program.iter().any(|op| op == "Delete"), "{program:?}");
        let filtered = "DELETE FROM staged_records WHERE op <> ''";
        let program = opcodes(&mut tx, filtered, 0).await;
        assert!(!program.iter().any(|op| op == "Clear"), "{program:?}");
        tx.rollback().await.expect("rolls back");
    }

    /// Unstaging deletes a session's staged rows in one pass: no `RowSet` of every staged rowid
    /// held until the end (the list form, checked too so the test can tell, builds one). Its
    /// notes (`staged_unchanged`, one row per batch) still go in two passes, because the table
    /// has a foreign key: a rowid per batch, not per record.
    #[tokio::test]
    async fn unstaging_deletes_in_one_pass() {
        let (_dir, store) = file_store().await;
        let mut tx = store.writer.begin().await.expect("begins");
        let [staged_records, _staged_unchanged] = unstaging::UNSTAGE;
        let program = opcodes(&mut tx, staged_records, 1).await;
        assert!(program.iter().any(|op| op == "Delete"), "{program:?}");
        assert!(!program.iter().any(|op| op == "RowSetAdd"), "{program:?}");
        let listed = concat!(
            "DELETE FROM staged_records WHERE ",
            in_list!("session_id", "$1")
        );
        let program = opcodes(&mut tx, listed, 1).await;
        assert!(
            program.iter().any(|op| op == "RowSetAdd"),
            "{listed}: {program:?}"
        );
        tx.rollback().await.expect("rolls back");
    }

    /// The rows a session did not stage are found by one list of its keys, built once
    /// ([`not_staged!`]): SQLite plans the correlated `NOT EXISTS` the statement had before
    /// staged rows lost their key index (checked too, so the test can tell) as a search of the
    /// session's rows for every record.
    #[tokio::test]
    async fn rows_not_staged_are_found_by_one_list() {
        let (_dir, store) = file_store().await;
        let mut tx = store.writer.begin().await.expect("begins");
        for (statement, correlated) in [
            (
                concat!(
                    "DELETE FROM records WHERE connector = $1 AND ",
                    not_staged!("records.key", "$2")
                ),
                false,
            ),
            (
                "DELETE FROM records WHERE connector = $1 AND NOT EXISTS (SELECT 1 FROM \
                 staged_records s WHERE s.session_id = $2 AND s.key = records.key)",
                true,
            ),
        ] {
            let details = plan(&mut tx, statement, 2).await;
            let lists = details.iter().any(|d| d.contains("LIST SUBQUERY"));
            let per_row = details.iter().any(|d| d.contains("CORRELATED"));
            assert_eq!(
                (lists && !per_row, per_row),
                (!correlated, correlated),
                "{details:?}"
            );
        }
        tx.rollback().await.expect("rolls back");
    }

    /// A batch's look-up of the records it names reads the index of their keys and columns
    /// alone, never the table; the same join without `INDEXED BY` (checked too, so the test can
    /// tell) goes through the primary key's index to the table.
    #[tokio::test]
    async fn records_are_looked_up_in_one_index() {
        let (_dir, store) = file_store().await;
        let mut tx = store.writer.begin().await.expect("begins");
        let details = plan(&mut tx, records::FIND_EXISTING, 1).await;
        assert!(
            details
                .iter()
                .any(|d| d.contains("USING COVERING INDEX records_key_found")),
            "{details:?}"
        );
        let unnamed = records::FIND_EXISTING.replace(" INDEXED BY records_key_found", "");
        assert_ne!(unnamed, records::FIND_EXISTING);
        let details = plan(&mut tx, &unnamed, 1).await;
        assert!(
            !details.iter().any(|d| d.contains("COVERING INDEX")),
            "{details:?}"
        );
        tx.rollback().await.expect("rolls back");
    }

    /// Only the writer keeps a large page cache; every read and token look-up connection a
    /// file store opens has the small one.
    #[tokio::test]
    async fn readers_cache_less_than_the_writer() {
        let (_dir, store) = file_store().await;
        for (pool, expected) in [
            (&store.writer, -32768),
            (&store.reader, -4096),
            (&store.auth, -4096),
        ] {
            let mut tx = pool.begin().await.expect("begins");
            assert_eq!(cache_size(&mut tx).await, expected);
            tx.rollback().await.expect("rolls back");
        }
    }
}
