//! Statements PostgreSQL cancels: on request (an operator's `pg_cancel_backend`) the call may
//! be made again; past a statement timeout it is a resource exhausted.

use super::PgStore;
use crate::error::StoreError;
use crate::testing::TestDb;
use tributary_core::Error;

/// The domain error of the first of `statements` that fails, run in one transaction.
async fn error_of(store: &PgStore, statements: &[&str]) -> Error {
    let mut tx = store.pool.begin().await.expect("begins");
    for statement in statements {
        if let Err(e) = sqlx::query(statement).execute(&mut *tx).await {
            return Error::from(StoreError::from(e));
        }
    }
    panic!("none of {statements:?} failed");
}

tributary_test_harness::postgres_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_cancelled_on_request_may_be_retried_and_a_timed_out_one_may_not() {
        let db = TestDb::postgres().await;
        let store = PgStore::open_for_test(&db).await;
        let cancelled = error_of(
            &store,
            &["SELECT pg_cancel_backend(pg_backend_pid()), pg_sleep(30)"],
        )
        .await;
        assert!(cancelled.is_retryable(), "{cancelled:?}");
        let timed_out = error_of(
            &store,
            &["SET LOCAL statement_timeout = '50ms'", "SELECT pg_sleep(30)"],
        )
        .await;
        assert!(!timed_out.is_retryable(), "{timed_out:?}");
        assert!(
            matches!(&timed_out, Error::ResourceExhausted { description, .. }
                if description.contains("statement_timeout")),
            "{timed_out:?}"
        );
        store.close_for_test(db).await;
    }
}
