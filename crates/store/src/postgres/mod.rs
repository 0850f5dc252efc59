//! The PostgreSQL backend.
//!
//! The statements are the shared ones of `src/sql/` (mounted below, ADR 0001); this module says
//! how PostgreSQL spells what differs: batches travel as one array parameter per column expanded
//! with `unnest` (far cheaper to bind than multi-row VALUES), entity/instance/schema are JSONB
//! (read back as text), rows are locked where writers could race (every batch and close locks its
//! session row first, `UPDATE sessions … RETURNING`), and commits wake other processes' readers
//! through LISTEN/NOTIFY ([`notify`](self::notify) and `wake.rs`).

/// Row-lock clauses.
macro_rules! for_update {
    () => {
        " FOR UPDATE"
    };
}
macro_rules! for_update_of {
    ($table:literal) => {
        concat!(" FOR UPDATE OF ", $table)
    };
}
macro_rules! for_share {
    () => {
        " FOR SHARE"
    };
}
macro_rules! skip_locked {
    () => {
        " FOR UPDATE SKIP LOCKED"
    };
}
/// Takes `$table` whole before [`empty_table!`], or fails at once (`lock_not_available`) while
/// any other transaction has used it; a session staging rows waits meanwhile. Any row lock the
/// transaction then waits for fails it within 100 ms, so it never holds the table long (nor
/// deadlocks for a second against a drain that holds a listing and waits for the table).
macro_rules! lock_whole {
    ($table:literal) => {
        [
            "SET LOCAL lock_timeout = '100ms'",
            concat!("LOCK TABLE ", $table, " IN ACCESS EXCLUSIVE MODE NOWAIT"),
        ]
    };
}
/// Empties `$table`: a new empty file, no row visited and no row's WAL written.
macro_rules! empty_table {
    ($table:literal) => {
        concat!("TRUNCATE ", $table)
    };
}
/// `$column` is one of the strings of the array parameter `$param` ([`in_list_arg`]).
macro_rules! in_list {
    ($column:literal, $param:literal) => {
        concat!($column, " = ANY(", $param, ")")
    };
}
/// The rows `r` of `records` whose keys are in the list parameter `$param` ([`in_list_arg`]):
/// `= ANY`, one bitmap index scan. Joined from `unnest`, PostgreSQL's custom plans hash the whole
/// table for a list of 1,000 (ADR 0019, eleventh round).
macro_rules! records_with_keys {
    ($param:literal) => {
        concat!("records r WHERE r.key = ANY(", $param, ")")
    };
}
/// `$key` is no key the session `$session` staged (its `unchanged` markers aside): a correlated
/// `NOT EXISTS`, which PostgreSQL runs as one anti-join of both sides (hashed or merged, see
/// [`begin_hashed_joins`]). `NOT IN` would be hashed only within `work_mem`, and past it probe the
/// whole list for every row.
macro_rules! not_staged {
    ($key:literal, $session:literal) => {
        concat!(
            "NOT EXISTS (SELECT 1 FROM staged_records staged WHERE staged.session_id = ",
            $session,
            " AND staged.key = ",
            $key,
            " AND staged.op <> 'unchanged')"
        )
    };
}
/// The elements of a list column (written from [`in_list_arg`]) as the table `$alias`, each in
/// its column `value`.
macro_rules! list_elements {
    ($column:literal, $alias:literal) => {
        concat!("unnest(", $column, ") AS ", $alias, "(value)")
    };
}
/// A JSONB column read as text, named `$name`.
macro_rules! json_col {
    ($column:literal, $name:literal) => {
        concat!($column, "::text AS ", $name)
    };
}
/// JSON text going into a JSONB column.
macro_rules! json_value {
    ($text:literal) => {
        concat!($text, "::jsonb")
    };
}
/// A page of `(id, checksum)` items as it travels back ([`read_items_page`]): as rows.
macro_rules! items_page {
    ($select:literal) => {
        $select
    };
}

/// The `(key, checksum, edited)` rows a batch finds in `records` as they travel back
/// ([`read_existing`]): as rows.
macro_rules! existing_rows {
    ($select:expr) => {
        $select
    };
}

#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/admin.rs"]
mod admin;
#[cfg(test)]
mod cancel_tests;
#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/catalog.rs"]
mod catalog;
#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/changes.rs"]
mod changes;
#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/commit.rs"]
mod commit;
#[cfg(test)]
mod commit_write_tests;
#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/exports.rs"]
mod exports;
mod gin_merge;
#[cfg(test)]
mod hashed_join_tests;
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
mod statistics;
#[allow(clippy::duplicate_mod)] // shared with the other backend (ADR 0001)
#[path = "../sql/unstaging.rs"]
mod unstaging;
#[cfg(test)]
mod unstaging_tests;
mod wake;

use crate::batch::TextRows;
use crate::changes::{ChangeSignal, Logged, PG_CHANNEL};
use crate::coalesce::Coalesced;
use crate::error::{StoreError, StoreResult};
use crate::StoreOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Database, PgPool, Postgres, Row as _};
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::Duration;
use tributary_core::checksum::canonical_json;
use tributary_core::model::StoredRecord;

/// The store the shared statements implement the storage traits for.
type Backend = PgStore;
/// The filter compiler of listings.
type Listing = listing::Postgres;
type Tx = sqlx::Transaction<'static, Postgres>;
type Pool = PgPool;
type Row = sqlx::postgres::PgRow;
type Query<'q> = sqlx::query::Query<'q, Postgres, <Postgres as Database>::Arguments<'q>>;

/// Tributary's store on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Token look-ups only, so that authentication never waits behind slow reads.
    auth: PgPool,
    query_timeout: Duration,
    /// The highest change-log sequence known committed: raised by this process's commits and by
    /// NOTIFYs from other processes.
    changes: Arc<ChangeSignal>,
    /// Starts the LISTEN task once, when a change-log reader first waits.
    listening: Arc<Once>,
    /// Analyzes `records` after large changes.
    statistics: Arc<statistics::Statistics>,
    /// Whether large commits merge the GIN pending list on a second connection
    /// ([`gin_merge`]).
    merge_pending_list: bool,
    /// Deletes ended sessions' staged rows in the background ([`unstaging`]).
    unstaging: Arc<Coalesced>,
}

impl PgStore {
    /// Connects to and migrates the PostgreSQL database at `url`.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
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
            .connect_with(connect.clone())
            .await?;
        let auth = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect);
        let merge_pending_list = gin_merge::allowed(&pool).await?;
        let store = Self {
            pool,
            auth,
            query_timeout: options.query_timeout,
            changes: Arc::default(),
            listening: Arc::new(Once::new()),
            statistics: Arc::default(),
            merge_pending_list,
            unstaging: Arc::default(),
        };
        // What a process that stopped left to unstage.
        store.drain_unstaging();
        Ok(store)
    }

    async fn write(&self) -> StoreResult<Tx> {
        Ok(self.pool.begin().await?)
    }

    /// The pool of single-statement writes.
    fn writer(&self) -> &PgPool {
        &self.pool
    }

    /// The pool of reads.
    fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// The pool of token look-ups.
    fn auth(&self) -> &PgPool {
        &self.auth
    }

    /// After a commit that logged changes: wakes this process's readers, and keeps the
    /// planner's statistics of `records` fresh.
    fn published(&self, logged: &Logged) {
        self.changes.publish(logged);
        self.statistics.note(logged.entries, &self.pool);
    }
}

/// A read-only transaction with one snapshot for all its statements.
async fn snapshot(s: &PgStore) -> StoreResult<Tx> {
    Ok(s.pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?)
}

/// Database connections of this process: (in use, open), both pools.
fn connections(s: &PgStore) -> (u32, u32) {
    let pools = [&s.pool, &s.auth];
    let open: u32 = pools.iter().map(|p| p.size()).sum();
    let idle: u32 = pools.iter().map(|p| p.num_idle() as u32).sum();
    (open.saturating_sub(idle), open)
}

/// A snapshot for a catalog listing, whose statements are cancelled after the query timeout
/// (PostgreSQL's `~` is a backtracking engine, and a filter can ask for a full scan).
async fn bounded_snapshot(s: &PgStore) -> StoreResult<Tx> {
    let mut tx = snapshot(s).await?;
    bound_statements(&mut tx, s.query_timeout).await?;
    Ok(tx)
}

/// Cancels each later statement of `tx` that runs longer than `timeout`.
async fn bound_statements(tx: &mut Tx, timeout: Duration) -> StoreResult<()> {
    // `SET` takes no parameters; the value is a number this process chose.
    sqlx::query(&format!(
        "SET LOCAL statement_timeout = {}",
        timeout.as_millis().max(1)
    ))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What a commit's bulk write holds while it runs: the merger of the GIN pending list, if one
/// was started ([`prepare_bulk_write`]).
type BulkWrite = Option<gin_merge::Merging>;

/// Prepares a transaction that writes a whole session's rows at once (a commit), `writes` of
/// them: GIN keeps new entries in a pending list and merges it into the index when it outgrows
/// this limit, and merging 32 MiB at a time instead of the default 4 MiB took the `INSERT` of
/// an accrue commit of 1,000,000 records from 22.7 s to 18.5 s (ADR 0019). Ends with the
/// transaction; what is left pending is merged by the next writer or autovacuum. A large
/// write also gets a merger on a second connection until the answer is dropped
/// ([`gin_merge`]), which takes the merging off the statement's core.
async fn prepare_bulk_write(s: &PgStore, tx: &mut Tx, writes: u64) -> StoreResult<BulkWrite> {
    sqlx::query("SET LOCAL gin_pending_list_limit = '32MB'")
        .execute(&mut **tx)
        .await?;
    let helped = s.merge_pending_list && writes >= gin_merge::MERGE_BESIDE_WRITES;
    Ok(helped.then(|| gin_merge::start(&s.pool)))
}

#[cfg(test)]
impl PgStore {
    /// A store of its own on `db`'s database, for unit tests of the backend's insides.
    async fn open_for_test(db: &crate::testing::TestDb) -> PgStore {
        PgStore::open(&db.url, StoreOptions::default())
            .await
            .expect("opens")
    }

    /// Closes both pools, then drops `db`'s database.
    async fn close_for_test(self, db: crate::testing::TestDb) {
        self.pool.close().await;
        self.auth.close().await;
        db.cleanup().await;
    }
}

/// Bounds the memory of the next statements' sorts: PostgreSQL's `work_mem` does already.
async fn begin_small_sorts(_tx: &mut Tx) -> StoreResult<()> {
    Ok(())
}

/// Ends [`begin_small_sorts`]: nothing to end on PostgreSQL.
async fn end_small_sorts(_tx: &mut Tx) -> StoreResult<()> {
    Ok(())
}

/// Makes the transaction's next statements join without nested loops, until
/// [`end_hashed_joins`]: for statements that join a session's staged rows with a set as large
/// (the anti-joins of [`not_staged!`], the superseded rows' self-join). Planned from statistics
/// taken before the session staged its rows, the planner estimates them at one row, and with the
/// other side estimated small too (the session's own rows, or a large load not yet analyzed) a
/// nested loop would scan the session's rows once per row of the other side: a replace commit
/// of 900,000 rows ran for over eight minutes in its superseded rows' `DELETE`. Hashed or merged
/// they are linear whatever the estimates.
async fn begin_hashed_joins(tx: &mut Tx) -> StoreResult<()> {
    sqlx::query("SET LOCAL enable_nestloop = off")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Gives the planner its nested loops back after [`begin_hashed_joins`].
async fn end_hashed_joins(tx: &mut Tx) -> StoreResult<()> {
    sqlx::query("SET LOCAL enable_nestloop TO DEFAULT")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Whether a read transaction can be held open while other calls run: always, with a pool.
fn can_hold_snapshot(_s: &PgStore) -> bool {
    true
}

/// Ends what [`bounded_snapshot`] set up: `SET LOCAL` ends with the transaction.
async fn end_bounded(_tx: &mut Tx) {}

/// A list parameter for [`in_list!`]: a `text[]`.
fn in_list_arg<'a>(items: impl IntoIterator<Item = &'a str>) -> StoreResult<Vec<&'a str>> {
    Ok(items.into_iter().collect())
}

/// The table expression `u` of a batch bound by [`bind_rows`] from parameter `$first` on (one
/// `text[]` per column): its `columns` and `ord`, each row's 1-based position.
fn rowset(first: usize, columns: &[&str]) -> String {
    let arrays: Vec<String> = (0..columns.len())
        .map(|i| format!("${}::text[]", first + i))
        .collect();
    format!(
        "unnest({}) WITH ORDINALITY AS u({}, ord)",
        arrays.join(", "),
        columns.join(", ")
    )
}

/// Binds a batch as the last parameters: one array per column.
fn bind_rows<'q>(mut query: Query<'q>, rows: TextRows<'q>) -> StoreResult<Query<'q>> {
    let mut columns: Vec<Vec<&str>> = vec![Vec::new(); rows.width()];
    for row in rows.rows() {
        for (column, cell) in columns.iter_mut().zip(row) {
            column.push(cell);
        }
    }
    for column in columns {
        query = query.bind(column);
    }
    Ok(query)
}

/// Locks `connector`'s open stream sessions, as every bulk change (a commit, a sweep, a delta's
/// removals) does before it takes the change-log counter: a stream batch holds its record rows
/// and then takes the counter, so a bulk change must wait out batches in flight rather than
/// deadlock.
async fn lock_stream_sessions(tx: &mut Tx, connector: &str) -> StoreResult<()> {
    sqlx::query(
        "SELECT 1 FROM sessions WHERE connector = $1 AND state = 'open' AND mode = 'stream' \
         ORDER BY id FOR UPDATE",
    )
    .bind(connector)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whose open sessions a deletion waits for.
enum OpenSessionsOf<'a> {
    EntityType(&'a str),
    Connector(&'a str),
}

/// Locks the open sessions a deletion ends, so batches and commits in flight finish first.
/// Accrue/replace sessions are locked before stream sessions: a commit holds its own session row
/// and then locks its connector's stream sessions, so the other order could deadlock (ADR 0003).
async fn lock_open_sessions(tx: &mut Tx, of: OpenSessionsOf<'_>) -> StoreResult<()> {
    let (sql, value) = match of {
        OpenSessionsOf::EntityType(slug) => (
            "SELECT 1 FROM sessions s JOIN connectors c ON c.id = s.connector \
             WHERE c.entity_type = $1 AND s.state = 'open' ORDER BY (s.mode = 'stream'), s.id \
             FOR UPDATE OF s",
            slug,
        ),
        OpenSessionsOf::Connector(id) => (
            "SELECT 1 FROM sessions WHERE connector = $1 AND state = 'open' \
             ORDER BY (mode = 'stream'), id FOR UPDATE",
            id,
        ),
    };
    sqlx::query(sql).bind(value).execute(&mut **tx).await?;
    Ok(())
}

/// Queues the wake-up other processes receive when the transaction commits.
async fn notify(tx: &mut Tx, logged: &Logged) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(PG_CHANNEL)
        .bind(logged.payload())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A record row with `entity`/`instance` back in canonical JSON text. JSONB prints its own
/// normal form (`{"a": 1}`, keys by length); the domain stored canonical text (RFC 8785) and
/// both backends hand the same text back, so anything hashing or comparing it agrees.
fn record_row(row: &Row) -> StoreResult<StoredRecord> {
    let mut r = crate::rows::record(row)?;
    r.entity = canonical(&r.entity)?;
    r.instance = canonical(&r.instance)?;
    Ok(r)
}

/// Reads a page of `(id, checksum)` items (`items_page!`).
async fn read_items_page(pool: &PgPool, query: Query<'_>) -> StoreResult<Vec<(String, String)>> {
    let rows = query.fetch_all(pool).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// Reads what a batch finds in `records` (`existing_rows!`).
async fn read_existing(tx: &mut Tx, query: Query<'_>) -> StoreResult<Vec<(String, String, bool)>> {
    let rows = query.fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect()
}

fn canonical(text: &str) -> StoreResult<String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("record JSON: {e}")))?;
    Ok(canonical_json(&value)?)
}

async fn wait_for_changes(s: &PgStore, entity_type: &str, after: u64) {
    // One LISTEN connection per process, opened by the first reader that waits (a process that
    // only contributes never opens it).
    s.listening.call_once(|| {
        tokio::spawn(wake::listen(s.pool.clone(), Arc::downgrade(&s.changes)));
    });
    s.changes.wait_above(entity_type, after).await
}
