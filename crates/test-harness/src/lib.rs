//! What the storage conformance suite and the end-to-end tests share: [`postgres_test!`] marks
//! the PostgreSQL half of the suite (reported `ignored` when no PostgreSQL is configured outside
//! CI, run and failing loudly without a database otherwise; see `build.rs`), and
//! [`within_test_deadline`] keeps a hung test from holding the suite up.

use std::future::Future;
use std::time::Duration;

/// The most any one test may take: a guard against a hang (a test that waits on something that
/// never comes fails instead of holding the suite up), not a speed assertion.
pub const TEST_DEADLINE: Duration = Duration::from_secs(600);

/// Runs a test body, failing it if it has not finished within [`TEST_DEADLINE`].
pub async fn within_test_deadline(body: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_DEADLINE, body).await.is_err() {
        panic!("the test did not finish within {TEST_DEADLINE:?}: something it awaits never came");
    }
}

/// Wraps `#[test]` items of the PostgreSQL half of the suite. Built without
/// `TRIBUTARY_TEST_DATABASE_URL` and outside CI, each is `#[ignore]`d with the reason, so
/// `cargo test` reports how many were skipped; `cargo test -- --include-ignored` still runs them.
#[cfg(postgres_tests_ignored)]
#[macro_export]
macro_rules! postgres_test {
    ($($item:item)*) => {
        $(
            #[ignore = "PostgreSQL test: set TRIBUTARY_TEST_DATABASE_URL to run it"]
            $item
        )*
    };
}

/// Wraps `#[test]` items of the PostgreSQL half of the suite; built with
/// `TRIBUTARY_TEST_DATABASE_URL` or in CI, they run as they are.
#[cfg(not(postgres_tests_ignored))]
#[macro_export]
macro_rules! postgres_test {
    ($($item:item)*) => {
        $($item)*
    };
}
