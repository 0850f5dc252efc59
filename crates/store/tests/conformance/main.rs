//! The storage conformance suite: every test body runs against SQLite and PostgreSQL, one
//! module per area of the specification.
//!
//! PostgreSQL tests need `TRIBUTARY_TEST_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1/test`);
//! without it they print a skip notice and pass.

#![allow(clippy::unwrap_used)]

/// Generates a `#[tokio::test]` per backend for each test body `async fn name(db: &TestDb)`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = tributary_store::testing::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = tributary_store::testing::TestDb::postgres().await else { return };
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

mod support;

mod admin;
mod changes;
mod migrations;
mod sessions;
mod sources;
mod streaming;
