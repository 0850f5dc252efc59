//! The storage conformance suite: every test body runs against SQLite and PostgreSQL, one
//! module per area of the specification.
//!
//! PostgreSQL tests need `TRIBUTARY_TEST_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1/test`);
//! built without it outside CI they are reported `ignored`, and in CI they fail without it.

#![allow(clippy::unwrap_used)]

/// Generates a `#[tokio::test]` per backend for each test body `async fn name(db: &TestDb)`,
/// each within `tributary_test_harness::TEST_DEADLINE`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = tributary_store::testing::TestDb::sqlite().await;
                    tributary_test_harness::within_test_deadline(super::$name(&db)).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                tributary_test_harness::postgres_test! {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let db = tributary_store::testing::TestDb::postgres().await;
                        tributary_test_harness::within_test_deadline(super::$name(&db)).await;
                        db.cleanup().await;
                    }
                }
            )*
        }
    };
}

mod support;

mod admin;
mod changes;
mod exports;
mod migrations;
mod sessions;
mod sources;
mod streaming;
