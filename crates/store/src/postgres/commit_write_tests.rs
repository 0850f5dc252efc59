//! The commit's records write on PostgreSQL, where another transaction can create a key between
//! the commit's totals and its write (SQLite has one writer, so nothing turns up there).

use super::commit::{commit_from_totals, commit_new_records, staged_totals, write_staged_upserts};
use super::PgStore;
use crate::testing::TestDb;
use tributary_core::model::{Connector, SessionMode, SessionTotals, WritePolicy};
use tributary_core::store::SessionCall;

const SESSION: &str = "5b0c9f7e-commit-write-test";
const NOW: i64 = 1_700_000_000_000_000;

/// Stages upserts `1..=rows` for [`SESSION`], keyed `lpad(i, 40, '0')`.
async fn stage(store: &PgStore, rows: i64) {
    sqlx::query(
        "INSERT INTO staged_records (session_id, key, id, op, name, entity, instance, checksum) \
         SELECT $1, lpad(i::text, 40, '0'), 'C' || i, 'upsert', 'Country ' || i, \
                jsonb_build_object('code', 'C' || i), '{}'::jsonb, 'sum' || i \
         FROM generate_series(1, $2) AS i",
    )
    .bind(SESSION)
    .bind(rows)
    .execute(&store.pool)
    .await
    .expect("stages");
}

fn connector() -> Connector {
    Connector {
        id: "c1".to_owned(),
        name: "c1".to_owned(),
        entity_type: "country".to_owned(),
        write_policy: WritePolicy::Importer,
        reject_removals_above_percent: None,
        rate_limit: None,
        created_at: 0,
    }
}

/// The commit's call for [`SESSION`] of `connector`, at [`NOW`].
fn call(connector: &Connector) -> SessionCall<'_> {
    SessionCall {
        session_id: SESSION,
        connector,
        now: NOW,
        idle_cutoff: 0,
        batch_seq: None,
    }
}

/// Writes record `C1200` (key `lpad('1200', 40, '0')`, one of the staged keys, version 3, name
/// `old`) in `tx`, as a racing writer would between a commit's totals and its write.
async fn write_meanwhile(tx: &mut sqlx::PgConnection) {
    sqlx::query(
        "INSERT INTO records (key, entity_type, connector, id, name, entity, instance, \
                              checksum, version, created_at, updated_at) \
         VALUES (lpad('1200', 40, '0'), 'country', 'c1', 'C1200', 'old', '{}', '{}', \
                 'old', 3, 7, 7)",
    )
    .execute(tx)
    .await
    .expect("a record written meanwhile");
}

tributary_test_harness::postgres_test! {
    /// A commit whose totals found only new keys writes them without the conflict clause; a
    /// key written meanwhile (by the commit's own transaction here, by a racing writer in life)
    /// fails that `INSERT` on the primary key, which is rolled back to its savepoint, and the
    /// write with the clause then creates the others and updates that record, in a transaction
    /// still usable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_written_meanwhile_is_updated_not_refused() {
        let db = TestDb::postgres().await;
        let store = PgStore::open_for_test(&db).await;
        stage(&store, 1_500).await;
        let connector = connector();
        let call = call(&connector);

        let mut tx = store.pool.begin().await.expect("begins");
        write_meanwhile(&mut tx).await;
        write_staged_upserts(&store, &mut tx, &call, (1_500, 0), false, false)
            .await
            .expect("writes with the conflict clause instead");
        let raced: (String, i64, i64, i64) = sqlx::query_as(
            "SELECT name, version, created_at, updated_at FROM records WHERE id = 'C1200'",
        )
        .fetch_one(&mut *tx)
        .await
        .expect("the transaction is usable");
        assert_eq!(raced, ("Country 1200".to_owned(), 4, 7, NOW));
        tx.commit().await.expect("commits");

        let (rows, created): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE version = 1 AND created_at = $1) FROM records",
        )
        .bind(NOW)
        .fetch_one(&store.pool)
        .await
        .expect("counts");
        assert_eq!((rows, created), (1_500, 1_499));
        store.close_for_test(db).await;
    }

    /// A commit whose totals found only new keys logs and writes them without looking at
    /// `records` or for superseded rows (ADR 0019, twenty-eighth round). A key written after
    /// the totals (by the commit's own transaction here, by a racing writer in life) fails
    /// that write on the primary key: the log and the write are rolled back, and the commit
    /// goes the general way with its totals taken again: it creates the others and updates
    /// that record, counts and logs each once, in a transaction still usable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_first_load_meeting_a_key_written_meanwhile_commits_the_general_way() {
        let db = TestDb::postgres().await;
        let store = PgStore::open_for_test(&db).await;
        stage(&store, 1_500).await;
        let connector = connector();
        let call = call(&connector);
        let counts = "SELECT (SELECT count(*) FROM records), (SELECT count(*) FROM change_log), \
                             (SELECT last_seq FROM change_sequence)";

        let mut tx = store.pool.begin().await.expect("begins");
        let staged = staged_totals(&mut tx, &call).await.expect("totals");
        write_meanwhile(&mut tx).await;
        let committed = commit_new_records(&store, &mut tx, &call, SessionMode::Accrue, false, &staged)
            .await
            .expect("steps back without an error");
        assert!(committed.is_none());
        let left: (i64, i64, i64) = sqlx::query_as(counts)
            .fetch_one(&mut *tx)
            .await
            .expect("the transaction is usable");
        assert_eq!(left, (1, 0, 0), "nothing of the first write is left");

        // The commit itself, from the same totals: it steps back again and takes them anew.
        let (totals, logged) =
            commit_from_totals(&store, &mut tx, &call, SessionMode::Accrue, false, staged)
                .await
                .expect("commits the general way");
        assert_eq!(
            totals,
            SessionTotals {
                created: 1_499,
                updated: 1,
                ..SessionTotals::default()
            }
        );
        assert_eq!(logged.map(|l| (l.last, l.entries)), Some((1_500, 1_500)));
        tx.commit().await.expect("commits");
        let written: (i64, i64, i64) = sqlx::query_as(counts)
            .fetch_one(&store.pool)
            .await
            .expect("counts");
        assert_eq!(written, (1_500, 1_500, 1_500));
        let raced: (String, i64) =
            sqlx::query_as("SELECT name, version FROM records WHERE id = 'C1200'")
                .fetch_one(&store.pool)
                .await
                .expect("reads");
        assert_eq!(raced, ("Country 1200".to_owned(), 4));
        store.close_for_test(db).await;
    }
}
