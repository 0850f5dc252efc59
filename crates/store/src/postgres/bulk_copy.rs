//! A commit's new records written by `COPY` instead of `INSERT … SELECT`.
//!
//! PostgreSQL inserts the rows of `INSERT … SELECT` one at a time, each with its own heap WAL
//! record, through the shared buffers it shares with the indexes; `COPY … FROM` inserts a
//! thousand rows a page at a time and streams the heap through a small ring of buffers, which
//! leaves the buffer cache to the indexes. SQL cannot make an `INSERT` do that, so the staged
//! rows take a detour: a second connection reads the session's new records in key order with
//! `COPY (SELECT …) TO STDOUT`, and the commit's connection takes the same bytes with
//! `COPY records FROM STDIN` (binary format on both sides; this process only forwards them).
//! Measured on a table like `records`, 1,000,000 rows of the bench's shape with the GIN merger
//! beside: 20.1–20.4 s against 22.4–23.1 s for the `INSERT` (ADR 0019, twenty-first round).
//!
//! `COPY` has no `ON CONFLICT`, so only rows whose key the second connection finds in no record
//! go this way; the commit's `INSERT … SELECT` runs after it for changed records. Keys embed the
//! connector, and the commit holds the connector's stream sessions, so another writer can add
//! one of those keys only in a narrow race (a stream session opened during the commit): the copy
//! then fails on the primary key, is rolled back to its savepoint, and the `INSERT` writes
//! everything as before. Any other failure of the detour falls back the same way.

use super::{PgStore, Tx};
use crate::error::StoreResult;
use futures::StreamExt;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};
use std::time::Duration;

/// A commit creating fewer records writes them by `INSERT` alone: below a batch's worth the
/// detour's round trips and second connection buy nothing.
pub(crate) const COPY_NEW_RECORDS: u64 = 1_000;

/// The columns of `records` a copy writes, in the order the export reads them.
const COLUMNS: &str = "key, entity_type, connector, id, name, entity, instance, checksum, \
                       version, created_at, updated_at, source, edited_at";

/// How long a commit waits for the second connection before it writes by `INSERT` alone: the
/// detour is an optimisation, never worth queueing behind other calls for.
const CONNECTION_WAIT: Duration = Duration::from_millis(100);

/// Bytes gathered before they are sent on: the export sends one message per row, and one write
/// per row would cost more than the copy saves.
const CHUNK: usize = 256 * 1024;

/// What a commit copies: its session's staged upserts of records that do not exist yet.
pub(crate) struct NewRecords<'a> {
    pub session_id: &'a str,
    pub entity_type: &'a str,
    pub connector: &'a str,
    pub now: i64,
}

/// Copies the session's new records into `records` within `tx`; answers how many (0 when the
/// detour was not taken or was rolled back, leaving everything to the `INSERT`).
pub(crate) async fn copy_new_records(
    store: &PgStore,
    tx: &mut Tx,
    new: &NewRecords<'_>,
) -> StoreResult<u64> {
    let Some(export) = export_statement(new) else {
        return Ok(0);
    };
    let Ok(Ok(mut source)) = tokio::time::timeout(CONNECTION_WAIT, store.pool.acquire()).await
    else {
        return Ok(0);
    };
    sqlx::query("SAVEPOINT copy_new_records")
        .execute(&mut **tx)
        .await?;
    let (copied, exported) = copy(&mut source, tx, &export).await;
    if !exported {
        // Left in the middle of its COPY: closed, not returned to the pool.
        drop(source.detach());
    }
    match copied {
        Ok(copied) => {
            sqlx::query("RELEASE SAVEPOINT copy_new_records")
                .execute(&mut **tx)
                .await?;
            Ok(copied)
        }
        Err(error) => {
            tracing::debug!(%error, "copying a commit's new records; writing them by INSERT");
            sqlx::query("ROLLBACK TO SAVEPOINT copy_new_records")
                .execute(&mut **tx)
                .await?;
            Ok(0)
        }
    }
}

/// Streams the export on `source` into `COPY records FROM STDIN` on `tx`. Answers the rows
/// copied, and whether the export was read to its end (the connection is then reusable).
async fn copy(
    source: &mut PoolConnection<Postgres>,
    tx: &mut Tx,
    export: &str,
) -> (Result<u64, sqlx::Error>, bool) {
    let source: &mut PgConnection = source;
    let mut rows = match source.copy_out_raw(export).await {
        Ok(rows) => rows,
        Err(error) => return (Err(error), true),
    };
    let import = format!("COPY records ({COLUMNS}) FROM STDIN (FORMAT binary)");
    let mut sink = match tx.copy_in_raw(&import).await {
        Ok(sink) => sink,
        Err(error) => return (Err(error), false),
    };
    let mut chunk = Vec::with_capacity(CHUNK + 1024);
    loop {
        let message = match rows.next().await {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                // The export ended with its error (read to the end); the import is abandoned.
                let _ = sink.abort("the export of new records failed").await;
                return (Err(error), true);
            }
            None => break,
        };
        chunk.extend_from_slice(&message);
        if chunk.len() >= CHUNK {
            if let Err(error) = sink.send(chunk.as_slice()).await {
                return (Err(error), false);
            }
            chunk.clear();
        }
    }
    if let Err(error) = sink.send(chunk.as_slice()).await {
        return (Err(error), true);
    }
    (sink.finish().await, true)
}

/// `COPY (query) TO STDOUT` takes no parameters, so the query spells its values out; it is only
/// built when each is a plain identifier (ids and slugs are; a value that is not goes by
/// `INSERT`, bound as a parameter).
fn export_statement(new: &NewRecords<'_>) -> Option<String> {
    let plain = |text: &str| {
        !text.is_empty()
            && text.len() <= 200
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !(plain(new.session_id) && plain(new.entity_type) && plain(new.connector)) {
        return None;
    }
    let (session, entity_type, connector, now) =
        (new.session_id, new.entity_type, new.connector, new.now);
    Some(format!(
        "COPY (SELECT s.key, '{entity_type}'::text, '{connector}'::text, s.id, s.name, s.entity, \
                      s.instance, s.checksum, 1::bigint, {now}::bigint, {now}::bigint, \
                      NULL::text, NULL::bigint \
               FROM staged_records s \
               WHERE s.session_id = '{session}' AND s.op = 'upsert' \
                 AND NOT EXISTS (SELECT 1 FROM records r WHERE r.key = s.key) \
               ORDER BY s.key) TO STDOUT (FORMAT binary)"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::PgStore;
    use super::*;
    use crate::testing::TestDb;
    use crate::StoreOptions;

    const SESSION: &str = "5b0c9f7e-copy-test";

    /// Stages upserts `1..=rows` for [`SESSION`] and commits them as one row each of
    /// `staged_records`, plus a staged delete that a copy must leave alone.
    async fn stage(store: &PgStore, rows: i64) {
        sqlx::query(
            "INSERT INTO staged_records (session_id, key, id, op, name, entity, instance, checksum) \
             SELECT $1, lpad(i::text, 40, '0'), 'C' || i, 'upsert', 'Country ' || i, \
                    jsonb_build_object('code', 'C' || i, 'n', i), '{}'::jsonb, 'sum' || i \
             FROM generate_series(1, $2) AS i \
             UNION ALL SELECT $1, repeat('d', 40), 'gone', 'delete', NULL, NULL::jsonb, NULL::jsonb, NULL",
        )
        .bind(SESSION)
        .bind(rows)
        .execute(&store.pool)
        .await
        .expect("stages");
    }

    /// Writes record `i` as the commit would, into `tx` (or committed when `tx` is `None`).
    fn record_insert(i: i64) -> sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(
            "INSERT INTO records (key, entity_type, connector, id, name, entity, instance, \
                                  checksum, version, created_at, updated_at) \
             VALUES (lpad($1::text, 40, '0'), 'country', 'c1', 'C' || $1, 'old', '{}', '{}', \
                     'old', 3, 7, 7)",
        )
        .bind(i)
    }

    fn new_records() -> NewRecords<'static> {
        NewRecords {
            session_id: SESSION,
            entity_type: "country",
            connector: "c1",
            now: 1_700_000_000_000_000,
        }
    }

    async fn open(db: &TestDb) -> PgStore {
        PgStore::open(&db.url, StoreOptions::default())
            .await
            .expect("opens")
    }

    async fn close(store: PgStore, db: TestDb) {
        store.pool.close().await;
        store.auth.close().await;
        db.cleanup().await;
    }

    tributary_test_harness::postgres_test! {
        /// The copy writes every staged upsert whose key no record has, as the commit's
        /// `INSERT` would (version 1, the commit's time, the connector's type), in the
        /// commit's transaction; an existing record and a staged delete are left alone.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn new_records_are_copied_within_the_commit() {
            let db = TestDb::postgres().await;
            let store = open(&db).await;
            stage(&store, 2_500).await;
            record_insert(7).execute(&store.pool).await.expect("an existing record");

            let mut tx = store.pool.begin().await.expect("begins");
            let copied = copy_new_records(&store, &mut tx, &new_records())
                .await
                .expect("copies");
            assert_eq!(copied, 2_499);
            let outside: i64 = sqlx::query_scalar("SELECT count(*) FROM records")
                .fetch_one(&store.pool)
                .await
                .expect("counts");
            assert_eq!(outside, 1, "not visible before the commit's transaction ends");
            let (name, entity, version, created, connector, kind): (String, String, i64, i64, String, String) =
                sqlx::query_as(
                    "SELECT name, entity::text, version, created_at, connector, entity_type \
                     FROM records WHERE id = 'C2500'",
                )
                .fetch_one(&mut *tx)
                .await
                .expect("the last copied row");
            assert_eq!(
                (name.as_str(), entity.as_str(), version, created, connector.as_str(), kind.as_str()),
                ("Country 2500", r#"{"n": 2500, "code": "C2500"}"#, 1, 1_700_000_000_000_000, "c1", "country")
            );
            let kept: (String, i64) =
                sqlx::query_as("SELECT name, version FROM records WHERE id = 'C7'")
                    .fetch_one(&mut *tx)
                    .await
                    .expect("the existing record");
            assert_eq!(kept, ("old".to_owned(), 3));
            tx.commit().await.expect("commits");
            let total: i64 = sqlx::query_scalar("SELECT count(*) FROM records")
                .fetch_one(&store.pool)
                .await
                .expect("counts");
            assert_eq!(total, 2_500);
            close(store, db).await;
        }
    }

    tributary_test_harness::postgres_test! {
        /// A key the export cannot see (written by the commit's own transaction here, by a
        /// racing writer in life) fails the copy on the primary key: it is rolled back to its
        /// savepoint, answers 0, and the transaction goes on with what it wrote before.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_copy_that_meets_an_existing_key_is_rolled_back() {
            let db = TestDb::postgres().await;
            let store = open(&db).await;
            stage(&store, 1_500).await;

            let mut tx = store.pool.begin().await.expect("begins");
            record_insert(1_200).execute(&mut *tx).await.expect("an uncommitted record");
            let copied = copy_new_records(&store, &mut tx, &new_records())
                .await
                .expect("falls back without an error");
            assert_eq!(copied, 0);
            let rows: Vec<String> = sqlx::query_scalar("SELECT name FROM records")
                .fetch_all(&mut *tx)
                .await
                .expect("the transaction is usable");
            assert_eq!(rows, vec!["old".to_owned()]);
            tx.commit().await.expect("commits");
            close(store, db).await;
        }
    }

    #[test]
    fn values_that_are_not_plain_identifiers_are_not_spelled_into_the_export() {
        let plain = new_records();
        assert!(export_statement(&plain).is_some());
        for session_id in ["", "x' OR '1'='1", "a\0b", "a b", "é"] {
            let hostile = NewRecords {
                session_id,
                ..new_records()
            };
            assert!(export_statement(&hostile).is_none(), "{session_id:?}");
        }
        let connector = "c1'; DROP TABLE records; --";
        assert!(export_statement(&NewRecords {
            connector,
            ..new_records()
        })
        .is_none());
        let entity_type = "country$$";
        assert!(export_statement(&NewRecords {
            entity_type,
            ..new_records()
        })
        .is_none());
    }
}
