//! Test databases for this crate's conformance suite and the workspace's end-to-end tests.
//!
//! [`TestDb::sqlite`] makes a fresh database file in a temporary directory.
//! [`TestDb::postgres`] creates a fresh database `tributary_test_<uuid>` on the server named by
//! `TRIBUTARY_TEST_DATABASE_URL`, so tests run in parallel without seeing each other's data. It
//! panics when the variable is unset or the server unreachable: a PostgreSQL test never passes
//! without PostgreSQL. Outside CI and without the variable, the PostgreSQL tests are built
//! `#[ignore]`d instead (`tributary-test-harness`), so `cargo test` reports them as ignored.

pub use crate::test_hooks::{pause_session_commit, CommitPause};
use sqlx::{Connection, PgConnection, SqliteConnection};
use std::sync::Arc;
use tributary_core::store::Store;

/// The environment variable naming the PostgreSQL server tests create databases on.
pub const DATABASE_URL_VAR: &str = "TRIBUTARY_TEST_DATABASE_URL";

/// A fresh, migrated database and the store on it. Dropping it removes the database.
pub struct TestDb {
    pub store: Arc<dyn Store>,
    /// The URL the store was opened on (give it to a server under test).
    pub url: String,
    guard: Guard,
}

enum Guard {
    /// The directory holding the SQLite file; removed on drop.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    /// The PostgreSQL database to drop, through the server URL it was created on.
    Postgres {
        server_url: String,
        database: String,
        dropped: bool,
    },
}

impl TestDb {
    /// A fresh SQLite database file in a temporary directory.
    pub async fn sqlite() -> TestDb {
        let dir =
            tempfile::tempdir().unwrap_or_else(|e| panic!("creating a temporary directory: {e}"));
        let url = format!("sqlite://{}", dir.path().join("tributary.db").display());
        let store = crate::open(&url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
        TestDb {
            store,
            url,
            guard: Guard::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database on the server of `TRIBUTARY_TEST_DATABASE_URL`; panics when
    /// it is unset or unreachable.
    pub async fn postgres() -> TestDb {
        let server_url = postgres_server_url();
        let database = format!("tributary_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&server_url)
            .await
            .unwrap_or_else(|e| {
                panic!("{DATABASE_URL_VAR} is set but {server_url} is unreachable: {e}")
            });
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating test database {database}: {e}"));
        let _ = conn.close().await;
        let url = with_database(&server_url, &database);
        let store = match crate::open(&url).await {
            Ok(store) => store,
            Err(e) => {
                drop_database(&server_url, &database).await;
                panic!("opening {url}: {e}");
            }
        };
        TestDb {
            store,
            url,
            guard: Guard::Postgres {
                server_url,
                database,
                dropped: false,
            },
        }
    }

    /// Removes the database now (PostgreSQL: `DROP DATABASE ... WITH (FORCE)`).
    pub async fn cleanup(mut self) {
        if let Guard::Postgres {
            server_url,
            database,
            dropped,
        } = &mut self.guard
        {
            drop_database(server_url, database).await;
            *dropped = true;
        }
    }

    /// Test support: runs one SQL statement on the database directly; returns rows affected.
    pub async fn execute_sql(&self, sql: &str) -> u64 {
        if crate::is_postgres_url(&self.url) {
            let mut conn = PgConnection::connect(&self.url)
                .await
                .unwrap_or_else(|e| panic!("connecting: {e}"));
            let done = sqlx::query(sql)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = conn.close().await;
            done.rows_affected()
        } else {
            let mut conn = SqliteConnection::connect(&self.url)
                .await
                .unwrap_or_else(|e| panic!("connecting: {e}"));
            let done = sqlx::query(sql)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = conn.close().await;
            done.rows_affected()
        }
    }

    /// Test support: runs `sql` (as [`TestDb::execute_sql`]) until it affects `expected` rows,
    /// for what a background task of the store finishes after a call has answered (an ended
    /// session's staged rows are deleted after its end). Gives up after 30 s and answers the
    /// last count, for the caller's assertion to show.
    pub async fn execute_sql_until(&self, sql: &str, expected: u64) -> u64 {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let affected = self.execute_sql(sql).await;
            if affected == expected || tokio::time::Instant::now() >= deadline {
                return affected;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Test support: moves session `session_id`'s last activity `by` into the past, as if it
    /// had been idle that long (the idle timeout is judged against it).
    pub async fn backdate_session(&self, session_id: &str, by: std::time::Duration) {
        // Session ids are UUIDs; refuse anything else rather than quote it.
        assert!(
            uuid::Uuid::try_parse(session_id).is_ok(),
            "unexpected session id {session_id:?}"
        );
        let micros = i64::try_from(by.as_micros()).expect("a duration in microseconds");
        let n = self
            .execute_sql(&format!(
                "UPDATE sessions SET last_active_at = last_active_at - {micros} \
                 WHERE id = '{session_id}'"
            ))
            .await;
        assert_eq!(n, 1, "session {session_id} not found");
    }

    /// Test support: sets a record's `edited_at`, as an edit inside Tributary would.
    pub async fn set_edited_at(&self, key: &str, edited_at: Option<i64>) {
        let value = edited_at.map_or_else(|| "NULL".to_owned(), |v| v.to_string());
        // Keys are hex digests; refuse anything else rather than quote it.
        assert!(
            key.bytes().all(|b| b.is_ascii_alphanumeric()),
            "unexpected record key {key:?}"
        );
        let n = self
            .execute_sql(&format!(
                "UPDATE records SET edited_at = {value} WHERE key = '{key}'"
            ))
            .await;
        assert_eq!(n, 1, "record {key} not found");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Guard::Postgres {
            server_url,
            database,
            dropped: false,
        } = &self.guard
        {
            // Drop runs inside the test's runtime, which cannot be blocked on; a thread with its
            // own small runtime drops the database instead.
            let (server_url, database) = (server_url.clone(), database.clone());
            let worker = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_database(&server_url, &database));
                }
            });
            let _ = worker.join();
        }
    }
}

/// The PostgreSQL server URL of `TRIBUTARY_TEST_DATABASE_URL`; panics, saying what to do, when it
/// is unset (a PostgreSQL test runs only when built with it, or in CI, where it is required).
pub fn postgres_server_url() -> String {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{DATABASE_URL_VAR} is not set, so this PostgreSQL test cannot run (CI requires it); \
             set it to a server the tests may create databases on, \
             e.g. postgres://postgres@127.0.0.1:5432/test"
        ),
    }
}

/// `server_url` with its database name replaced by `database`.
fn with_database(server_url: &str, database: &str) -> String {
    match url::Url::parse(server_url) {
        Ok(mut url) => {
            url.set_path(&format!("/{database}"));
            url.to_string()
        }
        Err(e) => panic!("{DATABASE_URL_VAR} is not a URL ({server_url}): {e}"),
    }
}

async fn drop_database(server_url: &str, database: &str) {
    match PgConnection::connect(server_url).await {
        Ok(mut conn) => {
            let sql = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
            if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
                eprintln!("dropping test database {database}: {e}");
            }
            let _ = conn.close().await;
        }
        Err(e) => eprintln!("dropping test database {database}: {e}"),
    }
}
