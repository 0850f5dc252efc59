//! Anti-joins of a session's staged rows on PostgreSQL: planned from statistics taken before
//! the rows were staged (and before the connector's records were written), they still join
//! without a nested loop, which would scan the session's rows once per record.

use super::{begin_anti_join, end_anti_join, PgStore};
use crate::testing::TestDb;

/// The plan of the sweep's log (`log_swept`'s shape) for session `t` of connector `c1`.
async fn plan(tx: &mut super::Tx) -> String {
    let rows: Vec<String> = sqlx::query_scalar(concat!(
        "EXPLAIN SELECT r.key FROM records r WHERE r.connector = 'c1' AND ",
        not_staged!("r.key", "'t'")
    ))
    .fetch_all(&mut **tx)
    .await
    .expect("explains");
    rows.join("\n")
}

tributary_test_harness::postgres_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn staged_rows_are_anti_joined_without_nested_loops_whatever_the_statistics() {
        let db = TestDb::postgres().await;
        let store = PgStore::open_for_test(&db).await;
        for statement in [
            "ANALYZE records",
            "ANALYZE staged_records",
            "INSERT INTO records (key, entity_type, connector, id, name, entity, instance, \
             checksum, version, created_at, updated_at) \
             SELECT lpad(i::text, 40, '0'), 'country', 'c1', 'C' || i, 'n', '{}', '{}', 'x', \
                    1, 0, 0 FROM generate_series(1, 20000) AS i",
            "INSERT INTO staged_records (session_id, key, id, op) \
             SELECT 't', lpad(i::text, 40, '0'), 'C' || i, 'keep' \
             FROM generate_series(1, 20000) AS i",
        ] {
            sqlx::query(statement).execute(&store.pool).await.expect("prepares");
        }
        let mut tx = store.pool.begin().await.expect("begins");
        let planned = plan(&mut tx).await;
        begin_anti_join(&mut tx).await.expect("sets");
        let anti_joined = plan(&mut tx).await;
        end_anti_join(&mut tx).await.expect("resets");
        let after = plan(&mut tx).await;
        tx.rollback().await.expect("rolls back");
        assert!(!anti_joined.contains("Nested Loop"), "{anti_joined}");
        assert!(anti_joined.contains("Anti Join"), "{anti_joined}");
        // What the planner does unguarded, once the guard is gone again.
        assert_eq!(after, planned);
        eprintln!("unguarded:\n{planned}");
        store.close_for_test(db).await;
    }
}
