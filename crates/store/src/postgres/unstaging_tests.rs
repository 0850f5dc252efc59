//! The unstaging drain on PostgreSQL, where emptying `staged_records` whole needs the table to
//! itself: it truncates when it can take it, and deletes one session at a time when another
//! transaction is using it (SQLite's one writer never meets that).

use super::PgStore;
use crate::testing::TestDb;

const ENDED: &str = "3f1e2d4c-unstaging-test";

/// Opens a store and awaits the drain it starts at open, so the test's own drain is the only one.
async fn opened(db: &TestDb) -> PgStore {
    let store = PgStore::open_for_test(db).await;
    let waited = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !store.unstaging.is_idle() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
    waited.await.expect("the drain at open ends");
    store
}

/// Lists an ended session with `rows` staged rows, as its ending transaction leaves it.
async fn end_with_staged_rows(store: &PgStore, rows: i64) {
    for statement in [
        "INSERT INTO sessions (id, connector, mode, state, opened_at, last_active_at, closed_at) \
         VALUES ($1, 'c1', 'accrue', 'committed', 0, 0, 0)",
        "INSERT INTO staged_records (session_id, key, id, op) \
         SELECT $1, lpad(i::text, 40, '0'), 'C' || i, 'keep' FROM generate_series(1, $2) AS i",
        "INSERT INTO unstaging (session_id) VALUES ($1)",
    ] {
        let query = sqlx::query(statement).bind(ENDED);
        let query = if statement.contains("$2") {
            query.bind(rows)
        } else {
            query
        };
        query.execute(&store.pool).await.expect("ends a session");
    }
}

/// The file behind `staged_records`: a truncation gives the table a new one.
async fn staged_file(store: &PgStore) -> i64 {
    sqlx::query_scalar("SELECT pg_relation_filenode('staged_records')::bigint")
        .fetch_one(&store.pool)
        .await
        .expect("reads the file node")
}

async fn left(store: &PgStore) -> (i64, i64) {
    sqlx::query_as("SELECT (SELECT count(*) FROM staged_records), (SELECT count(*) FROM unstaging)")
        .fetch_one(&store.pool)
        .await
        .expect("counts")
}

tributary_test_harness::postgres_test! {
    /// With no session open, the drain truncates: the table gets a new file, nothing is left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_no_session_open_the_drain_truncates() {
        let db = TestDb::postgres().await;
        let store = opened(&db).await;
        end_with_staged_rows(&store, 3_000).await;
        let before = staged_file(&store).await;
        store.unstage_listed().await.expect("drains");
        assert_eq!(left(&store).await, (0, 0));
        assert_ne!(staged_file(&store).await, before, "truncated");
        store.close_for_test(db).await;
    }

    /// With nothing listed (every idle-expiry pass in a quiet process) the drain takes nothing:
    /// no lock on the table, no truncation of it, an open session's rows untouched.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_nothing_listed_the_drain_takes_nothing() {
        let db = TestDb::postgres().await;
        let store = opened(&db).await;
        end_with_staged_rows(&store, 10).await;
        sqlx::query("DELETE FROM unstaging")
            .execute(&store.pool)
            .await
            .expect("unlists");
        let before = staged_file(&store).await;
        store.unstage_listed().await.expect("drains");
        assert_eq!(left(&store).await, (10, 0));
        assert_eq!(staged_file(&store).await, before, "not truncated");
        store.close_for_test(db).await;
    }

    /// A transaction using `staged_records` (a batch being staged, in life) keeps the drain
    /// from taking the table: it deletes the ended session's rows by themselves instead, at
    /// once, without waiting for that transaction or failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_table_in_use_is_drained_one_session_at_a_time() {
        let db = TestDb::postgres().await;
        let store = opened(&db).await;
        end_with_staged_rows(&store, 3_000).await;
        let before = staged_file(&store).await;
        let mut using = store.pool.begin().await.expect("begins");
        sqlx::query("SELECT count(*) FROM staged_records")
            .execute(&mut *using)
            .await
            .expect("reads");
        store.unstage_listed().await.expect("drains");
        assert_eq!(left(&store).await, (0, 0));
        assert_eq!(staged_file(&store).await, before, "not truncated");
        using.rollback().await.expect("rolls back");
        store.close_for_test(db).await;
    }
}
